"""Every figure can be traced: ``gaibao trace``, ``gaibao archive get``, ``gaibao rules show``
and the pack manifest, on the demo's real files run through the real flows, on SQLite and the
real PostgreSQL server."""

from __future__ import annotations

import csv
import email
import email.policy
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from typer.testing import CliRunner

from gaibao.cli import app
from gaibao.contract import BUILDING

FIRST, LAST = "2018-09", "2018-12"
CARRIED = "2018-10"  # 临泉县 sends nothing for 2018-10 in the demo: its figure is 2018-09's
FUYANG = "341200"
runner = CliRunner()

ENV = ("GAIBAO_HOME", "GAIBAO_WAREHOUSE_URL", "GAIBAO_SOURCES", "GAIBAO_MAIL_MODE")


def _settings_env(home: Path, url: str | None) -> None:
    from gaibao.settings import get_settings

    os.environ["GAIBAO_HOME"] = str(home)
    if url:
        os.environ["GAIBAO_WAREHOUSE_URL"] = url
    else:
        os.environ.pop("GAIBAO_WAREHOUSE_URL", None)
    os.environ.pop("GAIBAO_SOURCES", None)
    os.environ.pop("GAIBAO_MAIL_MODE", None)
    get_settings.cache_clear()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def demo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> Iterator[dict]:
    """The demo's returns for 2018-09..2018-12 through the real backfill flow, on one backend."""
    from flows.backfill import backfill
    from gaibao.demo import generate_demo
    from gaibao.settings import get_settings
    from tasks.plan import load_plan_file
    from warehouse.store import Warehouse

    saved = {k: os.environ.get(k) for k in ENV}
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("pg_server_url")
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
    home = tmp_path_factory.mktemp(f"trace-{request.param}") / "home"
    _settings_env(home, url)
    manifest = generate_demo(home)
    wh = Warehouse.from_settings()
    wh.upgrade()
    assert load_plan_file(wh, manifest.plan_file).ok
    wh.close()
    backfill(start=FIRST, end=LAST)
    yield {"home": home, "url": url or f"sqlite:///{home / 'warehouse.db'}"}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()


@pytest.fixture
def env(demo: dict) -> dict:
    _settings_env(demo["home"], None if demo["url"].startswith("sqlite") else demo["url"])
    return demo


