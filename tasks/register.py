"""The expected-returns register for a period: who sent what, accepted or refused, late, or missing.

Plain SQL reads through the warehouse's public face; no Prefect, no Great Expectations, so that
``gaibao status`` answers at once. The register is a frame (:func:`returns_register`) with three
renderings: a terminal table (:func:`format_register`), JSON and CSV for scripts
(:func:`register_json`, :func:`register_csv`). Every cell goes through one conversion
(:func:`_cell`): a missing value (None, NaN, NaT, pandas' NA) is empty, whatever pandas made of
it, so that no mix of accepted, refused, superseded, late and missing returns can break a
rendering.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from gaibao.contract import KIND_NAME_ZH, SUBMITTED_KINDS

STATE_ZH = {
    "accepted": "已接收",
    "refused": "被拒收",
    "superseded": "已被替换",
    "missing": "未报送",
}

REGISTER_COLUMNS = [
    "county_code",
    "county_name",
    "city_name",
    "kind",
    "state",
    "is_late",
    "submission_id",
    "file_name",
    "received_at",
    "rules_version",
    "rows_accepted",
    "rows_rejected",
    "versions",
    "reason",
]

# The terminal table's headers, one per register column (the same order).
HEADERS_ZH = {
    "county_code": "区划代码",
    "county_name": "县区",
    "city_name": "所属市",
    "kind": "报表",
    "state": "状态",
    "is_late": "迟报",
    "submission_id": "报送编号",
    "file_name": "文件",
    "received_at": "接收时间",
    "rules_version": "规则版本",
    "rows_accepted": "接收行",
    "rows_rejected": "拒收行",
    "versions": "版本数",
    "reason": "原因",
}

FORMATS = ("table", "json", "csv")
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")  # as reports.sections, without its imports


def expected_counties(warehouse) -> pd.DataFrame:
    """Counties expected to report: those with a five-year plan row, plus any that ever submitted.

    A county that submitted but is not in the division reference is listed too, without a name.
    """
    return warehouse.query(
        """
        SELECT e.county_code, d.county_name, d.city_code, d.city_name
        FROM (SELECT county_code FROM ref_plan UNION SELECT county_code FROM submission) e
        LEFT JOIN ref_division d ON d.county_code = e.county_code
        ORDER BY e.county_code
        """
    )


def check_period(period: str) -> str:
    """``period`` when it is a month ``YYYY-MM``; ``ValueError`` (in Chinese) otherwise."""
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period or ""):
        raise ValueError(f"报告期应写作 YYYY-MM（如 2018-12），而不是 {period!r}")
    return period


def due_date(period: str, due_day: int = 5) -> date:
    """The day returns for ``period`` are due: day ``due_day`` of the next month."""
    year, month = int(period[:4]), int(period[5:7])
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return date(year, month, due_day)


def returns_register(
    warehouse,
    period: str,
    counties: list[str] | None = None,
    *,
    history: bool = False,
    due_day: int = 5,
    tz: str = "Asia/Shanghai",
    today: date | None = None,
) -> pd.DataFrame:
    """One row per expected county and return kind for ``period`` (``REGISTER_COLUMNS``).

    The state is that of the newest file received: ``accepted`` (the current accepted return),
    ``refused`` (the newest file was refused; an earlier accepted one may still stand, said in
    ``reason``), or ``missing`` (``reason`` says whether the due day has passed). The row shows
    the submission the state is about: the accepted one, or the refused newest file.

    ``history``: one row per file received instead (each with its own state, ``superseded``
    included), and one row for each county and kind with none.
    """
    expected = expected_counties(warehouse)
    if counties:
        expected = expected[expected["county_code"].isin(list(counties))]
    subs = warehouse.query(
        """
        SELECT submission_id, kind, county_code, file_name, received_at, status, reason,
               rows_accepted, rows_rejected, is_late, rules_version
        FROM submission WHERE period = :period
        """,
        {"period": period},
    )
    subs = subs[subs["kind"].isin(SUBMITTED_KINDS) & subs["county_code"].isin(expected["county_code"])]
    subs = subs.assign(received_at=_utc(subs["received_at"]))
    subs = subs.sort_values(["county_code", "kind", "received_at", "submission_id"], kind="stable")
    keys = ["county_code", "kind"]
    versions = subs.groupby(keys).size().rename("versions")

    grid = expected.merge(pd.DataFrame({"kind": list(SUBMITTED_KINDS)}), how="cross")
    grid = grid.join(versions, on=keys)
    grid["versions"] = grid["versions"].fillna(0).astype("int64")

    if history:
        shown = subs.rename(columns={"status": "state"})
        standing = subs[subs["status"] == "accepted"].set_index(keys)["file_name"]
        refused = shown["state"] == "refused"
        still = pd.Series(list(zip(shown["county_code"], shown["kind"], strict=True)), index=shown.index).map(
            standing.to_dict()
        )
        shown = shown.assign(reason=_reason_refused(shown["reason"], still.where(refused)))
        rows = grid.merge(shown, on=keys, how="left")
    else:
        newest = subs.drop_duplicates(keys, keep="last").set_index(keys)
        accepted = subs[subs["status"] == "accepted"].drop_duplicates(keys, keep="last").set_index(keys)
        standing = accepted.reindex(newest.index)
        refused = newest["status"] == "refused"
        # the accepted return is shown unless the newest file was refused: then that file is
        use_accepted = ~refused & standing["submission_id"].notna()
        shown = newest.mask(use_accepted, standing, axis=0)
        shown["state"] = refused.map({True: "refused", False: "accepted"})
        shown["reason"] = _reason_refused(
            shown["reason"].where(refused), standing["file_name"].where(refused)
        )
        rows = grid.merge(shown.drop(columns="status").reset_index(), on=keys, how="left")

    missing = rows["submission_id"].isna()
    rows.loc[missing, "state"] = "missing"
    rows.loc[missing, "reason"] = _missing_reason(period, due_day, tz, today)
    rows["is_late"] = [None if _is_na(v) else bool(v) for v in rows["is_late"]]
    for column in ("rows_accepted", "rows_rejected"):
        rows[column] = pd.array(pd.to_numeric(rows[column], errors="coerce").round(), dtype="Float64").astype(
            "Int64"
        )
    rows["kind_order"] = rows["kind"].map({k: i for i, k in enumerate(SUBMITTED_KINDS)})
    rows = rows.sort_values(["county_code", "kind_order", "received_at"], kind="stable", na_position="last")
    return rows[REGISTER_COLUMNS].reset_index(drop=True)


def _utc(values: pd.Series) -> pd.Series:
    """Received times as tz-aware UTC timestamps (SQLite gives naive UTC, PostgreSQL aware)."""
    stamps = pd.to_datetime(values, errors="coerce", utc=False)
    if getattr(stamps.dt, "tz", None) is None:
        return stamps.dt.tz_localize("UTC")
    return stamps.dt.tz_convert("UTC")


def _reason_refused(reasons: pd.Series, standing: pd.Series) -> pd.Series:
    out = []
    for reason, still in zip(reasons, standing, strict=True):
        text = "" if _is_na(reason) else str(reason)
        if not _is_na(still):
            text = f"{text}（此前已接收的 {still} 仍然有效）"
        out.append(text or None)
    return pd.Series(out, index=reasons.index, dtype=object)


def _missing_reason(period: str, due_day: int, tz: str, today: date | None) -> str:
    due = due_date(period, due_day)
    today = today or datetime.now(ZoneInfo(tz)).date()
    if today > due:
        return f"尚未收到报表（应于 {due:%Y-%m-%d} 前报送，已逾期）"
    return f"尚未收到报表（应于 {due:%Y-%m-%d} 前报送）"


def _is_na(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    try:
        return bool(pd.isna(value)) if not isinstance(value, list | tuple | dict) else False
    except (TypeError, ValueError):
        return False


def _cell(value: Any, column: str, tz: str) -> str:
    """One register value as text: empty when missing, times in ``tz``, booleans in Chinese
    for the terminal (the JSON and CSV renderings use :func:`_plain`)."""
    if _is_na(value):
        return ""
    if column == "kind":
        return KIND_NAME_ZH.get(str(value), str(value))
    if column == "state":
        return STATE_ZH.get(str(value), str(value))
    if column == "is_late":
        return "是" if bool(value) else "否"
    if column == "received_at":
        return pd.Timestamp(value).tz_convert(tz).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _plain(value: Any, column: str, tz: str) -> Any:
    """One register value for JSON and CSV: None when missing, times ISO 8601 in ``tz``."""
    if _is_na(value):
        return None
    if column == "received_at":
        return pd.Timestamp(value).tz_convert(tz).isoformat()
    if column == "is_late":
        return bool(value)
    if column in ("rows_accepted", "rows_rejected", "versions"):
        return int(value)
    return str(value)


def register_counts(register: pd.DataFrame) -> dict[str, int]:
    """How many returns are in each state, and how many were late."""
    counts = register["state"].value_counts().to_dict()
    late = sum(1 for v in register["is_late"] if not _is_na(v) and bool(v))
    out = {state: int(counts.get(state, 0)) for state in STATE_ZH}
    out["late"] = late
    return out


# A terminal table of more rows than this lists only the returns that need attention (rich lays
# out a national month's 5,700 rows in about 7 s); the JSON and CSV renderings list every row.
TABLE_MAX_ROWS = 500


def needs_attention(register: pd.DataFrame) -> pd.Series:
    """Rows that are not an accepted return received on time: refused, missing, late."""
    on_time = pd.Series([not _is_na(v) and not bool(v) for v in register["is_late"]], index=register.index)
    return ~(register["state"].isin(["accepted", "superseded"]) & on_time)


def format_register(
    register: pd.DataFrame,
    period: str,
    tz: str = "Asia/Shanghai",
    width: int = 240,
    max_rows: int | None = TABLE_MAX_ROWS,
) -> str:
    """The register as a terminal table, in Chinese (times in ``tz``). More than ``max_rows``
    rows: only those that need attention, and a line saying how many were left out."""
    from rich.console import Console
    from rich.table import Table

    shown = register
    if max_rows is not None and len(register) > max_rows:
        shown = register[needs_attention(register)]
    table = Table(title=f"{period} 报送登记表（expected-returns register）", show_lines=False)
    for column in REGISTER_COLUMNS:
        table.add_column(HEADERS_ZH[column], overflow="fold")
    columns = list(shown.columns)
    for values in shown.itertuples(index=False, name=None):
        table.add_row(*(_cell(v, c, tz) for v, c in zip(values, columns, strict=True)))
    counts = register_counts(register)
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=False)
    console.print(table)
    summary = f"已接收 {counts['accepted']}，被拒收 {counts['refused']}，未报送 {counts['missing']}，迟报 {counts['late']}"
    if counts["superseded"]:
        summary += f"，已被替换 {counts['superseded']}"
    console.print(summary)
    if len(shown) < len(register):
        console.print(
            f"共 {len(register)} 行，只列出需要处理的 {len(shown)} 行（被拒收、未报送、迟报）；"
            "全部行：--format csv 或 --format json，或用 --county 指定县区"
        )
    return buf.getvalue()


def register_records(register: pd.DataFrame, tz: str = "Asia/Shanghai") -> list[dict[str, Any]]:
    columns = list(register.columns)
    return [
        {c: _plain(v, c, tz) for v, c in zip(values, columns, strict=True)}
        for values in register.itertuples(index=False, name=None)
    ]


def register_json(register: pd.DataFrame, period: str, tz: str = "Asia/Shanghai") -> str:
    """The register as JSON: ``{"period", "counts", "returns": [one object per row]}``."""
    payload = {
        "period": period,
        "counts": register_counts(register),
        "returns": register_records(register, tz),
    }
    return json.dumps(payload, ensure_ascii=False, indent=2)


def register_csv(register: pd.DataFrame, tz: str = "Asia/Shanghai") -> str:
    """The register as CSV (header: ``REGISTER_COLUMNS``). County text that looks like a
    spreadsheet formula gets a leading ``'``."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(register.columns))
    for record in register_records(register, tz):
        writer.writerow([_inert("" if v is None else v) for v in record.values()])
    return buf.getvalue()


def _inert(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def render_register(
    register: pd.DataFrame, period: str, fmt: str = "table", tz: str = "Asia/Shanghai"
) -> str:
    """The register in one of ``FORMATS``."""
    if fmt == "json":
        return register_json(register, period, tz)
    if fmt == "csv":
        return register_csv(register, tz)
    if fmt == "table":
        return format_register(register, period, tz)
    raise ValueError(f"unknown format {fmt!r}: one of {', '.join(FORMATS)}")
