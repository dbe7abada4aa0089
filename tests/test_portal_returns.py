"""The clerk's path through the portal on a real server on loopback (uvicorn, httpx): the template
(download and ``gaibao template``), the upload with its instant check (cross-period rules
included), an online explanation, the submission, a real nightly run that accepts it, and the
hostile uploads. ``gaibao check``'s cross-period rules. SQLite and PostgreSQL."""

from __future__ import annotations

import io
import re
import zipfile
from datetime import datetime
from html import unescape
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa
from filebuilders import return_bytes
from portal_helpers import (
    COUNTY_A,
    COUNTY_B,
    PortalServer,
    build_portal_warehouse,
    county_rows,
    csrf_of,
    login,
)

PERIOD = "2018-12"
PREVIOUS = "2018-11"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def served(warehouse_url: str, gaibao_home: Path, monkeypatch: pytest.MonkeyPatch):
    from portal.app import create_app

    monkeypatch.setenv("GAIBAO_PORTAL_UPLOAD_MAX_BYTES", str(2 * 1024 * 1024))
    monkeypatch.setenv("GAIBAO_PORTAL_UNZIP_MAX_BYTES", str(8 * 1024 * 1024))
    wh, settings, _ = build_portal_warehouse(gaibao_home)
    with PortalServer(create_app(wh, settings)) as server:
        yield server, wh, settings
    wh.close()


def _previous_facts(wh, county: str) -> dict[str, dict]:
    facts = wh.query(
        "SELECT * FROM fact_progress WHERE county_code = :c AND period = :p", {"c": county, "p": PREVIOUS}
    )
    return {r["project_id"]: r for r in facts.to_dict("records")}


def _headers(ws) -> dict[str, int]:
    return {c.value: c.column for c in ws[2] if c.value}


def _fill_from_previous(content: bytes, previous: dict[str, dict], lower_invest: str) -> tuple[bytes, int]:
    """The template filled as a clerk would: this month's figures equal last month's, except one
    project whose completed investment falls (a cross-period warning). Returns (bytes, its row)."""
    wb = openpyxl.load_workbook(io.BytesIO(content))
    ws = wb["项目进展"]
    col = _headers(ws)
    lowered_row = 0
    for r in range(3, ws.max_row + 1):
        pid = ws.cell(r, col["项目编号"]).value
        if not pid:
            continue
        prev = previous[pid]
        for label, name in (
            ("项目状态", "status"),
            ("开工面积（平方米）", "started_area_m2"),
            ("竣工面积（平方米）", "completed_area_m2"),
            ("完成投资（万元）", "completed_invest_wan"),
            ("其中：中央资金（万元）", "funds_central_wan"),
            ("其中：地方资金（万元）", "funds_local_wan"),
        ):
            ws.cell(r, col[label]).value = prev[name]
        for label, name in (("实际开工日期", "actual_start"), ("竣工日期", "completed_date")):
            if prev[name] is not None and prev[name] == prev[name]:
                ws.cell(r, col[label]).value = datetime.fromisoformat(str(prev[name])[:10])
        ws.cell(r, col["填报人"]).value = "李四"
        ws.cell(r, col["联系电话"]).value = "0552-7654321"
        if pid == lower_invest:
            ws.cell(r, col["完成投资（万元）"]).value = prev["completed_invest_wan"] - 10
            ws.cell(r, col["其中：中央资金（万元）"]).value = 0
            ws.cell(r, col["其中：地方资金（万元）"]).value = 0
            lowered_row = r
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue(), lowered_row


def _upload(c, name: str, content: bytes, period: str = PERIOD, mime: str = XLSX):
    return c.post(
        "/upload",
        data={"period": period, "csrf": csrf_of(c)},
        files={"file": (name, content, mime)},
        follow_redirects=False,
    )


