"""Read one county return (CSV, XLSX or JSON bytes) into canonical columns of strings.

This is the per-file part of the pipeline: decode the bytes, find the header row, map the
headers the county wrote onto the contract's canonical names, note the units, split off the
合计/总计 row and drop blank rows. Values stay strings (or ``None``): typing numbers, dates and
periods is ``tasks.normalise``'s job, judging them is ``tasks.validate``'s.

A file that cannot be used is not an exception: ``read_return`` returns a ``ParsedReturn``
whose ``refusal`` says why, in Chinese, for the county clerk.

The public face:

- ``read_return(content, file_name, kind=None) -> ParsedReturn`` (a workbook carrying both
  returns, a sheet named 进展 and one named 资金, gives both: ``ParsedReturn.every_return``)
- ``normalise_header(text) -> (base, unit)``
- ``detect_format(content, file_name) -> "csv" | "xlsx" | "xls" | "json"``
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import datetime as dt
import io
import json
import logging
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gaibao.contract import (
    COLUMNS,
    KIND_NAME_ZH,
    KINDS,
    NOT_A_RETURN_SHEET_HINTS,
    SHEET_HINTS,
    SUBMITTED_KINDS,
    TOTAL_ROW_COLUMNS,
    TOTAL_ROW_MARKERS,
    UNIT_FACTORS,
    Column,
    Refusal,
)
from tasks.readguard import (
    CONTROL_CHARS,
    CONTROL_RE2,
    OverLimit,
    ReadLimits,
    cell_too_long,
    check_columns,
    check_extent,
    check_file_size,
    check_rows,
    check_workbook,
    escape_controls,
    json_depth,
    json_too_deep,
    value_depth,
)
from tasks.readguard import Unreadable as _Unreadable

logger = logging.getLogger(__name__)

# How many rows from the top of a file are searched for the header row.
HEADER_SCAN_ROWS = 30
# A header row must match at least this many known headers.
MIN_HEADER_MATCHES = 2
# Cell text that means "nothing here" (after stripping).
NONE_TOKENS: frozenset[str] = frozenset({"", "-", "—", "－", "——", "--", "－－", "–", "―", "――"})
# A row whose only filled cell starts with one of these is a footnote, not data.
NOTE_PREFIXES = (
    "注",
    "说明",
    "备注：",
    "备注:",
    "填表说明",
    "填报说明",
    "填报人",
    "审核人",
    "制表",
    "单位负责人",
)
# Keys under which a JSON platform may wrap its list of records.
JSON_LIST_KEYS = ("records", "data", "rows", "items", "list", "result", "results")

ROW_NUMBER = "row_number"

# The bounds of the file being read (``read_return`` sets them; tasks.readguard).
_LIMITS: contextvars.ContextVar[ReadLimits] = contextvars.ContextVar("read_limits", default=ReadLimits())  # noqa: B039 - frozen
# Free-text columns: control characters are deleted there (with a warning); anywhere else they
# are shown as \xHH, which no code, number, date or choice matches (the row is rejected).
_TEXT_COLUMNS = frozenset(c.name for k in KINDS for c in COLUMNS[k] if c.type == "text")
# An unknown header is kept in the submission record: at most this many characters of it.
MAX_UNKNOWN_HEADER_CHARS = 100


@dataclass(frozen=True)
class Grid:
    """Rows of one file as columns of Arrow strings: the compact form a read return travels in.

    ``columns`` holds one ``pa.string()`` array per name (null for an empty cell); ``numbers``
    the clerk's row numbers (int64). A national month is about twenty million cells: as Python
    strings they took over a gigabyte and most of the time spent sending a parsed file back
    from a reader process; as Arrow they take a few hundred megabytes and pickle as buffers.
    Pandas frames are made only when asked for (``frame()``)."""

    names: tuple[str, ...]
    columns: tuple[pa.Array, ...]
    numbers: np.ndarray

    def __len__(self) -> int:
        return len(self.numbers)

    @classmethod
    def of(cls, names: Sequence[str], rows: list[list[str | None]], numbers: Sequence[int]) -> Grid:
        if rows:
            columns = tuple(pa.array(col, type=pa.string()) for col in zip(*rows, strict=True))
        else:
            columns = tuple(pa.array([], type=pa.string()) for _ in names)
        return cls(tuple(names), columns, np.asarray(numbers, dtype=np.int64))

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Grid:
        names = tuple(c for c in frame.columns if c != ROW_NUMBER)
        columns = tuple(
            pa.array(
                [
                    None if v is None or (isinstance(v, float) and v != v) else str(v)
                    for v in frame[n].tolist()
                ],
                type=pa.string(),
            )
            for n in names
        )
        numbers = frame[ROW_NUMBER].to_numpy(dtype=np.int64) if ROW_NUMBER in frame else np.arange(len(frame))
        return cls(names, columns, numbers)

    def __reduce__(self) -> tuple[Any, ...]:
        # The columns are usually slices of one array (_split_rows), and pyarrow pickles a slice
        # with its parent's whole buffers: a file of 21 columns would cross from a reader process
        # 21 times over. They travel as one compact array instead, and are sliced again on arrival.
        joined = pa.concat_arrays(list(self.columns)) if self.columns else pa.array([], type=pa.string())
        return (_joined_grid, (self.names, joined, self.numbers))

    def column(self, name: str) -> pa.Array | None:
        try:
            return self.columns[self.names.index(name)]
        except ValueError:
            return None

    @property
    def values(self) -> np.ndarray:
        """The cells as an ``(n, len(names))`` object array of ``str``/``None``."""
        out = np.empty((len(self), len(self.names)), dtype=object)
        for j, col in enumerate(self.columns):
            out[:, j] = col.to_numpy(zero_copy_only=False)
        return out

    def frame(self) -> pd.DataFrame:
        # dtype=object keeps None as None (pandas 3 would otherwise infer str and NaN).
        frame = pd.DataFrame(self.values, columns=list(self.names), dtype=object, copy=False)
        frame[ROW_NUMBER] = self.numbers
        return frame


def _joined_grid(names: tuple[str, ...], joined: pa.Array, numbers: np.ndarray) -> Grid:
    n = len(numbers)
    return Grid(names, tuple(joined.slice(i * n, n) for i in range(len(names))), numbers)


_EMPTY_GRID = Grid((), (), np.empty(0, dtype=np.int64))


class _ReleasedGrid(Grid):
    """Stands for rows a batch has taken over (:meth:`ParsedReturn.release_rows`): any read fails
    loudly rather than finding an empty file."""

    def _gone(self) -> RuntimeError:
        return RuntimeError("this return's rows were released after its batch copied them")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ReleasedGrid, ((), (), np.empty(0, dtype=np.int64)))

    def __len__(self) -> int:
        raise self._gone()

    def column(self, name: str) -> pa.Array | None:
        raise self._gone()

    @property
    def values(self) -> np.ndarray:
        raise self._gone()

    def frame(self) -> pd.DataFrame:
        raise self._gone()


_RELEASED_GRID = _ReleasedGrid((), (), np.empty(0, dtype=np.int64))


@dataclass
class ParsedReturn:
    """One county file, read: canonical columns of strings, not yet typed or judged.

    ``rows`` and ``total_rows`` have the canonical columns the file has (contract order), every
    value a ``str`` or ``None``, plus ``row_number`` (int): the row the clerk sees in Excel or
    their editor (JSON: record index + 1). When ``refusal`` is set both are empty. They are
    built on first use from ``grid`` / ``total_grid`` (the batch path reads the grids directly).
    """

    kind: str | None
    grid: Grid = _EMPTY_GRID
    total_grid: Grid = _EMPTY_GRID
    unit_factors: dict[str, float] = field(default_factory=dict)
    unknown_columns: list[str] = field(default_factory=list)
    refusal: Refusal | None = None
    # Where the data came from, for logs and the submission record.
    file_format: str | None = None  # csv | xlsx | xls | json
    encoding: str | None = None  # CSV only: utf-8, utf-8-sig, gb18030, utf-16
    sheet_name: str | None = None  # workbooks only
    header_row: int | None = None  # the clerk's row number of the header (JSON: None)
    released_rows: int | None = None  # n_rows, once release_rows() dropped the grid
    # Free-text cells whose control characters were deleted: (row number, column, how many).
    control_chars: tuple[tuple[int, str, int], ...] = ()
    # The file's further returns: a workbook carrying both kinds, a sheet named for each (进展,
    # 资金), is two returns, each judged on its own (``every_return``).
    other_returns: list[ParsedReturn] = field(default_factory=list)
    # Cells of other columns whose control characters are shown as \xHH (the value is invalid
    # then): (row number, column, how many).
    control_escaped: tuple[tuple[int, str, int], ...] = ()

    @property
    def is_refused(self) -> bool:
        return self.refusal is not None

    @property
    def every_return(self) -> list[ParsedReturn]:
        """This return and the file's others (``other_returns``), in that order."""
        return [self, *self.other_returns]

    @property
    def rows(self) -> pd.DataFrame:
        return self.grid.frame()

    @property
    def total_rows(self) -> pd.DataFrame:
        return self.total_grid.frame()

    @property
    def n_rows(self) -> int:
        return self.released_rows if self.released_rows is not None else len(self.grid)

    def release_rows(self) -> None:
        """Drop the data rows once a batch holds its own copy of them (a national month's files
        are about 400 MB of Arrow). ``n_rows``, the 合计 rows and the metadata stay; reading the
        rows afterwards raises."""
        if self.released_rows is None:
            self.released_rows = len(self.grid)
            self.grid = _RELEASED_GRID

    @classmethod
    def from_frames(
        cls, kind: str | None, rows: pd.DataFrame, total_rows: pd.DataFrame | None = None, **fields: Any
    ) -> ParsedReturn:
        """A read return made from frames shaped like ``rows`` (for callers holding pandas data)."""
        totals = Grid.from_frame(total_rows) if total_rows is not None and len(total_rows) else _EMPTY_GRID
        return cls(kind=kind, grid=Grid.from_frame(rows), total_grid=totals, **fields)


