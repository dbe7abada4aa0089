"""Wiring shared by the ingest flows: the steps of a run over one or more periods. No logic here."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import unmapped
from prefect.utilities.annotations import quote

from gaibao.settings import Settings
from tasks import steps
from tasks.ingest import RunSummary, summarise_period


def ingest_periods(
    wh, settings: Settings, periods: Sequence[str], counties: Sequence[str] | None, force: bool, summary: RunSummary
) -> None:
    """Fetch and read every period's returns, validate them in one batch per kind, then judge and
    load the periods one by one in order (cross-period rules read the previous period's load).
    Marts are refreshed by the caller."""
    # Large payloads (read files, judged batches) go to the tasks quoted: Prefect would otherwise
    # walk every object inside them to track dependencies (measured: 17 s at national scale).
    plans = steps.plan_runs(wh, settings, periods, counties, force)
    futures = [
        steps.fetch_returns.map(
            plan.chunks,
            period=plan.period,
            settings=unmapped(settings),
            known=unmapped(plan.known),
            first_seen=unmapped(plan.first_seen),
        )
        for plan in plans
    ]
    gathered = [
        steps.gather_returns(settings, plan.period, quote(chunk_futures.result()), quote(plan.archived))
        for plan, chunk_futures in zip(plans, futures, strict=True)
    ]
    suite_findings = steps.prevalidate_returns(quote(gathered)) if len(periods) > 1 else None
    for plan, batch in zip(plans, gathered, strict=True):
        judged = steps.validate_returns(wh, settings, quote(batch), quote(suite_findings))
        steps.load_returns(wh, quote(judged))
        summarise_period(summary, plan, judged)
