"""Accounts: create, import, disable, reset, and log in with a throttle.

Passwords are hashed with argon2id (argon2-cffi, its default parameters); the clear password is
never stored or logged. Failed logins are recorded in ``portal_login_failure`` and logged by
user name and client; after ``FREE_FAILURES`` failures within ``FAILURE_WINDOW`` an account must
wait before the next attempt is even checked, the wait doubling with each further failure.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from portal.schema import ROLES, portal_login_failure, portal_user

log = logging.getLogger(__name__)

FREE_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
MAX_WAIT_S = 300
USERNAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{2,64}$")
MIN_PASSWORD = 10

_hasher = PasswordHasher()
# verified against when the user does not exist, so that a wrong name costs as long as a wrong password
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class AccountError(ValueError):
    """A refused account change; the message is Chinese and says what to fix."""


@dataclass(frozen=True)
class User:
    user_id: int
    username: str
    display_name: str
    role: str
    county_code: str | None
    city_code: str | None
    is_active: bool
    auth_epoch: int


def _now() -> datetime:
    return datetime.now(UTC)


def _user(row: sa.Row) -> User:
    m = row._mapping
    return User(
        user_id=int(m["user_id"]),
        username=m["username"],
        display_name=m["display_name"] or m["username"],
        role=m["role"],
        county_code=m["county_code"],
        city_code=m["city_code"],
        is_active=bool(m["is_active"]),
        auth_epoch=int(m["auth_epoch"]),
    )


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def _divisions(engine: sa.Engine) -> tuple[set[str], set[str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT county_code, city_code FROM ref_division")).all()
    return {r[0] for r in rows}, {r[1] for r in rows}


def _check_new(engine: sa.Engine, username: str, role: str, county: str | None, city: str | None) -> None:
    if not USERNAME_PATTERN.match(username or ""):
        raise AccountError(f"用户名“{username}”不可用：只能用 2–64 位字母、数字、下划线、点或连字符")
    if role not in ROLES:
        raise AccountError(f"角色“{role}”不存在，应为 {'、'.join(ROLES)} 之一")
    counties, cities = _divisions(engine)
    if role == "clerk" and county not in counties:
        raise AccountError(f"县区填报员须指定已知的区划代码（--county），“{county or ''}”不在区划表中")
    if role == "city" and city not in cities:
        raise AccountError(f"市级管理员须指定已知的市代码（--city），“{city or ''}”不在区划表中")


def add_user(
    engine: sa.Engine,
    username: str,
    role: str,
    *,
    county_code: str | None = None,
    city_code: str | None = None,
    display_name: str | None = None,
    password: str | None = None,
) -> str:
    """Create an account; returns its password (the one given, or a generated one)."""
    county_code = county_code if role == "clerk" else None
    city_code = city_code if role == "city" else None
    _check_new(engine, username, role, county_code, city_code)
    password = password or generate_password()
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"密码至少 {MIN_PASSWORD} 位")
    now = _now()
    with engine.begin() as conn:
        taken = conn.execute(
            sa.select(portal_user.c.user_id).where(portal_user.c.username == username)
        ).first()
        if taken:
            raise AccountError(f"用户名“{username}”已存在")
        conn.execute(
            portal_user.insert().values(
                username=username,
                display_name=display_name or username,
                role=role,
                county_code=county_code,
                city_code=city_code,
                password_hash=_hasher.hash(password),
                is_active=True,
                auth_epoch=1,
                created_at=now,
                updated_at=now,
            )
        )
    log.info("account %s created (role %s)", username, role)
    return password


IMPORT_COLUMNS = ("username", "role", "county_code", "city_code", "display_name")


def import_users(engine: sa.Engine, text: str) -> list[tuple[str, str]]:
    """Create the accounts of a CSV (``IMPORT_COLUMNS`` as its header); all or none.

    Returns (username, generated password) per account. A row that cannot be created refuses
    the whole file, naming its line."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    missing = {"username", "role"} - set(reader.fieldnames or [])
    if missing:
        raise AccountError(
            f"导入文件缺少列：{'、'.join(sorted(missing))}（表头应为 {','.join(IMPORT_COLUMNS)}）"
        )
    rows = list(reader)
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        name = (row.get("username") or "").strip()
        try:
            _check_new(
                engine,
                name,
                (row.get("role") or "").strip(),
                _blank(row, "county_code"),
                _blank(row, "city_code"),
            )
        except AccountError as exc:
            raise AccountError(f"第 {line} 行：{exc}") from None
        if name in seen:
            raise AccountError(f"第 {line} 行：用户名“{name}”在文件中重复")
        seen.add(name)
    with engine.connect() as conn:
        taken = {r[0] for r in conn.execute(sa.select(portal_user.c.username)).all()} & seen
    if taken:
        raise AccountError(f"用户名已存在：{'、'.join(sorted(taken))}；文件未导入")
    out = []
    for row in rows:
        name = row["username"].strip()
        password = add_user(
            engine,
            name,
            row["role"].strip(),
            county_code=_blank(row, "county_code"),
            city_code=_blank(row, "city_code"),
            display_name=_blank(row, "display_name"),
        )
        out.append((name, password))
    return out


