"""Write sections to an XLSX workbook (xlsxwriter): one sheet per section.

Chinese headers in a frozen header row, ``0.0%`` for rates, thousands separators for figures.
Every text cell goes through ``write_string`` and the workbook is opened with
``strings_to_formulas=False``: county text such as ``=HYPERLINK(...)`` stays inert text.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

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
    """Write ``sections`` (one sheet each) and ``images`` ({sheet name: PNG}) to ``target``."""
    wb = xlsxwriter.Workbook(
        target if not isinstance(target, Path) else str(target),
        {
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            "in_memory": True,
        },
    )
    header_fmt = wb.add_format(
        {"bold": True, "bg_color": "#DCE6F1", "border": 1, "text_wrap": True, "valign": "top"}
    )
    title_fmt = wb.add_format({"bold": True, "font_size": 13})
    formats = {k: wb.add_format({"num_format": v}) for k, v in _NUM_FORMATS.items()}
    date_fmt = wb.add_format({"num_format": "yyyy-mm-dd"})
    text_fmt = wb.add_format({"text_wrap": False})
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
        for j, col in enumerate(section.columns):
            values = frame[col.key].tolist()
            _write_column(ws, row0 + 1, j, values, col.fmt, formats, date_fmt, text_fmt)
        if len(frame):
            ws.autofilter(row0, 0, row0 + len(frame), max(0, len(section.columns) - 1))
        if section.note_zh:
            ws.write_string(row0 + len(frame) + 2, 0, section.note_zh)
    for sheet, png in (images or {}).items():
        ws = wb.add_worksheet(_sheet_name(sheet, used))
        ws.insert_image(0, 0, "chart.png", {"image_data": io.BytesIO(png), "x_scale": 0.8, "y_scale": 0.8})
    wb.close()


def _write_column(
    ws: Any, first_row: int, col: int, values: list, fmt: str, formats: dict, date_fmt: Any, text_fmt: Any
) -> None:
    for i, v in enumerate(values):
        r = first_row + i
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            ws.write_blank(r, col, None)
        elif fmt == "text":
            ws.write_string(r, col, str(v), text_fmt)
        elif fmt == "date":
            if isinstance(v, str):
                ws.write_string(r, col, v)
            else:
                ws.write_datetime(r, col, pd.Timestamp(v).to_pydatetime(), date_fmt)
        else:
            try:
                x = float(v)
            except (TypeError, ValueError):
                ws.write_string(r, col, str(v))
                continue
            if math.isinf(x) or math.isnan(x):
                ws.write_blank(r, col, None)
            else:
                ws.write_number(r, col, x, formats.get(fmt))


def workbook_bytes(
    sections: list[Section], images: dict[str, bytes] | None = None, title_zh: str | None = None
) -> bytes:
    buf = io.BytesIO()
    write_workbook(buf, sections, images, title_zh)
    return buf.getvalue()
