"""Flow state hooks: the failed-run and crashed-run notices of nightly_ingest, backfill and the
monthly pack.

``notify_failure`` (``on_failure``) and ``notify_crash`` (``on_crashed``) gather what stopped the
run and hand it to ``tasks.notify`` (plain functions) to mail:

- the step: the innermost ``tasks/steps.py`` task function in the exception's traceback; when the
  traceback does not show one (a task run in another process or thread, a killed process), the
  flow run's task runs as the Prefect API reports them: Failed/Crashed ones for a failure, and
  for a crash also the ones still Running when the process ended;
- the county: a county code the error carries, else the run's ``counties`` parameter;
- the error: type, message and traceback, cleaned of anything that could hold personal data;
  for a crash also Prefect's state message ("Execution was aborted by a termination signal.",
  "Process exited with status code: -9 …").

Where ``on_crashed`` runs: when the flow's own process sees the crash (SIGTERM, Ctrl-C,
``SystemExit``), Prefect's flow engine runs it there, as it runs ``on_failure``. When the process
dies without a word (SIGKILL, out of memory, a lost machine), the Prefect runner or process
worker that started it proposes the Crashed state and runs the hook in *its* process, with no
flow run context: the hooks log through ``flow_run_logger`` then, and read settings (mail, data
engineers) from that process's environment, i.e. the worker's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from gaibao.settings import get_settings
from tasks.notify import (
    FailureNotice,
    county_from_exception,
    describe_counties,
    error_text,
    failing_step_from_traceback,
    send_failure_notice,
)


def _state_exception(state: Any) -> BaseException | None:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as inner:  # noqa: BLE001 - whatever the state holds, the notice goes out
        return inner
    return exc if isinstance(exc, BaseException) else None


def _hook_logger(flow: Any, flow_run: Any) -> Any:
    """The run logger; outside a flow run context (a runner or worker running ``on_crashed``
    after the flow's process died) a logger bound to the flow run all the same."""
    try:
        return get_run_logger()
    except MissingContextError:
        from prefect.logging.loggers import flow_run_logger

        return flow_run_logger(flow_run, flow)


def task_runs_in_states(flow_run_id: Any, state_types: Iterable[Any], wait_s: float = 3.0) -> list[Any]:
    """The flow run's task runs (``TaskRun``) whose state is of one of ``state_types``, from the API.

    Task run states reach the API as events, a moment after they change: poll up to ``wait_s``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )

    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=list(state_types)))
                ),
            )
            if runs or time.monotonic() > deadline:
                return list(runs)
            time.sleep(0.3)


def _task_and_run_names(runs: Iterable[Any]) -> list[tuple[str, str]]:
    # the pack flow's task functions end in ``_task`` (``deliver_pack_task``); their names do not
    return [
        ((r.task_key.split("-")[0] if r.task_key else r.name.rsplit("-", 1)[0]).removesuffix("_task"), r.name)
        for r in runs
    ]


def failed_task_runs(flow_run_id: Any, wait_s: float = 3.0) -> list[tuple[str, str]]:
    """(task name, task run name) of the flow run's Failed/Crashed task runs, in the order they ended."""
    from prefect.client.schemas.objects import StateType

    runs = task_runs_in_states(flow_run_id, [StateType.FAILED, StateType.CRASHED], wait_s)
    return _task_and_run_names(sorted(runs, key=lambda r: r.end_time or r.expected_start_time or r.created))


def interrupted_task_runs(flow_run_id: Any, wait_s: float = 3.0) -> list[tuple[str, str]]:
    """(task name, task run name) of the task runs a crash cut short: still Running when the
    process ended (or already marked Crashed/Failed), in the order they started."""
    from prefect.client.schemas.objects import StateType

    runs = task_runs_in_states(flow_run_id, [StateType.RUNNING, StateType.CRASHED, StateType.FAILED], wait_s)
    return _task_and_run_names(sorted(runs, key=lambda r: r.start_time or r.expected_start_time or r.created))


def _notice(
    flow: Any,
    flow_run: Any,
    state: Any,
    exc: BaseException | None,
    parameters: dict[str, Any],
    step: str | None,
    task_run_name: str | None,
    crashed: bool = False,
) -> FailureNotice:
    """The notice of a failed (or crashed) run, from what the hook found out."""
    error, details = error_text(exc, fallback=state.message or "")
    return FailureNotice(
        flow_name=flow.name,
        flow_run_name=flow_run.name,
        flow_run_id=str(flow_run.id),
        parameters=parameters,
        step=step,
        task_run_name=task_run_name,
        county=county_from_exception(exc) or describe_counties(parameters),
        error=error,
        details=details,
        state_message=state.message or "",
        crashed=crashed,
    )


def _refused_parameters(exc: BaseException | None) -> bool:
    """A run refused for its parameters (``gaibao.options``: a bad period, range or county), by
    Prefect's parameter validation or by the flow's own first check."""
    from prefect.exceptions import ParameterTypeError

    from gaibao.options import OptionError

    return isinstance(exc, ParameterTypeError | OptionError)


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect ``on_failure`` hook: mail the data engineers the failing step, county and error."""
    logger = _hook_logger(flow, flow_run)
    settings = get_settings()
    exc = _state_exception(state)
    if _refused_parameters(exc):
        # the run never started: whoever triggered it sees the one-line reason; nobody is paged
        logger.error("parameters refused, nothing ran: %s", exc)
        return
    parameters = dict(flow_run.parameters or {})
    step = failing_step_from_traceback(exc)
    task_run_name = None
    try:
        failed = failed_task_runs(flow_run.id, wait_s=3.0 if step is None else 1.0)
    except Exception as inner:  # noqa: BLE001 - the API may be gone; the traceback still names the step
        logger.warning("could not read the failed task runs: %s", inner)
        failed = []
    if failed:
        matching = [name for key, name in failed if key == step]
        if step is None:
            step, task_run_name = failed[-1]
        elif matching:
            task_run_name = matching[-1]
    notice = _notice(flow, flow_run, state, exc, parameters, step, task_run_name)
    where = send_failure_notice(notice, settings)
    if where:
        logger.warning("failure notice sent to the data engineers: %s", where)


def _describe_steps(runs: list[tuple[str, str]], limit: int = 5) -> tuple[str, str]:
    """("fetch_returns", "fetch_returns-0、fetch_returns-1") for the task runs a crash cut short."""
    steps = list(dict.fromkeys(key for key, _ in runs))
    names = [name for _, name in runs]
    shown = "、".join(names[:limit]) + (f" 等 {len(names)} 个" if len(names) > limit else "")
    return "、".join(steps), shown


def notify_crash(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect ``on_crashed`` hook: mail the data engineers that the run crashed, with the state
    message, the parameters, and the step and county when they are known.

    Runs in the flow's process (SIGTERM, Ctrl-C) or, when that process died, in the runner or
    worker that started it (see the module docstring).
    """
    logger = _hook_logger(flow, flow_run)
    settings = get_settings()
    # The engine attaches the exception that ended the run (TerminationSignal, KeyboardInterrupt …);
    # a state proposed by a runner after the process died carries none.
    data = getattr(state, "data", None)
    exc = data if isinstance(data, BaseException) else None
    parameters = dict(flow_run.parameters or {})
    step = failing_step_from_traceback(exc)
    task_run_name = None
    try:
        cut_short = interrupted_task_runs(flow_run.id, wait_s=3.0 if step is None else 1.0)
    except Exception as inner:  # noqa: BLE001 - the API may be gone too; the notice still goes out
        logger.warning("could not read the interrupted task runs: %s", inner)
        cut_short = []
    if cut_short:
        matching = [(key, name) for key, name in cut_short if key == step]
        if step is None:
            step, task_run_name = _describe_steps(cut_short)
        elif matching:
            task_run_name = _describe_steps(matching)[1]
    notice = _notice(flow, flow_run, state, exc, parameters, step, task_run_name, crashed=True)
    where = send_failure_notice(notice, settings)
    if where:
        logger.warning("crash notice sent to the data engineers: %s", where)
