"""The warehouse on real SQLite and the real PostgreSQL server: schema, archive, loads, marts."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import warehouse.store as store
from gaibao.divisions import bundled_divisions
from warehouse import Archive, Warehouse, make_submission_id
from warehouse.lake import Lake, arrow_schema
from warehouse.schema import fact_progress, metadata

RULES = "r" * 12


# -- builders ----------------------------------------------------------------------------------
def submission_row(
    county: str, period: str, content: str, status: str = "accepted", kind: str = "progress", **extra
) -> dict:
    sha = store.hashlib.sha256(content.encode()).hexdigest()
    row = {
        "submission_id": make_submission_id(kind, county, period, sha, RULES),
        "kind": kind,
        "county_code": county,
        "period": period,
        "source": "folder",
        "file_name": f"{county}_{period}.csv",
        "sha256": sha,
        "received_at": datetime(2017, 7, 3, 8, 0, tzinfo=UTC),
        "status": status,
        "reason": None if status == "accepted" else "WRONG_PERIOD: 报告期与本次报送不符",
        "rows_total": 2,
        "rows_accepted": 2 if status == "accepted" else 0,
        "rows_rejected": 0,
        "rules_version": RULES,
        "is_late": False,
        "unknown_columns": ["备用列"],
    }
    row.update(extra)
    return row


def project_rows(sub: dict, projects: list[tuple]) -> list[dict]:
    """projects: (project_id, type, status, planned, started, completed area, completed invest)."""
    rows = []
    for i, (pid, ptype, status, planned, started, completed, invest) in enumerate(projects, start=1):
        rows.append(
            {
                "submission_id": sub["submission_id"],
                "row_number": i + 1,
                "period": sub["period"],
                "county_code": sub["county_code"],
                "school_code": "3401020001",
                "school_name": "测试小学",
                "project_id": pid,
                "project_type": ptype,
                "status": status,
                "planned_area_m2": planned,
                "started_area_m2": started,
                "completed_area_m2": completed,
                "planned_invest_wan": 100.0,
                "completed_invest_wan": invest,
                "funds_central_wan": 0.0,
                "funds_local_wan": 0.0,
                "planned_start": pd.Timestamp("2017-03-01"),
                "actual_start": pd.Timestamp("2017-04-01") if status != "未开工" else pd.NaT,
                "completed_date": pd.Timestamp("2017-06-20") if status == "已竣工" else pd.NaT,
                "reporter": "张三",
                "phone": "13800000000",
                "note": None,
            }
        )
    return rows


def issue_rows(sub: dict, n: int = 1) -> list[dict]:
    return [
        {
            "submission_id": sub["submission_id"],
            "kind": sub["kind"],
            "county_code": sub["county_code"],
            "period": sub["period"],
            "row_number": 2,
            "project_id": "P1",
            "rule": "REGRESSION",
            "severity": "warning",
            "column_name": "completed_area_m2",
            "value": "10",
            "message": "第2行 竣工面积 比上期减少，请核实",
            "is_explained": False,
        }
        for _ in range(n)
    ]


def batch(*items: tuple[dict, list[tuple]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    subs = pd.DataFrame([s for s, _ in items])
    facts = pd.DataFrame([r for s, projects in items for r in project_rows(s, projects)])
    issues = pd.DataFrame([r for s, _ in items for r in issue_rows(s)])
    return subs, facts, issues


def two_returns_of_one_county(projects: int = 300) -> list[tuple[dict, list[tuple]]]:
    """Two versions of 340102's 2017-06 return (the second received a day later), for the
    concurrency tests."""
    rows = [(f"P{i}", "校舍改造", "在建", 100.0, 50.0, 10.0, 1.0) for i in range(projects)]
    return [
        (submission_row("340102", "2017-06", f"v{i}", received_at=datetime(2017, 7, 3 + i, tzinfo=UTC)), rows)
        for i in range(2)
    ]


def run_together(fn, items: list, timeout: float | None = None) -> None:
    """``fn(item)`` for every item, each in its own thread, all started before any is joined."""
    threads = [threading.Thread(target=fn, args=(it,)) for it in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)


TWO_PROJECTS = [
    ("P1", "校舍改造", "在建", 1000.0, 800.0, 500.0, 50.0),
    ("E1", "设备购置", "已竣工", 0.0, 0.0, 0.0, 30.0),
]


@pytest.fixture
def wh(warehouse_url: str, gaibao_home: Path) -> Warehouse:
    w = Warehouse(warehouse_url, gaibao_home)
    w.upgrade()
    w.load_divisions(bundled_divisions())
    yield w
    store.FAIL_AT = None
    w.close()


def snapshot(w: Warehouse) -> tuple[dict, dict]:
    """Every table's rows and every file's bytes under home (lake and archive)."""
    tables = {}
    for name in metadata.tables:
        frame = w.read_table(name)
        tables[name] = sorted(
            map(repr, frame.astype(object).where(frame.notna(), None).itertuples(index=False))
        )
    files = {
        p.relative_to(w.home).as_posix(): p.read_bytes()
        for p in sorted(w.home.rglob("*"))
        if p.is_file() and p.suffix != ".db" and not p.name.endswith(("-wal", "-shm"))
    }
    return tables, files


def lake_files(w: Warehouse, kind: str = "progress") -> list[str]:
    root = w.lake.root / kind
    return (
        sorted(p.relative_to(w.lake.root).as_posix() for p in root.rglob("*.parquet"))
        if root.exists()
        else []
    )


# -- schema ------------------------------------------------------------------------------------
def test_schema_comes_from_migrations(warehouse_url: str, gaibao_home: Path) -> None:
    w = Warehouse(warehouse_url, gaibao_home)
    w.upgrade()
    w.upgrade()  # idempotent
    insp = sa.inspect(w.engine)
    assert set(metadata.tables) <= set(insp.get_table_names())
    assert "alembic_version" in insp.get_table_names()
    cols = {c["name"] for c in insp.get_columns("fact_progress")}
    assert {"submission_id", "project_id", "reporter", "phone", "completed_date"} <= cols
    indexes = {i["name"]: i for i in insp.get_indexes("fact_progress")}
    assert indexes["uq_fact_progress_county_period_project"]["unique"]
    with w.engine.connect() as conn:  # the migrations create exactly warehouse.schema
        ours = {"include_name": lambda name, type_, _parent: type_ != "table" or name in metadata.tables}
        assert compare_metadata(MigrationContext.configure(conn, opts=ours), metadata) == []
    if w.dialect == "postgresql":
        ddl = w.query(
            "select indexdef from pg_indexes where indexname = 'uq_fact_progress_county_period_project'"
        )
        assert "NULLS NOT DISTINCT" in ddl["indexdef"][0]
    w.close()


# -- archive -----------------------------------------------------------------------------------
def test_archive_keeps_every_version_and_never_overwrites(tmp_path: Path) -> None:
    a = Archive(tmp_path / "archive")
    v1, v2 = b"first version", "第二版".encode()
    s1, s2 = a.put(v1), a.put(v2)
    assert s1 != s2 and a.get(s1) == v1 and a.get(s2) == v2
    assert a.path(s1) == tmp_path / "archive" / s1[:2] / s1
    mtime = a.path(s1).stat().st_mtime_ns
    assert a.put(v1) == s1
    assert a.path(s1).stat().st_mtime_ns == mtime  # not rewritten
    assert sorted(a) == sorted([s1, s2])
    assert not list((tmp_path / "archive").rglob(".tmp-*"))
    with pytest.raises(ValueError):
        a.path("../../etc/passwd")


# -- loading -----------------------------------------------------------------------------------
def test_load_then_supersede(wh: Warehouse) -> None:
    a = submission_row("340102", "2017-06", "v1")
    r1 = wh.load_batch(*batch((a, TWO_PROJECTS)), kind="progress")
    assert r1.accepted == [a["submission_id"]] and r1.fact_rows == 2 and r1.issues == 1
    assert lake_files(wh) == [f"progress/period=2017-06/county=340102/{a['submission_id']}.parquet"]
    assert wh.known_submission("progress", "340102", "2017-06", a["sha256"], RULES) == a["submission_id"]
    assert wh.known_submission("progress", "340102", "2017-06", "0" * 64, RULES) is None

    b = submission_row("340102", "2017-06", "v2", received_at=datetime(2017, 7, 4, tzinfo=UTC))
    r2 = wh.load_batch(*batch((b, TWO_PROJECTS[:1])), kind="progress")
    assert r2.superseded == [a["submission_id"]]
    subs = wh.submissions(period="2017-06").set_index("submission_id")
    assert subs.loc[a["submission_id"], "status"] == "superseded"
    assert subs.loc[b["submission_id"], "status"] == "accepted"
    facts = wh.read_table("fact_progress")
    assert facts["submission_id"].tolist() == [b["submission_id"]]
    assert lake_files(wh) == [f"progress/period=2017-06/county=340102/{b['submission_id']}.parquet"]
    # the superseded submission's issues stay as history
    assert set(wh.read_table("dq_issue")["submission_id"]) == {a["submission_id"], b["submission_id"]}
    # bulk identity check
    known = wh.known_submissions(
        [(s["kind"], s["county_code"], s["period"], s["sha256"], RULES) for s in (a, b)]
    )
    assert known == {a["submission_id"]: "superseded", b["submission_id"]: "accepted"}
    assert not (wh.lake.root / "_staging").exists() or not any((wh.lake.root / "_staging").iterdir())


def test_older_file_does_not_replace_newer(wh: Warehouse) -> None:
    new = submission_row("340102", "2017-06", "new", received_at=datetime(2017, 7, 5, tzinfo=UTC))
    old = submission_row("340102", "2017-06", "old", received_at=datetime(2017, 7, 1, tzinfo=UTC))
    wh.load_batch(*batch((new, TWO_PROJECTS)), kind="progress")
    result = wh.load_batch(*batch((old, TWO_PROJECTS[:1])), kind="progress")
    assert result.accepted == [] and result.superseded == [old["submission_id"]]
    assert set(wh.read_table("fact_progress")["submission_id"]) == {new["submission_id"]}


def test_same_batch_twice_leaves_identical_tables(wh: Warehouse) -> None:
    items = [(submission_row(c, "2017-06", f"x{c}"), TWO_PROJECTS) for c in ("340102", "340103", "340104")]
    wh.load_batch(*batch(*items), kind="progress")
    first = snapshot(wh)
    wh.load_batch(*batch(*items), kind="progress")
    assert snapshot(wh) == first
    assert len(wh.read_table("fact_progress")) == 6


def test_refused_changes_nothing_accepted(wh: Warehouse) -> None:
    good = submission_row("340102", "2017-06", "good")
    wh.load_batch(*batch((good, TWO_PROJECTS)), kind="progress")
    tables, files = snapshot(wh)
    bad = submission_row(
        "340102", "2017-06", "bad", status="refused", received_at=datetime(2017, 7, 9, tzinfo=UTC)
    )
    subs = pd.DataFrame([bad])
    r = wh.load_batch(subs, pd.DataFrame(), pd.DataFrame(issue_rows(bad)), kind="progress")
    assert r.refused == [bad["submission_id"]] and r.accepted == []
    after_tables, after_files = snapshot(wh)
    assert after_files == files
    for name in ("fact_progress", "fact_funding", "ref_plan", "ref_division"):
        assert after_tables[name] == tables[name]
    rec = wh.submissions(county="340102").set_index("submission_id")
    assert rec.loc[good["submission_id"], "status"] == "accepted"
    assert rec.loc[bad["submission_id"], "status"] == "refused"
    assert "WRONG_PERIOD" in rec.loc[bad["submission_id"], "reason"]


@pytest.mark.parametrize("point", store.FAIL_POINTS)
def test_failure_leaves_everything_as_before(wh: Warehouse, point: str) -> None:
    old = [(submission_row(c, "2017-06", f"old{c}"), TWO_PROJECTS) for c in ("340102", "340103")]
    wh.load_batch(*batch(*old), kind="progress")
    before = snapshot(wh)
    new = [
        (
            submission_row("340102", "2017-06", "new102", received_at=datetime(2017, 7, 8, tzinfo=UTC)),
            TWO_PROJECTS[:1],
        ),
        (submission_row("340104", "2017-06", "new104"), TWO_PROJECTS),
        (submission_row("340103", "2017-06", "old340103"), TWO_PROJECTS),  # same id: replaced in place
    ]
    store.FAIL_AT = point
    with pytest.raises(store.InjectedFailure):
        wh.load_batch(*batch(*new), kind="progress")
    store.FAIL_AT = None
    assert snapshot(wh) == before
    # and the warehouse still loads afterwards
    wh.load_batch(*batch(*new), kind="progress")
    assert sorted(wh.read_table("fact_progress", {"status": "在建"})["county_code"]) == [
        "340102",
        "340103",
        "340104",
    ]


_KILLED_LOADER = """
import sys
import pandas as pd
import warehouse.store as store
from warehouse import Warehouse

