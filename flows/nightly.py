"""The nightly ingest: collect last month's county returns, judge them, load what passes."""

from __future__ import annotations

from prefect import flow

from flows.common import ingest_periods
from flows.hooks import notify_crash, notify_failure
from flows.runners import task_runner
from gaibao.settings import get_settings
from tasks import steps
from tasks.ingest import RunSummary, default_period


@flow(
    name="nightly-ingest",
    on_failure=[notify_failure],
    on_crashed=[notify_crash],
    log_prints=False,
    task_runner=task_runner(),
)
def nightly_ingest(period: str | None = None, counties: list[str] | None = None) -> dict:
    """Ingest ``period`` (default: the previous month in Asia/Shanghai) for all or some counties."""
    settings = get_settings()
    period = period or default_period(tz=settings.timezone)
    wh = steps.prepare_warehouse(settings)
    summary = RunSummary(flow="nightly-ingest", periods=[period])
    ingest_periods(wh, settings, [period], counties, False, summary)
    steps.refresh_marts(wh, period)
    steps.send_receipts(wh, settings, period, summary)
    steps.alert_unreachable(settings, summary)
    return steps.publish_summary(summary)


if __name__ == "__main__":
    nightly_ingest()
