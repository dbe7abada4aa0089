"""Shared fixtures: an isolated GAIBAO_HOME, SQLite and real PostgreSQL warehouses, Prefect.

PostgreSQL: one database per test session (per xdist worker), created on 127.0.0.1:5432 as user
postgres and dropped at the end. Without a reachable server the PostgreSQL tests skip, unless
GAIBAO_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

PG_ADMIN_URL = os.environ.get("GAIBAO_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_required() -> bool:
    return os.environ.get("GAIBAO_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this session; yields its SQLAlchemy URL."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        admin.dispose()
        if _pg_required():
            pytest.fail(f"PostgreSQL is required (GAIBAO_REQUIRE_POSTGRES=1) but unreachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    name = f"gaibao_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text("select pg_terminate_backend(pid) from pg_stat_activity where datname = :n and pid <> pg_backend_pid()"),
                {"n": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def _reset_schema(url: str) -> None:
    """Empty a PostgreSQL test database between tests (drop and recreate the public schema)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def gaibao_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty GAIBAO_HOME for one test, with settings re-read."""
    from gaibao.settings import get_settings

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("GAIBAO_HOME", str(home))
    monkeypatch.delenv("GAIBAO_WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("GAIBAO_SOURCES", raising=False)
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request: pytest.FixtureRequest, gaibao_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The warehouse URL for one test, on SQLite and on the real PostgreSQL server."""
    from gaibao.settings import get_settings

    if request.param == "sqlite":
        url = f"sqlite:///{gaibao_home / 'warehouse.db'}"
    else:
        url = request.getfixturevalue("pg_server_url")
        _reset_schema(url)
    monkeypatch.setenv("GAIBAO_WAREHOUSE_URL", url)
    get_settings.cache_clear()
    return url


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One Prefect test harness per session (entering it costs ~15 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
