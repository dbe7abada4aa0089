"""Implausible magnitudes are findings (issue 16, item 6).

The bounds live in the suites (``E_IMPLAUSIBLE`` in expectations/progress.json per project and
expectations/funding.json per county, documented in each suite's ``meta.plausibility``). A real
nightly run where one county's row claims a 1e308 m² area: that row is rejected with a Chinese
message naming row, column and value, the county's other rows load, and the city and province
totals stay finite (they overflowed to inf).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gaibao.settings import get_settings
from tasks.validate import load_suite
from tests.filebuilders import funding_rows, progress_rows, write_return

PERIOD = "2018-12"


@pytest.mark.parametrize("kind", ["progress", "funding"])
def test_every_figure_has_a_documented_upper_bound(kind: str) -> None:
    from gaibao.contract import COLUMNS

    suite = load_suite(kind)
    bounded = {
        e["kwargs"]["column"]: e["kwargs"]["max_value"]
        for e in suite["expectations"]
        if e["meta"]["rule"] == "E_IMPLAUSIBLE"
    }
    numbers = {
        c.name
        for c in COLUMNS[kind]
        if c.name.endswith(("_m2", "_wan", "_mu")) or c.name.startswith("teachers")
    }
    assert numbers and numbers <= set(bounded), numbers - set(bounded)
    assert all(0 < limit < 1e12 for limit in bounded.values())
    assert "E_IMPLAUSIBLE" in suite["meta"]["plausibility"]


def test_a_1e308_area_is_rejected_and_totals_stay_finite(
    prefect_harness: None, gaibao_home: Path, warehouse_url: str
) -> None:
    from flows.nightly import nightly_ingest
    from warehouse.store import Warehouse

    rows = progress_rows(3, county_code="340321", period=PERIOD)
    rows[1]["planned_area_m2"] = "1e308"
    rows[1]["project_type"] = "校舍改造"
    folder = gaibao_home / "inbox" / "340321"
    folder.mkdir(parents=True)
    write_return(folder / "怀远县进展_2018年12月.csv", rows)
    write_return(
        folder / "怀远县资金_2018年12月.csv",
        [{**funding_rows(county_code="340321", period=PERIOD)[0], "funds_total_wan": "1e308"}],
        kind="funding",
    )
    other = gaibao_home / "inbox" / "340322"
    other.mkdir(parents=True)
    write_return(other / "五河县进展_2018年12月.csv", progress_rows(2, county_code="340322", period=PERIOD))
    get_settings.cache_clear()
    nightly_ingest(period=PERIOD, counties=["340321", "340322"])

    wh = Warehouse.from_settings(get_settings())
    issues = wh.read_table("dq_issue", where={"rule": "E_IMPLAUSIBLE"})
    progress_issue = issues[issues["kind"] == "progress"].iloc[0]
    assert progress_issue["county_code"] == "340321" and progress_issue["column_name"] == "planned_area_m2"
    assert progress_issue["value"] == "1e308" and int(progress_issue["row_number"]) == 3
    assert progress_issue["message"].startswith("第3行") and "1e308" in progress_issue["message"]
    assert "超出合理范围" in progress_issue["message"]
    assert set(issues["kind"]) == {"progress", "funding"}
    facts = wh.read_table("fact_progress", where={"county_code": "340321"})
    assert len(facts) == 2 and facts["planned_area_m2"].max() < 1e6  # the other rows loaded
    assert wh.read_table("fact_funding", where={"county_code": "340321"}).empty
    city = wh.read_table("mart_city_progress", where={"period": PERIOD})
    county = wh.read_table("mart_county_progress", where={"period": PERIOD})
    for frame in (city, county):
        for column in ("planned_area_m2", "started_area_m2", "completed_area_m2", "planned_invest_wan"):
            values = frame[column].dropna().astype(float)
            assert len(values) and all(math.isfinite(v) for v in values), (column, values.tolist())
    expected = float(facts["planned_area_m2"].sum())
    assert county.set_index("county_code").loc["340321", "planned_area_m2"] == pytest.approx(expected)
    wh.close()
