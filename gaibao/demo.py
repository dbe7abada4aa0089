"""The demo: two years of county returns from Bengbu (蚌埠市) and Fuyang (阜阳市), as real files.

``generate_demo(home)`` writes, under ``home``:

- ``inbox/<county_code>/``: one progress and one funding return per county and month,
  2017-01 to 2018-12, in the shapes counties really send (``gaibao.returnfiles``), with the
  file's mtime set to when it arrived (Asia/Shanghai);
- ``plan/全面改薄五年规划2014-2018.xlsx``: the five-year plan of the fifteen counties.

The story is the one the joint meeting knows: Bengbu ahead (area completion ≈ 108.3%, equipment
≈ 91.9% by 2018-12, 142.84万㎡ completed), some Fuyang counties lagging (临泉县 most), a few projects
stuck 未开工 past their planned start, a few stalled 在建 for months, and Taihe (太和县) reporting
the seed's funding figures (14.5亿元 …) by 2018-12. A handful of deliberate faults, one for each
E and W rule of the contract and each file-level case (wrong county, resubmission, late, missing),
are listed in the returned :class:`DemoManifest` so tests can assert the pipeline catches them.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed writes the same files.
"""

from __future__ import annotations

import calendar
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from gaibao.contract import BUILDING, COMPLETED, EQUIPMENT, IN_PROGRESS, KIND_NAME_ZH, NOT_STARTED
from gaibao.returnfiles import FileStyle, WrittenFile, write_return

log = logging.getLogger(__name__)

TZ = ZoneInfo("Asia/Shanghai")
PLAN_CYCLE = "2014-2018"
FIRST_PERIOD, LAST_PERIOD = "2017-01", "2018-12"

CITIES: dict[str, str] = {"340300": "蚌埠市", "341200": "阜阳市"}

# county code: (name, project-id prefix, number of projects, city)
COUNTIES: dict[str, tuple[str, str, int]] = {
    "340302": ("龙子湖区", "LZH", 38),
    "340303": ("蚌山区", "BS", 45),
    "340304": ("禹会区", "YH", 52),
    "340311": ("淮上区", "HS", 60),
    "340321": ("怀远县", "HY", 140),
    "340322": ("五河县", "WH", 118),
    "340323": ("固镇县", "GZ", 112),
    "341202": ("颍州区", "YZ", 70),
    "341203": ("颍东区", "YD", 76),
    "341204": ("颍泉区", "YQ", 64),
    "341221": ("临泉县", "LQ", 150),
    "341222": ("太和县", "TH", 146),
    "341225": ("阜南县", "FN", 132),
    "341226": ("颍上县", "YS", 138),
    "341282": ("界首市", "JS", 84),
}

# Area / equipment completion against the plan at 2018-12, per county (Bengbu scaled to the
# city's reported 108.3% / 91.9%).
AREA_RATE = {
    "340302": 1.12, "340303": 1.15, "340304": 1.10, "340311": 1.06, "340321": 1.09, "340322": 0.99,
    "340323": 1.04, "341202": 0.97, "341203": 0.91, "341204": 0.95, "341221": 0.68, "341222": 1.02,
    "341225": 0.79, "341226": 0.86, "341282": 0.93,
}  # fmt: skip
EQUIPMENT_RATE = {
    "340302": 0.95, "340303": 0.97, "340304": 0.93, "340311": 0.90, "340321": 0.92, "340322": 0.86,
    "340323": 0.90, "341202": 0.88, "341203": 0.84, "341204": 0.87, "341221": 0.62, "341222": 0.96,
    "341225": 0.74, "341226": 0.80, "341282": 0.85,
}  # fmt: skip
BENGBU_AREA_RATE, BENGBU_EQUIPMENT_RATE, BENGBU_COMPLETED_M2 = 1.083, 0.919, 1_428_400

# Taihe's funding at 2018-12 (seed report): 万元, 亩, 人.
TAIHE_FUNDING = {
    "funds_total_wan": 145000.0,
    "funds_rural_infra_wan": 55000.0,
    "funds_urban_wan": 58600.0,
    "funds_equipment_wan": 22800.0,
    "funds_land_wan": 5600.0,
    "land_mu": 1277.0,
    "teachers_recruited": 1766,
    "teachers_rural": 1464,
    "rural_teacher_subsidy_wan": 5000.0,
}

# How each county's programme runs: (planned starts from, to), start delay (mean days), pace.
_LAGGING = {"341221": 2.6, "341225": 1.8, "341226": 1.5, "341203": 1.3}
_STUCK = {"341221": 4, "341225": 2, "341226": 1, "340322": 1}
_STALLED = {"341221": 3, "341203": 2, "340323": 1, "341225": 1}

_TOWNS = [
    "城关",
    "新集",
    "双桥",
    "白莲",
    "马店",
    "高庙",
    "大李",
    "王庄",
    "陈集",
    "杨湖",
    "刘集",
    "张营",
    "赵庙",
    "李兴",
    "孙岗",
    "周寨",
    "吴桥",
    "郑店",
    "冯楼",
    "许集",
    "宋集",
    "关集",
    "韦寨",
    "黄岗",
    "洪河",
    "老集",
    "姜寨",
    "谢桥",
    "迎仙",
    "宫集",
    "旧县",
    "三塔",
    "倪邱",
    "原墙",
    "税镇",
    "肖口",
]
_VILLAGES = [
    "前进",
    "红星",
    "和平",
    "胜利",
    "新华",
    "东风",
    "建设",
    "光明",
    "团结",
    "幸福",
    "大王",
    "小李",
    "后湖",
    "西刘",
    "南张",
    "北陈",
    "张楼",
    "荷花",
]
_SURNAMES = [
    "王",
    "李",
    "张",
    "刘",
    "陈",
    "杨",
    "赵",
    "黄",
    "周",
    "吴",
    "徐",
    "孙",
    "马",
    "朱",
    "胡",
    "郭",
    "何",
    "高",
    "林",
    "罗",
]
_GIVEN = [
    "芳",
    "娜",
    "伟",
    "洋",
    "静",
    "帆",
    "磊",
    "敏",
    "婷",
    "强",
    "丽",
    "涛",
    "超",
    "琳",
    "斌",
    "燕",
    "军",
    "杰",
    "勇",
    "艳",
    "明",
    "霞",
]


# --------------------------------------------------------------------------------------------
# Manifest


@dataclass(frozen=True)
class DemoFile:
    """One file written into a county's folder."""

    path: Path
    folder_county: str  # the folder (the county whose source delivers it)
    content_county: str  # the 区划代码 inside (differs for the wrong-county file)
    period: str
    kind: str
    fmt: str
    encoding: str | None  # text encoding as written (None for XLSX)
    received_at: datetime  # tz-aware (Asia/Shanghai); the file's mtime
    rows: int  # data rows (without total/blank rows)
    superseded: bool = False  # a later file for the same county/period/kind exists


