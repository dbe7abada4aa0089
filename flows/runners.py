"""The task runner of the ingest flows, chosen in one place from settings.

``default``: Prefect's thread pool (fetching is I/O; reading releases the GIL in the parsers).
``dask``: prefect-dask, fanning the per-county fetch-and-read chunks out over a Dask cluster, at
``GAIBAO_DASK_ADDRESS`` when set, otherwise one ``LocalCluster`` of worker processes per Python
process (:func:`ensure_local_cluster`): started when the first flow run submits work to it, reused
by every later flow run of the process, closed at interpreter exit. Starting a cluster costs
seconds (about 10 on two cores); a process running several flows pays it once.
Validation and loading stay batched in the flow's own process whatever the runner.

The local cluster's workers run without distributed's statistical profiler
(:func:`local_worker_config`): on Python 3.11 before 3.11.9 the profiler's ``sys._current_frames()``
can deadlock the worker process for good (CPython gh-106883), and the fetch step produces exactly
the garbage that triggers it. Workers of a cluster at ``GAIBAO_DASK_ADDRESS`` need the same
setting (``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=False``) unless their Python is 3.11.9 or later.
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import threading
import time
from typing import Any, NamedTuple

from prefect.task_runners import ThreadPoolTaskRunner

from gaibao.settings import Settings, get_settings

log = logging.getLogger(__name__)

LOCAL_CLUSTER_WORKERS = 2


def prefect_api_url() -> str:
    """The API the flow's process talks to, starting Prefect's temporary server if there is none.

    Dask worker processes run the tasks and report their states: they must reach the same API,
    not each start a temporary server of their own.
    """
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return str(url)
    return start_temporary_server()


# ------------------------------------------------------------------------------------------
# Prefect's temporary server, tied to this process

# Waits for the flow's process or the server to end; if the flow's process ends first (killed,
# out of memory), stops the server: Prefect stops it only from an atexit hook, which a SIGKILL
# never runs, and the orphan (~200 MB) would live on. pidfds make it race-free: the server is
# signalled through a handle on that very process, never through a pid that may be reused.
_WATCHDOG = r"""
import os, select, signal, sys, time
parent, server = int(sys.argv[1]), int(sys.argv[2])
try:
    server_fd = os.pidfd_open(server)
except ProcessLookupError:
    sys.exit(0)
try:
    parent_fd = os.pidfd_open(parent)
except ProcessLookupError:
    parent_fd = None
if parent_fd is not None:
    ready, _, _ = select.select([parent_fd, server_fd], [], [])
    if server_fd in ready:
        sys.exit(0)
signal.pidfd_send_signal(server_fd, signal.SIGTERM)
ready, _, _ = select.select([server_fd], [], [], 5)
if not ready:
    signal.pidfd_send_signal(server_fd, signal.SIGKILL)
"""


def start_temporary_server() -> str:
    """Start Prefect's temporary server now (the instance the flow engine's client reuses) and
    tie it to this process: a watchdog process stops it when this process ends without stopping
    it. Returns its API URL. Call it before the first flow run when ``PREFECT_API_URL`` is unset."""
    import subprocess
    import sys

    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the same instance the flow engine's client uses
    already = server.running
    server.start()
    process = server.server_process
    if not already and process is not None and hasattr(os, "pidfd_open"):
        subprocess.Popen(  # noqa: S603 - our own code, our own interpreter
            [sys.executable, "-I", "-c", _WATCHDOG, str(os.getpid()), str(process.pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to this process's group is not the watchdog's
            close_fds=True,
        )
    return server.api_url


def ensure_temporary_server() -> str | None:
    """``start_temporary_server()`` unless ``PREFECT_API_URL`` names a server (then None)."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    return start_temporary_server()


# ------------------------------------------------------------------------------------------
# The thread pool


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


# ------------------------------------------------------------------------------------------
# One Dask LocalCluster per process


class ClusterStart(NamedTuple):
    """The shared LocalCluster's scheduler address, and the seconds this call spent starting it
    (0.0 when it was already running)."""

    address: str
    start_s: float


_cluster_lock = threading.Lock()
_cluster: Any = None  # distributed.LocalCluster
_cluster_env: dict[str, str] | None = None
_atexit_registered = False


def _worker_env() -> dict[str, str]:
    """What the Dask worker processes need from the flow's environment: the Prefect API (the
    temporary server of this process, if there is no other) and the ``GAIBAO_*`` settings."""
    env = {"PREFECT_API_URL": prefect_api_url()}
    env.update({k: v for k, v in os.environ.items() if k.startswith(("GAIBAO_", "PREFECT_LOGGING"))})
    return env


