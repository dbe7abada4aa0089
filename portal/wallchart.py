"""The wall chart (挂图作战), a county's page and the month's pack: plain functions over the marts.

Every figure comes from the warehouse's marts as the pipeline stored them, through the pack's own
code: the province and city rows are ``reports.pack._headline`` over ``mart_city_progress`` (the
pack's :data:`~reports.pack.HEADLINE_COLUMNS` and :func:`~reports.pack.headline_figures`), each
county's row is ``mart_county_progress`` with the pack's ``_data_state`` and, once the month's
pack is built, its stored ranking (``mart_scorecard``) and exception lists (``mart_exception``),
shown with the pack's column definitions. Before the pack is built, the exception lists are the
project ledger's open exceptions (``ledger_exception``, rebuilt with the marts by every ingest, by
the same rules and thresholds) and the ranking waits for the pack. Nothing is re-derived here.

Scope: ``counties`` is the set of county codes the viewer may see (``None``: every county); every
query is cut to it before anything is formatted, so a page never holds another county's rows.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from markupsafe import Markup

from reports import periods
from reports.render import Figure
from reports.sections import Col, Section, html_row_strings
from warehouse.frames import result_frame

log = logging.getLogger(__name__)

PERIOD_RE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")

# the wall chart's county table: the pack's ranking columns (reports.pack.COUNTY_HTML_COLUMNS)
HISTORY_COLUMNS = [
    Col("period", "报告期"),
    Col("data_state", "数据情况"),
    Col("projects_total", "项目数", "int"),
    Col("projects_not_started", "未开工", "int"),
    Col("projects_in_progress", "在建", "int"),
    Col("projects_completed", "已竣工", "int"),
    Col("completed_area_m2", "竣工面积（平方米）", "num0"),
    Col("plan_area_m2", "五年规划面积（平方米）", "num0"),
    Col("area_completion_rate", "面积完成率", "pct"),
    Col("start_rate", "开工率", "pct"),
    Col("equipment_completion_rate", "设备购置完成率", "pct"),
    Col("score", "得分", "num2"),
    Col("rank_in_city", "市内排名", "int"),
    Col("rank_in_province", "全省排名", "int"),
]

PROJECT_COLUMNS = [
    Col("project_id", "项目编号"),
    Col("school_name", "学校名称"),
    Col("project_type", "项目类别"),
    Col("status", "项目状态"),
    Col("planned_area_m2", "规划面积（平方米）", "num0"),
    Col("completed_area_m2", "竣工面积（平方米）", "num0"),
    Col("area_progress", "面积进度", "pct"),
    Col("planned_invest_wan", "规划投资（万元）", "num2"),
    Col("completed_invest_wan", "完成投资（万元）", "num2"),
    Col("planned_start", "计划开工日期", "date"),
    Col("actual_start", "实际开工日期", "date"),
    Col("completed_date", "竣工日期", "date"),
    Col("first_period", "挂帐月份"),
    Col("closed_text", "销号"),
    Col("exceptions_text", "异常事项（挂帐→销号）"),
]

# fact_progress columns the county page reads: an allow-list, never 填报人 or 联系电话
PROJECT_FACT_COLUMNS = (
    "project_id",
    "school_name",
    "project_type",
    "status",
    "planned_area_m2",
    "completed_area_m2",
    "planned_invest_wan",
    "completed_invest_wan",
    "planned_start",
    "actual_start",
    "completed_date",
)


def _frame(conn: sa.Connection, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    return result_frame(conn.execute(sa.text(sql), params))


def _in(column: str, values: frozenset[str] | None, prefix: str) -> tuple[str, dict[str, str]]:
    """``AND column IN (:prefix0, …)`` with bound parameters; nothing when ``values`` is None."""
    if values is None:
        return "", {}
    if not values:
        return " AND 1 = 0", {}
    params = {f"{prefix}{i}": v for i, v in enumerate(sorted(values))}
    return f" AND {column} IN ({', '.join(':' + k for k in params)})", params


def check_period(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not PERIOD_RE.match(value):
        raise ValueError(f"报告期应为YYYY-MM格式（如2018-12），收到“{value[:20]}”")
    return value


def mart_periods(engine: sa.Engine) -> list[str]:
    """Periods the marts hold, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT DISTINCT period FROM mart_county_progress ORDER BY period DESC"))
        return [r[0] for r in rows]


