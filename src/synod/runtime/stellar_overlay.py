"""The Stellar overlay on asyncio: accept and dial connections that speak stellar-core's
peer protocol, serve SCP state from a `ScpStateStore`, and crawl a network.

Theory of operation.  Each TCP connection drives one `synod.stellar.peer.StellarPeer`
(the handshake, MACs, flow control and framing live there, sans-I/O); this module only
moves bytes and applies its outputs in order.  Everything a remote host can make the
process spend is bounded (docs/stellar-overlay.md lists the numbers and their reasons):

- connection slots: `ConnectionSlots`, at most `connections_per_host` from one host and
  `total_connections` in all, the busiest host's idlest connection making room;
- the handshake must complete within `handshake_s` of the connection opening (a total
  deadline, not per read, so trickled bytes do not extend it); after it, a connection
  silent in both directions for `idle_s` is closed;
- memory: a read takes at most `read_chunk_bytes`; the peer core holds at most one
  record (4096 bytes before authentication, `max_message_bytes` after) and an outbound
  flood queue bounded in bytes; a remote that does not read its replies is dropped once
  `max_write_buffer_bytes` wait in the socket's buffer;
- CPU: GET_SCP_STATE is answered only when the previous answer has left the queue, and
  every answer comes from the store's bounded contents.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from stellar_sdk import xdr

from synod.crypto import KeyPair, node_id_short, sha256
from synod.runtime.admission import ConnectionSlots
from synod.runtime.framing import close_writer, connection_starter
from synod.scp.messages import Envelope
from synod.scp.stellar import (
    StellarFormatError,
    StellarNetwork,
    envelope_from_xdr_object,
    envelope_to_xdr_object,
)
from synod.stellar.auth import CURVE25519_BYTES, NONCE_BYTES, OverlayIdentity
from synod.stellar.crawl import Crawl, peer_address_xdr
from synod.stellar.peer import (
    Authenticated,
    Closed,
    MessageReceived,
    OverlaySettings,
    Role,
    StellarPeer,
    Write,
)
from synod.stellar.state import ScpStateStore

log = logging.getLogger("synod.stellar")

MessageType = xdr.MessageType
MessageHandler = Callable[["OverlayConnection", xdr.StellarMessage], None]
_MAX_PEERS_SENT = 50
"""stellar-core sends at most 50 addresses in PEERS."""
SERVED_TYPES = frozenset(
    int(kind.value)
    for kind in (
        MessageType.GET_SCP_STATE,
        MessageType.GET_SCP_QUORUMSET,
        MessageType.GET_TX_SET,
        MessageType.SCP_MESSAGE,
        MessageType.DONT_HAVE,
    )
)
"""What a serving node decodes; anything else (a quorum set it never asked for...) is
authenticated, counted and dropped undecoded."""


_SEEN_ENVELOPES = 10_000
"""Hashes of envelopes already handled: 12 slots of a few hundred nodes' statements."""


def serves(kind: int, _message_xdr: bytes) -> bool:
    """The `accept` filter of a serving node's connections."""
    return kind in SERVED_TYPES


def speaks_scp(kind: int, _message_xdr: bytes) -> bool:
    """The `accept` filter of an SCP node: the served types and quorum sets (its core
    asks peers for the sets their statements name, and caps what it learns)."""
    return kind in SERVED_TYPES or kind == int(MessageType.SCP_QUORUMSET.value)


@dataclass(frozen=True, slots=True)
class OverlayLimits:
    """Per-process bounds of the overlay listener (see the module docstring)."""

    total_connections: int = 64
    connections_per_host: int = 8
    handshake_s: float = 5.0
    idle_s: float = 30.0
    read_chunk_bytes: int = 64 * 1024
    max_write_buffer_bytes: int = 4 * 1024 * 1024
    connect_s: float = 5.0


def now_s() -> int:
    """Unix time in whole seconds, as certificates count it."""
    return int(time.time())


