"""Portal pages through the project's one Jinja2 Environment (``reports.render.environment``).

The portal's templates live in ``portal/templates/portal/`` and are added to that Environment's
loader (so they are named ``portal/...`` and cannot shadow a report's template): the same
autoescaping and ``StrictUndefined`` hold for every page.
"""

from __future__ import annotations

from typing import Any

from jinja2 import ChoiceLoader, Environment, PackageLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse

from reports.render import environment as reports_environment


def environment() -> Environment:
    env = reports_environment()
    if not getattr(env, "portal_templates", False):
        env.loader = ChoiceLoader([env.loader, PackageLoader("portal", "templates")])  # type: ignore[list-item]
        env.portal_templates = True  # type: ignore[attr-defined]
        env.filters.setdefault("pct", lambda v: "—" if v is None or v != v else f"{v * 100:.1f}%")
        env.filters.setdefault("num", lambda v, d=0: "—" if v is None or v != v else f"{v:,.{d}f}")
    return env


def render_page(template: str, **context: Any) -> str:
    return environment().get_template(f"portal/{template}").render(**context)


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """One page for the request's viewer (``viewer``, ``role_name`` in every template's context)."""
    from portal.access import viewer_of
    from portal.schema import ROLE_NAME_ZH

    viewer = viewer_of(request)
    html = render_page(template, viewer=viewer, role_name=ROLE_NAME_ZH.get(viewer.role or "", ""), **context)
    return HTMLResponse(html, status_code=status_code)
