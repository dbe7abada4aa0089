"""Late corrections in the nightly run: real files, the real Prefect engine, SQLite and PostgreSQL.

Two counties report every month from 2018-06 (五河县 skips 2018-10). The warehouse is filled by a
backfill to 2018-11 and one nightly run (which lists the sources and records when), then both
counties send a corrected 2018-09 while the 2018-12 returns arrive. The nightly run of 2018-12
must leave exactly the warehouse a fresh backfill of the same files leaves, tell each county in
its receipt (through a real SMTP server) what the correction replaced, and a night with nothing
new must change nothing.
"""

from __future__ import annotations

import email
import email.policy
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from aiosmtpd.controller import Controller
from filebuilders import funding_rows, progress_rows, write_return

from tasks.corrections import OUTSIDE_WINDOW, changed_periods, correction_window
from tasks.sources import FolderSource

HUAIYUAN, WUHE = "340321", "340322"
PERIODS = ["2018-06", "2018-07", "2018-08", "2018-09", "2018-10", "2018-11", "2018-12"]
COMPARED = (
    "submission",
    "dq_issue",
    "fact_progress",
    "fact_funding",
    "mart_county_progress",
    "mart_city_progress",
    "mart_county_funding",
    "ledger_state",
    "ledger_project",
    "ledger_exception",
)
# Tables that may be empty in both homes (no exception opened on the ledger, for instance).
MAY_BE_EMPTY = ("ledger_exception",)
# Columns that say when gaibao did something, not what the data is. ``received_at`` is when gaibao
# read the bytes (GAIBAO_REPLAY_FILE_TIMES is off, as in production): the two homes read at
# different times, so only its order is compared (``_received_order``). ``is_late``, which it
# decides, is compared.
WHEN_COLUMNS = ("loaded_at", "load_id", "received_at")


# --------------------------------------------------------------------------------------------
# The window and the listing (plain functions, real files)


@pytest.mark.parametrize(
    ("period", "months", "expected"),
    [
        ("2018-12", 3, ["2018-09", "2018-10", "2018-11"]),
        ("2018-02", 3, ["2017-11", "2017-12", "2018-01"]),
        ("2018-12", 0, []),
        ("2018-12", 12, ["2017-12", *[f"2018-{m:02d}" for m in range(1, 12)]]),
    ],
)
def test_correction_window(period: str, months: int, expected: list[str]) -> None:
    assert correction_window(period, months) == expected


def test_listing_names_the_periods_of_files_changed_since(tmp_path: Path) -> None:
    folder = tmp_path / HUAIYUAN
    folder.mkdir()
    for name in (
        "怀远县项目进展月报2018年9月.csv",
        "怀远县项目进展月报2018-07（更正）.csv",
        "怀远县项目进展月报2018-12.csv",  # the run's own period: not a correction
        "怀远县项目进展月报2019-01.csv",  # later: not yet
        "~$怀远县项目进展月报2018-08.xlsx",  # an office lock file
        "说明.txt",  # no period
    ):
        (folder / name).write_bytes(b"x")
    (folder / "2018-06").mkdir()  # a folder is no return
    (folder / "link2018-05.csv").symlink_to(folder / "说明.txt")  # never followed
    source = FolderSource(folder)
    assert changed_periods(source, None, "2018-12") == {"2018-07", "2018-09"}
    assert changed_periods(source, datetime.now(UTC) - timedelta(minutes=1), "2018-12") == {
        "2018-07",
        "2018-09",
    }
    # an unchanged folder since the last listing: nothing to read
    assert changed_periods(source, datetime.now(UTC) + timedelta(minutes=1), "2018-12") == set()
    # a file uploaded keeping the county's own old mtime still counts: its ctime is the upload
    old = (datetime(2018, 10, 2, tzinfo=UTC)).timestamp()
    os.utime(folder / "怀远县项目进展月报2018年9月.csv", (old, old))
    assert "2018-09" in changed_periods(source, datetime.now(UTC) - timedelta(minutes=1), "2018-12")
    assert changed_periods(FolderSource(tmp_path / "absent"), None, "2018-12") == set()


