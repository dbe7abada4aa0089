"""The expected-returns register for a period: who sent what, accepted or refused, late, or missing.

Plain SQL reads through the warehouse's public face; no Prefect, no Great Expectations, so that
``gaibao status`` answers at once.
"""

from __future__ import annotations

import pandas as pd

from gaibao.contract import KIND_NAME_ZH, SUBMITTED_KINDS

STATE_ZH = {
    "accepted": "已接收",
    "refused": "被拒收",
    "missing": "未报送",
}

REGISTER_COLUMNS = [
    "county_code",
    "county_name",
    "city_name",
    "kind",
    "state",
    "is_late",
    "file_name",
    "received_at",
    "rows_accepted",
    "rows_rejected",
    "versions",
    "reason",
]


def expected_counties(warehouse) -> pd.DataFrame:
    """Counties expected to report: those with a five-year plan row, plus any that ever submitted."""
    return warehouse.query(
        """
        SELECT d.county_code, d.county_name, d.city_code, d.city_name
        FROM ref_division d
        WHERE d.county_code IN (SELECT county_code FROM ref_plan)
           OR d.county_code IN (SELECT county_code FROM submission)
        ORDER BY d.county_code
        """
    )


def returns_register(warehouse, period: str, counties: list[str] | None = None) -> pd.DataFrame:
    """One row per expected county and return kind for ``period``.

    The state is that of the newest file received: ``accepted`` (the current accepted return),
    ``refused`` (the newest file was refused; an earlier accepted one may still stand, shown in
    ``reason``), or ``missing``.
    """
    expected = expected_counties(warehouse)
    if counties:
        expected = expected[expected["county_code"].isin(counties)]
    subs = warehouse.query(
        """
        SELECT submission_id, kind, county_code, period, file_name, received_at, status, reason,
               rows_accepted, rows_rejected, is_late
        FROM submission WHERE period = :period
        """,
        {"period": period},
    )
    rows: list[dict[str, object]] = []
    for county in expected.itertuples(index=False):
        for kind in SUBMITTED_KINDS:
            mine = subs[(subs["county_code"] == county.county_code) & (subs["kind"] == kind)]
            base = {
                "county_code": county.county_code,
                "county_name": county.county_name,
                "city_name": county.city_name,
                "kind": kind,
                "versions": len(mine),
            }
            if mine.empty:
                rows.append({**base, "state": "missing", "is_late": None, "file_name": None,
                             "received_at": None, "rows_accepted": None, "rows_rejected": None,
                             "reason": None})
                continue
            mine = mine.sort_values("received_at")
            newest = mine.iloc[-1]
            current = mine[mine["status"] == "accepted"]
            state = "accepted" if newest["status"] in ("accepted", "superseded") else "refused"
            shown = current.iloc[-1] if state == "accepted" and not current.empty else newest
            reason = newest["reason"] if state == "refused" else None
            if state == "refused" and not current.empty:
                reason = f"{reason}（此前已接收的 {current.iloc[-1]['file_name']} 仍然有效）"
            rows.append({
                **base,
                "state": state,
                "is_late": bool(shown["is_late"]) if shown["is_late"] is not None else None,
                "file_name": shown["file_name"],
                "received_at": shown["received_at"],
                "rows_accepted": shown["rows_accepted"],
                "rows_rejected": shown["rows_rejected"],
                "reason": reason,
            })
    return pd.DataFrame(rows, columns=REGISTER_COLUMNS)


def _text(value: object) -> str:
    """A cell as text: empty for None and NaN (pandas turns a column's missing values into NaN)."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def format_register(register: pd.DataFrame, period: str) -> str:
    """The register as a terminal table, in Chinese."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{period} 报送登记表（expected-returns register）", show_lines=False)
    for header in ("区划代码", "县区", "所属市", "报表", "状态", "迟报", "文件", "接收行", "拒收行", "版本数", "原因"):
        table.add_column(header, overflow="fold")
    for r in register.itertuples(index=False):
        late = "" if r.is_late is None else ("是" if r.is_late else "否")
        table.add_row(
            _text(r.county_code), _text(r.county_name), _text(r.city_name), KIND_NAME_ZH[r.kind],
            STATE_ZH[r.state], late, _text(r.file_name),
            "" if pd.isna(r.rows_accepted) else str(int(r.rows_accepted)),
            "" if pd.isna(r.rows_rejected) else str(int(r.rows_rejected)), str(r.versions), _text(r.reason),
        )  # fmt: skip
    counts = register["state"].value_counts().to_dict()
    late = int(register["is_late"].fillna(False).astype(bool).sum())
    buf = StringIO()
    console = Console(file=buf, width=200, force_terminal=False)
    console.print(table)
    console.print(
        f"已接收 {counts.get('accepted', 0)}，被拒收 {counts.get('refused', 0)}，"
        f"未报送 {counts.get('missing', 0)}，迟报 {late}"
    )
    return buf.getvalue()
