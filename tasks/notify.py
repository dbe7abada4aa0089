"""The failed-run and crashed-run notices: tell the data engineers which step stopped, for which
county, and why.

Plain functions (no Prefect here): ``flows/hooks.py`` holds the Prefect ``on_failure`` and
``on_crashed`` hooks that gather the facts from the flow run and call :func:`send_failure_notice`.
A *failed* run raised an error the flow saw; a *crashed* run's process ended before the run could
finish (killed, SIGTERM, Ctrl-C, worker lost): its notice says so and carries Prefect's state
message. Both go through the same mail sender as the meeting pack
(``reports.mail.sender_from_settings``): an ``.eml`` in ``$GAIBAO_HOME/outbox/alerts/`` in outbox
mode, SMTP otherwise.

The error text is engineers' material, but it must not carry county personal data out of the
warehouse: SQL parameter dumps and "failing row" details are cut before it is mailed.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from gaibao.settings import Settings

log = logging.getLogger(__name__)

STEPS_FILE = str(Path(__file__).resolve().with_name("steps.py"))
# The pack flow's tasks live beside its flow (flows/pack.py): its traceback names them there.
PACK_STEPS_FILE = str(Path(__file__).resolve().parent.parent / "flows" / "pack.py")
MAX_ERROR_CHARS = 6000
UNKNOWN_ZH = "未能确定"

# Text that may carry row values (reporter, phone …) out of the warehouse.
_SENSITIVE = [
    (re.compile(r"\[parameters: .*?\]\s*(?=\n|\(Background|$)", re.S), "[parameters: omitted]"),
    (re.compile(r"(?m)^(\s*DETAIL:\s*Failing row contains).*$"), r"\1 (omitted)"),
    (re.compile(r"(?m)^(\s*DETAIL:\s*Key \().*$"), r"\1… (omitted)"),
]


@dataclass
class FailureNotice:
    """What the data engineers are told about one failed (or crashed) flow run."""

    flow_name: str
    flow_run_name: str
    flow_run_id: str
    parameters: dict[str, Any]
    step: str | None  # the failed task (``load_returns``), None when no task failed
    task_run_name: str | None  # the failed task run (``load_returns-3f2``)
    county: str | None  # the failing county when known
    error: str  # exception type and message, cleaned
    details: str  # traceback, cleaned and cut
    state_message: str = ""
    failed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    crashed: bool = False  # the run's process ended before the run finished (Prefect ``Crashed``)

    @property
    def period(self) -> str | None:
        p = self.parameters
        if p.get("period"):
            return str(p["period"])
        if p.get("start"):
            return f"{p['start']}..{p.get('end') or p['start']}"
        return None


def clean_error_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Cut what could carry personal data (SQL parameters, failing rows) and cap the length."""
    for pattern, replacement in _SENSITIVE:
        text = pattern.sub(replacement, text)
    if len(text) > limit:
        text = "…\n" + text[-limit:]
    return text


def exception_chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and its causes / contexts, outermost first (each once)."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def failing_step_from_traceback(exc: BaseException | None, steps_file: str | None = None) -> str | None:
    """The innermost function of ``tasks/steps.py`` the exception passed through (the task's name).

    Every Prefect task of the pipeline is a function of that module named like the task, so the
    traceback names the step exactly, in the process where it failed.
    """
    files = {steps_file} if steps_file else {STEPS_FILE, PACK_STEPS_FILE}
    found: str | None = None
    for link in reversed(exception_chain(exc)):
        for frame in traceback.extract_tb(link.__traceback__):
            if frame.filename in files and frame.name != "monthly_meeting_pack":
                found = frame.name.removesuffix("_task")
        if found:
            return found
    return None


# A lake partition in a path (``progress/period=2018-12/county=341202/…``): lake paths are built
# from checked codes only (warehouse.lake), never from county text.
_PARTITION_COUNTY = re.compile(r"(?:^|/)county=(\d{6})(?:/|$)")


