# ruff: noqa: F811 - the tests take the ``smtp`` fixture imported from test_alerts
"""Nothing fails silently, per county: a county whose archive object is corrupt is set aside
alone (ARCHIVE_CORRUPT, its own outcome) while every other county loads, one alert per run lists
every set-aside file, and a failure that belongs to one county names it in a province-wide run.

Real parts: files in the inbox, the archive on disk, the real Prefect engine, SQLite and the real
PostgreSQL server, a real SMTP server on loopback (the ``smtp`` fixture of test_alerts)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from filebuilders import progress_rows, write_return
from test_alerts import ENGINEERS, SmtpInbox, _messages, smtp  # noqa: F401 - smtp is a fixture

from gaibao.settings import get_settings
from warehouse.store import Warehouse

P = "2018-12"
COUNTIES = ["340302", "340303", "340321"]


def _inbox_files(home: Path) -> dict[str, Path]:
    files = {}
    for i, county in enumerate(COUNTIES):
        folder = home / "inbox" / county
        folder.mkdir(parents=True)
        files[county] = write_return(
            folder / f"{county}_progress_{P}.csv", progress_rows(3 + i, county_code=county, period=P)
        )
    return files


def _alerts(inbox: SmtpInbox, kind: str) -> list[tuple[list[str], object, str]]:
    return [(r, m, b) for r, m, b in _messages(inbox) if m["X-Gaibao-Alert"] == kind]


def _failure_notices(inbox: SmtpInbox) -> list[tuple[list[str], object, str]]:
    return [(r, m, b) for r, m, b in _messages(inbox) if m["X-Gaibao-Run-State"]]


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_a_corrupt_archive_object_sets_aside_its_county_alone(
    warehouse_url: str,
    gaibao_home: Path,
    smtp: SmtpInbox,
    prefect_harness: None,
) -> None:
    """The archive already holds, under the hash of 340303's file, other bytes (a truncated
    copy). The province-wide nightly run loads 340302 and 340321, records 340303's file as
    refused ARCHIVE_CORRUPT, leaves the bad object as it is, and sends one alert naming county,
    file, code and error. Once the object is moved away, the next run archives and loads the
    same file without the county sending it again."""
    from flows.nightly import nightly_ingest
    from tasks.ingest import ARCHIVE_CORRUPT_ZH

    files = _inbox_files(gaibao_home)
    bad_county = "340303"
    content = files[bad_county].read_bytes()
    sha = hashlib.sha256(content).hexdigest()
    bad_object = gaibao_home / "archive" / sha[:2] / sha
    bad_object.parent.mkdir(parents=True)
    bad_object.write_bytes(content[: len(content) // 2])

    summary = nightly_ingest(period=P)

    assert summary["set_aside"] == [bad_county] and summary["unreachable"] == []
    with Warehouse.from_settings(get_settings()) as wh:
        subs = wh.query(
            "SELECT county_code, status, reason, file_name, sha256 FROM submission ORDER BY county_code"
        )
        issues = wh.query("SELECT county_code, rule, row_number FROM dq_issue WHERE rule = 'ARCHIVE_CORRUPT'")
        facts = wh.query(
            "SELECT county_code, COUNT(*) AS n FROM fact_progress GROUP BY county_code ORDER BY 1"
        )
    by_county = {r["county_code"]: r for r in subs.to_dict("records")}
    assert sorted(by_county) == COUNTIES
    for county in COUNTIES:
        expected = "refused" if county == bad_county else "accepted"
        assert by_county[county]["status"] == expected, by_county[county]
    assert by_county[bad_county]["reason"] == ARCHIVE_CORRUPT_ZH
    assert by_county[bad_county]["sha256"] == sha
    assert issues["county_code"].tolist() == [bad_county] and issues["row_number"].isna().all()
    expected_rows = {c: 3 + i for i, c in enumerate(COUNTIES) if c != bad_county}
    assert dict(zip(facts["county_code"], facts["n"].astype(int), strict=True)) == expected_rows
    assert bad_object.read_bytes() == content[: len(content) // 2]  # never repaired by overwriting

    alerts = _alerts(smtp, "set-aside-files")
    assert len(alerts) == 1, [m["Subject"] for _, m, _ in _messages(smtp)]
    assert not _failure_notices(smtp)
    rcpt, msg, body = alerts[0]
    assert sorted(rcpt) == ENGINEERS
    assert msg["Subject"] == f"【gaibao】文件被搁置：nightly-ingest {P}，1 个县区（ARCHIVE_CORRUPT）"
    zh = body.split("-- English --")[0]
    assert f"县区：{bad_county}　报告期：{P}" in zh
    assert f"文件：{files[bad_county].name}" in zh and f"sha256：{sha}" in zh
    assert "原因代码：ARCHIVE_CORRUPT（原始文件存档失败）" in zh
    assert f"错误：ArchiveCorrupt: archive object {bad_object} is corrupt: " in zh
    assert f"{len(content) // 2} bytes there, {len(content)} expected" in zh
    assert all(c not in zh for c in COUNTIES if c != bad_county)

    # The engineer moves the bad object away; the next night takes the same file again.
    bad_object.rename(gaibao_home / "corrupt-object-kept-as-evidence")
    smtp.messages.clear()
    again = nightly_ingest(period=P)

    assert again["set_aside"] == []
    assert (gaibao_home / "archive" / sha[:2] / sha).read_bytes() == content
    with Warehouse.from_settings(get_settings()) as wh:
        subs = wh.query(
            "SELECT county_code, status FROM submission WHERE county_code = :c", {"c": bad_county}
        )
        left = wh.query("SELECT COUNT(*) AS n FROM dq_issue WHERE rule = 'ARCHIVE_CORRUPT'")
        rows = wh.query("SELECT COUNT(*) AS n FROM fact_progress WHERE county_code = :c", {"c": bad_county})
    assert subs["status"].tolist() == ["accepted"]
    assert int(left["n"].iloc[0]) == 0 and int(rows["n"].iloc[0]) == 3 + COUNTIES.index(bad_county)
    assert not _alerts(smtp, "set-aside-files")


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_a_corrupt_object_of_a_file_loaded_before_is_alerted_and_changes_nothing(
    gaibao_home: Path,
    smtp: SmtpInbox,
    prefect_harness: None,
) -> None:
    """A file already loaded, whose archived copy has gone bad since (a folder under its name):
    the rerun keeps the accepted return, loads nothing new, and still tells the engineers."""
    from flows.nightly import nightly_ingest

    files = _inbox_files(gaibao_home)
    nightly_ingest(period=P)
    county = "340321"
    sha = hashlib.sha256(files[county].read_bytes()).hexdigest()
    obj = gaibao_home / "archive" / sha[:2] / sha
    obj.unlink()
    obj.mkdir()  # not a regular file any more
    smtp.messages.clear()

    summary = nightly_ingest(period=P)

    assert summary["set_aside"] == [county] and summary["totals"]["accepted"] == 0
    with Warehouse.from_settings(get_settings()) as wh:
        subs = wh.query("SELECT county_code, status FROM submission ORDER BY county_code")
    assert subs.to_dict("records") == [{"county_code": c, "status": "accepted"} for c in COUNTIES]
    (rcpt, msg, body), *more = _alerts(smtp, "set-aside-files")
    assert not more and sorted(rcpt) == ENGINEERS
    assert f"县区：{county}　报告期：{P}" in body and "not a regular file" in body
    assert "这份文件此前已处理，已入库的数据不变" in body


def test_the_set_aside_alert_is_built_from_the_recorded_outcomes_of_any_code(gaibao_home: Path) -> None:
    """A file refused for a reader or judge fault (the codes ``gaibao.contract.SET_ASIDE_CODES``
    names) is listed from the judged outcome alone, whichever code it carries; a file refused
    for its content (EMPTY) is not."""
    from datetime import UTC, datetime

    from gaibao.contract import SET_ASIDE_CODES, Refusal
    from tasks.alerts import compose_set_aside_alert
    from tasks.ingest import ChunkResult, Fetched, gather_period, judge_period, set_aside_outcomes
    from tasks.read import ParsedReturn, read_return
    from tasks.sources import Received

    wh = Warehouse.from_settings(get_settings())
    wh.upgrade()
    from tasks.ingest import seed_divisions

    seed_divisions(wh)
    codes = sorted(SET_ASIDE_CODES - {"ARCHIVE_CORRUPT"})
    counties = ["340302", "340303", "340304", "340311", "340321"][: len(codes) + 1]
    fetched = []
    for i, county in enumerate(counties):
        content = f"{county}-{i}".encode()
        rec = Received(county, P, "progress", f"{county}.xlsx", content, "folder:x", datetime.now(UTC))
        item = Fetched.of(rec, hashlib.sha256(content).hexdigest())
        if i < len(codes):
            item.parsed = ParsedReturn(
                kind="progress", refusal=Refusal(codes[i], "读取程序出错", {"error": f"Boom{i}: worker died"})
            )
        else:
            item.parsed = read_return(b"", item.file_name, "progress")  # EMPTY: the county's own doing
        fetched.append(item)
    chunk = ChunkResult(fetched=fetched, unreachable={}, seen=counties)
    judged = judge_period(wh, get_settings(), gather_period(get_settings(), P, [chunk], []))
    wh.close()

    items = set_aside_outcomes(judged)
    assert sorted((i["county_code"], i["code"], i["error"]) for i in items) == [
        (counties[i], code, f"Boom{i}: worker died") for i, code in enumerate(codes)
    ]
    subject, body = compose_set_aside_alert("nightly-ingest", [P], items)
    assert f"{len(codes)} 个县区" in subject and all(code in subject for code in codes)
    assert counties[-1] not in body


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_a_failure_of_one_countys_load_names_the_county_in_a_province_wide_run(
    gaibao_home: Path,
    smtp: SmtpInbox,
    prefect_harness: None,
) -> None:
    """Something else holds the name of 340321's lake partition folder (a plain file): the load
    of the province's batch fails (all or nothing) and the failure notice names 340321, not
    县区：未能确定, although the run was not limited to any county."""
    from flows.nightly import nightly_ingest

    _inbox_files(gaibao_home)
    county = "340321"
    blocker = gaibao_home / "lake" / "progress" / f"period={P}" / f"county={county}"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder", encoding="utf-8")

    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the filesystem raises
        nightly_ingest(period=P)

    assert smtp.arrived.wait(30)
    (rcpt, msg, body), *more = _failure_notices(smtp)
    assert not more and sorted(rcpt) == ENGINEERS and msg["X-Gaibao-Run-State"] == "Failed"
    assert f"县区：{county}" in body and "县区：未能确定" not in body
    assert f"county: {county};" in body and "load_returns" in msg["Subject"]
    with Warehouse.from_settings(get_settings()) as wh:
        assert int(wh.query("SELECT COUNT(*) AS n FROM submission")["n"].iloc[0]) == 0


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_backfill_force_passes_over_an_archived_object_it_cannot_read(
    gaibao_home: Path, smtp: SmtpInbox, prefect_harness: None
) -> None:
    """``backfill --force`` re-judges the archive; 340302's object now holds other bytes of the
    same size and its inbox copy is gone. The backfill completes, re-judges the other counties,
    keeps 340302's accepted return as it was and lists it in the set-aside alert."""
    from flows.backfill import backfill
    from flows.nightly import nightly_ingest

    files = _inbox_files(gaibao_home)
    nightly_ingest(period=P)
    county = "340302"
    content = files[county].read_bytes()
    sha = hashlib.sha256(content).hexdigest()
    obj = gaibao_home / "archive" / sha[:2] / sha
    obj.write_bytes(bytes(len(content)))  # same size, other bytes: only the hash tells
    files[county].unlink()
    smtp.messages.clear()

    summary = backfill(start=P, end=P, force=True)

    assert summary["set_aside"] == [county]
    assert summary["totals"]["accepted"] == len(COUNTIES) - 1
    with Warehouse.from_settings(get_settings()) as wh:
        subs = wh.query("SELECT county_code, status FROM submission ORDER BY county_code")
        rows = wh.query("SELECT COUNT(*) AS n FROM fact_progress WHERE county_code = :c", {"c": county})
    assert subs.to_dict("records") == [{"county_code": c, "status": "accepted"} for c in COUNTIES]
    assert int(rows["n"].iloc[0]) == 3
    (rcpt, msg, body), *more = _alerts(smtp, "set-aside-files")
    assert not more and sorted(rcpt) == ENGINEERS
    assert msg["Subject"] == f"【gaibao】文件被搁置：backfill {P}，1 个县区（ARCHIVE_CORRUPT）"
    assert f"县区：{county}　报告期：{P}" in body and f"sha256：{sha}" in body and "hash to" in body
    assert not _failure_notices(smtp)
