"""What the node runners of `synod.runtime` share (`scp_node`, `rbc_node`...).

A runner opens a node's SQLite store, rebuilds its core from the records there
(`restore_core`), holds the node's lock file while it runs (`synod.runtime.lock`) and
reports failures as typed errors; `free_ports` picks addresses for networks made on
the spot (tests, examples).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Self, TypeVar

from synod.runtime.lock import hold_exclusive_lock
from synod.runtime.storage import SqliteStorage, StorageError

if TYPE_CHECKING:
    from synod.runtime.host import NodeHost
    from synod.runtime.transport import Address

CoreType = TypeVar("CoreType")


class RestoreFailed(Exception):
    """A node's store holds records its core cannot be rebuilt from (the cause says why)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: cannot restore: {reason}")
        self.path = path
        self.reason = reason


class NetworkExists(Exception):
    """`create_network` refuses to overwrite an existing network file."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path}: already exists; refusing to overwrite")
        self.path = path


class NodeStopped(Exception):
    """The node stopped (or failed) before what was waited for happened."""


def restore_core(
    path: Path, build: Callable[[Mapping[bytes, bytes]], CoreType]
) -> tuple[SqliteStorage, CoreType]:
    """Open the store `path` and build the core from its records.

    Raises `StorageError` when the store cannot be opened or read, and `RestoreFailed`
    (the store closed again) when `build` refuses the records.
    """
    storage = SqliteStorage.open(path)
    try:
        return storage, build(storage.load())
    except Exception as error:
        storage.close()
        raise RestoreFailed(path, str(error)) from None


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct ports the kernel hands out on `host` now (all bound at once).

    Free at this moment only: another program could take one before it is used, which
    is fine for tests and examples, not for a network meant to last.
    """
    family = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0][0]
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            handle = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(handle)
            handle.bind((host, 0))
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


NodeType = TypeVar("NodeType")


def open_on_store(
    store_path: Path, build: Callable[[SqliteStorage], NodeType], what: str = "this node"
) -> tuple[NodeType, IO[str]]:
    """Hold the node's lock file (``<store>.lock``), open its store and build the node on it.

    Raises `NodeAlreadyRunning` (another process holds the lock), `StorageError` (the file
    cannot be used) and `RestoreFailed` when `build` refuses the records; in every case
    the store and the lock are released again.
    """
    lock = hold_exclusive_lock(store_path.with_suffix(".lock"), what)
    try:
        storage = SqliteStorage.open(store_path)
        try:
            return build(storage), lock
        except StorageError:
            storage.close()
            raise
        except Exception as error:  # records the node cannot be rebuilt from
            storage.close()
            raise RestoreFailed(store_path, f"{type(error).__name__}: {error}") from None
        except BaseException:
            storage.close()
            raise
    except BaseException:
        lock.close()
        raise


class HostedNode:
    """What a runner of one peer-to-peer node shares with the others (`scp_node.LogNode`,
    `rbc_node.RbcNode`): one `NodeHost`, started under the node's lock file and stopped
    with it, and served until SIGINT/SIGTERM."""

    def __init__(self) -> None:
        self._host: NodeHost | None = None
        self._lock: IO[str] | None = None

    @property
    def host(self) -> NodeHost:
        """The `NodeHost` that drives the core (once started)."""
        if self._host is None:
            raise RuntimeError("the node has not been started")
        return self._host

    async def _start_host(
        self,
        lock_path: Path,
        open_host: Callable[[], NodeHost],
        *,
        listen: Address,
        rpc_listen: Address | None,
    ) -> NodeHost:
        """Take the lock, build the host, listen; on any failure close what was opened
        and release the lock.  Raises `NodeAlreadyRunning`, `StorageError`,
        `RestoreFailed` or `OSError` (a port in use)."""
        if self._host is not None:
            raise RuntimeError("the node was started already")
        lock = hold_exclusive_lock(lock_path)
        try:
            self._host = open_host()
            await self._host.start(listen=listen, rpc_listen=rpc_listen)
        except BaseException:
            if self._host is not None:
                await self._host.stop()  # closes whatever listeners and store it opened
            lock.close()
            raise
        self._lock = lock
        return self._host

    async def _stop_host(self) -> None:
        """Stop the host (flush, close connections and store), release the lock;
        idempotent."""
        if self._host is not None:
            await self._host.stop()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def _links_up(self) -> int:
        """Peers this node holds an outgoing connection to (for status answers)."""
        transport = self.host.transport
        stats = transport.stats.values() if transport is not None else ()
        return sum(link.outgoing_connected for link in stats)

    async def stop(self) -> None:
        """Stop the node (see `_stop_host`)."""
        await self._stop_host()

    async def serve(self, on_ready: Callable[[Self], None] | None = None) -> None:
        """Run the started node until SIGINT/SIGTERM, then stop it.

        `on_ready` runs once the signal handlers are in place.  Raises `HostFailed`
        when the node failed (the core, the store or an output; see its cause).
        """
        ready = (lambda: on_ready(self)) if on_ready is not None else None
        try:
            await self.host.serve(on_ready=ready)
        finally:
            await self.stop()
