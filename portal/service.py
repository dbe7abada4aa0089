"""Plain functions behind the portal's routes that are not checking, templates or the wall chart."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from portal.access import Viewer
from portal.schema import portal_user

log = logging.getLogger(__name__)


def open_portal_warehouse(settings: Any) -> Any:
    """The warehouse the portal reads: upgraded to head (the portal's tables) and divisions seeded."""
    from tasks.ingest import seed_divisions
    from warehouse.store import Warehouse

    wh = Warehouse.from_settings(settings)
    wh.upgrade()
    seed_divisions(wh)
    return wh


def warehouse_reachable(warehouse: Any) -> tuple[bool, str]:
    try:
        with warehouse.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1 FROM portal_user WHERE 1 = 0")).all()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        log.warning("health: warehouse unreachable: %s", type(exc).__name__)
        return False, "warehouse unreachable"
    return True, "warehouse reachable"


def county_names(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT county_code, county_name FROM ref_division")).all())


@dataclass(frozen=True)
class ClerkHome:
    county_code: str
    county_name: str
    periods: list[str]
    default_period: str
    last_accepted: str | None


def clerk_home(warehouse: Any, viewer: Viewer) -> ClerkHome:
    from portal.checking import default_period, last_accepted_period, period_choices

    code = viewer.county_code or ""
    name = county_names(warehouse.engine).get(code, code)
    last = last_accepted_period(warehouse.engine, code, "progress")
    periods = period_choices(warehouse.engine, last)
    return ClerkHome(code, name, periods, default_period(last), last)


def disable_by_id(engine: sa.Engine, user_id: int, viewer: Viewer) -> None:
    from fastapi import HTTPException

    from portal.accounts import disable_user

    with engine.connect() as conn:
        row = conn.execute(sa.select(portal_user.c.username).where(portal_user.c.user_id == user_id)).first()
    if row is None:
        raise HTTPException(404, "账号不存在")
    if viewer.user is not None and viewer.user.user_id == user_id:
        raise HTTPException(400, "不能停用自己的账号")
    disable_user(engine, row[0])
