"""Judging a batch: file refusals with Chinese reasons, totals, lateness, identity, one GX call for many files."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from gaibao import contract
from tasks.judge import (
    ISSUE_COLUMNS,
    SUBMISSION_COLUMNS,
    Candidate,
    is_late,
    judge_batch,
    judge_file,
    submission_id,
)
from tasks.read import read_return
from tasks.validate import rules_version

ROW = {
    "period": "2017-06",
    "county_code": "340321",
    "school_code": "3403210001",
    "school_name": "怀远县第一中学",
    "project_id": "HY-001",
    "project_type": "校舍改造",
    "status": "在建",
    "planned_area_m2": "1000",
    "started_area_m2": "800",
    "completed_area_m2": "500",
    "planned_invest_wan": "100",
    "completed_invest_wan": "50",
    "funds_central_wan": "20",
    "funds_local_wan": "30",
    "planned_start": "2017-01-01",
    "actual_start": "2017-02-01",
    "completed_date": "",
    "reporter": "张三",
    "phone": "13800000000",
    "note": "",
}
KNOWN = {"340321", "340322", "340323", "340324", "340325", "340326", "340327", "340328"}
RECEIVED = datetime(2017, 7, 3, 8, 0, tzinfo=UTC)

# One worker runs the whole module: its batch fixtures (one GX call each) are built once.
pytestmark = pytest.mark.xdist_group("judge")


def write_csv(path: Path, rows: list[dict], total: dict | None = None, title: str | None = None) -> Path:
    """A county's CSV as counties send it: a title row, Chinese headers, optional 合计 row."""
    names = contract.canonical_names("progress")
    lines = [title] if title else []
    lines.append(",".join(contract.label_zh("progress", n) for n in names))
    for row in [*rows, *([total] if total else [])]:
        lines.append(",".join(f'"{row.get(n) or ""}"' for n in names))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def candidate(path: Path, county: str, period: str = "2017-06", received: datetime = RECEIVED) -> Candidate:
    content = path.read_bytes()
    return Candidate(
        kind="progress",
        county_code=county,
        period=period,
        file_name=path.name,
        sha256=hashlib.sha256(content).hexdigest(),
        source="folder",
        received_at=received,
        parsed=read_return(content, path.name, kind="progress"),
    )


def rows_for(county: str, n: int = 2, **change: str) -> list[dict]:
    return [{**ROW, "county_code": county, "project_id": f"P-{i}", **change} for i in range(n)]


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory):
    """Eight files of one night, judged together in one call (one GX validation)."""
    d = tmp_path_factory.mktemp("inbox")
    files = {
        "good": (
            write_csv(
                d / "340321.csv", rows_for("340321", 3), title="怀远县全面改薄项目进展月报（2017年6月）"
            ),
            "340321",
        ),
        "wrong_county": (write_csv(d / "340322.csv", rows_for("340399")), "340322"),
        "wrong_period": (write_csv(d / "340323.csv", rows_for("340323", period="2017/05")), "340323"),
        "unknown": (write_csv(d / "990001.csv", rows_for("990001")), "990001"),
        "all_bad": (write_csv(d / "340325.csv", rows_for("340325", school_code="123")), "340325"),
        "mixed": (
            write_csv(
                d / "340326.csv",
                [
                    *rows_for("340326", 2),
                    {**ROW, "county_code": "340326", "project_id": "BAD", "funds_local_wan": "-1"},
                ],
            ),
            "340326",
        ),
        "total": (
            write_csv(
                d / "340327.csv",
                rows_for("340327", 2),
                total={
                    "school_name": "合计",
                    "planned_area_m2": "2000",
                    "completed_area_m2": "1,000",
                    "completed_invest_wan": "101",
                },
            ),
            "340327",
        ),
        "unreadable": (d / "340328.csv", "340328"),
    }
    (d / "340328.csv").write_text("这不是报表\n只是几行文字\n", encoding="utf-8")
    candidates = {name: candidate(path, county) for name, (path, county) in files.items()}
    judgement = judge_batch("progress", list(candidates.values()), None, KNOWN)
    ids = {
        name: submission_id("progress", c.county_code, c.period, c.sha256) for name, c in candidates.items()
    }
    return judgement, ids


