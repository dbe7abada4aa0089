"""The county return contract (``shared/contract.md``, version 1) as data.

This module is the catalogue of return kinds and their columns: canonical names, the Chinese
headers counties write, value types, units and which columns a file must have. It holds facts
only; reading files lives in ``tasks.read``, the rules in ``expectations/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CONTRACT_VERSION = 1

Kind = Literal["progress", "funding", "plan"]
KINDS: tuple[str, ...] = ("progress", "funding", "plan")
SUBMITTED_KINDS: tuple[str, ...] = ("progress", "funding")

KIND_NAME_ZH: dict[str, str] = {
    "progress": "全面改薄项目进展月报",
    "funding": "全面改薄资金与师资月报",
    "plan": "全面改薄五年规划",
}

# Value types. ``month`` is YYYY-MM; ``code6``/``code10`` are digit strings kept as text.
ValueType = Literal["month", "code6", "code10", "text", "number", "int", "date", "project_id", "enum"]

# Units: the canonical unit of a measure and every unit a header may carry instead, with the
# factor that converts a value in that unit to the canonical one.
UNIT_FACTORS: dict[str, dict[str, float]] = {
    "万元": {"万元": 1.0, "元": 1e-4, "亿元": 1e4},
    "平方米": {"平方米": 1.0, "m2": 1.0, "m²": 1.0, "㎡": 1.0, "万平方米": 1e4, "万m2": 1e4, "万㎡": 1e4},
    "亩": {"亩": 1.0},
    "人": {"人": 1.0},
}


@dataclass(frozen=True)
class Column:
    name: str  # canonical (warehouse) name
    header_zh: str  # the template's Chinese header, without the unit
    type: ValueType
    unit: str | None = None  # canonical unit, e.g. 万元
    aliases: tuple[str, ...] = ()  # other accepted Chinese headers, without the unit
    required: bool = False  # a file without this column is refused whole
    personal: bool = False  # personal data: never leaves the warehouse
    choices: tuple[str, ...] = ()  # for enum columns: the canonical values
    max_length: int | None = None

    @property
    def label_zh(self) -> str:
        """The header as shown to a clerk: ``规划面积（平方米）``."""
        return f"{self.header_zh}（{self.unit}）" if self.unit else self.header_zh

    @property
    def all_headers(self) -> tuple[str, ...]:
        return (self.header_zh, *self.aliases, self.name)


PROJECT_TYPES = ("校舍改造", "设备购置")
BUILDING, EQUIPMENT = PROJECT_TYPES

STATUSES = ("未开工", "在建", "已竣工")
NOT_STARTED, IN_PROGRESS, COMPLETED = STATUSES
STATUS_ALIASES: dict[str, str] = {
    "完工": COMPLETED,
    "竣工": COMPLETED,
    "施工中": IN_PROGRESS,
    "建设中": IN_PROGRESS,
}
STATUS_ORDER: dict[str, int] = {NOT_STARTED: 0, IN_PROGRESS: 1, COMPLETED: 2}

TOTAL_ROW_MARKERS = ("合计", "总计")

PROJECT_ID_PATTERN = r"^[A-Za-z0-9-]{1,32}$"
SCHOOL_CODE_PATTERN = r"^\d{10}$"
COUNTY_CODE_PATTERN = r"^\d{6}$"

_PERIOD = Column("period", "报告期", "month", aliases=("填报月份",), required=True)
_COUNTY = Column("county_code", "区划代码", "code6", aliases=("县区代码", "行政区划代码"), required=True)

PROGRESS_COLUMNS: tuple[Column, ...] = (
    _PERIOD,
    _COUNTY,
    Column("school_code", "学校标识码", "code10", aliases=("学校代码",), required=True),
    Column("school_name", "学校名称", "text", required=True, max_length=100),
    Column("project_id", "项目编号", "project_id", required=True),
    Column("project_type", "项目类别", "enum", required=True, choices=PROJECT_TYPES),
    Column("status", "项目状态", "enum", required=True, choices=STATUSES),
    Column("planned_area_m2", "规划面积", "number", unit="平方米", required=True),
    Column("started_area_m2", "开工面积", "number", unit="平方米", required=True),
    Column("completed_area_m2", "竣工面积", "number", unit="平方米", required=True),
    Column("planned_invest_wan", "规划投资", "number", unit="万元", required=True),
    Column("completed_invest_wan", "完成投资", "number", unit="万元", required=True),
    Column("funds_central_wan", "其中：中央资金", "number", unit="万元", aliases=("中央资金",), required=True),
    Column("funds_local_wan", "其中：地方资金", "number", unit="万元", aliases=("地方资金",), required=True),
    Column("planned_start", "计划开工日期", "date"),
    Column("actual_start", "实际开工日期", "date", required=True),
    Column("completed_date", "竣工日期", "date", required=True),
    Column("reporter", "填报人", "text", personal=True),
    Column("phone", "联系电话", "text", personal=True),
    Column("note", "备注", "text", aliases=("说明",)),
)

FUNDING_COLUMNS: tuple[Column, ...] = (
    _PERIOD,
    _COUNTY,
    Column("funds_total_wan", "累计投入资金合计", "number", unit="万元", required=True),
    Column("funds_rural_infra_wan", "其中：农村学校基础设施", "number", unit="万元", aliases=("农村学校基础设施",)),
    Column("funds_urban_wan", "其中：城区学校提升", "number", unit="万元", aliases=("城区学校提升",)),
    Column("funds_equipment_wan", "其中：设备购置", "number", unit="万元", aliases=("设备购置",)),
    Column("funds_land_wan", "其中：征地及附属物赔偿", "number", unit="万元", aliases=("征地及附属物赔偿",)),
    Column("land_mu", "解决教育用地", "number", unit="亩"),
    Column("teachers_recruited", "累计招聘引进教师", "int", unit="人"),
    Column("teachers_rural", "其中：补充农村及偏远地区学校", "int", unit="人", aliases=("补充农村及偏远地区学校",)),
    Column("rural_teacher_subsidy_wan", "乡村教师支持计划年度拨付", "number", unit="万元"),
)

PLAN_COLUMNS: tuple[Column, ...] = (
    Column("county_code", "区划代码", "code6", aliases=("县区代码", "行政区划代码"), required=True),
    Column("plan_area_m2", "五年规划校舍改造面积", "number", unit="平方米", required=True),
    Column("plan_equipment_wan", "五年规划设备购置投资", "number", unit="万元", required=True),
    Column("plan_cycle", "规划期", "text"),
)

COLUMNS: dict[str, tuple[Column, ...]] = {
    "progress": PROGRESS_COLUMNS,
    "funding": FUNDING_COLUMNS,
    "plan": PLAN_COLUMNS,
}

# Cumulative figures compared with the county's last accepted period (W REGRESSION).
CUMULATIVE_COLUMNS: dict[str, tuple[str, ...]] = {
    "progress": ("started_area_m2", "completed_area_m2", "completed_invest_wan"),
    "funding": (
        "funds_total_wan",
        "funds_rural_infra_wan",
        "funds_urban_wan",
        "funds_equipment_wan",
        "funds_land_wan",
        "land_mu",
        "teachers_recruited",
        "teachers_rural",
    ),
}

# The 其中 parts of funds_total_wan (E if they add up to more than the total).
FUNDING_PARTS = ("funds_rural_infra_wan", "funds_urban_wan", "funds_equipment_wan", "funds_land_wan")

# Columns whose values a total row (合计) carries and that are checked against the rows' sums.
SUMMABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "progress": (
        "planned_area_m2",
        "started_area_m2",
        "completed_area_m2",
        "planned_invest_wan",
        "completed_invest_wan",
        "funds_central_wan",
        "funds_local_wan",
    ),
}

# The columns of each kind by which a total row is recognised (合计/总计 in a name or id column).
TOTAL_ROW_COLUMNS: dict[str, tuple[str, ...]] = {
    "progress": ("school_name", "project_id", "school_code"),
    "funding": ("county_code",),
    "plan": ("county_code",),
}

# Where a kind's data sits in a workbook: the first sheet unless a sheet name says so.
SHEET_HINTS: dict[str, tuple[str, ...]] = {"progress": ("进展",), "funding": ("资金", "师资"), "plan": ("规划",)}
# Sheets whose name says one of these hold no return (a cover, the instructions, a filled-in
# example): a workbook's reader passes over them whatever else their name says.
NOT_A_RETURN_SHEET_HINTS: tuple[str, ...] = ("封面", "说明", "样例", "示例", "目录")

# File-name hints that tell the kind of a file in a county's folder.
KIND_FILE_HINTS: dict[str, tuple[str, ...]] = {
    "progress": ("progress", "进展"),
    "funding": ("funding", "资金", "师资"),
}


def column(kind: str, name: str) -> Column:
    for col in COLUMNS[kind]:
        if col.name == name:
            return col
    raise KeyError(f"{kind}.{name}")


def canonical_names(kind: str) -> list[str]:
    return [c.name for c in COLUMNS[kind]]


def personal_columns() -> frozenset[str]:
    """Every column that is personal data, in any kind (for the public-output scans)."""
    return frozenset(c.name for cols in COLUMNS.values() for c in cols if c.personal)


def label_zh(kind: str, name: str) -> str:
    """The Chinese label of a canonical column, or the name itself for derived columns."""
    try:
        return column(kind, name).label_zh
    except KeyError:
        return name


@dataclass(frozen=True)
class Refusal:
    """Why a whole file was refused: a code for data engineers, a message for the clerk."""

    code: str
    message_zh: str
    detail: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code}: {self.message_zh}"


# Refusal codes (file-level). Messages are built where the refusal is raised.
REFUSAL_CODES = {
    "UNREADABLE": "文件无法读取",
    "NO_HEADER": "未找到表头",
    "MISSING_COLUMN": "缺少必填列",
    "UNKNOWN_UNIT": "表头单位无法识别",
    "WRONG_COUNTY": "区划代码与报送单位不符",
    "WRONG_PERIOD": "报告期与本次报送不符",
    "UNKNOWN_COUNTY": "区划代码不是已知的县区",
    "EMPTY": "文件没有数据行",
    "DUPLICATE_SHEET": "同一报表有多张工作表",  # two sheets named for one kind both hold a header
    "TOO_LARGE": "文件超过读取上限",  # a bound of tasks.readguard (GAIBAO_READ_MAX_*)
    # A reader stopped past its wall-time or memory bound (GAIBAO_READ_MAX_SECONDS / _MEMORY_MB),
    # a reader that failed (an exception, or a process that died twice on the file), a judge
    # that failed on one county's file: the file alone is refused; the data engineers are paged.
    "READ_TIMEOUT": "文件读取超时",
    "READ_MEMORY": "文件读取占用内存过多",
    "READ_FAILED": "读取程序处理该文件时出错",
    "JUDGE_FAILED": "审核程序处理该文件时出错",
    "SOURCE_UNREACHABLE": "数据源无法访问",
    # gaibao's own archive could not keep the file (warehouse.archive.ArchiveCorrupt, an I/O
    # error): not the county's fault, retried by the next run once the object is dealt with
    "ARCHIVE_CORRUPT": "原始文件存档失败",
}

# Files set aside for a fault on gaibao's side (the archive, a reader or the judge crashing),
# not refused for their content: each is its county's own outcome, and one message per run
# lists them all to the data engineers (tasks.alerts.send_set_aside_alert).
SET_ASIDE_CODES = frozenset({"ARCHIVE_CORRUPT", "READ_FAILED", "READ_TIMEOUT", "READ_MEMORY", "JUDGE_FAILED"})
# Of those, the ones the next run tries again with the same bytes (the fault is not the file's).
RETRIED_CODES = frozenset({"ARCHIVE_CORRUPT"})
