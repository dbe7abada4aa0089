"""One entry point for the pack, shared by the CLI (``gaibao pack``) and the Prefect flow."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gaibao.settings import Settings, get_settings
from reports import periods
from reports.config import load_recipients, load_score_weights, load_thresholds
from reports.delivery import DeliveryReport, deliver_pack
from reports.mail import MailSender
from reports.pack import PackResult, build_pack

log = logging.getLogger(__name__)


def default_period(settings: Settings | None = None) -> str:
    """The month whose returns the pack covers when none is given: last month (Asia/Shanghai)."""
    tz = ZoneInfo((settings or get_settings()).timezone)
    today = datetime.now(tz)
    return periods.previous(f"{today.year:04d}-{today.month:02d}")


def open_warehouse(settings: Settings) -> Any:
    from warehouse.store import Warehouse

    wh = Warehouse.from_settings(settings)
    wh.upgrade()
    return wh


def make_pack(
    period: str,
    settings: Settings,
    out: str | Path | None = None,
    warehouse: Any = None,
    letters: bool = True,
) -> PackResult:
    """Build the pack for ``period`` into ``out`` (default ``$GAIBAO_HOME/reports/<period>/``)."""
    periods.check_period(period)
    wh = warehouse or open_warehouse(settings)
    out_dir = Path(out) if out else settings.reports_dir / period
    return build_pack(
        wh,
        period,
        out_dir,
        load_thresholds(settings.thresholds),
        load_score_weights(settings.score_weights),
        letters=letters,
    )


def send_pack(
    result: PackResult,
    settings: Settings,
    resend: bool = False,
    warehouse: Any = None,
    sender: MailSender | None = None,
) -> DeliveryReport:
    wh = warehouse or open_warehouse(settings)
    return deliver_pack(
        result, wh, settings, sender=sender, recipients=load_recipients(settings.recipients), resend=resend
    )


def summary(result: PackResult, delivery: DeliveryReport | None) -> dict[str, Any]:
    """What the CLI prints and the flow returns: paths, counts, the digest, what changed."""
    out: dict[str, Any] = {
        "period": result.period,
        "out_dir": str(result.out_dir),
        "files": {k: str(v) for k, v in result.files.items()},
        "letters": len(result.letters),
        "pack_digest": result.pack_digest,
        "changes": result.changes,
        "exceptions": result.exception_counts,
        "counties_scored": len(result.scorecard),
    }
    if delivery is not None:
        out["delivery"] = delivery.summary()
        out["messages"] = [d["location"] for d in delivery.sent]
        out["failed"] = delivery.failed
    return out


def run_pack(
    period: str | None = None,
    send: bool = False,
    resend: bool = False,
    out: str | Path | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Build (and with ``send`` deliver) the pack; return :func:`summary`."""
    settings = settings or get_settings()
    period = period or default_period(settings)
    wh = open_warehouse(settings)
    try:
        result = make_pack(period, settings, out, warehouse=wh)
        delivery = send_pack(result, settings, resend=resend, warehouse=wh) if (send or resend) else None
    finally:
        wh.close()
    return summary(result, delivery)
