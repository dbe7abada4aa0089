"""Hostile files read in-process: each is refused (or cleaned) alone, with a Chinese reason."""

from __future__ import annotations

import io
import json
import re
import zipfile

from filebuilders import progress_rows, return_bytes

from tasks.read import read_return


def _with_cell(content: bytes, ref: str) -> bytes:
    """An XLSX with one more filled cell at ``ref`` (written into the sheet XML)."""
    book = zipfile.ZipFile(io.BytesIO(content))
    out = io.BytesIO()
    row = re.match(r"[A-Z]+(\d+)", ref).group(1)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as new:
        for info in book.infolist():
            data = book.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                cell = f'<row r="{row}"><c r="{ref}" t="inlineStr"><is><t>x</t></is></c></row>'
                data = data.replace(b"</sheetData>", cell.encode() + b"</sheetData>")
            new.writestr(info.filename, data)
    return out.getvalue()


def test_a_cell_at_xfd1048576_is_refused_before_any_grid_is_built() -> None:
    content = _with_cell(return_bytes(progress_rows(3), "progress", fmt="xlsx"), "XFD1048576")
    parsed = read_return(content, "r.xlsx")
    assert parsed.refusal is not None and parsed.refusal.code == "TOO_LARGE"
    assert "工作表" in parsed.refusal.message_zh and "XFD1048576" in parsed.refusal.message_zh


def test_a_cell_at_a1048576_is_refused() -> None:
    content = _with_cell(return_bytes(progress_rows(3), "progress", fmt="xlsx"), "A1048576")
    parsed = read_return(content, "r.xlsx")
    assert parsed.refusal is not None and parsed.refusal.code == "TOO_LARGE"
    assert "1048576" in parsed.refusal.message_zh


def test_json_nested_100000_deep_is_refused_not_raised() -> None:
    content = ("[" * 100_000 + "]" * 100_000).encode()
    parsed = read_return(content, "r.json")
    assert parsed.refusal is not None and parsed.refusal.code == "TOO_LARGE"
    assert "嵌套" in parsed.refusal.message_zh and "100000" in parsed.refusal.message_zh


def test_a_10_mb_cell_is_refused_in_chinese_naming_the_bound() -> None:
    rows = progress_rows(2)
    rows[1]["note"] = "长" * 10_000_000
    parsed = read_return(return_bytes(rows, "progress"), "r.csv")
    assert parsed.refusal is not None and parsed.refusal.code == "TOO_LARGE"
    assert "32767" in parsed.refusal.message_zh and "10000000" in parsed.refusal.message_zh
    assert not re.search(r"[A-Za-z]{4,}", parsed.refusal.message_zh.replace("Excel", "").replace("WPS", ""))


def test_nul_after_4_kb_is_deleted_from_free_text_and_noted() -> None:
    rows = progress_rows(40)
    rows[30]["reporter"] = "张\x00三\x1b[31m"
    content = return_bytes(rows, "progress")
    assert content.index(b"\x00") > 4096
    parsed = read_return(content, "r.csv")
    assert parsed.refusal is None
    reporters = parsed.grid.column("reporter").to_pylist()
    assert "张三[31m" in reporters and not any("\x00" in (r or "") or "\x1b" in (r or "") for r in reporters)
    assert [(name, count) for _, name, count in parsed.control_chars] == [("reporter", 2)]


def test_a_control_character_in_a_code_column_is_shown_and_never_stored_raw() -> None:
    rows = progress_rows(40)  # past the first 4 KB (a NUL there refuses the file as binary)
    rows[30]["project_id"] = "HY\x00-01"
    parsed = read_return(return_bytes(rows, "progress"), "r.csv")
    ids = parsed.grid.column("project_id").to_pylist()
    assert "HY\\x00-01" in ids and not any("\x00" in i for i in ids)


def test_json_nan_and_infinity_are_read_as_written() -> None:
    rows = progress_rows(2)
    content = return_bytes(rows, "progress", fmt="json").decode("utf-8")
    records = json.loads(content)
    key = next(k for k in records[0] if k.startswith("规划投资"))
    text = content.replace(json.dumps(records[0][key]), "NaN", 1)
    parsed = read_return(text.encode(), "r.json")
    assert "NaN" in parsed.grid.column("planned_invest_wan").to_pylist()
