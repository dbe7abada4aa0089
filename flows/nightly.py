"""The nightly ingest: collect last month's county returns, judge them, load what passes."""

# No ``from __future__ import annotations``: Prefect builds the parameters' model from the
# annotations, and a flow run started from a deployment (another process) could not resolve
# the names of ``gaibao.options``' annotated types from strings.

from prefect import flow
from prefect.utilities.annotations import quote

from flows.common import ingest_periods
from flows.hooks import notify_crash, notify_failure
from flows.runners import task_runner
from gaibao.options import CountyCodes, Period
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
def nightly_ingest(period: Period | None = None, counties: CountyCodes | None = None) -> dict:
    """Ingest ``period`` (default: the previous month in Asia/Shanghai) for all or some counties,
    and the files for the ``GAIBAO_CORRECTION_MONTHS`` months before it that arrived since the
    last run (late corrections: loaded first, with the later returns that depend on them).

    The parameters are checked before the run starts (``gaibao.options``): a bad period or county
    code fails the run at once with the message the CLI prints."""
    settings = get_settings()
    period = period or default_period(tz=settings.timezone)
    wh = steps.prepare_warehouse(settings)
    summary = RunSummary(flow="nightly-ingest", periods=[period])
    corrections = steps.load_corrections(wh, settings, quote(steps.scan_corrections(wh, settings, period, counties)), summary)
    ingest_periods(wh, settings, [period], counties, False, summary)
    steps.refresh_marts(wh, min(period, corrections.earliest or period))
    steps.send_receipts(wh, settings, period, summary)
    steps.send_correction_receipts(wh, settings, quote(corrections))
    steps.alert_unreachable(settings, summary)
    steps.alert_set_aside(settings, summary)
    return steps.publish_summary(summary)


if __name__ == "__main__":
    nightly_ingest()
