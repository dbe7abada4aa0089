"""Benchmark: the nightly ingest over a national month (2,850 counties, ≈1,000,000 project rows).

    python benchmarks/national.py [--quick] [--scale S] [--data DIR] [--work DIR]
                                  [--warehouse-url URL | --postgres] [--task-runner default|dask]
                                  [--profile FILE] [--hostile]

1. Generates the month once (``benchmarks/gen_national.py``) into ``benchmarks/out/national-<scale>/``
   and reuses it afterwards; generation is not part of any figure.
2. In a fresh ``GAIBAO_HOME`` (SQLite + Parquet by default), loads the benchmark's divisions and
   five-year plan, then runs the real flow ``flows.nightly.nightly_ingest`` over the month and
   prints wall time, rows/s and peak RSS. Prefect's temporary server is started (by a tiny flow)
   before the clock starts: in production the server is already running, and its 8–17 s start
   is printed separately.
3. The I/O floor, in a separate home: read every file (``tasks.readpool``: the pipeline's reader
   processes), type the rows
   (``tasks.normalise``), write the Parquet lake (``Lake.stage``) and the SQL fact table
   (``warehouse.store.bulk_insert``) in one transaction; no rules, no Prefect. Prints the ratio.
4. An unchanged rerun of the flow over the same home (every file is already known).

``--hostile`` adds the hostile corpus (``tests/hostile_corpus.py``, ``docs/hostile-corpus.md``) to
the month: the home gets its own inbox (the month's files hard-linked, or copied across file
systems), where as many counties as there are cases give up their valid returns for one case each
(a real HTTP server on loopback plays the trickling platform). After the ingest it prints each
case's expected and recorded outcome and checks that every other county's returns were accepted;
the figures are the same (the floor reads the month's own files only). The last line gains
``hostile_cases``, ``hostile_ok`` and ``valid_ok`` (valid counties accepted / expected).

Peak RSS is ``ru_maxrss`` of this process (``RUSAGE_SELF``) read right after the ingest, before the
floor runs. ``peak_rss_tree_mb`` adds the reader processes (``tasks.readpool``) or Dask workers (their PSS:
forked processes share pages), sampled every 0.1 s during the ingest; Prefect's temporary server is
left out of both.

The last line is one JSON object:
``{"rows": …, "files": …, "wall_s": …, "floor_s": …, "ratio": …, "peak_rss_mb": …, "peak_rss_tree_mb": …,
"rerun_s": …, "speed_python_s": …, "speed_hash_s": …}`` (``peak_rss_tree_mb``: with the reader
processes or Dask workers; ``speed_*``: :func:`machine_speed`, for comparing runs made at
different hours on this shared machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PERIOD = "2018-12"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


def _quiet_env() -> None:
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def national_data(scale: float, data: Path | None = None) -> Path:
    """The cached national month for ``scale`` (generated on first use)."""
    from benchmarks.gen_national import generate_national

    root = data or ROOT / "benchmarks" / "out" / f"national-{scale}"
    if not (root / "manifest.json").is_file():
        print(f"generating the national month (scale {scale:g}) into {root} …", flush=True)
        if root.exists():
            shutil.rmtree(root)
        generate_national(root, scale=scale, seed=1, period=PERIOD)
    return root


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _children_rss_mb() -> float:
    try:
        import psutil
    except ImportError:
        return 0.0
    total = 0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += child.memory_info().rss
    return total / 2**20


def _files(inbox: Path) -> list[Path]:
    return sorted(p for d in inbox.iterdir() if d.is_dir() for p in d.iterdir() if p.is_file())


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


def prepare_home(home: Path, url: str, data: Path, own_inbox_without: set[str] | None = None) -> None:
    """A fresh warehouse with the benchmark's divisions and five-year plan. ``own_inbox_without``:
    the home gets an inbox of its own, the month's files linked in except these counties' (the
    hostile corpus goes there); otherwise the inbox is a link to the month's."""
    import pandas as pd

    from tasks.plan import load_plan_file
    from warehouse.store import Warehouse

    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    if own_inbox_without is None:
        (home / "inbox").symlink_to(data / "inbox", target_is_directory=True)
    else:
        for folder in sorted((data / "inbox").iterdir()):
            if folder.is_dir() and folder.name not in own_inbox_without:
                (home / "inbox" / folder.name).mkdir(parents=True)
                for path in folder.iterdir():
                    _link_or_copy(path, home / "inbox" / folder.name / path.name)
    with Warehouse(url, home) as wh:
        wh.upgrade()
        divisions = pd.read_csv(data / "divisions.csv", dtype=str)
        wh.load_divisions(divisions)
        outcome = load_plan_file(wh, data / "plan.csv")
        if not outcome.ok:
            raise RuntimeError(outcome.message)