# --------------------------------------------------------------------------------------------
# Headers


_BRACKETS = str.maketrans(
    {"【": "(", "】": ")", "〔": "(", "〕": ")", "[": "(", "]": ")", "﹙": "(", "﹚": ")"}
)
_TRAILING_UNIT = re.compile(r"^(.+?)\(([^()]*)\)$")


@lru_cache(maxsize=8192)
def normalise_header(text: str) -> tuple[str, str | None]:
    """Split a header as a county wrote it into (base, unit), both normalised.

    NFKC folds full-width brackets, colons, letters and digits to half-width (and ``㎡`` to
    ``m2``); every whitespace (inside too) is removed; the result is lower-cased so that canonical
    English names match in any case. A trailing bracketed part is the unit::

        normalise_header(" 规划面积 （平方米）")  -> ("规划面积", "平方米")
        normalise_header("其中：中央资金(元)")     -> ("其中:中央资金", "元")
        normalise_header("Planned_Area_M2")      -> ("planned_area_m2", None)
    """
    folded = "".join(unicodedata.normalize("NFKC", text).split()).translate(_BRACKETS).lower()
    match = _TRAILING_UNIT.match(folded)
    if match:
        return match.group(1), match.group(2) or None
    return folded, None


def _normalise_unit(unit: str) -> str:
    return normalise_header(unit)[0]


