"""The demo and benchmark data: files on disk in the layout and shapes the pipeline reads.

Files are read back here with pandas/openpyxl/json directly, never with the pipeline's reader,
so these tests say what is in the files, not what the reader makes of them.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest

from gaibao.contract import COLUMNS, KIND_FILE_HINTS, PROGRESS_COLUMNS, SUMMABLE_COLUMNS
from gaibao.demo import RULES, TAIHE_FUNDING, DemoManifest, generate_demo
from gaibao.returnfiles import FileStyle, header_for, write_return

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "benchmarks"))  # after the packages: benchmarks/portal.py must not shadow portal/
from gen_national import generate_national  # noqa: E402

_FULL = str.maketrans("０１２３４５６７８９", "0123456789")
_PERIOD_IN_NAME = re.compile(r"(20\d\d)(?:-(\d\d)|(\d\d)|年(\d{1,2})月)")


# --------------------------------------------------------------------------------------------
# A small independent reader for the tests: raw cells, header found, headers mapped.


def _raw_rows(path: Path, encoding: str | None, kind: str) -> list[list[Any]]:
    """Every line/row of a file as a list of cells (row 1 first); JSON as header + records."""
    if path.suffix == ".csv":
        frame = pd.read_csv(
            path, encoding=encoding, header=None, dtype=str, keep_default_na=False, skip_blank_lines=False
        )
        return frame.to_numpy().tolist()
    if path.suffix == ".xlsx":
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
        hints = {"progress": "进展", "funding": "资金", "plan": "规划"}
        sheet = next((ws for ws in wb.worksheets if hints[kind] in ws.title), wb.worksheets[0])
        rows = [list(r) for r in sheet.iter_rows(values_only=True)]
        wb.close()
        return rows
    records = json.loads(path.read_text(encoding="utf-8"))
    header = list(records[0])
    return [header] + [[rec.get(h) for h in header] for rec in records]


def _norm_header(text: str) -> tuple[str, str | None]:
    """(base, unit) of a header: brackets of either width, spaces stripped."""
    t = str(text).replace(" ", "").replace("（", "(").replace("）", ")")
    m = re.match(r"^(.*?)\((.*)\)$", t)
    return (m.group(1), m.group(2)) if m else (t, None)


def _header_map(cells: list[Any], kind: str) -> dict[str, tuple[int, str | None]]:
    """canonical name -> (column index, unit written) for a header row."""
    out: dict[str, tuple[int, str | None]] = {}
    for i, cell in enumerate(cells):
        if cell is None:
            continue
        base, unit = _norm_header(cell)
        for col in COLUMNS[kind]:
            if base in col.all_headers:
                out[col.name] = (i, unit)
    return out


def _find_header(rows: list[list[Any]], kind: str) -> int:
    for i, r in enumerate(rows):
        if len(_header_map(r, kind)) >= 3:
            return i
    raise AssertionError("no header row")


def _number(cell: Any, unit: str | None) -> float | None:
    if cell is None or (isinstance(cell, str) and cell.strip() in ("", "—", "-")):
        return None
    value = (
        float(str(cell).translate(_FULL).replace(",", "").strip()) if isinstance(cell, str) else float(cell)
    )
    factor = {"元": 1e-4, "万平方米": 1e4}.get(unit or "", 1.0)
    return value * factor


def _date(cell: Any) -> date | None:
    if cell is None or (isinstance(cell, str) and cell.strip() in ("", "—", "-")):
        return None
    if isinstance(cell, datetime):
        return cell.date()
    m = re.match(r"(\d{4})\D(\d{1,2})\D(\d{1,2})", str(cell))
    assert m, cell
    return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))


def _record(rows: list[list[Any]], row_number: int, kind: str, is_json: bool = False) -> dict[str, Any]:
    """The cells of the row the clerk sees as ``row_number`` (JSON: record index + 1)."""
    hmap = _header_map(rows[_find_header(rows, kind)], kind)
    line = rows[row_number] if is_json else rows[row_number - 1]
    return {name: (line[i], unit) for name, (i, unit) in hmap.items()}


def _data_rows(path: Path, encoding: str | None, kind: str) -> list[dict[str, Any]]:
    rows = _raw_rows(path, encoding, kind)
    h = _find_header(rows, kind)
    hmap = _header_map(rows[h], kind)
    out = []
    for line in rows[h + 1 :]:
        if all(c in (None, "") for c in line):
            continue
        rec = {name: (line[i], unit) for name, (i, unit) in hmap.items()}
        if kind == "progress" and str(rec.get("school_name", ("",))[0]) in ("合计", "总计"):
            continue
        out.append(rec)
    return out


# --------------------------------------------------------------------------------------------
# The demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoManifest:
    return generate_demo(tmp_path_factory.mktemp("demo") / "home")


def test_demo_writes_a_folder_per_county_and_both_kinds_for_every_month(demo: DemoManifest) -> None:
    assert len(demo.counties) == 15
    assert demo.periods[0] == "2017-01" and demo.periods[-1] == "2018-12" and len(demo.periods) == 24
    assert sorted(p.name for p in demo.inbox.iterdir()) == sorted(demo.counties)
    missing = {(a.county_code, a.period, a.kind) for a in demo.anomalies_of("MISSING")}
    assert missing == {("341221", "2018-10", "progress")}
    for county in demo.counties:
        for period in demo.periods:
            for kind in ("progress", "funding"):
                found = demo.files_of(county, period, kind)
                assert (len(found) == 0) == ((county, period, kind) in missing), (county, period, kind)
    on_disk = sorted(p for p in demo.inbox.rglob("*") if p.is_file())
    assert on_disk == sorted(f.path for f in demo.files)
    assert demo.seconds < 30


def test_demo_file_names_carry_period_and_kind(demo: DemoManifest) -> None:
    for f in demo.files:
        periods = {
            f"{m.group(1)}-{int(m.group(2) or m.group(3) or m.group(4)):02d}"
            for m in _PERIOD_IN_NAME.finditer(f.path.name)
        }
        assert periods == {f.period}, f.path.name
        kinds = {k for k, hints in KIND_FILE_HINTS.items() if any(h in f.path.name for h in hints)}
        assert kinds == {f.kind}, f.path.name
    forms = {
        "iso": r"20\d\d-\d\d",
        "compact": r"20\d\d\d\d",
        "zh": r"20\d\d年\d{1,2}月",
    }
    for form, pattern in forms.items():
        assert any(re.search(pattern, f.path.name) for f in demo.files), form


def test_demo_files_decode_in_their_declared_encodings(demo: DemoManifest) -> None:
    seen = set()
    for f in demo.files:
        data = f.path.read_bytes()
        seen.add((f.fmt, f.encoding))
        if f.fmt == "xlsx":
            assert data[:2] == b"PK"
            continue
        text = data.decode(f.encoding)
        assert any(h in text for h in ("区划代码", "县区代码", "county_code"))
        if f.encoding == "utf-8-sig":
            assert data.startswith(b"\xef\xbb\xbf")
        if f.encoding in ("gbk", "gb18030"):
            with pytest.raises(UnicodeDecodeError):
                data.decode("utf-8")
        if f.fmt == "json":
            assert isinstance(json.loads(text), list)
    assert seen >= {
        ("csv", "utf-8"),
        ("csv", "utf-8-sig"),
        ("csv", "gbk"),
        ("csv", "gb18030"),
        ("xlsx", None),
        ("json", "utf-8"),
    }


def test_demo_mtimes_are_submission_times_and_only_the_late_one_is_late(demo: DemoManifest) -> None:
    late = {(a.county_code, a.period, a.kind) for a in demo.anomalies_of("LATE")}
    assert late == {("341226", "2018-11", "progress")}
    for f in demo.files:
        assert abs(f.path.stat().st_mtime - f.received_at.timestamp()) < 1e-3
        y, m = int(f.period[:4]), int(f.period[5:7])
        due = datetime(y + (m == 12), m % 12 + 1, 5, 23, 59, 59, tzinfo=f.received_at.tzinfo)
        period_start = datetime(y, m, 1, tzinfo=f.received_at.tzinfo)
        assert f.received_at > period_start
        assert (f.received_at > due) == ((f.folder_county, f.period, f.kind) in late), f.path


def test_demo_resubmission_is_a_later_file_for_the_same_period(demo: DemoManifest) -> None:
    (resub,) = demo.anomalies_of("RESUBMITTED")
    files = sorted(demo.files_of(resub.county_code, resub.period, resub.kind), key=lambda f: f.received_at)
    assert len(files) == 2
    first, corrected = files
    assert first.superseded and not corrected.superseded and corrected.path == resub.file
    assert corrected.path.stat().st_mtime > first.path.stat().st_mtime
    assert "2017年6月" in corrected.path.name and "2017年6月" in first.path.name
    # The first file's fault is gone from the corrected one.
    (fault,) = [a for a in demo.anomalies if a.file == first.path]
    assert fault.rule == "COMPLETED_AFTER_PERIOD"
    bad = _record(_raw_rows(first.path, None, "progress"), fault.row_number, "progress")
    good = _record(_raw_rows(corrected.path, None, "progress"), fault.row_number, "progress")
    assert bad["project_id"][0] == good["project_id"][0] == fault.project_id
    assert _date(bad["completed_date"][0]) > date(2017, 6, 30) >= _date(good["completed_date"][0])


def test_demo_wrong_county_file_names_another_county(demo: DemoManifest) -> None:
    (a,) = demo.anomalies_of("WRONG_COUNTY")
    assert a.file.parent.name == a.county_code == "341204"
    f = next(f for f in demo.files if f.path == a.file)
    codes = {str(r["county_code"][0]) for r in _data_rows(a.file, f.encoding, "progress")}
    assert codes == {a.value} == {"341203"}


# Every E and W rule of the contract, and every file-level case the brief asks for.
EXPECTED_RULES = set(RULES)


def test_demo_anomalies_cover_every_rule(demo: DemoManifest) -> None:
    assert {a.rule for a in demo.anomalies} == EXPECTED_RULES
    assert sum(a.explained for a in demo.anomalies) >= 2
    assert all(a.period != demo.periods[-1] for a in demo.anomalies if not a.persists)


def _row_anomalies(demo: DemoManifest) -> list[Any]:
    return [a for a in demo.anomalies if a.row_number is not None]


def test_demo_row_anomalies_are_in_the_files(demo: DemoManifest) -> None:
    text_cols = {"school_code", "school_name", "project_id", "project_type", "status"}
    date_cols = {"completed_date", "actual_start"}
    for a in _row_anomalies(demo):
        f = next(f for f in demo.files if f.path == a.file)
        rec = _record(_raw_rows(f.path, f.encoding, a.kind), a.row_number, a.kind, f.fmt == "json")
        if a.project_id is not None:
            assert str(rec["project_id"][0]) == a.project_id, a
        cell, unit = rec[a.column]
        if a.value is None:
            assert cell in (None, "", "—", "-"), a
        elif a.column in text_cols:
            assert str(cell) == a.value, a
        elif a.column in date_cols:
            assert _date(cell) == date.fromisoformat(a.value), a
        else:
            assert _number(cell, unit) == pytest.approx(float(a.value), abs=1e-6), a
        if a.explained:
            assert rec["note"][0] not in (None, "", "—", "-"), a


@pytest.mark.parametrize(
    ("rule", "check"),
    [
        ("COMPLETED_AREA_GT_STARTED", lambda r: r["completed_area_m2"] > r["started_area_m2"]),
        (
            "FUNDS_EXCEED_INVEST",
            lambda r: r["funds_central_wan"] + r["funds_local_wan"] > r["completed_invest_wan"] + 0.01,
        ),
        ("COMPLETED_AREA_OVER_150PCT", lambda r: r["completed_area_m2"] > 1.5 * r["planned_area_m2"]),
        ("COMPLETED_INVEST_OVER_150PCT", lambda r: r["completed_invest_wan"] > 1.5 * r["planned_invest_wan"]),
        ("STARTED_AREA_NEGATIVE", lambda r: r["started_area_m2"] < 0),
        ("NOT_STARTED_WITH_PROGRESS", lambda r: r["status"] == "未开工" and r["started_area_m2"] > 0),
    ],
)
def test_demo_numeric_faults_break_their_rule(demo: DemoManifest, rule: str, check: Any) -> None:
    anomalies = demo.anomalies_of(rule)
    assert anomalies
    for a in anomalies:
        f = next(f for f in demo.files if f.path == a.file)
        rec = _record(_raw_rows(f.path, f.encoding, "progress"), a.row_number, "progress", f.fmt == "json")
        values = {k: (_number(v, u) if k.endswith(("_m2", "_wan")) else str(v)) for k, (v, u) in rec.items()}
        assert check(values), (a, values)


def test_demo_cross_period_warnings(demo: DemoManifest) -> None:
    def rows(county: str, period: str) -> dict[str, dict[str, Any]]:
        (f,) = [f for f in demo.files_of(county, period, "progress") if not f.superseded]
        return {str(r["project_id"][0]): r for r in _data_rows(f.path, f.encoding, "progress")}

    def prev(period: str) -> str:
        return demo.periods[demo.periods.index(period) - 1]

    (drop,) = demo.anomalies_of("DROPPED_PROJECT")
    assert drop.project_id in rows(drop.county_code, prev(drop.period))
    assert drop.project_id not in rows(drop.county_code, drop.period)
    (status,) = demo.anomalies_of("STATUS_REGRESSION")
    before, now = rows(status.county_code, prev(status.period)), rows(status.county_code, status.period)
    assert str(before[status.project_id]["status"][0]) == "已竣工"
    assert str(now[status.project_id]["status"][0]) == "在建"
    (reg,) = [a for a in demo.anomalies_of("REGRESSION") if a.kind == "progress"]
    b, n = rows(reg.county_code, prev(reg.period)), rows(reg.county_code, reg.period)
    assert _number(*n[reg.project_id][reg.column]) < _number(*b[reg.project_id][reg.column])


def test_demo_total_mismatch_and_total_rows(demo: DemoManifest) -> None:
    (a,) = demo.anomalies_of("TOTAL_MISMATCH")
    f = next(f for f in demo.files if f.path == a.file)
    raw = _raw_rows(f.path, f.encoding, "progress")
    hmap = _header_map(raw[_find_header(raw, "progress")], "progress")
    total = next(r for r in raw if "合计" in [str(c) for c in r])
    rows = _data_rows(f.path, f.encoding, "progress")
    for col in SUMMABLE_COLUMNS["progress"]:
        i, unit = hmap[col]
        summed = sum(_number(*r[col]) or 0.0 for r in rows)
        gap = _number(total[i], unit) - summed
        expected = float(a.value) if col == a.column else 0.0
        assert gap == pytest.approx(expected, abs=1e-3), col


def test_demo_funding_faults_and_taihe_figures(demo: DemoManifest) -> None:
    for a in demo.anomalies:
        if a.kind != "funding" or a.row_number is None:
            continue
        f = next(f for f in demo.files if f.path == a.file)
        (row,) = _data_rows(f.path, f.encoding, "funding")
        v = {k: _number(c, u) if k != "period" and k != "county_code" else c for k, (c, u) in row.items()}
        if a.rule == "FUNDING_PARTS_EXCEED_TOTAL":
            parts = ("funds_rural_infra_wan", "funds_urban_wan", "funds_equipment_wan", "funds_land_wan")
            assert sum(v[p] for p in parts) > v["funds_total_wan"]
        elif a.rule == "TEACHERS_RURAL_EXCEEDS_RECRUITED":
            assert v["teachers_rural"] > v["teachers_recruited"]
        elif a.rule == "NOT_WHOLE_NUMBER":
            assert not float(v["teachers_recruited"]).is_integer()
        elif a.rule == "FUNDING_TOTAL_MISSING":
            assert v["funds_total_wan"] is None
        elif a.rule == "FUNDING_NEGATIVE":
            assert v[a.column] < 0
    (taihe,) = demo.files_of("341222", "2018-12", "funding")
    (row,) = _data_rows(taihe.path, taihe.encoding, "funding")
    for col, expected in TAIHE_FUNDING.items():
        assert _number(*row[col]) == pytest.approx(expected), col


def test_demo_headline_story(demo: DemoManifest) -> None:
    bengbu, fuyang = demo.headline["340300"], demo.headline["341200"]
    assert bengbu["area_completion_rate"] == pytest.approx(1.083, abs=5e-4)
    assert bengbu["equipment_completion_rate"] == pytest.approx(0.919, abs=5e-4)
    assert bengbu["completed_area_m2"] == pytest.approx(1_428_400, abs=1)
    assert fuyang["area_completion_rate"] < 0.95
    assert demo.headline["341221"]["area_completion_rate"] < 0.75  # 临泉县 lags most
    assert len(demo.stuck_projects) >= 4 and len(demo.stalled_projects) >= 4
    # The headline is what the 2018-12 files say: read the Bengbu files back.
    completed = 0.0
    for county in [c for c in demo.counties if c.startswith("3403")]:
        (f,) = demo.files_of(county, "2018-12", "progress")
        for r in _data_rows(f.path, f.encoding, "progress"):
            if str(r["project_type"][0]) == "校舍改造":
                completed += _number(*r["completed_area_m2"])
    assert completed == pytest.approx(1_428_400, abs=1)


def test_demo_projects_are_realistic(demo: DemoManifest) -> None:
    (f,) = demo.files_of("340302", "2018-06", "progress")
    rows = _data_rows(f.path, f.encoding, "progress")
    for r in rows:
        code, pid = str(r["school_code"][0]), str(r["project_id"][0])
        assert re.fullmatch(r"340302\d{4}", code)
        assert re.fullmatch(r"LZH-20(1[4-8])-\d{3}", pid)
        assert str(r["reporter"][0]).strip() and re.fullmatch(r"[\d-]{11,12}", str(r["phone"][0]))
    counts = {
        c: len(demo.files_of(c, "2018-12", "progress")) and demo.headline[c]["projects_total"]
        for c in demo.counties
    }
    assert min(counts.values()) >= 30 and max(counts.values()) <= 150


def test_demo_spreads_the_real_file_variations(demo: DemoManifest) -> None:
    headers: set[str] = set()
    cells: list[str] = []
    titles = excel_dates = 0
    for f in demo.files:
        if f.kind != "progress" or f.period not in ("2017-06", "2018-03", "2018-09"):
            continue
        raw = _raw_rows(f.path, f.encoding, "progress")
        h = _find_header(raw, "progress")
        titles += h > 0
        headers |= {str(c) for c in raw[h] if c is not None}
        for r in raw[h + 1 :]:
            cells += [str(c) for c in r if c is not None]
            excel_dates += any(isinstance(c, datetime) for c in r)
    joined = "\n".join(cells)
    assert titles and excel_dates
    assert any("(平方米)" in h for h in headers) and any("（平方米）" in h for h in headers)
    assert any(h.startswith(" ") for h in headers)  # stray spaces
    assert {"学校代码", "填报月份", "planned_area_m2"} <= headers  # aliases, canonical names
    assert any("（元）" in h or "(元)" in h for h in headers) and any("万平方米" in h for h in headers)
    for token in ("合计", "—", "年", "/", "１", ",", " 1"):
        assert token in joined, token
    assert re.search(r"\b20\d\d\.\d\d\.\d\d\b", joined)  # 2017.06.15
    assert re.search(r"\b20\d\d(0[1-9]|1[0-2])\b", joined)  # period 201706


def test_demo_plan_file(demo: DemoManifest) -> None:
    assert demo.plan_file.exists() and demo.plan_file.suffix == ".xlsx"
    rows = _data_rows(demo.plan_file, None, "plan")
    assert sorted(str(r["county_code"][0]) for r in rows) == sorted(demo.counties)
    assert {str(r["plan_cycle"][0]) for r in rows} == {"2014-2018"}
    wb = openpyxl.load_workbook(demo.plan_file)
    assert wb.worksheets[0].merged_cells.ranges  # the merged title cell


def test_demo_is_deterministic(tmp_path: Path) -> None:
    """Same seed, same projects, funding and bytes (a second full run would double the test time)."""
    import numpy as np

    from gaibao.demo import _funding_series, _make_projects

    one = _make_projects(np.random.default_rng(7), "340321")
    two = _make_projects(np.random.default_rng(7), "340321")
    assert one == two and len(one) == 140
    assert _funding_series(np.random.default_rng(7), "340321", ["2018-11", "2018-12"]) == _funding_series(
        np.random.default_rng(7), "340321", ["2018-11", "2018-12"]
    )
    style = FileStyle(fmt="xlsx", title_rows=True, data_sheet="进展", date_style="excel", total_row=True)
    rows = [one[0].row("2018-06"), one[1].row("2018-06")]
    created = datetime(2018, 7, 3, 9, 0)
    a = write_return(tmp_path / "a.xlsx", "progress", rows, style, county_name="怀远县", created=created)
    b = write_return(tmp_path / "b.xlsx", "progress", rows, style, county_name="怀远县", created=created)
    assert a.path.read_bytes() == b.path.read_bytes()


# --------------------------------------------------------------------------------------------
# The writer


ROW = {
    "period": "2017-06",
    "county_code": "340321",
    "school_code": "3403210001",
    "school_name": "城关镇中心小学",
    "project_id": "HY-2016-001",
    "project_type": "校舍改造",
    "status": "在建",
    "planned_area_m2": 1234.5,
    "started_area_m2": 1234.5,
    "completed_area_m2": 0.0,
    "planned_invest_wan": 210.35,
    "completed_invest_wan": 88.1,
    "funds_central_wan": 50.0,
    "funds_local_wan": 38.1,
    "planned_start": date(2016, 3, 1),
    "actual_start": date(2016, 4, 2),
    "completed_date": None,
    "reporter": "张伟",
    "phone": "0552-4012345",
    "note": None,
}


@pytest.mark.parametrize(
    ("style", "area_cell", "money_cell", "date_cell", "period_cell", "none_cell"),
    [
        (FileStyle(), "1234.5", "210.35", "2016-04-02", "2017-06", ""),
        (
            FileStyle(encoding="utf-8-sig", headers="halfwidth", numbers="thousands"),
            "1,234.5",
            "210.35",
            "2016-04-02",
            "2017-06",
            "",
        ),
        (
            FileStyle(encoding="gbk", money_unit="元", none_as="—", date_style="zh"),
            "1234.5",
            "2103500",
            "2016年4月2日",
            "2017-06",
            "—",
        ),
        (
            FileStyle(
                encoding="gb18030",
                area_unit="万平方米",
                numbers="fullwidth",
                date_style="dot",
                period_style="zh",
            ),
            "０.１２３４５",
            "２１０.３５",
            "2016.04.02",
            "2017年6月",
            "",
        ),
        (
            FileStyle(headers="canonical", none_as="-", date_style="slash", period_style="compact"),
            "1234.5",
            "210.35",
            "2016/4/2",
            "201706",
            "-",
        ),
        (FileStyle(headers="aliases", period_style="slash"), "1234.5", "210.35", "2016-04-02", "2017/06", ""),
    ],
)
def test_write_csv_variants(
    tmp_path: Path,
    style: FileStyle,
    area_cell: str,
    money_cell: str,
    date_cell: str,
    period_cell: str,
    none_cell: str,
) -> None:
    w = write_return(tmp_path / "r.csv", "progress", [ROW, ROW], style, county_name="怀远县")
    frame = pd.read_csv(w.path, encoding=style.encoding, dtype=str, keep_default_na=False)
    cols = {c.name: header_for(c, style) for c in PROGRESS_COLUMNS}
    assert list(frame.columns) == list(cols.values())
    first = frame.iloc[0]
    assert first[cols["planned_area_m2"]] == area_cell
    assert first[cols["planned_invest_wan"]] == money_cell
    assert first[cols["actual_start"]] == date_cell
    assert first[cols["period"]] == period_cell
    assert first[cols["completed_date"]] == none_cell
    assert w.row_numbers == (2, 3)


def test_write_headers_styles() -> None:
    col = next(c for c in PROGRESS_COLUMNS if c.name == "planned_area_m2")
    assert header_for(col, FileStyle()) == "规划面积（平方米）"
    assert header_for(col, FileStyle(headers="halfwidth")) == "规划面积(平方米)"
    assert header_for(col, FileStyle(headers="spaces")) == " 规划面积 （平方米）"
    assert header_for(col, FileStyle(area_unit="万平方米")) == "规划面积（万平方米）"
    assert header_for(col, FileStyle(headers="canonical", area_unit="万平方米")) == "planned_area_m2"


def test_write_csv_title_total_and_blank_rows(tmp_path: Path) -> None:
    style = FileStyle(title_rows=True, total_row=True, blank_rows=True, serial_column=True)
    rows = [dict(ROW, project_id=f"HY-2016-{i:03d}", completed_invest_wan=10.0 * i) for i in range(1, 7)]
    w = write_return(
        tmp_path / "r.csv",
        "progress",
        rows,
        style,
        county_name="怀远县",
        total_adjust={"completed_invest_wan": 1.0},
    )
    lines = w.path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("怀远县全面改薄项目进展月报（2017年6月）")
    assert w.header_row == 3 and lines[2].startswith("序号,报告期")
    for i, n in enumerate(w.row_numbers):
        assert f"HY-2016-{i + 1:03d}" in lines[n - 1]
    assert lines[w.row_numbers[3]].strip(",") == ""  # a blank row after the 4th data row
    assert "合计" in lines[w.total_row - 1]
    assert w.total_values["completed_invest_wan"] == pytest.approx(211.0)
    assert w.total_values["planned_area_m2"] == pytest.approx(6 * 1234.5)


def test_write_xlsx_named_sheet_merged_title_and_excel_dates(tmp_path: Path) -> None:
    style = FileStyle(
        fmt="xlsx", title_rows=True, data_sheet="进展", date_style="excel", total_row=True, money_unit="元"
    )
    w = write_return(tmp_path / "r.xlsx", "progress", [ROW, ROW], style, county_name="怀远县")
    wb = openpyxl.load_workbook(w.path)
    assert wb.sheetnames == ["填报说明", "进展"]
    ws = wb["进展"]
    assert ws["A1"].value == "怀远县全面改薄项目进展月报（2017年6月）"
    assert any(str(r).startswith("A1:") for r in ws.merged_cells.ranges)
    header = [c.value for c in ws[w.header_row]]
    i_start = header.index("实际开工日期") + 1
    i_money = header.index("规划投资（元）") + 1
    assert ws.cell(w.row_numbers[0], i_start).value == datetime(2016, 4, 2)
    assert ws.cell(w.row_numbers[0], i_money).value == pytest.approx(2103500)
    assert ws.cell(w.total_row, header.index("学校名称") + 1).value == "合计"


def test_write_json_records(tmp_path: Path) -> None:
    w = write_return(tmp_path / "r.json", "progress", [ROW], FileStyle(fmt="json", headers="canonical"))
    (rec,) = json.loads(w.path.read_text(encoding="utf-8"))
    assert (
        rec["planned_area_m2"] == 1234.5
        and rec["completed_date"] is None
        and rec["actual_start"] == "2016-04-02"
    )


def test_write_rejects_unknown_style_values() -> None:
    with pytest.raises(ValueError):
        FileStyle(encoding="latin-1")
    with pytest.raises(ValueError):
        FileStyle(money_unit="亿元")


# --------------------------------------------------------------------------------------------
# The national benchmark data


def test_national_tiny_scale(tmp_path: Path) -> None:
    m = generate_national(tmp_path, scale=0.01, seed=3, workers=1)
    assert m.counties == 28
    folders = sorted(p.name for p in m.inbox.iterdir())
    assert len(folders) == 28 and all(re.fullmatch(r"\d{6}", c) for c in folders)
    div = pd.read_csv(m.divisions_path, dtype=str)
    assert list(div.columns) == ["county_code", "county_name", "city_code", "city_name"]
    assert sorted(div["county_code"]) == folders
    assert (div["city_code"].str[:4] == div["county_code"].str[:4]).all() and div["city_code"].str.endswith(
        "00"
    ).all()
    plan = pd.read_csv(m.plan_path, dtype=str)
    assert sorted(plan["区划代码"]) == folders and list(plan.columns)[1] == "五年规划校舍改造面积（平方米）"

    assert m.files_by_format == {"csv_utf8": 15, "csv_gbk": 8, "xlsx": 4, "json": 1}
    progress = [p for p in m.inbox.rglob("*") if p.is_file() and "funding" not in p.name]
    assert len(progress) == 28 and m.funding_files == 28
    rows_by_format = {"csv_utf8": 0, "csv_gbk": 0, "xlsx": 0, "json": 0}
    bad_status = 0
    for p in progress:
        if p.suffix == ".csv":
            data = p.read_bytes()
            try:
                data.decode("utf-8")
                fmt, enc = "csv_utf8", "utf-8"
            except UnicodeDecodeError:
                fmt, enc = "csv_gbk", "gbk"
            frame = pd.read_csv(p, encoding=enc, dtype=str)
        elif p.suffix == ".xlsx":
            fmt, frame = "xlsx", pd.read_excel(p, sheet_name="进展", dtype=str, engine="calamine")
            frame.columns = [c.label_zh for c in PROGRESS_COLUMNS]
        else:
            fmt = "json"
            frame = pd.DataFrame(json.loads(p.read_text(encoding="utf-8")))
            frame.columns = [c.label_zh for c in PROGRESS_COLUMNS]
        rows_by_format[fmt] += len(frame)
        assert (frame["区划代码"].astype(str) == p.parent.name).all()
        bad_status += int((frame["项目状态"] == "停工").sum())
    assert rows_by_format == m.rows_by_format
    assert sum(rows_by_format.values()) == m.rows_total
    assert 150 * 28 <= m.rows_total <= 550 * 28
    assert bad_status == m.bad_by_rule["STATUS_INVALID"]
    assert 0.005 < m.bad_rows / m.rows_total < 0.02
    assert (m.root / "manifest.json").exists()
