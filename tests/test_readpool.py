"""Reading county files in worker processes (tasks.readpool): same results as reading in-process,
a file that kills its reader is refused alone, and a pool that cannot start means reading here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gaibao.demo import generate_demo
from tasks.read import read_return
from tasks.readpool import read_many

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every demo return of two months: CSV (UTF-8, BOM, GBK), XLSX, JSON, and the faulty ones."""
    home = tmp_path_factory.mktemp("demo")
    generate_demo(home)
    files = sorted(p for p in (home / "inbox").rglob("*") if p.is_file() and ("2018-11" in p.name or "201811" in p.name
                   or "2018年11月" in p.name or "2018-12" in p.name or "201812" in p.name or "2018年12月" in p.name))
    assert len(files) >= 40
    return files


def _same(a, b) -> None:
    assert a.kind == b.kind
    assert a.refusal == b.refusal
    assert a.file_format == b.file_format and a.encoding == b.encoding and a.sheet_name == b.sheet_name
    assert a.unit_factors == b.unit_factors and a.unknown_columns == b.unknown_columns
    for ga, gb in ((a.grid, b.grid), (a.total_grid, b.total_grid)):
        assert ga.names == gb.names
        assert np.array_equal(ga.numbers, gb.numbers)
        assert ga.values.tolist() == gb.values.tolist()
        assert all(c.type == "string" for c in ga.columns)


def test_pool_reads_exactly_what_inline_reading_reads(demo_files: list[Path]) -> None:
    items = [(p.read_bytes(), p.name, None) for p in demo_files]
    pooled = read_many(items, processes=2)
    inline = [read_return(c, n, k) for c, n, k in items]
    assert len(pooled) == len(inline)
    for a, b in zip(pooled, inline, strict=True):
        _same(a, b)
    formats = {p.file_format for p in pooled}
    assert {"csv", "xlsx", "json"} <= formats
    assert sum(p.n_rows for p in pooled) > 1000


def _run(script: str, env: dict[str, str], tmp_path: Path) -> dict:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, str(path)], env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]) | {"stderr": out.stderr}


SCRIPT = """
import json, sys
from pathlib import Path
from tasks.readpool import read_many

def main():
    files = [Path(p) for p in sys.argv[1:]] or [Path(p) for p in Path({listing!r}).read_text().split()]
    parsed = read_many([(p.read_bytes(), p.name, None) for p in files], processes=2)
    print(json.dumps({{str(p): [r.refusal.code if r.refusal else None,
                               r.refusal.message_zh if r.refusal else None, r.n_rows]
                      for p, r in zip(files, parsed)}}, ensure_ascii=False))

{call}
"""


def test_a_file_that_kills_its_reader_is_refused_and_the_others_are_read(demo_files, tmp_path) -> None:
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(map(str, demo_files)), encoding="utf-8")
    names = [p.name for p in demo_files]
    victim = next(p for p in demo_files if p.suffix == ".csv" and names.count(p.name) == 1)
    script = SCRIPT.format(listing=str(listing), call='if __name__ == "__main__":\n    main()')
    got = _run(script, {"GAIBAO_TEST_READER_CRASH": victim.name}, tmp_path)
    code, message, rows = got[str(victim)]
    assert code == "READ_FAILED"  # a reader crash is the reader's fault: the engineers are paged
    assert "异常退出" in message and "重新报送" in message
    assert rows == 0
    for p in demo_files:
        if p != victim:
            expected = read_return(p.read_bytes(), p.name)
            assert got[str(p)][0] == (expected.refusal.code if expected.refusal else None), p.name
            assert got[str(p)][2] == expected.n_rows, p.name
    assert "killed its reader process twice" in got["stderr"]


def test_a_pool_that_cannot_start_means_reading_in_process(demo_files, tmp_path) -> None:
    """A script without the ``__main__`` guard: its reader processes die while starting up.
    Nothing may be refused for that; the files are read in the calling process."""
    listing = tmp_path / "files.txt"
    listing.write_text("\n".join(map(str, demo_files)), encoding="utf-8")
    script = SCRIPT.format(listing=str(listing), call="main()")
    got = _run(script, {}, tmp_path)
    for p in demo_files:
        expected = read_return(p.read_bytes(), p.name)
        assert got[str(p)][0] == (expected.refusal.code if expected.refusal else None), p.name
        assert got[str(p)][2] == expected.n_rows, p.name
    assert "files are read in-process" in got["stderr"]
