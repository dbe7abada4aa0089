"""A file can only ever hurt itself (issue 16, item 1): the wall-time and memory bound per file,
a zip bomb, a judge that fails on one county's file.

Every county file is read in a reader process (``tasks.readpool``), even a batch of one file, so
that the bounds hold however a run reads. The hostile files are real: a 300 KB XLSX whose member
inflates to 300 MiB, and a CSV of 99,000 rows (within every size bound) that takes seconds and
hundreds of MB to read, read under lowered ``GAIBAO_READ_MAX_SECONDS`` / ``_MEMORY_MB``. Then
real nightly runs (the real Prefect engine) where those files sit beside valid returns of other
counties: every valid county loads, each hostile file is refused alone with its reason.
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from gaibao.settings import get_settings
from tasks.read import read_return
from tasks.readpool import read_many
from tests.filebuilders import progress_rows, return_bytes, write_return

PERIOD = "2018-12"
VALID = ["340102", "340103", "340104"]
BOMB, HEAVY, JUDGED = "340111", "340121", "340122"
FILE = "进展_2018年12月"


def zip_bomb(members_mib: int = 300) -> bytes:
    """A valid progress XLSX with one more member of ``members_mib`` MiB of zeros (deflated to
    about a thousandth of that): past the default 256 MiB bound on inflated members."""
    book = io.BytesIO(return_bytes(progress_rows(3, county_code=BOMB, period=PERIOD), "progress", fmt="xlsx"))
    with zipfile.ZipFile(book, "a", zipfile.ZIP_DEFLATED) as z, z.open("xl/media/image1.bin", "w") as member:
        block = bytes(1 << 20)
        for _ in range(members_mib):
            member.write(block)
    return book.getvalue()


def heavy_csv(county_code: str = HEAVY, rows: int = 99_000) -> bytes:
    """A progress CSV of ``rows`` rows (under the 100,000-row bound, 16 MB): reading it takes
    seconds and a few hundred MB of memory."""
    text = return_bytes(progress_rows(1, county_code=county_code, period=PERIOD), "progress").decode("utf-8")
    header, row = text.splitlines(keepends=True)[:2]
    return (header + row * rows).encode("utf-8")


def valid_csv(county_code: str, n: int = 3) -> bytes:
    return return_bytes(progress_rows(n, county_code=county_code, period=PERIOD), "progress")


@pytest.fixture
def bounds(monkeypatch: pytest.MonkeyPatch):
    """Set ``GAIBAO_READ_MAX_*`` for one test (the settings re-read)."""

    def set_bounds(**values: object) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"GAIBAO_READ_MAX_{name.upper()}", str(value))
        get_settings.cache_clear()

    yield set_bounds
    get_settings.cache_clear()


def test_a_zip_bomb_is_refused_before_it_is_inflated() -> None:
    content = zip_bomb()
    assert len(content) < 1024 * 1024
    declared = sum(i.file_size for i in zipfile.ZipFile(io.BytesIO(content)).infolist())
    assert declared > get_settings().read_max_unzipped_bytes
    got = read_many([(content, f"{FILE}.xlsx", None)], processes=0)[0]
    assert got.refusal is not None and got.refusal.code == "TOO_LARGE"
    assert "解压后大小超过上限" in got.refusal.message_zh and "256.0 MB" in got.refusal.message_zh
    assert got.refusal.detail["bound"] == "read_max_unzipped_bytes"


@pytest.mark.parametrize("processes", [2, 0], ids=["readers", "one-reader"])
def test_past_the_wall_time_bound_only_that_file_is_refused(bounds, processes: int) -> None:
    bounds(seconds=1)
    items = [(valid_csv(c), f"{c}.csv", None) for c in VALID[:2]]
    items.insert(1, (heavy_csv(), "heavy.csv", None))
    items.append((valid_csv(VALID[2]), f"{VALID[2]}.csv", None))
    started = time.monotonic()
    got = read_many(items, processes=processes)
    took = time.monotonic() - started
    heavy = got[1]
    assert heavy.refusal is not None and heavy.refusal.code == "READ_TIMEOUT"
    assert "读取时长上限" in heavy.refusal.message_zh and "1 秒" in heavy.refusal.message_zh
    assert heavy.refusal.detail["bound"] == "read_max_seconds" and heavy.n_rows == 0
    for item, parsed in zip(items, got, strict=True):
        if item[1] != "heavy.csv":
            assert parsed.refusal is None and parsed.n_rows == read_return(*item).n_rows == 3
    assert took < 30  # the reader was stopped, not waited for (reading the file takes longer)
    # the reader that overran was replaced: the next batch is read as usual
    again = read_many(items[:1], processes=processes)
    assert again[0].refusal is None and again[0].n_rows == 3


def test_a_single_file_batch_is_bounded_too(bounds) -> None:
    """The run's own process never parses a county file: even one file goes to a reader."""
    bounds(seconds=1)
    started = time.monotonic()
    got = read_many([(heavy_csv(), "heavy.csv", None)], processes=None)[0]
    assert got.refusal is not None and got.refusal.code == "READ_TIMEOUT"
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("processes", [2, 0], ids=["readers", "one-reader"])
def test_past_the_memory_bound_only_that_file_is_refused(bounds, processes: int) -> None:
    # A reader holds about 100 MB before any file; the heavy file takes 200-300 MB more.
    bounds(memory_mb=200)
    items = [
        (valid_csv(VALID[0]), "a.csv", None),
        (heavy_csv(), "heavy.csv", None),
        (valid_csv(VALID[1]), "b.csv", None),
    ]
    got = read_many(items, processes=processes)
    heavy = got[1]
    assert heavy.refusal is not None and heavy.refusal.code == "READ_MEMORY", heavy.refusal
    assert "200 MB" in heavy.refusal.message_zh and "读取内存上限" in heavy.refusal.message_zh
    assert heavy.refusal.detail["bound"] == "read_max_memory_mb"
    assert [p.refusal for p in (got[0], got[2])] == [None, None]
    assert [p.n_rows for p in (got[0], got[2])] == [3, 3]


