"""The return template (模板下载, ``gaibao template``): an XLSX a clerk fills in Excel or WPS.

One data sheet (``项目进展`` or ``资金与师资``, first) with a title row, the contract's headers
(locked: the sheet is protected, the data cells are not), Excel data validation derived from the
contract's rules (drop-down lists for 项目类别 and 项目状态, numbers ≥ 0, planned investment > 0,
dates, 10-digit school codes, project ids of 1–32 characters), pre-filled with the projects of
the county's last accepted return before the period (ids, schools, types, planned figures), and a
``填报说明`` sheet, which the reader passes over. Text is written inert (``reports.xlsx``).
"""

from __future__ import annotations

import calendar
import io
from datetime import date, datetime
from typing import Any
from urllib.parse import quote

import pandas as pd
import sqlalchemy as sa

from gaibao.contract import COLUMNS, KIND_NAME_ZH, PROJECT_TYPES, STATUSES, Column
from reports.xlsx import inert_workbook

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SHEET_NAME = {"progress": "项目进展", "funding": "资金与师资"}
EMPTY_ROWS = 300  # rows with validation below the pre-filled ones
PREFILL = {
    "progress": (
        "school_code",
        "school_name",
        "project_id",
        "project_type",
        "planned_area_m2",
        "planned_invest_wan",
        "planned_start",
    ),
    "funding": (),
}
TEXT_TYPES = {"month", "code6", "code10", "text", "project_id", "enum"}


class TemplateRefused(ValueError):
    """A template that cannot be made (unknown county, bad period or kind); message in Chinese."""


def _county_name(engine: sa.Engine, county: str) -> str:
    with engine.connect() as conn:
        name = conn.execute(
            sa.text("SELECT county_name FROM ref_division WHERE county_code = :c"), {"c": county}
        ).scalar()
    if name is None:
        raise TemplateRefused(f"区划代码“{county}”不在区划表中")
    return name


def _period_label(period: str) -> str:
    return f"{int(period[:4])}年{int(period[5:7])}月"


def template_file_name(engine: sa.Engine, county: str, period: str, kind: str = "progress") -> str:
    return f"{_county_name(engine, county)}{KIND_NAME_ZH[kind]}{_period_label(period)}.xlsx"


def disposition(name: str) -> str:
    """Content-Disposition for a Chinese file name (RFC 6266 / 5987), with an ASCII fallback."""
    return f"attachment; filename=\"template.xlsx\"; filename*=UTF-8''{quote(name)}"


def prefill_rows(warehouse: Any, county: str, period: str, kind: str) -> pd.DataFrame:
    """The projects of the county's last accepted return before ``period`` (prefilled columns only)."""
    cols = PREFILL[kind]
    if not cols:
        return pd.DataFrame()
    prev = warehouse.previous_rows(kind, period, [county], columns=list(cols))
    return (
        prev.sort_values("row_number")[list(cols)].reset_index(drop=True)
        if len(prev)
        else pd.DataFrame(columns=list(cols))
    )


def _period_end(period: str) -> date:
    y, m = int(period[:4]), int(period[5:7])
    return date(y, m, calendar.monthrange(y, m)[1])


def _validation(col: Column, period: str) -> dict[str, Any] | None:
    if col.name == "project_type":
        return {
            "validate": "list",
            "source": list(PROJECT_TYPES),
            "error_message": "项目类别只能是 校舍改造 或 设备购置",
        }
    if col.name == "status":
        return {
            "validate": "list",
            "source": list(STATUSES),
            "error_message": "项目状态只能是 未开工、在建 或 已竣工",
        }
    if col.name == "planned_invest_wan":
        return {
            "validate": "decimal",
            "criteria": ">",
            "value": 0,
            "error_message": "规划投资必须大于 0（万元）",
        }
    if col.type in ("number", "int"):
        kind = "integer" if col.type == "int" else "decimal"
        return {
            "validate": kind,
            "criteria": ">=",
            "value": 0,
            "error_message": f"{col.label_zh} 必须是不小于 0 的数",
        }
    if col.type == "date":
        return {
            "validate": "date",
            "criteria": "between",
            "minimum": date(2000, 1, 1),
            "maximum": _period_end(period),
            "error_message": f"{col.header_zh} 须为 2000-01-01 至 {_period_end(period)} 之间的日期",
        }
    if col.type == "code10":
        return {
            "validate": "length",
            "criteria": "==",
            "value": 10,
            "error_message": "学校标识码为 10 位数字",
        }
    if col.type == "project_id":
        return {
            "validate": "length",
            "criteria": "between",
            "minimum": 1,
            "maximum": 32,
            "error_message": "项目编号为 1–32 位字母、数字或连字符",
        }
    return None


