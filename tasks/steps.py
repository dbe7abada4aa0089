"""The Prefect tasks: thin wrappers over the plain functions of ``tasks`` and ``warehouse``.

Granularity follows the measured costs (docs/ARCHITECTURE.md): fetch-and-read is mapped over
chunks of counties (≈ 100 task runs at national scale, not one per county); judging, loading and
the marts run once per batch. Retries sit on I/O only (fetching); pure steps have none.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.artifacts import create_table_artifact

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


@task(name="plan_run", persist_result=False, cache_policy=NO_CACHE)
def plan_run(wh, settings: Settings, period: str, counties: Sequence[str] | None, force: bool) -> plain.RunPlan:
    """Which counties to fetch, in which chunks, and which payloads are already judged."""
    return plain.plan_run(wh, settings, period, counties, force)


@task(name="fetch_returns", retries=1, retry_delay_seconds=5, persist_result=False, cache_policy=NO_CACHE)
def fetch_returns(
    counties: Sequence[str], period: str, settings: Settings, known: frozenset[tuple[str, str]]
) -> ChunkResult:
    """Fetch, archive and read one chunk of counties' returns (per-county retries happen inside)."""
    result = plain.fetch_and_read(counties, period, settings, known)
    if result.unreachable:
        get_run_logger().warning("unreachable sources: %s", ", ".join(sorted(result.unreachable)))
    return result


@task(name="validate_returns", persist_result=False, cache_policy=NO_CACHE)
def validate_returns(wh, settings: Settings, period: str, chunks: list[ChunkResult], archived: list) -> plain.Judged:
    """Judge every new return of the period against the rules: one validation call per kind."""
    return plain.judge_period(wh, settings, period, chunks, archived)


@task(name="load_returns", persist_result=False, cache_policy=NO_CACHE)
def load_returns(wh, judged: plain.Judged) -> dict[str, int]:
    """Load the period's judged returns into the warehouse, all or nothing."""
    return plain.load_judged(wh, judged)


@task(name="refresh_marts", persist_result=False, cache_policy=NO_CACHE)
def refresh_marts(wh, from_period: str) -> None:
    wh.rebuild_marts(from_period=from_period)


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
