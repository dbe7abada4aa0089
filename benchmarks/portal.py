"""Benchmark: the portal's pages on a national month's warehouse (2,850 counties, ≈1,000,000 projects).

    python benchmarks/portal.py [--home DIR] [--users 20] [--requests 400] [--duration 60]
                                [--data DIR] [--scale S] [--workers N]

1. Unless ``--home`` already holds one (``portal-ready`` marker), builds the national warehouse
   the way ``benchmarks/national.py`` does: the generated month (``benchmarks/gen_national.py``,
   cached under ``benchmarks/out/national-<scale>/``), a fresh SQLite + Parquet home with its
   divisions and plan, the real nightly flow over the month, then the month's pack (so the
   wall chart has its ranking and exception lists), and the portal's demo-style accounts.
2. Starts the real portal (``gaibao serve``: uvicorn, ``--workers`` processes) on a free loopback
   port, logs in one session per simulated user (a province member and a city officer), warms
   each page once, then runs ``--users`` concurrent users, each requesting the wall chart and a
   county page in turn, until ``--requests`` requests are done or ``--duration`` seconds pass
   (a bounded loop: it stops by itself), and stops the server.
3. Prints per page p50 / p95 / max latency (ms) and the status codes; the last line is one JSON
   object. Goal: p95 ≤ 300 ms for the wall chart and a county page.

Loopback only: the server listens on 127.0.0.1 and every request goes there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PERIOD = "2018-12"
PASSWORD = "bench-portal-password"


def prepare(home: Path, data: Path | None, scale: float, ingest_only: bool = False) -> None:
    """The national warehouse in ``home`` (ingested by the nightly flow), its pack and accounts."""
    from benchmarks.national import _quiet_env, _settings_env, national_data, prepare_home, run_flow

    _quiet_env()
    url = f"sqlite:///{home / 'warehouse.db'}"
    if not (home / "ingested").is_file():
        data = national_data(scale, data)
        prepare_home(home, url, data)
        _settings_env(home, url)
        t0 = time.perf_counter()
        summary, _ = run_flow("default")
        print(f"ingest: {time.perf_counter() - t0:.1f} s, totals {summary['totals']}", flush=True)
        from gaibao.settings import get_settings
        from reports.service import make_pack

        t0 = time.perf_counter()
        make_pack(PERIOD, get_settings(), letters=False)
        print(f"pack: {time.perf_counter() - t0:.1f} s", flush=True)
        (home / "ingested").write_text("", encoding="utf-8")
    if ingest_only:
        return
    _settings_env(home, url)
    from gaibao.settings import get_settings

    settings = get_settings()
    from portal.accounts import add_user
    from portal.service import open_portal_warehouse

    wh = open_portal_warehouse(settings)
    try:
        import sqlalchemy as sa

        with wh.engine.connect() as conn:
            city, county = conn.execute(
                sa.text("SELECT city_code, county_code FROM ref_division ORDER BY county_code LIMIT 1")
            ).one()
            # the county pages requested: spread over the country (most requests miss the page cache)
            counties = [
                r[0]
                for r in conn.execute(
                    sa.text(
                        "SELECT county_code FROM mart_county_progress WHERE period = :p AND has_return = :t"
                        " ORDER BY county_code"
                    ),
                    {"p": PERIOD, "t": True},
                )
            ][::7][:300]
        add_user(wh.engine, "bench_prov", "province", display_name="基准省级", password=PASSWORD)
        add_user(wh.engine, "bench_city", "city", city_code=city, display_name="基准市级", password=PASSWORD)
        add_user(
            wh.engine, "bench_clerk", "clerk", county_code=county, display_name="基准县区", password=PASSWORD
        )
    finally:
        wh.close()
    (home / "portal-ready").write_text(
        json.dumps({"city": city, "county": county, "counties": counties}), encoding="utf-8"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _login(base: str, username: str):
    import httpx

    client = httpx.Client(base_url=base, timeout=180.0)
    html = client.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
    r = client.post("/login", data={"username": username, "password": PASSWORD, "csrf": token})
    if r.status_code not in (200, 303) or "gaibao_session" not in client.cookies:
        raise RuntimeError(f"login {username}: {r.status_code}")
    return client


def measure(home: Path, users: int, requests: int, duration: float, workers: int) -> dict:
    ready = json.loads((home / "portal-ready").read_text(encoding="utf-8"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "GAIBAO_HOME": str(home),
        "GAIBAO_WAREHOUSE_URL": f"sqlite:///{home / 'warehouse.db'}",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    gaibao = Path(sys.executable).with_name("gaibao")
    server = subprocess.Popen(
        [str(gaibao), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        import httpx

        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"portal did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.3)
        pages = {
            "wallchart (province)": ("bench_prov", f"/wallchart?period={PERIOD}"),
            "wallchart (city)": ("bench_city", f"/wallchart?period={PERIOD}"),
            "county page": ("bench_prov", f"/county/{ready['county']}?period={PERIOD}"),
        }
        county_paths = [f"/county/{c}?period={PERIOD}" for c in ready["counties"]] or [
            pages["county page"][1]
        ]
        county_turn = iter(range(10**9))
        clients = [{u: _login(base, u) for u in ("bench_prov", "bench_city")} for _ in range(users)]
        warm = {}
        for name, (user, path) in pages.items():
            t0 = time.perf_counter()
            r = clients[0][user].get(path)
            warm[name] = round((time.perf_counter() - t0) * 1000, 1)
            if r.status_code != 200:
                raise RuntimeError(f"{name}: {r.status_code}")
            warm[name + " bytes"] = len(r.content)
        names = list(pages)
        lat: dict[str, list[float]] = {n: [] for n in names}
        codes: dict[str, dict[int, int]] = {n: {} for n in names}
        lock = threading.Lock()
        counter = iter(range(requests))
        stop_at = time.monotonic() + duration

        def user_loop(i: int) -> None:
            k = i
            while time.monotonic() < stop_at:
                with lock:
                    if next(counter, None) is None:
                        return
                name = names[k % len(names)]
                k += 1
                user, path = pages[name]
                if name == "county page":  # a different county each time: mostly not cached yet
                    with lock:
                        path = county_paths[next(county_turn) % len(county_paths)]
                t0 = time.perf_counter()
                r = clients[i][user].get(path)
                ms = (time.perf_counter() - t0) * 1000
                with lock:
                    lat[name].append(ms)
                    codes[name][r.status_code] = codes[name].get(r.status_code, 0) + 1

        threads = [threading.Thread(target=user_loop, args=(i,)) for i in range(users)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        for c in clients:
            for client in c.values():
                client.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    out: dict = {"users": users, "workers": workers, "wall_s": round(wall, 1), "first_request_ms": warm}
    done = 0
    for name in names:
        xs = sorted(lat[name])
        done += len(xs)
        if not xs:
            continue
        p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
        out[name] = {
            "n": len(xs),
            "p50_ms": round(statistics.median(xs), 1),
            "p95_ms": round(p95, 1),
            "max_ms": round(xs[-1], 1),
            "status": codes[name],
        }
        print(
            f"{name:22s} n={len(xs):4d}  p50 {out[name]['p50_ms']:7.1f} ms  p95 {p95:7.1f} ms  "
            f"max {xs[-1]:7.1f} ms  status {codes[name]}",
            flush=True,
        )
    out["requests"] = done
    out["requests_per_s"] = round(done / wall, 1) if wall else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=ROOT / "benchmarks" / "out" / "portal-home")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--requests", type=int, default=600, help="stop after this many requests")
    parser.add_argument("--duration", type=float, default=60.0, help="stop after this many seconds")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument(
        "--ingest-only", action="store_true", help="build the warehouse and pack, no accounts"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (args.home / "portal-ready").is_file():
        prepare(args.home, args.data, args.scale, ingest_only=args.ingest_only)
    if args.prepare_only or args.ingest_only:
        return 0
    result = measure(args.home, args.users, args.requests, args.duration, args.workers)
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
