"""Peer-to-peer TCP transport: authenticated, framed, reconnecting, bounded.

Theory of operation.

*Connections.*  Every node dials every peer it knows and keeps that connection up; it
sends only on the connections it dialed and receives only on the ones it accepted.  So
between two nodes there are two TCP connections, one per direction, and a node's
outgoing traffic never waits on its peer's dialing.  If a peer connects again while an
older inbound connection from it is still open (it restarted, or the old one is
half-dead), the newer connection wins and the older one is closed: that is the
duplicate-connection rule.

*Handshake.*  Both sides first send ``Hello(version, network, node_id, nonce)`` with a
fresh 32-byte nonce; a Hello for another network or version ends the connection at once.
Then the *dialer* sends ``Proof(signature)``, and the listener answers with its own
Proof only after it has checked the dialer's: a listener signs nothing for a party that
has not proven itself a configured peer, so knowing a member's id gets an outsider no
signatures (no signing oracle) and costs the listener one verification per handshake at
most.  Each side signs, under the domain tag ``synod/transport/handshake/v2``, its role
(dialer or listener), the network id, the *other* side's nonce, its own nonce, its own
id and the other's id.  The receiver thus knows that the peer holds the key of the id it
claims, that the proof was made for this network, this connection (its own fresh nonce)
and for it (its id), and a proof cannot be reflected back (the role).  The dialer
requires the id it meant to reach; the listener accepts only ids of its configured
peers.  The transport authenticates connections; it does not encrypt them and an on-path
attacker could still tamper with later frames: cores sign what their safety depends on.

*Admission.*  Connections that have not finished the handshake hold a slot of
`TransportConfig.max_handshakes` (at most `max_handshakes_per_host` per source host;
see `synod.runtime.admission`) for at most `handshake_timeout_s`; a host cannot hold
more, and a full listener makes room from the busiest host.

*Frames.*  After the handshake each frame (4-byte length, then body; the length is
checked against the cap before the body is read) carries one message of the protocol's
`synod.wire.Codec`.  Anything wrong from a peer (a handshake that fails or times out, an
oversized or truncated frame, an undecodable message, bytes on a connection that should
be silent) closes that one connection and is logged; nothing raises out of the
transport, and every other connection keeps being served.

*Send queues.*  `send` never blocks: it puts the encoded frame in the peer's queue,
bounded to `TransportConfig.send_queue_limit` frames and `send_queue_max_bytes` bytes.
When the queue is full the **oldest** queued frames are dropped (and counted in
`PeerStats.dropped_frames`): the newest messages carry the freshest state and cores
retransmit what matters.  Frames move from the queue to the socket one chunk at a time,
so they wait in the bounded queue rather than in the socket's buffer.  Delivery is at
most once: frames queued for a peer that is down wait for the reconnection (up to the
bound); a frame being written when a connection breaks is lost.

*Reconnection.*  A broken or refused outgoing connection is retried after an
exponential backoff with jitter: attempt k waits a uniformly drawn time in
[d/2, d] where d = min(backoff_max_s, backoff_initial_s * 2**k); a successful handshake
resets k.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from synod.crypto import KeyPair, NodeId, node_id_short, verify
from synod.runtime.admission import ConnectionSlots
from synod.runtime.framing import close_writer, connection_starter, read_frame
from synod.wire import (
    DEFAULT_MAX_FRAME_BYTES,
    U16,
    Bytes32,
    Codec,
    DecodeError,
    Message,
    Signature,
    WireError,
    encode_frame,
)

log = logging.getLogger("synod.runtime.transport")

Address = tuple[str, int]
"""A (host, port) pair."""

MessageHandler = Callable[[NodeId, Any], Awaitable[None]]
"""Called with each authenticated sender and decoded message; awaited before the next
frame of that connection is read, so a slow handler pushes back on the sender."""

HANDSHAKE_DOMAIN = b"synod/transport/handshake/v2"
PROTOCOL_VERSION = 2
NONCE_BYTES = 32
MAX_NETWORK_ID_BYTES = 64
MAX_HANDSHAKE_FRAME_BYTES = 256

_DIALER = b"D"
_LISTENER = b"L"


class Hello(Message, frozen=True, tag="hello"):
    """First handshake frame: the network, who I claim to be, the nonce you must sign."""

    version: U16
    network: Annotated[bytes, msgspec.Meta(max_length=MAX_NETWORK_ID_BYTES)]
    node_id: Bytes32
    nonce: Bytes32


class Proof(Message, frozen=True, tag="proof"):
    """Second handshake frame: my signature over the handshake transcript."""

    signature: Signature


_HANDSHAKE_CODEC: Codec[Hello | Proof] = Codec(
    Hello | Proof, max_message_bytes=MAX_HANDSHAKE_FRAME_BYTES
)


class HandshakeFailed(WireError):
    """The peer did not prove the identity required of it."""


class PeerMisbehaved(WireError):
    """The peer broke the transport's rules (for example, wrote on a send-only link)."""


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Limits and timings of a `PeerTransport` (seconds, frames, bytes)."""

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    send_queue_limit: int = 4096
    send_queue_max_bytes: int = 64 * 1024 * 1024
    write_chunk_bytes: int = 256 * 1024
    handshake_timeout_s: float = 5.0
    max_handshakes: int = 256
    """Inbound connections still in their handshake, all hosts together."""
    max_handshakes_per_host: int = 32
    """The same from one source address: peers dial once each, but a test or a small
    deployment may run dozens of nodes on one machine, all dialing at start."""
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    close_timeout_s: float = 1.0

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        """Delay before reconnection attempt `attempt` (0-based): exponential, jittered."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2 ** min(attempt, 30))
        return rng.uniform(ceiling / 2, ceiling)


