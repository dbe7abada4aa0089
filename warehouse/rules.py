"""The text of every rules version a run judged with (table ``rules_suite``).

``rules_version`` is the sha256 of the suite files' bytes in name order, first 12 hex digits
(``tasks.validate.rules_version``). :func:`record_rules` stores the files of a version the
table does not have yet, after checking that they hash to it; :func:`rules_text` reads them back
and checks again, so what ``gaibao rules show`` prints is the text the version names.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from warehouse.schema import rules_suite, submission

log = logging.getLogger(__name__)


def version_of(files: Sequence[tuple[str, bytes]]) -> str:
    """The rules version of suite files given as (file name, bytes), in any order."""
    digest = hashlib.sha256()
    for _, content in sorted(files, key=lambda f: f[0]):
        digest.update(content)
    return digest.hexdigest()[:12]


class RulesMismatch(ValueError):
    """Suite files that do not hash to the version they are recorded or read under."""


@dataclass(frozen=True)
class SuiteFile:
    file_name: str
    sha256: str
    content: str


@dataclass(frozen=True)
class RulesText:
    rules_version: str
    recorded_at: datetime | None
    files: list[SuiteFile]
    submissions: int  # how many submissions were judged with it


def known_versions(conn: sa.Connection) -> set[str]:
    return {r[0] for r in conn.execute(sa.select(rules_suite.c.rules_version).distinct())}


def record_rules(engine: sa.Engine, version: str, files: Sequence[tuple[str, bytes]]) -> bool:
    """Store ``files`` as the text of ``version`` unless it is stored already; True if written.

    ``RulesMismatch`` when the files do not hash to ``version`` (they changed on disk since the
    version was computed: the next run records its own)."""
    with engine.connect() as conn:
        if conn.execute(
            sa.select(rules_suite.c.rules_version).where(rules_suite.c.rules_version == version).limit(1)
        ).first():
            return False
    if version_of(files) != version:
        raise RulesMismatch(f"the suite files hash to {version_of(files)}, not {version}")
    now = datetime.now(UTC)
    rows = [
        {
            "rules_version": version,
            "file_name": name,
            "position": i,
            "sha256": hashlib.sha256(content).hexdigest(),
            "content": content.decode("utf-8"),
            "recorded_at": now,
        }
        for i, (name, content) in enumerate(sorted(files, key=lambda f: f[0]))
    ]
    try:
        with engine.begin() as conn:
            conn.execute(rules_suite.insert(), rows)
    except sa.exc.IntegrityError:  # another run recorded the same version meanwhile
        return False
    log.info("rules version %s recorded (%d suite files)", version, len(rows))
    return True


def rules_text(engine: sa.Engine, version: str) -> RulesText | None:
    """The stored text of ``version`` (None when no run recorded it), hash checked."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(rules_suite)
            .where(rules_suite.c.rules_version == version)
            .order_by(rules_suite.c.position)
        ).all()
        used = conn.execute(
            sa.select(sa.func.count()).select_from(submission).where(submission.c.rules_version == version)
        ).scalar_one()
    if not rows:
        return None
    files = [SuiteFile(r.file_name, r.sha256, r.content) for r in rows]
    raw = [(f.file_name, f.content.encode("utf-8")) for f in files]
    for f, (_, content) in zip(files, raw, strict=True):
        if hashlib.sha256(content).hexdigest() != f.sha256:
            raise RulesMismatch(
                f"{f.file_name} of rules version {version} does not hash to its recorded sha256"
            )
    if version_of(raw) != version:
        raise RulesMismatch(f"the stored suite files of {version} hash to {version_of(raw)}")
    return RulesText(version, rows[0].recorded_at, files, int(used))


def versions_used(engine: sa.Engine) -> list[tuple[str, int, str | None, str | None, bool]]:
    """Every rules version of the submissions: (version, submissions, first and last period,
    whether its text is stored)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                submission.c.rules_version,
                sa.func.count(),
                sa.func.min(submission.c.period),
                sa.func.max(submission.c.period),
            ).group_by(submission.c.rules_version)
        ).all()
        stored = known_versions(conn)
    return sorted(((v, int(n), a, b, v in stored) for v, n, a, b in rows), key=lambda r: (r[2] or "", r[0]))
