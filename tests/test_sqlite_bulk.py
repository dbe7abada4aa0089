"""The SQLite bulk path (warehouse.store._sqlite_insert_staged): rows written by the ADBC driver
into a staging file, attached and copied inside the load's transaction. It must store exactly what
the executemany path stores, stay all-or-nothing, and leave no staging file behind."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

import warehouse.store as store
from gaibao.divisions import bundled_divisions
from tests.test_warehouse import TWO_PROJECTS, batch, snapshot, submission_row
from warehouse import Warehouse
from warehouse.lake import frame_to_arrow
from warehouse.schema import dq_issue, fact_funding, fact_progress, submission


def _stages(db: Path) -> list[Path]:
    return sorted(db.parent.glob(f"{db.name}{store.STAGE_SUFFIX}*"))


def _tables(n: int) -> dict[str, pa.Table]:
    """Rows of every column type the public tables have: text (Chinese), float, int, date,
    timestamp, boolean, and nulls of each."""
    subs, facts, issues = batch(
        *[(submission_row(f"3401{i % 90 + 2:02d}", "2017-06", f"c{i}"), TWO_PROJECTS) for i in range(n // 2)]
    )
    facts["project_id"] = [f"P{i}" for i in range(len(facts))]
    facts.loc[facts.index % 3 == 0, "planned_area_m2"] = float("nan")
    facts.loc[facts.index % 5 == 0, "school_name"] = None
    facts.loc[facts.index % 7 == 0, "note"] = "备注：'引号' \"双引号\" =1+1"
    subs["received_at"] = [datetime(2017, 7, 3, 8, 0, i % 60, 123456, tzinfo=UTC) for i in range(len(subs))]
    subs["loaded_at"] = datetime(2017, 7, 9, tzinfo=UTC)
    subs["unknown_columns"] = None
    subs.loc[subs.index % 4 == 0, "reason"] = None
    subs.loc[subs.index >= 90, "status"] = "superseded"  # one accepted return per county and period
    issues["is_explained"] = [i % 2 == 0 for i in range(len(issues))]
    issues.loc[issues.index % 3 == 0, "row_number"] = pd.NA
    issues["issue_id"] = [f"{sid}:{i:06d}" for i, sid in enumerate(issues["submission_id"])]
    funding = pd.DataFrame(
        {
            "submission_id": subs["submission_id"],
            "row_number": range(2, len(subs) + 2),
            "period": "2017-06",
            "county_code": subs["county_code"],
            "funds_total_wan": 12.5,
            "teachers_recruited": [i if i % 3 else None for i in range(len(subs))],
        }
    )
    return {
        "fact_progress": frame_to_arrow(facts, fact_progress),
        "fact_funding": frame_to_arrow(funding, fact_funding),
        "dq_issue": frame_to_arrow(issues, dq_issue),
        "submission": frame_to_arrow(subs, submission),
    }


def _dump(engine: sa.Engine, table: str, columns: list[str]) -> list[tuple]:
    """Every stored value with its SQLite storage class, in rowid order."""
    select = ", ".join(f'typeof("{c}"), quote("{c}")' for c in columns)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(f'SELECT {select} FROM "{table}" ORDER BY rowid')]


def test_staged_path_stores_exactly_what_executemany_stores(tmp_path: Path, monkeypatch) -> None:
    data = _tables(400)
    dumps = {}
    for path_name, threshold in (("executemany", 10**9), ("staged", 1)):
        monkeypatch.setattr(store, "SQLITE_STAGE_MIN_ROWS", threshold)
        home = tmp_path / path_name
        w = Warehouse(f"sqlite:///{home / 'warehouse.db'}", home)
        w.upgrade()
        with w.engine.begin() as conn:
            for name, table in data.items():
                assert store.bulk_insert(conn, w._table(name), table) == table.num_rows
        dumps[path_name] = {name: _dump(w.engine, name, table.column_names) for name, table in data.items()}
        assert _stages(home / "warehouse.db") == []
        w.close()
    for name, table in data.items():
        assert len(dumps["staged"][name]) == table.num_rows
        assert dumps["staged"][name] == dumps["executemany"][name], name


def test_staged_insert_rolls_back_and_leaves_no_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(store, "SQLITE_STAGE_MIN_ROWS", 1)
    home = tmp_path / "h"
    w = Warehouse(f"sqlite:///{home / 'warehouse.db'}", home)
    w.upgrade()
    data = _tables(100)["fact_progress"]
    with pytest.raises(RuntimeError, match="boom"), w.engine.begin() as conn:
        store.bulk_insert(conn, fact_progress, data)
        assert conn.exec_driver_sql("SELECT COUNT(*) FROM fact_progress").scalar() == data.num_rows
        assert len(_stages(home / "warehouse.db")) == 1  # attached until the connection is returned
        raise RuntimeError("boom")
    assert w.query("SELECT COUNT(*) AS n FROM fact_progress")["n"].iloc[0] == 0
    assert _stages(home / "warehouse.db") == []
    with w.engine.connect() as conn:  # the pooled connection has nothing attached any more
        attached = [r[1] for r in conn.exec_driver_sql("PRAGMA database_list")]
        assert "main" in attached and not [a for a in attached if a.startswith("gaibao_stage")]
    # A duplicate key fails the copy as it fails executemany, and changes nothing.
    with w.engine.begin() as conn:
        store.bulk_insert(conn, fact_progress, data)
    with pytest.raises(sqlite3.IntegrityError), w.engine.begin() as conn:  # as executemany raises
        store.bulk_insert(conn, fact_progress, data.slice(0, 10))
    assert w.query("SELECT COUNT(*) AS n FROM fact_progress")["n"].iloc[0] == data.num_rows
    assert _stages(home / "warehouse.db") == []
    w.close()


@pytest.mark.parametrize("point", store.FAIL_POINTS)
def test_failure_on_the_staged_path_leaves_everything_as_before(
    tmp_path: Path, monkeypatch, point: str
) -> None:
    monkeypatch.setattr(store, "SQLITE_STAGE_MIN_ROWS", 1)
    home = tmp_path / "h"
    wh = Warehouse(f"sqlite:///{home / 'warehouse.db'}", home)
    wh.upgrade()
    wh.load_divisions(bundled_divisions())
    old = [(submission_row(c, "2017-06", f"old{c}"), TWO_PROJECTS) for c in ("340102", "340103")]
    wh.load_batch(*batch(*old), kind="progress")
    before = snapshot(wh)
    new = [
        (
            submission_row("340102", "2017-06", "new102", received_at=datetime(2017, 7, 8, tzinfo=UTC)),
            TWO_PROJECTS,
        ),
        (submission_row("340104", "2017-06", "new104"), TWO_PROJECTS),
    ]
    store.FAIL_AT = point
    try:
        with pytest.raises(store.InjectedFailure):
            wh.load_batch(*batch(*new), kind="progress")
    finally:
        store.FAIL_AT = None
    assert snapshot(wh) == before
    assert _stages(home / "warehouse.db") == []
    wh.load_batch(*batch(*new), kind="progress")
    assert sorted(set(wh.read_table("fact_progress")["county_code"])) == ["340102", "340103", "340104"]
    wh.close()


_KILLED = """
import sys
import pandas as pd
import warehouse.store as store
from warehouse import Warehouse

