"""A BFT-CRDT log node on a real network: SQLite store, relayer link, direct peer links.

`LogNode` drives one `synod.crdt.replica.Replica` that edits the shared log document of
`synod.crdt.log` (a list of ``{"author", "name", "text"}`` entries, created by a genesis
update every node makes by itself).  It talks to a relayer over a websocket
(`synod.runtime.relay.RelayClient`) and/or directly to peers over synod's authenticated
TCP transport; on start, on every reconnection to the relayer and every
``announce_interval_ms`` it announces its heads, which starts the catch-up
(reconciliation by heads).

Inputs (peer messages, local appends, timers, reconnections, inspections) go through one
queue into one task, so the replica sees one input at a time.  Each step's records are
committed to SQLite before any of its messages leaves (`synod.core`'s contract); a node
opened again on the same store resumes from them.  Peer input waits while the queue
holds `INPUT_QUEUE_LIMIT` items, which stops reading those connections and pushes back on
the senders; the application's own appends and inspections are never refused.

Nothing here prints or exits: events go to the `on_event` callback, a failure stops the
node and `wait` raises `NodeFailed`; `open` raises `synod.runtime.lock.NodeAlreadyRunning`
or `synod.runtime.storage.StorageError`.  See docs/crdt.md ("From Python").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from synod.core import (
    Broadcast,
    Input,
    LocalError,
    Persist,
    Proposed,
    Received,
    Send,
    SetTimer,
    Started,
    Step,
    TimerFired,
)
from synod.crdt.config import DEFAULT_ANNOUNCE_MS, DEFAULT_DOCUMENT, NodeConfig, PeerEntry
from synod.crdt.log import (
    append_edits,
    entries,
    entry_appended,
    genesis_input,
    genesis_keys,
    log_digest,
)
from synod.crdt.messages import CODEC
from synod.crdt.replica import ANNOUNCE_TIMER, LocalChange, Replica, ReplicaConfig, UpdateApplied
from synod.crypto import KeyPair, NodeId
from synod.runtime.host import monotonic_ms
from synod.runtime.nodes import open_on_store
from synod.runtime.relay import RelayClient, RelayConfig
from synod.runtime.storage import SqliteStorage
from synod.runtime.store_identity import claim_records, identity_record
from synod.runtime.transport import Address, PeerTransport
from synod.wire import DecodeError

log = logging.getLogger("synod.runtime.crdt_node")

INPUT_QUEUE_LIMIT = 10_000
"""Inputs waiting in a node's queue before peer input waits for room."""

FLUSH_TIMEOUT_S = 1.0
"""How long `LogNode.stop` lets the direct links send what they hold."""


STORE_IDENTITY_KEY = b"crdt/identity"
"""The record naming whose store a file is (`synod.runtime.store_identity`): node id,
network id and document."""


def store_identity(node_id: NodeId, network: bytes, document: str) -> bytes:
    """The `STORE_IDENTITY_KEY` record of a node's store."""
    from synod.crypto import node_id_text

    return identity_record(node=node_id_text(node_id), network=network.hex(), document=document)


@dataclass(frozen=True, slots=True)
class RelayConnected:
    """The websocket to the relayer at `url` came up (again); the node announces its heads."""

    url: str


@dataclass(frozen=True, slots=True)
class AppendRefused:
    """`append(text)` made no transaction: `reason` says why (no log list yet, say)."""

    text: str
    reason: str


class NodeFailed(Exception):
    """The node stopped because handling an input failed (see the cause)."""


class AppendFailed(Exception):
    """`append_durably(text)` made no transaction (the message says why)."""


@dataclass(frozen=True, slots=True)
class _Append:
    text: str
    done: asyncio.Future[None] | None = None


@dataclass(frozen=True, slots=True)
class _Inspect:
    callback: Callable[[Replica], None]


@dataclass(frozen=True, slots=True)
class _Announce:
    pass


_Item = Input | _Append | _Inspect | _Announce


