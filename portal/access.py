"""Who may see what: the one dependency every route runs (``guard``).

Every route is named, and ``ROUTE_AUDIENCE`` gives each name its audience; a route without an
entry answers 404 to everyone (closed by default, and a test checks that every route has one).
Then every identifier in the path is resolved to its county and checked against the user's:
``county`` (a county code), ``upload_id`` (a portal upload), ``submission_id`` (a warehouse
submission), ``city`` (a city code). Unknown ids answer 404, another county's 403. Unsafe methods
must carry the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``).

The route then reads the resolved :class:`Viewer` from ``request.state.viewer``.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from fastapi import HTTPException, Request

from portal.accounts import User, get_user
from portal.schema import portal_upload

log = logging.getLogger(__name__)

# audiences: public (no login), login (any account), clerk, watch (city and province members),
# county (a clerk for their own county, city members for their city's, province members), admin
ROUTE_AUDIENCE: dict[str, str] = {
    "health": "public",
    "landing": "public",
    "login_form": "public",
    "login": "public",
    "logout": "login",
    "static": "public",
    "public_column": "public",
    "home": "login",
    "template_download": "clerk",
    "upload_form": "clerk",
    "upload": "clerk",
    "upload_view": "clerk",
    "explain": "clerk",
    "submit": "clerk",
    "submissions": "clerk",
    "receipt": "county",
    "wallchart": "watch",
    "city_page": "watch",
    "county_page": "county",
    "pack_download": "province",
    "users": "admin",
    "user_disable": "admin",
}

ALLOWED_ROLES = {
    "public": None,
    "login": {"clerk", "city", "province", "admin"},
    "clerk": {"clerk"},
    "watch": {"city", "province"},
    "county": {"clerk", "city", "province"},
    "province": {"province"},
    "admin": {"admin"},
}


@dataclass(frozen=True)
class Viewer:
    """The user of one request and the counties they may see (``None``: every county)."""

    user: User | None
    counties: frozenset[str] | None
    csrf: str

    @property
    def role(self) -> str | None:
        return self.user.role if self.user else None

    @property
    def county_code(self) -> str | None:
        return self.user.county_code if self.user else None

    def sees(self, county_code: str | None) -> bool:
        return county_code is not None and (self.counties is None or county_code in self.counties)

    @property
    def city_code(self) -> str | None:
        return self.user.city_code if self.user else None


class LoginRequired(Exception):
    """Raised for an anonymous request to a page that needs an account (answered by a redirect)."""


def _counties_of(engine: sa.Engine, user: User) -> frozenset[str] | None:
    if user.role == "province":
        return None
    if user.role == "clerk":
        return frozenset({user.county_code}) if user.county_code else frozenset()
    if user.role == "city":
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT county_code FROM ref_division WHERE city_code = :c"), {"c": user.city_code}
            ).all()
        return frozenset(r[0] for r in rows)
    return frozenset()  # admin: accounts only, no county data


def current_user(request: Request) -> User | None:
    """The session's user if the account is still active and the session not voided by a reset."""
    uid, epoch = request.session.get("uid"), request.session.get("epoch")
    if uid is None:
        return None
    user = get_user(request.app.state.warehouse.engine, int(uid))
    if user is None or not user.is_active or user.auth_epoch != epoch:
        request.session.pop("uid", None)
        request.session.pop("epoch", None)
        return None
    return user


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


def _county_of_id(request: Request, name: str, value: str) -> str | None:
    """The county an identifier of the path belongs to, or None when there is no such thing."""
    engine = request.app.state.warehouse.engine
    with engine.connect() as conn:
        if name == "upload_id":
            row = conn.execute(
                sa.select(portal_upload.c.county_code).where(portal_upload.c.upload_id == value)
            ).first()
        elif name == "submission_id":
            row = conn.execute(
                sa.text("SELECT county_code FROM submission WHERE submission_id = :s"), {"s": value}
            ).first()
        else:  # county
            row = conn.execute(
                sa.text("SELECT county_code FROM ref_division WHERE county_code = :c"), {"c": value}
            ).first()
    return row[0] if row else None


async def guard(request: Request) -> None:
    """The permission check of every route (applied app-wide in ``portal.app.create_app``)."""
    route = request.scope.get("route")
    name = getattr(route, "name", None)
    audience = ROUTE_AUDIENCE.get(name or "")
    if audience is None:
        raise HTTPException(404)
    token = csrf_token(request)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        sent = request.headers.get("x-csrf-token")
        if sent is None:
            form = await request.form()
            sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(sent, token):
            log.warning("CSRF token missing or wrong on %s %s", request.method, request.url.path)
            raise HTTPException(403, "表单已过期，请刷新页面后重试")
    user = current_user(request)
    roles = ALLOWED_ROLES[audience]
    if roles is not None:
        if user is None:
            raise LoginRequired()
        if user.role not in roles:
            raise HTTPException(403, "您的账号无权访问此页面")
    counties = _counties_of(request.app.state.warehouse.engine, user) if user else frozenset()
    viewer = Viewer(user=user, counties=counties, csrf=token)
    params = request.path_params
    if audience != "public":
        for key in ("county", "upload_id", "submission_id"):
            if key in params:
                owner = _county_of_id(request, key, str(params[key]))
                if owner is None:
                    raise HTTPException(404, "未找到")
                if not viewer.sees(owner):
                    log.warning(
                        "user %s refused %s=%s of county %s",
                        user.username if user else None,
                        key,
                        params[key],
                        owner,
                    )
                    raise HTTPException(403, "无权查看其他县区的数据")
        if "city" in params:
            city = str(params["city"])
            if user is not None and user.role == "city" and city != user.city_code:
                raise HTTPException(403, "无权查看其他市的数据")
    request.state.viewer = viewer


def viewer_of(request: Request) -> Viewer:
    """The viewer ``guard`` resolved for this request."""
    return request.state.viewer
