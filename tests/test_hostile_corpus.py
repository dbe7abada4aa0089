"""The hostile corpus in one real nightly run (issue 16, item 7), on SQLite and PostgreSQL.

Every case of ``tests/hostile_corpus.py`` sits in its own county's inbox folder beside the valid
returns of five other counties; the real nightly flow (real Prefect engine, reader processes,
a real HTTP server on loopback for the trickling source) runs over the whole inbox, as the
scheduled run does. The run must finish within a time bound, load every valid county whole,
refuse each hostile file with its reason (read back from ``submission`` and ``dq_issue``), write
no NUL or ESC into what it sends people, and stay under a memory bound (this process and its
reader processes, sampled).

``BOUNDS_CASES`` (per-file wall-time and memory bounds, reader and judge failures refused alone)
need branch h-bounds; ``test_hostile_corpus_bounds_cases`` runs each of them once this checkout
has those refusal codes, and says so when it skips. ``GAP_CASES`` are outcomes main does not
give yet (a workbook's second return, NaN also called 未填写): ``test_hostile_corpus_known_gaps``
runs them with GAIBAO_TEST_CORPUS_GAPS=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gaibao.settings import get_settings
from tests.hostile_corpus import (
    BOUNDS_CASES,
    CASES,
    GAP_CASES,
    PeakMemory,
    bounds_available,
    build_corpus,
    crc32_combine,
    format_report,
    no_control_bytes_in_outputs,
    reader_crash_file_name,
    timed,
    verify,
    zip_bomb_xlsx,
)
from tests.servers import FaultyHttpServer

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("prefect")]

PERIOD = "2018-12"
# The reader processes read their failure injection when their forkserver starts (once per
# process, at the first file read): set here, at collection, before any test reads a file. Only a
# file of exactly this name crashes its reader.
os.environ.setdefault("GAIBAO_TEST_READER_CRASH", reader_crash_file_name(PERIOD))
VALID = ["340102", "340103", "340104", "340111", "340121"]
# The run's bounds. Time: what the run takes here (about 25 s on an idle 2-core machine, of which
# 6 s are the trickling source's two 3 s attempts) with room for a machine shared by several
# people; a file that hung (headers at a byte a second: over an hour) or that read its 3.75 GiB
# bomb would pass it. Memory: this process (pytest, Prefect, GX, pandas: about 600 MB) and its
# reader processes; reading the zip bomb or the A1048576 sheet cost 4.6 GB and 1 GB before.
RUN_SECONDS = float(os.environ.get("GAIBAO_TEST_CORPUS_SECONDS", "240"))
PEAK_MB = float(os.environ.get("GAIBAO_TEST_CORPUS_PEAK_MB", "1800"))


def _case_counties(n: int) -> list[str]:
    from gaibao.divisions import bundled_divisions

    codes = [c for c in bundled_divisions()["county_code"] if c not in VALID]
    assert len(codes) >= n
    return codes[:n]


def _run_corpus(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cases: list, valid: list[str] = VALID
) -> None:
    from flows.nightly import nightly_ingest
    from warehouse.store import Warehouse

    with FaultyHttpServer(trickle_s=1.0) as http:
        corpus = build_corpus(
            home, PERIOD, _case_counties(len(cases)), valid=valid, outside=tmp_path / "outside",
            http=http, cases=cases,
        )  # fmt: skip
        for key, value in corpus.env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()
        with PeakMemory() as memory, timed() as clock:
            summary = nightly_ingest(period=PERIOD)  # every county: the inbox's folders, the sources
    wh = Warehouse.from_settings(get_settings())
    try:
        report, problems = verify(corpus, wh, summary, clock["started"], clock["ended"])
    finally:
        wh.close()
    print(format_report(report))
    print(f"run {clock['seconds']:.1f} s, peak {memory.peak_mb:,.0f} MB ({memory.samples} samples)")
    assert not problems, "\n".join(problems)
    assert len(report) == len(corpus.expected) + corpus.valid_files()
    assert no_control_bytes_in_outputs(home) == []
    assert clock["seconds"] < RUN_SECONDS, clock["seconds"]
    assert memory.samples >= 3 and memory.peak_mb < PEAK_MB, memory.peak_mb


def test_the_hostile_corpus_refuses_each_file_alone(
    prefect_harness: None,
    gaibao_home: Path,
    warehouse_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _run_corpus(gaibao_home, tmp_path, monkeypatch, CASES)


# The files that once killed or failed the whole run, in a run of fewer than 8 new files: on main
# such a run reads its files in its own process (tasks.readpool.MIN_FILES_FOR_POOL), where the
# XFD1048576 sheet aborted it. The bounds hold there too.
IN_PROCESS = [
    "xlsx_cell_at_XFD1048576",
    "zip_bomb",
    "json_nested_100000",
    "cell_10mb",
    "nul_after_4kb_in_reporter",
]


def test_the_worst_files_in_a_small_run_read_in_its_own_process(
    prefect_harness: None, gaibao_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [c for c in CASES if c.name in IN_PROCESS]
    assert len(cases) == len(IN_PROCESS) and len(cases) + 2 < 8
    _run_corpus(gaibao_home, tmp_path, monkeypatch, cases, valid=VALID[:1])


@pytest.mark.skipif(
    not bounds_available(),
    reason="BOUNDS_CASES need branch h-bounds (READ_TIMEOUT, READ_MEMORY, READ_FAILED, JUDGE_FAILED)",
)
@pytest.mark.parametrize("case", BOUNDS_CASES, ids=[c.name for c in BOUNDS_CASES])
def test_hostile_corpus_bounds_cases(
    prefect_harness: None,
    gaibao_home: Path,
    warehouse_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case,
) -> None:
    """Each in a run of its own beside two valid counties: each lowers its own bound (a wall-time
    bound of 1 s and a memory bound of 200 MB cannot both hold for the other case's file)."""
    _run_corpus(gaibao_home, tmp_path, monkeypatch, [case], valid=VALID[:2])


@pytest.mark.skipif(not GAP_CASES, reason="GAP_CASES is empty: every known gap is a case now")
@pytest.mark.skipif(
    os.environ.get("GAIBAO_TEST_CORPUS_GAPS") != "1",
    reason="GAP_CASES: outcomes main does not give yet (docs/hostile-corpus.md); GAIBAO_TEST_CORPUS_GAPS=1 runs them",
)
def test_hostile_corpus_known_gaps(
    prefect_harness: None,
    gaibao_home: Path,
    warehouse_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _run_corpus(gaibao_home, tmp_path, monkeypatch, GAP_CASES)


# --------------------------------------------------------------------------------------------
# The generator's own pieces


def test_crc32_combine_matches_zlib() -> None:
    import zlib

    a, b = b"<worksheet>" * 7, b" " * 12_345 + b"</worksheet>"
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b""), 0) == zlib.crc32(a)


def test_the_zip_bomb_is_a_valid_xlsx_that_inflates_as_declared() -> None:
    """A small bomb (8 MiB of padding): Python's zipfile reads it, CRC and all."""
    import io
    import zipfile

    from tests.filebuilders import progress_rows, return_bytes

    content = return_bytes(progress_rows(2), fmt="xlsx")
    bomb = zip_bomb_xlsx(content, inflated_mib=8)
    book = zipfile.ZipFile(io.BytesIO(bomb))
    assert book.testzip() is None  # every CRC checks
    sheet = book.read("xl/worksheets/sheet1.xml")
    assert len(sheet) > 8 * 2**20 and sheet.rstrip().endswith(b"</worksheet>")
    assert len(bomb) < len(content) + 16 * 1024  # about 1 KB per inflated MiB
    lying = zipfile.ZipFile(io.BytesIO(zip_bomb_xlsx(content, inflated_mib=8, lie=True)))
    info = lying.getinfo("xl/worksheets/sheet1.xml")
    assert info.file_size < 2**20  # declares the size of the sheet without its padding
