"""The monthly joint-meeting pack flow: build the pack, then (optionally) deliver it.

Thin wiring over ``reports.service``; sending retries live in the SMTP sender. A failed or crashed
run mails the data engineers, with the same hooks as the ingest flows (``flows/hooks.py``).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.hooks import notify_crash, notify_failure
from gaibao.settings import get_settings
from reports.service import default_period, make_pack, open_warehouse, send_pack, summary


@task(name="build_pack", cache_policy=NO_CACHE)
def build_pack_task(period: str, out: str | None, warehouse: Any) -> Any:
    return make_pack(period, get_settings(), out, warehouse=warehouse)


@task(name="deliver_pack", cache_policy=NO_CACHE)
def deliver_pack_task(result: Any, resend: bool, warehouse: Any) -> Any:
    return send_pack(result, get_settings(), resend=resend, warehouse=warehouse)


@flow(name="monthly-meeting-pack", on_failure=[notify_failure], on_crashed=[notify_crash])
def monthly_meeting_pack(
    period: str | None = None, send: bool = False, resend: bool = False, out: str | None = None
) -> dict:
    """Build the pack for ``period`` (default: last month) and, with ``send``, deliver it."""
    logger = get_run_logger()
    settings = get_settings()
    period = period or default_period(settings)
    wh = open_warehouse(settings)
    try:
        result = build_pack_task(period, out, wh)
        delivery = deliver_pack_task(result, resend, wh) if (send or resend) else None
    finally:
        wh.close()
    out_summary = summary(result, delivery)
    logger.info("pack %s: %s", period, {k: out_summary[k] for k in ("out_dir", "letters", "exceptions")})
    return out_summary
