"""The portal's skeleton: health, landing, login and logout, roles, the users CLI, CSRF, the guard."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from portal_helpers import COUNTY_A, PASSWORD, build_portal_warehouse, csrf_of, login


@pytest.fixture
def portal(warehouse_url: str, gaibao_home: Path):
    from fastapi.testclient import TestClient

    from portal.app import create_app

    wh, settings, users = build_portal_warehouse(gaibao_home)
    app = create_app(wh, settings)
    yield app, wh, lambda: TestClient(app)
    wh.close()


def test_health_and_landing_page_link_login_and_public_column(portal) -> None:
    _, _, client = portal
    c = client()
    assert c.get("/health").json() == {"status": "ok", "detail": "warehouse reachable"}
    html = c.get("/").text
    assert 'href="/login"' in html and 'href="/public"' in html and "全面改薄信息平台" in html


def test_login_sets_a_signed_httponly_samesite_cookie_and_logout_ends_it(portal) -> None:
    _, _, client = portal
    c = client()
    r = login(c, "clerk_a")
    assert r.status_code == 303 and r.headers["location"] == "/home"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    home = c.get("/home")
    assert home.status_code == 200 and "怀远县" in home.text
    token = csrf_of(c)
    assert c.post("/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
    assert c.get("/home", follow_redirects=False).headers["location"] == "/login"


def test_a_tampered_cookie_is_no_session(portal) -> None:
    _, _, client = portal
    c = client()
    login(c, "clerk_a")
    value = c.cookies.get("gaibao_session")
    c.cookies.set("gaibao_session", value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB"))
    assert c.get("/home", follow_redirects=False).headers["location"] == "/login"


def test_passwords_are_argon2_hashes_never_the_clear_text(portal) -> None:
    _, wh, _ = portal
    with wh.engine.connect() as conn:
        hashes = [r[0] for r in conn.execute(sa.text("SELECT password_hash FROM portal_user")).all()]
    assert len(hashes) == 5
    assert all(h.startswith("$argon2id$") and PASSWORD not in h for h in hashes)


def test_failed_logins_are_logged_and_slowed_down(portal, caplog: pytest.LogCaptureFixture) -> None:
    _, wh, client = portal
    c = client()
    caplog.set_level(logging.WARNING, logger="portal.accounts")
    for _ in range(5):
        r = login(c, "clerk_a", "wrong-password-x")
        assert r.status_code == 401 and "用户名或密码不正确" in r.text
    assert sum("failed login for 'clerk_a'" in m for m in caplog.messages) == 5
    assert all("wrong-password-x" not in m for m in caplog.messages)
    r = login(c, "clerk_a")  # the right password, but the account must wait now
    assert r.status_code == 429 and "秒后再试" in r.text
    with wh.engine.connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT COUNT(*) FROM portal_login_failure WHERE username = 'clerk_a'")
            ).scalar()
            == 5
        )


def test_every_form_needs_the_csrf_token(portal) -> None:
    _, _, client = portal
    c = client()
    r = c.post("/login", data={"username": "clerk_a", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403 and "表单已过期" in r.text
    r = c.post(
        "/login", data={"username": "clerk_a", "password": PASSWORD, "csrf": "forged"}, follow_redirects=False
    )
    assert r.status_code == 403
    login(c, "clerk_a")
    assert c.post("/logout", follow_redirects=False).status_code == 403


def test_every_route_has_an_audience_in_the_one_guard(portal) -> None:
    from fastapi.routing import APIRoute

    from portal.access import ROUTE_AUDIENCE
    from portal.app import named_routes

    app, _, _ = portal
    names = {r.name for r in named_routes(app) if isinstance(r, APIRoute)}
    assert names and names <= set(ROUTE_AUDIENCE)


@pytest.mark.parametrize(
    ("user", "path", "status"),
    [
        ("clerk_a", "/admin/users", 403),
        ("city_a", "/submissions", 403),
        ("prov", "/admin/users", 403),
        ("admin", "/admin/users", 200),
        ("admin", "/submissions", 403),
        ("city_a", "/template?period=2018-12", 403),
        (None, "/home", 303),
        (None, "/submissions", 303),
    ],
)
def test_roles_decide_the_pages(portal, user: str | None, path: str, status: int) -> None:
    _, _, client = portal
    c = client()
    if user:
        login(c, user)
    assert c.get(path, follow_redirects=False).status_code == status


def test_disable_and_reset_end_open_sessions(portal) -> None:
    from portal.accounts import disable_user, reset_password

    _, wh, client = portal
    c = client()
    login(c, "clerk_a")
    assert c.get("/home").status_code == 200
    disable_user(wh.engine, "clerk_a")
    assert c.get("/home", follow_redirects=False).headers["location"] == "/login"
    assert "已停用" in login(c, "clerk_a").text
    new = reset_password(wh.engine, "clerk_a")
    assert login(c, "clerk_a", new).status_code == 303
    c2 = client()
    login(c2, "clerk_a", new)
    reset_password(wh.engine, "clerk_a", "another-password-1")
    assert c2.get("/home", follow_redirects=False).status_code == 303


def test_users_cli_add_import_disable_reset(warehouse_url: str, gaibao_home: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gaibao.cli import app
    from gaibao.settings import get_settings
    from portal.accounts import authenticate
    from portal.service import open_portal_warehouse

    runner = CliRunner()
    r = runner.invoke(
        app, ["users", "add", "hy_clerk", "--role", "clerk", "--county", COUNTY_A, "--name", "怀远县"]
    )
    assert r.exit_code == 0, r.output
    password = r.output.split("：")[-1].strip()
    wh = open_portal_warehouse(get_settings())
    assert authenticate(wh.engine, "hy_clerk", password).user.county_code == COUNTY_A
    bad = runner.invoke(app, ["users", "add", "x_clerk", "--role", "clerk", "--county", "999999"])
    assert bad.exit_code == 1 and "999999" in bad.output
    csv_file = tmp_path / "users.csv"
    csv_file.write_text(
        "username,role,county_code,city_code,display_name\nbb_city,city,,340300,蚌埠市\np1,province,,,省厅\n",
        encoding="utf-8",
    )
    r = runner.invoke(app, ["users", "import", str(csv_file)])
    assert r.exit_code == 0 and "bb_city" in r.output and "p1" in r.output
    pw = dict(line.strip().split("\t") for line in r.output.splitlines() if "\t" in line)
    assert authenticate(wh.engine, "bb_city", pw["bb_city"]).user.city_code == "340300"
    again = runner.invoke(app, ["users", "import", str(csv_file)])
    assert again.exit_code == 1 and "已存在" in again.output
    assert runner.invoke(app, ["users", "disable", "p1"]).exit_code == 0
    assert authenticate(wh.engine, "p1", pw["p1"]).user is None
    r = runner.invoke(app, ["users", "reset", "p1"])
    assert r.exit_code == 0
    assert authenticate(wh.engine, "p1", r.output.split("：")[-1].strip()).user.role == "province"
    wh.close()