def _settings_env(home: Path, url: str) -> None:
    from gaibao.settings import get_settings

    os.environ["GAIBAO_HOME"] = str(home)
    os.environ["GAIBAO_WAREHOUSE_URL"] = url
    get_settings.cache_clear()


def run_flow(runner: str) -> tuple[dict, object]:
    """The nightly flow over the month: (its summary, its flow run id)."""
    from flows.nightly import nightly_ingest
    from flows.runners import task_runner

    flow = nightly_ingest
    if runner != "default":
        flow = nightly_ingest.with_options(task_runner=task_runner(kind=runner))
    state = flow(period=PERIOD, return_state=True)
    return state.result(), state.state_details.flow_run_id


def step_spans(flow_run_id: object) -> dict[str, tuple[float, float]]:
    """Per task name, (first start, last end) as epoch seconds (mapped tasks: the span), in order."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    spans: dict[str, list] = {}
    for r in runs:
        if r.start_time and r.end_time:
            name = r.task_key.split("-")[0] if r.task_key else r.name.rsplit("-", 1)[0]
            lo, hi = spans.get(name, [r.start_time, r.end_time])
            spans[name] = [min(lo, r.start_time), max(hi, r.end_time)]
    ordered = sorted(spans.items(), key=lambda kv: kv[1][0])
    return {name: (lo.timestamp(), hi.timestamp()) for name, (lo, hi) in ordered}


def step_seconds(spans: dict[str, tuple[float, float]]) -> dict[str, float]:
    return {name: round(hi - lo, 1) for name, (lo, hi) in spans.items()}


def step_cores(spans: dict[str, tuple[float, float]], cpu: list[tuple[float, float]]) -> dict[str, float]:
    """Per step, the CPU cores the run kept busy on average (CPU seconds of the process tree over
    wall seconds): 2.0 means both cores of this machine were working for it all along."""
    out = {}
    for name, (lo, hi) in spans.items():
        inside = [(t, c) for t, c in cpu if lo <= t <= hi]
        if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
            out[name] = round((inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]), 2)
    return out


def step_peaks(
    spans: dict[str, tuple[float, float]], samples: list[tuple[float, float, float]]
) -> dict[str, str]:
    """Per step, the peak sampled RSS (MB) of this process / of the tree while the step ran."""
    out = {}
    for name, (lo, hi) in spans.items():
        inside = [(me, tree) for t, me, tree in samples if lo <= t <= hi]
        if inside:
            out[name] = f"{max(m for m, _ in inside):,.0f}/{max(t for _, t in inside):,.0f}"
    return out


class TreeRss:
    """Peak memory of this process and its children (reader processes, Dask workers), sampled every
    0.1 s. ``peak`` is this process's RSS plus its children's PSS: the reader processes are forked
    from one server and share most of their pages with it, so summing their RSS would count those
    pages several times (measured: 337 MB of RSS for 104 MB of memory of their own); PSS shares
    each page out once. ``peak_rss_sum`` is the plain sum of RSS, for comparison. Prefect's
    temporary server (a child too) is left out, as its start time is."""

    def __init__(self) -> None:
        import threading

        self.peak = 0.0
        self.peak_rss_sum = 0.0
        self.samples: list[tuple[float, float, float]] = []  # (epoch s, this process MB, tree MB)
        self.cpu: list[tuple[float, float]] = []  # (epoch s, CPU seconds of this process and its children)
        self._child_cpu: dict[int, float] = {}  # last CPU seconds seen per child (they may exit)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        own = me.memory_info().rss
        tree = rss_sum = own
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "uvicorn" in " ".join(child.cmdline()):
                    continue
                tree += child.memory_full_info().pss
                rss_sum += child.memory_info().rss
                t = child.cpu_times()
                self._child_cpu[child.pid] = t.user + t.system
        now = time.time()
        t = me.cpu_times()
        self.cpu.append((now, t.user + t.system + sum(self._child_cpu.values())))
        self.samples.append((now, own / 2**20, tree / 2**20))
        self.peak = max(self.peak, tree / 2**20)
        self.peak_rss_sum = max(self.peak_rss_sum, rss_sum / 2**20)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(Exception):
                self._sample()

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine_speed() -> dict[str, float]:
    """Seconds for two fixed pieces of work, timed just before the run: this shared machine's speed
    drifts by tens of per cent from one hour to the next, and a wall time means little without
    them. ``python``: a pure-Python loop (the GIL-bound share of a run); ``hash``: SHA-256 of
    256 MB in C (memory and CPU). Best of three each."""
    import hashlib

    def python_loop() -> None:
        total = 0
        for i in range(5_000_000):
            total += i % 7
        assert total > 0

    blob = bytes(range(256)) * (1 << 20)  # 256 MB

    def best(work: Any) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            work()
            times.append(time.perf_counter() - t)
        return round(min(times), 3)

    return {"python": best(python_loop), "hash": best(lambda: hashlib.sha256(blob).digest())}


def start_prefect() -> float:
    """Start Prefect's temporary server (a trivial flow) so that the ingest's clock excludes it."""
    from prefect import flow

    @flow(name="benchmark-warmup")
    def warmup() -> int:
        return 1

    t0 = time.perf_counter()
    warmup()
    return time.perf_counter() - t0


def io_floor(files: list[Path], home: Path, url: str) -> tuple[float, int]:
    """Read, type, and write lake + SQL with no rules and no Prefect. Returns (seconds, rows)."""
    import sqlalchemy as sa

    from tasks.normalise import normalise_batch
    from tasks.readpool import read_many
    from warehouse.lake import frame_to_arrow
    from warehouse.schema import FACT_TABLES
    from warehouse.store import Warehouse, bulk_insert

    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    with Warehouse(url, home) as wh:
        wh.upgrade()
        t0 = time.perf_counter()
        by_kind: dict[str, list] = {}
        # The pipeline's reader: the same worker processes (GAIBAO_READ_PROCESSES), so the ratio
        # compares like with like.
        parsed_all = read_many([(p.read_bytes(), p.name, None) for p in files])
        for i, parsed in enumerate(parsed_all):
            if parsed.refusal is None and parsed.kind:
                by_kind.setdefault(parsed.kind, []).append((f"s{i:06d}{uuid.uuid4().hex[:8]}", parsed))
        rows = 0
        for kind, items in by_kind.items():
            typed, _ = normalise_batch(kind, items)
            typed["period"] = typed["period"].fillna(PERIOD)
            typed["county_code"] = typed["county_code"].fillna("000000")
            table = FACT_TABLES[kind]  # the rules would reject duplicate keys
            uniques = [c for c in table.constraints if isinstance(c, sa.UniqueConstraint)]
            uniques += [i for i in table.indexes if i.unique]
            for constraint in uniques:
                typed = typed.drop_duplicates([c.name for c in constraint.columns])
            data = frame_to_arrow(typed, FACT_TABLES[kind])
            staged = wh.lake.stage(f"floor-{kind}", kind, data)
            with wh.engine.begin() as conn:
                rows += bulk_insert(conn, FACT_TABLES[kind], data)
            assert len(staged) == len(items)
            del typed, data
        seconds = time.perf_counter() - t0
    return seconds, rows


def _utc_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


class HostileMonth:
    """The hostile corpus (``tests/hostile_corpus.py``) in a national month's home: the last
    counties of the month's divisions each give up their valid returns for one case; every other
    county keeps its own. A real HTTP server on loopback plays the trickling platform."""

    def __init__(self, data: Path, home: Path, outside: Path) -> None:
        import pandas as pd

        from tests.hostile_corpus import CASES

        self.data, self.home, self.outside = data, home, outside
        self.cases = list(CASES)
        codes = sorted(pd.read_csv(data / "divisions.csv", dtype=str)["county_code"])
        self.counties = codes[-len(self.cases) :]
        self.other = codes[0]
        unknown = 999999
        while f"{unknown}" in set(codes):
            unknown -= 1
        self.unknown = f"{unknown}"
        self.valid_counties = [c for c in codes if c not in set(self.counties)]
        self.http = None
        self.corpus = None

    def build(self) -> None:
        from tests.hostile_corpus import build_corpus
        from tests.servers import FaultyHttpServer

        self.http = FaultyHttpServer(trickle_s=1.0).__enter__()
        t0 = time.perf_counter()
        self.corpus = build_corpus(
            self.home, PERIOD, self.counties, outside=self.outside, other_county=self.other,
            unknown_county=self.unknown, http=self.http, cases=self.cases,
        )  # fmt: skip
        os.environ.update(self.corpus.env)
        print(
            f"hostile corpus: {len(self.cases)} cases, {len(self.corpus.expected)} expected outcomes, in "
            f"counties {self.counties[0]}…{self.counties[-1]} (built in {time.perf_counter() - t0:.1f} s, "
            "not counted)",
            flush=True,
        )

    def verify(self, summary: dict, started: Any, ended: Any) -> dict[str, int]:
        from gaibao.settings import get_settings
        from tests.hostile_corpus import format_report, no_control_bytes_in_outputs, verify
        from warehouse.store import Warehouse

        with Warehouse.from_settings(get_settings()) as wh:
            report, problems = verify(self.corpus, wh, summary, started, ended)
            subs = wh.read_table("submission", where={"period": PERIOD})
        print(format_report(report), flush=True)
        valid = subs[subs["county_code"].isin(self.valid_counties)]
        expected_files = sum(
            1 for c in self.valid_counties for p in (self.home / "inbox" / c).iterdir() if p.is_file()
        )
        accepted = int((valid["status"] == "accepted").sum())
        print(
            f"valid counties: {accepted} of {expected_files} files accepted "
            f"({valid['status'].value_counts().to_dict()})",
            flush=True,
        )
        for problem in problems:
            print(f"HOSTILE CASE FAILED: {problem}", flush=True)
        dirty = no_control_bytes_in_outputs(self.home)
        if dirty:
            print(f"NUL or ESC in outputs: {dirty}", flush=True)
        return {
            "hostile_cases": len(self.corpus.expected),
            "hostile_ok": sum(1 for r in report if r["ok"] and r["case"] != "valid"),
            "valid_ok": accepted,
            "valid_files": expected_files,
        }

    def close(self) -> None:
        if self.http is not None:
            self.http.__exit__(None, None, None)
            self.http = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the size (scale 0.1)")
    parser.add_argument("--scale", type=float, default=None)
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the generated month (default benchmarks/out/national-<scale>)",
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="where the homes go (default a temp dir, removed)"
    )
    parser.add_argument("--warehouse-url", default=None, help="SQLAlchemy URL of an empty warehouse database")
    parser.add_argument(
        "--postgres", action="store_true", help="create and drop a fresh database on 127.0.0.1:5432"
    )
    parser.add_argument("--task-runner", default="default", choices=["default", "dask"])
    parser.add_argument("--no-floor", action="store_true", help="skip the I/O floor")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of the ingest here")
    parser.add_argument(
        "--hostile", action="store_true", help="add the hostile corpus (tests/hostile_corpus.py) to the month"
    )
    args = parser.parse_args(argv)
    _quiet_env()
    logging.basicConfig(level=logging.WARNING)

    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    data = national_data(scale, args.data)
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    files = _files(data / "inbox")

    work = args.work or Path(tempfile.mkdtemp(prefix="gaibao-national-"))
    work.mkdir(parents=True, exist_ok=True)
    created_db: list[str] = []

    def fresh_url(name: str) -> str:
        if args.postgres:
            import sqlalchemy as sa

            db = f"gaibao_bench_{name}_{uuid.uuid4().hex[:8]}"
            eng = sa.create_engine(
                PG_SERVER.replace("postgresql://", "postgresql+psycopg://") + "/postgres",
                isolation_level="AUTOCOMMIT",
            )
            with eng.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{db}"')
            eng.dispose()
            created_db.append(db)
            return f"{PG_SERVER}/{db}"
        if args.warehouse_url:
            return args.warehouse_url
        return f"sqlite:///{work / name / 'warehouse.db'}"

    hostile = None
    try:
        home = work / "ingest"
        url = fresh_url("ingest")
        if args.hostile:
            hostile = HostileMonth(data, home, work / "outside")
            prepare_home(home, url, data, own_inbox_without=set(hostile.counties))
            hostile.build()
        else:
            prepare_home(home, url, data)
        _settings_env(home, url)
        server_s = start_prefect()
        speed = machine_speed()
        print(f"machine speed (s, best of 3; lower is faster): {speed}", flush=True)
        print(
            f"month: {manifest['counties']} counties, {len(files)} files, {manifest['rows_total']:,} progress rows "
            f"(data {data}); Prefect server start {server_s:.1f} s (not counted)",
            flush=True,
        )
        if args.task_runner == "dask" and not os.environ.get("GAIBAO_DASK_ADDRESS"):
            from flows.runners import ensure_local_cluster

            # In production the cluster runs already (GAIBAO_DASK_ADDRESS), like the Prefect server.
            cluster = ensure_local_cluster()
            print(
                f"Dask LocalCluster {cluster.address} start {cluster.start_s:.1f} s (not counted; "
                "both runs below use it)",
                flush=True,
            )

        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t0 = time.perf_counter()
        started = _utc_now()
        with TreeRss() as tree:
            summary, run_id = run_flow(args.task_runner)
        wall = time.perf_counter() - t0
        ended = _utc_now()
        if profiler:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
        peak = _peak_rss_mb()
        children = _children_rss_mb()
        totals = summary["totals"]
        rows = int(totals["rows_accepted"]) + int(totals["rows_rejected"])
        print(
            f"ingest ({args.task_runner} runner, {url.split(':')[0]}): {wall:.1f} s, "
            f"{rows / wall:,.0f} rows/s, totals {totals}",
            flush=True,
        )
        print(
            f"peak RSS {peak:,.0f} MB (this process); with its reader/Dask worker processes "
            f"{tree.peak:,.0f} MB (sampled: RSS + the children's PSS; their plain RSS sum "
            f"{tree.peak_rss_sum:,.0f} MB; children now {children:,.0f} MB RSS incl. the Prefect server)",
            flush=True,
        )
        with contextlib.suppress(Exception):
            spans = step_spans(run_id)
            print(f"steps (s, first start to last end): {step_seconds(spans)}", flush=True)
            print(
                f"steps' peak memory (MB, this process RSS/tree): {step_peaks(spans, tree.samples)}",
                flush=True,
            )
            print(
                f"steps' busy cores (CPU s / wall s, process tree): {step_cores(spans, tree.cpu)}", flush=True
            )

        if hostile is not None:
            hostile_result = hostile.verify(summary, started, ended)

        t0 = time.perf_counter()
        again, _ = run_flow(args.task_runner)
        rerun = time.perf_counter() - t0
        print(f"unchanged rerun: {rerun:.1f} s, totals {again['totals']}", flush=True)

        floor = float("nan")
        if not args.no_floor:
            floor_url = fresh_url("floor")
            floor, floor_rows = io_floor(files, work / "floor", floor_url)
            print(
                f"I/O floor (read + type + Parquet + SQL, no rules, no Prefect): {floor:.1f} s "
                f"for {floor_rows:,} rows; ratio {wall / floor:.2f}",
                flush=True,
            )
    finally:
        if hostile is not None:
            hostile.close()
        if created_db:
            import sqlalchemy as sa

            from warehouse.store import Warehouse  # noqa: F401  (engines closed by the flow's end)

            eng = sa.create_engine(
                PG_SERVER.replace("postgresql://", "postgresql+psycopg://") + "/postgres",
                isolation_level="AUTOCOMMIT",
            )
            with eng.connect() as conn:
                for db in created_db:
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            eng.dispose()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    result = {
        "rows": rows,
        "files": len(files),
        "wall_s": round(wall, 2),
        "floor_s": round(floor, 2) if floor == floor else None,
        "ratio": round(wall / floor, 2) if floor == floor else None,
        "peak_rss_mb": round(peak),
        "peak_rss_tree_mb": round(tree.peak),
        "rerun_s": round(rerun, 2),
        "speed_python_s": speed["python"],
        "speed_hash_s": speed["hash"],
    }
    if hostile is not None:
        result.update(hostile_result)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
