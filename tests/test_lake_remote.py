"""The Parquet lake off the local disk (GAIBAO_LAKE_URL): a real SFTP server on loopback, fsspec
``memory://``, and the fsspec protocol on real files; on SQLite and on the real PostgreSQL server.

The loads are checked as the local lake's are in test_warehouse.py: every injected failure point
leaves tables and files exactly as before (or, after the commit, the load finished), a process
killed at any point is repaired by the next open, and concurrent loads of one county and period
leave one file. Plus what only a remote lake has: the journal in SQL, leases that keep a recovery
away from a live load, and the settings that choose where the lake lives.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

import warehouse.store as store
from gaibao.divisions import bundled_divisions
from gaibao.settings import Settings
from tests.servers import SftpTestServer
from tests.test_archive_remote import assert_settings_refused
from tests.test_warehouse import TWO_PROJECTS, batch, run_together, submission_row, two_returns_of_one_county
from warehouse import Warehouse
from warehouse.lake import Lake, RemoteLake, arrow_schema
from warehouse.schema import fact_progress, metadata

PASSWORD = "湖-s3cret"


@dataclass
class LakeBackend:
    """A remote lake, and raw access to its files that bypasses it."""

    name: str
    make: Callable[[], RemoteLake]  # another RemoteLake on the same store (another process's view)
    files: Callable[[], dict[str, bytes]]  # every file under the lake's root: relative path -> bytes
    child: dict[str, object] | None  # how a child process opens the same lake (None: this process only)


def _disk_files(root: Path) -> Callable[[], dict[str, bytes]]:
    return lambda: {
        p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def sftp_server(tmp_path: Path) -> Iterator[SftpTestServer]:
    root = tmp_path / "sftp-root"
    root.mkdir()
    with SftpTestServer(root=root, username="county", password=PASSWORD) as server:
        yield server
        gc.collect()  # close the lakes' SSH connections before the server stops


def sftp_options(server: SftpTestServer, tmp_path: Path) -> dict[str, object]:
    known_hosts = server.write_known_hosts(tmp_path / "known_hosts")
    return {"password": PASSWORD, "known_hosts": str(known_hosts)}


@pytest.fixture(params=["memory", "fsspec_on_disk", "sftp"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LakeBackend]:
    name = request.param
    if name == "memory":
        fs = fsspec.filesystem("memory")
        root = f"/lake-{uuid.uuid4().hex}"
        yield LakeBackend(
            name,
            make=lambda: RemoteLake(f"memory://{root}"),
            files=lambda: {p[len(root) + 1 :]: fs.cat_file(p) for p in fs.find(root)},
            child=None,
        )
        if fs.exists(root):
            fs.rm(root, recursive=True)
    elif name == "fsspec_on_disk":  # the remote protocol (temporary name, rename) on real files
        root = tmp_path / "remote-lake"
        yield LakeBackend(
            name,
            make=lambda: RemoteLake(str(root), fs=LocalFileSystem()),
            files=_disk_files(root),
            child={"path": str(root)},
        )
    else:
        server: SftpTestServer = request.getfixturevalue("sftp_server")
        options = sftp_options(server, tmp_path)
        url = f"sftp://county@127.0.0.1:{server.port}/srv/lake"
        yield LakeBackend(
            name,
            make=lambda: RemoteLake(url, storage_options=options),
            files=_disk_files(server.root / "srv" / "lake"),  # the server's disk, behind the chroot
            child={"url": url, "options": options},
        )


@pytest.fixture
def rwh(warehouse_url: str, gaibao_home: Path, backend: LakeBackend) -> Iterator[Warehouse]:
    w = Warehouse(warehouse_url, gaibao_home, lake=backend.make())
    w.upgrade()
    w.load_divisions(bundled_divisions())
    yield w
    store.FAIL_AT = None
    store.FAIL_MODE = "raise"
    w.close()


def snapshot(w: Warehouse, backend: LakeBackend) -> tuple[dict, dict, dict]:
    """Every table's rows, every file under home (leases included) and every file of the lake."""
    tables = {}
    for name in metadata.tables:
        frame = w.read_table(name)
        tables[name] = sorted(
            map(repr, frame.astype(object).where(frame.notna(), None).itertuples(index=False))
        )
    home = {
        p.relative_to(w.home).as_posix(): p.read_bytes()
        for p in sorted(w.home.rglob("*"))
        if p.is_file() and p.suffix != ".db" and not p.name.endswith(("-wal", "-shm"))
    }
    return tables, home, backend.files()


