"""Generate a national month of county returns for the scale benchmark.

``generate_national(root)`` writes under ``root``:

- ``inbox/<county_code>/``: 2,850 county folders, each with one progress return (≈350 project
  rows, varied; ≈1,000,000 in all) and one funding return for the period; the progress files are
  ≈80% CSV (a third of those GBK), 15% XLSX, 5% JSON; ≈1% of the project rows break an E rule;
- ``divisions.csv`` (county_code, county_name, city_code, city_name) for the synthetic codes;
- ``plan.csv``: the five-year plan of every county (the contract's plan headers).

Columns are drawn with numpy and written in bulk: all CSV rows go through one pyarrow CSV write
and are then cut into per-county files; XLSX goes through xlsxwriter in ``constant_memory`` mode.

Script: ``python benchmarks/gen_national.py OUT [--quick] [--scale S] [--seed N]``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import multiprocessing as mp
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from gaibao.contract import FUNDING_COLUMNS, PLAN_COLUMNS, PROGRESS_COLUMNS

log = logging.getLogger(__name__)

COUNTIES_FULL = 2850
ROWS_PER_COUNTY = (150, 551)  # uniform: mean ≈ 350
BAD_ROW_SHARE = 0.01
FORMAT_SHARES = {"xlsx": 0.15, "json": 0.05}  # the rest CSV
GBK_SHARE_OF_CSV = 1 / 3
TZ = ZoneInfo("Asia/Shanghai")

# Province-level codes of GB/T 2260 (the synthetic cities and counties hang under them).
PROVINCES = [
    "11",
    "12",
    "13",
    "14",
    "15",
    "21",
    "22",
    "23",
    "31",
    "32",
    "33",
    "34",
    "35",
    "36",
    "37",
    "41",
    "42",
    "43",
    "44",
    "45",
    "46",
    "50",
    "51",
    "52",
    "53",
    "54",
    "61",
    "62",
    "63",
    "64",
    "65",
]
BAD_RULES = (
    "STATUS_INVALID",
    "PROJECT_TYPE_INVALID",
    "SCHOOL_CODE_MALFORMED",
    "PROJECT_ID_MISSING",
    "PLANNED_INVEST_NOT_POSITIVE",
    "FUNDS_EXCEED_INVEST",
)


@dataclass
class NationalManifest:
    root: Path
    period: str
    counties: int
    rows_total: int
    bad_rows: int
    bad_by_rule: dict[str, int]
    files_by_format: dict[str, int]  # csv_utf8, csv_gbk, xlsx, json (progress files)
    rows_by_format: dict[str, int]
    funding_files: int
    divisions_path: Path
    plan_path: Path
    seconds: float
    seconds_by_step: dict[str, float] = field(default_factory=dict)

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"


def _divisions(n: int) -> pd.DataFrame:
    """n synthetic counties, eight to a city, cities spread over the 31 provinces."""
    i = np.arange(n)
    city_idx = i // 8
    prov = np.array(PROVINCES)[city_idx % len(PROVINCES)]
    city_no = city_idx // len(PROVINCES) + 1
    city_code = np.char.add(np.char.add(prov, np.char.zfill((city_no).astype(str), 2)), "00")
    county_code = np.char.add(
        np.char.add(prov, np.char.zfill(city_no.astype(str), 2)), np.char.zfill((i % 8 + 1).astype(str), 2)
    )
    return pd.DataFrame(
        {
            "county_code": county_code,
            "county_name": np.char.add(np.char.add("模拟", county_code), "县"),
            "city_code": city_code,
            "city_name": np.char.add(np.char.add("模拟", city_code), "市"),
        }
    )


def _text(values: np.ndarray) -> pa.Array:
    return pa.array(values).cast(pa.string())


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _dates(days: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Days since 1970 as ISO date strings, null where not ``valid``."""
    arr = pa.array(days.astype("int32"), mask=~valid).cast(pa.date32())
    return arr.cast(pa.string())


