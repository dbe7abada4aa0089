"""The end-of-run alert: one message per run to the data engineers listing every county whose
source stayed unreachable after its retries (county, source, last error), not one per county.

Plain functions (no Prefect); ``tasks.steps.alert_unreachable`` calls :func:`send_unreachable_alert`
at the end of the nightly and backfill runs. Sent through the pack's mail sender, as the
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
        msg["X-Gaibao-Alert"] = "unreachable-sources"
        msg.set_content(body, subtype="plain", charset="utf-8")
        key = f"alerts/unreachable-{flow_name}-{msg['Message-ID'].strip('<>').split('@')[0]}"
        return sender_from_settings(settings).send(msg, list(settings.data_engineers), key)
    except Exception:  # noqa: BLE001 - the alert must never turn a completed run into a failed one
        log.exception("could not send the unreachable-sources alert")
        return None
