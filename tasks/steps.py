"""The Prefect tasks: thin wrappers over the plain functions of ``tasks`` and ``warehouse``.

Granularity follows the measured costs (docs/ARCHITECTURE.md): fetch-and-read is mapped over
chunks of counties (≈ 100 task runs at national scale, not one per county); judging, loading and
the marts run once per batch. Retries sit on I/O only (fetching); pure steps have none.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from gaibao.settings import Settings
from tasks import ingest as plain
from tasks.ingest import ChunkResult, RunSummary


@task(name="prepare_warehouse", persist_result=False, cache_policy=NO_CACHE)
def prepare_warehouse(settings: Settings):
    """Open the warehouse, apply migrations and seed the division reference if it is empty."""
    from warehouse.store import Warehouse

    wh = Warehouse.from_settings(settings)
    wh.upgrade()
    plain.seed_divisions(wh)
    return wh


@task(name="plan_runs", persist_result=False, cache_policy=NO_CACHE)
def plan_runs(
    wh, settings: Settings, periods: Sequence[str], counties: Sequence[str] | None, force: bool
) -> list[plain.RunPlan]:
    """Per period: which counties to fetch, in which chunks, and which payloads are already judged."""
    plans = [plain.plan_run(wh, settings, period, counties, force) for period in periods]
    plain.prestart_judging(settings, plans)
    return plans


@task(name="fetch_returns", retries=1, retry_delay_seconds=5, persist_result=False, cache_policy=NO_CACHE)
def fetch_returns(
    counties: Sequence[str],
    period: str,
    settings: Settings,
    known: frozenset[tuple[str, str]],
    first_seen: dict | None = None,
) -> ChunkResult:
    """Fetch, archive and read one chunk of counties' returns (per-county retries happen inside)."""
    result = plain.fetch_and_read(counties, period, settings, known, first_seen)
    if result.unreachable:
        get_run_logger().warning("unreachable sources: %s", ", ".join(sorted(result.unreachable)))
    return result


@task(name="gather_returns", persist_result=False, cache_policy=NO_CACHE)
def gather_returns(settings: Settings, period: str, chunks: list[ChunkResult], archived: list) -> plain.Gathered:
    """A period's new payloads (and, with --force, its archived ones) as judging candidates."""
    return plain.gather_period(settings, period, chunks, archived)


@task(name="prevalidate_returns", persist_result=False, cache_policy=NO_CACHE)
def prevalidate_returns(gathered: list[plain.Gathered]) -> dict:
    """Run the suites once per kind over every period of the run."""
    return plain.prevalidate_periods(gathered)


@task(name="validate_returns", persist_result=False, cache_policy=NO_CACHE)
def validate_returns(wh, settings: Settings, gathered: plain.Gathered, suite_findings: dict | None) -> plain.Judged:
    """Judge a period's returns against the rules (the suites' findings may come precomputed)."""
    return plain.judge_period(wh, settings, gathered, suite_findings)


@task(name="load_returns", persist_result=False, cache_policy=NO_CACHE)
def load_returns(wh, judged: plain.Judged) -> dict[str, int]:
    """Load the period's judged returns into the warehouse, all or nothing."""
    return plain.load_judged(wh, judged)


@task(name="refresh_marts", persist_result=False, cache_policy=NO_CACHE)
def refresh_marts(wh, from_period: str) -> None:
    wh.rebuild_marts(from_period=from_period, only_if_changed=True)


@task(name="alert_unreachable", persist_result=False, cache_policy=NO_CACHE)
def alert_unreachable(settings: Settings, summary: RunSummary) -> str | None:
    """One message to the data engineers listing every county whose source stayed unreachable."""
    from tasks.alerts import send_unreachable_alert

    return send_unreachable_alert(summary.flow, summary.periods, summary.unreachable_sources, settings)


@task(name="alert_set_aside", persist_result=False, cache_policy=NO_CACHE)
def alert_set_aside(settings: Settings, summary: RunSummary) -> str | None:
    """One message to the data engineers listing every county whose file was set aside
    (archive corrupt, a reader or the judge crashing), from the outcomes recorded for them."""
    if not summary.set_aside:
        return None
    from tasks.alerts import send_set_aside_alert

    return send_set_aside_alert(summary.flow, summary.periods, summary.set_aside, settings)


@task(name="publish_summary", persist_result=False, cache_policy=NO_CACHE)
def publish_summary(summary: RunSummary) -> dict:
    """Publish the per-county table artifact and return the summary as a dict."""
    key = f"{summary.flow}-summary"
    create_table_artifact(
        table=summary.table(),
        key=key,
        description=f"{summary.flow} {', '.join(summary.periods[:1])}–{summary.periods[-1] if summary.periods else ''}: "
        f"{summary.totals()}",
    )
    return summary.as_dict()


@task(name="send_receipts", retries=2, retry_delay_seconds=30, persist_result=False, cache_policy=NO_CACHE)
def send_receipts(wh, settings: Settings, period: str, summary: RunSummary) -> dict:
    """Each county that sent something new this run gets its receipt (accepted or refused, why)."""
    counties = [o.county_code for o in summary.counties.values() if o.accepted or o.refused]
    if not counties:
        return {"sent": 0}  # nothing new: spare the report stack's import (about 1.5 s)
    from reports.delivery import send_receipts as deliver

    return deliver(period, wh, settings, county_codes=counties).summary()


@task(name="scan_corrections", retries=1, retry_delay_seconds=5, persist_result=False, cache_policy=NO_CACHE)
def scan_corrections(wh, settings: Settings, period: str, counties: Sequence[str] | None):
    """List the counties' sources for files of earlier periods new since the last listing, fetch
    and read them (``tasks.corrections``)."""
    from tasks import corrections

    scan = corrections.scan_counties(wh, settings, period, counties)
    return corrections.fetch_corrections(wh, settings, scan)


@task(name="load_corrections", persist_result=False, cache_policy=NO_CACHE)
def load_corrections(wh, settings: Settings, files, summary: RunSummary):
    """Load the late corrections period by period, re-judging the later returns that depend on them."""
    from tasks import corrections

    report = corrections.apply_corrections(wh, settings, files)
    summary.corrections = report.as_dicts()
    for county, reason in report.unreachable.items():
        summary.county(county).unreachable = reason
    summary.unreachable_sources.update(report.problems)  # alerted with the run's other sources
    if report.corrections:
        get_run_logger().info("late corrections: %d files, %d returns re-judged", len(report.corrections), len(report.rejudged))
    return report


@task(name="send_correction_receipts", retries=2, retry_delay_seconds=30, persist_result=False, cache_policy=NO_CACHE)
def send_correction_receipts(wh, settings: Settings, report) -> dict:
    """Each county that sent a file for an earlier period gets that period's receipt, saying what
    the file replaced and which later periods were re-judged."""
    if not report.corrections:
        return {"sent": 0}
    from reports.delivery import send_receipts as deliver

    totals = {"sent": 0, "skipped": 0, "failed": 0}
    for period, notes in sorted(report.receipt_notes().items()):
        counties = sorted({c.county_code for c in report.corrections if c.period == period})
        result = deliver(period, wh, settings, county_codes=counties, notes=notes).summary()
        for key, value in result.items():
            totals[key] = totals.get(key, 0) + value
    return totals
