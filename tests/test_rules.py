"""Every E and W rule of the contract: a breaking row is caught (rule, column, value, row), a good row is not."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasks.normalise import concat_returns, normalise_frame
from tasks.read import ParsedReturn
from tasks.validate import EXPECTATIONS_DIR, load_suite, rules_version, validate_batch

# One worker runs the whole module: its batch fixtures (one GX call each) are built once.
pytestmark = pytest.mark.xdist_group("rules")

GOOD_PROGRESS = {
    "period": "2017-06",
    "county_code": "340321",
    "school_code": "3403210001",
    "school_name": "怀远县第一中学",
    "project_id": "HY-001",
    "project_type": "校舍改造",
    "status": "在建",
    "planned_area_m2": "1000",
    "started_area_m2": "800",
    "completed_area_m2": "500",
    "planned_invest_wan": "100",
    "completed_invest_wan": "50",
    "funds_central_wan": "20",
    "funds_local_wan": "30",
    "planned_start": "2017-01-01",
    "actual_start": "2017-02-01",
    "completed_date": None,
    "reporter": "张三",
    "phone": "13800000000",
    "note": None,
}
GOOD_COMPLETED = {
    **GOOD_PROGRESS,
    "status": "已竣工",
    "started_area_m2": "1000",
    "completed_area_m2": "1000",
    "completed_date": "2017-06-10",
}
GOOD_EQUIPMENT = {
    **GOOD_PROGRESS,
    "project_type": "设备购置",
    "planned_area_m2": "0",
    "started_area_m2": "0",
    "completed_area_m2": "0",
}
GOOD_NOT_STARTED = {
    **GOOD_PROGRESS,
    "status": "未开工",
    "started_area_m2": "0",
    "completed_area_m2": "0",
    "completed_invest_wan": "0",
    "funds_central_wan": "0",
    "funds_local_wan": "0",
    "actual_start": None,
}

GOOD_FUNDING = {
    "period": "2017-06",
    "county_code": "341222",
    "funds_total_wan": "145000",
    "funds_rural_infra_wan": "55000",
    "funds_urban_wan": "58600",
    "funds_equipment_wan": "22800",
    "funds_land_wan": "5600",
    "land_mu": "1277",
    "teachers_recruited": "1766",
    "teachers_rural": "1464",
    "rural_teacher_subsidy_wan": "300",
}


def parsed(kind: str, rows: list[dict], unit_factors: dict[str, float] | None = None) -> ParsedReturn:
    frame = pd.DataFrame(rows).astype(object)
    frame = frame.where(frame.notna(), None)
    frame["row_number"] = range(3, 3 + len(frame))
    return ParsedReturn.from_frames(kind, frame, unit_factors=unit_factors or {})


def run_batch(
    kind: str, files: dict[str, list[dict]], previous: pd.DataFrame | None = None, factors=None
) -> pd.DataFrame:
    """Type and validate many files as ONE batch (one GX call), as the nightly run does."""
    factors = factors or {}
    items = [(sid, parsed(kind, rows, factors.get(sid))) for sid, rows in files.items()]
    raw, unit_factors = concat_returns(kind, items)
    typed, type_findings = normalise_frame(kind, raw, unit_factors)
    found = validate_batch(kind, typed, previous, raw=raw, unit_factors=unit_factors)
    return pd.concat([type_findings, found], ignore_index=True)


def typed_rows(kind: str, rows: list[dict], period: str) -> pd.DataFrame:
    raw, factors = concat_returns(kind, [("prev", parsed(kind, rows))])
    typed, _ = normalise_frame(kind, raw, factors)
    typed["period"] = period
    return typed


PROGRESS_CASES = [
    # (rule, base row, change, column blamed, value quoted)
    ("E_SCHOOL_CODE", GOOD_PROGRESS, {"school_code": None}, "school_code", None),
    ("E_SCHOOL_CODE", GOOD_PROGRESS, {"school_code": "340321001"}, "school_code", "340321001"),
    ("E_SCHOOL_CODE", GOOD_PROGRESS, {"school_code": "34032100AB"}, "school_code", "34032100AB"),
    ("E_SCHOOL_NAME", GOOD_PROGRESS, {"school_name": None}, "school_name", None),
    ("E_SCHOOL_NAME", GOOD_PROGRESS, {"school_name": "校" * 101}, "school_name", "校" * 101),
    ("E_PROJECT_ID", GOOD_PROGRESS, {"project_id": None}, "project_id", None),
    ("E_PROJECT_ID", GOOD_PROGRESS, {"project_id": "HY_001"}, "project_id", "HY_001"),
    ("E_PROJECT_ID", GOOD_PROGRESS, {"project_id": "A" * 33}, "project_id", "A" * 33),
    ("E_PROJECT_TYPE", GOOD_PROGRESS, {"project_type": "维修"}, "project_type", "维修"),
    ("E_PROJECT_TYPE", GOOD_PROGRESS, {"project_type": None}, "project_type", None),
    ("E_STATUS", GOOD_PROGRESS, {"status": "停工"}, "status", "停工"),
    ("E_STATUS", GOOD_PROGRESS, {"status": None}, "status", None),
    ("E_PLANNED_AREA_MISSING", GOOD_PROGRESS, {"planned_area_m2": None}, "planned_area_m2", None),
    ("E_PLANNED_AREA_EQUIPMENT", GOOD_EQUIPMENT, {"planned_area_m2": "200"}, "planned_area_m2", "200"),
    ("E_NEGATIVE", GOOD_PROGRESS, {"started_area_m2": "-5"}, "started_area_m2", "-5"),
    ("E_NEGATIVE", GOOD_PROGRESS, {"completed_invest_wan": "-1"}, "completed_invest_wan", "-1"),
    ("E_NEGATIVE", GOOD_PROGRESS, {"funds_local_wan": "-0.5"}, "funds_local_wan", "-0.5"),
    ("E_IMPLAUSIBLE", GOOD_PROGRESS, {"planned_area_m2": "1e308"}, "planned_area_m2", "1e308"),
    ("E_IMPLAUSIBLE", GOOD_PROGRESS, {"planned_invest_wan": "2000000"}, "planned_invest_wan", "2000000"),
    ("E_PLANNED_INVEST", GOOD_PROGRESS, {"planned_invest_wan": None}, "planned_invest_wan", None),
    ("E_PLANNED_INVEST", GOOD_PROGRESS, {"planned_invest_wan": "0"}, "planned_invest_wan", "0"),
    (
        "E_COMPLETED_AREA_OVER_STARTED",
        GOOD_PROGRESS,
        {"completed_area_m2": "1,500", "started_area_m2": "1200", "planned_area_m2": "2000"},
        "completed_area_m2",
        "1,500",
    ),
    (
        "W_COMPLETED_AREA_OVER_PLAN",
        GOOD_PROGRESS,
        {"started_area_m2": "1600", "completed_area_m2": "1600"},
        "completed_area_m2",
        "1600",
    ),
    (
        "W_COMPLETED_INVEST_OVER_PLAN",
        GOOD_PROGRESS,
        {"completed_invest_wan": "151", "funds_central_wan": "100"},
        "completed_invest_wan",
        "151",
    ),
    (
        "E_FUNDS_OVER_COMPLETED",
        GOOD_PROGRESS,
        {"funds_central_wan": "30", "funds_local_wan": "20.02"},
        "funds_central_wan",
        "30",
    ),
    ("E_NOT_STARTED_WITH_PROGRESS", GOOD_NOT_STARTED, {"started_area_m2": "10"}, "started_area_m2", "10"),
    ("E_NOT_STARTED_WITH_PROGRESS", GOOD_NOT_STARTED, {"completed_area_m2": "5"}, "completed_area_m2", "5"),
    (
        "E_NOT_STARTED_WITH_PROGRESS",
        GOOD_NOT_STARTED,
        {"completed_invest_wan": "3"},
        "completed_invest_wan",
        "3",
    ),
    ("E_COMPLETED_WITHOUT_AREA", GOOD_COMPLETED, {"completed_area_m2": "0"}, "completed_area_m2", "0"),
    ("E_COMPLETED_WITHOUT_AREA", GOOD_COMPLETED, {"completed_area_m2": None}, "completed_area_m2", None),
    ("E_ACTUAL_START_MISSING", GOOD_PROGRESS, {"actual_start": None}, "actual_start", None),
    ("E_ACTUAL_START_MISSING", GOOD_COMPLETED, {"actual_start": None}, "actual_start", None),
    ("E_COMPLETED_DATE_MISSING", GOOD_COMPLETED, {"completed_date": None}, "completed_date", None),
    (
        "E_COMPLETED_DATE_BEFORE_START",
        GOOD_COMPLETED,
        {"completed_date": "2017/1/15"},
        "completed_date",
        "2017/1/15",
    ),
    (
        "E_COMPLETED_DATE_AFTER_PERIOD",
        GOOD_COMPLETED,
        {"completed_date": "2017年7月1日"},
        "completed_date",
        "2017年7月1日",
    ),
    ("TYPE_NUMBER", GOOD_PROGRESS, {"planned_invest_wan": "一百"}, "planned_invest_wan", "一百"),
    ("TYPE_DATE", GOOD_PROGRESS, {"actual_start": "2017-02-31"}, "actual_start", "2017-02-31"),
]


def _bad_row(base: dict, change: dict) -> dict:
    return {**base, **change} if "project_id" in change else {**base, **change, "project_id": "BAD-1"}


GOOD_BASES = {
    "in_progress": GOOD_PROGRESS,
    "completed": GOOD_COMPLETED,
    "equipment": GOOD_EQUIPMENT,
    "not_started": GOOD_NOT_STARTED,
}
WARNINGS_TO_EXPLAIN = {
    "W_COMPLETED_AREA_OVER_PLAN": {"started_area_m2": "1600", "completed_area_m2": "1600"},
    "W_COMPLETED_INVEST_OVER_PLAN": {"completed_invest_wan": "151"},
}


@pytest.fixture(scope="module")
def progress_findings() -> pd.DataFrame:
    """Every single-file progress case as its own submission of one batch: one GX call."""
    files: dict[str, list[dict]] = {}
    for i, (_, base, change, _, _) in enumerate(PROGRESS_CASES):
        files[f"case{i}"] = [{**base, "project_id": "OK-1"}, _bad_row(base, change)]
    for name, base in GOOD_BASES.items():
        files[f"good-{name}"] = [base]
    files["message"] = [
        {**GOOD_PROGRESS, "started_area_m2": "1200", "completed_area_m2": "1500", "planned_area_m2": "2000"}
    ]
    files["unit"] = [{**GOOD_PROGRESS, "funds_central_wan": "-10000", "funds_local_wan": "0"}]
    files["unit-other"] = [{**GOOD_PROGRESS, "completed_invest_wan": "400,000"}]
    files["repeated"] = [GOOD_PROGRESS, {**GOOD_PROGRESS, "project_id": "HY-002"}, GOOD_PROGRESS]
    files["twin-a"] = files["twin-b"] = [GOOD_PROGRESS]
    for rule, change in WARNINGS_TO_EXPLAIN.items():
        files[f"note-{rule}"] = [
            {**GOOD_PROGRESS, **change},
            {**GOOD_PROGRESS, **change, "project_id": "HY-2", "note": "追加扩建"},
        ]
    files["note-error"] = [{**GOOD_PROGRESS, "funds_local_wan": "-1", "note": "说明"}]
    factors = {"unit": {"funds_central_wan": 1e-4}, "unit-other": {"completed_invest_wan": 1e-4}}
    return run_batch("progress", files, factors=factors)


def of(findings: pd.DataFrame, sid: str) -> pd.DataFrame:
    return findings[findings["submission_id"] == sid].reset_index(drop=True)


@pytest.mark.parametrize(
    ("case", "rule", "column", "value"),
    [(i, c[0], c[3], c[4]) for i, c in enumerate(PROGRESS_CASES)],
    ids=[f"{c[0]}-{i}" for i, c in enumerate(PROGRESS_CASES)],
)
def test_progress_rule_catches_breaking_row(
    progress_findings: pd.DataFrame, case: int, rule: str, column: str, value: str | None
) -> None:
    findings = of(progress_findings, f"case{case}")
    assert findings["row_number"].eq(3).sum() == 0, findings[findings["row_number"] == 3]["message"].tolist()
    hit = findings[findings["rule"] == rule]
    assert len(hit) == 1, findings[["rule", "column_name", "value"]].to_dict("records")
    row = hit.iloc[0]
    assert row["row_number"] == 4
    assert row["column_name"] == column
    assert (None if pd.isna(row["value"]) else row["value"]) == value
    if column != "project_id":
        assert row["project_id"] == "BAD-1"
    assert row["severity"] == ("warning" if rule.startswith("W_") else "error")
    assert row["message"].startswith("第4行")
    assert "重新报送" in row["message"] or "备注" in row["message"]


@pytest.mark.parametrize("name", list(GOOD_BASES))
def test_good_progress_rows_have_no_findings(progress_findings: pd.DataFrame, name: str) -> None:
    assert of(progress_findings, f"good-{name}").empty


def test_message_names_row_column_value_and_what_to_do(progress_findings: pd.DataFrame) -> None:
    assert of(progress_findings, "message")["message"].tolist() == [
        "第3行「竣工面积（平方米）」为 1500，超过开工面积 1200：竣工面积不能大于开工面积，请核对后重新报送。"
    ]


def test_message_names_the_unit_of_the_clerks_header(progress_findings: pd.DataFrame) -> None:
    assert of(progress_findings, "unit")["message"].tolist() == [
        "第3行「其中：中央资金（元）」为 -10000，是负数：该项不能小于 0，请核对后重新报送。"
    ]


def test_other_columns_in_a_message_are_quoted_in_the_labelled_unit(progress_findings: pd.DataFrame) -> None:
    found = of(progress_findings, "unit-other")
    assert found[["rule", "column_name", "value"]].values.tolist() == [
        ["E_FUNDS_OVER_COMPLETED", "funds_central_wan", "20"]
    ]
    assert "「完成投资（万元）」40：" in found["message"].iloc[0]


def test_repeated_project_id_within_a_file(progress_findings: pd.DataFrame) -> None:
    findings = of(progress_findings, "repeated")
    assert findings[["rule", "row_number", "column_name", "value"]].values.tolist() == [
        ["E_PROJECT_ID_REPEATED", 3, "project_id", "HY-001"],
        ["E_PROJECT_ID_REPEATED", 5, "project_id", "HY-001"],
    ]
    assert "第3、5行" in findings["message"].iloc[0]


def test_same_project_id_in_two_files_is_not_repeated(progress_findings: pd.DataFrame) -> None:
    assert of(progress_findings, "twin-a").empty and of(progress_findings, "twin-b").empty


@pytest.mark.parametrize("rule", list(WARNINGS_TO_EXPLAIN))
def test_note_explains_warnings(progress_findings: pd.DataFrame, rule: str) -> None:
    hit = of(progress_findings, f"note-{rule}")
    hit = hit[hit["rule"] == rule].set_index("row_number")["is_explained"]
    assert hit.to_dict() == {3: False, 4: True}


def test_note_does_not_explain_errors(progress_findings: pd.DataFrame) -> None:
    findings = of(progress_findings, "note-error")
    assert findings["rule"].tolist() == ["E_NEGATIVE"]
    assert not findings["is_explained"].any()


# -- cross-period (progress): each case its own county, one batch, one GX call ------------

REGRESSION_CASES = [
    ("started_area_m2", "700", "800"),
    ("completed_area_m2", "400", "500"),
    ("completed_invest_wan", "40", "50"),
]
STATUS_CASES = [
    (GOOD_COMPLETED, GOOD_PROGRESS),
    (GOOD_COMPLETED, GOOD_NOT_STARTED),
    (GOOD_PROGRESS, GOOD_NOT_STARTED),
]
ZERO = {"started_area_m2": "0", "completed_area_m2": "0", "completed_invest_wan": "0"}


@pytest.fixture(scope="module")
def cross_findings() -> pd.DataFrame:
    files: dict[str, list[dict]] = {}
    before: list[dict] = []

    def county(sid: str, now: list[dict], prev: list[dict]) -> None:
        code = f"34{len(files):04d}"
        files[sid] = [{**r, "county_code": code} for r in now]
        before.extend({**r, "county_code": code} for r in prev)

    for column, now, _ in REGRESSION_CASES:
        county(f"reg-{column}", [{**GOOD_PROGRESS, column: now, "funds_local_wan": "10"}], [GOOD_PROGRESS])
    county("reg-note", [{**GOOD_PROGRESS, "started_area_m2": "700", "note": "面积核减"}], [GOOD_PROGRESS])
    county("growing", [{**GOOD_PROGRESS, "completed_area_m2": "600"}], [GOOD_PROGRESS])
    county(
        "dropped",
        [GOOD_PROGRESS],
        [GOOD_PROGRESS, {**GOOD_PROGRESS, "project_id": "HY-009", "school_name": "二中"}],
    )
    county("new-county", [GOOD_PROGRESS], [])
    for i, (prev, now) in enumerate(STATUS_CASES):
        county(f"status-{i}", [now], [{**prev, **ZERO}])
    county("forward", [GOOD_COMPLETED], [GOOD_PROGRESS])
    return run_batch("progress", files, typed_rows("progress", before, "2017-05"))


@pytest.mark.parametrize(("column", "now", "before"), REGRESSION_CASES)
def test_regression_of_a_cumulative_figure(
    cross_findings: pd.DataFrame, column: str, now: str, before: str
) -> None:
    hit = of(cross_findings, f"reg-{column}")
    assert hit[["rule", "row_number", "column_name", "value", "project_id", "severity"]].values.tolist() == [
        ["REGRESSION", 3, column, now, "HY-001", "warning"]
    ]
    assert f"上期（2017-05）的 {before}" in hit["message"].iloc[0]
    assert not hit["is_explained"].any()


def test_no_regression_when_figures_hold_or_grow(cross_findings: pd.DataFrame) -> None:
    assert of(cross_findings, "growing").empty and of(cross_findings, "new-county").empty


def test_regression_is_explained_by_a_note(cross_findings: pd.DataFrame) -> None:
    findings = of(cross_findings, "reg-note")
    assert findings["rule"].tolist() == ["REGRESSION"] and findings["is_explained"].all()


def test_dropped_project(cross_findings: pd.DataFrame) -> None:
    findings = of(cross_findings, "dropped")
    assert findings[["rule", "project_id", "column_name", "value", "severity"]].values.tolist() == [
        ["DROPPED_PROJECT", "HY-009", "project_id", "HY-009", "warning"]
    ]
    assert pd.isna(findings["row_number"].iloc[0])
    assert "HY-009（二中）上期（2017-05）已报送，本期缺失" in findings["message"].iloc[0]


@pytest.mark.parametrize("i", range(len(STATUS_CASES)))
def test_status_regression(cross_findings: pd.DataFrame, i: int) -> None:
    before, now = STATUS_CASES[i]
    hit = of(cross_findings, f"status-{i}")
    hit = hit[hit["rule"] == "STATUS_REGRESSION"]
    assert hit[["row_number", "column_name", "value", "severity"]].values.tolist() == [
        [3, "status", now["status"], "warning"]
    ]
    assert f"而上期（2017-05）为 {before['status']}" in hit["message"].iloc[0]


def test_status_moving_forward_is_fine(cross_findings: pd.DataFrame) -> None:
    assert of(cross_findings, "forward").empty


# -- funding ------------------------------------------------------------------------------

FUNDING_CASES = [
    ("E_FUNDS_TOTAL_MISSING", {"funds_total_wan": None}, "funds_total_wan", None),
    ("E_NEGATIVE", {"land_mu": "-1"}, "land_mu", "-1"),
    ("E_NEGATIVE", {"funds_urban_wan": "-3"}, "funds_urban_wan", "-3"),
    ("E_NEGATIVE", {"teachers_recruited": "-2", "teachers_rural": "0"}, "teachers_recruited", "-2"),
    ("E_NEGATIVE", {"rural_teacher_subsidy_wan": "-9"}, "rural_teacher_subsidy_wan", "-9"),
    ("E_IMPLAUSIBLE", {"funds_total_wan": "1e308"}, "funds_total_wan", "1e308"),
    ("E_IMPLAUSIBLE", {"land_mu": "9e9"}, "land_mu", "9e9"),
    ("E_FUNDING_PARTS_OVER_TOTAL", {"funds_total_wan": "140000"}, "funds_total_wan", "140000"),
    ("E_TEACHERS_RURAL_OVER_RECRUITED", {"teachers_rural": "1800"}, "teachers_rural", "1800"),
    ("TYPE_INT", {"teachers_recruited": "1766.5"}, "teachers_recruited", "1766.5"),
]
FUNDING_REGRESSION = ["funds_total_wan", "land_mu", "teachers_recruited", "teachers_rural"]


@pytest.fixture(scope="module")
def funding_findings() -> pd.DataFrame:
    files: dict[str, list[dict]] = {}
    before: list[dict] = []
    for i, (_, change, _, _) in enumerate(FUNDING_CASES):
        files[f"case{i}"] = [
            {**GOOD_FUNDING, "county_code": f"35{i:04d}"},
            {**GOOD_FUNDING, **change, "county_code": f"35{i:04d}"},
        ]
    files["good"] = [GOOD_FUNDING]
    files["short"] = [
        {**GOOD_FUNDING, "funds_land_wan": None, "funds_urban_wan": "100", "county_code": "360001"}
    ]
    files["rounding"] = [{**GOOD_FUNDING, "funds_total_wan": "141999.995", "county_code": "360002"}]
    for i, column in enumerate(FUNDING_REGRESSION):
        code = f"37{i:04d}"
        files[f"reg-{column}"] = [{**GOOD_FUNDING, "county_code": code}]
        prev = {**GOOD_FUNDING, column: "1000000", "county_code": code}
        if column == "teachers_recruited":
            prev["teachers_rural"] = "1464"
        before.append(prev)
    return run_batch("funding", files, typed_rows("funding", before, "2017-05"))


@pytest.mark.parametrize(
    ("case", "rule", "column", "value"),
    [(i, c[0], c[2], c[3]) for i, c in enumerate(FUNDING_CASES)],
    ids=[f"{c[0]}-{i}" for i, c in enumerate(FUNDING_CASES)],
)
def test_funding_rule_catches_breaking_row(
    funding_findings: pd.DataFrame, case: int, rule: str, column: str, value: str | None
) -> None:
    findings = of(funding_findings, f"case{case}")
    assert findings["row_number"].eq(3).sum() == 0
    hit = findings[findings["rule"] == rule]
    assert len(hit) == 1, findings[["rule", "column_name", "value"]].to_dict("records")
    row = hit.iloc[0]
    assert (row["row_number"], row["column_name"], None if pd.isna(row["value"]) else row["value"]) == (
        4,
        column,
        value,
    )
    assert row["severity"] == "error" and row["message"].startswith("第4行")


@pytest.mark.parametrize("sid", ["good", "short", "rounding"])
def test_good_funding_rows_have_no_findings(funding_findings: pd.DataFrame, sid: str) -> None:
    """A good row; 其中 parts that fall short of the total; parts over it by less than 0.01."""
    assert of(funding_findings, sid).empty


@pytest.mark.parametrize("column", FUNDING_REGRESSION)
def test_funding_regression(funding_findings: pd.DataFrame, column: str) -> None:
    findings = of(funding_findings, f"reg-{column}")
    assert findings[["rule", "row_number", "column_name", "value", "severity"]].values.tolist() == [
        ["REGRESSION", 3, column, GOOD_FUNDING[column], "warning"]
    ]


def test_plan_rules() -> None:
    plan = [
        {
            "county_code": "340321",
            "plan_area_m2": "1000",
            "plan_equipment_wan": "50",
            "plan_cycle": "2014-2018",
        },
        {"county_code": "34032", "plan_area_m2": "-1", "plan_equipment_wan": None, "plan_cycle": "2014-2018"},
        {
            "county_code": "340321",
            "plan_area_m2": "1000",
            "plan_equipment_wan": "50",
            "plan_cycle": "2014-2018",
        },
    ]
    findings = run_batch("plan", {"plan": plan})
    assert sorted(findings[["rule", "row_number", "column_name"]].itertuples(index=False, name=None)) == [
        ("E_COUNTY_CODE", 4, "county_code"),
        ("E_NEGATIVE", 4, "plan_area_m2"),
        ("E_PLAN_COUNTY_REPEATED", 3, "county_code"),
        ("E_PLAN_COUNTY_REPEATED", 5, "county_code"),
        ("E_PLAN_EQUIPMENT", 4, "plan_equipment_wan"),
    ]


# -- the suites as files ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["progress", "funding", "plan"])
def test_every_expectation_names_rule_severity_column_and_message(kind: str) -> None:
    suite = load_suite(kind)
    assert suite["name"] == kind
    for exp in suite["expectations"]:
        meta = exp["meta"]
        assert meta["rule"].startswith(("E_", "W_"))
        assert meta["severity"] == ("warning" if meta["rule"].startswith("W_") else "error")
        assert meta["column"] and "{row}" in meta["message_zh"]
        if "row_condition" in exp["kwargs"]:
            assert exp["kwargs"]["condition_parser"] == "pandas"
    for check in suite["meta"]["plain_checks"]:
        assert set(check) >= {"rule", "severity", "column", "message_zh", "description"}


def test_suites_are_stable_indented_json_without_ids() -> None:
    for path in sorted(EXPECTATIONS_DIR.glob("*.json")):
        text = path.read_text(encoding="utf-8")
        suite = json.loads(text)
        assert text == json.dumps(suite, ensure_ascii=False, indent=2) + "\n"
        assert "id" not in suite and all("id" not in e for e in suite["expectations"])


def test_rules_version_is_12_hex() -> None:
    version = rules_version()
    assert len(version) == 12 and int(version, 16) >= 0
