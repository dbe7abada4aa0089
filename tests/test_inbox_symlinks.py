"""A county folder that is a symbolic link is skipped, as linked files are (issue 16, item 6).

An upload that makes ``inbox/<county>`` a link to another folder must not make gaibao read
files outside the inbox; the real nightly run over such an inbox reads nothing through the link.
"""

from __future__ import annotations

from pathlib import Path

from gaibao.settings import Settings, get_settings
from tasks.sources import FolderSource, list_inbox_counties
from tests.filebuilders import progress_rows, write_return

PERIOD = "2018-12"


def _outside_with_a_return(tmp_path: Path, county: str) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    write_return(outside / "进展_2018年12月.csv", progress_rows(3, county_code=county, period=PERIOD))
    return outside


def test_a_linked_county_folder_is_neither_listed_nor_read(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "inbox" / "340322").mkdir(parents=True)
    outside = _outside_with_a_return(tmp_path, "340321")
    (home / "inbox" / "340321").symlink_to(outside, target_is_directory=True)
    settings = Settings(home=home)
    assert list_inbox_counties(settings) == ["340322"]
    assert FolderSource(home / "inbox" / "340321").fetch("340321", PERIOD) == []
    assert len(FolderSource(outside).fetch("340321", PERIOD)) == 1  # the folder itself is readable


def test_a_linked_file_inside_a_real_folder_is_still_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "340321"
    folder.mkdir()
    outside = _outside_with_a_return(tmp_path, "340321")
    (folder / "进展_2018年12月.csv").symlink_to(outside / "进展_2018年12月.csv")
    assert FolderSource(folder).fetch("340321", PERIOD) == []


def test_the_nightly_run_reads_nothing_through_a_linked_county_folder(
    prefect_harness: None, gaibao_home: Path, tmp_path: Path
) -> None:
    from flows.nightly import nightly_ingest
    from warehouse.store import Warehouse

    real = gaibao_home / "inbox" / "340322"
    real.mkdir(parents=True)
    write_return(real / "五河县进展_2018年12月.csv", progress_rows(2, county_code="340322", period=PERIOD))
    outside = _outside_with_a_return(tmp_path, "340321")
    (gaibao_home / "inbox" / "340321").symlink_to(outside, target_is_directory=True)
    get_settings.cache_clear()
    # every county (the inbox's folders) and the linked county by name: neither reads the link
    for counties in (None, ["340321", "340322"]):
        summary = nightly_ingest(period=PERIOD, counties=counties)
        assert summary["unreachable"] == []
    wh = Warehouse.from_settings(get_settings())
    subs = wh.read_table("submission")
    assert sorted(set(subs["county_code"])) == ["340322"]
    assert wh.read_table("fact_progress", where={"county_code": "340321"}).empty
    wh.close()