def sub(batch, name: str) -> pd.Series:
    judgement, ids = batch
    return judgement.submissions.set_index("submission_id").loc[ids[name]]


def issues(batch, name: str) -> pd.DataFrame:
    judgement, ids = batch
    return judgement.issues[judgement.issues["submission_id"] == ids[name]]


def test_shapes(batch) -> None:
    judgement, ids = batch
    assert list(judgement.submissions.columns) == SUBMISSION_COLUMNS
    assert list(judgement.issues.columns) == ISSUE_COLUMNS
    assert list(judgement.facts.columns) == [
        "submission_id",
        *contract.canonical_names("progress"),
        "row_number",
    ]
    assert set(judgement.submissions["submission_id"]) == set(ids.values())
    assert (judgement.submissions["rules_version"] == rules_version()).all()


def test_good_file_is_accepted_with_all_rows(batch) -> None:
    record = sub(batch, "good")
    assert (record["status"], record["rows_total"], record["rows_accepted"], record["rows_rejected"]) == (
        "accepted",
        3,
        3,
        0,
    )
    assert pd.isna(record["reason"])
    judgement, ids = batch
    facts = judgement.facts[judgement.facts["submission_id"] == ids["good"]]
    assert facts["project_id"].tolist() == ["P-0", "P-1", "P-2"]
    assert facts["row_number"].tolist() == [3, 4, 5]  # title row 1, header row 2
    assert facts["completed_area_m2"].tolist() == [500.0] * 3
    assert issues(batch, "good").empty


@pytest.mark.parametrize(
    ("name", "code", "reason_bits", "value"),
    [
        ("wrong_county", "WRONG_COUNTY", ["340399", "340322", "区划代码"], "340399"),
        ("wrong_period", "WRONG_PERIOD", ["2017-05", "2017-06", "报告期"], "2017-05"),
        ("unknown", "UNKNOWN_COUNTY", ["990001", "不是已知的县"], "990001"),
        ("all_bad", "ALL_ROWS_REJECTED", ["全部 2 行", "此前已接收的数据保持不变"], None),
        ("unreadable", "NO_HEADER", [], None),
    ],
)
def test_refused_files(batch, name: str, code: str, reason_bits: list[str], value: str | None) -> None:
    record = sub(batch, name)
    assert record["status"] == "refused"
    assert record["refusal_code"] == code
    assert record["rows_accepted"] == 0
    for bit in reason_bits:
        assert bit in record["reason"]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in record["reason"])  # Chinese, for the clerk
    judgement, ids = batch
    assert (judgement.facts["submission_id"] == ids[name]).sum() == 0  # nothing of it is loaded
    file_issue = issues(batch, name)
    file_issue = file_issue[file_issue["row_number"].isna()]
    assert file_issue[["rule", "severity", "message"]].values.tolist() == [[code, "error", record["reason"]]]
    assert (file_issue["value"].iloc[0] if pd.notna(file_issue["value"].iloc[0]) else None) == value
    assert file_issue["county_code"].iloc[0] == record["county_code"]
    assert file_issue["period"].iloc[0] == "2017-06"


def test_all_rows_rejected_keeps_the_row_issues(batch) -> None:
    rows = issues(batch, "all_bad")
    rows = rows[rows["row_number"].notna()]
    assert rows[["rule", "row_number", "value"]].values.tolist() == [
        ["E_SCHOOL_CODE", 2, "123"],
        ["E_SCHOOL_CODE", 3, "123"],
    ]


def test_file_refused_whole_records_no_row_issues(batch) -> None:
    assert issues(batch, "wrong_period")["row_number"].isna().all()


def test_mixed_file_keeps_good_rows(batch) -> None:
    record = sub(batch, "mixed")
    assert (record["status"], record["rows_total"], record["rows_accepted"], record["rows_rejected"]) == (
        "accepted",
        3,
        2,
        1,
    )
    judgement, ids = batch
    assert judgement.facts[judgement.facts["submission_id"] == ids["mixed"]]["project_id"].tolist() == [
        "P-0",
        "P-1",
    ]
    found = issues(batch, "mixed")
    assert found[["rule", "row_number", "project_id", "column_name", "value"]].values.tolist() == [
        ["E_NEGATIVE", 4, "BAD", "funds_local_wan", "-1"]
    ]
    assert (found["county_code"] == "340326").all() and (found["kind"] == "progress").all()


