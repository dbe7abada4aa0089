"""The end-of-run alerts, each one message per run to the data engineers, not one per county:
every county whose source stayed unreachable after its retries (county, source, last error), and
every county whose file was set aside for a fault on gaibao's side (county, file, code, error:
``gaibao.contract.SET_ASIDE_CODES``, built from the outcomes recorded for those files).

Plain functions (no Prefect); ``tasks.steps.alert_unreachable`` and ``alert_set_aside`` call
:func:`send_unreachable_alert` and :func:`send_set_aside_alert` at the end of the nightly and
backfill runs. Sent through the pack's mail sender, as the
failure notices are (``outbox/alerts/`` in outbox mode).
"""

from __future__ import annotations

import logging
import re
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from gaibao.settings import Settings
from tasks.notify import clean_error_text

log = logging.getLogger(__name__)


def compose_unreachable_alert(flow_name: str, periods: list[str], problems: dict) -> tuple[str, str]:
    """Subject and body of the alert; ``problems``: (county_code, period) -> {source, error, attempts, reason}."""
    counties = sorted({county for county, _ in problems})
    span = periods[0] if len(periods) == 1 else f"{periods[0]}..{periods[-1]}"
    subject = f"【gaibao】数据源无法访问：{flow_name} {span}，{len(counties)} 个县区"
    lines = [
        f"流程 {flow_name}（报告期 {span}）结束时，以下 {len(counties)} 个县区的数据源在重试后仍无法访问，"
        "本次没有取到它们的报表：",
        "",
    ]
    for (county, period), info in sorted(problems.items()):
        lines += [
            f"县区：{county}　报告期：{period}",
            f"  数据源：{info.get('source', '未能确定')}",
            f"  尝试次数：{info.get('attempts', '未能确定')}",
            f"  原因：{info.get('reason', '')}",
            f"  最后一次错误：{clean_error_text(str(info.get('error', '')), 500)}",
            "",
        ]
    lines += [
        "其他县区已照常处理。排除原因后，对这些县区重跑本期即可：",
        "  gaibao ingest --period <报告期> " + " ".join(f"--county {c}" for c in counties),
        "",
        "-- English --",
        f"{flow_name} {span}: {len(counties)} county source(s) unreachable after retries: {', '.join(counties)}.",
    ]
    return subject, "\n".join(lines) + "\n"


def send_unreachable_alert(
    flow_name: str, periods: list[str], problems: dict, settings: Settings
) -> str | None:
    """Mail the alert to ``settings.data_engineers`` when there are problems; where it went
    (None: nothing to tell, nobody to tell, or it could not be sent). Never raises."""
    if not problems:
        return None
    subject, body = compose_unreachable_alert(flow_name, periods, problems)
    return _send_alert(subject, body, "unreachable-sources", f"unreachable-{flow_name}", settings)


def compose_set_aside_alert(flow_name: str, periods: list[str], items: list[dict]) -> tuple[str, str]:
    """Subject and body of the set-aside alert; ``items``: ``RunSummary.set_aside`` (county_code,
    period, file_name, sha256, code, error, submission_id)."""
    from gaibao.contract import REFUSAL_CODES

    counties = sorted({str(item["county_code"]) for item in items})
    span = periods[0] if len(periods) == 1 else f"{periods[0]}..{periods[-1]}"
    codes = sorted({str(item["code"]) for item in items})
    subject = f"【gaibao】文件被搁置：{flow_name} {span}，{len(counties)} 个县区（{'、'.join(codes)}）"
    lines = [
        f"流程 {flow_name}（报告期 {span}）中，以下 {len(counties)} 个县区的文件因系统一侧的故障"
        "（存档、读取程序或校验程序出错）被搁置，没有入库；其他县区已照常入库：",
        "",
    ]
    key = lambda item: (str(item["county_code"]), str(item["period"]), str(item["file_name"]))  # noqa: E731
    for item in sorted(items, key=key):
        code = str(item["code"])
        sid = item.get("submission_id")
        lines += [
            f"县区：{item['county_code']}　报告期：{item['period']}",
            f"  文件：{item['file_name']}",
            f"  sha256：{item['sha256']}",
            f"  原因代码：{code}（{REFUSAL_CODES.get(code, '文件被搁置')}）",
            f"  错误：{clean_error_text(str(item.get('error', '')), 500)}",
            (
                f"  记录：报送 {sid}（状态 refused，原因 {code}）"
                if sid
                else "  记录：这份文件此前已处理，已入库的数据不变；存档中的原件已损坏"
            ),
            "",
        ]
    if "ARCHIVE_CORRUPT" in codes:
        lines += [
            "ARCHIVE_CORRUPT：存档中该 sha256 的对象与文件不符或无法读写。存档从不覆盖已有对象："
            "请核查该对象（保留证据），移走或删除它之后，下次运行会重新存档并处理这份文件，县区无需重新报送。",
            "",
        ]
    lines += [
        "-- English --",
        f"{flow_name} {span}: {len(items)} file(s) of {len(counties)} county(ies) set aside "
        f"({', '.join(codes)}): {', '.join(counties)}.",
    ]
    return subject, "\n".join(lines) + "\n"


def send_set_aside_alert(
    flow_name: str, periods: list[str], items: list[dict], settings: Settings
) -> str | None:
    """Mail the set-aside alert to ``settings.data_engineers`` when files were set aside; where
    it went (None: nothing to tell, nobody to tell, or it could not be sent). Never raises."""
    if not items:
        return None
    subject, body = compose_set_aside_alert(flow_name, periods, items)
    return _send_alert(subject, body, "set-aside-files", f"set-aside-{flow_name}", settings)


def _send_alert(subject: str, body: str, kind: str, key_prefix: str, settings: Settings) -> str | None:
    """Send one alert (``X-Gaibao-Alert: kind``), under the outbox key ``alerts/<key_prefix>-<id>``."""
    if not settings.data_engineers:
        log.warning("no GAIBAO_DATA_ENGINEERS configured; alert not sent: %s", subject)
        return None
    try:
        from reports.mail import MESSAGE_POLICY, sender_from_settings

        msg = EmailMessage(policy=MESSAGE_POLICY)
        msg["Subject"] = subject
        msg["From"] = settings.mail_from
        msg["To"] = ", ".join(settings.data_engineers)
        msg["Date"] = formatdate(localtime=False)
        domain = settings.mail_from.rsplit("@", 1)[-1] if "@" in settings.mail_from else "localhost"
        msg["Message-ID"] = make_msgid(domain=re.sub(r"[^A-Za-z0-9.-]", "", domain) or "localhost")
        msg["X-Gaibao-Alert"] = kind
        msg.set_content(body, subtype="plain", charset="utf-8")
        key = f"alerts/{key_prefix}-{msg['Message-ID'].strip('<>').split('@')[0]}"
        return sender_from_settings(settings).send(msg, list(settings.data_engineers), key)
    except Exception:  # noqa: BLE001 - the alert must never turn a completed run into a failed one
        log.exception("could not send the %s alert", kind)
        return None
