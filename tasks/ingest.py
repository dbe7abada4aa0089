"""Plain functions that organise one ingest run: which counties, which period, which files.

No Prefect here: `tasks/steps.py` wraps these as tasks and `flows/` wires them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

import pandas as pd

from gaibao.settings import Settings

log = logging.getLogger(__name__)


def default_period(now: datetime | None = None, tz: str = "Asia/Shanghai") -> str:
    """The previous calendar month in ``tz``: the period a nightly run collects."""
    local = (now or datetime.now(ZoneInfo(tz))).astimezone(ZoneInfo(tz))
    year, month = (local.year, local.month - 1) if local.month > 1 else (local.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def period_range(start: str, end: str) -> list[str]:
    """Every period from ``start`` to ``end`` inclusive, in order."""
    first, last = pd.Period(start, "M"), pd.Period(end, "M")
    if last < first:
        raise ValueError(f"end {end} is before start {start}")
    return [str(p) for p in pd.period_range(first, last, freq="M")]


def chunked(items: Sequence[str], max_chunks: int = 100, min_size: int = 1) -> list[list[str]]:
    """Split ``items`` into at most ``max_chunks`` contiguous chunks of near-equal size.

    Prefect costs ~9 ms of the flow's CPU per task run, and ~50 ms of its server's (measured
    with the temporary server, 100 mapped tasks): a task per county is minutes of CPU at
    national scale, so the fetch-and-read step maps over chunks of counties instead.
    """
    if not items:
        return []
    n = max(1, min(max_chunks, len(items) // max(1, min_size)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return [c for c in out if c]


# A run's fetch-and-read chunks: at least 25 counties each (a province of ~100 counties: 4
# chunks, one per task thread), at most 48 (a national month: ~60 counties, ~120 files each).
# 48 rather than 100 spares ~3 CPU-s of Prefect bookkeeping at national scale, on a step
# whose two cores are busy reading; 48 chunks still keep 4 task threads or 2 Dask workers fed.
FETCH_CHUNKS = 48
FETCH_CHUNK_MIN_COUNTIES = 25


@dataclass
class CountyOutcome:
    """What one county's part of a run came to (one row of the run summary)."""

    county_code: str
    files_seen: int = 0
    accepted: int = 0
    refused: int = 0
    duplicates: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    unreachable: str | None = None


@dataclass
class RunSummary:
    """The outcome of an ingest or backfill run, returned by the flows and shown by the CLI."""

    flow: str
    periods: list[str]
    counties: dict[str, CountyOutcome] = field(default_factory=dict)
    by_period: dict[str, dict[str, int]] = field(default_factory=dict)
    # (county_code, period) -> what the data engineers are told: source, last error, attempts
    unreachable_sources: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)

    def county(self, code: str) -> CountyOutcome:
        if code not in self.counties:
            self.counties[code] = CountyOutcome(code)
        return self.counties[code]

    @property
    def unreachable(self) -> list[str]:
        return sorted(c for c, o in self.counties.items() if o.unreachable)

    def totals(self) -> dict[str, int]:
        keys = ("files_seen", "accepted", "refused", "duplicates", "rows_accepted", "rows_rejected")
        return {k: sum(getattr(o, k) for o in self.counties.values()) for k in keys}

    def table(self) -> list[dict[str, object]]:
        """Per county: files seen, accepted, refused, rows accepted and rejected (the run artifact)."""
        return [
            {
                "county_code": o.county_code,
                "files_seen": o.files_seen,
                "accepted": o.accepted,
                "refused": o.refused,
                "duplicates": o.duplicates,
                "rows_accepted": o.rows_accepted,
                "rows_rejected": o.rows_rejected,
                "unreachable": o.unreachable or "",
            }
            for o in sorted(self.counties.values(), key=lambda o: o.county_code)
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "flow": self.flow,
            "periods": self.periods,
            "totals": self.totals(),
            "unreachable": self.unreachable,
            "by_period": self.by_period,
            "counties": self.table(),
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, indent=2)


