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

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from portal.access import LoginRequired, guard
from portal.render import page

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


class BodyLimit:
    """Refuse a request body past ``max_bytes`` (413) before it is parsed or spooled: by its
    Content-Length, and by counting the bytes of a body sent without one (chunked)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _too_large(scope, receive, send, self.max_bytes)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(scope, receive, send, self.max_bytes)


class _BodyTooLarge(Exception):
    pass


async def _too_large(scope: Any, receive: Any, send: Any, max_bytes: int) -> None:
    from starlette.responses import PlainTextResponse

    log.warning(
        "request body over %d bytes refused: %s %s", max_bytes, scope.get("method"), scope.get("path")
    )
    text = f"上传的文件超过 {max_bytes // (1024 * 1024)} MB，不予接收；请删去多余内容后重新上传。"
    await PlainTextResponse(text, status_code=413)(scope, receive, send)


# the largest request body: one upload and the form's few fields around it
FORM_OVERHEAD_BYTES = 64 * 1024


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
    app.add_middleware(BodyLimit, max_bytes=settings.portal_upload_max_bytes + FORM_OVERHEAD_BYTES)
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


# One module per area, each with an APIRouter ``router`` (portal/routes/); a new area adds its
# module here and its route names to portal.access.ROUTE_AUDIENCE.
ROUTE_MODULES = ("portal.routes.accounts", "portal.routes.clerk", "portal.routes.wall")


def _routes(app: FastAPI) -> None:
    import importlib

    for name in ROUTE_MODULES:
        app.include_router(importlib.import_module(name).router)


def named_routes(app: FastAPI) -> list[Any]:
    """Every route of the application with its name, through included routers (FastAPI ≥ 0.150
    keeps an included router as one entry that holds the original router's routes)."""
    out: list[Any] = []

    def walk(routes: list[Any]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(list(inner.routes))
            else:
                out.append(route)

    walk(list(app.routes))
    return out
