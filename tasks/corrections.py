"""Late corrections: files for earlier periods that arrived since the last nightly run.

A county often sends a corrected return for a month already loaded. The nightly run collects
last month; this module also takes, for a window of ``GAIBAO_CORRECTION_MONTHS`` months before
it, the files that are new since the county's source was last listed, loads each as a
resubmission of its own period, and re-judges the county's later returns whose cross-period
rules (REGRESSION, STATUS_REGRESSION, DROPPED_PROJECT: a county against its own latest accepted
rows before the period) read the corrected period. A file for a period before the window is
refused (``OUTSIDE_WINDOW``) with a reason that sends the county to the data engineers.

Finding what is new must not read every county's history every night. Sources that list files
(local folders, fsspec folders) are listed, which the fetch of last month does anyway; a file of
an earlier period counts only if it changed (ctime or mtime: an upload that keeps the county's
own mtime still sets the ctime) since the county's last listing (``correction_scan``), less
``SCAN_SLACK``. Only the periods of such files are fetched, and of their files only bytes the
warehouse has never recorded for that county and period (any status, any rules) are judged:
an unchanged night reads no file of an earlier period. A county never listed before reads its
window's files once, and takes no file outside the window (those predate the scan). Sources that
cannot list (HTTP platforms, county databases, SFTP) are not scanned: their corrections come
through a backfill, as before.

The re-judging follows one rule: after period R is loaded, a county's later returns depend on R
when R's accepted rows changed, up to and including the county's next period with an accepted
return. Those returns (accepted, superseded and refused alike) are re-read from the archive and
judged again with the county's current previous rows, and load as a backfill would load them, so
the warehouse ends exactly as a fresh backfill of the same files leaves it. A correction whose
later returns are still to be re-judged is kept in ``correction_pending`` until they are: a run
that stops in between (a corrupt archive object, a crash) leaves them to the next night, to which
the correction itself is no longer new.

No Prefect here: ``tasks/steps.py`` wraps these as tasks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
import sqlalchemy as sa

from gaibao.contract import KIND_NAME_ZH, Refusal
from gaibao.settings import Settings

log = logging.getLogger(__name__)

OUTSIDE_WINDOW = "OUTSIDE_WINDOW"
# A file changed this long before the county's last listing is still looked at: the listing and
# the file's times may come from two clocks (a remote folder), and a file written while the last
# listing ran must not fall between two scans. Looking again costs a read and a hash, nothing more.
SCAN_SLACK = timedelta(minutes=5)


def correction_window(period: str, months: int) -> list[str]:
    """The ``months`` periods before ``period``, oldest first (empty when ``months`` is 0)."""
    if months <= 0:
        return []
    last = pd.Period(period, "M")
    return [str(last - n) for n in range(months, 0, -1)]


def _label(period: str) -> str:
    return f"{period[:4]}年{int(period[5:]):d}月"


def outside_window_reason(period: str, window: Sequence[str]) -> str:
    """The county's reason for a file of a period before the correction window."""
    return (
        f"该文件的报告期为{_label(period)}，已超出夜间自动受理更正的期限"
        f"（最近{len(window)}个月：{_label(window[0])}至{_label(window[-1])}），本次未予受理，"
        "原有数据保持不变。如确需更正该月数据，请联系市教育局数据工程师补录（backfill）。"
    )


# --------------------------------------------------------------------------------------------
# Listing a source


def changed_periods(source: Any, since: datetime | None, before: str) -> set[str] | None:
    """The periods before ``before`` of the files in ``source`` changed at or after ``since``
    (None: every file), or None when the source cannot list its files.

    A file counts when its name carries exactly one period (the sources' naming rule); temporary
    and hidden files, subfolders and symbolic links never do."""
    from tasks.sources import CombinedSource, FolderSource

    if isinstance(source, CombinedSource):
        found: set[str] = set()
        listable = False
        for part in source.parts:
            periods = changed_periods(part, since, before)
            if periods is not None:
                listable = True
                found |= periods
        return found if listable else None
    if not isinstance(source, FolderSource):
        return None
    if source.is_local:
        root = source.root[len("file://") :] if source.root.startswith("file://") else source.root
        return _changed_local(root, since, before)
    return _changed_fsspec(source.root, since, before)


