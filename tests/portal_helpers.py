"""Helpers for the portal tests: a small real warehouse (two cities, three counties) and accounts.

The returns are real files in the inbox, ingested by the pipeline's own plain functions (the
steps the nightly flow wraps, without Prefect's engine: the portal tests need the warehouse, not
the orchestration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from filebuilders import progress_rows, write_return

COUNTY_A = "340321"  # 怀远县, 蚌埠市
COUNTY_A2 = "340322"  # 五河县, 蚌埠市
COUNTY_B = "341222"  # 太和县, 阜阳市
CITY_A = "340300"
PASSWORD = "correct-horse-battery"


def county_rows(county: str, period: str, n: int = 4) -> list[dict[str, Any]]:
    rows = progress_rows(n, county_code=county, period=period)
    prefix = {"340321": "HY", "340322": "WH", "341222": "TH"}[county]
    name = {"340321": "怀远县", "340322": "五河县", "341222": "太和县"}[county]
    for i, row in enumerate(rows):
        row["project_id"] = f"{prefix}-2018-{i + 1:03d}"
        row["school_name"] = f"{name}第{i + 1}小学"
        row["school_code"] = f"{county}{i:04d}"
    return rows


def write_inbox(
    home: Path, county: str, period: str, rows: list[dict[str, Any]], suffix: str = "csv"
) -> Path:
    folder = home / "inbox" / county
    folder.mkdir(parents=True, exist_ok=True)
    return write_return(folder / f"{county}_{period}_进展.{suffix}", rows, "progress")


def ingest_plain(wh: Any, settings: Any, period: str) -> None:
    """One period through fetch, read, judge and load, and the marts, with the pipeline's functions."""
    from tasks import ingest

    plan = ingest.plan_run(wh, settings, period, None, False)
    chunks = [ingest.fetch_and_read(chunk, period, settings, plan.known) for chunk in plan.chunks]
    gathered = ingest.gather_period(settings, period, chunks, plan.archived)
    judged = ingest.judge_period(wh, settings, gathered)
    ingest.load_judged(wh, judged)
    wh.rebuild_marts(from_period=period, only_if_changed=True)


def build_portal_warehouse(home: Path) -> tuple[Any, Any, dict[str, str]]:
    """(warehouse, settings, {role name: username}) with 2018-11 accepted for three counties."""
    from gaibao.settings import get_settings
    from portal.accounts import add_user
    from portal.service import open_portal_warehouse

    get_settings.cache_clear()
    settings = get_settings()
    for county in (COUNTY_A, COUNTY_A2, COUNTY_B):
        write_inbox(home, county, "2018-11", county_rows(county, "2018-11"))
    wh = open_portal_warehouse(settings)
    ingest_plain(wh, settings, "2018-11")
    users = {
        "clerk_a": "clerk_a",
        "clerk_b": "clerk_b",
        "city_a": "city_a",
        "province": "prov",
        "admin": "admin",
    }
    add_user(
        wh.engine, "clerk_a", "clerk", county_code=COUNTY_A, display_name="怀远县填报员", password=PASSWORD
    )
    add_user(
        wh.engine, "clerk_b", "clerk", county_code=COUNTY_B, display_name="太和县填报员", password=PASSWORD
    )
    add_user(wh.engine, "city_a", "city", city_code=CITY_A, display_name="蚌埠市教育局", password=PASSWORD)
    add_user(wh.engine, "prov", "province", display_name="省联席会议", password=PASSWORD)
    add_user(wh.engine, "admin", "admin", display_name="管理员", password=PASSWORD)
    return wh, settings, users


def login(client: Any, username: str, password: str = PASSWORD) -> Any:
    client.get("/login")
    return client.post(
        "/login",
        data={"username": username, "password": password, "csrf": client.cookies and csrf_of(client)},
        follow_redirects=False,
    )


def csrf_of(client: Any) -> str:
    """The CSRF token the pages of this session carry (read from a page, as a browser would)."""
    import re

    html = client.get("/login").text
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token on the login page"
    return m.group(1)


class PortalServer:
    """The portal app served by uvicorn on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(self.config)
        self.thread: Any = None
        self.base_url = ""

    def __enter__(self) -> PortalServer:
        import threading
        import time

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the portal server did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def client(self) -> Any:
        import httpx

        return httpx.Client(base_url=self.base_url, timeout=60)
