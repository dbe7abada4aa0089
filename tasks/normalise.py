"""Typing a batch of read returns: strings in, typed columns out, one vectorised pass.

``tasks.read`` hands every value over as the string the clerk wrote. This module turns the
whole batch (all files of one kind and period, concatenated) into typed columns:

- numbers: ``1,234.5``, full-width ``１２３．５``, surrounding spaces; the submission's unit
  factors (元 → 万元, 万平方米 → 平方米) applied;
- whole numbers (``int``): as numbers, then ``Int64``; a fraction is a ``TYPE_INT`` error;
- dates: ``2017-06-15``, ``2017/6/15``, ``2017.06.15``, ``2017年6月15日``, ISO date-times as
  Excel writes them, and Excel serial numbers (``42901``);
- periods: ``2017-06``, ``2017/06``, ``201706``, ``2017年6月`` (and a date, as Excel turns a
  typed ``2017-06`` into 2017-06-01) → ``2017-06``;
- codes and project ids: full-width characters folded to ASCII, spaces removed;
- statuses: aliases mapped (``竣工`` → ``已竣工``).

A value that cannot be typed becomes null and is reported as an error finding (``TYPE_NUMBER``,
``TYPE_INT``, ``TYPE_DATE``, ``TYPE_PERIOD``) with the raw value. All work is column-wise over
the batch with pyarrow compute; Python touches single values only for the rare non-ASCII
cells of numeric/date columns (to fold full-width characters).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from gaibao import contract

log = logging.getLogger(__name__)

ROW_NUMBER = "row_number"
SUBMISSION_ID = "submission_id"

FINDING_COLUMNS = [
    "submission_id",
    "row_number",
    "project_id",
    "rule",
    "severity",
    "column_name",
    "value",
    "message",
    "is_explained",
]

# Full-width ASCII (U+FF01..U+FF5E) and the ideographic space fold to their ASCII forms.
_FULLWIDTH = {0xFF01 + i: 0x21 + i for i in range(94)}
_FULLWIDTH[0x3000] = 0x20
# Other dashes and dots that clerks' input methods produce inside numbers and dates.
_FULLWIDTH.update({0x2212: 0x2D, 0x2013: 0x2D, 0x3002: 0x2E, 0xFF0E: 0x2E})

_FOLD_RE = r"[\x{FF01}-\x{FF5E}\x{3000}\x{2212}\x{2013}\x{3002}]"  # RE2 syntax

# Cells that mean "none" (the reader already turns most of them into None).
_NULL_TOKENS = ["", "-", "—", "——", "－", "–", "/", "无"]

_NUMBER_RE = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"
_THOUSANDS_RE = r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?$"
_DATE_RE = (
    r"^(?P<y>\d{4})\s*[-/.年]\s*(?P<m>\d{1,2})\s*[-/.月]\s*(?P<d>\d{1,2})\s*日?"
    r"(?:[ T]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?$"
)
_COMPACT_DATE_RE = r"^(?P<y>(?:19|20)\d{2})(?P<m>\d{2})(?P<d>\d{2})$"
_SERIAL_RE = r"^\d{5}(?:\.\d+)?$"
_PERIOD_RE = r"^(?P<y>\d{4})\s*(?:[-/.年]\s*(?P<m>\d{1,2})\s*月?|(?P<m2>\d{2}))$"
# Excel serial numbers accepted as dates: 1954-10-04 .. 2119-01-04.
_SERIAL_MIN, _SERIAL_MAX = 20000, 80000
_EXCEL_EPOCH = np.datetime64("1899-12-30", "D")

_TYPE_RULES = {"number": "TYPE_NUMBER", "int": "TYPE_INT", "date": "TYPE_DATE", "month": "TYPE_PERIOD"}
_TYPE_HINTS = {
    "TYPE_NUMBER": "不是有效数字：请填写阿拉伯数字（如 1234.5），不要带单位或文字，改正后重新报送。",
    "TYPE_INT": "不是有效整数：请填写不带小数的整数（如 1766），改正后重新报送。",
    "TYPE_DATE": "不是有效日期：请按 2017-06-15 的格式填写日期，改正后重新报送。",
    "TYPE_PERIOD": "不是有效报告期：请按 2017-06 的格式填写报告期，改正后重新报送。",
}


# --------------------------------------------------------------------------------------------
# Public helpers


def parse_period(text: str | None) -> str | None:
    """The period ``YYYY-MM`` that ``text`` names, or None.

    The whole text is tried first (a period cell: ``2017-06``, ``2017/06``, ``201706``,
    ``2017年6月``, or a date such as ``2017-06-01``); otherwise a period is searched for inside
    it (a file name such as ``340321_201706_progress.csv`` or ``怀远县2017年6月进展.xlsx``).
    """
    if text is None:
        return None
    typed, _ = _type_period(pa.array([str(text)], type=pa.string()))
    if typed[0] is not None:
        return typed[0]
    folded = str(text).translate(_FULLWIDTH)
    for pattern in (
        r"(20\d{2})\s*年\s*(\d{1,2})\s*月",
        r"(?<!\d)(20\d{2})[-_./](\d{1,2})(?!\d)",
        r"(?<!\d)(20\d{2})(0[1-9]|1[0-2])(?!\d)",
    ):
        match = re.search(pattern, folded)
        if match and 1 <= int(match.group(2)) <= 12:
            return f"{match.group(1)}-{int(match.group(2)):02d}"
    return None


def period_end(period: pd.Series) -> pd.Series:
    """The last day of each ``YYYY-MM`` period, as ``datetime64[ms]`` (NaT where unknown)."""
    start = pd.to_datetime(
        period.astype(object).where(period.notna(), None) + "-01", errors="coerce", format="%Y-%m-%d"
    )
    return (start + pd.offsets.MonthEnd(0)).astype("datetime64[ms]")


def concat_returns(
    kind: str, items: Sequence[tuple[str, Any]]
) -> tuple[pd.DataFrame, dict[str, dict[str, float]]]:
    """All rows of a batch in one frame of strings: the kind's canonical columns (absent → null),
    ``submission_id`` and ``row_number``; plus the unit factors of each submission."""
    names = contract.canonical_names(kind)
    factors: dict[str, dict[str, float]] = {}
    # Column-wise Arrow concatenation of every file's columns: no Python string per cell (a
    # national month is twenty million cells), and pd.concat of thousands of small frames
    # would cost 10-50 s.
    parts: dict[str, list[pa.Array]] = {name: [] for name in names}
    ids: list[np.ndarray] = []
    numbers: list[np.ndarray] = []
    for submission_id, parsed in items:
        grid = parsed.grid
        n = len(grid)
        for name in names:
            col = grid.column(name)
            parts[name].append(col if col is not None else pa.nulls(n, type=pa.string()))
        ids.append(np.full(n, submission_id, dtype=object))
        numbers.append(grid.numbers)
        if parsed.unit_factors:
            factors[submission_id] = dict(parsed.unit_factors)
    data: dict[str, Any] = {
        SUBMISSION_ID: pd.Series(np.concatenate(ids) if ids else np.empty(0, object), dtype=object)
    }
    for name in names:
        chunks = parts[name]
        arr = pa.concat_arrays(chunks) if chunks else pa.array([], type=pa.string())
        data[name] = _str_array(arr)
    data[ROW_NUMBER] = np.concatenate(numbers) if numbers else np.empty(0, dtype="int64")
    raw = pd.DataFrame(data, copy=False)
    return raw, factors


def normalise_batch(kind: str, items: Sequence[tuple[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Type every row of a batch of ``(submission_id, ParsedReturn)``.

    Returns the typed batch frame (canonical columns typed, ``submission_id``, ``row_number``)
    and the findings of values that could not be typed (columns ``FINDING_COLUMNS``).
    """
    raw, factors = concat_returns(kind, items)
    return normalise_frame(kind, raw, factors)


