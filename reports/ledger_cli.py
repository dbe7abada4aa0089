"""``gaibao ledger`` and ``gaibao circular``: the typer commands (registered by gaibao.cli).

``gaibao ledger --county C`` prints one county's project ledger (挂帐销号) as of a period: each
project with its state, when and how it was ticked off, and every exception with the month it
opened and closed; the county's own exceptions (进度滞后) as rows without a project.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import sqlalchemy as sa
import typer

from reports import periods
from reports.exceptions import CATEGORIES
from reports.ledger import CLOSED_BY_ZH
from reports.sections import inert_csv_text

# (key, header) of the printed rows; no personal data exists in the ledger tables to print
COLUMNS: list[tuple[str, str]] = [
    ("project_id", "项目编号"),
    ("school_name", "学校名称"),
    ("project_type", "项目类别"),
    ("status", "状态"),
    ("first_period", "挂帐月份"),
    ("closed_period", "销号月份"),
    ("closed_on", "销号日期"),
    ("closed_by", "销号依据"),
    ("exceptions", "异常事项（挂帐→销号）"),
]


class LedgerError(ValueError):
    """A request the ledger cannot answer (unknown county, bad period): the message says why."""


def _frame(conn: sa.Connection, query: Any) -> pd.DataFrame:
    """Rows as a frame of Python values, SQL NULL as None (not NaN)."""
    res = conn.execute(query)
    frame = pd.DataFrame(res.all(), columns=list(res.keys()), dtype=object)
    return frame.where(frame.notna(), None)


def resolve_county(engine: sa.Engine, county: str) -> tuple[str, str]:
    """(code, name) of ``county``, given as a 6-digit code or the exact county name."""
    from warehouse.schema import ledger_project, ref_division

    text = county.strip()
    with engine.connect() as conn:
        div = _frame(conn, sa.select(ref_division.c.county_code, ref_division.c.county_name))
        codes = {r[0] for r in conn.execute(sa.select(ledger_project.c.county_code).distinct())}
    by_code = dict(zip(div["county_code"].astype(str), div["county_name"].astype(str), strict=True))
    if text in by_code or text in codes:
        return text, by_code.get(text, text)
    hits = [c for c, n in by_code.items() if n == text]
    if len(hits) == 1:
        return hits[0], text
    if len(hits) > 1:
        raise LedgerError(f"县区名称“{text}”不唯一（{'、'.join(sorted(hits))}），请改用6位区划代码")
    raise LedgerError(f"未找到县区“{text}”：请填写6位区划代码（如340321）或县区全称")


def county_ledger(engine: sa.Engine, county_code: str, period: str) -> dict[str, Any]:
    """The county's ledger as of ``period``: projects (with their exceptions) and county exceptions."""
    from warehouse.schema import ledger_exception, ledger_project, ledger_state

    lp, ev, st = ledger_project, ledger_exception, ledger_state
    with engine.connect() as conn:
        projects = _frame(
            conn,
            sa.select(lp).where(lp.c.county_code == county_code, lp.c.first_period <= period),
        )
        events = _frame(
            conn,
            sa.select(ev).where(ev.c.county_code == county_code, ev.c.opened_period <= period),
        )
        states = _frame(
            conn,
            sa.select(st.c.project_id, st.c.period, st.c.status).where(
                st.c.county_code == county_code, st.c.source == "progress", st.c.period <= period
            ),
        )
    latest = (
        states.sort_values("period")
        .drop_duplicates("project_id", keep="last")
        .set_index("project_id")["status"]
        if len(states)
        else pd.Series(dtype=object)
    )

    def event(e: dict[str, Any]) -> dict[str, Any]:
        closed = e["closed_period"] if e["closed_period"] and e["closed_period"] <= period else None
        return {
            "category": e["category"],
            "category_zh": CATEGORIES.get(e["category"], e["category"]),
            "opened_period": e["opened_period"],
            "closed_period": closed,
            "closed_by": e["closed_by"] if closed else None,
            "closed_by_zh": CLOSED_BY_ZH.get(e["closed_by"]) if closed else None,
            "detail": e["detail"],
        }

    by_project: dict[str, list[dict[str, Any]]] = {}
    county_events = []
    for e in events.sort_values(["opened_period", "category"]).to_dict("records"):
        (county_events if e["project_id"] == "" else by_project.setdefault(e["project_id"], [])).append(
            event(e)
        )
    rows = []
    for p in projects.to_dict("records"):
        closed = p["closed_period"] if p["closed_period"] and p["closed_period"] <= period else None
        rows.append(
            {
                "project_id": p["project_id"],
                "school_name": p["school_name"],
                "project_type": p["project_type"],
                "status": latest.get(p["project_id"], p["status"]),
                "first_period": p["first_period"],
                "closed_period": closed,
                "closed_on": p["closed_on"].isoformat() if closed and p["closed_on"] else None,
                "closed_by": p["closed_by"] if closed else None,
                "closed_by_zh": CLOSED_BY_ZH.get(p["closed_by"]) if closed else None,
                "exceptions": by_project.get(p["project_id"], []),
            }
        )
    # still on the ledger first (oldest first), then the ticked-off ones by the month they closed
    rows.sort(
        key=lambda r: (
            r["closed_period"] is not None,
            r["closed_period"] or r["first_period"],
            r["project_id"],
        )
    )
    return {
        "county_code": county_code,
        "period": period,
        "projects_open": sum(r["closed_period"] is None for r in rows),
        "projects_closed": sum(r["closed_period"] is not None for r in rows),
        "projects": rows,
        "county_exceptions": county_events,
    }


def _events_text(events: list[dict[str, Any]]) -> str:
    return "；".join(
        f"{e['category_zh']} {e['opened_period']}→{e['closed_period'] or '挂帐中'}"
        + (f"（{e['closed_by_zh']}）" if e["closed_by_zh"] else "")
        for e in events
    )