def test_counties_under_a_folder_default_are_asked_for(tmp_path: Path) -> None:
    """The cause of the scan that listed no county: a county that only the sources file's folder
    defaults hold (no plan row, no submission yet) was asked for by no run."""
    import fsspec

    from gaibao.settings import Settings
    from tasks.sources import list_source_counties, load_source_config

    settings = Settings(home=tmp_path / "home")
    returns = tmp_path / "returns"
    for name in (HUAIYUAN, WUHE, "notes", "12345"):
        (returns / name).mkdir(parents=True)
    (returns / "340323").write_bytes(b"a file, not a county folder")
    (returns / "340324").symlink_to(returns / HUAIYUAN)  # a linked folder is never followed
    (tmp_path / "home" / "inbox" / "341221").mkdir(parents=True)

    def listed(root: str) -> list[str]:
        path = tmp_path / "sources.yaml"
        path.write_text(f"defaults:\n  type: folder\n  root: '{root}'\n", encoding="utf-8")
        return list_source_counties(settings, load_source_config(path))

    assert listed(f"{returns}/{{county_code}}") == [HUAIYUAN, WUHE, "341221"]
    assert listed(f"file://{returns}/{{county_code}}/") == [HUAIYUAN, WUHE, "341221"]
    assert listed(f"{tmp_path}/absent/{{county_code}}") == ["341221"]
    # the code is not a folder of its own: nothing to list there
    assert listed(f"{returns}/county-{{county_code}}") == ["341221"]
    fs = fsspec.filesystem("memory")
    fs.pipe(f"/hcorr-returns/{WUHE}/in/{WUHE}项目进展月报2018-09.csv", b"x")
    fs.pipe("/hcorr-returns/readme.txt", b"x")
    try:
        assert listed("memory://hcorr-returns/{county_code}/in") == [WUHE, "341221"]
    finally:
        fs.rm("/hcorr-returns", recursive=True)


def test_a_county_whose_source_cannot_be_listed_is_reported_not_dropped(
    warehouse_url: str, gaibao_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gaibao.settings import get_settings
    from tasks.alerts import compose_unreachable_alert
    from tasks.corrections import CorrectionFiles, apply_corrections, scan_counties, scan_marks
    from tasks.ingest import seed_divisions
    from warehouse.store import Warehouse

    inbox = tmp_path / "inbox"
    _write_month(inbox, HUAIYUAN, "2018-09")
    broken = tmp_path / "broken"
    broken.write_bytes(b"a file where the county folder should be")
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        f'defaults:\n  type: folder\n  root: {inbox}/{{county_code}}\n"{WUHE}":\n  root: {broken}\n',
        encoding="utf-8",
    )
    _use(monkeypatch, gaibao_home, warehouse_url, sources)
    settings = get_settings()
    with Warehouse.from_settings(settings) as wh:
        wh.upgrade()
        seed_divisions(wh)
        scan = scan_counties(wh, settings, "2018-12", None)
        assert scan.scanned == [HUAIYUAN] and scan.found == {HUAIYUAN: ["2018-09"]}
        assert list(scan.failed) == [WUHE] and "NotADirectoryError" in scan.failed[WUHE]
        report = apply_corrections(wh, settings, CorrectionFiles(scan=scan))
        # its mark stays where it was (none): the next night lists it again
        assert set(scan_marks(wh, [HUAIYUAN, WUHE])) == {HUAIYUAN}
    ((key, problem),) = report.problems.items()
    assert key == (WUHE, "2017-12..2018-11") and problem["source"] == f"folder:{broken}"
    subject, body = compose_unreachable_alert("nightly-ingest", ["2018-12"], report.problems)
    assert WUHE in subject + body and "更正" in body and "NotADirectoryError" in body


