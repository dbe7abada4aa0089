"""The Parquet lake: ``<root>/<kind>/period=YYYY-MM/county=<code>/<submission_id>.parquet`` (zstd).

Only the current accepted submission of each (kind, period, county) has a file (for a remote
lake: once the load that replaced it has cleaned up). The root is a local folder (default
``$GAIBAO_HOME/lake``; a ``file://`` URL is one too) or an fsspec URL (``GAIBAO_LAKE_URL``:
``sftp://user@host:port/path``, ``s3://bucket/prefix``, ``memory://name``).

- :class:`Lake`, a local folder: a batch is written one file per submission (a few threads)
  into ``<root>/_staging/<load_id>/`` and moved into place with POSIX renames by the
  warehouse's load (``warehouse.store``), which owns the journal (``<root>/_journal``, flock).
- :class:`RemoteLake`, an fsspec filesystem: no rename to rely on for a swap, no flock. Each
  submission's file is written straight to its final path (a unique name: the same submission
  id always holds the same rows), the SQL commit is the only switch, and the superseded files
  are deleted afterwards; the journal is the ``lake_journal`` table (see ``warehouse.store``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import posixpath
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

log = logging.getLogger(__name__)

_PERIOD_RE = re.compile(r"^\d{4}-\d{2}$")
_COUNTY_RE = re.compile(r"^\d{6}$")
_SID_RE = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")
_KIND_RE = re.compile(r"^[a-z_]{1,32}$")

# How every lake file is written (both lakes): zstd, plain encoding, no column statistics. A lake
# file holds one submission (a few hundred rows, or one row), so the per-file work dominates: on a
# national month (2,850 submissions) dropping dictionaries and statistics made the writing far
# cheaper and the files smaller (figures: the commit that set this). No reader needs either: every
# read takes whole columns of whole files (no predicate pushdown) and casts to the table's schema.
PARQUET_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": False,
    "write_statistics": False,
}


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"invalid {what} for a lake path: {value!r}")
    return value


def _check_fact_keys(table: pa.Table) -> None:
    for name in ("period", "county_code", "submission_id"):
        if table[name].null_count:
            raise ValueError(f"fact rows with a null {name}")


def _submission_runs(table: pa.Table) -> tuple[pa.Table, list[tuple[str, int, int]]]:
    """``table`` with each submission's rows together, and (submission_id, offset, length) of each.

    A batch usually holds each submission's rows together already: then the rows keep their
    order and each file is a zero-copy slice. Otherwise the table is sorted (a copy) by
    submission id and row number, so that each submission still gets one file in row order.
    """
    sids = table["submission_id"].combine_chunks()
    runs = pc.run_end_encode(sids)
    if len(runs.run_ends) != pc.count_distinct(sids).as_py():
        table = table.sort_by([("submission_id", "ascending"), ("row_number", "ascending")])
        runs = pc.run_end_encode(table["submission_id"].combine_chunks())
    ends = runs.run_ends.to_pylist()
    starts = [0, *ends[:-1]]
    return table, [
        (sid, start, end - start)
        for sid, start, end in zip(runs.values.to_pylist(), starts, ends, strict=True)
    ]


def arrow_type(col: sa.Column) -> pa.DataType:
    t = col.type
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if isinstance(t, sa.Integer):
        return pa.int64()
    if isinstance(t, sa.Float):
        return pa.float64()
    if isinstance(t, sa.DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(t, sa.Date):
        return pa.date32()
    return pa.string()


def arrow_schema(table: sa.Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c)) for c in table.columns])


def _to_array(series: pd.Series, typ: pa.DataType) -> pa.Array:
    if pa.types.is_date32(typ):
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            values = series.dt.tz_localize(None) if getattr(series.dt, "tz", None) is not None else series
            arr = pa.array(values, from_pandas=True)
            return pc.cast(arr, pa.timestamp("ms"), safe=False).cast(typ, safe=False)
        if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
            parsed = pd.to_datetime(series, errors="coerce", format="mixed")
            return pa.array(parsed, from_pandas=True).cast(pa.timestamp("ms")).cast(typ, safe=False)
        return pa.array(series, from_pandas=True).cast(typ)
    if pa.types.is_timestamp(typ):
        values = pd.to_datetime(series, utc=True, errors="coerce")
        return pa.array(values, from_pandas=True).cast(typ)
    if pa.types.is_string(typ):
        try:  # pandas string columns convert without Python objects; NaN/None become null
            arr = pa.array(series, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed objects: text them one by one
            arr = pa.array(series.map(lambda v: None if v is None or v != v else str(v)), type=pa.string())
        if pa.types.is_null(arr.type):
            return pa.nulls(len(series), type=typ)
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            arr = pa.array(series.map(lambda v: None if v is None or v != v else str(v)), type=pa.string())
        return arr if arr.type == typ else arr.cast(typ)
    if pa.types.is_boolean(typ):
        values = series.astype(object).where(series.notna(), None)
        return pa.array(values, type=pa.bool_(), from_pandas=True)
    arr = pa.array(series, from_pandas=True)
    if pa.types.is_integer(typ) and pa.types.is_floating(arr.type):
        return pc.cast(arr, typ, safe=True)  # refuses 1.5 -> 1
    return arr.cast(typ)


def frame_to_arrow(frame: pd.DataFrame, table: sa.Table) -> pa.Table:
    """``frame`` as an Arrow table with exactly ``table``'s columns and types (absent ones null)."""
    schema = arrow_schema(table)
    arrays = []
    for field in schema:
        if field.name in frame.columns:
            arrays.append(_to_array(frame[field.name], field.type))
        else:
            arrays.append(pa.nulls(len(frame), type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


class Lake:
    """A lake in a local (or mounted) folder: paths and Parquet I/O; the load protocol (staging,
    POSIX renames, the flock journal) lives in ``warehouse.store``."""

    is_local = True
    # Threads that write a batch's staging files (as for reading: measured, the commit that set it).
    stage_threads = min(4, os.cpu_count() or 1)

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def close(self) -> None:
        pass

    # -- layout ---------------------------------------------------------------------------
    @property
    def staging_root(self) -> Path:
        return self.root / "_staging"

    @property
    def trash_root(self) -> Path:
        return self.root / "_trash"

    @property
    def journal_root(self) -> Path:
        return self.root / "_journal"

    def partition_dir(self, kind: str, period: str, county_code: str) -> Path:
        return (
            self.root
            / _check(kind, _KIND_RE, "kind")
            / f"period={_check(period, _PERIOD_RE, 'period')}"
            / f"county={_check(county_code, _COUNTY_RE, 'county_code')}"
        )

    def file_path(self, kind: str, period: str, county_code: str, submission_id: str) -> Path:
        return (
            self.partition_dir(kind, period, county_code)
            / f"{_check(submission_id, _SID_RE, 'submission_id')}.parquet"
        )

    def partition_files(self, kind: str, period: str, county_code: str) -> list[Path]:
        d = self.partition_dir(kind, period, county_code)
        return sorted(d.glob("*.parquet")) if d.is_dir() else []

    def staging_dir(self, load_id: str) -> Path:
        return self.staging_root / _check(load_id, _SID_RE, "load_id")

    def trash_dir(self, load_id: str) -> Path:
        return self.trash_root / _check(load_id, _SID_RE, "load_id")

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    # Lake-relative paths as plain strings: a national batch moves thousands of files, and building
    # them as Path objects (file_path, relative, absolute) cost more than the renames themselves.
    def relative_file(self, kind: str, period: str, county_code: str, submission_id: str) -> str:
        """:meth:`file_path` relative to the root, as a string."""
        return (
            f"{_check(kind, _KIND_RE, 'kind')}/period={_check(period, _PERIOD_RE, 'period')}"
            f"/county={_check(county_code, _COUNTY_RE, 'county_code')}"
            f"/{_check(submission_id, _SID_RE, 'submission_id')}.parquet"
        )

    def staged_relative(self, load_id: str, kind: str, submission_ids: Iterable[str]) -> dict[str, str]:
        """:meth:`staged_paths` relative to the root, as strings."""
        base = f"_staging/{_check(load_id, _SID_RE, 'load_id')}/{_check(kind, _KIND_RE, 'kind')}"
        return {sid: f"{base}/{_check(sid, _SID_RE, 'submission_id')}.parquet" for sid in submission_ids}

    def list_partitions(
        self, kind: str, partitions: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], list[str]]:
        """The files of each (period, county_code) partition, lake-relative and sorted, as
        :meth:`partition_files` finds them (every entry named ``*.parquet``); partitions without a
        folder are left out. One ``scandir`` per partition, strings only."""
        root = os.fspath(self.root)
        _check(kind, _KIND_RE, "kind")
        out: dict[tuple[str, str], list[str]] = {}
        for period, county_code in partitions:
            rel = (
                f"{kind}/period={_check(period, _PERIOD_RE, 'period')}"
                f"/county={_check(county_code, _COUNTY_RE, 'county_code')}"
            )
            try:
                with os.scandir(f"{root}/{rel}") as entries:
                    names = sorted(e.name for e in entries if e.name.endswith(".parquet"))
            except (FileNotFoundError, NotADirectoryError):
                continue
            out[(period, county_code)] = [f"{rel}/{name}" for name in names]
        return out

    def absolute(self, rel: str) -> Path:
        """A journal's lake-relative path as a path under the root (never outside it)."""
        parts = rel.split("/")
        if rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"path escapes the lake: {rel!r}")
        return self.root.joinpath(*parts)

    # -- writing --------------------------------------------------------------------------
    def staged_paths(self, load_id: str, kind: str, submission_ids: Iterable[str]) -> dict[str, Path]:
        """Where :meth:`stage` puts each submission's file (known before it has written them)."""
        out = self.staging_dir(load_id) / _check(kind, _KIND_RE, "kind")
        return {sid: out / f"{_check(sid, _SID_RE, 'submission_id')}.parquet" for sid in submission_ids}

    def stage(self, load_id: str, kind: str, table: pa.Table) -> dict[str, Path]:
        """Write ``table`` (fact rows of many submissions) to staging, one file per submission.

        Files go flat into ``_staging/<load_id>/<kind>/`` as ``<submission_id>.parquet`` (no
        directory per submission: directory operations dominate at 2,850 submissions), each a
        slice of ``table`` written by ``pq.write_table`` in :attr:`stage_threads` threads
        (pyarrow releases the GIL while it encodes and writes). Returns ``{submission_id: file}``.
        """
        out = self.staging_dir(load_id) / _check(kind, _KIND_RE, "kind")
        out.mkdir(parents=True, exist_ok=True)
        if table.num_rows == 0:
            return {}
        _check_fact_keys(table)
        table, runs = _submission_runs(table)
        jobs = [
            (out / f"{_check(sid, _SID_RE, 'submission_id')}.parquet", start, length)
            for sid, start, length in runs
        ]

        def one(job: tuple[Path, int, int]) -> None:
            path, start, length = job
            with pa.OSFile(str(path), "wb") as sink:  # measured ~10% cheaper than a path
                pq.write_table(table.slice(start, length), sink, **PARQUET_WRITE_OPTIONS)

        threads = min(self.stage_threads, len(jobs))
        if threads < 2:
            for job in jobs:
                one(job)
        else:
            pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lake-stage")
            try:
                for _ in pool.map(one, jobs):
                    pass
            finally:  # a failed file stops the others; none is still writing when this returns
                pool.shutdown(wait=True, cancel_futures=True)
        return {sid: path for (sid, _, _), (path, _, _) in zip(runs, jobs, strict=True)}

    # -- reading --------------------------------------------------------------------------
    def read(self, paths: Iterable[Path], schema: pa.Schema) -> pa.Table:
        """The rows of ``paths``, in that order. Many small files: a small thread pool of
        single-threaded reads is the fastest measured way (pyarrow's own threading costs more
        than it gives on files of a few hundred rows)."""
        names = [str(p) for p in paths]
        if not names:
            return schema.empty_table()

        def one(path: str) -> pa.Table:
            return pq.ParquetFile(path).read(use_threads=False).select(schema.names).cast(schema)

        if len(names) < 8:
            return pa.concat_tables([one(p) for p in names])
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            return pa.concat_tables(list(pool.map(one, names)))

    def read_existing(self, paths: Iterable[Path], schema: pa.Schema) -> tuple[pa.Table, list[Path]]:
        """The rows of those of ``paths`` that exist (in order), and the ones that do not."""
        present: list[Path] = []
        missing: list[Path] = []
        for p in paths:
            (present if p.is_file() else missing).append(p)
        return self.read(present, schema), missing

    def open_parquet(self, path: Path, **kwargs: Any) -> pq.ParquetFile:
        return pq.ParquetFile(path, **kwargs)