# Per canonical unit: normalised unit text -> factor to the canonical unit.
_UNIT_LOOKUP: dict[str, dict[str, float]] = {
    canonical: {_normalise_unit(u): f for u, f in units.items()} for canonical, units in UNIT_FACTORS.items()
}


@dataclass(frozen=True)
class _HeaderIndex:
    """Normalised header base -> Column, for one kind (or for all kinds, for scanning)."""

    by_base: dict[str, Column]

    def match(self, text: str) -> tuple[Column | None, str | None]:
        """The column a header names, and the unit it carries (None: none written)."""
        if not text:
            return None, None
        base, unit = normalise_header(text)
        col = self.by_base.get(base)
        if col is not None:
            return col, unit
        if base.startswith("其中"):  # 其中中央资金, 其中-中央资金: the part without 其中 is an alias
            col = self.by_base.get(base[2:].lstrip(":-、,"))
            if col is not None:
                return col, unit
        if unit is not None:  # e.g. a header whose brackets are part of an unknown name
            whole = base + "(" + unit + ")"
            col = self.by_base.get(whole)
            if col is not None:
                return col, None
        return None, None


@cache
def _header_index(kind: str | None) -> _HeaderIndex:
    kinds = KINDS if kind is None else (kind,)
    by_base: dict[str, Column] = {}
    for k in kinds:
        for col in COLUMNS[k]:
            for header in col.all_headers:
                by_base.setdefault(normalise_header(header)[0], col)
    return _HeaderIndex(by_base)


@cache
def _distinctive(kind: str) -> frozenset[str]:
    """Canonical names of a kind that no other kind has (they tell the kinds apart)."""
    others = {c.name for k in KINDS if k != kind for c in COLUMNS[k]}
    return frozenset(c.name for c in COLUMNS[kind] if c.name not in others)


def _matched_names(header: Sequence[str], kind: str) -> set[str]:
    index = _header_index(kind)
    names = set()
    for text in header:
        col, _ = index.match(text)
        if col is not None:
            names.add(col.name)
    return names


def detect_kind(header: Sequence[str]) -> str | None:
    """The kind whose columns best match a header row (None if it matches no kind at all).

    Scored by the kind's distinctive columns found (columns no other kind has: ``项目编号``
    says progress whatever else is missing), then by the share of its required columns found.
    """
    best: tuple[int, float] = (0, 0.0)
    best_kind: str | None = None
    for kind in KINDS:
        found = _matched_names(header, kind)
        required = [c.name for c in COLUMNS[kind] if c.required]
        score = (len(found & _distinctive(kind)), sum(n in found for n in required) / len(required))
        if score > best:
            best, best_kind = score, kind
    return best_kind


def _header_score(cells: Sequence[str], index: _HeaderIndex) -> int:
    names = set()
    for cell in cells:
        if cell and len(cell) <= 60:
            col, _ = index.match(cell)
            if col is not None:
                names.add(col.name)
    return len(names)


def _find_header(grid: Sequence[Sequence[str]], kind: str | None) -> int | None:
    """Index in ``grid`` of the row matching the most known headers, or None."""
    index = _header_index(kind)
    best_i, best_score, misses_after_best = None, MIN_HEADER_MATCHES - 1, 0
    for i, row in enumerate(grid[:HEADER_SCAN_ROWS]):
        score = _header_score(row, index)
        if score > best_score:
            best_i, best_score, misses_after_best = i, score, 0
        elif best_i is not None:
            misses_after_best += 1
            if misses_after_best >= 3 and best_score >= 3:  # we are in the data now
                break
    return best_i


# --------------------------------------------------------------------------------------------
# Cells


def _float_text(value: float) -> str:
    if value.is_integer():
        return str(int(value))
    if value != value:  # JSON only (a JSON NaN is read as written, see _json_records)
        return "NaN"
    if value in (_INF, -_INF):  # a JSON number too large for a float: 1e999
        return "Infinity" if value > 0 else "-Infinity"
    return format(value, ".15g")  # Excel shows at most 15 significant digits


_INF = float("inf")

# Exact type -> text, for the cell types calamine and json produce (one dict lookup per cell).
_TO_TEXT: dict[type, Any] = {
    str: lambda v: v,
    float: _float_text,
    int: str,
    bool: lambda v: "TRUE" if v else "FALSE",
    type(None): lambda v: "",
    dt.datetime: lambda v: v.date().isoformat(),  # a time of day on a date cell is dropped
    dt.date: dt.date.isoformat,
    dt.time: dt.time.isoformat,
    dict: lambda v: _nested_text(v),
    list: lambda v: _nested_text(v),
}


def _nested_text(value: dict | list) -> str:
    """A JSON object or array inside a record, as JSON text, within the nesting bound."""
    limit = _LIMITS.get().max_json_depth
    depth = value_depth(value, limit)
    if depth + 2 > limit:  # the list of records and the record hold it
        raise json_too_deep(f"{depth + 2} 层以上" if depth > limit else depth + 2, _LIMITS.get())
    return json.dumps(value, ensure_ascii=False)


def _cell_to_str(value: Any) -> str:
    """A workbook or JSON value as the text the clerk sees (dates ISO, 340321.0 -> 340321)."""
    convert = _TO_TEXT.get(type(value))
    return convert(value) if convert is not None else str(value)


# --------------------------------------------------------------------------------------------
# Formats