def test_total_mismatch(batch) -> None:
    found = issues(batch, "total")
    assert sorted(found[["rule", "column_name", "value", "severity"]].itertuples(index=False, name=None)) == [
        ("TOTAL_MISMATCH", "completed_invest_wan", "101", "warning"),
    ]
    assert found["row_number"].isna().all()
    assert "第4行合计行「完成投资（万元）」为 101，而各行合计为 100，相差 1" in found["message"].iloc[0]
    assert sub(batch, "total")["status"] == "accepted"
    judgement, ids = batch
    assert (judgement.facts["submission_id"] == ids["total"]).sum() == 2  # the 合计 row is not a project


def test_batch_maps_findings_to_the_right_submission(batch) -> None:
    judgement, ids = batch
    by_sid = judgement.issues.groupby("submission_id")["county_code"].agg(set).to_dict()
    counties = judgement.submissions.set_index("submission_id")["county_code"].to_dict()
    for sid, found in by_sid.items():
        assert found == {counties[sid]}
    assert set(by_sid) == {
        ids[n] for n in ("wrong_county", "wrong_period", "unknown", "all_bad", "mixed", "total", "unreadable")
    }


@pytest.mark.parametrize(
    ("received", "period", "late"),
    [
        (datetime(2017, 7, 5, 15, 59, tzinfo=UTC), "2017-06", False),  # 23:59 on the 5th in Shanghai
        (datetime(2017, 7, 5, 16, 0, tzinfo=UTC), "2017-06", True),  # 00:00 on the 6th in Shanghai
        (datetime(2018, 1, 4, tzinfo=UTC), "2017-12", False),
        (datetime(2018, 1, 6, tzinfo=UTC), "2017-12", True),
    ],
)
def test_is_late(received: datetime, period: str, late: bool) -> None:
    assert is_late(received, period, due_day=5, tz="Asia/Shanghai") is late


def test_due_day_is_configurable() -> None:
    assert is_late(datetime(2017, 7, 8, tzinfo=UTC), "2017-06", due_day=10) is False


def test_submission_id_is_deterministic() -> None:
    a = submission_id("progress", "340321", "2017-06", "ab" * 32, "v1")
    assert a == submission_id("progress", "340321", "2017-06", "ab" * 32, "v1")
    assert len(a) == 20 and a != submission_id("progress", "340321", "2017-06", "ab" * 32, "v2")
    expected = hashlib.sha256(f"progress|340321|2017-06|{'ab' * 32}|v1".encode()).hexdigest()[:20]
    assert a == expected


def test_judge_file_defaults_to_the_files_own_county_and_period(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "怀远县_2017年6月.csv",
        [*rows_for("340321", 1), {**ROW, "project_id": "P-1", "completed_area_m2": "900"}],
    )
    judgement = judge_file(path.read_bytes(), path.name, received_at=datetime(2017, 7, 1, tzinfo=UTC))
    record = judgement.submissions.iloc[0]
    assert (record["county_code"], record["period"], record["status"], bool(record["is_late"])) == (
        "340321",
        "2017-06",
        "accepted",
        False,
    )
    assert judgement.issues["rule"].tolist() == ["E_COMPLETED_AREA_OVER_STARTED"]
    assert judgement.issues["message"].iloc[0] == (
        "第3行「竣工面积（平方米）」为 900，超过开工面积 800：竣工面积不能大于开工面积，请核对后重新报送。"
    )


def test_judge_file_against_the_previous_period(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "340321.csv", rows_for("340321", 1))
    previous = judge_file(
        write_csv(tmp_path / "prev.csv", rows_for("340321", 2, period="2017-05")).read_bytes(), "prev.csv"
    ).facts
    judgement = judge_file(
        path.read_bytes(), path.name, county_code="340321", period="2017-06", previous=previous
    )
    assert judgement.issues[["rule", "project_id"]].values.tolist() == [["DROPPED_PROJECT", "P-1"]]


