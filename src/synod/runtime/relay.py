"""Websocket relay: an untrusted forwarder between BFT-CRDT nodes, and the node's client.

Theory of operation (Kleppmann, *Making CRDTs Byzantine Fault Tolerant*, PaPoC 2022,
section 2: a relay server that nodes need not trust).  Nodes that cannot reach each other
directly each keep one websocket open to a relayer; the relayer forwards frames and
nothing else.  It holds no key that matters for safety and keeps no state beyond its
connections: updates are signed by their authors and named by hash, so whatever the
relayer drops, reorders, replays or alters, a node only ever applies genuine, valid
updates, and the periodic heads announcements repair what was lost.

*Protocol* (binary websocket messages, MessagePack through `RELAY_CODEC`):

1. relayer -> node: ``Challenge(nonce, network, relayer_id)``: 32 fresh random bytes, the
   network the relayer serves and its identity (empty when it has none);
2. node -> relayer: ``Hello(node_id, signature)``, the node's signature over the domain
   tag ``synod/relay/hello/v2``, the network, the relayer's id and the nonce.  A node
   refuses a challenge for another network, or from another relayer than the one it
   pinned (`RelayClient(relayer_id=...)`), so a hostile relayer that forwards another
   relayer's challenge cannot use the answer there.  The relayer checks the signature
   so that one client cannot take over another's address (which would only hurt
   liveness), and, when it has a member list, that the node is a member; a newer
   connection of the same node replaces the older one;
3. then ``Envelope(peer, payload)`` both ways: from a node, `peer` is the recipient
   (empty: every other connected node); from the relayer, `peer` is the sender as the
   relayer saw it.  The payload is opaque to the relayer (a `synod.crdt` message).

*Bounds* (docs/runtime.md gives the reasons for each number).  Websocket messages are
capped at `RelayConfig.max_message_bytes`.  Connections hold slots, at most
`max_connections_per_host` per source address of `max_connections` (a full relayer makes
room from the busiest host); a client that does not say hello within `hello_timeout_s`
is disconnected.  A frame is encoded once, whatever the number of its targets.  Each
target's queue is a `synod.runtime.admission.FairQueue` keyed by sender: its frames are
sent round robin between senders by bytes, so one sender's flood delays no one else's
updates, and each sender may have at most `queue_bytes_per_sender` waiting for one
target; a target's queue holds at most `queue_bytes_per_target`, all queues together
`queue_bytes_total`.  A frame over any bound is dropped for that target and counted
against its sender (`Relayer.dropped_by_sender`): a sender that floods loses its own
frames, never others'.

*Tampering* (for tests and demonstrations): `TamperPolicy` makes the relayer drop,
reorder, replay and alter frames with the given probability, from a seeded RNG.

`RelayClient` is the node side: it dials, answers the challenge, sends envelopes from a
bounded queue (kept while disconnected), hands every received envelope to a callback,
and reconnects with exponential backoff, calling `on_connected` after each handshake (a
CRDT node announces its heads then, which starts its catch-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from synod.crypto import KeyPair, NodeId, node_id_short, verify
from synod.runtime.admission import ConnectionSlots, FairQueue
from synod.wire import Bytes32, Codec, DecodeError, Message, Signature

log = logging.getLogger("synod.runtime.relay")

HELLO_DOMAIN = b"synod/relay/hello/v2"
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
MAX_HELD_FRAMES = 8
MAX_NETWORK_ID_BYTES = 64
PeerBytes = Annotated[bytes, msgspec.Meta(max_length=32)]
Payload = Annotated[bytes, msgspec.Meta(max_length=MAX_PAYLOAD_BYTES)]
NetworkId = Annotated[bytes, msgspec.Meta(max_length=MAX_NETWORK_ID_BYTES)]


class Challenge(Message, frozen=True, tag="challenge"):
    """The relayer's fresh nonce, its network and identity, to be signed by the node."""

    nonce: Bytes32
    network: NetworkId
    relayer_id: PeerBytes


def hello_transcript(challenge: Challenge) -> bytes:
    """What a node signs (under `HELLO_DOMAIN`) to answer `challenge`."""
    return (
        len(challenge.network).to_bytes(1, "big")
        + challenge.network
        + len(challenge.relayer_id).to_bytes(1, "big")
        + challenge.relayer_id
        + challenge.nonce
    )


class Hello(Message, frozen=True, tag="hello"):
    """The node's id and its signature over `HELLO_DOMAIN` and the nonce."""

    node_id: Bytes32
    signature: Signature