def merge_counties(*groups: Iterable[str]) -> list[str]:
    return sorted({c for g in groups for c in g})


@dataclass
class Fetched:
    """One received payload, archived and read (``parsed`` is None when it was a known duplicate).

    Its bytes are not kept: once archived (under ``sha256``) and read they are never needed again,
    and a national month of them (about 200 MB) would otherwise ride along to the load (and, on
    Dask, back over the network)."""

    county_code: str
    period: str
    kind: str | None  # as the source named it (None: the reader detects it)
    file_name: str
    source: str
    received_at: datetime  # when gaibao first read these bytes from this county
    sha256: str
    parsed: object | None = None  # tasks.read.ParsedReturn
    duplicate_of: str | None = None
    file_mtime: datetime | None = None  # the time the file claims

    @classmethod
    def of(
        cls,
        received,
        sha256: str,
        *,
        duplicate_of: str | None = None,
        first_seen: datetime | None = None,
    ) -> Fetched:
        """From a ``tasks.sources.Received``, without its bytes. ``first_seen``: when these bytes
        were first received from this county, if before (a rerun keeps that time)."""
        return cls(
            county_code=received.county_code,
            period=received.period,
            kind=received.kind,
            file_name=received.file_name,
            source=received.source,
            received_at=first_seen if first_seen is not None else received.received_at,
            sha256=sha256,
            duplicate_of=duplicate_of,
            file_mtime=getattr(received, "file_mtime", None),
        )


@dataclass
class ChunkResult:
    """What the fetch-and-read step returns for one chunk of counties."""

    fetched: list[Fetched]
    unreachable: dict[str, str]  # county_code -> reason (Chinese)
    seen: list[str]  # counties asked for
    # county_code -> {"source", "error" (the last attempt's, English), "attempts"}: for the alert
    unreachable_detail: dict[str, dict[str, object]] = field(default_factory=dict)


def fetch_and_read(
    counties: Sequence[str],
    period: str,
    settings: Settings,
    known: frozenset[tuple[str, str]] = frozenset(),
    first_seen: Mapping[tuple[str, str], datetime] | None = None,
) -> ChunkResult:
    """Fetch a chunk of counties' returns for ``period``, archive every payload, read the new ones.

    ``known`` holds (county_code, sha256) pairs already judged under the current rules: such
    payloads are archived (a no-op, content-addressed) but not read again. ``first_seen`` gives
    the ``received_at`` of (county_code, sha256) pairs received before, under any rules: bytes
    received again keep the time they were first received (``RunPlan.first_seen``).
    """
    first_seen = first_seen or {}
    from tasks.sources import fetch_all, load_source_config
    from warehouse.archive import Archive

    archive = Archive.from_settings(settings)
    config = load_source_config(settings.sources)
    outcomes = fetch_all(list(counties), period, settings, config)
    fetched: list[Fetched] = []
    unreachable: dict[str, str] = {}
    fresh: list[Fetched] = []
    received = [rec for outcome in outcomes for rec in outcome.received]
    shas = archive.put_many([rec.content for rec in received])
    detail: dict[str, dict[str, object]] = {}
    for outcome in outcomes:
        if outcome.error is not None:
            unreachable[outcome.county_code] = str(getattr(outcome.error, "message_zh", outcome.error))
            detail[outcome.county_code] = {
                "source": _describe_source(outcome.county_code, settings, config),
                "error": str(getattr(outcome.error, "detail", outcome.error)),
                "attempts": outcome.attempts,
            }
    contents: list[bytes] = []
    for rec, sha in zip(received, shas, strict=True):
        earlier = first_seen.get((rec.county_code, sha))
        if (rec.county_code, sha) in known:
            fetched.append(Fetched.of(rec, sha, duplicate_of=sha, first_seen=earlier))
            continue
        item = Fetched.of(rec, sha, first_seen=earlier)
        fetched.append(item)
        fresh.append(item)
        contents.append(rec.content)
    del received, outcomes  # the bytes are archived: let them go before reading
    _parse(fresh, contents, settings)
    return ChunkResult(fetched=fetched, unreachable=unreachable, seen=list(counties), unreachable_detail=detail)


