"""The circular (通报) and the proposed summons list (约谈建议名单) of a month, from the ledger.

- :func:`propose_summons`: the counties behind (``COUNTY_BEHIND``) for ``summons_lag_months``
  consecutive months or more (N), or holding projects still 未开工 more than
  ``summons_not_started_days`` days (M) after their planned start, with the evidence.
- :func:`summons_followup_section`: last month's proposed list against this month's figures:
  whether each county improved (the pack shows it).
- :func:`build_circular`: the circular as HTML and a printable PDF (number, date and issuing
  office from settings), naming the lagging counties and the overdue projects, and the summons
  list as HTML and CSV.

The PDF is printed by headless Chromium (``--print-to-pdf``): it renders the same HTML the
reader opens, with the installed CJK font (fonts-wqy-microhei), and the tests already use it
for the pack; no PDF library to keep in step with the templates.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import sqlalchemy as sa

from reports import periods
from reports.render import Figure
from reports.sections import Col, Section
from warehouse.frames import result_frame

log = logging.getLogger(__name__)

SUMMONS_COLUMNS = [
    Col("city_name", "市"),
    Col("county_name", "县（区）"),
    Col("reasons", "约谈事由"),
    Col("months_behind", "连续滞后月数", "int"),
    Col("area_completion_rate", "面积完成率", "pct"),
    Col("overdue_projects", "逾期未开工项目数", "int"),
    Col("evidence", "依据"),
]
FOLLOWUP_COLUMNS = [
    Col("county_name", "县（区）"),
    Col("reasons", "上月约谈事由"),
    Col("rate_before", "上月面积完成率", "pct"),
    Col("rate_now", "本月面积完成率", "pct"),
    Col("overdue_before", "上月逾期未开工项目", "int"),
    Col("overdue_now", "本月逾期未开工项目", "int"),
    Col("verdict", "整改情况"),
]
LAGGING_COLUMNS = [
    Col("city_name", "市"),
    Col("county_name", "县（区）"),
    Col("months_behind", "连续滞后月数", "int"),
    Col("detail", "滞后情况"),
]
OVERDUE_COLUMNS = [
    Col("county_name", "县（区）"),
    Col("school_name", "学校名称"),
    Col("project_id", "项目编号"),
    Col("planned_start", "计划开工日期", "date"),
    Col("days_overdue", "逾期天数", "int"),
    Col("months_open", "挂帐月数", "int"),
]


def _frame(conn: sa.Connection, query: Any) -> pd.DataFrame:
    res = conn.execute(query)
    return result_frame(res)


def _settings(settings: Any) -> Any:
    if settings is None:
        from gaibao.settings import get_settings

        settings = get_settings()
    return settings


@dataclass
class MonthEvidence:
    """What the circular and the summons list of one period are made of."""

    period: str
    counties: pd.DataFrame  # mart_county_progress of the period + names
    behind: pd.DataFrame  # county, months_behind, opened_period, detail (this month's)
    overdue: pd.DataFrame  # open NOT_STARTED_OVERDUE projects: county, project, school, planned_start, days
    names: dict[str, str] = field(default_factory=dict)


def month_evidence(engine: sa.Engine, period: str, th: Any = None) -> MonthEvidence:
    """The period's lagging counties and overdue projects, from the ledger and the marts."""
    from reports.config import load_thresholds
    from reports.exceptions import county_behind
    from warehouse.schema import (
        ledger_exception,
        ledger_state,
        mart_city_progress,
        mart_county_progress,
        ref_division,
    )

    periods.check_period(period)
    th = th or load_thresholds(_settings(None).thresholds)
    ev, st = ledger_exception, ledger_state
    is_open = sa.and_(
        ev.c.opened_period <= period, sa.or_(ev.c.closed_period.is_(None), ev.c.closed_period > period)
    )
    with engine.connect() as conn:
        cp = _frame(conn, sa.select(mart_county_progress).where(mart_county_progress.c.period == period))
        city = _frame(conn, sa.select(mart_city_progress).where(mart_city_progress.c.period == period))
        events = _frame(
            conn,
            sa.select(ev).where(is_open, ev.c.category.in_(("COUNTY_BEHIND", "NOT_STARTED_OVERDUE"))),
        )
        div = _frame(conn, sa.select(ref_division))
        # each overdue project's latest state at or before the period (its planned start)
        overdue_ids = events.loc[events["category"] == "NOT_STARTED_OVERDUE", ["county_code", "project_id"]]
        states = pd.DataFrame(columns=["county_code", "project_id", "period", "status", "planned_start"])
        if len(overdue_ids):
            counties = sorted(set(overdue_ids["county_code"]))
            states = _frame(
                conn,
                sa.select(
                    st.c.county_code, st.c.project_id, st.c.period, st.c.status, st.c.planned_start
                ).where(
                    st.c.source == "progress",
                    st.c.period <= period,
                    st.c.period >= periods.shift(period, -12),
                    st.c.county_code.in_(counties),
                ),
            )
    names = (
        dict(zip(div["county_code"].astype(str), div["county_name"].astype(str), strict=True))
        if len(div)
        else {}
    )
    city_names = (
        dict(zip(div["county_code"].astype(str), div["city_name"].astype(str), strict=True))
        if len(div)
        else {}
    )
    now = periods.index(period)
    cp = cp.assign(county_code=cp["county_code"].astype(str)) if len(cp) else cp

    b = events[events["category"] == "COUNTY_BEHIND"]
    behind_now = (
        county_behind(cp, city, period, th) if len(cp) else pd.DataFrame(columns=["county_code", "detail"])
    )
    detail_now = dict(zip(behind_now["county_code"].astype(str), behind_now["detail"], strict=True))
    behind = pd.DataFrame(
        {
            "county_code": b["county_code"].astype(str),
            "opened_period": b["opened_period"],
            "months_behind": [now - periods.index(p) + 1 for p in b["opened_period"]],
            "detail": [
                detail_now.get(c, d) for c, d in zip(b["county_code"].astype(str), b["detail"], strict=True)
            ],
        }
    )

    o = events[events["category"] == "NOT_STARTED_OVERDUE"]
    last = (
        states.sort_values("period").drop_duplicates(["county_code", "project_id"], keep="last")
        if len(states)
        else states
    )
    o = o.merge(
        last[["county_code", "project_id", "planned_start"]], on=["county_code", "project_id"], how="left"
    )
    end = pd.Timestamp(periods.last_day(period))
    planned = pd.to_datetime(o["planned_start"], errors="coerce")
    o["days_overdue"] = (end - planned).dt.days.astype("Int64")
    o["months_open"] = [now - periods.index(p) + 1 for p in o["opened_period"]]
    for f in (behind, o):
        f["county_name"] = f["county_code"].map(names).fillna(f["county_code"])
        f["city_name"] = f["county_code"].map(city_names)
    behind = behind.sort_values(["months_behind", "county_code"], ascending=[False, True]).reset_index(
        drop=True
    )
    o = o.sort_values(
        ["days_overdue", "county_code", "project_id"], ascending=[False, True, True], na_position="last"
    )
    return MonthEvidence(period, cp, behind, o.reset_index(drop=True), names)


