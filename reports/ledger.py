"""The project ledger (挂帐销号) as the pack, the letters and ``gaibao ledger`` show it.

:func:`load_ledger` reads ``ledger_project`` and ``ledger_exception`` (built by
``warehouse.ledger``) as of one period; :class:`LedgerView` cuts them into what was ticked off
that month and what is still open, oldest first, for the whole province or one county.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from reports import periods
from reports.exceptions import CATEGORIES
from reports.render import Figure
from reports.sections import Col, Section
from warehouse.frames import result_frame

CLOSED_BY_ZH = {
    "COMPLETED": "已竣工",
    "WITHDRAWN": "县区月报已不再填报该项目",
    "RESOLVED": "问题已消除",
}
PROJECT_ITEM_ZH = "项目竣工销号"

CLOSED_COLUMNS = [
    Col("county_name", "县（区）"),
    Col("item_zh", "事项"),
    Col("project_id", "项目编号"),
    Col("school_name", "学校名称"),
    Col("opened_period", "挂帐月份"),
    Col("closed_by_zh", "销号依据"),
    Col("closed_on", "销号日期", "date"),
    Col("months_open", "挂帐月数", "int"),
]
OPEN_COLUMNS = [
    Col("county_name", "县（区）"),
    Col("item_zh", "事项"),
    Col("project_id", "项目编号"),
    Col("school_name", "学校名称"),
    Col("opened_period", "挂帐月份"),
    Col("months_open", "挂帐月数", "int"),
    Col("detail", "挂帐时情况"),
]
OPEN_PROJECT_COLUMNS = [
    Col("project_id", "项目编号"),
    Col("school_name", "学校名称"),
    Col("project_type", "项目类别"),
    Col("status", "最新状态"),
    Col("first_period", "首次报送"),
    Col("months_open", "在账月数", "int"),
]


@dataclass(frozen=True)
class LedgerSections:
    """What the ledger partial (``_partials/ledger.html``) renders."""

    figures: list[Figure]
    sections: list[Section]
    note_zh: str = ""


def _months(first: pd.Series, period: str) -> pd.Series:
    if first.empty:
        return pd.Series(dtype="Int64")
    now = periods.index(period)
    return pd.Series([now - periods.index(p) + 1 for p in first], index=first.index, dtype="Int64")


@dataclass
class LedgerView:
    """The ledger as of ``period``: projects and exception events open then or closed that month."""

    period: str
    projects: pd.DataFrame  # ledger_project rows + county_name
    events: pd.DataFrame  # ledger_exception rows + county_name
    names: dict[str, str] = field(default_factory=dict)

    def for_county(self, county_code: str) -> LedgerView:
        p, e = self.projects, self.events
        return LedgerView(
            self.period,
            p[p["county_code"] == county_code].reset_index(drop=True),
            e[e["county_code"] == county_code].reset_index(drop=True),
            self.names,
        )

    # -- the cuts --------------------------------------------------------------------------
    def closed_projects(self) -> pd.DataFrame:
        return self.projects[self.projects["closed_period"] == self.period]

    def open_projects(self) -> pd.DataFrame:
        p = self.projects
        p = p[p["closed_period"].isna() | (p["closed_period"] > self.period)]
        p = p.sort_values(["first_period", "county_code", "project_id"])
        return p.assign(months_open=_months(p["first_period"], self.period)).reset_index(drop=True)

    def closed_events(self) -> pd.DataFrame:
        return self.events[self.events["closed_period"] == self.period]

    def open_events(self) -> pd.DataFrame:
        e = self.events
        e = e[e["closed_period"].isna() | (e["closed_period"] > self.period)]
        e = e.sort_values(["opened_period", "county_code", "category", "project_id"])
        return e.assign(months_open=_months(e["opened_period"], self.period)).reset_index(drop=True)

    def closed_items(self) -> pd.DataFrame:
        """Everything ticked off this month: completed or withdrawn projects, closed exceptions;
        oldest first."""
        p = self.closed_projects()
        e = self.closed_events()
        items = pd.concat(
            [
                pd.DataFrame(
                    {
                        "county_code": p["county_code"],
                        "item_zh": PROJECT_ITEM_ZH,
                        "project_id": p["project_id"],
                        "school_name": p["school_name"],
                        "opened_period": p["first_period"],
                        "closed_by": p["closed_by"],
                        "closed_on": p["closed_on"],
                    }
                ),
                pd.DataFrame(
                    {
                        "county_code": e["county_code"],
                        "item_zh": e["category"].map(CATEGORIES).fillna(e["category"]),
                        "project_id": e["project_id"].replace("", None),
                        "school_name": e["school_name"],
                        "opened_period": e["opened_period"],
                        "closed_by": e["closed_by"],
                        "closed_on": [periods.last_day(x) for x in e["closed_period"]],
                    }
                ),
            ],
            ignore_index=True,
        )
        items = items.sort_values(
            ["opened_period", "county_code", "item_zh", "project_id"], na_position="first"
        )
        items["closed_by_zh"] = items["closed_by"].map(CLOSED_BY_ZH).fillna(items["closed_by"])
        items["months_open"] = _months(items["opened_period"], self.period)
        items["county_name"] = items["county_code"].map(self.names).fillna(items["county_code"])
        return items.reset_index(drop=True)

    def open_items(self) -> pd.DataFrame:
        e = self.open_events()
        return e.assign(
            item_zh=e["category"].map(CATEGORIES).fillna(e["category"]),
            project_id=e["project_id"].replace("", None),
            county_name=e["county_code"].map(self.names).fillna(e["county_code"]),
        )

    # -- rendering -------------------------------------------------------------------------
    def figures(self) -> list[Figure]:
        open_p = self.open_projects()
        return [
            Figure("在账项目", f"{len(open_p)}个", "未竣工、仍在县区月报中"),
            Figure("本月竣工销号", f"{int((self.closed_projects()['closed_by'] == 'COMPLETED').sum())}个"),
            Figure("本月异常销号", f"{len(self.closed_events())}项"),
            Figure("仍在挂帐的异常", f"{len(self.open_events())}项"),
        ]

    def sections(self, with_projects: bool = False) -> LedgerSections:
        label = periods.label_zh(self.period)
        secs = [
            Section(
                "ledger_closed",
                f"{label}销号事项（按挂帐时间排序）",
                CLOSED_COLUMNS,
                self.closed_items(),
                sheet_zh="本月销号",
            ),
            Section(
                "ledger_open",
                "仍在挂帐的异常事项（按挂帐时间排序，最早的在前）",
                OPEN_COLUMNS,
                self.open_items(),
                sheet_zh="挂帐异常",
            ),
        ]
        if with_projects:
            secs.append(
                Section(
                    "ledger_projects",
                    "在账项目（未竣工，按首次报送时间排序）",
                    OPEN_PROJECT_COLUMNS,
                    self.open_projects(),
                    sheet_zh="在账项目",
                )
            )
        note = "项目自首次出现在月报起挂帐，竣工（已竣工并填报竣工日期）即销号；异常事项自规则首次触发的月份起挂帐，问题消除的月份销号。"
        return LedgerSections(self.figures(), secs, note)


def _has(engine: sa.Engine, name: str) -> bool:
    return sa.inspect(engine).has_table(name)


def load_ledger(engine: sa.Engine, period: str, county_code: str | None = None) -> LedgerView | None:
    """The ledger as of ``period`` (None when the warehouse has no ledger tables yet)."""
    from warehouse.schema import ledger_exception, ledger_project, ref_division

    periods.check_period(period)
    if not _has(engine, "ledger_project"):
        return None
    lp, ev = ledger_project, ledger_exception
    q_p = sa.select(lp).where(
        lp.c.first_period <= period, sa.or_(lp.c.closed_period.is_(None), lp.c.closed_period >= period)
    )
    q_e = sa.select(ev).where(
        ev.c.opened_period <= period, sa.or_(ev.c.closed_period.is_(None), ev.c.closed_period >= period)
    )
    if county_code is not None:
        q_p, q_e = q_p.where(lp.c.county_code == county_code), q_e.where(ev.c.county_code == county_code)
    with engine.connect() as conn:
        frames = []
        for q in (q_p, q_e):
            res = conn.execute(q)
            frames.append(result_frame(res))
        names = dict(conn.execute(sa.select(ref_division.c.county_code, ref_division.c.county_name)).all())
    projects, events = frames
    for f in (projects, events):
        f["county_name"] = f["county_code"].map(names).fillna(f["county_code"]) if len(f) else None
    return LedgerView(period, projects, events, {str(k): str(v) for k, v in names.items() if v})


@dataclass
class PackLedger:
    """The ledger of a pack: the province's sections, each county's (its own rows only), and the
    follow-up of last month's proposed summons (``reports.circular``)."""

    view: LedgerView
    followup: Section | None = None
    _by_county: dict[str, LedgerView] | None = None

    def pack(self) -> LedgerSections:
        s = self.view.sections()
        extra = [self.followup] if self.followup is not None else []
        return LedgerSections(s.figures, [*s.sections, *extra], s.note_zh)

    def county(self, county_code: str) -> LedgerSections:
        if self._by_county is None:
            v = self.view
            p = dict(tuple(v.projects.groupby("county_code"))) if len(v.projects) else {}
            e = dict(tuple(v.events.groupby("county_code"))) if len(v.events) else {}
            self._by_county = {
                c: LedgerView(
                    v.period,
                    p.get(c, v.projects.iloc[0:0]).reset_index(drop=True),
                    e.get(c, v.events.iloc[0:0]).reset_index(drop=True),
                    v.names,
                )
                for c in set(p) | set(e)
            }
        empty = LedgerView(
            self.view.period, self.view.projects.iloc[0:0], self.view.events.iloc[0:0], self.view.names
        )
        return self._by_county.get(county_code, empty).sections(with_projects=True)


def load_pack_ledger(engine: sa.Engine, period: str) -> PackLedger | None:
    """The pack's ledger for ``period`` with the follow-up of last month's summons list."""
    view = load_ledger(engine, period)
    if view is None:
        return None
    from reports.circular import summons_followup_section

    return PackLedger(view, summons_followup_section(engine, period))