def local_worker_config() -> dict[str, Any]:
    """The Dask configuration the local cluster's workers start with: this process's, with the
    worker profiler off.

    Every 10 ms while a task runs, a worker's event loop samples the stacks of all its threads
    with ``sys._current_frames()``. On CPython 3.11 before 3.11.9 (gh-106883) that call holds the
    runtime's thread-list lock while it allocates; when the allocation starts a garbage collection
    that frees a ``threading.local`` (tenacity's ``Retrying`` keeps one in a reference cycle, and
    the fetch step makes one per county), ``local_clear`` takes the same lock again: the event loop
    deadlocks on itself holding the GIL, the whole worker stops, and the scheduler restarts it only
    when its heartbeat is older than ``worker-ttl`` (5 minutes, checked every 5 minutes): at
    national scale a run stalled for 6 to 9 minutes (an unchanged rerun: 446 s instead of about
    20). The profile only feeds the dashboard, which the local cluster does not serve.

    The nanny lays this mapping over its own configuration one top-level key at a time (a shallow
    merge), so the whole configuration goes in, deep-copied: restarted workers get the same.
    """
    import dask

    config = copy.deepcopy(dask.config.config)
    return dask.config.update(config, {"distributed": {"worker": {"profile": {"enabled": False}}}})


def ensure_local_cluster() -> ClusterStart:
    """Start this process's Dask ``LocalCluster`` (2 worker processes) unless it runs; return its
    scheduler address and the seconds spent starting it now (0.0 when it was running).

    The workers are started with the environment of the moment (:func:`_worker_env`); if that
    environment has changed since (another ``GAIBAO_HOME``, another Prefect API), the cluster is
    closed and a new one started, so workers never run with stale settings. Closed at exit.
    """
    global _cluster, _cluster_env, _atexit_registered
    env = _worker_env()
    with _cluster_lock:
        if _cluster is not None and _cluster_env != env:
            log.info("the flow's environment changed: restarting the local Dask cluster")
            _close_locked()
        if _cluster is not None:
            return ClusterStart(_cluster.scheduler_address, 0.0)
        from distributed import LocalCluster

        started = time.perf_counter()
        _cluster = LocalCluster(
            n_workers=LOCAL_CLUSTER_WORKERS,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env=env,
            config=local_worker_config(),  # passed to each worker's nanny
        )
        _cluster_env = env
        start_s = time.perf_counter() - started
        if not _atexit_registered:
            atexit.register(close_local_cluster)
            _atexit_registered = True
        log.info("local Dask cluster at %s started in %.1f s", _cluster.scheduler_address, start_s)
        return ClusterStart(_cluster.scheduler_address, start_s)


def local_cluster_address() -> str | None:
    """The scheduler address of this process's LocalCluster, None when none runs."""
    with _cluster_lock:
        return _cluster.scheduler_address if _cluster is not None else None


def close_local_cluster() -> None:
    """Close this process's LocalCluster, if one runs (registered with ``atexit``)."""
    with _cluster_lock:
        _close_locked()


def _close_locked() -> None:
    global _cluster, _cluster_env
    cluster, _cluster, _cluster_env = _cluster, None, None
    if cluster is not None:
        try:
            cluster.close()
        except Exception:  # noqa: BLE001 - at exit, a cluster that will not close is logged, not raised
            log.warning("could not close the local Dask cluster", exc_info=True)


def _in_dask_worker() -> bool:
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def _shared_local_cluster_runner() -> type:
    """``SharedLocalClusterTaskRunner``, defined on first use: prefect_dask and distributed are
    imported only when a Dask runner is asked for. The class is a module attribute once defined
    (``flows.runners.SharedLocalClusterTaskRunner``), so flows holding it pickle by reference."""
    runner_class = globals().get("SharedLocalClusterTaskRunner")
    if runner_class is not None:
        return runner_class
    from prefect_dask import DaskTaskRunner

    class SharedLocalClusterTaskRunner(DaskTaskRunner):
        """A ``DaskTaskRunner`` on this process's LocalCluster (:func:`ensure_local_cluster`).

        The address is looked up when the first task is submitted, not when the flow is defined
        or its runner duplicated: defining a flow with this runner starts nothing, and the copy
        of the runner that Prefect builds inside a Dask worker (when it restores a task's flow
        context) never starts a cluster there.
        """

        @property
        def client(self) -> Any:
            if not self._client and not self.address and self._cluster is None and not _in_dask_worker():
                self.address = ensure_local_cluster().address
            return super().client

    SharedLocalClusterTaskRunner.__module__ = __name__
    SharedLocalClusterTaskRunner.__qualname__ = "SharedLocalClusterTaskRunner"
    globals()["SharedLocalClusterTaskRunner"] = SharedLocalClusterTaskRunner
    return SharedLocalClusterTaskRunner


def task_runner(settings: Settings | None = None, kind: str | None = None, cluster: Any = None) -> Any:
    """The task runner for ``kind`` (default: ``GAIBAO_TASK_RUNNER``).

    ``cluster``: a running Dask cluster object to use (its scheduler address is what the runner
    keeps, as Prefect rebuilds the runner for each flow run from its settings).
    """
    settings = settings or get_settings()
    kind = kind or settings.task_runner
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if cluster is not None:
            return DaskTaskRunner(address=cluster.scheduler_address)
        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return _shared_local_cluster_runner()()
    if kind == "default":
        return InterruptibleThreadPoolTaskRunner(max_workers=4)
    raise ValueError(f"unknown task runner {kind!r}: expected 'default' or 'dask'")


def __getattr__(name: str) -> Any:
    if name == "SharedLocalClusterTaskRunner":  # unpickling a flow in a fresh process
        return _shared_local_cluster_runner()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
