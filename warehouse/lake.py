"""The Parquet lake: ``lake/<kind>/period=YYYY-MM/county=<code>/<submission_id>.parquet`` (zstd).

Only the current accepted submission of each (kind, period, county) has a file. A batch is
written in one ``pyarrow.dataset.write_dataset`` call into ``lake/_staging/<load_id>/`` and then
moved into place by the warehouse's load (``warehouse.store``), which owns the journal.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import sqlalchemy as sa

log = logging.getLogger(__name__)

_PERIOD_RE = re.compile(r"^\d{4}-\d{2}$")
_COUNTY_RE = re.compile(r"^\d{6}$")
_SID_RE = re.compile(r"^[0-9a-zA-Z_-]{1,64}$")
_KIND_RE = re.compile(r"^[a-z_]{1,32}$")

# Staging partition field: a copy of submission_id, so the data files keep the original column.
_S = "__sid"


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise ValueError(f"invalid {what} for a lake path: {value!r}")
    return value


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
    """Paths and Parquet I/O of the lake; the load protocol lives in ``warehouse.store``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

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
        """Write ``table`` (fact rows of many submissions) to staging in one pyarrow call.

        Files go flat into ``_staging/<load_id>/<kind>/`` as ``<submission_id>.parquet`` (the
        writer's filename partitioning, then a rename): no directory per submission, since
        directory operations dominate at 2,850 submissions. Returns ``{submission_id: file}``.
        """
        out = self.staging_dir(load_id) / _check(kind, _KIND_RE, "kind")
        out.mkdir(parents=True, exist_ok=True)
        if table.num_rows == 0:
            return {}
        for name in ("period", "county_code", "submission_id"):
            if table[name].null_count:
                raise ValueError(f"fact rows with a null {name}")
        keyed = table.append_column(_S, table["submission_id"])
        runs = pc.run_end_encode(table["submission_id"].combine_chunks()).run_ends
        if len(runs) != pc.count_distinct(table["submission_id"]).as_py():
            # rows of one submission are not contiguous: sort (a copy), so each gets one file
            keyed = keyed.sort_by([(_S, "ascending"), ("row_number", "ascending")])
        ds.write_dataset(
            keyed,
            out,
            format="parquet",
            partitioning=ds.partitioning(pa.schema([(_S, pa.string())]), flavor="filename"),
            file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
            basename_template="part-{i}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            max_partitions=1_000_000,
            max_open_files=512,
            max_rows_per_group=1 << 20,
            preserve_order=True,  # rows keep the file's order inside each submission
        )
        parts: dict[str, list[Path]] = {}
        for f in out.iterdir():
            sid, sep, _ = f.name.rpartition("_part-")
            if sep:
                parts.setdefault(_check(sid, _SID_RE, "submission_id"), []).append(f)
        staged: dict[str, Path] = {}
        for sid, files in parts.items():
            target = out / f"{sid}.parquet"
            if len(files) == 1:
                files[0].rename(target)
            else:  # the writer had to reopen the partition: merge into one file
                merged = pa.concat_tables([pq.read_table(p) for p in sorted(files)]).sort_by("row_number")
                pq.write_table(merged, target, compression="zstd")
                for p in files:
                    p.unlink()
            staged[sid] = target
        return staged

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


def move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    src.replace(dst)


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