def test_the_readers_take_the_callers_bounds(bounds) -> None:
    """Readers started before a bound changed read under the new one (they get it with each file)."""
    items = [(valid_csv(VALID[0], n=40), "a.csv", None)]
    assert read_many(items, processes=1)[0].refusal is None
    bounds(rows=10)
    got = read_many(items, processes=1)[0]
    assert (
        got.refusal is not None and got.refusal.code == "TOO_LARGE" and "最多 10 行" in got.refusal.message_zh
    )


# --------------------------------------------------------------------------------------------
# Real nightly runs


@pytest.fixture
def home(prefect_harness: None, gaibao_home: Path, warehouse_url: str) -> Path:
    get_settings.cache_clear()
    return gaibao_home


def _write(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_return(path, rows, "progress")


def _warehouse():
    from warehouse.store import Warehouse

    return Warehouse.from_settings(get_settings())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("processes", "bound"), [("2", "memory"), ("0", "time")], ids=["readers-memory", "one-reader-time"]
)
def test_hostile_files_beside_valid_counties_in_a_nightly_run(
    home: Path, monkeypatch: pytest.MonkeyPatch, bounds, processes: str, bound: str
) -> None:
    """A zip bomb, a file past the memory (or wall-time) bound and a file the judge fails on, each
    in its own county's folder beside three valid counties: the run completes, the three load,
    each hostile file is refused alone with its reason, and the run's summary says so."""
    from flows.nightly import nightly_ingest

    monkeypatch.setenv("GAIBAO_READ_PROCESSES", processes)
    monkeypatch.setenv("GAIBAO_TEST_JUDGE_FAIL", JUDGED)
    if bound == "memory":
        bounds(memory_mb=200)
    else:
        bounds(seconds=1)
    inbox = home / "inbox"
    for code in [*VALID, JUDGED]:
        _write(inbox / code / f"{FILE}.csv", progress_rows(3, county_code=code, period=PERIOD))
    (inbox / BOMB).mkdir(parents=True)
    (inbox / BOMB / f"{FILE}.xlsx").write_bytes(zip_bomb())
    (inbox / HEAVY).mkdir(parents=True)
    (inbox / HEAVY / f"{FILE}.csv").write_bytes(heavy_csv())

    started = time.monotonic()
    result = nightly_ingest(period=PERIOD, counties=[*VALID, BOMB, HEAVY, JUDGED])
    assert time.monotonic() - started < 240
    assert result["totals"]["accepted"] == 3 and result["totals"]["refused"] == 3

    wh = _warehouse()
    subs = wh.read_table("submission", where={"period": PERIOD}).set_index("county_code")
    assert set(subs.loc[VALID, "status"]) == {"accepted"}
    expected = {
        BOMB: "TOO_LARGE",
        HEAVY: "READ_MEMORY" if bound == "memory" else "READ_TIMEOUT",
        JUDGED: "JUDGE_FAILED",
    }
    assert set(subs.loc[list(expected), "status"]) == {"refused"}
    assert "上限" in subs.loc[HEAVY, "reason"]
    assert ("200 MB" if bound == "memory" else "1 秒") in subs.loc[HEAVY, "reason"]
    assert "审核程序处理该文件时出错" in subs.loc[JUDGED, "reason"]
    facts = wh.read_table("fact_progress", where={"period": PERIOD})
    assert facts.groupby("county_code").size().to_dict() == {code: 3 for code in VALID}
    issues = wh.read_table("dq_issue", where={"period": PERIOD})
    refused_rules = issues[issues["severity"] == "error"].groupby("county_code")["rule"].agg(set).to_dict()
    assert {code: refused_rules.get(code) for code in expected} == {c: {r} for c, r in expected.items()}
    wh.close()
    # each county learns its outcome in its receipt (outbox)
    receipts = _receipt_texts(home)
    assert any("审核程序处理该文件时出错" in text for text in receipts)
    assert os.environ["GAIBAO_TEST_JUDGE_FAIL"] == JUDGED


