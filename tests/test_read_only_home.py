"""A read-only home can still be read (issue 16, item 6).

A warehouse built by a real nightly run, then ``chmod -R a-w`` on the whole home: ``gaibao
status`` (a real subprocess) shows the register and writes nothing; ``gaibao ingest`` is refused
in one line with exit 4 instead of failing deep in a flow run. As root the command runs without
the capabilities that let root ignore file modes, so the modes hold as for any user.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gaibao.settings import get_settings
from tests.filebuilders import progress_rows, write_return

ROOT = Path(__file__).resolve().parents[1]
PERIOD = "2018-12"
CAPS = "-dac_override,-dac_read_search,-fowner"


def _as_user(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot be made to hold")
    return ["setpriv", "--bounding-set", CAPS, "--inh-caps", CAPS, "--", *args]


def _chmod_tree(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_status_reads_a_read_only_home(prefect_harness: None, gaibao_home: Path) -> None:
    from flows.nightly import nightly_ingest

    folder = gaibao_home / "inbox" / "340321"
    folder.mkdir(parents=True)
    write_return(folder / "怀远县进展_2018年12月.csv", progress_rows(3, county_code="340321", period=PERIOD))
    get_settings.cache_clear()
    assert nightly_ingest(period=PERIOD, counties=["340321"])["totals"]["accepted"] == 1

    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIBAO_")}
    env.update({"GAIBAO_HOME": str(gaibao_home), "PYTHONPATH": str(ROOT)})
    cli = [sys.executable, "-m", "gaibao.cli"]
    before = _snapshot(gaibao_home)
    _chmod_tree(gaibao_home, writable=False)
    try:
        status = subprocess.run(
            _as_user([*cli, "status", "--period", PERIOD]),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        ingest = subprocess.run(
            _as_user([*cli, "ingest", "--period", PERIOD]),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        _chmod_tree(gaibao_home, writable=True)
    assert status.returncode == 0, status.stderr
    assert "340321" in status.stdout and "已接收 1" in status.stdout
    assert "Traceback" not in status.stderr
    assert ingest.returncode == 4, ingest.stderr
    assert "只读" in ingest.stderr and len(ingest.stderr.strip().splitlines()) == 1
    assert _snapshot(gaibao_home) == before  # nothing written, nothing left beside the database
