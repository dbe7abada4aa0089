"""Where a figure of the pack comes from (``gaibao trace``).

A figure is an area (a county, a city or the province), a measure and a period, named as the
pack names them (``太和县 面积完成率``, ``阜阳市 竣工面积``, ``全省 乡村教师支持计划``). The trace
gives the value the pack shows (the marts), the same value recomputed from the rows, each
county's part and the submission behind it (the file's original name, when it was received, its
sha256 in the archive, the rules version that judged it), and the rows that sum to it.

The rows are the accepted fact rows of each county's submission named by the county mart (a
county without a return this period is carried forward: its figure, and so its rows, are those
of its latest earlier return). The rows never hold personal data: the columns are an allow-list.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from gaibao.contract import BUILDING, COMPLETED, EQUIPMENT, IN_PROGRESS, NOT_STARTED, personal_columns
from reports import periods
from reports.sections import inert_csv_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """A sum over fact rows: ``column`` (None: count rows), only rows where ``where`` holds."""

    key: str
    label_zh: str
    kind: str  # progress | funding
    column: str | None
    project_type: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class Measure:
    key: str
    label_zh: str
    kind: str  # progress | funding
    fmt: str  # pct | num0 | num2 | int
    unit: str = ""
    numerator: str | None = None  # rates: the parts' keys
    denominator: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def is_rate(self) -> bool:
        return self.numerator is not None


PARTS: dict[str, Part] = {
    p.key: p
    for p in (
        Part("completed_area_m2", "竣工面积（校舍改造项目）", "progress", "completed_area_m2", BUILDING),
        Part("started_area_m2", "开工面积（校舍改造项目）", "progress", "started_area_m2", BUILDING),
        Part("planned_area_m2", "项目规划面积（校舍改造项目）", "progress", "planned_area_m2", BUILDING),
        Part(
            "completed_equipment_wan", "设备购置项目完成投资", "progress", "completed_invest_wan", EQUIPMENT
        ),
        Part("planned_invest_wan", "规划投资", "progress", "planned_invest_wan"),
        Part("completed_invest_wan", "完成投资", "progress", "completed_invest_wan"),
        Part("projects_total", "项目数", "progress", None),
        Part("projects_not_started", "未开工项目数", "progress", None, status=NOT_STARTED),
        Part("projects_in_progress", "在建项目数", "progress", None, status=IN_PROGRESS),
        Part("projects_completed", "已竣工项目数", "progress", None, status=COMPLETED),
        *(
            Part(key, label, "funding", key)
            for key, label in (
                ("funds_total_wan", "累计投入资金"),
                ("funds_rural_infra_wan", "农村学校基础设施"),
                ("funds_urban_wan", "城区学校提升"),
                ("funds_equipment_wan", "设备购置（资金）"),
                ("funds_land_wan", "征地及附属物赔偿"),
                ("land_mu", "解决教育用地"),
                ("teachers_recruited", "招聘引进教师"),
                ("teachers_rural", "其中农村及偏远"),
                ("rural_teacher_subsidy_wan", "乡村教师支持计划年度拨付"),
            )
        ),
    )
}
PLANS = {"plan_area_m2": "五年规划面积", "plan_equipment_wan": "五年规划设备购置投资"}
UNITS = {
    "completed_area_m2": "平方米",
    "started_area_m2": "平方米",
    "planned_area_m2": "平方米",
    "plan_area_m2": "平方米",
    "land_mu": "亩",
    "teachers_recruited": "人",
    "teachers_rural": "人",
    "projects_total": "个",
    "projects_not_started": "个",
    "projects_in_progress": "个",
    "projects_completed": "个",
}

MEASURES: dict[str, Measure] = {
    m.key: m
    for m in (
        Measure(
            "area_completion_rate",
            "面积完成率",
            "progress",
            "pct",
            numerator="completed_area_m2",
            denominator="plan_area_m2",
            aliases=("校舍改造面积完成率",),
        ),
        Measure(
            "equipment_completion_rate",
            "设备购置完成率",
            "progress",
            "pct",
            numerator="completed_equipment_wan",
            denominator="plan_equipment_wan",
            aliases=("设备完成率",),
        ),
        Measure(
            "start_rate",
            "开工率",
            "progress",
            "pct",
            numerator="started_area_m2",
            denominator="planned_area_m2",
        ),
        Measure(
            "completed_area_m2", "竣工面积", "progress", "num0", "平方米", aliases=("竣工面积（平方米）",)
        ),
        Measure("started_area_m2", "开工面积", "progress", "num0", "平方米"),
        Measure("planned_area_m2", "项目规划面积", "progress", "num0", "平方米"),
        Measure("completed_equipment_wan", "设备购置完成投资", "progress", "num2", "万元"),
        Measure("planned_invest_wan", "规划投资", "progress", "num2", "万元"),
        Measure("completed_invest_wan", "完成投资", "progress", "num2", "万元"),
        Measure("projects_total", "项目数", "progress", "int", "个"),
        Measure("projects_not_started", "未开工项目数", "progress", "int", "个"),
        Measure("projects_in_progress", "在建项目数", "progress", "int", "个"),
        Measure("projects_completed", "已竣工项目数", "progress", "int", "个"),
        Measure(
            "plan_area_m2",
            "五年规划面积",
            "progress",
            "num0",
            "平方米",
            aliases=("五年规划面积（平方米）", "五年规划校舍改造面积"),
        ),
        Measure("plan_equipment_wan", "五年规划设备购置投资", "progress", "num2", "万元"),
        Measure("funds_total_wan", "累计投入资金", "funding", "num2", "万元", aliases=("累计投入",)),
        Measure("funds_rural_infra_wan", "农村学校基础设施", "funding", "num2", "万元"),
        Measure("funds_urban_wan", "城区学校提升", "funding", "num2", "万元"),
        Measure("funds_equipment_wan", "设备购置资金", "funding", "num2", "万元", aliases=("设备购置",)),
        Measure("funds_land_wan", "征地及附属物赔偿", "funding", "num2", "万元"),
        Measure("land_mu", "解决教育用地", "funding", "num2", "亩"),
        Measure("teachers_recruited", "招聘引进教师", "funding", "int", "人"),
        Measure("teachers_rural", "其中农村及偏远", "funding", "int", "人", aliases=("农村及偏远",)),
        Measure(
            "rural_teacher_subsidy_wan",
            "乡村教师支持计划年度拨付",
            "funding",
            "num2",
            "万元",
            aliases=("乡村教师支持计划", "乡村教师补助"),
        ),
    )
}

# The fact columns a trace may read and write (never personal data).
PROGRESS_ROW_COLUMNS = ("project_id", "school_name", "project_type", "status")
assert not set(PROGRESS_ROW_COLUMNS) & personal_columns()
assert not {p.column for p in PARTS.values() if p.column} & personal_columns()


class TraceError(ValueError):
    """A figure the pack does not have (unknown area or measure, a period without data)."""


def _norm(text: str) -> str:
    t = str(text).strip().replace("(", "（").replace(")", "）")
    if t.startswith("其中") and t not in ("其中农村及偏远",):
        t = t[2:]
    return t


def find_measure(text: str) -> Measure:
    t = _norm(text)
    for m in MEASURES.values():
        if t in (m.key, m.label_zh, *m.aliases) or t == f"{m.label_zh}（{m.unit}）":
            return m
    labels = "、".join(m.label_zh for m in MEASURES.values())
    raise TraceError(f"不认识的指标“{text}”。可追溯的指标：{labels}")


@dataclass(frozen=True)
class Area:
    level: str  # county | city | province
    code: str
    name: str


def find_area(engine: sa.Engine, period: str, text: str) -> Area:
    """A county, city or the province, by code or by name as the pack shows it."""
    t = str(text).strip()
    with engine.connect() as conn:
        div = pd.read_sql(
            sa.text("SELECT county_code, county_name, city_code, city_name FROM ref_division"), conn
        )
        prov = pd.read_sql(
            sa.text(
                "SELECT city_code, city_name FROM mart_city_progress WHERE period = :p AND level = 'province'"
            ),
            conn,
            params={"p": period},
        )
    if (
        t in ("全省", "全国", "省")
        or t in set(prov["city_code"].astype(str))
        or t in set(prov["city_name"].astype(str))
    ):
        code = str(prov["city_code"].iloc[0]) if len(prov) else "000000"
        return Area("province", code, "全省")
    county = div[(div["county_code"].astype(str) == t) | (div["county_name"].astype(str) == t)]
    if len(county) == 1:
        r = county.iloc[0]
        return Area("county", str(r["county_code"]), str(r["county_name"]))
    if len(county) > 1:
        codes = "、".join(
            f"{n}（{c}）" for c, n in zip(county["county_code"], county["county_name"], strict=True)
        )
        raise TraceError(f"“{t}”不止一个县区：{codes}。请用区划代码")
    city = div[(div["city_code"].astype(str) == t) | (div["city_name"].astype(str) == t)].drop_duplicates(
        "city_code"
    )
    if len(city) == 1:
        r = city.iloc[0]
        return Area("city", str(r["city_code"]), str(r["city_name"]))
    if len(city) > 1:
        raise TraceError(f"“{t}”不止一个市：{'、'.join(city['city_code'].astype(str))}。请用区划代码")
    raise TraceError(f"没有名为或代码为“{t}”的县区或市（全省请写“全省”）")


@dataclass
class Trace:
    period: str
    area: Area
    measure: Measure
    shown: float | None  # the value the pack shows (the marts)
    recomputed: float | None  # the same from the rows (and the plan)
    parts: dict[str, float | None]  # numerator / denominator or the sum, from the rows
    counties: pd.DataFrame  # one row per county summed
    submissions: pd.DataFrame  # the submissions behind the figure
    rows: pd.DataFrame  # the rows that sum to it (CSV)
    manifest_value: float | None = None
    manifest_digest: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return _same(self.shown, self.recomputed)


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None or pd.isna(a) or pd.isna(b):
        return (a is None or pd.isna(a)) and (b is None or pd.isna(b))
    return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))


def _num(x: Any) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def _read(conn: sa.Connection, sql: str, params: dict) -> pd.DataFrame:
    return pd.read_sql(sa.text(sql), conn, params=params)


def _county_marts(conn: sa.Connection, kind: str, period: str, area: Area) -> pd.DataFrame:
    table = "mart_county_progress" if kind == "progress" else "mart_county_funding"
    frame = _read(conn, f"SELECT * FROM {table} WHERE period = :p", {"p": period})
    frame["county_code"] = frame["county_code"].astype(str)
    frame["city_code"] = frame["city_code"].astype(str)
    if area.level == "county":
        frame = frame[frame["county_code"] == area.code]
    elif area.level == "city":
        frame = frame[frame["city_code"] == area.code]
    return frame.sort_values("county_code").reset_index(drop=True)


def _fact_rows(
    conn: sa.Connection, kind: str, keys: list[tuple[str, str, str]], columns: list[str]
) -> pd.DataFrame:
    """The fact rows of each (county, source period, submission) key, in file order."""
    from warehouse.schema import fact_funding, fact_progress
    from warehouse.store import matching_keys

    table = fact_progress if kind == "progress" else fact_funding
    wanted = ["submission_id", "county_code", "period", "row_number", *columns]
    frames = []
    for where in matching_keys(conn, table, [(c, p) for c, p, _ in keys]):
        res = conn.execute(sa.select(*[table.c[c] for c in wanted]).where(where))
        frames.append(pd.DataFrame(res.all(), columns=wanted))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=wanted)
    # only the submission the mart names (a key holds only its accepted submission's rows: say so)
    rows = rows[rows["submission_id"].isin({s for _, _, s in keys})]
    return rows.sort_values(["county_code", "period", "row_number"]).reset_index(drop=True)


def _counted(rows: pd.DataFrame, part: Part) -> pd.Series:
    """Each row's contribution to ``part``; null for the rows the sum leaves out (another project
    type or status), 0 for a row it counts whose value is empty or 0."""
    keep = pd.Series(True, index=rows.index)
    if part.project_type is not None:
        keep &= rows["project_type"] == part.project_type
    if part.status is not None:
        keep &= rows["status"] == part.status
    if part.column is None:
        return pd.Series(1.0, index=rows.index).where(keep)
    return pd.to_numeric(rows[part.column], errors="coerce").astype(float).fillna(0.0).where(keep)


def _shown(
    conn: sa.Connection, measure: Measure, period: str, area: Area, marts: pd.DataFrame
) -> float | None:
    """The figure as the pack shows it: the county mart, the city/province mart (progress), or
    the sum of the county funding mart (the pack sums funding itself)."""
    if area.level == "county" or measure.kind == "funding":
        if marts.empty:
            return None
        if area.level == "county":
            return _num(marts[measure.key].iloc[0])
        values = pd.to_numeric(marts[measure.key], errors="coerce")
        return float(values.sum()) if values.notna().any() else None
    level = "province" if area.level == "province" else "city"
    row = _read(
        conn,
        f"SELECT {measure.key} AS v FROM mart_city_progress WHERE period = :p AND level = :l AND city_code = :c",
        {"p": period, "l": level, "c": area.code},
    )
    return _num(row["v"].iloc[0]) if len(row) else None


def trace_figure(engine: sa.Engine, period: str, area_text: str, measure_text: str) -> Trace:
    """Trace one figure of the pack back to its submissions, files and rows."""
    periods.check_period(period)
    measure = find_measure(measure_text)
    area = find_area(engine, period, area_text)
    with engine.connect() as conn:
        marts = _county_marts(conn, measure.kind, period, area)
        if marts.empty:
            raise TraceError(
                f"{periods.label_zh(period)}没有{area.name}的数据（各县区月报尚未导入，或报告期有误）"
            )
        shown = _shown(conn, measure, period, area, marts)
        part_keys = [measure.numerator, measure.denominator] if measure.is_rate else [measure.key]
        row_parts = [PARTS[k] for k in part_keys if k in PARTS]
        keys = [
            (c, p, s)
            for c, p, s in zip(
                marts["county_code"], marts["source_period"], marts["submission_id"], strict=True
            )
            if isinstance(p, str) and isinstance(s, str)
        ]
        value_cols = sorted({p.column for p in row_parts if p.column})
        row_cols = [*(PROGRESS_ROW_COLUMNS if measure.kind == "progress" else ()), *value_cols]
        rows = _fact_rows(conn, measure.kind, keys, row_cols) if row_parts else pd.DataFrame()
        sids = sorted({s for _, _, s in keys})
        subs = (
            _read(
                conn,
                "SELECT submission_id, kind, county_code, period, file_name, received_at, sha256, rules_version,"
                " status, rows_total, rows_accepted, rows_rejected FROM submission WHERE submission_id IN ("
                + ", ".join(f":s{i}" for i in range(len(sids)))
                + ")",
                {f"s{i}": s for i, s in enumerate(sids)},
            )
            if sids
            else pd.DataFrame(columns=["submission_id", "county_code", "file_name"])
        )
    # per county: its part of each sum, from the rows; the plan from the mart (ref_plan)
    counties = marts.reindex(
        columns=[
            "county_code",
            "county_name",
            "city_name",
            "source_period",
            "has_return",
            "is_carried_forward",
            "submission_id",
        ]
    ).copy()
    parts: dict[str, float | None] = {}
    for part in row_parts:
        if len(rows):
            rows[f"counted_{part.key}"] = _counted(rows, part)
            by_county = rows.groupby("county_code")[f"counted_{part.key}"].sum()
        else:
            by_county = pd.Series(dtype=float)
        counties[part.key] = counties["county_code"].map(by_county)
        counties.loc[counties["submission_id"].isna(), part.key] = None
        total = counties[part.key]
        parts[part.key] = float(total.sum()) if total.notna().any() else None
    for key in part_keys:
        if key in PLANS:
            counties[key] = pd.to_numeric(marts[key], errors="coerce").to_numpy()
            total = counties[key]
            parts[key] = float(total.sum(min_count=1)) if total.notna().any() else None
    if measure.is_rate:
        num, den = parts.get(measure.numerator), parts.get(measure.denominator)
        recomputed = num / den if num is not None and den is not None and den > 0 else None
    else:
        recomputed = parts.get(measure.key)
    notes = []
    carried = counties[counties["is_carried_forward"].fillna(False).astype(bool)]
    for r in carried.itertuples(index=False):
        notes.append(f"{r.county_name}本期未报送，沿用{periods.label_zh(str(r.source_period))}的数据")
    missing = counties[counties["submission_id"].isna()]
    for r in missing.itertuples(index=False):
        notes.append(f"{r.county_name}从未报送，不计入")
    if measure.key in PLANS or (measure.is_rate and measure.denominator in PLANS):
        notes.append("五年规划数来自五年规划参考表（gaibao plan load 导入），不来自县区月报")
    trace = Trace(
        period=period,
        area=area,
        measure=measure,
        shown=shown,
        recomputed=recomputed,
        parts=parts,
        counties=counties,
        submissions=subs,
        rows=rows,
        notes=notes,
    )
    _compare_manifest(engine, trace)
    return trace


def _compare_manifest(engine: sa.Engine, trace: Trace) -> None:
    """The value of the figure in the last pack built for the period, when the manifest has it."""
    from reports.manifest import latest_manifest

    try:
        m = latest_manifest(engine, trace.period)
    except sa.exc.SQLAlchemyError:  # a warehouse without the report tables: no pack built yet
        return
    if m is None:
        return
    key = trace.measure.key
    if trace.area.level == "county":
        figures = m.figures.get(trace.area.code, {})
    else:
        figures = m.areas.get(trace.area.level, {}).get(trace.area.code, {}).get("figures", {})
    if key in figures:
        trace.manifest_value = figures[key]
        trace.manifest_digest = m.pack_digest


# -- output ----------------------------------------------------------------------------------


def fmt_value(measure_key: str, value: float | None, fmt: str | None = None) -> str:
    if value is None or pd.isna(value):
        return "—"
    fmt = fmt or (MEASURES[measure_key].fmt if measure_key in MEASURES else "num2")
    if fmt == "pct":
        return f"{value * 100:.1f}%"
    if fmt in ("num0", "int"):
        return f"{value:,.0f}"
    return f"{value:,.2f}"


def _unit(key: str) -> str:
    if key in UNITS:
        return UNITS[key]
    return "万元" if key.endswith("_wan") else ""


def _label(key: str) -> str:
    if key in PARTS:
        return PARTS[key].label_zh
    return PLANS.get(key, MEASURES[key].label_zh if key in MEASURES else key)


ROW_CSV_COLUMNS: list[tuple[str, str]] = [
    ("county_code", "区划代码"),
    ("county_name", "县（区）"),
    ("period", "数据所属报告期"),
    ("submission_id", "submission_id"),
    ("file_name", "原文件名"),
    ("sha256", "文件sha256"),
    ("row_number", "文件中的行号"),
    ("project_id", "项目编号"),
    ("school_name", "学校名称"),
    ("project_type", "项目类别"),
    ("status", "项目状态"),
]


def _counted_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows some part of the figure counts (a sum over 校舍改造 rows leaves the others out)."""
    counted = [c for c in rows.columns if c.startswith("counted_")]
    return rows[rows[counted].notna().any(axis=1)] if counted else rows


