"""A clerk's pre-check of one file, with the same rules as the nightly run. Writes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gaibao.contract import KIND_NAME_ZH


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

    @property
    def has_errors(self) -> bool:
        if self.refusal:
            return True
        return bool((self.findings["severity"] == "error").any()) if not self.findings.empty else False


def check_file(path: Path, county_code: str | None = None, period: str | None = None) -> CheckResult:
    from tasks.judge import judge_file

    path = Path(path)
    judgement = judge_file(path.read_bytes(), path.name, county_code=county_code, period=period)
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
    )


def format_check(result: CheckResult) -> str:
    """Every finding, in Chinese, errors first then warnings, in row order."""
    kind = KIND_NAME_ZH.get(result.kind or "", "未识别的报表")
    lines = [f"文件：{result.file_name}（{kind}，区划代码 {result.county_code or '?'}，报告期 {result.period or '?'}）"]
    if result.refusal:
        lines.append(f"✗ 整个文件将被拒收：{result.refusal}")
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