@dataclass(frozen=True)
class Anomaly:
    """A deliberate fault. ``rule`` names the contract rule (see :data:`RULES`)."""

    rule: str
    severity: str  # error | warning | refusal | late | missing | resubmission
    kind: str
    county_code: str  # the folder county
    period: str
    file: Path | None
    row_number: int | None  # 1-based line/row the clerk sees; None for file-level or dropped rows
    project_id: str | None
    column: str | None
    value: str | None  # as written in the file (canonical units)
    explained: bool = False  # the row carries a 备注 explaining the warning
    persists: bool = False  # a W that stays on the project in later periods too
    description: str = ""


# The rules the anomalies exercise, with the contract's wording.
RULES: dict[str, str] = {
    "SCHOOL_CODE_MISSING": "学校标识码 missing (E)",
    "SCHOOL_CODE_MALFORMED": "学校标识码 not 10 digits (E)",
    "SCHOOL_NAME_MISSING": "学校名称 missing (E)",
    "SCHOOL_NAME_TOO_LONG": "学校名称 over 100 characters (E)",
    "PROJECT_ID_MISSING": "项目编号 missing (E)",
    "PROJECT_ID_MALFORMED": "项目编号 not 1-32 of A-Z a-z 0-9 - (E)",
    "PROJECT_ID_DUPLICATE": "项目编号 repeated within the file (E)",
    "PROJECT_TYPE_INVALID": "项目类别 not 校舍改造/设备购置 (E)",
    "STATUS_INVALID": "项目状态 not 未开工/在建/已竣工 or an alias (E)",
    "PLANNED_AREA_MISSING": "规划面积 missing for 校舍改造 (E)",
    "PLANNED_AREA_FOR_EQUIPMENT": "规划面积 > 0 for 设备购置 (E)",
    "STARTED_AREA_NEGATIVE": "开工面积 negative (E)",
    "COMPLETED_AREA_GT_STARTED": "竣工面积 > 开工面积 (E)",
    "PLANNED_INVEST_NOT_POSITIVE": "规划投资 missing or <= 0 (E)",
    "COMPLETED_INVEST_NEGATIVE": "完成投资 negative (E)",
    "FUNDS_EXCEED_INVEST": "中央资金 + 地方资金 > 完成投资 + 0.01 (E)",
    "ACTUAL_START_MISSING": "实际开工日期 missing when 在建/已竣工 (E)",
    "COMPLETED_DATE_MISSING": "竣工日期 missing when 已竣工 (E)",
    "COMPLETED_BEFORE_START": "竣工日期 before 实际开工日期 (E)",
    "COMPLETED_AFTER_PERIOD": "竣工日期 after the period's last day (E)",
    "NOT_STARTED_WITH_PROGRESS": "未开工 with 开工/竣工面积 or 完成投资 not 0 (E)",
    "COMPLETED_WITHOUT_AREA": "已竣工 校舍改造 with 竣工面积 0 (E)",
    "COMPLETED_AREA_OVER_150PCT": "竣工面积 > 1.5 × 规划面积 (W)",
    "COMPLETED_INVEST_OVER_150PCT": "完成投资 > 1.5 × 规划投资 (W)",
    "REGRESSION": "a cumulative figure falls against the last accepted period (W)",
    "DROPPED_PROJECT": "a project present last period is absent (W)",
    "STATUS_REGRESSION": "已竣工 goes back to 在建/未开工 (W)",
    "TOTAL_MISMATCH": "合计 row differs from the rows' sums by over 0.01 (W, file)",
    "FUNDING_PARTS_EXCEED_TOTAL": "the four 其中 parts exceed 累计投入资金合计 (E)",
    "TEACHERS_RURAL_EXCEEDS_RECRUITED": "补充农村教师 > 累计招聘引进教师 (E)",
    "FUNDING_TOTAL_MISSING": "累计投入资金合计 missing (E, required)",
    "FUNDING_NEGATIVE": "a funding figure below 0 (E)",
    "NOT_WHOLE_NUMBER": "教师人数 not a whole number (E)",
    "WRONG_COUNTY": "file names another county: refused whole",
    "RESUBMITTED": "a corrected file for the same period arrives later and replaces the first",
    "LATE": "received after the due day (5th of the next month)",
    "MISSING": "no return for the county and period",
}


@dataclass
class DemoManifest:
    home: Path
    seed: int
    counties: list[str]
    county_names: dict[str, str]
    county_city: dict[str, str]
    cities: dict[str, str]
    periods: list[str]
    plan_cycle: str
    plan_file: Path
    plan: dict[str, dict[str, float]]  # county -> plan_area_m2, plan_equipment_wan
    files: list[DemoFile]
    anomalies: list[Anomaly]
    stuck_projects: list[tuple[str, str, date]]  # county, project_id, planned_start (未开工 at 2018-12)
    stalled_projects: list[tuple[str, str, str, str]]  # county, project_id, first and last stalled period
    headline: dict[str, dict[str, float]]  # 2018-12 truth per county and per city code
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def inbox(self) -> Path:
        return self.home / "inbox"

    def anomalies_of(self, rule: str | None = None, severity: str | None = None) -> list[Anomaly]:
        return [
            a
            for a in self.anomalies
            if (rule is None or a.rule == rule) and (severity is None or a.severity == severity)
        ]

    def files_of(
        self, county: str | None = None, period: str | None = None, kind: str | None = None
    ) -> list[DemoFile]:
        return [
            f
            for f in self.files
            if (county is None or f.folder_county == county)
            and (period is None or f.period == period)
            and (kind is None or f.kind == kind)
        ]


# --------------------------------------------------------------------------------------------
# Projects


def _month_end(period: str) -> date:
    y, m = int(period[:4]), int(period[5:7])
    return date(y, m, calendar.monthrange(y, m)[1])


def _periods(first: str = FIRST_PERIOD, last: str = LAST_PERIOD) -> list[str]:
    out, y, m = [], int(first[:4]), int(first[5:7])
    while f"{y}-{m:02d}" <= last:
        out.append(f"{y}-{m:02d}")
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def _period_of(d: date) -> str:
    return f"{d.year}-{d.month:02d}"