def move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.replace(dst)


def make_dirs(root: Path, rel_dirs: Iterable[str], stop: threading.Event | None = None) -> None:
    """Create the lake-relative folders ``rel_dirs`` under ``root`` (parents too; existing ones are
    left alone), in order, until ``stop`` is set. A load creates its destination folders with this
    ahead of its renames, while its COPY runs: one ``mkdir`` costs about as much as 10 renames."""
    base = os.fspath(root)
    for rel in rel_dirs:
        if stop is not None and stop.is_set():
            return
        path = f"{base}/{rel}"
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except FileNotFoundError:  # the first folder of a new period, kind or lake
            os.makedirs(path, exist_ok=True)


def rename(src: str, dst: str) -> None:
    """Move ``src`` to ``dst`` (replacing it), making ``dst``'s folder if it is not there (it was
    made ahead of time, and a concurrent repair may have pruned it as empty since)."""
    try:
        os.replace(src, dst)
    except FileNotFoundError:
        if not os.path.lexists(src):
            raise
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)


def prune_empty_dirs(start: Path, stop: Path) -> None:
    """Remove ``start`` and its parents while they are empty, up to (not including) ``stop``."""
    d = start
    while d != stop and d.is_relative_to(stop):
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# -- the lake on an fsspec filesystem ---------------------------------------------------------