def _blank(row: dict, key: str) -> str | None:
    value = (row.get(key) or "").strip()
    return value or None


def _change(engine: sa.Engine, username: str, **values: object) -> None:
    with engine.begin() as conn:
        done = conn.execute(
            portal_user.update()
            .where(portal_user.c.username == username)
            .values(auth_epoch=portal_user.c.auth_epoch + 1, updated_at=_now(), **values)
        ).rowcount
    if not done:
        raise AccountError(f"用户“{username}”不存在")


def disable_user(engine: sa.Engine, username: str) -> None:
    """Disable an account; its open sessions end at their next request."""
    _change(engine, username, is_active=False)
    log.info("account %s disabled", username)


def reset_password(engine: sa.Engine, username: str, password: str | None = None) -> str:
    """Give an account a new password (and enable it again); its open sessions end."""
    password = password or generate_password()
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"密码至少 {MIN_PASSWORD} 位")
    _change(engine, username, password_hash=_hasher.hash(password), is_active=True)
    with engine.begin() as conn:
        conn.execute(portal_login_failure.delete().where(portal_login_failure.c.username == username))
    log.info("account %s: password reset", username)
    return password


def get_user(engine: sa.Engine, user_id: int) -> User | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(portal_user).where(portal_user.c.user_id == user_id)).first()
    return _user(row) if row else None


def list_users(engine: sa.Engine) -> list[User]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(portal_user).order_by(portal_user.c.username)).all()
    return [_user(r) for r in rows]


@dataclass(frozen=True)
class LoginOutcome:
    user: User | None
    message_zh: str = ""
    wait_s: int = 0


def _wait_for(failures: list[datetime], now: datetime) -> int:
    """Seconds an account must still wait, from its recent failures (newest last)."""
    if len(failures) < FREE_FAILURES:
        return 0
    wait = min(MAX_WAIT_S, 2 ** (len(failures) - FREE_FAILURES + 1))
    last = failures[-1] if failures[-1].tzinfo else failures[-1].replace(tzinfo=UTC)
    return max(0, int((last + timedelta(seconds=wait) - now).total_seconds() + 0.999))


def authenticate(engine: sa.Engine, username: str, password: str, client: str | None = None) -> LoginOutcome:
    """Check a login; records and logs a failure, refuses while the account must wait."""
    now = _now()
    username = (username or "").strip()[:64]
    f = portal_login_failure
    with engine.connect() as conn:
        failures = [
            r[0]
            for r in conn.execute(
                sa.select(f.c.failed_at)
                .where(f.c.username == username, f.c.failed_at >= now - FAILURE_WINDOW)
                .order_by(f.c.failed_at)
            ).all()
        ]
        row = conn.execute(sa.select(portal_user).where(portal_user.c.username == username)).first()
    wait = _wait_for(failures, now)
    if wait:
        log.warning(
            "login for %r from %s refused: %d recent failures, %d s to wait",
            username,
            client,
            len(failures),
            wait,
        )
        return LoginOutcome(None, f"登录失败次数过多，请 {wait} 秒后再试", wait)
    user = _user(row) if row else None
    try:
        ok = _hasher.verify(row._mapping["password_hash"] if row else _DUMMY_HASH, password or "")
    except (VerificationError, InvalidHashError):
        ok = False
    if ok and user is not None and user.is_active:
        with engine.begin() as conn:
            conn.execute(f.delete().where(f.c.username == username))
            if _hasher.check_needs_rehash(row._mapping["password_hash"]):
                conn.execute(
                    portal_user.update()
                    .where(portal_user.c.user_id == user.user_id)
                    .values(password_hash=_hasher.hash(password))
                )
        log.info("login %s from %s", username, client)
        return LoginOutcome(user)
    with engine.begin() as conn:
        conn.execute(f.insert().values(username=username, client=(client or "")[:64], failed_at=now))
    log.warning("failed login for %r from %s (%d in %s)", username, client, len(failures) + 1, FAILURE_WINDOW)
    if ok and user is not None and not user.is_active:
        return LoginOutcome(None, "该账号已停用，请联系系统管理员")
    return LoginOutcome(None, "用户名或密码不正确")
