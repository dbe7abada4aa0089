"""Period arithmetic: a period is a calendar month written ``YYYY-MM``."""

from __future__ import annotations

import calendar
import re
from datetime import date

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def check_period(period: str) -> str:
    if not isinstance(period, str) or not _PERIOD.match(period):
        raise ValueError(f"period must be YYYY-MM, got {period!r}")
    return period


def shift(period: str, months: int) -> str:
    """The period ``months`` after (negative: before) ``period``."""
    year, month = (int(x) for x in check_period(period).split("-"))
    index = year * 12 + (month - 1) + months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def previous(period: str) -> str:
    return shift(period, -1)


def last_day(period: str) -> date:
    year, month = (int(x) for x in check_period(period).split("-"))
    return date(year, month, calendar.monthrange(year, month)[1])


def window(period: str, n: int) -> list[str]:
    """The ``n`` periods ending at ``period``, oldest first."""
    return [shift(period, -k) for k in range(n - 1, -1, -1)]


def label_zh(period: str) -> str:
    """``2018-12`` -> ``2018年12月``."""
    year, month = check_period(period).split("-")
    return f"{year}年{int(month)}月"


def index(period: str) -> int:
    year, month = (int(x) for x in check_period(period).split("-"))
    return year * 12 + month - 1
