"""PostgreSQL as the production warehouse (issue 4, section 1), against the real server.

- a load killed mid-COPY (backend terminated, loader process killed, or a row violating a
  constraint in the last COPY chunk) leaves every table and every file exactly as before;
- real ``gaibao ingest`` processes running at once: the same county and period never doubles a
  row, different counties both load;
- ``gaibao db upgrade`` builds the whole schema on a fresh database and is a no-op the second time;
- the nightly ingest of the demo gives the same county figures on PostgreSQL as on SQLite.

Every test here needs the server (``pg_server_url`` fails instead of skipping when
GAIBAO_REQUIRE_POSTGRES=1, as in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa

import warehouse.store as store
from gaibao.divisions import bundled_divisions
from tests.test_warehouse import run_together
from warehouse import Warehouse, make_submission_id
from warehouse.schema import metadata

pytestmark = [pytest.mark.postgres]

ON_POSTGRES = pytest.mark.parametrize("warehouse_url", ["postgres"], indirect=True)
GAIBAO = str(Path(sys.executable).with_name("gaibao"))
RULES = "p" * 12
BIG_ROWS_PER_COUNTY = 50_000  # four counties: 200k fact rows, four COPY chunks


# -- builders ----------------------------------------------------------------------------------
def _submission(county: str, period: str, content: str, received_at: datetime) -> dict:
    sha = store.hashlib.sha256(content.encode()).hexdigest()
    return {
        "submission_id": make_submission_id("progress", county, period, sha, RULES),
        "kind": "progress",
        "county_code": county,
        "period": period,
        "source": "folder",
        "file_name": f"{county}_{period}.csv",
        "sha256": sha,
        "received_at": received_at,
        "status": "accepted",
        "reason": None,
        "rows_total": 0,
        "rows_accepted": 0,
        "rows_rejected": 0,
        "rules_version": RULES,
        "is_late": False,
        "unknown_columns": None,
    }


def _facts(sub: dict, n: int) -> pd.DataFrame:
    """``n`` well-formed fact rows for one submission, built column-wise (fast for 50k rows)."""
    i = np.arange(n)
    return pd.DataFrame(
        {
            "submission_id": sub["submission_id"],
            "row_number": i + 2,
            "period": sub["period"],
            "county_code": sub["county_code"],
            "school_code": sub["county_code"] + "0001",
            "school_name": "测试小学",
            "project_id": [f"P{k:06d}" for k in i],
            "project_type": "校舍改造",
            "status": "在建",
            "planned_area_m2": 1000.0 + i,
            "started_area_m2": 800.0,
            "completed_area_m2": 500.0,
            "planned_invest_wan": 100.0,
            "completed_invest_wan": 50.0,
            "funds_central_wan": 20.0,
            "funds_local_wan": 30.0,
            "planned_start": pd.Timestamp("2017-03-01"),
            "actual_start": pd.Timestamp("2017-04-01"),
            "completed_date": pd.NaT,
            "reporter": "张三",
            "phone": "13800000000",
            "note": None,
        }
    )


def _batch(items: list[tuple[dict, int]]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    subs = pd.DataFrame([s for s, _ in items])
    subs["rows_total"] = subs["rows_accepted"] = [n for _, n in items]
    facts = pd.concat([_facts(s, n) for s, n in items], ignore_index=True)
    return subs, facts, pd.DataFrame()


def _snapshot(w: Warehouse) -> tuple[dict, dict]:
    """Every table's rows and every file's bytes under home (lake and archive)."""
    tables = {}
    for name in metadata.tables:
        frame = w.read_table(name)
        tables[name] = sorted(
            map(repr, frame.astype(object).where(frame.notna(), None).itertuples(index=False))
        )
    files = {
        p.relative_to(w.home).as_posix(): p.read_bytes() for p in sorted(w.home.rglob("*")) if p.is_file()
    }
    return tables, files


def _admin_engine(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT")


def _wait_for_copy(admin: sa.Engine, alive: Callable[[], bool], timeout: float = 120.0) -> int:
    """The pid of the backend running ``COPY "fact_progress"`` in this database, polled every 5 ms."""
    q = sa.text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND state = 'active' AND query LIKE 'COPY \"fact_progress\"%'"
    )
    deadline = time.monotonic() + timeout
    with admin.connect() as conn:
        while time.monotonic() < deadline:
            pid = conn.execute(q).scalar()
            if pid is not None:
                return int(pid)
            assert alive(), "the loader finished before its COPY was seen: make the batch larger"
            time.sleep(0.005)
    raise AssertionError("no COPY seen in time")


def _backend_gone(admin: sa.Engine, pid: int, timeout: float = 30.0) -> None:
    with admin.connect() as conn:
        deadline = time.monotonic() + timeout
        while conn.execute(sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).first():
            assert time.monotonic() < deadline, f"backend {pid} still alive"
            time.sleep(0.05)


@pytest.fixture
def wh(warehouse_url: str, gaibao_home: Path) -> Iterator[Warehouse]:
    w = Warehouse(warehouse_url, gaibao_home)
    w.upgrade()
    w.load_divisions(bundled_divisions())
    yield w
    w.close()


# -- 1. a load killed mid-COPY -------------------------------------------------------------------
# The loader process. Its staging thread and its COPY run at once; so that the kill always finds
# the staged batch on disk (what recovery must clean up), the COPY waits until the staging thread
# has written every file: the kill, which waits for the COPY, comes after the staging, not by luck.
_LOADER = """
import sys
import threading
import pandas as pd
import warehouse.store as store
from warehouse import Warehouse
from warehouse.lake import Lake

