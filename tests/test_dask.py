"""The ingest fanned out over a real Dask LocalCluster (2 worker processes) gives the same warehouse.

Runs the real command (`gaibao backfill --task-runner dask`) in a subprocess, as a data engineer
would: the flow's process starts Prefect's temporary server and a LocalCluster of 2 worker
processes, which run the fetch-and-read chunks and report to that server. A second test runs two
flows in one Python process: they share one LocalCluster, started once and closed at exit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

pytestmark = [pytest.mark.slow]

COUNTIES = ["340321", "341222", "341282"]  # XLSX, JSON and CSV habits
GAIBAO = str(Path(sys.executable).with_name("gaibao"))


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAIBAO_", "PREFECT_API"))}
    env.update(
        GAIBAO_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING"
    )
    # received_at is the time gaibao reads a file; two runs compared table for table replay the
    # demo files' own times instead, as `gaibao demo` does.
    env["GAIBAO_REPLAY_FILE_TIMES"] = "true"
    return env


def _tables(home: Path) -> dict[str, pd.DataFrame]:
    from warehouse.store import Warehouse

    wh = Warehouse(f"sqlite:///{home / 'warehouse.db'}", home)
    out = {}
    for name in ("submission", "fact_progress", "fact_funding", "mart_county_progress"):
        # source names the home
        frame = wh.read_table(name).drop(columns=["loaded_at", "source"], errors="ignore")
        out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    wh.close()
    return out


def _run(home: Path, runner: str) -> dict[str, pd.DataFrame]:
    args = [GAIBAO, "backfill", "--start", "2018-11", "--end", "2018-12", "--task-runner", runner, "--json"]
    for county in COUNTIES:
        args += ["--county", county]
    proc = subprocess.run(args, env=_env(home), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert '"accepted": 12' in proc.stdout, proc.stdout[-2000:]
    return _tables(home)


@pytest.fixture(scope="module")
def demo_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo returns and the plan, loaded into a warehouse nobody ingested into yet."""
    from gaibao.demo import generate_demo
    from tasks.plan import load_plan_file
    from warehouse.store import Warehouse

    base = tmp_path_factory.mktemp("dask") / "base"
    manifest = generate_demo(base)
    wh = Warehouse(f"sqlite:///{base / 'warehouse.db'}", base)
    wh.upgrade()
    assert load_plan_file(wh, manifest.plan_file).ok
    wh.close()
    return base


@pytest.fixture(scope="module")
def default_result(demo_base: Path) -> dict[str, pd.DataFrame]:
    """The warehouse after `gaibao backfill` 2018-11..2018-12 with the default (thread) runner."""
    home = demo_base.with_name("default")
    shutil.copytree(demo_base, home)
    expected = _run(home, "default")
    assert len(expected["fact_progress"]) > 0
    return expected


