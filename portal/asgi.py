"""``portal.asgi:app``: the portal for a process manager (``uvicorn --workers N``, gunicorn)."""

from __future__ import annotations

from portal.app import create_app

app = create_app()
