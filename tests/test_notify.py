"""The failed-run notice: a real flow whose load fails mails the data engineers step, county, error."""

from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path

import pytest
from filebuilders import progress_rows, write_return

from tasks.notify import (
    FailureNotice,
    clean_error_text,
    compose_notice,
    county_from_exception,
    describe_counties,
    failing_step_from_traceback,
)

ENGINEERS = ["de1@example.org", "de2@example.org"]


def _run_flow(name: str, county: str, period: str):
    if name == "nightly-ingest":
        from flows.nightly import nightly_ingest

        return nightly_ingest(period=period, counties=[county])
    from flows.backfill import backfill

    return backfill(start=period, end=period, counties=[county])


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
@pytest.mark.parametrize("flow_name", ["nightly-ingest", "backfill"])
def test_failed_load_mails_the_data_engineers(
    flow_name: str, prefect_harness: None, gaibao_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gaibao.settings import get_settings
    from warehouse import store

    county, period = "340321", "2017-06"
    inbox = gaibao_home / "inbox" / county
    inbox.mkdir(parents=True)
    write_return(inbox / f"{county}_{period}_progress.csv", progress_rows(3, county_code=county, period=period))
    monkeypatch.setenv("GAIBAO_MAIL_MODE", "outbox")
    monkeypatch.setenv("GAIBAO_DATA_ENGINEERS", json.dumps(ENGINEERS))
    get_settings.cache_clear()
    monkeypatch.setattr(store, "FAIL_AT", "before_sql_commit")

    with pytest.raises(store.InjectedFailure):
        _run_flow(flow_name, county, period)

    notices = sorted((gaibao_home / "outbox" / "alerts").glob("*.eml"))
    assert len(notices) == 1, notices
    msg = email.message_from_bytes(notices[0].read_bytes(), policy=email.policy.default)
    body = msg.get_body(("plain",)).get_content()
    assert flow_name in msg["Subject"] and "load_returns" in msg["Subject"] and period in msg["Subject"]
    assert sorted(a.strip() for a in msg["To"].split(",")) == ENGINEERS
    assert "失败步骤：load_returns（任务运行 load_returns-" in body
    assert f"县区：{county}" in body
    assert f"报告期：{period}" in body
    assert "错误：InjectedFailure: before_sql_commit" in body
    assert "Traceback:" in body and "_maybe_fail" in body
    # personal data of the return never leaves the warehouse, not even in an alert
    assert "张三" not in body and "0552-1234567" not in body
    # and the failed load left the warehouse as it was
    from warehouse.store import Warehouse

    with Warehouse.from_settings(get_settings()) as wh:
        assert wh.query("SELECT COUNT(*) AS n FROM submission")["n"].iloc[0] == 0
        assert wh.query("SELECT COUNT(*) AS n FROM fact_progress")["n"].iloc[0] == 0


@pytest.mark.parametrize(
    ("text", "kept", "dropped"),
    [
        (
            "(psycopg.errors.NotNullViolation) null value\nDETAIL:  Failing row contains (HY-1, 张三, 0552-1234567).\n"
            "[SQL: INSERT INTO fact_progress ...]\n[parameters: {'reporter': '张三', 'phone': '0552-1234567'}]\n"
            "(Background on this error at: https://sqlalche.me/e/20/gkpj)",
            ["NotNullViolation", "Failing row contains (omitted)", "[parameters: omitted]", "Background on this error"],
            ["张三", "0552-1234567"],
        ),
        ("IntegrityError\nDETAIL:  Key (project_id)=(HY-1) already exists.", ["Key (… (omitted)"], ["HY-1"]),
        ("InjectedFailure: before_sql_commit", ["InjectedFailure: before_sql_commit"], []),
    ],
)
def test_clean_error_text_cuts_row_values(text: str, kept: list[str], dropped: list[str]) -> None:
    cleaned = clean_error_text(text)
    for part in kept:
        assert part in cleaned
    for part in dropped:
        assert part not in cleaned


def test_clean_error_text_caps_length() -> None:
    cleaned = clean_error_text("x" * 10_000, limit=100)
    assert cleaned.startswith("…\n") and len(cleaned) == 102


def test_step_and_county_from_the_exception() -> None:
    from tasks import steps

    class CountyError(RuntimeError):
        county_code = "341222"

    def boom() -> None:
        raise CountyError("unreachable")

    # a frame in tasks/steps.py names the step; compile a function that claims to live there
    code = compile("def fetch_returns(f):\n    f()\n", steps.__file__, "exec")
    namespace: dict = {}
    exec(code, namespace)
    try:
        try:
            namespace["fetch_returns"](boom)
        except CountyError as inner:
            raise RuntimeError("flow failed") from inner
    except RuntimeError as exc:
        assert failing_step_from_traceback(exc) == "fetch_returns"
        assert county_from_exception(exc) == "341222"
    assert failing_step_from_traceback(ValueError("no traceback")) is None
    assert county_from_exception(ValueError("x")) is None


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [({"counties": ["340321", "341222"]}, "340321、341222"), ({"counties": None}, None), ({}, None), ({"counties": []}, None)],
)
def test_describe_counties(parameters: dict, expected: str | None) -> None:
    assert describe_counties(parameters) == expected


def test_compose_notice_without_a_known_step() -> None:
    notice = FailureNotice(
        flow_name="nightly-ingest",
        flow_run_name="calm-fox",
        flow_run_id="0000",
        parameters={"period": "2018-12", "counties": None},
        step=None,
        task_run_name=None,
        county=None,
        error="RuntimeError: boom",
        details="",
    )
    subject, body = compose_notice(notice)
    assert subject == "【gaibao】运行失败：nightly-ingest 2018-12，步骤 未能确定"
    assert "县区：未能确定" in body and "错误：RuntimeError: boom" in body
