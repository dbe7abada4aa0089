"""Rule-change impact: what the rules in the working tree would do to every archived return.

``rules_impact`` re-judges the archived bytes of every recorded submission with the suites of a
rules directory (default: ``expectations/`` of the working tree), batch by batch as the ingest
does it (one :func:`tasks.judge.judge_batch` call, hence one GX call, per kind and period, with
each county's previous accepted rows so the cross-period rules behave as they did), and compares
the findings with the recorded ones (the ``dq_issue`` rows of that submission). It writes nothing
to the warehouse: it opens it without journal recovery and only reads.

A finding is keyed by (submission, row number, rule, column); file-level findings (a refusal, a
总计 mismatch) have no row number. ``newly_fails``: the rules in the tree raise a finding the
recorded judgement did not; ``newly_passes``: the reverse. Warnings count as well as errors:
tightening a W rule shows up as rows that would newly be flagged.

Each bytes payload is judged once per (kind, county, period): when the same file was judged more
than once (a ``backfill --force`` under other rules), the most recent judgement is the baseline.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from gaibao.settings import Settings

log = logging.getLogger(__name__)

CSV_COLUMNS = [
    "submission_id",
    "county_code",
    "period",
    "row_number",
    "project_id",
    "rule",
    "change",
    "column",
    "value",
]
NEWLY_FAILS, NEWLY_PASSES = "newly_fails", "newly_passes"
PERSONAL_COLUMNS = ("reporter", "phone")
_KEY = ["submission_id", "row_key", "rule", "column_name"]
_SUBMISSION_SQL = (
    "SELECT submission_id, kind, county_code, period, source, file_name, sha256, received_at, status, "
    "rules_version, loaded_at FROM submission WHERE kind IN ('progress', 'funding')"
)
_ISSUE_SQL = (
    "SELECT submission_id, county_code, period, row_number, project_id, rule, severity, column_name, value "
    "FROM dq_issue WHERE kind IN ('progress', 'funding')"
)


@dataclass
class Impact:
    """The outcome: one row per changed finding (``CSV_COLUMNS`` + ``kind``, ``severity``)."""

    changes: pd.DataFrame
    submissions_judged: int
    batches: int
    rules_dir: Path
    rules_version: str

    def by_rule(self) -> pd.DataFrame:
        return _counts(self.changes, "rule")

    def by_county(self) -> pd.DataFrame:
        return _counts(self.changes, "county_code")

    @property
    def is_empty(self) -> bool:
        return self.changes.empty


def _counts(changes: pd.DataFrame, by: str) -> pd.DataFrame:
    if changes.empty:
        return pd.DataFrame(columns=[by, NEWLY_FAILS, NEWLY_PASSES])
    table = changes.groupby([by, "change"]).size().unstack("change", fill_value=0)
    for col in (NEWLY_FAILS, NEWLY_PASSES):
        if col not in table.columns:
            table[col] = 0
    return table[[NEWLY_FAILS, NEWLY_PASSES]].reset_index().sort_values(by, kind="stable").reset_index(drop=True)


@contextlib.contextmanager
def rules_from(directory: Path | str | None) -> Iterator[Path]:
    """Judge with the suites in ``directory`` inside the block (None: the working tree's).

    ``tasks.validate`` reads its suites from ``EXPECTATIONS_DIR`` and caches them (the JSON,
    the rules version, the GX suites); this swaps the directory and clears those caches on the
    way in and out. Not thread-safe: meant for the ``gaibao rules impact`` process.
    """
    from tasks import validate

    saved = validate.EXPECTATIONS_DIR
    target = Path(directory).resolve() if directory is not None else saved

    def clear() -> None:
        validate.load_suite.cache_clear()
        validate.rules_version.cache_clear()
        state = getattr(validate, "_GX_STATE", None)
        if state and "suites" in state:
            state["suites"].clear()

    for kind in ("progress", "funding"):
        if not (target / f"{kind}.json").is_file():
            raise FileNotFoundError(f"no {kind}.json suite in {target}")
    validate.EXPECTATIONS_DIR = target
    clear()
    try:
        yield target
    finally:
        validate.EXPECTATIONS_DIR = saved
        clear()


def baseline_submissions(warehouse: Any, since: str | None = None) -> pd.DataFrame:
    """The recorded submissions to re-judge: the latest judgement of each payload."""
    sql, params = _SUBMISSION_SQL, {}
    if since:
        sql += " AND period >= :since"
        params["since"] = since
    subs = warehouse.query(sql, params)
    if subs.empty:
        return subs
    subs["_order"] = pd.to_datetime(subs["loaded_at"], utc=True, errors="coerce")
    subs = subs.sort_values(["_order", "submission_id"], na_position="first", kind="stable")
    subs = subs.drop_duplicates(["kind", "county_code", "period", "sha256"], keep="last")
    return subs.drop(columns="_order").sort_values(["period", "kind", "received_at"], kind="stable").reset_index(drop=True)


def recorded_findings(warehouse: Any, submission_ids: set[str], since: str | None = None) -> pd.DataFrame:
    sql, params = _ISSUE_SQL, {}
    if since:
        sql += " AND period >= :since"
        params["since"] = since
    issues = warehouse.query(sql, params)
    return issues[issues["submission_id"].isin(submission_ids)].reset_index(drop=True)


def _candidates(settings: Settings, batch: pd.DataFrame) -> list[Any]:
    from tasks.judge import Candidate
    from tasks.read import read_return
    from warehouse.archive import Archive

    archive = Archive.from_settings(settings)
    out = []
    for row in batch.itertuples(index=False):
        content = archive.get(str(row.sha256))
        received_at = pd.Timestamp(row.received_at)
        if received_at.tzinfo is None:
            received_at = received_at.tz_localize("UTC")
        out.append(
            Candidate(
                kind=str(row.kind),
                county_code=None if pd.isna(row.county_code) else str(row.county_code),
                period=str(row.period),
                file_name=str(row.file_name),
                sha256=str(row.sha256),
                source=str(row.source),
                received_at=received_at.to_pydatetime(),
                parsed=read_return(content, str(row.file_name), str(row.kind)),
            )
        )
    return out


def rejudge(warehouse: Any, settings: Settings, subs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Findings of the current rules for ``subs``, keyed by the recorded submission ids."""
    from tasks.judge import judge_batch, submission_id
    from tasks.validate import rules_version

    version = rules_version()
    known_counties = set(warehouse.query("SELECT county_code FROM ref_division")["county_code"].astype(str))
    found, batches = [], 0
    for (period, kind), batch in subs.groupby(["period", "kind"], sort=True):
        candidates = _candidates(settings, batch)
        counties = sorted({c.county_code for c in candidates if c.county_code})
        previous = warehouse.previous_rows(kind, period, counties)
        judgement = judge_batch(kind, candidates, previous, known_counties, due_day=settings.due_day, tz=settings.timezone)
        batches += 1
        new_to_old = {
            submission_id(c.kind, c.county_code, c.period, c.sha256, version): old
            for c, old in zip(candidates, batch["submission_id"], strict=True)
        }
        issues = judgement.issues.copy()
        issues["submission_id"] = issues["submission_id"].map(new_to_old)
        found.append(issues)
        log.info("re-judged %s %s: %d files, %d findings", kind, period, len(candidates), len(issues))
    frame = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=["submission_id"])
    return frame, batches