url, home, data = sys.argv[1:]
store.SQLITE_STAGE_MIN_ROWS = 1
store.FAIL_AT, store.FAIL_MODE = "before_sql_commit", "exit"
w = Warehouse(url, home)
w.load_batch(*(pd.read_pickle(f"{data}/{n}.pkl") for n in ("subs", "facts", "issues")), kind="progress")
"""


def test_a_killed_loads_staging_file_is_removed_on_next_open(tmp_path: Path) -> None:
    """``before_sql_commit`` dies inside the SQL transaction, after the staged copy: the staging
    file outlives the process and the next open removes it (its pid no longer runs)."""
    home = tmp_path / "h"
    url = f"sqlite:///{home / 'warehouse.db'}"
    wh = Warehouse(url, home)
    wh.upgrade()
    before = snapshot(wh)
    wh.close()
    data = tmp_path / "batch"
    data.mkdir()
    for name, frame in zip(
        ("subs", "facts", "issues"),
        batch((submission_row("340102", "2017-06", "x"), TWO_PROJECTS)),
        strict=True,
    ):
        frame.to_pickle(data / f"{name}.pkl")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED, url, str(home), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 75, proc.stderr
    assert len(_stages(home / "warehouse.db")) == 2  # facts and issues, left by the dead process
    reopened = Warehouse(url, home)
    assert _stages(home / "warehouse.db") == []
    assert snapshot(reopened) == before
    reopened.close()