url, home, data = sys.argv[1:]
staged = threading.Event()
real_stage, real_bulk_insert = Lake.stage, store.bulk_insert

def stage(self, *args, **kwargs):
    try:
        return real_stage(self, *args, **kwargs)
    finally:
        staged.set()

def bulk_insert(conn, table, rows):
    if table.name == "fact_progress":
        assert staged.wait(120), "the staging thread never finished"
    return real_bulk_insert(conn, table, rows)

Lake.stage, store.bulk_insert = stage, bulk_insert
frames = [pd.read_pickle(f"{data}/{n}.pkl") for n in ("subs", "facts", "issues")]
w = Warehouse(url, home)
print("loading", flush=True)
w.load_batch(*frames, kind="progress")
print("loaded", flush=True)
"""


@ON_POSTGRES
@pytest.mark.parametrize("how", ["terminate_backend", "kill_loader_process", "constraint_in_last_chunk"])
def test_load_killed_mid_copy_leaves_warehouse_unchanged(
    wh: Warehouse, warehouse_url: str, tmp_path: Path, how: str
) -> None:
    june = datetime(2017, 7, 3, 8, 0, tzinfo=UTC)
    earlier = [(_submission(c, "2017-06", f"old{c}", june), 3) for c in ("340102", "340103")]
    wh.load_batch(*_batch(earlier), kind="progress")
    before = _snapshot(wh)
    assert len(wh.read_table("fact_progress")) == 6

    # 200k rows: a newer return for 340102 (would supersede the old one) and three new counties.
    later = june + timedelta(days=5)
    killed = [(_submission(c, "2017-06", f"big{c}", later), BIG_ROWS_PER_COUNTY) for c in ("340102", "340104", "340111", "340121")]  # fmt: skip
    subs, facts, issues = _batch(killed)
    killed_ids = set(subs["submission_id"])
    admin = _admin_engine(warehouse_url)
    journals = wh.lake.root / "_journal"

    if how == "terminate_backend":
        errors: list[BaseException] = []

        def load() -> None:
            try:
                wh.load_batch(subs, facts, issues, kind="progress")
            except BaseException as exc:  # noqa: BLE001 - the loader must see the failure
                errors.append(exc)

        loader = threading.Thread(target=load)
        loader.start()
        pid = _wait_for_copy(admin, loader.is_alive)
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar() is True
        loader.join(120)
        assert not loader.is_alive()
        assert len(errors) == 1, "the loader must get an error"
        assert isinstance(errors[0], (sa.exc.OperationalError, psycopg.OperationalError)), repr(errors[0])
        assert not list(journals.glob("*.json")), "the loader undid its own load"
    elif how == "kill_loader_process":
        data = tmp_path / "batch"
        data.mkdir()
        for name, frame in (("subs", subs), ("facts", facts), ("issues", issues)):
            frame.to_pickle(data / f"{name}.pkl")
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOADER, warehouse_url, str(wh.home), str(data)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            pid = _wait_for_copy(admin, lambda: proc.poll() is None)
            proc.send_signal(signal.SIGKILL)  # a kill -9 while the COPY streams: no cleanup at all
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
        out, _err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL and "loaded" not in out
        _backend_gone(admin, pid)  # PostgreSQL aborts the transaction when the client goes away
        left = list(journals.glob("*.json"))
        assert len(left) == 1 and json.loads(left[0].read_text("utf-8"))["state"] == "prepared"
        assert any((wh.lake.root / "_staging").rglob("*.parquet")), "the staged batch is still there"
        staged = {p.stem for p in (wh.lake.root / "_staging").rglob("*.parquet")}
        assert staged == killed_ids, "every file of the batch was staged before the kill"
    else:  # a duplicate project in the last row of the last COPY chunk: unique index violation
        last = len(facts) - 1
        facts.loc[last, "project_id"] = facts.loc[last - 1, "project_id"]
        with pytest.raises((sa.exc.IntegrityError, psycopg.errors.UniqueViolation)) as err:
            wh.load_batch(subs, facts, issues, kind="progress")
        assert "uq_fact_progress_county_period_project" in str(err.value)
        assert not list(journals.glob("*.json"))
    admin.dispose()

    reopened = Warehouse(warehouse_url, wh.home)  # a new open repairs whatever journal was left
    assert not list(journals.glob("*")), "recovery leaves no journal"
    assert _snapshot(reopened) == before
    facts_after = reopened.read_table("fact_progress")
    assert not killed_ids & set(facts_after["submission_id"])
    assert len(facts_after) == 6 and set(facts_after["county_code"]) == {"340102", "340103"}
    assert set(reopened.submissions()["status"]) == {"accepted"}
    # The warehouse (and, for the terminated backend, the very same Warehouse and its pool) still loads.
    nxt = _submission("340102", "2017-06", "after", later + timedelta(days=1))
    result = wh.load_batch(*_batch([(nxt, 4)]), kind="progress")
    assert result.accepted == [nxt["submission_id"]] and result.fact_rows == 4
    assert len(reopened.read_table("fact_progress")) == 4 + 3
    reopened.close()


def _in_threads(n: int, work: Callable[[Warehouse], None], url: str, home: Path) -> list[BaseException]:
    """Run ``work`` in ``n`` threads at once, each on its own Warehouse; the errors they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def one() -> None:
        w = Warehouse(url, home)
        try:
            barrier.wait()
            work(w)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted by the caller
            errors.append(exc)
        finally:
            w.close()

    run_together(lambda _: one(), list(range(n)))
    return errors


