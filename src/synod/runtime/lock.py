"""One process per node: an exclusive lock file held for the life of a running node.

Two processes driving the same store would each believe they own the node's votes; the
second could sign a statement that contradicts the first's, which is equivocation by an
honest operator.  A node therefore holds ``flock(LOCK_EX | LOCK_NB)`` on a lock file
next to its store while it runs; the kernel releases it when the process dies, however
it dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO


class NodeAlreadyRunning(Exception):
    """Another process holds the lock file: the node (or shard, core...) runs already."""

    def __init__(self, path: Path, what: str = "this node") -> None:
        super().__init__(f"{path}: {what} is already running")
        self.path = path


def hold_exclusive_lock(path: Path, what: str = "this node") -> IO[str]:
    """Lock `path` (created if needed) until the returned handle is closed.

    Raises `NodeAlreadyRunning` (naming `what`) when another process holds it.
    """
    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise NodeAlreadyRunning(path, what) from None
    return handle
