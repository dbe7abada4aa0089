"""``Warehouse``: the small public face over the archive, the Parquet lake and the SQL tables.

Loading (docs/ARCHITECTURE.md "Loading") is all-or-nothing for a whole batch across lake and
SQL. The protocol of ``load_batch``:

1. journal ``lake/_journal/<load_id>.json`` (state ``staging``), held by an flock on ``.lock``;
2. stage the batch's fact rows as Parquet under ``lake/_staging/<load_id>/`` (one pyarrow call);
3. SQL transaction: lock the (kind, county, period) keys, decide who supersedes whom, save the
   before-image of the touched ``submission``/``dq_issue`` rows next to the journal, write the
   planned file moves to the journal (state ``prepared``), delete/update/insert (a second thread
   makes the moves' destination folders meanwhile), insert a commit marker row into
   ``warehouse_load``, swap the lake partitions (old files to ``lake/_trash/<load_id>/``), commit;
4. journal state ``committed``; delete trash, staging, the marker row and the journal.

Any failure before the commit rolls the SQL back and moves every file back. A failure after the
commit is compensated: the before-image and the trashed Parquet files (which hold exactly the
deleted fact rows) are written back in one transaction and the files moved back. A process killed
at any step is repaired when the next ``Warehouse`` opens: the marker row tells whether the SQL
committed (then the load is finished) or not (then the files are moved back).

Remote lake (``GAIBAO_LAKE_URL``, :class:`warehouse.lake.RemoteLake`): no rename to swap with, no
flock, and the next open may run on another machine. The protocol:

1. take the load's lease (:class:`_Lease`: a PostgreSQL session advisory lock, or an flock beside
   the SQLite file) and commit its row in ``lake_journal``: the (period, county) partitions of
   the batch;
2. SQL transaction: lock the keys and decide who supersedes whom as above; a second thread writes
   each winning submission's Parquet file straight to its final path
   ``<kind>/period=P/county=C/<submission_id>.parquet`` (a temporary name and a rename, or one
   PUT on an object store) while the SQL work runs; wait for the files; commit. The commit is the
   only switch: before it the files are orphans no accepted submission owns, after it they are
   the current ones;
3. under the key locks again, delete the files of the submissions that were current before;
   delete the journal row; give the lease up.

The files are written under the key locks (not before the transaction opens) so that no other
load of the same partition writes or cleans there at the same time. Any repair is one rule,
applied under the key locks: in each partition of the journal row, delete every file but the
accepted submission's (as SQL says). It removes a killed load's orphans (before its commit) and
the files it superseded (after it) alike, so recovery needs no state beyond the partitions, and
runs only for rows whose lease nobody holds. A failure after the commit, in process, is
compensated as above: the before-image (kept in memory) and the superseded files' rows (still in
place) are written back; a failure while deleting the superseded files leaves the load committed
and the deletion to the next open.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import sqlalchemy as sa

from warehouse import lake as lakemod
from warehouse import migrate
from warehouse.archive import Archive
from warehouse.frames import result_frame
from warehouse.lake import Lake, RemoteLake, arrow_schema, frame_to_arrow
from warehouse.schema import (
    FACT_TABLES,
    dq_issue,
    lake_journal,
    mart_dirty,
    metadata,
    ref_division,
    ref_plan,
    submission,
    warehouse_load,
)

log = logging.getLogger(__name__)

# Failure injection for tests: set to one of FAIL_POINTS and load_batch raises there; with
# FAIL_MODE = "exit" the process dies there instead (os._exit: no cleanup, like a kill -9).
FAIL_AT: str | None = None
FAIL_MODE: str = "raise"
FAIL_POINTS = (
    "after_lake_stage",
    "after_journal",
    "during_lake_swap",
    "before_sql_commit",
    "after_sql_commit",
)
# A remote lake has one more step: deleting the superseded files after the commit. A failure there
# leaves the load committed (it is not undone) and its cleanup to the next Warehouse open.
REMOTE_FAIL_POINTS = (*FAIL_POINTS, "during_lake_cleanup")

CHUNK_ROWS = 50_000
IN_CHUNK = 900  # bound parameters per IN (...) list
SUBMISSION_STATUSES = ("accepted", "refused", "superseded")


class InjectedFailure(RuntimeError):
    """Raised at ``FAIL_AT``; never raised in production."""


def _maybe_fail(point: str) -> None:
    if point == FAIL_AT:
        if FAIL_MODE == "exit":
            os._exit(75)
        raise InjectedFailure(point)


def make_submission_id(kind: str, county_code: str, period: str, sha256: str, rules_version: str) -> str:
    """docs/ARCHITECTURE.md "Identity"."""
    key = f"{kind}|{county_code}|{period}|{sha256}|{rules_version}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]


@dataclass(frozen=True)
class LoadResult:
    load_id: str
    kind: str
    accepted: list[str] = field(default_factory=list)  # now the current submission of their key
    superseded: list[str] = field(default_factory=list)  # lost accepted status (earlier loads or this batch)
    refused: list[str] = field(default_factory=list)
    fact_rows: int = 0
    issues: int = 0
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    stage_wait_s: float = 0.0  # how long the swap waited for the Parquet files after the SQL work


@dataclass
class _Plan:
    """Who supersedes whom in one batch, decided under the key locks (``Warehouse._plan``)."""

    subs: pd.DataFrame  # the batch, accepted ones that lost to a newer return now "superseded"
    existing: pd.DataFrame  # the warehouse's submission rows of the batch's keys and ids
    batch_ids: list[str]
    batch_keys: set[tuple[str, str]]  # (county_code, period)
    periods: list[str]
    winners: dict[tuple[str, str], str]  # (county_code, period) -> the new current submission
    winner_ids: set[str]
    to_supersede: list[str]  # accepted submissions of earlier loads that lose their status
    swap_keys: set[tuple[str, str]]  # partitions whose current file changes
    touched: list[str]  # submission ids whose rows this load deletes or rewrites


def _chunks(seq: Sequence[Any], n: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _matching(
    conn: sa.Connection, column: sa.Column, values: Iterable[Any]
) -> Iterator[sa.ColumnElement[bool]]:
    """Conditions ``column IN values``, one per statement to run, ``IN_CHUNK`` values each. On
    PostgreSQL ``column = ANY(:array)``: one parameter, where an IN list of 900 bound values costs
    SQLAlchemy and psycopg tens of milliseconds of Python per statement to expand and convert. The
    chunks stay (not one array for the whole batch): the server plans each statement with the same
    row estimates as before."""
    for chunk in _chunks(list(values)):
        yield _in(conn, column, chunk)


def _in(conn: sa.Connection, column: sa.Column, values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """``column IN values`` in one statement (PostgreSQL: ``column = ANY(:array)``; see
    :func:`_matching`)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(None, list(values), type_=ARRAY(column.type), unique=True))
    return column.in_(values)


def matching_keys(
    conn: sa.Connection,
    table: sa.Table,
    keys: Iterable[tuple[str, str]],
    *,
    per_statement: int | None = IN_CHUNK // 2,
) -> Iterator[sa.ColumnElement[bool]]:
    """Conditions on the rows of a fact table under the (county_code, period) ``keys``, one per
    statement: ``period = p AND county_code IN (...)`` (PostgreSQL: ``= ANY(:array)``), for
    ``per_statement`` keys of one period (None: all of the period's; SQLite binds at most
    ``IN_CHUNK`` values).

    How the fact rows of submissions are found: a (county, period) holds the rows of its accepted
    submission only (a load deletes the superseded ones' rows in its transaction), so the rows of
    accepted submissions are the rows under their keys, read through the (county_code, period,
    ...) index. There is no index on submission_id alone: keeping it up to date cost a national
    month's COPY 2-4 s. No ``submission_id = ANY(...)`` filter either: once psycopg prepares a
    statement the server may plan it generically, and such a filter then compares every row with
    every id (a national month's delete: 145 s); an exact hashed (county, id) check cost 0.5 s a
    million rows. 450 keys a statement lead PostgreSQL to the index where 2,850 would make it scan
    the table; a SELECT of a national month can be faster as one (parallel) scan."""
    by_period: dict[str, list[str]] = {}
    for county_code, period in sorted(set(keys)):
        by_period.setdefault(period, []).append(county_code)
    pg = conn.dialect.name == "postgresql"
    size = per_statement if pg else min(per_statement or IN_CHUNK, IN_CHUNK)
    for period, counties in by_period.items():
        for chunk in _chunks(counties, size) if size else [counties]:
            yield sa.and_(table.c.period == period, _in(conn, table.c.county_code, chunk))