@dataclass
class _Project:
    county: str
    project_id: str
    school_code: str
    school_name: str
    type: str
    planned_area: float
    planned_invest: float
    planned_start: date
    actual_start: date | None
    duration: int
    stall_from: date | None = None
    stall_days: int = 0
    area_ratio: float = 1.0
    invest_ratio: float = 1.0
    central_share: float = 0.6
    phased: bool = False
    note: str | None = None
    note_from: str | None = None  # period from which the note is written
    final_area: float = 0.0

    @property
    def completed_on(self) -> date | None:
        if self.actual_start is None:
            return None
        end = self.actual_start + timedelta(days=self.duration)
        if self.stall_from is not None and self.stall_from < end:
            end += timedelta(days=self.stall_days)
        return end

    def progress(self, d: date) -> float:
        if self.actual_start is None or d < self.actual_start:
            return 0.0
        days = (d - self.actual_start).days
        if self.stall_from is not None and d > self.stall_from:
            days -= min((d - self.stall_from).days, self.stall_days)
        return min(1.0, max(days, 0) / self.duration)

    def row(self, period: str) -> dict[str, Any]:
        d = _month_end(period)
        done = self.completed_on
        if self.actual_start is None or d < self.actual_start:
            status = NOT_STARTED
        elif done is not None and done <= d:
            status = COMPLETED
        else:
            status = IN_PROGRESS
        p = 1.0 if status == COMPLETED else self.progress(d)
        if self.type == BUILDING:
            started = self.final_area if status != NOT_STARTED else 0.0
            if status == COMPLETED:
                completed = self.final_area
            elif self.phased and p >= 0.5:
                completed = float(round(self.final_area * 0.45))
            else:
                completed = 0.0
        else:
            started = completed = 0.0
        total_invest = round(self.planned_invest * self.invest_ratio, 2)
        invest = total_invest if status == COMPLETED else round(total_invest * p**0.9, 2)
        central = round(invest * self.central_share, 2)
        local = round(invest - central, 2)
        note = self.note if (self.note and self.note_from and period >= self.note_from) else None
        return {
            "period": period,
            "county_code": self.county,
            "school_code": self.school_code,
            "school_name": self.school_name,
            "project_id": self.project_id,
            "project_type": self.type,
            "status": status,
            "planned_area_m2": self.planned_area,
            "started_area_m2": started,
            "completed_area_m2": completed,
            "planned_invest_wan": self.planned_invest,
            "completed_invest_wan": invest,
            "funds_central_wan": central,
            "funds_local_wan": local,
            "planned_start": self.planned_start,
            "actual_start": self.actual_start if status != NOT_STARTED else None,
            "completed_date": done if status == COMPLETED else None,
            "reporter": None,
            "phone": None,
            "note": note,
        }


