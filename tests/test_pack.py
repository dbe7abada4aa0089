"""The monthly pack built from a real warehouse: files, formats, injection, personal data, rebuilds."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa

from gaibao.contract import column, personal_columns
from reports import chart
from reports.config import ScoreWeights, Thresholds
from reports.inputs import load_inputs
from reports.pack import build_pack, compute_pack, letter_sections
from reports.sample import (
    HOSTILE_FORMULA,
    HOSTILE_SCRIPT,
    PERSONAL_NAME,
    PERSONAL_PHONE,
    load_into_warehouse,
    sample_inputs,
    sample_sid,
)
from warehouse.store import Warehouse

P = "2018-06"
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    """One sample warehouse (SQLite) and its pack, shared by the read-only tests of this module."""
    home = tmp_path_factory.mktemp("packhome")
    wh = Warehouse(f"sqlite:///{home / 'warehouse.db'}", home)
    wh.upgrade()
    inputs = sample_inputs(P)
    load_into_warehouse(wh, inputs)
    result = build_pack(wh.engine, P, home / "reports" / P, Thresholds(), ScoreWeights())
    yield wh, inputs, result
    wh.close()


def all_outputs(result) -> list[Path]:
    return sorted(p for p in result.out_dir.rglob("*") if p.is_file())


def text_of(path: Path) -> str:
    """Every string a reader could see in a file (XLSX: the XML parts, unzipped)."""
    if path.suffix == ".xlsx":
        with zipfile.ZipFile(path) as z:
            return "\n".join(z.read(n).decode("utf-8", "replace") for n in z.namelist() if n.endswith(".xml"))
    if path.suffix == ".png":
        return ""
    return path.read_text(encoding="utf-8-sig")


def test_pack_files_and_workbook_layout(built) -> None:
    _, _, result = built
    for key in ("html", "xlsx", "chart", "disclosure_csv", "disclosure_html", "manifest"):
        assert result.files[key].is_file() and result.files[key].stat().st_size > 0, key
    assert result.files["xlsx"].name == "全面改薄联席会议材料2018年6月.xlsx"
    assert result.files["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    wb = openpyxl.load_workbook(result.files["xlsx"])
    assert {"总览", "县区排名", "逾期未开工项目", "停滞项目", "数据质量", "资金与师资", "完成情况图"} <= set(
        wb.sheetnames
    )
    ws = wb["县区排名"]
    assert ws.freeze_panes == "A3"  # title row + header row frozen
    headers = [c.value for c in ws[2]]
    assert "面积完成率" in headers and "得分" in headers
    rate_col = headers.index("面积完成率") + 1
    cell = ws.cell(row=3, column=rate_col)
    assert isinstance(cell.value, float) and cell.number_format == "0.0%"
    area_col = headers.index("竣工面积（平方米）") + 1
    assert ws.cell(row=3, column=area_col).number_format == "#,##0"
    # the headline has one row per city plus the province
    assert wb["总览"].cell(row=3, column=1).value == "全省"


def test_every_exception_category_reaches_the_pack(built) -> None:
    _, _, result = built
    assert set(result.exception_counts) == {
        "NOT_STARTED_OVERDUE",
        "STALLED",
        "COUNTY_BEHIND",
        "MISSING_RETURN",
        "LATE_RETURN",
        "REFUSED_RETURN",
        "DATA_ERRORS",
        "UNEXPLAINED_WARNINGS",
    }
    html = result.files["html"].read_text(encoding="utf-8")
    for title in (
        "逾期未开工项目",
        "停滞项目",
        "进度滞后县区",
        "未报送月报",
        "逾期报送",
        "报送被退回",
        "数据错误",
        "预警未说明",
    ):
        assert title in html
    assert "data:image/png;base64," in html
    assert "cid:county-chart" in result.email_html and "data:image" not in result.email_html


def test_marts_are_stored(built) -> None:
    wh, _, result = built
    exc = wh.query("SELECT * FROM mart_exception WHERE period = :p", {"p": P})
    sc = wh.query("SELECT * FROM mart_scorecard WHERE period = :p", {"p": P})
    assert len(exc) == sum(result.exception_counts.values())
    assert len(sc) == 6 and sc["score"].between(0, 100).all()
    assert set(exc["since_period"]) <= {P, "2017-12", "2018-03"}


def test_formula_text_is_inert_in_xlsx_and_csv(built) -> None:
    _, _, result = built
    books = [result.files["xlsx"], *[lf.xlsx for lf in result.letters.values()]]
    found = 0
    for path in books:
        wb = openpyxl.load_workbook(path)
        for ws in wb.worksheets:
            for row in ws.iter_rows():
                for cell in row:
                    assert cell.data_type != "f", f"formula in {path.name}!{cell.coordinate}"
                    if cell.value == HOSTILE_FORMULA:
                        assert cell.data_type == "s"
                        found += 1
    assert found >= 2  # the pack's exception list and the county's letter
    for key in ("disclosure_csv", "exceptions_csv"):
        with result.files[key].open(encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.reader(fh))
        cells = [c for r in rows[1:] for c in r]
        assert "'" + HOSTILE_FORMULA in cells, key
        risky = [
            c
            for c in cells
            if c[:1] in ("=", "+", "@", "\t", "\r") or (c.startswith("-") and not _is_number(c))
        ]
        assert not risky, key


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def test_script_is_escaped_in_every_html_output(built) -> None:
    _, _, result = built
    htmls = [p for p in all_outputs(result) if p.suffix == ".html"]
    # the pack, the 公示 index, the 公示 pages of the four counties with projects, six letters
    assert len(htmls) == 2 + 4 + 6
    escaped_in = 0
    for path in htmls:
        text = path.read_text(encoding="utf-8")
        assert HOSTILE_SCRIPT not in text, path.name
        assert "<script" not in text.lower(), path.name
        escaped_in += ESCAPED_SCRIPT in text
    assert HOSTILE_SCRIPT not in result.email_html
    assert escaped_in >= 4  # pack, 公示 index and county page, the county's letter


def test_no_personal_data_in_any_output(built) -> None:
    _, _, result = built
    forbidden_headers = {column("progress", c).header_zh for c in personal_columns()} | set(
        personal_columns()
    )
    for path in all_outputs(result):
        text = text_of(path)
        assert PERSONAL_NAME not in text and PERSONAL_PHONE not in text, path.name
        for header in forbidden_headers - {"phone"}:
            assert header not in text, (path.name, header)
    # the public disclosure: an allow-list of columns
    with result.files["disclosure_csv"].open(encoding="utf-8-sig", newline="") as fh:
        header = next(csv.reader(fh))
    assert header[:3] == ["市", "县（区）", "学校名称"]
    assert not set(header) & forbidden_headers
    html = result.files["disclosure_html"].read_text(encoding="utf-8")
    assert "填报人" not in html and "联系电话" not in html and "备注" not in html


def test_letters_hold_only_their_own_county(built) -> None:
    _, inputs, result = built
    div = inputs.divisions
    facts = inputs.facts
    assert set(result.letters) == set(div["county_code"])
    for code, letter in result.letters.items():
        others = div[div["county_code"] != code]
        other_projects = set(facts.loc[facts["county_code"] != code, "project_id"])
        other_schools = set(facts.loc[facts["county_code"] != code, "school_name"])
        for path in (letter.html, letter.xlsx):
            text = text_of(path)
            for word in [*others["county_code"], *others["county_name"], *other_projects, *other_schools]:
                assert word not in text, (code, path.name, word)
    first = result.letters[div.at[0, "county_code"]]
    wb = openpyxl.load_workbook(first.xlsx)
    rejected = wb["被拒收的行"]
    values = [[c.value for c in r] for r in rejected.iter_rows(min_row=3)]
    assert any(r[2] == 7 and r[5] == "-5" and r[6] == "NEGATIVE_INVEST" for r in values)


def test_rebuild_same_figures_then_says_what_changed(warehouse_url: str, gaibao_home: Path) -> None:
    wh = Warehouse(warehouse_url, gaibao_home)
    try:
        wh.upgrade()
        inputs = sample_inputs(P, n_counties=4, projects_per_county=4)
        load_into_warehouse(wh, inputs)
        out = gaibao_home / "reports" / P
        first = build_pack(wh.engine, P, out, Thresholds(), ScoreWeights(), letters=False)
        again = build_pack(wh.engine, P, out, Thresholds(), ScoreWeights(), letters=False)
        assert again.pack_digest == first.pack_digest and again.changes == []
        manifest = pd.read_json(out / "manifest.json", typ="series")
        ids = {s["submission_id"] for s in manifest["submissions"]}
        assert sample_sid("340103", P, "progress") in ids
        # county 340103 resubmits with more completed area: the next build says so
        code = "340103"
        facts = inputs.facts[(inputs.facts["period"] == P) & (inputs.facts["county_code"] == code)].copy()
        sha = hashlib.sha256(b"resubmitted").hexdigest()
        sid = sha[:20]
        facts["submission_id"] = sid
        facts["completed_area_m2"] = facts["planned_area_m2"]
        facts["row_number"] = range(3, 3 + len(facts))
        sub = inputs.submissions[
            (inputs.submissions["county_code"] == code) & (inputs.submissions["kind"] == "progress")
        ].copy()
        sub["submission_id"], sub["sha256"], sub["rules_version"] = sid, sha, "sample000000"
        sub["received_at"] = sub["received_at"] + pd.Timedelta(hours=5)
        wh.load_batch(sub, facts, inputs.issues.iloc[0:0], "progress")
        wh.rebuild_marts()
        third = build_pack(wh.engine, P, out, Thresholds(), ScoreWeights(), letters=False)
        assert third.pack_digest != first.pack_digest
        text = "\n".join(third.changes)
        assert "庐阳区新增或重新报送进展月报" in text and "面积完成率" in text
        assert "与本期上次生成的材料相比" in third.files["html"].read_text(encoding="utf-8")
        with wh.engine.connect() as conn:
            n = conn.execute(
                sa.text("SELECT count(*) FROM pack_manifest WHERE period = :p"), {"p": P}
            ).scalar()
        assert n == 3
    finally:
        wh.close()


def test_chart_renders_without_a_cjk_font(monkeypatch: pytest.MonkeyPatch) -> None:
    table = pd.DataFrame(
        {
            "county_code": ["340102", "340103"],
            "county_name": ["瑶海区", "庐阳区"],
            "area_completion_rate": [1.083, 0.5],
            "equipment_completion_rate": [0.919, None],
        }
    )
    monkeypatch.setattr(chart, "cjk_font_path", lambda: None)
    png = chart.county_completion_png(table, "标题")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_compute_pack_is_pure_and_letters_cover_expected_counties() -> None:
    inputs = sample_inputs(P, n_counties=5, projects_per_county=4)
    data = compute_pack(inputs, Thresholds(), ScoreWeights())
    again = compute_pack(sample_inputs(P, n_counties=5, projects_per_county=4), Thresholds(), ScoreWeights())
    assert data.manifest.pack_digest == again.manifest.pack_digest
    letters = letter_sections(data)
    assert set(letters) == set(inputs.expected_counties)
    head = data.headline.frame
    assert head.iloc[0]["city_name"] == "全省"
    assert head.iloc[0]["area_completion_rate_change"] == pytest.approx(
        head.iloc[0]["area_completion_rate"] - _prev_area_rate(inputs)
    )


def _prev_area_rate(inputs) -> float:
    cp = inputs.county_progress[inputs.county_progress["period"] == "2018-05"]
    return cp["completed_area_m2"].sum() / cp["plan_area_m2"].sum()


def test_load_inputs_never_reads_personal_columns(built) -> None:
    wh, _, _ = built
    inputs = load_inputs(wh.engine, P)
    assert not set(inputs.facts.columns) & personal_columns()
    assert len(inputs.facts) and PERSONAL_NAME not in inputs.facts.to_string()


# -- rendering in real programs ----------------------------------------------------------------


def _apt_install(*packages: str) -> str | None:
    """Install Debian packages when root with apt-get; return why not otherwise."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "not root or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True, timeout=300, env=env)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-q", *packages], capture_output=True, timeout=900, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"apt-get failed: {exc}"
    return None if done.returncode == 0 else f"apt-get install {' '.join(packages)} exited {done.returncode}"