def _receipt_texts(home: Path) -> list[str]:
    import email
    import email.policy

    texts = []
    for path in sorted((home / "outbox").rglob("*.eml")):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        parts = [
            p.get_content() for p in msg.walk() if not p.is_multipart() and p.get_content_maintype() == "text"
        ]
        texts.append(str(msg["Subject"]) + "\n" + "\n".join(parts))
    return texts


# --------------------------------------------------------------------------------------------
# Control characters (issue 16, item 2)


@pytest.mark.slow
def test_nul_and_esc_cannot_fail_the_batch_and_never_reach_the_public_outputs(home: Path) -> None:
    """Night 1: three counties accepted. Night 2: two of them resubmit corrections, the third a
    file with a NUL after the first 4 KB in 填报人 and ESC in 学校名称 and 项目编号. On PostgreSQL the
    batch's COPY loads them all (a NUL would fail it); the county is warned of each cell, row by
    row and column by column; no stored text and no public 公示 CSV or HTML holds NUL or ESC."""
    from flows.nightly import nightly_ingest

    inbox = home / "inbox"
    for code in VALID:
        _write(inbox / code / f"{FILE}.csv", progress_rows(3, county_code=code, period=PERIOD))
    assert nightly_ingest(period=PERIOD, counties=VALID)["totals"]["accepted"] == 3

    for code in VALID[:2]:  # corrections: four projects now
        _write(inbox / code / f"{FILE}（更正）.csv", progress_rows(4, county_code=code, period=PERIOD))
    rows = progress_rows(40, county_code=VALID[2], period=PERIOD)
    rows[30]["reporter"] = "李\x00四"
    rows[31]["school_name"] = "\x1b[31m红星小学\x1b[0m"
    rows[32]["project_id"] = "HY-2017-\x1b033"
    path = _write(inbox / VALID[2] / f"{FILE}（更正）.csv", rows)
    content = path.read_bytes()
    assert content.index(b"\x00") > 4096  # past the binary sniff
    second = nightly_ingest(period=PERIOD, counties=VALID)
    assert second["totals"]["accepted"] == 3

    wh = _warehouse()
    subs = wh.read_table("submission", where={"period": PERIOD})
    current = subs[subs["status"] == "accepted"].set_index("county_code")
    assert current.loc[VALID, "file_name"].tolist() == [f"{FILE}（更正）.csv"] * 3
    facts = wh.read_table("fact_progress", where={"period": PERIOD})
    assert facts.groupby("county_code").size().to_dict() == {VALID[0]: 4, VALID[1]: 4, VALID[2]: 39}
    text_cells = [str(c) for c in facts.select_dtypes(include=["object", "string"]).to_numpy().ravel()]
    assert len(text_cells) > 47 * 5 and not [c for c in text_cells if "\x00" in c or "\x1b" in c]
    assert "[31m红星小学[0m" in set(facts["school_name"])
    issues = wh.read_table("dq_issue", where={"period": PERIOD, "county_code": VALID[2]})
    issues = issues[issues["submission_id"] == current.loc[VALID[2], "submission_id"]]
    warned = issues[issues["rule"].str.startswith("CONTROL_CHARS")].sort_values("row_number")
    assert warned[["row_number", "column_name", "rule", "severity"]].values.tolist() == [
        [32, "reporter", "CONTROL_CHARS_REMOVED", "warning"],
        [33, "school_name", "CONTROL_CHARS_REMOVED", "warning"],
        [34, "project_id", "CONTROL_CHARS_REFUSED", "warning"],
    ]
    assert (
        "第32行「填报人」含有 1 个控制字符" in warned["message"].iloc[0]
        and "已删除" in warned["message"].iloc[0]
    )
    assert "第34行「项目编号」" in warned["message"].iloc[2] and "按无效处理" in warned["message"].iloc[2]
    assert warned["value"].isna().all()  # 填报人 is personal data: never repeated in a finding
    rejected = issues[(issues["severity"] == "error") & (issues["row_number"] == 34)]
    shown = rejected["value"].astype(str)
    assert len(rejected) and shown.str.contains("\\x1b", regex=False).all()  # visible, as \\x1b
    assert not shown.str.contains("\x1b", regex=False).any()
    wh.close()
    receipts = [t for t in _receipt_texts(home) if "第32行「填报人」含有 1 个控制字符" in t]
    assert receipts and "李四" not in receipts[0] and "\x00" not in receipts[0]

    from reports.service import run_pack

    run_pack(period=PERIOD)
    public = [
        p
        for p in (home / "reports" / PERIOD).rglob("*")
        if p.suffix in (".csv", ".html") and "公示" in p.name
    ]
    assert any(p.suffix == ".csv" for p in public) and any(p.suffix == ".html" for p in public)
    for p in public:
        data = p.read_bytes()
        assert b"\x00" not in data and b"\x1b" not in data, p.name
    assert any("[31m红星小学[0m" in p.read_text(encoding="utf-8-sig") for p in public)
    assert pd.notna(current.loc[VALID[2], "submission_id"])


