"""The task runner of the ingest flows, chosen in one place from settings.

``default``: Prefect's thread pool (fetching is I/O; reading releases the GIL in the parsers).
``dask``: prefect-dask, fanning the per-county fetch-and-read chunks out over a Dask cluster, at
``GAIBAO_DASK_ADDRESS`` when set, otherwise a temporary ``LocalCluster`` of worker processes.
Validation and loading stay batched in the flow's own process whatever the runner.
"""

from __future__ import annotations

import os

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
        return ThreadPoolTaskRunner(max_workers=4)
    raise ValueError(f"unknown task runner {kind!r}: expected 'default' or 'dask'")