@pytest.fixture(scope="session")
def chromium() -> str:
    path = "/usr/bin/chromium"
    if not os.path.exists(path):
        why = _apt_install("chromium", "fonts-wqy-microhei")
        if not os.path.exists(path):
            pytest.skip(f"chromium is not installed and could not be installed ({why})")
    return path


def test_pack_html_renders_in_headless_chromium(built, chromium: str, tmp_path: Path) -> None:
    _, _, result = built
    shot = tmp_path / "pack.png"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,3000",
        result.files["html"].resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000


def test_pack_xlsx_converts_to_pdf_in_libreoffice(built, tmp_path: Path) -> None:
    office = shutil.which("libreoffice") or shutil.which("soffice")
    if not office:
        pytest.skip(
            "LibreOffice is not installed (Debian package libreoffice-calc); the XLSX was checked with openpyxl only"
        )
    _, _, result = built
    src = tmp_path / "pack.xlsx"
    shutil.copy(result.files["xlsx"], src)
    done = subprocess.run(
        [
            office,
            f"-env:UserInstallation=file://{tmp_path / 'lo'}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    pdf = tmp_path / "pack.pdf"
    assert pdf.is_file() and pdf.read_bytes()[:5] == b"%PDF-"


def test_lake_and_sql_reads_agree(built) -> None:
    wh, _, _ = built
    from_lake = load_inputs(wh, P)
    from_sql = load_inputs(wh.engine, P)
    key = ["period", "county_code", "project_id"]
    a = from_lake.facts.sort_values(key).reset_index(drop=True)
    b = from_sql.facts.sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 0
    assert a[key].astype(str).equals(b[key].astype(str))
    assert (a["completed_area_m2"].to_numpy() == b["completed_area_m2"].to_numpy()).all()
    assert (a["status"].astype(str).to_numpy() == b["status"].astype(str).to_numpy()).all()
    now_a, now_b = a[a["period"] == P], b[b["period"] == P]
    assert now_a["school_name"].astype(str).tolist() == now_b["school_name"].astype(str).tolist()
    day = [pd.to_datetime(x["planned_start"]).dt.strftime("%Y-%m-%d").fillna("").tolist() for x in (a, b)]
    assert day[0] == day[1]


@pytest.mark.parametrize(
    ("value", "inert"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-cmd", "'-cmd"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("a=b", "a=b"),
        ("瑶海区第1小学", "瑶海区第1小学"),
    ],
)
def test_formula_prefix_rule_is_the_same_per_value_and_per_column(
    value: str, inert: str, tmp_path: Path
) -> None:
    from reports.pack import write_section_csv
    from reports.sections import Col, Section, inert_csv_text

    assert inert_csv_text(value) == inert
    path = tmp_path / "x.csv"
    write_section_csv(Section("x", "x", [Col("v", "值")], pd.DataFrame({"v": [value]})), path)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [["值"], [inert]]