def propose_summons(
    engine: sa.Engine,
    period: str,
    lag_months: int,
    not_started_days: int,
    evidence: MonthEvidence | None = None,
) -> pd.DataFrame:
    """The proposed summons list of ``period``: one row per county, with the reasons and evidence."""
    ev = evidence or month_evidence(engine, period)
    cols = [c.key for c in SUMMONS_COLUMNS] + ["county_code"]
    behind = ev.behind[ev.behind["months_behind"] >= lag_months]
    late = ev.overdue[ev.overdue["days_overdue"].fillna(-1) > not_started_days]
    codes = sorted(set(behind["county_code"]) | set(late["county_code"]))
    if not codes:
        return pd.DataFrame(columns=cols)
    rate = (
        dict(zip(ev.counties["county_code"], ev.counties["area_completion_rate"], strict=True))
        if len(ev.counties)
        else {}
    )
    b = behind.set_index("county_code")
    late_by = dict(tuple(late.groupby("county_code")))
    rows = []
    for code in codes:
        reasons, evidence = [], []
        months = int(b.at[code, "months_behind"]) if code in b.index else 0
        if code in b.index:
            reasons.append(f"连续{months}个月进度滞后")
            evidence.append(
                f"自{periods.label_zh(b.at[code, 'opened_period'])}起滞后：{b.at[code, 'detail']}"
            )
        projects = late_by.get(code)
        n_late = 0 if projects is None else len(projects)
        if n_late:
            reasons.append(f"{n_late}个项目超过计划开工日期{not_started_days}天仍未开工")
            listed = [
                f"{r.school_name or ''}（{r.project_id}，计划{pd.Timestamp(r.planned_start):%Y-%m-%d}开工，已逾期{int(r.days_overdue)}天）"
                for r in projects.head(5).itertuples()
            ]
            more = f"等{n_late}个" if n_late > 5 else ""
            evidence.append("逾期未开工：" + "、".join(listed) + more)
        rows.append(
            {
                "county_code": code,
                "county_name": ev.names.get(code, code),
                "city_name": (
                    ev.behind.loc[ev.behind["county_code"] == code, "city_name"].tolist() or [None]
                )[0]
                if code in b.index
                else projects["city_name"].iloc[0],
                "reasons": "；".join(reasons),
                "months_behind": months,
                "area_completion_rate": rate.get(code),
                "overdue_projects": n_late,
                "evidence": "；".join(evidence),
            }
        )
    return pd.DataFrame(rows, columns=cols)


