"""Warnings a clerk explained online (the portal's ``portal_explanation`` table).

An explanation is keyed by the file's sha256 and the row number the clerk sees, and marks that
row's warnings explained exactly as a 备注 on the row does (``tasks.validate._finish``): the same
rule, applied to the judged findings before they are loaded. Plain SQL with bound parameters;
a warehouse without the table (not upgraded to 0010) has no explanations.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd
import sqlalchemy as sa

_CHUNK = 500


def explained_rows(engine: sa.Engine, sha256s: Iterable[str]) -> set[tuple[str, int]]:
    """(sha256, row_number) pairs explained online, for the given files."""
    wanted = sorted(set(sha256s))
    if not wanted or not sa.inspect(engine).has_table("portal_explanation"):
        return set()
    out: set[tuple[str, int]] = set()
    stmt = sa.text("SELECT sha256, row_number FROM portal_explanation WHERE sha256 IN :s").bindparams(
        sa.bindparam("s", expanding=True)
    )
    with engine.connect() as conn:
        for i in range(0, len(wanted), _CHUNK):
            out.update((r[0], int(r[1])) for r in conn.execute(stmt, {"s": wanted[i : i + _CHUNK]}).all())
    return out


def mark_explained(
    issues: pd.DataFrame, sha_of_submission: dict[str, str], explained: set[tuple[str, int]]
) -> pd.DataFrame:
    """``issues`` with the warnings of explained rows marked ``is_explained`` (a copy when any change)."""
    if not explained or issues.empty:
        return issues
    sha = issues["submission_id"].map(sha_of_submission)
    rows = issues["row_number"].astype("Int64")
    hit = [
        (s, int(r)) in explained if isinstance(s, str) and not pd.isna(r) else False
        for s, r in zip(sha.tolist(), rows.tolist(), strict=True)
    ]
    mask = pd.Series(hit, index=issues.index) & (issues["severity"] == "warning")
    if not mask.any():
        return issues
    issues = issues.copy()
    issues.loc[mask, "is_explained"] = True
    return issues


def apply_to_judgement(engine: sa.Engine, judgement) -> None:
    """Mark the online explanations in a judged batch (``tasks.judge.Judgement``), in place."""
    subs = judgement.submissions
    if subs.empty:
        return
    explained = explained_rows(engine, subs["sha256"].dropna().astype(str))
    if explained:
        sha_of = dict(zip(subs["submission_id"], subs["sha256"], strict=True))
        judgement.issues = mark_explained(judgement.issues, sha_of, explained)
