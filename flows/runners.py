"""The task runner of the ingest flows, chosen in one place from settings.

``default``: Prefect's thread pool (fetching is I/O; reading releases the GIL in the parsers).
``dask``: prefect-dask, fanning the per-county fetch-and-read chunks out over a Dask cluster, at
``GAIBAO_DASK_ADDRESS`` when set, otherwise a temporary ``LocalCluster`` of worker processes.
Validation and loading stay batched in the flow's own process whatever the runner.
"""

from __future__ import annotations

import os
from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from gaibao.settings import Settings, get_settings


def prefect_api_url() -> str:
    """The API the flow's process talks to, starting Prefect's temporary server if there is none.

    Dask worker processes run the tasks and report their states: they must reach the same API,
    not each start a temporary server of their own.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return str(url)
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the same instance the flow engine's client uses
    server.start()
    return server.api_url


class InterruptibleThreadPoolTaskRunner(ThreadPoolTaskRunner):
    """Prefect's thread pool, except that a run ended by a crash (SIGTERM, Ctrl-C, ``SystemExit``)
    does not wait for its task threads before the engine reports the crash.

    Prefect closes the task runner before it handles the crash, and the thread pool's close joins
    the running threads: a fetch hanging on a county platform held the Crashed state and the
    crash notice until the fetch timed out (minutes, with retries), long after a supervisor's
    stop timeout would have SIGKILLed the process and lost the notice. Here a crash cancels the
    queued tasks and leaves the running threads behind (they end with their own timeouts; the
    interpreter waits for them before it exits); an ordinary exit or exception behaves as Prefect's.
    """

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        crashed = exc_type is not None and not issubclass(exc_type, Exception)
        executor = getattr(self, "_executor", None)
        if crashed and executor is not None:
            for event in getattr(self, "_cancel_events", {}).values():
                event.set()
            executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        super().__exit__(exc_type, exc_value, traceback)


def task_runner(settings: Settings | None = None, kind: str | None = None, cluster=None):
    settings = settings or get_settings()
    kind = kind or settings.task_runner
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if cluster is not None:
            return DaskTaskRunner(cluster=cluster)
        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        env = {"PREFECT_API_URL": prefect_api_url()}
        env.update({k: v for k, v in os.environ.items() if k.startswith(("GAIBAO_", "PREFECT_LOGGING"))})
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": 2,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
                "env": env,
            }
        )
    if kind == "default":
        return InterruptibleThreadPoolTaskRunner(max_workers=4)
    raise ValueError(f"unknown task runner {kind!r}: expected 'default' or 'dask'")
