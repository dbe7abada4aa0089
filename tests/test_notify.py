"""The failed-run and crashed-run notices.

A real flow whose load fails mails the data engineers step, county, error. A real flow run whose
process is killed mid-fetch mails them that the run crashed, to a real SMTP server on loopback:
SIGTERM to the `gaibao ingest` command (the flow engine sees the crash and runs the hook in the
flow's process), and SIGKILL or SIGTERM to a flow run started by a real Prefect runner (after a
SIGKILL the process cannot say a word: the runner reports the crash and runs the hook).
"""

from __future__ import annotations

import asyncio
import contextvars
import email
import email.policy
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from filebuilders import progress_rows, write_return
from servers import FaultyHttpServer

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


def test_compose_crash_notice() -> None:
    notice = FailureNotice(
        flow_name="backfill",
        flow_run_name="calm-fox",
        flow_run_id="0000",
        parameters={"start": "2018-11", "end": "2018-12", "counties": ["340102"], "force": False},
        step=None,
        task_run_name=None,
        county="340102",
        error="Process exited with status code: -9.",
        details="",
        state_message="Process exited with status code: -9. This indicates that the process exited due to a SIGKILL signal.",
        crashed=True,
    )
    subject, body = compose_notice(notice)
    assert subject == "【gaibao】运行中断（Crashed）：backfill 2018-11..2018-12，步骤 未能确定"
    assert "流程 backfill 的运行 calm-fox 中断（Crashed）" in body
    assert "中断时的步骤：未能确定" in body and "县区：340102" in body
    assert "中断原因（Prefect 状态消息）：Process exited with status code: -9." in body
    assert "参数：counties=['340102'], end=2018-12, force=False, start=2018-11" in body
    assert "异常：" not in body and "Traceback:" not in body  # no exception is known after a SIGKILL
    assert "运行失败" not in subject + body


# --------------------------------------------------------------------------------------------
# Crashed runs, for real


class SmtpInbox:
    """An aiosmtpd handler keeping what arrives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd's signature
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content or envelope.content)))
        self.arrived.set()
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[SmtpInbox, int]]:
    from aiosmtpd.controller import Controller

    inbox = SmtpInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


@pytest.fixture
def hanging_platform(gaibao_home: Path) -> Iterator[tuple[FaultyHttpServer, str, Path]]:
    """County 340102 publishes through an HTTP platform that accepts the request and never answers
    (until the server stops): a run fetching it sits in ``fetch_returns`` until it is killed."""
    county = "340102"
    with FaultyHttpServer(hang_s=120) as platform:
        platform.add_route(f"/api/{county}/progress", [[]])
        platform.fail(f"/api/{county}/progress", "hang", times=None)
        sources = gaibao_home / "sources.yaml"
        url = platform.url("/api/{county_code}/progress") + "?period={period}"
        sources.write_text(f'"{county}":\n  type: http\n  kind: progress\n  url: "{url}"\n', encoding="utf-8")
        yield platform, county, sources


def _wait_for(what: str, check: Callable[[], Any], timeout_s: float, proc: Any = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and not _alive(proc):
            raise AssertionError(f"the flow's process ended before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def _alive(proc: Any) -> bool:
    return proc.poll() is None if isinstance(proc, subprocess.Popen) else proc.is_alive()


def _running_fetch(flow_name: str) -> Any:
    """The flow run of ``flow_name`` whose ``fetch_returns`` task run the API shows Running."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        TaskRunFilter,
        TaskRunFilterName,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="fetch_returns"),
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING])),
            ),
        )
        return client.read_flow_run(runs[0].flow_run_id) if runs else None