class OverlayConnection:
    """One connection: a `StellarPeer` fed from a socket, its outputs applied in order."""

    def __init__(
        self,
        node: OverlayNode,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        role: Role,
        address: str,
        *,
        expected_peer_id: bytes | None = None,
        on_message: MessageHandler | None = None,
        accept: Callable[[int, bytes], bool] = serves,
    ) -> None:
        self.node = node
        self.address = address
        self.peer = StellarPeer(
            node.identity,
            node.settings,
            role,
            os.urandom(NONCE_BYTES),
            expected_peer_id=expected_peer_id,
            accept=accept,
        )
        self.authenticated = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_reason: str | None = None
        self.received = 0
        self._reader = reader
        self._writer = writer
        self._on_message = on_message
        self._progress = asyncio.Event()
        self._outputs: deque[object] = deque()
        self._applying = False

    def send(self, message: xdr.StellarMessage) -> None:
        """Send a message after the handshake (flood messages wait for capacity)."""
        if not self.closed.is_set():
            self._apply(self.peer.send(message))

    def close(self, reason: str) -> None:
        """Tell the remote why, then close."""
        if not self.closed.is_set():
            self._apply(self.peer.close(reason))

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until `condition()` holds after some input, the connection closes, or the
        time runs out; returns `condition()`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not condition() and not self.closed.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._progress.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._progress.wait()
            except TimeoutError:
                break
        return condition()

    async def run(self) -> None:
        """Read until the connection ends; always closes the socket."""
        limits = self.node.limits
        loop = asyncio.get_running_loop()
        handshake_deadline = loop.time() + limits.handshake_s
        try:
            self._apply(self.peer.start(now_s()))
            while not self.closed.is_set():
                if self.peer.authenticated:
                    timeout = limits.idle_s
                else:
                    timeout = handshake_deadline - loop.time()
                try:
                    async with asyncio.timeout(max(timeout, 0)):
                        data = await self._reader.read(limits.read_chunk_bytes)
                except TimeoutError:
                    what = "idle" if self.peer.authenticated else "handshake deadline passed"
                    self.close(what)
                    break
                if not data:
                    self._finish("remote closed the connection")
                    break
                self._apply(self.peer.receive(data, now_s()))
        except (OSError, asyncio.IncompleteReadError) as error:
            self._finish(f"connection error: {error}")
        finally:
            self._finish("closed")
            await close_writer(self._writer, timeout_s=1.0)

    def _apply(self, outputs: Iterable[object]) -> None:
        """Apply the peer's outputs in the order it made them.

        A handler that sends on this connection while one of its messages is being
        delivered re-enters here; its writes carry later MAC sequence numbers than the
        writes still waiting in the outer call (a flow-control grant made with the
        delivery), so they queue behind them instead of jumping ahead, which the remote
        would refuse as an unexpected sequence and close the connection.
        """
        self._outputs.extend(outputs)
        if self._applying:
            return
        self._applying = True
        try:
            while self._outputs and not self.closed.is_set():
                self._apply_one(self._outputs.popleft())
            self._outputs.clear()
        finally:
            self._applying = False
        self._progress.set()

    def _apply_one(self, output: object) -> None:
        if isinstance(output, Write):
            self._write(output.data)
        elif isinstance(output, Authenticated):
            self.authenticated.set()
            self.node.on_authenticated(self, output)
        elif isinstance(output, MessageReceived):
            self.received += 1
            self.node.on_message(self, output.message)
            if self._on_message is not None:
                self._on_message(self, output.message)
        elif isinstance(output, Closed):
            self._finish(output.reason)

    def _write(self, data: bytes) -> None:
        transport = self._writer.transport
        if transport.is_closing():
            self._finish("connection lost")
            return
        self._writer.write(data)
        if transport.get_write_buffer_size() > self.node.limits.max_write_buffer_bytes:
            # A remote that does not read what it asked for is dropped, not buffered for.
            self.node.slow_readers_dropped += 1
            transport.abort()
            self._finish("remote does not read")

    def _finish(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        self._progress.set()
        peer = node_id_short(self.peer.peer_id) if self.peer.peer_id else None
        log.info(
            "overlay connection closed",
            extra={"address": self.address, "peer": peer, "reason": reason},
        )


class OverlayNode:
    """A process's presence on a Stellar overlay: a listener, dialed connections, and the
    SCP state it serves (`store`).  Peers named in `peers` are advertised in PEERS."""

    def __init__(
        self,
        keys: KeyPair,
        settings: OverlaySettings,
        *,
        store: ScpStateStore | None = None,
        limits: OverlayLimits | None = None,
        peers: Sequence[tuple[str, int]] = (),
        on_envelope: Callable[[Envelope], None] | None = None,
        handler: MessageHandler | None = None,
        accept: Callable[[int, bytes], bool] = serves,
        on_peer: Callable[[OverlayConnection], None] | None = None,
    ) -> None:
        """`handler`, when given, takes every decoded message instead of the store's
        answers (an SCP core answers for itself); `accept` picks what is decoded."""
        self.keys = keys
        self.handler = handler
        self.on_peer = on_peer
        """Called with each connection that completes its handshake."""
        self.accept = accept
        self.on_envelope = on_envelope
        """Called with each new SCP envelope whose Stellar signature verifies."""
        self.network = StellarNetwork(settings.passphrase)
        self.rejected_envelopes = 0
        self._seen_envelopes: OrderedDict[bytes, None] = OrderedDict()
        self.settings = settings
        self.limits = limits or OverlayLimits()
        self.store = store if store is not None else ScpStateStore()
        self.identity = OverlayIdentity.create(
            keys, settings.network_id, os.urandom(CURVE25519_BYTES)
        )
        self.slots = ConnectionSlots(
            total=self.limits.total_connections, per_host=self.limits.connections_per_host
        )
        self.connections: set[OverlayConnection] = set()
        self.refused_connections = 0
        self.ignored_state_requests = 0
        self.slow_readers_dropped = 0
        self._peers = [peer_address_xdr(host, port) for host, port in peers[:_MAX_PEERS_SENT]]
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dialed: dict[tuple[str, int], OverlayConnection] = {}
        self._dialers: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on `host:port` (0: any free port); returns the bound address."""
        self._server = await asyncio.start_server(
            connection_starter(self._accept, self._tasks), host, port
        )
        bound = self._server.sockets[0].getsockname()
        self.settings = replace(self.settings, listening_port=int(bound[1]))
        return str(bound[0]), int(bound[1])

    async def connect(
        self,
        host: str,
        port: int,
        *,
        expected_peer_id: bytes | None = None,
        on_message: MessageHandler | None = None,
        accept: Callable[[int, bytes], bool] | None = None,
    ) -> OverlayConnection:
        """Dial `host:port` and start the handshake; `OSError`/`TimeoutError` on failure.

        The connection runs in the background: await its `authenticated` event.
        `accept` picks the messages it decodes (see `StellarPeer`).
        """
        async with asyncio.timeout(self.limits.connect_s):
            reader, writer = await asyncio.open_connection(host, port)
        connection = OverlayConnection(
            self,
            reader,
            writer,
            Role.WE_CALLED_REMOTE,
            f"{host}:{port}",
            expected_peer_id=expected_peer_id,
            on_message=on_message,
            accept=accept or self.accept,
        )
        self._spawn(connection)
        return connection

    def broadcast(self, envelope: Envelope) -> None:
        """Keep `envelope` as this node's state and send it to every authenticated peer."""
        self.store.add_envelope(envelope)
        envelope_xdr = envelope_to_xdr_object(envelope)
        message = xdr.StellarMessage(MessageType.SCP_MESSAGE, envelope=envelope_xdr)
        self._first_sight(sha256(bytes(envelope_xdr.to_xdr_bytes())))
        for connection in list(self.connections):
            if connection.peer.authenticated:
                connection.send(message)

    def keep_connected(self, addresses: Sequence[tuple[str, int]], retry_s: float = 2.0) -> None:
        """Dial each address, and again whenever its connection is gone, every `retry_s`."""

        async def dial_forever() -> None:
            while True:
                for address in addresses:
                    current = self._dialed.get(address)
                    if current is not None and not current.closed.is_set():
                        continue
                    try:
                        self._dialed[address] = await self.connect(*address)
                    except (OSError, TimeoutError) as error:
                        log.info(
                            "overlay peer unreachable",
                            extra={"address": f"{address[0]}:{address[1]}", "reason": str(error)},
                        )
                await asyncio.sleep(retry_s)

        task = asyncio.create_task(dial_forever())
        self._dialers.add(task)
        task.add_done_callback(self._dialers.discard)

    async def close(self) -> None:
        """Stop listening and dialing, and close every connection."""
        for dialer in list(self._dialers):
            dialer.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close("shutting down")
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        for task in tasks:
            task.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    def set_peers(self, peers: Sequence[tuple[str, int]]) -> None:
        """The IPv4 addresses to advertise in PEERS (at most 50, as stellar-core sends)."""
        self._peers = [peer_address_xdr(host, port) for host, port in peers[:_MAX_PEERS_SENT]]

    # Called by connections --------------------------------------------------------------

    def on_authenticated(self, connection: OverlayConnection, event: Authenticated) -> None:
        """A connection completed its handshake: PEERS to those who dialed us, `on_peer`."""
        log.info(
            "overlay peer authenticated",
            extra={"address": connection.address, "peer": node_id_short(event.peer_id)},
        )
        if connection.peer.role is Role.REMOTE_CALLED_US and self._peers:
            connection.send(xdr.StellarMessage(MessageType.PEERS, peers=list(self._peers)))
        if self.on_peer is not None:
            self.on_peer(connection)

    def on_message(self, connection: OverlayConnection, message: xdr.StellarMessage) -> None:
        """An authenticated, decoded message: to `handler`, or answered from the store."""
        if self.handler is not None:
            self.handler(connection, message)
            return
        if message.type == MessageType.SCP_MESSAGE and message.envelope is not None:
            self._on_envelope(message.envelope)
            return
        if message.type == MessageType.GET_SCP_STATE and connection.peer.queued_flood_bytes:
            # The previous answer is still waiting for the remote's capacity: answering
            # again would only grow the queue.
            self.ignored_state_requests += 1
            return
        for answer in self.store.answer(message):
            connection.send(answer)

    def _on_envelope(self, envelope_xdr: xdr.SCPEnvelope) -> None:
        # Seen-before first (a hash), then shape, then the signature: cheapest first.
        if self.on_envelope is None or not self._first_sight(
            sha256(bytes(envelope_xdr.to_xdr_bytes()))
        ):
            return
        try:
            envelope = envelope_from_xdr_object(envelope_xdr)
        except StellarFormatError:
            self.rejected_envelopes += 1
            return
        if not self.network.verify_envelope(envelope):
            self.rejected_envelopes += 1
            return
        self.on_envelope(envelope)

    def _first_sight(self, digest: bytes) -> bool:
        """Remember an envelope's hash; False when it was seen (bounded: oldest forgotten)."""
        if digest in self._seen_envelopes:
            return False
        self._seen_envelopes[digest] = None
        if len(self._seen_envelopes) > _SEEN_ENVELOPES:
            self._seen_envelopes.popitem(last=False)
        return True

    # Internals --------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_name = writer.get_extra_info("peername")
        host = str(peer_name[0]) if peer_name else "?"
        address = f"{host}:{peer_name[1]}" if peer_name else "?"
        loop = asyncio.get_running_loop()
        slot = self.slots.admit(host, writer.transport.abort, loop.time())
        if slot is None:
            self.refused_connections += 1
            log.warning("too many overlay connections from one host", extra={"host": host})
            writer.transport.abort()
            return
        connection = OverlayConnection(
            self, reader, writer, Role.REMOTE_CALLED_US, address, accept=self.accept
        )
        self.connections.add(connection)
        try:
            await connection.run()
        except asyncio.CancelledError:
            # Shutdown cancelled the connection (its socket is closed by `run`); ending
            # normally keeps asyncio's server from logging a cancelled handler as an error.
            pass
        finally:
            self.connections.discard(connection)
            self.slots.release(slot)

    def _spawn(self, connection: OverlayConnection) -> None:
        self.connections.add(connection)

        async def run() -> None:
            try:
                await connection.run()
            finally:
                self.connections.discard(connection)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# Crawling ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrawlLimits:
    """How long and how wide a crawl goes."""

    listen_s: float = 5.0
    concurrency: int = 16
    max_nodes: int = 5000
    total_s: float = 300.0


_CRAWLED_TYPES = frozenset(
    int(kind.value) for kind in (MessageType.SCP_MESSAGE, MessageType.PEERS, MessageType.DONT_HAVE)
)


def parse_address(text: str, *, any_port: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (port 11625 when omitted) -> (host, port); `ValueError` when bad.

    With `any_port`, port 0 (let the system choose, for listening) is accepted.
    """
    host, separator, port_text = text.strip().rpartition(":")
    if not separator:
        host, port_text = text.strip(), "11625"
    lowest = 0 if any_port else 1
    if not host or not port_text.isdigit() or not lowest <= int(port_text) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port_text)


async def crawl(
    addresses: Sequence[str],
    settings: OverlaySettings,
    *,
    keys: KeyPair | None = None,
    limits: CrawlLimits | None = None,
    overlay_limits: OverlayLimits | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Crawl:
    """Visit `addresses` and every address their PEERS name, within `limits`.

    Each visit: handshake, GET_SCP_STATE(0), then listen until the node's own quorum set
    is known or `listen_s` passes.  Returns what was learnt; unreachable nodes are skipped.
    """
    limits = limits or CrawlLimits()
    book = Crawl(StellarNetwork(settings.passphrase), max_nodes=limits.max_nodes)
    for address in addresses:
        book.add_address(address)
    node = OverlayNode(keys or KeyPair.generate(), settings, limits=overlay_limits)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.total_s
    visited = 0
    running: set[asyncio.Task[None]] = set()
    try:
        while (visited < len(book.addresses) or running) and loop.time() < deadline:
            while visited < len(book.addresses) and len(running) < limits.concurrency:
                address = book.addresses[visited]
                visited += 1
                running.add(asyncio.create_task(_visit(node, book, address, limits.listen_s)))
            if not running:
                break
            _done, running = await asyncio.wait(
                running, timeout=max(deadline - loop.time(), 0), return_when="FIRST_COMPLETED"
            )
            if on_progress is not None:
                on_progress(visited - len(running), len(book.addresses))
    finally:
        for task in running:
            task.cancel()
        await node.close()
    return book


async def _visit(node: OverlayNode, book: Crawl, address: str, listen_s: float) -> None:
    try:
        host, port = parse_address(address)
    except ValueError:
        return
    asked: set[bytes] = set()

    def learn(connection: OverlayConnection, message: xdr.StellarMessage) -> None:
        for request in book.on_message(message, asked):
            connection.send(request)

    def wanted(kind: int, message_xdr: bytes) -> bool:
        # A quorum set is decoded only when its hash (of the bytes as received: the
        # arm's body) is one this connection asked for.
        if kind == int(MessageType.SCP_QUORUMSET.value):
            return sha256(message_xdr[4:]) in asked
        return kind in _CRAWLED_TYPES

    try:
        connection = await node.connect(host, port, on_message=learn, accept=wanted)
    except (OSError, TimeoutError) as error:
        log.info("crawl: cannot connect", extra={"address": address, "reason": str(error)})
        return
    try:
        if not await connection.wait_for(connection.authenticated.is_set, node.limits.handshake_s):
            return
        peer_id = connection.peer.peer_id
        assert peer_id is not None and connection.peer.remote_hello is not None
        book.connected(address, peer_id, connection.peer.remote_hello)
        connection.send(
            xdr.StellarMessage(MessageType.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(0))
        )
        await connection.wait_for(lambda: book.quorum_set_of(peer_id) is not None, listen_s)
    finally:
        connection.close("crawl done")
