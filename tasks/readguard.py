"""Bounds on reading one county file: whatever a file holds, it can only hurt itself.

A county file is untrusted bytes. Before ``tasks.read`` builds anything from it, the checks here
make sure that reading it cannot take the whole night down: not its size, not an XLSX whose
members inflate to gigabytes (a zip bomb) or whose used range reaches XFD1048576 (calamine would
allocate the dense range: 512 GiB), not a JSON nested 100,000 deep, not a cell of ten megabytes.
Past a bound the file is refused (``OverLimit``, refusal code ``TOO_LARGE``) with a Chinese
reason that names the bound and the file's value; these checks hold in the run's own process as
well as in the reader processes (``tasks.readpool`` adds a wall-time and a memory bound there).

The checks cost next to nothing on ordinary files: a length, a few C-level scans of the sheet
XML, one inflate of the XLSX members (which calamine does again, but bounded now).

Also here: the characters no county text may carry into the warehouse (``CONTROL_CHARS``: C0
except tab, line feed and carriage return, DEL, C1). See docs/ARCHITECTURE.md, "Control
characters".
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from io import BytesIO
from itertools import accumulate
from typing import Any

# C0 controls except \t \n \r, DEL, C1 (NUL and ESC among them): RE2 and Python syntax.
CONTROL_RE2 = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
CONTROL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class Unreadable(Exception):
    """The bytes cannot be decoded or parsed; carries a short Chinese reason."""


class OverLimit(Exception):
    """A file past one of the reading bounds; ``message_zh`` names the bound and the value."""

    def __init__(self, message_zh: str, bound: str) -> None:
        super().__init__(message_zh)
        self.message_zh = message_zh
        self.bound = bound  # the setting, e.g. read_max_rows


@dataclass(frozen=True)
class ReadLimits:
    """The bounds one file is read under (settings ``GAIBAO_READ_MAX_*``; README, Settings)."""

    max_file_bytes: int = 64 * 1024 * 1024
    max_unzipped_bytes: int = 256 * 1024 * 1024
    max_rows: int = 100_000
    max_columns: int = 256
    max_cells: int = 5_000_000
    max_cell_chars: int = 32_767
    max_json_depth: int = 32
    max_seconds: float = 60.0
    max_memory_mb: int = 2048

    @classmethod
    def from_settings(cls, settings: Any = None) -> ReadLimits:
        if settings is None:
            from gaibao.settings import get_settings

            settings = get_settings()
        return cls(
            max_file_bytes=settings.read_max_file_bytes,
            max_unzipped_bytes=settings.read_max_unzipped_bytes,
            max_rows=settings.read_max_rows,
            max_columns=settings.read_max_columns,
            max_cells=settings.read_max_cells,
            max_cell_chars=settings.read_max_cell_chars,
            max_json_depth=settings.read_max_json_depth,
            max_seconds=settings.read_max_seconds,
            max_memory_mb=settings.read_max_memory_mb,
        )


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n} 字节"


def check_file_size(content: bytes, limits: ReadLimits) -> None:
    if len(content) > limits.max_file_bytes:
        raise OverLimit(
            f"文件大小超过上限：最大 {_mb(limits.max_file_bytes)}，本文件 {_mb(len(content))}",
            "read_max_file_bytes",
        )


def check_rows(n_rows: int, limits: ReadLimits, unit: str = "行") -> None:
    if n_rows > limits.max_rows:
        what = "行数" if unit == "行" else "记录数"
        raise OverLimit(
            f"{what}超过上限：最多 {limits.max_rows} {unit}，本文件有 {n_rows} {unit}", "read_max_rows"
        )


def check_columns(n_columns: int, limits: ReadLimits) -> None:
    if n_columns > limits.max_columns:
        raise OverLimit(
            f"列数超过上限：最多 {limits.max_columns} 列，本文件有一行有 {n_columns} 列", "read_max_columns"
        )


def cell_too_long(row: int | None, label: str | None, length: int, limits: ReadLimits) -> OverLimit:
    where = f"第 {row} 行" + (f"“{label}”列" if label else "") if row is not None else "文件中"
    return OverLimit(
        f"单元格内容超过上限：每格最多 {limits.max_cell_chars} 个字符，{where}的一格有 {length} 个字符",
        "read_max_cell_chars",
    )


# --------------------------------------------------------------------------------------------
# XLSX: the zip and the sheets' used range, before calamine sees the bytes

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # signature .. extra field length (30 bytes)
_INFLATE_STEP = 1 << 20
# Cell references (r="XFD1048576") and row numbers (r="1048576"), whatever the element's prefix.
_ROW_REF = re.compile(rb'\sr="([0-9]+)"')
_CELL_REF = re.compile(rb'\sr="([A-Z]+)([0-9]+)"')
# A cell element without an r attribute: its place follows the previous cell's (rare; slow path).
_CELL_OPEN = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?c[\s>/]")


def _column_number(letters: bytes) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + (ch - 64)
    return n


def _column_letters(n: int) -> str:
    out = ""
    while n > 0:
        n, rem = divmod(n - 1, 26)
        out = chr(65 + rem) + out
    return out


def check_workbook_zip(content: bytes, limits: ReadLimits) -> dict[str, bytes]:
    """Check an XLSX's members before they are inflated for real; returns the sheets' XML.

    Refused (``OverLimit``): members whose declared sizes add up past ``max_unzipped_bytes``, or
    that inflate past it. Unreadable: not a zip, or a member that inflates to more than it
    declares (calamine would trust the stream, not the header). Every member is inflated here,
    in steps of 1 MiB, counting, so that a lie costs at most one step past the declared size."""
    try:
        book = zipfile.ZipFile(BytesIO(content))
        infos = book.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise Unreadable("Excel 文件已损坏或加密，无法打开") from exc
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_unzipped_bytes:
        raise OverLimit(
            f"Excel 文件解压后大小超过上限：最大 {_mb(limits.max_unzipped_bytes)}，本文件解压后 {_mb(declared)}",
            "read_max_unzipped_bytes",
        )
    sheets: dict[str, bytes] = {}
    inflated = 0
    for info in infos:
        keep = info.filename.startswith("xl/worksheets/") and info.filename.endswith(".xml")
        data = _inflate(content, info, keep)
        inflated += data[0]
        if inflated > limits.max_unzipped_bytes:
            raise OverLimit(
                f"Excel 文件解压后大小超过上限：最大 {_mb(limits.max_unzipped_bytes)}，本文件解压后超过此值",
                "read_max_unzipped_bytes",
            )
        if keep:
            sheets[info.filename] = data[1]
    return sheets


def _inflate(content: bytes, info: zipfile.ZipInfo, keep: bool) -> tuple[int, bytes]:
    """(bytes the member really inflates to, its bytes when ``keep``), never past its declared size."""
    start = info.header_offset
    header = content[start : start + _LOCAL_HEADER.size]
    if len(header) < _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise Unreadable("Excel 文件已损坏（压缩包结构有误）")
    fields = _LOCAL_HEADER.unpack(header)
    begin = start + _LOCAL_HEADER.size + fields[9] + fields[10]
    raw = content[begin : begin + info.compress_size]
    bad_size = Unreadable(
        f"Excel 文件已损坏：压缩包中的“{info.filename}”解压后的大小与其声明的 {info.file_size} 字节不符"
    )
    if info.compress_type == zipfile.ZIP_STORED:
        if len(raw) != info.file_size:
            raise bad_size
        return len(raw), raw if keep else b""
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise Unreadable(f"Excel 文件使用了不支持的压缩方式（“{info.filename}”）")
    inflater = zlib.decompressobj(-15)
    parts: list[bytes] = []
    total = 0
    try:
        pending = raw
        while pending:
            chunk = inflater.decompress(pending, _INFLATE_STEP)
            total += len(chunk)
            if total > info.file_size:
                raise bad_size
            if keep:
                parts.append(chunk)
            pending = inflater.unconsumed_tail
            if inflater.eof or not chunk and not pending:
                break
        tail = inflater.flush()
        total += len(tail)
        if keep:
            parts.append(tail)
    except zlib.error as exc:
        raise Unreadable(f"Excel 文件已损坏：压缩包中的“{info.filename}”无法解压") from exc
    if total != info.file_size:
        raise bad_size
    return total, b"".join(parts)


def sheet_extent(xml: bytes) -> tuple[int, int]:
    """The last row and column (1-based, from A1) any cell of a worksheet's XML may occupy.

    Every ``r`` attribute counts, filled cells or not: an upper bound of the range calamine
    builds. Cells written without ``r`` (rare) take the place after the previous one, so they
    are counted row by row. Costs a few milliseconds on a sheet of 350 rows: ``check_sheet``
    calls it only when its quicker scans cannot rule a file in."""
    refs = _CELL_REF.findall(xml)
    max_col = max((_column_number(c) for c in {c for c, _ in refs}), default=0)
    max_row = max((int(r) for _, r in refs), default=0)
    rows = _ROW_REF.findall(xml)
    if rows:
        max_row = max(max_row, max(map(int, rows)))
    if len(_CELL_OPEN.findall(xml)) > len(refs):
        row_chunks = re.split(rb"<(?:[A-Za-z_][\w.-]*:)?row[\s>]", xml)[1:]
        max_row += len(row_chunks)
        max_col += max((len(_CELL_OPEN.findall(chunk)) for chunk in row_chunks), default=0)
    return max_row, max_col


_SLOW_MARKS = (b'\nr="', b'\tr="', b'\rr="', b"<c>", b"<c/>", b":sheetData")


def _quick_bounds(xml: bytes, limits: ReadLimits) -> bool:
    """True when a sheet is certainly within the bounds, from a few scans of its XML.

    Every cell and row written with a ` r="..."` reference (what Excel, WPS and LibreOffice
    write), none with two column letters (AA and beyond) or as many row digits as ``max_rows``:
    the range is then at most column Z and the largest number of one digit fewer."""
    digits = len(str(limits.max_rows))
    max_row = 10 ** (digits - 1) - 1
    if limits.max_columns < 26 or max_row * 26 > limits.max_cells:
        return False
    refs = xml.count(b' r="')
    if any(mark in xml for mark in _SLOW_MARKS) or xml.count(b"<c ") > refs:
        # a reference after other whitespace, cells without a reference, a prefixed document
        # (<x:c …>): counted the slow way
        return False
    return re.search(rb' r="(?:[A-Z]{2}|[A-Z]*[0-9]{%d})' % digits, xml) is None


def check_sheet(sheet_name: str, xml: bytes, limits: ReadLimits) -> None:
    """Refuse a worksheet whose range (from A1) is past the bounds, before calamine builds it."""
    if not _quick_bounds(xml, limits):
        check_extent(sheet_name, *sheet_extent(xml), limits)


def check_workbook(content: bytes, limits: ReadLimits) -> None:
    """An XLSX's zip (``check_workbook_zip``) and every worksheet's range (``check_sheet``)."""
    for path, xml in check_workbook_zip(content, limits).items():
        if not _quick_bounds(xml, limits):
            check_extent(_sheet_name(content, path), *sheet_extent(xml), limits)


def _sheet_name(content: bytes, path: str) -> str:
    """The name a clerk sees for a worksheet part (``xl/worksheets/sheet2.xml`` -> ``进展``)."""
    try:
        book = zipfile.ZipFile(BytesIO(content))
        rels = book.read("xl/_rels/workbook.xml.rels").decode("utf-8", "replace")
        workbook = book.read("xl/workbook.xml").decode("utf-8", "replace")
    except (KeyError, zipfile.BadZipFile, OSError):
        return path
    target = path.removeprefix("xl/")
    for rel in re.finditer(r"<Relationship\b[^>]*>", rels):
        tag = rel.group(0)
        found_target = re.search(r'Target="/?(?:xl/)?([^"]+)"', tag)
        found_id = re.search(r'Id="([^"]+)"', tag)
        if found_target and found_id and found_target.group(1) == target:
            for sheet in re.finditer(r"<(?:\w+:)?sheet\b[^>]*>", workbook):
                if f'"{found_id.group(1)}"' in sheet.group(0):
                    name = re.search(r'name="([^"]*)"', sheet.group(0))
                    if name:
                        from html import unescape

                        return unescape(name.group(1))
    return path


def check_extent(sheet_name: str, max_row: int, max_col: int, limits: ReadLimits) -> None:
    if max_row <= limits.max_rows and max_col <= limits.max_columns and max_row * max_col <= limits.max_cells:
        return
    corner = f"{_column_letters(max_col)}{max_row}" if max_col else f"第 {max_row} 行"
    raise OverLimit(
        f"工作表“{sheet_name}”范围超过上限：最多 {limits.max_rows} 行、{limits.max_columns} 列"
        f"（共 {limits.max_cells} 格），本表用到第 {max_row} 行、第 {max_col} 列（{corner}）。"
        "请删除表格之外的内容（在 Excel 中按 Ctrl+End 可看到最后一格）",
        "read_max_rows",
    )


# --------------------------------------------------------------------------------------------
# JSON


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text (strings skipped); no recursion."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)
    steps = (1 if ch in "[{" else -1 for ch in bare if ch in "[]{}")
    return max(accumulate(steps, initial=0))


def value_depth(value: Any, limit: int) -> int:
    """Nesting of a parsed JSON value (a scalar is 0, ``[]`` 1), counted no further than ``limit + 1``."""
    depth = 0
    level = [value] if isinstance(value, (dict, list)) else []
    while level and depth <= limit:
        depth += 1
        nxt: list[Any] = []
        for v in level:
            children = v.values() if isinstance(v, dict) else v
            nxt.extend(c for c in children if isinstance(c, (dict, list)))
        level = nxt
    return depth


def json_too_deep(depth: int | str, limits: ReadLimits) -> OverLimit:
    return OverLimit(
        f"JSON 嵌套层数超过上限：最多 {limits.max_json_depth} 层，本文件嵌套 {depth} 层",
        "read_max_json_depth",
    )


# --------------------------------------------------------------------------------------------
# Control characters


def escape_controls(text: str) -> str:
    """Control characters made visible as ``\\xHH`` (so that a clerk can find them)."""
    return CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
