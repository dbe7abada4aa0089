"""A workbook that carries both returns yields both (issue 12, item 4).

Real XLSX files written with openpyxl (the library WPS/Excel files are most often checked with),
read by the real reader; nightly runs with the real Prefect engine over a real inbox, on SQLite
and on the real PostgreSQL server. A sheet whose name says 进展 is a progress return, one whose
name says 资金 a funding return, in either order; each is judged, accepted or refused on its own,
with its own receipt lines and register row; 封面 and 填报说明 sheets are passed over.
"""

from __future__ import annotations

import email
import hashlib
import io
from email import policy
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gaibao.settings import get_settings
from tests.filebuilders import build_table, funding_rows, progress_rows

PERIOD = "2018-12"
COUNTY = "341222"  # 太和县
FILE = "太和县全面改薄月报2018年12月.xlsx"


def _sheet(book: Any, name: str, kind: str, rows: list[dict[str, Any]], title: str | None = None) -> None:
    ws = book.create_sheet(name)
    header, body = build_table(rows, kind)
    if title:
        ws.append([title])
    ws.append(header)
    for r in body:
        ws.append(r)


def workbook(*sheets: tuple[str, str | None, list[dict[str, Any]] | None]) -> bytes:
    """An XLSX of ``(sheet name, kind, rows)``; kind None: an instructions sheet (the headers and an
    example row, as text), ``blank``: the progress template's header and no row."""
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, kind, rows in sheets:
        if kind is None:
            ws = book.create_sheet(name)
            ws.append([f"{name}：太和县教育局"])
            # an instructions sheet that lists the template's headers and an example, as real ones do
            ws.append(["报告期", "区划代码", "项目编号", "学校名称", "累计投入资金合计（万元）"])
            ws.append(["2018-12", COUNTY, "示例-001", "示例小学", "100"])
        elif kind == "blank":  # an empty copy of the progress template: its header, no row
            book.create_sheet(name).append(
                build_table([], "progress", columns=["period", "county_code", "project_id"])[0]
            )
        else:
            _sheet(book, name, kind, rows or [], title=f"太和县全面改薄{name}（2018年12月）")
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def _progress(n: int = 4, **changes: Any) -> list[dict[str, Any]]:
    rows = progress_rows(n, county_code=COUNTY, period=PERIOD)
    return [{**r, **changes} for r in rows]


def _funding(**changes: Any) -> list[dict[str, Any]]:
    return [{**funding_rows(county_code=COUNTY, period=PERIOD)[0], **changes}]


ORDERS = {
    "funding_first": lambda p, f: workbook(("资金与师资", "funding", f), ("项目进展", "progress", p)),
    "progress_first": lambda p, f: workbook(("项目进展", "progress", p), ("资金与师资", "funding", f)),
}


# --------------------------------------------------------------------------------------------
# The reader


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_both_sheets_are_read_whatever_their_order(order: str) -> None:
    from tasks.read import read_return

    content = ORDERS[order](_progress(4), _funding())
    parsed = read_return(content, FILE)
    returns = parsed.every_return
    assert sorted(r.kind for r in returns) == ["funding", "progress"]
    by_kind = {r.kind: r for r in returns}
    assert by_kind["progress"].sheet_name == "项目进展" and by_kind["funding"].sheet_name == "资金与师资"
    assert list(by_kind["progress"].rows["project_id"]) == [r["project_id"] for r in _progress(4)]
    assert list(by_kind["funding"].rows["funds_total_wan"]) == ["145000"]
    # the clerk's row numbers of each sheet: title row 1, header row 2, data from row 3
    assert list(by_kind["progress"].rows["row_number"]) == [3, 4, 5, 6]
    assert all(r.refusal is None and r.file_format == "xlsx" for r in returns)
    # the first return is the first sheet's; a kind the file's name (or the source) says comes first
    assert parsed.kind == ("funding" if order == "funding_first" else "progress")
    for kind in ("progress", "funding"):
        asked = read_return(content, FILE, kind=kind)
        assert [r.kind for r in asked.every_return] == [kind, "funding" if kind == "progress" else "progress"]