@dataclass(slots=True)
class PeerStats:
    """Counters for one peer, readable at any time."""

    queued_frames: int = 0
    sent_frames: int = 0
    dropped_frames: int = 0
    received_frames: int = 0
    connections_made: int = 0
    outgoing_connected: bool = False


def _transcript(  # noqa: PLR0917 - the transcript's fields, in their signed order
    role: bytes,
    network: bytes,
    verifier_nonce: bytes,
    signer_nonce: bytes,
    signer: bytes,
    verifier: bytes,
) -> bytes:
    network_field = len(network).to_bytes(1, "big") + network
    return role + network_field + verifier_nonce + signer_nonce + signer + verifier


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    keys: KeyPair,
    *,
    dialer: bool,
    accept: Callable[[NodeId], bool],
    network: bytes = b"",
) -> NodeId:
    """Run the mutual handshake; return the peer's proven id or raise `HandshakeFailed`.

    `accept` decides whether a claimed id may connect at all (checked before any
    signature work); `network` must equal the peer's.  The dialer proves itself first,
    the listener only to a dialer that has.  Also raises the stream's own errors
    (`asyncio.IncompleteReadError`, `OSError`) and `synod.wire.WireError` for bad frames;
    callers treat all as failure.
    """
    if len(network) > MAX_NETWORK_ID_BYTES:
        raise ValueError(f"a network id is at most {MAX_NETWORK_ID_BYTES} bytes")
    own_nonce = os.urandom(NONCE_BYTES)
    hello_frame = _HANDSHAKE_CODEC.encode(
        Hello(PROTOCOL_VERSION, network, keys.node_id, own_nonce)
    )
    writer.write(encode_frame(hello_frame))
    hello = await _read_handshake_message(reader)
    if not isinstance(hello, Hello):
        raise HandshakeFailed("expected Hello")
    peer = _check_hello(hello, keys, accept, network)
    own_role, peer_role = (_DIALER, _LISTENER) if dialer else (_LISTENER, _DIALER)
    own_proof = Proof(
        keys.sign(
            HANDSHAKE_DOMAIN,
            _transcript(own_role, network, hello.nonce, own_nonce, keys.node_id, peer),
        )
    )
    expected = _transcript(peer_role, network, own_nonce, hello.nonce, peer, keys.node_id)
    if dialer:
        await _send_proof(writer, own_proof)
        await _receive_proof(reader, peer, expected)
    else:
        await _receive_proof(reader, peer, expected)
        await _send_proof(writer, own_proof)
    return peer