def _describe_source(county_code: str, settings: Settings, config) -> str:
    """The county's source as its ``describe`` says (never a secret), or why it has none."""
    from tasks.sources import source_for

    try:
        return source_for(county_code, settings, config).describe()
    except Exception as exc:  # noqa: BLE001 - a source that cannot be built is described by its error
        return f"(no source: {type(exc).__name__})"


def _parse(fetched: list[Fetched], contents: list[bytes], settings: Settings) -> None:
    """Read every payload (``contents[i]`` is ``fetched[i]``'s bytes; in the reader processes)
    into its ``parsed``."""
    from tasks.readpool import read_many

    items = [(content, f.file_name, f.kind) for f, content in zip(fetched, contents, strict=True)]
    contents.clear()  # ``items`` holds the only references now
    for item, result in zip(fetched, read_many(items, settings.read_processes), strict=True):
        item.parsed = result


def seed_divisions(warehouse) -> None:
    """Load the bundled Anhui division codes when the warehouse has none yet."""
    from gaibao.divisions import bundled_divisions

    count = warehouse.query("SELECT COUNT(*) AS n FROM ref_division")["n"].iloc[0]
    if int(count) == 0:  # checked again under the lock: another run may be seeding right now
        warehouse.load_divisions(bundled_divisions(), only_if_empty=True)


@dataclass
class RunPlan:
    period: str
    counties: list[str]
    chunks: list[list[str]]
    known: frozenset[tuple[str, str]]  # (county_code, sha256) already judged under today's rules
    archived: list[dict[str, object]]  # force: earlier submissions to re-judge from the archive
    rules_version: str
    # (county_code, sha256) -> when those bytes were first received, under any rules
    first_seen: dict[tuple[str, str], datetime] = field(default_factory=dict)


def plan_run(
    warehouse, settings: Settings, period: str, counties: Sequence[str] | None, force: bool
) -> RunPlan:
    """Decide the counties of a run and what is already known."""
    from tasks.sources import list_inbox_counties, load_source_config
    from tasks.validate import record_rules_in_use, rules_version

    version = rules_version()
    record_rules_in_use(warehouse.engine)  # the text behind the version, for `gaibao rules show`
    if counties:
        chosen = sorted(set(counties))
        _refuse_unknown_counties(warehouse, settings, chosen)
    else:
        config = load_source_config(settings.sources)
        known_counties = warehouse.query(
            "SELECT county_code FROM ref_plan UNION SELECT county_code FROM submission"
        )["county_code"].tolist()
        chosen = merge_counties(known_counties, list_inbox_counties(settings), config.keys())
    subs = warehouse.query(
        "SELECT submission_id, kind, county_code, period, source, file_name, sha256, received_at, "
        "status, rules_version, file_mtime FROM submission WHERE period = :period",
        {"period": period},
    )
    subs = subs[subs["county_code"].isin(chosen)]
    if force:
        known: frozenset[tuple[str, str]] = frozenset()
        archived = (
            subs.sort_values("received_at")
            .drop_duplicates(["county_code", "sha256"], keep="first")
            .to_dict("records")
        )
    else:
        current = subs[subs["rules_version"] == version]
        known = frozenset(zip(current["county_code"], current["sha256"], strict=True))
        archived = []
    chunks = chunked(chosen, max_chunks=FETCH_CHUNKS, min_size=FETCH_CHUNK_MIN_COUNTIES)
    return RunPlan(period, chosen, chunks, known, archived, version, _first_seen(subs))


def _first_seen(subs: pd.DataFrame) -> dict[tuple[str, str], datetime]:
    """(county_code, sha256) -> the earliest ``received_at`` the submissions record for them."""
    if subs.empty:
        return {}
    times = pd.to_datetime(subs["received_at"], utc=True, errors="coerce")
    frame = subs.assign(_rt=times).dropna(subset=["_rt"])
    earliest = frame.groupby(["county_code", "sha256"])["_rt"].min()
    return {(str(c), str(h)): ts.to_pydatetime() for (c, h), ts in earliest.items()}