def _plain_runs(periods: list[str], *, corrections_for: str | None = None) -> Any:
    """What the flows do, without Prefect: ingest ``periods`` in order (a backfill), or, with
    ``corrections_for``, the nightly run's corrections step for that period (its report)."""
    from gaibao.settings import get_settings
    from tasks import corrections
    from tasks.ingest import (
        fetch_and_read,
        gather_period,
        judge_period,
        load_judged,
        plan_run,
        seed_divisions,
    )
    from warehouse.store import Warehouse

    settings = get_settings()
    with Warehouse.from_settings(settings) as wh:
        wh.upgrade()
        seed_divisions(wh)
        if corrections_for is not None:
            scan = corrections.scan_counties(wh, settings, corrections_for, None)
            report = corrections.apply_corrections(
                wh, settings, corrections.fetch_corrections(wh, settings, scan)
            )
            wh.rebuild_marts(from_period=report.earliest or corrections_for, only_if_changed=True)
            return report
        for period in periods:
            plan = plan_run(wh, settings, period, None, False)
            chunks = [fetch_and_read(c, period, settings, plan.known, plan.first_seen) for c in plan.chunks]
            load_judged(
                wh, judge_period(wh, settings, gather_period(settings, period, chunks, plan.archived))
            )
        wh.rebuild_marts(from_period=periods[0], only_if_changed=True)