def flat_rows(ledger: dict[str, Any]) -> list[dict[str, str]]:
    """One row per project, then one per county exception (项目编号 empty), display text only."""
    out = []
    for r in ledger["projects"]:
        out.append(
            {
                "project_id": r["project_id"],
                "school_name": r["school_name"] or "",
                "project_type": r["project_type"] or "",
                "status": r["status"] or "",
                "first_period": r["first_period"],
                "closed_period": r["closed_period"] or "",
                "closed_on": r["closed_on"] or "",
                "closed_by": r["closed_by_zh"] or ("在账" if not r["closed_period"] else ""),
                "exceptions": _events_text(r["exceptions"]),
            }
        )
    for e in ledger["county_exceptions"]:
        out.append(
            {
                "project_id": "",
                "school_name": "（县区）",
                "project_type": "",
                "status": "",
                "first_period": e["opened_period"],
                "closed_period": e["closed_period"] or "",
                "closed_on": "",
                "closed_by": e["closed_by_zh"] or "挂帐中",
                "exceptions": _events_text([e]),
            }
        )
    return out


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _clean(text: str) -> str:
    """Control characters (a county's text could hold a terminal escape) shown as spaces."""
    return "".join(" " if unicodedata.category(ch).startswith("C") else ch for ch in text)


def format_table(ledger: dict[str, Any], county_name: str) -> str:
    rows = flat_rows(ledger)
    head = [h for _, h in COLUMNS]
    cells = [[_clean(str(r[k])) for k, _ in COLUMNS] for r in rows]
    widths = [max([_width(h), *(_width(c[i]) for c in cells)]) for i, h in enumerate(head)]

    def line(values: list[str]) -> str:
        return "  ".join(v + " " * (w - _width(v)) for v, w in zip(values, widths, strict=True)).rstrip()

    title = (
        f"{county_name}（{ledger['county_code']}）项目台账，截至{periods.label_zh(ledger['period'])}："
        f"在账项目{ledger['projects_open']}个，已销号{ledger['projects_closed']}个，"
        f"县区挂帐异常{sum(e['closed_period'] is None for e in ledger['county_exceptions'])}项"
    )
    return "\n".join([title, line(head), line(["-" * w for w in widths]), *(line(c) for c in cells)])


def format_csv(ledger: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([h for _, h in COLUMNS])
    for r in flat_rows(ledger):
        w.writerow([inert_csv_text(r[k]) for k, _ in COLUMNS])
    return buf.getvalue()


def check_period_zh(period: str) -> str:
    try:
        return periods.check_period(period)
    except ValueError:
        raise LedgerError(f"报告期应为YYYY-MM格式（如2018-12），收到“{period}”") from None


def latest_period(engine: sa.Engine) -> str | None:
    from warehouse.schema import submission

    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.max(submission.c.period))).scalar_one()


def ledger(
    county: Annotated[str, typer.Option("--county", "-c", help="县区：6位区划代码或县区全称")],
    period: Annotated[
        str | None, typer.Option("--period", "-p", help="截至报告期 YYYY-MM（默认最近一期）")
    ] = None,
    fmt: Annotated[
        Literal["table", "json", "csv"], typer.Option("--format", "-f", help="输出格式：table | json | csv")
    ] = "table",
) -> None:
    """打印一个县区的项目台账（挂帐销号）。Print one county's project ledger."""
    from gaibao.settings import get_settings
    from reports.service import open_warehouse

    wh = open_warehouse(get_settings())
    try:
        try:
            code, name = resolve_county(wh.engine, county)
            p = period or latest_period(wh.engine)
            if p is None:
                raise LedgerError("数据仓库中还没有任何月报，台账为空")
            check_period_zh(p)
        except ValueError as exc:
            typer.echo(f"错误：{exc}", err=True)
            raise typer.Exit(2) from exc
        data = county_ledger(wh.engine, code, p)
    finally:
        wh.close()
    if fmt == "json":
        typer.echo(json.dumps({"county_name": name, **data}, ensure_ascii=False, indent=2))
    elif fmt == "csv":
        sys.stdout.write("\ufeff" + format_csv(data))  # BOM: Excel reads it as UTF-8
    else:
        typer.echo(format_table(data, name))


def circular(
    period: Annotated[str | None, typer.Option("--period", "-p", help="报告期 YYYY-MM（默认上个月）")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="输出目录（默认 $GAIBAO_HOME/reports/<period>/通报/）")
    ] = None,
) -> None:
    """生成本月通报（HTML、PDF）和约谈建议名单。Build the month's circular and summons list."""
    from gaibao.settings import get_settings
    from reports.circular import build_circular
    from reports.service import default_period, open_warehouse

    settings = get_settings()
    p = period or default_period(settings)
    try:
        check_period_zh(p)
    except ValueError as exc:
        typer.echo(f"错误：{exc}", err=True)
        raise typer.Exit(2) from exc
    wh = open_warehouse(settings)
    try:
        files = build_circular(
            wh.engine, p, Path(out) if out else settings.reports_dir / p / "通报", settings
        )
    except ValueError as exc:
        typer.echo(f"错误：{exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        wh.close()
    typer.echo(f"通报（{files.number}）：{files.html}")
    typer.echo(f"  PDF：{files.pdf}" if files.pdf else f"  PDF：{files.pdf_error}")
    typer.echo(f"  约谈建议名单：{files.summons_html}（{files.summons}个县区）")
    typer.echo(f"  约谈建议名单CSV：{files.summons_csv}")
    typer.echo(json.dumps(files.summary(), ensure_ascii=False))
    if files.pdf is None:
        raise typer.Exit(1)