def county_from_exception(exc: BaseException | None) -> str | None:
    """A county code carried by the error (``county_code`` / ``county`` attribute), else by the
    lake partition of a file the error names (an ``OSError``'s ``filename`` / ``filename2``), if
    only one county's."""
    chain = exception_chain(exc)
    for link in chain:
        for attr in ("county_code", "county"):
            value = getattr(link, attr, None)
            if isinstance(value, str) and re.fullmatch(r"\d{6}", value):
                return value
    for link in chain:
        if isinstance(link, OSError):
            found = {
                m.group(1)
                for name in (link.filename, link.filename2)
                if isinstance(name, str | Path) and (m := _PARTITION_COUNTY.search(str(name)))
            }
            if len(found) == 1:
                return found.pop()
    return None


def describe_counties(parameters: Mapping[str, Any]) -> str | None:
    """The counties a run was limited to (its ``counties`` parameter), if it was."""
    counties = parameters.get("counties")
    if isinstance(counties, Iterable) and not isinstance(counties, str | bytes):
        codes = [str(c) for c in counties]
        return "、".join(codes) if codes else None
    return None


def error_text(exc: BaseException | None, fallback: str = "") -> tuple[str, str]:
    """(one-line error, traceback) of ``exc``, both cleaned."""
    if exc is None:
        return clean_error_text(fallback or "unknown error"), ""
    message = str(exc).strip()
    one_line = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    details = "".join(traceback.format_exception(exc))
    return clean_error_text(one_line, 1000), clean_error_text(details)


def compose_notice(notice: FailureNotice) -> tuple[str, str]:
    """Subject and plain-text body (Chinese first, English detail) of a failed-run notice
    (of a crashed-run notice when ``notice.crashed``: :func:`compose_crash_notice`)."""
    if notice.crashed:
        return compose_crash_notice(notice)
    step = notice.step or UNKNOWN_ZH
    county = notice.county or UNKNOWN_ZH
    period = notice.period
    subject = f"【gaibao】运行失败：{notice.flow_name}" + (f" {period}" if period else "") + f"，步骤 {step}"
    params = ", ".join(f"{k}={v}" for k, v in sorted(notice.parameters.items())) or "—"
    lines = [
        f"流程 {notice.flow_name} 的运行 {notice.flow_run_name} 失败。",
        "",
        f"失败步骤：{step}" + (f"（任务运行 {notice.task_run_name}）" if notice.task_run_name else ""),
        f"县区：{county}",
        f"报告期：{period or UNKNOWN_ZH}",
        f"错误：{notice.error}",
        "",
        f"参数：{params}",
        f"流程运行 ID：{notice.flow_run_id}",
        f"时间（UTC）：{notice.failed_at:%Y-%m-%d %H:%M:%S}",
        (
            "失败的入库是整批回滚的：仓库保持运行前的状态；排除原因后重跑本期即可。"
            if notice.flow_name != "monthly-meeting-pack"
            else "材料没有生成或没有全部发出：排除原因后重跑本期材料即可（已发出的不会重复发送）。"
        ),
        "",
        "-- English --",
        f"Flow {notice.flow_name}, run {notice.flow_run_name} ({notice.flow_run_id}) failed.",
        f"Step: {notice.step or 'unknown'}; county: {notice.county or 'unknown'}; period: {period or 'unknown'}.",
        f"Error: {notice.error}",
    ]
    if notice.state_message:
        lines.append(f"State: {clean_error_text(notice.state_message, 1000)}")
    if notice.details:
        lines += ["", "Traceback:", notice.details]
    return subject, "\n".join(lines) + "\n"