def _findings_table(html: str) -> list[tuple[str, str, str, str]]:
    """(row, kind, column, value) of every finding row on the check page."""
    if '<table class="findings">' not in html:
        return []
    body = html.split('<table class="findings">', 1)[1].split("</table>", 1)[0]
    out = []
    for tr in re.findall(r"<tr class=\"(?:bad|warn|explained)\">(.*?)</tr>", body, flags=re.S):
        cells = [
            unescape(re.sub(r"<[^>]+>", "", td)).strip() for td in re.findall(r"<td>(.*?)</td>", tr, re.S)
        ]
        out.append(tuple(cells[:4]))
    return out


def test_template_upload_explain_submit_and_the_nightly_run_accepts_it(served, prefect_harness) -> None:
    from typer.testing import CliRunner

    from flows.nightly import nightly_ingest
    from gaibao.cli import app as cli
    from gaibao.contract import PROJECT_TYPES, STATUSES

    server, wh, settings = served
    previous = _previous_facts(wh, COUNTY_A)
    c = server.client()
    assert login(c, "clerk_a").status_code == 303

    # 模板下载: pre-filled with last month's projects, validation from the rules, header locked
    r = c.get("/template", params={"period": PERIOD})
    assert r.status_code == 200 and r.headers["content-type"] == XLSX
    assert "filename*=UTF-8''" in r.headers["content-disposition"]
    book = openpyxl.load_workbook(io.BytesIO(r.content))
    assert book.sheetnames == ["项目进展", "填报说明"]
    ws = book["项目进展"]
    col = _headers(ws)
    rows = [
        {label: ws.cell(i, j).value for label, j in col.items()}
        for i in range(3, ws.max_row + 1)
        if ws.cell(i, col["项目编号"]).value
    ]
    assert sorted(x["项目编号"] for x in rows) == sorted(previous)
    for x in rows:
        prev = previous[x["项目编号"]]
        assert (x["报告期"], x["区划代码"], x["学校名称"], x["项目类别"]) == (
            PERIOD,
            COUNTY_A,
            prev["school_name"],
            prev["project_type"],
        )
        assert x["规划投资（万元）"] == pytest.approx(prev["planned_invest_wan"])
        assert x["项目状态"] is None and x["完成投资（万元）"] is None  # this month's figures: the clerk's
    assert ws.protection.sheet and not ws.cell(3, col["项目状态"]).protection.locked
    assert ws.cell(2, 1).protection.locked
    from openpyxl.utils import column_index_from_string

    lists = {
        ws.cell(2, column_index_from_string(re.match(r"[A-Z]+", str(dv.sqref)).group(0))).value: dv
        for dv in ws.data_validations.dataValidation
    }
    assert (
        lists["项目类别"].type == "list" and lists["项目类别"].formula1 == '"' + ",".join(PROJECT_TYPES) + '"'
    )
    assert lists["项目状态"].type == "list" and lists["项目状态"].formula1 == '"' + ",".join(STATUSES) + '"'
    assert (
        lists["开工面积（平方米）"].type == "decimal"
        and lists["开工面积（平方米）"].operator == "greaterThanOrEqual"
    )
    assert lists["实际开工日期"].type == "date"
    assert "填报说明" in book["填报说明"].cell(1, 1).value

    # gaibao template writes the same workbook
    out = settings.home / "cli_template.xlsx"
    res = CliRunner().invoke(cli, ["template", "--county", COUNTY_A, "--period", PERIOD, "--out", str(out)])
    assert res.exit_code == 0, res.output
    cli_ws = openpyxl.load_workbook(out)["项目进展"]
    assert [[c.value for c in row] for row in cli_ws.iter_rows()] == [
        [c.value for c in row] for row in ws.iter_rows()
    ]
    assert [str(d.sqref) for d in cli_ws.data_validations.dataValidation] == [
        str(d.sqref) for d in ws.data_validations.dataValidation
    ]

    # the template filled and uploaded: no finding but the one cross-period warning made on purpose
    lowered = sorted(previous)[1]
    content, lowered_row = _fill_from_previous(r.content, previous, lowered)
    up = _upload(c, "怀远县12月.xlsx", content)
    assert up.status_code == 303, up.text
    upload_id = up.headers["location"].rsplit("/", 1)[1]
    page = c.get(up.headers["location"]).text
    findings = _findings_table(page)
    assert [f[:3] for f in findings] == [(str(lowered_row), "提示", "完成投资（万元）")], findings
    assert float(findings[0][3]) == pytest.approx(previous[lowered]["completed_invest_wan"] - 10)
    assert f"比上期（{PREVIOUS}）的" in page and "已与上期（2018-11）接收的报表比对" in page
    assert f'<tr class="warn" id="row-{lowered_row}">' in page
    assert "李四" not in page and "0552-7654321" not in page  # personal data stays in the warehouse

    # explain it online: marked explained, with who and when
    token = csrf_of(c)
    r = c.post(
        f"/upload/{upload_id}/explain",
        data={"row_number": str(lowered_row), "text": "审计核减<b>10万元</b>", "csrf": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    page = c.get(f"/upload/{upload_id}").text
    assert _findings_table(page)[0][1] == "提示（已说明）"
    assert "审计核减&lt;b&gt;10万元&lt;/b&gt;" in page and "<b>10万元" not in page
    with wh.engine.connect() as conn:
        who = conn.execute(
            sa.text(
                "SELECT u.username, e.explained_at FROM portal_explanation e JOIN portal_user u ON u.user_id = e.explained_by"
            )
        ).all()
    assert len(who) == 1 and who[0][0] == "clerk_a" and who[0][1] is not None

    # submit: written whole into the county's folder and archived as received
    before = {p.name for p in (settings.inbox_dir / COUNTY_A).iterdir()}
    r = c.post(f"/upload/{upload_id}/submit", data={"csrf": csrf_of(c)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/submissions"
    new = [p for p in (settings.inbox_dir / COUNTY_A).iterdir() if p.name not in before]
    assert len(new) == 1 and new[0].read_bytes() == content and not new[0].name.startswith(".")
    from hashlib import sha256

    assert wh.archive.get(sha256(content).hexdigest()) == content
    listing = c.get("/submissions").text
    assert "等待入库" in listing and "怀远县12月.xlsx" in listing
    again = c.post(f"/upload/{upload_id}/submit", data={"csrf": csrf_of(c)}, follow_redirects=False)
    assert again.status_code == 400 and "已经报送过了" in again.text

    # the nightly run (the real flow) loads it; the portal shows it accepted, with its receipt
    get_settings_clear()
    summary = nightly_ingest(period=PERIOD, counties=[COUNTY_A])
    assert summary["periods"] == [PERIOD]
    listing = c.get("/submissions").text
    assert "等待入库" not in listing
    row = re.search(r"<tr><td>2018-12</td>.*?</tr>", listing, re.S).group(0)
    assert "已接收" in row and "怀远县12月.xlsx" in row
    sid = re.search(r'href="/receipt/([^"]+)"', row).group(1)
    receipt = c.get(f"/receipt/{sid}")
    assert receipt.status_code == 200 and "已接收" in receipt.text
    issues = wh.query(
        "SELECT row_number, rule, column_name, is_explained FROM dq_issue WHERE submission_id = :s",
        {"s": sid},
    )
    assert [
        (int(x.row_number), x.rule, x.column_name, bool(x.is_explained)) for x in issues.itertuples()
    ] == [
        (lowered_row, "REGRESSION", "completed_invest_wan", True)
    ]  # the nightly run's findings are the instant check's, the online 说明 counted as a 备注
    accepted = wh.query("SELECT COUNT(*) AS n FROM fact_progress WHERE submission_id = :s", {"s": sid})
    assert int(accepted["n"][0]) == len(previous)

    # a corrected file replaces it, and a file the nightly run refuses is listed with the reason
    fixed, _ = _fill_from_previous(_template(c), previous, lower_invest="")
    up = _upload(c, "怀远县12月更正.xlsx", fixed)
    page = c.get(up.headers["location"]).text
    assert up.status_code == 303 and _findings_table(page) == [] and "可以报送" in page
    fixed_id = up.headers["location"].rsplit("/", 1)[1]
    assert (
        c.post(f"/upload/{fixed_id}/submit", data={"csrf": csrf_of(c)}, follow_redirects=False).status_code
        == 303
    )
    wrong = county_rows(COUNTY_B, PERIOD)
    (settings.inbox_dir / COUNTY_A / f"{PERIOD}_进展_错报.csv").write_bytes(return_bytes(wrong, fmt="csv"))
    get_settings_clear()
    nightly_ingest(period=PERIOD, counties=[COUNTY_A])
    listing = c.get("/submissions").text
    rows_2018_12 = re.findall(r"<tr><td>2018-12</td>.*?</tr>", listing, re.S)
    cells = [
        [unescape(re.sub(r"<[^>]+>", "", td)).strip() for td in re.findall(r"<td>(.*?)</td>", x, re.S)]
        for x in rows_2018_12
    ]
    states = {row[2]: row[4] for row in cells}  # file name: state (and the reason)
    assert states["怀远县12月更正.xlsx"] == "已接收"
    assert states["怀远县12月.xlsx"] == "已被替换"
    refused = states[f"{PERIOD}_进展_错报.csv"]
    assert refused.startswith("已退回：") and COUNTY_B in refused

    # another county's clerk sees none of it
    b = server.client()
    login(b, "clerk_b")
    assert b.get(f"/upload/{upload_id}").status_code == 403
    assert b.get(f"/receipt/{sid}").status_code == 403
    c.close()
    b.close()


def _template(c) -> bytes:
    r = c.get("/template", params={"period": PERIOD})
    assert r.status_code == 200
    return r.content


def get_settings_clear() -> None:
    from gaibao.settings import get_settings

    get_settings.cache_clear()


def _bomb(inflated: int) -> bytes:
    """A small zip that claims to be a workbook and inflates to ``inflated`` bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
        zf.writestr("xl/worksheets/sheet1.xml", b"<x>" + b" " * inflated + b"</x>")
    return buf.getvalue()


def test_uploads_are_hostile_until_proven_otherwise(served) -> None:
    server, wh, settings = served
    c = server.client()
    login(c, "clerk_a")

    # size: refused before it is parsed, in Chinese
    big = b"a," * (settings.portal_upload_max_bytes // 2 + 64 * 1024)
    r = _upload(c, "big.csv", big, mime="text/csv")
    assert r.status_code == 413 and "超过" in r.text and "MB" in r.text
    # size after unzip: the reading bound of tasks.readguard, capped by the portal's
    bomb = _bomb(settings.portal_unzip_max_bytes + 1024)
    assert len(bomb) < settings.portal_upload_max_bytes
    r = _upload(c, "bomb.xlsx", bomb)
    assert r.status_code == 400 and "解压后大小超过上限" in r.text

    # type by content, not by name
    r = _upload(c, "return.csv", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4, mime="text/csv")
    assert r.status_code == 400 and "不是文本表格" in r.text
    r = _upload(c, "return.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600)
    assert r.status_code == 400 and ".xls" in r.text
    rows = county_rows(COUNTY_A, PERIOD, 3)
    rows[0]["school_name"] = "<script>alert('x')</script>"
    rows[1]["note"] = '=HYPERLINK("http://evil","点我")'
    rows[2]["status"] = "<img src=x onerror=alert(1)>"
    csv_bytes = return_bytes(rows, fmt="csv")
    evil_name = "../../../../tmp/<img src=x onerror=alert(2)>.xlsx"
    r = _upload(c, evil_name, csv_bytes)  # a CSV under an .xlsx name: read as the CSV it is
    assert r.status_code == 303, r.text
    upload_id = r.headers["location"].rsplit("/", 1)[1]
    page = c.get(r.headers["location"]).text
    assert "<script>alert" not in page and "&lt;script&gt;alert(" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;.xlsx" in page and "../" not in page
    findings = _findings_table(page)
    status_row = str(2 + 2)  # the CSV's header is row 1; rows[2] is its fourth line
    assert (status_row, "错误", "项目状态", "<img src=x onerror=alert(1)>") in findings, findings
    with wh.engine.connect() as conn:
        stored = conn.execute(
            sa.text("SELECT file_type, file_name FROM portal_upload WHERE upload_id = :u"), {"u": upload_id}
        ).one()
    assert stored == ("csv", "<img src=x onerror=alert(2)>.xlsx")
    uploads = settings.portal_dir / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == [upload_id]
    assert re.fullmatch(r"[0-9a-f]{32}", upload_id)
    # an upload with an error cannot be submitted
    r = c.post(f"/upload/{upload_id}/submit", data={"csrf": csrf_of(c)}, follow_redirects=False)
    assert r.status_code == 400 and "错误" in r.text
    assert not list((settings.inbox_dir / COUNTY_A).glob("*网上报送*"))
    # JSON, as the contract allows, known by its content whatever its name
    r = _upload(c, "data.txt", return_bytes(county_rows(COUNTY_A, PERIOD, 2), fmt="json"), mime="text/plain")
    assert r.status_code == 303
    with wh.engine.connect() as conn:
        kinds = conn.execute(
            sa.text("SELECT file_type, errors FROM portal_upload WHERE upload_id = :u"),
            {"u": r.headers["location"].rsplit("/", 1)[1]},
        ).one()
    assert tuple(kinds)[0] == "json"
    # a bad period is answered, not crashed on
    r = _upload(c, "ok.csv", csv_bytes, period="2018-13", mime="text/csv")
    assert r.status_code == 400 and "2018-13" in r.text
    c.close()


def test_gaibao_check_judges_cross_period_rules_when_it_reaches_the_warehouse(
    warehouse_url: str, gaibao_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from gaibao.cli import app as cli

    wh, settings, _ = build_portal_warehouse(gaibao_home)
    previous = _previous_facts(wh, COUNTY_A)
    rows = county_rows(COUNTY_A, PERIOD)
    for row in rows:
        prev = previous[row["project_id"]]
        for name in (
            "status",
            "started_area_m2",
            "completed_area_m2",
            "completed_invest_wan",
            "funds_central_wan",
            "funds_local_wan",
        ):
            row[name] = prev[name]
    done = next(r for r in rows if r["status"] == "已竣工" and r["project_type"] == "校舍改造")
    done["status"] = "在建"  # goes backwards: STATUS_REGRESSION, a cross-period warning
    done["completed_date"] = None
    path = tmp_path / f"{COUNTY_A}_{PERIOD}_进展.csv"
    path.write_bytes(return_bytes(rows[:-1], fmt="csv"))  # and the last project is dropped
    wh.close()
    res = CliRunner().invoke(cli, ["check", str(path)])
    assert res.exit_code == 0, res.output
    assert f"已与本县上次接收的报表（{PREVIOUS}）比对跨期规则" in res.output
    assert "(STATUS_REGRESSION)" in res.output and "(DROPPED_PROJECT)" in res.output
    assert rows[-1]["project_id"] in res.output

    # a resubmission of the accepted month that leaves a project out: warned, as the nightly run would
    again = tmp_path / f"{COUNTY_A}_{PREVIOUS}_进展.csv"
    again.write_bytes(return_bytes(county_rows(COUNTY_A, PREVIOUS)[1:], fmt="csv"))
    res = CliRunner().invoke(cli, ["check", str(again)])
    assert (
        "(RESUBMISSION_DROPS_PROJECT)" in res.output
        and county_rows(COUNTY_A, PREVIOUS)[0]["project_id"] in res.output
    )

    monkeypatch.setenv("GAIBAO_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'nowhere.db'}")
    get_settings_clear()
    res = CliRunner().invoke(cli, ["check", str(path)])
    assert res.exit_code == 0 and "未连接数据仓库" in res.output
    assert "STATUS_REGRESSION" not in res.output and not (tmp_path / "nowhere.db").exists()
