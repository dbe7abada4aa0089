"""The pack manifest: which submissions a pack's figures came from, and a digest of the figures.

It covers every figure the pack shows: each county's (``figures``), and each city's and the
province's (``areas``: the counties each sums, the submissions behind them, the figures);
``gaibao trace`` follows any of them back to the rows and files.

Rebuilding the pack for a past period compares the new manifest with the last stored one
(:func:`diff_manifests`): the same submissions must give the same figures; otherwise the
difference is said in Chinese (submissions added or replaced, county figures that moved).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from reports.schema import ensure_tables, pack_manifest

log = logging.getLogger(__name__)

FIGURE_COLUMNS = (
    "area_completion_rate",
    "equipment_completion_rate",
    "start_rate",
    "completed_area_m2",
    "completed_equipment_wan",
    "projects_total",
)
FIGURE_LABELS = {
    "area_completion_rate": "面积完成率",
    "equipment_completion_rate": "设备完成率",
    "start_rate": "开工率",
    "completed_area_m2": "竣工面积",
    "completed_equipment_wan": "设备购置完成投资",
    "projects_total": "项目数",
    "score": "得分",
    "funds_total_wan": "累计投入资金",
}
KIND_ZH = {"progress": "进展月报", "funding": "资金与师资月报"}


AREA_FIGURE_COLUMNS = (
    "area_completion_rate",
    "equipment_completion_rate",
    "start_rate",
    "completed_area_m2",
    "plan_area_m2",
    "started_area_m2",
    "planned_area_m2",
    "completed_equipment_wan",
    "plan_equipment_wan",
    "projects_total",
    "counties_total",
    "counties_reporting",
)
AREA_FUNDING_COLUMNS = (
    "funds_total_wan",
    "funds_rural_infra_wan",
    "funds_urban_wan",
    "funds_equipment_wan",
    "funds_land_wan",
    "land_mu",
    "teachers_recruited",
    "teachers_rural",
    "rural_teacher_subsidy_wan",
)
FIGURE_LABELS.update(
    {
        "plan_area_m2": "五年规划面积",
        "started_area_m2": "开工面积",
        "planned_area_m2": "项目规划面积",
        "plan_equipment_wan": "五年规划设备购置投资",
        "counties_total": "县区数",
        "counties_reporting": "本期报送县区数",
        "funds_rural_infra_wan": "农村学校基础设施投入",
        "funds_urban_wan": "城区学校提升投入",
        "funds_equipment_wan": "设备购置投入",
        "funds_land_wan": "征地及附属物赔偿",
        "land_mu": "解决教育用地",
        "teachers_recruited": "招聘引进教师",
        "teachers_rural": "其中农村及偏远",
        "rural_teacher_subsidy_wan": "乡村教师支持计划年度拨付",
    }
)
LEVEL_ZH = {"city": "市", "province": "省"}


@dataclass(frozen=True)
class Manifest:
    period: str
    submissions: list[dict[str, str]]  # sorted by (county_code, kind, submission_id)
    figures: dict[str, dict[str, float | None]]  # county_code -> measure -> value
    figures_sha256: str
    pack_digest: str
    # level (city | province) -> code -> {"name", "counties", "submissions", "figures"}; empty in
    # manifests stored before the pack covered them
    areas: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def _canon(x: Any) -> float | None:
    if x is None:
        return None
    try:
        if pd.isna(x):
            return None
    except (TypeError, ValueError):
        pass
    return round(float(x), 6)


def area_figures(
    period: str,
    county_progress: pd.DataFrame,
    city_rows: pd.DataFrame,
    county_funding: pd.DataFrame,
    funding_areas: pd.DataFrame,
) -> dict[str, dict[str, dict[str, Any]]]:
    """The city and province figures as the pack shows them, each with the counties it sums and
    the submissions behind those counties' figures (carried-forward ones included).

    ``city_rows``: the pack's headline rows (``level`` city | province); ``funding_areas``: its
    funding rows by city, the province's first (``city_code`` ``000000``)."""
    if city_rows is None or city_rows.empty:
        return {}
    cp = county_progress[county_progress["period"] == period]
    cp = cp.assign(county_code=cp["county_code"].astype(str), city_code=cp["city_code"].astype(str))
    fund = county_funding[county_funding["period"] == period] if len(county_funding) else county_funding
    fund_sid: dict[str, str] = {}
    if len(fund) and "submission_id" in fund:
        fund_sid = {
            str(c): str(s)
            for c, s in zip(fund["county_code"], fund["submission_id"], strict=True)
            if pd.notna(s)
        }
    prog_sid = {
        c: str(s)
        for c, s in zip(cp["county_code"], cp.get("submission_id", pd.Series(dtype=object)), strict=False)
        if pd.notna(s)
    }
    fund_by_code = (
        funding_areas.assign(city_code=funding_areas["city_code"].astype(str)).set_index("city_code")
        if funding_areas is not None and len(funding_areas)
        else pd.DataFrame()
    )
    out: dict[str, dict[str, dict[str, Any]]] = {"city": {}, "province": {}}
    for rec in city_rows.to_dict("records"):
        level = str(rec.get("level"))
        if level not in out:
            continue
        code = str(rec["city_code"])
        counties = (
            sorted(cp.loc[cp["city_code"] == code, "county_code"])
            if level == "city"
            else sorted(cp["county_code"])
        )
        figures = {k: _canon(rec.get(k)) for k in AREA_FIGURE_COLUMNS}
        fkey = code if level == "city" else "000000"
        if fkey in fund_by_code.index:
            frow = fund_by_code.loc[fkey]
            figures.update({k: _canon(frow.get(k)) for k in AREA_FUNDING_COLUMNS})
        sids = sorted(
            {prog_sid[c] for c in counties if c in prog_sid}
            | {fund_sid[c] for c in counties if c in fund_sid}
        )
        out[level][code] = {
            "name": str(rec.get("city_name") or ""),
            "counties": counties,
            "submissions": sids,
            "figures": figures,
        }
    return {level: dict(sorted(v.items())) for level, v in out.items() if v}


