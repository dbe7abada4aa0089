"""Parsing county files in worker processes.

Reading a return is pure Python (decoding, the csv module, per-cell clean-up): threads cannot
share that work because of the GIL, so at national scale it is handed to a small pool of
processes, one per CPU. Each file goes out as bytes and comes back as a ``ParsedReturn`` whose
rows are plain object arrays (``tasks.read.Grid``), cheap to pickle.

Every county file is read in a reader process (``read_many``), however small the batch, under a
wall-time and a memory bound per file (``GAIBAO_READ_MAX_SECONDS``, ``GAIBAO_READ_MAX_MEMORY_MB``):
a reader past one is stopped and replaced and that file alone is refused (``READ_TIMEOUT``,
``READ_MEMORY``); a file that kills its reader twice is refused as ``READ_FAILED``. The readers
are made once per Python process, on first use, and stopped at exit; ``processes=0`` means one
reader. Inside a daemon process (a Dask worker) files are read in the calling thread: such
processes may not have children, and Dask already spreads the chunks over processes.

A second pool (``map_in_processes``) runs other CPU work of a run, and a third judges the shards
of a large batch.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import connection
from typing import Any

from tasks.read import ParsedReturn, read_return

log = logging.getLogger(__name__)

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


def _read_one(item: tuple[bytes, str, str | None], limits: Any = None) -> ParsedReturn:
    content, file_name, kind = item
    if _CRASH_ON and file_name == _CRASH_ON and multiprocessing.parent_process() is not None:
        os._exit(70)
    return read_return(content, file_name, kind, limits)


def _warm() -> None:  # pragma: no cover - runs in the worker
    import tasks.normalise  # noqa: F401  (pandas, pyarrow: imported once, before the first file)


def _context() -> Any:
    # forkserver: forking a process that runs threads (Prefect's) is unsafe.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tasks.read", "tasks.readpool"])
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
    _readers.shutdown()
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
    """``read_return`` over ``(content, file_name, kind)`` items, in order, each file in a reader
    process under the wall-time and memory bounds (``GAIBAO_READ_MAX_SECONDS``, ``_MEMORY_MB``).

    ``processes`` readers (default one per CPU; 0 or 1: one reader, files one after the other):
    even one file is read in a child, so that the bounds hold whatever the batch's size. Only a
    process that may not have children (a Dask worker) or whose readers cannot start (a script
    without the ``if __name__ == "__main__":`` guard) reads here, under the other bounds only."""
    if not items:
        return []
    from tasks.readguard import ReadLimits

    limits = ReadLimits.from_settings()
    n = max(1, default_processes() if processes is None else processes)
    if not _disabled and not multiprocessing.current_process().daemon:
        out = _readers.read(items, min(n, len(items)), limits)
        if out is not None:
            return out
    return [_read_one(item, limits) for item in items]


# --------------------------------------------------------------------------------------------
# Reader processes: one file at a time each, watched. A reader past the wall-time bound is killed
# (SIGKILL: a parser stuck in Rust or C code does not see a Python signal) and replaced; a reader
# whose resident memory passes the memory bound exits with _EXIT_MEMORY (a watchdog thread reads
# /proc/self/statm every few milliseconds while it reads a file; an allocation the address-space
# backstop refuses ends the same way). Only that file is refused; the others go on.

_EXIT_MEMORY = 86
_WATCH_INTERVAL_S = 0.02
# Address space a reader may reserve beyond its own at start, as a multiple of the memory bound:
# a backstop for allocations faster than the watchdog (the bound itself is on resident memory;
# allocators reserve more address space than they touch).
_ADDRESS_SPACE_FACTOR = 4
_READY_TIMEOUT_S = 120.0


def _rss() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _watch_memory(limit: int, reading: threading.Event) -> None:  # pragma: no cover - in a reader
    page = os.sysconf("SC_PAGE_SIZE")
    try:
        statm = open("/proc/self/statm", "rb")  # noqa: SIM115 - open for the process's life
    except OSError:
        return  # no /proc: the address-space backstop only
    while True:
        reading.wait()
        statm.seek(0)
        if int(statm.read().split()[1]) * page > limit:
            os._exit(_EXIT_MEMORY)
        time.sleep(_WATCH_INTERVAL_S)


def _limit_address_space(memory_mb: int) -> None:  # pragma: no cover - in a reader
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        with open("/proc/self/statm", "rb") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = size + _ADDRESS_SPACE_FACTOR * memory_mb * 1024 * 1024
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or cap < hard:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))


def _reader_main(inbox: Any, outbox: Any, memory_mb: int) -> None:  # pragma: no cover - in a reader
    """A reader process: a list of ``(content, file_name, kind)`` in, one ``(ParsedReturn, rss)``
    out per file as soon as it is read, until ``None`` or the parent goes away."""
    from gaibao.memory import release_free_memory

    _warm()
    limit = memory_mb * 1024 * 1024
    reading = threading.Event()
    threading.Thread(target=_watch_memory, args=(limit, reading), name="memory-watch", daemon=True).start()
    _limit_address_space(memory_mb)
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            chunk = inbox.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        limits, chunk = chunk  # the caller's bounds (its settings, not this process's)
        while chunk:
            item = chunk.pop(0)
            reading.set()
            try:
                result = _read_one(item, limits)
            except MemoryError:
                os._exit(_EXIT_MEMORY)
            finally:
                reading.clear()
            del item
            rss = _rss()
            if rss > limit // 4:
                release_free_memory()
                rss = _rss()
            outbox.send((result, rss))


@dataclass
class _Reader:
    process: Any
    inbox: Any  # the parent's sending end
    outbox: Any  # the parent's receiving end
    memory_mb: int
    pending: deque = field(default_factory=deque)  # the items sent, not yet answered, in order
    since: float = 0.0  # when the first pending item began (its chunk sent, or the last answer)
    retire: bool = False  # stop once idle (it holds much memory after a file)

    def stop(self, kill: bool = False) -> None:
        with contextlib.suppress(OSError, ValueError):
            if kill:
                self.process.kill()
            else:
                self.inbox.send(None)
        for conn in (self.inbox, self.outbox):
            with contextlib.suppress(OSError):
                conn.close()
        self.process.join(timeout=5)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join(timeout=5)


class _ReaderSet:
    """The reader processes of this Python process, made on first use, kept between batches
    (reading batches one at a time: the fetch threads of a run take turns)."""

    def __init__(self) -> None:
        self.readers: list[_Reader] = []
        self.lock = threading.Lock()

    def _start(self, memory_mb: int) -> _Reader | None:
        global _disabled
        ctx = _context()
        recv_in, send_in = ctx.Pipe(duplex=False)
        recv_out, send_out = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=_reader_main, args=(recv_in, send_out, memory_mb), name="gaibao-reader", daemon=False
        )
        try:
            process.start()
        except (OSError, RuntimeError) as exc:
            failure: object = exc
        else:
            recv_in.close()
            send_out.close()
            reader = _Reader(process, send_in, recv_out, memory_mb)
            try:
                if recv_out.poll(_READY_TIMEOUT_S) and recv_out.recv()[0] == "ready":
                    return reader
                failure = "no answer"
            except (EOFError, OSError) as exc:
                failure = exc or "died while starting"
            reader.stop(kill=True)
        _disabled = True
        log.warning("reader processes cannot start in this process (%s); files are read in-process", failure)
        return None

    def _drop(self, reader: _Reader, kill: bool) -> None:
        reader.stop(kill=kill)
        self.readers.remove(reader)

    def shutdown(self) -> None:
        with self.lock:
            for reader in list(self.readers):
                self._drop(reader, kill=False)

    def read(self, items: Sequence[tuple[bytes, str, str | None]], n: int, limits: Any) -> list[ParsedReturn] | None:
        """Every item read in ``n`` readers under ``limits``; None when readers cannot start here."""
        results: list[ParsedReturn | None] = [None] * len(items)
        todo = deque(range(len(items)))
        deaths: dict[int, int] = {}
        with self.lock:
            for reader in [r for r in self.readers if r.memory_mb != limits.max_memory_mb]:
                self._drop(reader, kill=False)  # the bound changed (a test, a new setting)
            while todo or any(r.pending for r in self.readers):
                for reader in [r for r in self.readers if r.retire and not r.pending]:
                    self._drop(reader, kill=False)
                while todo and len(self.readers) < n:
                    reader = self._start(limits.max_memory_mb)
                    if reader is None:
                        return self._finish_here(items, results, limits)
                    self.readers.append(reader)
                for reader in self.readers:
                    if not reader.pending and todo:
                        # Files per message: fewer round trips, but smaller messages towards the
                        # end, so that no reader waits long for the last one.
                        size = max(1, min(16, len(todo) // (2 * n)))
                        reader.pending.extend(todo.popleft() for _ in range(size))
                        with contextlib.suppress(OSError, ValueError):  # died idle: the EOF below
                            reader.inbox.send((limits, [items[i] for i in reader.pending]))
                        reader.since = time.monotonic()
                busy = [r for r in self.readers if r.pending]
                wait_s = max(0.0, min(r.since for r in busy) + limits.max_seconds - time.monotonic())
                ready = set(connection.wait([r.outbox for r in busy], timeout=wait_s))
                for reader in busy:
                    if reader.outbox in ready:
                        self._answers(reader, items, results, todo, deaths, limits)
                    if reader.pending and time.monotonic() - reader.since >= limits.max_seconds:
                        i = reader.pending.popleft()
                        todo.extendleft(reversed(reader.pending))
                        self._drop(reader, kill=True)
                        log.error("reading %s took more than %s s: stopped and refused", items[i][1], limits.max_seconds)
                        results[i] = _over_time(items[i], limits)
        return results  # type: ignore[return-value]

    def _answers(self, reader: _Reader, items: Sequence, results: list, todo: deque, deaths: dict, limits: Any) -> None:
        """Take every answer ``reader`` has ready (or its death)."""
        while reader.pending:
            try:
                if not reader.outbox.poll():
                    return
                result, rss = reader.outbox.recv()
            except (EOFError, OSError):
                self._died(reader, items, results, todo, deaths, limits)
                return
            results[reader.pending.popleft()] = result
            reader.since = time.monotonic()
            if rss > limits.max_memory_mb * 1024 * 1024 // 2:
                reader.retire = True  # a fresh reader for the next chunk

    def _died(self, reader: _Reader, items: Sequence, results: list, todo: deque, deaths: dict, limits: Any) -> None:
        i = reader.pending.popleft()
        todo.extendleft(reversed(reader.pending))
        reader.pending.clear()
        reader.process.join(timeout=2)  # its own exit code, before any kill
        self._drop(reader, kill=True)
        code = reader.process.exitcode
        if code == _EXIT_MEMORY:
            log.error("reading %s took more than %d MB: stopped and refused", items[i][1], limits.max_memory_mb)
            results[i] = _over_memory(items[i], limits)
            return
        deaths[i] = deaths.get(i, 0) + 1
        if deaths[i] >= 2:
            log.error("reading %s killed its reader process twice: refused (exit code %s)", items[i][1], code)
            results[i] = _crashed(items[i])
        else:
            log.warning("a reader process died reading %s (exit code %s); reading it again", items[i][1], code)
            todo.appendleft(i)

    def _finish_here(self, items: Sequence, results: list, limits: Any) -> list[ParsedReturn]:
        for reader in list(self.readers):
            if reader.pending:
                self._drop(reader, kill=True)
        return [r if r is not None else _read_one(item, limits) for r, item in zip(results, items, strict=True)]


_readers = _ReaderSet()


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


def _refusal(item: tuple[bytes, str, str | None], code: str, message: str, **detail: str) -> ParsedReturn:
    from gaibao.contract import Refusal
    from tasks.read import detect_format

    content, file_name, kind = item
    return ParsedReturn(
        kind=kind,
        refusal=Refusal(code, message, {"file_name": file_name, **detail}),
        file_format=detect_format(content, file_name),
    )


def _crashed(item: tuple[bytes, str, str | None]) -> ParsedReturn:
    message = (
        "文件无法读取：读取程序在处理该文件时异常退出（文件可能已损坏）。"
        "请用 Excel 或 WPS 另存为 .xlsx，或 UTF-8 编码的 .csv，然后重新报送。"
    )
    return _refusal(item, "READ_FAILED", message)


def _over_time(item: tuple[bytes, str, str | None], limits: Any) -> ParsedReturn:
    seconds = f"{limits.max_seconds:g}"
    message = (
        f"文件读取超时：读取一个文件最多用时 {seconds} 秒（读取时长上限），本文件超过此值，已停止读取"
        "（文件可能内容异常或过大）。请删去多余的内容，用 Excel 或 WPS 另存为 .xlsx，"
        "或 UTF-8 编码的 .csv，然后重新报送。"
    )
    return _refusal(item, "READ_TIMEOUT", message, bound="read_max_seconds", limit=seconds)


def _over_memory(item: tuple[bytes, str, str | None], limits: Any) -> ParsedReturn:
    message = (
        f"文件读取占用内存过多：读取一个文件最多占用 {limits.max_memory_mb} MB 内存（读取内存上限），"
        "本文件超过此值，已停止读取（文件可能内容异常或过大）。请删去多余的内容，按模板填写后重新报送。"
    )
    return _refusal(item, "READ_MEMORY", message, bound="read_max_memory_mb", limit=str(limits.max_memory_mb))
