"""Backfill: re-run a range of periods in order, for all or some counties."""

# No ``from __future__ import annotations``: Prefect builds the parameters' model from the
# annotations, and a flow run started from a deployment (another process) could not resolve
# the names of ``gaibao.options``' annotated types from strings.

from prefect import flow

from flows.common import ingest_periods
from flows.hooks import notify_crash, notify_failure
from flows.runners import task_runner
from gaibao.options import CountyCodes, EndPeriod, StartPeriod, check_range
from gaibao.settings import get_settings
from tasks import steps
from tasks.ingest import RunSummary, period_range


@flow(
    name="backfill",
    on_failure=[notify_failure],
    on_crashed=[notify_crash],
    log_prints=False,
    task_runner=task_runner(),
)
def backfill(
    start: StartPeriod, end: EndPeriod, counties: CountyCodes | None = None, force: bool = False
) -> dict:
    """Ingest every period from ``start`` to ``end`` in order (cross-period rules depend on it).

    ``force`` re-judges the archived files of each period with today's rules.
    """
    check_range(start, end)  # each is a period (checked with the parameters); the order here
    settings = get_settings()
    periods = period_range(start, end)
    wh = steps.prepare_warehouse(settings)
    summary = RunSummary(flow="backfill", periods=periods)
    ingest_periods(wh, settings, periods, counties, force, summary)
    steps.refresh_marts(wh, periods[0])
    steps.alert_unreachable(settings, summary)
    steps.alert_set_aside(settings, summary)
    return steps.publish_summary(summary)
