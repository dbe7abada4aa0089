"""Parsing county files in worker processes.

Reading a return is pure Python (decoding, the csv module, per-cell clean-up): threads cannot
share that work because of the GIL, so at national scale it is handed to a small pool of
processes, one per CPU. Each file goes out as bytes and comes back as a ``ParsedReturn`` whose
rows are plain object arrays (``tasks.read.Grid``), cheap to pickle.

The pool is made once per Python process, on first use, and shut down at exit. Inside a daemon
process (a Dask worker) no pool is made: such processes may not have children, and Dask already
spreads the chunks over processes. ``processes=0`` parses in the calling thread.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tasks.read import ParsedReturn, read_return

log = logging.getLogger(__name__)

# Below this many files a chunk is parsed in the calling thread: shipping a handful of files to
# another process costs more than it saves.
MIN_FILES_FOR_POOL = 8

_pool: ProcessPoolExecutor | None = None
_pool_size = 0
_disabled = False
_lock = threading.Lock()


def default_processes() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cpus if cpus >= 2 else 0


# Failure injection for the tests: a reader process given this file name dies (as a parser crash
# would). Read from the environment the process started with; never set in production.
_CRASH_ON = os.environ.get("GAIBAO_TEST_READER_CRASH")


def _read_one(item: tuple[bytes, str, str | None]) -> ParsedReturn:
    content, file_name, kind = item
    if _CRASH_ON and file_name == _CRASH_ON and multiprocessing.parent_process() is not None:
        os._exit(70)
    return read_return(content, file_name, kind)


def _warm() -> None:  # pragma: no cover - runs in the worker
    import tasks.normalise  # noqa: F401  (pandas, pyarrow: imported once, before the first file)


def _context() -> Any:
    # forkserver: forking a process that runs threads (Prefect's) is unsafe.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tasks.read"])
    return ctx


def _sized(
    pool: ProcessPoolExecutor | None, size: int, processes: int, initializer: Any
) -> tuple[ProcessPoolExecutor, int]:
    """``pool`` if it has ``processes`` workers, else a new pool of that size (the old one shut down)."""
    if pool is not None and size == processes:
        return pool, size
    _drop(pool)
    return ProcessPoolExecutor(
        max_workers=processes, mp_context=_context(), initializer=initializer
    ), processes


def _drop(pool: ProcessPoolExecutor | None) -> None:
    if pool is not None:
        pool.shutdown(wait=False, cancel_futures=True)


def _get_pool(processes: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        _pool, _pool_size = _sized(_pool, _pool_size, processes, _warm)
        return _pool


def _reset_pool() -> None:
    global _pool
    with _lock:
        _drop(_pool)
        _pool = None


# --------------------------------------------------------------------------------------------
# Judging processes: a second, separate pool for the shards of a large batch (tasks.judge.
# judge_in_shards). Its workers import Great Expectations when they start (about 3 s), so a run
# that knows early it will judge a large batch starts them before fetching (start_judging): the
# import then overlaps the fetch instead of delaying the judging.

_judge_pool: ProcessPoolExecutor | None = None
_judge_size = 0


def _warm_judging() -> None:  # pragma: no cover - runs in the worker
    """Import GX in a background thread of the new worker, at the lowest CPU priority: started
    during the fetch, the import takes only CPU time the reader processes leave idle. The
    worker's own thread keeps normal priority (Linux nices threads one by one); a batch that
    arrives before the import is done waits for it on the import lock."""

    def warm() -> None:
        with contextlib.suppress(AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        from tasks.validate import warm_gx

        warm_gx()

    threading.Thread(target=warm, name="warm-gx", daemon=True).start()


def judging_processes(processes: int | None = None) -> int:
    """How many judging processes may run here (0: judge in this process only)."""
    return _usable(processes, 1, 1)


def _get_judge_pool(processes: int) -> ProcessPoolExecutor:
    global _judge_pool, _judge_size
    with _lock:
        _judge_pool, _judge_size = _sized(_judge_pool, _judge_size, processes, _warm_judging)
        return _judge_pool


def start_judging(processes: int) -> None:
    """Start ``processes`` judging workers now, in the background (each imports GX as it starts)."""
    if processes <= 0:
        return
    pool = _get_judge_pool(processes)
    for _ in range(processes):
        pool.submit(_ping)  # a worker is started per job submitted while none is idle


def submit_judging(processes: int, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in one of ``processes`` judging workers: a future, or None when the
    pool cannot take work (the caller then does it here)."""
    try:
        return _get_judge_pool(processes).submit(fn, *args, **kwargs)
    except (BrokenProcessPool, RuntimeError, OSError) as exc:
        log.warning("judging processes unavailable (%s): judging here", exc)
        reset_judging()
        return None