class Envelope(Message, frozen=True, tag="envelope"):
    """A forwarded payload: `peer` is the recipient (to the relayer) or the sender."""

    peer: PeerBytes
    payload: Payload


RelayMessage = Challenge | Hello | Envelope
RELAY_CODEC: Codec[RelayMessage] = Codec(RelayMessage, max_message_bytes=MAX_PAYLOAD_BYTES + 256)
"""Encoder and decoder of the relay protocol."""


@dataclass(frozen=True, slots=True)
class RelayConfig:
    """Limits and timings of the relayer and its clients."""

    max_message_bytes: int = MAX_PAYLOAD_BYTES + 256
    send_queue_limit: int = 4_096
    """Frames waiting in a client's own send queue, and per sender for one target."""
    hello_timeout_s: float = 5.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0
    network: bytes = b""
    """The network this relayer (or client) is for; a hello for another is refused."""
    members: frozenset[bytes] | None = None
    """Node ids allowed to connect (None: anyone with a key)."""
    max_connections: int = 1_024
    max_connections_per_host: int = 16
    queue_bytes_per_sender: int = 8 * 1024 * 1024
    """Bytes from one sender waiting for one target: two maximum-size frames."""
    queue_bytes_per_target: int = 64 * 1024 * 1024
    queue_bytes_total: int = 512 * 1024 * 1024


@dataclass(slots=True)
class TamperPolicy:
    """Make the relayer hostile: each frame forwarded to a node is, with `probability`
    each, preceded by a replay of an older frame, dropped, altered (bits flipped in the
    payload) or held back and sent after the link's next frame (reordered).  `counts`
    says how often each happened."""

    probability: float
    rng: random.Random
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("replayed", "dropped", "altered", "reordered"), 0)
    )

    def apply(
        self, frame: Envelope, memory: deque[Envelope], held: list[Envelope]
    ) -> list[Envelope]:
        """The frames to send instead of `frame`.

        `memory` holds this link's past frames (for replays), `held` the frames held back
        (sent after the next one).
        """
        rng = self.rng
        out: list[Envelope] = []
        if rng.random() < self.probability and memory:
            out.append(memory[rng.randrange(len(memory))])
            self.counts["replayed"] += 1
        memory.append(frame)
        if rng.random() < self.probability:
            self.counts["dropped"] += 1
            return out
        if rng.random() < self.probability and frame.payload:
            payload = bytearray(frame.payload)
            for _ in range(rng.randint(1, 3)):
                payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
            frame = Envelope(frame.peer, bytes(payload))
            self.counts["altered"] += 1
        if rng.random() < self.probability and len(held) < MAX_HELD_FRAMES:
            held.append(frame)
            self.counts["reordered"] += 1
            return out
        out.append(frame)
        out.extend(held)
        held.clear()
        return out


class _Connection:
    """One node's websocket at the relayer and its fair, bounded send queue."""

    def __init__(self, node_id: NodeId, websocket: Any, config: RelayConfig) -> None:
        self.node_id = node_id
        self.websocket = websocket
        self.queue: FairQueue[bytes, bytes] = FairQueue(
            quantum_bytes=256 * 1024,
            per_source_items=config.send_queue_limit,
            per_source_bytes=config.queue_bytes_per_sender,
        )
        self.queued_bytes = 0
        self.ready = asyncio.Event()
        self.memory: deque[Envelope] = deque(maxlen=64)
        self.held: list[Envelope] = []

    async def pump(self, relayer: Relayer) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            while len(self.queue):
                (data,) = self.queue.take(1)  # the rest stays counted where it waits
                try:
                    await self.websocket.send(data)
                finally:
                    self.queued_bytes -= len(data)
                    relayer.queued_bytes -= len(data)