def lake_paths(backend: LakeBackend) -> list[str]:
    return sorted(backend.files())


def path_of(sub: dict, kind: str = "progress") -> str:
    return f"{kind}/period={sub['period']}/county={sub['county_code']}/{sub['submission_id']}.parquet"


def journal_rows(w: Warehouse) -> list[str]:
    return w.read_table("lake_journal")["load_id"].tolist()


# -- loading -----------------------------------------------------------------------------------
def test_load_supersede_and_read_back(rwh: Warehouse, backend: LakeBackend) -> None:
    a = submission_row("340102", "2017-06", "v1")
    r1 = rwh.load_batch(*batch((a, TWO_PROJECTS)), kind="progress")
    assert r1.accepted == [a["submission_id"]] and r1.fact_rows == 2
    assert lake_paths(backend) == [path_of(a)]
    written = pq.read_table(pa.BufferReader(backend.files()[path_of(a)]))
    assert written.column_names == list(fact_progress.columns.keys())
    assert (
        written["project_id"].to_pylist() == ["P1", "E1"] and written["school_name"][0].as_py() == "测试小学"
    )

    b = submission_row("340102", "2017-06", "v2", received_at=datetime(2017, 7, 4, tzinfo=UTC))
    r2 = rwh.load_batch(*batch((b, TWO_PROJECTS[:1])), kind="progress")
    assert r2.superseded == [a["submission_id"]]
    assert lake_paths(backend) == [path_of(b)]  # the superseded file is gone, no temporary left
    assert set(rwh.read_table("fact_progress")["submission_id"]) == {b["submission_id"]}
    assert journal_rows(rwh) == []

    # An older return does not replace the newer one, and leaves no file behind.
    old = submission_row("340102", "2017-06", "old", received_at=datetime(2017, 7, 1, tzinfo=UTC))
    r3 = rwh.load_batch(*batch((old, TWO_PROJECTS)), kind="progress")
    assert r3.accepted == [] and lake_paths(backend) == [path_of(b)]

    # previous_rows reads the remote files (and SQL only for what is missing)
    may = submission_row("340103", "2017-05", "m5")
    rwh.load_batch(*batch((may, TWO_PROJECTS)), kind="progress")
    prev = rwh.previous_rows("progress", "2017-07", ["340102", "340103"], columns=["project_id", "status"])
    assert sorted(zip(prev["county_code"], prev["period"], prev["project_id"], strict=True)) == [
        ("340102", "2017-06", "P1"),
        ("340103", "2017-05", "E1"),
        ("340103", "2017-05", "P1"),
    ]
    assert rwh.lake.read([rwh.lake.file_path("progress", "2017-05", "340103", may["submission_id"])],
                         arrow_schema(fact_progress)).num_rows == 2  # fmt: skip


def test_same_batch_twice_leaves_identical_tables_and_files(rwh: Warehouse, backend: LakeBackend) -> None:
    items = [(submission_row(c, "2017-06", f"x{c}"), TWO_PROJECTS) for c in ("340102", "340103", "340104")]
    rwh.load_batch(*batch(*items), kind="progress")
    first = snapshot(rwh, backend)
    rwh.load_batch(*batch(*items), kind="progress")  # the same ids: each file rewritten in place
    assert snapshot(rwh, backend) == first
    assert lake_paths(backend) == sorted(path_of(s) for s, _ in items)


def test_refused_changes_nothing_accepted(rwh: Warehouse, backend: LakeBackend) -> None:
    good = submission_row("340102", "2017-06", "good")
    rwh.load_batch(*batch((good, TWO_PROJECTS)), kind="progress")
    files = backend.files()
    bad = submission_row(
        "340102", "2017-06", "bad", status="refused", received_at=datetime(2017, 7, 9, tzinfo=UTC)
    )
    subs, _, issues = batch((bad, []))
    r = rwh.load_batch(subs, pd.DataFrame(), issues, kind="progress")
    assert r.refused == [bad["submission_id"]]
    assert backend.files() == files


