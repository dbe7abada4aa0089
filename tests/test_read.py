"""Reading county files: every reading variation of the contract's "What real files look like".

Each test writes a real file in tmp_path with tests/filebuilders.py and reads its bytes back.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
import xlsxwriter
from filebuilders import build_table, cell_text, funding_rows, progress_rows, return_bytes, write_return

from gaibao.contract import COLUMNS
from tasks.read import ParsedReturn, detect_format, normalise_header, read_return

TITLE = "怀远县全面改薄项目进展月报（2017年6月）"


def read_file(path: Path, kind: str | None = None) -> ParsedReturn:
    return read_return(path.read_bytes(), path.name, kind)


def assert_ok(parsed: ParsedReturn) -> None:
    assert parsed.refusal is None, parsed.refusal


# --------------------------------------------------------------------------------------------
# Formats and encodings


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_csv_encodings_are_detected(tmp_path: Path, encoding: str) -> None:
    rows = progress_rows(3)
    if encoding == "gb18030":
        rows[0]["school_name"] = "𠮷祥小学"  # not in GBK: only GB18030 can carry it
    path = write_return(tmp_path / "r.csv", rows, "progress", encoding=encoding)

    parsed = read_file(path)

    assert_ok(parsed)
    assert parsed.file_format == "csv"
    assert parsed.encoding == {"gbk": "gb18030"}.get(encoding, encoding)
    assert parsed.kind == "progress"
    assert parsed.rows["school_name"].tolist() == [r["school_name"] for r in rows]
    assert parsed.rows.columns[0] == "period"  # no BOM glued to the first header
    assert parsed.rows["row_number"].tolist() == [2, 3, 4]


def test_gb18030_text_is_not_gbk(tmp_path: Path) -> None:
    # Guards the fixture of the test above: the file really needs GB18030.
    with pytest.raises(UnicodeEncodeError):
        "𠮷".encode("gbk")


@pytest.mark.parametrize("delimiter", [",", "\t", ";"])
def test_csv_delimiters(tmp_path: Path, delimiter: str) -> None:
    path = write_return(tmp_path / "r.csv", progress_rows(2), "progress", delimiter=delimiter)
    parsed = read_file(path)
    assert_ok(parsed)
    assert parsed.rows["project_id"].tolist() == ["HY-2017-001", "HY-2017-002"]


def test_xlsx_title_rows_merged_title_and_sheet_named_progress_not_first(tmp_path: Path) -> None:
    path = write_return(
        tmp_path / "r.xlsx",
        progress_rows(3),
        "progress",
        title_rows=[TITLE, "填报单位：怀远县教育体育局"],
        merge_title=True,
        sheet_name="项目进展",
        sheets_before=["填报说明", "Sheet2"],
    )

    parsed = read_file(path)

    assert_ok(parsed)
    assert parsed.file_format == "xlsx"
    assert parsed.sheet_name == "项目进展"
    assert parsed.header_row == 3
    assert parsed.rows["row_number"].tolist() == [4, 5, 6]
    assert parsed.rows["project_id"].tolist() == ["HY-2017-001", "HY-2017-002", "HY-2017-003"]


def test_xlsx_real_dates_codes_and_numbers_become_clerk_text(tmp_path: Path) -> None:
    rows = progress_rows(2)
    rows[0]["actual_start"] = dt.datetime(2017, 3, 15, 14, 30)  # a time of day on a date cell
    rows[0]["county_code"] = 340321  # typed as a number in Excel
    rows[0]["school_code"] = 3403210001.0
    rows[0]["planned_invest_wan"] = 120.25
    path = write_return(tmp_path / "r.xlsx", rows, "progress")

    parsed = read_file(path)

    assert_ok(parsed)
    first = parsed.rows.iloc[0]
    assert first["planned_start"] == "2017-03-01"  # a real Excel date
    assert first["actual_start"] == "2017-03-15"  # the time of day is dropped
    assert first["county_code"] == "340321"  # not "340321.0"
    assert first["school_code"] == "3403210001"
    assert first["planned_area_m2"] == "1500"
    assert first["planned_invest_wan"] == "120.25"
    assert first["completed_date"] == "2017-06-10"
    assert parsed.rows.iloc[1]["completed_date"] is None


def test_xlsx_dates_written_as_text_stay_as_written(tmp_path: Path) -> None:
    rows = progress_rows(1)
    rows[0]["planned_start"] = "2017年3月1日"
    path = write_return(tmp_path / "r.xlsx", rows, "progress", excel_dates=False)
    parsed = read_file(path)
    assert parsed.rows.iloc[0]["planned_start"] == "2017年3月1日"
    assert parsed.rows.iloc[0]["actual_start"] == "2017-03-15"


def test_xlsx_leading_empty_rows_and_columns_keep_sheet_row_numbers(tmp_path: Path) -> None:
    # calamine's used range would start at C4 here; row numbers must still be sheet rows.
    header, body = build_table(progress_rows(2), "progress")
    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": True})
    sheet = book.add_worksheet("Sheet1")
    sheet.write_row(3, 2, header)  # C4
    sheet.write_row(4, 2, [v.isoformat() if isinstance(v, dt.date) else v for v in body[0]])
    sheet.write_row(6, 2, [v.isoformat() if isinstance(v, dt.date) else v for v in body[1]])  # row 6 blank
    book.close()
    path = tmp_path / "offset.xlsx"
    path.write_bytes(buf.getvalue())

    parsed = read_file(path)

    assert_ok(parsed)
    assert parsed.header_row == 4
    assert parsed.rows["row_number"].tolist() == [5, 7]


def test_xlsx_first_sheet_without_header_falls_back_to_a_later_sheet(tmp_path: Path) -> None:
    path = write_return(
        tmp_path / "r.xlsx", progress_rows(2), "progress", sheet_name="数据", sheets_before=["封面"]
    )
    parsed = read_file(path)
    assert_ok(parsed)
    assert parsed.sheet_name == "数据"


def _two_kind_workbook(path: Path) -> Path:
    buf = io.BytesIO()
    book = xlsxwriter.Workbook(buf, {"in_memory": True})
    for name, rows, kind in (
        ("资金与师资", funding_rows(), "funding"),
        ("项目进展", progress_rows(2), "progress"),
    ):
        header, body = build_table(rows, kind)
        sheet = book.add_worksheet(name)
        sheet.write_row(0, 0, header)
        for i, row in enumerate(body, start=1):
            sheet.write_row(i, 0, [v.isoformat() if isinstance(v, dt.date) else v for v in row])
    book.close()
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize(("kind", "sheet"), [("progress", "项目进展"), ("funding", "资金与师资")])
def test_xlsx_sheet_named_for_the_kind_is_read(tmp_path: Path, kind: str, sheet: str) -> None:
    parsed = read_file(_two_kind_workbook(tmp_path / "both.xlsx"), kind)
    assert_ok(parsed)
    assert parsed.kind == kind
    assert parsed.sheet_name == sheet


@pytest.mark.parametrize("wrap", [None, "records", "data", "items"])
def test_json_records_bare_or_wrapped(tmp_path: Path, wrap: str | None) -> None:
    rows = progress_rows(3)
    path = write_return(tmp_path / "r.json", rows, "progress", json_wrap=wrap, blank_rows=[1])

    parsed = read_file(path)

    assert_ok(parsed)
    assert parsed.file_format == "json"
    assert parsed.rows["project_id"].tolist() == ["HY-2017-001", "HY-2017-002", "HY-2017-003"]
    # record index + 1; the empty record at index 1 is dropped but still counted
    assert parsed.rows["row_number"].tolist() == [1, 3, 4]
    assert parsed.rows.iloc[0]["planned_area_m2"] == "1500"  # JSON 1500.0 loses ".0"
    assert parsed.rows.iloc[0]["completed_date"] == "2017-06-10"


def test_json_nested_platform_envelope(tmp_path: Path) -> None:
    records = json.loads(return_bytes(progress_rows(2), "progress", fmt="json"))
    content = json.dumps({"code": 200, "data": {"total": 2, "list": records}}, ensure_ascii=False).encode()
    parsed = read_return(content, "api-response.json")
    assert_ok(parsed)
    assert len(parsed.rows) == 2


# --------------------------------------------------------------------------------------------
# Header row, header text, units


def test_csv_starting_with_a_bracket_is_still_csv(tmp_path: Path) -> None:
    path = write_return(
        tmp_path / "r.csv", progress_rows(2), "progress", title_rows=["[怀远县] 项目进展月报"]
    )
    parsed = read_file(path)
    assert_ok(parsed)
    assert parsed.file_format == "csv"
    assert parsed.rows["row_number"].tolist() == [3, 4]


def test_csv_title_and_note_rows_above_header(tmp_path: Path) -> None:
    path = write_return(
        tmp_path / "r.csv",
        progress_rows(2),
        "progress",
        title_rows=[TITLE, "单位：万元、平方米"],
        blank_rows_above_header=1,
    )
    parsed = read_file(path)
    assert_ok(parsed)
    assert parsed.header_row == 4
    assert parsed.rows["row_number"].tolist() == [5, 6]


@pytest.mark.parametrize("style", ["zh", "halfwidth", "spaced", "en", "alias"])
@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_header_variants_map_to_canonical_columns(tmp_path: Path, style: str, fmt: str) -> None:
    rows = progress_rows(2)
    path = write_return(tmp_path / f"r.{fmt}", rows, "progress", header_style=style)

    parsed = read_file(path)

    assert_ok(parsed)
    assert list(parsed.rows.columns) == [c.name for c in COLUMNS["progress"]] + ["row_number"]
    assert parsed.unit_factors == {}
    assert parsed.unknown_columns == []
    assert parsed.rows["funds_central_wan"].tolist() == ["40", "40.5"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("规划面积（平方米）", ("规划面积", "平方米")),
        ("规划面积(平方米)", ("规划面积", "平方米")),
        (" 规划面积 （平方米）", ("规划面积", "平方米")),
        ("规 划 面 积\u3000(平方米 )", ("规划面积", "平方米")),
        ("其中：中央资金（万元）", ("其中:中央资金", "万元")),
        ("其中:中央资金 (元)", ("其中:中央资金", "元")),
        ("竣工面积（㎡）", ("竣工面积", "m2")),
        ("竣工面积【万平方米】", ("竣工面积", "万平方米")),
        ("Planned_Area_M2", ("planned_area_m2", None)),
        ("ＰＥＲＩＯＤ", ("period", None)),
        ("项目编号", ("项目编号", None)),
        ("备注（）", ("备注", None)),
    ],
)
def test_normalise_header(text: str, expected: tuple[str, str | None]) -> None:
    assert normalise_header(text) == expected


@pytest.mark.parametrize(
    "header", ["其中中央资金（万元）", "其中、中央资金", "中央资金(万元)", "其中: 中央资金"]
)
def test_part_headers_with_or_without_qizhong(tmp_path: Path, header: str) -> None:
    path = write_return(
        tmp_path / "r.csv", progress_rows(2), "progress", headers={"funds_central_wan": header}
    )
    parsed = read_file(path)
    assert_ok(parsed)
    assert parsed.rows["funds_central_wan"].tolist() == ["40", "40.5"]


def test_canonical_english_headers_in_any_case(tmp_path: Path) -> None:
    rows = progress_rows(1)
    headers = {c.name: c.name.upper() for c in COLUMNS["progress"]}
    parsed = read_file(write_return(tmp_path / "r.csv", rows, "progress", headers=headers))
    assert_ok(parsed)
    assert parsed.rows.iloc[0]["school_name"] == "怀远县第1小学"


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "json"])
def test_units_yuan_and_wan_m2_give_factors(tmp_path: Path, fmt: str) -> None:
    units = {"planned_invest_wan": "元", "funds_local_wan": "元", "planned_area_m2": "万平方米"}
    path = write_return(tmp_path / f"r.{fmt}", progress_rows(2), "progress", units=units)

    parsed = read_file(path)

    assert_ok(parsed)
    assert parsed.unit_factors == {
        "planned_invest_wan": 1e-4,
        "funds_local_wan": 1e-4,
        "planned_area_m2": 1e4,
    }
    # values stay as the clerk wrote them; normalise applies the factors
    assert parsed.rows["planned_invest_wan"].tolist() == ["1205000", "1215000"]
    assert parsed.rows["planned_area_m2"].tolist() == ["0.15", "0"]


def test_canonical_unit_written_explicitly_gives_no_factor(tmp_path: Path) -> None:
    headers = {"completed_area_m2": "竣工面积(m²)", "planned_area_m2": "规划面积（㎡）"}
    parsed = read_file(write_return(tmp_path / "r.csv", progress_rows(1), "progress", headers=headers))
    assert_ok(parsed)
    assert parsed.unit_factors == {}


@pytest.mark.parametrize(
    ("header", "unit"),
    [("规划面积（公顷）", "公顷"), ("完成投资（千元）", "千元"), ("规划投资(平方米)", "平方米")],
)
def test_unknown_unit_refuses_the_file(tmp_path: Path, header: str, unit: str) -> None:
    col = {
        "规划面积": "planned_area_m2",
        "完成投资": "completed_invest_wan",
        "规划投资": "planned_invest_wan",
    }[header[:4]]
    path = write_return(tmp_path / "r.csv", progress_rows(2), "progress", headers={col: header})

    parsed = read_file(path)

    assert parsed.refusal is not None
    assert parsed.refusal.code == "UNKNOWN_UNIT"
    assert f"“{header}”" in parsed.refusal.message_zh
    assert f"“{unit}”" in parsed.refusal.message_zh
    assert parsed.rows.empty


def test_bracket_note_on_a_unitless_column_is_not_a_unit(tmp_path: Path) -> None:
    headers = {"school_code": "学校标识码（10位）"}
    parsed = read_file(write_return(tmp_path / "r.csv", progress_rows(1), "progress", headers=headers))
    assert_ok(parsed)
    assert parsed.rows.iloc[0]["school_code"] == "3403210000"


def test_unknown_columns_are_listed_not_refused(tmp_path: Path) -> None:
    path = write_return(
        tmp_path / "r.csv", progress_rows(2), "progress", extra_columns={"序号": 1, " 审核人 ": "李四"}
    )
    parsed = read_file(path)
    assert_ok(parsed)
    assert parsed.unknown_columns == ["序号", "审核人"]
    assert "序号" not in parsed.rows.columns


# --------------------------------------------------------------------------------------------
# Rows


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "json"])
@pytest.mark.parametrize("label", ["合计", "总计"])
def test_total_row_is_split_off(tmp_path: Path, fmt: str, label: str) -> None:
    path = write_return(
        tmp_path / f"r.{fmt}", progress_rows(3), "progress", total_row=True, total_label=label
    )

    parsed = read_file(path)

    assert_ok(parsed)
    assert len(parsed.rows) == 3
    assert label not in parsed.rows["school_name"].tolist()
    assert len(parsed.total_rows) == 1
    total = parsed.total_rows.iloc[0]
    assert total["school_name"] == label
    assert total["started_area_m2"] == "1200"
    assert total["row_number"] == (5 if fmt != "json" else 4)


def test_funding_total_row_in_code_column(tmp_path: Path) -> None:
    rows = funding_rows() + funding_rows(county_code="341221")
    parsed = read_file(write_return(tmp_path / "f.csv", rows, "funding", total_row=True))
    assert_ok(parsed)
    assert parsed.rows["county_code"].tolist() == ["341222", "341221"]
    assert parsed.total_rows["county_code"].tolist() == ["合计"]


def test_total_row_in_a_serial_number_column(tmp_path: Path) -> None:
    header, body = build_table(progress_rows(2), "progress")
    lines = ["序号," + ",".join(header)]
    lines += [f"{i}," + ",".join("" if v is None else str(v) for v in row) for i, row in enumerate(body, 1)]
    total = ["" if i != header.index("开工面积（平方米）") else "1200" for i in range(len(header))]
    lines.append("合计," + ",".join(total))  # 合计 only in 序号, the sums in their columns
    path = tmp_path / "r.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    parsed = read_file(path)

    assert_ok(parsed)
    assert len(parsed.rows) == 2
    assert parsed.total_rows["row_number"].tolist() == [4]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_blank_rows_dropped_and_row_numbers_are_what_the_clerk_sees(tmp_path: Path, fmt: str) -> None:
    path = write_return(
        tmp_path / f"r.{fmt}",
        progress_rows(4),
        "progress",
        title_rows=[TITLE],
        blank_rows=[0, 2, 4],
        total_row=True,
    )
    # 1 title, 2 header, 3 blank, 4 HY-001, 5 HY-002, 6 blank, 7 HY-003, 8 HY-004, 9 blank, 10 合计
    parsed = read_file(path)

    assert_ok(parsed)
    assert parsed.rows["project_id"].tolist() == ["HY-2017-001", "HY-2017-002", "HY-2017-003", "HY-2017-004"]
    assert parsed.rows["row_number"].tolist() == [4, 5, 7, 8]
    assert parsed.total_rows["row_number"].tolist() == [10]


def test_footnote_rows_below_the_data_are_not_rows(tmp_path: Path) -> None:
    path = write_return(tmp_path / "r.csv", progress_rows(2), "progress", total_row=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("注：本表面积单位为平方米，金额单位为万元。\r\n填报人：张三   审核人：李四\r\n")
    parsed = read_file(path)
    assert_ok(parsed)
    assert parsed.rows["row_number"].tolist() == [2, 3]
    assert parsed.total_rows["row_number"].tolist() == [4]


def test_csv_row_numbers_count_records_not_lines(tmp_path: Path) -> None:
    rows = progress_rows(3)
    rows[0]["note"] = "第一行\n第二行"  # a cell with a line break: Excel shows it in one row
    parsed = read_file(write_return(tmp_path / "r.csv", rows, "progress"))
    assert_ok(parsed)
    assert parsed.rows.iloc[0]["note"] == "第一行\n第二行"
    assert parsed.rows["row_number"].tolist() == [2, 3, 4]


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "json"])
def test_dashes_and_empty_cells_are_none_and_cells_are_stripped(tmp_path: Path, fmt: str) -> None:
    rows = progress_rows(5)
    for row, none in zip(rows, ["—", "-", "－", "——", ""], strict=True):
        row["note"] = none
        row["phone"] = f"  {row['phone']}\u3000"
    rows[0]["planned_start"] = " - "
    rows[1]["school_name"] = "  怀远县第2小学 "
    rows[2]["planned_invest_wan"] = "1,234.5"  # typed later, by normalise
    rows[3]["planned_invest_wan"] = "１２３"

    parsed = read_file(write_return(tmp_path / f"r.{fmt}", rows, "progress", excel_dates=False))

    assert_ok(parsed)
    assert parsed.rows["note"].tolist() == [None] * 5
    assert parsed.rows.iloc[0]["planned_start"] is None
    assert parsed.rows.iloc[1]["school_name"] == "怀远县第2小学"
    assert set(parsed.rows["phone"]) == {"0552-1234567"}
    assert parsed.rows["planned_invest_wan"].tolist()[2:4] == ["1,234.5", "１２３"]
    assert all(
        isinstance(v, str) or v is None for v in parsed.rows.drop(columns="row_number").to_numpy().ravel()
    )


# --------------------------------------------------------------------------------------------
# Refusals


def test_missing_required_column_is_refused_and_named(tmp_path: Path) -> None:
    cols = [c.name for c in COLUMNS["progress"] if c.name not in ("planned_area_m2", "completed_date")]
    parsed = read_file(write_return(tmp_path / "r.csv", progress_rows(2), "progress", columns=cols))

    assert parsed.refusal is not None
    assert parsed.refusal.code == "MISSING_COLUMN"
    assert "规划面积（平方米）" in parsed.refusal.message_zh
    assert "竣工日期" in parsed.refusal.message_zh
    assert parsed.refusal.detail["columns"] == "planned_area_m2,completed_date"
    assert parsed.kind == "progress"


def test_optional_columns_may_be_absent(tmp_path: Path) -> None:
    cols = [c.name for c in COLUMNS["progress"] if c.required]
    parsed = read_file(write_return(tmp_path / "r.csv", progress_rows(2), "progress", columns=cols))
    assert_ok(parsed)
    assert "note" not in parsed.rows.columns


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("r.csv", bytes(range(256)) * 8),
        ("r.csv", b"\x81\xff\xfe\x00garbage\x00\x01"),
        ("r.csv", b"\x81\xff\x81\xfe\xff" * 100),  # no NUL, neither UTF-8 nor GB18030
        ("r.xlsx", b"PK\x03\x04" + b"\x00not really a zip" * 20),
        ("r.json", '{"records": [{"报告期": "2017-06",'.encode()),
        ("r.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100),
    ],
)
def test_garbage_is_unreadable(name: str, content: bytes) -> None:
    parsed = read_return(content, name)
    assert parsed.refusal is not None
    assert parsed.refusal.code == "UNREADABLE"
    assert "重新报送" in parsed.refusal.message_zh
    assert parsed.rows.empty and parsed.total_rows.empty


@pytest.mark.parametrize(
    "content",
    [
        "这是一封说明信，没有表格。\n请查收。\n".encode(),
        b"a,b,c\n1,2,3\n",
    ],
)
def test_no_header_is_refused(content: bytes) -> None:
    parsed = read_return(content, "r.csv")
    assert parsed.refusal is not None
    assert parsed.refusal.code == "NO_HEADER"


def test_header_without_rows_is_empty(tmp_path: Path) -> None:
    path = write_return(tmp_path / "r.xlsx", progress_rows(2), "progress", blank_rows=[0, 0, 2])
    assert_ok(read_file(path))
    header_only = write_return(
        tmp_path / "h.csv", [], "progress", columns=[c.name for c in COLUMNS["progress"]]
    )
    parsed = read_file(header_only)
    assert parsed.refusal is not None
    assert parsed.refusal.code == "EMPTY"


@pytest.mark.parametrize("content", [b"", b"\r\n \n", b"\xef\xbb\xbf"])
def test_empty_file_is_empty(content: bytes) -> None:
    parsed = read_return(content, "r.csv")
    assert parsed.refusal is not None and parsed.refusal.code == "EMPTY"
    assert "空" in parsed.refusal.message_zh


def test_only_a_total_row_is_empty(tmp_path: Path) -> None:
    header, _ = build_table(progress_rows(1), "progress")
    path = tmp_path / "r.csv"
    path.write_text(",".join(header) + "\n" + ",,,合计" + "," * (len(header) - 4) + "\n", encoding="utf-8")
    parsed = read_file(path)
    assert parsed.refusal is not None and parsed.refusal.code == "EMPTY"


# --------------------------------------------------------------------------------------------
# Kind detection


@pytest.mark.parametrize(
    ("rows", "kind", "columns"),
    [
        (progress_rows(2), "progress", None),
        (funding_rows(), "funding", None),
        (
            [
                {
                    "county_code": "340321",
                    "plan_area_m2": 150000,
                    "plan_equipment_wan": 3200,
                    "plan_cycle": "2014-2018",
                }
            ],
            "plan",
            None,
        ),
        # a progress file missing most columns is still a progress file (then refused as such)
        (progress_rows(2), "progress", ["period", "county_code", "project_id", "school_name"]),
        # a funding file with only the shared columns and its total
        (funding_rows(), "funding", ["period", "county_code", "funds_total_wan"]),
    ],
)
def test_kind_is_detected_from_the_header(
    tmp_path: Path, rows: list, kind: str, columns: list | None
) -> None:
    path = write_return(tmp_path / "r.csv", rows, kind, columns=columns)
    parsed = read_file(path)
    assert parsed.kind == kind


def test_given_kind_wins_and_is_checked(tmp_path: Path) -> None:
    path = write_return(tmp_path / "r.csv", funding_rows(), "funding")
    parsed = read_file(path, kind="progress")
    assert parsed.kind == "progress"
    assert parsed.refusal is not None and parsed.refusal.code in ("NO_HEADER", "MISSING_COLUMN")


def test_funding_return_reads(tmp_path: Path) -> None:
    parsed = read_file(
        write_return(tmp_path / "f.xlsx", funding_rows(), "funding", title_rows=["太和县资金与师资月报"])
    )
    assert_ok(parsed)
    assert parsed.kind == "funding"
    row = parsed.rows.iloc[0]
    assert row["funds_total_wan"] == "145000"
    assert row["teachers_rural"] == "1464"
    assert parsed.rows["row_number"].tolist() == [3]


def test_unknown_kind_argument_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        read_return(b"x", "r.csv", kind="budget")


@pytest.mark.parametrize(
    ("content", "name", "fmt"),
    [
        (b"PK\x03\x04rest", "a.csv", "xlsx"),
        (b"\xef\xbb\xbf [ {}]", "a.txt", "json"),
        (b'{"data": []}', "a", "json"),
        ("报告期,区划代码".encode(), "a.csv", "csv"),
    ],
)
def test_detect_format(content: bytes, name: str, fmt: str) -> None:
    assert detect_format(content, name) == fmt


# --------------------------------------------------------------------------------------------
# Headers over two rows (a merged 其中 group above its parts)


def _two_row_header_grid(group_unit: str) -> tuple[list[str], list[str], list[list]]:
    header, body = build_table(
        progress_rows(2), "progress", units={"funds_central_wan": group_unit, "funds_local_wan": group_unit}
    )
    top = list(header)
    sub = [""] * len(header)
    j = header.index(f"其中：中央资金（{group_unit}）")
    top[j], top[j + 1] = f"其中（{group_unit}）", ""
    sub[j], sub[j + 1] = "中央资金", "地方资金"
    return top, sub, body


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_two_row_header_with_merged_group_label(tmp_path: Path, fmt: str) -> None:
    top, sub, body = _two_row_header_grid("元")
    if fmt == "csv":
        lines = [TITLE, ",".join(top), ",".join(sub)]
        lines += [",".join(cell_text(v) for v in row) for row in body]
        path = tmp_path / "r.csv"
        path.write_text("\n".join(lines) + "\n", encoding="gbk")
    else:
        buf = io.BytesIO()
        book = xlsxwriter.Workbook(buf, {"in_memory": True})
        sheet = book.add_worksheet("Sheet1")
        sheet.merge_range(0, 0, 0, len(top) - 1, TITLE)
        j = top.index("其中（元）")
        for k, text in enumerate(top):
            if k not in (j, j + 1):
                sheet.merge_range(1, k, 2, k, text)  # vertically merged header cells
        sheet.merge_range(1, j, 1, j + 1, "其中（元）")
        sheet.write_row(2, j, sub[j : j + 2])
        for i, row in enumerate(body, start=3):
            sheet.write_row(i, 0, [v.isoformat() if isinstance(v, dt.date) else v for v in row])
        book.close()
        path = tmp_path / "r.xlsx"
        path.write_bytes(buf.getvalue())

    parsed = read_file(path)

    assert_ok(parsed)
    assert parsed.unit_factors == {"funds_central_wan": 1e-4, "funds_local_wan": 1e-4}
    assert parsed.rows["funds_central_wan"].tolist() == ["400000", "405000"]
    assert parsed.rows["row_number"].tolist() == [4, 5]


def test_title_directly_above_english_headers_lends_no_unit(tmp_path: Path) -> None:
    path = write_return(
        tmp_path / "r.csv", progress_rows(2), "progress", header_style="en", title_rows=[TITLE]
    )
    parsed = read_file(path)
    assert_ok(parsed)
    assert parsed.unit_factors == {}
    assert parsed.rows["row_number"].tolist() == [3, 4]


# --------------------------------------------------------------------------------------------
# The column-wise row split against the row-by-row loop it replaced


def _rows_one_by_one(body, numbers, positions, total_at, first_j):
    """The former per-row loop of ``_assemble``, kept here as the oracle."""
    from tasks.read import NONE_TOKENS, NOTE_PREFIXES, TOTAL_ROW_MARKERS

    width = max([*positions, first_j or 0]) + 1
    data, data_numbers, totals, total_numbers = [], [], [], []
    for number, row in zip(numbers, body, strict=True):
        if len(row) < width:
            row = row + [""] * (width - len(row))
        values = [None if (s := row[j].strip()) in NONE_TOKENS else s for j in positions]
        if not any(values):
            continue
        if values.count(None) == len(positions) - 1:
            text = next(v for v in values if v is not None)
            if text.startswith(NOTE_PREFIXES):
                continue
        is_total = any(
            v is not None and any(m in v for m in TOTAL_ROW_MARKERS) for v in (values[i] for i in total_at)
        )
        if first_j is not None and any(m in row[first_j] for m in TOTAL_ROW_MARKERS):
            is_total = True
        (totals if is_total else data).append(values)
        (total_numbers if is_total else data_numbers).append(number)
    return data, data_numbers, totals, total_numbers


def _grid_rows(grid):
    return [list(r) for r in zip(*(c.to_pylist() for c in grid.columns), strict=True)] if len(grid) else []


@pytest.mark.parametrize("seed", range(40))
def test_row_split_matches_the_row_by_row_reading(seed: int) -> None:
    import random

    from tasks.read import _split_rows

    rng = random.Random(seed)
    # Cells a clerk's sheet really holds: blanks of every kind of whitespace (Python's str.strip()
    # set, full-width spaces included), dash placeholders, footnotes, 合计 rows, text with inner
    # spaces, and rows shorter than the header.
    pieces = [
        "", " ", "\u3000", "\xa0", "\t", "\x1c", "\u2003", "\u205f", "\x85", "-", "—", "－", "——", "--",
        "－－", "–", "―", "――", " - ", "\u3000—\u3000", "注：单位为万元", "说明", "备注：无", "填报人：张三",
        "合计", " 总计 ", "小计合计", "HY-001", "340321", "12.5", "  怀远县 第一 小学  ", "=1+1", "0",
        "注", "制表人", "x\u200by", "\u200b", "备注:", "a\u3000",
    ]  # fmt: skip
    width = rng.randint(1, 8)
    positions = sorted(rng.sample(range(width), rng.randint(1, width)))
    body = []
    for _ in range(rng.randint(0, 60)):
        length = rng.randint(0, width + 1)
        shape = rng.random()
        if shape < 0.2:  # mostly blank
            row = [rng.choice(pieces[:20]) for _ in range(length)]
        elif shape < 0.35 and length:  # one filled cell
            row = [""] * length
            row[rng.randrange(length)] = rng.choice(pieces)
        else:
            row = [rng.choice(pieces) for _ in range(length)]
        body.append(row)
    numbers = sorted(rng.sample(range(1, 500), len(body)))
    total_at = sorted(rng.sample(range(len(positions)), rng.randint(0, min(2, len(positions)))))
    free = [j for j in range(width) if j not in positions]
    first_j = rng.choice(free) if free and rng.random() < 0.6 else None
    names = [f"c{j}" for j in positions]

    data, totals = _split_rows(
        body,
        numbers,
        names,
        positions,
        names,
        total_at=total_at,
        first_column=(first_j, "序号") if first_j is not None else None,
    )
    want_data, want_data_numbers, want_totals, want_total_numbers = _rows_one_by_one(
        body, numbers, positions, total_at, first_j
    )
    assert _grid_rows(data) == want_data
    assert data.numbers.tolist() == want_data_numbers
    assert _grid_rows(totals) == want_totals
    assert totals.numbers.tolist() == want_total_numbers
    assert data.names == totals.names == tuple(names)


def test_a_lone_surrogate_in_json_is_refused_naming_row_and_column() -> None:
    rows = progress_rows(3)
    rows[1]["school_name"] = "第二小学@@"
    # valid JSON, but no UTF-8 can carry a lone surrogate
    content = (
        return_bytes(rows, "progress", fmt="json").decode("utf-8").replace("@@", "\\ud800").encode("utf-8")
    )

    parsed = read_return(content, "r.json")

    assert parsed.refusal is not None and parsed.refusal.code == "UNREADABLE"
    assert "第 2 行" in parsed.refusal.message_zh
    assert "学校名称" in parsed.refusal.message_zh
    assert "第二小学\\ud800" in parsed.refusal.message_zh


def test_a_read_file_pickles_compactly_and_comes_back_equal() -> None:
    """Reader processes send each parsed file back pickled: its columns must travel once, not
    once per column (they are slices of one Arrow array, and pyarrow pickles a slice whole)."""
    import pickle

    parsed = read_return(return_bytes(progress_rows(200), "progress"), "r.csv")
    assert_ok(parsed)
    data_bytes = sum(c.nbytes for c in parsed.grid.columns)

    blob = pickle.dumps(parsed, protocol=5)
    back = pickle.loads(blob)

    assert len(blob) < 2 * data_bytes + 20_000
    assert back.grid.names == parsed.grid.names
    assert [c.to_pylist() for c in back.grid.columns] == [c.to_pylist() for c in parsed.grid.columns]
    assert back.grid.numbers.tolist() == parsed.grid.numbers.tolist()
    assert back.rows.equals(parsed.rows)

    parsed.release_rows()
    released = pickle.loads(pickle.dumps(parsed))
    assert released.n_rows == 200
    with pytest.raises(RuntimeError, match="released"):
        _ = released.rows
