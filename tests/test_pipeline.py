"""The whole pipeline on the demo: real files, the real Prefect engine, SQLite + Parquet.

One demo backfill (2017-01..2018-12, 15 counties) per module; tests that change the warehouse
work on a copy of its GAIBAO_HOME.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect")]

# The demo's names for the contract's rules, and the pipeline's rule codes that must catch them.
DEMO_RULE_TO_CODE = {
    "SCHOOL_CODE_MISSING": "E_SCHOOL_CODE",
    "SCHOOL_CODE_MALFORMED": "E_SCHOOL_CODE",
    "SCHOOL_NAME_MISSING": "E_SCHOOL_NAME",
    "SCHOOL_NAME_TOO_LONG": "E_SCHOOL_NAME",
    "PROJECT_ID_MISSING": "E_PROJECT_ID",
    "PROJECT_ID_MALFORMED": "E_PROJECT_ID",
    "PROJECT_ID_DUPLICATE": "E_PROJECT_ID_REPEATED",
    "PROJECT_TYPE_INVALID": "E_PROJECT_TYPE",
    "STATUS_INVALID": "E_STATUS",
    "PLANNED_AREA_MISSING": "E_PLANNED_AREA_MISSING",
    "PLANNED_AREA_FOR_EQUIPMENT": "E_PLANNED_AREA_EQUIPMENT",
    "STARTED_AREA_NEGATIVE": "E_NEGATIVE",
    "COMPLETED_AREA_GT_STARTED": "E_COMPLETED_AREA_OVER_STARTED",
    "PLANNED_INVEST_NOT_POSITIVE": "E_PLANNED_INVEST",
    "COMPLETED_INVEST_NEGATIVE": "E_NEGATIVE",
    "FUNDS_EXCEED_INVEST": "E_FUNDS_OVER_COMPLETED",
    "ACTUAL_START_MISSING": "E_ACTUAL_START_MISSING",
    "COMPLETED_DATE_MISSING": "E_COMPLETED_DATE_MISSING",
    "COMPLETED_BEFORE_START": "E_COMPLETED_DATE_BEFORE_START",
    "COMPLETED_AFTER_PERIOD": "E_COMPLETED_DATE_AFTER_PERIOD",
    "NOT_STARTED_WITH_PROGRESS": "E_NOT_STARTED_WITH_PROGRESS",
    "COMPLETED_WITHOUT_AREA": "E_COMPLETED_WITHOUT_AREA",
    "COMPLETED_AREA_OVER_150PCT": "W_COMPLETED_AREA_OVER_PLAN",
    "COMPLETED_INVEST_OVER_150PCT": "W_COMPLETED_INVEST_OVER_PLAN",
    "REGRESSION": "REGRESSION",
    "DROPPED_PROJECT": "DROPPED_PROJECT",
    "STATUS_REGRESSION": "STATUS_REGRESSION",
    "TOTAL_MISMATCH": "TOTAL_MISMATCH",
    "FUNDING_PARTS_EXCEED_TOTAL": "E_FUNDING_PARTS_OVER_TOTAL",
    "TEACHERS_RURAL_EXCEEDS_RECRUITED": "E_TEACHERS_RURAL_OVER_RECRUITED",
    "FUNDING_TOTAL_MISSING": "E_FUNDS_TOTAL_MISSING",
    "FUNDING_NEGATIVE": "E_NEGATIVE",
    "NOT_WHOLE_NUMBER": "TYPE_INT",
}

# Rules that judge several columns together: the finding names one of them.
MULTI_COLUMN_RULES = {
    "DROPPED_PROJECT", "TOTAL_MISMATCH", "E_PROJECT_ID_REPEATED", "E_FUNDS_OVER_COMPLETED", "E_FUNDING_PARTS_OVER_TOTAL",
}
MART_TABLES = ("mart_county_progress", "mart_city_progress", "mart_county_funding")
KEEP_TABLES = ("submission", "dq_issue", "fact_progress", "fact_funding", *MART_TABLES)


def _set_home(home: Path) -> None:
    from gaibao.settings import get_settings

    os.environ["GAIBAO_HOME"] = str(home)
    os.environ.pop("GAIBAO_WAREHOUSE_URL", None)
    os.environ.pop("GAIBAO_SOURCES", None)
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Iterator[tuple[Path, object, dict]]:
    """The demo generated and backfilled once: (GAIBAO_HOME, DemoManifest, backfill summary)."""
    from flows.backfill import backfill
    from gaibao.demo import generate_demo
    from tasks.plan import load_plan_file
    from warehouse.store import Warehouse

    saved = {k: os.environ.get(k) for k in ("GAIBAO_HOME", "GAIBAO_WAREHOUSE_URL", "GAIBAO_SOURCES")}
    home = tmp_path_factory.mktemp("demo") / "home"
    _set_home(home)
    manifest = generate_demo(home)
    wh = Warehouse.from_settings()
    wh.upgrade()
    outcome = load_plan_file(wh, manifest.plan_file)
    assert outcome.ok, outcome.message
    wh.close()
    summary = backfill(start="2017-01", end="2018-12")
    yield home, manifest, summary
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    from gaibao.settings import get_settings

    get_settings.cache_clear()


def _warehouse(home: Path):
    from warehouse.store import Warehouse

    _set_home(home)
    return Warehouse.from_settings()


def _snapshot(home: Path) -> dict[str, object]:
    """Every table's rows (sorted) and every lake and archive file's bytes."""
    wh = _warehouse(home)
    tables = {}
    for name in KEEP_TABLES:
        frame = wh.read_table(name)
        frame = frame.drop(columns=[c for c in ("issue_id", "loaded_at") if c in frame.columns])
        tables[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    wh.close()
    files = {}
    for sub in ("lake", "archive"):
        for path in sorted((home / sub).rglob("*")):
            if path.is_file() and "_journal" not in path.parts:
                files[str(path.relative_to(home))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"tables": tables, "files": files}


def _assert_same(before: dict, after: dict, tables: tuple[str, ...] = KEEP_TABLES) -> None:
    for name in tables:
        pd.testing.assert_frame_equal(before["tables"][name], after["tables"][name], check_dtype=False)


def _copy_home(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "home"
    shutil.copytree(src, dst)
    return dst


def test_demo_backfill_loads_every_county_and_period(demo) -> None:
    home, manifest, summary = demo
    assert summary["periods"][0] == "2017-01" and summary["periods"][-1] == "2018-12"
    assert not summary["unreachable"]
    wh = _warehouse(home)
    subs = wh.read_table("submission")
    assert set(subs["county_code"]) == set(manifest.counties)
    accepted = subs[subs["status"] == "accepted"]
    assert set(accepted["period"]) == set(manifest.periods)
    mart = wh.read_table("mart_county_progress")
    assert len(mart) == len(manifest.counties) * len(manifest.periods)


def test_every_deliberate_row_fault_is_caught(demo) -> None:
    home, manifest, _ = demo
    wh = _warehouse(home)
    issues = wh.read_table("dq_issue")
    missed = []
    for anomaly in manifest.anomalies:
        code = DEMO_RULE_TO_CODE.get(anomaly.rule)
        if code is None:
            continue
        hits = issues[
            (issues["rule"] == code) & (issues["county_code"] == anomaly.county_code) & (issues["period"] == anomaly.period)
        ]
        if anomaly.row_number is not None:
            hits = hits[hits["row_number"] == anomaly.row_number]
        if anomaly.column and code not in MULTI_COLUMN_RULES:
            hits = hits[hits["column_name"] == anomaly.column]
        if hits.empty:
            missed.append((anomaly.rule, code, anomaly.county_code, anomaly.period, anomaly.row_number, anomaly.column))
        elif anomaly.severity == "warning":
            assert bool(hits["is_explained"].iloc[0]) == anomaly.explained, anomaly
    assert not missed, f"faults the pipeline did not report: {missed}"


def test_wrong_county_file_is_refused_with_reason_and_loads_nothing(demo) -> None:
    home, manifest, _ = demo
    (anomaly,) = manifest.anomalies_of("WRONG_COUNTY")
    wh = _warehouse(home)
    subs = wh.read_table("submission")
    refused = subs[(subs["file_name"] == anomaly.file.name) & (subs["county_code"] == anomaly.county_code)]
    assert list(refused["status"]) == ["refused"]
    assert "区划代码" in refused["reason"].iloc[0]
    facts = wh.read_table("fact_progress")
    assert refused["submission_id"].iloc[0] not in set(facts["submission_id"])


def test_resubmission_supersedes_the_first_file(demo) -> None:
    home, manifest, _ = demo
    (anomaly,) = manifest.anomalies_of("RESUBMITTED")
    wh = _warehouse(home)
    subs = wh.read_table(
        "submission", where={"county_code": anomaly.county_code, "period": anomaly.period, "kind": anomaly.kind}
    ).sort_values("received_at")
    assert list(subs["status"]) == ["superseded", "accepted"]
    fact = wh.read_table(f"fact_{anomaly.kind}", where={"county_code": anomaly.county_code, "period": anomaly.period})
    assert set(fact["submission_id"]) == {subs["submission_id"].iloc[-1]}


def test_late_and_missing_returns_are_in_the_register(demo) -> None:
    from tasks.register import returns_register

    home, manifest, _ = demo
    wh = _warehouse(home)
    (late,) = manifest.anomalies_of("LATE")
    reg = returns_register(wh, late.period, counties=[late.county_code])
    row = reg[reg["kind"] == late.kind].iloc[0]
    assert row["state"] == "accepted" and bool(row["is_late"])
    (missing,) = manifest.anomalies_of("MISSING")
    reg = returns_register(wh, missing.period, counties=[missing.county_code])
    assert reg[reg["kind"] == missing.kind]["state"].iloc[0] == "missing"
    mart = wh.read_table("mart_county_progress", where={"county_code": missing.county_code, "period": missing.period})
    if missing.kind == "progress":
        assert bool(mart["is_carried_forward"].iloc[0]) and not bool(mart["has_return"].iloc[0])


def test_bengbu_is_ahead_of_plan_and_linquan_lags(demo) -> None:
    home, _, _ = demo
    wh = _warehouse(home)
    city = wh.read_table("mart_city_progress", where={"period": "2018-12"}).set_index("city_code")
    assert city.loc["340300", "area_completion_rate"] > 1.0
    county = wh.read_table("mart_county_progress", where={"period": "2018-12"}).set_index("county_code")
    assert county.loc["341221", "area_completion_rate"] < county["area_completion_rate"].median()


def test_backfill_twice_gives_identical_marts(demo, tmp_path: Path) -> None:
    from flows.backfill import backfill

    home = _copy_home(demo[0], tmp_path)
    _set_home(home)
    before = _snapshot(home)
    summary = backfill(start="2017-01", end="2018-12")
    assert summary["totals"]["accepted"] == 0 and summary["totals"]["refused"] == 0
    assert summary["totals"]["duplicates"] == summary["totals"]["files_seen"] > 0
    _assert_same(before, _snapshot(home))


def test_same_file_twice_changes_nothing(demo, tmp_path: Path) -> None:
    from flows.nightly import nightly_ingest

    home = _copy_home(demo[0], tmp_path)
    folder = home / "inbox" / "340321"
    original = sorted(folder.glob("*2018年12月*"))[0]
    shutil.copy2(original, folder / f"再次报送_{original.name}")
    before = _snapshot(home)
    summary = nightly_ingest(period="2018-12", counties=["340321"])
    assert summary["totals"]["duplicates"] >= 1 and summary["totals"]["accepted"] == 0
    _assert_same(before, _snapshot(home))


MEASURES = [
    "projects_total", "projects_not_started", "projects_in_progress", "projects_completed",
    "planned_area_m2", "started_area_m2", "completed_area_m2", "area_completion_rate", "start_rate",
    "completed_equipment_wan", "equipment_completion_rate", "planned_invest_wan", "completed_invest_wan",
]  # fmt: skip


def test_same_data_in_another_format_leaves_marts_unchanged(demo, tmp_path: Path) -> None:
    from flows.nightly import nightly_ingest
    from gaibao.contract import canonical_names
    from gaibao.returnfiles import FileStyle, write_return

    home = _copy_home(demo[0], tmp_path)
    wh = _warehouse(home)
    county, period = "340311", "2018-12"
    facts = wh.read_table("fact_progress", where={"county_code": county, "period": period})
    before_mart = wh.read_table("mart_county_progress", where={"period": period}).set_index("county_code")[MEASURES]
    wh.close()
    rows = facts[[c for c in canonical_names("progress") if c in facts.columns]].to_dict("records")
    for row in rows:
        for key, value in list(row.items()):
            if isinstance(value, pd.Timestamp):
                row[key] = value.date()
            elif value is not None and not isinstance(value, str) and pd.isna(value):
                row[key] = None
    target = home / "inbox" / county / f"淮上区全面改薄项目进展月报{period[:4]}年{int(period[5:])}月_更正.xlsx"
    write_return(target, "progress", rows, FileStyle(fmt="xlsx", title_rows=True, money_unit="元"), period=period)
    summary = nightly_ingest(period=period, counties=[county])
    assert summary["totals"]["accepted"] == 1, summary
    wh = _warehouse(home)
    after_mart = wh.read_table("mart_county_progress", where={"period": period}).set_index("county_code")[MEASURES]
    pd.testing.assert_frame_equal(before_mart.sort_index(), after_mart.sort_index(), check_exact=False, rtol=1e-9)
    subs = wh.read_table("submission", where={"county_code": county, "period": period, "kind": "progress"})
    assert sorted(subs["status"]) == ["accepted", "superseded"]


@pytest.mark.parametrize(
    "case",
    ["wrong_period", "unreadable", "missing_column", "unknown_unit", "wrong_county"],
)
def test_refused_file_changes_nothing_accepted(demo, tmp_path: Path, case: str) -> None:
    from flows.nightly import nightly_ingest

    home = _copy_home(demo[0], tmp_path)
    county, period = "340302", "2018-12"
    folder = home / "inbox" / county
    good = next(p for p in sorted(folder.glob("*2018-12*")) if "progress" in p.name)
    text = good.read_bytes().decode("utf-8-sig")
    lines = text.splitlines()
    header = lines[0].split(",")
    if case == "wrong_period":
        body = text.replace("2018-12", "2018-11")
    elif case == "unreadable":
        body = None
        (folder / "340302_progress_2018-12_v2.csv").write_bytes(b"\x00\xff\xfe garbage \x00" * 50)
    elif case == "missing_column":
        idx = next(i for i, h in enumerate(header) if "项目编号" in h or h == "project_id")
        body = "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != idx) for line in lines)
    elif case == "unknown_unit":
        body = text.replace("（万元）", "（千元）", 1).replace("(万元)", "(千元)", 1)
        assert body != text
    else:
        body = text.replace("340302", "340303")
    if body is not None:
        (folder / "340302_progress_2018-12_v2.csv").write_text(body, encoding="utf-8")
    before = _snapshot(home)
    summary = nightly_ingest(period=period, counties=[county])
    assert summary["totals"]["refused"] == 1 and summary["totals"]["accepted"] == 0, summary
    after = _snapshot(home)
    _assert_same(before, after, tables=("fact_progress", "fact_funding", *MART_TABLES))
    assert {k: v for k, v in before["files"].items() if k.startswith("lake")} == {
        k: v for k, v in after["files"].items() if k.startswith("lake")
    }
    wh = _warehouse(home)
    new = wh.read_table("submission", where={"file_name": "340302_progress_2018-12_v2.csv"})
    assert list(new["status"]) == ["refused"] and new["reason"].iloc[0]