# -- failures ------------------------------------------------------------------------------------
def _scenario() -> tuple[list, list]:
    """A batch that supersedes two files, adds a county and rewrites one file in place."""
    old = [(submission_row(c, "2017-06", f"old{c}"), TWO_PROJECTS) for c in ("340102", "340103", "340111")]
    later = datetime(2017, 7, 8, tzinfo=UTC)
    new = [
        (submission_row("340102", "2017-06", "new102", received_at=later), TWO_PROJECTS[:1]),
        (submission_row("340111", "2017-06", "new111", received_at=later), TWO_PROJECTS),
        (submission_row("340104", "2017-06", "new104"), TWO_PROJECTS),  # a county new to the lake
        (submission_row("340103", "2017-06", "old340103"), TWO_PROJECTS),  # same id: rewritten in place
    ]
    return old, new


@pytest.mark.parametrize("point", store.FAIL_POINTS)
def test_failure_leaves_everything_as_before(rwh: Warehouse, backend: LakeBackend, point: str) -> None:
    old, new = _scenario()
    rwh.load_batch(*batch(*old), kind="progress")
    before = snapshot(rwh, backend)
    store.FAIL_AT = point
    with pytest.raises(store.InjectedFailure):
        rwh.load_batch(*batch(*new), kind="progress")
    store.FAIL_AT = None
    assert snapshot(rwh, backend) == before
    # and the warehouse still loads afterwards
    rwh.load_batch(*batch(*new), kind="progress")
    assert sorted(rwh.read_table("fact_progress", {"status": "在建"})["county_code"]) == [
        "340102",
        "340103",
        "340104",
        "340111",
    ]
    assert lake_paths(backend) == sorted(path_of(s) for s, _ in new)
    assert journal_rows(rwh) == []


def test_failed_cleanup_leaves_the_load_committed_and_the_next_open_finishes_it(
    rwh: Warehouse, backend: LakeBackend, warehouse_url: str
) -> None:
    old, new = _scenario()
    rwh.load_batch(*batch(*old), kind="progress")
    store.FAIL_AT = "during_lake_cleanup"
    result = rwh.load_batch(*batch(*new), kind="progress")  # committed: the load stands
    store.FAIL_AT = None
    assert sorted(result.accepted) == sorted(s["submission_id"] for s, _ in new)
    assert journal_rows(rwh) == [result.load_id]  # the cleanup is left to the next open
    reopened = Warehouse(warehouse_url, rwh.home, lake=backend.make())
    assert journal_rows(reopened) == []
    assert lake_paths(backend) == sorted(path_of(s) for s, _ in new)
    assert set(reopened.read_table("fact_progress")["submission_id"]) == {s["submission_id"] for s, _ in new}
    reopened.close()


_KILLED_LOADER = """
import json, sys
import pandas as pd
import warehouse.store as store
from warehouse import Warehouse
from warehouse.lake import RemoteLake

url, home, data, point, child = sys.argv[1:]
child = json.loads(child)
if "path" in child:
    from fsspec.implementations.local import LocalFileSystem
    lake = RemoteLake(child["path"], fs=LocalFileSystem())
else:
    lake = RemoteLake(child["url"], storage_options=child["options"])
store.FAIL_AT, store.FAIL_MODE = point, "exit"
w = Warehouse(url, home, lake=lake)
w.load_batch(*(pd.read_pickle(f"{data}/{n}.pkl") for n in ("subs", "facts", "issues")), kind="progress")
"""

# memory:// lives in one process: a killed load is tested on SFTP and on the disk protocol.
KILL_CASES = [
    pytest.param(b, p, id=f"{b}-{p}") for b in ("sftp", "fsspec_on_disk") for p in store.REMOTE_FAIL_POINTS
]


@pytest.mark.parametrize(("backend", "point"), KILL_CASES, indirect=["backend"])
def test_killed_load_is_repaired_on_next_open(
    rwh: Warehouse, backend: LakeBackend, warehouse_url: str, tmp_path: Path, point: str
) -> None:
    old, new = _scenario()
    rwh.load_batch(*batch(*old), kind="progress")
    before = snapshot(rwh, backend)
    data = tmp_path / "batch"
    data.mkdir()
    for name, frame in zip(("subs", "facts", "issues"), batch(*new), strict=True):
        frame.to_pickle(data / f"{name}.pkl")
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED_LOADER, warehouse_url, str(rwh.home), str(data), point,
         json.dumps(backend.child)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 75, proc.stderr
    assert len(journal_rows(rwh)) == 1, "the killed load left its journal row"

    reopened = Warehouse(warehouse_url, rwh.home, lake=backend.make())  # recovery runs on open
    assert journal_rows(reopened) == []
    if point in ("after_sql_commit", "during_lake_cleanup"):  # committed: finished, not undone
        assert set(reopened.read_table("fact_progress")["submission_id"]) == {
            s["submission_id"] for s, _ in new
        }
        assert lake_paths(backend) == sorted(path_of(s) for s, _ in new)
        tables, home, _ = snapshot(reopened, backend)
        assert home == before[1]  # no lease file left
    else:
        assert snapshot(reopened, backend) == before
    reopened.close()