@ON_POSTGRES
def test_concurrent_mart_rebuilds_do_not_collide(wh: Warehouse) -> None:
    """Two runs finishing together both rebuild the marts: serialised, not duplicate-key errors."""
    at = datetime(2017, 7, 3, tzinfo=UTC)
    items = [(_submission(c, p, c + p, at), 20) for c in ("340102", "340103", "340104") for p in ("2017-05", "2017-06")]  # fmt: skip
    wh.load_batch(*_batch(items), kind="progress")

    def rebuild(w: Warehouse) -> None:
        for _ in range(5):
            w.rebuild_marts()

    errors = _in_threads(2, rebuild, wh.url, wh.home)
    assert errors == []
    mart = wh.read_table("mart_county_progress")
    assert len(mart) == len(mart[["period", "county_code"]].drop_duplicates()) >= 6
    assert mart.loc[mart["county_code"] == "340102", "projects_total"].tolist() == [20, 20]


@ON_POSTGRES
def test_first_runs_seeding_an_empty_warehouse_at_once_do_not_collide(
    warehouse_url: str, gaibao_home: Path
) -> None:
    """Two first runs on an empty warehouse both seed the division codes and reload the plan:
    the reference tables are replaced under a lock, so neither fails on a duplicate key and the
    tables hold one copy."""
    from tasks.ingest import seed_divisions

    first = Warehouse(warehouse_url, gaibao_home)
    first.upgrade()
    first.close()
    plan = pd.DataFrame(
        {
            "county_code": ["340102", "340103"],
            "plan_area_m2": [1000.0, 2000.0],
            "plan_equipment_wan": [10.0, 20.0],
        }
    )

    def run(w: Warehouse) -> None:
        for _ in range(5):
            seed_divisions(w)
            w.load_plan(plan)

    errors = _in_threads(4, run, warehouse_url, gaibao_home)
    assert errors == []
    w = Warehouse(warehouse_url, gaibao_home)
    try:
        divisions = w.read_table("ref_division")
        assert len(divisions) == len(bundled_divisions()) == divisions["county_code"].nunique()
        assert sorted(w.read_table("ref_plan")["county_code"]) == ["340102", "340103"]
    finally:
        w.close()