def compose_crash_notice(notice: FailureNotice) -> tuple[str, str]:
    """Subject and body of a crashed-run notice: the process ended before the run finished."""
    step = notice.step or UNKNOWN_ZH
    county = notice.county or UNKNOWN_ZH
    period = notice.period
    state_message = clean_error_text(notice.state_message, 1000) if notice.state_message else ""
    subject = (
        f"【gaibao】运行中断（Crashed）：{notice.flow_name}"
        + (f" {period}" if period else "")
        + f"，步骤 {step}"
    )
    params = ", ".join(f"{k}={v}" for k, v in sorted(notice.parameters.items())) or "—"
    lines = [
        f"流程 {notice.flow_name} 的运行 {notice.flow_run_name} 中断（Crashed）：运行进程在运行结束前退出"
        "（被终止、被中断或工作进程丢失），本次运行没有完成。",
        "",
        f"中断时的步骤：{step}" + (f"（任务运行 {notice.task_run_name}）" if notice.task_run_name else ""),
        f"县区：{county}",
        f"报告期：{period or UNKNOWN_ZH}",
        f"中断原因（Prefect 状态消息）：{state_message or UNKNOWN_ZH}",
    ]
    if notice.details:
        lines.append(f"异常：{notice.error}")
    lines += [
        "",
        f"参数：{params}",
        f"流程运行 ID：{notice.flow_run_id}",
        f"时间（UTC）：{notice.failed_at:%Y-%m-%d %H:%M:%S}",
        "中断时正在进行的入库不会留下半批数据：下次打开仓库时按入库日志自动完成或撤销。查明中断原因后重跑本期即可。",
        "",
        "-- English --",
        f"Flow {notice.flow_name}, run {notice.flow_run_name} ({notice.flow_run_id}) crashed: "
        "its process ended before the run finished.",
        f"Step: {notice.step or 'unknown'}; county: {notice.county or 'unknown'}; period: {period or 'unknown'}.",
        f"State: {state_message or 'unknown'}",
    ]
    if notice.details:
        lines += [f"Error: {notice.error}", "", "Traceback:", notice.details]
    return subject, "\n".join(lines) + "\n"


def build_notice_message(notice: FailureNotice, settings: Settings) -> EmailMessage:
    """The notice as a plain-text message, with the pack's message policy (7bit, CRLF)."""
    from reports.mail import MESSAGE_POLICY

    subject, body = compose_notice(notice)
    msg = EmailMessage(policy=MESSAGE_POLICY)
    msg["Subject"] = subject
    msg["From"] = settings.mail_from
    msg["To"] = ", ".join(settings.data_engineers)
    msg["Date"] = formatdate(localtime=False)
    domain = settings.mail_from.rsplit("@", 1)[-1] if "@" in settings.mail_from else "localhost"
    msg["Message-ID"] = make_msgid(domain=re.sub(r"[^A-Za-z0-9.-]", "", domain) or "localhost")
    msg["X-Gaibao-Flow-Run"] = notice.flow_run_id
    msg["X-Gaibao-Run-State"] = "Crashed" if notice.crashed else "Failed"
    msg.set_content(body, subtype="plain", charset="utf-8")
    return msg


def send_failure_notice(notice: FailureNotice, settings: Settings) -> str | None:
    """Mail the notice (failed or crashed) to ``settings.data_engineers``; return where it went
    (None: nobody to tell, or it could not be sent).

    Never raises: a notice that cannot be sent is logged, the run's own failure stands.
    """
    what = "crash notice" if notice.crashed else "failure notice"
    if not settings.data_engineers:
        log.warning("no GAIBAO_DATA_ENGINEERS configured; %s not sent: %s", what, compose_notice(notice)[0])
        return None
    try:
        from reports.mail import sender_from_settings

        msg = build_notice_message(notice, settings)
        key = f"alerts/{notice.flow_name}-{notice.flow_run_id}" + ("-crashed" if notice.crashed else "")
        where = sender_from_settings(settings).send(msg, list(settings.data_engineers), key)
        log.info("%s for %s sent: %s", what, notice.flow_run_name, where)
        return where
    except Exception:  # noqa: BLE001 - the notice must never mask the run's failure
        log.exception("could not send the %s for %s", what, notice.flow_run_name)
        return None