def summons_followup(engine: sa.Engine, period: str, settings: Any = None) -> pd.DataFrame:
    """Last month's proposed summons, county by county, against this month: did it improve?

    已改善: the county no longer meets either reason; 有所改善: it still does, but its area
    completion rate rose and it holds no more overdue projects, or fewer; 未改善: otherwise.
    """
    s = _settings(settings)
    n, m = s.summons_lag_months, s.summons_not_started_days
    before = propose_summons(engine, periods.previous(period), n, m)
    cols = [c.key for c in FOLLOWUP_COLUMNS] + ["county_code"]
    if before.empty:
        return pd.DataFrame(columns=cols)
    ev_now = month_evidence(engine, period)
    now = propose_summons(engine, period, n, m, ev_now).set_index("county_code")
    rate_now = (
        dict(zip(ev_now.counties["county_code"], ev_now.counties["area_completion_rate"], strict=True))
        if len(ev_now.counties)
        else {}
    )
    late_now = ev_now.overdue[ev_now.overdue["days_overdue"].fillna(-1) > m].groupby("county_code").size()
    out = before.rename(columns={"area_completion_rate": "rate_before", "overdue_projects": "overdue_before"})
    out["rate_now"] = out["county_code"].map(rate_now)
    out["overdue_now"] = out["county_code"].map(late_now).fillna(0).astype(int)
    verdicts = []
    for r in out.itertuples():
        if r.county_code not in now.index:
            verdicts.append("已改善：本月不再符合约谈条件")
            continue
        rose = pd.notna(r.rate_now) and pd.notna(r.rate_before) and float(r.rate_now) > float(r.rate_before)
        fewer = r.overdue_now < r.overdue_before
        if fewer or (rose and r.overdue_now <= r.overdue_before):
            verdicts.append("有所改善：仍符合约谈条件（" + str(now.at[r.county_code, "reasons"]) + "）")
        else:
            verdicts.append("未改善：" + str(now.at[r.county_code, "reasons"]))
    out["verdict"] = verdicts
    return out[cols].reset_index(drop=True)


def summons_followup_section(engine: sa.Engine, period: str, settings: Any = None) -> Section:
    frame = summons_followup(engine, period, settings)
    prev = periods.label_zh(periods.previous(period))
    return Section(
        "summons_followup",
        f"{prev}约谈建议名单县区整改情况",
        FOLLOWUP_COLUMNS,
        frame,
        note_zh=f"对照{prev}约谈建议名单，逐县比较本月面积完成率和逾期未开工项目数。",
        sheet_zh="约谈整改情况",
    )


# -- the documents -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CircularContext:
    title: str
    number: str
    office: str
    issued_on: str
    period_label: str
    generated_at: str
    paragraphs: list[str]
    figures: list[Figure]
    lagging: Section
    overdue: Section
    requirements: list[str]


@dataclass(frozen=True)
class SummonsContext:
    title: str
    period_label: str
    generated_at: str
    criteria: str
    summons: Section


@dataclass
class CircularFiles:
    period: str
    number: str
    html: Path
    pdf: Path | None
    summons_html: Path
    summons_csv: Path
    pdf_error: str | None = None
    counties_lagging: int = 0
    projects_overdue: int = 0
    summons: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "number": self.number,
            "html": str(self.html),
            "pdf": str(self.pdf) if self.pdf else None,
            "pdf_error": self.pdf_error,
            "summons_html": str(self.summons_html),
            "summons_csv": str(self.summons_csv),
            "counties_lagging": self.counties_lagging,
            "projects_overdue": self.projects_overdue,
            "summons": self.summons,
        }


def circular_number(prefix: str, period: str) -> str:
    """``<prefix>〔2018〕12号``: one circular a month, numbered by its period."""
    year, month = periods.check_period(period).split("-")
    return f"{prefix}〔{year}〕{int(month)}号"


def file_names(period: str) -> dict[str, str]:
    label = periods.label_zh(period)
    return {
        "html": f"全面改薄工作通报{label}.html",
        "pdf": f"全面改薄工作通报{label}.pdf",
        "summons_html": f"约谈建议名单{label}.html",
        "summons_csv": f"约谈建议名单{label}.csv",
    }


def print_pdf(html: Path, pdf: Path, chromium: Path | str, timeout_s: float = 120.0) -> None:
    """Print ``html`` to ``pdf`` with headless Chromium (A4 from the page's CSS, no header/footer)."""
    with tempfile.TemporaryDirectory(prefix="gaibao-chromium-") as profile:
        cmd = [
            str(chromium),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            html.resolve().as_uri(),
        ]
        done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    if done.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
        tail = done.stderr.decode(errors="replace")[-500:]
        raise RuntimeError(f"chromium exited {done.returncode}: {tail}")