def _refuse_unknown_counties(warehouse, settings: Settings, counties: Sequence[str]) -> None:
    """``gaibao.options.OptionError`` unless every county asked for is six digits and known (the
    division reference, the plan or the sources file): the flows' check of what the CLI checks."""
    from gaibao.options import check_counties
    from tasks.sources import load_source_config

    known = set(
        warehouse.query("SELECT county_code FROM ref_division UNION SELECT county_code FROM ref_plan")[
            "county_code"
        ].astype(str)
    )
    check_counties(list(counties), known | set(load_source_config(settings.sources).keys()))


# A run that may read at least this many counties' new returns starts its judging processes
# (tasks.judge.judge_in_shards) before fetching, so that their Great Expectations import
# (about 3 s each) overlaps the fetch. A national month has 2,850 counties; a province about 100,
# whose batch is too small to shard.
PRESTART_JUDGING_COUNTIES = 500


def prestart_judging(settings: Settings, plans: Sequence[RunPlan]) -> bool:
    """Start the judging processes now if the run looks large enough to judge in shards."""
    from tasks import readpool

    new = sum(len(set(plan.counties) - {county for county, _ in plan.known}) for plan in plans)
    workers = readpool.judging_processes(settings.read_processes) - 1
    if new < PRESTART_JUDGING_COUNTIES or workers < 1:
        return False
    readpool.start_judging(workers)
    return True


@dataclass
class Judged:
    """The judged returns of one period, per kind, ready to load."""

    period: str
    by_kind: dict[str, object]  # kind -> tasks.judge.Judgement
    duplicates: list[Fetched]
    unreachable: dict[str, str]
    unreachable_detail: dict[str, dict[str, object]] = field(default_factory=dict)


@dataclass
class Gathered:
    """One period's new payloads as judging candidates, per kind."""

    period: str
    by_kind: dict[str, list]  # kind -> list[tasks.judge.Candidate]
    duplicates: list[Fetched]
    unreachable: dict[str, str]
    unreachable_detail: dict[str, dict[str, object]] = field(default_factory=dict)


def _reread_archived(settings: Settings, archived: list[dict[str, object]], period: str) -> list[Fetched]:
    """Rebuild received payloads from the archive (backfill --force re-judges them with today's rules)."""
    from tasks.sources import Received
    from warehouse.archive import Archive

    archive = Archive.from_settings(settings)
    out: list[Fetched] = []
    contents: list[bytes] = []
    for row in archived:
        content = archive.get(str(row["sha256"]))
        received_at = pd.Timestamp(row["received_at"])
        if received_at.tzinfo is None:
            received_at = received_at.tz_localize("UTC")
        mtime = pd.Timestamp(row["file_mtime"]) if row.get("file_mtime") is not None else None
        rec = Received(
            county_code=str(row["county_code"]),
            period=period,
            kind=str(row["kind"]) if row["kind"] in ("progress", "funding") else None,
            file_name=str(row["file_name"]),
            content=content,
            source=str(row["source"]),
            received_at=received_at.to_pydatetime(),
            file_mtime=None if mtime is None or pd.isna(mtime) else mtime.to_pydatetime(),
        )
        out.append(Fetched.of(rec, str(row["sha256"])))
        contents.append(content)
    _parse(out, contents, settings)
    return out


