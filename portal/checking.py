"""Upload, instant check, explain and submit: the clerk's path (plain functions, no web types).

An upload is hostile until proven otherwise: its size is limited (``GAIBAO_PORTAL_UPLOAD_MAX_BYTES``),
its type is read from its bytes (an XLSX must be a zip holding ``xl/workbook.xml`` whose members
unzip to at most ``GAIBAO_PORTAL_UNZIP_MAX_BYTES``; CSV must decode as text; JSON must parse), and
the name the browser sent is kept only as text to show. The bytes are stored under
``$GAIBAO_HOME/portal/uploads/<upload_id>``.

The instant check is the nightly judgement of the one file (``tasks.judge.judge_file``, the pandas
engine of the same suites) with the cross-period rules judged against the county's last accepted
period before the chosen one (``Warehouse.previous_rows``, read-only), and the clerk's online
explanations applied exactly as a 备注 on the row (``tasks.explained``).

Submitting writes the bytes atomically into the county's inbox folder (``$GAIBAO_HOME/inbox/<county>/``,
under a name the portal makes: period, kind and a random token of letters), puts them into the raw
archive as received, and, when ``GAIBAO_PORTAL_INGEST_DEPLOYMENT`` names a Prefect deployment, asks
it to ingest the county's period at once.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import string
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from gaibao.contract import KIND_NAME_ZH, label_zh, personal_columns
from portal.schema import portal_explanation, portal_upload

log = logging.getLogger(__name__)

MAX_EXPLANATION = 500
ZIP_MAX_MEMBERS = 2000


class UploadRefused(ValueError):
    """An upload refused before any check; the message (Chinese) says why and what to do."""


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------------------------
# periods


def last_accepted_period(
    engine: sa.Engine, county: str, kind: str = "progress", before: str | None = None
) -> str | None:
    sql = "SELECT MAX(period) FROM submission WHERE county_code = :c AND kind = :k AND status = 'accepted'"
    params: dict[str, Any] = {"c": county, "k": kind}
    if before:
        sql += " AND period < :p"
        params["p"] = before
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _shift(period: str, months: int) -> str:
    y, m = int(period[:4]), int(period[5:7])
    n = y * 12 + (m - 1) + months
    return f"{n // 12:04d}-{n % 12 + 1:02d}"


def default_period(last: str | None) -> str:
    """The period a clerk most likely reports next: the month after their last accepted one."""
    if last:
        return _shift(last, 1)
    today = datetime.now(UTC)
    return _shift(f"{today.year:04d}-{today.month:02d}", -1)


def period_choices(engine: sa.Engine, last: str | None) -> list[str]:
    first = default_period(last)
    return [_shift(first, -i) for i in range(12)]


def check_period_text(period: str) -> str:
    from tasks.sources import check_period

    try:
        return check_period(period)
    except ValueError:
        raise UploadRefused(f"报告期“{period[:20]}”格式不对，应为 YYYY-MM，例如 2018-12") from None


# --------------------------------------------------------------------------------------------
# what an upload is


def sniff_type(content: bytes, max_unzipped: int) -> str:
    """``xlsx``, ``csv`` or ``json`` from the bytes; refuses anything else with a reason."""
    if not content.strip(b"\xef\xbb\xbf \t\r\n"):
        raise UploadRefused("文件是空的，请填写数据后再上传")
    if content.startswith(b"PK\x03\x04"):
        _check_workbook(content, max_unzipped)
        return "xlsx"
    if content.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        raise UploadRefused("不接收旧版 Excel（.xls）文件：请在 Excel 或 WPS 中另存为 .xlsx 后上传")
    head = content[:4096]
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UploadRefused("文件不是文本表格，也不是 Excel 工作簿；请上传 CSV、XLSX 或 JSON 文件")
    text = None
    for encoding in ("utf-8-sig", "utf-16", "gb18030"):
        if encoding == "utf-16" and not content.startswith((b"\xff\xfe", b"\xfe\xff")):
            continue
        try:
            text = content.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    if text is None:
        raise UploadRefused("文件无法按 UTF-8 或 GBK 编码读取；请另存为 UTF-8 编码的 CSV 或 .xlsx 后上传")
    if text.lstrip()[:1] in ("[", "{"):
        try:
            json.loads(text)
        except ValueError:
            raise UploadRefused("文件以 [ 或 { 开头但不是有效的 JSON；请检查后重新导出") from None
        return "json"
    return "csv"


def _check_workbook(content: bytes, max_unzipped: int) -> None:
    """An XLSX: a zip holding ``xl/workbook.xml`` whose members inflate (counted, in steps, by
    ``tasks.readguard.check_workbook_zip``, the nightly run's own bound) to at most
    ``max_unzipped`` bytes and whose sheets' used ranges are within the reading bounds."""
    from dataclasses import replace

    from tasks.readguard import OverLimit, ReadLimits, Unreadable, check_workbook

    try:
        with zipfile.ZipFile(io.BytesIO(content)) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        raise UploadRefused(
            "文件看似 XLSX 但已损坏，无法打开；请在 Excel 或 WPS 中重新另存为 .xlsx"
        ) from None
    if "xl/workbook.xml" not in {i.filename for i in infos}:
        raise UploadRefused("压缩文件不是 Excel 工作簿（.xlsx）；请上传 CSV、XLSX 或 JSON 文件")
    if len(infos) > ZIP_MAX_MEMBERS:
        raise UploadRefused(f"工作簿内含 {len(infos)} 个部件，超过上限 {ZIP_MAX_MEMBERS}，不予接收")
    base = ReadLimits.from_settings()
    limits = replace(base, max_unzipped_bytes=min(base.max_unzipped_bytes, max_unzipped))
    try:
        check_workbook(content, limits)
    except OverLimit as exc:
        raise UploadRefused(f"{exc.message_zh}，不予接收；请删去多余的工作表、图片和空行后重新上传") from None
    except Unreadable as exc:
        raise UploadRefused(f"{exc}；请在 Excel 或 WPS 中重新另存为 .xlsx 后上传") from None


def _display_name(name: str | None) -> str:
    """The browser's file name, as text to show only: no folders, no control characters."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable())
    return base[:200] or "未命名文件"


def _upload_path(settings: Any, upload_id: str) -> Path:
    if not upload_id.isalnum():  # ids are made here (hex); never a path from outside
        raise ValueError("bad upload id")
    return settings.portal_dir / "uploads" / upload_id


# --------------------------------------------------------------------------------------------
# the check


@dataclass
class Finding:
    row_number: int | None
    severity: str
    rule: str
    column_zh: str
    value: str
    message: str
    is_explained: bool
    project_id: str | None


@dataclass
class CheckView:
    """What the clerk sees about one upload: the findings and their rows highlighted."""

    upload_id: str
    county_code: str
    county_name: str
    period: str
    kind: str | None
    kind_zh: str
    file_name: str
    refusal: str | None
    rows_total: int
    rows_rejected: int
    findings: list[Finding]
    headers: list[str]
    rows: list[dict[str, Any]]  # {"number", "cells", "css"}
    previous_period: str | None
    submitted_at: datetime | None
    explanations: dict[int, str] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(f.severity == "error" for f in self.findings) + (
            1
            if self.refusal and not any(f.row_number is None and f.severity == "error" for f in self.findings)
            else 0
        )

    @property
    def warnings(self) -> int:
        return sum(f.severity == "warning" for f in self.findings)

    @property
    def unexplained(self) -> int:
        return sum(f.severity == "warning" and not f.is_explained for f in self.findings)

    @property
    def can_submit(self) -> bool:
        return self.refusal is None and self.errors == 0 and self.submitted_at is None


def synthetic_name(county: str, period: str, file_type: str) -> str:
    """The name the reader sees: made here from trusted values (its suffix tells JSON apart)."""
    return f"{county}_{period}.{file_type}"


def judge_upload(
    warehouse: Any, county: str, period: str, content: bytes, file_type: str, explained_rows: set[int]
) -> tuple[Any, Any, str | None]:
    """(judgement, parsed return, previous period) of one file, as the nightly run would judge it
    now (``tasks.check.judge_against_warehouse``), the clerk's online explanations applied."""
    from tasks.check import judge_against_warehouse
    from tasks.explained import mark_explained

    name = synthetic_name(county, period, file_type)
    judgement, parsed, prev_period = judge_against_warehouse(warehouse, content, name, county, period)
    if explained_rows:
        digest = sha256(content).hexdigest()
        sha_of = dict.fromkeys(judgement.submissions["submission_id"], digest)
        judgement.issues = mark_explained(judgement.issues, sha_of, {(digest, r) for r in explained_rows})
    return judgement, parsed, prev_period


def _findings(issues: pd.DataFrame, kind: str) -> list[Finding]:
    out = []
    order = issues.assign(_e=issues["severity"].ne("error")).sort_values(
        ["_e", "row_number"], na_position="first"
    )
    for r in order.itertuples(index=False):
        column = r.column_name if isinstance(r.column_name, str) else ""
        try:
            column_zh = label_zh(kind, column) if column else ""
        except (KeyError, ValueError):
            column_zh = column
        out.append(
            Finding(
                row_number=None if pd.isna(r.row_number) else int(r.row_number),
                severity=r.severity,
                rule=r.rule,
                column_zh=column_zh,
                value=""
                if r.value is None or (isinstance(r.value, float) and pd.isna(r.value))
                else str(r.value),
                message=r.message or "",
                is_explained=bool(r.is_explained),
                project_id=r.project_id if isinstance(r.project_id, str) else None,
            )
        )
    return out


def _rows_table(
    parsed: Any, kind: str, findings: list[Finding], limit: int = 2000
) -> tuple[list[str], list[dict]]:
    rows = parsed.rows if parsed.refusal is None else pd.DataFrame()
    if rows.empty:
        return [], []
    personal = personal_columns()
    cols = [c for c in rows.columns if c not in personal and c != "row_number"]
    headers = [label_zh(kind, c) for c in cols]
    state: dict[int, str] = {}
    for f in findings:
        if f.row_number is None:
            continue
        css = "bad" if f.severity == "error" else ("explained" if f.is_explained else "warn")
        if state.get(f.row_number) != "bad":
            state[f.row_number] = (
                "bad" if css == "bad" else (css if state.get(f.row_number) != "warn" else "warn")
            )
    out = []
    for rec in rows.head(limit).itertuples(index=False):
        number = int(rec.row_number)
        out.append(
            {
                "number": number,
                "cells": ["" if getattr(rec, c) is None else str(getattr(rec, c)) for c in cols],
                "css": state.get(number, ""),
            }
        )
    return headers, out


def receive_upload(
    warehouse: Any,
    settings: Any,
    county: str,
    period: str,
    user_id: int,
    file_name: str | None,
    content: bytes,
) -> str:
    """Store an upload and its check summary; returns its id. Refuses bad input with UploadRefused."""
    period = check_period_text(period)
    if len(content) > settings.portal_upload_max_bytes:
        raise UploadRefused(
            f"文件大小超过上限：最大 {settings.portal_upload_max_bytes // (1024 * 1024)} MB，"
            f"本文件 {len(content) / (1024 * 1024):.1f} MB，不予接收"
        )
    file_type = sniff_type(content, settings.portal_unzip_max_bytes)
    upload_id = secrets.token_hex(16)
    path = _upload_path(settings, upload_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, content)
    up = {
        "upload_id": upload_id,
        "county_code": county,
        "period": period,
        "file_name": _display_name(file_name),
        "file_type": file_type,
        "sha256": sha256(content).hexdigest(),
        "submitted_at": None,
    }
    view = _build_view(warehouse, up, content, {})
    with warehouse.engine.begin() as conn:
        conn.execute(
            portal_upload.insert().values(
                **up,
                kind=view.kind,
                size_bytes=len(content),
                uploaded_by=user_id,
                uploaded_at=_now(),
                errors=view.errors,
                warnings=view.warnings,
                refusal=view.refusal,
            )
        )
    log.info(
        "upload %s: county %s period %s, %d bytes (%s)", upload_id, county, period, len(content), file_type
    )
    return upload_id


def _upload_row(engine: sa.Engine, upload_id: str) -> Any:
    with engine.connect() as conn:
        row = conn.execute(sa.select(portal_upload).where(portal_upload.c.upload_id == upload_id)).first()
    if row is None:
        raise LookupError(upload_id)
    return row._mapping


def explanations_of(engine: sa.Engine, digest: str) -> dict[int, str]:
    e = portal_explanation
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(e.c.row_number, e.c.text).where(e.c.sha256 == digest).order_by(e.c.explained_at)
        ).all()
    return {int(r[0]): r[1] for r in rows}