def build_circular(
    engine: sa.Engine,
    period: str,
    out_dir: Path,
    settings: Any = None,
    issued_on: date | None = None,
    pdf: bool = True,
) -> CircularFiles:
    """Write the circular (HTML, PDF) and the summons list (HTML, CSV) of ``period`` to ``out_dir``."""
    from reports.pack import now_label, write_section_csv
    from reports.render import render

    s = _settings(settings)
    periods.check_period(period)
    ev = month_evidence(engine, period)
    if ev.counties.empty:
        raise ValueError(f"报告期 {period} 在数据仓库中没有任何县区数据，请先导入各县区月报")
    label = periods.label_zh(period)
    issued = issued_on or datetime.now(ZoneInfo(s.timezone)).date()
    issued_zh = f"{issued.year}年{issued.month}月{issued.day}日"
    number = circular_number(s.circular_number_prefix, period)
    cp = ev.counties
    reporting = int(cp["has_return"].astype(bool).sum())
    rates = cp["area_completion_rate"].astype(float)
    lagging = Section("lagging", "一、进度滞后的县区", LAGGING_COLUMNS, ev.behind, sheet_zh="进度滞后县区")
    overdue = Section(
        "overdue",
        "二、逾期未开工的项目",
        OVERDUE_COLUMNS,
        ev.overdue,
        note_zh="计划开工日期已过、月报仍为“未开工”的项目，逾期天数计至本月末。",
        sheet_zh="逾期未开工项目",
    )
    ctx = CircularContext(
        title=f"关于{label}全面改善贫困地区义务教育薄弱学校基本办学条件工作进展情况的通报",
        number=number,
        office=s.circular_office,
        issued_on=issued_zh,
        period_label=label,
        generated_at=now_label(s.timezone),
        paragraphs=[
            f"{label}，应报送月报的{len(cp)}个县（区）中{reporting}个按月报送了项目进展。"
            f"现将进度滞后的县区和逾期未开工的项目通报如下。",
        ],
        figures=[
            Figure("进度滞后县区", f"{len(ev.behind)}个"),
            Figure("逾期未开工项目", f"{len(ev.overdue)}个"),
            Figure(
                "全部县区面积完成率中位数",
                "—" if rates.dropna().empty else f"{rates.median() * 100:.1f}%",
            ),
        ],
        lagging=lagging,
        overdue=overdue,
        requirements=[
            "被通报的县（区）要认真分析原因，制定整改措施，明确完成时限，于下次月报报送时一并报告整改情况。",
            "逾期未开工的项目要逐个落实责任人和开工时间；确实无法实施的，按程序报批调整。",
            f"连续{s.summons_lag_months}个月进度滞后或项目逾期{s.summons_not_started_days}天以上未开工的县（区），将提请约谈。",
        ],
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    names = file_names(period)
    html_path = out_dir / names["html"]
    html_path.write_text(render("circular.html", ctx), encoding="utf-8")

    summons = propose_summons(engine, period, s.summons_lag_months, s.summons_not_started_days, ev)
    summons_section = Section(
        "summons", f"约谈建议名单（{label}）", SUMMONS_COLUMNS, summons, sheet_zh="约谈建议名单"
    )
    sctx = SummonsContext(
        title=f"全面改薄约谈建议名单（{label}）",
        period_label=label,
        generated_at=ctx.generated_at,
        criteria=(
            f"提请约谈的条件：连续{s.summons_lag_months}个月及以上进度滞后（面积或设备完成率低于全市10个百分点以上，"
            f"或全省面积完成率排名靠后），或有项目超过计划开工日期{s.summons_not_started_days}天仍未开工。"
        ),
        summons=summons_section,
    )
    summons_html = out_dir / names["summons_html"]
    summons_html.write_text(render("summons.html", sctx), encoding="utf-8")
    summons_csv = out_dir / names["summons_csv"]
    write_section_csv(summons_section, summons_csv)

    pdf_path: Path | None = None
    pdf_error = None
    if pdf:
        target = out_dir / names["pdf"]
        try:
            print_pdf(html_path, target, s.chromium)
            pdf_path = target
        except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
            pdf_error = f"未能生成PDF（{s.chromium}）：{exc}"
            log.warning("circular %s: %s", period, pdf_error)
    log.info("circular %s written to %s", period, out_dir)
    return CircularFiles(
        period,
        number,
        html_path,
        pdf_path,
        summons_html,
        summons_csv,
        pdf_error,
        counties_lagging=len(ev.behind),
        projects_overdue=len(ev.overdue),
        summons=len(summons),
    )
