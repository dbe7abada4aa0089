"""The one place reports are rendered: a Jinja2 Environment and a typed context per report.

``autoescape=True`` escapes every value (county text included); ``StrictUndefined`` turns a
missing context field into an error instead of an empty cell. Templates extend ``base.html``
and include ``_partials/``; styles are inline so mail clients and phones show them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from reports.sections import RowsSection, Section


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("reports", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


@dataclass(frozen=True)
class Figure:
    label_zh: str
    value: str
    note: str = ""


@dataclass(frozen=True)
class PackContext:
    title: str
    period_label: str
    generated_at: str
    chart_src: str  # "cid:..." in the email, a data: URI in the saved file
    figures: list[Figure]
    headline: Section
    county_table: Section
    score_parts: Section
    bottom: Section
    exception_counts: list[tuple[str, int]]
    exception_sections: list[Section]
    funding_figures: list[Figure]
    funding: Section
    funding_teachers: Section
    data_quality: Section
    list_limit: int
    pack_digest: str
    changes: list[str] = field(default_factory=list)
    ledger: Any = None  # reports.ledger.LedgerSections (挂帐销号), or None


@dataclass(frozen=True)
class LetterContext:
    title: str
    county_name: str
    period_label: str
    generated_at: str
    summary: list[Figure]
    exceptions: Section
    rejected: Section
    warnings: Section
    ledger: Any = None  # reports.ledger.LedgerSections: this county's rows only, or None


@dataclass(frozen=True)
class DisclosureContext:
    title: str
    period_label: str
    generated_at: str
    heading: str
    headers: list[str]
    rows_html: Markup  # rows escaped cell by cell by reports.sections.html_row_strings
    links: list[tuple[str, str, str]] = field(default_factory=list)  # (label, relative href, note)


@dataclass(frozen=True)
class ReceiptContext:
    title: str
    county_name: str
    period_label: str
    generated_at: str
    submissions: Section | RowsSection
    rejected: Section | RowsSection
    warnings: Section | RowsSection
    list_limit: int
    replaced: Section | RowsSection | None = None  # files a later one replaced (resubmissions, corrections)


def render(template: str, context: object) -> str:
    """Render ``template`` with the fields of a context dataclass."""
    if not dataclasses.is_dataclass(context):
        raise TypeError("context must be a dataclass instance")
    values = {f.name: getattr(context, f.name) for f in dataclasses.fields(context)}
    return environment().get_template(template).render(**values)
