"""Failure notice for the nightly run: mail the data engineers the failing step and error."""

from __future__ import annotations

import logging
import traceback

log = logging.getLogger(__name__)


def failure_message(flow_name: str, parameters: dict, state_message: str, error: str) -> tuple[str, str]:
    """Subject and body (Chinese first, English detail) of a failed-run notice."""
    subject = f"【gaibao】夜间任务失败 / run failed: {flow_name}"
    params = ", ".join(f"{k}={v}" for k, v in sorted(parameters.items()))
    body = (
        f"流程 {flow_name} 运行失败。\n参数：{params}\n状态：{state_message}\n\n错误：\n{error}\n"
        "\n(The data engineers on call receive this notice; the warehouse is unchanged by the failed load.)\n"
    )
    return subject, body


def notify_failure(flow, flow_run, state) -> None:
    """Prefect ``on_failure`` hook: send the notice through the configured mail sender."""
    from gaibao.settings import get_settings

    settings = get_settings()
    try:
        exc = state.result(raise_on_failure=False)
        error = "".join(traceback.format_exception(exc)) if isinstance(exc, BaseException) else str(exc)
    except Exception as inner:  # noqa: BLE001 - the notice must go out whatever the state holds
        error = repr(inner)
    subject, body = failure_message(flow.name, dict(flow_run.parameters or {}), state.message or "", error)
    if not settings.data_engineers:
        log.warning("no GAIBAO_DATA_ENGINEERS configured; failure notice not sent: %s", subject)
        return
    try:
        from reports.deliver import sender_from_settings

        sender_from_settings(settings).send_text(settings.data_engineers, subject, body)
    except Exception:  # noqa: BLE001
        log.exception("could not send the failure notice")