# The instant check of an upload, kept while what it was judged against is unchanged: the
# upload's bytes (its sha256), its explanations and the county's submissions up to its period
# (a nightly load that accepts, refuses or supersedes one changes the key). The upload's POST
# judges once; the page it redirects to, and each explanation's page, reuse it.
_VIEWS: OrderedDict[tuple, CheckView] = OrderedDict()
_VIEWS_LOCK = threading.Lock()
_VIEWS_MAX = 64


def _warehouse_state(engine: sa.Engine, county: str, period: str) -> tuple:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT submission_id, status FROM submission WHERE county_code = :c AND period <= :p"
                " ORDER BY submission_id"
            ),
            {"c": county, "p": period},
        ).all()
    return (str(engine.url), *(tuple(r) for r in rows))


def _build_view(warehouse: Any, up: Any, content: bytes, explanations: dict[int, str]) -> CheckView:
    from portal.service import county_names

    key = (
        up["upload_id"],
        up["sha256"],
        tuple(sorted(explanations.items())),
        up["submitted_at"],
        _warehouse_state(warehouse.engine, up["county_code"], up["period"]),
    )
    with _VIEWS_LOCK:
        if key in _VIEWS:
            _VIEWS.move_to_end(key)
            return _VIEWS[key]
    judgement, parsed, prev_period = judge_upload(
        warehouse, up["county_code"], up["period"], content, up["file_type"], set(explanations)
    )
    sub = judgement.submissions.iloc[0]
    kind = sub["kind"] or "progress"
    findings = _findings(judgement.issues, kind)
    headers, rows = _rows_table(parsed, kind, findings)
    view = CheckView(
        upload_id=up["upload_id"],
        county_code=up["county_code"],
        county_name=county_names(warehouse.engine).get(up["county_code"], up["county_code"]),
        period=up["period"],
        kind=sub["kind"],
        kind_zh=KIND_NAME_ZH.get(kind, "未识别的报表"),
        file_name=up["file_name"],
        refusal=sub["reason"] if sub["status"] == "refused" else None,
        rows_total=int(sub["rows_total"] or 0),
        rows_rejected=int(sub["rows_rejected"] or 0),
        findings=findings,
        headers=headers,
        rows=rows,
        previous_period=prev_period,
        submitted_at=up["submitted_at"],
        explanations=dict(explanations),
    )
    with _VIEWS_LOCK:
        _VIEWS[key] = view
        while len(_VIEWS) > _VIEWS_MAX:
            _VIEWS.popitem(last=False)
    return view


