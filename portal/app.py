"""The portal's web application (FastAPI): thin routes over plain functions.

Each route reads its input, calls one plain function of ``portal.*`` and renders one template.
``portal.access.guard`` runs before every route (an app-wide dependency): it decides who may
see what, and checks the CSRF token of every form.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware

from portal import accounts
from portal.access import LoginRequired, guard, viewer_of
from portal.render import render_page
from portal.schema import ROLE_NAME_ZH

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
SESSION_MAX_AGE_S = 8 * 3600


def session_secret(settings: Any) -> str:
    """``GAIBAO_PORTAL_SECRET_KEY``; unset (the embedded default), a random key kept in
    ``$GAIBAO_HOME/portal/session.key`` (mode 0600), so sessions outlive a restart."""
    if settings.portal_secret_key is not None:
        return settings.portal_secret_key.get_secret_value()
    path = settings.portal_dir / "session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        tmp.replace(path)
        log.warning("GAIBAO_PORTAL_SECRET_KEY not set: session key generated in %s", path)
    return path.read_text().strip()


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    viewer = viewer_of(request)
    html = render_page(template, viewer=viewer, role_name=ROLE_NAME_ZH.get(viewer.role or "", ""), **context)
    return HTMLResponse(html, status_code=status_code)


def create_app(warehouse: Any = None, settings: Any = None) -> FastAPI:
    """The application over ``warehouse`` (default: the one the settings name)."""
    from gaibao.settings import get_settings
    from portal.service import open_portal_warehouse

    settings = settings or get_settings()
    warehouse = warehouse or open_portal_warehouse(settings)
    app = FastAPI(
        title="全面改薄信息平台",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(guard)],
    )
    app.state.warehouse = warehouse
    app.state.settings = settings
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie="gaibao_session",
        max_age=SESSION_MAX_AGE_S,
        same_site="strict",
        https_only=settings.portal_https_only,
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _handlers(app)
    _routes(app)
    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        message = (
            exc.detail
            if isinstance(exc.detail, str) and exc.detail not in ("Not Found", "Forbidden")
            else ("未找到该页面" if exc.status_code == 404 else "无权访问")
        )
        if getattr(request.state, "viewer", None) is None:
            from portal.access import Viewer

            request.state.viewer = Viewer(user=None, counties=frozenset(), csrf="")
        return page(request, "error.html", status_code=exc.status_code, title="出错了", message=message)


def _routes(app: FastAPI) -> None:  # noqa: C901 - one short function per route
    from portal import service

    @app.get("/health", name="health")
    def health(request: Request) -> Response:
        ok, detail = service.warehouse_reachable(request.app.state.warehouse)
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "detail": detail}, status_code=200 if ok else 503
        )

    @app.get("/", name="landing", response_class=HTMLResponse)
    def landing(request: Request) -> Response:
        return page(request, "landing.html", title="全面改薄信息平台")

    @app.get("/login", name="login_form", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        return page(request, "login.html", title="登录", message="", username="")

    @app.post("/login", name="login", response_class=HTMLResponse)
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

    @app.post("/logout", name="logout")
    def logout(request: Request) -> Response:
        request.session.clear()
        return RedirectResponse("/", status_code=303)

    @app.get("/home", name="home", response_class=HTMLResponse)
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

    @app.get("/admin/users", name="users", response_class=HTMLResponse)
    def users(request: Request) -> Response:
        listed = accounts.list_users(request.app.state.warehouse.engine)
        return page(request, "users.html", title="账号管理", users=listed, role_names=ROLE_NAME_ZH)

    @app.post("/admin/users/{user_id}/disable", name="user_disable")
    def user_disable(request: Request, user_id: int) -> Response:
        service.disable_by_id(request.app.state.warehouse.engine, user_id, viewer_of(request))
        return RedirectResponse("/admin/users", status_code=303)

    _clerk_routes(app)


def _clerk_routes(app: FastAPI) -> None:
    from portal import checking, template

    @app.get("/template", name="template_download")
    def template_download(request: Request, period: str, kind: str = "progress") -> Response:
        viewer = viewer_of(request)
        try:
            content, name = template.template_for(
                request.app.state.warehouse, viewer.county_code, period, kind
            )
        except template.TemplateRefused as exc:
            raise HTTPException(400, str(exc)) from None
        return Response(
            content,
            media_type=template.XLSX_TYPE,
            headers={"Content-Disposition": template.disposition(name)},
        )

    @app.get("/upload", name="upload_form")
    def upload_form(request: Request) -> Response:
        return RedirectResponse("/home", status_code=303)

    @app.post("/upload", name="upload")
    async def upload(request: Request, period: str = Form(...), file: UploadFile = File(...)) -> Response:  # noqa: B008 - FastAPI parameter
        settings = request.app.state.settings
        content = await file.read(settings.portal_upload_max_bytes + 1)
        viewer = viewer_of(request)
        try:
            upload_id = await run_in_threadpool(
                checking.receive_upload,
                request.app.state.warehouse,
                settings,
                viewer.county_code,
                period,
                viewer.user.user_id,
                file.filename,
                content,
            )
        except checking.UploadRefused as exc:
            raise HTTPException(400, str(exc)) from None
        return RedirectResponse(f"/upload/{upload_id}", status_code=303)

    @app.get("/upload/{upload_id}", name="upload_view", response_class=HTMLResponse)
    def upload_view(request: Request, upload_id: str, message: str = "") -> Response:
        view = checking.check_view(request.app.state.warehouse, request.app.state.settings, upload_id)
        return page(request, "upload.html", title="即时检查结果", view=view, message=message[:200])

    @app.post("/upload/{upload_id}/explain", name="explain")
    def explain(
        request: Request, upload_id: str, row_number: int = Form(...), text: str = Form("")
    ) -> Response:
        try:
            checking.explain(
                request.app.state.warehouse,
                request.app.state.settings,
                upload_id,
                row_number,
                text,
                viewer_of(request).user.user_id,
            )
        except checking.UploadRefused as exc:
            raise HTTPException(400, str(exc)) from None
        return RedirectResponse(f"/upload/{upload_id}", status_code=303)

    @app.post("/upload/{upload_id}/submit", name="submit")
    def submit(request: Request, upload_id: str) -> Response:
        try:
            checking.submit(
                request.app.state.warehouse,
                request.app.state.settings,
                upload_id,
                viewer_of(request).user.user_id,
            )
        except checking.UploadRefused as exc:
            raise HTTPException(400, str(exc)) from None
        return RedirectResponse("/submissions", status_code=303)

    @app.get("/submissions", name="submissions", response_class=HTMLResponse)
    def submissions(request: Request) -> Response:
        states = checking.submission_states(
            request.app.state.warehouse.engine, viewer_of(request).county_code
        )
        return page(request, "submissions.html", title="报送记录", states=states)

    @app.get("/receipt/{submission_id}", name="receipt", response_class=HTMLResponse)
    def receipt(request: Request, submission_id: str) -> Response:
        r = checking.receipt(request.app.state.warehouse.engine, submission_id)
        return page(request, "receipt.html", title="回执", r=r)
