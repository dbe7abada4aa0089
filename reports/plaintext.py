"""The plain-text part of a message, from its HTML: paragraphs as lines, tables as aligned columns.

A mail client that shows the text part (or a clerk who forwards it) must read a table as a table.
Column widths are terminal cells, not characters: a Chinese character takes two
(``rich.cells``, which follows the Unicode East Asian Width tables). Numbers are right-aligned
(the HTML marks them ``text-align:right``), text left-aligned; a cell wider than
``MAX_CELL`` wraps onto continuation lines within its column, so one long refusal reason or
message does not push every row off the screen.
"""

from __future__ import annotations

import html as html_lib
import re

from rich.cells import cell_len, get_character_cell_size

MAX_CELL = 36  # cells of one column's text before it wraps (the last column: MAX_LAST_CELL)
MAX_LAST_CELL = 60
GAP = "  "

_DROP = re.compile(r"(?is)<(script|style|head)\b.*?</\1>")
_TABLE = re.compile(r"(?is)<table\b[^>]*>(.*?)</table>")
_ROW = re.compile(r"(?is)<tr\b[^>]*>(.*?)</tr>")
_CELL = re.compile(r"(?is)<t([hd])\b([^>]*)>(.*?)</t[hd]>")
_TAG = re.compile(r"<[^>]+>")
_BREAK = re.compile(r"(?i)<br\s*/?>|</p>|</h[1-6]>|</li>|</div>|</ul>")
_SPACE = re.compile(r"[ \t\r\f\v]+")
_TABLE_MARK = "\x00table{}\x00"
_MARK = re.compile("\x00table(\\d+)\x00")


def _inline(fragment: str) -> str:
    """A cell's text on one line."""
    return " ".join(html_lib.unescape(_TAG.sub(" ", fragment)).split())


def _wrap(text: str, width: int) -> list[str]:
    """``text`` cut into lines of at most ``width`` cells (a character never split)."""
    if cell_len(text) <= width:
        return [text]
    lines, line, used = [], [], 0
    for ch in text:
        size = get_character_cell_size(ch)
        if used + size > width and line:
            lines.append("".join(line).rstrip())
            line, used = [], 0
            if ch == " ":
                continue
        line.append(ch)
        used += size
    if line:
        lines.append("".join(line).rstrip())
    return lines


def _pad(text: str, width: int, right: bool) -> str:
    space = " " * (width - cell_len(text))
    return space + text if right else text + space


def text_table(
    rows: list[list[tuple[str, bool]]],
    header_rows: int = 0,
    max_cell: int = MAX_CELL,
    max_last_cell: int = MAX_LAST_CELL,
) -> str:
    """Rows of (text, is_number) cells as aligned lines; a rule under the first ``header_rows``.
    A cell wider than ``max_cell`` (the last column: ``max_last_cell``) wraps."""
    if not rows:
        return ""
    n = max(len(r) for r in rows)
    rows = [r + [("", False)] * (n - len(r)) for r in rows]
    limits = [max_cell] * (n - 1) + [max_last_cell]
    wrapped = [[(_wrap(t, limits[j]), right) for j, (t, right) in enumerate(r)] for r in rows]
    widths = [max(cell_len(line) for r in wrapped for line in r[j][0]) for j in range(n)]
    out: list[str] = []
    for i, row in enumerate(wrapped):
        height = max(len(lines) for lines, _ in row)
        for k in range(height):
            cells = []
            for j, (lines, right) in enumerate(row):
                text = lines[k] if k < len(lines) else ""
                last = j == n - 1
                cells.append(text if last and not right else _pad(text, widths[j], right and k == 0))
            out.append(GAP.join(cells).rstrip())
        if i == header_rows - 1:
            out.append(GAP.join("-" * w for w in widths))
    return "\n".join(out)


def _table_text(inner: str) -> str:
    rows: list[list[tuple[str, bool]]] = []
    header_rows = 0
    for tr in _ROW.findall(inner):
        cells = _CELL.findall(tr)
        if not cells:
            continue
        if all(kind.lower() == "h" for kind, _, _ in cells) and header_rows == len(rows):
            header_rows += 1
        rows.append(
            [(_inline(body), "text-align:right" in attrs.replace(" ", "")) for _, attrs, body in cells]
        )
    return text_table(rows, header_rows)


def plain_text(html: str) -> str:
    """The text part of a message whose HTML is ``html``."""
    text = _DROP.sub("", html)
    tables: list[str] = []

    def keep(match: re.Match[str]) -> str:
        tables.append(_table_text(match.group(1)))
        return "\n" + _TABLE_MARK.format(len(tables) - 1) + "\n"

    text = _TABLE.sub(keep, text)
    text = _BREAK.sub("\n", text)
    text = html_lib.unescape(_TAG.sub("", text))
    lines = [_SPACE.sub(" ", line).strip() for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    # the tables go back last: their alignment is made of runs of spaces
    return _MARK.sub(lambda m: tables[int(m.group(1))], text)