def _keyed(findings: pd.DataFrame) -> pd.DataFrame:
    out = findings.copy()
    rows = pd.to_numeric(out["row_number"], errors="coerce")
    out["row_key"] = rows.fillna(-1).astype("int64")
    out["column_name"] = out["column_name"].fillna("").astype(str)
    return out.drop_duplicates(_KEY)


def compare_findings(recorded: pd.DataFrame, current: pd.DataFrame, subs: pd.DataFrame) -> pd.DataFrame:
    """Findings in ``current`` and not ``recorded`` (newly_fails) and the reverse (newly_passes)."""
    columns = [*CSV_COLUMNS, "kind", "severity"]
    if recorded.empty and current.empty:
        return pd.DataFrame(columns=columns)
    rec, cur = _keyed(recorded), _keyed(current)
    merged = cur.merge(rec[_KEY], on=_KEY, how="left", indicator=True)
    fails = merged[merged["_merge"] == "left_only"].drop(columns="_merge").assign(change=NEWLY_FAILS)
    merged = rec.merge(cur[_KEY], on=_KEY, how="left", indicator=True)
    passes = merged[merged["_merge"] == "left_only"].drop(columns="_merge").assign(change=NEWLY_PASSES)
    changes = pd.concat([f for f in (fails, passes) if len(f)], ignore_index=True) if len(fails) or len(passes) else None
    if changes is None:
        return pd.DataFrame(columns=columns)
    where = subs.set_index("submission_id")
    changes["county_code"] = changes["submission_id"].map(where["county_code"])
    changes["period"] = changes["submission_id"].map(where["period"])
    changes["kind"] = changes["submission_id"].map(where["kind"])
    changes["row_number"] = pd.to_numeric(changes["row_number"], errors="coerce").astype("Int64")
    changes["column"] = changes["column_name"].replace("", None)
    personal = changes["column"].isin(PERSONAL_COLUMNS)
    changes["value"] = changes["value"].astype(object).where(~personal, None)
    changes = changes.sort_values(["period", "county_code", "submission_id", "row_key", "rule", "change"], kind="stable")
    return changes[columns].reset_index(drop=True)