def test_cover_and_instruction_sheets_are_passed_over() -> None:
    from tasks.read import read_return

    content = workbook(
        ("封面", None, None),
        ("填报说明", None, None),
        ("资金", "funding", _funding()),
        ("进展", "progress", _progress(3)),
        ("资金填报样例", None, None),
    )
    returns = read_return(content, FILE).every_return
    assert sorted((r.kind, r.sheet_name) for r in returns) == [("funding", "资金"), ("progress", "进展")]
    assert all(r.refusal is None for r in returns)
    # a workbook of one return keeps reading past its cover and instructions to the data sheet
    one = workbook(("封面", None, None), ("填报说明", None, None), ("Sheet3", "progress", _progress(2)))
    single = read_return(one, FILE)
    assert single.every_return == [single] and single.sheet_name == "Sheet3" and single.refusal is None


def test_one_sheet_refused_does_not_refuse_the_other() -> None:
    from tasks.read import read_return

    bad_funding = [{k: v for k, v in _funding().pop().items() if k != "funds_total_wan"}]
    content = workbook(("资金", "funding", bad_funding), ("进展", "progress", _progress(3)))
    by_kind = {r.kind: r for r in read_return(content, FILE).every_return}
    assert by_kind["progress"].refusal is None and len(by_kind["progress"].rows) == 3
    refusal = by_kind["funding"].refusal
    assert refusal is not None and refusal.code == "MISSING_COLUMN"
    assert (
        refusal.message_zh.startswith("工作表“资金”（全面改薄资金与师资月报）：")
        and "累计投入资金合计" in refusal.message_zh
    )


def test_two_progress_sheets_are_refused_naming_both() -> None:
    from tasks.read import read_return

    content = workbook(
        ("进展（11月）", "progress", _progress(2)),
        ("资金", "funding", _funding()),
        ("进展（12月）", "progress", _progress(3)),
    )
    by_kind = {r.kind: r for r in read_return(content, FILE).every_return}
    refusal = by_kind["progress"].refusal
    assert refusal is not None and refusal.code == "DUPLICATE_SHEET"
    assert "“进展（11月）”、“进展（12月）”" in refusal.message_zh and "只保留一张" in refusal.message_zh
    assert by_kind["funding"].refusal is None  # the funding sheet is judged on its own
    # the same without a funding sheet: the workbook is one return, and the same refusal
    only = read_return(
        workbook(("进展1", "progress", _progress(2)), ("进展2", "progress", _progress(3))), FILE
    )
    assert only.every_return == [only] and only.refusal is not None and only.refusal.code == "DUPLICATE_SHEET"
    # a second 进展 sheet with a header but no row holds no return: no refusal
    empty = read_return(workbook(("进展情况", "blank", None), ("进展", "progress", _progress(2))), FILE)
    assert empty.refusal is None and empty.sheet_name == "进展"


def test_unnamed_sheets_keep_todays_behaviour() -> None:
    """Only sheet names make a workbook two returns: a sheet whose name says neither is read only
    when no named sheet holds a return (as before), never as a second return."""
    from tasks.read import read_return

    named_first = read_return(
        workbook(("资金", "funding", _funding()), ("Sheet2", "progress", _progress(2))), FILE
    )
    assert named_first.every_return == [named_first] and named_first.kind == "funding"
    unnamed = read_return(
        workbook(("Sheet1", "progress", _progress(2)), ("Sheet2", "funding", _funding())), FILE
    )
    assert unnamed.every_return == [unnamed] and unnamed.kind == "progress" and unnamed.sheet_name == "Sheet1"