class Relayer:
    """The websocket relayer: authenticates nothing that matters, forwards everything,
    and bounds what each host and each sender can make it hold."""

    def __init__(
        self,
        config: RelayConfig | None = None,
        tamper: TamperPolicy | None = None,
        *,
        keys: KeyPair | None = None,
    ):
        self.config = config if config is not None else RelayConfig()
        self.tamper = tamper
        self.relayer_id = bytes(keys.node_id) if keys is not None else b""
        self.connections: dict[NodeId, _Connection] = {}
        self.slots = ConnectionSlots(
            total=self.config.max_connections, per_host=self.config.max_connections_per_host
        )
        self.forwarded = 0
        self.queued_bytes = 0
        self.dropped_by_sender: dict[bytes, int] = {}
        self.refused_hellos = 0
        self._server: Any = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on host:port (0 picks a free port); return the bound address."""
        from websockets.asyncio.server import serve

        self._server = await serve(
            self._serve, host, port, max_size=self.config.max_message_bytes, compression=None
        )
        bound = next(iter(self._server.sockets)).getsockname()
        log.info("relayer listening", extra={"address": f"{bound[0]}:{bound[1]}"})
        return str(bound[0]), int(bound[1])

    async def close(self) -> None:
        """Close the listener and every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, websocket: Any) -> None:
        address = websocket.remote_address
        host = str(address[0]) if isinstance(address, tuple) and address else str(address)
        slot = self.slots.admit(
            host, websocket.transport.abort, asyncio.get_running_loop().time()
        )
        if slot is None:
            log.warning("too many connections from one host; refused", extra={"host": host})
            websocket.transport.abort()
            return
        try:
            await self._serve_admitted(websocket)
        finally:
            self.slots.release(slot)

    async def _serve_admitted(self, websocket: Any) -> None:
        node_id = await self._greet(websocket)
        if node_id is None:
            return
        connection = _Connection(node_id, websocket, self.config)
        previous = self.connections.get(node_id)
        self.connections[node_id] = connection
        if previous is not None:
            await previous.websocket.close()
        pump = asyncio.create_task(connection.pump(self))
        log.info("node connected", extra={"peer": node_id_short(node_id)})
        try:
            async for data in websocket:
                self._forward(connection, data)
        except Exception as error:  # a broken connection ends only itself
            log.info(
                "connection ended", extra={"peer": node_id_short(node_id), "reason": str(error)}
            )
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            self.queued_bytes -= connection.queued_bytes
            if self.connections.get(node_id) is connection:
                del self.connections[node_id]

    async def _greet(self, websocket: Any) -> NodeId | None:
        challenge = Challenge(os.urandom(32), self.config.network, self.relayer_id)
        try:
            await websocket.send(RELAY_CODEC.encode(challenge))
            data = await asyncio.wait_for(websocket.recv(), self.config.hello_timeout_s)
            hello = RELAY_CODEC.decode(data if isinstance(data, bytes) else b"")
        except Exception as error:  # timeouts, closed sockets, undecodable hellos
            log.info("handshake failed", extra={"reason": str(error) or type(error).__name__})
            await websocket.close()
            return None
        reason = self._refusal(hello, challenge)
        if reason is not None:
            self.refused_hellos += 1
            log.warning("handshake refused", extra={"reason": reason})
            await websocket.close()
            return None
        assert isinstance(hello, Hello)
        return NodeId(hello.node_id)

    def _refusal(self, hello: RelayMessage, challenge: Challenge) -> str | None:
        if not isinstance(hello, Hello):
            return "not a hello"
        members = self.config.members
        if members is not None and bytes(hello.node_id) not in members:
            return f"{node_id_short(NodeId(hello.node_id))} is not a member"  # cheap, first
        if not verify(hello.node_id, HELLO_DOMAIN, hello_transcript(challenge), hello.signature):
            return "bad hello signature"
        return None

    def _forward(self, source: _Connection, data: Any) -> None:
        try:
            envelope = RELAY_CODEC.decode(data if isinstance(data, bytes) else b"")
        except DecodeError:
            return  # the relayer has no reason to read more from a confused client
        if not isinstance(envelope, Envelope):
            return
        outgoing = Envelope(bytes(source.node_id), envelope.payload)
        if envelope.peer:
            target = self.connections.get(NodeId(envelope.peer))
            targets = [target] if target is not None else []
        else:
            targets = [c for c in self.connections.values() if c is not source]
        encoded = RELAY_CODEC.encode(outgoing) if self.tamper is None else b""
        for target in targets:
            if self.tamper is None:
                self._enqueue(target, source.node_id, encoded)
                continue
            for frame in self.tamper.apply(outgoing, target.memory, target.held):
                self._enqueue(target, source.node_id, RELAY_CODEC.encode(frame))

    def _enqueue(self, target: _Connection, sender: bytes, data: bytes) -> None:
        config = self.config
        size = len(data)
        if (
            not target.queue.has_room(sender, size)
            or target.queued_bytes + size > config.queue_bytes_per_target
            or self.queued_bytes + size > config.queue_bytes_total
        ):
            dropped = self.dropped_by_sender.get(sender, 0) + 1
            if dropped == 1 and len(self.dropped_by_sender) >= config.max_connections:
                self.dropped_by_sender.clear()  # counters, not state: never grow unbounded
            self.dropped_by_sender[sender] = dropped
            log.warning(
                "frame over its sender's or target's budget dropped",
                extra={"peer": node_id_short(NodeId(sender))},
            )
            return
        target.queue.put(sender, data, size)
        target.queued_bytes += size
        self.queued_bytes += size
        self.forwarded += 1
        target.ready.set()