def check_view(warehouse: Any, settings: Any, upload_id: str) -> CheckView:
    """The instant check of a stored upload (explanations included): what the clerk sees."""
    up = _upload_row(warehouse.engine, upload_id)
    content = _upload_path(settings, upload_id).read_bytes()
    return _build_view(warehouse, up, content, explanations_of(warehouse.engine, up["sha256"]))


def explain(warehouse: Any, settings: Any, upload_id: str, row_number: int, text: str, user_id: int) -> None:
    """Store a clerk's explanation of a row's warnings (who and when)."""
    text = (text or "").strip()
    if not text:
        raise UploadRefused("请填写说明内容")
    if len(text) > MAX_EXPLANATION:
        raise UploadRefused(f"说明不能超过 {MAX_EXPLANATION} 字")
    view = check_view(warehouse, settings, upload_id)
    if view.submitted_at is not None:
        raise UploadRefused("该文件已报送，不能再修改说明；如需更正请重新上传")
    rows_with_warnings = {
        f.row_number for f in view.findings if f.severity == "warning" and f.row_number is not None
    }
    if row_number not in rows_with_warnings:
        raise UploadRefused(f"第 {row_number} 行没有需要说明的提示")
    up = _upload_row(warehouse.engine, upload_id)
    with warehouse.engine.begin() as conn:
        conn.execute(
            portal_explanation.insert().values(
                county_code=up["county_code"],
                period=up["period"],
                sha256=up["sha256"],
                row_number=row_number,
                text=text,
                explained_by=user_id,
                explained_at=_now(),
            )
        )
    log.info("upload %s: row %d explained by user %d", upload_id, row_number, user_id)


