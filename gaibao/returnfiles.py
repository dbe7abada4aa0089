"""Write a county return as a real file, in any of the shapes counties actually send.

The contract (``shared/contract.md``, "What real files look like") lists the variations the
pipeline must accept: CSV in UTF-8, UTF-8 with BOM, GBK or GB18030; XLSX with title and note
rows and the data on a named sheet; JSON records; headers with full-width or half-width
brackets, stray spaces, aliases or canonical names; 元 instead of 万元 and 万平方米 instead of
平方米; a trailing 合计 row; blank rows; thousands separators, full-width digits, ``—``/``-``
for none; every date and period form. This module produces them from canonical rows so the demo
and the tests can feed the reader the files it will meet.

Rows are dicts keyed by canonical names (``gaibao.contract``) holding Python values in canonical
units: numbers as ``int``/``float`` (万元, 平方米), dates as ``datetime.date``, periods as
``YYYY-MM``, ``None`` for empty. A ``str`` value is written exactly as given (no unit
conversion, no formatting): that is how deliberately broken values get into a file.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from gaibao.contract import COLUMNS, SUMMABLE_COLUMNS, Column

log = logging.getLogger(__name__)

CSV_ENCODINGS = ("utf-8", "utf-8-sig", "gbk", "gb18030")
FORMATS = ("csv", "xlsx", "json")
HEADER_STYLES = ("template", "halfwidth", "spaces", "aliases", "canonical")
NUMBER_STYLES = ("plain", "thousands", "fullwidth", "padded", "text")
DATE_STYLES = ("iso", "slash", "dot", "zh", "excel")
PERIOD_STYLES = ("iso", "slash", "compact", "zh")
NONE_STYLES = ("", "—", "-")

# From a canonical value to the value written under a header in another unit.
MONEY_UNITS: dict[str, float] = {"万元": 1.0, "元": 1e4}
AREA_UNITS: dict[str, float] = {"平方米": 1.0, "万平方米": 1e-4}

_ISO_PERIOD = re.compile(r"^\d{4}-\d{2}$")
_FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@dataclass(frozen=True)
class FileStyle:
    """How one file is laid out. Every field is one of the contract's accepted variations."""

    fmt: str = "csv"  # csv | xlsx | json
    encoding: str = "utf-8"  # CSV only: utf-8 | utf-8-sig | gbk | gb18030 (JSON is UTF-8, XLSX binary)
    headers: str = "template"  # template | halfwidth | spaces | aliases | canonical
    money_unit: str = "万元"  # 万元 | 元 (ignored with canonical headers, which carry no unit)
    area_unit: str = "平方米"  # 平方米 | 万平方米
    title_rows: bool = False  # a title row and a note row above the header (CSV and XLSX)
    data_sheet: str | None = None  # XLSX: data on a sheet of this name after a 填报说明 sheet
    total_row: bool = False  # a trailing 合计 row with the sums (progress, CSV and XLSX)
    blank_rows: bool = False  # blank rows inside the data and before the total row
    # plain | thousands (1,234.5) | fullwidth (１２３４.５) | padded (" 12.5 ") | text (XLSX: text cells)
    numbers: str = "plain"
    none_as: str = ""  # how an empty value is written: "", "—" or "-"
    date_style: str = "iso"  # iso | slash | dot | zh | excel (real Excel dates; ISO text outside XLSX)
    period_style: str = "iso"  # iso 2017-06 | slash 2017/06 | compact 201706 | zh 2017年6月
    serial_column: bool = False  # a leading 序号 column the contract does not know
    codes_as_numbers: bool = False  # XLSX: school and county codes stored as numbers

    def __post_init__(self) -> None:
        checks = {
            "fmt": (self.fmt, FORMATS),
            "encoding": (self.encoding, CSV_ENCODINGS),
            "headers": (self.headers, HEADER_STYLES),
            "money_unit": (self.money_unit, tuple(MONEY_UNITS)),
            "area_unit": (self.area_unit, tuple(AREA_UNITS)),
            "numbers": (self.numbers, NUMBER_STYLES),
            "none_as": (self.none_as, NONE_STYLES),
            "date_style": (self.date_style, DATE_STYLES),
            "period_style": (self.period_style, PERIOD_STYLES),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"FileStyle.{name}={value!r}: expected one of {allowed}")

    @property
    def file_encoding(self) -> str | None:
        """The text encoding of the file as written (None for XLSX)."""
        if self.fmt == "csv":
            return self.encoding
        return "utf-8" if self.fmt == "json" else None

    @property
    def suffix(self) -> str:
        return "." + self.fmt

    def with_(self, **changes: Any) -> FileStyle:
        return replace(self, **changes)


