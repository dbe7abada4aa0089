"""The wall chart's routes (挂图作战), the county pages, the pack download and the public column.

Included by ``portal.app`` (``ROUTE_MODULES``). Who may open each route is decided
by the app's one guard (``portal.access.ROUTE_AUDIENCE``: ``wallchart`` and ``city_page`` for
city officers and meeting members, ``county_page`` for a county's clerk, its city and the
province, ``pack_download`` for the province, ``public_column`` for everyone); the guard also
resolves ``{county}`` and ``{city}`` in the path and refuses another county's or city's with 403.
The routes then cut every query to ``viewer.counties``.

Pages are rendered in two parts: the content (the same for every viewer of one scope and month)
is rendered once per data version (:func:`portal.wallchart.data_version`) and kept for at most
``CACHE_TTL_S`` seconds; the frame around it (the viewer's name, the CSRF token) is rendered per
request.
"""

from __future__ import annotations

import threading
from typing import Any

from cachetools import TTLCache
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from markupsafe import Markup

from portal import countymap, public, wallchart
from portal.access import viewer_of
from portal.render import page, render_page

router = APIRouter()

CACHE_TTL_S = 60
_cache: TTLCache = TTLCache(maxsize=256, ttl=CACHE_TTL_S)
_lock = threading.Lock()


def _cached(key: tuple, build: Any) -> str:
    with _lock:
        hit = _cache.get(key)
    if hit is not None:
        return hit
    value = build()
    with _lock:
        _cache[key] = value
    return value


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def _period(value: str | None) -> str | None:
    try:
        return wallchart.check_period(value)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


def _body(template: str, **context: Any) -> str:
    return render_page(template, **context)


def wall_body(request: Request, period: str | None, counties: Any, city_code: str | None) -> tuple[str, str]:
    """(content HTML, title) of a wall chart, from the cache when the data did not change."""
    wh = request.app.state.warehouse
    settings = request.app.state.settings
    viewer = viewer_of(request)
    with_pack = viewer.role == "province"
    latest = wallchart.mart_periods(wh.engine)
    shown = period if period in latest else (latest[0] if latest else None)
    version = wallchart.data_version(wh.engine, shown) if shown else None
    scope = ("all",) if counties is None else tuple(sorted(counties))
    key = ("wall", scope, city_code, shown, with_pack, version)

    def build() -> str:
        data = wallchart.wall_chart(wh.engine, settings, shown, counties, city_code, with_pack=with_pack)
        if data is None:
            return "<p>数据仓库中还没有任何县区月报。</p>"
        data.map_svg, rest, data.map_note = countymap.county_map(data.tiles)
        return _body("wall_body.html", w=data, rest_tiles=rest, legend=wallchart.LEGEND, list_limit=200)

    title = "挂图作战" + (f"（{shown}）" if shown else "")
    return (_cached(key, build) if version is not None and version[0] == 0 else build()), title


@router.get("/wallchart", name="wallchart", response_class=HTMLResponse)
def wall(request: Request, period: str | None = None) -> Response:
    viewer = viewer_of(request)
    city = viewer.city_code if viewer.role == "city" else None
    body, title = wall_body(request, _period(period), viewer.counties, city)
    return page(request, "wall.html", title=title, body=Markup(body))


@router.get("/wallchart/city/{city}", name="city_page", response_class=HTMLResponse)
def city_page(request: Request, city: str, period: str | None = None) -> Response:
    import sqlalchemy as sa

    viewer = viewer_of(request)
    with request.app.state.warehouse.engine.connect() as conn:
        codes = frozenset(
            r[0]
            for r in conn.execute(
                sa.text("SELECT county_code FROM ref_division WHERE city_code = :c"), {"c": city}
            )
        )
    if not codes:
        raise HTTPException(404, "未找到该市")
    if viewer.counties is not None:
        if not codes <= viewer.counties:
            raise HTTPException(403, "无权查看其他市的数据")
        codes = codes & viewer.counties
    body, title = wall_body(request, _period(period), codes, city)
    return page(request, "wall.html", title=title, body=Markup(body))


@router.get("/county/{county}", name="county_page", response_class=HTMLResponse)
def county(request: Request, county: str, period: str | None = None) -> Response:
    wh = request.app.state.warehouse
    p = _period(period)
    version = wallchart.data_version(wh.engine, p or "")
    key = ("county", county, p, version)

    def build() -> str:
        data = wallchart.county_page(wh.engine, county, p)
        if data is None:
            raise HTTPException(404, "未找到该县区")
        return _body("county_body.html", c=data, list_limit=None)

    body = _cached(key, build) if version[0] == 0 else build()
    return page(request, "wall.html", title="县区项目台账", body=Markup(body))


@router.get("/wallchart/pack/{period}/{key}", name="pack_download")
def pack_download(request: Request, period: str, key: str) -> Response:
    p = _period(period)
    found = wallchart.pack_file(request.app.state.warehouse.engine, request.app.state.settings, p, key)
    if found is None:
        raise HTTPException(404, "该月的会议材料中没有这个文件")
    path, name = found
    return FileResponse(path, filename=name)


@router.get("/public", name="public_column", response_class=HTMLResponse)
def public_column(
    request: Request, period: str | None = None, county: str | None = None, school: str | None = None
) -> Response:
    data = public.public_column(request.app.state.warehouse.engine, _period(period), county, school)
    title = "专栏公开：全面改薄项目进展公示" + (f"（{data.period_label}）" if data.period else "")
    return page(request, "public.html", title=title, p=data)