def data_version(engine: sa.Engine, period: str) -> tuple:
    """A cheap fingerprint of what the wall chart of ``period`` shows: it changes when a load or a
    plan reload rebuilds the marts, or a pack is built (the page caches key on it)."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT (SELECT COUNT(*) FROM mart_dirty),"
                " (SELECT COUNT(*) FROM warehouse_load),"
                " (SELECT MAX(manifest_id) FROM pack_manifest),"
                " (SELECT SUM(completed_area_m2) FROM mart_city_progress WHERE period = :p),"
                " (SELECT SUM(plan_area_m2) FROM mart_city_progress WHERE period = :p),"
                " (SELECT SUM(counties_reporting) FROM mart_city_progress WHERE period = :p),"
                " (SELECT COUNT(*) FROM ledger_exception)"
            ),
            {"p": period},
        ).one()
    return tuple(row)


@dataclass
class PackInfo:
    """The month's pack as last built: when, and which of its files are there to download."""

    built_at: str  # "YYYY-MM-DD HH:MM" (UTC)
    files: dict[str, str]  # key -> file name (reports.pack.pack_file_names), existing files only
    stale: bool  # a return was loaded after the pack was built


@dataclass
class WallChart:
    period: str
    period_label: str
    periods: list[str]
    scope_name: str  # 全省 or the city's name
    figures: list[Figure]
    headline: Section
    counties: Section
    county_codes: list[str]  # the county table's rows, in order (links to the county pages)
    tiles: list[dict[str, Any]]  # one per county: code, name, city, rate, colour
    exception_counts: list[tuple[str, int]]
    exception_sections: list[Section]
    ranking_note: str
    exceptions_note: str
    pack: PackInfo | None
    cities: list[tuple[str, str]] = field(default_factory=list)  # (code, name) for the province view
    map_svg: Any = None  # Markup of the county map (portal.countymap), or None: tiles only
    map_note: str = ""


def _divisions(conn: sa.Connection) -> pd.DataFrame:
    return _frame(conn, "SELECT county_code, county_name, city_code, city_name FROM ref_division", {})


def pack_info(engine: sa.Engine, settings: Any, period: str) -> PackInfo | None:
    """The latest pack build of ``period`` (``pack_manifest``) and its files still on disk."""
    from reports.pack import pack_file_names

    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT built_at, output_dir FROM pack_manifest WHERE period = :p"
                " ORDER BY manifest_id DESC LIMIT 1"
            ),
            {"p": period},
        ).first()
        if row is None:
            return None
        loaded = conn.execute(
            sa.text("SELECT MAX(loaded_at) FROM submission WHERE period <= :p"), {"p": period}
        ).scalar()
    built_at, out_dir = row
    folder = Path(out_dir) if out_dir else settings.reports_dir / period
    names = pack_file_names(period)
    files = {k: n for k, n in names.items() if k != "manifest" and (folder / n).is_file()}
    stale = bool(loaded is not None and built_at is not None and _utc(loaded) > _utc(built_at))
    label = _utc(built_at).strftime("%Y-%m-%d %H:%M") if built_at is not None else ""
    return PackInfo(label, files, stale)


def _utc(value: Any) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def pack_file(engine: sa.Engine, settings: Any, period: str, key: str) -> tuple[Path, str] | None:
    """(path, file name) of one file of the month's pack, by its key; None when there is none.
    The path is built from the manifest's folder and the pack's own file names, never from input."""
    from reports.pack import pack_file_names

    names = pack_file_names(period)
    if key not in names or key == "manifest":
        return None
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT output_dir FROM pack_manifest WHERE period = :p ORDER BY manifest_id DESC LIMIT 1"
            ),
            {"p": period},
        ).first()
    if row is None:
        return None
    folder = Path(row[0]) if row[0] else settings.reports_dir / period
    path = folder / names[key]
    return (path, names[key]) if path.is_file() else None


def completion_colour(rate: Any) -> str:
    """The tile / map colour of an area completion rate (the same scale as the legend)."""
    if rate is None or pd.isna(rate):
        return "#d0d7de"
    x = float(rate)
    for limit, colour in ((0.5, "#d73027"), (0.7, "#fc8d59"), (0.85, "#fee08b"), (1.0, "#91cf60")):
        if x < limit:
            return colour
    return "#1a9850"


LEGEND = [
    ("#d73027", "低于50%"),
    ("#fc8d59", "50%–70%"),
    ("#fee08b", "70%–85%"),
    ("#91cf60", "85%–100%"),
    ("#1a9850", "达到或超过规划"),
    ("#d0d7de", "无数据"),
]