def reset_judging() -> None:
    """Drop the judging pool (after one of its workers died)."""
    global _judge_pool
    with _lock:
        _drop(_judge_pool)
        _judge_pool = None


@atexit.register
def _shutdown() -> None:
    _reset_pool()
    reset_judging()


def _usable(processes: int | None, n_items: int, minimum: int) -> int:
    """How many worker processes to use for ``n_items`` (0: work in this process: none asked,
    the pool cannot start here, too few items, or a daemon process such as a Dask worker)."""
    n = default_processes() if processes is None else processes
    if n <= 0 or _disabled or n_items < minimum or multiprocessing.current_process().daemon:
        return 0
    return n


def read_many(
    items: Sequence[tuple[bytes, str, str | None]], processes: int | None = None
) -> list[ParsedReturn]:
    """``read_return`` over ``(content, file_name, kind)`` items, in order, in worker processes
    when there are enough files and processes may be used here."""
    n = _usable(processes, len(items), MIN_FILES_FOR_POOL)
    if not n:
        return [_read_one(item) for item in items]
    # Chunks of files per round trip: fewer, larger messages, but enough of them to keep every
    # worker busy while other chunks are fetched.
    chunksize = max(1, min(16, len(items) // (2 * n)))
    try:
        return list(_get_pool(n).map(_read_one, items, chunksize=chunksize))
    except BrokenProcessPool:
        log.warning("a reader process died; reading these %d files one by one", len(items))
        _reset_pool()
    # A worker died: killed, out of memory, or a file that crashes the parser. Retry file by
    # file in a pool that has just proved it works, so that only a file that kills its reader
    # again is refused and the run goes on. A pool that cannot start at all (a script that
    # starts processes without the ``if __name__ == "__main__":`` guard) means reading here.
    out: list[ParsedReturn] = []
    for i, item in enumerate(items):
        pool = _working_pool(n)
        if pool is None:
            out.extend(_read_one(rest) for rest in items[i:])
            break
        try:
            out.append(pool.submit(_read_one, item).result())
        except BrokenProcessPool:
            _reset_pool()
            log.error("reading %s killed its reader process twice: refused as unreadable", item[1])
            out.append(_crashed(item))
    return out


def map_in_processes(fn: Any, items: Sequence[Any], processes: int | None = None) -> list[Any]:
    """``[fn(item) for item in items]`` in the same worker processes (other CPU work of a run,
    such as rendering thousands of receipts), or here when processes may not be used. ``fn``
    must be a module-level function; unlike reading, a failure is raised, not refused."""
    return list(imap_in_processes(fn, items, processes))


def imap_in_processes(fn: Any, items: Sequence[Any], processes: int | None = None) -> Iterator[Any]:
    """:func:`map_in_processes` one result at a time, in order, each as soon as it is done: the
    caller works on the first results while the workers compute the next."""
    n = _usable(processes, len(items), 2)
    if not n:
        yield from (fn(item) for item in items)
        return
    done = 0
    try:
        pool = _get_pool(n)
        futures = [pool.submit(fn, item) for item in items]
        for future in futures:
            result = future.result()
            done += 1
            yield result
    except BrokenProcessPool:
        _reset_pool()
        log.warning("worker processes died; doing %d items here", len(items) - done)
        yield from (fn(item) for item in items[done:])


def _ping() -> int:  # pragma: no cover - runs in the worker
    return os.getpid()


def _working_pool(processes: int) -> ProcessPoolExecutor | None:
    """The pool, once a no-op has made the round trip; None (and no pool from now on in this
    process) when its workers cannot start."""
    global _disabled
    try:
        pool = _get_pool(processes)
        pool.submit(_ping).result(timeout=120)
        return pool
    except (BrokenProcessPool, OSError, TimeoutError) as exc:
        _reset_pool()
        _disabled = True
        log.warning("reader processes cannot start in this process (%s); files are read in-process", exc)
        return None


def _crashed(item: tuple[bytes, str, str | None]) -> ParsedReturn:
    from gaibao.contract import Refusal
    from tasks.read import detect_format

    _content, file_name, kind = item
    message = (
        "文件无法读取：读取程序在处理该文件时异常退出（文件可能已损坏）。"
        "请用 Excel 或 WPS 另存为 .xlsx，或 UTF-8 编码的 .csv，然后重新报送。"
    )
    return ParsedReturn(
        kind=kind,
        refusal=Refusal("UNREADABLE", message, {"file_name": file_name}),
        file_format=detect_format(_content, file_name),
    )