def _query(env: dict, sql: str, **params) -> pd.DataFrame:
    engine = sa.create_engine(env["url"])
    try:
        with engine.connect() as conn:
            return pd.read_sql(sa.text(sql), conn, params=params)
    finally:
        engine.dispose()


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_city_figure_traces_to_the_rows_of_every_county_file_and_back(env: dict, tmp_path: Path) -> None:
    from tasks.normalise import normalise_batch
    from tasks.read import read_return
    from warehouse.archive import Archive

    out = tmp_path / "rows.csv"
    done = runner.invoke(app, ["trace", "阜阳市", "竣工面积", "--period", CARRIED, "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "与会议材料一致" in done.output and "临泉县本期未报送，沿用2018年9月的数据" in done.output
    shown = _query(
        env,
        "SELECT completed_area_m2 AS v FROM mart_city_progress WHERE period = :p AND level = 'city' AND city_code = :c",
        p=CARRIED,
        c=FUYANG,
    )["v"].iloc[0]
    assert f"{shown:,.0f} 平方米" in done.output.splitlines()[0]

    rows = _csv(out)
    # every county of the city, each by the submission the county mart names
    marts = _query(
        env,
        "SELECT county_code, source_period, submission_id FROM mart_county_progress WHERE period = :p AND city_code = :c",
        p=CARRIED,
        c=FUYANG,
    )
    counties = _query(env, "SELECT county_code FROM ref_division WHERE city_code = :c", c=FUYANG)
    assert set(marts["county_code"]) == set(counties["county_code"])
    assert {(r["区划代码"], r["数据所属报告期"], r["submission_id"]) for r in rows} == set(
        marts.itertuples(index=False, name=None)
    )
    assert any(r["数据所属报告期"] == "2018-09" for r in rows)  # the carried-forward county
    # 1. the figure again from the CSV
    assert sum(float(r["计入竣工面积（校舍改造项目）"]) for r in rows) == pytest.approx(shown)
    assert all(r["项目类别"] == BUILDING for r in rows)

    # 2. the figure again from the archived original files, re-read and typed as the run does
    archive = Archive(env["home"] / "archive")
    subs = _query(env, "SELECT submission_id, file_name, sha256 FROM submission").set_index("submission_id")
    total = 0.0
    by_sid: dict[str, dict[int, float]] = {}
    for r in rows:
        by_sid.setdefault(r["submission_id"], {})[int(r["文件中的行号"])] = float(r["竣工面积（平方米）"])
    for sid, wanted in by_sid.items():
        content = archive.get(subs.at[sid, "sha256"])  # hash-checked
        assert hashlib.sha256(content).hexdigest() == subs.at[sid, "sha256"]
        assert {r["原文件名"] for r in rows if r["submission_id"] == sid} == {subs.at[sid, "file_name"]}
        parsed = read_return(content, subs.at[sid, "file_name"], kind="progress")
        typed, _ = normalise_batch("progress", [(sid, parsed)])
        typed = typed.set_index("row_number")
        building = typed[typed["project_type"] == BUILDING]
        for number, value in wanted.items():
            assert float(typed.at[number, "completed_area_m2"]) == pytest.approx(value)
        # the file's 校舍改造 rows the figure leaves out are the rows the rules rejected
        left_out = set(building.index) - set(wanted)
        if left_out:
            rejected = _query(
                env,
                "SELECT DISTINCT row_number FROM dq_issue WHERE submission_id = :s AND severity = 'error'",
                s=sid,
            )
            assert left_out <= set(rejected["row_number"].dropna().astype(int))
        total += float(building.loc[list(wanted), "completed_area_m2"].sum())
    assert total == pytest.approx(shown)


def test_a_rate_of_the_province_recomputes_from_rows_and_plan(env: dict, tmp_path: Path) -> None:
    out = tmp_path / "rate.csv"
    done = runner.invoke(app, ["trace", "全省", "面积完成率", "-p", LAST, "--out", str(out)])
    assert done.exit_code == 0, done.output
    rate = _query(
        env,
        "SELECT area_completion_rate AS v FROM mart_city_progress WHERE period = :p AND level = 'province'",
        p=LAST,
    )["v"].iloc[0]
    plan = _query(env, "SELECT SUM(plan_area_m2) AS v FROM ref_plan")["v"].iloc[0]
    done_area = sum(float(r["计入竣工面积（校舍改造项目）"]) for r in _csv(out))
    assert done_area / plan == pytest.approx(rate)
    assert f"{rate * 100:.1f}%" in done.output.splitlines()[0]


def test_trace_holds_no_personal_data(env: dict, tmp_path: Path) -> None:
    personal = _query(env, "SELECT DISTINCT reporter, phone FROM fact_progress")
    words = {str(v) for v in personal.to_numpy().ravel() if v is not None and str(v).strip()}
    assert words  # the demo's returns carry a reporter and a phone number
    for area, measure in (("全省", "项目数"), ("太和县", "竣工面积"), ("蚌埠市", "累计投入资金")):
        out = tmp_path / f"{area}-{measure}.csv"
        done = runner.invoke(app, ["trace", area, measure, "-p", LAST, "--out", str(out)])
        assert done.exit_code == 0, done.output
        text = done.output + out.read_text(encoding="utf-8-sig")
        assert "填报人" not in text and "联系电话" not in text
        assert [w for w in words if w in text] == []


def test_trace_refuses_what_the_pack_does_not_have(env: dict) -> None:
    done = runner.invoke(app, ["trace", "火星县", "竣工面积", "-p", LAST])
    assert done.exit_code == 2 and "没有名为或代码为“火星县”的县区或市" in done.output
    done = runner.invoke(app, ["trace", "太和县", "幸福指数", "-p", LAST])
    assert done.exit_code == 2 and "不认识的指标“幸福指数”" in done.output and "面积完成率" in done.output
    done = runner.invoke(app, ["trace", "太和县", "竣工面积", "-p", "2030-01"])
    assert done.exit_code == 2 and "没有太和县的数据" in done.output


def test_funding_figure_of_taihe_is_its_rural_teacher_subsidy(env: dict, tmp_path: Path) -> None:
    out = tmp_path / "taihe.csv"
    done = runner.invoke(app, ["trace", "太和县", "乡村教师补助", "-p", LAST, "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "5,000.00 万元" in done.output.splitlines()[0]  # 每年拨付5000万元 (Taihe's report)
    rows = _csv(out)
    assert len(rows) == 1 and float(rows[0]["乡村教师支持计划年度拨付（万元）"]) == 5000.0


def test_archive_get_returns_the_original_bytes(env: dict, tmp_path: Path) -> None:
    subs = _query(
        env,
        "SELECT submission_id, county_code, period, file_name, sha256 FROM submission WHERE period = :p",
        p=LAST,
    )
    row = subs[subs["file_name"].str.endswith(".xlsx")].iloc[0]
    original = next((env["home"] / "inbox" / row["county_code"]).rglob(row["file_name"])).read_bytes()
    by_id, by_sha = tmp_path / "a" / row["file_name"], tmp_path / "b.bin"
    done = runner.invoke(app, ["archive", "get", row["submission_id"], "--out", str(by_id)])
    assert done.exit_code == 0, done.output
    assert by_id.read_bytes() == original and row["sha256"] in done.output and "已校验" in done.output
    done = runner.invoke(app, ["archive", "get", row["sha256"], "--out", str(by_sha)])
    assert done.exit_code == 0 and by_sha.read_bytes() == original
    again = runner.invoke(app, ["archive", "get", row["sha256"], "--out", str(by_sha)])
    assert again.exit_code == 2 and "已存在" in again.output
    missing = runner.invoke(app, ["archive", "get", "0" * 20, "--out", str(tmp_path / "c")])
    assert missing.exit_code == 2 and not (tmp_path / "c").exists()


def test_archive_get_refuses_a_corrupt_object(env: dict, tmp_path: Path) -> None:
    from warehouse.archive import Archive

    archive = Archive(tmp_path / "bad-home" / "archive")
    sha = archive.put(b"county bytes")
    path = archive.path(sha)
    os.chmod(path, 0o644)
    path.write_bytes(b"other bytes!")  # same length, other content
    os.environ["GAIBAO_HOME"] = str(tmp_path / "bad-home")  # the warehouse of env, this archive
    from gaibao.settings import get_settings

    get_settings.cache_clear()
    if env["url"].startswith("sqlite"):
        os.environ["GAIBAO_WAREHOUSE_URL"] = env["url"]
        get_settings.cache_clear()
    done = runner.invoke(app, ["archive", "get", sha, "--out", str(tmp_path / "out.bin")])
    assert done.exit_code == 1 and "已损坏" in done.output and not (tmp_path / "out.bin").exists()


def test_rules_show_prints_the_suite_text_the_runs_used(env: dict) -> None:
    from tasks.validate import EXPECTATIONS_DIR, rules_version

    version = rules_version()
    used = _query(env, "SELECT DISTINCT rules_version FROM submission")["rules_version"].tolist()
    assert used == [version]
    stored = _query(
        env,
        "SELECT file_name, content FROM rules_suite WHERE rules_version = :v ORDER BY position",
        v=version,
    )
    files = sorted(EXPECTATIONS_DIR.glob("*.json"))
    assert stored["file_name"].tolist() == [p.name for p in files]
    assert stored["content"].tolist() == [p.read_text(encoding="utf-8") for p in files]
    done = runner.invoke(app, ["rules", "show", version])
    assert done.exit_code == 0, done.output
    for path in files:
        assert path.read_text(encoding="utf-8").rstrip("\n") in done.output
    one = runner.invoke(app, ["rules", "show", version, "--file", "funding.json"])
    assert one.exit_code == 0 and "progress.json" not in one.output.split("\n", 1)[1]
    listing = runner.invoke(app, ["rules", "show"])
    assert version in listing.output and "已保存" in listing.output
    unknown = runner.invoke(app, ["rules", "show", "000000000000"])
    assert unknown.exit_code == 2 and "没有规则版本 000000000000 的全文" in unknown.output


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd's signature
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content or envelope.content)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_manifest_covers_cities_and_province_and_rides_with_the_pack_mail(env: dict, tmp_path: Path) -> None:
    from gaibao.settings import get_settings
    from reports.config import load_recipients
    from reports.mail import SmtpSender
    from reports.service import make_pack, open_warehouse, send_pack

    settings = get_settings()
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    wh = open_warehouse(settings)
    try:
        result = make_pack(CARRIED, settings, tmp_path / "pack", warehouse=wh, letters=False)
        sender = SmtpSender("127.0.0.1", controller.port, attempts=1)
        report = send_pack(result, settings, resend=True, warehouse=wh, sender=sender)
    finally:
        wh.close()
        controller.stop()
    meeting = {e for m in load_recipients(settings.recipients).meeting for e in m.emails}
    assert report.failed == [] and meeting
    packs = [
        email.message_from_bytes(raw, policy=email.policy.default)
        for rcpt, raw in inbox.messages
        if set(rcpt) <= meeting
    ]
    assert len(packs) == len(meeting)
    attached = {a.get_filename(): a.get_content() for a in packs[0].iter_attachments()}
    manifest = json.loads(attached["manifest.json"])
    assert manifest == json.loads(result.files["manifest"].read_text(encoding="utf-8"))

    cities = _query(env, "SELECT * FROM mart_city_progress WHERE period = :p", p=CARRIED)
    marts = _query(
        env,
        "SELECT county_code, city_code, submission_id FROM mart_county_progress WHERE period = :p",
        p=CARRIED,
    )
    funding = _query(env, "SELECT * FROM mart_county_funding WHERE period = :p", p=CARRIED)
    for rec in cities.to_dict("records"):
        level = rec["level"]
        entry = manifest["areas"][level][rec["city_code"]]
        for key in ("completed_area_m2", "area_completion_rate", "equipment_completion_rate", "plan_area_m2"):
            assert entry["figures"][key] == pytest.approx(rec[key])
        members = marts if level == "province" else marts[marts["city_code"] == rec["city_code"]]
        assert entry["counties"] == sorted(members["county_code"])
        fund = funding[funding["county_code"].isin(members["county_code"])]
        assert set(members["submission_id"]) | set(fund["submission_id"]) == set(entry["submissions"])
        assert entry["figures"]["rural_teacher_subsidy_wan"] == pytest.approx(
            fund["rural_teacher_subsidy_wan"].sum()
        )
    # the carried-forward county's 2018-09 submission is among the sources
    assert set(marts["submission_id"]) <= {s["submission_id"] for s in manifest["submissions"]}

    # the county funding sheet shows Taihe's 5,000 万元 a year
    ws = openpyxl.load_workbook(result.files["xlsx"])["资金与师资（县区）"]
    header = next(r for r in ws.iter_rows(values_only=True) if r and "地区" in r)
    taihe = next(r for r in ws.iter_rows(values_only=True) if r and "太和县" in r)
    assert taihe[header.index("乡村教师支持计划年度拨付（万元）")] == 5000

    # and the trace says the pack agrees
    done = runner.invoke(
        app, ["trace", "阜阳市", "面积完成率", "-p", CARRIED, "--out", str(tmp_path / "t.csv")]
    )
    assert (
        done.exit_code == 0
        and f"数据指纹 {result.pack_digest[:12]}" in done.output
        and "（一致）" in done.output
    )
