"""The expected-returns register (`gaibao status`): every demo period in every format, and a
warehouse on SQLite and PostgreSQL holding every state a return can be in.

The demo is generated and backfilled once for the module (as in test_pipeline.py); the command
runs in process through typer's runner against that real warehouse.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from filebuilders import progress_rows, return_bytes
from typer.testing import CliRunner

from gaibao.contract import SUBMITTED_KINDS
from tasks.register import (
    REGISTER_COLUMNS,
    TABLE_MAX_ROWS,
    format_register,
    register_csv,
    register_json,
    returns_register,
)

DEMO_PERIODS = [f"{y}-{m:02d}" for y in (2017, 2018) for m in range(1, 13)]


def _set_home(home: Path) -> None:
    from gaibao.settings import get_settings

    os.environ["GAIBAO_HOME"] = str(home)
    os.environ.pop("GAIBAO_WAREHOUSE_URL", None)
    os.environ.pop("GAIBAO_SOURCES", None)
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Iterator[tuple[Path, object]]:
    """The demo generated and backfilled once: (GAIBAO_HOME, DemoManifest)."""
    from flows.backfill import backfill
    from gaibao.demo import generate_demo
    from gaibao.settings import get_settings
    from tasks.plan import load_plan_file
    from warehouse.store import Warehouse

    saved = {k: os.environ.get(k) for k in ("GAIBAO_HOME", "GAIBAO_WAREHOUSE_URL", "GAIBAO_SOURCES")}
    home = tmp_path_factory.mktemp("demo") / "home"
    _set_home(home)
    manifest = generate_demo(home)
    wh = Warehouse.from_settings()
    wh.upgrade()
    assert load_plan_file(wh, manifest.plan_file).ok
    wh.close()
    backfill(start=DEMO_PERIODS[0], end=DEMO_PERIODS[-1])
    yield home, manifest
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


def _status(home: Path, *args: str) -> str:
    from gaibao.cli import app

    _set_home(home)
    result = CliRunner().invoke(app, ["status", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _submissions(home: Path) -> pd.DataFrame:
    from warehouse.store import Warehouse

    _set_home(home)
    with Warehouse.from_settings() as wh:
        return wh.query(
            "SELECT submission_id, kind, county_code, period, status, reason, file_name, rules_version, is_late "
            "FROM submission"
        )


def _expected_keys(home: Path) -> set[tuple[str, str]]:
    from warehouse.store import Warehouse

    _set_home(home)
    with Warehouse.from_settings() as wh:
        codes = wh.query("SELECT county_code FROM ref_plan UNION SELECT county_code FROM submission")
    return {(c, k) for c in codes["county_code"] for k in SUBMITTED_KINDS}


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_every_demo_period_renders_in_every_format(demo) -> None:
    home, _ = demo
    subs = _submissions(home)
    keys = _expected_keys(home)
    states_seen: set[str] = set()
    for period in DEMO_PERIODS:
        mine = subs[subs["period"] == period]
        payload = json.loads(_status(home, "--period", period, "--format", "json"))
        rows = payload["returns"]
        assert {(r["county_code"], r["kind"]) for r in rows} == keys and len(rows) == len(keys)
        for r in rows:
            states_seen.add(r["state"])
            theirs = mine[(mine["county_code"] == r["county_code"]) & (mine["kind"] == r["kind"])]
            assert r["versions"] == len(theirs)
            if r["state"] == "missing":
                assert theirs.empty and r["submission_id"] is None and "尚未收到报表" in r["reason"]
                continue
            (sub,) = theirs[theirs["submission_id"] == r["submission_id"]].itertuples(index=False)
            assert r["file_name"] == sub.file_name and r["rules_version"] == sub.rules_version
            assert datetime.fromisoformat(r["received_at"]).tzinfo is not None
            if r["state"] == "accepted":
                assert sub.status == "accepted" and r["reason"] is None
            else:
                assert r["state"] == sub.status == "refused" and r["reason"].startswith(sub.reason)
                standing = theirs[theirs["status"] == "accepted"]
                if len(standing):
                    assert f"此前已接收的 {standing['file_name'].iloc[0]} 仍然有效" in r["reason"]
        assert payload["counts"]["missing"] == sum(r["state"] == "missing" for r in rows)
        assert payload["counts"]["late"] == sum(bool(r["is_late"]) for r in rows)

        # CSV: the same rows, the same values
        table = list(csv.DictReader(io.StringIO(_status(home, "--period", period, "--format", "csv"))))
        assert list(table[0]) == REGISTER_COLUMNS
        assert [(t["county_code"], t["kind"], t["state"], t["submission_id"]) for t in table] == [
            (r["county_code"], r["kind"], r["state"], r["submission_id"] or "") for r in rows
        ]

        # the terminal table: every row (a province is far below TABLE_MAX_ROWS) and the counts
        text = _status(home, "--period", period)
        for r in rows:
            assert r["county_code"] in text
            if r["submission_id"]:
                assert r["submission_id"] in text
        c = payload["counts"]
        assert (
            f"已接收 {c['accepted']}，被拒收 {c['refused']}，未报送 {c['missing']}，迟报 {c['late']}" in text
        )

        # history: one row per file received, plus the missing ones
        history = json.loads(_status(home, "--period", period, "--format", "json", "--history"))["returns"]
        assert sorted(r["submission_id"] for r in history if r["submission_id"]) == sorted(
            mine["submission_id"]
        )
        for r in history:
            if r["submission_id"]:
                assert r["state"] == mine.set_index("submission_id").at[r["submission_id"], "status"]
        assert sum(r["state"] == "missing" for r in history) == c["missing"]
        _status(home, "--period", period, "--format", "csv", "--history")
        _status(home, "--period", period, "--history")
    # the demo holds every state a register row can show
    assert states_seen == {"accepted", "refused", "missing"}
    assert (subs["status"] == "superseded").any()


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_demo_anomalies_show_in_the_register(demo) -> None:
    home, manifest = demo
    (late,) = manifest.anomalies_of("LATE")
    rows = json.loads(_status(home, "-p", late.period, "-c", late.county_code, "-f", "json"))["returns"]
    (row,) = [r for r in rows if r["kind"] == late.kind]
    assert row["state"] == "accepted" and row["is_late"] is True
    assert "是" in _status(home, "-p", late.period, "-c", late.county_code)
    (missing,) = manifest.anomalies_of("MISSING")
    rows = json.loads(_status(home, "-p", missing.period, "-c", missing.county_code, "-f", "json"))["returns"]
    (row,) = [r for r in rows if r["kind"] == missing.kind]
    assert row["state"] == "missing" and row["versions"] == 0
    resubmitted = manifest.anomalies_of(severity="resubmission")
    assert resubmitted
    for anomaly in resubmitted:
        history = json.loads(
            _status(home, "-p", anomaly.period, "-c", anomaly.county_code, "-f", "json", "--history")
        )["returns"]
        states = [r["state"] for r in history if r["kind"] == anomaly.kind]
        assert states == ["superseded", "accepted"], states


def test_bad_period_and_format_are_refused(gaibao_home: Path) -> None:
    from gaibao.cli import EXIT_BAD_OPTION, app  # 3: a bad option, as the README's exit codes say

    result = CliRunner().invoke(app, ["status", "--period", "2018-13"])
    assert result.exit_code == EXIT_BAD_OPTION and "YYYY-MM" in result.output
    result = CliRunner().invoke(app, ["status", "--period", "2018-12", "--format", "xml"])
    assert result.exit_code == EXIT_BAD_OPTION and "table、json、csv" in result.output


# --------------------------------------------------------------------------------------------
# Every state, on SQLite and PostgreSQL, loaded through the warehouse's own load


def _load(wh, content: bytes, name: str, county: str, period: str, received_at: datetime) -> None:
    from tasks.judge import judge_file

    known = set(wh.query("SELECT county_code FROM ref_division")["county_code"])
    judged = judge_file(
        content,
        name,
        county_code=county,
        period=period,
        known_counties=known,
        received_at=received_at,
        engine="pandas",
    )
    wh.load_batch(judged.submissions, judged.facts, judged.issues, judged.submissions["kind"].iloc[0])


def test_register_of_every_state_on_both_databases(warehouse_url: str) -> None:
    from gaibao.settings import get_settings
    from tasks.ingest import seed_divisions
    from warehouse.store import Warehouse

    period = "2017-06"
    wh = Warehouse.from_settings(get_settings())
    wh.upgrade()
    seed_divisions(wh)
    # 340321: accepted, then corrected (the first superseded), then a refused file (the correction stands)
    first = return_bytes(progress_rows(3, county_code="340321", period=period), "progress", fmt="csv")
    second = return_bytes(progress_rows(4, county_code="340321", period=period), "progress", fmt="csv")
    wrong = return_bytes(progress_rows(2, county_code="340322", period=period), "progress", fmt="csv")
    _load(wh, first, "=HYPERLINK(1).csv", "340321", period, datetime(2017, 7, 2, 1, tzinfo=UTC))
    _load(wh, second, "进展2017年6月（更正）.csv", "340321", period, datetime(2017, 7, 3, 1, tzinfo=UTC))
    _load(wh, wrong, "进展2017年6月（再次）.csv", "340321", period, datetime(2017, 7, 4, 1, tzinfo=UTC))
    # 340322: late; 340323: refused with nothing before it
    late = return_bytes(progress_rows(3, county_code="340322", period=period), "progress", fmt="csv")
    _load(wh, late, "340322进展.csv", "340322", period, datetime(2017, 7, 20, 1, tzinfo=UTC))
    _load(wh, wrong, "340323进展.csv", "340323", period, datetime(2017, 7, 2, 1, tzinfo=UTC))
    subs = wh.query("SELECT submission_id, county_code, status, file_name, reason FROM submission")
    register = returns_register(wh, period, tz="Asia/Shanghai")
    history = returns_register(wh, period, history=True)
    wh.close()

    by_key = {(r.county_code, r.kind): r for r in register.itertuples(index=False)}
    assert set(by_key) == {(c, k) for c in ("340321", "340322", "340323") for k in SUBMITTED_KINDS}
    current = subs[(subs["county_code"] == "340321") & (subs["status"] == "accepted")].iloc[0]
    refused_last = subs[(subs["county_code"] == "340321") & (subs["status"] == "refused")].iloc[0]
    row = by_key[("340321", "progress")]
    assert row.state == "refused" and row.submission_id == refused_last["submission_id"] and row.versions == 3
    assert f"此前已接收的 {current['file_name']} 仍然有效" in row.reason
    assert (
        by_key[("340322", "progress")].state == "accepted" and by_key[("340322", "progress")].is_late is True
    )
    assert (
        by_key[("340323", "progress")].state == "refused"
        and "仍然有效" not in by_key[("340323", "progress")].reason
    )
    assert all(by_key[(c, "funding")].state == "missing" for c in ("340321", "340322", "340323"))
    assert list(
        history.loc[(history["county_code"] == "340321") & (history["kind"] == "progress"), "state"]
    ) == [
        "superseded",
        "accepted",
        "refused",
    ]
    for frame in (register, history):
        text = format_register(frame, period)
        assert "340323" in text and "被拒收" in text and "未报送" in text
        records = json.loads(register_json(frame, period))["returns"]
        assert len(records) == len(frame)
        assert {r["received_at"][-6:] for r in records if r["received_at"]} == {"+08:00"}
        rows = list(csv.DictReader(io.StringIO(register_csv(frame))))
        assert len(rows) == len(frame)
    # a county's file name that looks like a formula is inert in the CSV
    names = [r["file_name"] for r in csv.DictReader(io.StringIO(register_csv(history)))]
    assert "'=HYPERLINK(1).csv" in names and "=HYPERLINK(1).csv" not in names


def test_a_national_register_lists_what_needs_attention(gaibao_home: Path) -> None:
    """A national month's register (5,700 rows) in the terminal: only the rows that need
    attention, and how many there are in all; JSON and CSV keep every row."""
    rows = []
    for i in range(2850):
        for kind in SUBMITTED_KINDS:
            state = (
                "missing"
                if i % 97 == 0 and kind == "funding"
                else ("refused" if i % 131 == 0 else "accepted")
            )
            rows.append(
                {
                    "county_code": f"{110000 + i:06d}",
                    "county_name": f"县{i}",
                    "city_name": f"市{i // 30}",
                    "kind": kind,
                    "state": state,
                    "is_late": None if state == "missing" else (i % 53 == 0),
                    "submission_id": None if state == "missing" else f"{i:020d}",
                    "file_name": None if state == "missing" else f"{i}.csv",
                    "received_at": pd.NaT
                    if state == "missing"
                    else pd.Timestamp("2018-12-03 02:00", tz="UTC"),
                    "rules_version": None if state == "missing" else "abcdef123456",
                    "rows_accepted": pd.NA if state == "missing" else 10,
                    "rows_rejected": pd.NA if state == "missing" else 0,
                    "versions": 0 if state == "missing" else 1,
                    "reason": "尚未收到报表"
                    if state == "missing"
                    else ("拒收" if state == "refused" else None),
                }
            )
    register = pd.DataFrame(rows, columns=REGISTER_COLUMNS)
    assert len(register) > TABLE_MAX_ROWS
    attention = register[(register["state"] != "accepted") | (register["is_late"] == True)]  # noqa: E712
    text = format_register(register, "2018-12")
    assert f"共 {len(register)} 行，只列出需要处理的 {len(attention)} 行" in text
    assert all(code in text for code in attention["county_code"])
    assert len(json.loads(register_json(register, "2018-12"))["returns"]) == len(register)
    assert len(list(csv.DictReader(io.StringIO(register_csv(register))))) == len(register)
