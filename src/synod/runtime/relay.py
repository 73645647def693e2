"""Websocket relay: an untrusted forwarder between BFT-CRDT nodes, and the node's client.

Theory of operation (Kleppmann, *Making CRDTs Byzantine Fault Tolerant*, PaPoC 2022,
section 2: a relay server that nodes need not trust).  Nodes that cannot reach each other
directly each keep one websocket open to a relayer; the relayer forwards frames and
nothing else.  It holds no key that matters for safety and keeps no state beyond its
connections: updates are signed by their authors and named by hash, so whatever the
relayer drops, reorders, replays or alters, a node only ever applies genuine, valid
updates, and the periodic heads announcements repair what was lost.

*Protocol* (binary websocket messages, MessagePack through `RELAY_CODEC`):

1. relayer -> node: ``Challenge(nonce)``, 32 fresh random bytes;
2. node -> relayer: ``Hello(node_id, signature)``, the node's signature over the domain
   tag ``synod/relay/hello/v1`` and the nonce.  The relayer only checks it so that one
   client cannot take over another's address (which would only hurt liveness); a newer
   connection of the same node replaces the older one;
3. then ``Envelope(peer, payload)`` both ways: from a node, `peer` is the recipient
   (empty: every other connected node); from the relayer, `peer` is the sender as the
   relayer saw it.  The payload is opaque to the relayer (a `synod.crdt` message).

*Bounds.*  Websocket messages are capped at `RelayConfig.max_message_bytes`; each
connection has a bounded send queue that drops its **oldest** frames when full, so a
slow reader never blocks the others; a client that does not say hello within
`hello_timeout_s` is disconnected.

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
from synod.wire import Bytes32, Codec, DecodeError, Message, Signature

log = logging.getLogger("synod.runtime.relay")

HELLO_DOMAIN = b"synod/relay/hello/v1"
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
MAX_HELD_FRAMES = 8
PeerBytes = Annotated[bytes, msgspec.Meta(max_length=32)]
Payload = Annotated[bytes, msgspec.Meta(max_length=MAX_PAYLOAD_BYTES)]


class Challenge(Message, frozen=True, tag="challenge"):
    """The relayer's fresh nonce, to be signed by the connecting node."""

    nonce: Bytes32


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
    hello_timeout_s: float = 5.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 2.0


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
    """One node's websocket at the relayer, with its bounded send queue."""

    def __init__(self, node_id: NodeId, websocket: Any, limit: int) -> None:
        self.node_id = node_id
        self.websocket = websocket
        self.queue: deque[bytes] = deque()
        self.limit = limit
        self.ready = asyncio.Event()
        self.dropped = 0
        self.memory: deque[Envelope] = deque(maxlen=64)
        self.held: list[Envelope] = []

    def enqueue(self, data: bytes) -> None:
        while len(self.queue) >= self.limit:
            self.queue.popleft()
            self.dropped += 1
        self.queue.append(data)
        self.ready.set()

    async def pump(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            while self.queue:
                await self.websocket.send(self.queue.popleft())


class Relayer:
    """The websocket relayer: authenticates nothing that matters, forwards everything."""

    def __init__(self, config: RelayConfig | None = None, tamper: TamperPolicy | None = None):
        self.config = config if config is not None else RelayConfig()
        self.tamper = tamper
        self.connections: dict[NodeId, _Connection] = {}
        self.forwarded = 0
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
        node_id = await self._greet(websocket)
        if node_id is None:
            return
        connection = _Connection(node_id, websocket, self.config.send_queue_limit)
        previous = self.connections.get(node_id)
        self.connections[node_id] = connection
        if previous is not None:
            await previous.websocket.close()
        pump = asyncio.create_task(connection.pump())
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
            if self.connections.get(node_id) is connection:
                del self.connections[node_id]

    async def _greet(self, websocket: Any) -> NodeId | None:
        nonce = os.urandom(32)
        try:
            await websocket.send(RELAY_CODEC.encode(Challenge(nonce)))
            data = await asyncio.wait_for(websocket.recv(), self.config.hello_timeout_s)
            hello = RELAY_CODEC.decode(data if isinstance(data, bytes) else b"")
        except Exception as error:  # timeouts, closed sockets, undecodable hellos
            log.info("handshake failed", extra={"reason": str(error) or type(error).__name__})
            await websocket.close()
            return None
        if not isinstance(hello, Hello) or not verify(
            hello.node_id, HELLO_DOMAIN, nonce, hello.signature
        ):
            log.info("handshake refused", extra={"reason": "not a valid hello"})
            await websocket.close()
            return None
        return NodeId(hello.node_id)

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
        for target in targets:
            frames = [outgoing]
            if self.tamper is not None:
                frames = self.tamper.apply(outgoing, target.memory, target.held)
            for frame in frames:
                target.enqueue(RELAY_CODEC.encode(frame))
                self.forwarded += 1


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
    ) -> None:
        self.url = url
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
            signature = self.keys.sign(HELLO_DOMAIN, challenge.nonce)
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