url, home, data, point = sys.argv[1:]
store.FAIL_AT, store.FAIL_MODE = point, "exit"
w = Warehouse(url, home)
w.load_batch(*(pd.read_pickle(f"{data}/{n}.pkl") for n in ("subs", "facts", "issues")), kind="progress")
"""


# A subprocess per case costs seconds; the other failure points are covered in-process above.
@pytest.mark.parametrize("point", ["during_lake_swap", "after_sql_commit"])
def test_killed_load_is_repaired_on_next_open(
    wh: Warehouse, warehouse_url: str, tmp_path: Path, point: str
) -> None:
    old = submission_row("340102", "2017-06", "old")
    wh.load_batch(*batch((old, TWO_PROJECTS)), kind="progress")
    before = snapshot(wh)
    new = submission_row("340102", "2017-06", "new", received_at=datetime(2017, 7, 8, tzinfo=UTC))
    other = submission_row("340103", "2017-06", "other")
    subs, facts, issues = batch((new, TWO_PROJECTS[:1]), (other, TWO_PROJECTS))
    data = tmp_path / "batch"
    data.mkdir()
    for name, frame in (("subs", subs), ("facts", facts), ("issues", issues)):
        frame.to_pickle(data / f"{name}.pkl")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_LOADER, warehouse_url, str(wh.home), str(data), point],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 75, proc.stderr
    assert list((wh.lake.root / "_journal").glob("*.json")), "the killed load left its journal"

    reopened = Warehouse(warehouse_url, wh.home)  # recovery runs on open
    assert not list((wh.lake.root / "_journal").glob("*"))
    if point == "after_sql_commit":  # committed: the load is finished, not undone
        assert reopened.read_table("warehouse_load").empty
        assert set(reopened.read_table("fact_progress")["submission_id"]) == {
            new["submission_id"],
            other["submission_id"],
        }
        assert lake_files(reopened) == [
            f"progress/period=2017-06/county=340102/{new['submission_id']}.parquet",
            f"progress/period=2017-06/county=340103/{other['submission_id']}.parquet",
        ]
        assert not any(p.is_file() for p in (wh.lake.root / "_trash").rglob("*"))
    else:
        assert snapshot(reopened) == before
    reopened.close()


def test_previous_rows_reads_latest_earlier_accepted_period(wh: Warehouse) -> None:
    items = [
        (submission_row("340102", "2017-04", "a4"), TWO_PROJECTS),
        (submission_row("340102", "2017-05", "a5"), TWO_PROJECTS[:1]),
        (submission_row("340103", "2017-04", "b4"), TWO_PROJECTS),
    ]
    for it in items:
        wh.load_batch(*batch(it), kind="progress")
    prev = wh.previous_rows("progress", "2017-06", ["340102", "340103", "340104"])
    assert sorted(zip(prev["county_code"], prev["period"], prev["project_id"], strict=True)) == [
        ("340102", "2017-05", "P1"),
        ("340103", "2017-04", "E1"),
        ("340103", "2017-04", "P1"),
    ]
    assert prev["completed_area_m2"].dtype == "float64"
    assert prev["reporter"].tolist() == ["张三"] * 3
    few = wh.previous_rows("progress", "2017-06", ["340102"], columns=["project_id", "status"])
    assert set(few.columns) == {
        "submission_id",
        "row_number",
        "period",
        "county_code",
        "project_id",
        "status",
    }
    assert few["project_id"].tolist() == ["P1"]
    assert wh.previous_rows("progress", "2017-04", ["340102"]).empty


def test_previous_rows_reads_sql_for_a_missing_lake_file(wh: Warehouse) -> None:
    may = [(submission_row(c, "2017-05", f"m{c}"), TWO_PROJECTS) for c in ("340102", "340103", "340104")]
    wh.load_batch(*batch(*may), kind="progress")
    newer = submission_row("340103", "2017-06", "j3")  # 340103's latest earlier period is June
    wh.load_batch(*batch((newer, TWO_PROJECTS[:1])), kind="progress")

    def rows(frame: pd.DataFrame) -> list[tuple]:
        cols = ["submission_id", "county_code", "period", "row_number", "project_id", "completed_area_m2"]
        return sorted(frame[cols].itertuples(index=False, name=None))

    from_lake = wh.previous_rows("progress", "2017-07")
    assert len(from_lake) == 5
    for sub in (may[0][0], newer):  # SQL gives the rows of the files the lake lost, and only those
        wh.lake.file_path("progress", sub["period"], sub["county_code"], sub["submission_id"]).unlink()
    assert rows(wh.previous_rows("progress", "2017-07")) == rows(from_lake)


def test_fact_lookups_by_submission_use_the_county_period_index(wh: Warehouse) -> None:
    """Neither fact table has an index on submission_id alone: the lookups by submission
    (store.matching_keys) must be able to use the one on (county_code, period)."""
    items = [(submission_row(c, "2017-06", f"v{c}"), TWO_PROJECTS) for c in ("340102", "340103")]
    wh.load_batch(*batch(*items), kind="progress")
    keys = [(s["county_code"], s["period"]) for s, _ in items]
    index = "uq_fact_progress_county_period_project"
    with wh.engine.connect() as conn, conn.begin():
        assert [i["name"] for i in sa.inspect(conn).get_indexes("fact_progress")] == [index]
        if wh.dialect == "postgresql":  # a table of four rows: the plan with the index, if there is one
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        for at_keys in store.matching_keys(conn, fact_progress, keys):
            query = sa.select(fact_progress.c.project_id).where(at_keys)
            stmt = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
            params = stmt.construct_params()
            if wh.dialect == "postgresql":
                plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {stmt}", params))
            else:
                positional = tuple(params[p] for p in stmt.positiontup or ())
                plan = "\n".join(
                    r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {stmt}", positional)
                )
            assert index in plan, plan
            assert sorted(conn.execute(query).scalars()) == ["E1", "E1", "P1", "P1"]


def test_reading_and_queries(wh: Warehouse, monkeypatch: pytest.MonkeyPatch) -> None:
    a = submission_row("340102", "2017-06", "v1")
    wh.load_batch(*batch((a, TWO_PROJECTS)), kind="progress")
    sub = wh.submissions(county="340102", kind="progress").iloc[0]
    assert sub["unknown_columns"] == '["备用列"]' and sub["rows_accepted"] == 2
    assert len(wh.read_table("ref_division")) == len(bundled_divisions())
    assert wh.read_table("fact_progress", {"project_id": ["P1", "X"]})["project_id"].tolist() == ["P1"]
    hostile = "340102' OR '1'='1"
    assert (
        wh.query("select count(*) as n from fact_progress where county_code = :c", {"c": hostile})["n"][0]
        == 0
    )
    with pytest.raises(ValueError):
        wh.read_table("sqlite_master")
    with pytest.raises(ValueError):  # facts that name another county than their submission
        bad = submission_row("340103", "2017-06", "bad")
        subs, facts, issues = batch((bad, TWO_PROJECTS))
        wh.load_batch(subs, facts.assign(county_code="340104"), issues, kind="progress")
    other = Warehouse.from_settings()  # GAIBAO_HOME / GAIBAO_WAREHOUSE_URL from the fixtures
    assert other.read_table("fact_progress")["submission_id"].tolist() == [a["submission_id"]] * 2
    other.close()


# -- marts -------------------------------------------------------------------------------------
def test_marts_carry_forward_rates_city_and_province(wh: Warehouse) -> None:
    wh.load_plan(
        pd.DataFrame(
            {
                "county_code": ["340102", "340103", "340302"],
                "plan_area_m2": [1000.0, 4000.0, 0.0],
                "plan_equipment_wan": [100.0, 0.0, 50.0],
                "plan_cycle": ["2014-2018"] * 3,
            }
        )
    )
    # 340102 (合肥): reports May and June; 340103 (合肥): May only -> carried into June.
    # 340302 (蚌埠): never reports progress. 340104 (合肥): reports June, has no plan row.
    may = [
        (
            submission_row("340102", "2017-05", "a5"),
            [("P1", "校舍改造", "在建", 2000.0, 1500.0, 900.0, 40.0)],
        ),
        (
            submission_row("340103", "2017-05", "b5"),
            [("P1", "校舍改造", "已竣工", 800.0, 800.0, 800.0, 60.0)],
        ),
    ]
    june = [
        (
            submission_row("340102", "2017-06", "a6", is_late=True),
            [
                ("P1", "校舍改造", "已竣工", 2000.0, 2000.0, 1200.0, 70.0),
                ("E1", "设备购置", "已竣工", 0.0, 0.0, 0.0, 30.0),
            ],
        ),
        (submission_row("340104", "2017-06", "c6"), [("P9", "校舍改造", "未开工", 500.0, 0.0, 0.0, 0.0)]),
    ]
    wh.load_batch(*batch(*may), kind="progress")
    wh.load_batch(*batch(*june), kind="progress")
    counts = wh.rebuild_marts()
    assert counts["mart_county_progress"] == 2 * 4  # 4 expected counties × May, June

    m = wh.read_table("mart_county_progress").set_index(["period", "county_code"])
    a = m.loc[("2017-06", "340102")]
    assert a["area_completion_rate"] == pytest.approx(1.2)  # 1200 / 1000: above 100%
    assert a["start_rate"] == pytest.approx(1.0)
    assert a["equipment_completion_rate"] == pytest.approx(0.3)
    assert a["projects_total"] == 2 and a["projects_completed"] == 2
    assert bool(a["has_return"]) and not bool(a["is_carried_forward"]) and bool(a["is_late"])
    assert a["county_name"] == "瑶海区" and a["city_name"] == "合肥市"
    b = m.loc[("2017-06", "340103")]
    assert not bool(b["has_return"]) and bool(b["is_carried_forward"]) and b["source_period"] == "2017-05"
    assert b["completed_area_m2"] == 800.0 and b["area_completion_rate"] == pytest.approx(0.2)
    assert pd.isna(b["equipment_completion_rate"])  # plan 0 -> null
    c = m.loc[("2017-06", "340104")]
    assert pd.isna(c["plan_area_m2"]) and pd.isna(c["area_completion_rate"]) and c["start_rate"] == 0.0
    d = m.loc[("2017-06", "340302")]
    assert not bool(d["has_return"]) and not bool(d["is_carried_forward"]) and pd.isna(d["completed_area_m2"])
    assert pd.isna(m.loc[("2017-05", "340104")]["projects_total"])

    city = wh.read_table("mart_city_progress").set_index(["period", "level", "city_code"])
    hefei = city.loc[("2017-06", "city", "340100")]
    assert hefei["completed_area_m2"] == 1200.0 + 800.0
    assert hefei["plan_area_m2"] == 5000.0
    assert hefei["area_completion_rate"] == pytest.approx(2000.0 / 5000.0)  # from sums, not an average
    assert hefei["start_rate"] == pytest.approx((2000.0 + 800.0 + 0.0) / (2000.0 + 800.0 + 500.0))
    assert (hefei["counties_total"], hefei["counties_reporting"], hefei["counties_carried_forward"]) == (
        3,
        2,
        1,
    )
    prov = city.loc[("2017-06", "province", "340000")]
    assert prov["city_name"] == "安徽省"
    assert prov["plan_equipment_wan"] == 150.0 and prov["equipment_completion_rate"] == pytest.approx(
        30.0 / 150.0
    )
    assert prov["counties_total"] == 4
    bengbu = city.loc[("2017-06", "city", "340300")]
    assert bengbu["counties_reporting"] == 0 and pd.isna(bengbu["completed_area_m2"])

    # Rebuilding from a later period keeps earlier rows and gives the same answer.
    before = wh.read_table("mart_county_progress")
    wh.rebuild_marts(from_period="2017-06")
    pd.testing.assert_frame_equal(wh.read_table("mart_county_progress"), before)


def test_marts_rebuild_only_what_changed_and_never_miss_a_load(wh: Warehouse) -> None:
    """A load marks its periods out of date in its own transaction; a nightly refresh with no
    mark does nothing; a load whose refresh never ran (a crash) is covered by the next one."""
    wh.load_plan(
        pd.DataFrame({"county_code": ["340102"], "plan_area_m2": [1000.0], "plan_equipment_wan": [100.0]})
    )
    wh.rebuild_marts(only_if_changed=True)
    may = (
        submission_row("340102", "2017-05", "m5"),
        [("P1", "校舍改造", "在建", 2000.0, 1500.0, 900.0, 40.0)],
    )
    wh.load_batch(*batch(may), kind="progress")
    assert wh.rebuild_marts(from_period="2017-05", only_if_changed=True)["mart_county_progress"] >= 1
    before = wh.read_table("mart_county_progress")
    assert wh.rebuild_marts(from_period="2017-05", only_if_changed=True) == {}  # unchanged rerun
    pd.testing.assert_frame_equal(wh.read_table("mart_county_progress"), before)

    # A May resubmission loads, and its refresh never runs (the run crashed after the load).
    fix = (
        submission_row("340102", "2017-05", "m5b", received_at=datetime(2017, 7, 4, 8, 0, tzinfo=UTC)),
        [("P1", "校舍改造", "已竣工", 2000.0, 2000.0, 1000.0, 40.0)],
    )
    wh.load_batch(*batch(fix), kind="progress")
    june = (
        submission_row("340102", "2017-06", "m6"),
        [("P1", "校舍改造", "已竣工", 2000.0, 2000.0, 1000.0, 40.0)],
    )
    wh.load_batch(*batch(june), kind="progress")
    wh.rebuild_marts(from_period="2017-06", only_if_changed=True)  # the next night: June only, asked
    m = wh.read_table("mart_county_progress").set_index(["period", "county_code"])
    assert m.loc[("2017-05", "340102")]["completed_area_m2"] == 1000.0  # May rebuilt too, from the mark
    assert m.loc[("2017-05", "340102")]["area_completion_rate"] == pytest.approx(1.0)

    # A plan reload marks every period.
    wh.load_plan(
        pd.DataFrame({"county_code": ["340102"], "plan_area_m2": [500.0], "plan_equipment_wan": [100.0]})
    )
    wh.rebuild_marts(from_period="2017-06", only_if_changed=True)
    m = wh.read_table("mart_county_progress").set_index(["period", "county_code"])
    assert m.loc[("2017-05", "340102")]["area_completion_rate"] == pytest.approx(2.0)
    assert wh.rebuild_marts(only_if_changed=True) == {}


def test_funding_mart_carries_forward(wh: Warehouse) -> None:
    s5 = submission_row("340102", "2017-05", "f5", kind="funding")
    s6 = submission_row("340103", "2017-06", "f6", kind="funding")
    facts = pd.DataFrame(
        [
            {"submission_id": s5["submission_id"], "row_number": 2, "period": "2017-05", "county_code": "340102",
             "funds_total_wan": 145000.0, "funds_rural_infra_wan": 55000.0, "land_mu": 1277.0,
             "teachers_recruited": 1766, "teachers_rural": 1464},
            {"submission_id": s6["submission_id"], "row_number": 2, "period": "2017-06", "county_code": "340103",
             "funds_total_wan": 10.0, "teachers_recruited": 3, "teachers_rural": 1},
        ]
    )  # fmt: skip
    wh.load_batch(pd.DataFrame([s5, s6]), facts, pd.DataFrame(), kind="funding")
    wh.rebuild_marts()
    m = wh.read_table("mart_county_funding").set_index(["period", "county_code"])
    june = m.loc[("2017-06", "340102")]
    assert (
        bool(june["is_carried_forward"])
        and june["funds_total_wan"] == 145000.0
        and june["teachers_rural"] == 1464
    )
    assert bool(m.loc[("2017-06", "340103")]["has_return"])
    assert not bool(m.loc[("2017-05", "340103")]["has_return"])


def test_marts_sum_only_the_accepted_submission_of_a_county_and_period(wh: Warehouse) -> None:
    """The marts sum the fact rows by (county_code, period); a load never leaves the rows of two
    submissions under one key, but were some there, the accepted one's alone are counted."""
    may = submission_row("340102", "2017-05", "a5")
    june = submission_row("340102", "2017-06", "a6")
    wh.load_batch(*batch((may, TWO_PROJECTS), (june, TWO_PROJECTS[:1])), kind="progress")
    wh.rebuild_marts()
    expected = wh.read_table("mart_county_progress")
    stray = {"submission_id": "f" * 20, "county_code": "340102", "project_id": "X1", "status": "在建",
             "project_type": "校舍改造", "planned_area_m2": 5.0, "completed_invest_wan": 1.0}  # fmt: skip
    with wh.engine.begin() as conn:  # rows of a submission that is not accepted, under both keys
        conn.execute(fact_progress.insert(), [{**stray, "period": p} for p in ("2017-05", "2017-06")])
    wh.rebuild_marts()
    pd.testing.assert_frame_equal(wh.read_table("mart_county_progress"), expected)
    wh.rebuild_marts(from_period="2017-06")  # May's figures carried forward from its submission
    pd.testing.assert_frame_equal(wh.read_table("mart_county_progress"), expected)
    assert expected.set_index("period").loc["2017-06", "projects_total"] == 1