def test_release_rows_judges_the_same_and_frees_each_files_rows(tmp_path: Path) -> None:
    """The ingest flows let a batch drop each file's own rows once copied: same judgement, and the
    files' rows are gone (reading them raises) while their row counts and 合计 rows stay."""
    total = {"school_name": "合计", "planned_area_m2": "2000", "completed_area_m2": "1,000"}
    paths = {
        "340321": write_csv(tmp_path / "340321.csv", rows_for("340321", 3), total=total),
        "340326": write_csv(
            tmp_path / "340326.csv",
            [
                *rows_for("340326", 2),
                {**ROW, "county_code": "340326", "project_id": "BAD", "funds_local_wan": "-1"},
            ],
        ),
    }
    kept = judge_batch("progress", [candidate(p, c) for c, p in paths.items()], None, KNOWN)
    released_cands = [candidate(p, c) for c, p in paths.items()]
    released = judge_batch("progress", released_cands, None, KNOWN, release_rows=True)

    pd.testing.assert_frame_equal(kept.facts, released.facts)
    pd.testing.assert_frame_equal(kept.issues, released.issues)
    cols = ["submission_id", "status", "rows_total", "rows_accepted", "rows_rejected"]
    pd.testing.assert_frame_equal(kept.submissions[cols], released.submissions[cols])
    assert set(released.issues["rule"]) >= {"TOTAL_MISMATCH"}
    for cand, n in zip(released_cands, [3, 3], strict=True):
        assert cand.parsed.n_rows == n
        assert len(cand.parsed.total_grid) == (1 if cand.county_code == "340321" else 0)
        with pytest.raises(RuntimeError, match="released"):
            _ = cand.parsed.rows