def _period_of(name: str, before: str) -> str | None:
    from tasks.sources import is_hidden_or_temp, period_in_name

    if is_hidden_or_temp(name):
        return None
    period = period_in_name(name)
    return period if period is not None and period < before else None


def _changed_local(root: str, since: datetime | None, before: str) -> set[str]:
    since_ts = since.timestamp() if since is not None else None
    found: set[str] = set()
    try:
        with os.scandir(root) as entries:
            for entry in entries:
                # the times first: on a night without corrections every file is older than the
                # mark, and a stat costs less than reading the period out of the name
                if not entry.is_file(follow_symlinks=False):
                    continue
                if since_ts is not None:
                    st = entry.stat(follow_symlinks=False)
                    if st.st_mtime < since_ts and st.st_ctime < since_ts:
                        continue
                period = _period_of(entry.name, before)
                if period is not None:
                    found.add(period)
    except FileNotFoundError:
        return set()
    return found


def _changed_fsspec(root: str, since: datetime | None, before: str) -> set[str]:
    from fsspec.core import url_to_fs

    from tasks.sources import _fsspec_mtime

    fs, path = url_to_fs(root)
    if not fs.isdir(path):
        return set()
    found: set[str] = set()
    for info in fs.ls(path, detail=True):
        if info.get("type") != "file":
            continue
        period = _period_of(PurePosixPath(info["name"]).name, before)
        if period is None or period in found:
            continue
        if since is not None and _fsspec_mtime(fs, info) < since:
            continue
        found.add(period)
    return found


# --------------------------------------------------------------------------------------------
# The scan: which counties have which earlier periods to fetch


