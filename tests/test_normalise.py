"""Typing a batch: every number, date and period form of the contract, units, statuses, TYPE_* findings."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tasks.normalise import normalise_batch, parse_period
from tasks.read import ParsedReturn


def parsed(
    rows: list[dict], unit_factors: dict[str, float] | None = None, kind: str = "progress"
) -> ParsedReturn:
    frame = pd.DataFrame(rows).astype(object)
    frame = frame.where(frame.notna(), None)
    frame["row_number"] = range(3, 3 + len(frame))
    return ParsedReturn.from_frames(kind, frame, unit_factors=unit_factors or {})


def type_one(column: str, value: str | None, kind: str = "progress", factors: dict[str, float] | None = None):
    typed, findings = normalise_batch(kind, [("s1", parsed([{column: value}], factors, kind))])
    return typed[column].iloc[0], findings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1234.5", 1234.5),
        ("1,234.5", 1234.5),
        ("12,345,678", 12345678.0),
        ("１２３．５", 123.5),
        ("１，２３４", 1234.0),
        ("  42  ", 42.0),
        ("\u3000７\u3000", 7.0),
        ("-3", -3.0),
        ("0", 0.0),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("—", None),
        ("-", None),
        ("", None),
        (None, None),
    ],
)
def test_number_forms(text: str | None, expected: float | None) -> None:
    value, findings = type_one("planned_area_m2", text)
    if expected is None:
        assert math.isnan(value)
    else:
        assert value == pytest.approx(expected)
    assert findings.empty


@pytest.mark.parametrize("text", ["abc", "12平方米", "1,23", "1.2.3", "inf", "nan", "１２a"])
def test_number_that_cannot_be_typed_is_a_type_error(text: str) -> None:
    value, findings = type_one("completed_invest_wan", text)
    assert math.isnan(value)
    assert findings["rule"].tolist() == ["TYPE_NUMBER"]
    row = findings.iloc[0]
    assert (row["column_name"], row["value"], row["row_number"], row["severity"]) == (
        "completed_invest_wan",
        text,
        3,
        "error",
    )
    assert row["message"].startswith("第3行「完成投资（万元）」为「")
    assert "不是有效数字" in row["message"]


@pytest.mark.parametrize(
    ("column", "text", "factor", "expected"),
    [
        ("completed_invest_wan", "15000000", 1e-4, 1500.0),
        ("completed_invest_wan", "15,000,000", 1e-4, 1500.0),
        ("planned_area_m2", "1.5", 1e4, 15000.0),
        ("planned_invest_wan", "2", 1e4, 20000.0),
    ],
)
def test_unit_factors_are_applied(column: str, text: str, factor: float, expected: float) -> None:
    value, findings = type_one(column, text, factors={column: factor})
    assert value == pytest.approx(expected)
    assert findings.empty


def test_unit_factors_apply_per_submission() -> None:
    a = parsed([{"completed_invest_wan": "10000"}], {"completed_invest_wan": 1e-4})
    b = parsed([{"completed_invest_wan": "10000"}])
    typed, _ = normalise_batch("progress", [("a", a), ("b", b)])
    assert typed.set_index("submission_id")["completed_invest_wan"].to_dict() == {"a": 1.0, "b": 10000.0}


@pytest.mark.parametrize(
    "text",
    [
        "2017-06-15",
        "2017/6/15",
        "2017/06/15",
        "2017.06.15",
        "2017.6.15",
        "2017年6月15日",
        "2017 年 6 月 15 日",
        "２０１７－０６－１５",
        "2017-06-15 00:00:00",
        "2017-06-15T00:00:00",
        "20170615",
        "42901",  # Excel serial number
        "42901.0",
    ],
)
def test_date_forms(text: str) -> None:
    value, findings = type_one("actual_start", text)
    assert value == pd.Timestamp("2017-06-15")
    assert findings.empty


@pytest.mark.parametrize("text", ["2017-02-30", "2017-13-01", "昨天", "15/06/2017", "99999"])
def test_bad_date_is_a_type_error(text: str) -> None:
    value, findings = type_one("completed_date", text)
    assert pd.isna(value)
    assert findings[["rule", "column_name", "value"]].values.tolist() == [
        ["TYPE_DATE", "completed_date", text]
    ]
    assert "竣工日期" in findings["message"].iloc[0]


def test_date_column_dtype_is_day_precision() -> None:
    typed, _ = normalise_batch("progress", [("s", parsed([{"actual_start": "2017-06-15 13:45:00"}]))])
    assert str(typed["actual_start"].dtype) == "datetime64[ms]"
    assert typed["actual_start"].iloc[0] == pd.Timestamp("2017-06-15")


@pytest.mark.parametrize(
    "text",
    [
        "2017-06",
        "2017/06",
        "201706",
        "2017年6月",
        "2017年06月",
        "2017-6",
        "２０１７年６月",
        "2017-06-01",
        "2017-06-01 00:00:00",
    ],
)
def test_period_forms(text: str) -> None:
    value, findings = type_one("period", text)
    assert value == "2017-06"
    assert findings.empty


@pytest.mark.parametrize("text", ["2017-13", "June 2017", "17-06", "201713"])
def test_bad_period_is_a_type_error(text: str) -> None:
    value, findings = type_one("period", text)
    assert pd.isna(value)
    assert findings["rule"].tolist() == ["TYPE_PERIOD"]
    assert findings["value"].iloc[0] == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2017-06", "2017-06"),
        ("340321_201706_progress.csv", "2017-06"),
        ("怀远县2017年6月进展月报.xlsx", "2017-06"),
        ("340321-2017-06-funding.json", "2017-06"),
        ("progress_2017.12.csv", "2017-12"),
        ("340321_progress.csv", None),
        ("201713.csv", None),
        (None, None),
    ],
)
def test_parse_period(text: str | None, expected: str | None) -> None:
    assert parse_period(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("已竣工", "已竣工"),
        ("竣工", "已竣工"),
        ("完工", "已竣工"),
        ("施工中", "在建"),
        ("建设中", "在建"),
        (" 在 建 ", "在建"),
        ("未开工", "未开工"),
    ],
)
def test_status_aliases(text: str, expected: str) -> None:
    value, findings = type_one("status", text)
    assert value == expected
    assert findings.empty


@pytest.mark.parametrize(
    ("column", "text", "expected"),
    [
        ("school_code", "３４０３２１０００１", "3403210001"),
        ("school_code", " 3403210001 ", "3403210001"),
        ("project_id", "ＨＹ－００１", "HY-001"),
        ("county_code", "340321", "340321"),
        ("school_name", " 怀远县第一中学（新校区） ", "怀远县第一中学（新校区）"),
    ],
)
def test_codes_and_text(column: str, text: str, expected: str) -> None:
    value, _ = type_one(column, text)
    assert value == expected


@pytest.mark.parametrize(
    ("text", "expected", "rule"),
    [
        ("1766", 1766, None),
        ("1,766", 1766, None),
        ("1766.0", 1766, None),
        ("12.5", None, "TYPE_INT"),
        ("多人", None, "TYPE_INT"),
    ],
)
def test_whole_numbers(text: str, expected: int | None, rule: str | None) -> None:
    value, findings = type_one("teachers_recruited", text, kind="funding")
    if expected is None:
        assert pd.isna(value)
        assert findings["rule"].tolist() == [rule]
        assert findings["value"].iloc[0] == text
    else:
        assert value == expected
        assert findings.empty


def test_batch_frame_shape_and_types() -> None:
    a = parsed([{"project_id": "A-1", "planned_area_m2": "1"}, {"project_id": "A-2", "planned_area_m2": "x"}])
    b = parsed([{"project_id": "B-1", "status": "竣工"}])
    typed, findings = normalise_batch("progress", [("a", a), ("b", b)])
    assert typed["submission_id"].tolist() == ["a", "a", "b"]
    assert typed["row_number"].tolist() == [3, 4, 3]
    assert str(typed["planned_area_m2"].dtype) == "float64"
    assert "note" in typed.columns and typed["note"].isna().all()  # absent optional column → null
    assert findings[["submission_id", "row_number", "project_id", "rule"]].values.tolist() == [
        ["a", 4, "A-2", "TYPE_NUMBER"]
    ]