# -- concurrency -------------------------------------------------------------------------------
def test_concurrent_loads_of_one_county_period_do_not_double_rows(
    warehouse_url: str, gaibao_home: Path
) -> None:
    """PostgreSQL: advisory locks per key; SQLite: BEGIN IMMEDIATE and a busy timeout."""
    w = Warehouse(warehouse_url, gaibao_home)
    w.upgrade()
    items = two_returns_of_one_county()
    errors: list[BaseException] = []

    def run(item: tuple) -> None:
        try:
            Warehouse(warehouse_url, gaibao_home).load_batch(*batch(item), kind="progress")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    run_together(run, items)
    assert not errors
    facts = w.read_table("fact_progress")
    assert len(facts) == 300 and facts["submission_id"].nunique() == 1
    accepted = w.submissions(kind="progress").query("status == 'accepted'")
    assert len(accepted) == 1 and accepted["submission_id"].iloc[0] == facts["submission_id"].iloc[0]
    assert len(lake_files(w)) == 1
    w.close()


# -- the local lake's staging ------------------------------------------------------------------
def _fact_table(rows: dict[str, list]) -> pa.Table:
    schema = arrow_schema(fact_progress)
    n = len(rows["submission_id"])
    return pa.table({f.name: pa.array(rows.get(f.name, [None] * n), f.type) for f in schema}, schema=schema)