EnvelopeHandler = Callable[[NodeId, bytes], Awaitable[None]]


class RelayClient:
    """A node's connection to a relayer (see the module docstring)."""

    def __init__(
        self,
        url: str,
        keys: KeyPair,
        on_envelope: EnvelopeHandler,
        *,
        on_connected: Callable[[], None] | None = None,
        config: RelayConfig | None = None,
        rng: random.Random | None = None,
        relayer_id: bytes | None = None,
    ) -> None:
        self.url = url
        self.relayer_id = relayer_id
        """The relayer this client means to reach (None: whichever answers at `url`)."""
        self.keys = keys
        self.on_envelope = on_envelope
        self.on_connected = on_connected
        self.config = config if config is not None else RelayConfig()
        self.rng = rng if rng is not None else random.Random()
        self.connected = False
        self.dropped = 0
        self._queue: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._websocket: Any = None
        self._closing = False

    def start(self) -> None:
        """Begin connecting (and reconnecting) in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="relay client")

    def send(self, peer: bytes | None, payload: bytes) -> None:
        """Queue `payload` for `peer` (None: every node); never blocks, drops oldest."""
        if self._closing:
            return
        while len(self._queue) >= self.config.send_queue_limit:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(RELAY_CODEC.encode(Envelope(peer or b"", payload)))
        self._ready.set()

    async def close(self) -> None:
        """Stop reconnecting and close the connection."""
        self._closing = True
        if self._websocket is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to close politely
                await asyncio.wait_for(self._websocket.close(), self.config.hello_timeout_s)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                await self._session()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.info("relay connection failed", extra={"reason": str(error) or repr(error)})
            if self.connected:
                self.connected = False
                attempt = 0
            ceiling = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2**attempt)
            attempt = min(attempt + 1, 30)
            await asyncio.sleep(self.rng.uniform(ceiling / 2, ceiling))

    async def _session(self) -> None:
        from websockets.asyncio.client import connect

        async with connect(
            self.url, max_size=self.config.max_message_bytes, compression=None, proxy=None
        ) as websocket:
            challenge = RELAY_CODEC.decode(await websocket.recv(decode=False))
            if not isinstance(challenge, Challenge):
                raise DecodeError("the relayer did not send a challenge")
            self._check_challenge(challenge)
            signature = self.keys.sign(HELLO_DOMAIN, hello_transcript(challenge))
            await websocket.send(RELAY_CODEC.encode(Hello(self.keys.node_id, signature)))
            self.connected = True
            self._websocket = websocket
            log.info("connected to relayer", extra={"address": self.url})
            if self.on_connected is not None:
                self.on_connected()
            writer = asyncio.create_task(self._write(websocket))
            try:
                async for data in websocket:
                    await self._received(data)
            finally:
                self._websocket = None
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)

    def _check_challenge(self, challenge: Challenge) -> None:
        if challenge.network != self.config.network:
            raise DecodeError(
                f"the relayer serves network {challenge.network.hex() or '(none)'}, "
                f"this node is in {self.config.network.hex() or '(none)'}"
            )
        if self.relayer_id is not None and challenge.relayer_id != self.relayer_id:
            raise DecodeError("the relayer is not the one this node is configured for")

    async def _write(self, websocket: Any) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                data = self._queue[0]
                await websocket.send(data)
                self._queue.popleft()

    async def _received(self, data: Any) -> None:
        try:
            envelope = RELAY_CODEC.decode(data if isinstance(data, bytes) else b"")
        except DecodeError as error:
            log.debug("undecodable relay frame dropped", extra={"reason": str(error)})
            return
        if not isinstance(envelope, Envelope) or len(envelope.peer) != 32:
            return
        try:
            await self.on_envelope(NodeId(envelope.peer), envelope.payload)
        except Exception:  # the application's bug; the connection keeps serving
            log.exception("envelope handler failed")
