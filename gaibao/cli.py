"""The ``gaibao`` command.

Quick commands (``check``, ``status``) never import Prefect, and ``status`` never imports Great
Expectations: a clerk's pre-check answers in about a second. Commands that run flows import
``flows`` lazily.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    help="gaibao: 全面改薄 county returns — ingest, check, load, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
plan_app = typer.Typer(help="The five-year plan reference (全面改薄五年规划).", no_args_is_help=True)
db_app = typer.Typer(help="Warehouse schema (Alembic migrations).", no_args_is_help=True)
rules_app = typer.Typer(help="The rules (expectations/): versions and impact of a change.", no_args_is_help=True)
app.add_typer(plan_app, name="plan")
app.add_typer(db_app, name="db")
app.add_typer(rules_app, name="rules")

PeriodOpt = Annotated[str, typer.Option("--period", "-p", help="报告期 YYYY-MM")]
RunnerOpt = Annotated[
    Optional[str],  # noqa: UP007
    typer.Option("--task-runner", help="default (threads) or dask (GAIBAO_DASK_ADDRESS or a local cluster)"),
]
CountyOpt = Annotated[
    Optional[list[str]], typer.Option("--county", "-c", help="县区代码; repeat for several")  # noqa: UP007
]


def _quiet_runtime() -> None:
    """Silence Prefect's temporary server and GX progress bars unless the user asked for more."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # The temporary server can take longer than Prefect's default 20 s on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _echo_summary(summary: dict) -> None:
    totals = summary.get("totals", {})
    typer.echo(
        f"periods {', '.join(summary.get('periods', []))}: files {totals.get('files_seen', 0)}, "
        f"accepted {totals.get('accepted', 0)}, refused {totals.get('refused', 0)}, "
        f"duplicates {totals.get('duplicates', 0)}, rows accepted {totals.get('rows_accepted', 0)}, "
        f"rows rejected {totals.get('rows_rejected', 0)}"
    )
    for county in summary.get("unreachable", []):
        typer.echo(f"  unreachable source: {county}", err=True)


# Exit codes (README "The command line"): 0 done, 1 failed run or check errors, 2 a source stayed
# unreachable, 3 an option refused, 4 settings, sources file or warehouse unusable.
EXIT_BAD_OPTION = 3
EXIT_BAD_SETTINGS = 4


def _preflight(
    *,
    period: str | None = None,
    start: str | None = None,
    end: str | None = None,
    counties: list[str] | None = None,
    create: bool = True,
) -> bool:
    """Check options, settings, the sources file and the warehouse before anything runs: each
    problem is one line (Chinese / English) on stderr and an exit code, never a flow run.
    Returns whether the warehouse has its tables yet."""
    from gaibao.options import OptionError, check_counties, check_period, check_range
    from gaibao.preflight import (
        SettingsProblem,
        check_sources,
        check_warehouse,
        known_counties,
        load_settings,
    )

    try:
        if period is not None:
            check_period(period)
        if start is not None or end is not None:
            check_range(start, end)
        check_counties(counties)
    except OptionError as exc:
        typer.echo(f"错误：{exc}", err=True)
        raise typer.Exit(code=EXIT_BAD_OPTION) from None
    try:
        settings = load_settings()
        sources = check_sources(settings)
        reach = check_warehouse(settings, create=create)
    except SettingsProblem as exc:
        typer.echo(f"错误：{exc}", err=True)
        raise typer.Exit(code=EXIT_BAD_SETTINGS) from None
    try:
        check_counties(counties, known_counties(settings, reach, sources))
    except OptionError as exc:
        typer.echo(f"错误：{exc}", err=True)
        raise typer.Exit(code=EXIT_BAD_OPTION) from None
    return reach.has_tables


def _exit_for(summary: dict) -> None:
    # Refusal is an outcome, not a failure; an unreachable source is a failure of the run.
    raise typer.Exit(code=2 if summary.get("unreachable") else 0)


