"""Received means received (issue 16, item 4).

``received_at`` is when gaibao first read the bytes, never a time the county's file claims; the
file's own mtime is kept beside it (``submission.file_mtime``, migration 0006). Newest-wins and
lateness use ``received_at``; bytes received again keep their first ``received_at``. Real
nightly runs over real folders, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from gaibao.settings import Settings, get_settings
from tasks.sources import FolderSource
from tests.filebuilders import progress_rows, write_return

PERIOD = "2018-12"
COUNTY = "340321"


def _set_mtime(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def _subs(wh) -> pd.DataFrame:
    subs = wh.read_table("submission", where={"county_code": COUNTY, "period": PERIOD})
    for col in ("received_at", "file_mtime"):
        subs[col] = pd.to_datetime(subs[col], utc=True)
    return subs.sort_values("received_at").reset_index(drop=True)


def test_folder_source_stamps_the_read_and_keeps_the_mtime(tmp_path: Path) -> None:
    folder = tmp_path / COUNTY
    folder.mkdir()
    future = folder / "进展_2018年12月_a.csv"
    future.write_bytes(b"future")
    _set_mtime(future, datetime(2099, 1, 1, tzinfo=UTC))
    old = folder / "进展_2018年12月_b.csv"
    old.write_bytes(b"old")
    _set_mtime(old, datetime(2019, 1, 2, tzinfo=UTC))
    before = datetime.now(UTC)
    received = FolderSource(folder).fetch(COUNTY, PERIOD)
    after = datetime.now(UTC)
    assert [r.file_name for r in received] == [old.name, future.name]  # 2099 counts as now
    assert all(before <= r.received_at <= after for r in received)
    assert received[0].received_at < received[1].received_at
    assert [r.file_mtime for r in received] == [
        datetime(2019, 1, 2, tzinfo=UTC),
        datetime(2099, 1, 1, tzinfo=UTC),
    ]
    # the replay (the demo) takes the mtime, but never a time after the read
    replay = FolderSource(folder, file_times_are_arrivals=True).fetch(COUNTY, PERIOD)
    assert replay[0].received_at == datetime(2019, 1, 2, tzinfo=UTC)
    assert replay[1].received_at <= datetime.now(UTC)


def test_replay_is_off_by_default() -> None:
    assert Settings(home=Path("/tmp/x")).replay_file_times is False


@pytest.fixture
def home(prefect_harness: None, gaibao_home: Path, warehouse_url: str) -> Path:
    get_settings.cache_clear()
    return gaibao_home


def _warehouse():
    from warehouse.store import Warehouse

    return Warehouse.from_settings(get_settings())


def test_a_file_dated_2099_does_not_supersede_a_later_correction(home: Path) -> None:
    from flows.nightly import nightly_ingest

    folder = home / "inbox" / COUNTY
    folder.mkdir(parents=True)
    dated_2099 = write_return(
        folder / "怀远县进展_2018年12月.csv", progress_rows(3, county_code=COUNTY, period=PERIOD)
    )
    _set_mtime(dated_2099, datetime(2099, 1, 1, tzinfo=UTC))
    first = nightly_ingest(period=PERIOD, counties=[COUNTY])
    assert first["totals"]["accepted"] == 1

    correction = write_return(
        folder / "怀远县进展_2018年12月（更正）.csv", progress_rows(2, county_code=COUNTY, period=PERIOD)
    )
    _set_mtime(correction, datetime(2019, 1, 3, tzinfo=UTC))
    second = nightly_ingest(period=PERIOD, counties=[COUNTY])
    assert second["totals"]["accepted"] == 1 and second["totals"]["duplicates"] == 1

    wh = _warehouse()
    subs = _subs(wh)
    assert list(subs["file_name"]) == [dated_2099.name, correction.name]
    assert list(subs["status"]) == ["superseded", "accepted"]
    assert subs["received_at"].max() <= pd.Timestamp.now(tz="UTC")  # never a time the file claims
    assert list(subs["file_mtime"]) == [
        pd.Timestamp("2099-01-01", tz="UTC"),
        pd.Timestamp("2019-01-03", tz="UTC"),
    ]
    facts = wh.read_table("fact_progress", where={"county_code": COUNTY, "period": PERIOD})
    assert set(facts["submission_id"]) == {subs["submission_id"].iloc[1]} and len(facts) == 2
    wh.close()


def test_a_file_received_late_but_dated_before_the_due_day_is_late(home: Path) -> None:
    from flows.nightly import nightly_ingest

    folder = home / "inbox" / COUNTY
    folder.mkdir(parents=True)
    path = write_return(
        folder / "怀远县进展_2018年12月.csv", progress_rows(3, county_code=COUNTY, period=PERIOD)
    )
    _set_mtime(path, datetime(2019, 1, 2, tzinfo=UTC))  # claims the 2nd; the due day is the 5th
    nightly_ingest(period=PERIOD, counties=[COUNTY])
    wh = _warehouse()
    subs = _subs(wh)
    assert list(subs["status"]) == ["accepted"]
    assert bool(subs["is_late"].iloc[0]) is True  # received now, years after 2019-01-05
    assert subs["file_mtime"].iloc[0] == pd.Timestamp("2019-01-02", tz="UTC")
    wh.close()


def test_bytes_received_again_keep_their_first_received_at(home: Path) -> None:
    from flows.backfill import backfill
    from flows.nightly import nightly_ingest

    folder = home / "inbox" / COUNTY
    folder.mkdir(parents=True)
    path = write_return(
        folder / "怀远县进展_2018年12月.csv", progress_rows(3, county_code=COUNTY, period=PERIOD)
    )
    nightly_ingest(period=PERIOD, counties=[COUNTY])
    wh = _warehouse()
    first = _subs(wh)
    wh.close()
    # the same bytes under another name, a plain rerun and a re-judge with --force
    (folder / "再次报送_怀远县进展_2018年12月.csv").write_bytes(path.read_bytes())
    again = nightly_ingest(period=PERIOD, counties=[COUNTY])
    assert again["totals"]["accepted"] == 0 and again["totals"]["duplicates"] == 2
    forced = backfill(start=PERIOD, end=PERIOD, counties=[COUNTY], force=True)
    assert forced["totals"]["accepted"] == 1
    wh = _warehouse()
    after = _subs(wh)
    wh.close()
    assert list(after["submission_id"]) == list(first["submission_id"])
    assert list(after["received_at"]) == list(first["received_at"])
    assert list(after["status"]) == ["accepted"]


def test_migration_0006_adds_file_mtime(warehouse_url: str, gaibao_home: Path) -> None:
    import sqlalchemy as sa

    wh = _warehouse()
    wh.upgrade()
    columns = {c["name"] for c in sa.inspect(wh.engine).get_columns("submission")}
    assert {"received_at", "file_mtime"} <= columns
    wh.close()


def test_received_now_is_strictly_increasing() -> None:
    from tasks.sources import received_now

    stamps = [received_now() for _ in range(2000)]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    assert stamps[-1] - stamps[0] < timedelta(seconds=5)