def gather_period(
    settings: Settings, period: str, chunks: list[ChunkResult], archived: list[dict[str, object]]
) -> Gathered:
    """Turn a period's fetched (and, with --force, archived) payloads into candidates: by county,
    each county's in received order."""
    from tasks.judge import Candidate

    fetched = [f for c in chunks for f in c.fetched]
    unreachable = {k: v for c in chunks for k, v in c.unreachable.items()}
    unreachable_detail = {k: v for c in chunks for k, v in getattr(c, "unreachable_detail", {}).items()}
    duplicates = [f for f in fetched if f.parsed is None]
    fresh = [f for f in fetched if f.parsed is not None]
    if archived:
        seen = {(f.county_code, f.sha256) for f in fresh}
        fresh += [
            f for f in _reread_archived(settings, archived, period) if (f.county_code, f.sha256) not in seen
        ]
    # County by county, each county's files in received order (the first of two identical files
    # is the one kept, a later file supersedes an earlier one). Grouped by county, the facts reach
    # the database in the order of its (county_code, period, project_id) index: measured on a
    # national month's COPY, median 10.9 s against 12.2 s in received order across counties.
    fresh.sort(key=lambda f: (f.county_code or "", f.received_at, f.file_name))
    by_kind: dict[str, list] = {}
    for f in fresh:
        kind = getattr(f.parsed, "kind", None) or f.kind or "progress"
        by_kind.setdefault(kind, []).append(
            Candidate(
                kind=kind,
                county_code=f.county_code,
                period=period,
                file_name=f.file_name,
                sha256=f.sha256,
                source=f.source,
                received_at=f.received_at,
                parsed=f.parsed,
                file_mtime=f.file_mtime,
            )
        )
    return Gathered(period, by_kind, duplicates, unreachable, unreachable_detail)


def prevalidate_periods(gathered: list[Gathered]) -> dict[str, pd.DataFrame]:
    """The suites' findings for every period's candidates: one GX call per kind for the whole run.

    GX costs about a second per call whatever its size, so a 24-month backfill validates once per
    kind instead of 48 times; the periods are then judged one by one in order with these findings.
    """
    from tasks.judge import prevalidate

    kinds = sorted({k for g in gathered for k in g.by_kind})
    return {kind: prevalidate(kind, [c for g in gathered for c in g.by_kind.get(kind, [])]) for kind in kinds}


def judge_period(
    warehouse, settings: Settings, gathered: Gathered, suite_findings: dict[str, pd.DataFrame] | None = None
) -> Judged:
    """Judge one period's candidates: one batch per return kind, against the warehouse as it is now."""
    from tasks.explained import apply_to_judgement as apply_online_explanations
    from tasks.judge import judge_in_shards

    known_counties = set(warehouse.query("SELECT county_code FROM ref_division")["county_code"])
    judgements = {}
    for kind, candidates in gathered.by_kind.items():
        counties = sorted({c.county_code for c in candidates})
        previous = warehouse.previous_rows(kind, gathered.period, counties)
        judgements[kind] = judge_in_shards(
            kind,
            candidates,
            previous,
            known_counties,
            processes=settings.read_processes,
            due_day=settings.due_day,
            tz=settings.timezone,
            suite_findings=(suite_findings or {}).get(kind),
            release_rows=True,  # each candidate is judged once: its rows need not stay twice in memory
        )
        judgements[kind] = _warn_dropped_by_resubmission(warehouse, kind, gathered.period, judgements[kind])
        apply_online_explanations(warehouse.engine, judgements[kind])  # the portal's 说明, as a 备注
    return Judged(
        gathered.period, judgements, gathered.duplicates, gathered.unreachable, gathered.unreachable_detail
    )


# Up to this many resubmitting counties, their accepted projects are read county by county;
# more (a rules change re-judging a whole month), the period's in one query.
_PER_COUNTY_READS = 200


