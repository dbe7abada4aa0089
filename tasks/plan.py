"""Loading the five-year plan reference (全面改薄五年规划): read, check, replace ref_plan."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

DEFAULT_PLAN_CYCLE = "2014-2018"
PLAN_TABLE_COLUMNS = ["county_code", "plan_cycle", "plan_area_m2", "plan_equipment_wan"]


@dataclass
class PlanOutcome:
    ok: bool
    message: str
    rows: int = 0
    findings: pd.DataFrame | None = None


def load_plan_file(warehouse, path: Path, default_cycle: str | None = None) -> PlanOutcome:
    """Archive the plan file, check it with the plan suite, and replace the plan rows it covers."""
    from tasks.ingest import seed_divisions
    from tasks.normalise import normalise_batch
    from tasks.read import read_return
    from tasks.validate import validate_batch

    seed_divisions(warehouse)
    content = Path(path).read_bytes()
    warehouse.archive.put(content)
    parsed = read_return(content, Path(path).name, kind="plan")
    if parsed.refusal is not None:
        return PlanOutcome(False, f"五年规划文件被拒收：{parsed.refusal.message_zh}")
    typed, findings = normalise_batch("plan", [("plan", parsed)])
    findings = pd.concat([findings, validate_batch("plan", typed, None)], ignore_index=True)
    errors = findings[findings["severity"] == "error"] if not findings.empty else findings
    known = set(warehouse.query("SELECT county_code FROM ref_division")["county_code"])
    unknown = sorted(set(typed["county_code"].dropna()) - known)
    if not errors.empty or unknown:
        lines = errors["message"].tolist() + [f"区划代码 {c} 不是已知的县区" for c in unknown]
        return PlanOutcome(False, "五年规划文件有错误，未加载：\n" + "\n".join(lines), findings=findings)
    frame = typed.copy()
    if "plan_cycle" not in frame.columns:
        frame["plan_cycle"] = None
    frame["plan_cycle"] = frame["plan_cycle"].fillna(default_cycle or DEFAULT_PLAN_CYCLE)
    frame = frame[PLAN_TABLE_COLUMNS]
    warehouse.load_plan(frame)
    cycles = ", ".join(sorted(frame["plan_cycle"].unique()))
    return PlanOutcome(True, f"已加载五年规划 {len(frame)} 个县区（规划期 {cycles}）", rows=len(frame), findings=findings)