def _check_hello(
    hello: Hello, keys: KeyPair, accept: Callable[[NodeId], bool], network: bytes
) -> NodeId:
    if hello.version != PROTOCOL_VERSION:
        raise HandshakeFailed(f"protocol version {hello.version}, expected {PROTOCOL_VERSION}")
    if hello.network != network:
        raise HandshakeFailed(
            f"peer is in network {hello.network.hex() or '(none)'}, "
            f"this node in {network.hex() or '(none)'}"
        )
    peer = NodeId(hello.node_id)
    if peer == keys.node_id:
        raise HandshakeFailed("peer claims this node's own id")
    if not accept(peer):
        raise HandshakeFailed(f"{node_id_short(peer)} is not an accepted peer")
    return peer


async def _send_proof(writer: asyncio.StreamWriter, proof: Proof) -> None:
    writer.write(encode_frame(_HANDSHAKE_CODEC.encode(proof)))
    await writer.drain()


async def _receive_proof(reader: asyncio.StreamReader, peer: NodeId, expected: bytes) -> None:
    proof = await _read_handshake_message(reader)
    if not isinstance(proof, Proof):
        raise HandshakeFailed("expected Proof")
    if not verify(peer, HANDSHAKE_DOMAIN, expected, proof.signature):
        raise HandshakeFailed(f"bad handshake signature from {node_id_short(peer)}")


async def _read_handshake_message(reader: asyncio.StreamReader) -> Hello | Proof:
    body = await read_frame(reader, max_frame_bytes=MAX_HANDSHAKE_FRAME_BYTES)
    return _HANDSHAKE_CODEC.decode(body)


_CONNECTION_ERRORS = (
    OSError,
    EOFError,
    TimeoutError,
    asyncio.IncompleteReadError,
    WireError,
)