def _write_atomic(path: Path, content: bytes) -> None:
    """Write ``path`` whole or not at all: a hidden temporary file in the folder, fsync, rename."""
    tmp = path.parent / f".{secrets.token_hex(8)}.part"  # hidden and .part: never read as a return
    with open(tmp, "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def inbox_name(period: str, kind: str, file_type: str) -> str:
    """A name that carries the period and the kind, and no other digits (a random token of letters)."""
    token = "".join(secrets.choice(string.ascii_lowercase) for _ in range(10))
    return f"{period}_{KIND_NAME_ZH[kind]}_网上报送_{token}.{file_type}"


def county_folder(settings: Any, county: str) -> Path:
    """The local folder the nightly run reads the county's returns from (its source), or
    UploadRefused when its source is not a local folder (HTTP, SFTP, a database, object storage):
    a file written anywhere else would never be loaded."""
    from tasks.sources import FolderSource, load_source_config, source_for

    try:
        source = source_for(county, settings, load_source_config(settings.sources))
    except Exception as exc:  # noqa: BLE001 - a bad sources file must not write anywhere
        log.warning("county %s: no source for a portal submission: %s", county, type(exc).__name__)
        source = None
    if not isinstance(source, FolderSource) or not source.is_local:
        raise UploadRefused(
            "本县区的报表由数据接口或其他渠道收取，不能在信息平台报送；请按原渠道报送，或联系数据工程师"
        )
    return Path(source.root.removeprefix("file://"))


def submit(warehouse: Any, settings: Any, upload_id: str, user_id: int) -> str:
    """Send a checked upload: into the county's inbox (atomically) and the archive. Returns its name."""
    view = check_view(warehouse, settings, upload_id)
    if view.submitted_at is not None:
        raise UploadRefused("该文件已经报送过了")
    if view.refusal:
        raise UploadRefused(f"该文件会被整个拒收，不能报送：{view.refusal}")
    if view.errors:
        raise UploadRefused(f"文件还有 {view.errors} 处错误，请改正后重新上传再报送")
    up = _upload_row(warehouse.engine, upload_id)
    content = _upload_path(settings, upload_id).read_bytes()
    folder = county_folder(settings, up["county_code"])
    warehouse.archive.put(content)  # archived as received, before the county's folder sees it
    folder.mkdir(parents=True, exist_ok=True)
    name = inbox_name(up["period"], view.kind or "progress", up["file_type"])
    _write_atomic(folder / name, content)
    with warehouse.engine.begin() as conn:
        conn.execute(
            portal_upload.update()
            .where(portal_upload.c.upload_id == upload_id, portal_upload.c.submitted_at.is_(None))
            .values(submitted_at=_now(), submitted_by=user_id, inbox_name=name)
        )
    log.info("upload %s submitted to %s", upload_id, folder / name)
    _trigger_ingest(settings, up["county_code"], up["period"])
    return name


def _trigger_ingest(settings: Any, county: str, period: str) -> None:
    name = getattr(settings, "portal_ingest_deployment", None)
    if not name:
        return
    try:
        from prefect.deployments import run_deployment

        run_deployment(name, parameters={"period": period, "counties": [county]}, timeout=0)
    except Exception:  # noqa: BLE001 - the nightly run loads the file anyway
        log.exception(
            "could not start deployment %s for %s %s; the nightly run will load it", name, county, period
        )


# --------------------------------------------------------------------------------------------
# submission states

STATE_ZH = {"waiting": "等待入库", "accepted": "已接收", "refused": "已退回", "superseded": "已被替换"}


@dataclass(frozen=True)
class SubmissionState:
    period: str
    kind_zh: str
    file_name: str
    received_at: datetime | None
    state: str
    state_zh: str
    reason: str | None
    submission_id: str | None
    upload_id: str | None
    rows_accepted: int | None
    rows_rejected: int | None


def _utc(value: Any) -> datetime | None:
    """A time read back from either dialect (SQLite gives text, PostgreSQL a datetime), in UTC."""
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def submission_states(engine: sa.Engine, county: str) -> list[SubmissionState]:
    """Every return of the county: the warehouse's submissions, and portal submissions not loaded yet."""
    with engine.connect() as conn:
        subs = conn.execute(
            sa.text(
                "SELECT submission_id, kind, period, file_name, sha256, received_at, status, reason,"
                " rows_accepted, rows_rejected FROM submission WHERE county_code = :c"
                " ORDER BY period DESC, received_at DESC"
            ),
            {"c": county},
        ).all()
        ups = conn.execute(
            sa.select(portal_upload)
            .where(portal_upload.c.county_code == county, portal_upload.c.submitted_at.is_not(None))
            .order_by(portal_upload.c.submitted_at.desc())
        ).all()
    loaded = {(r.period, r.sha256) for r in subs}
    out = []
    for u in ups:
        u = u._mapping
        if (u["period"], u["sha256"]) in loaded:
            continue
        out.append(
            SubmissionState(
                u["period"],
                KIND_NAME_ZH.get(u["kind"] or "", ""),
                u["file_name"],
                _utc(u["submitted_at"]),
                "waiting",
                STATE_ZH["waiting"],
                None,
                None,
                u["upload_id"],
                None,
                None,
            )
        )
    portal_names = {(u._mapping["period"], u._mapping["sha256"]): u._mapping["file_name"] for u in ups}
    for r in subs:
        out.append(
            SubmissionState(
                r.period,
                KIND_NAME_ZH.get(r.kind, r.kind),
                portal_names.get((r.period, r.sha256), r.file_name or ""),
                _utc(r.received_at),
                r.status,
                STATE_ZH.get(r.status, r.status),
                r.reason,
                r.submission_id,
                None,
                r.rows_accepted,
                r.rows_rejected,
            )
        )
    return sorted(
        out, key=lambda s: (s.period, s.received_at or datetime.min.replace(tzinfo=UTC)), reverse=True
    )


@dataclass(frozen=True)
class Receipt:
    submission_id: str
    county_name: str
    period: str
    kind_zh: str
    state_zh: str
    reason: str | None
    rows_total: int
    rows_accepted: int
    rows_rejected: int
    issues: list[Finding]


def receipt(engine: sa.Engine, submission_id: str) -> Receipt:
    from portal.service import county_names

    with engine.connect() as conn:
        s = conn.execute(
            sa.text("SELECT * FROM submission WHERE submission_id = :s"), {"s": submission_id}
        ).first()
        issues = pd.DataFrame(
            conn.execute(
                sa.text(
                    "SELECT row_number, severity, rule, column_name, value, message, is_explained, project_id"
                    " FROM dq_issue WHERE submission_id = :s"
                ),
                {"s": submission_id},
            ).all(),
            columns=[
                "row_number",
                "severity",
                "rule",
                "column_name",
                "value",
                "message",
                "is_explained",
                "project_id",
            ],
        )
    s = s._mapping
    issues["row_number"] = issues["row_number"].astype("Int64")
    return Receipt(
        submission_id=submission_id,
        county_name=county_names(engine).get(s["county_code"], s["county_code"]),
        period=s["period"],
        kind_zh=KIND_NAME_ZH.get(s["kind"], s["kind"]),
        state_zh=STATE_ZH.get(s["status"], s["status"]),
        reason=s["reason"],
        rows_total=int(s["rows_total"] or 0),
        rows_accepted=int(s["rows_accepted"] or 0),
        rows_rejected=int(s["rows_rejected"] or 0),
        issues=_findings(issues, s["kind"]) if len(issues) else [],
    )
