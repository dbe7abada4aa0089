"""Built :class:`PackInputs` for tests and benchmarks: known counties, projects and returns.

``sample_inputs`` makes a period's frames as the data core's marts would hold them, with every
exception category present, and (``hostile=True``) untrusted county text and personal data
planted where a careless report would leak them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from gaibao.divisions import bundled_divisions
from reports import periods
from reports.inputs import PackInputs

HOSTILE_FORMULA = '=HYPERLINK("http://x","y")'
HOSTILE_SCRIPT = "<script>alert(1)</script>"
PERSONAL_NAME = "张秘密"
PERSONAL_PHONE = "13912345678"


def sample_sid(code: str, period: str, kind: str, status: str = "accepted") -> str:
    """A 20-character submission id, as the warehouse's ``make_submission_id`` makes them."""
    return hashlib.sha256(f"{kind}|{code}|{period}|{status}|sample".encode()).hexdigest()[:20]


def _divisions(n: int) -> pd.DataFrame:
    div = bundled_divisions()
    if n <= len(div):
        return div.head(n).reset_index(drop=True)
    rows = []
    for i in range(n):
        city = 100 + i // 20
        rows.append(
            {
                "county_code": f"{(i // 600) + 11:02d}{city % 100:02d}{i % 20 + 1:02d}",
                "county_name": f"第{i + 1}县",
                "city_code": f"{(i // 600) + 11:02d}{city % 100:02d}00",
                "city_name": f"第{city - 99}市",
            }
        )
    df = pd.DataFrame(rows).drop_duplicates("county_code").reset_index(drop=True)
    return df