# --------------------------------------------------------------------------------------------
# A judge that fails on one county's file


def _candidates(counties: list[str], rows: int = 3):
    import hashlib
    from datetime import UTC, datetime

    from tasks.judge import Candidate

    out = []
    for code in counties:
        content = valid_csv(code, rows)
        out.append(
            Candidate(
                kind="progress",
                county_code=code,
                period=PERIOD,
                file_name=f"{code}.csv",
                sha256=hashlib.sha256(content).hexdigest(),
                source="folder",
                received_at=datetime(2019, 1, 3, tzinfo=UTC),
                parsed=read_return(content, f"{code}.csv", kind="progress"),
            )
        )
    return out


@pytest.mark.parametrize("release_rows", [False, True])
def test_a_judge_failure_refuses_that_file_alone(monkeypatch: pytest.MonkeyPatch, release_rows: bool) -> None:
    """The batch is judged again in halves down to the failing file (its rows rebuilt when the
    batch had released them); every other file is judged exactly as without the failing one."""
    from tasks.judge import judge_batch

    counties = [*VALID, "340111", "340121", JUDGED, "340123"]
    others = [c for c in counties if c != JUDGED]
    known = set(counties)
    expected = judge_batch("progress", _candidates(others), None, known, engine="pandas")
    monkeypatch.setenv("GAIBAO_TEST_JUDGE_FAIL", JUDGED)
    got = judge_batch(
        "progress", _candidates(counties), None, known, engine="pandas", release_rows=release_rows
    )

    subs = got.submissions.set_index("county_code")
    assert list(got.submissions["county_code"]) == counties  # the candidates' order
    assert subs.loc[JUDGED, "status"] == "refused" and subs.loc[JUDGED, "refusal_code"] == "JUDGE_FAILED"
    assert (
        "审核程序处理该文件时出错" in subs.loc[JUDGED, "reason"]
        and "RuntimeError" in subs.loc[JUDGED, "reason"]
    )
    assert subs.loc[JUDGED, "rows_total"] == 3 and subs.loc[JUDGED, "rows_accepted"] == 0
    mine = got.issues[got.issues["county_code"] == JUDGED]
    assert mine[["rule", "severity"]].values.tolist() == [["JUDGE_FAILED", "error"]]

    columns = ["county_code", "status", "rows_total", "rows_accepted", "rows_rejected"]
    assert subs.loc[others, columns[1:]].reset_index().values.tolist() == (
        expected.submissions[columns].values.tolist()
    )
    facts = got.facts.sort_values(["submission_id", "row_number"]).reset_index(drop=True)
    want = expected.facts.sort_values(["submission_id", "row_number"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(facts, want, check_dtype=False)
    assert len(facts) == 3 * len(others)


def test_a_judge_that_fails_on_every_file_fails_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """More failing files than JUDGE_FAILED_MAX is the judge's fault, not the files': raised."""
    from tasks import judge as judge_module

    monkeypatch.setattr(judge_module, "JUDGE_FAILED_MAX", 1)
    monkeypatch.setenv("GAIBAO_TEST_JUDGE_FAIL", JUDGED)
    cands = _candidates([JUDGED, *VALID])
    cands += _candidates([JUDGED])  # the same county's second file fails too
    cands[-1].sha256 = "0" * 64
    with pytest.raises(RuntimeError, match="injected judge failure"):
        judge_module.judge_batch("progress", cands, None, {JUDGED, *VALID}, engine="pandas")