def test_a_run_that_stops_before_re_judging_leaves_it_to_the_next_night(
    warehouse_url: str, gaibao_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The correction loads, then re-judging the next month fails (its archived file is corrupt):
    the next night, to which the correction is no longer new, still re-judges that month, and the
    warehouse ends as a backfill leaves it."""
    from gaibao.settings import get_settings
    from tasks.corrections import read_pending
    from warehouse.archive import Archive
    from warehouse.store import Warehouse

    periods = ["2018-08", "2018-09", "2018-10", "2018-11"]
    inbox = tmp_path / "inbox"
    for period in periods:
        _write_month(inbox, HUAIYUAN, period)
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"defaults:\n  type: folder\n  root: {inbox}/{{county_code}}\n", encoding="utf-8")
    monkeypatch.setenv("GAIBAO_READ_PROCESSES", "0")
    _use(monkeypatch, gaibao_home, warehouse_url, sources)
    _plain_runs(periods)
    _plain_runs([], corrections_for="2018-12")  # the first listing
    _write_correction(inbox, HUAIYUAN, "2018-09")

    settings = get_settings()
    with Warehouse.from_settings(settings) as wh:
        october = wh.query(
            "SELECT sha256 FROM submission WHERE period = '2018-10' AND kind = 'progress' AND status = 'accepted'"
        )["sha256"].tolist()
    (sha,) = october
    stored = Path(Archive.from_settings(settings).path(sha))
    good = stored.read_bytes()
    # one byte changed, the size kept: archiving the same file again keeps the object (size
    # check), reading it back fails its hash check
    stored.chmod(0o644)
    stored.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    # A corrupt archive object sets aside only what needs it (issue 12): the night completes, the
    # re-judging of 2018-10 stays pending and the data engineers are told (the run's problems go
    # into its unreachable-sources mail).
    report = _plain_runs([], corrections_for="2018-12")
    problem = report.problems[(HUAIYUAN, "2018-10")]
    assert "存档的原始文件损坏" in problem["reason"] and sha in problem["source"]
    with Warehouse.from_settings(settings) as wh:
        assert read_pending(wh) == {("progress", HUAIYUAN): "2018-09"}
        stale = _tables()
    assert _cross_period(stale, HUAIYUAN, "2018-10") == []  # judged against the old 2018-09

    stored.write_bytes(good)
    _plain_runs([], corrections_for="2018-12")
    after = _tables()
    with Warehouse.from_settings(settings) as wh:
        assert read_pending(wh) == {}
    assert _cross_period(after, HUAIYUAN, "2018-10") == [
        ("DROPPED_PROJECT", "HY-2017-005"),
        ("REGRESSION", "HY-2017-001"),
    ]

    fresh_home = tmp_path / "fresh"
    fresh_home.mkdir()
    _use(monkeypatch, fresh_home, _fresh_url(warehouse_url, fresh_home), sources)
    _plain_runs(periods)
    fresh = _tables()
    for name in COMPARED:
        pd.testing.assert_frame_equal(after[name], fresh[name], check_dtype=False, obj=name)


# --------------------------------------------------------------------------------------------
# Nightly runs against a fresh backfill


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd's signature
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content or envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[_Inbox, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def _progress(county: str, period: str, n: int = 4) -> list[dict]:
    return progress_rows(n, county_code=county, period=period)


def _dated(path: Path, period: str) -> Path:
    """Date a return the 3rd of the month after its period (on time, before any correction)."""
    p = pd.Period(period, "M") + 1
    ts = datetime(p.year, p.month, 3, 9, tzinfo=UTC).timestamp()
    os.utime(path, (ts, ts))
    return path


def _write_month(inbox: Path, county: str, period: str) -> None:
    folder = inbox / county
    folder.mkdir(parents=True, exist_ok=True)
    _dated(write_return(folder / f"{county}项目进展月报{period}.csv", _progress(county, period)), period)
    _dated(
        write_return(
            folder / f"{county}资金月报{period}.csv",
            funding_rows(county_code=county, period=period),
            "funding",
        ),
        period,
    )


def _correction_rows(county: str, period: str) -> list[dict]:
    """A corrected progress return: one more project, and the first project's completed investment
    raised above what the next months report (they regress against it)."""
    rows = _progress(county, period, n=5)
    rows[0]["completed_invest_wan"] = 100.0  # 80 before
    return rows


def _write_correction(inbox: Path, county: str, period: str) -> Path:
    return write_return(
        inbox / county / f"{county}项目进展月报{period}（更正）.csv", _correction_rows(county, period)
    )


def _use(monkeypatch: pytest.MonkeyPatch, home: Path, url: str, sources: Path) -> None:
    from gaibao.settings import get_settings

    monkeypatch.setenv("GAIBAO_HOME", str(home))
    monkeypatch.setenv("GAIBAO_WAREHOUSE_URL", url)
    monkeypatch.setenv("GAIBAO_SOURCES", str(sources))
    get_settings.cache_clear()


def _received_order() -> dict[tuple[str, str, str], list[str]]:
    """Per (county, period, kind): the file names in the order gaibao received them."""
    from gaibao.settings import get_settings
    from warehouse.store import Warehouse

    with Warehouse.from_settings(get_settings()) as wh:
        subs = wh.read_table("submission")
    subs = subs.assign(_at=pd.to_datetime(subs["received_at"], utc=True)).sort_values(["_at", "file_name"])
    return {
        (str(c), str(p), str(k)): list(group["file_name"])
        for (c, p, k), group in subs.groupby(["county_code", "period", "kind"])
    }


def _tables() -> dict[str, pd.DataFrame]:
    from gaibao.settings import get_settings
    from warehouse.store import Warehouse

    with Warehouse.from_settings(get_settings()) as wh:
        out = {}
        for name in COMPARED:
            frame = wh.read_table(name)
            frame = frame.drop(columns=[c for c in WHEN_COLUMNS if c in frame.columns])
            out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def _lake_files(home: Path) -> list[str]:
    return sorted(
        str(p.relative_to(home / "lake"))
        for p in (home / "lake").rglob("*.parquet")
        if not {"_staging", "_trash"} & set(p.parts)
    )


def _fresh_url(url: str, home: Path) -> str:
    """An empty warehouse: a new SQLite file, or the PostgreSQL test database emptied."""
    if url.startswith("sqlite"):
        return f"sqlite:///{home / 'warehouse.db'}"
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    return url


def _cross_period(tables: dict[str, pd.DataFrame], county: str, period: str) -> list[tuple[str, str]]:
    issues = tables["dq_issue"]
    current = tables["submission"]
    current = set(current[(current["status"] == "accepted")]["submission_id"])
    mine = issues[
        (issues["county_code"] == county)
        & (issues["period"] == period)
        & issues["rule"].isin(["REGRESSION", "STATUS_REGRESSION", "DROPPED_PROJECT"])
        & issues["submission_id"].isin(current)
    ]
    return sorted(zip(mine["rule"], mine["project_id"].astype(str), strict=True))


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_a_correction_three_months_back_loads_as_a_backfill_would(
    prefect_harness: None,
    warehouse_url: str,
    gaibao_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smtp_inbox: tuple[_Inbox, int],
) -> None:
    from flows.backfill import backfill
    from flows.nightly import nightly_ingest

    inbox = tmp_path / "inbox"
    for period in PERIODS[:-1]:
        _write_month(inbox, HUAIYUAN, period)
        if period != "2018-10":
            _write_month(inbox, WUHE, period)
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"defaults:\n  type: folder\n  root: {inbox}/{{county_code}}\n", encoding="utf-8")
    smtp, port = smtp_inbox
    monkeypatch.setenv("GAIBAO_MAIL_MODE", "smtp")
    monkeypatch.setenv("GAIBAO_SMTP_PORT", str(port))
    _use(monkeypatch, gaibao_home, warehouse_url, sources)

    backfill(start=PERIODS[0], end="2018-11")
    first = nightly_ingest(period="2018-11")  # lists the sources: every file there is known
    assert first["corrections"] == []
    before = _tables()
    assert _cross_period(before, HUAIYUAN, "2018-10") == []
    assert _cross_period(before, WUHE, "2018-11") == []

    # The 2018-12 returns arrive, and both counties correct 2018-09.
    _write_month(inbox, HUAIYUAN, "2018-12")
    _write_month(inbox, WUHE, "2018-12")
    _write_correction(inbox, HUAIYUAN, "2018-09")
    _write_correction(inbox, WUHE, "2018-09")
    smtp.messages.clear()
    summary = nightly_ingest(period="2018-12")

    done = {(c["county_code"], c["period"]): c for c in summary["corrections"]}
    assert sorted(done) == [(HUAIYUAN, "2018-09"), (WUHE, "2018-09")]
    assert all(c["status"] == "accepted" and c["replaced"] for c in done.values())
    assert done[(HUAIYUAN, "2018-09")]["rejudged"] == ["2018-10"]  # its next accepted month
    assert done[(WUHE, "2018-09")]["rejudged"] == ["2018-11"]  # 五河县 sent nothing for 2018-10
    after = _tables()
    # the corrected month replaced the first file, and the next month now regresses against it
    subs = after["submission"].set_index("file_name")
    assert subs.loc[f"{HUAIYUAN}项目进展月报2018-09.csv", "status"] == "superseded"
    assert subs.loc[f"{HUAIYUAN}项目进展月报2018-09（更正）.csv", "status"] == "accepted"
    assert _cross_period(after, HUAIYUAN, "2018-10") == [
        ("DROPPED_PROJECT", "HY-2017-005"),
        ("REGRESSION", "HY-2017-001"),
    ]
    assert _cross_period(after, WUHE, "2018-11") == [
        ("DROPPED_PROJECT", "HY-2017-005"),
        ("REGRESSION", "HY-2017-001"),
    ]
    lake_nightly = _lake_files(gaibao_home)
    order_nightly = _received_order()
    # the corrected month itself holds the correction's rows now, and only those
    facts = after["fact_progress"]
    mine = facts[(facts["county_code"] == HUAIYUAN) & (facts["period"] == "2018-09")].set_index("project_id")
    corrected = {r["project_id"]: r for r in _correction_rows(HUAIYUAN, "2018-09")}
    assert sorted(mine.index) == sorted(corrected)
    for pid, row in corrected.items():
        assert mine.loc[pid, "completed_invest_wan"] == pytest.approx(row["completed_invest_wan"])
    # the months before it are untouched
    old_facts = before["fact_progress"]
    earlier = old_facts[old_facts["period"] < "2018-09"].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        earlier, facts[facts["period"] < "2018-09"].reset_index(drop=True), check_dtype=False
    )

    # Each county's receipt for 2018-09 says what was replaced and what was judged again.
    receipts = {}
    for rcpt, raw in smtp.messages:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        if "2018年9月" in msg["Subject"]:
            receipts[rcpt[0]] = msg.get_body(("html",)).get_content()
    assert sorted(receipts) == [f"jyj-{HUAIYUAN}@example.org", f"jyj-{WUHE}@example.org"]
    huaiyuan = receipts[f"jyj-{HUAIYUAN}@example.org"]
    assert "本期被替换的文件" in huaiyuan
    assert (
        f"{HUAIYUAN}项目进展月报2018-09.csv" in huaiyuan
        and f"{HUAIYUAN}项目进展月报2018-09（更正）.csv" in huaiyuan
    )
    assert "2018年10月的预警由" in huaiyuan
    assert WUHE not in huaiyuan  # only its own files
    assert "2018年11月的预警由" in receipts[f"jyj-{WUHE}@example.org"]

    # A night with nothing new changes nothing and sends nothing.
    smtp.messages.clear()
    quiet = nightly_ingest(period="2018-12")
    assert quiet["corrections"] == [] and quiet["totals"]["accepted"] == 0
    for name in COMPARED:
        pd.testing.assert_frame_equal(_tables()[name], after[name], check_dtype=False)
    assert smtp.messages == []

    # A fresh backfill of the same files gives the same warehouse.
    fresh_home = tmp_path / "fresh"
    fresh_home.mkdir()
    _use(monkeypatch, fresh_home, _fresh_url(warehouse_url, fresh_home), sources)
    backfill(start=PERIODS[0], end=PERIODS[-1])
    fresh = _tables()
    for name in COMPARED:
        assert len(after[name]) or name in MAY_BE_EMPTY, name
        pd.testing.assert_frame_equal(after[name], fresh[name], check_dtype=False, obj=name)
    assert lake_nightly == _lake_files(fresh_home)
    assert _received_order() == order_nightly


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_a_file_before_the_window_is_refused_and_a_backfill_still_takes_it(
    prefect_harness: None, warehouse_url: str, gaibao_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.backfill import backfill
    from flows.nightly import nightly_ingest
    from gaibao.settings import get_settings

    inbox = gaibao_home / "inbox"
    for period in ("2018-10", "2018-11"):
        _write_month(inbox, HUAIYUAN, period)
    monkeypatch.setenv("GAIBAO_CORRECTION_MONTHS", "3")
    get_settings.cache_clear()
    backfill(start="2018-10", end="2018-11")
    nightly_ingest(period="2018-11")  # the first listing
    before = _tables()

    folder = inbox / HUAIYUAN
    too_old = write_return(folder / f"{HUAIYUAN}项目进展月报2018-08.csv", _progress(HUAIYUAN, "2018-08"))
    in_window = write_return(folder / f"{HUAIYUAN}项目进展月报2018-09.csv", _progress(HUAIYUAN, "2018-09"))
    summary = nightly_ingest(period="2018-12")  # window: 2018-09..2018-11

    outcome = {c["period"]: c for c in summary["corrections"]}
    assert outcome["2018-08"]["status"] == "refused" and outcome["2018-09"]["status"] == "accepted"
    after = _tables()
    subs = after["submission"].set_index("file_name")
    refused = subs.loc[too_old.name]
    assert refused["refusal_code"] == OUTSIDE_WINDOW
    assert "2018年8月" in refused["reason"] and "2018年9月至2018年11月" in refused["reason"]
    assert "请联系市教育局数据工程师补录" in refused["reason"]
    issues = after["dq_issue"]
    assert issues[issues["submission_id"] == refused["submission_id"]]["rule"].tolist() == [OUTSIDE_WINDOW]
    assert not (after["fact_progress"]["period"] == "2018-08").any()
    assert subs.loc[in_window.name, "status"] == "accepted"
    # nothing accepted before was touched
    old = before["fact_progress"]
    new = after["fact_progress"]
    pd.testing.assert_frame_equal(
        old, new[new["period"].isin(["2018-10", "2018-11"])].reset_index(drop=True), check_dtype=False
    )
    # the county's receipt for 2018-08 carries the reason
    receipts = sorted((gaibao_home / "outbox" / "2018-08" / "receipt" / HUAIYUAN).glob("*.eml"))
    assert len(receipts) == 1
    msg = email.message_from_bytes(receipts[0].read_bytes(), policy=email.policy.default)
    assert "请联系市教育局数据工程师补录" in msg.get_body(("html",)).get_content()

    # the data engineers' backfill judges the file: the refusal does not make it "known"
    backfill(start="2018-08", end="2018-08")
    subs = _tables()["submission"]
    mine = subs[subs["file_name"] == too_old.name]
    assert mine["status"].tolist() == ["accepted"] and mine["refusal_code"].isna().all()