def normalise_frame(
    kind: str, raw: pd.DataFrame, unit_factors: dict[str, dict[str, float]] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Type a frame of strings as made by :func:`concat_returns` (the batch-level half of
    :func:`normalise_batch`; ``tasks.judge`` keeps ``raw`` to quote clerks' values)."""
    unit_factors = unit_factors or {}
    out: dict[str, Any] = {SUBMISSION_ID: raw[SUBMISSION_ID].to_numpy(dtype=object)}
    failures: list[pd.DataFrame] = []
    for col in contract.COLUMNS[kind]:
        values = _to_arrow(raw[col.name], fold=col.type != "text")
        if col.type in ("number", "int"):
            typed, bad = _type_number(values)
            typed = _apply_factors(typed, raw[SUBMISSION_ID], unit_factors, col.name)
            if col.type == "int":
                fraction = ~np.isnan(typed) & (np.abs(typed - np.round(typed)) > 1e-9)
                int_bad = bad | fraction
                typed = np.where(fraction, np.nan, typed)
                series = pd.array(np.round(typed), dtype="Float64").astype("Int64")
                bad = int_bad
            else:
                series = typed
        elif col.type == "date":
            series, bad = _type_date(values)
        elif col.type == "month":
            periods, bad = _type_period(values)
            series = _str_array(pa.array(periods, type=pa.string(), from_pandas=True))
        elif col.name == "status":
            series, bad = _str_array(_map_status(values)), None
        elif col.type in ("code6", "code10", "project_id", "enum"):
            series, bad = _str_array(_fold_code(values)), None
        else:
            series, bad = _str_array(values), None
        out[col.name] = series
        if bad is not None and bad.any():
            failures.append(_type_findings(kind, raw, col, np.asarray(bad)))
    out[ROW_NUMBER] = raw[ROW_NUMBER].to_numpy(dtype="int64")
    typed_frame = pd.DataFrame(out, index=raw.index)
    typed_frame[SUBMISSION_ID] = typed_frame[SUBMISSION_ID].astype("str")
    findings = pd.concat(failures, ignore_index=True) if failures else empty_findings()
    return typed_frame, findings


def empty_findings() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "submission_id": pd.Series([], dtype="str"),
            "row_number": pd.Series([], dtype="Int64"),
            "project_id": pd.Series([], dtype="str"),
            "rule": pd.Series([], dtype="str"),
            "severity": pd.Series([], dtype="str"),
            "column_name": pd.Series([], dtype="str"),
            "value": pd.Series([], dtype="str"),
            "message": pd.Series([], dtype="str"),
            "is_explained": pd.Series([], dtype="bool"),
        }
    )


