"""What the ``gaibao`` command checks before it starts a run: settings, sources file, warehouse.

A bad setting, a sources file that does not parse or a warehouse that cannot be reached would
otherwise surface twenty seconds later, deep inside a flow run, as a long traceback and a page to
the data engineers. Here each is one line, Chinese then English (``SettingsProblem``), and the
command exits with its documented code before any flow run exists.

No Prefect here; SQLAlchemy only to open one connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gaibao.options import COUNTY_RE

CONNECT_TIMEOUT_S = 10


class SettingsProblem(Exception):
    """Settings, the sources file or the warehouse are not usable: one line, Chinese / English."""

    def __init__(self, message_zh: str, message_en: str) -> None:
        super().__init__(f"{message_zh} / {message_en}")
        self.message_zh = message_zh
        self.message_en = message_en


def load_settings() -> Any:
    """``gaibao.settings.get_settings()``, or ``SettingsProblem`` naming the setting and the problem
    (never its value: it may be a secret)."""
    from pydantic import ValidationError

    from gaibao.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "GAIBAO_" + "_".join(str(p) for p in first.get("loc", ()) if p is not None).upper()
        if name == "GAIBAO_":
            name = "GAIBAO_*"
        reason = str(first.get("msg", "invalid")).replace("\n", " ")
        more = f" (+{exc.error_count() - 1})" if exc.error_count() > 1 else ""
        raise SettingsProblem(f"设置 {name} 无效{more}", f"invalid setting {name}: {reason}{more}") from None


def check_sources(settings: Any) -> Any:
    """The sources file (``GAIBAO_SOURCES``) parsed, or ``SettingsProblem`` with its line and problem."""
    from tasks.sources import load_source_config

    try:
        return load_source_config(settings.sources)
    except (ValueError, OSError) as exc:
        text = " ".join(str(exc).split())
        raise SettingsProblem(
            f"数据源配置文件 GAIBAO_SOURCES 有误：{text[:300]}", f"invalid GAIBAO_SOURCES file: {text[:300]}"
        ) from None


@dataclass(frozen=True)
class WarehouseReach:
    """What the warehouse said when asked: whether it has tables yet, and the counties it knows."""

    has_tables: bool
    counties: frozenset[str]


def check_warehouse(settings: Any, *, create: bool = True) -> WarehouseReach:
    """Open one connection to ``GAIBAO_WAREHOUSE_URL`` (``CONNECT_TIMEOUT_S``) and read the counties
    it knows (``ref_division``, ``ref_plan``), or ``SettingsProblem``. The password never shows.

    ``create=False`` (``status``): a SQLite file that does not exist yet is not created.
    """
    from pathlib import Path

    import sqlalchemy as sa
    from sqlalchemy import exc as sa_exc

    try:
        url = sa.make_url(str(settings.warehouse_url))
    except sa_exc.ArgumentError:
        raise SettingsProblem(
            "设置 GAIBAO_WAREHOUSE_URL 不是有效的数据库地址",
            "GAIBAO_WAREHOUSE_URL is not a valid SQLAlchemy URL",
        ) from None
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "postgresql" and url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        db = url.database
        if db and db != ":memory:" and not Path(db).exists():
            if not create or Path(db).parent.exists() or _creatable(Path(db).parent):
                return WarehouseReach(False, frozenset())  # a new warehouse: the run creates it
            raise SettingsProblem(
                f"无法创建数据仓库 {shown}", f"cannot create the warehouse {shown}: its folder cannot be made"
            )
        if db and db != ":memory:" and _read_only(Path(db)):
            if create:
                raise SettingsProblem(
                    f"数据仓库 {shown} 只读，无法写入", f"the warehouse {shown} is read-only: a run cannot write it"
                )
            # read it as the warehouse itself does (warehouse.store._make_engine)
            from warehouse.store import sqlite_read_only_url

            url = sa.make_url(sqlite_read_only_url(Path(db)))
        connect_args["timeout"] = CONNECT_TIMEOUT_S
    elif url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    try:
        engine = sa.create_engine(url, connect_args=connect_args, poolclass=sa.pool.NullPool)
    except (sa_exc.ArgumentError, ImportError) as exc:
        raise SettingsProblem(
            f"设置 GAIBAO_WAREHOUSE_URL 无法使用：{shown}", f"GAIBAO_WAREHOUSE_URL {shown} unusable: {exc}"
        ) from None
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            counties: set[str] = set()
            for table in ("ref_division", "ref_plan"):
                if table in tables:
                    counties.update(
                        str(c)
                        for (c,) in conn.execute(sa.text(f"SELECT DISTINCT county_code FROM {table}"))  # noqa: S608 - fixed names
                    )
    except sa_exc.DBAPIError as exc:
        detail = " ".join(str(getattr(exc, "orig", exc)).split())[:200]
        raise SettingsProblem(
            f"无法连接数据仓库 {shown}", f"cannot reach the warehouse {shown}: {detail}"
        ) from None
    finally:
        engine.dispose()
    return WarehouseReach(bool(tables), frozenset(c for c in counties if COUNTY_RE.match(c)))


def _read_only(db_file: Any) -> bool:
    import os

    return not (os.access(db_file, os.W_OK) and os.access(db_file.parent, os.W_OK))


def _creatable(folder: Any) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True


def known_counties(settings: Any, reach: WarehouseReach, sources: Any) -> frozenset[str]:
    """The counties a run may be asked for: the warehouse's divisions and plan, the bundled
    division codes (seeded on the first run) and the sources file's counties."""
    from gaibao.divisions import bundled_divisions

    bundled = set(bundled_divisions()["county_code"].astype(str))
    return frozenset(reach.counties | bundled | set(sources.keys()))


__all__ = [
    "SettingsProblem",
    "WarehouseReach",
    "check_sources",
    "check_warehouse",
    "known_counties",
    "load_settings",
]
