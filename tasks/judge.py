"""Judging one batch of returns (one kind, one period): type, validate, apply the file rules.

``judge_batch`` takes every candidate file of a batch, types all their rows at once
(``tasks.normalise``), validates them in one GX call per suite (``tasks.validate``) and adds the
rules that concern a whole file:

- a file ``tasks.read`` refused (unreadable, no header, a required column missing, …);
- a period column naming another period (``WRONG_PERIOD``), a county code naming another county
  than the source that delivered the file (``WRONG_COUNTY``) or no known county
  (``UNKNOWN_COUNTY``): the file is refused whole;
- every row rejected: the file is refused (``ALL_ROWS_REJECTED``), the earlier accepted data stays;
- the 合计 row against the sums of the rows (``TOTAL_MISMATCH``, a warning on the file);
- lateness: received after day ``due_day`` of the month after the period (in ``tz``).

It returns a :class:`Judgement`: the ``submission`` records, the accepted typed rows (facts)
and every finding (issues), shaped as docs/ARCHITECTURE.md describes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from gaibao import contract
from gaibao.memory import release_free_memory
from tasks.normalise import (
    FINDING_COLUMNS,
    ROW_NUMBER,
    SUBMISSION_ID,
    concat_returns,
    empty_findings,
    normalise_frame,
    parse_period,
)
from tasks.read import ParsedReturn
from tasks.validate import plain_message, rules_version, suite_findings_of, validate_batch

log = logging.getLogger(__name__)

SUBMISSION_COLUMNS = [
    "submission_id",
    "kind",
    "county_code",
    "period",
    "source",
    "file_name",
    "sha256",
    "received_at",
    "status",
    "reason",
    "refusal_code",
    "rows_total",
    "rows_accepted",
    "rows_rejected",
    "rules_version",
    "is_late",
    "unknown_columns",
    "loaded_at",
    "file_mtime",
    "file_kinds",
]
# A dq_issue row: the finding plus where it belongs.
ISSUE_COLUMNS = ["submission_id", "kind", "county_code", "period", *FINDING_COLUMNS[1:]]


@dataclass
class Candidate:
    """One file of a batch, read, with what its source says it should be."""

    kind: str
    county_code: str | None  # the county whose source delivered the file (None: unknown)
    period: str | None  # the period being ingested (None for plan files)
    file_name: str
    sha256: str
    source: str
    received_at: datetime  # when gaibao first read the bytes: decides lateness and newest-wins
    parsed: ParsedReturn
    file_mtime: datetime | None = None  # the time the file claims, for the record only
    file_kinds: str | None = None  # a workbook carrying both returns: its kinds, "funding,progress"


@dataclass
class Judgement:
    submissions: pd.DataFrame  # SUBMISSION_COLUMNS
    facts: pd.DataFrame  # canonical columns + submission_id + row_number, accepted rows only
    issues: pd.DataFrame  # ISSUE_COLUMNS
    sheet_name: str | None = None  # judge_file_returns: the workbook sheet the return was read from


def submission_id(
    kind: str, county_code: str | None, period: str | None, sha256: str, version: str | None = None
) -> str:
    """``sha256("{kind}|{county_code}|{period}|{sha256}|{rules_version}")[:20]``."""
    version = version or rules_version()
    text = f"{kind}|{county_code}|{period}|{sha256}|{version}"  # as warehouse.store.make_submission_id
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def is_late(received_at: datetime, period: str | None, due_day: int = 5, tz: str = "Asia/Shanghai") -> bool:
    """Received (in ``tz``) after the end of day ``due_day`` of the month after ``period``."""
    if not period:
        return False
    year, month = int(period[:4]), int(period[5:7])
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    when = received_at if received_at.tzinfo else received_at.replace(tzinfo=UTC)
    local = when.astimezone(ZoneInfo(tz)).date()
    return local > datetime(year, month, due_day).date()


# --------------------------------------------------------------------------------------------


def judge_batch(
    kind: str,
    candidates: list[Candidate],
    previous: pd.DataFrame | None,
    known_counties: set[str],
    due_day: int = 5,
    tz: str = "Asia/Shanghai",
    suite_findings: pd.DataFrame | None = None,
    engine: str = "gx",
    release_rows: bool = False,
) -> Judgement:
    """Judge every candidate file of one batch (one kind; one period unless ``plan``).

    ``suite_findings`` (from :func:`prevalidate`) spares the GX call when a larger batch holding
    these files was validated earlier. ``release_rows`` lets the batch drop each file's own rows
    once it has copied them (:meth:`ParsedReturn.release_rows`): for callers that judge each
    candidate once, as the ingest flows do; the candidates cannot be judged again.

    An exception while judging refuses only the file it comes from: the batch is judged again in
    halves of whole counties, down to the file that still fails, which is refused as
    ``JUDGE_FAILED`` (:func:`_judge_apart`)."""
    options = {"due_day": due_day, "tz": tz, "engine": engine}
    kept: dict[str, pd.DataFrame] = {}
    try:
        return _judge_batch(
            kind, candidates, previous, known_counties, suite_findings=suite_findings,
            release_rows=release_rows, kept=kept, **options,
        )
    except Exception as exc:  # noqa: BLE001 - one file's fault must not stop the batch
        log.warning("judging %d %s files failed (%r): judging them apart", len(candidates), kind, exc)
        _restore_rows(kind, candidates, kept.pop("raw", None), exc)
        return _judge_apart(kind, candidates, previous, known_counties, suite_findings, options, exc)


# More files than this failing apart is not their fault but the judge's (a broken rule, the
# suites unreadable): the batch's error is raised and the run fails (the engineers are paged).
JUDGE_FAILED_MAX = 8


def _judge_apart(
    kind: str,
    candidates: list[Candidate],
    previous: pd.DataFrame | None,
    known_counties: set[str],
    suite_findings: pd.DataFrame | None,
    options: dict,
    error: Exception,
) -> Judgement:
    """The candidates judged in halves of whole counties (a half that fails, in halves again), a
    file that fails alone refused ``JUDGE_FAILED``: a bad file costs about two judgements per
    halving, ``log2`` of the batch's counties."""
    version = rules_version()
    failed: list[Candidate] = []

    def judge(group: list[Candidate]) -> list[Judgement]:
        counties = {c.county_code for c in group}
        prev = None if previous is None else previous[previous["county_code"].isin(counties)]
        found = None
        if suite_findings is not None:
            sids = {submission_id(c.kind, c.county_code, c.period, c.sha256, version) for c in group}
            found = suite_findings[suite_findings["submission_id"].isin(sids)]
        try:
            return [_judge_batch(kind, group, prev, known_counties, suite_findings=found, **options)]
        except Exception as exc:  # noqa: BLE001 - narrowed down below
            if len(group) > 1:
                return [part for half in _halves(group) for part in judge(half)]
            failed.append(group[0])
            if len(failed) > JUDGE_FAILED_MAX:
                raise error from exc
            log.error("judging %s (county %s) failed: refused as JUDGE_FAILED", group[0].file_name,
                      group[0].county_code, exc_info=exc)
            return [_judge_failed(kind, group[0], exc, version, options)]

    parts = [part for half in _halves(candidates) for part in judge(half)]
    return _merge(parts, candidates, version)