def build_manifest(
    period: str,
    submissions: pd.DataFrame,
    county_progress: pd.DataFrame,
    scorecard: pd.DataFrame,
    county_funding: pd.DataFrame,
    areas: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> Manifest:
    """The manifest of one pack: ``submissions`` are the rows its figures came from; ``areas``
    the city and province figures (:func:`area_figures`)."""
    subs = []
    if len(submissions):
        cols = ["submission_id", "kind", "county_code", "period", "sha256"]
        s = submissions.reindex(columns=cols).drop_duplicates("submission_id")
        s = s.astype(object).where(s.notna(), None)
        subs = sorted(
            ({k: (str(v) if v is not None else None) for k, v in r.items()} for r in s.to_dict("records")),
            key=lambda r: (r["county_code"] or "", r["kind"] or "", r["submission_id"] or ""),
        )
    cp = county_progress[county_progress["period"] == period]
    figures: dict[str, dict[str, float | None]] = {}
    for rec in cp.reindex(columns=["county_code", *FIGURE_COLUMNS]).to_dict("records"):
        figures[str(rec["county_code"])] = {k: _canon(rec[k]) for k in FIGURE_COLUMNS}
    if len(scorecard):
        for code, score in zip(scorecard["county_code"].astype(str), scorecard["score"], strict=True):
            figures.setdefault(code, {})["score"] = _canon(score)
    if len(county_funding) and "funds_total_wan" in county_funding:
        f = county_funding[county_funding["period"] == period]
        for code, v in zip(f["county_code"].astype(str), f["funds_total_wan"], strict=True):
            figures.setdefault(code, {})["funds_total_wan"] = _canon(v)
    figures = {k: figures[k] for k in sorted(figures)}
    fig_sha = hashlib.sha256(json.dumps(figures, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    sub_sha = hashlib.sha256(json.dumps(subs, sort_keys=True).encode()).hexdigest()
    areas = areas or {}
    key = f"{period}|{sub_sha}|{fig_sha}"
    if areas:
        key += (
            "|" + hashlib.sha256(json.dumps(areas, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        )
    digest = hashlib.sha256(key.encode()).hexdigest()
    return Manifest(
        period=period,
        submissions=subs,
        figures=figures,
        figures_sha256=fig_sha,
        pack_digest=digest,
        areas=areas,
    )


def manifest_json(m: Manifest) -> str:
    return json.dumps(
        {
            "period": m.period,
            "pack_digest": m.pack_digest,
            "figures_sha256": m.figures_sha256,
            "submissions": m.submissions,
            "figures": m.figures,
            "areas": m.areas,
        },
        ensure_ascii=False,
        indent=1,
        sort_keys=True,
    )


def diff_manifests(
    old: Manifest | None, new: Manifest, county_names: dict[str, str] | None = None, limit: int = 30
) -> list[str]:
    """What changed from ``old`` to ``new``, in Chinese; empty when nothing did."""
    if old is None or old.pack_digest == new.pack_digest:
        return []
    names = county_names or {}
    lines: list[str] = []
    old_subs = {s["submission_id"]: s for s in old.submissions}
    new_subs = {s["submission_id"]: s for s in new.submissions}
    for sid in sorted(set(new_subs) - set(old_subs)):
        s = new_subs[sid]
        lines.append(
            f"{names.get(s['county_code'], s['county_code'])}新增或重新报送{KIND_ZH.get(s['kind'], s['kind'])}（{sid}）"
        )
    for sid in sorted(set(old_subs) - set(new_subs)):
        s = old_subs[sid]
        lines.append(
            f"{names.get(s['county_code'], s['county_code'])}的{KIND_ZH.get(s['kind'], s['kind'])}（{sid}）已被替换或撤回"
        )
    if set(old_subs) == set(new_subs) and old.figures_sha256 != new.figures_sha256:
        lines.append("报送数据未变，但计算结果不同（计算规则或参数已调整）")
    for code in sorted(set(old.figures) | set(new.figures)):
        a, b = old.figures.get(code, {}), new.figures.get(code, {})
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                lines.append(
                    f"{names.get(code, code)} {FIGURE_LABELS.get(k, k)}：{_fmt(k, a.get(k))} → {_fmt(k, b.get(k))}"
                )
    if old.areas:  # a manifest stored before the pack covered cities and the province has none
        for level in ("province", "city"):
            olds, news = old.areas.get(level, {}), new.areas.get(level, {})
            for code in sorted(set(olds) | set(news)):
                name = (news.get(code) or olds.get(code) or {}).get("name") or code
                a = (olds.get(code) or {}).get("figures", {})
                b = (news.get(code) or {}).get("figures", {})
                for k in sorted(set(a) | set(b)):
                    if a.get(k) != b.get(k):
                        lines.append(
                            f"{name} {FIGURE_LABELS.get(k, k)}：{_fmt(k, a.get(k))} → {_fmt(k, b.get(k))}"
                        )
    if len(lines) > limit:
        lines = [*lines[:limit], f"……另有{len(lines) - limit}处变化"]
    return lines


def _fmt(key: str, v: float | None) -> str:
    if v is None:
        return "无"
    if key.endswith("_rate"):
        return f"{v * 100:.1f}%"
    return f"{v:,.2f}".rstrip("0").rstrip(".")


def latest_manifest(engine: sa.Engine, period: str) -> Manifest | None:
    ensure_tables(engine)
    t = pack_manifest
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(
                t.c.period,
                t.c.submissions,
                t.c.figures,
                t.c.figures_sha256,
                t.c.pack_digest,
                t.c.area_figures,
            )
            .where(t.c.period == period)
            .order_by(t.c.manifest_id.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    return Manifest(
        period=row.period,
        submissions=json.loads(row.submissions),
        figures=json.loads(row.figures),
        figures_sha256=row.figures_sha256,
        pack_digest=row.pack_digest,
        areas=json.loads(row.area_figures) if row.area_figures else {},
    )


def store_manifest(engine: sa.Engine, m: Manifest, output_dir: str | None) -> None:
    ensure_tables(engine)
    with engine.begin() as conn:
        conn.execute(
            pack_manifest.insert().values(
                period=m.period,
                built_at=datetime.now(UTC),
                pack_digest=m.pack_digest,
                figures_sha256=m.figures_sha256,
                submissions=json.dumps(m.submissions, ensure_ascii=False, sort_keys=True),
                figures=json.dumps(m.figures, ensure_ascii=False, sort_keys=True),
                area_figures=json.dumps(m.areas, ensure_ascii=False, sort_keys=True) if m.areas else None,
                output_dir=output_dir,
            )
        )
