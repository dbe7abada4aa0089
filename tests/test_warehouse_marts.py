"""The mart computations as plain functions on tiny frames (no database)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from warehouse import marts


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        ("2017-11", "2018-02", ["2017-11", "2017-12", "2018-01", "2018-02"]),
        ("2017-06", "2017-06", ["2017-06"]),
        ("2017-07", "2017-06", []),
    ],
)
def test_period_range(first: str, last: str, expected: list[str]) -> None:
    assert marts.period_range(first, last) == expected


@pytest.mark.parametrize(
    ("num", "den", "expected"),
    [(1083.0, 1000.0, 1.083), (5.0, 0.0, None), (5.0, None, None), (None, 10.0, None), (0.0, 10.0, 0.0)],
)
def test_ratio_is_null_without_a_denominator(
    num: float | None, den: float | None, expected: float | None
) -> None:
    out = marts.ratio(pd.Series([num], dtype="float64"), pd.Series([den], dtype="float64")).iloc[0]
    if expected is None:
        assert math.isnan(out)
    else:
        assert out == pytest.approx(expected)


@pytest.mark.parametrize(
    ("codes", "code", "name"),
    [(["340102", "341602"], "340000", "安徽省"), (["340102", "320102"], "000000", "全国")],
)
def test_province_row_code(codes: list[str], code: str, name: str) -> None:
    assert marts.province_code(codes) == code
    assert marts.province_name(code) == name


def test_carry_forward_takes_latest_earlier_period() -> None:
    agg = pd.DataFrame(
        {"county_code": ["A", "A", "B"], "period": ["2017-03", "2017-05", "2017-06"], "x": [1.0, 2.0, 3.0]}
    )
    out = marts.carry_forward(agg, ["A", "B"], ["2017-05", "2017-06", "2017-07"]).set_index(
        ["county_code", "period"]
    )
    expected = {
        ("A", "2017-05"): (2.0, "2017-05", True, False),
        ("A", "2017-06"): (2.0, "2017-05", False, True),
        ("A", "2017-07"): (2.0, "2017-05", False, True),
        ("B", "2017-05"): (None, None, False, False),
        ("B", "2017-06"): (3.0, "2017-06", True, False),
        ("B", "2017-07"): (3.0, "2017-06", False, True),
    }
    for key, (x, source, has_return, carried) in expected.items():
        row = out.loc[key]
        assert pd.isna(row["x"]) if x is None else row["x"] == x, key
        assert pd.isna(row["source_period"]) if source is None else row["source_period"] == source, key
        assert (bool(row["has_return"]), bool(row["is_carried_forward"])) == (has_return, carried), key


@pytest.mark.parametrize(
    ("cycles", "period", "area"),
    [
        ({"2014-2018": 100.0, "2019-2023": 200.0}, "2017-06", 100.0),
        ({"2014-2018": 100.0, "2019-2023": 200.0}, "2020-01", 200.0),
        ({"2014-2018": 100.0, "2019-2023": 200.0}, "2025-01", 200.0),  # none fits: the latest
        ({"": 50.0}, "2017-06", 50.0),  # no cycle given: applies always
    ],
)
def test_plans_by_period_picks_the_cycle(cycles: dict[str, float], period: str, area: float) -> None:
    plans = pd.DataFrame(
        {
            "county_code": "A",
            "plan_cycle": list(cycles),
            "plan_area_m2": list(cycles.values()),
            "plan_equipment_wan": 1.0,
        }
    )
    out = marts.plans_by_period(plans, ["A"], [period])
    assert out["plan_area_m2"].tolist() == [area]


def test_city_rates_come_from_sums_not_averages() -> None:
    divisions = pd.DataFrame(
        {
            "county_code": ["340102", "340103"],
            "county_name": ["甲", "乙"],
            "city_code": "340100",
            "city_name": "合肥市",
        }
    )
    plans = pd.DataFrame(
        {
            "county_code": ["340102", "340103"],
            "plan_cycle": "",
            "plan_area_m2": [100.0, 900.0],
            "plan_equipment_wan": 0.0,
        }
    )
    agg = pd.DataFrame(
        {
            "county_code": ["340102", "340103"],
            "period": "2017-06",
            "submission_id": ["s1", "s2"],
            "is_late": [False, True],
            "projects_total": [1, 1],
            "projects_not_started": [0, 0],
            "projects_in_progress": [0, 1],
            "projects_completed": [1, 0],
            "planned_area_m2": [100.0, 900.0],
            "started_area_m2": [100.0, 450.0],
            "completed_area_m2": [200.0, 0.0],  # 200% and 0%
            "completed_equipment_wan": [0.0, 0.0],
            "planned_invest_wan": [1.0, 1.0],
            "completed_invest_wan": [1.0, 0.0],
        }
    )
    county = marts.county_progress_mart(agg, ["340102", "340103"], ["2017-06"], plans, divisions)
    assert county["area_completion_rate"].tolist() == pytest.approx([2.0, 0.0])
    assert county["equipment_completion_rate"].isna().all()  # plan 0
    city = marts.city_progress_mart(county).set_index("level")
    assert city.loc["city", "area_completion_rate"] == pytest.approx(200.0 / 1000.0)  # not (2.0 + 0.0) / 2
    assert city.loc["city", "start_rate"] == pytest.approx(550.0 / 1000.0)
    assert city.loc["province", "city_code"] == "340000"
    assert city.loc["province", "counties_reporting"] == 2