def detect_format(content: bytes, file_name: str = "") -> str:
    """``xlsx`` (zip magic), ``xls`` (OLE2 magic), ``json`` (starts with [ or {), else ``csv``."""
    head = content[:8]
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "xls"
    stripped = content[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped[:1] in (b"[", b"{") or file_name.lower().endswith(".json"):
        return "json"
    return "csv"


def _decode(content: bytes) -> tuple[str, str]:
    """Text and encoding: UTF-8 (with or without BOM), UTF-16 with BOM, else GB18030 (⊃ GBK)."""
    if content.startswith(b"\xef\xbb\xbf"):
        try:
            return content[3:].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError as exc:
            raise _Unreadable("文件标明为 UTF-8 编码，但内容不是有效的 UTF-8") from exc
    if content.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return content.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise _Unreadable("文件标明为 UTF-16 编码，但内容无法解码") from exc
    if b"\x00" in content[:4096]:
        raise _Unreadable("文件含有二进制内容，不是文本表格")
    try:
        return content.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return content.decode("gb18030"), "gb18030"
    except UnicodeDecodeError as exc:
        raise _Unreadable("文件编码无法识别（既不是 UTF-8，也不是 GBK/GB18030）") from exc


def _sniff_delimiter(text: str) -> str:
    sample = text[:8192]
    counts = {d: sample.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _csv_grid(content: bytes) -> tuple[list[list[str]], list[int], str]:
    """Records of a CSV file; the clerk's row number of record i is i + 1 (blank lines count)."""
    limits = _LIMITS.get()
    check_rows(content.count(b"\n") + 1, limits)
    text, encoding = _decode(content)
    # the csv module's bound on one field (process-wide; only this reader reads CSV text)
    csv.field_size_limit(limits.max_cell_chars)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(text))
    try:
        grid = list(reader)
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise _long_field(text, limits) from None
        raise _Unreadable(f"CSV 格式错误（第 {reader.line_num} 行）") from exc
    if grid:
        check_columns(max(map(len, grid)), limits)
    return grid, list(range(1, len(grid) + 1)), encoding


def _long_field(text: str, limits: ReadLimits) -> OverLimit:
    """The refusal naming the first over-long field: its line and length (read again with the
    file's own size as the bound: the refusal path only, and the file is within its size bound)."""
    csv.field_size_limit(max(len(text), limits.max_cell_chars) + 1)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(text))
    for record in reader:
        longest = max(map(len, record), default=0)
        if longest > limits.max_cell_chars:
            return cell_too_long(reader.line_num, None, longest, limits)
    return cell_too_long(None, None, limits.max_cell_chars + 1, limits)


def sheet_kind(name: str) -> str | None:
    """The submitted return kind (progress, funding) a sheet's name says, or None: it says none,
    it says both, or it names a sheet that holds no return (封面, 填报说明, 样例: ``NOT_A_RETURN_SHEET_HINTS``)."""
    if _not_a_return(name):
        return None
    kinds = [k for k in SUBMITTED_KINDS if any(h in name for h in SHEET_HINTS[k])]
    return kinds[0] if len(kinds) == 1 else None


def _not_a_return(name: str) -> bool:
    return any(h in name for h in NOT_A_RETURN_SHEET_HINTS)


def _choose_sheets(names: list[str], kind: str | None) -> list[str]:
    """Sheets to try, in order: those whose name hints the kind, then the first, then the rest.
    Sheets that hold no return (封面, 填报说明, 样例) are never tried."""
    names = [n for n in names if not _not_a_return(n)]
    hints = SHEET_HINTS.get(kind, ()) if kind else tuple(h for k in KINDS for h in SHEET_HINTS.get(k, ()))
    hinted = [n for n in names if any(h in n for h in hints)]
    return hinted + [n for n in names if n not in hinted]


@contextlib.contextmanager
def _open_workbook(content: bytes) -> Iterator[Any]:
    """The workbook, opened by calamine once the bounds allow it."""
    from python_calamine import CalamineError, CalamineWorkbook

    limits = _LIMITS.get()
    if content.startswith(b"PK\x03\x04"):
        check_workbook(content, limits)  # before calamine sees the bytes: sizes and ranges
    try:
        book = CalamineWorkbook.from_filelike(io.BytesIO(content))
    except (CalamineError, ValueError, OSError) as exc:
        raise _Unreadable("Excel 文件已损坏或加密，无法打开") from exc
    with book:
        yield book


def _sheet_grid(book: Any, name: str) -> tuple[list[list[str]], list[int]]:
    """One sheet as (grid of strings, clerk's row numbers)."""
    from python_calamine import CalamineError

    limits = _LIMITS.get()
    try:
        sheet = book.get_sheet_by_name(name)
        # the range as calamine holds it (an .xls is bounded by its format: 65536 x 256)
        end_row, end_col = sheet.end if sheet.height and sheet.width else (-1, -1)
        check_extent(name, end_row + 1, end_col + 1, limits)
        # skip_empty_area=False: the grid starts at A1, so list index i is sheet row i + 1.
        raw = sheet.to_python(skip_empty_area=False)
    except CalamineError as exc:
        raise _Unreadable(f"工作表“{name}”无法读取") from exc
    get = _TO_TEXT.get
    grid = [[c if type(c) is str else get(type(c), str)(c) for c in row] for row in raw]
    return grid, list(range(1, len(grid) + 1))


def _json_records(content: bytes) -> list[Any]:
    text, _ = _decode(content)
    limits = _LIMITS.get()
    try:
        # NaN, Infinity, -Infinity (not JSON, but Python's json reads them) stay as written
        data = json.loads(text, parse_constant=str)
    except json.JSONDecodeError as exc:
        raise _Unreadable(f"JSON 格式错误（第 {exc.lineno} 行）") from exc
    except RecursionError:
        raise json_too_deep(json_depth(text), limits) from None
    records = _find_record_list(data, depth=0)
    if records is None:
        raise _Unreadable("JSON 中没有找到记录列表（应为记录数组，或放在 records/data/rows/items 下）")
    check_rows(len(records), limits, "条记录")
    return records


