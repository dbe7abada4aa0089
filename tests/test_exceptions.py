"""Exception categories and the scorecard on tiny built frames with known answers."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from reports import periods
from reports.config import ScoreWeights, Thresholds, load_score_weights, load_thresholds
from reports.exceptions import (
    carry_since,
    county_behind,
    data_errors,
    not_started_overdue,
    return_exceptions,
    stalled,
    unexplained_warnings,
)
from reports.scorecard import compute_scorecard

TH = Thresholds()
P = "2018-06"  # last day 2018-06-30


def fact(period: str, project_id: str = "P1", status: str = "未开工", **kw) -> dict:
    row = {
        "period": period,
        "county_code": kw.pop("county_code", "340321"),
        "project_id": project_id,
        "school_name": kw.pop("school_name", "怀远县第一中学"),
        "status": status,
        "planned_start": kw.pop("planned_start", None),
        "completed_area_m2": kw.pop("completed_area_m2", 0.0),
        "completed_invest_wan": kw.pop("completed_invest_wan", 0.0),
    }
    row.update(kw)
    return row


def frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["planned_start"] = pd.to_datetime(df["planned_start"])
    return df


@pytest.mark.parametrize(
    ("days_before_end", "overdue"),
    [(89, False), (90, False), (91, True), (400, True)],
)
def test_not_started_overdue_day_edges(days_before_end: int, overdue: bool) -> None:
    start = date(2018, 6, 30) - timedelta(days=days_before_end)
    out = not_started_overdue(frame([fact(P, planned_start=start)]), P, TH)
    assert (len(out) == 1) is overdue
    if overdue:
        row = out.iloc[0]
        assert row["category"] == "NOT_STARTED_OVERDUE"
        assert row["project_id"] == "P1"
        assert f"{days_before_end}天" in row["detail"]
        # since: the first period whose last day is more than 90 days after the planned start
        since = row["since_period"]
        assert (periods.last_day(since) - start).days > 90
        assert (periods.last_day(periods.previous(since)) - start).days <= 90


def test_not_started_overdue_ignores_started_projects() -> None:
    rows = [
        fact(P, status="在建", planned_start=date(2017, 1, 1)),
        fact(P, "P2", status="已竣工", planned_start=date(2017, 1, 1)),
    ]
    assert not_started_overdue(frame(rows), P, TH).empty


@pytest.mark.parametrize(
    ("run", "flag", "since"),
    [(5, False, None), (6, True, "2018-06"), (8, True, "2018-04")],
)
def test_not_started_without_date_for_six_periods(run: int, flag: bool, since: str | None) -> None:
    rows = [fact(p) for p in periods.window(P, run)]
    out = not_started_overdue(frame(rows), P, TH)
    assert (len(out) == 1) is flag
    if flag:
        assert out.iloc[0]["since_period"] == since
        assert f"连续{run}个月" in out.iloc[0]["detail"]


def test_not_started_without_date_gap_breaks_the_run() -> None:
    ps = periods.window(P, 7)
    rows = [fact(p) for p in ps if p != periods.shift(P, -3)]  # a missing month 3 periods ago
    assert not_started_overdue(frame(rows), P, TH).empty


@pytest.mark.parametrize(
    ("history", "flag", "since"),
    [
        ([10, 10], False, None),  # unchanged once: not stalled
        ([5, 10, 10], False, None),
        ([10, 10, 10], True, "2018-06"),  # P == P-1 == P-2
        ([10, 10, 10, 10, 10], True, "2018-04"),
        ([10, 10, 11, 11], False, None),  # moved two months ago, unchanged once since
        ([10, 10, 10, 11], False, None),  # moved this month
    ],
)
def test_stalled_edges(history: list[float], flag: bool, since: str | None) -> None:
    ps = periods.window(P, len(history))
    rows = [
        fact(p, status="在建", completed_area_m2=a, completed_invest_wan=1.0)
        for p, a in zip(ps, history, strict=True)
    ]
    out = stalled(frame(rows), P, TH)
    assert (len(out) == 1) is flag
    if flag:
        assert out.iloc[0]["since_period"] == since


def test_stalled_investment_moving_is_not_stalled_and_completed_is_ignored() -> None:
    ps = periods.window(P, 3)
    moving = [
        fact(p, status="在建", completed_area_m2=10, completed_invest_wan=i)
        for p, i in zip(ps, [1, 1, 2], strict=True)
    ]
    done = [fact(p, "P2", status="已竣工", completed_area_m2=10, completed_invest_wan=1) for p in ps]
    assert stalled(frame(moving + done), P, TH).empty


def test_stalled_with_a_missing_month_is_not_stalled() -> None:
    rows = [
        fact(p, status="在建", completed_area_m2=10) for p in [periods.shift(P, -3), periods.shift(P, -2), P]
    ]
    assert stalled(frame(rows), P, TH).empty


def progress_row(code: str, city: str, area: float | None, eq: float | None, period: str = P) -> dict:
    return {
        "period": period,
        "county_code": code,
        "county_name": f"县{code}",
        "city_code": city,
        "city_name": f"市{city}",
        "area_completion_rate": area,
        "equipment_completion_rate": eq,
        "start_rate": 1.0,
        "projects_total": 10,
    }


def city_row(city: str, area: float, eq: float) -> dict:
    return {
        "period": P,
        "level": "city",
        "city_code": city,
        "area_completion_rate": area,
        "equipment_completion_rate": eq,
    }


@pytest.mark.parametrize(
    ("county_area", "county_eq", "behind"),
    [
        (0.80, 0.90, False),  # exactly 10 points below: not behind
        (0.7999, 0.90, True),  # a hair more than 10 below
        (0.81, 0.90, False),
        (0.90, 0.79, True),  # equipment 11 points below
        (0.90, 0.80, False),
    ],
)
def test_county_behind_city_edges(county_area: float, county_eq: float, behind: bool) -> None:
    counties = pd.DataFrame([progress_row("340321", "340300", county_area, county_eq)])
    cities = pd.DataFrame([city_row("340300", 0.90, 0.90)])
    out = county_behind(counties, cities, P, Thresholds(bottom_n=0))
    assert (len(out) == 1) is behind


def test_county_behind_bottom_ten() -> None:
    # 12 counties, each its own city so no city gap; rates 0.50..0.61: the lowest 10 are flagged
    rows = [progress_row(f"3400{i:02d}", f"34{i:02d}00", 0.50 + i / 100, 1.0) for i in range(12)]
    cities = pd.DataFrame([city_row(f"34{i:02d}00", 0.50 + i / 100, 1.0) for i in range(12)])
    out = county_behind(pd.DataFrame(rows), cities, P, TH)
    assert sorted(out["county_code"]) == [f"3400{i:02d}" for i in range(10)]
    assert "倒数第1名" in out.set_index("county_code").at["340000", "detail"]


def submission(code: str, kind: str = "progress", status: str = "accepted", **kw) -> dict:
    row = {
        "submission_id": kw.pop("submission_id", f"s-{code}-{kind}-{status}"),
        "kind": kind,
        "county_code": code,
        "period": P,
        "status": status,
        "reason": kw.pop("reason", None),
        "rows_total": kw.pop("rows_total", 10),
        "rows_accepted": kw.pop("rows_accepted", 10),
        "rows_rejected": kw.pop("rows_rejected", 0),
        "is_late": kw.pop("is_late", False),
        "received_at": kw.pop("received_at", pd.Timestamp("2018-07-03T02:00:00Z")),
    }
    row.update(kw)
    return row


def test_return_exceptions_missing_late_refused() -> None:
    subs = pd.DataFrame(
        [
            submission("340101"),
            submission("340101", "funding"),
            submission("340102", is_late=True, received_at=pd.Timestamp("2018-07-09T01:00:00Z")),
            submission("340102", "funding"),
            submission("340103", status="refused", reason="区划代码与报送单位不符"),
            submission("340103", "funding"),
            # refused then accepted: not a refused return
            submission("340104", status="refused", submission_id="x1"),
            submission("340104", submission_id="x2"),
            submission("340104", "funding"),
        ]
    )
    out = return_exceptions(subs, ["340101", "340102", "340103", "340104", "340105"], P)
    got = {(r.category, r.county_code) for r in out.itertuples()}
    assert got == {
        ("LATE_RETURN", "340102"),
        ("REFUSED_RETURN", "340103"),
        ("MISSING_RETURN", "340105"),
    } | {("MISSING_RETURN", "340105")}
    missing = out[out["category"] == "MISSING_RETURN"]
    assert len(missing) == 2  # progress and funding
    assert "区划代码与报送单位不符" in out[out["category"] == "REFUSED_RETURN"].iloc[0]["detail"]
    assert "2018年07月09日" in out[out["category"] == "LATE_RETURN"].iloc[0]["detail"]


def issue(sid: str, code: str, rule: str, severity: str, explained: bool = False) -> dict:
    return {
        "submission_id": sid,
        "county_code": code,
        "period": P,
        "rule": rule,
        "severity": severity,
        "is_explained": explained,
        "kind": "progress",
    }


def test_data_errors_and_unexplained_warnings() -> None:
    subs = pd.DataFrame(
        [submission("340101", rows_rejected=3, submission_id="a"), submission("340102", submission_id="b")]
    )
    issues = pd.DataFrame(
        [
            issue("a", "340101", "BAD_CODE", "error"),
            issue("a", "340101", "BAD_CODE", "error"),
            issue("a", "340101", "NEGATIVE", "error"),
            issue("a", "340101", "REGRESSION", "warning", explained=True),
            issue("b", "340102", "REGRESSION", "warning"),
            issue("b", "340102", "REGRESSION", "warning"),
            issue("b", "340102", "DROPPED_PROJECT", "warning", explained=True),
        ]
    )
    errs = data_errors(subs, issues, P)
    assert list(errs["county_code"]) == ["340101"]
    assert "3行被拒收" in errs.iloc[0]["detail"] and "BAD_CODE×2" in errs.iloc[0]["detail"]
    warns = unexplained_warnings(subs, issues, P)
    assert list(warns["county_code"]) == ["340102"]
    assert warns.iloc[0]["detail"].startswith("2条预警未说明")


def test_since_period_carried_from_last_period() -> None:
    cur = stalled(frame([fact(p, status="在建", completed_area_m2=5) for p in periods.window(P, 3)]), P, TH)
    assert cur.iloc[0]["since_period"] == P
    prior = pd.DataFrame(
        [{"category": "STALLED", "county_code": "340321", "project_id": "P1", "since_period": "2017-11"}]
    )
    assert carry_since(cur, prior).iloc[0]["since_period"] == "2017-11"
    other = prior.assign(project_id="P9")
    assert carry_since(cur, other).iloc[0]["since_period"] == P


def test_config_defaults_and_override(tmp_path) -> None:
    assert load_thresholds() == Thresholds()
    assert load_score_weights().weights == ScoreWeights().weights
    assert load_score_weights().total == 100
    f = tmp_path / "t.yaml"
    f.write_text("not_started_overdue_days: 60\n", encoding="utf-8")
    th = load_thresholds(f)
    assert th.not_started_overdue_days == 60 and th.stalled_periods == 2
    f.write_text("nonsense: 1\n", encoding="utf-8")
    with pytest.raises(ValueError):
        load_thresholds(f)
    w = tmp_path / "w.yaml"
    w.write_text("weights:\n  area_completion: 50\n", encoding="utf-8")
    assert load_score_weights(w).weights["area_completion"] == 50


def test_scorecard_points_and_ranks() -> None:
    cp = pd.DataFrame(
        [
            progress_row("340101", "340100", 1.2, 1.0),  # capped at full points
            progress_row("340102", "340100", 0.5, 0.5),
            progress_row("340201", "340200", 0.0, 0.0),
        ]
    )
    subs = pd.DataFrame(
        [
            submission("340101"),
            submission("340101", "funding"),
            submission("340102", is_late=True, rows_rejected=5, rows_total=10),
            submission("340102", "funding", rows_total=0),
        ]
    )
    exc = pd.DataFrame(
        [
            {"category": "STALLED", "county_code": "340102", "project_id": "A"},
            {"category": "NOT_STARTED_OVERDUE", "county_code": "340102", "project_id": "B"},
            {"category": "MISSING_RETURN", "county_code": "340201", "project_id": None},
        ]
    )
    prior = pd.DataFrame([{"county_code": "340101", "score": 90.0}])
    sc = compute_scorecard(cp, subs, exc, P, ScoreWeights(), prior).set_index("county_code")
    assert sc.at["340101", "score"] == 100.0
    assert sc.at["340101", "score_change"] == 10.0
    assert pd.isna(sc.at["340102", "score_change"])
    b = sc.loc["340102"]
    assert b["points_area_completion"] == 17.5
    assert b["points_equipment_completion"] == 12.5
    assert b["points_timeliness"] == 7.5  # progress late (0.5), funding on time (1)
    assert b["points_data_quality"] == 5.0  # 5 of 10 rows rejected
    assert b["points_overdue_stalled"] == 8.0  # 2 of 10 projects
    assert b["score"] == pytest.approx(17.5 + 12.5 + 10 + 7.5 + 5 + 8)
    c = sc.loc["340201"]
    assert c["points_timeliness"] == 0 and c["points_data_quality"] == 0
    assert list(sc["rank_in_province"].sort_values()) == [1, 2, 3]
    assert sc.at["340102", "rank_in_city"] == 2 and sc.at["340201", "rank_in_city"] == 1