def _lock_key(kind: str, county_code: str, period: str) -> int:
    digest = hashlib.sha256(f"{kind}|{county_code}|{period}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# Reference tables are replaced delete-then-insert: one lock each (SQLite: BEGIN IMMEDIATE).
_REF_DIVISION_LOCK = ("ref_division", "", "")
_REF_PLAN_LOCK = ("ref_plan", "", "")


def _py(value: Any) -> Any:
    """A pandas/numpy scalar as a plain Python value for a DB-API bind (NaN/NaT/NA -> None)."""
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item"):
        return value.item()
    return value


def _isin(series: pd.Series, values: Iterable[Any]) -> pd.Series:
    """``series.isin(values)`` for a column of ids or codes. pandas' own isin on Arrow-backed text
    (pandas 3's ``str``) makes a pyarrow scalar of every value first: ~28 ms for a national batch's
    2,850 ids, against under 1 ms asking pyarrow directly. Other columns go to pandas."""
    values = values if isinstance(values, list) else list(values)
    if len(series) and values and all(type(v) is str for v in values):
        try:
            arr = pa.array(series, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return series.isin(values)
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            mask = pc.is_in(arr, value_set=pa.array(values, type=arr.type)).fill_null(False)
            return pd.Series(mask.to_numpy(zero_copy_only=False), index=series.index, dtype=bool)
    return series.isin(values)


def _pairs(frame: pd.DataFrame, a: str, b: str) -> Iterator[tuple[Any, Any]]:
    """``zip(frame[a], frame[b])`` without iterating Arrow-backed columns value by value."""
    return zip(frame[a].tolist(), frame[b].tolist(), strict=True)


def _accepted_keys(submissions: pd.DataFrame, ids: set[str]) -> list[tuple[str, str]]:
    """(county_code, period) of the accepted ``submissions`` rows whose id is in ``ids``."""
    rows = submissions[(submissions["status"] == "accepted") & _isin(submissions["submission_id"], ids)]
    return list(_pairs(rows, "county_code", "period"))


def _records(frame: pd.DataFrame, columns: Iterable[str]) -> list[dict[str, Any]]:
    cols = [c for c in columns if c in frame.columns]
    return [
        {c: _py(v) for c, v in zip(cols, row, strict=True)} for row in frame[cols].itertuples(index=False)
    ]


def _utc(value: Any) -> pd.Timestamp | None:
    v = _py(value)
    if v is None:
        return None
    ts = pd.Timestamp(v)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


_READ_ONLY_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def sqlite_is_read_only(db_file: Path) -> bool:
    """An existing SQLite file this process may not write, or whose folder it may not write (the
    journal files live beside it)."""
    return db_file.exists() and not (os.access(db_file, os.W_OK) and os.access(db_file.parent, os.W_OK))


def sqlite_read_only_url(db_file: Path) -> str:
    """The URL that reads a SQLite file without writing anything: ``mode=ro`` when its WAL files
    are there (SQLite reads through them: commits not yet checkpointed are seen), else
    ``immutable=1`` (a WAL database without them needs its -shm created, which a read-only folder
    forbids; with no WAL file everything committed is in the database file itself)."""
    path = quote(str(db_file.resolve()))
    wal_files = all(Path(f"{db_file}{suffix}").exists() for suffix in ("-wal", "-shm"))
    return f"sqlite:///file:{path}?mode=ro{'' if wal_files else '&immutable=1'}&uri=true"


def _make_engine(url: str) -> sa.Engine:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite"):
        u = sa.make_url(url)
        read_only = bool(u.database) and u.database != ":memory:" and sqlite_is_read_only(Path(u.database))
        if read_only:
            # A home nobody may write (chmod -R a-w, a read-only mount) can still be read: SQLite
            # cannot create a WAL database's -shm file there, so the file is opened immutable.
            log.info("warehouse %s is read-only: opened for reading only", u.database)
            url = sqlite_read_only_url(Path(u.database))
        elif u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 120})
        if read_only:
            _READ_ONLY_ENGINES.add(engine)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
            cur = dbapi_conn.cursor()
            if not read_only:  # journal_mode writes the database header: never on a read-only file
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=120000")
            cur.execute("PRAGMA synchronous=NORMAL")
            # 128 MiB of page cache (default 2 MiB): a million-row load updates the indexes of
            # fact_progress, and a small cache makes each insert a page miss (measured 1.6x).
            cur.execute("PRAGMA cache_size=-131072")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            mode = conn.info.pop("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {'IMMEDIATE' if mode == 'IMMEDIATE' else 'DEFERRED'}")

        @sa.event.listens_for(engine, "checkin")
        def _on_checkin(dbapi_conn: Any, record: Any) -> None:
            if dbapi_conn is not None and record.info.get("gaibao_stages"):
                _drop_stages(dbapi_conn, record.info)

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def bulk_insert(conn: sa.Connection, table: sa.Table, data: pa.Table) -> int:
    """Insert an Arrow table (columns = ``table``'s): COPY on PostgreSQL; on SQLite an attached
    staging file (:func:`_sqlite_insert_staged`) for large tables, executemany in chunks otherwise."""
    if data.num_rows == 0:
        return 0
    cols = data.column_names
    if conn.dialect.name == "sqlite" and data.num_rows >= SQLITE_STAGE_MIN_ROWS:
        db_file = _sqlite_file_of(conn.engine)
        if db_file is not None and _adbc_sqlite() is not None:
            return _sqlite_insert_staged(conn, table, _sqlite_values(data), db_file)
    if conn.dialect.name == "postgresql":
        raw: Any = conn.connection.driver_connection
        col_sql = ", ".join(f'"{c}"' for c in cols)  # names from our own schema, never from data
        wire = _pg_binary_table(raw, table, data)
        with raw.cursor() as cur:
            if wire is not None:
                encoder = _pgpq().ArrowToPostgresBinaryEncoder(wire.schema)
                with cur.copy(f'COPY "{table.name}" ({col_sql}) FROM STDIN WITH (FORMAT binary)') as cp:
                    cp.write(encoder.write_header())
                    for batch in wire.to_batches(max_chunksize=CHUNK_ROWS):
                        cp.write(encoder.write_batch(batch))
                    cp.write(encoder.finish())
                return data.num_rows
            opts = pacsv.WriteOptions(include_header=False, batch_size=CHUNK_ROWS)
            with cur.copy(f'COPY "{table.name}" ({col_sql}) FROM STDIN WITH (FORMAT csv)') as cp:
                for batch in data.to_batches(max_chunksize=CHUNK_ROWS):
                    sink = pa.BufferOutputStream()
                    pacsv.write_csv(pa.Table.from_batches([batch]), sink, write_options=opts)
                    cp.write(sink.getvalue().to_pybytes())
        return data.num_rows
    # SQLite: DB-API executemany inside the open transaction, 50k rows at a time.
    raw = conn.connection.driver_connection
    assert raw is not None
    placeholders = ", ".join("?" for _ in cols)
    sql = f'INSERT INTO "{table.name}" ({", ".join(chr(34) + c + chr(34) for c in cols)}) VALUES ({placeholders})'
    for batch in _sqlite_values(data).to_batches(max_chunksize=CHUNK_ROWS):
        columns = [arr.to_pylist() for arr in batch.columns]
        raw.executemany(sql, list(zip(*columns, strict=True)))
    return data.num_rows


# -- PostgreSQL bulk path ---------------------------------------------------------------------
# COPY in PostgreSQL's binary format (pgpq encodes Arrow batches in Rust): the server skips parsing
# text into numbers and dates, and the client skips writing CSV. A million fact rows: CSV 1.7 s to
# encode and 10-11 s of COPY, binary 0.5 s and 8-10 s. Each column is sent as the Arrow type whose
# binary form is the column's type in the database itself (asked of the catalogue, so a migration
# that changes a type cannot make the two disagree); a table with a type not listed keeps CSV.
_PG_WIRE_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int2": pa.int16(),
    "int4": pa.int32(),
    "int8": pa.int64(),
    "float4": pa.float32(),
    "float8": pa.float64(),
    "date": pa.date32(),
    "text": pa.string(),
    "varchar": pa.string(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
}


def _pgpq() -> Any:
    import pgpq

    return pgpq


def _pg_binary_table(raw: Any, table: sa.Table, data: pa.Table) -> pa.Table | None:
    """``data`` cast to the wire types of ``table``'s columns, or None (use CSV) when a column's
    database type has no entry in ``_PG_WIRE_TYPES``. Casts are safe: a value that does not fit
    (an int64 beyond int4) raises rather than wraps."""
    with raw.cursor() as cur:
        cur.execute(
            "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            (f'"{table.name}"',),
        )
        types = dict(cur.fetchall())
    fields = []
    for name in data.column_names:
        wire = _PG_WIRE_TYPES.get(types.get(name, ""))
        if wire is None:
            return None
        fields.append(pa.field(name, wire))
    return data.cast(pa.schema(fields))