# --------------------------------------------------------------------------------------------
# Column typing (pyarrow compute over whole columns)


def _to_arrow(series: pd.Series, fold: bool = True) -> pa.Array:
    """A column of str/None as a pyarrow string array, trimmed, "none" → null, and (``fold``)
    full-width characters folded to ASCII."""
    if hasattr(series.array, "__arrow_array__"):  # Arrow-backed str: no copy through objects
        arr = pa.array(series.array)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        arr = arr.cast(pa.string())
    else:
        arr = pa.array(series.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    non_ascii = pc.invert(pc.fill_null(pc.string_is_ascii(arr), True))
    if fold and pc.any(non_ascii).as_py():
        non_ascii = pc.fill_null(pc.match_substring_regex(arr, _FOLD_RE), False)
    if fold and pc.any(non_ascii).as_py():
        idx = np.flatnonzero(non_ascii.to_numpy(zero_copy_only=False))
        texts = arr.take(pa.array(idx)).to_pylist()
        folded = pa.array([t.translate(_FULLWIDTH) for t in texts], type=pa.string())
        arr = pc.replace_with_mask(arr, non_ascii, folded)
    arr = pc.utf8_trim_whitespace(arr)
    is_none = pc.fill_null(pc.is_in(arr, value_set=pa.array(_NULL_TOKENS)), False)
    return pc.if_else(is_none, pa.scalar(None, pa.string()), arr)


def _type_number(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (NaN where null or invalid) and the mask of invalid non-null cells."""
    present = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    try:  # fast path: every cell is a plain number
        numbers = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False).astype("float64")
        bad = np.zeros(len(arr), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if pc.any(pc.match_substring(arr, ",")).as_py():
            grouped = pc.fill_null(pc.match_substring_regex(arr, _THOUSANDS_RE), False)
            arr = pc.if_else(grouped, pc.replace_substring(arr, ",", ""), arr)
        if pc.any(pc.match_substring(arr, " ")).as_py():
            arr = pc.replace_substring(arr, " ", "")
        valid = pc.fill_null(pc.match_substring_regex(arr, _NUMBER_RE), False)
        clean = pc.if_else(valid, arr, pa.scalar(None, pa.string()))
        numbers = pc.cast(clean, pa.float64()).to_numpy(zero_copy_only=False).astype("float64")
        bad = present & ~valid.to_numpy(zero_copy_only=False)
    nonfinite = present & ~np.isfinite(numbers)  # inf, nan written as text
    if nonfinite.any():
        bad = bad | nonfinite
        numbers = np.where(nonfinite, np.nan, numbers)
    return numbers, bad


def _by_unique(arr: pa.Array, typer: Any) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``typer`` (array → (values, bad)) to the distinct values of ``arr`` only and spread
    the result back: dates and periods repeat a lot, so this is much cheaper than regexes
    over every cell."""
    encoded = pc.dictionary_encode(arr)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    values, bad = typer(encoded.dictionary)
    values = np.asarray(values)
    indices = encoded.indices
    present = pc.is_valid(indices).to_numpy(zero_copy_only=False)
    positions = pc.fill_null(indices, 0).to_numpy(zero_copy_only=False).astype("int64")
    if len(values) == 0:
        empty = (
            np.full(len(arr), None, dtype=object)
            if values.dtype == object
            else np.full(len(arr), np.datetime64("NaT"), dtype="datetime64[D]")
        )
        return empty, np.zeros(len(arr), dtype=bool)
    out: np.ndarray = values[positions]
    out[~present] = None if values.dtype == object else np.datetime64("NaT")
    return out, present & np.asarray(bad)[positions]


def _apply_factors(
    numbers: np.ndarray, submission_ids: pd.Series, unit_factors: dict[str, dict[str, float]], name: str
) -> np.ndarray:
    per_submission = {sid: f[name] for sid, f in unit_factors.items() if name in f and f[name] != 1.0}
    if not per_submission:
        return numbers
    factor = submission_ids.map(per_submission).fillna(1.0).to_numpy(dtype="float64")
    return numbers * factor


def _part(parts: pa.StructArray, name: str) -> np.ndarray:
    """One captured group of an ``extract_regex`` result as float64 (NaN where absent)."""
    child = pc.struct_field(parts, name)
    child = pc.if_else(
        pc.and_kleene(pc.is_valid(parts), pc.not_equal(child, "")), child, pa.scalar(None, pa.string())
    )
    return pc.cast(child, pa.float64()).to_numpy(zero_copy_only=False)


def _ymd_dates(parts: pa.StructArray) -> np.ndarray:
    """datetime64[D] from a struct of y/m/d strings; NaT for nulls and impossible dates."""
    frame = pd.DataFrame({"year": _part(parts, "y"), "month": _part(parts, "m"), "day": _part(parts, "d")})
    return pd.to_datetime(frame, errors="coerce").to_numpy(dtype="datetime64[D]")


def _type_date(arr: pa.Array) -> tuple[Any, np.ndarray]:
    """datetime64[ms] (day precision) and the mask of invalid non-null cells."""
    days, bad = _by_unique(arr, _date_days)
    return pd.Series(np.asarray(days, dtype="datetime64[D]").astype("datetime64[ms]")).array, bad


def _date_days(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """datetime64[D] of each value and the mask of invalid non-null values."""
    n = len(arr)
    result = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    present = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    if present.any():
        # Empty strings that survived nowhere: match on the separator forms, then compact, then serial.
        spaced = pc.replace_substring_regex(arr, r"\s+", " ")
        result = _ymd_dates(pc.extract_regex(spaced, _DATE_RE))
        todo = present & np.isnat(result)
        if todo.any():
            compact = _ymd_dates(pc.extract_regex(arr, _COMPACT_DATE_RE))
            result = np.where(todo, compact, result)
            todo = present & np.isnat(result)
        if todo.any():
            serial_ok = pc.fill_null(pc.match_substring_regex(arr, _SERIAL_RE), False).to_numpy(
                zero_copy_only=False
            )
            serial = pc.cast(pc.if_else(serial_ok, arr, pa.scalar(None, pa.string())), pa.float64()).to_numpy(
                zero_copy_only=False
            )
            in_range = todo & serial_ok & (serial >= _SERIAL_MIN) & (serial <= _SERIAL_MAX)
            if in_range.any():
                days = np.floor(np.where(in_range, serial, 0)).astype("int64")
                result = np.where(in_range, _EXCEL_EPOCH + days.astype("timedelta64[D]"), result)
    bad = present & np.isnat(result)
    return result, bad


def _type_period(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``YYYY-MM`` strings (None where null or invalid) and the mask of invalid non-null cells."""
    return _by_unique(arr, _period_values)


def _period_values(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    present = pc.is_valid(arr).to_numpy(zero_copy_only=False)
    parts = pc.extract_regex(pc.replace_substring_regex(arr, r"\s+", ""), _PERIOD_RE)
    year = _part(parts, "y")
    month = np.where(np.isnan(_part(parts, "m")), _part(parts, "m2"), _part(parts, "m"))
    ok = present & (month >= 1) & (month <= 12) & (year >= 1900)
    todo = present & ~ok
    if todo.any():
        # A full date in the period cell (Excel turns a typed 2017-06 into 2017-06-01): its month.
        dates, _ = _date_days(pc.if_else(pa.array(todo), arr, pa.scalar(None, pa.string())))
        as_dates = pd.DatetimeIndex(dates)
        from_date = todo & ~np.isnat(dates)
        year = np.where(from_date, as_dates.year.to_numpy(dtype="float64", na_value=np.nan), year)
        month = np.where(from_date, as_dates.month.to_numpy(dtype="float64", na_value=np.nan), month)
        ok = ok | from_date
    safe_year = np.where(ok, year, 0).astype("int64")
    safe_month = np.where(ok, month, 0).astype("int64")
    text = (
        pd.Series(safe_year).astype(str).str.zfill(4) + "-" + pd.Series(safe_month).astype(str).str.zfill(2)
    )
    periods = text.to_numpy(dtype=object)
    periods[~ok] = None
    return periods, present & ~ok


def _fold_code(arr: pa.Array) -> pa.Array:
    """Codes, ids and choices: already folded and trimmed; inner spaces dropped."""
    if pc.any(pc.match_substring(arr, " ")).as_py():
        arr = pc.replace_substring(arr, " ", "")
    return arr


def _map_status(arr: pa.Array) -> pa.Array:
    arr = _fold_code(arr)
    for alias, status in contract.STATUS_ALIASES.items():
        arr = pc.if_else(pc.fill_null(pc.equal(arr, alias), False), pa.scalar(status), arr)
    return arr


_STR_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)


def _str_array(arr: pa.Array) -> Any:
    """A pyarrow string array as pandas' default ``str`` dtype, without a round trip via objects."""
    return _STR_DTYPE.__from_arrow__(arr.cast(pa.large_string()))


# --------------------------------------------------------------------------------------------
# Findings


def _type_findings(kind: str, raw: pd.DataFrame, col: contract.Column, bad: np.ndarray) -> pd.DataFrame:
    rule = _TYPE_RULES[col.type]
    rows = raw.loc[bad]
    value = rows[col.name].astype(str)
    label = contract.label_zh(kind, col.name)
    project = (
        rows["project_id"]
        if "project_id" in rows.columns
        else pd.Series(None, index=rows.index, dtype=object)
    )
    message = "第" + rows[ROW_NUMBER].astype(str) + f"行「{label}」为「" + value + "」，" + _TYPE_HINTS[rule]
    return pd.DataFrame(
        {
            "submission_id": rows[SUBMISSION_ID].astype("str").to_numpy(),
            "row_number": pd.array(rows[ROW_NUMBER].to_numpy(), dtype="Int64"),
            "project_id": pd.array(project.to_numpy(dtype=object), dtype="str"),
            "rule": rule,
            "severity": "error",
            "column_name": col.name,
            "value": value.to_numpy(dtype=object),
            "message": message.to_numpy(dtype=object),
            "is_explained": False,
        }
    )
