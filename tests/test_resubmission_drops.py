"""A resubmission that drops accepted projects warns the county in its receipt (issue 16, item 6).

Real nightly runs over a real inbox, on SQLite and PostgreSQL: a county's return of five
projects is accepted; its correction of the same period rejects three of them (an E rule) and
leaves one out. The correction replaces the first return (newest wins), and the county's
receipt lists each of the four projects that no longer count, row by row, with what to do.
"""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pandas as pd

from gaibao.settings import get_settings
from tests.filebuilders import progress_rows, write_return

PERIOD = "2018-12"
COUNTY = "340321"


def _receipt_html(home: Path, newer_than: set[Path]) -> str:
    messages = [p for p in sorted(home.glob("outbox/**/*.eml")) if p not in newer_than]
    htmls = []
    for path in messages:
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if COUNTY not in str(msg["Subject"]) and "怀远县" not in str(msg["Subject"]):
            continue
        part = msg.get_body(preferencelist=("html",))
        if part is not None:
            htmls.append(part.get_content())
    assert htmls, [str(p) for p in messages]
    return "\n".join(htmls)


def test_a_resubmission_dropping_accepted_projects_warns_row_by_row(
    prefect_harness: None, gaibao_home: Path, warehouse_url: str
) -> None:
    from flows.nightly import nightly_ingest
    from warehouse.store import Warehouse

    folder = gaibao_home / "inbox" / COUNTY
    folder.mkdir(parents=True)
    rows = progress_rows(5, county_code=COUNTY, period=PERIOD)
    write_return(folder / "怀远县进展_2018年12月.csv", rows)
    get_settings.cache_clear()
    assert nightly_ingest(period=PERIOD, counties=[COUNTY])["totals"]["accepted"] == 1
    first_messages = set(gaibao_home.glob("outbox/**/*.eml"))

    # the correction: project 1 fine, projects 2-4 rejected (planned investment 0), project 5 gone
    correction = [dict(r) for r in rows[:4]]
    for r in correction[1:]:
        r["planned_invest_wan"] = "0"
    write_return(folder / "怀远县进展_2018年12月（更正）.csv", correction)
    summary = nightly_ingest(period=PERIOD, counties=[COUNTY])
    assert summary["totals"]["accepted"] == 1

    wh = Warehouse.from_settings(get_settings())
    subs = wh.read_table("submission", where={"county_code": COUNTY, "period": PERIOD})
    new = subs[subs["file_name"] == "怀远县进展_2018年12月（更正）.csv"].iloc[0]
    assert new["status"] == "accepted" and int(new["rows_accepted"]) == 1
    assert sorted(subs["status"]) == ["accepted", "superseded"]
    facts = wh.read_table("fact_progress", where={"county_code": COUNTY, "period": PERIOD})
    assert list(facts["project_id"]) == [rows[0]["project_id"]]
    issues = wh.read_table("dq_issue", where={"submission_id": new["submission_id"]})
    drops = issues[issues["rule"].isin(["RESUBMISSION_REJECTS_PROJECT", "RESUBMISSION_DROPS_PROJECT"])]
    drops = drops.sort_values("project_id").reset_index(drop=True)
    assert list(drops["project_id"]) == [r["project_id"] for r in rows[1:]]
    assert list(drops["rule"]) == ["RESUBMISSION_REJECTS_PROJECT"] * 3 + ["RESUBMISSION_DROPS_PROJECT"]
    assert list(drops["severity"].unique()) == ["warning"]
    # the rejected ones on their rows of the correction (CSV lines 3-5), the missing one on the file
    assert list(drops["row_number"].iloc[:3].astype(int)) == [3, 4, 5] and pd.isna(
        drops["row_number"].iloc[3]
    )
    for row, message in zip(drops["row_number"].iloc[:3], drops["message"].iloc[:3], strict=True):
        assert message.startswith(f"第{int(row)}行") and "怀远县进展_2018年12月.csv" in message
        assert "不再计入" in message and "重新报送" in message
    assert rows[4]["school_name"] in drops["message"].iloc[3] and "本次报送中没有" in drops["message"].iloc[3]
    wh.close()

    html = _receipt_html(gaibao_home, first_messages)
    for r in rows[1:]:
        assert r["project_id"] in html, r["project_id"]
    assert html.count("不再计入本期数据") >= 4


def test_a_resubmission_keeping_every_project_adds_no_warning(
    prefect_harness: None, gaibao_home: Path, warehouse_url: str
) -> None:
    from flows.nightly import nightly_ingest
    from warehouse.store import Warehouse

    folder = gaibao_home / "inbox" / COUNTY
    folder.mkdir(parents=True)
    rows = progress_rows(3, county_code=COUNTY, period=PERIOD)
    write_return(folder / "怀远县进展_2018年12月.csv", rows)
    get_settings.cache_clear()
    nightly_ingest(period=PERIOD, counties=[COUNTY])
    better = [{**r, "completed_invest_wan": r["completed_invest_wan"]} for r in rows]
    better[0]["note"] = "更正备注"
    write_return(folder / "怀远县进展_2018年12月（更正）.csv", better)
    assert nightly_ingest(period=PERIOD, counties=[COUNTY])["totals"]["accepted"] == 1
    wh = Warehouse.from_settings(get_settings())
    issues = wh.read_table("dq_issue", where={"county_code": COUNTY})
    assert not issues["rule"].str.startswith("RESUBMISSION_").any()
    assert len(wh.read_table("fact_progress", where={"county_code": COUNTY})) == 3
    wh.close()
