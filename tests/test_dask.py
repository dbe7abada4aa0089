"""The ingest fanned out over a real Dask LocalCluster (2 worker processes) gives the same warehouse.

Runs the real command (`gaibao backfill --task-runner dask`) in a subprocess, as a data engineer
would: the flow's process starts Prefect's temporary server and a LocalCluster of 2 worker
processes, which run the fetch-and-read chunks and report to that server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow]

COUNTIES = ["340321", "341222", "341282"]  # XLSX, JSON and CSV habits
GAIBAO = str(Path(sys.executable).with_name("gaibao"))


def _run(home: Path, runner: str) -> dict[str, pd.DataFrame]:
    from warehouse.store import Warehouse

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAIBAO_", "PREFECT_API"))}
    env.update(GAIBAO_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
    args = [GAIBAO, "backfill", "--start", "2018-11", "--end", "2018-12", "--task-runner", runner, "--json"]
    for county in COUNTIES:
        args += ["--county", county]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"accepted": 12' in proc.stdout, proc.stdout[-2000:]
    wh = Warehouse(f"sqlite:///{home / 'warehouse.db'}", home)
    out = {}
    for name in ("submission", "fact_progress", "fact_funding", "mart_county_progress"):
        frame = wh.read_table(name).drop(columns=["loaded_at", "source"], errors="ignore")  # source names the home
        out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    wh.close()
    return out


def test_dask_runner_matches_the_default_runner(tmp_path: Path) -> None:
    from gaibao.demo import generate_demo
    from tasks.plan import load_plan_file
    from warehouse.store import Warehouse

    base = tmp_path / "base"
    manifest = generate_demo(base)
    wh = Warehouse(f"sqlite:///{base / 'warehouse.db'}", base)
    wh.upgrade()
    assert load_plan_file(wh, manifest.plan_file).ok
    wh.close()
    homes = {name: tmp_path / name for name in ("default", "dask")}
    for home in homes.values():
        shutil.copytree(base, home)
    expected = _run(homes["default"], "default")
    got = _run(homes["dask"], "dask")
    assert len(expected["fact_progress"]) > 0
    for name, frame in expected.items():
        pd.testing.assert_frame_equal(frame, got[name], check_dtype=False)