@dataclass(frozen=True)
class WrittenFile:
    """A file written by :func:`write_return`, with where each input row landed."""

    path: Path
    kind: str
    style: FileStyle
    headers: tuple[str, ...]  # the header cells as written (without a 序号 column)
    row_numbers: tuple[int, ...]  # per input row: the 1-based line/row number the clerk sees
    header_row: int | None  # 1-based line/row of the header (None for JSON)
    total_row: int | None  # 1-based line/row of the 合计 row, if any
    total_values: dict[str, float]  # the sums written in the total row, canonical units


# --------------------------------------------------------------------------------------------
# Headers


def _unit_for(col: Column, style: FileStyle) -> str | None:
    if col.unit == "万元":
        return style.money_unit
    if col.unit == "平方米":
        return style.area_unit
    return col.unit


def unit_factor(col: Column, style: FileStyle) -> float:
    """The factor from a canonical value of ``col`` to the value written under its header."""
    if style.headers == "canonical":
        return 1.0
    if col.unit == "万元":
        return MONEY_UNITS[style.money_unit]
    if col.unit == "平方米":
        return AREA_UNITS[style.area_unit]
    return 1.0


def header_for(col: Column, style: FileStyle) -> str:
    """The header a county writes for ``col`` in the given style."""
    if style.headers == "canonical":
        return col.name
    base = col.header_zh
    if style.headers == "aliases" and col.aliases:
        base = col.aliases[0]
    unit = _unit_for(col, style)
    if unit is None:
        return f" {base} " if style.headers == "spaces" else base
    if style.headers == "halfwidth":
        return f"{base}({unit})"
    if style.headers == "spaces":
        return f" {base} （{unit}）"
    return f"{base}（{unit}）"


# --------------------------------------------------------------------------------------------
# Values


def format_number(value: float, style: FileStyle) -> str:
    """A number as a county writes it in text (CSV, or XLSX numbers stored as text)."""
    if isinstance(value, bool):
        raise TypeError("booleans are not numbers here")
    return _format_number(float(value), style.numbers)


@lru_cache(maxsize=1 << 16)
def _format_number(value: float, numbers: str) -> str:
    grouped = numbers in ("thousands", "text")
    if value.is_integer():
        text = f"{int(value):,}" if grouped else str(int(value))
    else:
        text = f"{value:,.6f}" if grouped else f"{value:.6f}"
        text = text.rstrip("0").rstrip(".")
    if numbers == "fullwidth":
        text = text.translate(_FULLWIDTH)
    elif numbers == "padded":
        text = f" {text} "
    return text


def format_date(value: date, style: FileStyle) -> str:
    if isinstance(value, datetime):
        value = value.date()
    return _format_date(value, style.date_style)


@lru_cache(maxsize=1 << 14)
def _format_date(value: date, s: str) -> str:
    if s == "slash":
        return f"{value.year}/{value.month}/{value.day}"
    if s == "dot":
        return f"{value.year}.{value.month:02d}.{value.day:02d}"
    if s == "zh":
        return f"{value.year}年{value.month}月{value.day}日"
    return value.isoformat()  # iso, and excel outside a workbook