def _sqlite_values(data: pa.Table) -> pa.Table:
    """Dates and timestamps as the text SQLAlchemy's SQLite types store and read back."""
    columns = []
    for arr in data.columns:
        if pa.types.is_date32(arr.type):
            arr = arr.cast(pa.string())
        elif pa.types.is_timestamp(arr.type):
            # SQLAlchemy's SQLite DateTime format: "YYYY-MM-DD HH:MM:SS.ffffff"
            arr = arr.cast(pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us")).cast(pa.string())
        columns.append(arr)
    return pa.table(columns, names=data.column_names)


# -- SQLite bulk path -------------------------------------------------------------------------
# Python's sqlite3 binds a million rows of 22 columns in about 11 s (3 s turning Arrow into
# tuples, 8 s of executemany with the two indexes fact_progress then had). The ADBC SQLite driver
# writes the Arrow table into a fresh staging file in about 2 s (C++, no Python objects); the
# load's own connection then ATTACHes that file and copies the rows with one INSERT ... SELECT
# (about 3 s, indexes included), inside the load's transaction, so all-or-nothing holds exactly as
# before. SQLite cannot DETACH inside a transaction: the staging file is detached and deleted when
# the connection goes back to the pool (see _make_engine), or by Warehouse.recover() after a crash.
SQLITE_STAGE_MIN_ROWS = 20_000  # below this, a file and an ATTACH cost more than executemany
STAGE_SUFFIX = ".stage-"


@functools.cache
def _adbc_sqlite() -> Any:
    try:
        import adbc_driver_sqlite.dbapi as adbc
    except ImportError:  # the driver is a dependency; without it the executemany path still works
        return None
    return adbc


def _sqlite_file_of(engine: sa.Engine) -> Path | None:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_insert_staged(conn: sa.Connection, table: sa.Table, data: pa.Table, db_file: Path) -> int:
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    stage = db_file.with_name(f"{db_file.name}{STAGE_SUFFIX}{tag}")
    alias = f"gaibao_stage_{tag.replace('-', '_')}"  # made here, never from data
    with _adbc_sqlite().connect(str(stage)) as sc:
        with sc.cursor() as cur:
            cur.adbc_ingest("rows", data, mode="create")
        sc.commit()
    record_info = conn.connection.info  # the pooled DB-API connection's: survives this Connection
    record_info.setdefault("gaibao_stages", []).append((alias, str(stage)))
    raw: Any = conn.connection.driver_connection
    raw.execute(f"ATTACH DATABASE ? AS {alias}", (str(stage),))
    col_sql = ", ".join(f'"{c}"' for c in data.column_names)  # names from our own schema
    raw.execute(f'INSERT INTO main."{table.name}" ({col_sql}) SELECT {col_sql} FROM {alias}."rows"')
    return data.num_rows


def _drop_stages(dbapi_conn: Any, record_info: dict) -> None:
    """Detach and delete the staging files a connection attached (called at check-in)."""
    for alias, path in record_info.pop("gaibao_stages", []):
        with contextlib.suppress(Exception):
            dbapi_conn.execute(f"DETACH DATABASE {alias}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _remove_stale_stages(db_file: Path) -> None:
    """Staging files left by a process that died mid-load (their pid no longer runs)."""
    for path in db_file.parent.glob(f"{db_file.name}{STAGE_SUFFIX}*"):
        pid = path.name.rsplit(STAGE_SUFFIX, 1)[1].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


class _Journal:
    """``lake/_journal/<load_id>.json`` plus ``.lock`` (flock held while the load is alive)."""

    def __init__(self, root: Path, load_id: str) -> None:
        self.root = root
        self.load_id = load_id
        self.path = root / f"{load_id}.json"
        self.lock_path = root / f"{load_id}.lock"
        self.image_dir = root / load_id
        self.data: dict[str, Any] = {"load_id": load_id}
        self._lock_fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def load(self) -> bool:
        try:
            self.data = json.loads(self.path.read_text("utf-8"))
            return True
        except FileNotFoundError:
            return False

    def write(self, **changes: Any) -> None:
        self.data.update(changes)
        tmp = self.path.with_suffix(".json.tmp")
        text = json.dumps(self.data, ensure_ascii=False)  # one string: json.dump writes piece by piece
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def remove(self) -> None:
        lakemod.remove_tree(self.image_dir)
        for p in (self.path, self.path.with_suffix(".json.tmp")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if self._lock_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                self.lock_path.unlink()
            os.close(self._lock_fd)
            self._lock_fd = None

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


# The advisory-lock class of remote-lake leases (PostgreSQL's two-key form, a key space apart
# from the one-key locks of _lock_key).
_LEASE_CLASS = 0x67616B65 & 0x7FFFFFFF


class _Lease:
    """Held by a load into a remote lake from before its journal row is written until after it is
    deleted: tells the next ``Warehouse`` open a live load (leave it alone) from a dead one
    (repair it), as the flock on ``lake/_journal/<load_id>.lock`` does for a local lake.

    PostgreSQL: a session advisory lock on a connection of its own, released by the server when
    the process or its machine dies, so workers on several machines see each other's loads.
    SQLite (one machine): an flock on a file beside the database.
    """

    def __init__(self, engine: sa.Engine, load_id: str) -> None:
        self.engine = engine
        self.load_id = load_id
        digest = hashlib.sha256(load_id.encode()).digest()
        self._key = int.from_bytes(digest[:4], "big", signed=True)
        self._conn: sa.Connection | None = None
        self._fd: int | None = None
        self._path: Path | None = None

    def _lock_file(self) -> Path:
        db_file = _sqlite_file_of(self.engine)
        if db_file is not None:
            folder = db_file.with_name(f"{db_file.name}.lake-leases")
        else:  # an in-memory database lives in this process only
            import tempfile

            tag = hashlib.sha256(self.engine.url.render_as_string().encode()).hexdigest()[:12]
            folder = Path(tempfile.gettempdir()) / f"gaibao-lake-leases-{tag}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.load_id}.lock"

    def acquire(self, *, blocking: bool = True) -> bool:
        if self.engine.dialect.name == "postgresql":
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            fn = "pg_advisory_lock" if blocking else "pg_try_advisory_lock"
            got = conn.execute(sa.text(f"SELECT {fn}(:c, :k)"), {"c": _LEASE_CLASS, "k": self._key}).scalar()
            if blocking or got:
                self._conn = conn
                return True
            conn.close()
            return False
        path = self._lock_file()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd, self._path = fd, path
        return True

    def release(self) -> None:
        """Give the lease up (the load is finished, or left to the journal for recover())."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.execute(
                    sa.text("SELECT pg_advisory_unlock(:c, :k)"), {"c": _LEASE_CLASS, "k": self._key}
                )
            except Exception:  # noqa: BLE001 - a broken connection: never pool it with the lock held
                conn.invalidate()
            conn.close()
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                assert self._path is not None
                self._path.unlink()
            os.close(self._fd)
            self._fd = None


class Warehouse:
    """Archive + lake + SQL. ``url`` is a SQLAlchemy URL, ``home`` holds ``archive/`` and ``lake/``."""

    def __init__(
        self,
        url: str,
        home: Path | str,
        *,
        recover: bool = True,
        settings: Any = None,
        lake: Lake | RemoteLake | str | None = None,
    ) -> None:
        """``lake``: a lake, or its folder or fsspec URL; default ``GAIBAO_LAKE_URL`` when
        ``settings`` set it, else the folder ``home/lake``."""
        self.url = url
        self.home = Path(home)
        self.engine = _make_engine(url)
        self._settings = settings
        if lake is None and settings is not None and getattr(settings, "lake_url", None):
            lake = lakemod.lake_from_settings(settings)
        if isinstance(lake, str):
            lake = lakemod.open_lake(lake)
        self.lake: Lake | RemoteLake = lake if lake is not None else Lake(self.home / "lake")
        if recover and not self.read_only:  # a read-only warehouse is read, never repaired
            self.recover()

    @classmethod
    def from_settings(cls, settings: Any = None) -> Warehouse:
        if settings is None:
            from gaibao.settings import get_settings

            settings = get_settings()
        return cls(str(settings.warehouse_url), settings.home, settings=settings)

    @functools.cached_property
    def archive(self) -> Archive:
        """The raw archive (``GAIBAO_ARCHIVE_URL``), opened on first use: commands that never
        touch it open no SSH or object-store connection."""
        if self._settings is not None:
            return Archive.from_settings(self._settings)
        return Archive(self.home / "archive")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def read_only(self) -> bool:
        """A SQLite warehouse this process can only read (see ``sqlite_is_read_only``)."""
        return self.engine in _READ_ONLY_ENGINES

    def upgrade(self) -> None:
        """Create or migrate the tables (``alembic upgrade head``)."""
        migrate.upgrade(self.engine)

    @property
    def _local_lake(self) -> Lake:
        lake = self.lake
        assert isinstance(lake, Lake), "the local lake protocol on a remote lake"
        return lake

    def close(self) -> None:
        self.lake.close()
        self.engine.dispose()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _write_txn(self, keys: Iterable[tuple[str, str, str]] = ()) -> Iterator[sa.Connection]:
        """A write transaction; serialises with other loads of the same (kind, county, period)."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                conn.info["sqlite_begin"] = "IMMEDIATE"
            with conn.begin():
                if self.dialect == "postgresql":
                    lock_ids = sorted({_lock_key(*k) for k in keys})
                    if lock_ids:
                        conn.execute(
                            sa.text(
                                "SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS t(k, i) ORDER BY i"
                            ),
                            {"keys": lock_ids},
                        ).fetchall()
                yield conn

    # -- identity -------------------------------------------------------------------------
    def known_submission(
        self, kind: str, county_code: str, period: str, sha256: str, rules_version: str
    ) -> str | None:
        """The submission id if these bytes were already judged under these rules, else None."""
        sid = make_submission_id(kind, county_code, period, sha256, rules_version)
        return (
            sid
            if sid in self.known_submissions([(kind, county_code, period, sha256, rules_version)])
            else None
        )

    def known_submissions(
        self, keys: pd.DataFrame | Iterable[tuple[str, str, str, str, str]]
    ) -> dict[str, str]:
        """Bulk form: keys are (kind, county_code, period, sha256, rules_version) tuples or a frame
        with those columns. Returns ``{submission_id: status}`` for the ones already recorded."""
        if isinstance(keys, pd.DataFrame):
            cols = ["kind", "county_code", "period", "sha256", "rules_version"]
            keys = keys[cols].itertuples(index=False, name=None)
        ids = sorted({make_submission_id(*k) for k in keys})
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(ids):
                q = sa.select(submission.c.submission_id, submission.c.status).where(
                    submission.c.submission_id.in_(chunk)
                )
                found.update(dict(conn.execute(q).all()))
        return found

    # -- reading --------------------------------------------------------------------------
    def _table(self, name: str) -> sa.Table:
        try:
            return metadata.tables[name]
        except KeyError:
            raise ValueError(f"unknown warehouse table: {name!r}") from None

    def read_table(self, name: str, where: dict[str, Any] | None = None) -> pd.DataFrame:
        """Rows of one table, optionally filtered by column equality (a list value means IN)."""
        table = self._table(name)
        q = sa.select(table)
        for col, value in (where or {}).items():
            if col not in table.c:
                raise ValueError(f"{name} has no column {col!r}")
            if isinstance(value, (list, tuple, set, frozenset)):
                q = q.where(table.c[col].in_(list(value)))
            elif value is None:
                q = q.where(table.c[col].is_(None))
            else:
                q = q.where(table.c[col] == value)
        pk = list(table.primary_key.columns) or list(table.columns)
        q = q.order_by(*pk)
        with self.engine.connect() as conn:
            result = conn.execute(q)
            return result_frame(result)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Run one SELECT with bound parameters (``:name`` placeholders)."""
        with self.engine.connect() as conn:
            result = conn.execute(sa.text(sql), params or {})
            return result_frame(result)

    def submissions(
        self, period: str | None = None, county: str | None = None, kind: str | None = None
    ) -> pd.DataFrame:
        where = {
            k: v for k, v in (("period", period), ("county_code", county), ("kind", kind)) if v is not None
        }
        return self.read_table("submission", where)

    def previous_rows(
        self,
        kind: str,
        period: str,
        counties: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """For each county, the accepted fact rows of its latest accepted period before ``period``.

        Read from the lake (one small Parquet file per county). ``columns`` limits the columns
        read (the cross-period rules need only a few; reading fewer is proportionally faster);
        ``submission_id``, ``county_code``, ``period`` and ``row_number`` are always included.
        """
        table = FACT_TABLES[kind]
        s = submission
        base = sa.select(s.c.county_code, s.c.period, s.c.submission_id).where(
            s.c.kind == kind, s.c.status == "accepted", s.c.period < period
        )
        rows: list[tuple[str, str, str]] = []
        with self.engine.connect() as conn:
            if counties is None:
                rows = [tuple(r) for r in conn.execute(base).all()]
            else:
                for chunk in _chunks(sorted(set(counties))):
                    rows.extend(tuple(r) for r in conn.execute(base.where(s.c.county_code.in_(chunk))).all())
        schema = arrow_schema(table)
        if columns is not None:
            wanted = {"submission_id", "county_code", "period", "row_number", *columns}
            unknown = wanted - set(schema.names)
            if unknown:
                raise ValueError(f"{table.name} has no columns {sorted(unknown)}")
            schema = pa.schema([f for f in schema if f.name in wanted])
        if not rows:
            return schema.empty_table().to_pandas(date_as_object=False)
        latest = pd.DataFrame(rows, columns=["county_code", "period", "submission_id"])
        latest = latest.sort_values(["county_code", "period"]).drop_duplicates("county_code", keep="last")
        key_of = {
            self.lake.file_path(kind, p, c, sid): (c, p)
            for c, p, sid in latest.itertuples(index=False, name=None)
        }
        present, missing = self.lake.read_existing(list(key_of), schema)  # type: ignore[arg-type]
        parts = [present]
        if missing:  # lake out of step with SQL (should not happen): read those from SQL
            log.warning("previous_rows: %d lake files missing, reading SQL", len(missing))
            with self.engine.connect() as conn:
                for at_keys in matching_keys(conn, table, [key_of[f] for f in missing]):
                    res = conn.execute(sa.select(table).where(at_keys))
                    frame = pd.DataFrame(res.all(), columns=list(res.keys()))
                    parts.append(frame_to_arrow(frame, table).select(schema.names))
        # Files are read in county order and hold their rows in file order: no sort needed.
        return pa.concat_tables(parts).to_pandas(date_as_object=False)

    # -- reference data -------------------------------------------------------------------
    def load_divisions(self, frame: pd.DataFrame, *, only_if_empty: bool = False) -> int:
        """Replace every ``ref_division`` row with ``frame`` (county_code, county_name, city_code,
        city_name); with ``only_if_empty``, only when the table has no row yet (the check and the
        load hold one lock, so two first runs seeding an empty warehouse at once do not collide)."""
        data = frame_to_arrow(frame.astype(object), ref_division)
        with self._write_txn([_REF_DIVISION_LOCK]) as conn:
            if only_if_empty and conn.execute(sa.select(sa.func.count()).select_from(ref_division)).scalar():
                return 0
            conn.execute(ref_division.delete())
            _mark_marts(conn, None)
            return bulk_insert(conn, ref_division, data)

    def load_plan(self, frame: pd.DataFrame) -> int:
        """Replace the ``ref_plan`` rows of the plan cycles present in ``frame``."""
        frame = frame.copy()
        if "plan_cycle" not in frame.columns:
            frame["plan_cycle"] = ""
        frame["plan_cycle"] = frame["plan_cycle"].astype(object).where(frame["plan_cycle"].notna(), "")
        cycles = sorted(set(frame["plan_cycle"]))
        data = frame_to_arrow(frame, ref_plan)
        with self._write_txn([_REF_PLAN_LOCK]) as conn:
            conn.execute(ref_plan.delete().where(ref_plan.c.plan_cycle.in_(cycles)))
            _mark_marts(conn, None)
            return bulk_insert(conn, ref_plan, data)

    # -- loading --------------------------------------------------------------------------
    def load_batch(
        self, submissions: pd.DataFrame, facts: pd.DataFrame, issues: pd.DataFrame, kind: str
    ) -> LoadResult:
        """Write one batch (one kind) all-or-nothing across lake and SQL; see the module docstring.

        ``submissions``: one row per submission (the ``submission`` columns; ``status`` is
        ``accepted`` or ``refused``). ``facts``: the accepted fact rows (rows that passed the E
        rules) of the accepted submissions; rows of other submissions are ignored. ``issues``:
        ``dq_issue`` rows (``issue_id`` is assigned here, deterministically).
        """
        t0 = time.perf_counter()
        if kind not in FACT_TABLES:
            raise ValueError(f"not a submitted kind: {kind!r}")
        fact_table = FACT_TABLES[kind]
        subs = self._prepare_submissions(submissions, kind)

        # In-batch resolution: of several accepted submissions for one key, the newest wins.
        acc = subs[subs["status"] == "accepted"].copy()
        acc["_rt"] = acc["received_at"].map(_utc)
        acc = acc.sort_values(["_rt", "submission_id"], na_position="first")
        batch_winner = acc.drop_duplicates(["county_code", "period"], keep="last")
        batch_winner_ids = set(batch_winner["submission_id"])
        if len(facts):
            keep = _isin(facts["submission_id"], batch_winner_ids)
            if not keep.all():  # avoid copying a million rows when nothing is dropped
                facts = facts[keep]
        fact_data = frame_to_arrow(facts, fact_table)
        self._check_fact_keys(fact_data, subs)
        issue_data = self._prepare_issues(issues, subs, kind)

        load_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        if isinstance(self.lake, RemoteLake):
            return self._load_remote(load_id, kind, subs, batch_winner, fact_data, issue_data, t0)
        journal = _Journal(self.lake.journal_root, load_id)
        journal.acquire()
        journal.write(kind=kind, state="staging", moves=[])
        committed = False
        result: LoadResult | None = None
        timings = {"prepare": time.perf_counter() - t0}
        # The Parquet files are written in a second thread while the SQL work runs (pyarrow
        # releases the GIL; on a million rows both take 15-30 s); the lake swap waits for them.
        stager = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"stage-{load_id}")
        staging = stager.submit(self.lake.stage, load_id, kind, fact_data)
        try:
            sids = pc.unique(fact_data["submission_id"]).to_pylist() if fact_data.num_rows else []
            staged = self.lake.staged_relative(load_id, kind, sids)
            keys = sorted({(kind, c, p) for c, p in _pairs(subs, "county_code", "period")})
            t_sql = time.perf_counter()
            with self._write_txn(keys) as conn:
                result = self._load_sql(
                    conn, load_id, kind, subs, batch_winner, fact_data, issue_data, staged, journal, staging
                )
                _maybe_fail("before_sql_commit")
            committed = True
            timings["sql_and_swap"] = time.perf_counter() - t_sql
            journal.write(state="committed")
            _maybe_fail("after_sql_commit")
        except BaseException:
            log.exception("load %s failed; undoing", load_id)
            futures_wait([staging])  # never remove the staging folder under a writing thread
            try:
                self._undo(journal, committed=committed or self._marker_exists(load_id))
            finally:
                journal.release()  # if the undo failed too, the journal stays for recover()
            raise
        finally:
            stager.shutdown(wait=True)
        timings["stage_wait"] = result.stage_wait_s
        t_finish = time.perf_counter()
        self._finish(journal)
        timings["finish"] = time.perf_counter() - t_finish
        seconds = time.perf_counter() - t0
        log.info(
            "load %s (%s): %d accepted, %d superseded, %d refused, %d fact rows in %.1f s %s",
            load_id, kind, len(result.accepted), len(result.superseded), len(result.refused), result.fact_rows,
            seconds, {k: round(v, 2) for k, v in timings.items()},
        )  # fmt: skip
        return LoadResult(**{**result.__dict__, "seconds": seconds, "timings": timings})

    def _prepare_submissions(self, submissions: pd.DataFrame, kind: str) -> pd.DataFrame:
        subs = submissions.copy()
        for col in ("submission_id", "county_code", "period", "status", "sha256", "rules_version"):
            if col not in subs.columns:
                raise ValueError(f"submissions frame lacks {col!r}")
        if "kind" in subs.columns and not (subs["kind"] == kind).all():
            raise ValueError(f"submissions of another kind in a {kind} batch")
        subs["kind"] = kind
        if subs["submission_id"].duplicated().any():
            raise ValueError("a submission id appears twice in the batch")
        bad = set(subs["status"]) - {"accepted", "refused"}
        if bad:
            raise ValueError(f"batch submissions must be accepted or refused, not {sorted(bad)}")
        if "received_at" not in subs.columns:
            subs["received_at"] = None
        if "unknown_columns" in subs.columns:
            subs["unknown_columns"] = subs["unknown_columns"].map(
                lambda v: v if v is None or isinstance(v, str) else json.dumps(list(v), ensure_ascii=False)
            )
        return subs.reset_index(drop=True)

    @staticmethod
    def _check_fact_keys(fact_data: pa.Table, subs: pd.DataFrame) -> None:
        """Every fact row must carry its submission's county and period (the lake path says so)."""
        if fact_data.num_rows == 0:
            return
        keys = ["submission_id", "county_code", "period"]
        triples = fact_data.select(keys).group_by(keys).aggregate([])
        expected = dict(
            zip(subs["submission_id"].tolist(), _pairs(subs, "county_code", "period"), strict=True)
        )
        for sid, c, p in zip(*(triples[k].to_pylist() for k in keys), strict=True):
            if expected.get(sid) != (c, p):
                raise ValueError(f"fact rows of {sid} name county {c} / period {p}, not their submission's")

    def _prepare_issues(self, issues: pd.DataFrame, subs: pd.DataFrame, kind: str) -> pa.Table:
        if issues is None or len(issues) == 0:
            return dq_issue_schema_empty()
        frame = issues[_isin(issues["submission_id"], subs["submission_id"].tolist())].copy()
        frame["kind"] = kind
        seq = frame.groupby("submission_id", sort=False).cumcount()
        frame["issue_id"] = frame["submission_id"].astype(str) + ":" + seq.astype(str).str.zfill(6)
        if "is_explained" in frame.columns:
            frame["is_explained"] = frame["is_explained"].fillna(False).astype(bool)
        if "value" in frame.columns:
            frame["value"] = frame["value"].map(lambda v: None if _py(v) is None else str(v))
        return frame_to_arrow(frame, dq_issue)

    def _plan(self, conn: sa.Connection, kind: str, subs: pd.DataFrame, batch_winner: pd.DataFrame) -> _Plan:
        """Who supersedes whom: read what the warehouse holds for the batch's keys and ids (under
        the key locks) and decide the winners and the partitions whose current file changes."""
        s = submission
        batch_ids = subs["submission_id"].tolist()
        periods = sorted(set(subs["period"].tolist()))
        # What the warehouse holds now for these keys and ids (read under the key locks).
        existing_rows: list[Any] = []
        for in_counties in _matching(conn, s.c.county_code, sorted(set(subs["county_code"].tolist()))):
            q = sa.select(s).where(s.c.kind == kind, s.c.period.in_(periods), in_counties)
            existing_rows.extend(conn.execute(q).mappings().all())
        for in_ids in _matching(conn, s.c.submission_id, batch_ids):
            existing_rows.extend(conn.execute(sa.select(s).where(in_ids)).mappings().all())
        existing = pd.DataFrame([dict(r) for r in existing_rows], columns=[c.name for c in s.columns])
        existing = existing.drop_duplicates("submission_id")
        batch_keys = set(_pairs(subs, "county_code", "period"))
        in_keys = [(c, p) in batch_keys for c, p in _pairs(existing, "county_code", "period")]
        existing = existing[
            pd.Series(in_keys, index=existing.index, dtype=bool) | _isin(existing["submission_id"], batch_ids)
        ]
        others = existing[~_isin(existing["submission_id"], batch_ids) & (existing["status"] == "accepted")]
        other_by_key = {
            (c, p): (sid, _utc(rt))
            for c, p, sid, rt in others[["county_code", "period", "submission_id", "received_at"]].itertuples(
                index=False, name=None
            )
        }

        # Winners: a batch winner beats the warehouse's accepted one unless that one is newer.
        winners: dict[tuple[str, str], str] = {}
        to_supersede: list[str] = []
        for c, p, sid, rt in batch_winner[["county_code", "period", "submission_id", "_rt"]].itertuples(
            index=False, name=None
        ):
            other = other_by_key.get((c, p))
            if other is not None and other[1] is not None and (rt is None or other[1] > rt):
                continue  # the warehouse already has a newer accepted return: this one is superseded
            winners[(c, p)] = sid
            if other is not None:
                to_supersede.append(other[0])
        winner_ids = set(winners.values())
        status = subs["status"].where(
            ~((subs["status"] == "accepted") & ~_isin(subs["submission_id"], winner_ids)), "superseded"
        )
        subs = subs.assign(status=status)
        prev_accepted_batch = existing[
            _isin(existing["submission_id"], batch_ids) & (existing["status"] == "accepted")
        ]

        # Partitions whose current file changes.
        swap_keys = set(winners) | set(_pairs(prev_accepted_batch, "county_code", "period"))
        return _Plan(
            subs=subs,
            existing=existing,
            batch_ids=batch_ids,
            batch_keys=batch_keys,
            periods=periods,
            winners=winners,
            winner_ids=winner_ids,
            to_supersede=to_supersede,
            swap_keys=swap_keys,
            touched=sorted(set(batch_ids) | set(to_supersede)),
        )

    def _before_image(self, conn: sa.Connection, plan: _Plan) -> tuple[pa.Table, pa.Table]:
        """The ``submission`` and ``dq_issue`` rows this load deletes or rewrites (the fact rows
        are in the lake files it replaces)."""
        before_subs = plan.existing[_isin(plan.existing["submission_id"], plan.touched)]
        before_issue_parts = []
        for in_ids in _matching(conn, dq_issue.c.submission_id, plan.batch_ids):
            res = conn.execute(sa.select(dq_issue).where(in_ids))
            before_issue_parts.append(pd.DataFrame(res.all(), columns=list(res.keys())))
        before_issues = (
            pd.concat(before_issue_parts)
            if before_issue_parts
            else pd.DataFrame(columns=[c.name for c in dq_issue.columns])
        )
        return frame_to_arrow(before_subs, submission), frame_to_arrow(before_issues, dq_issue)

    def _apply_sql(
        self,
        conn: sa.Connection,
        kind: str,
        plan: _Plan,
        fact_data: pa.Table,
        issue_data: pa.Table,
        submissions_with_facts: int,
    ) -> tuple[int, int, datetime]:
        """Delete, update and insert the batch's rows; mark the marts. Returns (fact rows, issues, now)."""
        s = submission
        fact_table = FACT_TABLES[kind]
        batch_ids, to_supersede, winner_ids = plan.batch_ids, plan.to_supersede, plan.winner_ids
        existing, subs = plan.existing, plan.subs
        # The fact rows of the submissions this load supersedes or reloads: the rows under the keys
        # of those that are accepted (the others have none; see matching_keys).
        replaced = _accepted_keys(existing, set(to_supersede) | set(batch_ids))
        for at_keys in matching_keys(conn, fact_table, replaced):
            conn.execute(fact_table.delete().where(at_keys))
        for in_ids in _matching(conn, dq_issue.c.submission_id, batch_ids):
            conn.execute(dq_issue.delete().where(in_ids))
        for in_ids in _matching(conn, s.c.submission_id, batch_ids):
            conn.execute(s.delete().where(in_ids))
        for in_ids in _matching(conn, s.c.submission_id, sorted(to_supersede)):
            conn.execute(s.update().where(in_ids).values(status="superseded"))
        now = datetime.now(UTC)
        kept_loaded_at = dict(zip(existing["submission_id"], existing["loaded_at"], strict=True))
        subs = subs.assign(
            loaded_at=[
                kept_loaded_at.get(sid) if _py(kept_loaded_at.get(sid)) is not None else now
                for sid in subs["submission_id"]
            ]
        )
        sub_records = _records(subs, [c.name for c in s.columns])
        for r in sub_records:
            received, loaded = _utc(r.get("received_at")), _utc(r["loaded_at"])
            r["received_at"] = received.to_pydatetime() if received is not None else None
            r["loaded_at"] = loaded.to_pydatetime() if loaded is not None else now
            if "file_mtime" in r:  # what the file claims: for the record only (migration 0006)
                mtime = _utc(r["file_mtime"])
                r["file_mtime"] = mtime.to_pydatetime() if mtime is not None else None
        if sub_records and conn.dialect.name == "postgresql":
            # Binary COPY of the same values: 0.1 s for a national batch against 0.15-0.3 s of executemany.
            fields = arrow_schema(s)
            data = pa.Table.from_pylist(
                sub_records, schema=pa.schema([fields.field(c) for c in sub_records[0]])
            )
            bulk_insert(conn, s, data)
        elif sub_records:
            conn.execute(s.insert(), sub_records)
        facts_in = fact_data
        # some batch winners lost to newer returns
        if fact_data.num_rows and len(winner_ids) < submissions_with_facts:
            mask = pc.is_in(fact_data["submission_id"], value_set=pa.array(sorted(winner_ids), pa.string()))
            facts_in = fact_data.filter(mask)
        n_facts = bulk_insert(conn, fact_table, facts_in)
        n_issues = bulk_insert(conn, dq_issue, issue_data)
        _mark_marts(conn, min(plan.periods) if plan.periods else None)
        return n_facts, n_issues, now

    @staticmethod
    def _result(
        load_id: str, kind: str, plan: _Plan, n_facts: int, n_issues: int, stage_wait: float
    ) -> LoadResult:
        subs = plan.subs
        return LoadResult(
            load_id=load_id,
            kind=kind,
            accepted=sorted(plan.winner_ids),
            superseded=sorted(
                set(plan.to_supersede) | set(subs.loc[subs["status"] == "superseded", "submission_id"])
            ),
            refused=sorted(subs.loc[subs["status"] == "refused", "submission_id"]),
            fact_rows=n_facts,
            issues=n_issues,
            stage_wait_s=stage_wait,
        )

    def _load_sql(
        self,
        conn: sa.Connection,
        load_id: str,
        kind: str,
        subs: pd.DataFrame,
        batch_winner: pd.DataFrame,
        fact_data: pa.Table,
        issue_data: pa.Table,
        staged: dict[str, str],
        journal: _Journal,
        staging: Future | None = None,
    ) -> LoadResult:
        """The local lake's load inside the SQL transaction: plan, journal, SQL, partition swap.

        Moves are lake-relative strings (``Lake.relative_file``, ``Lake.list_partitions``). The
        folders they go to are made by a second thread while the SQL work runs, once the journal
        lists the moves (so that an undo, or the repair after a kill, prunes them again); the files
        themselves move only after the SQL work, as before."""
        lake = self._local_lake
        plan = self._plan(conn, kind, subs, batch_winner)
        moves: list[tuple[str, str]] = []
        trash = lake.relative(lake.trash_dir(load_id))
        swap_keys = sorted(plan.swap_keys)
        current = lake.list_partitions(kind, [(p, c) for c, p in swap_keys])
        for c, p in swap_keys:
            for rel in current.get((p, c), ()):
                # trash is flat: one directory, fewer slow metadata operations
                moves.append((rel, f"{trash}/{rel.replace('/', '__')}"))
        for (c, p), sid in sorted(plan.winners.items()):
            if sid in staged:
                moves.append((staged[sid], lake.relative_file(kind, p, c, sid)))

        # Before-image of every row this load deletes or rewrites (the fact rows are the trashed files).
        before_subs, before_issues = self._before_image(conn, plan)
        journal.image_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(before_subs, journal.image_dir / "submission.parquet")
        pq.write_table(before_issues, journal.image_dir / "dq_issue.parquet")
        journal.write(
            state="prepared",
            moves=moves,
            deleted_fact_ids=sorted(set(plan.to_supersede) | set(plan.batch_ids)),
            inserted_fact_ids=sorted(plan.winner_ids),
            touched_ids=plan.touched,
            batch_ids=sorted(plan.batch_ids),
            keys=sorted([kind, c, p] for c, p in plan.batch_keys),
        )
        _maybe_fail("after_journal")

        # The moves' folders (most are new: a new period's partitions), made while the SQL runs.
        # The thread has stopped before this method returns or raises: an undo never prunes under it.
        stop_dirs = threading.Event()
        dir_maker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lake-dirs-{load_id}")
        try:
            dirs = dir_maker.submit(
                lakemod.make_dirs, lake.root, sorted({posixpath.dirname(dst) for _, dst in moves}), stop_dirs
            )
            n_facts, n_issues, now = self._apply_sql(conn, kind, plan, fact_data, issue_data, len(staged))
            conn.execute(
                warehouse_load.insert().values(
                    load_id=load_id,
                    kind=kind,
                    committed_at=now,
                    submissions=len(plan.subs),
                    fact_rows=n_facts,
                )
            )

            # The staged files must all be there before the swap.
            t_wait = time.perf_counter()
            if staging is not None:
                written = staging.result()
                if set(written) != set(staged):
                    raise RuntimeError(f"load {load_id}: staged {len(written)} files, expected {len(staged)}")
            stage_wait = time.perf_counter() - t_wait
            _maybe_fail("after_lake_stage")
            dirs.result()

            # Swap the lake partitions (inside the SQL transaction: a failure here rolls both back).
            root = os.fspath(lake.root)
            for i, (src, dst) in enumerate(moves):
                lakemod.rename(f"{root}/{src}", f"{root}/{dst}")
                if i == 0:
                    _maybe_fail("during_lake_swap")
            _maybe_fail("during_lake_swap")  # batches with fewer than one move
        except BaseException:
            stop_dirs.set()
            raise
        finally:
            dir_maker.shutdown(wait=True)

        return self._result(load_id, kind, plan, n_facts, n_issues, stage_wait)

    # -- loading into a remote lake ---------------------------------------------------------
    def _load_remote(
        self,
        load_id: str,
        kind: str,
        subs: pd.DataFrame,
        batch_winner: pd.DataFrame,
        fact_data: pa.Table,
        issue_data: pa.Table,
        t0: float,
    ) -> LoadResult:
        """``load_batch`` into a :class:`RemoteLake` (see the module docstring, "Remote lake").

        The files are written straight to their final paths inside the SQL transaction, once
        its key locks are held (in a second thread, while the SQL work runs), so no other load of
        the same partitions writes or cleans there at the same time; the commit is the switch.
        """
        lake = self.lake
        assert isinstance(lake, RemoteLake)
        timings = {"prepare": time.perf_counter() - t0}
        keys = sorted({(kind, c, p) for c, p in zip(subs["county_code"], subs["period"], strict=True)})
        partitions = sorted({(p, c) for _, c, p in keys})
        lease = _Lease(self.engine, load_id)
        lease.acquire()
        try:
            self._journal_insert(load_id, kind, partitions)
        except BaseException:
            lease.release()
            raise
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"lake-{load_id}")
        stop = threading.Event()
        writes: Future | None = None
        committed = False
        plan: _Plan | None = None
        image: tuple[pa.Table, pa.Table] | None = None
        fact_sids: set[str] = set()
        try:
            t_sql = time.perf_counter()
            with self._write_txn(keys) as conn:
                plan = self._plan(conn, kind, subs, batch_winner)
                if fact_data.num_rows:
                    fact_sids = set(pc.unique(fact_data["submission_id"]).to_pylist())
                places = {sid: (p, c) for (c, p), sid in plan.winners.items() if sid in fact_sids}
                first = threading.Event()

                def on_written(_path: str) -> None:
                    if not first.is_set():
                        first.set()
                        _maybe_fail("during_lake_swap")

                writes = writer.submit(
                    lake.write_submissions,
                    kind,
                    fact_data,
                    places,
                    tag=load_id,
                    on_written=on_written,
                    stop=stop,
                )
                image = self._before_image(conn, plan)
                _maybe_fail("after_journal")
                n_facts, n_issues, _ = self._apply_sql(
                    conn, kind, plan, fact_data, issue_data, len(fact_sids)
                )
                t_wait = time.perf_counter()
                written = writes.result()
                if set(written) != set(places):
                    raise RuntimeError(
                        f"load {load_id}: wrote {len(written)} lake files, expected {len(places)}"
                    )
                stage_wait = time.perf_counter() - t_wait
                _maybe_fail("after_lake_stage")
                _maybe_fail("during_lake_swap")  # batches with no file to write
                _maybe_fail("before_sql_commit")
            committed = True
            timings["sql_and_swap"] = time.perf_counter() - t_sql
            _maybe_fail("after_sql_commit")
        except BaseException:
            log.exception("load %s failed; undoing", load_id)
            stop.set()
            if writes is not None:
                futures_wait([writes])  # never clean a partition under a writing thread
            try:
                if committed:
                    assert plan is not None and image is not None
                    self._compensate_remote(load_id, kind, keys, plan, image, fact_sids)
                self._prune_partitions(kind, partitions)
                self._journal_delete(load_id)
            finally:
                lease.release()  # if the undo failed too, the journal row stays for recover()
            raise
        finally:
            writer.shutdown(wait=True)

        # Committed: delete the files the load superseded. A failure here leaves the load as it
        # is (committed, readers go by SQL) and its journal row for the next open to finish.
        t_finish = time.perf_counter()
        try:
            self._delete_superseded(kind, plan)
            self._journal_delete(load_id)
        except Exception:
            log.warning(
                "load %s committed; deleting its superseded lake files failed, the next open finishes it",
                load_id,
                exc_info=True,
            )
        finally:
            lease.release()
        timings["stage_wait"] = stage_wait
        timings["finish"] = time.perf_counter() - t_finish
        result = self._result(load_id, kind, plan, n_facts, n_issues, stage_wait)
        seconds = time.perf_counter() - t0
        log.info(
            "load %s (%s, lake %s): %d accepted, %d superseded, %d refused, %d fact rows in %.1f s %s",
            load_id, kind, lake.location, len(result.accepted), len(result.superseded), len(result.refused),
            result.fact_rows, seconds, {k: round(v, 2) for k, v in timings.items()},
        )  # fmt: skip
        return LoadResult(**{**result.__dict__, "seconds": seconds, "timings": timings})

    def _previous_files(self, kind: str, plan: _Plan) -> dict[tuple[str, str], str]:
        """(period, county_code) -> the file of the submission that was current before this load,
        for the partitions whose current file changes."""
        lake = self.lake
        ex = plan.existing
        acc = ex[ex["status"] == "accepted"]
        out: dict[tuple[str, str], str] = {}
        for c, p, sid in acc[["county_code", "period", "submission_id"]].itertuples(index=False, name=None):
            if (c, p) in plan.swap_keys:
                out[(p, c)] = lake.file_path(kind, p, c, sid)  # type: ignore[assignment]
        return out

    def _compensate_remote(
        self,
        load_id: str,
        kind: str,
        keys: Sequence[tuple[str, str, str]],
        plan: _Plan,
        image: tuple[pa.Table, pa.Table],
        fact_sids: set[str],
    ) -> None:
        """Undo a committed load into a remote lake: its before-image back in one transaction,
        the old fact rows read from the superseded files (still in place until the cleanup)."""
        lake = self.lake
        assert isinstance(lake, RemoteLake)
        before_subs, before_issues = image
        previous = self._previous_files(kind, plan)
        old_facts, missing = lake.read_existing(sorted(previous.values()), arrow_schema(FACT_TABLES[kind]))
        if missing:  # a current submission without fact rows has no file; one with rows must have one
            with_rows = {
                sid
                for sid, n in zip(
                    before_subs["submission_id"].to_pylist(),
                    before_subs["rows_accepted"].to_pylist(),
                    strict=True,
                )
                if n
            }
            lost = [f for f in missing if posixpath.basename(f).removesuffix(".parquet") in with_rows]
            if lost:
                raise RuntimeError(
                    f"load {load_id}: cannot restore the superseded rows, {lost[0]} is missing"
                )
        self._restore_sql(
            kind,
            load_id,
            keys=keys,
            delete_fact_ids=sorted(plan.winner_ids) + sorted(set(plan.to_supersede) | set(plan.batch_ids)),
            batch_ids=sorted(plan.batch_ids),
            touched_ids=plan.touched,
            before_subs=before_subs,
            before_issues=before_issues,
            old_facts=old_facts,
        )

    def _accepted_ids(
        self, conn: sa.Connection, kind: str, partitions: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """(period, county_code) -> the accepted submission id, for those partitions that have one."""
        wanted = set(partitions)
        s = submission
        periods = sorted({p for p, _ in wanted})
        out: dict[tuple[str, str], str] = {}
        for chunk in _chunks(sorted({c for _, c in wanted})):
            q = sa.select(s.c.period, s.c.county_code, s.c.submission_id).where(
                s.c.kind == kind,
                s.c.status == "accepted",
                s.c.period.in_(periods),
                s.c.county_code.in_(chunk),
            )
            for p, c, sid in conn.execute(q).all():
                if (p, c) in wanted:
                    out[(p, c)] = sid
        return out

    def _delete_superseded(self, kind: str, plan: _Plan) -> None:
        """After the commit: delete the files of the submissions that were current before it, unless
        one is current again. Under the key locks, so no load of those partitions runs meanwhile."""
        lake = self.lake
        assert isinstance(lake, RemoteLake)
        previous = self._previous_files(kind, plan)
        if not previous:
            return
        with self._write_txn([(kind, c, p) for p, c in previous]) as conn:
            accepted = self._accepted_ids(conn, kind, previous)
            doomed = [
                f
                for part, f in sorted(previous.items())
                if posixpath.basename(f) != f"{accepted.get(part)}.parquet"
            ]
            lake.delete(doomed[:1])
            _maybe_fail("during_lake_cleanup")
            lake.delete(doomed[1:])

    def _prune_partitions(self, kind: str, partitions: Sequence[tuple[str, str]]) -> int:
        """Leave in each (period, county_code) partition only the file of its accepted submission
        (as SQL says, under the key locks): the repair after a failed or killed load, whatever
        step it stopped at. Returns how many files it deleted."""
        lake = self.lake
        assert isinstance(lake, RemoteLake)
        if not partitions:
            return 0
        with self._write_txn([(kind, c, p) for p, c in partitions]) as conn:
            accepted = self._accepted_ids(conn, kind, partitions)
            listing = lake.list_partitions(kind, partitions)
            doomed: list[str] = []
            emptied: list[tuple[str, str]] = []
            for part, files in listing.items():
                keep = f"{accepted[part]}.parquet" if part in accepted else None
                extra = [f for f in files if posixpath.basename(f) != keep]
                doomed.extend(extra)
                if extra and len(extra) == len(files):
                    emptied.append(part)
            deleted = lake.delete(doomed)
            for p, c in emptied:
                lake.remove_empty_partition(kind, p, c)
        if deleted:
            log.warning("lake %s: deleted %d files no accepted submission owns", lake.location, deleted)
        return deleted

    def _journal_insert(self, load_id: str, kind: str, partitions: Sequence[tuple[str, str]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                lake_journal.insert().values(
                    load_id=load_id,
                    kind=kind,
                    partitions=json.dumps([list(p) for p in partitions]),
                    started_at=datetime.now(UTC),
                    host=socket.gethostname()[:255],
                    pid=os.getpid(),
                )
            )

    def _journal_delete(self, load_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(lake_journal.delete().where(lake_journal.c.load_id == load_id))

    def _recover_remote(self) -> list[str]:
        """Repair the remote-lake loads whose process died: prune their partitions, drop their rows."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(lake_journal.name):
                return []
            rows = conn.execute(sa.select(lake_journal.c.load_id).order_by(lake_journal.c.load_id)).all()
        repaired: list[str] = []
        for (load_id,) in rows:
            lease = _Lease(self.engine, load_id)
            if not lease.acquire(blocking=False):
                continue  # a live load, in this process or another, on this machine or another
            try:
                with self.engine.connect() as conn:
                    row = conn.execute(
                        sa.select(lake_journal).where(lake_journal.c.load_id == load_id)
                    ).first()
                if row is None:  # finished meanwhile
                    continue
                log.warning(
                    "recovering load %s into lake %s (started %s on %s, pid %s)",
                    load_id, self.lake.location, row.started_at, row.host, row.pid,
                )  # fmt: skip
                self._prune_partitions(row.kind, [tuple(p) for p in json.loads(row.partitions)])
                self._journal_delete(load_id)
                repaired.append(load_id)
            finally:
                lease.release()
        return repaired

    # -- undo, finish, recover ------------------------------------------------------------
    def _marker_exists(self, load_id: str) -> bool:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(warehouse_load.name):
                return False  # no tables yet: nothing can have committed
            q = sa.select(warehouse_load.c.load_id).where(warehouse_load.c.load_id == load_id)
            return conn.execute(q).first() is not None

    def _undo_files(self, journal: _Journal) -> None:
        dirs = set()
        for src, dst in reversed(journal.data.get("moves", [])):
            s_abs, d_abs = self.lake.absolute(src), self.lake.absolute(dst)
            if d_abs.exists() and not s_abs.exists():
                lakemod.move(d_abs, s_abs)
            dirs.add(d_abs.parent)
        for d in dirs:
            lakemod.prune_empty_dirs(d, self.lake.root)

    def _compensate_sql(self, journal: _Journal) -> None:
        """Write the before-image back after a committed load (one transaction)."""
        data = journal.data
        lake = self._local_lake
        trashed = [lake.absolute(dst) for src, dst in data.get("moves", []) if dst.startswith("_trash/")]
        self._restore_sql(
            data["kind"],
            journal.load_id,
            keys=[tuple(k) for k in data.get("keys", [])],
            delete_fact_ids=data.get("inserted_fact_ids", []) + data.get("deleted_fact_ids", []),
            batch_ids=data.get("batch_ids", []),
            touched_ids=data.get("touched_ids", []),
            before_subs=pq.read_table(journal.image_dir / "submission.parquet"),
            before_issues=pq.read_table(journal.image_dir / "dq_issue.parquet"),
            old_facts=lake.read(trashed, arrow_schema(FACT_TABLES[data["kind"]])),
        )

    def _restore_sql(
        self,
        kind: str,
        load_id: str,
        *,
        keys: Sequence[tuple[str, str, str]],
        delete_fact_ids: Sequence[str],
        batch_ids: Sequence[str],
        touched_ids: Sequence[str],
        before_subs: pa.Table,
        before_issues: pa.Table,
        old_facts: pa.Table,
    ) -> None:
        """Put back the rows a committed load replaced (one transaction): the before-image of
        ``submission`` and ``dq_issue`` and the fact rows of the lake files it superseded."""
        fact_table = FACT_TABLES[kind]
        s = submission
        with self._write_txn(keys) as conn:
            # The fact rows of delete_fact_ids: the rows under the keys of those that are accepted
            # (the others have none; see matching_keys).
            accepted: list[tuple[str, str]] = []
            for in_ids in _matching(conn, s.c.submission_id, sorted(set(delete_fact_ids))):
                q = sa.select(s.c.county_code, s.c.period).where(in_ids, s.c.status == "accepted")
                accepted.extend((c, p) for c, p in conn.execute(q))
            for at_keys in matching_keys(conn, fact_table, accepted):
                conn.execute(fact_table.delete().where(at_keys))
            for chunk in _chunks(list(batch_ids)):
                conn.execute(dq_issue.delete().where(dq_issue.c.submission_id.in_(chunk)))
            for chunk in _chunks(list(touched_ids)):
                conn.execute(submission.delete().where(submission.c.submission_id.in_(chunk)))
            records = _records(before_subs.to_pandas(), [c.name for c in submission.columns])
            if records:
                conn.execute(submission.insert(), records)
            bulk_insert(conn, dq_issue, before_issues)
            bulk_insert(conn, fact_table, old_facts)
            conn.execute(warehouse_load.delete().where(warehouse_load.c.load_id == load_id))
            _mark_marts(conn, min((p for _, _, p in keys), default=None))

    def _undo(self, journal: _Journal, *, committed: bool) -> None:
        if committed:
            journal.write(state="compensating")
            self._compensate_sql(journal)
        self._undo_files(journal)
        lakemod.remove_tree(self.lake.staging_dir(journal.load_id))
        lakemod.remove_tree(self.lake.trash_dir(journal.load_id))
        journal.remove()

    def _finish(self, journal: _Journal) -> None:
        lakemod.remove_tree(self.lake.trash_dir(journal.load_id))
        lakemod.remove_tree(self.lake.staging_dir(journal.load_id))
        with self.engine.begin() as conn:
            conn.execute(warehouse_load.delete().where(warehouse_load.c.load_id == journal.load_id))
        journal.remove()

    def recover(self) -> list[str]:
        """Repair loads a killed process left behind (see the module docstring). Returns their ids."""
        if isinstance(self.lake, RemoteLake):
            repaired = self._recover_remote()
            if self.dialect == "sqlite" and (db_file := _sqlite_file_of(self.engine)) is not None:
                _remove_stale_stages(db_file)
            return repaired
        root = self.lake.journal_root
        repaired = []
        if not root.is_dir():
            return repaired
        for path in sorted(root.glob("*.json")):
            journal = _Journal(root, path.stem)
            if not journal.acquire(blocking=False):
                continue  # a live load in another process or thread
            try:
                if not journal.load():  # finished meanwhile
                    with contextlib.suppress(FileNotFoundError):
                        journal.lock_path.unlink()
                    continue
                marker = self._marker_exists(journal.load_id)
                state = journal.data.get("state")
                log.warning(
                    "recovering load %s (state %s, committed marker %s)", journal.load_id, state, marker
                )
                if state == "compensating":
                    if marker:
                        self._compensate_sql(journal)
                    self._undo(journal, committed=False)
                elif marker or state == "committed":
                    self._finish(journal)
                else:
                    self._undo(journal, committed=False)
                repaired.append(journal.load_id)
            finally:
                journal.release()
        if self.dialect == "sqlite" and (db_file := _sqlite_file_of(self.engine)) is not None:
            _remove_stale_stages(db_file)
        # Staging or trash directories without a journal belong to no live load.
        for base in (self.lake.staging_root, self.lake.trash_root):
            if base.is_dir():
                for d in base.iterdir():
                    if not (root / f"{d.name}.json").exists():
                        lakemod.remove_tree(d)
        return repaired

    # -- marts ----------------------------------------------------------------------------
    def rebuild_marts(
        self, from_period: str | None = None, *, only_if_changed: bool = False
    ) -> dict[str, int]:
        """Recompute the county, city and funding marts from ``from_period`` (or the first) on.

        The rebuild also covers every period marked out of date since the last rebuild (a load
        whose own rebuild never ran, a plan reload: see ``mart_dirty``) and clears those marks.
        ``only_if_changed``: do nothing when there is no mark (an unchanged nightly rerun)."""
        from warehouse import ledger, marts

        # One rebuild at a time: on PostgreSQL two concurrent rebuilds (two ingests of different
        # counties finishing together) would each delete, then both insert -> duplicate mart keys.
        with self._write_txn([("marts", "*", "*")]) as conn:
            marks = conn.execute(sa.select(mart_dirty.c.mark_id, mart_dirty.c.period)).all()
            if only_if_changed and not marks:
                log.info("marts: no load or reference change since the last rebuild; kept as they are")
                return {}
            start = from_period
            if marks:
                marked = [p for _, p in marks]
                if any(p is None for p in marked):
                    start = None  # reference data changed: every period
                elif start is not None:
                    start = min(start, *marked)
            counts = marts.rebuild(conn, start)
            counts.update(ledger.rebuild(conn, start, self._thresholds(), self.lake))
            ids = [i for i, _ in marks]
            for chunk in _chunks(ids):
                conn.execute(mart_dirty.delete().where(mart_dirty.c.mark_id.in_(chunk)))
            return counts

    def _thresholds(self) -> Any:
        """The exception thresholds of the ledger's rules: the pack's (``GAIBAO_THRESHOLDS``)."""
        from reports.config import load_thresholds

        return load_thresholds(getattr(self._settings, "thresholds", None))


def _mark_marts(conn: sa.Connection, period: str | None) -> None:
    """Mark the marts out of date from ``period`` on (None: every period), in ``conn``'s
    transaction; unless a mark already covers it (so loading the same batch twice changes no row)."""
    m = mart_dirty.c
    cover = m.period.is_(None) if period is None else sa.or_(m.period.is_(None), m.period <= period)
    if conn.execute(sa.select(m.mark_id).where(cover).limit(1)).first() is None:
        conn.execute(mart_dirty.insert().values(period=period, marked_at=datetime.now(UTC)))


def dq_issue_schema_empty() -> pa.Table:
    return arrow_schema(dq_issue).empty_table()