def _warn_dropped_by_resubmission(warehouse, kind: str, period: str, judgement):
    """``tasks.judge.resubmission_drops`` with what the warehouse has accepted for the batch's
    counties this period (read only for counties whose accepted return this batch may replace)."""
    from tasks.judge import resubmission_drops

    subs = judgement.submissions
    if kind != "progress" or subs.empty or not (subs["status"] == "accepted").any():
        return judgement
    current = warehouse.query(
        "SELECT submission_id, county_code, period, file_name, received_at, sha256 FROM submission "
        "WHERE kind = :kind AND period = :period AND status = 'accepted'",
        {"kind": kind, "period": period},
    )
    batch = subs[subs["status"] == "accepted"]
    replaced = current[
        current["county_code"].isin(set(batch["county_code"]))
        & ~current["sha256"].isin(set(batch["sha256"]))
    ]
    counties = sorted(set(replaced["county_code"]))
    if not counties:
        projects = pd.DataFrame(columns=["county_code", "period", "project_id", "school_name"])
    elif len(counties) <= _PER_COUNTY_READS:
        sql = (
            "SELECT county_code, period, project_id, school_name FROM fact_progress "
            "WHERE period = :period AND county_code = :county"
        )
        projects = pd.concat(
            [warehouse.query(sql, {"period": period, "county": c}) for c in counties], ignore_index=True
        )
    else:
        projects = warehouse.query(
            "SELECT county_code, period, project_id, school_name FROM fact_progress WHERE period = :period",
            {"period": period},
        )
        projects = projects[projects["county_code"].isin(counties)]
    return resubmission_drops(kind, judgement, current[current["county_code"].isin(counties)], projects)


def load_waves(judgement) -> list[tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    """Split a kind's batch so that several accepted files of one county and period load in order.

    A resubmission received in the same run as the file it corrects: the older file loads first
    (wave 0) and the newer one supersedes it (wave 1), exactly as if they had come on two nights.
    Without such pairs there is one wave, loaded all or nothing.
    """
    subs = judgement.submissions
    if subs.empty:
        return [(subs, judgement.facts, judgement.issues)]
    subs = subs.sort_values("received_at", kind="stable")
    accepted = subs["status"] == "accepted"
    wave = pd.Series(0, index=subs.index)
    wave[accepted] = subs[accepted].groupby(["county_code", "period"]).cumcount()
    waves = []
    for number in sorted(wave.unique()):
        part = subs[wave == number]
        ids = set(part["submission_id"])
        waves.append(
            (
                part,
                judgement.facts[judgement.facts["submission_id"].isin(ids)],
                judgement.issues[judgement.issues["submission_id"].isin(ids)],
            )
        )
    return waves


def load_judged(warehouse, judged: Judged) -> dict[str, int]:
    """Load each kind's batch (each wave all or nothing) and count what went in."""
    counts = {"submissions": 0, "rows": 0}
    for kind, judgement in judged.by_kind.items():
        for subs, facts, issues in load_waves(judgement):
            warehouse.load_batch(subs, facts, issues, kind)
        counts["submissions"] += len(judgement.submissions)
        counts["rows"] += len(judgement.facts)
    return counts


def summarise_period(summary: RunSummary, plan: RunPlan, judged: Judged) -> None:
    """Fold one period's outcome into the run summary."""
    period_counts = {
        "files_seen": 0,
        "accepted": 0,
        "refused": 0,
        "duplicates": 0,
        "rows_accepted": 0,
        "rows_rejected": 0,
    }
    for county in plan.counties:
        summary.county(county)
    for county, reason in judged.unreachable.items():
        summary.county(county).unreachable = reason
        summary.unreachable_sources[(county, plan.period)] = {
            "reason": reason,
            **judged.unreachable_detail.get(county, {}),
        }
    for dup in judged.duplicates:
        o = summary.county(dup.county_code)
        o.files_seen += 1
        o.duplicates += 1
        period_counts["files_seen"] += 1
        period_counts["duplicates"] += 1
    for judgement in judged.by_kind.values():
        for row in judgement.submissions.itertuples(index=False):
            o = summary.county(row.county_code)
            o.files_seen += 1
            period_counts["files_seen"] += 1
            if row.status == "refused":
                o.refused += 1
                period_counts["refused"] += 1
            else:
                o.accepted += 1
                period_counts["accepted"] += 1
            o.rows_accepted += int(row.rows_accepted or 0)
            o.rows_rejected += int(row.rows_rejected or 0)
            period_counts["rows_accepted"] += int(row.rows_accepted or 0)
            period_counts["rows_rejected"] += int(row.rows_rejected or 0)
    summary.by_period[plan.period] = period_counts
