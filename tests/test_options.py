"""Options, settings and the warehouse are checked before anything runs (issue 16, item 5).

Each bad option or setting is refused by the real ``gaibao`` command (a subprocess, as an
operator runs it) with one line in Chinese and English, the documented exit code, no traceback,
no flow run (Prefect's home stays empty: no temporary server, no run recorded) and no page (no
alert in the outbox). The flows' parameters are checked the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gaibao.options import OptionError, check_counties, check_period, check_range

ROOT = Path(__file__).resolve().parents[1]
EXIT_BAD_OPTION, EXIT_BAD_SETTINGS = 3, 4


@pytest.mark.parametrize(
    "value", ["2018-13", "2018-00", "../../x", "2018-1", "201812", "", "2018-12\n", "1899-01", "2018-12 "]
)
def test_bad_periods_are_refused_naming_the_value(value: str) -> None:
    with pytest.raises(OptionError) as info:
        check_period(value)
    assert "报告期" in info.value.message_zh and "not a valid period" in info.value.message_en
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["2017-01", "2018-12", "2099-12"])
def test_good_periods_pass(value: str) -> None:
    assert check_period(value) == value


def test_a_range_must_not_end_before_it_starts() -> None:
    assert check_range("2017-01", "2018-12") == ("2017-01", "2018-12")
    with pytest.raises(OptionError, match="--end 2017-01"):
        check_range("2018-12", "2017-01")
    with pytest.raises(OptionError, match="--end '2019-13'"):
        check_range("2018-12", "2019-13")


@pytest.mark.parametrize("value", ["../../outside", "34032", "3403210", "/etc", "34032a", "340321/.."])
def test_a_county_is_six_digits_never_a_path(value: str) -> None:
    with pytest.raises(OptionError, match="6 位数字"):
        check_counties([value])


def test_an_unknown_county_is_refused() -> None:
    assert check_counties(["340321"], {"340321"}) == ["340321"]
    with pytest.raises(OptionError, match="999999"):
        check_counties(["340321", "999999"], {"340321"})


# ------------------------------------------------------------------------------------------
# The real command


def _run(
    home: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    full = {
        k: v for k, v in os.environ.items() if not k.startswith(("GAIBAO_", "PREFECT_API", "PREFECT_HOME"))
    }
    full.update(
        {
            "GAIBAO_HOME": str(home),
            "GAIBAO_DATA_ENGINEERS": '["oncall@example.cn"]',
            "PREFECT_HOME": str(home / "prefect"),
            "PYTHONPATH": str(ROOT),
        }
    )
    full.update(env or {})
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "gaibao.cli", *args],
        cwd=home,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc, time.monotonic() - started


def _assert_refused(home: Path, proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr  # one line, no traceback
    assert "Traceback" not in proc.stderr + proc.stdout
    line = lines[0]
    assert line.startswith("错误：") and " / " in line  # Chinese, then English
    for needle in needles:
        assert needle in line, line
    # no flow run: Prefect never started (its home holds no database), and nobody was paged
    assert not (home / "prefect").exists() or not any((home / "prefect").rglob("*.db"))
    assert not list((home / "outbox").rglob("*.eml")) if (home / "outbox").exists() else True


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    (home / "inbox" / "340321").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "进度_2018年12月.csv").write_text("项目编号\n1\n", encoding="utf-8")
    return home


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["ingest", "--period", "2018-13"], ["'2018-13'", "报告期"]),
        (["ingest", "--period", "../../x"], ["'../../x'"]),
        (["backfill", "--start", "2018-12", "--end", "2017-01"], ["--end 2017-01", "--start 2018-12"]),
        (["backfill", "--start", "2018-01", "--end", "2019-13"], ["--end '2019-13'"]),
        (["status", "--period", "2018-13"], ["'2018-13'"]),
        (["ingest", "--period", "2018-12", "--county", "../../outside"], ["'../../outside'", "6 位数字"]),
        (["ingest", "--period", "2018-12", "--county", "999999"], ["999999", "不是已知的县区"]),
        (["status", "--period", "2018-12", "--county", "999999"], ["999999"]),
        (["rules", "impact", "--since", "2018-13"], ["--since '2018-13'"]),
        (["pack", "--period", "2018-13"], ["'2018-13'", "报告期"]),
        (["receipts", "--period", "../x"], ["'../x'"]),
    ],
)
def test_bad_options_are_one_line_and_exit_3(home: Path, args: list[str], needles: list[str]) -> None:
    proc, seconds = _run(home, *args)
    _assert_refused(home, proc, EXIT_BAD_OPTION, *needles)
    assert seconds < 15  # before anything runs (a flow run costs 20 s here)
    assert not (home / "warehouse.db").exists() or "999999" in args  # nothing recorded


def test_unreachable_warehouse_is_one_line_and_exit_4(home: Path) -> None:
    url = "postgresql+psycopg://gaibao:s3cret@no-such-host.invalid:5432/gaibao"
    proc, _ = _run(home, "ingest", "--period", "2018-12", env={"GAIBAO_WAREHOUSE_URL": url})
    _assert_refused(home, proc, EXIT_BAD_SETTINGS, "no-such-host.invalid", "无法连接数据仓库")
    assert "s3cret" not in proc.stderr  # the password never shows


def test_sources_file_with_a_syntax_error_is_one_line_and_exit_4(home: Path) -> None:
    sources = home / "sources.yaml"
    sources.write_text('"340321":\n  type: http\n  url: [unclosed\n', encoding="utf-8")
    proc, _ = _run(
        home, "backfill", "--start", "2018-01", "--end", "2018-12", env={"GAIBAO_SOURCES": str(sources)}
    )
    _assert_refused(home, proc, EXIT_BAD_SETTINGS, "GAIBAO_SOURCES", "line 4")


def test_bad_setting_is_one_line_and_exit_4(home: Path) -> None:
    proc, _ = _run(home, "status", "--period", "2018-12", env={"GAIBAO_DUE_DAY": "40"})
    _assert_refused(home, proc, EXIT_BAD_SETTINGS, "GAIBAO_DUE_DAY")


# ------------------------------------------------------------------------------------------
# The flows' parameters


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda f: f["nightly"](period="2018-13"), "'2018-13'"),
        (lambda f: f["nightly"](period="2018-12", counties=["../../outside"]), "'../../outside'"),
        (lambda f: f["backfill"](start="2018-12", end="2017-01"), "--end 2017-01"),
        (lambda f: f["backfill"](start="2018-01", end="2019-13"), "'2019-13'"),
    ],
)
def test_flow_parameters_fail_fast_with_the_same_message_and_page_nobody(
    prefect_harness: None, gaibao_home: Path, monkeypatch: pytest.MonkeyPatch, call, needle: str
) -> None:
    from flows.backfill import backfill
    from flows.nightly import nightly_ingest
    from gaibao.settings import get_settings

    monkeypatch.setenv("GAIBAO_DATA_ENGINEERS", '["oncall@example.cn"]')
    get_settings.cache_clear()
    started = time.monotonic()
    with pytest.raises(Exception) as info:  # noqa: PT011 - Prefect's ParameterTypeError or ours
        call({"nightly": nightly_ingest, "backfill": backfill})
    assert needle in str(info.value) and "/ " in str(info.value)
    assert time.monotonic() - started < 15
    assert not (gaibao_home / "warehouse.db").exists()  # nothing ran
    assert not list(gaibao_home.rglob("*.eml"))  # nobody paged


def test_flow_refuses_an_unknown_county(prefect_harness: None, gaibao_home: Path, monkeypatch) -> None:
    from flows.nightly import nightly_ingest
    from gaibao.settings import get_settings

    monkeypatch.setenv("GAIBAO_DATA_ENGINEERS", '["oncall@example.cn"]')
    get_settings.cache_clear()
    with pytest.raises(OptionError, match="999999"):
        nightly_ingest(period="2018-12", counties=["999999"])
    assert not list(gaibao_home.rglob("*.eml"))


def test_status_on_a_home_without_a_warehouse_says_so_and_creates_nothing(home: Path) -> None:
    proc, _ = _run(home, "status", "--period", "2018-12")
    _assert_refused(home, proc, EXIT_BAD_SETTINGS, "gaibao db upgrade")
    assert not (home / "warehouse.db").exists()


def test_a_deployment_run_with_a_bad_period_fails_fast_and_pages_nobody(
    prefect_harness: None, gaibao_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a process worker runs it: the flow loaded in a process of its own from its entrypoint."""
    import asyncio
    import contextvars
    import threading

    from prefect.client.orchestration import get_client
    from prefect.runner import Runner

    from flows.backfill import backfill
    from gaibao.settings import get_settings

    monkeypatch.setenv("GAIBAO_DATA_ENGINEERS", '["oncall@example.cn"]')
    get_settings.cache_clear()
    runner = Runner(name="bad-period", query_seconds=1)
    deployment_id = runner.add_flow(backfill, name="bad-period")
    with get_client(sync_client=True) as client:
        scheduled = client.create_flow_run_from_deployment(
            deployment_id, parameters={"start": "2018-13", "end": "2018-12"}
        )
    errors: list[BaseException] = []

    def run_runner() -> None:
        try:
            asyncio.run(runner.start(run_once=True))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=contextvars.copy_context().run, args=(run_runner,), daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive() and not errors, errors
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(scheduled.id).state
    assert state is not None and state.is_failed(), state
    assert "'2018-13'" in (state.message or "") and "不是有效的报告期" in (state.message or "")
    assert time.monotonic() - started < 90
    assert not (gaibao_home / "warehouse.db").exists()  # nothing ran
    assert not list(gaibao_home.rglob("*.eml"))  # nobody paged