def _flow_run_state(flow_run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def _crash_env(gaibao_home: Path, sources: Path, smtp_port: int) -> dict[str, str]:
    return {
        "GAIBAO_HOME": str(gaibao_home),
        "GAIBAO_SOURCES": str(sources),
        "GAIBAO_FETCH_TIMEOUT_S": "300",  # the hang lasts until the process is killed
        "GAIBAO_MAIL_MODE": "smtp",
        "GAIBAO_SMTP_HOST": "127.0.0.1",
        "GAIBAO_SMTP_PORT": str(smtp_port),
        "GAIBAO_DATA_ENGINEERS": json.dumps(ENGINEERS),
    }


def _the_notice(inbox: SmtpInbox, timeout_s: float = 30) -> tuple[list[str], email.message.EmailMessage, str]:
    assert inbox.arrived.wait(timeout_s), "no crash notice reached the SMTP server"
    rcpt, raw = inbox.messages[0]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    return rcpt, msg, msg.get_body(("plain",)).get_content()


def _assert_nothing_loaded(gaibao_home: Path) -> None:
    from warehouse.store import Warehouse

    with Warehouse(f"sqlite:///{gaibao_home / 'warehouse.db'}", gaibao_home) as wh:
        assert wh.query("SELECT COUNT(*) AS n FROM submission")["n"].iloc[0] == 0


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_sigterm_to_the_ingest_command_mails_a_crash_notice(
    prefect_harness: None, gaibao_home: Path, hanging_platform, smtp_inbox
) -> None:
    """`gaibao ingest` gets SIGTERM while fetching: the engine marks the run Crashed and its
    on_crashed hook, in the flow's own process, mails the notice through real SMTP."""
    from prefect.settings import PREFECT_API_URL

    platform, county, sources = hanging_platform
    inbox, smtp_port = smtp_inbox
    period = "2018-12"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAIBAO_", "PREFECT_API"))}
    env.update(_crash_env(gaibao_home, sources, smtp_port), PREFECT_API_URL=str(PREFECT_API_URL.value()))
    gaibao = str(Path(sys.executable).with_name("gaibao"))
    log = (gaibao_home / "ingest.log").open("wb")
    proc = subprocess.Popen(
        [gaibao, "ingest", "--period", period, "--county", county], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        _wait_for("the request to the platform", lambda: platform.hits(f"/api/{county}/progress"), 60, proc)
        flow_run = _wait_for("fetch_returns Running in the API", lambda: _running_fetch("nightly-ingest"), 30, proc)
        proc.send_signal(signal.SIGTERM)
        rcpt, msg, body = _the_notice(inbox)
        time.sleep(1.0)  # a second notice (a duplicate) would arrive now
    finally:
        if proc.poll() is None:  # the hanging fetch thread would hold the exit until the platform answers
            proc.kill()
        proc.wait(10)
        log.close()

    assert len(inbox.messages) == 1, [m[1][:300] for m in inbox.messages]
    assert sorted(rcpt) == ENGINEERS and msg["X-Gaibao-Run-State"] == "Crashed"
    assert msg["Subject"] == f"【gaibao】运行中断（Crashed）：nightly-ingest {period}，步骤 fetch_returns"
    assert f"流程 nightly-ingest 的运行 {flow_run.name} 中断（Crashed）" in body
    assert "中断时的步骤：fetch_returns（任务运行 fetch_returns-" in body
    assert f"县区：{county}" in body and f"报告期：{period}" in body
    assert "中断原因（Prefect 状态消息）：Execution was aborted by a termination signal." in body
    assert f"参数：counties=['{county}'], period={period}" in body
    assert f"流程运行 ID：{flow_run.id}" in body
    assert "异常：TerminationSignal" in body and "Traceback:" in body
    assert _flow_run_state(flow_run.id).is_crashed()
    _assert_nothing_loaded(gaibao_home)


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_under_a_runner_mails_one_crash_notice(
    sig: signal.Signals,
    prefect_harness: None,
    gaibao_home: Path,
    hanging_platform,
    smtp_inbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A backfill run started by a real Prefect runner (as a process worker starts it) is killed
    while fetching.

    SIGKILL: nothing in the flow's process can react; the runner sees the exit, marks the run
    Crashed and runs the on_crashed hook in its own process, which mails the notice.
    SIGTERM: the engine in the flow's process marks the run Crashed and runs the hook there;
    when the process is then SIGKILLed anyway (a supervisor's stop timeout, the fetch thread
    still hanging), the runner knows the run already ended: still exactly one notice.
    """
    from prefect.client.orchestration import get_client
    from prefect.runner import Runner

    from flows.backfill import backfill
    from gaibao.settings import get_settings

    platform, county, sources = hanging_platform
    inbox, smtp_port = smtp_inbox
    for key, value in _crash_env(gaibao_home, sources, smtp_port).items():
        monkeypatch.setenv(key, value)  # the runner's environment, inherited by the flow run's process
    get_settings.cache_clear()
    children_before = set(multiprocessing.active_children())

    runner = Runner(name=f"crash-test-{sig.name}", query_seconds=1)
    deployment_id = runner.add_flow(backfill, name=f"crash-test-{sig.name}")
    with get_client(sync_client=True) as client:
        scheduled = client.create_flow_run_from_deployment(
            deployment_id, parameters={"start": "2018-11", "end": "2018-12", "counties": [county]}
        )
    ran: list[BaseException] = []

    def run_runner() -> None:
        try:
            asyncio.run(runner.start(run_once=True))  # returns once the run and its hooks are done
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            ran.append(exc)

    thread = threading.Thread(target=contextvars.copy_context().run, args=(run_runner,), daemon=True)
    thread.start()
    try:
        _wait_for("the request to the platform", lambda: platform.hits(f"/api/{county}/progress"), 60)
        flow_run = _wait_for("fetch_returns Running in the API", lambda: _running_fetch("backfill"), 30)
        assert flow_run.id == scheduled.id
        (child,) = set(multiprocessing.active_children()) - children_before  # the flow run's process
        os.kill(child.pid, sig)
        rcpt, msg, body = _the_notice(inbox)
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
        thread.join(30)
        time.sleep(1.0)  # a second notice (from the runner) would have arrived by now
    finally:
        for proc in set(multiprocessing.active_children()) - children_before:
            proc.kill()
    assert not thread.is_alive() and not ran, ran
    assert len(inbox.messages) == 1, [m[1][:300] for m in inbox.messages]

    assert sorted(rcpt) == ENGINEERS and msg["X-Gaibao-Run-State"] == "Crashed"
    assert msg["Subject"] == "【gaibao】运行中断（Crashed）：backfill 2018-11..2018-12，步骤 fetch_returns"
    assert f"流程 backfill 的运行 {flow_run.name} 中断（Crashed）" in body
    assert "中断时的步骤：fetch_returns（任务运行 fetch_returns-" in body
    assert f"县区：{county}" in body and "报告期：2018-11..2018-12" in body
    params = next(line for line in body.splitlines() if line.startswith("参数："))
    assert params == f"参数：counties=['{county}'], end=2018-12, start=2018-11"  # as the run was asked
    state = _flow_run_state(flow_run.id)
    assert state.is_crashed()
    if sig == signal.SIGKILL:
        assert "中断原因（Prefect 状态消息）：Process exited with status code: -9" in body
        assert "异常：" not in body  # nothing is known of an exception: the process could not say
        assert "-9" in (state.message or "")
    else:
        assert "中断原因（Prefect 状态消息）：Execution was aborted by a termination signal." in body
        assert "异常：TerminationSignal" in body
        assert state.message == "Execution was aborted by a termination signal."
    _assert_nothing_loaded(gaibao_home)