def _positions(frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """``frame`` stably sorted by its submissions' order in ``order``."""
    rank = frame["submission_id"].map({sid: i for i, sid in enumerate(order)})
    return frame.iloc[rank.argsort(kind="stable").to_numpy()].reset_index(drop=True)


def test_county_shards_give_this_process_the_larger_share(tmp_path: Path) -> None:
    """Whole counties per shard, the candidates' order kept within each; the first shard (judged
    in this process) gets ``first_weight`` times the rows of each other shard."""
    from tasks import judge as judge_module

    counties = [f"3403{i:02d}" for i in range(21, 31)]
    cands = [
        candidate(write_csv(tmp_path / f"{c}-{n}.csv", rows_for(c, 2)), c) for n in range(2) for c in counties
    ]  # two files a county, interleaved
    even = judge_module._county_shards(cands, 2)
    weighted = judge_module._county_shards(cands, 2, first_weight=1.5)
    three = judge_module._county_shards(cands, 3, first_weight=2.0)
    for shards, sizes in ((even, [5, 5]), (weighted, [6, 4]), (three, [5, 3, 2])):
        assert [len({c.county_code for c in s}) for s in shards] == sizes
        for shard in shards:
            assert shard == [c for c in cands if c in shard]  # candidates' order within a shard
            assert all(
                len([c for c in shard if c.county_code == k]) == 2 for k in {c.county_code for c in shard}
            )


def test_judging_in_shards_gives_the_single_batch_judgement(tmp_path: Path, monkeypatch) -> None:
    """A large batch is judged by county shards, one in a judging worker process: the same
    submissions (in the candidates' order), facts and issues as one batch, cross-period rules
    included (each shard gets its own counties' previous rows)."""
    from tasks import judge as judge_module
    from tasks import readpool

    d = tmp_path / "night"
    d.mkdir()
    files = {
        "340321": write_csv(d / "340321.csv", rows_for("340321", 3), title="怀远县全面改薄项目进展月报"),
        "340322": write_csv(d / "340322.csv", rows_for("340399")),  # WRONG_COUNTY
        "340323": write_csv(d / "340323.csv", rows_for("340323", period="2017/05")),  # WRONG_PERIOD
        "340325": write_csv(d / "340325.csv", rows_for("340325", school_code="123")),  # every row rejected
        "340326": write_csv(
            d / "340326.csv",
            [
                *rows_for("340326", 2),
                {**ROW, "county_code": "340326", "project_id": "BAD", "funds_local_wan": "-1"},
            ],
        ),
        "340327": write_csv(
            d / "340327.csv",
            rows_for("340327", 2),
            total={"school_name": "合计", "planned_area_m2": "2000", "completed_invest_wan": "101"},
        ),
    }
    (d / "340328.csv").write_text("这不是报表\n只是几行文字\n", encoding="utf-8")
    files["340328"] = d / "340328.csv"
    # Previous rows for two counties, one in each shard: a dropped project and a regression.
    previous = pd.concat(
        [
            judge_file(
                write_csv(
                    tmp_path / f"prev{c}.csv", rows_for(c, 3, period="2017-05", completed_area_m2="700")
                ).read_bytes(),
                f"prev{c}.csv",
                known_counties=KNOWN,
            ).facts
            for c in ("340321", "340327")
        ],
        ignore_index=True,
    )

    def candidates() -> list[Candidate]:
        return [candidate(path, county) for county, path in files.items()]

    single = judge_batch("progress", candidates(), previous, KNOWN)
    monkeypatch.setattr(judge_module, "SHARD_MIN_ROWS", 1)
    cands = candidates()
    shards = judge_module._county_shards(cands, 2)
    assert len(shards) == 2 and {c.county_code for c in shards[0]}.isdisjoint(
        c.county_code for c in shards[1]
    )
    sharded = judge_module.judge_in_shards("progress", cands, previous, KNOWN, processes=2, release_rows=True)
    pool = readpool._judge_pool
    assert pool is not None and pool._processes, "the second shard went to a judging process"

    order = single.submissions["submission_id"].tolist()
    pd.testing.assert_frame_equal(sharded.submissions, single.submissions)
    pd.testing.assert_frame_equal(_positions(sharded.facts, order), _positions(single.facts, order))
    pd.testing.assert_frame_equal(_positions(sharded.issues, order), _positions(single.issues, order))
    rules = set(single.issues["rule"])
    assert {"WRONG_COUNTY", "WRONG_PERIOD", "ALL_ROWS_REJECTED", "TOTAL_MISMATCH", "DROPPED_PROJECT"} <= rules
    assert "REGRESSION" in rules
    assert len(previous) == 6 and set(
        single.issues.loc[single.issues["rule"] == "REGRESSION", "county_code"]
    ) == {
        "340321",
        "340327",
    }
    for cand in cands:  # released in both processes: this one holds no rows of either shard
        if cand.parsed.refusal is None:
            with pytest.raises(RuntimeError, match="released"):
                _ = cand.parsed.rows


@pytest.mark.parametrize("failure", ["broken pool", "worker died", "other rules"])
def test_judging_in_shards_falls_back_to_this_process(tmp_path: Path, monkeypatch, failure: str) -> None:
    """A shard the judging processes cannot judge is judged here: the pool cannot take it, its
    worker died, or the worker read other suites than this process (changed on disk meanwhile)."""
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    from tasks import judge as judge_module
    from tasks import readpool

    paths = {c: write_csv(tmp_path / f"{c}.csv", rows_for(c, 2)) for c in ("340321", "340326")}
    single = judge_batch("progress", [candidate(p, c) for c, p in paths.items()], None, KNOWN)
    monkeypatch.setattr(judge_module, "SHARD_MIN_ROWS", 1)
    monkeypatch.setattr(judge_module, "LOCAL_SHARD_WEIGHT", 1.0)  # two counties: one per shard
    calls = []

    class Pool:
        def submit(self, fn, *args, **kwargs):
            calls.append(fn)
            if failure == "broken pool":
                raise BrokenProcessPool("a judging process died")
            future = Future()
            if failure == "worker died":
                future.set_exception(BrokenProcessPool("a judging process died"))
            else:  # what _judge_shard raises in a worker whose suites differ
                with pytest.raises(judge_module._OtherRules) as refused:
                    fn("0123456789ab", *args[1:], **kwargs)
                future.set_exception(refused.value)
            return future

    monkeypatch.setattr(readpool, "_get_judge_pool", lambda processes: Pool())
    sharded = judge_module.judge_in_shards(
        "progress", [candidate(p, c) for c, p in paths.items()], None, KNOWN, processes=2
    )
    assert calls == [judge_module._judge_shard]
    pd.testing.assert_frame_equal(sharded.submissions, single.submissions)
    pd.testing.assert_frame_equal(sharded.facts, single.facts)
    pd.testing.assert_frame_equal(sharded.issues, single.issues)