class LogNode:
    """One node of the shared log: a `Replica` rebuilt from `storage`, its links, one loop.

    `name` is written into each entry this node appends.  `listen` opens the direct
    transport (port 0 picks a free one, see `address`) for the `peers`; `relay` is a
    relayer's ``ws://`` URL.  `on_event` receives, in order and after the step's records
    are durable, every replica event (`UpdateApplied`, `UpdateRejected`,
    `EquivocationDetected`, ...), an `EntryAppended` after each applied update that
    appended to the log, `AppendRefused`, and `RelayConnected`.
    """

    def __init__(
        self,
        keys: KeyPair,
        storage: SqliteStorage,
        *,
        name: str,
        document: str = DEFAULT_DOCUMENT,
        announce_interval_ms: int = DEFAULT_ANNOUNCE_MS,
        listen: Address | None = None,
        relay: str | None = None,
        peers: Sequence[PeerEntry] = (),
        on_event: Callable[[object], None] | None = None,
        network: bytes = b"",
        members: frozenset[NodeId] | None = None,
    ) -> None:
        if peers and listen is None:
            raise ValueError("direct peers need a listen address")
        self.keys = keys
        self.storage = storage
        self.name = name
        self.listen = listen
        self.relay_url = relay
        self.peers = tuple(peers)
        self.on_event = on_event
        self.document = document
        self.network = network
        if members is not None:
            # The genesis is signed by the document's public key; it must be accepted.
            members = frozenset({*members, genesis_keys(document).node_id})
        self.members = members
        config = ReplicaConfig(
            announce_interval_ms=announce_interval_ms, network=network, members=members
        )
        identity = store_identity(keys.node_id, network, document)
        records, unmarked = claim_records(
            storage.path, storage.load(), STORE_IDENTITY_KEY, identity, (b"crdt/",)
        )
        if unmarked:
            storage.apply([Persist(STORE_IDENTITY_KEY, identity)])
        self.replica = Replica(keys, records, config)
        self.restored_updates = len(self.replica.graph)
        self.address: Address | None = None
        self.transport: PeerTransport | None = None
        self.relay: RelayClient | None = None
        self.failure: BaseException | None = None
        self._direct = {peer.node_id for peer in self.peers}
        self._inputs: asyncio.Queue[_Item] = asyncio.Queue()
        self._inputs.put_nowait(Started())
        genesis = genesis_input(self.replica, document)
        if genesis is not None:
            self._inputs.put_nowait(genesis)
        self._room = asyncio.Event()
        self._room.set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._worker: asyncio.Task[None] | None = None
        self._ended = asyncio.Event()
        self._stopped = False
        self._lock: IO[str] | None = None

    @classmethod
    def open(
        cls,
        keys: KeyPair,
        store_path: Path,
        *,
        name: str,
        document: str = DEFAULT_DOCUMENT,
        announce_interval_ms: int = DEFAULT_ANNOUNCE_MS,
        listen: Address | None = None,
        relay: str | None = None,
        peers: Sequence[PeerEntry] = (),
        on_event: Callable[[object], None] | None = None,
        network: bytes = b"",
        members: frozenset[NodeId] | None = None,
    ) -> LogNode:
        """A node whose state is the SQLite file `store_path` (created if absent); the
        other arguments are those of the constructor.

        The node holds the lock file beside it (``<store>.lock``) until it stops: two
        processes on one store would each sign updates with the same sequence numbers
        (equivocation by an honest operator).  Raises `NodeAlreadyRunning` when another
        process holds it, `StorageError` when the file cannot be used, `RestoreFailed`
        when its records cannot rebuild the replica.
        """
        if peers and listen is None:  # the caller's mistake, before any file is touched
            raise ValueError("direct peers need a listen address")
        node, lock = open_on_store(
            store_path,
            lambda storage: cls(
                keys,
                storage,
                name=name,
                document=document,
                announce_interval_ms=announce_interval_ms,
                listen=listen,
                relay=relay,
                peers=peers,
                on_event=on_event,
                network=network,
                members=members,
            ),
        )
        node._lock = lock
        return node

    @classmethod
    def from_config(
        cls,
        config: NodeConfig,
        keys: KeyPair,
        *,
        on_event: Callable[[object], None] | None = None,
    ) -> LogNode:
        """The node `config` describes (``NAME/node.toml``), opened as `open` does, with
        its store at ``config.database_path``."""
        return cls.open(
            keys,
            config.database_path,
            name=config.name,
            document=config.document,
            announce_interval_ms=config.announce_interval_ms,
            listen=config.listen,
            relay=config.relay,
            peers=config.peers,
            on_event=on_event,
            network=config.network,
            members=config.members,
        )

    @property
    def node_id(self) -> NodeId:
        """This node's id (the author key of its updates)."""
        return self.keys.node_id

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the direct transport and the relayer link, then begin handling inputs."""
        if self._worker is not None:
            raise RuntimeError("node already started")
        if self.listen is not None:
            addresses = {peer.node_id: (peer.host, peer.port) for peer in self.peers}
            self.transport = PeerTransport(
                self.keys, addresses, CODEC, self._from_peer, network=self.network
            )
            self.address = await self.transport.start(*self.listen)
        if self.relay_url is not None:
            self.relay = RelayClient(
                self.relay_url,
                self.keys,
                self._from_relay,
                on_connected=self._relay_connected,
                config=RelayConfig(network=self.network, members=self.members),
            )
            self.relay.start()
        self._worker = asyncio.create_task(self._work(), name=f"crdt node {self.name}")

    def append(self, text: str) -> None:
        """Append `text` to the shared log, as one signed update (in order with inputs)."""
        self._inputs.put_nowait(_Append(text))

    async def append_durably(self, text: str) -> None:
        """Append `text` as `append` does and return once its update is in the store.

        Raises `AppendFailed` when no transaction was made (`AppendRefused` is emitted
        too) and `NodeFailed` when the node stops first.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inputs.put_nowait(_Append(text, done))
        ended: asyncio.Future[Any] = asyncio.ensure_future(self._ended.wait())
        waiters: list[asyncio.Future[Any]] = [done, ended]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        if not done.done():
            raise NodeFailed("the node stopped before the entry was stored")
        done.result()

    def status(self) -> dict[str, Any]:
        """What the node holds and whom it reaches now: its log at a glance
        (`synod.crdt.log.log_digest`), whether the relayer link is up and how many direct
        peers it is connected to.  Read it between inputs (from `inspect`) for a
        consistent view."""
        digest = log_digest(self.replica)
        connected = 0
        if self.transport is not None:
            connected = sum(stats.outgoing_connected for stats in self.transport.stats.values())
        return {
            "name": self.name,
            "entries": digest.entries,
            "updates": digest.updates,
            "waiting": digest.waiting,
            "document": digest.document,
            "relay_connected": self.relay.connected if self.relay is not None else None,
            "peers": len(self.peers),
            "peers_connected": connected,
            "queued_inputs": self._inputs.qsize(),
        }

    def inspect(self, callback: Callable[[Replica], None]) -> None:
        """Call `callback` with the replica once every input queued before it is handled."""
        self._inputs.put_nowait(_Inspect(callback))

    def entries(self) -> list[dict[str, Any]]:
        """The log as plain JSON, in the order every node shows it."""
        return entries(self.replica)

    async def wait(self) -> None:
        """Wait until the node stops handling inputs; `NodeFailed` if it failed."""
        await self._ended.wait()
        if self.failure is not None:
            raise NodeFailed(str(self.failure)) from self.failure

    async def stop(self) -> None:
        """Stop handling inputs, close the links and the store, release the lock;
        idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        self._ended.set()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self.relay is not None:
            await self.relay.close()
        if self.transport is not None:
            await self.transport.close(flush_timeout_s=FLUSH_TIMEOUT_S)
        self.storage.close()
        if self._lock is not None:
            self._lock.close()

    # ------------------------------------------------------------ input sources

    async def _from_peer(self, sender: NodeId, message: Any) -> None:
        while self._inputs.qsize() >= INPUT_QUEUE_LIMIT:
            self._room.clear()
            await self._room.wait()
        self._inputs.put_nowait(Received(sender, message))

    async def _from_relay(self, sender: NodeId, payload: bytes) -> None:
        try:
            message = CODEC.decode(payload)
        except DecodeError as error:
            log.debug("undecodable relayed frame dropped", extra={"reason": str(error)[:120]})
            return
        await self._from_peer(sender, message)

    def _relay_connected(self) -> None:
        assert self.relay_url is not None
        self._emit(RelayConnected(self.relay_url))
        self._inputs.put_nowait(_Announce())

    # ------------------------------------------------------------ the step loop

    async def _work(self) -> None:
        try:
            while True:
                item = await self._inputs.get()
                if self._inputs.qsize() < INPUT_QUEUE_LIMIT:
                    self._room.set()
                if isinstance(item, _Inspect):
                    item.callback(self.replica)
                    continue
                step = self._handle(item)
                if step is None:
                    continue
                if step.persist:
                    await asyncio.to_thread(self.storage.apply, step.persist)
                self._send(step)
                self._apply_timers(step)
                self._emit_events(step)
                if isinstance(item, _Append) and item.done is not None and not item.done.done():
                    item.done.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("node failed; stopping")
            self.failure = error
            self._ended.set()

    def _handle(self, item: _Item) -> Step | None:
        if isinstance(item, _Announce):
            item = TimerFired(ANNOUNCE_TIMER)
        elif isinstance(item, _Append):
            try:
                edits = append_edits(self.replica, item.text, self.name, self.document)
                return self.replica.handle(Proposed(LocalChange(tuple(edits))), monotonic_ms())
            except LocalError as error:
                self._emit(AppendRefused(item.text, str(error)))
                if item.done is not None and not item.done.done():
                    item.done.set_exception(AppendFailed(str(error)))
                return None
        assert not isinstance(item, _Inspect)
        return self.replica.handle(item, monotonic_ms())

    def _send(self, step: Step) -> None:
        for effect in step.outgoing:
            if isinstance(effect, Broadcast):
                if self.transport is not None:
                    self.transport.broadcast(effect.message)
                if self.relay is not None:
                    self.relay.send(None, CODEC.encode(effect.message))
            elif isinstance(effect, Send):
                if self.transport is not None and effect.to in self._direct:
                    self.transport.send(effect.to, effect.message)
                elif self.relay is not None:
                    self.relay.send(effect.to, CODEC.encode(effect.message))

    def _apply_timers(self, step: Step) -> None:
        loop = asyncio.get_running_loop()
        for command in step.timers:
            pending = self._timers.pop(command.name, None)
            if pending is not None:
                pending.cancel()
            if isinstance(command, SetTimer):
                self._timers[command.name] = loop.call_later(
                    max(0, command.delay_ms) / 1000,
                    self._inputs.put_nowait,
                    TimerFired(command.name),
                )

    def _emit_events(self, step: Step) -> None:
        for event in step.events:
            self._emit(event)
            if isinstance(event, UpdateApplied):
                appended = entry_appended(self.replica, event)
                if appended is not None:
                    self._emit(appended)

    def _emit(self, event: object) -> None:
        if self.on_event is not None:
            self.on_event(event)


# ---------------------------------------------------------------- the operator's control socket

CONTROL_MAX_LINE_BYTES = 64 * 1024
"""A control request line: one entry of the console's size (``synod crdt run``'s limit)."""

CONTROL_MAX_CONNECTIONS = 8
"""Control connections served at once; more are answered with an error and closed.  Only
the node's own user can connect (the socket is mode 0600), so this bounds a script that
loops, not an attacker: each connection costs one task and one line buffer."""

CONTROL_IDLE_S = 30.0
"""How long a control connection may stay silent before it is closed."""

MAX_UNIX_PATH_BYTES = 107
"""Linux's limit on a Unix socket's path (``sun_path`` is 108 bytes with its NUL)."""


class ControlServer:
    """A Unix socket beside the node's files where its operator appends and asks, as on
    the console of ``synod crdt run`` but without a terminal (``synod crdt up`` starts
    nodes with no standard input).

    Each request is one line; each answer one JSON object on one line: a text line is
    appended (``{"event": "appended"}`` once its update is durable, or ``{"event":
    "error", "reason"}``), ``/status`` answers `LogNode.status`, ``/digest`` and
    ``/history`` what the console prints; ``//text`` appends ``/text``.  The socket is
    created with mode 0600 (umask 0177 while it is bound): file permissions are its
    authentication, since whoever may connect signs with the node's key.
    """

    def __init__(self, node: LogNode, path: Path) -> None:
        self.node = node
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind the socket (a stale one left by a killed process is replaced: the
        node's lock, held already, proves that no other process serves it)."""
        import errno
        import os
        import stat

        if len(os.fsencode(self.path)) > MAX_UNIX_PATH_BYTES:
            raise OSError(f"{self.path}: longer than {MAX_UNIX_PATH_BYTES} bytes")
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                # a file the operator named by mistake: never replaced, and not reported
                # as a port in use (which is what binding over it says)
                raise FileExistsError(errno.EEXIST, f"{self.path} exists and is not a socket")
            self.path.unlink()
        previous = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._accept, path=self.path, limit=CONTROL_MAX_LINE_BYTES + 2
            )
        except OSError as error:  # the message names the socket, not only the reason
            raise OSError(error.errno, f"{self.path}: {error.strerror or error}") from None
        finally:
            os.umask(previous)

    async def close(self) -> None:
        """Stop serving and remove the socket file."""
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            if len(self._connections) >= CONTROL_MAX_CONNECTIONS:
                writer.write(_control_line({"event": "error", "reason": "too many connections"}))
                await writer.drain()
                return
            self._connections.add(task)
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(CONTROL_IDLE_S):
                    raw = await reader.readline()
            except TimeoutError:
                return
            except ValueError:  # longer than the limit: the rest of the stream is unframed
                reason = f"line longer than {CONTROL_MAX_LINE_BYTES} bytes"
                writer.write(_control_line({"event": "error", "reason": reason}))
                await writer.drain()
                return
            if not raw:
                return
            answer = await self.answer(raw.rstrip(b"\r\n").decode("utf-8", "replace"))
            writer.write(_control_line(answer))
            await writer.drain()

    async def answer(self, text: str) -> dict[str, Any]:
        """The answer to one request line (see the class docstring)."""
        if text.startswith("/") and not text.startswith("//"):
            return await self._command(text[1:].strip())
        if not text:
            return {"event": "error", "reason": "an empty line appends nothing"}
        try:
            await self.node.append_durably(text[1:] if text.startswith("//") else text)
        except (AppendFailed, NodeFailed) as error:
            return {"event": "error", "reason": str(error)}
        return {"event": "appended"}

    async def _command(self, name: str) -> dict[str, Any]:
        import dataclasses

        answers: dict[str, Callable[[Replica], dict[str, Any]]] = {
            "status": lambda _: {"event": "status", **self.node.status()},
            "digest": lambda replica: {
                "event": "digest",
                **dataclasses.asdict(log_digest(replica)),
            },
            "history": lambda replica: {"event": "history", "entries": entries(replica)},
        }
        make = answers.get(name)
        if make is None:
            return {"event": "error", "reason": f"unknown command /{name}"}
        answered: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.node.inspect(lambda replica: answered.set_result(make(replica)))
        return await answered


def _control_line(document: dict[str, Any]) -> bytes:
    import json

    return (json.dumps(document) + "\n").encode()


async def ask_control(path: Path, lines: Sequence[str], *, timeout_s: float = 10.0) -> list[Any]:
    """Send `lines` to the control socket at `path` and return each answer (decoded JSON).

    Raises `OSError` (no such socket: the node is not running with one, or refused) and
    `TimeoutError`.
    """
    import json
    import os

    # A Unix socket path is limited to 107 bytes: a relative path is often shorter.
    target = os.fsencode(path)
    relative = os.fsencode(os.path.relpath(path))
    if len(relative) < len(target):
        target = relative
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_unix_connection(
            os.fsdecode(target), limit=16 * 1024 * 1024
        )
        try:
            answers = []
            for line in lines:
                writer.write(line.encode("utf-8", "surrogateescape") + b"\n")
                await writer.drain()
                raw = await reader.readline()
                if not raw:
                    raise ConnectionResetError(f"{path}: closed before it answered")
                answers.append(json.loads(raw))
            return answers
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
