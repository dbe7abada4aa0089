"""Write county returns as real CSV / XLSX / JSON files, with the variations real counties send.

For tests in any part of the pipeline. Rows are dicts keyed by canonical names (see
``gaibao.contract``) holding values in the canonical units (万元, 平方米): numbers, strings,
``datetime.date`` or ``None``. The builder turns them into what a clerk's Excel/WPS produces.

    from filebuilders import progress_rows, write_return   # tests/ is on sys.path under pytest

    rows = progress_rows(3)                                   # three valid projects
    path = write_return(tmp_path / "r.csv", rows, "progress") # plain UTF-8 CSV, Chinese headers
    path = write_return(tmp_path / "r.xlsx", rows, "progress",
                        title_rows=["怀远县全面改薄项目进展月报（2017年6月）"],
                        units={"planned_invest_wan": "元"}, total_row=True, sheet_name="项目进展",
                        sheets_before=["说明"])
    content = return_bytes(rows, "progress", fmt="csv", encoding="gbk")

Options (all keyword-only; the defaults give the plain template file):

- ``fmt``: ``csv`` | ``xlsx`` | ``json`` (``write_return`` takes it from the path's suffix).
- ``encoding`` (CSV, JSON): ``utf-8`` | ``utf-8-sig`` (BOM) | ``gbk`` | ``gb18030``.
- ``delimiter`` (CSV): ``,`` by default.
- ``title_rows``: texts written one per row above the header (XLSX: merged across the width
  when ``merge_title``); ``blank_rows_above_header`` empty rows after them.
- ``header_style``: one of ``HEADER_STYLES``: ``zh`` (the template: ``规划面积（平方米）``),
  ``halfwidth`` (``规划面积(平方米)``, ``其中:中央资金(万元)``), ``spaced``
  (`` 规划面积 （平方米）``), ``en`` (canonical names), ``alias`` (the first alias where
  there is one, e.g. ``学校代码``).
- ``headers``: ``{canonical: header text}`` overriding the style for single columns.
- ``units``: ``{canonical: unit}`` writes that column in another unit (e.g. ``元``, ``万平方米``):
  the header says so and the values are converted from the canonical unit.
- ``columns``: which canonical columns to write and in what order (default: every column of
  the kind that appears in any row, in contract order). Leave one out to test refusals.
- ``extra_columns``: ``{header: value}`` columns the contract does not know (same value each row).
- ``total_row``: append a 合计 row (sums of the numeric columns); ``total_label`` 合计/总计.
- ``blank_rows``: data-row indices before which an empty row is inserted (``len(rows)``: after
  the last row).
- ``sheet_name``, ``sheets_before`` (XLSX): the data sheet's name and the names of sheets put in
  front of it (each holds one line of text).
- ``json_wrap`` (JSON): None for a bare list of records, or a key (``records``, ``data``...)
  under which the list sits, as a platform returns it.
- ``excel_dates`` (XLSX): ``datetime.date`` values as real Excel dates (default) or as text.

``build_table`` gives the header and value rows for tests that lay a file out by hand;
``cell_text`` turns a value into a CSV cell the same way. ``clerk_row(index, ...)`` is deliberately not provided: tests state the row numbers they
expect, as a clerk would read them in Excel.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gaibao.contract import COLUMNS, SUMMABLE_COLUMNS, UNIT_FACTORS, Column, column

HEADER_STYLES = ("zh", "halfwidth", "spaced", "en", "alias")
FORMATS = ("csv", "xlsx", "json")

Row = Mapping[str, Any]


# --------------------------------------------------------------------------------------------
# Sample rows


def progress_rows(
    n: int = 3, *, county_code: str = "340321", period: str = "2017-06"
) -> list[dict[str, Any]]:
    """``n`` valid progress rows (alternating 校舍改造 / 设备购置, statuses cycling)."""
    rows = []
    for i in range(n):
        building = i % 2 == 0
        status = ("已竣工", "在建", "未开工")[i % 3]
        started = 0.0 if status == "未开工" or not building else 1200.0 + i
        completed = started if status == "已竣工" else (0.0 if status == "未开工" else started / 2)
        invest_done = 0.0 if status == "未开工" else 80.0 + i
        rows.append(
            {
                "period": period,
                "county_code": county_code,
                "school_code": f"3{county_code[1:]}{i:04d}"[:10],
                "school_name": f"怀远县第{i + 1}小学",
                "project_id": f"HY-2017-{i + 1:03d}",
                "project_type": "校舍改造" if building else "设备购置",
                "status": status,
                "planned_area_m2": 1500.0 + i if building else 0.0,
                "started_area_m2": started,
                "completed_area_m2": completed,
                "planned_invest_wan": 120.5 + i,
                "completed_invest_wan": invest_done,
                "funds_central_wan": invest_done / 2,
                "funds_local_wan": invest_done / 2,
                "planned_start": dt.date(2017, 3, 1),
                "actual_start": None if status == "未开工" else dt.date(2017, 3, 15),
                "completed_date": dt.date(2017, 6, 10) if status == "已竣工" else None,
                "reporter": "张三",
                "phone": "0552-1234567",
                "note": None,
            }
        )
    return rows


def funding_rows(*, county_code: str = "341222", period: str = "2017-06") -> list[dict[str, Any]]:
    """One valid funding row (Taihe's reported figures)."""
    return [
        {
            "period": period,
            "county_code": county_code,
            "funds_total_wan": 145000.0,
            "funds_rural_infra_wan": 55000.0,
            "funds_urban_wan": 58600.0,
            "funds_equipment_wan": 22800.0,
            "funds_land_wan": 5600.0,
            "land_mu": 1277.0,
            "teachers_recruited": 1766,
            "teachers_rural": 1464,
            "rural_teacher_subsidy_wan": 1200.0,
        }
    ]


# --------------------------------------------------------------------------------------------
# Headers and values


def header_for(col: Column, style: str = "zh", unit: str | None = None) -> str:
    """The header a county would write for ``col`` in ``style`` (``unit`` overrides the canonical)."""
    if style not in HEADER_STYLES:
        raise ValueError(f"header_style must be one of {HEADER_STYLES}")
    unit = unit or col.unit
    if style == "en":
        return col.name if unit == col.unit else f"{col.name}({unit})"
    base = col.aliases[0] if style == "alias" and col.aliases else col.header_zh
    if style == "zh":
        return f"{base}（{unit}）" if unit else base
    if style == "halfwidth":
        base = base.replace("：", ":")
        return f"{base}({unit})" if unit else base
    # spaced: stray spaces around and inside, full-width brackets
    return f" {base} （{unit}）" if unit else f" {base} "


def _scaled(value: Any, col: Column, unit: str | None) -> Any:
    """A canonical-unit value expressed in ``unit``."""
    if unit is None or col.unit is None or unit == col.unit or not isinstance(value, (int, float)):
        return value
    factor = UNIT_FACTORS[col.unit][unit]
    return round(value / factor, 6)


def cell_text(value: Any) -> str:
    """A value as a clerk's CSV cell: None -> "", 1500.0 -> "1500", dates ISO."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


# --------------------------------------------------------------------------------------------
# The table, then a format


def build_table(
    rows: Sequence[Row],
    kind: str = "progress",
    *,
    header_style: str = "zh",
    headers: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    columns: Sequence[str] | None = None,
    extra_columns: Mapping[str, Any] | None = None,
    total_row: bool = False,
    total_label: str = "合计",
) -> tuple[list[str], list[list[Any]]]:
    """Header texts and value rows (in the written units), before blank/title rows and format."""
    units = dict(units or {})
    headers = dict(headers or {})
    if columns is None:
        present = {k for r in rows for k in r}
        columns = [c.name for c in COLUMNS[kind] if c.name in present]
    cols = [column(kind, n) for n in columns]
    header = [headers.get(c.name) or header_for(c, header_style, units.get(c.name)) for c in cols]
    header += list(extra_columns or {})
    body = [
        [_scaled(r.get(c.name), c, units.get(c.name)) for c in cols] + list((extra_columns or {}).values())
        for r in rows
    ]
    if total_row:
        body.append(_total_row(rows, kind, cols, units, total_label) + [None] * len(extra_columns or {}))
    return header, body


def _total_row(
    rows: Sequence[Row], kind: str, cols: list[Column], units: Mapping[str, str], label: str
) -> list[Any]:
    summable = set(SUMMABLE_COLUMNS.get(kind, ())) | {c.name for c in cols if c.type in ("number", "int")}
    label_col = "school_name" if kind == "progress" else "county_code"
    out: list[Any] = []
    for c in cols:
        if c.name == label_col:
            out.append(label)
        elif c.name in summable:
            total = sum(float(r.get(c.name) or 0) for r in rows)
            out.append(_scaled(total, c, units.get(c.name)))
        else:
            out.append(None)
    return out


def return_bytes(
    rows: Sequence[Row],
    kind: str = "progress",
    *,
    fmt: str = "csv",
    encoding: str = "utf-8",
    delimiter: str = ",",
    title_rows: Sequence[str] = (),
    blank_rows_above_header: int = 0,
    merge_title: bool = True,
    blank_rows: Iterable[int] = (),
    sheet_name: str = "Sheet1",
    sheets_before: Sequence[str] = (),
    json_wrap: str | None = None,
    excel_dates: bool = True,
    **table: Any,
) -> bytes:
    """The bytes of a return file; ``table`` takes ``build_table``'s keyword options."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}")
    header, body = build_table(rows, kind, **table)
    if fmt == "json":
        records = [{h: _json_value(v) for h, v in zip(header, r, strict=True)} for r in body]
        for i in sorted(set(blank_rows), reverse=True):
            records.insert(i, {h: None for h in header})
        data: Any = records if json_wrap is None else {"code": 0, "msg": "ok", json_wrap: records}
        return json.dumps(data, ensure_ascii=False, indent=1).encode(encoding)

    blanks = set(blank_rows)
    grid: list[list[Any] | None] = []  # None: a blank row
    for i, r in enumerate(body):
        if i in blanks:
            grid.append(None)
        grid.append(r)
    if len(body) in blanks:
        grid.append(None)
    top: list[list[Any] | None] = [[t] for t in title_rows] + [None] * blank_rows_above_header

    if fmt == "csv":
        out = io.StringIO(newline="")
        writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
        width = len(header)
        for r in top:
            writer.writerow([] if r is None else [r[0]] + [""] * (width - 1))
        writer.writerow(header)
        for r in grid:
            writer.writerow([""] * width if r is None else [cell_text(v) for v in r])
        return out.getvalue().encode(encoding)

    return _xlsx_bytes(header, top, grid, sheet_name, sheets_before, merge_title, excel_dates)


def _xlsx_bytes(
    header: list[str],
    top: list[list[Any] | None],
    grid: list[list[Any] | None],
    sheet_name: str,
    sheets_before: Sequence[str],
    merge_title: bool,
    excel_dates: bool,
) -> bytes:
    import xlsxwriter

    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": True})
    date_fmt = book.add_format({"num_format": "yyyy-mm-dd"})
    datetime_fmt = book.add_format({"num_format": "yyyy-mm-dd hh:mm"})
    for name in sheets_before:
        book.add_worksheet(name).write(0, 0, f"{name}：请在“{sheet_name}”表填报")
    sheet = book.add_worksheet(sheet_name)
    r = 0
    for row in top:
        if row is not None:
            if merge_title and len(header) > 1:
                sheet.merge_range(r, 0, r, len(header) - 1, row[0])
            else:
                sheet.write_string(r, 0, row[0])
        r += 1
    sheet.write_row(r, 0, header)
    r += 1
    for row in grid:
        if row is not None:
            for c, value in enumerate(row):
                if value is None:
                    continue
                if isinstance(value, dt.datetime):  # a date with a time of day, as some clerks type
                    sheet.write_datetime(r, c, value, datetime_fmt)
                elif isinstance(value, dt.date):
                    if excel_dates:
                        sheet.write_datetime(r, c, dt.datetime.combine(value, dt.time()), date_fmt)
                    else:
                        sheet.write_string(r, c, value.isoformat())
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    sheet.write_number(r, c, value)
                else:
                    sheet.write_string(r, c, str(value))
        r += 1
    book.close()
    return buf.getvalue()


def write_return(path: Path | str, rows: Sequence[Row], kind: str = "progress", **options: Any) -> Path:
    """Write a return file at ``path``; the format comes from the suffix unless ``fmt`` is given."""
    path = Path(path)
    options.setdefault("fmt", path.suffix.lstrip(".").lower() or "csv")
    path.write_bytes(return_bytes(rows, kind, **options))
    return path