def wall_chart(
    engine: sa.Engine,
    settings: Any,
    period: str | None,
    counties: frozenset[str] | None,
    city_code: str | None = None,
    with_pack: bool = False,
) -> WallChart | None:
    """The wall chart of ``period`` (default: the latest) for the viewer's ``counties``; for a
    city officer ``city_code`` names their city (the headline keeps the province and that city)."""
    from reports.exceptions import CATEGORIES, PROJECT_CATEGORIES
    from reports.inputs import PackInputs
    from reports.pack import (
        COUNTY_HTML_COLUMNS,
        EXCEPTION_COUNTY_COLUMNS,
        EXCEPTION_PROJECT_COLUMNS,
        HEADLINE_COLUMNS,
        _data_state,
        _headline,
        _with_names,
        headline_figures,
    )

    available = mart_periods(engine)
    if not available:
        return None
    period = period if period in available else available[0]
    prev = periods.previous(period)
    county_in, county_params = _in("county_code", counties, "c")
    two = {"p": period, "q": prev}
    with engine.connect() as conn:
        divisions = _divisions(conn)
        county_progress = _frame(
            conn,
            f"SELECT * FROM mart_county_progress WHERE period IN (:p, :q){county_in}",
            {**two, **county_params},
        )
        city_progress = _frame(conn, "SELECT * FROM mart_city_progress WHERE period IN (:p, :q)", two)
        scorecard = _frame(
            conn,
            f"SELECT * FROM mart_scorecard WHERE period = :p{county_in}",
            {"p": period, **county_params},
        )
        has_pack = conn.execute(
            sa.text("SELECT COUNT(*) FROM pack_manifest WHERE period = :p"), {"p": period}
        ).scalar()
        exceptions = _frame(
            conn,
            f"SELECT category, county_code, project_id, school_name, detail, since_period"
            f" FROM mart_exception WHERE period = :p{county_in}",
            {"p": period, **county_params},
        )
    if counties is not None:
        divisions_scope = divisions[divisions["county_code"].isin(counties)]
    else:
        divisions_scope = divisions
    if city_code is not None:
        keep = (city_progress["level"] == "province") | (city_progress["city_code"] == city_code)
        city_progress = city_progress[keep]
    empty = pd.DataFrame()
    inputs = PackInputs(
        period=period,
        divisions=divisions_scope,
        county_progress=county_progress,
        city_progress=city_progress,
        county_funding=empty,
        facts=empty,
        submissions=empty,
        issues=empty,
        expected_counties=sorted(divisions_scope["county_code"].astype(str)),
    )
    head = _headline(inputs)
    scope_row = head.iloc[0] if len(head) else pd.Series(dtype=object)
    scope_name = "全省"
    if city_code is not None and len(head):
        mine = head[head["city_code"] == city_code]
        if len(mine):
            scope_row = mine.iloc[0]
            scope_name = str(scope_row["city_name"])
    cp = county_progress[county_progress["period"] == period].copy()
    cp["county_code"] = cp["county_code"].astype(str)
    table = _with_names(cp, divisions)
    if len(scorecard):
        sc = scorecard.drop(columns=[c for c in ("period", "city_code") if c in scorecard.columns])
        table = table.merge(sc, on="county_code", how="left")
        ranking_note = "排名与得分取自本月会议材料（gaibao pack 生成时存入 mart_scorecard）。"
        order = ["rank_in_province", "county_code"]
    else:
        for c in ("score", "rank_in_city", "rank_in_province", "score_change"):
            table[c] = float("nan")
        ranking_note = "本月会议材料尚未生成，暂无得分与排名；按面积完成率排列。"
        order = ["area_completion_rate", "county_code"]
    table["data_state"] = _data_state(table, period)
    asc = [True, True] if len(scorecard) else [False, True]
    table = table.sort_values(order, ascending=asc, na_position="last").reset_index(drop=True)
    counties_section = Section(
        "counties", "各县区完成率、得分与排名", COUNTY_HTML_COLUMNS, table, note_zh=ranking_note
    )

    # the exception lists: the pack's stored lists, else the ledger's open exceptions
    if has_pack:
        exceptions_note = "异常清单取自本月会议材料（mart_exception）。"
        exc = exceptions
    else:
        exc = _ledger_open(engine, period, counties)
        exceptions_note = (
            "本月会议材料尚未生成：逾期未开工、停滞项目和进度滞后县区取自项目台账（每次入库后按同一规则更新），"
            "其余类别在会议材料生成后显示。"
        )
    ex = _with_names(exc, divisions) if len(exc) else exc.assign(county_name=None, city_name=None)
    sections, counts = [], []
    for cat, title in CATEGORIES.items():
        rows = ex[ex["category"] == cat] if len(ex) else ex
        cols = EXCEPTION_PROJECT_COLUMNS if cat in PROJECT_CATEGORIES else EXCEPTION_COUNTY_COLUMNS
        rows = rows.reindex(columns=sorted({c.key for c in cols} | {"county_code"}))
        sections.append(Section(f"exc_{cat}", f"{title}（{len(rows)}）", cols, rows.reset_index(drop=True)))
        counts.append((title, len(rows)))

    tiles = [
        {
            "code": str(r["county_code"]),
            "name": str(r["county_name"]),
            "city": str(r["city_name"] or ""),
            "rate": r["area_completion_rate"],
            "rate_text": "—"
            if pd.isna(r["area_completion_rate"])
            else f"{float(r['area_completion_rate']) * 100:.1f}%",
            "colour": completion_colour(r["area_completion_rate"]),
        }
        for r in table.sort_values(["city_code", "county_code"]).to_dict("records")
    ]
    cities = []
    if counties is None:
        c = divisions.drop_duplicates("city_code").sort_values("city_code")
        cities = list(zip(c["city_code"].astype(str), c["city_name"].astype(str), strict=True))
    return WallChart(
        period=period,
        period_label=periods.label_zh(period),
        periods=available,
        scope_name=scope_name,
        figures=headline_figures(scope_row),
        headline=Section("headline", f"{scope_name}对照五年规划进展", HEADLINE_COLUMNS, head),
        counties=counties_section,
        county_codes=table["county_code"].astype(str).tolist(),
        tiles=tiles,
        exception_counts=counts,
        exception_sections=sections,
        ranking_note=ranking_note,
        exceptions_note=exceptions_note,
        pack=pack_info(engine, settings, period) if with_pack else None,
        cities=cities,
    )


