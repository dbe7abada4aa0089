"""A clerk's pre-check of one file, with the same rules as the nightly run. Writes nothing.

When the warehouse can be reached (``reachable_warehouse``), the cross-period rules are judged
too, against the county's last accepted period before the file's, read-only
(``judge_against_warehouse``, shared with the portal's instant check); otherwise the check says
it judged the file alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gaibao.contract import KIND_NAME_ZH

log = logging.getLogger(__name__)


@dataclass
class CheckResult:
    file_name: str
    kind: str | None
    county_code: str | None
    period: str | None
    refusal: str | None
    rows_total: int
    rows_rejected: int
    findings: pd.DataFrame
    previous_period: str | None = None  # the period the cross-period rules compared against
    cross_period: bool = False  # the warehouse was reached and the cross-period rules judged

    @property
    def has_errors(self) -> bool:
        if self.refusal:
            return True
        return bool((self.findings["severity"] == "error").any()) if not self.findings.empty else False


def reachable_warehouse(settings: Any = None) -> Any:
    """The settings' warehouse when it can be read (a SQLite file that exists, a server that
    answers, with the submission table), else None. Opening it creates nothing."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    from gaibao.settings import get_settings
    from warehouse.store import Warehouse

    settings = settings or get_settings()
    url = make_url(str(settings.warehouse_url))
    if url.get_backend_name() == "sqlite" and (not url.database or not Path(url.database).exists()):
        return None
    try:
        wh = Warehouse.from_settings(settings)
        if not sa.inspect(wh.engine).has_table("submission"):
            wh.close()
            return None
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable": the file is judged alone
        log.info("warehouse not reachable for the cross-period rules: %s", type(exc).__name__)
        return None
    return wh


def judge_against_warehouse(
    warehouse: Any,
    content: bytes,
    file_name: str,
    county_code: str,
    period: str,
    kind: str | None = None,
    parsed: Any = None,
) -> tuple[Any, Any, str | None]:
    """(judgement, parsed file, previous period) of one file as the nightly run would judge it
    now: the cross-period rules against the county's last accepted period before ``period``, the
    counties the warehouse knows, and the warnings of a resubmission that drops accepted
    projects of the same period. Reads the warehouse, writes nothing."""
    from tasks.ingest import _warn_dropped_by_resubmission
    from tasks.judge import judge_file
    from tasks.read import read_return

    if parsed is None:
        parsed = read_return(content, file_name, kind=kind)
    kind = kind or parsed.kind or "progress"
    previous = warehouse.previous_rows(kind, period, [county_code])
    known = warehouse.query("SELECT county_code FROM ref_division")["county_code"].astype(str)
    judgement = judge_file(
        content,
        file_name,
        county_code=county_code,
        period=period,
        previous=previous,
        kind=kind,
        known_counties=known,
        engine="pandas",
        parsed=parsed,
    )
    replaces = warehouse.query(
        "SELECT COUNT(*) AS n FROM submission WHERE kind = :k AND county_code = :c AND period = :p"
        " AND status = 'accepted'",
        {"k": kind, "c": county_code, "p": period},
    )
    if int(replaces["n"].iloc[0]):  # it would replace an accepted return: warn of what it drops
        judgement = _warn_dropped_by_resubmission(warehouse, kind, period, judgement)
    previous_period = None if previous.empty else str(previous["period"].max())
    return judgement, parsed, previous_period


def check_file(
    path: Path, county_code: str | None = None, period: str | None = None, warehouse: Any = "settings"
) -> CheckResult:
    """``warehouse``: "settings" (the settings' warehouse when reachable), a Warehouse, or None
    (judge the file alone)."""
    from tasks.judge import judge_file
    from tasks.read import read_return

    path = Path(path)
    content = path.read_bytes()
    parsed = read_return(content, path.name)
    judgement = judge_file(content, path.name, county_code=county_code, period=period, parsed=parsed)
    sub = judgement.submissions.iloc[0]
    previous_period, cross = None, False
    if sub["status"] != "refused" and sub["county_code"] and sub["period"] and sub["kind"] != "plan":
        wh = reachable_warehouse() if warehouse == "settings" else warehouse
        if wh is not None:
            try:
                judgement, _, previous_period = judge_against_warehouse(
                    wh, content, path.name, str(sub["county_code"]), str(sub["period"]), parsed=parsed
                )
                cross = True
            finally:
                if warehouse == "settings":
                    wh.close()
            sub = judgement.submissions.iloc[0]
    refusal = sub["reason"] if sub["status"] == "refused" else None
    return CheckResult(
        file_name=path.name,
        kind=sub["kind"],
        county_code=sub["county_code"],
        period=sub["period"],
        refusal=refusal,
        rows_total=int(sub["rows_total"] or 0),
        rows_rejected=int(sub["rows_rejected"] or 0),
        findings=judgement.issues,
        previous_period=previous_period,
        cross_period=cross,
    )


def format_check(result: CheckResult) -> str:
    """Every finding, in Chinese, errors first then warnings, in row order."""
    kind = KIND_NAME_ZH.get(result.kind or "", "未识别的报表")
    lines = [f"文件：{result.file_name}（{kind}，区划代码 {result.county_code or '?'}，报告期 {result.period or '?'}）"]
    if result.refusal:
        lines.append(f"✗ 整个文件将被拒收：{result.refusal}")
    elif result.cross_period:
        lines.append(
            f"已与本县上次接收的报表（{result.previous_period}）比对跨期规则。"
            if result.previous_period
            else "已连接数据仓库：本县此前没有已接收的报表，跨期规则无可比对。"
        )
    else:
        lines.append("未连接数据仓库：只检查了本文件，未比对跨期规则（累计数减少、项目缺报、状态倒退）。")
    findings = result.findings
    if not findings.empty:
        order = findings.assign(_e=findings["severity"].ne("error")).sort_values(["_e", "row_number"], na_position="first")
        for row in order.itertuples(index=False):
            mark = "错误" if row.severity == "error" else ("提示（已说明）" if row.is_explained else "提示")
            lines.append(f"[{mark}] {row.message}  ({row.rule})")
    errors = 0 if findings.empty else int((findings["severity"] == "error").sum())
    warnings = 0 if findings.empty else int((findings["severity"] == "warning").sum())
    lines.append(
        f"共 {result.rows_total} 行，{result.rows_rejected} 行将被退回；错误 {errors} 条，提示 {warnings} 条。"
        + ("" if result.has_errors else " 可以报送。")
    )
    return "\n".join(lines)