def test_recovery_leaves_a_live_load_alone(
    rwh: Warehouse, backend: LakeBackend, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another Warehouse opening while a load has written its files but not committed: the
    lease tells it the load is alive, so it neither deletes the files nor the journal row."""
    old, new = _scenario()
    rwh.load_batch(*batch(*old), kind="progress")
    reached, go_on = threading.Event(), threading.Event()
    real = store._maybe_fail

    def pause(point: str) -> None:
        if point == "after_lake_stage" and not reached.is_set():
            reached.set()
            assert go_on.wait(60)
        real(point)

    monkeypatch.setattr(store, "_maybe_fail", pause)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            rwh.load_batch(*batch(*new), kind="progress")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    try:
        assert reached.wait(60)
        during = backend.files()
        assert set(during) >= {path_of(s) for s, _ in new} | {path_of(s) for s, _ in old}
        other = Warehouse(warehouse_url, rwh.home, lake=backend.make())  # recovery runs on open
        assert len(journal_rows(other)) == 1
        assert backend.files() == during
        other.close()
    finally:
        go_on.set()
        loader.join(60)
    assert not errors
    assert lake_paths(backend) == sorted(path_of(s) for s, _ in new)
    assert journal_rows(rwh) == []


def test_concurrent_loads_of_one_county_period_leave_one_file(
    rwh: Warehouse, backend: LakeBackend, warehouse_url: str
) -> None:
    items = two_returns_of_one_county()
    errors: list[BaseException] = []

    def run(item: tuple) -> None:
        try:
            w = Warehouse(warehouse_url, rwh.home, lake=backend.make())
            w.load_batch(*batch(item), kind="progress")
            w.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    run_together(run, items, timeout=120)
    assert not errors
    facts = rwh.read_table("fact_progress")
    assert len(facts) == 300 and facts["submission_id"].nunique() == 1
    newest = items[1][0]
    assert facts["submission_id"].iloc[0] == newest["submission_id"]
    assert lake_paths(backend) == [path_of(newest)]
    assert journal_rows(rwh) == []


# -- the lake itself ----------------------------------------------------------------------------
def test_files_hold_each_submission_in_row_order(backend: LakeBackend) -> None:
    lake = backend.make()
    schema = arrow_schema(fact_progress)
    rows = {
        "submission_id": ["b", "a", "b", "a", "c"],
        "row_number": [3, 2, 2, 5, 2],
        "period": ["2017-06"] * 5,
        "county_code": ["340102", "340103", "340102", "340103", "340104"],
        "project_id": ["B3", "A2", "B2", "A5", "C2"],
    }
    table = pa.table({f.name: pa.array(rows.get(f.name, [None] * 5), f.type) for f in schema})
    places = {"a": ("2017-06", "340103"), "b": ("2017-06", "340102")}  # c: not a winner, no file
    written = lake.write_submissions("progress", table, places, tag="t1")
    assert set(written) == {"a", "b"}
    assert lake_paths(backend) == [
        "progress/period=2017-06/county=340102/b.parquet",
        "progress/period=2017-06/county=340103/a.parquet",
    ]
    back = lake.read([written["b"], written["a"]], schema)
    assert back["project_id"].to_pylist() == ["B2", "B3", "A2", "A5"]
    present, missing = lake.read_existing(
        [written["a"], lake.file_path("progress", "2017-06", "340104", "c")], schema
    )
    assert present.num_rows == 2 and len(missing) == 1
    with pytest.raises(FileNotFoundError):
        lake.read([lake.file_path("progress", "2017-06", "340104", "c")], schema)
    with pytest.raises(ValueError):
        lake.file_path("progress", "2017-06", "../../etc", "x")
    lake.close()


# -- settings ----------------------------------------------------------------------------------
@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("GAIBAO_LAKE_URL", "GAIBAO_LAKE_STORAGE_OPTIONS", "GAIBAO_WAREHOUSE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GAIBAO_HOME", str(tmp_path / "home"))
    return monkeypatch


def test_default_lake_is_the_local_folder_under_home(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = Settings()
    assert settings.lake_url is None and settings.lake_location == str(tmp_path / "home" / "lake")
    w = Warehouse.from_settings(settings)
    assert type(w.lake) is Lake and w.lake.root == tmp_path / "home" / "lake"
    w.close()
    env.setenv("GAIBAO_LAKE_URL", f"file://{tmp_path / 'shared' / 'lake'}")  # a local folder too
    w = Warehouse.from_settings(Settings())
    assert type(w.lake) is Lake and w.lake.root == tmp_path / "shared" / "lake"
    w.close()


def test_memory_lake_from_the_environment(env: pytest.MonkeyPatch) -> None:
    url = f"memory://settings-lake-{uuid.uuid4().hex}"
    env.setenv("GAIBAO_LAKE_URL", url)
    env.setenv("GAIBAO_LAKE_STORAGE_OPTIONS", "{}")
    w = Warehouse.from_settings(Settings())
    w.upgrade()
    assert isinstance(w.lake, RemoteLake) and w.lake.location == url
    a = submission_row("340102", "2017-06", "env")
    w.load_batch(*batch((a, TWO_PROJECTS)), kind="progress")
    fs = fsspec.filesystem("memory")
    assert fs.exists(f"{url}/{path_of(a)}")
    w.close()
    fs.rm(url, recursive=True)


def test_sftp_lake_from_the_environment_checks_the_host_key(
    env: pytest.MonkeyPatch, sftp_server: SftpTestServer, tmp_path: Path
) -> None:
    options = sftp_options(sftp_server, tmp_path)
    env.setenv("GAIBAO_LAKE_URL", f"sftp://county@127.0.0.1:{sftp_server.port}/data/lake")
    env.setenv(
        "GAIBAO_LAKE_STORAGE_OPTIONS", f"password: {PASSWORD}\nknown_hosts: {options['known_hosts']}\n"
    )
    settings = Settings()
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump())
    w = Warehouse.from_settings(settings)
    w.upgrade()
    a = submission_row("340102", "2017-06", "sftp-env")
    w.load_batch(*batch((a, TWO_PROJECTS)), kind="progress")
    on_server = sftp_server.root / "data" / "lake" / path_of(a)
    assert pq.read_table(on_server).num_rows == 2
    assert PASSWORD not in repr(w.lake)
    w.close()
    other_host = tmp_path / "other_known_hosts"
    other_host.write_text(
        f"[127.0.0.1]:{sftp_server.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIGZpeGVkIGtleSBmb3IgdGVzdHMgMDEyMzQ1Njc4OQ==\n",
        encoding="utf-8",
    )
    env.setenv(
        "GAIBAO_LAKE_STORAGE_OPTIONS", json.dumps({"password": PASSWORD, "known_hosts": str(other_host)})
    )
    w = Warehouse.from_settings(Settings())  # opens no connection until the lake is used
    with pytest.raises(Exception, match="(?i)host key"):
        w.previous_rows("progress", "2017-07")
    w.close()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("GAIBAO_LAKE_URL", f"sftp://county:{PASSWORD}@127.0.0.1:2222/lake", "GAIBAO_LAKE_STORAGE_OPTIONS"),
        (
            "GAIBAO_LAKE_URL",
            "nosuchfs://bucket/lake",
            "GAIBAO_LAKE_URL: 'nosuchfs' is not an fsspec protocol",
        ),
        ("GAIBAO_LAKE_STORAGE_OPTIONS", f"[{PASSWORD!r}]", "GAIBAO_LAKE_STORAGE_OPTIONS must be a mapping"),
        (
            "GAIBAO_LAKE_STORAGE_OPTIONS",
            f"password: {PASSWORD}\n  x: [",
            "GAIBAO_LAKE_STORAGE_OPTIONS is neither",
        ),
    ],
)
def test_bad_lake_settings_are_refused_without_echoing_secrets(
    env: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    assert_settings_refused(env, variable, value, message, PASSWORD)
