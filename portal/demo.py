"""The demo's portal accounts: one login per role, created (or given a new password) by ``make demo``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

# (username, role, county, city, display name): Huaiyuan's clerk, Bengbu's officer, the province
DEMO_ACCOUNTS: tuple[tuple[str, str, str | None, str | None, str], ...] = (
    ("demo_clerk", "clerk", "340321", None, "怀远县教育局填报员"),
    ("demo_city", "city", None, "340300", "蚌埠市教育局"),
    ("demo_province", "province", None, None, "省全面改薄联席会议"),
    ("demo_admin", "admin", None, None, "系统管理员"),
)


@dataclass(frozen=True)
class DemoLogin:
    role_zh: str
    username: str
    password: str
    scope_zh: str


def demo_accounts(engine: sa.Engine) -> list[DemoLogin]:
    """Create the demo accounts, or reset their passwords when they exist (a second ``make demo``);
    returns each login with its new password (shown once, like ``gaibao users add``)."""
    from portal.accounts import add_user, reset_password
    from portal.schema import ROLE_NAME_ZH, portal_user

    with engine.connect() as conn:
        names = dict(conn.execute(sa.text("SELECT county_code, county_name FROM ref_division")).all())
        cities = dict(conn.execute(sa.text("SELECT DISTINCT city_code, city_name FROM ref_division")).all())
        existing = {r[0] for r in conn.execute(sa.select(portal_user.c.username))}
    out = []
    for username, role, county, city, display in DEMO_ACCOUNTS:
        if username in existing:
            password = reset_password(engine, username)
        else:
            password = add_user(
                engine, username, role, county_code=county, city_code=city, display_name=display
            )
        scope: Any = names.get(county, county) if county else (cities.get(city, city) if city else "")
        if role == "province":
            scope = "全省"
        elif role == "admin":
            scope = "账号管理"
        out.append(DemoLogin(ROLE_NAME_ZH[role], username, password, str(scope)))
    return out