@app.command()
def ingest(
    period: PeriodOpt,
    county: CountyOpt = None,
    runner: RunnerOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the run summary as JSON")] = False,
) -> None:
    """Run the nightly ingest flow for one period (默认上月)."""
    _preflight(period=period, counties=county)
    _quiet_runtime()
    from flows.nightly import nightly_ingest
    from flows.runners import ensure_temporary_server, task_runner

    ensure_temporary_server()  # tied to this process: it goes when the process goes, also killed

    flow = nightly_ingest.with_options(task_runner=task_runner(kind=runner)) if runner else nightly_ingest
    summary = flow(period=period, counties=county or None)
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2)) if json_out else _echo_summary(summary)
    _exit_for(summary)


@app.command()
def backfill(
    start: Annotated[str, typer.Option("--start", help="first period YYYY-MM")],
    end: Annotated[str, typer.Option("--end", help="last period YYYY-MM")],
    county: CountyOpt = None,
    force: Annotated[bool, typer.Option("--force", help="re-judge archived files with today's rules")] = False,
    runner: RunnerOpt = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Re-run a range of periods in order (cross-period rules depend on the order)."""
    _preflight(start=start, end=end, counties=county)
    _quiet_runtime()
    from flows.backfill import backfill as backfill_flow
    from flows.runners import ensure_temporary_server, task_runner

    ensure_temporary_server()  # tied to this process: it goes when the process goes, also killed

    flow = backfill_flow.with_options(task_runner=task_runner(kind=runner)) if runner else backfill_flow
    summary = flow(start=start, end=end, counties=county or None, force=force)
    typer.echo(json.dumps(summary, ensure_ascii=False, indent=2)) if json_out else _echo_summary(summary)
    _exit_for(summary)


@app.command()
def status(
    period: PeriodOpt,
    county: CountyOpt = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table (terminal), json or csv (for scripts)")] = "table",
    history: Annotated[bool, typer.Option("--history", help="every file received, superseded ones too")] = False,
) -> None:
    """The expected-returns register: who sent what, accepted or refused and why, late, or missing."""
    from tasks.register import FORMATS

    if fmt not in FORMATS:
        typer.echo(
            f"错误：--format 只能是 {'、'.join(FORMATS)}，而不是 {fmt} / "
            f"--format must be one of {', '.join(FORMATS)}",
            err=True,
        )
        raise typer.Exit(EXIT_BAD_OPTION)
    if not _preflight(period=period, counties=county, create=False):
        typer.echo(
            "错误：数据仓库尚未建立，请先运行 gaibao db upgrade 或 gaibao ingest / "
            "the warehouse has no tables yet: run gaibao db upgrade or gaibao ingest first",
            err=True,
        )
        raise typer.Exit(code=EXIT_BAD_SETTINGS)
    from gaibao.settings import get_settings
    from tasks.register import check_period, render_register, returns_register
    from warehouse.store import Warehouse

    try:
        check_period(period)
    except ValueError as exc:
        typer.echo(f"错误：{exc}", err=True)
        raise typer.Exit(EXIT_BAD_OPTION) from exc
    settings = get_settings()
    wh = Warehouse.from_settings(settings)
    try:
        register = returns_register(
            wh, period, counties=county or None, history=history, due_day=settings.due_day, tz=settings.timezone
        )
    finally:
        wh.close()
    typer.echo(render_register(register, period, fmt, tz=settings.timezone), nl=fmt == "table")


@app.command()
def check(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="the county's return file")],
    county: Annotated[Optional[str], typer.Option("--county", "-c")] = None,  # noqa: UP007
    period: Annotated[Optional[str], typer.Option("--period", "-p")] = None,  # noqa: UP007
) -> None:
    """A clerk's pre-check with the same rules: prints every finding, writes nothing; exit 1 on errors."""
    from tasks.check import check_file, format_check

    result = check_file(file, county_code=county, period=period)
    typer.echo(format_check(result))
    raise typer.Exit(code=1 if result.has_errors else 0)


@plan_app.command("load")
def plan_load(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    cycle: Annotated[Optional[str], typer.Option("--cycle", help="规划期, when the file has none")] = None,  # noqa: UP007
) -> None:
    """Load the five-year plan reference (ref_plan)."""
    from tasks.ingest import seed_divisions
    from tasks.plan import load_plan_file
    from warehouse.store import Warehouse

    wh = Warehouse.from_settings()
    wh.upgrade()
    seed_divisions(wh)  # the plan's counties are checked against ref_division
    outcome = load_plan_file(wh, file, default_cycle=cycle)
    typer.echo(outcome.message)
    raise typer.Exit(code=0 if outcome.ok else 1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the Alembic migrations to GAIBAO_WAREHOUSE_URL."""
    from warehouse.store import Warehouse

    from tasks.ingest import seed_divisions

    wh = Warehouse.from_settings()
    wh.upgrade()
    seed_divisions(wh)
    from sqlalchemy.engine import make_url

    typer.echo(f"warehouse at head: {make_url(wh.engine.url).render_as_string(hide_password=True)}")


@rules_app.command("impact")
def rules_impact_cmd(
    since: Annotated[Optional[str], typer.Option("--since", help="first period to re-judge, YYYY-MM")] = None,  # noqa: UP007
    out: Annotated[Optional[Path], typer.Option("--out", help="row-level details as CSV")] = None,  # noqa: UP007
    rules: Annotated[
        Optional[Path],  # noqa: UP007
        typer.Option("--rules", exists=True, file_okay=False, help="suites directory (default: expectations/ of the working tree)"),
    ] = None,
) -> None:
    """Re-judge every archived return with the rules in the working tree; writes nothing to the warehouse."""
    if since is not None:
        from gaibao.options import OptionError, check_period

        try:
            check_period(since, "--since")
        except OptionError as exc:
            typer.echo(f"错误：{exc}", err=True)
            raise typer.Exit(code=EXIT_BAD_OPTION) from None
    _quiet_runtime()
    from gaibao.settings import get_settings
    from tasks.impact import format_impact, rules_impact, write_impact_csv
    from warehouse.store import Warehouse

    settings = get_settings()
    # read only: no journal repair; the settings choose the lake (previous_rows reads it)
    wh = Warehouse(str(settings.warehouse_url), settings.home, recover=False, settings=settings)
    try:
        impact = rules_impact(wh, settings, rules_dir=rules, since=since)
        names = dict(wh.query("SELECT county_code, county_name FROM ref_division").itertuples(index=False, name=None))
    finally:
        wh.close()
    typer.echo(format_impact(impact, names))
    path = write_impact_csv(impact, out or settings.reports_dir / "rules_impact.csv")
    typer.echo(f"details ({len(impact.changes)} rows): {path}")


@app.command()
def demo(
    home: Annotated[Optional[Path], typer.Option("--home", help="GAIBAO_HOME for the demo")] = None,  # noqa: UP007
) -> None:
    """Generate the demo returns, run the whole pipeline on the embedded default, print where it went."""
    _quiet_runtime()
    if home is not None:
        os.environ["GAIBAO_HOME"] = str(home)
    from flows.runners import ensure_temporary_server
    from gaibao.demo_run import run_demo

    ensure_temporary_server()

    code = run_demo(echo=typer.echo)
    raise typer.Exit(code=code)


def _register_report_commands() -> None:
    """``gaibao pack`` and ``gaibao receipts`` live with the reports (reports/cli.py)."""
    from reports.cli import pack, send_receipts_command

    app.command("pack")(pack)
    app.command("receipts")(send_receipts_command)
    from reports.ledger_cli import circular, ledger  # 挂帐销号, 通报 / 约谈 (issue 14)

    app.command("ledger")(ledger)
    app.command("circular")(circular)


_register_report_commands()


def _register_trace_commands() -> None:
    """``gaibao trace``, ``gaibao archive get`` and ``gaibao rules show`` (reports/trace_cli.py)."""
    from reports.trace_cli import archive_app, rules_show, trace

    app.command("trace")(trace)
    app.add_typer(archive_app, name="archive")
    rules_app.command("show")(rules_show)


_register_trace_commands()


def _register_portal_commands() -> None:
    """``gaibao serve``, ``gaibao users`` and ``gaibao template`` live with the portal (portal/cli.py)."""
    from portal.cli import serve, template, users_app

    app.command("serve")(serve)
    app.command("template")(template)
    app.add_typer(users_app, name="users")


_register_portal_commands()


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