def write_rows_csv(trace: Trace, path: Path) -> int:
    """The rows that sum to the figure as CSV (UTF-8 with BOM, formula text made inert): every
    row of the submissions behind it that a part counts, with each part's contribution."""
    from gaibao.contract import label_zh

    rows = trace.rows
    path.parent.mkdir(parents=True, exist_ok=True)
    counted = [c for c in rows.columns if c.startswith("counted_")] if len(rows) else []
    rows = _counted_rows(rows) if len(rows) else rows
    names = dict(zip(trace.counties["county_code"], trace.counties["county_name"], strict=True))
    files = trace.submissions.set_index("submission_id") if len(trace.submissions) else pd.DataFrame()
    value_cols = [
        c for c in rows.columns if c not in {k for k, _ in ROW_CSV_COLUMNS} and not c.startswith("counted_")
    ]
    header = [
        h for k, h in ROW_CSV_COLUMNS if k in rows.columns or k in ("county_name", "file_name", "sha256")
    ]
    header += [f"{label_zh(trace.measure.kind, c)}" for c in value_cols]
    header += [f"计入{_label(c.removeprefix('counted_'))}" for c in counted]
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        for rec in rows.to_dict("records"):
            sid = rec["submission_id"]
            line: list[Any] = []
            for key, _ in ROW_CSV_COLUMNS:
                if key == "county_name":
                    line.append(names.get(rec["county_code"], rec["county_code"]))
                elif key in ("file_name", "sha256"):
                    line.append(files.at[sid, key] if sid in files.index else "")
                elif key in rows.columns:
                    line.append(rec[key])
            line += [rec[c] for c in value_cols]
            line += [rec[c] for c in counted]
            out.writerow(
                [
                    "" if v is None or (isinstance(v, float) and pd.isna(v)) else inert_csv_text(v)
                    for v in line
                ]
            )
    return len(rows)


