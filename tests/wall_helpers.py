"""The warehouse the wall chart tests and the browser tests share: three counties in two cities
(portal_helpers), two months ingested by the pipeline's functions, a five-year plan, the month's
pack built (so the wall chart has its stored ranking and exception lists)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from portal_helpers import (
    COUNTY_A,
    COUNTY_A2,
    COUNTY_B,
    build_portal_warehouse,
    county_rows,
    ingest_plain,
    write_inbox,
)

PERIOD = "2018-12"
CITY_B = "341200"
HOSTILE_SCHOOL = '<script>alert("x")</script>太和县第9小学'


def build_wall_warehouse(home: Path) -> tuple[Any, Any, dict[str, str]]:
    """(warehouse, settings, users) for the wall chart: 2018-11 and 2018-12, plan, the 2018-12 pack."""
    from reports.config import load_score_weights, load_thresholds
    from reports.pack import build_pack

    wh, settings, users = build_portal_warehouse(home)
    wh.load_plan(
        pd.DataFrame(
            {
                "county_code": [COUNTY_A, COUNTY_A2, COUNTY_B],
                "plan_area_m2": [6000.0, 5000.0, 7000.0],
                "plan_equipment_wan": [500.0, 400.0, 600.0],
                "plan_cycle": ["2016-2020"] * 3,
            }
        )
    )
    for county in (COUNTY_A, COUNTY_A2, COUNTY_B):
        rows = county_rows(county, PERIOD)
        if county == COUNTY_B:
            rows[1]["school_name"] = HOSTILE_SCHOOL
        write_inbox(home, county, PERIOD, rows)
    ingest_plain(wh, settings, PERIOD)
    wh.rebuild_marts()
    build_pack(
        wh,
        PERIOD,
        settings.reports_dir / PERIOD,
        load_thresholds(settings.thresholds),
        load_score_weights(settings.score_weights),
        letters=False,
    )
    return wh, settings, users