def _halves(group: list[Candidate]) -> list[list[Candidate]]:
    halves = _county_shards(group, 2)
    if len(halves) < 2:  # one county's several files
        middle = max(1, len(group) // 2)
        halves = [group[:middle], group[middle:]]
    return [h for h in halves if h]


def _judge_failed(kind: str, cand: Candidate, exc: Exception, version: str, options: dict) -> Judgement:
    """One submission refused ``JUDGE_FAILED``: the judge failed on this file (not a finding)."""
    sid = submission_id(cand.kind, cand.county_code, cand.period, cand.sha256, version)
    record = _submission_record(sid, cand, version, options["due_day"], options["tz"])
    reason = (
        f"本次报送暂未受理：审核程序处理该文件时出错（内部错误 {type(exc).__name__}），"
        "这不一定是文件本身的问题，数据工程师会收到通知并处理。处理后将重新审核；"
        "也可按模板核对文件后重新报送。"
    )
    n = cand.parsed.n_rows
    record.update(status="refused", reason=reason, refusal_code="JUDGE_FAILED", rows_total=n,
                  rows_accepted=0, rows_rejected=n)
    submissions = pd.DataFrame([record], columns=SUBMISSION_COLUMNS)
    finding = {
        "submission_id": sid, "row_number": pd.NA, "project_id": None, "rule": "JUDGE_FAILED",
        "severity": "error", "column_name": None, "value": None, "message": reason, "is_explained": False,
    }
    issues = _issues(pd.DataFrame([finding], columns=FINDING_COLUMNS), submissions, kind)
    try:
        empty, _ = normalise_frame(kind, *concat_returns(kind, []))
        facts = empty[[SUBMISSION_ID, *contract.canonical_names(kind), ROW_NUMBER]]
    except Exception:  # noqa: BLE001 - the typed shape is a nicety for the merge
        facts = pd.DataFrame(columns=[SUBMISSION_ID, *contract.canonical_names(kind), ROW_NUMBER])
    return Judgement(submissions=submissions, facts=facts, issues=issues)


def _restore_rows(kind: str, candidates: list[Candidate], raw: pd.DataFrame | None, error: Exception) -> None:
    """Give candidates whose rows a failed judgement released their rows back, from its ``raw``."""
    released = [c for c in candidates if c.parsed.released_rows is not None and c.parsed.refusal is None]
    if not released:
        return
    if raw is None:
        raise error
    from dataclasses import replace

    from tasks.read import Grid

    version = rules_version()
    by_sid = {sid: frame for sid, frame in raw.groupby(SUBMISSION_ID, sort=False)}
    empty = raw.iloc[:0]
    for cand in released:
        sid = submission_id(cand.kind, cand.county_code, cand.period, cand.sha256, version)
        rows = by_sid.get(sid, empty).drop(columns=[SUBMISSION_ID])
        cand.parsed = replace(cand.parsed, grid=Grid.from_frame(rows), released_rows=None)


def _failure_injected(candidates: list[Candidate]) -> None:
    """Failure injection for the tests: judging a file of the county ``GAIBAO_TEST_JUDGE_FAIL``
    names raises (as a fault in a rule would). Never set in production."""
    victim = os.environ.get("GAIBAO_TEST_JUDGE_FAIL")
    if victim and any(c.county_code == victim and c.parsed.refusal is None for c in candidates):
        raise RuntimeError(f"injected judge failure for county {victim}")


def _judge_batch(
    kind: str,
    candidates: list[Candidate],
    previous: pd.DataFrame | None,
    known_counties: set[str],
    due_day: int = 5,
    tz: str = "Asia/Shanghai",
    suite_findings: pd.DataFrame | None = None,
    engine: str = "gx",
    release_rows: bool = False,
    kept: dict | None = None,
) -> Judgement:
    """:func:`judge_batch` without its fallback; ``kept["raw"]`` holds the batch's rows when
    ``release_rows`` released the candidates' own (so that a failure can judge them again)."""
    _failure_injected(candidates)
    version = rules_version()
    if not known_counties and kind != "plan":
        log.warning("no known counties given: every %s file will be refused as UNKNOWN_COUNTY", kind)
    subs: dict[str, dict] = {}
    refusals: dict[str, tuple[str, str, str | None, str | None]] = {}  # sid -> (code, reason, column, value)
    ordered: list[tuple[str, Candidate]] = []
    for cand in candidates:
        sid = submission_id(cand.kind, cand.county_code, cand.period, cand.sha256, version)
        if sid in subs:
            log.info("skipping a second copy of %s (%s) in one batch", cand.file_name, sid)
            continue
        subs[sid] = _submission_record(sid, cand, version, due_day, tz)
        if cand.parsed.refusal is not None:
            refusal = cand.parsed.refusal
            refusals[sid] = (refusal.code, refusal.message_zh, None, None)
        ordered.append((sid, cand))

    readable = [(sid, c.parsed) for sid, c in ordered if sid not in refusals]
    raw, factors = concat_returns(kind, readable)
    if release_rows:
        if kept is not None:
            kept["raw"] = raw  # until the judgement is made
        for _, parsed in readable:
            parsed.release_rows()  # ``raw`` holds every row now
        release_free_memory()
    typed, type_findings = normalise_frame(kind, raw, factors)

    if kind != "plan":
        expected = {sid: (c.county_code, c.period) for sid, c in ordered if sid not in refusals}
        refusals.update(_file_refusals(kind, typed, expected, known_counties))
    _fill_from_file(subs, typed)

    keep = ~typed[SUBMISSION_ID].isin(list(refusals)).to_numpy()
    typed, raw = typed[keep].reset_index(drop=True), raw[keep].reset_index(drop=True)
    type_findings = type_findings[~type_findings["submission_id"].isin(list(refusals))]

    findings = validate_batch(
        kind, typed, previous, raw=raw, unit_factors=factors, suite_findings=suite_findings, engine=engine
    )
    del raw  # judged: the written forms are in the findings now
    findings = _drop_missing_where_mistyped(kind, findings, type_findings)
    judged = [(s, c) for s, c in ordered if s not in refusals]
    mismatch = _total_mismatch(kind, judged, typed)
    findings = _concat([type_findings, findings, mismatch, _control_findings(kind, judged)])

    # Rows with an error are rejected; a file with no accepted row is refused.
    errors = findings[(findings["severity"] == "error") & findings["row_number"].notna()]
    bad = set(zip(errors["submission_id"], errors["row_number"].astype("int64"), strict=True))
    rejected = _row_mask(typed, bad)
    counts = pd.DataFrame({"sid": typed[SUBMISSION_ID].to_numpy(), "rejected": rejected}).groupby("sid")[
        "rejected"
    ]
    totals, n_rejected = counts.size().to_dict(), counts.sum().to_dict()
    for sid, record in subs.items():
        if sid in refusals:
            continue
        record["rows_total"] = int(totals.get(sid, 0))
        record["rows_rejected"] = int(n_rejected.get(sid, 0))
        record["rows_accepted"] = record["rows_total"] - record["rows_rejected"]
        if record["rows_total"] and record["rows_accepted"] == 0:
            reason = plain_message(kind, "ALL_ROWS_REJECTED").format(rows=record["rows_total"])
            refusals[sid] = ("ALL_ROWS_REJECTED", reason, None, None)

    file_issues = []
    for sid, (code, reason, column, value) in refusals.items():
        record = subs[sid]
        sheet = _candidate(ordered, sid).parsed.sheet_name if record.get("file_kinds") else None
        if sheet and not reason.startswith("工作表“"):  # one of a workbook's two returns: say which
            reason = f"工作表“{sheet}”（{contract.KIND_NAME_ZH.get(kind, kind)}）：{reason}"
        record.update(status="refused", reason=reason, refusal_code=code, rows_accepted=0)
        if code != "ALL_ROWS_REJECTED":
            record["rows_total"] = _candidate(ordered, sid).parsed.n_rows
            record["rows_rejected"] = record["rows_total"]
        file_issues.append(
            {
                "submission_id": sid,
                "row_number": pd.NA,
                "project_id": None,
                "rule": code,
                "severity": "error",
                "column_name": column,
                "value": value,
                "message": reason,
                "is_explained": False,
            }
        )
    if file_issues:
        findings = _concat([pd.DataFrame(file_issues, columns=FINDING_COLUMNS), findings])

    accepted = ~rejected & ~typed[SUBMISSION_ID].isin(list(refusals)).to_numpy()
    facts = typed[accepted].reset_index(drop=True)
    facts = facts[[SUBMISSION_ID, *contract.canonical_names(kind), ROW_NUMBER]]

    submissions = pd.DataFrame([subs[sid] for sid in subs], columns=SUBMISSION_COLUMNS)
    issues = _issues(findings, submissions, kind)
    log.info(
        "judged %d %s files: %d accepted, %d refused, %d rows accepted, %d issues",
        len(submissions),
        kind,
        int((submissions["status"] == "accepted").sum()),
        int((submissions["status"] == "refused").sum()),
        len(facts),
        len(issues),
    )
    return Judgement(submissions=submissions.reset_index(drop=True), facts=facts, issues=issues)


# A batch is judged in shards only when each shard gets at least this many rows: below it, the
# round trip to a worker (pickling the rows there and the judgement back) costs more than half
# the judging saves. A national month's progress batch has about a million rows.
SHARD_MIN_ROWS = 100_000

# The shard judged in this process gets this many times the rows of each shard sent to a judging
# process: a sent shard is first pickled (in a thread of this process) and unpickled there, and its
# judgement comes back the same way, so with equal shards this process waited for its worker.
LOCAL_SHARD_WEIGHT = 1.4


def judge_in_shards(
    kind: str,
    candidates: list[Candidate],
    previous: pd.DataFrame | None,
    known_counties: set[str],
    processes: int | None = None,
    **options,
) -> Judgement:
    """:func:`judge_batch` over shards of whole counties at once: the first shard in this process,
    the others in judging worker processes (``tasks.readpool``; one shard per process, up to
    ``processes``, default one per CPU), then merged.

    Every rule of a batch concerns one file, or one county against its own previous rows, so
    judging the counties in separate shards gives the same submissions, facts and issues as one
    batch: the tests compare both. ``submissions`` keep the candidates' order; the facts and the
    issues come shard after shard (each submission's rows still together and in order). A shard
    whose worker dies is judged here. Batches too small to pay for the round trip, and callers
    that may not start processes (a Dask worker), judge in one batch here."""
    from tasks import readpool

    rows = sum(c.parsed.n_rows for c in candidates)
    n = min(readpool.judging_processes(processes), rows // SHARD_MIN_ROWS)
    if n < 2:
        return judge_batch(kind, candidates, previous, known_counties, **options)
    shards = _county_shards(candidates, n, first_weight=LOCAL_SHARD_WEIGHT)
    version = rules_version()
    suite_findings = options.pop("suite_findings", None)
    release = options.get("release_rows", False)

    def inputs(shard: list[Candidate]) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        counties = {c.county_code for c in shard}
        prev = None if previous is None else previous[previous["county_code"].isin(counties)]
        found = None
        if suite_findings is not None:
            sids = {submission_id(c.kind, c.county_code, c.period, c.sha256, version) for c in shard}
            found = suite_findings[suite_findings["submission_id"].isin(sids)]
        return prev, found

    futures = []
    for shard in shards[1:]:
        prev, found = inputs(shard)
        future = readpool.submit_judging(
            n - 1, _judge_shard, version, kind, shard, prev, known_counties, suite_findings=found, **options
        )
        futures.append((shard, prev, found, future))
    prev, found = inputs(shards[0])
    parts = [judge_batch(kind, shards[0], prev, known_counties, suite_findings=found, **options)]
    for shard, prev, found, future in futures:
        part = None
        if future is not None:
            try:
                part = future.result()
            except (BrokenProcessPool, _OtherRules) as exc:  # a worker died, or read other suites
                log.warning(
                    "judging process unusable (%s): judging its %d %s files here", exc, len(shard), kind
                )
                readpool.reset_judging()
        if part is None:
            part = judge_batch(kind, shard, prev, known_counties, suite_findings=found, **options)
        elif release:
            for cand in shard:  # the worker judged a copy: drop this process's rows too
                cand.parsed.release_rows()
        parts.append(part)
    return _merge(parts, candidates, version)


class _OtherRules(RuntimeError):
    """A judging process read other suites than this one (they changed on disk meanwhile)."""


def _judge_shard(version: str, *args, **kwargs) -> Judgement:  # runs in a judging process
    """:func:`judge_batch`, refused if this process's rules are not ``version`` (the caller's)."""
    if rules_version() != version:
        raise _OtherRules(f"the judging process has rules {rules_version()}, not {version}")
    return judge_batch(*args, **kwargs)


def _county_shards(candidates: list[Candidate], n: int, first_weight: float = 1.0) -> list[list[Candidate]]:
    """``candidates`` in ``n`` shards of whole counties, each shard keeping the candidates' order.
    The shards get about as many rows each, except the first, which gets ``first_weight`` times
    as many as each of the others."""
    rows: dict[str | None, int] = {}
    for cand in candidates:
        rows[cand.county_code] = rows.get(cand.county_code, 0) + cand.parsed.n_rows
    total = sum(rows.values())
    weights = first_weight + (n - 1)
    shard_of: dict[str | None, int] = {}
    done, shard = 0, 0
    for county in sorted(rows, key=lambda c: (c is None, c or "")):
        shard_of[county] = shard
        done += rows[county]
        if shard < n - 1 and done >= total * (first_weight + shard) / weights:
            shard += 1
    shards: list[list[Candidate]] = [[] for _ in range(n)]
    for cand in candidates:
        shards[shard_of[cand.county_code]].append(cand)
    return [s for s in shards if s]


def _merge(parts: list[Judgement], candidates: list[Candidate], version: str) -> Judgement:
    """One judgement from the shards' (see :func:`judge_in_shards` for the order)."""
    position: dict[str, int] = {}
    for cand in candidates:
        position.setdefault(
            submission_id(cand.kind, cand.county_code, cand.period, cand.sha256, version), len(position)
        )

    def cat(frames: list[pd.DataFrame]) -> pd.DataFrame:
        frames = [f for f in frames if len(f)] or frames[:1]
        # A column that is all empty in one shard can come out as object where another shard's
        # is typed (text): give it the typed dtype, as one batch would have.
        for name in frames[0].columns:
            typed = [f[name].dtype for f in frames if f[name].dtype != object]
            if typed and len(typed) < len(frames):
                frames = [f if f[name].dtype != object else f.astype({name: typed[0]}) for f in frames]
        return pd.concat(frames, ignore_index=True)

    submissions = cat([p.submissions for p in parts])
    order = np.argsort(submissions["submission_id"].map(position).to_numpy(dtype="int64"), kind="stable")
    return Judgement(
        submissions=submissions.iloc[order].reset_index(drop=True),
        facts=cat([p.facts for p in parts]),
        issues=cat([p.issues for p in parts]),
    )


def prevalidate(kind: str, candidates: list[Candidate]) -> pd.DataFrame:
    """The suite's findings for every readable candidate of several batches, in one GX call.

    Pass the result to :func:`judge_batch` as ``suite_findings`` for each smaller batch. The
    findings are keyed by submission id, which carries the rules version."""
    version = rules_version()
    items, seen = [], set()
    for cand in candidates:
        sid = submission_id(cand.kind, cand.county_code, cand.period, cand.sha256, version)
        if sid in seen or cand.parsed.refusal is not None:
            continue
        seen.add(sid)
        items.append((sid, cand.parsed))
    if not items:
        return empty_findings()
    raw, factors = concat_returns(kind, items)
    typed, _ = normalise_frame(kind, raw, factors)
    return suite_findings_of(kind, typed, raw=raw, unit_factors=factors)


def judge_file(
    content: bytes,
    file_name: str,
    county_code: str | None = None,
    period: str | None = None,
    previous: pd.DataFrame | None = None,
    kind: str | None = None,
    known_counties: Iterable[str] | None = None,
    received_at: datetime | None = None,
    due_day: int = 5,
    tz: str = "Asia/Shanghai",
    engine: str | None = None,
    parsed: ParsedReturn | None = None,
) -> Judgement:
    """The clerk's pre-check (``gaibao check``): judge one file as the nightly run would.

    ``engine`` evaluates the suite: ``"gx"`` or ``"pandas"`` (the same suite files read by
    ``tasks.validate.run_suite_pandas``, proven identical by the tests); by default GX when it
    is already imported in this process, else pandas, sparing a clerk GX's 2–3 s import.

    County and period default to the file's own (the first value of its columns; the period
    also from the file name), known counties to the bundled division list. A workbook carrying
    both returns gives the one of ``kind`` (else its first sheet's): :func:`judge_file_returns`
    judges every return of a file. ``parsed``: the file already read by
    ``tasks.read.read_return`` (the portal reads it once for both).
    """
    return judge_file_returns(
        content,
        file_name,
        county_code=county_code,
        period=period,
        previous=previous,
        kind=kind,
        known_counties=known_counties,
        received_at=received_at,
        due_day=due_day,
        tz=tz,
        engine=engine,
        parsed=parsed,
    )[0]


def judge_file_returns(
    content: bytes,
    file_name: str,
    county_code: str | None = None,
    period: str | None = None,
    previous: pd.DataFrame | None = None,
    kind: str | None = None,
    known_counties: Iterable[str] | None = None,
    received_at: datetime | None = None,
    due_day: int = 5,
    tz: str = "Asia/Shanghai",
    engine: str | None = None,
    parsed: ParsedReturn | None = None,
) -> list[Judgement]:
    """:func:`judge_file` for every return the file carries (one; two for a workbook with a
    sheet named 进展 and one named 资金), each judged on its own, in the order of
    ``ParsedReturn.every_return``. County and period not given are taken from the first return
    that has rows, for all of them; ``previous`` (rows of one kind) applies to the first only."""
    from tasks.read import read_return

    first = parsed if parsed is not None else read_return(content, file_name, kind=kind)
    returns = first.every_return
    for one in returns:
        rows = one.rows if one.refusal is None else None
        if rows is None or not len(rows):
            continue
        if county_code is None and "county_code" in rows.columns:
            county_code = _first_value(rows["county_code"])
            county_code = (
                county_code.translate({0xFF10 + i: 0x30 + i for i in range(10)}) if county_code else None
            )
        if period is None and "period" in rows.columns:
            period = parse_period(_first_value(rows["period"]))
    if known_counties is None:
        from gaibao.divisions import bundled_divisions

        known_counties = bundled_divisions()["county_code"].astype(str)
    known = set(known_counties)
    if engine is None:
        engine = "gx" if "great_expectations" in sys.modules else "pandas"
    sha = hashlib.sha256(content).hexdigest()
    received_at = received_at or datetime.now(UTC)
    out = []
    file_kinds = ",".join(sorted({r.kind or "" for r in returns})) if len(returns) > 1 else None
    for one in returns:
        this_kind = kind if one is first and kind else one.kind or kind or "progress"
        this_period = period if period is not None or this_kind == "plan" else parse_period(file_name)
        candidate = Candidate(
            kind=this_kind,
            county_code=county_code,
            period=this_period,
            file_name=file_name,
            sha256=sha,
            source="check",
            received_at=received_at,
            parsed=one,
            file_kinds=file_kinds,
        )
        before = previous if one is first else None  # ``previous`` holds the rows of one kind
        judged = judge_batch(this_kind, [candidate], before, known, due_day=due_day, tz=tz, engine=engine)
        judged.sheet_name = one.sheet_name
        out.append(judged)
    return out


def _not_null_rules(kind: str) -> frozenset[str]:
    from tasks.validate import load_suite

    return frozenset(
        e["meta"]["rule"]
        for e in load_suite(kind)["expectations"]
        if e["type"] == "expect_column_values_to_not_be_null"
    )


def _drop_missing_where_mistyped(kind: str, findings: pd.DataFrame, type_findings: pd.DataFrame) -> pd.DataFrame:
    """A cell whose value is not a number or date (``TYPE_*``, naming the value) was filled in:
    the suite's "「…」未填写" finding for that same cell would contradict it, so it is dropped
    (issue 16: NaN, Infinity or "abc" were also called 未填写)."""
    if type_findings.empty or findings.empty:
        return findings
    findings = findings.reset_index(drop=True)
    candidates = findings[findings["rule"].isin(_not_null_rules(kind)) & findings["row_number"].notna()]
    if candidates.empty:
        return findings
    mistyped = set(
        zip(
            type_findings["submission_id"].astype(str),
            type_findings["row_number"].astype("int64"),
            type_findings["column_name"].astype(str),
            strict=True,
        )
    )
    drop = [
        (str(s), int(r), str(c)) in mistyped
        for s, r, c in zip(
            candidates["submission_id"], candidates["row_number"], candidates["column_name"], strict=True
        )
    ]
    return findings.drop(index=candidates.index[drop])


# --------------------------------------------------------------------------------------------
# File-level rules


def _submission_record(sid: str, cand: Candidate, version: str, due_day: int, tz: str) -> dict:
    return {
        "submission_id": sid,
        "kind": cand.kind,
        "county_code": cand.county_code,
        "period": cand.period,
        "source": cand.source,
        "file_name": cand.file_name,
        "sha256": cand.sha256,
        "received_at": cand.received_at,
        "status": "accepted",
        "reason": None,
        "refusal_code": None,
        "rows_total": cand.parsed.n_rows,
        "rows_accepted": 0,
        "rows_rejected": 0,
        "rules_version": version,
        "is_late": is_late(cand.received_at, cand.period, due_day, tz),
        "unknown_columns": json.dumps(list(cand.parsed.unknown_columns), ensure_ascii=False),
        "loaded_at": None,
        "file_mtime": cand.file_mtime,
        "file_kinds": cand.file_kinds,
    }


def _fill_from_file(subs: dict[str, dict], typed: pd.DataFrame) -> None:
    """A submission whose source did not name its county or period takes the file's own."""
    for column in ("county_code", "period"):
        missing = [sid for sid, record in subs.items() if record[column] is None]
        if not missing:
            continue
        values = typed.loc[typed[SUBMISSION_ID].isin(missing), [SUBMISSION_ID, column]].dropna()
        first = values.drop_duplicates(SUBMISSION_ID).set_index(SUBMISSION_ID)[column].to_dict()
        for sid in missing:
            subs[sid][column] = first.get(sid)


def _file_refusals(
    kind: str, typed: pd.DataFrame, expected: dict[str, tuple[str | None, str | None]], known: set[str]
) -> dict[str, tuple[str, str, str | None, str | None]]:
    """WRONG_PERIOD, WRONG_COUNTY and UNKNOWN_COUNTY per submission (first that applies)."""
    out: dict[str, tuple[str, str, str | None, str | None]] = {}
    kind_messages = {
        code: plain_message(kind, code) for code in ("WRONG_PERIOD", "WRONG_COUNTY", "UNKNOWN_COUNTY")
    }
    periods = typed[[SUBMISSION_ID, "period"]].dropna().drop_duplicates()
    counties = typed[[SUBMISSION_ID, "county_code"]].dropna().drop_duplicates()
    found_periods = periods.groupby(SUBMISSION_ID)["period"].agg(list).to_dict()
    found_counties = counties.groupby(SUBMISSION_ID)["county_code"].agg(list).to_dict()
    for sid, (county, period) in expected.items():
        wrong_periods = [p for p in found_periods.get(sid, []) if period is not None and p != period]
        if wrong_periods:
            found = "、".join(sorted(wrong_periods))
            out[sid] = (
                "WRONG_PERIOD",
                kind_messages["WRONG_PERIOD"].format(found=found, expected=period),
                "period",
                found,
            )
            continue
        codes = found_counties.get(sid, [])
        wrong_codes = [c for c in codes if county is not None and c != county]
        if wrong_codes:
            found = "、".join(sorted(wrong_codes))
            message = kind_messages["WRONG_COUNTY"].format(found=found, expected=county)
            out[sid] = ("WRONG_COUNTY", message, "county_code", found)
            continue
        unknown = sorted({c for c in [*codes, county] if c is not None and c not in known})
        if unknown:
            found = "、".join(unknown)
            out[sid] = (
                "UNKNOWN_COUNTY",
                kind_messages["UNKNOWN_COUNTY"].format(found=found),
                "county_code",
                found,
            )
    return out


def _total_mismatch(kind: str, items: list[tuple[str, Candidate]], typed: pd.DataFrame) -> pd.DataFrame:
    """W TOTAL_MISMATCH: a 合计 row's figure against the sum of the file's rows (|diff| > 0.01)."""
    columns = contract.SUMMABLE_COLUMNS.get(kind, ())
    with_totals = [(sid, c.parsed) for sid, c in items if len(c.parsed.total_grid)]
    if not columns or not with_totals:
        return empty_findings()
    totals_raw, factors = concat_returns(kind, [(sid, _totals_as_rows(p)) for sid, p in with_totals])
    totals, _ = normalise_frame(kind, totals_raw, factors)
    totals = totals.drop_duplicates(SUBMISSION_ID, keep="last").set_index(SUBMISSION_ID)
    sums = typed.groupby(SUBMISSION_ID)[list(columns)].sum(min_count=1)
    template = plain_message(kind, "TOTAL_MISMATCH")
    rows = []
    raw_totals = totals_raw.drop_duplicates(SUBMISSION_ID, keep="last").set_index(SUBMISSION_ID)
    for column in columns:
        stated = totals[column]
        summed = sums[column].reindex(stated.index).fillna(0.0)
        diff = stated - summed
        off = stated.notna() & (diff.abs() > 0.01)
        for sid in stated.index[off.to_numpy()]:
            label = contract.label_zh(kind, column)
            written = raw_totals.at[sid, column]
            message = f"第{int(totals.at[sid, ROW_NUMBER])}行" + template.format(
                column=label, value=written, sum=_short(summed[sid]), diff=_short(diff[sid])
            )
            rows.append(
                {
                    "submission_id": sid,
                    "row_number": pd.NA,
                    "project_id": None,
                    "rule": "TOTAL_MISMATCH",
                    "severity": "warning",
                    "column_name": column,
                    "value": written,
                    "message": message,
                    "is_explained": False,
                }
            )
    return pd.DataFrame(rows, columns=FINDING_COLUMNS) if rows else empty_findings()


# --------------------------------------------------------------------------------------------
# Helpers


def _control_findings(kind: str, items: list[tuple[str, Candidate]]) -> pd.DataFrame:
    """W CONTROL_CHARS_REMOVED / CONTROL_CHARS_REFUSED: a cell held control characters (NUL,
    ESC, ...), deleted from a free-text column, shown as \\xHH (and so invalid) in any other:
    the county learns of each cell in its receipt (``tasks.read``, "Control characters")."""
    out = []
    for rule, field in (("CONTROL_CHARS_REMOVED", "control_chars"), ("CONTROL_CHARS_REFUSED", "control_escaped")):
        template = None
        for sid, cand in items:
            for row, name, count in getattr(cand.parsed, field, ()):
                template = template or plain_message(kind, rule)
                label = contract.label_zh(kind, name)
                out.append(
                    {
                        "submission_id": sid,
                        "row_number": row,
                        "project_id": None,
                        "rule": rule,
                        "severity": "warning",
                        "column_name": name,
                        "value": None,  # the cell may be personal data (填报人, 联系电话)
                        "message": template.format(row=row, column=label, count=count),
                        "is_explained": False,
                    }
                )
    return pd.DataFrame(out, columns=FINDING_COLUMNS)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else empty_findings()


def _totals_as_rows(parsed: ParsedReturn) -> ParsedReturn:
    """A file's 合计 rows as if they were its data rows (to type them like the data)."""
    return ParsedReturn(kind=parsed.kind, grid=parsed.total_grid, unit_factors=parsed.unit_factors)


def _candidate(ordered: list[tuple[str, Candidate]], sid: str) -> Candidate:
    return next(c for s, c in ordered if s == sid)


def _row_mask(typed: pd.DataFrame, pairs: set[tuple[str, int]]) -> np.ndarray:
    if not pairs or typed.empty:
        return np.zeros(len(typed), dtype=bool)
    bad = pd.DataFrame(list(pairs), columns=[SUBMISSION_ID, ROW_NUMBER])
    bad[SUBMISSION_ID] = bad[SUBMISSION_ID].astype(str)
    bad["_bad"] = True
    keys = typed[[SUBMISSION_ID, ROW_NUMBER]].astype({SUBMISSION_ID: str, ROW_NUMBER: "int64"})
    merged = keys.merge(bad, on=[SUBMISSION_ID, ROW_NUMBER], how="left")
    return merged["_bad"].fillna(False).to_numpy(dtype=bool)


def _issues(findings: pd.DataFrame, submissions: pd.DataFrame, kind: str) -> pd.DataFrame:
    where = submissions.set_index("submission_id")[["county_code", "period"]]
    issues = findings.copy()
    issues["kind"] = kind
    issues["county_code"] = issues["submission_id"].map(where["county_code"])
    issues["period"] = issues["submission_id"].map(where["period"])
    issues["row_number"] = issues["row_number"].astype("Int64")
    issues["is_explained"] = issues["is_explained"].astype(bool)
    return issues[ISSUE_COLUMNS].reset_index(drop=True)


def _first_value(series: pd.Series) -> str | None:
    values = series.dropna()
    values = values[values.astype(str).str.strip() != ""]
    return str(values.iloc[0]).strip() if len(values) else None


def _short(number: float) -> str:
    return f"{number:.2f}".rstrip("0").rstrip(".")


# --------------------------------------------------------------------------------------------
# A resubmission that drops projects the version it replaces had accepted


def resubmission_drops(
    kind: str, judgement: Judgement, current: pd.DataFrame, current_projects: pd.DataFrame
) -> Judgement:
    """Warn the county, project by project, when a resubmission replaces an accepted return of
    the same period whose accepted projects it does not accept: absent from the new file
    (``RESUBMISSION_DROPS_PROJECT``, file-level) or in a row the new file has rejected
    (``RESUBMISSION_REJECTS_PROJECT``, on that row). Without this a return with 111 of 112 rows
    bad replaced 112 accepted projects with one, silently.

    ``current``: the warehouse's accepted submissions of the batch's (county, period) keys
    (``submission_id, county_code, period, file_name, received_at, sha256``);
    ``current_projects``: their accepted rows (``county_code, period, project_id, school_name``).
    Several accepted versions of one key in the batch are compared in received order, each with
    the one it replaces. Only progress returns list projects; other kinds are returned as given.
    """
    subs = judgement.submissions
    if kind != "progress" or subs.empty:
        return judgement
    accepted = subs[subs["status"] == "accepted"]
    if accepted.empty:
        return judgement
    facts = judgement.facts
    new_projects: dict[str, dict[str, object]] = {}
    if len(facts):
        names = facts["school_name"] if "school_name" in facts.columns else pd.Series(None, index=facts.index)
        for sid, pid, school in zip(facts[SUBMISSION_ID], facts["project_id"], names, strict=True):
            if pid is not None and not pd.isna(pid):
                new_projects.setdefault(str(sid), {})[str(pid)] = school
    issues = judgement.issues
    rejected_at: dict[tuple[str, str], int] = {}
    errors = issues[
        (issues["severity"] == "error") & issues["row_number"].notna() & issues["project_id"].notna()
    ]
    for sid, pid, row in zip(
        errors["submission_id"], errors["project_id"], errors["row_number"], strict=True
    ):
        key = (str(sid), str(pid))
        rejected_at[key] = min(int(row), rejected_at.get(key, int(row)))
    old_projects: dict[tuple[str, str], dict[str, object]] = {}
    for c, p, pid, school in current_projects[
        ["county_code", "period", "project_id", "school_name"]
    ].itertuples(index=False, name=None):
        old_projects.setdefault((str(c), str(p)), {})[str(pid)] = school
    now_by_key = {(str(r.county_code), str(r.period)): r for r in current.itertuples(index=False)}

    def received(value: object) -> pd.Timestamp:
        ts = pd.Timestamp(value)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    rows: list[dict[str, object]] = []
    ordered = accepted.assign(received_utc=accepted["received_at"].map(received)).sort_values(
        ["received_utc", "submission_id"]
    )
    for (county, period), group in ordered.groupby(["county_code", "period"], sort=False):
        chain: list[tuple[str, dict[str, object]]] = []  # (file name, {project: school}) in order
        now = now_by_key.get((str(county), str(period)))
        for r in group.itertuples(index=False):
            if now is not None and (r.submission_id == now.submission_id or r.sha256 == now.sha256):
                continue  # the same bytes again (a re-judge): they replace nothing
            if now is not None and not chain and r.received_utc <= received(now.received_at):
                continue  # older than the accepted return: it will not replace it
            if now is not None and not chain:
                chain.append((str(now.file_name), old_projects.get((str(county), str(period)), {})))
            kept = new_projects.get(str(r.submission_id), {})
            if chain:
                previous_file, previous = chain[-1]
                for pid, school in previous.items():
                    if pid in kept:
                        continue
                    row = rejected_at.get((str(r.submission_id), pid))
                    rule = "RESUBMISSION_DROPS_PROJECT" if row is None else "RESUBMISSION_REJECTS_PROJECT"
                    message = plain_message(kind, rule).format(
                        project_id=pid,
                        school_name=school if isinstance(school, str) and school else "学校未知",
                        previous_file=previous_file,
                        row=row,
                    )
                    rows.append(
                        {
                            "submission_id": r.submission_id,
                            "row_number": row,
                            "project_id": pid,
                            "rule": rule,
                            "severity": "warning",
                            "column_name": "project_id",
                            "value": pid,
                            "message": message,
                            "is_explained": False,
                        }
                    )
            chain.append((str(r.file_name), kept))
    if not rows:
        return judgement
    found = pd.DataFrame(rows, columns=FINDING_COLUMNS)
    found["row_number"] = found["row_number"].astype("Int64")
    added = _issues(found, subs, kind)
    return Judgement(
        submissions=subs,
        facts=judgement.facts,
        issues=pd.concat([judgement.issues, added], ignore_index=True),
    )
