"""scripts/verify_deployments.sh: a real Prefect server, work pool, deployments, worker and run.

The full run takes one to three minutes (a fresh Prefect server, a worker, one backfill flow
run in its own process); CI runs it. The failure test proves the trap stops what it started.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "verify_deployments.sh"


def _run(env_overrides: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GAIBAO_"))}
    env.update(env_overrides)
    return subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _processes_with_env(marker: str) -> list[int]:
    """Live processes whose environment mentions ``marker`` (our temporary PREFECT_HOME)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_verify_deployments_end_to_end() -> None:
    result = _run({}, timeout=600)
    out = result.stdout
    assert result.returncode == 0, f"exit {result.returncode}\n{out}\n{result.stderr[-4000:]}"
    for step in ("1/7 server healthy", "2/7 work pool gaibao-process", "3/7 three deployments created",
                 "4/7 worker verify-worker polling", "5b/7 demo returns", "5c/7 backfill/backfill triggered",
                 "6/7 backfill run(s) Completed", "7/7 warehouse holds the 2018-12 returns"):  # fmt: skip
        assert f"OK   {step}" in out, f"missing check line {step!r}\n{out}"
    # the deployments as read back from the server
    assert re.search(r"nightly-ingest/nightly: schedule 30 1 \* \* \* Asia/Shanghai, concurrency limit 1 \(ENQUEUE\)", out)
    assert re.search(r"monthly-meeting-pack/monthly-pack: schedule 0 7 6 \* \* Asia/Shanghai, concurrency limit 1", out)
    assert "backfill/backfill: schedule none, concurrency limit 1 (ENQUEUE)" in out
    assert f"work dir {ROOT}" in out
    facts = re.search(r"fact_progress (\d+) rows", out)
    assert facts and int(facts.group(1)) > 0
    assert "all checks passed" in out


def test_verify_deployments_stops_what_it_started_on_failure() -> None:
    """A step that fails (the server cannot answer within 1 s) exits 1 and leaves nothing running."""
    result = _run({"VERIFY_TIMEOUT_S": "1", "KEEP_TMP": "1"}, timeout=120)
    kept = re.search(r"\[verify\] kept (\S+)", result.stderr)
    assert kept, result.stderr
    work = Path(kept.group(1))
    try:
        assert result.returncode == 1, result.stdout + result.stderr
        assert "FAIL 1/7 no answer from" in result.stderr
        assert "stopped everything it started; FAILED" in result.stderr
        assert _processes_with_env(f"PREFECT_HOME={work}/prefect") == []
        assert _processes_with_env(f"GAIBAO_HOME={work}/home") == []
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