@pytest.mark.parametrize("threads", [1, 4])
def test_stage_writes_one_file_per_submission_in_row_order(tmp_path: Path, threads: int) -> None:
    """Rows of a submission scattered through the batch still give one file, in row order."""
    lake = Lake(tmp_path / "lake")
    lake.stage_threads = threads
    march = datetime(2017, 3, 1).date()
    table = _fact_table(
        {
            "submission_id": ["b", "a", "b", "c", "a", "b"],
            "row_number": [4, 3, 2, 2, 2, 3],
            "period": ["2017-06"] * 6,
            "county_code": ["340102", "340103", "340102", "340104", "340103", "340102"],
            "project_id": ["B4", "A3", "B2", "C2", "A2", "B3"],
            "planned_start": [None, None, None, None, None, march],
        }
    )
    staged = lake.stage("load1", "progress", table)
    out = tmp_path / "lake" / "_staging" / "load1" / "progress"
    assert staged == {sid: out / f"{sid}.parquet" for sid in ("a", "b", "c")}
    assert sorted(p.name for p in out.iterdir()) == ["a.parquet", "b.parquet", "c.parquet"]
    assert staged == lake.staged_paths("load1", "progress", ["a", "b", "c"])
    for sid, projects in (("a", ["A2", "A3"]), ("b", ["B2", "B3", "B4"]), ("c", ["C2"])):
        back = pq.read_table(staged[sid])
        assert back.schema.remove_metadata() == table.schema
        assert back["project_id"].to_pylist() == projects
        assert back["row_number"].to_pylist() == sorted(back["row_number"].to_pylist())
        assert pq.ParquetFile(staged[sid]).metadata.row_group(0).column(0).compression == "ZSTD"
    assert pq.read_table(staged["b"])["planned_start"].to_pylist() == [None, march, None]
    back = lake.read([staged["b"], staged["a"], staged["c"]], table.schema)
    assert back.equals(table.take([2, 5, 0, 4, 1, 3]))  # B2 B3 B4, A2 A3, C2


