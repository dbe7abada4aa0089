"""The raw archive: every file a county ever sent, content-addressed, never overwritten or deleted."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Archive:
    """``archive/<sha[:2]>/<sha>``: write once (temp file, fsync, atomic link), read by hash.

    Paths stay inside this class so that the root can later become an fsspec URL.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, sha: str) -> Path:
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"not a sha256 hex digest: {sha!r}")
        return self.root / sha[:2] / sha

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put(self, content: bytes) -> str:
        """Store ``content``; returns its sha256. Existing content is never rewritten."""
        sha = sha256_hex(content)
        target = self.path(sha)
        if target.is_file():
            return sha
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            # link() fails if the target exists: a concurrent writer of the same bytes wins,
            # and nothing is ever overwritten (rename would silently replace).
            with contextlib.suppress(FileExistsError):
                os.link(tmp, target)
            _fsync_dir(target.parent)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return sha

    def get(self, sha: str) -> bytes:
        return self.path(sha).read_bytes()

    def __iter__(self):  # noqa: ANN204 - iterator of hashes
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if sub.is_dir() and len(sub.name) == 2:
                for f in sorted(sub.iterdir()):
                    if not f.name.startswith("."):
                        yield f.name
