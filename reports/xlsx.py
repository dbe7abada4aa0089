"""Write sections to an XLSX workbook (xlsxwriter): one sheet per section.

Chinese headers in a frozen header row, ``0.0%`` for rates, thousands separators for figures.
Every text cell goes through ``write_string`` and the workbook is opened with
``strings_to_formulas=False``: county text such as ``=HYPERLINK(...)`` stays inert text.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xlsxwriter

from reports.sections import Section

_SHEET_BAD = re.compile(r"[\[\]:*?/\\]")

_NUM_FORMATS = {"int": "#,##0", "num0": "#,##0", "num2": "#,##0.00", "pct": "0.0%", "pp": "+0.0%;-0.0%;0.0%"}


def _sheet_name(name: str, used: set[str]) -> str:
    base = _SHEET_BAD.sub("_", name)[:31] or "Sheet"
    candidate, n = base, 2
    while candidate in used:
        suffix = f"({n})"
        candidate = base[: 31 - len(suffix)] + suffix
        n += 1
    used.add(candidate)
    return candidate


def _width(header: str, fmt: str) -> float:
    if fmt == "text":
        return max(12.0, min(40.0, len(header) * 2.2))
    return max(10.0, min(22.0, len(header) * 2.0))


def write_workbook(
    target: Path | str | io.BytesIO,
    sections: list[Section],
    images: dict[str, bytes] | None = None,
    title_zh: str | None = None,
) -> None:
    """Write ``sections`` (one sheet each) and ``images`` ({sheet name: PNG}) to ``target``.

    Rows are written in order (``constant_memory``: each sheet streams to a temporary file), so
    a national exception list of 100,000 rows costs neither memory nor much time.
    """
    to_file = not isinstance(target, io.BytesIO)
    wb = xlsxwriter.Workbook(
        str(target) if to_file else target,
        {
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            "constant_memory": to_file,
            "in_memory": not to_file,
        },
    )
    header_fmt = wb.add_format(
        {"bold": True, "bg_color": "#DCE6F1", "border": 1, "text_wrap": True, "valign": "top"}
    )
    title_fmt = wb.add_format({"bold": True, "font_size": 13})
    formats = {k: wb.add_format({"num_format": v}) for k, v in _NUM_FORMATS.items()}
    date_fmt = wb.add_format({"num_format": "yyyy-mm-dd"})
    used: set[str] = set()
    for section in sections:
        ws = wb.add_worksheet(_sheet_name(section.sheet_zh or section.title_zh, used))
        row0 = 0
        if title_zh:
            ws.write_string(0, 0, f"{title_zh}：{section.title_zh}", title_fmt)
            row0 = 1
        for j, col in enumerate(section.columns):
            ws.write_string(row0, j, col.header_zh, header_fmt)
            ws.set_column(j, j, _width(col.header_zh, col.fmt))
        ws.freeze_panes(row0 + 1, 0)
        frame = section.frame
        writers = [_column_writer(ws, frame[c.key], c.fmt, formats, date_fmt) for c in section.columns]
        for i in range(len(frame)):
            r = row0 + 1 + i
            for j, write in enumerate(writers):
                write(r, j, i)
        if len(frame):
            ws.autofilter(row0, 0, row0 + len(frame), max(0, len(section.columns) - 1))
        if section.note_zh:
            ws.write_string(row0 + len(frame) + 2, 0, section.note_zh)
    for sheet, png in (images or {}).items():
        ws = wb.add_worksheet(_sheet_name(sheet, used))
        ws.insert_image(0, 0, "chart.png", {"image_data": io.BytesIO(png), "x_scale": 0.8, "y_scale": 0.8})
    wb.close()


def _column_writer(ws: Any, series: pd.Series, fmt: str, formats: dict, date_fmt: Any) -> Any:
    """A function (row, col, i) writing value i of ``series``: text as strings, never formulas."""
    if fmt == "text":
        values = series.astype(object).where(series.notna(), None).tolist()

        def text(r: int, c: int, i: int) -> None:
            v = values[i]
            if v is not None:
                ws.write_string(r, c, str(v))

        return text
    if fmt == "date":
        stamps = pd.to_datetime(series, errors="coerce")
        dates = [None if pd.isna(t) else t.to_pydatetime() for t in stamps]
        raw = series.tolist()

        def date(r: int, c: int, i: int) -> None:
            if dates[i] is not None:
                ws.write_datetime(r, c, dates[i], date_fmt)
            elif isinstance(raw[i], str):
                ws.write_string(r, c, raw[i])

        return date
    numbers = pd.to_numeric(series, errors="coerce").astype(float).to_numpy()
    ok = np.isfinite(numbers).tolist()
    nums = numbers.tolist()
    cell_fmt = formats.get(fmt)

    def number(r: int, c: int, i: int) -> None:
        if ok[i]:
            ws.write_number(r, c, nums[i], cell_fmt)

    return number


def workbook_bytes(
    sections: list[Section], images: dict[str, bytes] | None = None, title_zh: str | None = None
) -> bytes:
    buf = io.BytesIO()
    write_workbook(buf, sections, images, title_zh)
    return buf.getvalue()


INERT_TEXT_OPTIONS = {"strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False}


def inert_workbook(target: io.BytesIO) -> xlsxwriter.Workbook:
    """An in-memory workbook where text stays text (``=HYPERLINK(...)`` from a county is never a
    formula), for writers other than :func:`write_workbook` (the portal's return template)."""
    return xlsxwriter.Workbook(target, {**INERT_TEXT_OPTIONS, "in_memory": True})