def test_stage_keeps_contiguous_rows_as_they_come(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    n = 40  # more submissions than threads
    sids = [f"s{i:02d}" for i in range(n) for _ in range(3)]
    table = _fact_table(
        {
            "submission_id": sids,
            "row_number": [r for _ in range(n) for r in (2, 3, 4)],
            "period": ["2017-06"] * len(sids),
            "county_code": ["340102"] * len(sids),
            "project_id": [f"P{i}" for i in range(len(sids))],
        }
    )
    staged = lake.stage("load1", "progress", table)
    assert list(staged) == sorted(set(sids))
    assert lake.read(staged.values(), table.schema).equals(table)


def test_stage_refuses_null_keys_and_reports_a_failed_file(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    assert lake.stage("load1", "progress", _fact_table({"submission_id": []})) == {}
    rows = {
        "submission_id": ["a", "b"],
        "row_number": [2, 2],
        "period": ["2017-06", None],
        "county_code": ["340102"] * 2,
    }
    with pytest.raises(ValueError, match="null period"):
        lake.stage("load2", "progress", _fact_table(rows))
    rows["period"] = ["2017-06"] * 2
    (lake.staging_dir("load3") / "progress" / "b.parquet").mkdir(parents=True)  # b's file cannot be written
    with pytest.raises(OSError):
        lake.stage("load3", "progress", _fact_table(rows))
