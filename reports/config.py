"""Report configuration: exception thresholds, score weights and recipients, from YAML.

The defaults ship beside this module (``thresholds.yaml``, ``score_weights.yaml``,
``recipients.yaml``); ``settings.thresholds`` / ``settings.score_weights`` /
``settings.recipients`` name override files. An override file may give only some keys.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")


def _bundled(name: str) -> dict[str, Any]:
    with resources.files("reports").joinpath(name).open("rb") as fh:
        return yaml.safe_load(fh) or {}


def _read(path: Path | str | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data


@dataclass(frozen=True)
class Thresholds:
    not_started_overdue_days: int = 90
    not_started_no_date_periods: int = 6
    stalled_periods: int = 2
    behind_city_points: float = 10.0
    bottom_n: int = 10
    lookback_periods: int = 6
    html_list_limit: int = 50
    xlsx_list_limit: int = 10000

    @property
    def history_periods(self) -> int:
        """Periods of project history needed (current included)."""
        return max(self.lookback_periods, self.not_started_no_date_periods, self.stalled_periods + 1)


def load_thresholds(path: Path | str | None = None) -> Thresholds:
    data = {**_bundled("thresholds.yaml"), **_read(path)}
    known = {f.name: f.type for f in fields(Thresholds)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"unknown threshold keys: {sorted(unknown)}")
    return Thresholds(**data)


WEIGHT_KEYS = (
    "area_completion",
    "equipment_completion",
    "start_rate",
    "timeliness",
    "data_quality",
    "overdue_stalled",
)


@dataclass(frozen=True)
class ScoreWeights:
    weights: dict[str, float] = field(
        default_factory=lambda: {
            "area_completion": 35.0,
            "equipment_completion": 25.0,
            "start_rate": 10.0,
            "timeliness": 10.0,
            "data_quality": 10.0,
            "overdue_stalled": 10.0,
        }
    )
    late_fraction: float = 0.5

    @property
    def total(self) -> float:
        return float(sum(self.weights.values()))


def load_score_weights(path: Path | str | None = None) -> ScoreWeights:
    base = _bundled("score_weights.yaml")
    over = _read(path)
    weights = {**base.get("weights", {}), **over.get("weights", {})}
    unknown = set(weights) - set(WEIGHT_KEYS)
    if unknown:
        raise ValueError(f"unknown score weight keys: {sorted(unknown)}")
    weights = {k: float(weights.get(k, 0.0)) for k in WEIGHT_KEYS}
    if any(v < 0 for v in weights.values()):
        raise ValueError("score weights must be >= 0")
    late = float(over.get("late_fraction", base.get("late_fraction", 0.5)))
    return ScoreWeights(weights=weights, late_fraction=late)


@dataclass(frozen=True)
class Recipient:
    name: str
    emails: tuple[str, ...]


@dataclass(frozen=True)
class Recipients:
    meeting: tuple[Recipient, ...]
    counties: dict[str, Recipient]
    county_address_pattern: str | None = None
    county_name_pattern: str = "{county_name}教育局"

    def for_county(self, county_code: str, county_name: str = "") -> Recipient | None:
        """The bureau of one county: listed explicitly, else from the pattern, else None."""
        if county_code in self.counties:
            return self.counties[county_code]
        if not self.county_address_pattern or not re.fullmatch(r"\d{6}", county_code):
            return None
        email = self.county_address_pattern.format(county_code=county_code)
        name = self.county_name_pattern.format(
            county_name=county_name or county_code, county_code=county_code
        )
        return Recipient(name=name, emails=(email,))


def _recipient(entry: dict[str, Any], where: str) -> Recipient:
    emails = entry.get("email") or entry.get("emails") or []
    if isinstance(emails, str):
        emails = [emails]
    bad = [e for e in emails if not _EMAIL.match(str(e))]
    if bad or not emails:
        raise ValueError(f"recipients {where}: bad or missing email {bad or emails}")
    return Recipient(name=str(entry.get("name", "")), emails=tuple(str(e) for e in emails))


def load_recipients(path: Path | str | None = None) -> Recipients:
    data = _read(path) if path is not None else _bundled("recipients.yaml")
    meeting = tuple(_recipient(e, f"meeting[{i}]") for i, e in enumerate(data.get("meeting") or []))
    counties = {
        str(code): _recipient(e, f"counties[{code}]") for code, e in (data.get("counties") or {}).items()
    }
    for code in counties:
        if not re.fullmatch(r"\d{6}", code):
            raise ValueError(f"recipients: county code {code!r} is not 6 digits")
    return Recipients(
        meeting=meeting,
        counties=counties,
        county_address_pattern=data.get("county_address_pattern"),
        county_name_pattern=data.get("county_name_pattern") or "{county_name}教育局",
    )
