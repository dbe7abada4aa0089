"""Benchmark: the monthly pack for a national month (2,850 counties, ≈1,000,000 projects).

    python benchmarks/pack.py [--home DIR] [--url URL] [--counties 2850] [--periods 3] [--repeat 3]

1. Unless ``--reuse`` finds one, builds a national warehouse under ``--home`` through the real
   ``Warehouse`` API: synthetic divisions and plan, ``--periods`` months of progress returns
   (vectorised with numpy, ≈350 projects a county; some not started, stalled, rejected rows,
   warnings), the last month's funding returns, then ``rebuild_marts``. (The data core's
   ``benchmarks/gen_national.py`` writes return *files*; turning those into a warehouse is the
   ingest benchmark's job, so this one loads frames directly.)
2. Builds the pack ``--repeat`` times, each in a fresh process, and prints the median of each
   step: read the warehouse, compute marts and sections, write the pack files (HTML, XLSX, chart,
   公示), write the 2,850 county letters (HTML + XLSX), store marts and manifest.

Target: the pack in ≤ 20 s ("total without county outputs"; ``--no-county-outputs`` skips
the letters and 公示 pages, a separate step, to measure only that). Output: one JSON line per run and a summary.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PERIOD = "2018-12"


def _divisions(n: int) -> pd.DataFrame:
    i = np.arange(n)
    city = i // 8
    prov = 11 + city % 31
    city_no = city // 31 + 1
    county_code = [f"{p:02d}{c:02d}{k % 8 + 1:02d}" for p, c, k in zip(prov, city_no, i, strict=True)]
    city_code = [f"{p:02d}{c:02d}00" for p, c in zip(prov, city_no, strict=True)]
    return pd.DataFrame(
        {
            "county_code": county_code,
            "county_name": [f"模拟{c}县" for c in county_code],
            "city_code": city_code,
            "city_name": [f"模拟{c}市" for c in city_code],
        }
    )


def _sid(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


def build_warehouse(home: Path, url: str, counties: int, n_periods: int, seed: int = 3) -> dict[str, float]:
    from reports import periods
    from warehouse.store import Warehouse

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    div = _divisions(counties)
    codes = div["county_code"].to_numpy()
    per = rng.integers(150, 551, counties)
    n = int(per.sum())
    county_of = np.repeat(codes, per)
    j = np.concatenate([np.arange(k) for k in per])
    project_id = pd.Series(county_of).str.cat(pd.Series(j).astype(str).str.zfill(4), sep="-XM").to_numpy()
    school_name = pd.Series(county_of).str.cat(pd.Series(j // 3).astype(str), sep="县模拟学校").to_numpy()
    school_code = pd.Series(county_of).str.cat(pd.Series(j).astype(str).str.zfill(4)).to_numpy()
    equipment = rng.random(n) < 0.2
    planned = np.where(equipment, 0.0, rng.integers(300, 5000, n).astype(float))
    invest = rng.integers(20, 800, n).astype(float)
    traj = rng.choice(4, n, p=[0.08, 0.05, 0.5, 0.37])  # not started, stalled, progressing, completed
    planned_start = np.where(rng.random(n) < 0.5, np.datetime64("2018-03-01"), np.datetime64("NaT"))
    window = periods.window(PERIOD, n_periods)
    wh = Warehouse(url, home)
    wh.upgrade()
    wh.load_divisions(div)
    plan = pd.DataFrame(
        {
            "county_code": codes,
            "plan_area_m2": pd.Series(planned).groupby(county_of).sum().reindex(codes).to_numpy()
            * rng.uniform(0.9, 1.4, counties),
            "plan_equipment_wan": pd.Series(np.where(equipment, invest, 0))
            .groupby(county_of)
            .sum()
            .reindex(codes)
            .to_numpy()
            * rng.uniform(0.9, 1.4, counties),
            "plan_cycle": "2014-2018",
        }
    )
    wh.load_plan(plan)
    timings = {"generate+reference": time.perf_counter() - t0}
    for k, p in enumerate(window):
        t = time.perf_counter()
        frac = (k + 1) / (n_periods + 2)
        status = np.select([traj == 0, traj == 3], ["未开工", "已竣工"], "在建")
        started = np.where(traj == 0, 0.0, planned)
        done = np.select([traj == 0, traj == 1, traj == 3], [0.0, planned * 0.3, planned], planned * frac)
        inv = np.select([traj == 0, traj == 1, traj == 3], [0.0, invest * 0.3, invest], invest * frac)
        sids = {c: _sid("progress", c, p) for c in codes}
        facts = pd.DataFrame(
            {
                "submission_id": pd.Series(county_of).map(sids).to_numpy(),
                "row_number": j + 3,
                "period": p,
                "county_code": county_of,
                "school_code": school_code,
                "school_name": school_name,
                "project_id": project_id,
                "project_type": np.where(equipment, "设备购置", "校舍改造"),
                "status": status,
                "planned_area_m2": planned,
                "started_area_m2": started,
                "completed_area_m2": done,
                "planned_invest_wan": invest,
                "completed_invest_wan": inv,
                "funds_central_wan": inv / 2,
                "funds_local_wan": inv / 2,
                "planned_start": pd.to_datetime(planned_start),
                "actual_start": pd.to_datetime(
                    np.where(traj == 0, np.datetime64("NaT"), np.datetime64("2018-04-01"))
                ),
                "completed_date": pd.to_datetime(
                    np.where(traj == 3, np.datetime64("2018-06-30"), np.datetime64("NaT"))
                ),
                "reporter": "某填报人",
                "phone": "0551-0000000",
                "note": None,
            }
        )
        received = pd.Timestamp(periods.last_day(p)).tz_localize("Asia/Shanghai").tz_convert(
            "UTC"
        ) + pd.Timedelta(days=3)
        late = rng.random(counties) < 0.05
        rejected = rng.integers(0, 6, counties)
        subs = pd.DataFrame(
            {
                "submission_id": [sids[c] for c in codes],
                "kind": "progress",
                "county_code": codes,
                "period": p,
                "source": "folder",
                "file_name": [f"{c}_progress.csv" for c in codes],
                "sha256": [hashlib.sha256(f"{c}{p}".encode()).hexdigest() for c in codes],
                "received_at": [received + pd.Timedelta(days=6 if x else 0) for x in late],
                "status": "accepted",
                "reason": None,
                "rows_total": per + rejected,
                "rows_accepted": per,
                "rows_rejected": rejected,
                "rules_version": "bench0000000",
                "is_late": late,
            }
        )
        issue_county = np.repeat(codes, rejected)
        warn_idx = rng.choice(n, 5000, replace=False)
        issues = pd.concat(
            [
                pd.DataFrame(
                    {
                        "submission_id": pd.Series(issue_county).map(sids).to_numpy(),
                        "kind": "progress",
                        "county_code": issue_county,
                        "period": p,
                        "row_number": 9000,
                        "project_id": None,
                        "rule": "NEGATIVE_INVEST",
                        "severity": "error",
                        "column_name": "planned_invest_wan",
                        "value": "-1",
                        "message": "第9000行“规划投资（万元）”填写为“-1”，应大于0，请更正后重新报送。",
                        "is_explained": False,
                    }
                ),
                pd.DataFrame(
                    {
                        "submission_id": pd.Series(county_of[warn_idx]).map(sids).to_numpy(),
                        "kind": "progress",
                        "county_code": county_of[warn_idx],
                        "period": p,
                        "row_number": j[warn_idx] + 3,
                        "project_id": project_id[warn_idx],
                        "rule": "REGRESSION",
                        "severity": "warning",
                        "column_name": "completed_area_m2",
                        "value": "1",
                        "message": "竣工面积比上期减少，请核实；属实的请在备注中说明。",
                        "is_explained": False,
                    }
                ),
            ],
            ignore_index=True,
        )
        wh.load_batch(subs, facts, issues, "progress")
        timings[f"load progress {p}"] = time.perf_counter() - t
    t = time.perf_counter()
    fsids = [_sid("funding", c, PERIOD) for c in codes]
    fsubs = pd.DataFrame(
        {
            "submission_id": fsids,
            "kind": "funding",
            "county_code": codes,
            "period": PERIOD,
            "source": "folder",
            "file_name": [f"{c}_funding.csv" for c in codes],
            "sha256": [hashlib.sha256(f"f{c}".encode()).hexdigest() for c in codes],
            "received_at": pd.Timestamp("2019-01-03T02:00:00Z"),
            "status": "accepted",
            "reason": None,
            "rows_total": 1,
            "rows_accepted": 1,
            "rows_rejected": 0,
            "rules_version": "bench0000000",
            "is_late": False,
        }
    )
    total = rng.integers(10000, 150000, counties).astype(float)
    recruited = rng.integers(100, 2000, counties)
    ffacts = pd.DataFrame(
        {
            "submission_id": fsids,
            "row_number": 3,
            "period": PERIOD,
            "county_code": codes,
            "funds_total_wan": total,
            "funds_rural_infra_wan": total * 0.38,
            "funds_urban_wan": total * 0.4,
            "funds_equipment_wan": total * 0.16,
            "funds_land_wan": total * 0.04,
            "land_mu": rng.integers(0, 1500, counties).astype(float),
            "teachers_recruited": recruited,
            "teachers_rural": (recruited * 0.8).astype(int),
            "rural_teacher_subsidy_wan": 500.0,
        }
    )
    wh.load_batch(fsubs, ffacts, pd.DataFrame(), "funding")
    timings["load funding"] = time.perf_counter() - t
    t = time.perf_counter()
    wh.rebuild_marts()
    timings["rebuild marts"] = time.perf_counter() - t
    wh.close()
    (home / "bench_pack_ready").write_text(
        json.dumps({"counties": counties, "rows_per_period": n, "periods": window})
    )
    return timings


def one_run(url: str, home: Path, out: Path, county_outputs: bool = True) -> dict[str, float]:
    """One pack build, timed step by step (the steps of reports.pack.build_pack)."""
    from reports.config import load_score_weights, load_thresholds
    from reports.inputs import load_inputs
    from reports.manifest import diff_manifests, latest_manifest, store_manifest
    from reports.pack import compute_pack, pack_file_names, store_marts, write_county_outputs, write_pack
    from warehouse.store import Warehouse

    th, weights = load_thresholds(), load_score_weights()
    wh = Warehouse(url, home)
    timings: dict[str, float] = {}
    t0 = t = time.perf_counter()
    inputs = load_inputs(wh, PERIOD, th.history_periods)
    timings["read warehouse"] = time.perf_counter() - t
    t = time.perf_counter()
    data = compute_pack(inputs, th, weights)
    changes = diff_manifests(latest_manifest(wh.engine, PERIOD), data.manifest, data.county_names)
    timings["compute marts+sections"] = time.perf_counter() - t
    t = time.perf_counter()
    write_pack(data, out, changes, th, letters=False)
    timings["write pack files"] = time.perf_counter() - t
    t = time.perf_counter()
    if county_outputs:
        write_county_outputs(data, out, out / pack_file_names(PERIOD)["disclosure_html"])
    timings["write county outputs"] = time.perf_counter() - t
    t = time.perf_counter()
    store_marts(wh.engine, PERIOD, data.exceptions, data.scorecard)
    store_manifest(wh.engine, data.manifest, str(out))
    timings["store marts+manifest"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    timings["total without county outputs"] = timings["total"] - timings["write county outputs"]
    timings["facts rows read"] = float(len(inputs.facts))
    timings["exceptions"] = float(len(data.exceptions))
    wh.close()
    return timings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=ROOT / "var" / "bench_pack")
    ap.add_argument("--url", default=None, help="warehouse URL (default sqlite:///HOME/warehouse.db)")
    ap.add_argument("--counties", type=int, default=2850)
    ap.add_argument("--periods", type=int, default=3, help="months of history to load (>= 3 for STALLED)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--reuse", action="store_true", help="reuse a warehouse built before under --home")
    ap.add_argument(
        "--no-county-outputs",
        action="store_true",
        help="skip the per-county letters and 公示 pages (a separate step; the ≤ 20 s target excludes them)",
    )
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    home: Path = args.home
    home.mkdir(parents=True, exist_ok=True)
    url = args.url or f"sqlite:///{(home / 'warehouse.db').resolve()}"
    out = home / "reports" / PERIOD
    if args.one:
        print(json.dumps(one_run(url, home, out, not args.no_county_outputs), ensure_ascii=False))
        return 0
    if not (args.reuse and (home / "bench_pack_ready").exists()):
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
        print("building the national warehouse ...", flush=True)
        print(
            json.dumps(
                {k: round(v, 2) for k, v in build_warehouse(home, url, args.counties, args.periods).items()},
                ensure_ascii=False,
            ),
            flush=True,
        )
    runs = []
    for i in range(args.repeat):
        cmd = [sys.executable, __file__, "--home", str(home), "--url", url, "--one"]
        if args.no_county_outputs:
            cmd.append("--no-county-outputs")
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        run = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(
            f"run {i + 1}: " + json.dumps({k: round(v, 2) for k, v in run.items()}, ensure_ascii=False),
            flush=True,
        )
    medians = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
    print("median of", len(runs), json.dumps(medians, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