@dataclass
class CorrectionScan:
    """What listing the counties' sources found."""

    period: str  # the run's period
    window: list[str]
    found: dict[str, list[str]] = field(default_factory=dict)  # county -> earlier periods to fetch
    scanned: list[str] = field(default_factory=list)  # counties listed (their mark moves on)
    unlisted: list[str] = field(default_factory=list)  # sources that cannot list
    failed: dict[str, str] = field(default_factory=dict)  # county -> why its listing failed
    described: dict[str, str] = field(default_factory=dict)  # county -> its source (failed ones)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def scan_marks(warehouse, counties: Sequence[str]) -> dict[str, datetime]:
    """Each county's last listing time (``correction_scan``)."""
    from warehouse.schema import correction_scan

    out: dict[str, datetime] = {}
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.select(correction_scan.c.county_code, correction_scan.c.scanned_at)).all()
    wanted = set(counties)
    for code, at in rows:
        if code in wanted:
            at = pd.Timestamp(at)
            out[code] = (at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")).to_pydatetime()
    return out


def scan_counties(
    warehouse, settings: Settings, period: str, counties: Sequence[str] | None
) -> CorrectionScan:
    """List every county's source once and name the earlier periods with new files.

    A county whose source cannot be built (a bad sources entry) or cannot be listed is recorded
    in ``failed`` with the error, keeps its mark (the next night lists it again) and is named in
    the run's unreachable-sources alert: it is never passed over without a word."""
    from tasks.ingest import choose_counties
    from tasks.sources import FolderSource, load_source_config, source_for

    window = correction_window(period, settings.correction_months)
    scan = CorrectionScan(period=period, window=window)
    if not window:
        return scan
    chosen = choose_counties(warehouse, settings, counties)
    marks = scan_marks(warehouse, chosen)
    config = load_source_config(settings.sources)

    sources: dict[str, Any] = {}
    results: list[tuple[str, set[str] | None, str | None]] = []
    for code in chosen:
        try:
            sources[code] = source_for(code, settings, config)
        except Exception as exc:  # noqa: BLE001 - recorded in scan.failed and alerted, not dropped
            results.append((code, set(), f"{type(exc).__name__}: {exc}"))

    def one(code: str) -> tuple[str, set[str] | None, str | None]:
        mark = marks.get(code)
        try:
            return code, changed_periods(sources[code], mark - SCAN_SLACK if mark else None, period), None
        except Exception as exc:  # noqa: BLE001 - recorded in scan.failed and alerted, not dropped
            return code, set(), f"{type(exc).__name__}: {exc}"

    local = [c for c, src in sources.items() if isinstance(src, FolderSource) and src.is_local]
    remote = [c for c, src in sources.items() if not (isinstance(src, FolderSource) and src.is_local)]
    results += [one(code) for code in local]  # page-cached folders: one thread (see fetch_all)
    if remote:
        with ThreadPoolExecutor(max_workers=min(8, len(remote)), thread_name_prefix="scan") as pool:
            results += list(pool.map(one, remote))
    for code, periods, error in sorted(results, key=lambda r: r[0]):
        if error is not None:
            scan.failed[code] = error
            scan.described[code] = sources[code].describe() if code in sources else "(no source)"
            log.warning("county %s: listing for corrections failed: %s", code, error)
            continue
        if periods is None:
            scan.unlisted.append(code)
            continue
        scan.scanned.append(code)
        first_scan = code not in marks
        # never listed before: files before the window predate the scan and are not taken
        wanted = sorted(p for p in periods if p >= window[0] or not first_scan)
        if wanted:
            scan.found[code] = wanted
    log.info(
        "corrections %s: %d counties listed, %d with files of earlier periods to look at, %d cannot list, %d failed",
        period, len(scan.scanned), len(scan.found), len(scan.unlisted), len(scan.failed),
    )  # fmt: skip
    return scan


# --------------------------------------------------------------------------------------------
# Fetching what the scan found


@dataclass
class CorrectionFiles:
    """The new files of earlier periods, read: per period, oldest first."""

    scan: CorrectionScan
    by_period: dict[str, list[Any]] = field(default_factory=dict)  # period -> [tasks.ingest.Fetched]
    unreachable: dict[str, str] = field(default_factory=dict)  # county -> reason
    # (county, period) -> {reason, source, error, attempts}: for the run's unreachable-sources alert
    unreachable_detail: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def fetch_corrections(warehouse, settings: Settings, scan: CorrectionScan) -> CorrectionFiles:
    """Fetch the periods the scan named, archive every payload, and read the bytes the warehouse
    has never recorded for their county and period. Files before the window are refused."""
    from tasks.ingest import Fetched, _parse
    from tasks.sources import fetch_with_retry, load_source_config, source_for
    from warehouse.archive import Archive

    files = CorrectionFiles(scan=scan)
    if not scan.found:
        return files
    config = load_source_config(settings.sources)
    received = []
    for code, periods in scan.found.items():
        source = source_for(code, settings, config)
        for period in periods:
            outcome = fetch_with_retry(source, code, period, settings)
            if outcome.error is not None:
                files.unreachable[code] = str(getattr(outcome.error, "message_zh", outcome.error))
                files.unreachable_detail[(code, period)] = {
                    "reason": files.unreachable[code],
                    "source": source.describe(),
                    "error": str(getattr(outcome.error, "detail", outcome.error)),
                    "attempts": outcome.attempts,
                }
                continue
            received.extend(outcome.received)
    if not received:
        return files
    shas = Archive.from_settings(settings).put_many([r.content for r in received])
    recorded = _recorded(
        warehouse, sorted({r.county_code for r in received}), sorted({r.period for r in received})
    )
    fresh, contents = [], []
    for rec, sha in zip(received, shas, strict=True):
        if (rec.county_code, rec.period, sha) in recorded:
            continue
        fresh.append(Fetched.of(rec, sha))
        contents.append(rec.content)
    del received
    _parse(fresh, contents, settings)
    window_start = scan.window[0]
    for item in fresh:
        if item.period < window_start:
            item.parsed.refusal = Refusal(OUTSIDE_WINDOW, outside_window_reason(item.period, scan.window))
        files.by_period.setdefault(item.period, []).append(item)
    log.info(
        "corrections %s: %d new files of earlier periods (%s)",
        scan.period, len(fresh), ", ".join(sorted(files.by_period)),
    )  # fmt: skip
    return files


def _recorded(warehouse, counties: list[str], periods: list[str]) -> set[tuple[str, str, str]]:
    """(county, period, sha256) of every submission the warehouse holds for these keys."""
    from warehouse.schema import submission as s

    out: set[tuple[str, str, str]] = set()
    with warehouse.engine.connect() as conn:
        q = sa.select(s.c.county_code, s.c.period, s.c.sha256).where(
            s.c.county_code.in_(counties), s.c.period.in_(periods)
        )
        out.update((c, p, h) for c, p, h in conn.execute(q).all())
    return out


# --------------------------------------------------------------------------------------------
# Loading them, and re-judging what depends on them


@dataclass
class Correction:
    """One new file of an earlier period and what it did."""

    county_code: str
    period: str
    kind: str
    submission_id: str
    file_name: str
    status: str  # accepted | superseded | refused, after the load
    reason: str | None
    replaced: dict[str, Any] | None  # the submission that was current before (id, file, received, rows)


@dataclass
class Rejudged:
    """A later return of a corrected county judged again."""

    county_code: str
    period: str
    kind: str
    warnings_before: int
    warnings_after: int


@dataclass
class CorrectionReport:
    period: str
    corrections: list[Correction] = field(default_factory=list)
    rejudged: list[Rejudged] = field(default_factory=list)
    unreachable: dict[str, str] = field(default_factory=dict)
    # (county, period or window) -> {reason, source, error, attempts}: sources that could not be
    # listed or fetched for corrections, for the run's alert to the data engineers
    problems: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @property
    def earliest(self) -> str | None:
        periods = [c.period for c in self.corrections if c.status != "refused"]
        periods += [r.period for r in self.rejudged]
        return min(periods) if periods else None

    def receipt_notes(self) -> dict[str, dict[str, str]]:
        """Per period, per county: the sentences its receipt for that period adds (Chinese)."""
        lines: dict[str, dict[str, list[str]]] = {}
        for c in self.corrections:
            per_county = lines.setdefault(c.period, {})
            if c.status == "refused":
                continue
            later = [
                r
                for r in self.rejudged
                if r.county_code == c.county_code and r.kind == c.kind and r.period > c.period
            ]
            kind_zh = KIND_NAME_ZH.get(c.kind, c.kind)
            if later:
                parts = "；".join(
                    f"{_label(r.period)}的预警由{r.warnings_before}条变为{r.warnings_after}条" for r in later
                )
                text = (
                    f"已按更正后的{_label(c.period)}{kind_zh}重新核查此后各期的跨期规则"
                    f"（数据倒退、状态倒退、项目遗漏）：{parts}。"
                )
            else:
                text = f"{_label(c.period)}{kind_zh}的更正不影响此后各期的跨期核查结果。"
            texts = per_county.setdefault(c.county_code, [])
            if text not in texts:
                texts.append(text)
        return {p: {c: "".join(t) for c, t in per.items()} for p, per in lines.items()}

    def as_dicts(self) -> list[dict[str, Any]]:
        rows = []
        for c in self.corrections:
            rows.append(
                {
                    "county_code": c.county_code,
                    "period": c.period,
                    "kind": c.kind,
                    "file_name": c.file_name,
                    "submission_id": c.submission_id,
                    "status": c.status,
                    "replaced": (c.replaced or {}).get("submission_id"),
                    "rejudged": sorted(
                        {
                            r.period
                            for r in self.rejudged
                            if r.county_code == c.county_code and r.kind == c.kind and r.period > c.period
                        }
                    ),
                }
            )
        return rows


def _current(warehouse, period: str, counties: Sequence[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, county) -> the accepted submission at ``period``."""
    if not counties:
        return {}
    frame = warehouse.query(
        "SELECT submission_id, kind, county_code, file_name, received_at, rows_accepted FROM submission "
        "WHERE period = :p AND status = 'accepted'",
        {"p": period},
    )
    frame = frame[frame["county_code"].isin(list(counties))]
    return {(r["kind"], r["county_code"]): r for r in frame.to_dict("records")}


def _warnings(warehouse, ids: Sequence[str]) -> dict[str, int]:
    if not ids:
        return {}
    from warehouse.schema import dq_issue as d

    with warehouse.engine.connect() as conn:
        q = (
            sa.select(d.c.submission_id, sa.func.count())
            .where(d.c.submission_id.in_(list(ids)), d.c.severity == "warning")
            .group_by(d.c.submission_id)
        )
        return {sid: int(n) for sid, n in conn.execute(q).all()}


def _archived(warehouse, period: str, keys: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """The recorded submissions of (kind, county) ``keys`` at ``period``, for re-judging from the
    archive (each county's bytes once, oldest first; refusals for being outside the window are
    not returns)."""
    if not keys:
        return []
    subs = warehouse.query(
        "SELECT submission_id, kind, county_code, period, source, file_name, sha256, received_at, "
        "file_mtime, status, refusal_code FROM submission WHERE period = :p",
        {"p": period},
    )
    wanted = [(k, c) in keys for k, c in zip(subs["kind"], subs["county_code"], strict=True)]
    subs = subs[pd.Series(wanted, index=subs.index, dtype=bool)]
    subs = subs[subs["refusal_code"].fillna("") != OUTSIDE_WINDOW]
    subs = subs.sort_values("received_at").drop_duplicates(["county_code", "sha256"], keep="first")
    return subs.to_dict("records")


def apply_corrections(warehouse, settings: Settings, files: CorrectionFiles) -> CorrectionReport:
    """Load the new files of earlier periods in period order, each period after re-judging the
    returns that depend on an earlier one, up to and including the run's period; then move the
    listed counties' marks on. The run's period's new files are judged afterwards, as every night."""
    from tasks.ingest import ChunkResult, gather_period, judge_period, load_judged, period_range

    scan = files.scan
    report = CorrectionReport(period=scan.period, unreachable=dict(files.unreachable))
    report.problems.update(files.unreachable_detail)
    if scan.failed:
        span = f"{scan.window[0]}..{scan.window[-1]}"
        for code, error in scan.failed.items():
            report.problems[(code, span)] = {
                "reason": "查找更正文件时无法列出数据源，本次未受理该县区此前各期的更正（下次夜间运行重新查找）",
                "source": scan.described.get(code, "(no source)"),
                "error": error,
                "attempts": 1,
            }
    # (kind, county) -> corrected period whose later returns a run that stopped did not re-judge
    pending = read_pending(warehouse)
    starts = list(files.by_period) + [_next(p) for p in pending.values() if _next(p) <= scan.period]
    blocked: set[tuple[str, str]] = set()  # keys whose re-judging an archive fault stopped
    if starts:
        dirty: set[tuple[str, str]] = set()  # (kind, county) whose later returns must be re-judged
        for period in period_range(min(starts), scan.period):
            fresh = files.by_period.get(period, []) if period < scan.period else []
            dirty |= {key for key, since in pending.items() if _next(since) == period}
            dirty_before = set(dirty)
            archived = _archived(warehouse, period, dirty_before)
            if not fresh and not archived:
                continue
            counties = sorted({f.county_code for f in fresh} | {c for _, c in dirty})
            before = _current(warehouse, period, counties)
            rejudged_ids = [str(r["submission_id"]) for r in archived]
            warnings_before = _warnings(warehouse, [str(b["submission_id"]) for b in before.values()])
            gathered = gather_period(settings, period, [ChunkResult(fresh, {}, [])], archived)
            for fault in gathered.archive_faults:
                # an archived return that cannot be read back (its object is corrupt) cannot be
                # re-judged: its key stays pending for the next night, and the engineers are told
                county = str(fault["county_code"])
                blocked |= {key for key in dirty_before if key[1] == county}
                report.problems[(county, period)] = {
                    "reason": "存档的原始文件损坏，未能按更正重新判定该期（下次夜间运行重试）",
                    "source": f"archive {fault.get('sha256', '')}",
                    "error": str(fault.get("error", "")),
                    "attempts": 1,
                }
            judged = judge_period(warehouse, settings, gathered)
            load_judged(warehouse, judged)
            after = _current(warehouse, period, counties)
            statuses = warehouse.query(
                "SELECT submission_id, status, reason FROM submission WHERE period = :p", {"p": period}
            ).set_index("submission_id")
            fresh_ids: set[str] = set()
            newly_dirty: set[tuple[str, str]] = set()
            for kind, judgement in judged.by_kind.items():
                fresh_keys = {(f.county_code, f.sha256) for f in fresh}
                for row in judgement.submissions.itertuples(index=False):
                    if (row.county_code, row.sha256) not in fresh_keys:
                        continue
                    fresh_ids.add(row.submission_id)
                    replaced = before.get((kind, row.county_code))
                    now_current = after.get((kind, row.county_code))
                    is_current = now_current is not None and now_current["submission_id"] == row.submission_id
                    report.corrections.append(
                        Correction(
                            county_code=row.county_code,
                            period=period,
                            kind=kind,
                            submission_id=row.submission_id,
                            file_name=row.file_name,
                            status=str(statuses["status"].get(row.submission_id, row.status)),
                            reason=row.reason,
                            replaced=replaced if is_current and replaced is not None else None,
                        )
                    )
                    if is_current and period < scan.period:
                        newly_dirty.add((kind, row.county_code))
            # kept until the end of the run: a run that stops before re-judging the later returns
            # leaves them for the next night (the correction itself is not new to it any more)
            note_pending(warehouse, newly_dirty, period)
            pending.update({key: min(period, pending.get(key, period)) for key in newly_dirty})
            dirty |= newly_dirty
            if rejudged_ids:
                after_ids = {str(a["submission_id"]) for a in after.values()}
                warnings_after = _warnings(warehouse, sorted(after_ids))
                for (kind, county), now in after.items():
                    if (kind, county) not in dirty_before or now["submission_id"] in fresh_ids:
                        continue
                    was = before.get((kind, county))
                    report.rejudged.append(
                        Rejudged(
                            county_code=county,
                            period=period,
                            kind=kind,
                            warnings_before=warnings_before.get(str(was["submission_id"]), 0) if was else 0,
                            warnings_after=warnings_after.get(str(now["submission_id"]), 0),
                        )
                    )
            # a county whose period now has an accepted return that the correction did not bring
            # shields its later periods: they compare against this one, which did not change
            for key in list(dirty):
                now = after.get(key)
                if now is not None and now["submission_id"] not in fresh_ids:
                    dirty.discard(key)
    done = {key for key, since in pending.items() if _next(since) <= scan.period} - blocked
    record_scan(warehouse, scan, set(files.unreachable), done=done)
    return report


def _next(period: str) -> str:
    return str(pd.Period(period, "M") + 1)


def read_pending(warehouse) -> dict[tuple[str, str], str]:
    """(kind, county) -> the corrected period whose later returns are still to be re-judged."""
    from warehouse.schema import correction_pending as t

    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.kind, t.c.county_code, t.c.from_period)).all()
    return {(kind, county): str(period) for kind, county, period in rows}


