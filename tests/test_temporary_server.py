"""Prefect's temporary server goes with its process (issue 16, item 6).

A real ``gaibao ingest`` (a subprocess) is held in its fetch by an HTTP source that trickles its
headers, then killed with SIGKILL: Prefect's atexit hook never runs, and before this change its
temporary server (~200 MB) lived on as an orphan. Now it is gone within seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.servers import FaultyHttpServer

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def test_the_temporary_server_goes_when_gaibao_is_killed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with FaultyHttpServer(trickle_s=1.0) as http:
        http.add_route("/api/340321", [[{"project_id": "A"}]])
        http.fail("/api/340321", "trickle_headers", times=None)
        sources = home / "sources.yaml"
        sources.write_text(f'"340321":\n  type: http\n  url: {http.url("/api/340321")}\n', encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GAIBAO_", "PREFECT_"))}
        env.update(
            {
                "GAIBAO_HOME": str(home),
                "GAIBAO_SOURCES": str(sources),
                "GAIBAO_FETCH_TIMEOUT_S": "600",
                "PREFECT_HOME": str(tmp_path / "prefect"),
                "PYTHONPATH": str(ROOT),
            }
        )
        gaibao = subprocess.Popen(
            [sys.executable, "-m", "gaibao.cli", "ingest", "--period", "2018-12", "--county", "340321"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert _wait(lambda: http.hits("/api/340321") > 0, timeout=180), "the run never reached the fetch"
            servers = [p for p in _children(gaibao.pid) if "uvicorn" in _cmdline(p)]
            assert len(servers) == 1, [(_cmdline(p)) for p in _children(gaibao.pid)]
            (server,) = servers
            assert _alive(server)
            gaibao.send_signal(signal.SIGKILL)
            gaibao.wait(timeout=10)
            gone = _wait(lambda: not _alive(server), timeout=20)
        finally:
            if gaibao.poll() is None:
                gaibao.kill()
                gaibao.wait()
        if not gone:  # never leave it behind, even when the test fails
            os.kill(server, signal.SIGKILL)
        assert gone, "Prefect's temporary server outlived the killed gaibao process"
