"""Flow state hooks: the failed-run notice (``on_failure`` of nightly_ingest and backfill).

The hook gathers what failed and hands it to ``tasks.notify`` (plain functions) to mail:

- the step: the innermost ``tasks/steps.py`` task function in the exception's traceback; when the
  traceback does not show one (a task run in another process), the failed task runs of the flow
  run as the Prefect API reports them;
- the county: a county code the error carries, else the run's ``counties`` parameter;
- the error: type, message and traceback, cleaned of anything that could hold personal data.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger

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


def failed_task_runs(flow_run_id: Any, wait_s: float = 3.0) -> list[tuple[str, str]]:
    """(task name, task run name) of the flow run's Failed/Crashed task runs, from the API.

    Task run states reach the API as events, a moment after the task ends: poll up to ``wait_s``.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED]))
                ),
            )
            if runs or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    runs = sorted(runs, key=lambda r: r.end_time or r.expected_start_time or r.created)
    return [(r.task_key.split("-")[0] if r.task_key else r.name.rsplit("-", 1)[0], r.name) for r in runs]


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Prefect ``on_failure`` hook: mail the data engineers the failing step, county and error."""
    logger = get_run_logger()
    settings = get_settings()
    exc = _state_exception(state)
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
    error, details = error_text(exc, fallback=state.message or "")
    notice = FailureNotice(
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
    )
    where = send_failure_notice(notice, settings)
    if where:
        logger.warning("failure notice sent to the data engineers: %s", where)
