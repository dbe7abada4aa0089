"""Giving freed memory back to the operating system.

A national month's files arrive as thousands of small Arrow buffers (a few KB each) on the C heap.
Once a batch has copied them they are freed, but glibc keeps the pages in its arenas, where the
large arrays that come next (numpy and pandas allocate those with mmap) never reuse them: the
process's RSS stays as if the files were still held. ``malloc_trim`` hands those pages back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018  (glibc only; musl and macOS have none)
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def release_free_memory() -> None:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim(0)``; elsewhere a no-op)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
