"""Measure the warehouse at national scale: ``python -m warehouse.bench --url URL --home DIR``.

Builds a synthetic batch of 2,850 progress submissions / 1,000,000 rows (numpy, not per-row
Python objects), loads it, supersedes it with a second version, and times known_submissions,
previous_rows and rebuild_marts. Peak RSS is sampled with psutil during each step.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from warehouse.store import Warehouse, make_submission_id

RULES = "b" * 12


def synthetic_batch(
    period: str, counties: int, rows: int, version: str, seed: int = 1
) -> tuple[pd.DataFrame, ...]:
    rng = np.random.default_rng(seed)
    codes = np.array([f"{110000 + i * 7:06d}" for i in range(counties)])
    per = np.full(counties, rows // counties)
    per[: rows - per.sum()] += 1
    shas = [f"{version}{i:060d}"[-64:] for i in range(counties)]
    sids = [make_submission_id("progress", c, period, s, RULES) for c, s in zip(codes, shas, strict=True)]
    subs = pd.DataFrame(
        {
            "submission_id": sids,
            "county_code": codes,
            "period": period,
            "source": "folder",
            "file_name": [f"{c}.csv" for c in codes],
            "sha256": shas,
            "received_at": datetime.now(UTC),
            "status": "accepted",
            "rows_total": per,
            "rows_accepted": per,
            "rows_rejected": 0,
            "rules_version": RULES,
            "is_late": False,
        }
    )
    idx = np.repeat(np.arange(counties), per)
    within = np.concatenate([np.arange(n) for n in per])
    n = len(idx)
    building = rng.random(n) < 0.8
    planned = np.where(building, rng.uniform(100, 5000, n).round(1), 0.0)
    started = (planned * rng.uniform(0, 1, n)).round(1)
    completed = (started * rng.uniform(0, 1, n)).round(1)
    status = np.where(completed > 0, "已竣工", np.where(started > 0, "在建", "未开工"))
    facts = pd.DataFrame(
        {
            "submission_id": np.array(sids)[idx],
            "row_number": within + 2,
            "period": period,
            "county_code": codes[idx],
            "school_code": pd.Series(within % 900 + 3401000000).astype(str).to_numpy(),
            "school_name": "某某县第一中心小学",
            "project_id": pd.Series(within).map("P{:06d}".format).to_numpy(),
            "project_type": np.where(building, "校舍改造", "设备购置"),
            "status": status,
            "planned_area_m2": planned,
            "started_area_m2": started,
            "completed_area_m2": completed,
            "planned_invest_wan": rng.uniform(10, 500, n).round(2),
            "completed_invest_wan": rng.uniform(0, 10, n).round(2),
            "funds_central_wan": 1.0,
            "funds_local_wan": 1.0,
            "planned_start": pd.Timestamp("2017-03-01"),
            "actual_start": pd.Timestamp("2017-04-01"),
            "completed_date": pd.NaT,
            "reporter": "张三",
            "phone": "13800000000",
            "note": None,
        }
    )
    issues = pd.DataFrame(
        {
            "submission_id": sids,
            "county_code": codes,
            "period": period,
            "row_number": 2,
            "rule": "REGRESSION",
            "severity": "warning",
            "column_name": "completed_area_m2",
            "value": "1",
            "message": "第2行 竣工面积 比上期减少",
            "is_explained": False,
        }
    )
    return subs, facts, issues


def measure(name: str, fn: Callable[[], Any]) -> dict[str, Any]:
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    stop.set()
    t.join()
    out = {
        "step": name,
        "seconds": round(seconds, 2),
        "rss_before_mb": base >> 20,
        "rss_peak_mb": peak[0] >> 20,
    }
    print(json.dumps(out, ensure_ascii=False), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=None)
    ap.add_argument("--home", default=None)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--counties", type=int, default=2850)
    args = ap.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="gaibao-bench-"))
    url = args.url or f"sqlite:///{home / 'warehouse.db'}"
    w = Warehouse(url, home)
    w.upgrade()

    def load(b: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]) -> None:
        subs, facts, issues = b
        r = w.load_batch(subs, facts, issues, kind="progress")
        print(json.dumps({k: round(v, 2) for k, v in r.timings.items()}), flush=True)

    batches = [synthetic_batch("2017-05", args.counties, args.rows, "a")]
    measure("load_batch new 1M", lambda: load(batches[0]))
    keys = batches[0][0][["county_code", "period", "sha256", "rules_version"]].assign(kind="progress")
    measure("known_submissions 2850", lambda: w.known_submissions(keys))
    batches[0] = synthetic_batch("2017-05", args.counties, args.rows, "b", seed=2)  # frees the first
    measure("load_batch supersede 1M", lambda: load(batches[0]))
    counties = batches[0][0]["county_code"].tolist()
    batches.clear()
    rule_cols = ["project_id", "status", "started_area_m2", "completed_area_m2", "completed_invest_wan"]
    measure("previous_rows all columns", lambda: w.previous_rows("progress", "2017-06", counties))
    measure("previous_rows rule columns", lambda: w.previous_rows("progress", "2017-06", counties, rule_cols))
    measure("rebuild_marts", lambda: w.rebuild_marts())
    w.close()


if __name__ == "__main__":
    main()