def format_period(period: str, style: FileStyle) -> str:
    return _format_period(period, style.period_style)


@lru_cache(maxsize=1024)
def _format_period(period: str, s: str) -> str:
    year, month = period[:4], int(period[5:7])
    if s == "slash":
        return f"{year}/{month:02d}"
    if s == "compact":
        return f"{year}{month:02d}"
    if s == "zh":
        return f"{year}年{month}月"
    return f"{year}-{month:02d}"


def _cell(col: Column, value: Any, style: FileStyle) -> Any:
    """The value of one cell, before format-specific writing: str, float, date or None."""
    if value is None:
        return None
    if col.type == "month" and isinstance(value, str) and _ISO_PERIOD.match(value):
        return format_period(value, style)
    if isinstance(value, str):
        return value  # written as given: deliberate bad values, codes, text
    if col.type == "date" and isinstance(value, date):
        return value
    if col.type in ("number", "int") and isinstance(value, (int, float)):
        factor = unit_factor(col, style)
        return value * factor if factor != 1.0 else value
    return str(value)


def _text(col: Column, cell: Any, style: FileStyle) -> str:
    """A cell as text (CSV)."""
    if cell is None:
        return style.none_as
    if isinstance(cell, str):
        return cell
    if isinstance(cell, date):
        return format_date(cell, style)
    if isinstance(cell, (int, float)):
        return format_number(cell, style)
    return str(cell)


def _json_value(col: Column, cell: Any, style: FileStyle) -> Any:
    if cell is None or isinstance(cell, str):
        return cell
    if isinstance(cell, date):
        return format_date(cell, style)
    if isinstance(cell, float) and cell.is_integer():
        return int(cell)
    if isinstance(cell, float):
        return round(cell, 6)
    return cell


# --------------------------------------------------------------------------------------------
# Layout shared by CSV and XLSX


def kind_columns(kind: str) -> tuple[Column, ...]:
    """The contract's columns of ``kind`` that a file carries: all of them (the template)."""
    return COLUMNS[kind]


def _totals(
    kind: str, rows: Sequence[Mapping[str, Any]], adjust: Mapping[str, float] | None
) -> dict[str, float]:
    sums: dict[str, float] = {}
    for name in SUMMABLE_COLUMNS.get(kind, ()):
        total = 0.0
        for row in rows:
            v = row.get(name)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                total += float(v)
        sums[name] = round(total + (adjust or {}).get(name, 0.0), 6)
    return sums


def default_title(kind: str, county_name: str, period: str) -> str:
    from gaibao.contract import KIND_NAME_ZH

    return f"{county_name}{KIND_NAME_ZH[kind]}（{int(period[:4])}年{int(period[5:7])}月）"


def default_note(county_name: str, style: FileStyle) -> str:
    return (
        f"填报单位：{county_name}教育局（盖章）    金额单位：{style.money_unit}    "
        f"面积单位：{style.area_unit}"
    )


