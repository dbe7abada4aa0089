"""Checks of what an operator gives a run: periods, ranges of periods, county codes.

One module for both faces of a run: the ``gaibao`` command checks its options here before it
starts anything, and the flows' parameters are annotated with the same checks (``Period``,
``CountyCode``), so a deployment run with a bad period fails at once with the same message.

Every refusal is an ``OptionError``: a ``ValueError`` whose text is one line, Chinese then
English (``message_zh / message_en``), naming the option and the value. A county code is only
ever six digits: it is never a path.

No Prefect, no pandas, no database here: the CLI imports this before anything heavy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated

from pydantic import AfterValidator

PERIOD_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
COUNTY_RE = re.compile(r"^\d{6}$")

# Periods the programme can have: the scheme ran from 2014; nothing is due after 2100.
FIRST_YEAR, LAST_YEAR = 2000, 2099


class OptionError(ValueError):
    """An option or parameter refused before anything runs: one line, Chinese / English."""

    def __init__(self, message_zh: str, message_en: str) -> None:
        super().__init__(f"{message_zh} / {message_en}")
        self.message_zh = message_zh
        self.message_en = message_en

    def __reduce__(self):  # noqa: ANN204 - keep both halves across processes
        return (OptionError, (self.message_zh, self.message_en))


def _shown(value: object, limit: int = 40) -> str:
    """The value as given, quoted, cut short and without control characters (it is echoed)."""
    text = str(value)
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def check_period(value: object, option: str = "--period") -> str:
    """``value`` when it is a month ``YYYY-MM`` (month 01–12, year 2000–2099), else ``OptionError``."""
    if (
        not isinstance(value, str)
        or not PERIOD_RE.fullmatch(value)
        or not FIRST_YEAR <= int(value[:4]) <= LAST_YEAR
    ):
        raise OptionError(
            f"{option} 的值 {_shown(value)} 不是有效的报告期，应为 YYYY-MM（如 2018-12，月份 01–12）",
            f"{option} {_shown(value)} is not a valid period: expected YYYY-MM (e.g. 2018-12, month 01-12)",
        )
    return value


def check_range(start: object, end: object) -> tuple[str, str]:
    """``(start, end)`` when both are periods and ``end`` is not before ``start``."""
    first, last = check_period(start, "--start"), check_period(end, "--end")
    if last < first:  # YYYY-MM compares as text
        raise OptionError(
            f"--end {last} 早于 --start {first}：结束报告期不能早于开始报告期",
            f"--end {last} is before --start {first}",
        )
    return first, last


def check_county_code(value: object) -> str:
    """``value`` when it is six digits (a division code), else ``OptionError``. Never a path."""
    if not isinstance(value, str) or not COUNTY_RE.fullmatch(value):
        raise OptionError(
            f"--county 的值 {_shown(value)} 不是县区代码，应为 6 位数字（如 340321）",
            f"--county {_shown(value)} is not a county code: expected six digits (e.g. 340321)",
        )
    return value


def check_counties(values: Iterable[object] | None, known: Iterable[str] | None = None) -> list[str] | None:
    """The county codes, each six digits and, when ``known`` is given, one of them; None for none."""
    if not values:
        return None
    codes = [check_county_code(v) for v in values]
    if known is not None:
        known_set = set(known)
        unknown = [c for c in codes if c not in known_set]
        if unknown:
            shown = "、".join(unknown[:5]) + (f" 等 {len(unknown)} 个" if len(unknown) > 5 else "")
            raise OptionError(
                f"--county {shown} 不是已知的县区（不在区划代码表或五年规划中）",
                f"--county {', '.join(unknown[:5])}: unknown county (not in ref_division or ref_plan)",
            )
    return codes


def _county_list(values: list[str] | None) -> list[str] | None:
    return check_counties(values)


# Flow parameter types: Prefect validates a run's parameters with pydantic before the run starts.
Period = Annotated[str, AfterValidator(check_period)]
StartPeriod = Annotated[str, AfterValidator(lambda v: check_period(v, "--start"))]
EndPeriod = Annotated[str, AfterValidator(lambda v: check_period(v, "--end"))]
CountyCodes = Annotated[list[str], AfterValidator(_county_list)]

__all__ = [
    "CountyCodes",
    "EndPeriod",
    "OptionError",
    "Period",
    "StartPeriod",
    "check_counties",
    "check_county_code",
    "check_period",
    "check_range",
]