def _ledger_open(engine: sa.Engine, period: str, counties: frozenset[str] | None) -> pd.DataFrame:
    """The ledger's exceptions open in ``period`` as exception rows (category, county, project …)."""
    from reports.ledger import load_ledger

    view = load_ledger(engine, period)
    cols = ["category", "county_code", "project_id", "school_name", "detail", "since_period"]
    if view is None:
        return pd.DataFrame(columns=cols)
    e = view.open_events()
    if counties is not None:
        e = e[e["county_code"].isin(counties)]
    e = e.assign(project_id=e["project_id"].replace("", None))
    return e.reindex(columns=cols).reset_index(drop=True)


# -- a county's page ----------------------------------------------------------------------------
@dataclass
class CountyPage:
    county_code: str
    county_name: str
    city_code: str
    city_name: str
    period: str
    period_label: str
    periods: list[str]
    source_period: str | None
    figures: list[Figure]
    projects: Section
    history: Section
    exceptions: Section
    projects_open: int
    projects_closed: int
    projects_html: Any = None  # Markup: the projects' rows, escaped by reports.sections.html_row_strings


def county_page(engine: sa.Engine, county_code: str, period: str | None) -> CountyPage | None:
    """One county: its projects on the ledger (status, progress, dates) as of ``period``, its
    open and closed exceptions, and its figures month by month. None when the county is unknown."""
    from reports.exceptions import CATEGORIES
    from reports.ledger_cli import county_ledger
    from reports.pack import _data_state

    with engine.connect() as conn:
        div = conn.execute(
            sa.text("SELECT county_name, city_code, city_name FROM ref_division WHERE county_code = :c"),
            {"c": county_code},
        ).first()
        if div is None:
            return None
        history = _frame(
            conn,
            "SELECT m.*, s.score, s.rank_in_city, s.rank_in_province FROM mart_county_progress m"
            " LEFT JOIN mart_scorecard s ON s.period = m.period AND s.county_code = m.county_code"
            " WHERE m.county_code = :c ORDER BY m.period DESC",
            {"c": county_code},
        )
    available = history["period"].astype(str).tolist() if len(history) else []
    if not available:
        from reports.service import default_period

        period = period or default_period()
    else:
        period = period if period in available else available[0]
    row = history[history["period"] == period]
    source_period = None
    figures: list[Figure] = []
    if len(row):
        r = row.iloc[0]
        source_period = r["source_period"] if isinstance(r["source_period"], str) else None

        def pct(x: Any) -> str:
            return "—" if x is None or pd.isna(x) else f"{float(x) * 100:.1f}%"

        figures = [
            Figure("面积完成率", pct(r["area_completion_rate"])),
            Figure("开工率", pct(r["start_rate"])),
            Figure("设备购置完成率", pct(r["equipment_completion_rate"])),
            Figure(
                "项目",
                "—" if pd.isna(r["projects_total"]) else f"{int(r['projects_total'])}个",
                "" if pd.isna(r["projects_completed"]) else f"已竣工{int(r['projects_completed'])}个",
            ),
        ]
        if "rank_in_province" in r and not pd.isna(r["rank_in_province"]):
            figures.append(
                Figure(
                    "得分",
                    f"{float(r['score']):.1f}",
                    f"全市第{int(r['rank_in_city'])}名，全省第{int(r['rank_in_province'])}名",
                )
            )
    if len(history):
        history = history.assign(data_state=_data_state(history, period))
    history_section = Section(
        "history",
        "逐月进展",
        HISTORY_COLUMNS,
        history.reindex(columns=[c.key for c in HISTORY_COLUMNS]).reset_index(drop=True),
    )

    ledger = county_ledger(engine, county_code, period)
    facts = pd.DataFrame(columns=list(PROJECT_FACT_COLUMNS))
    if source_period:
        with engine.connect() as conn:
            facts = _frame(
                conn,
                f"SELECT {', '.join(PROJECT_FACT_COLUMNS)} FROM fact_progress"
                " WHERE county_code = :c AND period = :p",
                {"c": county_code, "p": source_period},
            )
    by_id = {str(f["project_id"]): f for f in facts.to_dict("records")}
    rows = []
    for p in ledger["projects"]:
        f = by_id.get(str(p["project_id"]), {})
        planned, done = f.get("planned_area_m2"), f.get("completed_area_m2")
        closed = f"{p['closed_period']} {p['closed_by_zh'] or ''}".strip() if p["closed_period"] else "在账"
        rows.append(
            {
                "project_id": p["project_id"],
                "school_name": p["school_name"] or f.get("school_name"),
                "project_type": p["project_type"] or f.get("project_type"),
                "status": p["status"],
                "planned_area_m2": planned,
                "completed_area_m2": done,
                "area_progress": (float(done) / float(planned))
                if planned is not None and done is not None and not pd.isna(planned) and float(planned) > 0
                else None,
                "planned_invest_wan": f.get("planned_invest_wan"),
                "completed_invest_wan": f.get("completed_invest_wan"),
                "planned_start": f.get("planned_start"),
                "actual_start": f.get("actual_start"),
                "completed_date": f.get("completed_date"),
                "first_period": p["first_period"],
                "closed_text": closed,
                "exceptions_text": "；".join(
                    f"{e['category_zh']} {e['opened_period']}→{e['closed_period'] or '挂帐中'}"
                    for e in p["exceptions"]
                ),
            }
        )
    projects = Section(
        "projects",
        f"项目台账（截至{periods.label_zh(period)}）",
        PROJECT_COLUMNS,
        pd.DataFrame(rows, columns=[c.key for c in PROJECT_COLUMNS]),
        note_zh="进度与日期取自"
        + (f"{periods.label_zh(source_period)}接收的月报" if source_period else "最近接收的月报")
        + "；项目自首次出现在月报起挂帐，竣工即销号。",
    )
    county_events = pd.DataFrame(
        [
            {
                "item": CATEGORIES.get(e["category"], e["category"]),
                "opened_period": e["opened_period"],
                "closed": e["closed_period"] or "挂帐中",
                "detail": e["detail"],
            }
            for e in ledger["county_exceptions"]
        ],
        columns=["item", "opened_period", "closed", "detail"],
    )
    exceptions = Section(
        "county_exceptions",
        "县区异常事项（挂帐销号）",
        [
            Col("item", "事项"),
            Col("opened_period", "挂帐月份"),
            Col("closed", "销号月份"),
            Col("detail", "挂帐时情况"),
        ],
        county_events,
    )
    return CountyPage(
        county_code=county_code,
        county_name=str(div[0]),
        city_code=str(div[1]),
        city_name=str(div[2] or ""),
        period=period,
        period_label=periods.label_zh(period),
        periods=available,
        source_period=source_period,
        figures=figures,
        projects=projects,
        history=history_section,
        exceptions=exceptions,
        projects_open=ledger["projects_open"],
        projects_closed=ledger["projects_closed"],
        # a county has hundreds of projects: its rows are written by the pack's vectorised row
        # writer (every text cell escaped), not cell by cell in the template
        projects_html=Markup("\n".join(html_row_strings(projects).tolist())),
    )
