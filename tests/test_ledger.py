"""The project ledger (挂帐销号), the circular (通报) and the summons list (约谈) over the demo.

Expectations are computed from the facts in the warehouse, by other paths than the ledger's own
(the pack's ``load_inputs`` + ``compute_exceptions`` for the exceptions, plain pandas for the
projects), never typed in. The demo is backfilled once on SQLite; its loaded tables are copied
into a real PostgreSQL warehouse, whose ledger must come out identical.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from gaibao.contract import COMPLETED, NOT_STARTED
from reports import periods
from reports.config import ScoreWeights, Thresholds
from reports.sample import HOSTILE_FORMULA, HOSTILE_SCRIPT
from warehouse.schema import LEDGER_TABLES

START, END = "2017-01", "2018-12"
LEDGER_CATEGORIES = ("NOT_STARTED_OVERDUE", "STALLED", "COUNTY_BEHIND")
BASE_TABLES = ("ref_division", "ref_plan", "submission", "dq_issue", "fact_progress", "fact_funding")


def _set_home(home: Path, url: str | None = None) -> None:
    from gaibao.settings import get_settings

    os.environ["GAIBAO_HOME"] = str(home)
    if url:
        os.environ["GAIBAO_WAREHOUSE_URL"] = url
    else:
        os.environ.pop("GAIBAO_WAREHOUSE_URL", None)
    os.environ.pop("GAIBAO_SOURCES", None)
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Iterator[Path]:
    """The demo generated and backfilled once (its ledger built by the backfill's refresh)."""
    from flows.backfill import backfill
    from gaibao.demo import generate_demo
    from tasks.plan import load_plan_file
    from warehouse.store import Warehouse

    saved = {k: os.environ.get(k) for k in ("GAIBAO_HOME", "GAIBAO_WAREHOUSE_URL", "GAIBAO_SOURCES")}
    home = tmp_path_factory.mktemp("ledger") / "home"
    _set_home(home)
    manifest = generate_demo(home)
    with Warehouse.from_settings() as wh:
        wh.upgrade()
        assert load_plan_file(wh, manifest.plan_file).ok
    backfill(start=START, end=END)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    from gaibao.settings import get_settings

    get_settings.cache_clear()


def _open(home: Path, url: str | None = None):
    from warehouse.store import Warehouse

    _set_home(home, url)
    return Warehouse.from_settings()


def _copy_home(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "home"
    shutil.copytree(src, dst)
    return dst


def ledger_rows(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    out = {}
    with engine.connect() as conn:
        for t in LEDGER_TABLES:
            res = conn.execute(sa.select(t))
            f = pd.DataFrame(res.all(), columns=list(res.keys()), dtype=object)
            out[t.name] = f.sort_values(list(f.columns)[:4]).reset_index(drop=True)
    return out


def assert_same_ledger(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_dtype=False, obj=name)


@pytest.fixture(scope="module")
def pg_demo(demo: Path, pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The demo's loaded tables copied into a real PostgreSQL warehouse, its marts and ledger
    rebuilt there by the warehouse's own refresh."""
    from tests.conftest import _reset_schema
    from warehouse import schema
    from warehouse.store import Warehouse

    _reset_schema(pg_server_url)
    src = _open(demo)
    pg = Warehouse(pg_server_url, tmp_path_factory.mktemp("pg") / "home")
    pg.upgrade()
    with src.engine.connect() as s, pg.engine.begin() as d:
        for name in BASE_TABLES:
            table = schema.metadata.tables[name]
            rows = [dict(r._mapping) for r in s.execute(sa.select(table))]
            for i in range(0, len(rows), 5000):
                d.execute(table.insert(), rows[i : i + 5000])
    pg.rebuild_marts()
    src.close()
    pg.close()
    yield pg_server_url


# -- expectations from the facts -----------------------------------------------------------
def _facts(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(
            sa.text(
                "SELECT county_code, project_id, period, status, completed_date, school_name, project_type, "
                "planned_start FROM fact_progress"
            ),
            conn,
        )


def _reported(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(
            sa.text(
                "SELECT DISTINCT county_code, period FROM submission WHERE kind = 'progress' AND status = 'accepted'"
            ),
            conn,
        )


def expected_projects(facts: pd.DataFrame, reported: pd.DataFrame) -> pd.DataFrame:
    rep = reported.groupby("county_code")["period"].apply(sorted).to_dict()
    rows = []
    for (c, p), g in facts.sort_values("period").groupby(["county_code", "project_id"]):
        statuses = g["status"].tolist()
        last = g.iloc[-1]
        closed_period = closed_on = closed_by = None
        if statuses[-1] == COMPLETED:
            i = len(statuses) - 1
            while i > 0 and statuses[i - 1] == COMPLETED:
                i -= 1
            row = g.iloc[i]
            closed_period, closed_by = row["period"], "COMPLETED"
            done = pd.to_datetime(row["completed_date"], errors="coerce")
            closed_on = done.date() if not pd.isna(done) else periods.last_day(row["period"])
        else:
            later = [x for x in rep.get(c, []) if x > last["period"]]
            if later:
                closed_period, closed_by, closed_on = later[0], "WITHDRAWN", periods.last_day(later[0])
        rows.append(
            {
                "county_code": c,
                "project_id": p,
                "first_period": g["period"].iloc[0],
                "last_period": last["period"],
                "status": last["status"],
                "school_name": last["school_name"],
                "closed_period": closed_period,
                "closed_by": closed_by,
                "closed_on": closed_on,
            }
        )
    return pd.DataFrame(rows)


def expected_events(wh, facts: pd.DataFrame, reported: pd.DataFrame, th: Thresholds) -> pd.DataFrame:
    """The events replayed from the exceptions the pack's own path computes, month by month."""
    from reports.exceptions import compute_exceptions
    from reports.inputs import load_inputs

    present = set(facts[["county_code", "project_id", "period"]].itertuples(index=False, name=None))
    status = {
        (c, p, per): s
        for c, p, per, s in facts[["county_code", "project_id", "period", "status"]].itertuples(
            index=False, name=None
        )
    }
    rep = set(reported.itertuples(index=False, name=None))
    current: dict[tuple, dict] = {}
    done: list[dict] = []
    for period in periods.window(END, periods.index(END) - periods.index(START) + 1):
        exc = compute_exceptions(load_inputs(wh, period, th.history_periods), th)
        exc = exc[exc["category"].isin(LEDGER_CATEGORIES)]
        hits = {
            (str(c), p if isinstance(p, str) else "", cat)
            for c, p, cat in exc[["county_code", "project_id", "category"]].itertuples(index=False, name=None)
        }
        for key in list(current):
            if key in hits:
                continue
            c, p, _ = key
            if p == "":
                how = "RESOLVED"
            elif (c, p, period) in present:
                how = "COMPLETED" if status[(c, p, period)] == COMPLETED else "RESOLVED"
            elif (c, period) in rep:
                how = "WITHDRAWN"
            else:
                continue
            done.append({**current.pop(key), "closed_period": period, "closed_by": how})
        for key in hits - set(current):
            current[key] = {
                "county_code": key[0],
                "project_id": key[1],
                "category": key[2],
                "opened_period": period,
            }
    done += [{**e, "closed_period": None, "closed_by": None} for e in current.values()]
    return pd.DataFrame(done)


def _cmp(frame: pd.DataFrame, cols: list[str]) -> list[tuple]:
    f = frame[cols].astype(object)
    return sorted(
        tuple(None if pd.isna(v) else v for v in row) for row in f.itertuples(index=False, name=None)
    )


# -- the ledger ------------------------------------------------------------------------------
def test_ledger_projects_follow_the_facts(demo: Path) -> None:
    wh = _open(demo)
    facts, reported = _facts(wh.engine), _reported(wh.engine)
    got = ledger_rows(wh.engine)
    state = got["ledger_state"]
    assert len(state) == len(facts) and set(state["source"]) == {"progress"}
    assert not {"reporter", "phone"} & set(state.columns)
    want = expected_projects(facts, reported)
    cols = [
        "county_code",
        "project_id",
        "first_period",
        "last_period",
        "status",
        "school_name",
        "closed_period",
        "closed_by",
    ]
    assert _cmp(got["ledger_project"], cols) == _cmp(want, cols)
    on = got["ledger_project"].set_index(["county_code", "project_id"])["closed_on"]
    for r in want.itertuples():
        assert on[(r.county_code, r.project_id)] == r.closed_on, (r.county_code, r.project_id)
    # the demo exercises both ways of being ticked off, and projects still open
    assert {"COMPLETED", None} <= set(got["ledger_project"]["closed_by"])
    wh.close()


def test_exceptions_open_and_close_in_the_months_the_rules_say(demo: Path) -> None:
    wh = _open(demo)
    facts, reported = _facts(wh.engine), _reported(wh.engine)
    want = expected_events(wh, facts, reported, Thresholds())
    got = ledger_rows(wh.engine)["ledger_exception"]
    cols = ["county_code", "project_id", "category", "opened_period", "closed_period", "closed_by"]
    assert _cmp(got, cols) == _cmp(want, cols)
    assert set(got["category"]) == set(LEDGER_CATEGORIES)
    assert got["closed_period"].notna().any() and got["closed_period"].isna().any()
    wh.close()


def test_incremental_rebuild_after_a_resubmission_equals_a_full_rebuild(demo: Path, tmp_path: Path) -> None:
    """A county corrects an earlier month: the nightly refresh rebuilds the ledger from that
    month only; the rows equal a rebuild from the first month."""
    from gaibao.contract import canonical_names
    from gaibao.returnfiles import FileStyle, write_return
    from gaibao.settings import get_settings
    from tasks import ingest

    home = _copy_home(demo, tmp_path)
    wh = _open(home)
    ev = ledger_rows(wh.engine)["ledger_exception"]
    # an overdue project open across 2018-06: the correction says it started that month
    target = ev[
        (ev["category"] == "NOT_STARTED_OVERDUE")
        & (ev["opened_period"] < "2018-06")
        & (ev["closed_period"].isna() | (ev["closed_period"] > "2018-07"))
    ].iloc[0]
    county, project, period = target["county_code"], target["project_id"], "2018-06"
    facts = wh.read_table("fact_progress", where={"county_code": county, "period": period})
    rows = facts[[c for c in canonical_names("progress") if c in facts.columns]].to_dict("records")
    for row in rows:
        for key, value in list(row.items()):
            if isinstance(value, pd.Timestamp):
                row[key] = value.date()
            elif value is not None and not isinstance(value, str) and pd.isna(value):
                row[key] = None
        if row["project_id"] == project:
            row["status"], row["actual_start"] = "在建", date(2018, 6, 10)
            row["started_area_m2"] = row.get("planned_area_m2") or 0
    name = wh.query("SELECT county_name FROM ref_division WHERE county_code = :c", {"c": county})[
        "county_name"
    ][0]
    write_return(
        home / "inbox" / county / f"{name}全面改薄项目进展月报2018年6月_更正.xlsx",
        "progress",
        rows,
        FileStyle(fmt="xlsx", title_rows=True),
        period=period,
    )
    settings = get_settings()
    plan = ingest.plan_run(wh, settings, period, [county], False)
    chunks = [ingest.fetch_and_read(c, period, settings, plan.known) for c in plan.chunks]
    counts = ingest.load_judged(
        wh, ingest.judge_period(wh, settings, ingest.gather_period(settings, period, chunks, plan.archived))
    )
    assert counts["submissions"] == 1
    assert wh.query("SELECT MIN(period) AS p FROM mart_dirty")["p"][0] == period
    wh.rebuild_marts(from_period=END, only_if_changed=True)  # the nightly's call: the mark wins
    incremental = ledger_rows(wh.engine)
    e = incremental["ledger_exception"]
    mine = e[
        (e["county_code"] == county) & (e["project_id"] == project) & (e["category"] == "NOT_STARTED_OVERDUE")
    ]
    closed = mine[mine["opened_period"] == target["opened_period"]].iloc[0]
    assert (closed["closed_period"], closed["closed_by"]) == (period, "RESOLVED")
    assert "2018-07" in set(mine["opened_period"])  # July's return still says 未开工: open again
    wh.rebuild_marts()
    assert_same_ledger(incremental, ledger_rows(wh.engine))
    wh.close()


def test_postgres_ledger_equals_sqlite_and_rebuilds_incrementally(demo: Path, pg_demo: str) -> None:
    from warehouse.store import Warehouse

    sqlite = _open(demo)
    want = ledger_rows(sqlite.engine)
    sqlite.close()
    pg = Warehouse(pg_demo, demo.parent / "pg-check")
    assert_same_ledger(want, ledger_rows(pg.engine))
    pg.rebuild_marts(from_period="2018-03")
    assert_same_ledger(want, ledger_rows(pg.engine))
    pg.close()


# -- pack, letters, circular, summons on both databases ---------------------------------------
@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_wh(request: pytest.FixtureRequest, demo: Path, tmp_path: Path):
    """The demo warehouse on SQLite (a copy), or its PostgreSQL twin."""
    if request.param == "sqlite":
        wh = _open(_copy_home(demo, tmp_path))
    else:
        url = request.getfixturevalue("pg_demo")
        home = tmp_path / "home"
        home.mkdir()
        wh = _open(home, url)
    yield wh
    wh.close()
    _set_home(demo)


def _personal(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT DISTINCT reporter, phone FROM fact_progress")).all()
    values = {str(v) for r in rows for v in r if v}
    assert values  # the demo has them, in the warehouse only
    return values


def _xlsx_text(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        return "\n".join(z.read(n).decode("utf-8", "replace") for n in z.namelist() if n.endswith(".xml"))


def _pdf_text(path: Path) -> str:
    pypdf = pytest.importorskip("pypdf")
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(path).pages)


def test_pack_and_letters_show_the_ledger_each_county_its_own(any_wh, tmp_path: Path) -> None:
    from reports.pack import build_pack

    wh = any_wh
    result = build_pack(wh, END, tmp_path / "pack", Thresholds(), ScoreWeights())
    projects = ledger_rows(wh.engine)["ledger_project"]
    events = ledger_rows(wh.engine)["ledger_exception"]
    html = result.files["html"].read_text(encoding="utf-8")
    assert "挂帐销号" in html and "仍在挂帐的异常事项" in html and "约谈建议名单县区整改情况" in html
    wb = _xlsx_text(result.files["xlsx"])
    for project in events.loc[events["closed_period"] == END, "project_id"]:
        if project:
            assert project in wb  # every exception closed this month is listed in the workbook
    ids = projects.groupby("county_code")["project_id"].apply(set).to_dict()
    personal = _personal(wh.engine)
    assert len(result.letters) >= 2
    for code, files in result.letters.items():
        own = ids.get(code, set())
        others = set().union(*(v for c, v in ids.items() if c != code)) - own
        text = files.html.read_text(encoding="utf-8") + _xlsx_text(files.xlsx)
        assert "在账项目" in text
        leaked = [p for p in others if p in text]
        assert not leaked, (code, leaked[:5])
        still_open = projects[(projects["county_code"] == code) & projects["closed_period"].isna()]
        for p in still_open["project_id"]:
            assert p in text  # its own open projects are all listed
        assert not [v for v in personal if v in text]


@contextlib.contextmanager
def hostile_names(wh) -> Iterator[tuple[str, str]]:
    """An open overdue project and another of its county get hostile school names (script,
    formula), the ledger rebuilt; the names are put back afterwards (the PostgreSQL twin is
    shared by the module)."""
    ev = ledger_rows(wh.engine)["ledger_exception"]
    row = ev[(ev["category"] == "NOT_STARTED_OVERDUE") & ev["closed_period"].isna()].iloc[0]
    saved = wh.query(
        "SELECT project_id, period, school_name FROM fact_progress WHERE county_code = :c",
        {"c": row["county_code"]},
    )
    # the names are changed in SQL only: the county's lake files go, so every reader (the
    # ledger's rules, the pack) takes SQL's rows (a PostgreSQL twin has no lake files at all)
    lake = Path(wh.lake.root) if getattr(wh.lake, "is_local", False) else None
    if lake is not None:
        for folder in lake.glob(f"progress/period=*/county={row['county_code']}"):
            shutil.rmtree(folder)
    with wh.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE fact_progress SET school_name = :s WHERE county_code = :c AND project_id = :p"),
            {"s": HOSTILE_SCRIPT, "c": row["county_code"], "p": row["project_id"]},
        )
        other = conn.execute(
            sa.text(
                "SELECT project_id FROM fact_progress WHERE county_code = :c AND project_id <> :p LIMIT 1"
            ),
            {"c": row["county_code"], "p": row["project_id"]},
        ).scalar_one()
        conn.execute(
            sa.text("UPDATE fact_progress SET school_name = :s WHERE county_code = :c AND project_id = :p"),
            {"s": HOSTILE_FORMULA, "c": row["county_code"], "p": other},
        )
    wh.rebuild_marts()
    try:
        yield row["county_code"], other
    finally:
        with wh.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "UPDATE fact_progress SET school_name = :s"
                    " WHERE county_code = :c AND project_id = :p AND period = :per"
                ),
                [
                    {"s": r.school_name, "c": row["county_code"], "p": r.project_id, "per": r.period}
                    for r in saved.itertuples()
                ],
            )
        wh.rebuild_marts()


def test_circular_html_and_pdf_name_the_lagging_counties_and_overdue_projects(any_wh, tmp_path: Path) -> None:
    wh = any_wh
    with hostile_names(wh) as (county, _):
        _check_circular(wh, county, tmp_path)


def _check_circular(wh, county: str, tmp_path: Path) -> None:
    from gaibao.settings import get_settings
    from reports.circular import build_circular

    os.environ["GAIBAO_CIRCULAR_OFFICE"] = "测试市教育局改薄办"
    os.environ["GAIBAO_CIRCULAR_NUMBER_PREFIX"] = "测改通"
    get_settings.cache_clear()
    try:
        settings = get_settings()
        if not settings.chromium.exists():
            pytest.skip(f"{settings.chromium} is not installed (bash scripts/install_system_deps.sh --all)")
        files = build_circular(wh.engine, END, tmp_path / "通报", settings, issued_on=date(2019, 1, 8))
    finally:
        os.environ.pop("GAIBAO_CIRCULAR_OFFICE")
        os.environ.pop("GAIBAO_CIRCULAR_NUMBER_PREFIX")
        get_settings.cache_clear()
    assert files.number == "测改通〔2018〕12号" and files.pdf is not None, files.pdf_error
    ev = ledger_rows(wh.engine)["ledger_exception"]
    open_now = ev[ev["closed_period"].isna()]
    names = dict(
        wh.query("SELECT county_code, county_name FROM ref_division").itertuples(index=False, name=None)
    )
    lagging = {names[c] for c in open_now.loc[open_now["category"] == "COUNTY_BEHIND", "county_code"]}
    overdue = set(open_now.loc[open_now["category"] == "NOT_STARTED_OVERDUE", "project_id"])
    assert lagging and overdue
    html = files.html.read_text(encoding="utf-8")
    assert "&lt;script&gt;" in html and HOSTILE_SCRIPT not in html
    assert files.pdf.read_bytes()[:5] == b"%PDF-"
    text = _pdf_text(files.pdf)
    assert (
        "通报" in text
        and "测试市教育局改薄办" in text
        and "测改通〔2018〕12号" in text
        and "2019年1月8日" in text
    )
    flat = text.replace("\n", "")
    for name in lagging:
        assert name in html and name in flat
    for project in overdue:
        assert project in html and project in flat
    assert names[county] in html
    personal = _personal(wh.engine)
    summons = files.summons_html.read_text(encoding="utf-8") + files.summons_csv.read_text(
        encoding="utf-8-sig"
    )
    for doc in (html, text, summons):
        assert not [v for v in personal if v in doc]
    assert HOSTILE_SCRIPT not in files.summons_html.read_text(encoding="utf-8")


def test_summons_list_and_its_follow_up(any_wh) -> None:
    from gaibao.settings import get_settings
    from reports.circular import propose_summons, summons_followup
    from reports.exceptions import compute_exceptions
    from reports.inputs import load_inputs

    wh = any_wh
    s = get_settings()
    n, m = s.summons_lag_months, s.summons_not_started_days
    th = Thresholds()
    behind_by_period = {}
    for period in periods.window(END, n + 1):
        exc = compute_exceptions(load_inputs(wh, period, th.history_periods), th)
        behind_by_period[period] = set(exc.loc[exc["category"] == "COUNTY_BEHIND", "county_code"].astype(str))
    facts = _facts(wh.engine)
    for period in (periods.previous(END), END):
        lagging = set.intersection(*(behind_by_period[p] for p in periods.window(period, n)))
        now = facts[(facts["period"] == period) & (facts["status"] == NOT_STARTED)]
        days = (
            pd.Timestamp(periods.last_day(period)) - pd.to_datetime(now["planned_start"], errors="coerce")
        ).dt.days
        late = set(now.loc[(days > m).to_numpy(), "county_code"])
        got = propose_summons(wh.engine, period, n, m)
        assert set(got["county_code"]) == lagging | late, period
        for r in got.itertuples():
            assert ("进度滞后" in r.reasons) == (r.county_code in lagging)
            assert ("未开工" in r.reasons) == (r.county_code in late)
            assert r.evidence
    before = set(propose_summons(wh.engine, periods.previous(END), n, m)["county_code"])
    after = set(propose_summons(wh.engine, END, n, m)["county_code"])
    follow = summons_followup(wh.engine, END, s)
    assert set(follow["county_code"]) == before
    for r in follow.itertuples():
        assert r.verdict.startswith("已改善") == (r.county_code not in after)


# -- the command ---------------------------------------------------------------------------
def test_gaibao_ledger_command_in_every_format(demo: Path, tmp_path: Path) -> None:
    home = _copy_home(demo, tmp_path)
    wh = _open(home)
    with hostile_names(wh) as (county, _):
        _check_ledger_command(wh, county)
    wh.close()


def _check_ledger_command(wh, county: str) -> None:
    from typer.testing import CliRunner

    from gaibao.cli import app

    projects = ledger_rows(wh.engine)["ledger_project"]
    name = wh.query("SELECT county_name FROM ref_division WHERE county_code = :c", {"c": county})[
        "county_name"
    ][0]
    personal = _personal(wh.engine)
    runner = CliRunner()
    own = projects[(projects["county_code"] == county) & (projects["first_period"] <= "2018-06")]
    others = set(projects.loc[projects["county_code"] != county, "project_id"])

    out = runner.invoke(app, ["ledger", "--county", county, "--period", "2018-06", "--format", "json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert {p["project_id"] for p in data["projects"]} == set(own["project_id"])
    closed = own[own["closed_period"].notna() & (own["closed_period"] <= "2018-06")]
    assert data["projects_closed"] == len(closed) and data["projects_open"] == len(own) - len(closed)

    out = runner.invoke(app, ["ledger", "--county", name, "--period", "2018-06"])
    assert out.exit_code == 0, out.output
    assert f"{name}（{county}）项目台账" in out.output
    assert all(p in out.output for p in own["project_id"])

    out = runner.invoke(app, ["ledger", "-c", county, "-f", "csv"])
    assert out.exit_code == 0, out.output
    assert f"'{HOSTILE_FORMULA}".replace('"', '""') in out.output
    for text in (out.output,):
        assert not [p for p in others if p in text]
        assert not [v for v in personal if v in text]

    bad = runner.invoke(app, ["ledger", "--county", "不存在县"])
    assert bad.exit_code == 2 and "未找到县区" in bad.output
    bad = runner.invoke(app, ["ledger", "--county", county, "--period", "2018-13"])
    assert bad.exit_code == 2 and "报告期应为YYYY-MM" in bad.output
