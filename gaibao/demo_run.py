"""What ``make demo`` runs: generate the demo returns, run the whole pipeline, print where it went."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from sqlalchemy.engine import make_url

DEMO_START, DEMO_END = "2017-01", "2018-12"


def run_demo(echo: Callable[[str], object] = print) -> int:
    from gaibao.demo import generate_demo
    from gaibao.settings import get_settings

    # The demo's files carry the times they "arrived" (two years of history written at once): the
    # replay takes them as received_at, so that the one late return is the only late one.
    os.environ.setdefault("GAIBAO_REPLAY_FILE_TIMES", "true")
    get_settings.cache_clear()
    settings = get_settings()
    home = settings.home.resolve()
    t0 = time.perf_counter()
    echo(f"GAIBAO_HOME = {home}")
    manifest = generate_demo(settings.home)
    echo(f"demo returns written: {settings.inbox_dir.resolve()} ({len(manifest.counties)} counties, "
         f"{manifest.periods[0]}..{manifest.periods[-1]})")

    from tasks.plan import load_plan_file
    from warehouse.store import Warehouse

    wh = Warehouse.from_settings(settings)
    wh.upgrade()
    outcome = load_plan_file(wh, manifest.plan_file)
    echo(f"five-year plan: {outcome.message}")

    from flows.backfill import backfill

    summary = backfill(start=DEMO_START, end=DEMO_END)
    totals = summary["totals"]
    echo(
        f"backfill {DEMO_START}..{DEMO_END}: files {totals['files_seen']}, accepted {totals['accepted']}, "
        f"refused {totals['refused']}, rows accepted {totals['rows_accepted']}, rows rejected {totals['rows_rejected']}"
    )
    from reports.delivery import send_receipts

    receipts = send_receipts(DEMO_END, wh, settings)
    echo(f"receipts for {DEMO_END}: {receipts.summary()}")

    from flows.pack import monthly_meeting_pack

    pack = monthly_meeting_pack(period=DEMO_END, send=True)
    echo(f"meeting pack {DEMO_END}: {pack['out_dir']}")
    for name, path in pack["files"].items():
        echo(f"  {name}: {path}")
    echo(f"  county letters: {pack['letters']} in {pack['out_dir']}/letters/")
    echo(f"  exceptions: {pack['exceptions']}")
    from reports.circular import build_circular

    counts = wh.query(
        "SELECT (SELECT COUNT(*) FROM ledger_project) AS projects,"
        " (SELECT COUNT(*) FROM ledger_project WHERE closed_period IS NULL) AS open_projects,"
        " (SELECT COUNT(*) FROM ledger_exception) AS exceptions,"
        " (SELECT COUNT(*) FROM ledger_exception WHERE closed_period IS NULL) AS open_exceptions"
    ).iloc[0]
    echo(
        f"project ledger (挂帐销号): {counts['projects']} projects ({counts['open_projects']} still open), "
        f"{counts['exceptions']} exceptions ({counts['open_exceptions']} still open); "
        f"gaibao ledger --county 341221 --period {DEMO_END}"
    )
    circular = build_circular(wh.engine, DEMO_END, settings.reports_dir / DEMO_END / "通报", settings)
    echo(f"circular {circular.number}: {circular.html}")
    echo(f"  pdf: {circular.pdf or circular.pdf_error}")
    echo(f"  summons list ({circular.summons} counties): {circular.summons_html}")
    echo(f"  summons csv: {circular.summons_csv}")
    messages = sorted(settings.outbox_dir.rglob("*.eml"))
    echo(f"outbox: {settings.outbox_dir.resolve()} ({len(messages)} messages)")
    for path in pack.get("messages", [])[:5]:
        echo(f"  {path}")

    from portal.demo import demo_accounts
    from tasks.ingest import seed_divisions

    seed_divisions(wh)
    echo("portal (信息平台): gaibao serve  ->  http://127.0.0.1:8000/  (专栏公开 /public needs no login)")
    for login in demo_accounts(wh.engine):
        echo(f"  {login.role_zh}（{login.scope_zh}）: {login.username} / {login.password}")

    url = make_url(settings.warehouse_url).render_as_string(hide_password=True)
    echo(f"warehouse: {url}")
    echo(f"archive:   {settings.archive_url or settings.archive_dir.resolve()}")
    echo(f"lake:      {settings.lake_url or settings.lake_dir.resolve()}")
    echo(f"register:  gaibao status --period {DEMO_END}")
    echo(f"done in {time.perf_counter() - t0:.1f} s")
    return 0