def _layout(
    kind: str,
    rows: Sequence[Mapping[str, Any]],
    style: FileStyle,
    title: str | None,
    note: str | None,
    total_adjust: Mapping[str, float] | None,
) -> tuple[list[Any], list[str], list[int], int, int | None, dict[str, float]]:
    """Plan the sheet: a list of lines (title/note str, header, data dict index, None blank, 'TOTAL').

    Returns (lines, headers, row_numbers, header_row, total_row, totals).
    """
    cols = kind_columns(kind)
    headers = [header_for(c, style) for c in cols]
    lines: list[Any] = []
    if style.title_rows:
        lines.append(("title", title or ""))
        lines.append(("note", note or ""))
    lines.append(("header", None))
    header_row = len(lines)
    row_numbers: list[int] = []
    blank_after = {len(rows) // 2} if style.blank_rows and len(rows) >= 4 else set()
    for i in range(len(rows)):
        lines.append(("data", i))
        row_numbers.append(len(lines))
        if i in blank_after:
            lines.append(("blank", None))
    total_row = None
    totals: dict[str, float] = {}
    if style.total_row and kind in SUMMABLE_COLUMNS:
        if style.blank_rows:
            lines.append(("blank", None))
        totals = _totals(kind, rows, total_adjust)
        lines.append(("total", None))
        total_row = len(lines)
    return lines, headers, row_numbers, header_row, total_row, totals


def _total_cells(
    kind: str, cols: Sequence[Column], totals: Mapping[str, float], style: FileStyle
) -> list[Any]:
    cells: list[Any] = []
    for c in cols:
        if c.name == "school_name":
            cells.append("合计")
        elif c.name in totals:
            cells.append(_cell(c, totals[c.name], style))
        else:
            cells.append(None)
    return cells


# --------------------------------------------------------------------------------------------
# Writers


def write_return(
    path: Path | str,
    kind: str,
    rows: Iterable[Mapping[str, Any]],
    style: FileStyle = FileStyle(),
    *,
    county_name: str = "",
    period: str | None = None,
    title: str | None = None,
    note: str | None = None,
    total_adjust: Mapping[str, float] | None = None,
    created: datetime | None = None,
) -> WrittenFile:
    """Write ``rows`` of ``kind`` to ``path`` in ``style``; returns where each row landed.

    ``total_adjust`` adds to the sums of the 合计 row (a deliberate ``TOTAL_MISMATCH``).
    ``created`` is the workbook's creation time (XLSX); give it for byte-identical reruns.
    ``title`` defaults to ``怀远县全面改薄项目进展月报（2017年6月）``-style from county and period.
    """
    if kind not in COLUMNS:
        raise ValueError(f"unknown kind {kind!r}")
    data: list[dict[str, Any]] = [dict(r) for r in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if period is None and data:
        period = str(data[0].get("period") or "")
    if title is None and period:
        title = default_title(kind, county_name, period)
    if note is None:
        note = default_note(county_name, style)
    if style.fmt == "json":
        return _write_json(path, kind, data, style)
    lines, headers, row_numbers, header_row, total_row, totals = _layout(
        kind, data, style, title, note, total_adjust
    )
    if style.fmt == "csv":
        _write_csv(path, kind, data, style, lines, headers, totals)
    else:
        _write_xlsx(path, kind, data, style, lines, headers, totals, created)
    return WrittenFile(
        path=path,
        kind=kind,
        style=style,
        headers=tuple(headers),
        row_numbers=tuple(row_numbers),
        header_row=header_row,
        total_row=total_row,
        total_values=totals,
    )


def _write_csv(
    path: Path,
    kind: str,
    rows: list[dict[str, Any]],
    style: FileStyle,
    lines: list[Any],
    headers: list[str],
    totals: Mapping[str, float],
) -> None:
    cols = kind_columns(kind)
    width = len(cols) + (1 if style.serial_column else 0)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    serial = 0
    for what, ref in lines:
        if what in ("title", "note"):
            writer.writerow([ref] + [""] * (width - 1))
        elif what == "header":
            writer.writerow((["序号"] if style.serial_column else []) + headers)
        elif what == "blank":
            writer.writerow([""] * width)
        elif what == "total":
            cells = [
                _text(c, v, style) for c, v in zip(cols, _total_cells(kind, cols, totals, style), strict=True)
            ]
            writer.writerow(([""] if style.serial_column else []) + cells)
        else:
            serial += 1
            row = rows[ref]
            cells = [_text(c, _cell(c, row.get(c.name), style), style) for c in cols]
            writer.writerow(([str(serial)] if style.serial_column else []) + cells)
    path.write_bytes(buf.getvalue().encode(style.encoding))


def _write_json(path: Path, kind: str, rows: list[dict[str, Any]], style: FileStyle) -> WrittenFile:
    cols = kind_columns(kind)
    headers = [header_for(c, style).strip() for c in cols]
    records = []
    for row in rows:
        records.append(
            {
                h: _json_value(c, _cell(c, row.get(c.name), style), style)
                for h, c in zip(headers, cols, strict=True)
            }
        )
    path.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    return WrittenFile(
        path=path,
        kind=kind,
        style=style,
        headers=tuple(headers),
        row_numbers=tuple(range(1, len(rows) + 1)),
        header_row=None,
        total_row=None,
        total_values={},
    )


def _write_xlsx(
    path: Path,
    kind: str,
    rows: list[dict[str, Any]],
    style: FileStyle,
    lines: list[Any],
    headers: list[str],
    totals: Mapping[str, float],
    created: datetime | None = None,
) -> None:
    import xlsxwriter

    cols = kind_columns(kind)
    offset = 1 if style.serial_column else 0
    width = len(cols) + offset
    wb = xlsxwriter.Workbook(
        str(path), {"strings_to_numbers": False, "strings_to_formulas": False, "in_memory": True}
    )
    try:
        if created is not None:
            wb.set_properties({"created": created.replace(tzinfo=None)})
        if style.data_sheet:
            info = wb.add_worksheet("填报说明")
            info.write(0, 0, "填报说明")
            info.write(1, 0, "1. 每个项目填写一行，数据为截至报告期末的累计数。")
            info.write(2, 0, "2. 项目状态填写：未开工、在建、已竣工。")
            info.write(3, 0, "3. 日期格式：2017-06-15。")
            ws = wb.add_worksheet(style.data_sheet)
        else:
            ws = wb.add_worksheet("Sheet1")
        title_fmt = wb.add_format({"bold": True, "font_size": 14, "align": "center"})
        head_fmt = wb.add_format({"bold": True, "text_wrap": True, "border": 1})
        date_fmt = wb.add_format({"num_format": "yyyy-mm-dd"})
        ws.set_column(0, width - 1, 14)
        for r, (what, ref) in enumerate(lines):
            if what == "title":
                if width > 1:
                    ws.merge_range(r, 0, r, width - 1, ref, title_fmt)
                else:
                    ws.write_string(r, 0, ref, title_fmt)
            elif what == "note":
                ws.write_string(r, 0, ref)
            elif what == "header":
                if style.serial_column:
                    ws.write_string(r, 0, "序号", head_fmt)
                for c, h in enumerate(headers):
                    ws.write_string(r, c + offset, h, head_fmt)
            elif what == "blank":
                continue
            else:
                if what == "total":
                    cells = _total_cells(kind, cols, totals, style)
                else:
                    row = rows[ref]
                    cells = [_cell(c, row.get(c.name), style) for c in cols]
                    if style.serial_column:
                        ws.write_number(r, 0, ref + 1)
                for c, (col, cell) in enumerate(zip(cols, cells, strict=True)):
                    _xlsx_cell(ws, r, c + offset, col, cell, style, date_fmt)
    finally:
        wb.close()


def _xlsx_cell(ws: Any, r: int, c: int, col: Column, cell: Any, style: FileStyle, date_fmt: Any) -> None:
    if cell is None:
        if style.none_as:
            ws.write_string(r, c, style.none_as)
        return
    if isinstance(cell, str):
        if style.codes_as_numbers and col.type in ("code6", "code10") and cell.isdigit():
            ws.write_number(r, c, int(cell))
        else:
            ws.write_string(r, c, cell)
        return
    if isinstance(cell, date):
        if style.date_style == "excel":
            d = cell if isinstance(cell, datetime) else datetime(cell.year, cell.month, cell.day)
            ws.write_datetime(r, c, d, date_fmt)
        else:
            ws.write_string(r, c, format_date(cell, style))
        return
    if isinstance(cell, (int, float)):
        if style.numbers == "plain":
            ws.write_number(r, c, cell)
        else:
            ws.write_string(r, c, format_number(cell, style))
        return
    ws.write_string(r, c, str(cell))