def _progress_table(
    rng: np.random.Generator, div: pd.DataFrame, period: str
) -> tuple[pa.Table, np.ndarray, dict[str, int]]:
    """Every county's progress rows as one Arrow table (canonical column names), counties in order."""
    n = len(div)
    counts = rng.integers(*ROWS_PER_COUNTY, size=n)
    total = int(counts.sum())
    cidx = np.repeat(np.arange(n), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    seq = np.arange(total) - starts[cidx] + 1
    take = pa.array(cidx)
    code = pa.array(div["county_code"].tolist(), pa.string()).take(take)
    county_name = pa.array(div["county_name"].tolist(), pa.string()).take(take)
    end_day = int(((np.datetime64(period, "M") + 1).astype("datetime64[D]") - 1).astype("int64"))

    school_no = _text((seq + 1) // 2)
    school_code = _join(code, pc.utf8_lpad(school_no, 4, "0"))
    school_name = _join(county_name, "第", school_no, "小学")
    project_id = _join("P", code, "-", pc.utf8_lpad(_text(seq), 4, "0"))
    building = rng.random(total) < 0.65
    draw = rng.random(total)
    status_i = np.where(draw < 0.1, 0, np.where(draw < 0.4, 1, 2))  # 未开工, 在建, 已竣工
    type_i = np.where(building, 0, 1)

    planned_area = np.where(
        building, np.round(np.clip(rng.lognormal(np.log(1500), 0.6, total), 200, 9000)), 0.0
    )
    started = np.where(
        (status_i > 0) & building, np.round(planned_area * rng.uniform(0.95, 1.05, total)), 0.0
    )
    completed = np.where(
        status_i == 2,
        np.round(started * rng.uniform(0.9, 1.0, total)),
        np.where(status_i == 1, np.round(started * rng.uniform(0, 0.4, total)), 0.0),
    )
    planned_invest = np.round(
        np.where(
            building,
            planned_area * rng.uniform(0.12, 0.22, total),
            np.clip(rng.lognormal(np.log(80), 0.7, total), 8, 600),
        ),
        2,
    )
    invest = np.round(
        np.where(
            status_i == 2,
            planned_invest * rng.uniform(0.9, 1.05, total),
            np.where(status_i == 1, planned_invest * rng.uniform(0.1, 0.9, total), 0.0),
        ),
        2,
    )
    central = np.round(invest * rng.choice([0.5, 0.6, 0.7], total), 2)
    local = np.round(invest - central, 2)

    base = int(np.datetime64("2015-01-01").astype("int64"))
    planned_start = base + rng.integers(0, 1276, total)  # to 2018-06-30
    actual = np.minimum(planned_start + rng.integers(-10, 90, total), end_day - 40)
    done = np.minimum(actual + rng.integers(30, 400, total), end_day)

    # ≈1% bad rows, one broken rule each.
    bad = rng.random(total) < BAD_ROW_SHARE
    which = rng.integers(0, len(BAD_RULES), total)
    masks = {rule: bad & (which == k) for k, rule in enumerate(BAD_RULES)}
    by_rule = {rule: int(m.sum()) for rule, m in masks.items()}
    status_names = pa.array(["未开工", "在建", "已竣工", "停工"])
    type_names = pa.array(["校舍改造", "设备购置", "维修改造"])
    status_i = np.where(masks["STATUS_INVALID"], 3, status_i)
    type_i = np.where(masks["PROJECT_TYPE_INVALID"], 2, type_i)
    school_code = pc.if_else(
        pa.array(masks["SCHOOL_CODE_MALFORMED"]), pc.utf8_slice_codeunits(school_code, 0, 9), school_code
    )
    project_id = pc.if_else(pa.array(masks["PROJECT_ID_MISSING"]), pa.scalar(None, pa.string()), project_id)
    zero = masks["PLANNED_INVEST_NOT_POSITIVE"]
    planned_invest = np.where(zero, 0.0, planned_invest)
    invest, central, local = (np.where(zero, 0.0, x) for x in (invest, central, local))
    local = np.where(masks["FUNDS_EXCEED_INVEST"], np.round(local + 50.0, 2), local)

    reporters = pa.array(["王芳", "李娜", "张伟", "刘洋", "陈静", "杨帆", "赵磊", "黄敏"])
    phones = pa.array([f"138{(i * 7919) % 10**8:08d}" for i in range(n)])
    table = pa.table(
        {
            "period": pa.array(np.full(total, period)),
            "county_code": code,
            "school_code": school_code,
            "school_name": school_name,
            "project_id": project_id,
            "project_type": type_names.take(pa.array(type_i)),
            "status": status_names.take(pa.array(status_i)),
            "planned_area_m2": planned_area,
            "started_area_m2": started,
            "completed_area_m2": completed,
            "planned_invest_wan": planned_invest,
            "completed_invest_wan": invest,
            "funds_central_wan": central,
            "funds_local_wan": local,
            "planned_start": _dates(planned_start, np.ones(total, bool)),
            "actual_start": _dates(actual, status_i > 0),
            "completed_date": _dates(done, status_i == 2),
            "reporter": reporters.take(pa.array(np.arange(n) % len(reporters))).take(take),
            "phone": phones.take(take),
            "note": pa.nulls(total, pa.string()),
        }
    )
    return table, counts, by_rule


def _formats(rng: np.random.Generator, n: int) -> np.ndarray:
    n_xlsx = round(n * FORMAT_SHARES["xlsx"])
    n_json = round(n * FORMAT_SHARES["json"])
    n_csv = n - n_xlsx - n_json
    n_gbk = round(n_csv * GBK_SHARE_OF_CSV)
    labels = np.array(
        ["xlsx"] * n_xlsx + ["json"] * n_json + ["csv_gbk"] * n_gbk + ["csv_utf8"] * (n_csv - n_gbk)
    )
    rng.shuffle(labels)
    return labels


def _received(rng: np.random.Generator, n: int, period: str) -> np.ndarray:
    y, m = int(period[:4]), int(period[5:7])
    first = datetime(y + (m == 12), m % 12 + 1, 1, 8, 30, tzinfo=TZ).timestamp()
    return first + rng.integers(0, 4, n) * 86400 + rng.integers(0, 9 * 3600, n)


def _write_xlsx(path: Path, headers: list[str], rows: list[tuple[object, ...]]) -> None:
    import xlsxwriter

    wb = xlsxwriter.Workbook(
        str(path), {"constant_memory": True, "strings_to_numbers": False, "strings_to_formulas": False}
    )
    ws = wb.add_worksheet("进展")
    ws.write_row(0, 0, headers)
    for r, row in enumerate(rows, start=1):
        ws.write_row(r, 0, row)
    wb.close()


_JOB_TABLE: pa.Table | None = None
_JOB_HEADERS: list[str] = []


def _xlsx_job(job: tuple[str, int, int]) -> None:
    assert _JOB_TABLE is not None
    path, start, stop = job
    part = _JOB_TABLE.slice(start, stop - start)
    _write_xlsx(Path(path), _JOB_HEADERS, list(zip(*(col.to_pylist() for col in part.columns), strict=True)))


def _write_xlsx_jobs(
    table: pa.Table, headers: list[str], jobs: list[tuple[str, int, int]], workers: int
) -> None:
    global _JOB_TABLE, _JOB_HEADERS
    _JOB_TABLE, _JOB_HEADERS = table, headers
    try:
        if workers > 1 and len(jobs) >= 8 and "fork" in mp.get_all_start_methods():
            with mp.get_context("fork").Pool(workers) as pool:
                pool.map(_xlsx_job, jobs, chunksize=max(1, len(jobs) // (workers * 4)))
        else:
            for job in jobs:
                _xlsx_job(job)
    finally:
        _JOB_TABLE, _JOB_HEADERS = None, []


def generate_national(
    root: Path,
    scale: float = 1.0,
    seed: int = 1,
    period: str = "2018-12",
    funding: bool = True,
    workers: int | None = None,
) -> NationalManifest:
    """Write a national month under ``root`` (see the module docstring); ``scale`` shrinks the county count.

    ``workers`` processes write the XLSX files (default: the machine's cores, at most 4).
    """
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    t0 = time.perf_counter()
    steps: dict[str, float] = {}
    root = Path(root)
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = max(1, round(COUNTIES_FULL * scale))
    div = _divisions(n)
    div.to_csv(root / "divisions.csv", index=False)
    codes = div["county_code"].tolist()
    for c in codes:
        (inbox / c).mkdir(exist_ok=True)

    table, counts, bad_by_rule = _progress_table(rng, div, period)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    formats = _formats(rng, n)
    received = _received(rng, n, period)
    steps["columns"] = time.perf_counter() - t0

    headers = [c.label_zh for c in PROGRESS_COLUMNS]
    compact = period.replace("-", "")
    paths: list[Path] = []

    # CSV: one pyarrow write for every CSV county's rows, cut into files by line.
    t = time.perf_counter()
    csv_mask = np.isin(formats, ["csv_utf8", "csv_gbk"])
    csv_rows = np.repeat(csv_mask, counts)
    sub = table.filter(pa.array(csv_rows))
    buf = io.BytesIO()
    pacsv.write_csv(sub, buf, pacsv.WriteOptions(include_header=False, quoting_style="none"))
    lines = buf.getvalue().split(b"\n")
    header_line = (",".join(headers) + "\n").encode("utf-8")
    pos = 0
    for i in np.flatnonzero(csv_mask):
        k = int(counts[i])
        body = b"\n".join(lines[pos : pos + k]) + b"\n"
        pos += k
        code = codes[i]
        if formats[i] == "csv_gbk":
            data = (header_line + body).decode("utf-8").encode("gbk")
            name = (
                f"{div.at[i, 'county_name']}全面改薄项目进展月报{int(period[:4])}年{int(period[5:7])}月.csv"
            )
        else:
            data = header_line + body
            name = f"{code}_progress_{period}.csv"
        path = inbox / code / name
        path.write_bytes(data)
        paths.append(path)
    del lines, buf, sub
    steps["csv"] = time.perf_counter() - t

    # JSON: records with canonical keys, as a county platform serves them.
    t = time.perf_counter()
    for i in np.flatnonzero(formats == "json"):
        part = table.slice(int(offsets[i]), int(counts[i])).to_pylist()
        path = inbox / codes[i] / f"progress-{compact}.json"
        path.write_text(json.dumps(part, ensure_ascii=False), encoding="utf-8")
        paths.append(path)
    steps["json"] = time.perf_counter() - t

    # XLSX: xlsxwriter in constant_memory mode, data on a sheet named 进展; the slowest writer,
    # so it runs on every core (forked workers read the table from the parent's memory).
    t = time.perf_counter()
    jobs = []
    for i in np.flatnonzero(formats == "xlsx"):
        path = inbox / codes[i] / f"{codes[i]}_进展月报_{compact}.xlsx"
        jobs.append((str(path), int(offsets[i]), int(offsets[i + 1])))
        paths.append(path)
    _write_xlsx_jobs(table, headers, jobs, workers)
    steps["xlsx"] = time.perf_counter() - t

    # Funding: one small CSV per county; then the plan and the mtimes.
    t = time.perf_counter()
    funding_files = 0
    plan_area = np.bincount(
        np.repeat(np.arange(n), counts), weights=table.column("planned_area_m2").to_numpy(), minlength=n
    )
    is_equip = pc.equal(table.column("project_type"), "设备购置").to_numpy(zero_copy_only=False)
    plan_equip = np.bincount(
        np.repeat(np.arange(n), counts),
        weights=np.where(is_equip, table.column("planned_invest_wan").to_numpy(), 0.0),
        minlength=n,
    )
    if funding:
        fheaders = ",".join(c.label_zh for c in FUNDING_COLUMNS) + "\n"
        total = np.round(rng.uniform(20000, 150000, n), 2)
        parts = np.round(
            total[:, None] * np.array([0.38, 0.36, 0.15, 0.04]) * rng.uniform(0.9, 1.0, (n, 1)), 2
        )
        teachers = rng.integers(200, 2000, n)
        rural = (teachers * rng.uniform(0.5, 0.85, n)).astype(int)
        for j, code in enumerate(codes):
            line = (
                f"{period},{code},{total[j]},{parts[j, 0]},{parts[j, 1]},{parts[j, 2]},{parts[j, 3]},"
                f"{round(parts[j, 3] / 4.4, 1)},{teachers[j]},{rural[j]},{round(float(total[j]) * 0.03, 0)}\n"
            )
            path = inbox / code / f"{code}_funding_{period}.csv"
            path.write_text(fheaders + line, encoding="utf-8")
            os.utime(path, (received[j] + 600, received[j] + 600))
            funding_files += 1
    index = {c: i for i, c in enumerate(codes)}
    for path in paths:
        ts = float(received[index[path.parent.name]])
        os.utime(path, (ts, ts))
    plan = pd.DataFrame(
        {
            PLAN_COLUMNS[0].label_zh: codes,
            PLAN_COLUMNS[1].label_zh: np.round(plan_area * rng.uniform(0.9, 1.2, n)),
            PLAN_COLUMNS[2].label_zh: np.round(plan_equip * rng.uniform(0.95, 1.25, n), 2),
            PLAN_COLUMNS[3].label_zh: "2014-2018",
        }
    )
    plan.to_csv(root / "plan.csv", index=False)
    steps["funding_plan_mtimes"] = time.perf_counter() - t

    rows_by_format = {f: int(counts[formats == f].sum()) for f in ("csv_utf8", "csv_gbk", "xlsx", "json")}
    files_by_format = {f: int((formats == f).sum()) for f in ("csv_utf8", "csv_gbk", "xlsx", "json")}
    seconds = time.perf_counter() - t0
    manifest = NationalManifest(
        root=root,
        period=period,
        counties=n,
        rows_total=int(counts.sum()),
        bad_rows=int(sum(bad_by_rule.values())),
        bad_by_rule=bad_by_rule,
        files_by_format=files_by_format,
        rows_by_format=rows_by_format,
        funding_files=funding_files,
        divisions_path=root / "divisions.csv",
        plan_path=root / "plan.csv",
        seconds=seconds,
        seconds_by_step=steps,
    )
    (root / "manifest.json").write_text(
        json.dumps(asdict(manifest), default=str, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    log.info("national month: %d counties, %d rows in %.1f s", n, manifest.rows_total, seconds)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write a national month of county returns for the benchmark."
    )
    parser.add_argument("out", type=Path, help="output folder (inbox/, divisions.csv, plan.csv)")
    parser.add_argument("--quick", action="store_true", help="a tenth of the counties (scale 0.1)")
    parser.add_argument("--scale", type=float, default=None, help="share of the 2,850 counties")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--period", default="2018-12")
    args = parser.parse_args(argv)
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    m = generate_national(args.out, scale=scale, seed=args.seed, period=args.period)
    print(
        f"{m.counties} counties, {m.rows_total:,} progress rows ({m.bad_rows:,} bad), "
        f"files {m.files_by_format}, funding {m.funding_files}: {m.seconds:.1f} s "
        f"({', '.join(f'{k} {v:.1f} s' for k, v in m.seconds_by_step.items())})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
