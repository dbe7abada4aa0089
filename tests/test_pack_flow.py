"""The pack's entry points: the ``gaibao pack`` typer command and the Prefect flow, for real."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from gaibao.settings import get_settings
from reports.cli import pack
from reports.sample import load_into_warehouse, sample_inputs
from warehouse.store import Warehouse

P = "2018-06"


@pytest.fixture
def demo_home(gaibao_home: Path) -> Path:
    """GAIBAO_HOME with a sample warehouse at the settings' default URL."""
    wh = Warehouse.from_settings(get_settings())
    wh.upgrade()
    load_into_warehouse(wh, sample_inputs(P, n_counties=4, projects_per_county=4))
    wh.close()
    return gaibao_home


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("pack")(pack)
    return app


def test_cli_builds_and_sends_once(demo_home: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(cli(), ["--period", P, "--send"])
    assert first.exit_code == 0, first.output
    out = demo_home / "reports" / P
    assert f"材料已生成：{out}" in first.output
    assert (out / "全面改薄联席会议材料2018年6月.xlsx").is_file()
    assert "发送：6封" in first.output  # two meeting members, four county letters
    emls = sorted((demo_home / "outbox").rglob("*.eml"))
    assert len(emls) == 6 and all(str(p) in first.output for p in emls)
    msg = email.message_from_bytes(emls[0].read_bytes(), policy=email.policy.default)
    assert msg["Subject"]
    again = runner.invoke(cli(), ["--period", P, "--send"])
    assert again.exit_code == 0 and "发送：0封，跳过（已发送）6封" in again.output
    resent = runner.invoke(cli(), ["--period", P, "--resend"])
    assert "发送：6封" in resent.output


def test_cli_refuses_a_bad_period(demo_home: Path) -> None:
    result = CliRunner().invoke(cli(), ["--period", "2018-13"])
    # 3: an option refused before anything runs (README, exit codes), as ingest/backfill/status
    assert result.exit_code == 3 and "YYYY-MM" in result.output


@pytest.mark.slow
def test_flow_builds_and_delivers_to_the_outbox(demo_home: Path, prefect_harness: None) -> None:
    from flows.pack import monthly_meeting_pack

    result = monthly_meeting_pack(period=P, send=True)
    assert result["out_dir"] == str(demo_home / "reports" / P)
    assert result["delivery"] == {"sent": 6, "skipped": 0, "failed": 0}
    assert all(Path(p).is_file() for p in result["messages"])
    assert result["exceptions"]["MISSING_RETURN"] == 2
    again = monthly_meeting_pack(period=P, send=True)
    assert again["delivery"]["sent"] == 0 and again["changes"] == []


def test_cli_says_when_the_period_has_no_data(gaibao_home: Path) -> None:
    result = CliRunner().invoke(cli(), ["--period", "2030-01"])
    assert result.exit_code == 2 and "没有任何县区数据" in result.output
