"""Routes for everyone and for accounts: health, landing, login and logout, home, administration."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from portal import accounts, service
from portal.access import viewer_of
from portal.render import page
from portal.schema import ROLE_NAME_ZH

router = APIRouter()


@router.get("/health", name="health")
def health(request: Request) -> Response:
    ok, detail = service.warehouse_reachable(request.app.state.warehouse)
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "detail": detail}, status_code=200 if ok else 503
    )


@router.get("/", name="landing", response_class=HTMLResponse)
def landing(request: Request) -> Response:
    return page(request, "landing.html", title="全面改薄信息平台")


@router.get("/login", name="login_form", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return page(request, "login.html", title="登录", message="", username="")


@router.post("/login", name="login", response_class=HTMLResponse)
def login(request: Request, username: str = Form(""), password: str = Form("")) -> Response:
    client = request.client.host if request.client else None
    outcome = accounts.authenticate(request.app.state.warehouse.engine, username, password, client)
    if outcome.user is None:
        status = 429 if outcome.wait_s else 401
        return page(
            request,
            "login.html",
            status_code=status,
            title="登录",
            message=outcome.message_zh,
            username=username,
        )
    request.session.clear()
    request.session.update(
        uid=outcome.user.user_id, epoch=outcome.user.auth_epoch, csrf=secrets.token_urlsafe(24)
    )
    return RedirectResponse("/home", status_code=303)


@router.post("/logout", name="logout")
def logout(request: Request) -> Response:
    request.session.clear()
    return RedirectResponse("/", status_code=303)


@router.get("/home", name="home", response_class=HTMLResponse)
def home(request: Request) -> Response:
    viewer = viewer_of(request)
    if viewer.role in ("city", "province"):
        return RedirectResponse("/wallchart", status_code=303)
    if viewer.role == "admin":
        return RedirectResponse("/admin/users", status_code=303)
    return page(
        request,
        "clerk_home.html",
        title="县区工作台",
        home=service.clerk_home(request.app.state.warehouse, viewer),
    )


@router.get("/admin/users", name="users", response_class=HTMLResponse)
def users(request: Request) -> Response:
    listed = accounts.list_users(request.app.state.warehouse.engine)
    return page(request, "users.html", title="账号管理", users=listed, role_names=ROLE_NAME_ZH)


@router.post("/admin/users/{user_id}/disable", name="user_disable")
def user_disable(request: Request, user_id: int) -> Response:
    service.disable_by_id(request.app.state.warehouse.engine, user_id, viewer_of(request))
    return RedirectResponse("/admin/users", status_code=303)