def rules_impact(
    warehouse: Any, settings: Settings, rules_dir: Path | str | None = None, since: str | None = None
) -> Impact:
    """Re-judge every archived submission (from period ``since`` on) with the suites in
    ``rules_dir`` and compare with the recorded findings. Reads only."""
    subs = baseline_submissions(warehouse, since)
    recorded = recorded_findings(warehouse, set(subs["submission_id"]) if len(subs) else set(), since)
    with rules_from(rules_dir) as directory:
        from tasks.validate import rules_version

        version = rules_version()
        if len(subs):
            current, batches = rejudge(warehouse, settings, subs)
            changes = compare_findings(recorded, current, subs)
        else:
            batches, changes = 0, pd.DataFrame(columns=[*CSV_COLUMNS, "kind", "severity"])
    return Impact(changes, len(subs), batches, directory, version)


def _csv_safe(value: Any) -> str:
    """A cell that a spreadsheet will not run as a formula (county text is untrusted)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def write_impact_csv(impact: Impact, path: Path | str) -> Path:
    """The row-level details (``CSV_COLUMNS``), UTF-8 with BOM so Excel/WPS open it as UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for row in impact.changes[CSV_COLUMNS].itertuples(index=False):
            writer.writerow([_csv_safe(v) for v in row])
    return path


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int, right: bool = False) -> str:
    fill = " " * max(0, width - _width(text))
    return fill + text if right else text + fill


def format_impact(impact: Impact, county_names: dict[str, str] | None = None) -> str:
    """The console summary: per rule and per county, rows that would newly fail / newly pass."""
    names = county_names or {}
    lines = [
        f"规则影响评估：用 {impact.rules_dir}（规则版本 {impact.rules_version}）重新校验 "
        f"{impact.submissions_judged} 份已归档报表（{impact.batches} 批），未写入仓库。",
    ]
    if impact.is_empty:
        lines.append("与已记录的校验结果相比没有变化。")
        return "\n".join(lines)
    header = _pad("新增不通过 newly_fails", 24, right=True) + _pad("新增通过 newly_passes", 24, right=True)
    lines.append(_pad("规则 rule", 34) + header)
    for row in impact.by_rule().itertuples(index=False):
        lines.append(_pad(str(row.rule), 34) + _pad(str(row.newly_fails), 24, True) + _pad(str(row.newly_passes), 24, True))
    lines.append(_pad("县区 county", 34) + header)
    for row in impact.by_county().itertuples(index=False):
        label = f"{row.county_code} {names.get(str(row.county_code), '')}".strip()
        lines.append(_pad(label, 34) + _pad(str(row.newly_fails), 24, True) + _pad(str(row.newly_passes), 24, True))
    return "\n".join(lines)