def instructions(kind: str, county_name: str, period: str) -> list[str]:
    lines = [
        f"{county_name}{KIND_NAME_ZH[kind]}（{_period_label(period)}）填报说明",
        "",
        f"1. 在“{SHEET_NAME[kind]}”工作表填写，每个项目一行；表头已锁定，请勿修改、增删列。",
        "2. 已按上次接收的报表预填项目编号、学校、项目类别和规划数，请核对并填写本期累计数；新项目在下方空行补充（新行也要填写报告期和区划代码）。",
        "3. 报告期与区划代码已填好，请勿修改；数字不带单位，金额单位为万元，面积单位为平方米。",
        "4. 日期填写为 2018-12-05 格式；未开工项目的开工面积、竣工面积、完成投资填 0。",
        "5. 累计数比上期减少、项目状态倒退或上期项目本期未填，入库时会提示；确有原因请在“备注”列说明。",
        "6. 填好后在信息平台“上传并即时检查”，或用 gaibao check 检查，无错误后报送。",
        "",
        "各列要求：",
    ]
    for col in COLUMNS[kind]:
        need = "必填" if col.required else "选填"
        extra = f"，可选：{'、'.join(col.choices)}" if col.choices else ""
        if col.personal:
            extra += "（个人信息，只保存在数据仓库，不公开）"
        lines.append(f"  {col.label_zh}：{need}{extra}")
    return lines


def build_template(warehouse: Any, county: str, period: str, kind: str = "progress") -> bytes:
    from portal.checking import UploadRefused, check_period_text

    if kind not in SHEET_NAME:
        raise TemplateRefused("报表种类只能是 progress（进展月报）或 funding（资金与师资月报）")
    try:
        period = check_period_text(period)
    except UploadRefused as exc:
        raise TemplateRefused(str(exc)) from None
    county_name = _county_name(warehouse.engine, county)
    rows = prefill_rows(warehouse, county, period, kind)
    columns = COLUMNS[kind]
    buf = io.BytesIO()
    wb = inert_workbook(buf)
    locked_title = wb.add_format({"bold": True, "font_size": 13, "locked": True})
    header = wb.add_format(
        {"bold": True, "bg_color": "#DCE6F1", "border": 1, "text_wrap": True, "locked": True}
    )
    text = wb.add_format({"num_format": "@", "locked": False})
    number = wb.add_format({"num_format": "0.00", "locked": False})
    integer = wb.add_format({"num_format": "0", "locked": False})
    day = wb.add_format({"num_format": "yyyy-mm-dd", "locked": False})
    ws = wb.add_worksheet(SHEET_NAME[kind])
    ws.write_string(0, 0, f"{county_name}{KIND_NAME_ZH[kind]}（{_period_label(period)}）", locked_title)
    n_rows = max(len(rows), 1) + (EMPTY_ROWS if kind == "progress" else 0)
    first, last = 2, 2 + n_rows - 1
    for j, col in enumerate(columns):
        fmt = (
            text
            if col.type in TEXT_TYPES
            else (day if col.type == "date" else (integer if col.type == "int" else number))
        )
        ws.set_column(j, j, max(10, min(30, len(col.label_zh) * 2)), fmt)
        ws.write_string(1, j, col.label_zh, header)
        rule = _validation(col, period)
        if rule:
            ws.data_validation(first, j, last, j, {**rule, "error_title": "填写有误"})
        filled = n_rows if kind == "funding" else len(rows)
        for i in range(n_rows):
            r = first + i
            if i < filled and col.name == "period":
                ws.write_string(r, j, period, text)
            elif i < filled and col.name == "county_code":
                ws.write_string(r, j, county, text)
            elif (
                i < filled
                and col.name in rows.columns
                and _write(ws, r, j, rows[col.name].iloc[i], col, text, number, day)
            ):
                pass
            else:  # an empty cell the clerk fills: unlocked in every spreadsheet program, not only by its column
                ws.write_blank(r, j, None, fmt)
    ws.freeze_panes(2, 0)
    ws.protect(
        "",
        {"insert_rows": True, "delete_rows": True, "format_columns": True, "sort": True, "autofilter": True},
    )
    info = wb.add_worksheet("填报说明")
    info.set_column(0, 0, 100)
    for i, line in enumerate(instructions(kind, county_name, period)):
        info.write_string(i, 0, line)
    wb.close()
    return buf.getvalue()


def _write(ws: Any, r: int, j: int, value: Any, col: Column, text: Any, number: Any, day: Any) -> bool:
    """Write a pre-filled value; False when there is none (the cell stays for the clerk)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return False
    if col.type == "date":
        stamp = pd.Timestamp(value)
        ws.write_datetime(r, j, datetime(stamp.year, stamp.month, stamp.day), day)
    elif col.type in ("number", "int"):
        ws.write_number(r, j, float(value), number)
    else:
        ws.write_string(r, j, str(value), text)
    return True


def template_for(
    warehouse: Any, county: str | None, period: str, kind: str = "progress"
) -> tuple[bytes, str]:
    """(bytes, file name) of the template a clerk downloads."""
    if not county:
        raise TemplateRefused("账号没有所属县区")
    content = build_template(warehouse, county, period, kind)
    return content, template_file_name(warehouse.engine, county, period, kind)
