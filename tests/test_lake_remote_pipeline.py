"""End to end: the demo's nightly runs with the lake on a real SFTP server (GAIBAO_LAKE_URL) give
the same warehouse as with the local lake: every table, every mart, every lake file's rows, and
the pack's facts read back from the lake.

The periods include the demo's resubmission (怀远县 2017-06: a superseded file deleted from the
lake) and a month whose cross-period rules read the previous month from the lake.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tests.servers import SftpTestServer

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect")]

PASSWORD = "夜间-s3cret"
TABLES = (
    "submission",
    "dq_issue",
    "fact_progress",
    "fact_funding",
    "mart_county_progress",
    "mart_city_progress",
    "mart_county_funding",
)
VARIABLES = (
    "GAIBAO_HOME",
    "GAIBAO_WAREHOUSE_URL",
    "GAIBAO_SOURCES",
    "GAIBAO_LAKE_URL",
    "GAIBAO_LAKE_STORAGE_OPTIONS",
)


@pytest.fixture
def sftp_server(tmp_path: Path) -> Iterator[SftpTestServer]:
    root = tmp_path / "sftp-root"
    root.mkdir()
    with SftpTestServer(root=root, username="gaibao", password=PASSWORD) as server:
        yield server
        gc.collect()  # close the lakes' SSH connections before the server stops


@pytest.fixture
def clean_env() -> Iterator[None]:
    from gaibao.settings import get_settings

    saved = {k: os.environ.get(k) for k in VARIABLES}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


def _use(home: Path, lake: dict[str, str] | None) -> None:
    from gaibao.settings import get_settings

    for key in VARIABLES:
        os.environ.pop(key, None)
    os.environ["GAIBAO_HOME"] = str(home)
    for key, value in (lake or {}).items():
        os.environ[key] = value
    get_settings.cache_clear()


def _run_nights(home: Path, plan_file: Path, lake: dict[str, str] | None) -> dict[str, pd.DataFrame]:
    """Backfill May and June 2017, then the nightly run of July; every table afterwards."""
    from flows.backfill import backfill
    from flows.nightly import nightly_ingest
    from reports.inputs import load_inputs
    from tasks.plan import load_plan_file
    from warehouse.store import Warehouse

    _use(home, lake)
    wh = Warehouse.from_settings()
    wh.upgrade()
    assert load_plan_file(wh, plan_file).ok
    wh.close()
    backfill(start="2017-05", end="2017-06")
    summary = nightly_ingest(period="2017-07")
    assert summary["totals"]["accepted"] > 0
    wh = Warehouse.from_settings()
    tables = {}
    for name in TABLES:
        frame = wh.read_table(name)
        frame = frame.drop(columns=[c for c in ("issue_id", "loaded_at") if c in frame.columns])
        if "source" in frame.columns:  # folder:<home>/inbox/<county>
            frame["source"] = frame["source"].str.replace(str(home), "<home>", regex=False)
        tables[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    tables["lake_journal"] = wh.read_table("lake_journal")
    facts = load_inputs(wh, "2017-07").facts
    tables["pack_facts"] = facts.sort_values(["period", "county_code", "project_id"]).reset_index(drop=True)
    wh.close()
    return tables


def _lake_files(root: Path) -> dict[str, pd.DataFrame]:
    return {
        p.relative_to(root).as_posix(): pq.read_table(p).to_pandas()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.relative_to(root).parts[0].startswith("_")
    }


def test_nightly_runs_on_an_sftp_lake_give_the_same_warehouse(
    prefect_harness: None,
    tmp_path: Path,
    sftp_server: SftpTestServer,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gaibao.demo import generate_demo
    from warehouse.lake import RemoteLake

    # Every read of the remote lake, and what it did not find (a missing file would make the
    # readers fall back to SQL silently, and the tables would still agree).
    reads: list[str] = []
    # the nights compare the lake's reads of their own periods: the late-corrections scan would
    # also load earlier months' files never loaded before (tests/test_corrections.py covers that)
    monkeypatch.setenv("GAIBAO_CORRECTION_MONTHS", "0")
    missing: list[str] = []
    real_open = RemoteLake.open_parquet

    def open_parquet(self: RemoteLake, path: str, **kwargs: object) -> pq.ParquetFile:
        try:
            opened = real_open(self, path, **kwargs)
        except FileNotFoundError:
            missing.append(path)
            raise
        reads.append(path)
        return opened

    monkeypatch.setattr(RemoteLake, "open_parquet", open_parquet)
    # the demo's files carry their arrival times: replayed as received_at, both runs agree on them
    monkeypatch.setenv("GAIBAO_REPLAY_FILE_TIMES", "true")

    local_home = tmp_path / "local" / "home"
    manifest = generate_demo(local_home)
    remote_home = tmp_path / "remote" / "home"
    shutil.copytree(local_home, remote_home)  # the same files, the same mtimes (received_at)
    (resubmitted,) = manifest.anomalies_of("RESUBMITTED")
    assert (resubmitted.county_code, resubmitted.period) == ("340321", "2017-06")

    local = _run_nights(local_home, manifest.plan_file, None)
    known_hosts = sftp_server.write_known_hosts(tmp_path / "known_hosts")
    remote = _run_nights(
        remote_home,
        remote_home / manifest.plan_file.relative_to(local_home),
        {
            "GAIBAO_LAKE_URL": f"sftp://gaibao@127.0.0.1:{sftp_server.port}/srv/gaibao/lake",
            "GAIBAO_LAKE_STORAGE_OPTIONS": json.dumps(
                {"password": PASSWORD, "known_hosts": str(known_hosts)}
            ),
        },
    )

    for name in (*TABLES, "pack_facts"):
        assert len(local[name]) > 0, name
        pd.testing.assert_frame_equal(local[name], remote[name], check_dtype=False, obj=name)
    assert remote["lake_journal"].empty
    assert missing == []
    # previous_rows read May for June and June for July; the pack read July and its history
    assert {Path(p).parts[-3] for p in reads} == {"period=2017-05", "period=2017-06", "period=2017-07"}
    subs = remote["submission"]
    resub = subs[
        (subs["county_code"] == "340321") & (subs["period"] == "2017-06") & (subs["kind"] == "progress")
    ]
    assert sorted(resub["status"]) == ["accepted", "superseded"]

    # The lake: the same files with the same rows; nothing on the local disk.
    remote_lake = sftp_server.root / "srv" / "gaibao" / "lake"
    local_files, remote_files = _lake_files(local_home / "lake"), _lake_files(remote_lake)
    assert sorted(remote_files) == sorted(local_files) and len(remote_files) > 0
    for rel, frame in local_files.items():
        pd.testing.assert_frame_equal(frame, remote_files[rel], obj=rel)
    accepted = subs[subs["status"] == "accepted"]
    assert len(remote_files) == len(accepted[accepted["rows_accepted"] > 0])
    superseded = subs[(subs["status"] == "superseded")]
    assert not any(sid in rel for rel in remote_files for sid in superseded["submission_id"])
    assert not (remote_home / "lake").exists()