def sample_inputs(
    period: str = "2018-06",
    n_counties: int = 6,
    projects_per_county: int = 8,
    seed: int = 7,
    hostile: bool = True,
) -> PackInputs:
    rng = np.random.default_rng(seed)
    div = _divisions(n_counties)
    window = periods.window(period, 6)
    codes = div["county_code"].tolist()
    fact_rows = []
    for ci, code in enumerate(codes):
        for j in range(projects_per_county):
            pid = f"XM{code}-{j:03d}"
            school = f"{div.at[ci, 'county_name']}第{j + 1}小学"
            if hostile and ci == 0 and j == 0:
                school = HOSTILE_FORMULA
            if hostile and ci == 0 and j == 1:
                school = HOSTILE_SCRIPT
            kind = j % 4  # 0: not started overdue, 1: stalled, 2: progressing, 3: completed
            ptype = "设备购置" if j % 5 == 4 else "校舍改造"
            planned = 0.0 if ptype == "设备购置" else float(rng.integers(500, 3000))
            invest = float(rng.integers(50, 500))
            for k, p in enumerate(window):
                if kind == 0:
                    status, started, done, inv = "未开工", 0.0, 0.0, 0.0
                elif kind == 1:
                    status, started, done, inv = "在建", planned, planned * 0.4, invest * 0.4
                elif kind == 2:
                    status, started, done, inv = "在建", planned, planned * (k + 1) / 8, invest * (k + 1) / 8
                else:
                    status, started, done, inv = "已竣工", planned, planned, invest
                fact_rows.append(
                    {
                        "submission_id": sample_sid(code, p, "progress"),
                        "period": p,
                        "county_code": code,
                        "school_code": f"{code}{j:04d}",
                        "school_name": school,
                        "project_id": pid,
                        "project_type": ptype,
                        "status": status,
                        "planned_area_m2": planned,
                        "started_area_m2": started,
                        "completed_area_m2": done,
                        "planned_invest_wan": invest,
                        "completed_invest_wan": inv,
                        "funds_central_wan": inv / 2,
                        "funds_local_wan": inv / 2,
                        "planned_start": pd.Timestamp("2017-09-01")
                        if kind == 0 and j % 2 == 0
                        else (None if kind == 0 else pd.Timestamp("2017-03-01")),
                        "actual_start": None if kind == 0 else pd.Timestamp("2017-04-01"),
                        "completed_date": pd.Timestamp("2018-01-10") if kind == 3 else None,
                        "note": None,
                        "reporter": PERSONAL_NAME if hostile else "某人",
                        "phone": PERSONAL_PHONE if hostile else "0",
                    }
                )
    facts = pd.DataFrame(fact_rows)
    facts["planned_start"] = pd.to_datetime(facts["planned_start"])
    facts["actual_start"] = pd.to_datetime(facts["actual_start"])
    facts["completed_date"] = pd.to_datetime(facts["completed_date"])

    plan = pd.DataFrame(
        {
            "county_code": codes,
            "plan_area_m2": rng.integers(3000, 12000, len(codes)).astype(float),
            "plan_equipment_wan": rng.integers(200, 1500, len(codes)).astype(float),
        }
    )
    # the county that reports nothing this period (the last one), carried forward
    missing_code = codes[-1]
    refused_code = codes[-2] if len(codes) > 2 else None
    cp_rows = []
    for p in (periods.previous(period), period):
        f = facts[facts["period"] == p]
        for code in codes:
            g = f[f["county_code"] == code]
            b = g[g["project_type"] == "校舍改造"]
            e = g[g["project_type"] == "设备购置"]
            pl = plan.set_index("county_code").loc[code]
            has = not (p == period and code in (missing_code, refused_code))
            cp_rows.append(
                {
                    "period": p,
                    "county_code": code,
                    "projects_total": len(g),
                    "projects_not_started": int((g["status"] == "未开工").sum()),
                    "projects_in_progress": int((g["status"] == "在建").sum()),
                    "projects_completed": int((g["status"] == "已竣工").sum()),
                    "planned_area_m2": b["planned_area_m2"].sum(),
                    "started_area_m2": b["started_area_m2"].sum(),
                    "completed_area_m2": b["completed_area_m2"].sum(),
                    "plan_area_m2": pl["plan_area_m2"],
                    "area_completion_rate": b["completed_area_m2"].sum() / pl["plan_area_m2"],
                    "start_rate": b["started_area_m2"].sum() / max(b["planned_area_m2"].sum(), 1),
                    "completed_equipment_wan": e["completed_invest_wan"].sum(),
                    "plan_equipment_wan": pl["plan_equipment_wan"],
                    "equipment_completion_rate": e["completed_invest_wan"].sum() / pl["plan_equipment_wan"],
                    "planned_invest_wan": g["planned_invest_wan"].sum(),
                    "completed_invest_wan": g["completed_invest_wan"].sum(),
                    "has_return": has,
                    "is_carried_forward": not has,
                    "is_late": False,
                    "source_period": p if has else periods.previous(p),
                    "submission_id": sample_sid(code, p if has else periods.previous(p), "progress"),
                }
            )
    county_progress = pd.DataFrame(cp_rows).merge(div, on="county_code")
    # the missing/refused counties: facts of this period are not there (only accepted rows are)
    facts = facts[~((facts["period"] == period) & facts["county_code"].isin([missing_code, refused_code]))]

    subs = []
    received = pd.Timestamp(periods.last_day(period)) + pd.Timedelta(days=3)
    for ci, code in enumerate(codes):
        if code == missing_code:
            continue
        for kind in ("progress", "funding"):
            status = "refused" if (code == refused_code and kind == "progress") else "accepted"
            late = ci == 1 and kind == "progress"
            subs.append(
                {
                    "submission_id": sample_sid(code, period, kind, status),
                    "kind": kind,
                    "county_code": code,
                    "period": period,
                    "source": "folder",
                    "file_name": f"{code}_{kind}.xlsx",
                    "sha256": hashlib.sha256(f"{code}{kind}{period}{status}".encode()).hexdigest(),
                    "received_at": (received + pd.Timedelta(days=5 if late else 0))
                    .tz_localize("Asia/Shanghai")
                    .tz_convert("UTC"),
                    "status": status,
                    "reason": "报告期与本次报送不符：文件写的是2018-05" if status == "refused" else None,
                    "rows_total": projects_per_county + (2 if ci == 0 else 0) if kind == "progress" else 1,
                    "rows_accepted": projects_per_county if status == "accepted" else 0,
                    "rows_rejected": (2 if ci == 0 else 0)
                    if kind == "progress" and status == "accepted"
                    else 0,
                    "is_late": late,
                }
            )
    submissions = pd.DataFrame(subs)
    issue_rows = []
    first = codes[0]
    for r, (col, val, rule) in enumerate(
        [("planned_invest_wan", "-5", "NEGATIVE_INVEST"), ("school_code", "12AB", "BAD_SCHOOL_CODE")], start=7
    ):
        issue_rows.append(
            {
                "submission_id": sample_sid(first, period, "progress"),
                "kind": "progress",
                "county_code": first,
                "period": period,
                "row_number": r,
                "project_id": f"XM{first}-9{r:02d}",
                "rule": rule,
                "severity": "error",
                "column_name": col,
                "value": val,
                "message": f"第{r}行“{col}”填写为“{val}”，不符合要求，请更正后重新报送。",
                "is_explained": False,
            }
        )
    for code in codes[:3]:
        if code == refused_code:
            continue
        issue_rows.append(
            {
                "submission_id": sample_sid(code, period, "progress"),
                "kind": "progress",
                "county_code": code,
                "period": period,
                "row_number": 4,
                "project_id": f"XM{code}-002",
                "rule": "REGRESSION",
                "severity": "warning",
                "column_name": "completed_area_m2",
                "value": "100",
                "message": "第4行竣工面积比上期减少，请核实；属实的请在备注中说明。",
                "is_explained": False,
            }
        )
    issues = pd.DataFrame(issue_rows)
    funding = pd.DataFrame(
        {
            "period": period,
            "county_code": [c for c in codes if c != missing_code],
            "funds_total_wan": 145000.0,
            "funds_rural_infra_wan": 55000.0,
            "funds_urban_wan": 58600.0,
            "funds_equipment_wan": 22800.0,
            "funds_land_wan": 5600.0,
            "land_mu": 1277.0,
            "teachers_recruited": 1766,
            "teachers_rural": 1464,
            "rural_teacher_subsidy_wan": 800.0,
            "has_return": True,
            "is_carried_forward": False,
        }
    )
    return PackInputs(
        period=period,
        divisions=div,
        county_progress=county_progress,
        city_progress=pd.DataFrame(columns=["period", "level", "city_code"]),
        county_funding=funding,
        facts=facts,
        submissions=submissions,
        issues=issues,
        expected_counties=codes,
    )