def test_dask_runner_matches_the_default_runner(
    demo_base: Path, default_result: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    home = tmp_path / "dask"
    shutil.copytree(demo_base, home)
    got = _run(home, "dask")
    for name, frame in default_result.items():
        pd.testing.assert_frame_equal(frame, got[name], check_dtype=False)


# Two flow runs in one process, as the benchmark (and any long-lived process) makes them.
TWO_RUNS = textwrap.dedent(
    """
    import atexit, json, os, sys, time

    closed_at_exit = {}

    def report_exit():  # registered first, so it runs after flows.runners has closed its cluster
        import flows.runners
        closed_at_exit["closed"] = flows.runners.local_cluster_address() is None
        print("EXIT " + json.dumps(closed_at_exit), flush=True)

    def executed_on_workers(address):
        from distributed import Client
        with Client(address, set_as_default=False, timeout=60) as client:
            return client.run(lambda dask_worker: (os.getpid(), dask_worker.state.executed_count))

    if __name__ == "__main__":
        # Registered here, not at the top: processes started by spawn (the Dask workers) run this
        # file's top level again as __mp_main__, and one printed its own EXIT line into the same
        # stdout, on the same line as this process's (seen once in CI: JSONDecodeError).
        atexit.register(report_exit)
        from flows.backfill import backfill
        from flows.runners import local_cluster_address, task_runner

        counties = sys.argv[1:]
        flow = backfill.with_options(task_runner=task_runner(kind="dask"))
        assert local_cluster_address() is None  # defining the runner starts nothing
        runs = []
        for period in ("2018-11", "2018-12"):
            started = time.perf_counter()
            summary = flow(start=period, end=period, counties=counties)
            runs.append({
                "period": period,
                "seconds": round(time.perf_counter() - started, 1),
                "accepted": summary["totals"]["accepted"],
                "address": local_cluster_address(),
                "workers": executed_on_workers(local_cluster_address()),
            })
        print("RUNS " + json.dumps(runs), flush=True)
    """
)


def test_flow_runs_in_one_process_share_one_local_cluster(
    demo_base: Path, default_result: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    """Two backfill runs (2018-11, then 2018-12) in one process: one LocalCluster, started by the
    first run, used by both (same scheduler, its workers ran tasks of each run), closed at exit;
    and the warehouse is the default runner's two-period backfill, table for table."""
    home = tmp_path / "dask"
    shutil.copytree(demo_base, home)
    script = tmp_path / "two_runs.py"
    script.write_text(TWO_RUNS, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script), *COUNTIES], env=_env(home), capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = {
        line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])
        for line in proc.stdout.splitlines()
        if line.startswith(("RUNS ", "EXIT "))
    }
    first, second = lines["RUNS"]
    print(f"dask runs in one process: {first['seconds']} s (starts the cluster), {second['seconds']} s")

    assert first["address"] and first["address"] == second["address"]
    assert first["accepted"] == 6 and second["accepted"] == 6  # 3 counties x progress and funding
    # the same two worker processes ran tasks of the first run, then more of the second
    assert sorted(first["workers"]) == sorted(second["workers"]) and len(first["workers"]) == 2
    executed_first = sum(count for _, count in first["workers"].values())
    executed_second = sum(count for _, count in second["workers"].values())
    assert 0 < executed_first < executed_second
    assert lines["EXIT"] == {"closed": True}

    got = _tables(home)
    for name, frame in default_result.items():
        pd.testing.assert_frame_equal(frame, got[name], check_dtype=False)


# The local cluster's workers, checked from a fresh process: the profiler is off (CPython
# gh-106883, see flows.runners.local_worker_config), the rest of the configuration is the flow
# process's own, and a worker the nanny restarts (as the scheduler does after a missed
# heartbeat) starts the same way.
WORKER_CONFIG = textwrap.dedent(
    """
    import json
    import dask
    from distributed import Client
    from flows.runners import close_local_cluster, ensure_local_cluster

    def probe(dask_worker):
        import dask
        return {
            "profiling": "profile" in dask_worker.periodic_callbacks,
            "profile_enabled": dask.config.get("distributed.worker.profile.enabled"),
            "memory_target": dask.config.get("distributed.worker.memory.target"),
        }

    if __name__ == "__main__":
        address = ensure_local_cluster().address
        with Client(address, set_as_default=False, timeout=60) as client:
            started = list(client.run(probe).values())
            client.restart()
            restarted = list(client.run(probe).values())
        close_local_cluster()
        print("CONFIG " + json.dumps({
            "started": started,
            "restarted": restarted,
            "flow_process": dask.config.get("distributed.worker.profile.enabled"),
        }), flush=True)
    """
)


def test_local_cluster_workers_run_without_the_profiler(tmp_path: Path) -> None:
    script = tmp_path / "worker_config.py"
    script.write_text(WORKER_CONFIG, encoding="utf-8")
    env = _env(tmp_path / "home")
    env["PREFECT_API_URL"] = "http://127.0.0.1:9/api"  # recorded for the workers, never called here
    env["DASK_DISTRIBUTED__WORKER__MEMORY__TARGET"] = "0.55"  # a setting of the flow's process
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("CONFIG "))
    got = json.loads(line.split(" ", 1)[1])
    expected = {"profiling": False, "profile_enabled": False, "memory_target": 0.55}
    assert got["started"] == [expected, expected]
    assert got["restarted"] == [expected, expected]
    assert got["flow_process"] is True  # only the workers' copy changes