def _find_record_list(data: Any, depth: int) -> list[Any] | None:
    if isinstance(data, list):
        return data
    if not isinstance(data, dict) or depth > 3:
        return None
    for key in JSON_LIST_KEYS:
        if key in data:
            found = _find_record_list(data[key], depth + 1)
            if found is not None:
                return found
    for value in data.values():  # any other key holding a list of objects
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value[:5]):
            return value
    return None


def _json_grid(records: list[Any]) -> tuple[list[list[str]], list[int], bool]:
    """JSON records as a grid whose first row is the header; numbers are record index + 1.

    Returns (grid, numbers, has_header_row): a list of objects makes its own header from the
    keys (in order of first appearance); a list of lists is a sheet whose header is found.
    """
    if records and all(isinstance(r, list) for r in records):
        grid = [[_cell_to_str(c) for c in r] for r in records]
        return grid, list(range(1, len(grid) + 1)), False
    keys: dict[str, None] = {}
    for rec in records:
        if not isinstance(rec, dict):
            raise _Unreadable("JSON 记录应为对象（键为表头）")
        for key in rec:
            keys.setdefault(str(key), None)
    header = list(keys)
    grid = [header]
    grid.extend([_cell_to_str(rec.get(k)) for k in header] for rec in records)
    return grid, [0, *range(1, len(records) + 1)], True


# --------------------------------------------------------------------------------------------
# Assembling the return


def _refused(kind: str | None, code: str, message_zh: str, **detail: str) -> ParsedReturn:
    return ParsedReturn(kind=kind, refusal=Refusal(code, message_zh, dict(detail)))


def _known_units(canonical_unit: str) -> str:
    return "、".join(UNIT_FACTORS[canonical_unit])


def _combine_header(parent: list[str], child: list[str], index: _HeaderIndex) -> list[str] | None:
    """A header written over two rows (``其中（万元）`` merged above ``中央资金`` | ``地方资金``).

    ``child`` is a sub-header row when every non-empty cell in it names a contract column.
    Its cells fill the columns where ``parent`` names none; a sub-header without a unit takes the
    unit of the group label above it (the nearest non-empty parent cell at or left of it).
    Returns None when ``child`` is not a sub-header row.
    """
    filled = [(j, c.strip()) for j, c in enumerate(child) if c.strip()]
    if not filled or any(index.match(c)[0] is None for _, c in filled):
        return None
    if not any(index.match(c)[0] is not None for c in parent if c.strip()):
        return None  # a title or note row above the header, not the upper half of it
    width = max(len(parent), len(child))
    combined = [c.strip() for c in parent] + [""] * (width - len(parent))
    changed = False
    for j, text in filled:
        if combined[j] and index.match(combined[j])[0] is not None:
            continue  # the parent names this column already (a vertically merged header)
        if normalise_header(text)[1] is None:
            label = next(
                (parent[k].strip() for k in range(j, -1, -1) if parent[k : k + 1] and parent[k].strip()), ""
            )
            group_unit = normalise_header(label)[1] if label and index.match(label)[0] is None else None
            if group_unit:
                text = f"{text}（{group_unit}）"
        combined[j] = text
        changed = True
    return combined if changed else None


def _two_row_header(grid: list[list[str]], header_i: int, index: _HeaderIndex) -> tuple[list[str], int]:
    """The header texts and the grid index where data starts (after one or two header rows)."""
    if header_i + 1 < len(grid):
        combined = _combine_header(grid[header_i], grid[header_i + 1], index)
        if combined is not None:
            return combined, header_i + 2
    if header_i > 0:
        combined = _combine_header(grid[header_i - 1], grid[header_i], index)
        if combined is not None:
            return combined, header_i + 1
    return grid[header_i], header_i + 1


# What ``str.strip()`` removes: every character Python counts as whitespace (all below U+3001).
_WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
_NONE_VALUES = pa.array(sorted(NONE_TOKENS), type=pa.string())
_NULL_TEXT = pa.scalar(None, type=pa.string())
_NOTE_PATTERN = "^(?:" + "|".join(map(re.escape, NOTE_PREFIXES)) + ")"
_TOTAL_PATTERN = "|".join(map(re.escape, TOTAL_ROW_MARKERS))


