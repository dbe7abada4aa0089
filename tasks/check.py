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
    sheet_name: str | None = None  # a workbook's sheet the return was read from

    @property
    def has_errors(self) -> bool:
        if self.refusal:
            return True
        return bool((self.findings["severity"] == "error").any()) if not self.findings.empty else False


def check_file(path: Path, county_code: str | None = None, period: str | None = None) -> CheckResult:
    """The file's return (a workbook carrying both: its first sheet's; see :func:`check_returns`)."""
    return check_returns(path, county_code=county_code, period=period)[0]


def check_returns(path: Path, county_code: str | None = None, period: str | None = None) -> list[CheckResult]:
    """Every return the file carries, each judged on its own: one, or two for a workbook with a
    sheet named 进展 and one named 资金."""
    from tasks.judge import judge_file_returns

    path = Path(path)
    judgements = judge_file_returns(path.read_bytes(), path.name, county_code=county_code, period=period)
    out = []
    for judgement in judgements:
        sub = judgement.submissions.iloc[0]
        out.append(
            CheckResult(
                file_name=path.name,
                kind=sub["kind"],
                county_code=sub["county_code"],
                period=sub["period"],
                refusal=sub["reason"] if sub["status"] == "refused" else None,
                rows_total=int(sub["rows_total"] or 0),
                rows_rejected=int(sub["rows_rejected"] or 0),
                findings=judgement.issues,
                sheet_name=judgement.sheet_name if len(judgements) > 1 else None,
            )
        )
    return out


def format_checks(results: list[CheckResult]) -> str:
    """:func:`format_check` of each return of one file; a file with two returns says so first."""
    if len(results) == 1:
        return format_check(results[0])
    kinds = "、".join(
        f"工作表“{r.sheet_name}”为{KIND_NAME_ZH.get(r.kind or '', '未识别的报表')}" for r in results
    )
    head = f"文件 {results[0].file_name} 含 {len(results)} 份报表（{kinds}），逐份检查如下，每份单独收取或拒收："
    return "\n\n".join([head, *(format_check(r) for r in results)])


def format_check(result: CheckResult) -> str:
    """Every finding, in Chinese, errors first then warnings, in row order."""
    kind = KIND_NAME_ZH.get(result.kind or "", "未识别的报表")
    where = f"，工作表“{result.sheet_name}”" if result.sheet_name else ""
    lines = [
        f"文件：{result.file_name}（{kind}{where}，区划代码 {result.county_code or '?'}，报告期 {result.period or '?'}）"
    ]
    if result.refusal:
        whole = "这份报表" if result.sheet_name else "整个文件"
        lines.append(f"✗ {whole}将被拒收：{result.refusal}")
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