def load_into_warehouse(wh: Any, inputs: PackInputs) -> None:
    """Load sample inputs through the real warehouse API (divisions, plan, batches, marts)."""
    period = inputs.period
    wh.load_divisions(inputs.divisions)
    cp = inputs.county_progress[inputs.county_progress["period"] == period]
    wh.load_plan(cp[["county_code", "plan_area_m2", "plan_equipment_wan"]].assign(plan_cycle="2014-2018"))
    facts = inputs.facts.copy()
    facts["row_number"] = facts.groupby(["submission_id"]).cumcount() + 3
    for p in sorted(facts["period"].unique()):
        f = facts[facts["period"] == p]
        if p == period:
            subs = inputs.submissions[inputs.submissions["kind"] == "progress"]
            issues = inputs.issues[inputs.issues["kind"] == "progress"]
        else:
            codes = sorted(f["county_code"].unique())
            subs = pd.DataFrame(
                {
                    "submission_id": [sample_sid(c, p, "progress") for c in codes],
                    "kind": "progress",
                    "county_code": codes,
                    "period": p,
                    "source": "folder",
                    "file_name": [f"{c}_progress.xlsx" for c in codes],
                    "sha256": [hashlib.sha256(f"{c}{p}".encode()).hexdigest() for c in codes],
                    "received_at": pd.Timestamp(periods.last_day(p)).tz_localize("UTC")
                    + pd.Timedelta(days=2),
                    "status": "accepted",
                    "reason": None,
                    "rows_total": [int((f["county_code"] == c).sum()) for c in codes],
                    "rows_accepted": [int((f["county_code"] == c).sum()) for c in codes],
                    "rows_rejected": 0,
                    "is_late": False,
                }
            )
            issues = inputs.issues.iloc[0:0]
        wh.load_batch(subs.assign(rules_version="sample000000"), f, issues, "progress")
    fsubs = inputs.submissions[inputs.submissions["kind"] == "funding"]
    ffacts = inputs.county_funding.merge(
        fsubs[fsubs["status"] == "accepted"][["county_code", "submission_id"]], on="county_code"
    ).drop(columns=["has_return", "is_carried_forward"])
    wh.load_batch(
        fsubs.assign(rules_version="sample000000"),
        ffacts.assign(row_number=3),
        inputs.issues.iloc[0:0],
        "funding",
    )
    wh.rebuild_marts()