def format_trace(trace: Trace, csv_path: Path | None = None, n_rows: int | None = None) -> str:
    """The trace as a person reads it (Chinese, tables aligned)."""
    from reports.plaintext import text_table

    m, a = trace.measure, trace.area
    where = {"county": f"{a.name}（{a.code}）", "city": f"{a.name}（{a.code}，市）", "province": "全省"}[
        a.level
    ]
    unit = "" if m.fmt == "pct" else _unit(m.key)
    unit = f" {unit}" if unit else ""
    lines = [f"{where} {m.label_zh} {periods.label_zh(trace.period)}：{fmt_value(m.key, trace.shown)}{unit}"]
    if m.is_rate:
        num, den = m.numerator, m.denominator
        lines.append(
            f"  = {_label(num)} {fmt_value(num, trace.parts.get(num))} {_unit(num)}"
            f" ÷ {_label(den)} {fmt_value(den, trace.parts.get(den))} {_unit(den)}"
        )
    elif m.key in PARTS:
        lines.append(f"  = Σ {_label(m.key)}（下列各文件的明细行）")
    check = "一致" if trace.agrees else "不一致！请重建汇总表（gaibao backfill）或联系数据工程师"
    lines.append(f"  按明细行重新计算：{fmt_value(m.key, trace.recomputed)}{unit}（与会议材料{check}）")
    if trace.manifest_value is not None:
        same = (
            "一致"
            if _same(trace.manifest_value, trace.shown)
            else "不一致：材料生成后数据有变化，请重新生成材料"
        )
        lines.append(
            f"  最近一次生成的材料（manifest，数据指纹 {trace.manifest_digest[:12]}）："
            f"{fmt_value(m.key, trace.manifest_value)}{unit}（{same}）"
        )
    for note in trace.notes:
        lines.append(f"  注：{note}")
    c = trace.counties
    keys = [k for k in ([m.numerator, m.denominator] if m.is_rate else [m.key]) if k in c.columns]
    if a.level != "county" or len(keys) > 1:
        table = [
            [("区划代码", False), ("县（区）", False), ("数据期", False)]
            + [(f"{_label(k)}", True) for k in keys]
        ]
        for r in c.to_dict("records"):
            table.append(
                [
                    (r["county_code"], False),
                    (str(r["county_name"]), False),
                    (str(r["source_period"] or "—"), False),
                ]
                + [(fmt_value(k, r.get(k)), True) for k in keys]
            )
        lines += ["", f"各县区（{len(c)}个）：", text_table(table, header_rows=1, max_cell=64)]
    s = trace.submissions
    if len(s):
        received = pd.to_datetime(s["received_at"], utc=True, errors="coerce").dt.tz_convert("Asia/Shanghai")
        counted = (
            _counted_rows(trace.rows).groupby("submission_id").size()
            if len(trace.rows)
            else pd.Series(dtype=int)
        )
        table = [
            [
                ("区划代码", False),
                ("报告期", False),
                ("submission_id", False),
                ("原文件名", False),
                ("收到时间", False),
                ("sha256", False),
                ("规则版本", False),
                ("明细行", True),
            ]
        ]
        for r, t in zip(
            s.sort_values(["county_code", "period"]).to_dict("records"),
            received.loc[s.sort_values(["county_code", "period"]).index],
            strict=True,
        ):
            table.append(
                [
                    (str(r["county_code"]), False),
                    (str(r["period"]), False),
                    (str(r["submission_id"]), False),
                    (str(r["file_name"]), False),
                    ("—" if pd.isna(t) else f"{t:%Y-%m-%d %H:%M}", False),
                    (str(r["sha256"]), False),
                    (str(r["rules_version"]), False),
                    (f"{int(counted.get(r['submission_id'], 0)):,}", True),
                ]
            )
        lines += [
            "",
            f"来源文件（{len(s)}个；原文件：gaibao archive get SUBMISSION_ID --out 文件）：",
            text_table(table, header_rows=1, max_cell=64),
        ]
    if csv_path is not None:
        lines += ["", f"计入的明细行（{n_rows}行）：{csv_path}"]
    return "\n".join(lines)
