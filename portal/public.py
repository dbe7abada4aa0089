"""The public column (专栏公开): the month's disclosure table (公示), open to anyone.

Only what the pack publishes: the periods whose pack was built (``pack_manifest``), the pack's
allow-list of columns (:data:`reports.pack.DISCLOSURE_COLUMNS`: no 填报人, no 联系电话, no free
text such as 备注), read from ``fact_progress`` column by column, never ``SELECT *``. Search by
county (code or name) and by school (part of its name); every value is bound as a parameter, the
school text is matched literally (``%`` and ``_`` escaped), and every cell is escaped in HTML by
the pack's own row writer (:func:`reports.sections.html_row_strings`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa
from markupsafe import Markup

from reports import periods
from reports.sections import Section, html_row_strings

MAX_ROWS = 500  # rows one page shows; the search says when there are more
MAX_QUERY = 40  # characters of a search term


@dataclass
class PublicColumn:
    period: str | None
    period_label: str
    periods: list[str]
    county_query: str
    school_query: str
    county_name: str | None  # the county the table is cut to, when one is chosen
    headers: list[str]
    rows_html: Markup
    n_rows: int
    truncated: bool
    message: str
    counties: list[dict[str, Any]] = field(default_factory=list)  # the index: name, code, projects …


def published_periods(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT DISTINCT period FROM pack_manifest ORDER BY period DESC"))
        return [r[0] for r in rows]


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _clean(text: str | None) -> str:
    """A search term: stripped, control characters dropped, at most MAX_QUERY characters."""
    text = "".join(ch for ch in (text or "") if ch.isprintable())
    return text.strip()[:MAX_QUERY]


def public_column(
    engine: sa.Engine, period: str | None, county: str | None, school: str | None
) -> PublicColumn:
    from reports.pack import DISCLOSURE_COLUMNS

    published = published_periods(engine)
    county_q, school_q = _clean(county), _clean(school)
    headers = [c.header_zh for c in DISCLOSURE_COLUMNS]
    if not published:
        return PublicColumn(
            None, "", [], county_q, school_q, None, headers, Markup(""), 0, False, "尚未发布任何月份的公示。"
        )
    period = period if period in published else published[0]
    with engine.connect() as conn:
        div = pd.DataFrame(
            conn.execute(
                sa.text("SELECT county_code, county_name, city_code, city_name FROM ref_division")
            ).all(),
            columns=["county_code", "county_name", "city_code", "city_name"],
        )
    codes: list[str] | None = None
    message = ""
    if county_q:
        if county_q in set(div["county_code"]):
            codes = [county_q]
        else:
            hit = div[div["county_name"].astype(str).str.contains(county_q, regex=False)]
            codes = hit["county_code"].astype(str).tolist()
            if not codes:
                message = f"没有名称含“{county_q}”的县区。"
    base = PublicColumn(
        period,
        periods.label_zh(period),
        published,
        county_q,
        school_q,
        None,
        headers,
        Markup(""),
        0,
        False,
        message,
    )
    if codes == []:
        return base
    if codes is None and not school_q:
        base.counties = _index(engine, period, div)
        return base
    keep = [c.key for c in DISCLOSURE_COLUMNS if c.key not in ("city_name", "county_name")]
    where = ["period = :p"]
    params: dict[str, Any] = {"p": period}
    if codes is not None:
        names = {f"c{i}": c for i, c in enumerate(codes[:200])}
        where.append(f"county_code IN ({', '.join(':' + k for k in names)})")
        params.update(names)
    if school_q:
        where.append("school_name LIKE :s ESCAPE '\\'")
        params["s"] = _like(school_q)
    sql = (
        f"SELECT county_code, {', '.join(keep)} FROM fact_progress WHERE {' AND '.join(where)}"
        f" ORDER BY county_code, project_id LIMIT {MAX_ROWS + 1}"
    )
    with engine.connect() as conn:
        res = conn.execute(sa.text(sql), params)
        facts = pd.DataFrame(res.all(), columns=list(res.keys()))
    truncated = len(facts) > MAX_ROWS
    facts = facts.head(MAX_ROWS)
    facts = facts.merge(div, on="county_code", how="left")
    facts["county_name"] = facts["county_name"].fillna(facts["county_code"])
    facts["city_name"] = facts["city_name"].fillna("")
    section = Section("disclosure", "全面改薄项目进展公示", DISCLOSURE_COLUMNS, facts)
    base.rows_html = Markup("\n".join(html_row_strings(section).tolist()))
    base.n_rows = len(facts)
    base.truncated = truncated
    if codes is not None and len(codes) == 1:
        base.county_name = str(div.set_index("county_code")["county_name"].get(codes[0], codes[0]))
    if not len(facts):
        base.message = "没有符合条件的项目。"
    return base


def _index(engine: sa.Engine, period: str, div: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per county that reported ``period``: its projects and how many are completed."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT county_code, projects_total, projects_completed FROM mart_county_progress"
                " WHERE period = :p AND has_return = :t ORDER BY city_code, county_code"
            ),
            {"p": period, "t": True},
        ).all()
    names = div.set_index("county_code")
    out = []
    for code, total, done in rows:
        known = code in names.index
        out.append(
            {
                "code": code,
                "name": str(names.at[code, "county_name"]) if known else code,
                "city": str(names.at[code, "city_name"] or "") if known else "",
                "projects": int(total or 0),
                "completed": int(done or 0),
            }
        )
    return out