def _schools(rng: np.random.Generator, code: str, name: str, n: int) -> list[tuple[str, str]]:
    towns = list(rng.choice(_TOWNS, size=min(len(_TOWNS), 6 + n // 12), replace=False))
    urban = name.endswith("区")
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    numbers = rng.choice(np.arange(1, 9999), size=n, replace=False)
    for i in range(n):
        kind = int(rng.integers(0, 5))
        town = str(towns[int(rng.integers(0, len(towns)))])
        if urban and kind < 2:
            school = (
                f"{name}第{'一二三四五六七八九十'[int(rng.integers(0, 10))]}{'小学' if kind == 0 else '中学'}"
            )
        elif kind == 0:
            school = f"{town}镇中心小学"
        elif kind == 1:
            school = f"{town}镇初级中学"
        elif kind == 2:
            school = f"{town}镇中心学校"
        else:
            school = f"{town}镇{_VILLAGES[int(rng.integers(0, len(_VILLAGES)))]}小学"
        tries = 0
        while school in seen and tries < 20:
            village = _VILLAGES[int(rng.integers(0, len(_VILLAGES)))]
            school = f"{towns[int(rng.integers(0, len(towns)))]}镇{village}小学"
            tries += 1
        if school in seen:
            continue
        seen.add(school)
        out.append((f"{code}{int(numbers[i]):04d}", school))
    return out


def _random_date(rng: np.random.Generator, start: date, end: date) -> date:
    return start + timedelta(days=int(rng.integers(0, (end - start).days + 1)))


def _make_projects(rng: np.random.Generator, code: str) -> list[_Project]:
    name, prefix, n = COUNTIES[code]
    bengbu = code.startswith("3403")
    lag = _LAGGING.get(code, 1.0)
    schools = _schools(rng, code, name, max(8, int(n * 0.6)))
    starts_from, starts_to = (
        (date(2014, 9, 1), date(2017, 9, 30)) if bengbu else (date(2015, 3, 1), date(2018, 6, 30))
    )
    projects: list[_Project] = []
    drafts = []
    for _ in range(n):
        ptype = BUILDING if rng.random() < 0.64 else EQUIPMENT
        planned_start = _random_date(rng, starts_from, starts_to)
        drafts.append((planned_start, ptype))
    drafts.sort(key=lambda t: t[0])
    seq: dict[int, int] = {}
    for planned_start, ptype in drafts:
        seq[planned_start.year] = seq.get(planned_start.year, 0) + 1
        pid = f"{prefix}-{planned_start.year}-{seq[planned_start.year]:03d}"
        school_code, school_name = schools[int(rng.integers(0, len(schools)))]
        if ptype == BUILDING:
            area = float(np.clip(rng.lognormal(np.log(1500), 0.6), 200, 9000))
            invest = area * float(rng.uniform(0.12, 0.22))
            duration = int(rng.integers(150, 390) * (1.0 + 0.25 * (lag - 1)))
        else:
            area = 0.0
            invest = float(np.clip(rng.lognormal(np.log(80), 0.7), 8, 600))
            duration = int(rng.integers(30, 120) * (1.0 + 0.25 * (lag - 1)))
        delay = int(rng.exponential(25 * lag)) - 10
        projects.append(
            _Project(
                county=code,
                project_id=pid,
                school_code=school_code,
                school_name=school_name,
                type=ptype,
                planned_area=area,
                planned_invest=invest,
                planned_start=planned_start,
                actual_start=planned_start + timedelta(days=delay),
                duration=max(duration, 20),
                area_ratio=float(rng.uniform(0.97, 1.08)),
                invest_ratio=float(rng.uniform(0.9, 1.06)),
                central_share=float(rng.choice([0.5, 0.55, 0.6, 0.65, 0.7])),
                phased=ptype == BUILDING and rng.random() < 0.25,
            )
        )
    # Stuck: planned to start in 2017-2018, never started.
    candidates = [p for p in projects if date(2017, 3, 1) <= p.planned_start <= date(2018, 5, 31)]
    for p in _pick(rng, candidates, _STUCK.get(code, 0)):
        p.actual_start = None
    # Stalled: building work that stops for 4-8 months in 2017-2018.
    candidates = [
        p
        for p in projects
        if p.actual_start is not None
        and p.type == BUILDING
        and date(2016, 10, 1) <= p.actual_start <= date(2017, 12, 31)
    ]
    for p in _pick(rng, candidates, _STALLED.get(code, 0)):
        assert p.actual_start is not None
        p.stall_from = max(p.actual_start + timedelta(days=int(p.duration * 0.4)), date(2017, 2, 1))
        p.stall_days = int(rng.integers(130, 250))
        p.phased = False
    return projects


def _pick(rng: np.random.Generator, items: list[Any], k: int) -> list[Any]:
    if k <= 0 or not items:
        return []
    idx = rng.choice(len(items), size=min(k, len(items)), replace=False)
    return [items[int(i)] for i in sorted(idx)]


def _finalise_areas(projects: list[_Project]) -> None:
    for p in projects:
        p.planned_area = float(round(p.planned_area)) if p.type == BUILDING else 0.0
        p.planned_invest = round(p.planned_invest, 2)
        p.final_area = float(round(p.planned_area * p.area_ratio)) if p.type == BUILDING else 0.0


# --------------------------------------------------------------------------------------------
# Funding


def _funding_series(rng: np.random.Generator, code: str, periods: list[str]) -> list[dict[str, Any]]:
    if code == "341222":
        final = dict(TAIHE_FUNDING)
    else:
        urban = COUNTIES[code][0].endswith("区")
        total = float(rng.uniform(15000, 50000) if urban else rng.uniform(40000, 120000))
        rural = total * float(rng.uniform(0.2, 0.3) if urban else rng.uniform(0.35, 0.45))
        urb = total * float(rng.uniform(0.4, 0.5) if urban else rng.uniform(0.28, 0.38))
        equip = total * float(rng.uniform(0.12, 0.17))
        land = total * float(rng.uniform(0.02, 0.05))
        teachers = int(rng.integers(250, 900) if urban else rng.integers(700, 1800))
        final = {
            "funds_total_wan": round(total, 2),
            "funds_rural_infra_wan": round(rural, 2),
            "funds_urban_wan": round(urb, 2),
            "funds_equipment_wan": round(equip, 2),
            "funds_land_wan": round(land, 2),
            "land_mu": round(land / float(rng.uniform(3.5, 5.0)), 1),
            "teachers_recruited": teachers,
            "teachers_rural": int(
                teachers * float(rng.uniform(0.55, 0.85) if not urban else rng.uniform(0.3, 0.5))
            ),
            "rural_teacher_subsidy_wan": round(float(rng.uniform(800, 4000)), 0),
        }
    g0 = float(rng.uniform(0.62, 0.75))
    out = []
    for i, period in enumerate(periods):
        share = g0 + (1 - g0) * (i + 1) / len(periods)
        month = int(period[5:7])
        year = int(period[:4])
        # Teachers are recruited in waves each September: 2016's, 2017's, 2018's.
        waves = 1 + (year >= 2017 and (year > 2017 or month >= 9)) + (year == 2018 and month >= 9)
        row: dict[str, Any] = {"period": period, "county_code": code}
        for col in (
            "funds_total_wan",
            "funds_rural_infra_wan",
            "funds_urban_wan",
            "funds_equipment_wan",
            "funds_land_wan",
        ):
            row[col] = round(final[col] * share, 2)
        row["land_mu"] = round(final["land_mu"] * share, 1)
        row["teachers_recruited"] = int(final["teachers_recruited"] * waves / 3)
        row["teachers_rural"] = int(final["teachers_rural"] * waves / 3)
        row["rural_teacher_subsidy_wan"] = final["rural_teacher_subsidy_wan"] * (1.0 if year == 2018 else 0.9)
        out.append(row)
    out[-1].update({k: v for k, v in final.items()})
    return out


# --------------------------------------------------------------------------------------------
# File styles and names


def _style(code: str, period: str, kind: str, rng: np.random.Generator) -> tuple[FileStyle, str]:
    """The county's habitual file shape, with a little month-to-month drift; and the name pattern."""
    month = int(period[5:7])
    blank = rng.random() < 0.2
    styles: dict[str, tuple[FileStyle, str]] = {
        "340302": (FileStyle(), "code_en"),
        "340303": (FileStyle(encoding="utf-8-sig", headers="halfwidth", numbers="thousands"), "zh_full"),
        "340304": (FileStyle(encoding="gbk", headers="spaces", title_rows=True, none_as="—"), "zh_full"),
        "340311": (
            FileStyle(
                encoding="gb18030",
                headers="aliases",
                money_unit="元",
                date_style="slash",
                period_style="compact",
            ),
            "short",
        ),
        "340321": (
            FileStyle(
                fmt="xlsx",
                title_rows=True,
                data_sheet="进展" if kind == "progress" else "资金",
                date_style="excel",
                total_row=True,
                blank_rows=month % 3 == 0,
            ),
            "zh_full",
        ),  # fmt: skip
        # 五河县 moved from CSV to the Excel template in 2018.
        "340322": (
            FileStyle(
                fmt="xlsx" if period >= "2018-01" else "csv",
                encoding="gb18030",
                area_unit="万平方米",
                date_style="zh",
                period_style="zh",
                codes_as_numbers=True,
            ),
            "zh_full",
        ),
        "340323": (FileStyle(headers="canonical", date_style="dot"), "code_en"),
        "341202": (FileStyle(encoding="gbk", numbers="fullwidth", none_as="-", total_row=True), "zh_full"),
        "341203": (FileStyle(encoding="utf-8-sig", serial_column=True, blank_rows=blank), "short"),
        # 颍泉区 sent Excel in 2017, GBK CSV exported from WPS in 2018.
        "341204": (
            FileStyle(
                fmt="xlsx" if period < "2018-01" else "csv",
                encoding="gbk",
                numbers="text",
                money_unit="元",
                date_style="slash" if month % 2 else "iso",
            ),
            "code_en",
        ),
        "341221": (
            FileStyle(encoding="gb18030", title_rows=True, period_style="slash", numbers="padded"),
            "zh_full",
        ),
        "341222": (
            (FileStyle(fmt="json", headers="canonical"), "platform")
            if period >= "2018-01"
            else (FileStyle(total_row=True, blank_rows=blank), "zh_full")
        ),
        "341225": (
            FileStyle(
                encoding="gbk", headers="halfwidth", area_unit="万平方米", money_unit="元", total_row=True
            ),
            "short",
        ),
        "341226": (FileStyle(fmt="json", date_style="zh" if month % 2 else "dot"), "platform"),
        "341282": (
            FileStyle(
                fmt="xlsx",
                data_sheet="进展" if kind == "progress" else "资金",
                headers="spaces",
                date_style="excel",
                none_as="—",
                title_rows=True,
            ),
            "code_en",
        ),  # fmt: skip
    }
    style, pattern = styles[code]
    if kind == "funding":
        style = style.with_(total_row=False)
    return style, pattern


def _file_name(code: str, period: str, kind: str, pattern: str, style: FileStyle, extra: str = "") -> str:
    name = COUNTIES[code][0]
    y, m = period[:4], int(period[5:7])
    iso, compact, zh = period, f"{y}{m:02d}", f"{y}年{m}月"
    ext = style.suffix
    if pattern == "zh_full":
        return f"{name}{KIND_NAME_ZH[kind]}{zh}{extra}{ext}"
    if pattern == "code_en":
        return f"{code}_{kind}_{iso}{extra}{ext}"
    if pattern == "short":
        return f"{'进展' if kind == 'progress' else '资金'}月报_{compact}{extra}{ext}"
    return f"{kind}-{compact}{extra}{ext}"


def _received(rng: np.random.Generator, period: str) -> datetime:
    """When a county's return lands: mostly days 1-4 of the next month, a few in the last days of P."""
    end = _month_end(period)
    if rng.random() < 0.12:
        day = end - timedelta(days=int(rng.integers(0, 2)))
    else:
        day = end + timedelta(days=int(rng.integers(1, 5)))
    hour = int(rng.choice([8, 9, 10, 11, 14, 15, 16, 17]))
    return datetime(
        day.year, day.month, day.day, hour, int(rng.integers(0, 60)), int(rng.integers(0, 60)), tzinfo=TZ
    )


def _people(rng: np.random.Generator, code: str) -> list[tuple[str, str]]:
    area = "0552" if code.startswith("3403") else "0558"
    out = []
    for _ in range(2):
        person = str(rng.choice(_SURNAMES)) + "".join(rng.choice(_GIVEN, size=int(rng.integers(1, 3))))
        if rng.random() < 0.5:
            phone = f"{area}-{int(rng.integers(2000000, 8999999))}"
        else:
            phone = (
                f"1{int(rng.choice([35, 37, 38, 39, 51, 58, 86, 87]))}{int(rng.integers(10000000, 99999999))}"
            )
        out.append((person, phone))
    return out


# --------------------------------------------------------------------------------------------
# Calibration against the seed's headline figures


def _calibrate(projects: dict[str, list[_Project]], last: str) -> dict[str, dict[str, float]]:
    """Scale Bengbu's building work to 142.84万㎡ completed and set every county's plan."""
    bengbu = [p for c, ps in projects.items() if c.startswith("3403") for p in ps]

    def completed_area(ps: list[_Project]) -> float:
        return sum(p.row(last)["completed_area_m2"] for p in ps if p.type == BUILDING)

    _finalise_areas(bengbu)
    k = BENGBU_COMPLETED_M2 / completed_area(bengbu)
    for p in bengbu:
        if p.type == BUILDING:
            p.planned_area *= k
            p.planned_invest *= k
    for ps in projects.values():
        _finalise_areas(ps)
    # Hit the figure exactly: adjust the largest completed project's final area.
    diff = BENGBU_COMPLETED_M2 - completed_area(bengbu)
    done = [p for p in bengbu if p.type == BUILDING and p.row(last)["status"] == COMPLETED and p.note is None]
    biggest = max(done, key=lambda p: p.final_area)
    biggest.final_area += diff

    plan: dict[str, dict[str, float]] = {}
    for code, ps in projects.items():
        area = completed_area(ps)
        equip = sum(p.row(last)["completed_invest_wan"] for p in ps if p.type == EQUIPMENT)
        plan[code] = {
            "plan_area_m2": area / AREA_RATE[code],
            "plan_equipment_wan": equip / EQUIPMENT_RATE[code],
        }
    # Bengbu as a city at exactly the reported rates.
    b_codes = [c for c in plan if c.startswith("3403")]
    for key, rate in (("plan_area_m2", BENGBU_AREA_RATE), ("plan_equipment_wan", BENGBU_EQUIPMENT_RATE)):
        col = "completed_area_m2" if key == "plan_area_m2" else "completed_invest_wan"
        ptype = BUILDING if key == "plan_area_m2" else EQUIPMENT
        done_sum = sum(p.row(last)[col] for c in b_codes for p in projects[c] if p.type == ptype)
        k = (done_sum / rate) / sum(plan[c][key] for c in b_codes)
        for c in b_codes:
            plan[c][key] *= k
    for values in plan.values():
        values["plan_area_m2"] = float(round(values["plan_area_m2"]))
        values["plan_equipment_wan"] = round(values["plan_equipment_wan"], 2)
    return plan


# --------------------------------------------------------------------------------------------
# Deliberate faults


@dataclass
class _Fault:
    rule: str
    severity: str
    kind: str
    county: str
    period: str
    column: str | None
    index: int | None  # row index in the rows list (None: dropped row / file-level)
    project_id: str | None
    value: Any
    explained: bool = False
    persists: bool = False


def _find(rows: list[dict[str, Any]], used: set[str], *preds: Any) -> int:
    """The first row not yet used that fits the first predicate that any row fits."""
    for pred in preds:
        for i, r in enumerate(rows):
            if r["project_id"] not in used and pred(r):
                used.add(r["project_id"])
                return i
    raise LookupError("no row fits this fault")


def _inject_progress_faults(
    rows: dict[tuple[str, str], list[dict[str, Any]]], prev: Any, reserved: set[str]
) -> tuple[list[_Fault], dict[tuple[str, str], dict[str, float]]]:
    """Break one row per E/W rule in chosen county-months. Returns faults and total-row adjustments.

    ``reserved`` project ids (the persistent warnings) are left alone.
    """
    faults: list[_Fault] = []
    used: set[str] = set(reserved)
    total_adjust: dict[tuple[str, str], dict[str, float]] = {}

    def is_b(r: dict[str, Any]) -> bool:
        return r["project_type"] == BUILDING

    def st(status: str) -> Any:
        return lambda r: r["status"] == status

    def fault(rule: str, county: str, period: str, column: str | None, pred: Any, mutate: Any) -> None:
        rs = rows[(county, period)]
        preds = pred if isinstance(pred, tuple) else (pred,)
        i = _find(rs, used, *preds)
        value = mutate(rs[i])
        faults.append(
            _Fault(rule, "error", "progress", county, period, column, i, rs[i]["project_id"], value)
        )

    def setv(col: str, v: Any) -> Any:
        def m(r: dict[str, Any]) -> Any:
            r[col] = v
            return v

        return m

    def both(p: Any, q: Any) -> Any:
        return lambda r: p(r) and q(r)

    def steady(county: str, period: str, status: str) -> Any:
        """Rows whose project had the same status last period (no side effects across periods)."""
        last = {r["project_id"]: r for r in rows.get((county, prev(period)), [])}
        return lambda r: r["status"] == status and last.get(r["project_id"], {}).get("status") == status

    fault("SCHOOL_CODE_MISSING", "340302", "2017-03", "school_code", st(COMPLETED), setv("school_code", None))
    fault(
        "SCHOOL_CODE_MALFORMED", "340304", "2017-05", "school_code", st(COMPLETED),
        lambda r: r.__setitem__("school_code", r["school_code"][:9]) or r["school_code"],
    )  # fmt: skip
    fault("SCHOOL_NAME_MISSING", "340311", "2017-08", "school_name", st(COMPLETED), setv("school_name", None))
    fault(
        "SCHOOL_NAME_TOO_LONG", "341202", "2018-02", "school_name", st(COMPLETED),
        lambda r: r.__setitem__("school_name", r["school_name"] + "（" + "原乡镇中心学校与村小合并后的新校区，" * 6 + "）")
        or r["school_name"],
    )  # fmt: skip
    fault("PROJECT_ID_MISSING", "340322", "2017-10", "project_id", st(COMPLETED), setv("project_id", None))
    fault(
        "PROJECT_ID_MALFORMED", "340323", "2018-01", "project_id", st(COMPLETED),
        lambda r: r.__setitem__("project_id", r["project_id"] + "（补）") or r["project_id"],
    )  # fmt: skip
    # A row pasted twice: the second copy is appended at the end.
    rs = rows[("341203", "2017-04")]
    i = _find(rs, used, st(COMPLETED))
    rs.append(dict(rs[i]))
    faults.append(
        _Fault("PROJECT_ID_DUPLICATE", "error", "progress", "341203", "2017-04", "project_id", len(rs) - 1,
               rs[i]["project_id"], rs[i]["project_id"])
    )  # fmt: skip
    fault(
        "PROJECT_TYPE_INVALID",
        "341204",
        "2017-09",
        "project_type",
        st(COMPLETED),
        setv("project_type", "维修改造"),
    )
    fault(
        "STATUS_INVALID",
        "341221",
        "2017-11",
        "status",
        steady("341221", "2017-11", IN_PROGRESS),
        setv("status", "停工"),
    )
    fault("PLANNED_AREA_MISSING", "341222", "2017-07", "planned_area_m2", both(is_b, st(COMPLETED)),
          setv("planned_area_m2", None))  # fmt: skip
    fault(
        "PLANNED_AREA_FOR_EQUIPMENT", "341225", "2018-04", "planned_area_m2",
        both(lambda r: not is_b(r), st(COMPLETED)), setv("planned_area_m2", 120.0),
    )  # fmt: skip
    fault(
        "STARTED_AREA_NEGATIVE", "341226", "2018-05", "started_area_m2",
        both(is_b, steady("341226", "2018-05", IN_PROGRESS)),
        lambda r: r.__setitem__("started_area_m2", -r["started_area_m2"]) or r["started_area_m2"],
    )  # fmt: skip
    fault(
        "COMPLETED_AREA_GT_STARTED", "341282", "2017-12", "completed_area_m2", both(is_b, st(COMPLETED)),
        lambda r: r.__setitem__("completed_area_m2", r["started_area_m2"] + 180.0) or r["completed_area_m2"],
    )  # fmt: skip
    fault("PLANNED_INVEST_NOT_POSITIVE", "341282", "2017-03", "planned_invest_wan", st(NOT_STARTED),
          setv("planned_invest_wan", 0.0))  # fmt: skip

    def negate_invest(r: dict[str, Any]) -> Any:
        r["completed_invest_wan"] = -r["completed_invest_wan"]
        r["funds_central_wan"] = r["funds_local_wan"] = 0.0
        return r["completed_invest_wan"]

    fault("COMPLETED_INVEST_NEGATIVE", "340304", "2018-07", "completed_invest_wan",
          steady("340304", "2018-07", COMPLETED), negate_invest)  # fmt: skip

    def overfund(r: dict[str, Any]) -> Any:
        r["funds_central_wan"] = round(r["funds_central_wan"] + 50.0, 2)
        return r["funds_central_wan"]

    # Cross-column rules are reported on the column whose row of the contract states them.
    fault("FUNDS_EXCEED_INVEST", "340321", "2018-02", "funds_central_wan", st(COMPLETED), overfund)
    fault("ACTUAL_START_MISSING", "340302", "2018-05", "actual_start",
          lambda r: r["status"] in (IN_PROGRESS, COMPLETED), setv("actual_start", None))  # fmt: skip
    fault(
        "COMPLETED_DATE_MISSING",
        "341222",
        "2018-06",
        "completed_date",
        st(COMPLETED),
        setv("completed_date", None),
    )
    fault(
        "COMPLETED_BEFORE_START", "341202", "2017-06", "completed_date", st(COMPLETED),
        lambda r: r.__setitem__("completed_date", r["actual_start"] - timedelta(days=40)) or r["completed_date"],
    )  # fmt: skip
    fault(
        "COMPLETED_AFTER_PERIOD", "340321", "2017-06", "completed_date", st(COMPLETED),
        lambda r: r.__setitem__("completed_date", date(2017, 7, 20)) or r["completed_date"],
    )  # fmt: skip
    fault("NOT_STARTED_WITH_PROGRESS", "341225", "2017-09", "started_area_m2", both(is_b, st(NOT_STARTED)),
          setv("started_area_m2", 600.0))  # fmt: skip

    def newly_done(county: str, period: str) -> Any:
        last = {r["project_id"]: r for r in rows[(county, prev(period))]}
        return lambda r: (
            is_b(r) and r["status"] == COMPLETED and last[r["project_id"]]["completed_area_m2"] == 0
        )

    fault("COMPLETED_WITHOUT_AREA", "340322", "2018-08", "completed_area_m2",
          (newly_done("340322", "2018-08"), both(is_b, st(COMPLETED))), setv("completed_area_m2", 0.0))  # fmt: skip

    # Warnings that last one period.
    def typo_area(r: dict[str, Any]) -> Any:
        r["completed_area_m2"] = float(round(r["completed_area_m2"] / 10))
        return r["completed_area_m2"]

    rs = rows[("341282", "2018-09")]
    i = _find(rs, used, both(is_b, steady("341282", "2018-09", COMPLETED)))
    value = typo_area(rs[i])
    faults.append(_Fault("REGRESSION", "warning", "progress", "341282", "2018-09", "completed_area_m2", i,
                         rs[i]["project_id"], value))  # fmt: skip
    rs = rows[("341226", "2017-08")]
    i = _find(rs, used, steady("341226", "2017-08", COMPLETED))
    rs[i]["status"], rs[i]["completed_date"] = IN_PROGRESS, None
    faults.append(_Fault("STATUS_REGRESSION", "warning", "progress", "341226", "2017-08", "status", i,
                         rs[i]["project_id"], IN_PROGRESS))  # fmt: skip
    rs = rows[("340311", "2018-04")]
    i = _find(rs, used, st(COMPLETED))
    dropped = rs.pop(i)
    faults.append(_Fault("DROPPED_PROJECT", "warning", "progress", "340311", "2018-04", "project_id", None,
                         dropped["project_id"], dropped["project_id"]))  # fmt: skip
    total_adjust[("341202", "2018-09")] = {"completed_invest_wan": 12.5}
    faults.append(_Fault("TOTAL_MISMATCH", "warning", "progress", "341202", "2018-09", "completed_invest_wan", None,
                         None, 12.5))  # fmt: skip
    return faults, total_adjust


def _mark_persistent_warnings(
    projects: dict[str, list[_Project]], periods: list[str]
) -> list[tuple[str, str, str, bool]]:
    """Projects whose completed area or investment exceeds 1.5× plan from some period on.

    Returns (county, project_id, rule, explained). Set before calibration so the plan counts them.
    """
    out = []
    choices = [
        (
            "340303",
            "COMPLETED_AREA_OVER_150PCT",
            True,
            "原规划为教学楼一栋，经县政府批准增建综合楼，竣工面积相应增加",
        ),
        ("341203", "COMPLETED_AREA_OVER_150PCT", False, None),
        (
            "340321",
            "COMPLETED_INVEST_OVER_150PCT",
            True,
            "追加投资：新增附属工程及室外配套，已经县发改委批复",
        ),
    ]
    first, last = _month_end(periods[0]), _month_end(periods[-1])
    for county, rule, explained, note in choices:
        for p in projects[county]:
            done = p.completed_on
            if (
                p.type == BUILDING
                and not p.phased
                and p.stall_from is None
                and done is not None
                and first + timedelta(days=60) < done < last - timedelta(days=120)
            ):
                if rule == "COMPLETED_AREA_OVER_150PCT":
                    p.area_ratio = 1.72
                else:
                    p.invest_ratio = 1.66
                if note:
                    p.note = note
                    p.note_from = _period_of(p.actual_start or first)
                out.append((county, p.project_id, rule, explained))
                break
    return out


def _inject_funding_faults(rows: dict[tuple[str, str], dict[str, Any]]) -> list[_Fault]:
    faults = []

    def add(rule: str, severity: str, county: str, period: str, column: str, value: Any) -> None:
        rows[(county, period)][column] = value
        faults.append(_Fault(rule, severity, "funding", county, period, column, 0, None, value))

    # The 城区 part is overstated; the finding names the total the parts exceed.
    r = rows[("340323", "2017-05")]
    r["funds_urban_wan"] = round(r["funds_total_wan"] - r["funds_rural_infra_wan"] + 100.0, 2)
    faults.append(
        _Fault("FUNDING_PARTS_EXCEED_TOTAL", "error", "funding", "340323", "2017-05", "funds_total_wan", 0, None,
               r["funds_total_wan"])
    )  # fmt: skip
    r = rows[("341221", "2018-03")]
    add(
        "TEACHERS_RURAL_EXCEEDS_RECRUITED",
        "error",
        "341221",
        "2018-03",
        "teachers_rural",
        r["teachers_recruited"] + 12,
    )
    add("FUNDING_TOTAL_MISSING", "error", "341203", "2018-07", "funds_total_wan", None)
    add("FUNDING_NEGATIVE", "error", "340303", "2017-11", "land_mu", -12.0)
    r = rows[("341225", "2018-10")]
    add("NOT_WHOLE_NUMBER", "error", "341225", "2018-10", "teachers_recruited", r["teachers_recruited"] + 0.5)
    r = rows[("340304", "2018-02")]
    add("REGRESSION", "warning", "340304", "2018-02", "land_mu", round(r["land_mu"] / 10, 1))
    return faults


# --------------------------------------------------------------------------------------------
# The generator


def generate_demo(home: Path, seed: int = 2018) -> DemoManifest:
    """Write the demo inbox and plan under ``home``; returns what was written and where the faults are."""
    t0 = time.perf_counter()
    home = Path(home)
    rng = np.random.default_rng(seed)
    periods = _periods()
    last = periods[-1]
    prev = {p: q for q, p in zip(periods, periods[1:], strict=False)}.get

    from gaibao.divisions import bundled_divisions

    div = bundled_divisions().set_index("county_code")
    names = {c: str(div.loc[c, "county_name"]) if c in div.index else COUNTIES[c][0] for c in COUNTIES}
    county_city = {c: c[:4] + "00" for c in COUNTIES}

    projects = {c: _make_projects(rng, c) for c in COUNTIES}
    for ps in projects.values():
        _finalise_areas(ps)
    persistent = _mark_persistent_warnings(projects, periods)
    plan = _calibrate(projects, last)

    people = {c: _people(rng, c) for c in COUNTIES}
    progress_rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c, ps in projects.items():
        for period in periods:
            person, phone = people[c][0 if period < "2018-01" or c[-1] in "13579" else 1]
            rs = [p.row(period) for p in ps]
            for r in rs:
                r["reporter"], r["phone"] = person, phone
            progress_rows[(c, period)] = rs
    # Truth for the headline figures, before faults (2018-12 carries none).
    headline = _headline(progress_rows, plan, last, county_city)

    # The resubmission: 怀远县 2017-06 first arrives with a fault, then corrected.
    corrected_huaiyuan = [dict(r) for r in progress_rows[("340321", "2017-06")]]
    faults, total_adjust = _inject_progress_faults(progress_rows, prev, {pid for _, pid, _, _ in persistent})
    funding_rows: dict[tuple[str, str], dict[str, Any]] = {}
    for c in COUNTIES:
        for row in _funding_series(rng, c, periods):
            funding_rows[(c, row["period"])] = row
    faults += _inject_funding_faults(funding_rows)

    files: list[DemoFile] = []
    anomalies: list[Anomaly] = []
    written: dict[tuple[str, str, str], WrittenFile] = {}
    inbox = home / "inbox"
    missing = {("341221", "2018-10", "progress")}
    wrong_county = ("341204", "2018-03", "progress", "341203")
    late = ("341226", "2018-11", "progress")

    def emit(folder: str, content: str, period: str, kind: str, rows: list[dict[str, Any]], received: datetime,
             extra: str = "", superseded: bool = False) -> WrittenFile:  # fmt: skip
        srng = np.random.default_rng(
            [seed, int(content), int(period.replace("-", "")), int(kind == "funding")]
        )
        style, pattern = _style(content, period, kind, srng)
        name = _file_name(content, period, kind, pattern, style, extra)
        w = write_return(
            inbox / folder / name,
            kind,
            rows,
            style,
            county_name=names[content],
            period=period,
            total_adjust=total_adjust.get((content, period)) if kind == "progress" else None,
            created=received - timedelta(minutes=20),
        )
        ts = received.timestamp()
        os.utime(w.path, (ts, ts))
        files.append(
            DemoFile(
                w.path,
                folder,
                content,
                period,
                kind,
                style.fmt,
                style.file_encoding,
                received,
                len(rows),
                superseded,
            )
        )
        return w

    for c in COUNTIES:
        for period in periods:
            rrng = np.random.default_rng([seed, int(c), int(period.replace("-", ""))])
            received = _received(rrng, period)
            for kind in ("progress", "funding"):
                if (c, period, kind) in missing:
                    continue
                at = (
                    received + timedelta(minutes=int(rrng.integers(1, 40))) if kind == "funding" else received
                )
                if (c, period, kind) == late:
                    at = datetime(2018, 12, 12, 15, 20, 41, tzinfo=TZ)
                if (c, period, kind) == wrong_county[:3]:
                    other = wrong_county[3]
                    written[(c, period, kind)] = emit(
                        c, other, period, kind, progress_rows[(other, period)], at
                    )
                    continue
                if (c, period, kind) == ("340321", "2017-06", "progress"):
                    first = datetime(2017, 7, 3, 9, 41, 12, tzinfo=TZ)
                    written[(c, period, kind)] = emit(c, c, period, kind, progress_rows[(c, period)], first,
                                                      superseded=True)  # fmt: skip
                    fixed = emit(c, c, period, kind, corrected_huaiyuan, datetime(2017, 7, 4, 16, 5, 33, tzinfo=TZ),
                                 extra="（更正）")  # fmt: skip
                    written[(c, period, "progress-corrected")] = fixed
                    continue
                rows = progress_rows[(c, period)] if kind == "progress" else [funding_rows[(c, period)]]
                written[(c, period, kind)] = emit(c, c, period, kind, rows, at)

    for f in faults:
        w = written[(f.county, f.period, f.kind)]
        row_number = w.row_numbers[f.index] if f.index is not None else None
        anomalies.append(
            Anomaly(
                rule=f.rule,
                severity=f.severity,
                kind=f.kind,
                county_code=f.county,
                period=f.period,
                file=w.path,
                row_number=row_number,
                project_id=f.project_id,
                column=f.column,
                value=None if f.value is None else str(f.value),
                explained=f.explained,
                persists=f.persists,
                description=RULES[f.rule],
            )
        )
    for county, pid, rule, explained in persistent:
        col = "completed_area_m2" if rule == "COMPLETED_AREA_OVER_150PCT" else "completed_invest_wan"
        planned = "planned_area_m2" if col == "completed_area_m2" else "planned_invest_wan"
        for period in periods:
            rs = progress_rows[(county, period)]
            idx = next(i for i, r in enumerate(rs) if r["project_id"] == pid)
            r = rs[idx]
            if r[col] > 1.5 * r[planned]:
                w = written[(county, period, "progress")]
                anomalies.append(
                    Anomaly(rule, "warning", "progress", county, period, w.path, w.row_numbers[idx], pid, col,
                            str(r[col]), explained=explained, persists=True, description=RULES[rule])
                )  # fmt: skip
                break
    c, period, kind, other = wrong_county
    anomalies.append(
        Anomaly("WRONG_COUNTY", "refusal", kind, c, period, written[(c, period, kind)].path, None, None, "county_code",
                other, description=RULES["WRONG_COUNTY"])
    )  # fmt: skip
    anomalies.append(
        Anomaly("RESUBMITTED", "resubmission", "progress", "340321", "2017-06",
                written[("340321", "2017-06", "progress-corrected")].path, None, None, None, None,
                description=RULES["RESUBMITTED"] + f"; first file: {written[('340321', '2017-06', 'progress')].path.name}")
    )  # fmt: skip
    anomalies.append(
        Anomaly("LATE", "late", late[2], late[0], late[1], written[late].path, None, None, None, None,
                description=RULES["LATE"])
    )  # fmt: skip
    for c, period, kind in sorted(missing):
        anomalies.append(Anomaly("MISSING", "missing", kind, c, period, None, None, None, None, None,
                                 description=RULES["MISSING"]))  # fmt: skip

    plan_file = _write_plan(home, plan, names)
    # Not started at the last period although planned to start before it (the deliberate ones
    # never start; a few others are merely late).
    stuck = [
        (c, r["project_id"], r["planned_start"])
        for c in COUNTIES
        for r in progress_rows[(c, last)]
        if r["status"] == NOT_STARTED and r["planned_start"] <= _month_end(last)
    ]
    stalled = []
    for c, ps in projects.items():
        for p in ps:
            if p.stall_from is not None:
                end = p.stall_from + timedelta(days=p.stall_days)
                stalled.append((c, p.project_id, _period_of(p.stall_from), min(_period_of(end), last)))
    seconds = time.perf_counter() - t0
    log.info("demo written under %s: %d files in %.1f s", home, len(files), seconds)
    return DemoManifest(
        home=home,
        seed=seed,
        counties=list(COUNTIES),
        county_names=names,
        county_city=county_city,
        cities=dict(CITIES),
        periods=periods,
        plan_cycle=PLAN_CYCLE,
        plan_file=plan_file,
        plan=plan,
        files=files,
        anomalies=anomalies,
        stuck_projects=stuck,
        stalled_projects=stalled,
        headline=headline,
        seconds=seconds,
        notes=[
            "E faults sit in one row each; a rejected row may also show up as a DROPPED_PROJECT warning "
            "for that period, depending on how the validator treats rejected rows.",
            "2018-12 carries no fault: its accepted figures equal `headline`.",
        ],
    )


def _headline(
    rows: dict[tuple[str, str], list[dict[str, Any]]],
    plan: dict[str, dict[str, float]],
    period: str,
    county_city: dict[str, str],
) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (c, p), rs in rows.items():
        if p != period:
            continue
        out[c] = {
            "projects_total": len(rs),
            "completed_area_m2": sum(r["completed_area_m2"] for r in rs if r["project_type"] == BUILDING),
            "completed_equipment_wan": sum(
                r["completed_invest_wan"] for r in rs if r["project_type"] == EQUIPMENT
            ),
            "planned_area_m2": sum(r["planned_area_m2"] for r in rs if r["project_type"] == BUILDING),
            "started_area_m2": sum(r["started_area_m2"] for r in rs if r["project_type"] == BUILDING),
            "projects_not_started": sum(r["status"] == NOT_STARTED for r in rs),
            "projects_in_progress": sum(r["status"] == IN_PROGRESS for r in rs),
            "projects_completed": sum(r["status"] == COMPLETED for r in rs),
            **plan[c],
        }
    for city in CITIES:
        members = [v for c, v in out.items() if county_city.get(c) == city]
        out[city] = {k: sum(m[k] for m in members) for k in members[0]}
    for v in out.values():
        v["area_completion_rate"] = v["completed_area_m2"] / v["plan_area_m2"]
        v["equipment_completion_rate"] = v["completed_equipment_wan"] / v["plan_equipment_wan"]
        v["start_rate"] = v["started_area_m2"] / v["planned_area_m2"]
    return out


def _write_plan(home: Path, plan: dict[str, dict[str, float]], names: dict[str, str]) -> Path:
    rows = [
        {"county_code": c, "plan_area_m2": v["plan_area_m2"], "plan_equipment_wan": v["plan_equipment_wan"],
         "plan_cycle": PLAN_CYCLE}
        for c, v in plan.items()
    ]  # fmt: skip
    path = home / "plan" / f"全面改薄五年规划{PLAN_CYCLE}.xlsx"
    write_return(
        path,
        "plan",
        rows,
        FileStyle(fmt="xlsx", title_rows=True),
        title=f"蚌埠市、阜阳市全面改薄五年规划（{PLAN_CYCLE}年）",
        note="单位：平方米、万元",
        created=datetime(2014, 6, 30, 10, 0),
    )
    return path
