"""A section of a report: a titled table with typed columns, rendered to HTML, XLSX and CSV alike.

Cells from county data are untrusted text. HTML escapes them (Jinja autoescape); XLSX writes
them with ``write_string`` (never a formula); CSV prefixes a formula-looking value with ``'``
(:func:`inert_csv_text`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

Fmt = Literal["text", "int", "num0", "num2", "pct", "pp", "date"]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
FORMULA_START = r"^[=+\-@\t\r]"  # the same, as a regular expression for vectorised checks


@dataclass(frozen=True)
class Col:
    key: str
    header_zh: str
    fmt: Fmt = "text"


@dataclass
class Section:
    key: str
    title_zh: str
    columns: list[Col]
    frame: pd.DataFrame
    note_zh: str = ""
    sheet_zh: str = ""  # the worksheet name (<= 31 characters); the title when empty
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c.key for c in self.columns if c.key not in self.frame.columns]
        if missing:
            raise KeyError(f"section {self.key}: frame lacks {missing}")

    @property
    def headers(self) -> list[str]:
        return [c.header_zh for c in self.columns]

    @property
    def n_rows(self) -> int:
        return len(self.frame)

    def html_rows(self, limit: int | None = None) -> list[list[tuple[str, bool]]]:
        """Rows of (display text, is_number) cells, at most ``limit`` rows."""
        return html_cells(self.frame if limit is None else self.frame.head(limit), self.columns)


def html_cells(frame: pd.DataFrame, columns: list[Col]) -> list[list[tuple[str, bool]]]:
    """:meth:`Section.html_rows` of a whole frame: a list of (display text, is_number) cells a row."""
    cols = [(c.key, c.fmt) for c in columns]
    values = [frame[k].tolist() for k, _ in cols]
    out = []
    for i in range(len(frame)):
        out.append(
            [(display(values[j][i], fmt), fmt not in ("text", "date")) for j, (_, fmt) in enumerate(cols)]
        )
    return out


@dataclass
class RowsSection:
    """A section whose rows are already display cells (:func:`html_cells`), for the HTML template
    only: thousands of small sections (one per county's receipt) cut as list slices from the cells
    of one big frame, instead of a pandas slice and conversion per county. Renders exactly as the
    :class:`Section` of the same rows. ``rows`` may keep only the first rows of the ``n_rows``,
    as many as the template shows (its ``limit``)."""

    key: str
    title_zh: str
    headers: list[str]
    rows: list[list[tuple[str, bool]]]
    n_rows: int
    note_zh: str = ""

    def html_rows(self, limit: int | None = None) -> list[list[tuple[str, bool]]]:
        if len(self.rows) < self.n_rows and (limit is None or not 0 <= limit <= len(self.rows)):
            raise ValueError(f"section {self.key}: only {len(self.rows)} of its {self.n_rows} rows were kept")
        return self.rows if limit is None else self.rows[:limit]


def _missing(v: Any) -> bool:
    if v is None:
        return True
    if type(v) in (str, int, bool):  # the common cells: no pandas call (a receipt has thousands)
        return False
    if type(v) is float:
        return v != v
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def display(value: Any, fmt: Fmt) -> str:
    """A value as a reader sees it: 108.3%, 1,234, 12.50, 2018-06-30; empty as —."""
    if _missing(value):
        return "—"
    if fmt == "text":
        return str(value)
    if fmt == "date":
        return pd.Timestamp(value).strftime("%Y-%m-%d") if not isinstance(value, str) else value
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isinf(x):
        return "—"
    if fmt == "pct":
        return f"{x * 100:.1f}%"
    if fmt == "pp":
        return f"{x * 100:+.1f}个百分点"
    if fmt == "int":
        return f"{x:,.0f}"
    if fmt == "num0":
        return f"{x:,.0f}"
    return f"{x:,.2f}"


def inert_csv_text(value: Any) -> Any:
    """A text value safe for a spreadsheet opening the CSV: formula-looking text gets a ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"), ("'", "&#39;"))


def escape_html_array(arr: pa.Array) -> pa.Array:
    """Vectorised HTML escaping (& first, then < > " ') of an Arrow string array, as markupsafe does."""
    for raw, entity in _ESCAPES:
        arr = pc.replace_substring(arr, pattern=raw, replacement=entity)
    return arr


def escape_html(series: pd.Series) -> pd.Series:
    """:func:`escape_html_array` over a pandas Series (values as text)."""
    arr = pa.array(
        series.astype(str).tolist() if series.dtype == object else series.astype(str), type=pa.string()
    )
    return pd.Series(escape_html_array(arr).to_pylist(), index=series.index)


def display_array(series: pd.Series, fmt: Fmt) -> pa.Array:
    """:func:`display` over a whole column, as an Arrow string array without nulls."""
    if fmt == "text":
        arr = pa.array(series.astype(object).where(series.notna(), None).tolist(), type=pa.string())
        return pc.fill_null(arr, "—")
    if fmt == "date":
        days = pd.to_datetime(series, errors="coerce").to_numpy(dtype="datetime64[D]")
        text = np.datetime_as_string(days)
        return pa.array(np.where(np.isnat(days), "—", text).tolist(), type=pa.string())
    x = pd.to_numeric(series, errors="coerce").astype(float)
    spec = {"pct": "{:.1f}%", "pp": "{:+.1f}个百分点", "int": "{:,.0f}", "num0": "{:,.0f}"}.get(
        fmt, "{:,.2f}"
    )
    scaled = (x * 100 if fmt in ("pct", "pp") else x).to_numpy()
    one = spec.format
    return pa.array(["—" if not math.isfinite(v) else one(v) for v in scaled.tolist()], type=pa.string())


def display_series(series: pd.Series, fmt: Fmt) -> pd.Series:
    """:func:`display` over a whole column."""
    return pd.Series(display_array(series, fmt).to_pylist(), index=series.index, dtype=object)


def html_row_strings(section: Section) -> pd.Series:
    """One ``<tr>…</tr>`` per row of ``section``, every text cell escaped (Arrow kernels, no Python
    loop per cell): for tables too big for a template loop, such as a national 公示."""
    td = '<td style="border:1px solid #e1e6eb;padding:3px 6px;">'
    td_num = '<td style="border:1px solid #e1e6eb;padding:3px 6px;text-align:right;white-space:nowrap;">'
    if section.frame.empty:
        return pd.Series(dtype=str)
    parts: list[pa.Array | str] = ["<tr>"]
    for c in section.columns:
        cell = display_array(section.frame[c.key], c.fmt)
        if c.fmt == "text":
            cell = escape_html_array(cell)
        parts += [td if c.fmt in ("text", "date") else td_num, cell, "</td>"]
    parts.append("</tr>")
    rows = pc.binary_join_element_wise(*parts, "")
    return pd.Series(rows.to_pylist(), index=section.frame.index, dtype=object)