def _split_rows(
    body: Sequence[Sequence[str]],
    numbers: Sequence[int],
    names: Sequence[str],
    positions: Sequence[int],
    labels: Sequence[str],
    *,
    total_at: Sequence[int],
    first_column: tuple[int, str] | None,
    cleaned: list[tuple[int, str, int]] | None = None,
    escaped: list[tuple[int, str, int]] | None = None,
) -> tuple[Grid, Grid]:
    """The rows under the header as (data rows, 合计 rows), the cells of ``positions`` as ``names``.

    Each cell is stripped and becomes None when it says nothing (``NONE_TOKENS``). Dropped: blank
    rows (nothing in the contract's columns) and footnotes (one filled cell starting with a
    ``NOTE_PREFIXES`` word). A total row has 合计/总计 in a ``total_at`` column or, when given,
    in the raw cell of ``first_column`` (its position in the sheet, its header). Short rows count as padded with empty cells.

    Bounds and control characters (``tasks.readguard``): a cell longer than ``max_cell_chars``
    refuses the file; control characters are deleted from free-text columns (each such cell
    noted in ``cleaned`` as (row number, column, count)) and shown as ``\\xHH`` anywhere else
    (noted in ``escaped``).

    In Arrow compute, all columns end to end in one array, so that a file costs a few compute
    calls and not a few per column (a file has a few hundred rows: per-call overhead is what
    counts). The row-by-row Python loop this replaced was over half of the time spent reading."""
    n = len(body)
    width = max([*positions, first_column[0] if first_column else 0]) + 1
    if n and min(map(len, body)) < width:
        body = [row if len(row) >= width else [*row, *[""] * (width - len(row))] for row in body]

    def strings(cells: list[str], label_of: Any) -> pa.Array:
        try:
            return pa.array(cells, type=pa.string())
        except UnicodeEncodeError:  # a lone surrogate: only a JSON \ud800-style escape makes one
            i = next(i for i, c in enumerate(cells) if not _encodable(c))
            shown = cells[i].encode("utf-8", "backslashreplace").decode("utf-8")
            row, label = numbers[i % n], label_of(i // n)
            raise _Unreadable(f"第 {row} 行“{label}”列的值“{shown}”含有无法编码的字符") from None

    k = len(positions)
    cells = strings(
        list(chain.from_iterable(map(itemgetter(j), body) for j in positions)), labels.__getitem__
    )
    text = pc.utf8_trim(cells, characters=_WHITESPACE)
    if n and k:
        longest = pc.max(pc.utf8_length(text)).as_py() or 0
        if longest > _LIMITS.get().max_cell_chars:
            i = pc.index(pc.utf8_length(text), longest).as_py()
            raise cell_too_long(numbers[i % n], labels[i // n], longest, _LIMITS.get())
        if pc.any(pc.match_substring_regex(text, CONTROL_RE2)).as_py():
            text = _clean_controls(text, n, names, numbers, cleaned, escaped)
    cells = pc.if_else(pc.is_in(text, value_set=_NONE_VALUES), _NULL_TEXT, text)
    filled_at = cells.is_valid().to_numpy(zero_copy_only=False).reshape(k, n)
    filled = filled_at.sum(axis=0)
    keep = filled > 0
    lone = np.flatnonzero(filled == 1)
    if len(lone):  # a row's one filled cell: a footnote when it starts with a note word
        only = cells.take(pa.array(filled_at[:, lone].argmax(axis=0) * n + lone))
        note = pc.match_substring_regex(only, _NOTE_PATTERN).fill_null(False).to_numpy(zero_copy_only=False)
        keep[lone[note]] = False
    marked = [cells.slice(i * n, n) for i in total_at]
    if first_column is not None:
        j, label = first_column
        marked.append(strings(list(map(itemgetter(j), body)), lambda _: label))
    total = np.zeros(n, dtype=bool)
    if marked:
        hits = pc.match_substring_regex(pa.concat_arrays(marked), _TOTAL_PATTERN).fill_null(False)
        total = hits.to_numpy(zero_copy_only=False).reshape(len(marked), n).any(axis=0)

    row_numbers = np.asarray(numbers, dtype=np.int64)

    def grid(rows: np.ndarray) -> Grid:
        at = np.flatnonzero(rows)
        chosen = cells.take(pa.array((np.arange(k)[:, None] * n + at).ravel()))
        m = len(at)
        return Grid(tuple(names), tuple(chosen.slice(i * m, m) for i in range(k)), row_numbers[at])

    return grid(keep & ~total), grid(keep & total)


def _clean_controls(
    text: pa.Array,
    n: int,
    names: Sequence[str],
    numbers: Sequence[int],
    cleaned: list | None,
    escaped: list | None = None,
) -> pa.Array:
    """Cells without control characters (the rare path): deleted in free text, else \\xHH."""
    values = text.to_pylist()
    for i, value in enumerate(values):
        if value is None or not CONTROL_CHARS.search(value):
            continue
        name = names[i // n]
        if name in _TEXT_COLUMNS:
            clean, count = CONTROL_CHARS.subn("", value)
            values[i] = clean.strip(_WHITESPACE)
            if cleaned is not None:
                cleaned.append((int(numbers[i % n]), name, count))
        else:
            values[i] = escape_controls(value)
            if escaped is not None:
                escaped.append((int(numbers[i % n]), name, len(CONTROL_CHARS.findall(value))))
    return pa.array(values, type=pa.string())


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _assemble(
    grid: list[list[str]],
    numbers: list[int],
    header_i: int,
    kind: str | None,
    file_name: str,
) -> ParsedReturn:
    header, data_start = _two_row_header(grid, header_i, _header_index(kind))
    if kind is None:
        kind = detect_kind(header)
        if kind is None:  # pragma: no cover - a found header always matches some kind
            return _refused(None, "NO_HEADER", "未找到表头。", file_name=file_name)
    index = _header_index(kind)

    picked: dict[str, int] = {}  # canonical -> grid column
    unit_factors: dict[str, float] = {}
    unknown: list[str] = []
    bad_units: list[tuple[str, str, str]] = []  # header, unit, the column's canonical unit
    header = [CONTROL_CHARS.sub("", t) if CONTROL_CHARS.search(t) else t for t in header]
    for j, text in enumerate(header):
        text = text.strip()
        if not text:
            continue
        col, unit = index.match(text)
        if col is None or col.name in picked:
            # (a JSON key may hold a lone surrogate escape: kept visible, and storable)
            shown = text if _encodable(text) else text.encode("utf-8", "backslashreplace").decode()
            if len(shown) > MAX_UNKNOWN_HEADER_CHARS:
                shown = shown[:MAX_UNKNOWN_HEADER_CHARS] + "…"
            unknown.append(shown)
            continue
        picked[col.name] = j
        if unit is None or col.unit is None:  # no unit written, or a note on a unitless column
            continue
        factor = _UNIT_LOOKUP[col.unit].get(_normalise_unit(unit))
        if factor is None:
            bad_units.append((text, unit, col.unit))
        elif factor != 1.0:
            unit_factors[col.name] = factor

    if bad_units:
        parts = [f"“{h}”中的单位“{u}”（该列应为{c}，可用：{_known_units(c)}）" for h, u, c in bad_units]
        return _refused(
            kind,
            "UNKNOWN_UNIT",
            "表头单位无法识别：" + "；".join(parts) + "。请改正表头的单位后重新报送。",
            file_name=file_name,
            headers="|".join(h for h, _, _ in bad_units),
            units="|".join(u for _, u, _ in bad_units),
        )

    missing = [c for c in COLUMNS[kind] if c.required and c.name not in picked]
    if missing:
        return _refused(
            kind,
            "MISSING_COLUMN",
            "缺少必填列：" + "、".join(c.label_zh for c in missing) + "。请按模板补齐这些列后重新报送。",
            file_name=file_name,
            columns=",".join(c.name for c in missing),
        )

    names = [c.name for c in COLUMNS[kind] if c.name in picked]  # contract order
    first_j = next((j for j, text in enumerate(header) if text.strip()), 0)
    body = grid[data_start:]
    cleaned: list[tuple[int, str, int]] = []
    escaped: list[tuple[int, str, int]] = []
    data, totals = _split_rows(
        body,
        numbers[data_start:],
        names,
        [picked[n] for n in names],
        [header[picked[n]].strip() for n in names],
        total_at=[names.index(n) for n in TOTAL_ROW_COLUMNS.get(kind, ()) if n in picked],
        # A 合计 in the first column of the sheet counts too when that column is not a contract
        # column (typically 序号), as clerks often write it there.
        first_column=(first_j, header[first_j].strip()) if first_j not in picked.values() else None,
        cleaned=cleaned,
        escaped=escaped,
    )
    if not len(data):
        return _refused(kind, "EMPTY", "文件有表头但没有数据行。请填写数据后重新报送。", file_name=file_name)

    return ParsedReturn(
        kind=kind,
        grid=data,
        total_grid=totals,
        unit_factors=unit_factors,
        unknown_columns=unknown,
        control_chars=tuple(cleaned),
        control_escaped=tuple(escaped),
    )


_NO_HEADER_MSG = (
    "未找到表头：文件前 {n} 行中没有一行含有模板的列名（如“区划代码”“学校标识码”“项目编号”）。"
    "请使用模板的表头后重新报送。"
)


def _read_workbook(content: bytes, file_name: str, kind: str | None) -> ParsedReturn:
    """The workbook's return; a workbook with a sheet named for each submitted kind (进展, 资金)
    is two returns: the one of ``kind`` (else the first sheet's) with the other in ``other_returns``."""
    with _open_workbook(content) as book:
        names = list(book.sheet_names)
        named: dict[str, list[str]] = {}
        for name in names:
            if (k := sheet_kind(name)) is not None:
                named.setdefault(k, []).append(name)
        if kind != "plan" and len(named) > 1:
            returns = [_read_named_sheets(book, k, sheets, file_name) for k, sheets in named.items()]
            returns.sort(key=lambda r: r.kind != kind)  # stable: else in the order of the sheets
            returns[0].other_returns = returns[1:]
            return returns[0]
        order = _choose_sheets(names, kind)
        tried: set[str] = set()
        for name in order:
            if (named_for := sheet_kind(name)) is not None:
                if named_for in tried:
                    continue
                tried.add(named_for)
                # the sheets named for this kind: the one that holds data (two: refused)
                picked = _pick_sheet(book, [n for n in order if sheet_kind(n) == named_for], kind, file_name)
                if picked is not None:
                    return picked
                continue
            grid, numbers = _sheet_grid(book, name)
            header_i = _find_header(grid, kind)
            if header_i is not None:
                return _sheet_return(grid, numbers, header_i, kind, file_name, name)
    return _refused(kind, "NO_HEADER", _NO_HEADER_MSG.format(n=HEADER_SCAN_ROWS), file_name=file_name)


def _sheet_return(
    grid: list[list[str]], numbers: list[int], header_i: int, kind: str | None, file_name: str, sheet: str
) -> ParsedReturn:
    result = _assemble(grid, numbers, header_i, kind, file_name)
    result.header_row = numbers[header_i]
    result.sheet_name = sheet
    return result


def _pick_sheet(book: Any, sheets: list[str], kind: str | None, file_name: str) -> ParsedReturn | None:
    """The return of the sheets named for one kind: the one with a header and data rows; None
    when none has a header. Two or more with data: refused ``DUPLICATE_SHEET``, naming them (which
    one the county meant is not for the pipeline to guess). Sheets with a header but no row
    (an empty copy of the template) count only when no sheet has rows: the first is the return."""
    read, filled = [], []
    for name in sheets:
        grid, numbers = _sheet_grid(book, name)
        header_i = _find_header(grid, kind)
        if header_i is not None:
            read.append(_sheet_return(grid, numbers, header_i, kind, file_name, name))
            if _has_rows_below(grid, header_i):
                filled.append(read[-1])
    if not read:
        return None
    if len(filled) > 1:
        return _duplicate_sheets(kind or filled[0].kind or "progress", [r.sheet_name for r in filled], file_name)
    return (filled or read)[0]


def _has_rows_below(grid: list[list[str]], header_i: int) -> bool:
    """A row below the header with two cells or more filled in (a note fills one)."""
    return any(sum(1 for c in row if c and c.strip()) >= 2 for row in grid[header_i + 1 :])


def _read_named_sheets(book: Any, kind: str, sheets: list[str], file_name: str) -> ParsedReturn:
    """The ``kind`` return of a workbook carrying both kinds, from the sheets named for it (read
    as that kind). Its refusal names the sheet: the other return is judged on its own."""
    result = _pick_sheet(book, sheets, kind, file_name)
    if result is None:
        result = _refused(kind, "NO_HEADER", _NO_HEADER_MSG.format(n=HEADER_SCAN_ROWS), file_name=file_name)
        result.sheet_name = sheets[0]
    if result.refusal is not None and result.refusal.code != "DUPLICATE_SHEET":
        refusal = result.refusal
        message = f"工作表“{result.sheet_name}”（{KIND_NAME_ZH[kind]}）：{refusal.message_zh}"
        result.refusal = Refusal(refusal.code, message, {**refusal.detail, "sheet": str(result.sheet_name)})
    return result


def _duplicate_sheets(kind: str, sheets: list[str], file_name: str) -> ParsedReturn:
    quoted = "、".join(f"“{n}”" for n in sheets)
    result = _refused(
        kind,
        "DUPLICATE_SHEET",
        f"工作簿中有 {len(sheets)} 张{KIND_NAME_ZH[kind]}工作表都填有数据：{quoted}，无法确定以哪一张为准。"
        f"请只保留一张{KIND_NAME_ZH[kind]}工作表（其余删除，或改名为“样例”）后重新报送。",
        file_name=file_name,
        sheets="、".join(sheets),
    )
    result.sheet_name = sheets[0]
    return result


def _read_json(content: bytes, file_name: str, kind: str | None) -> ParsedReturn:
    grid, numbers, has_header = _json_grid(_json_records(content))
    header_i = 0 if has_header else _find_header(grid, kind)
    if header_i is None or _header_score(grid[header_i], _header_index(kind)) < 1:
        msg = "JSON 记录的键不是模板的列名（如“区划代码”“项目编号”）。请使用模板的列名后重新报送。"
        return _refused(kind, "NO_HEADER", msg, file_name=file_name)
    result = _assemble(grid, numbers, header_i, kind, file_name)
    result.header_row = None
    return result


def _read_csv(content: bytes, file_name: str, kind: str | None) -> ParsedReturn:
    grid, numbers, encoding = _csv_grid(content)
    header_i = _find_header(grid, kind)
    if header_i is None:
        result = _refused(kind, "NO_HEADER", _NO_HEADER_MSG.format(n=HEADER_SCAN_ROWS), file_name=file_name)
    else:
        result = _assemble(grid, numbers, header_i, kind, file_name)
        result.header_row = numbers[header_i]
    result.encoding = encoding
    return result


def _read_bounded(content: bytes, file_name: str, kind: str | None, fmt: str) -> ParsedReturn:
    try:
        check_file_size(content, _LIMITS.get())
        if not content.lstrip(b"\xef\xbb\xbf \t\r\n"):
            result = _refused(kind, "EMPTY", "文件是空的。请填写数据后重新报送。", file_name=file_name)
        elif fmt in ("xlsx", "xls"):
            result = _read_workbook(content, file_name, kind)
        elif fmt == "json":
            try:
                result = _read_json(content, file_name, kind)
            except _Unreadable:
                if file_name.lower().endswith(".json"):
                    raise
                fmt = "csv"  # a CSV whose first cell starts with [ or {
                result = _read_csv(content, file_name, kind)
        else:
            result = _read_csv(content, file_name, kind)
    except OverLimit as exc:
        result = _refused(
            kind,
            "TOO_LARGE",
            f"文件超过读取上限：{exc.message_zh}。请删去多余的内容，按模板填写后重新报送。",
            file_name=file_name,
            bound=exc.bound,
        )
    except _Unreadable as exc:
        result = _refused(
            kind,
            "UNREADABLE",
            f"文件无法读取：{exc}。请用 Excel 或 WPS 另存为 .xlsx，或 UTF-8 编码的 .csv，然后重新报送。",
            file_name=file_name,
        )
    except MemoryError:
        logger.exception("reading %s ran out of memory", file_name)
        result = _refused(
            kind,
            "READ_MEMORY",
            "文件读取占用内存过多：读取时内存不足，已停止读取（文件可能内容异常或过大）。"
            "请删去多余的内容，按模板填写后重新报送。",
            file_name=file_name,
            bound="read_max_memory_mb",
        )
    except Exception as exc:  # noqa: BLE001 - whatever a file does, it refuses only itself
        logger.exception("reading %s failed", file_name)
        result = _refused(
            kind,
            "READ_FAILED",
            f"文件无法读取：读取时发生意外错误（{type(exc).__name__}），文件可能已损坏或内容异常。"
            "请用 Excel 或 WPS 另存为 .xlsx，或 UTF-8 编码的 .csv，然后重新报送。",
            file_name=file_name,
            error=type(exc).__name__,
        )
    result.file_format = result.file_format or fmt
    return result


def read_return(
    content: bytes, file_name: str, kind: str | None = None, limits: ReadLimits | None = None
) -> ParsedReturn:
    """Read one county file into canonical string columns; never raises on bad content.

    ``kind`` (progress, funding, plan) is detected from the header when None. The file format is
    detected from the bytes (and the name, for JSON); CSV encodings are detected too. ``limits``
    (default: the settings' ``GAIBAO_READ_MAX_*``) bound what reading the file may cost: past one,
    the file is refused as ``TOO_LARGE``; out of memory, as ``READ_MEMORY``. Any other failure
    while reading (a fault of the reader, not a finding about the file) refuses the file as
    ``READ_FAILED``: one file can only ever hurt itself. The wall-time and memory bounds per
    file are ``tasks.readpool``'s: it runs this in a reader process.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    token = _LIMITS.set(limits if limits is not None else ReadLimits.from_settings())
    try:
        fmt = detect_format(content, file_name)
        result = _read_bounded(content, file_name, kind, fmt)
        fmt = result.file_format or fmt
    finally:
        _LIMITS.reset(token)
    for each in result.every_return:
        each.file_format = fmt
    if result.refusal is not None:
        logger.info("refused %s: %s", file_name, result.refusal)
    else:
        logger.debug(
            "read %s: %s %s, %d rows, %d total rows",
            file_name,
            fmt,
            result.kind,
            len(result.grid),
            len(result.total_grid),
        )
    return result