# -- 2. concurrent `gaibao ingest` processes -----------------------------------------------------
@pytest.fixture(scope="module")
def demo_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo inbox and plan, generated once for this module (copied per test)."""
    from gaibao.demo import generate_demo

    base = tmp_path_factory.mktemp("pgdemo") / "base"
    generate_demo(base)
    return base


def _prepare(url: str, home: Path) -> None:
    """Migrations, divisions and the five-year plan, as `gaibao db upgrade` + `gaibao plan load` do."""
    from tasks.ingest import seed_divisions
    from tasks.plan import load_plan_file

    w = Warehouse(url, home)
    w.upgrade()
    seed_divisions(w)
    outcome = load_plan_file(w, next((home / "plan").glob("*.xlsx")))
    assert outcome.ok, outcome.message
    w.close()


def _add_resubmission(home: Path, county: str, period: str) -> Path:
    """A corrected progress return (one note changed), arriving a day after the first."""
    first = home / "inbox" / county / f"{county}_progress_{period}.csv"
    lines = first.read_text("utf-8").splitlines(keepends=True)
    assert lines[1].rstrip("\r\n").endswith(","), "the demo's note column is empty"
    lines[1] = lines[1].rstrip("\r\n") + "已更正\n"
    fixed = first.with_name(f"{county}_progress_{period}（更正）.csv")
    fixed.write_text("".join(lines), "utf-8")
    st = first.stat()
    os.utime(fixed, (st.st_atime, st.st_mtime + 86_400))
    return fixed


def _county_outcome(stdout: str, county: str) -> dict:
    summary = json.loads(stdout[stdout.index("{") :])
    return next(c for c in summary["counties"] if c["county_code"] == county)


@ON_POSTGRES
@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_concurrent_ingests_same_county_never_double_and_other_counties_load(
    warehouse_url: str, demo_base: Path, tmp_path: Path, prefect_harness: None
) -> None:
    import prefect.settings

    period, same, other = "2018-12", "340302", "340303"
    home = tmp_path / "ingest_home"
    shutil.copytree(demo_base, home)
    _add_resubmission(home, same, period)
    _prepare(warehouse_url, home)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAIBAO_", "PREFECT_API"))}
    env.update(
        GAIBAO_HOME=str(home),
        GAIBAO_WAREHOUSE_URL=warehouse_url,
        PREFECT_API_URL=str(
            prefect.settings.PREFECT_API_URL.value()
        ),  # the session's server: no temporary one each
    )
    # Two processes for the same county and period, and one for another county, all at once, while
    # this test holds the advisory lock of (progress, same county, period) as a third loader would.
    counties = [same, same, other]
    key = store._lock_key("progress", same, period)
    holder_engine = sa.create_engine(warehouse_url)
    holder = holder_engine.connect()
    held = holder.begin()
    holder.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
    logs = [(tmp_path / f"ingest{i}.out", tmp_path / f"ingest{i}.err") for i in range(len(counties))]
    procs = []
    try:
        for c, (out, err) in zip(counties, logs, strict=True):
            with open(out, "w") as fo, open(err, "w") as fe:
                procs.append(
                    subprocess.Popen(
                        [GAIBAO, "ingest", "--period", period, "--county", c, "--json"],
                        env=env,
                        stdout=fo,
                        stderr=fe,
                        text=True,
                    )  # fmt: skip
                )
        # The other county is not held up by that lock: it finishes while the lock is held ...
        assert procs[2].wait(timeout=400) == 0, logs[2][1].read_text()[-3000:]
        # ... and both same-county ingests wait for it (they never interleave with the holder).
        waiting_q = sa.text(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.datname = current_database() AND l.locktype = 'advisory' AND NOT l.granted "
            "AND l.classid::bigint = :hi AND l.objid::bigint = :lo AND l.objsubid = 1"
        )
        hi, lo = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
        deadline = time.monotonic() + 400
        with holder_engine.connect() as probe:
            while (waiting := probe.execute(waiting_q, {"hi": hi, "lo": lo}).scalar()) < 2:
                assert all(p.poll() is None for p in procs[:2]), "a same-county ingest did not wait"
                assert time.monotonic() < deadline, f"only {waiting} ingest(s) waiting on the lock"
                time.sleep(0.1)
            probe.rollback()
        held.rollback()  # release: the two proceed, one after the other
        for p, (_out, err) in zip(procs[:2], logs[:2], strict=True):
            assert p.wait(timeout=400) == 0, err.read_text()[-3000:]
    finally:
        if held.is_active:
            held.rollback()
        holder.close()
        holder_engine.dispose()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = [_county_outcome(out.read_text(), c) for (out, _err), c in zip(logs, counties, strict=True)]

    w = Warehouse(warehouse_url, home)
    subs = w.submissions(period=period)
    facts = w.read_table("fact_progress", {"period": period})
    funding = w.read_table("fact_funding", {"period": period})
    w.close()

    # Same county and period: each file judged once, one accepted return per kind, no double rows.
    mine = subs[subs["county_code"] == same]
    assert mine["sha256"].is_unique and len(mine) == 3
    assert mine.groupby("kind")["status"].apply(lambda s: (s == "accepted").sum()).to_dict() == {
        "funding": 1,
        "progress": 1,
    }
    accepted_progress = mine[(mine["kind"] == "progress") & (mine["status"] == "accepted")]
    assert accepted_progress["file_name"].iloc[0].endswith("（更正）.csv")  # the later return wins
    assert set(mine.loc[mine["kind"] == "progress", "status"]) == {"accepted", "superseded"}
    rows = facts[facts["county_code"] == same]
    assert len(rows) == 38 and rows["project_id"].is_unique
    assert set(rows["submission_id"]) == set(accepted_progress["submission_id"])
    assert (rows["note"] == "已更正").sum() == 1
    assert (funding["county_code"] == same).sum() == 1
    # Both processes succeeded and both recorded an outcome for every file: either they judged and
    # loaded it (the loser waited on the advisory lock and replaced the identical rows in place) or
    # they found the same bytes already judged and counted them as duplicates.
    for r in results[:2]:
        assert r["files_seen"] == 3 and r["refused"] == 0, r
        assert r["accepted"] + r["duplicates"] >= 3, r
    # The other county, ingested at the same time, is loaded too.
    theirs = subs[subs["county_code"] == other]
    assert sorted(theirs["status"]) == ["accepted", "accepted"] and results[2]["accepted"] == 2
    assert (facts["county_code"] == other).sum() == 45 and (funding["county_code"] == other).sum() == 1
    assert set(subs["county_code"]) == {same, other}


# -- 3. migrations -----------------------------------------------------------------------------
def _schema_fingerprint(url: str) -> dict:
    engine = sa.create_engine(url)
    insp = sa.inspect(engine)
    out = {
        t: (
            sorted((c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)),
            sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(t)),
            tuple(insp.get_pk_constraint(t)["constrained_columns"]),
        )
        for t in insp.get_table_names()
    }
    with engine.connect() as conn:
        out["_alembic"] = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
        out["_divisions"] = conn.execute(sa.text("SELECT count(*) FROM ref_division")).scalar()
    engine.dispose()
    return out


def test_db_upgrade_builds_the_whole_schema_on_a_fresh_database_and_is_idempotent(
    pg_server_url: str, gaibao_home: Path
) -> None:
    from portal.schema import metadata as portal_metadata
    from reports.schema import metadata as reports_metadata

    name = f"gaibao_mig_{uuid.uuid4().hex[:8]}"
    admin = _admin_engine(pg_server_url.rsplit("/", 1)[0] + "/postgres")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_server_url.rsplit("/", 1)[0] + f"/{name}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIBAO_")}
    env.update(GAIBAO_HOME=str(gaibao_home), GAIBAO_WAREHOUSE_URL=url)
    try:
        fingerprints = []
        for _ in range(2):
            proc = subprocess.run(
                [GAIBAO, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=300
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            assert f"warehouse at head: postgresql+psycopg://postgres@127.0.0.1:5432/{name}" in proc.stdout
            fingerprints.append(_schema_fingerprint(url))
        first, second = fingerprints
        tables = {t for t in first if not t.startswith("_")}
        # the portal's tables (migration 0010) have their own MetaData until issue 15 makes it one
        expected = set(metadata.tables) | set(reports_metadata.tables) | set(portal_metadata.tables)
        assert tables == expected | {"alembic_version"}
        assert len(first["_alembic"]) == 1 and first["_divisions"] > 0
        assert second == first  # the second upgrade changed nothing
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


# -- 4. the demo's nightly ingest: PostgreSQL equals SQLite -----------------------------------
MEASURES = [
    c.name
    for c in metadata.tables["mart_county_progress"].columns
    if c.name not in ("period", "county_code", "county_name", "city_code", "city_name", "submission_id")
]


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_demo_nightly_on_postgres_gives_the_sqlite_figures(
    pg_server_url: str,
    demo_base: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefect_harness: None,
) -> None:
    from conftest import _reset_schema

    from flows.nightly import nightly_ingest
    from gaibao.settings import get_settings

    _reset_schema(pg_server_url)
    period = "2018-12"
    marts, summaries, tables, receipts = {}, {}, {}, {}
    for backend in ("sqlite", "postgresql"):
        home = tmp_path / backend
        shutil.copytree(demo_base, home)
        url = f"sqlite:///{home / 'warehouse.db'}" if backend == "sqlite" else pg_server_url
        _prepare(url, home)
        monkeypatch.setenv("GAIBAO_HOME", str(home))
        monkeypatch.setenv("GAIBAO_WAREHOUSE_URL", url)
        monkeypatch.delenv("GAIBAO_SOURCES", raising=False)
        # one night of 2018-12 on both dialects: the late-corrections scan would also load the
        # base's never-loaded earlier months (tests/test_corrections.py covers that)
        monkeypatch.setenv("GAIBAO_CORRECTION_MONTHS", "0")
        get_settings.cache_clear()
        summaries[backend] = nightly_ingest(period=period)
        w = Warehouse(url, home)
        assert w.dialect == backend
        mart = w.read_table("mart_county_progress", {"period": period})
        marts[backend] = mart.sort_values("county_code").reset_index(drop=True)
        for name in ("fact_progress", "fact_funding"):
            frame = w.read_table(name)
            tables[backend, name] = frame.sort_values(list(frame.columns)[:4]).reset_index(drop=True)
        subs = w.submissions()[["submission_id", "kind", "county_code", "status", "sha256", "rows_accepted"]]
        tables[backend, "submission"] = subs.sort_values("submission_id").reset_index(drop=True)
        # Each county's receipt went to the outbox and into the delivery log (on PostgreSQL with
        # relaxed commits on the log's own connection, reset before it goes back to the pool).
        log_rows = w.query("SELECT county_code FROM delivery_log WHERE kind = 'receipt'")
        receipts[backend] = sorted(log_rows["county_code"])
        assert len(list((home / "outbox").rglob("*.eml"))) >= 15
        if backend == "postgresql":
            with w.engine.connect() as conn:
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
        w.close()
    get_settings.cache_clear()

    assert summaries["postgresql"]["totals"] == summaries["sqlite"]["totals"]
    assert receipts["postgresql"] == receipts["sqlite"] and len(receipts["postgresql"]) == 15
    # 2018-12 of the demo carries no fault: 15 counties × (progress + funding), all accepted.
    assert summaries["postgresql"]["totals"] == {
        "files_seen": 30, "accepted": 30, "refused": 0, "duplicates": 0, "rows_accepted": 1440, "rows_rejected": 0,
    }  # fmt: skip
    for name in ("submission", "fact_progress", "fact_funding"):  # the same rows, value for value
        pd.testing.assert_frame_equal(tables["postgresql", name], tables["sqlite", name], check_dtype=False)
    assert len(tables["postgresql", "fact_progress"]) == 1425
    pg, lite = marts["postgresql"], marts["sqlite"]
    assert len(pg) == 15 and pg["county_code"].tolist() == lite["county_code"].tolist()
    assert pg["submission_id"].tolist() == lite["submission_id"].tolist()
    pd.testing.assert_frame_equal(
        pg[MEASURES].astype(object).where(pg[MEASURES].notna(), None).infer_objects(),
        lite[MEASURES].astype(object).where(lite[MEASURES].notna(), None).infer_objects(),
        check_dtype=False,
        rtol=1e-9,
    )
    assert pg["completed_area_m2"].sum() > 0


def test_receipt_log_connection_returns_to_the_pool_as_it_came(pg_server_url: str) -> None:
    """The receipts' log connection runs in autocommit with synchronous_commit off (one round trip
    per logged receipt); the pooled connection comes back transactional, synchronous_commit on."""
    from reports.delivery import _relaxed_commits

    engine = store._make_engine(pg_server_url)
    engine.dispose()
    engine = sa.create_engine(engine.url, pool_size=1, max_overflow=0)  # one DB-API connection
    try:
        with engine.connect() as conn, _relaxed_commits(conn):
            raw = conn.connection.driver_connection
            assert raw.autocommit
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "off"
            conn.exec_driver_sql("CREATE TEMP TABLE t (x int)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")  # committed by itself
            assert raw.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with engine.connect() as conn:
            assert conn.connection.driver_connection is raw  # the same pooled connection
            assert not raw.autocommit
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    finally:
        engine.dispose()


# -- binary COPY -----------------------------------------------------------------------------------
@ON_POSTGRES
def test_binary_copy_stores_exactly_what_csv_copy_stores(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bulk path sends Arrow in PostgreSQL's binary COPY format (pgpq); every stored value of
    every bulk-loaded table (text with quotes and formulas, floats, ints, dates, booleans, nulls)
    is the one the CSV COPY stores."""
    from tests.test_sqlite_bulk import _tables

    data = _tables(400)
    dumps: dict[str, dict[str, list[str]]] = {}
    real_pgpq, encoders = store._pgpq, []

    def counting_pgpq():
        encoders.append(1)
        return real_pgpq()

    monkeypatch.setattr(store, "_pgpq", counting_pgpq)
    for path_name in ("binary", "csv"):
        if path_name == "csv":
            monkeypatch.setattr(store, "_PG_WIRE_TYPES", {})  # no wire type known: CSV for every table
        before = len(encoders)
        with wh.engine.connect() as conn:
            txn = conn.begin()
            dumps[path_name] = {}
            for name in ("fact_progress", "fact_funding", "dq_issue"):
                table = metadata.tables[name]
                assert store.bulk_insert(conn, table, data[name]) == data[name].num_rows
                rows = conn.exec_driver_sql(f'SELECT t::text FROM "{name}" t ORDER BY ctid').scalars().all()
                assert len(rows) == data[name].num_rows
                dumps[path_name][name] = rows
            txn.rollback()
        assert len(encoders) - before == (3 if path_name == "binary" else 0)
    assert dumps["binary"] == dumps["csv"]


@ON_POSTGRES
def test_binary_copy_refuses_what_does_not_fit_and_writes_nothing(wh: Warehouse) -> None:
    from tests.test_sqlite_bulk import _tables

    table = metadata.tables["fact_progress"]
    good = _tables(40)["fact_progress"]
    too_long = good.set_column(
        good.column_names.index("county_code"), "county_code", pa.array(["3401020"] * good.num_rows)
    )
    too_big = good.set_column(
        good.column_names.index("row_number"), "row_number", pa.array([2**40] * good.num_rows, pa.int64())
    )
    for bad, error in ((too_long, sa.exc.DBAPIError), (too_big, pa.ArrowInvalid)):
        with wh.engine.connect() as conn, pytest.raises((error, psycopg.Error)), conn.begin():
            store.bulk_insert(conn, table, bad)
        with wh.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM fact_progress").scalar() == 0