# Object stores write an object whole or not at all (an S3 PUT, a multipart upload completed at
# the end): a file goes straight to its name there. Elsewhere (SFTP, a disk through fsspec) it is
# written to a temporary name in its folder and renamed into place (SFTP: the posix-rename
# extension, which replaces the target atomically on OpenSSH), so that neither a reader nor a crash
# ever meets half a file under a submission's name.
_ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})
TMP_PREFIX = ".tmp-"


def _protocols(fs: Any) -> set[str]:
    proto = fs.protocol
    return {proto} if isinstance(proto, str) else set(proto)


class RemoteLake:
    """The lake on an fsspec filesystem (``sftp://``, ``s3://``, ``memory://``, ...).

    Same layout and names as :class:`Lake`, no staging or trash folders: ``warehouse.store``
    writes each submission's file straight to its final path before the SQL commit and deletes
    the superseded files after it (see its module docstring). Paths are strings on the
    filesystem. The filesystem (an SSH connection, an S3 client) opens on first use; file
    operations run in ``threads`` threads (many small files: latency, not bandwidth).
    """

    is_local = False

    def __init__(
        self,
        location: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        fs: Any = None,
        threads: int = 8,
    ) -> None:
        from warehouse.archive import _display_url

        self._url = location
        self._options = dict(storage_options or {})
        self._fs = fs
        self._owns_fs = fs is None
        self._fs_lock = threading.Lock()
        self.threads = max(1, threads)
        if fs is None:
            import fsspec

            protocol = location.split("://", 1)[0].lower() if "://" in location else "file"
            if protocol == "ssh":
                protocol = "sftp"
            try:
                cls = fsspec.get_filesystem_class(protocol)
            except ImportError as exc:
                raise ImportError(
                    f"the lake URL {_display_url(location)} needs an fsspec backend that is not installed: {exc}"
                ) from exc
        else:
            cls = type(fs)
        self.root = cls._strip_protocol(location).rstrip("/") or "/"
        self._display = _display_url(location) if "://" in location else location

    @property
    def location(self) -> str:
        """Where the lake is (a URL without password), for logs and messages."""
        return self._display

    @property
    def fs(self) -> Any:
        if self._fs is None:
            with self._fs_lock:
                if self._fs is None:
                    from warehouse.archive import open_filesystem

                    self._fs, _ = open_filesystem(self._url, self._options, what="lake")
        return self._fs

    @functools.cached_property
    def _atomic_put(self) -> bool:
        return bool(_protocols(self.fs) & _ATOMIC_PUT_PROTOCOLS)

    def close(self) -> None:
        """Drop the filesystem (its connection closes when it is collected); reopens on use."""
        if self._owns_fs:
            self._fs = None
            self.__dict__.pop("_atomic_put", None)

    def __repr__(self) -> str:
        return f"RemoteLake({self.location!r})"

    # -- layout ---------------------------------------------------------------------------
    def partition_dir(self, kind: str, period: str, county_code: str) -> str:
        return (
            f"{self.root.rstrip('/')}/{_check(kind, _KIND_RE, 'kind')}"
            f"/period={_check(period, _PERIOD_RE, 'period')}"
            f"/county={_check(county_code, _COUNTY_RE, 'county_code')}"
        )

    def file_path(self, kind: str, period: str, county_code: str, submission_id: str) -> str:
        return (
            f"{self.partition_dir(kind, period, county_code)}/"
            f"{_check(submission_id, _SID_RE, 'submission_id')}.parquet"
        )

    # -- writing --------------------------------------------------------------------------
    def write_submissions(
        self,
        kind: str,
        table: pa.Table,
        places: Mapping[str, tuple[str, str]],
        *,
        tag: str,
        on_written: Callable[[str], None] | None = None,
        stop: threading.Event | None = None,
    ) -> dict[str, str]:
        """Write each submission's rows of ``table`` to its final path; ``{submission_id: path}``.

        ``places`` maps the submissions to write to their (period, county_code); rows of other
        submissions are ignored. A file already at a path is replaced (it holds the same rows:
        the name is the submission id). ``tag`` names the temporary files (the load id);
        ``on_written`` is called after each file, ``stop`` ends the writing early.
        """
        _check(kind, _KIND_RE, "kind")
        if table.num_rows == 0 or not places:
            return {}
        _check_fact_keys(table)
        sid_col = table["submission_id"]
        if not set(pc.unique(sid_col).to_pylist()) <= set(places):
            table = table.filter(pc.is_in(sid_col, value_set=pa.array(sorted(places), pa.string())))
            if table.num_rows == 0:
                return {}
        table, runs = _submission_runs(table)
        jobs = [(sid, start, length, self.file_path(kind, *places[sid], sid)) for sid, start, length in runs]
        stop = stop or threading.Event()

        def one(job: tuple[str, int, int, str]) -> tuple[str, str] | None:
            if stop.is_set():
                return None
            sid, start, length, path = job
            sink = pa.BufferOutputStream()
            pq.write_table(table.slice(start, length), sink, **PARQUET_WRITE_OPTIONS)
            self._put(path, sink.getvalue(), tag)
            return sid, path

        written: dict[str, str] = {}
        pool = ThreadPoolExecutor(max_workers=min(self.threads, len(jobs)), thread_name_prefix="lake-put")
        try:
            for done in pool.map(one, jobs):
                if done is None:
                    break
                written[done[0]] = done[1]
                if on_written is not None:
                    on_written(done[1])
        except BaseException:
            stop.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if stop.is_set() and len(written) < len(jobs):
            raise RuntimeError(f"writing the lake files was stopped after {len(written)} of {len(jobs)}")
        return written

    def _put(self, path: str, body: pa.Buffer, tag: str) -> None:
        fs = self.fs
        parent = posixpath.dirname(path)
        if self._atomic_put:
            self._in_folder(parent, lambda: fs.pipe_file(path, body.to_pybytes()))
            return
        tmp = f"{parent}/{TMP_PREFIX}{tag}-{uuid.uuid4().hex[:8]}-{posixpath.basename(path)}"

        def write() -> None:
            with fs.open(tmp, "wb") as fh:
                fh.write(body)

        try:
            self._in_folder(parent, write)
            fs.mv(tmp, path)
        except BaseException:
            try:
                fs.rm_file(tmp)
            except FileNotFoundError:
                pass
            except Exception:  # noqa: BLE001 - a leftover temp file must not hide the real error
                log.warning("could not remove the temporary lake file %s", tmp, exc_info=True)
            raise

    def _in_folder(self, folder: str, write: Callable[[], None]) -> None:
        """``write``, creating ``folder`` first when it does not exist yet (a new partition)."""
        try:
            write()
        except FileNotFoundError:
            try:  # usually only the partition's own folder is new: one request
                self.fs.mkdir(folder, create_parents=False)
            except FileExistsError:
                pass
            except Exception:  # noqa: BLE001 - its parents are new too (a new period, a new lake)
                self.fs.makedirs(folder, exist_ok=True)
            write()

    # -- listing and deleting -------------------------------------------------------------
    def partition_files(self, kind: str, period: str, county_code: str) -> list[str]:
        """Every file in the partition's folder (temporary files too), sorted."""
        try:
            entries = self.fs.ls(self.partition_dir(kind, period, county_code), detail=True)
        except FileNotFoundError:
            return []
        return sorted(e["name"] for e in entries if e.get("type") == "file")

    def list_partitions(
        self, kind: str, partitions: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], list[str]]:
        """:meth:`partition_files` of many (period, county_code) partitions."""
        keys = sorted(set(partitions))
        if len(keys) < 2:
            return {k: self.partition_files(kind, *k) for k in keys}
        with ThreadPoolExecutor(max_workers=min(self.threads, len(keys))) as pool:
            return dict(zip(keys, pool.map(lambda k: self.partition_files(kind, *k), keys), strict=True))

    def delete(self, paths: Iterable[str]) -> int:
        """Delete ``paths`` (absent ones are skipped); returns how many were there."""
        paths = list(paths)

        def one(path: str) -> bool:
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                return False
            return True

        if not paths:
            return 0
        pool = ThreadPoolExecutor(max_workers=min(self.threads, len(paths)), thread_name_prefix="lake-rm")
        try:
            count = sum(pool.map(one, paths))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return count

    def remove_empty_partition(self, kind: str, period: str, county_code: str) -> None:
        """Remove the partition's folder if it is empty (a failed first load of a county)."""
        # not empty, absent, or no folders at all (object stores): nothing to do
        with contextlib.suppress(Exception):
            self.fs.rmdir(self.partition_dir(kind, period, county_code))

    # -- reading --------------------------------------------------------------------------
    def open_parquet(self, path: str, **kwargs: Any) -> pq.ParquetFile:
        """One lake file, fetched whole in one request (lake files are small)."""
        return pq.ParquetFile(pa.BufferReader(self.fs.cat_file(path)), **kwargs)

    def _read_one(self, path: str, schema: pa.Schema) -> pa.Table:
        return self.open_parquet(path).read(use_threads=False).select(schema.names).cast(schema)

    def read(self, paths: Iterable[str], schema: pa.Schema) -> pa.Table:
        """The rows of ``paths``, in that order (``FileNotFoundError`` when one is absent)."""
        table, missing = self.read_existing(paths, schema)
        if missing:
            raise FileNotFoundError(f"lake file {missing[0]} is missing")
        return table

    def read_existing(self, paths: Iterable[str], schema: pa.Schema) -> tuple[pa.Table, list[str]]:
        """The rows of those of ``paths`` that exist (in order), and the ones that do not."""
        names = [str(p) for p in paths]
        if not names:
            return schema.empty_table(), []

        def one(path: str) -> pa.Table | None:
            try:
                return self._read_one(path, schema)
            except FileNotFoundError:
                return None

        if len(names) < 2:
            parts = [one(p) for p in names]
        else:
            with ThreadPoolExecutor(max_workers=min(self.threads, len(names))) as pool:
                parts = list(pool.map(one, names))
        missing = [p for p, t in zip(names, parts, strict=True) if t is None]
        found = [t for t in parts if t is not None]
        return (pa.concat_tables(found) if found else schema.empty_table()), missing


def open_lake(location: str | Path, storage_options: Mapping[str, Any] | None = None) -> Lake | RemoteLake:
    """A :class:`Lake` for a folder or a ``file://`` URL, a :class:`RemoteLake` for other URLs."""
    from warehouse.archive import is_local_location

    location = str(location)
    if is_local_location(location):
        if location.lower().startswith("file://"):
            location = location[len("file://") :]
        return Lake(Path(location))
    return RemoteLake(location, storage_options=storage_options)


def lake_from_settings(settings: Any) -> Lake | RemoteLake:
    """The lake ``GAIBAO_LAKE_URL`` names (default ``$GAIBAO_HOME/lake``)."""
    from gaibao.settings import parse_storage_options

    options = parse_storage_options(settings.lake_storage_options, setting="GAIBAO_LAKE_STORAGE_OPTIONS")
    return open_lake(settings.lake_location, options)