def note_pending(warehouse, keys: set[tuple[str, str]], period: str) -> None:
    """Record that ``keys``' returns after ``period`` must be re-judged (an earlier period kept)."""
    if not keys:
        return
    from warehouse.schema import correction_pending as t

    now = datetime.now(UTC)
    with warehouse.engine.begin() as conn:
        have = {
            (k, c): str(p)
            for k, c, p in conn.execute(sa.select(t.c.kind, t.c.county_code, t.c.from_period)).all()
            if (k, c) in keys
        }
        for kind, county in sorted(keys):
            if (kind, county) in have:
                if have[(kind, county)] <= period:
                    continue
                conn.execute(t.delete().where(t.c.kind == kind, t.c.county_code == county))
            conn.execute(
                t.insert(), {"kind": kind, "county_code": county, "from_period": period, "recorded_at": now}
            )


def record_scan(
    warehouse, scan: CorrectionScan, skip: set[str], done: set[tuple[str, str]] = frozenset()
) -> None:
    """Move the marks of the counties listed (and fetched) tonight to the scan's start, and
    forget the re-judging ``done`` tonight (one transaction)."""
    from warehouse.schema import correction_pending, correction_scan

    codes = sorted(set(scan.scanned) - skip)
    if not codes and not done:
        return
    with warehouse.engine.begin() as conn:
        for kind, county in sorted(done):
            conn.execute(
                correction_pending.delete().where(
                    correction_pending.c.kind == kind, correction_pending.c.county_code == county
                )
            )
        for start in range(0, len(codes), 500):
            chunk = codes[start : start + 500]
            conn.execute(correction_scan.delete().where(correction_scan.c.county_code.in_(chunk)))
            conn.execute(
                correction_scan.insert(), [{"county_code": c, "scanned_at": scan.started_at} for c in chunk]
            )