class _OutgoingLink:
    """The dialed connection to one peer, its bounded queue and its reconnect loop."""

    def __init__(
        self,
        transport: PeerTransport,
        peer: NodeId,
        address: Address,
        stats: PeerStats,
    ) -> None:
        self.transport = transport
        self.peer = peer
        self.address = address
        self.stats = stats
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.wakeup = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        self.task: asyncio.Task[None] | None = None

    def enqueue(self, frame: bytes) -> None:
        config = self.transport.config
        self.queue.append(frame)
        self.queued_bytes += len(frame)
        while len(self.queue) > config.send_queue_limit or (
            self.queued_bytes > config.send_queue_max_bytes and len(self.queue) > 1
        ):
            self.queued_bytes -= len(self.queue.popleft())
            self.stats.dropped_frames += 1
            if self.stats.dropped_frames & (self.stats.dropped_frames - 1) == 0:
                # Logged at 1, 2, 4, 8... drops: visible, yet bounded in volume.
                log.warning(
                    "send queue full; oldest frames dropped",
                    extra={
                        "peer": node_id_short(self.peer),
                        "dropped_frames": self.stats.dropped_frames,
                    },
                )
        self.stats.queued_frames = len(self.queue)
        self.drained.clear()
        self.wakeup.set()

    async def run(self) -> None:
        config = self.transport.config
        attempt = 0
        while True:
            connection = await self._connect()
            if connection is None:
                await asyncio.sleep(config.backoff_s(attempt, self.transport.rng))
                attempt += 1
                continue
            attempt = 0
            reader, writer = connection
            try:
                await self._pump(reader, writer)
            except _CONNECTION_ERRORS as error:
                log.log(
                    logging.WARNING if isinstance(error, WireError) else logging.INFO,
                    "outgoing connection lost",
                    extra={"peer": node_id_short(self.peer), "reason": _describe(error)},
                )
            finally:
                self.stats.outgoing_connected = False
                await close_writer(writer, timeout_s=config.close_timeout_s)
            await asyncio.sleep(config.backoff_s(0, self.transport.rng))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        config = self.transport.config
        host, port = self.address
        try:
            async with asyncio.timeout(config.connect_timeout_s):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as error:
            log.debug(
                "cannot connect",
                extra={"peer": node_id_short(self.peer), "reason": _describe(error)},
            )
            return None
        try:
            async with asyncio.timeout(config.handshake_timeout_s):
                await handshake(
                    reader,
                    writer,
                    self.transport.keys,
                    dialer=True,
                    accept=self._is_target,
                    network=self.transport.network,
                )
        except _CONNECTION_ERRORS as error:
            log.warning(
                "outgoing handshake failed",
                extra={"peer": node_id_short(self.peer), "reason": _describe(error)},
            )
            await close_writer(writer, timeout_s=config.close_timeout_s)
            return None
        self.stats.connections_made += 1
        self.stats.outgoing_connected = True
        log.info("connected", extra={"peer": node_id_short(self.peer), "address": f"{host}:{port}"})
        return reader, writer

    def _write_chunk(self, writer: asyncio.StreamWriter) -> None:
        """Move up to one chunk from the queue to the socket: the queue, not the socket's
        buffer, is where frames wait, so the drop-oldest bound keeps applying."""
        written = 0
        while self.queue and written < self.transport.config.write_chunk_bytes:
            frame = self.queue.popleft()
            self.queued_bytes -= len(frame)
            writer.write(frame)
            written += len(frame)
            self.stats.sent_frames += 1
        self.stats.queued_frames = len(self.queue)

    def _is_target(self, claimed: NodeId) -> bool:
        return claimed == self.peer

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Write queued frames until the connection breaks.

        A peer never writes on a connection we dialed once the handshake is done, so a
        pending read that completes means it closed the connection (or misbehaved).
        """
        silence = asyncio.ensure_future(reader.read(1))
        try:
            while True:
                if not self.queue:
                    self.drained.set()
                    self.wakeup.clear()
                    woken = asyncio.ensure_future(self.wakeup.wait())
                    try:
                        await asyncio.wait({silence, woken}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        woken.cancel()
                if silence.done():
                    if silence.result():
                        raise PeerMisbehaved("peer wrote on a send-only connection")
                    raise EOFError("peer closed")
                self._write_chunk(writer)
                await writer.drain()
        finally:
            silence.cancel()


class PeerTransport:
    """Authenticated framed TCP links to a fixed set of peers (see the module docstring)."""

    def __init__(
        self,
        keys: KeyPair,
        peers: Mapping[NodeId, Address],
        codec: Codec[Any],
        on_message: MessageHandler,
        *,
        config: TransportConfig | None = None,
        rng: random.Random | None = None,
        network: bytes = b"",
    ) -> None:
        if len(network) > MAX_NETWORK_ID_BYTES:
            raise ValueError(f"a network id is at most {MAX_NETWORK_ID_BYTES} bytes")
        self.keys = keys
        self.network = network
        self.codec = codec
        self.on_message = on_message
        self.config = config if config is not None else TransportConfig()
        self.rng = rng if rng is not None else random.Random()
        self.stats: dict[NodeId, PeerStats] = {}
        self._links: dict[NodeId, _OutgoingLink] = {}
        for peer, address in peers.items():
            if peer == keys.node_id:
                continue
            self.stats[peer] = PeerStats()
            self._links[peer] = _OutgoingLink(self, peer, address, self.stats[peer])
        self.rejected_connections = 0
        self.handshake_slots = ConnectionSlots(
            total=self.config.max_handshakes, per_host=self.config.max_handshakes_per_host
        )
        self._inbound: dict[NodeId, asyncio.StreamWriter] = {}
        self._connection_tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._closing = False

    @property
    def peers(self) -> list[NodeId]:
        return list(self._links)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        """Listen on host:port (0 picks a free port), start dialing; return the bound address."""
        if self._server is not None:
            raise RuntimeError("transport already started")
        self._server = await asyncio.start_server(
            connection_starter(self._accept, self._connection_tasks), host, port
        )
        bound = self._server.sockets[0].getsockname()
        for link in self._links.values():
            link.task = asyncio.create_task(link.run(), name=f"dial {node_id_short(link.peer)}")
        log.info("listening", extra={"address": f"{bound[0]}:{bound[1]}"})
        return str(bound[0]), int(bound[1])

    def send(self, peer: NodeId, message: Any) -> bool:
        """Queue `message` for `peer`; False when the peer is unknown (logged) or the
        transport is closing."""
        if self._closing:
            return False
        link = self._links.get(peer)
        if link is None:
            log.warning("send to unknown peer dropped", extra={"peer": node_id_short(peer)})
            return False
        link.enqueue(self._frame(message))
        return True

    def broadcast(self, message: Any) -> None:
        """Queue `message` for every peer (encoded once)."""
        if self._closing:
            return
        frame = self._frame(message)
        for link in self._links.values():
            link.enqueue(frame)

    def _frame(self, message: Any) -> bytes:
        return encode_frame(self.codec.encode(message), max_frame_bytes=self.config.max_frame_bytes)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every connected peer's queue is written; False on timeout."""
        waiting = [
            link.drained.wait()
            for link in self._links.values()
            if link.stats.outgoing_connected and not link.drained.is_set()
        ]
        if not waiting:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*waiting)
        except TimeoutError:
            return False
        return True

    async def close(self, *, flush_timeout_s: float = 1.0) -> None:
        """Stop listening, flush queued frames (bounded), close every connection."""
        if self._closing:
            return
        self._closing = True
        if self._server is not None:
            self._server.close()
        await self.flush(flush_timeout_s)
        tasks = [link.task for link in self._links.values() if link.task is not None]
        tasks.extend(self._connection_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # ------------------------------------------------------------ inbound

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connection_tasks.add(task)
        try:
            await self._serve_inbound(reader, writer)
        except asyncio.CancelledError:
            # Cancelled by `close`; ending quietly keeps asyncio's stream callback from
            # reporting the cancellation as an error.
            await close_writer(writer, timeout_s=0)
        finally:
            self._connection_tasks.discard(task)

    async def _serve_inbound(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        address = _peer_address(writer)
        if self._closing:
            await close_writer(writer, timeout_s=0)
            return
        host = address.rsplit(":", 1)[0]
        slot = self.handshake_slots.admit(
            host, writer.transport.abort, asyncio.get_running_loop().time()
        )
        if slot is None:
            self.rejected_connections += 1
            log.warning("too many handshakes from one host; refused", extra={"host": host})
            writer.transport.abort()
            return
        try:
            async with asyncio.timeout(self.config.handshake_timeout_s):
                peer = await handshake(
                    reader,
                    writer,
                    self.keys,
                    dialer=False,
                    accept=self._links.__contains__,
                    network=self.network,
                )
        except _CONNECTION_ERRORS as error:
            self.rejected_connections += 1
            log.warning(
                "inbound handshake failed",
                extra={"address": address, "reason": _describe(error)},
            )
            await close_writer(writer, timeout_s=0)
            return
        finally:
            self.handshake_slots.release(slot)
        previous = self._inbound.get(peer)
        self._inbound[peer] = writer
        if previous is not None:
            log.info("newer connection replaces older", extra={"peer": node_id_short(peer)})
            previous.transport.abort()
        try:
            await self._receive(peer, reader)
        finally:
            if self._inbound.get(peer) is writer:
                del self._inbound[peer]
            await close_writer(writer, timeout_s=0)

    async def _receive(self, peer: NodeId, reader: asyncio.StreamReader) -> None:
        stats = self.stats[peer]
        try:
            while True:
                body = await read_frame(reader, max_frame_bytes=self.config.max_frame_bytes)
                message = self.codec.decode(body)
                stats.received_frames += 1
                await self.on_message(peer, message)
        except asyncio.IncompleteReadError as error:
            level = logging.INFO if not error.partial else logging.WARNING
            log.log(
                level,
                "inbound connection closed",
                extra={"peer": node_id_short(peer), "reason": _describe(error)},
            )
        except (DecodeError, WireError, OSError) as error:
            log.warning(
                "inbound connection dropped for bad input",
                extra={"peer": node_id_short(peer), "reason": _describe(error)},
            )
        except Exception:
            # A handler bug must not take the transport down; the connection goes.
            log.exception("message handler failed", extra={"peer": node_id_short(peer)})


def _peer_address(writer: asyncio.StreamWriter) -> str:
    peername = writer.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(peername)


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncio.IncompleteReadError):
        return "connection closed" if not error.partial else "connection closed mid-frame"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
