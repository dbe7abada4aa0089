"""Wiring shared by the ingest flows: one period's steps, in order. No logic lives here."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import unmapped

from gaibao.settings import Settings
from tasks import steps
from tasks.ingest import RunSummary, summarise_period


def ingest_one_period(
    wh, settings: Settings, period: str, counties: Sequence[str] | None, force: bool, summary: RunSummary
) -> None:
    """Fetch, read, judge and load one period (marts are refreshed by the caller)."""
    plan = steps.plan_run(wh, settings, period, counties, force)
    chunks = steps.fetch_returns.map(
        plan.chunks, period=period, settings=unmapped(settings), known=unmapped(plan.known)
    )
    judged = steps.validate_returns(wh, settings, period, chunks.result(), plan.archived)
    steps.load_returns(wh, judged)
    summarise_period(summary, plan, judged)