def test_check_reports_both_sheets(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gaibao.cli import app

    bad_progress = _progress(3)
    bad_progress[1]["planned_invest_wan"] = 0.0  # an E rule on the progress sheet's row 4
    path = tmp_path / FILE
    path.write_bytes(ORDERS["funding_first"](bad_progress, _funding()))
    result = CliRunner().invoke(app, ["check", str(path)])
    assert result.exit_code == 1, result.output
    out = result.output
    assert "含 2 份报表" in out and "工作表“资金与师资”为全面改薄资金与师资月报" in out
    assert "工作表“项目进展”为全面改薄项目进展月报" in out
    assert "第4行" in out and "规划投资" in out
    assert out.count("区划代码 341222，报告期 2018-12") == 2
    good = tmp_path / "good.xlsx"
    good.write_bytes(ORDERS["progress_first"](_progress(3), _funding()))
    ok = CliRunner().invoke(app, ["check", str(good)])
    assert ok.exit_code == 0 and ok.output.count("可以报送") == 2, ok.output


# --------------------------------------------------------------------------------------------
# The nightly run


def _run(home: Path, content: bytes, name: str = FILE) -> dict[str, Any]:
    from flows.nightly import nightly_ingest

    folder = home / "inbox" / COUNTY
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(content)
    get_settings.cache_clear()
    return nightly_ingest(period=PERIOD, counties=[COUNTY])


def _subs(wh) -> pd.DataFrame:
    return wh.read_table("submission", where={"county_code": COUNTY, "period": PERIOD})


def _receipts(home: Path, skip: set[Path] = frozenset()) -> list[str]:
    """The HTML of each receipt mailed to the county (outbox), oldest first."""
    out = []
    for path in sorted(home.glob("outbox/**/*.eml"), key=lambda p: p.stat().st_mtime_ns):
        if path in skip:
            continue
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if "回执" in str(msg["Subject"]) and "太和县" in str(msg["Subject"]):
            out.append(msg.get_body(preferencelist=("html",)).get_content())
    return out


class _Tables(HTMLParser):
    """Every table of an HTML page as rows of cell texts (header rows included)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _receipt_rows(html: str) -> list[list[str]]:
    """The rows of the receipt's “本期收到的文件” table, as cell texts (without its header)."""
    parser = _Tables()
    parser.feed(html)
    table = next(t for t in parser.tables if t and "处理结果" in t[0])
    return table[1:]


def _register(wh) -> pd.DataFrame:
    from tasks.register import returns_register

    reg = returns_register(wh, PERIOD, counties=[COUNTY])
    return reg.set_index("kind")


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_nightly_loads_both_returns_of_one_workbook(
    prefect_harness: None, gaibao_home: Path, warehouse_url: str, order: str
) -> None:
    from warehouse.archive import Archive
    from warehouse.store import Warehouse

    progress, funding = _progress(4), _funding()
    content = ORDERS[order](progress, funding)
    summary = _run(gaibao_home, content)
    assert summary["totals"]["accepted"] == 2 and summary["totals"]["refused"] == 0
    assert summary["totals"]["files_seen"] == 1  # one file, two returns

    wh = Warehouse.from_settings(get_settings())
    subs = _subs(wh).set_index("kind")
    sha = hashlib.sha256(content).hexdigest()
    assert sorted(subs.index) == ["funding", "progress"]
    assert set(subs["sha256"]) == {sha} and set(subs["file_name"]) == {FILE}
    assert subs["submission_id"].nunique() == 2 and set(subs["status"]) == {"accepted"}
    assert int(subs.at["progress", "rows_accepted"]) == len(progress)
    assert int(subs.at["funding", "rows_accepted"]) == 1
    assert Archive.from_settings(get_settings()).get(sha) == content  # one archive object, both returns
    facts = wh.read_table("fact_progress", where={"county_code": COUNTY, "period": PERIOD})
    assert sorted(facts["project_id"]) == sorted(r["project_id"] for r in progress)
    assert set(facts["submission_id"]) == {subs.at["progress", "submission_id"]}
    money = wh.read_table("fact_funding", where={"county_code": COUNTY, "period": PERIOD})
    assert list(money["funds_total_wan"]) == [funding[0]["funds_total_wan"]]
    assert set(money["submission_id"]) == {subs.at["funding", "submission_id"]}

    reg = _register(wh)
    for kind in ("progress", "funding"):
        assert reg.at[kind, "state"] == "accepted" and reg.at[kind, "file_name"] == FILE
        assert reg.at[kind, "submission_id"] == subs.at[kind, "submission_id"]
    wh.close()

    (html,) = _receipts(gaibao_home)
    rows = _receipt_rows(html)
    kinds = sorted(r[0] for r in rows)
    assert kinds == ["全面改薄资金与师资月报", "全面改薄项目进展月报"]
    assert all(r[1] == FILE and r[3] == "已接收" for r in rows)

    # the same bytes again: nothing new, nothing changed
    again = _run(gaibao_home, content)
    assert again["totals"]["accepted"] == 0 and again["totals"]["duplicates"] == 1
    wh = Warehouse.from_settings(get_settings())
    assert len(_subs(wh)) == 2
    wh.close()


def test_one_return_refused_the_other_accepted_each_with_its_receipt_lines(
    prefect_harness: None, gaibao_home: Path, warehouse_url: str
) -> None:
    from warehouse.store import Warehouse

    funding = _funding(teachers_rural=2000)  # more rural teachers than recruited: its only row is rejected
    content = workbook(
        ("封面", None, None),
        ("填报说明", None, None),
        ("资金", "funding", funding),
        ("进展", "progress", _progress(3)),
    )
    summary = _run(gaibao_home, content)
    assert summary["totals"]["accepted"] == 1 and summary["totals"]["refused"] == 1

    wh = Warehouse.from_settings(get_settings())
    subs = _subs(wh).set_index("kind")
    assert subs.at["progress", "status"] == "accepted" and int(subs.at["progress", "rows_accepted"]) == 3
    assert subs.at["funding", "status"] == "refused"
    reason = subs.at["funding", "reason"]
    assert reason.startswith("工作表“资金”（全面改薄资金与师资月报）：") and "全部 1 行都有错误" in reason
    assert len(wh.read_table("fact_progress", where={"county_code": COUNTY, "period": PERIOD})) == 3
    assert wh.read_table("fact_funding", where={"county_code": COUNTY, "period": PERIOD}).empty
    issues = wh.read_table("dq_issue", where={"submission_id": subs.at["funding", "submission_id"]})
    rural = issues[issues["column_name"] == "teachers_rural"]
    assert len(rural) == 1 and rural["severity"].iloc[0] == "error" and rural["value"].iloc[0] == "2000"
    reg = _register(wh)
    assert reg.at["progress", "state"] == "accepted" and reg.at["funding", "state"] == "refused"
    assert reg.at["funding", "reason"] == reason
    wh.close()

    (html,) = _receipts(gaibao_home)
    rows = {r[0]: r for r in _receipt_rows(html)}
    assert rows["全面改薄项目进展月报"][3] == "已接收"
    assert rows["全面改薄资金与师资月报"][3] == "已退回" and rows["全面改薄资金与师资月报"][4] == reason
    assert "teachers_rural" not in html and "2000" in html  # the rejected row, in Chinese, with its value


def test_a_resubmitted_two_sheet_workbook_replaces_both_returns(
    prefect_harness: None, gaibao_home: Path, warehouse_url: str
) -> None:
    from warehouse.store import Warehouse

    first = ORDERS["funding_first"](_progress(4), _funding())
    _run(gaibao_home, first)
    before = set(gaibao_home.glob("outbox/**/*.eml"))
    # the correction: one project fewer and new funding totals, both sheets in one file again
    corrected = ORDERS["progress_first"](_progress(3), _funding(funds_total_wan=150000.0))
    summary = _run(gaibao_home, corrected, name="太和县全面改薄月报2018年12月（更正）.xlsx")
    assert summary["totals"]["accepted"] == 2

    wh = Warehouse.from_settings(get_settings())
    subs = _subs(wh)
    new_sha = hashlib.sha256(corrected).hexdigest()
    current = subs[subs["status"] == "accepted"].set_index("kind")
    assert sorted(current.index) == ["funding", "progress"] and set(current["sha256"]) == {new_sha}
    old = subs[subs["sha256"] == hashlib.sha256(first).hexdigest()]
    assert sorted(old["kind"]) == ["funding", "progress"] and set(old["status"]) == {"superseded"}
    facts = wh.read_table("fact_progress", where={"county_code": COUNTY, "period": PERIOD})
    assert sorted(facts["project_id"]) == sorted(r["project_id"] for r in _progress(3))
    money = wh.read_table("fact_funding", where={"county_code": COUNTY, "period": PERIOD})
    assert list(money["funds_total_wan"]) == [150000.0]
    # the project left out is warned of on the progress return only
    issues = wh.read_table("dq_issue", where={"submission_id": current.at["progress", "submission_id"]})
    assert list(issues.loc[issues["rule"] == "RESUBMISSION_DROPS_PROJECT", "project_id"]) == [
        _progress(4)[3]["project_id"]
    ]
    reg = _register(wh)
    assert set(reg["state"]) == {"accepted"}
    assert {reg.at[k, "submission_id"] for k in ("progress", "funding")} == set(current["submission_id"])
    from tasks.register import returns_register

    history = returns_register(wh, PERIOD, counties=[COUNTY], history=True)
    assert sorted(zip(history["kind"], history["state"], strict=True)) == [
        ("funding", "accepted"),
        ("funding", "superseded"),
        ("progress", "accepted"),
        ("progress", "superseded"),
    ]

    wh.close()
    (receipt,) = _receipts(gaibao_home, skip=before)
    fresh = [r for r in _receipt_rows(receipt) if r[1] == "太和县全面改薄月报2018年12月（更正）.xlsx"]
    assert sorted((r[0], r[3]) for r in fresh) == [
        ("全面改薄资金与师资月报", "已接收"),
        ("全面改薄项目进展月报", "已接收"),
    ]

    # a later funding-only file replaces the funding return and leaves the progress return standing
    from flows.nightly import nightly_ingest
    from tests.filebuilders import write_return

    write_return(
        gaibao_home / "inbox" / COUNTY / "太和县资金与师资月报2018年12月.csv",
        _funding(funds_total_wan=151000.0),
        kind="funding",
    )
    assert nightly_ingest(period=PERIOD, counties=[COUNTY])["totals"]["accepted"] == 1
    wh = Warehouse.from_settings(get_settings())
    current = _subs(wh)
    current = current[current["status"] == "accepted"].set_index("kind")
    assert current.at["progress", "sha256"] == new_sha
    assert current.at["funding", "file_name"] == "太和县资金与师资月报2018年12月.csv"
    money = wh.read_table("fact_funding", where={"county_code": COUNTY, "period": PERIOD})
    assert list(money["funds_total_wan"]) == [151000.0]
    assert len(wh.read_table("fact_progress", where={"county_code": COUNTY, "period": PERIOD})) == 3
    wh.close()


def test_a_run_stopped_between_the_two_loads_loads_the_missing_return_next_time(
    prefect_harness: None, gaibao_home: Path, warehouse_url: str
) -> None:
    """Each kind loads in its own all-or-nothing batch: a run that fails or is killed between
    them leaves the file's progress return loaded and its funding return not. Here that state is
    made by deleting the funding return's rows after a run; the next run must not take the file
    as already judged (``submission.file_kinds``) and loads the funding return."""
    import sqlalchemy as sa

    from warehouse.store import Warehouse

    content = ORDERS["progress_first"](_progress(3), _funding())
    assert _run(gaibao_home, content)["totals"]["accepted"] == 2
    wh = Warehouse.from_settings(get_settings())
    subs = _subs(wh).set_index("kind")
    assert set(subs["file_kinds"]) == {"funding,progress"}
    progress_loaded = subs.at["progress", "loaded_at"]
    funding_id = subs.at["funding", "submission_id"]
    with wh.engine.begin() as conn:
        for table in ("fact_funding", "dq_issue", "submission"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE submission_id = :s"), {"s": funding_id})
    wh.close()

    summary = _run(gaibao_home, content)
    assert summary["totals"]["duplicates"] == 0
    wh = Warehouse.from_settings(get_settings())
    subs = _subs(wh).set_index("kind")
    assert sorted(subs.index) == ["funding", "progress"] and set(subs["status"]) == {"accepted"}
    assert subs.at["funding", "submission_id"] == funding_id  # the same bytes and rules: the same id
    assert pd.Timestamp(subs.at["progress", "loaded_at"]) == pd.Timestamp(progress_loaded)
    money = wh.read_table("fact_funding", where={"county_code": COUNTY, "period": PERIOD})
    assert list(money["funds_total_wan"]) == [_funding()[0]["funds_total_wan"]]
    assert len(wh.read_table("fact_progress", where={"county_code": COUNTY, "period": PERIOD})) == 3
    wh.close()
    # complete now: the next run takes the file as judged
    assert _run(gaibao_home, content)["totals"]["duplicates"] == 1


def test_backfill_force_rejudges_both_returns_from_the_archive(
    prefect_harness: None, gaibao_home: Path, warehouse_url: str
) -> None:
    """``backfill --force`` re-reads the archived file once (one row per county and sha256) and
    still gets both returns back, with the inbox emptied so only the archive has the bytes."""
    from flows.backfill import backfill
    from warehouse.store import Warehouse

    content = ORDERS["funding_first"](_progress(3), _funding())
    assert _run(gaibao_home, content)["totals"]["accepted"] == 2
    wh = Warehouse.from_settings(get_settings())
    ids = dict(zip(_subs(wh)["kind"], _subs(wh)["submission_id"], strict=True))
    wh.close()
    (gaibao_home / "inbox" / COUNTY / FILE).unlink()
    summary = backfill(start=PERIOD, end=PERIOD, counties=[COUNTY], force=True)
    assert summary["totals"]["accepted"] == 2 and summary["totals"]["files_seen"] == 1
    wh = Warehouse.from_settings(get_settings())
    subs = _subs(wh)
    assert dict(zip(subs["kind"], subs["submission_id"], strict=True)) == ids
    assert set(subs["status"]) == {"accepted"}
    assert len(wh.read_table("fact_progress", where={"county_code": COUNTY, "period": PERIOD})) == 3
    assert len(wh.read_table("fact_funding", where={"county_code": COUNTY, "period": PERIOD})) == 1
    wh.close()
