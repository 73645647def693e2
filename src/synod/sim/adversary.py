"""Byzantine nodes: an honest core inside, its output corrupted on the way out.

A Byzantine node runs the real protocol core (so that what it sends is plausible and
well timed), then passes every outgoing message through its behaviours.  The generic
behaviours need no knowledge of the protocol:

- `Withhold`: drop messages (probability 1 is a silent node);
- `Replay`: also send old messages this node received or sent before;
- `Garbage`: send random bytes or a bit-flipped encoding instead of the message;
- `Equivocate`: split a broadcast into per-recipient messages, each passed through a
  protocol-specific `mutate` function (different values to different peers, forged
  fields, votes for things never proposed).

Links are authenticated, so an adversary cannot make a message appear to come from
another node; what it forges inside messages must get past the receivers' signature and
validity checks.  All randomness comes from the node's seeded RNG.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from synod.core import Broadcast, Core, Input, Outgoing, Received, Send, Step
from synod.crypto import NodeId
from synod.sim.world import RawBytes
from synod.wire import Codec

Mutator = Callable[[Any, random.Random, NodeId], Any]
"""Protocol-specific corruption: (message, rng, recipient) -> message to send instead."""

REPLAY_MEMORY = 256


@dataclass(slots=True)
class AdversaryContext:
    node_id: NodeId
    peers: tuple[NodeId, ...]
    rng: random.Random
    codec: Codec[Any]
    seen: list[Any] = field(default_factory=list)

    def remember(self, message: Any) -> None:
        if len(self.seen) >= REPLAY_MEMORY:
            del self.seen[self.rng.randrange(len(self.seen))]
        self.seen.append(message)


class Behaviour(Protocol):
    @property
    def name(self) -> str: ...

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]: ...


@dataclass(frozen=True, slots=True)
class Withhold:
    probability: float = 1.0
    name: str = "withhold"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        return [] if context.rng.random() < self.probability else [outgoing]


@dataclass(frozen=True, slots=True)
class Replay:
    probability: float = 0.3
    name: str = "replay"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        result = [outgoing]
        if context.seen and context.rng.random() < self.probability:
            old = context.seen[context.rng.randrange(len(context.seen))]
            result.append(Broadcast(old))
        return result


@dataclass(frozen=True, slots=True)
class Garbage:
    probability: float = 0.3
    name: str = "garbage"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        if context.rng.random() >= self.probability or not isinstance(outgoing, Send | Broadcast):
            return [outgoing]
        if not context.peers:  # a network of one node: no one to send garbage to
            return [outgoing]
        recipient = context.peers[context.rng.randrange(len(context.peers))]
        if context.rng.random() < 0.5:
            data = context.rng.randbytes(context.rng.randint(0, 64))
        else:
            data = _flip_bits(context.codec.encode(outgoing.message), context.rng)
        return [outgoing, Send(recipient, RawBytes(data))]


@dataclass(frozen=True, slots=True)
class Equivocate:
    mutate: Mutator
    probability: float = 1.0
    name: str = "equivocate"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        if not isinstance(outgoing, Broadcast) or context.rng.random() >= self.probability:
            return [outgoing]
        return [
            Send(peer, self.mutate(outgoing.message, context.rng, peer)) for peer in context.peers
        ]


def _flip_bits(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return b"\xff"
    mutable = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        position = rng.randrange(len(mutable))
        mutable[position] ^= 1 << rng.randrange(8)
    return bytes(mutable)


class ByzantineCore:
    """A `Core` that runs `inner` and corrupts its output with `behaviours`."""

    def __init__(
        self,
        inner: Core,
        peers: Sequence[NodeId],
        rng: random.Random,
        codec: Codec[Any],
        behaviours: Sequence[Behaviour],
    ) -> None:
        self._inner = inner
        self._behaviours = tuple(behaviours)
        others = tuple(peer for peer in peers if peer != inner.node_id)
        self._context = AdversaryContext(inner.node_id, others, rng, codec)

    @property
    def node_id(self) -> NodeId:
        return self._inner.node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        if isinstance(event, Received):
            self._context.remember(event.message)
        honest = self._inner.handle(event, now_ms)
        outgoing: list[Outgoing] = list(honest.outgoing)
        for behaviour in self._behaviours:
            transformed: list[Outgoing] = []
            for item in outgoing:
                transformed.extend(behaviour.transform(item, self._context))
            outgoing = transformed
        for item in honest.outgoing:
            if isinstance(item, Send | Broadcast):
                self._context.remember(item.message)
        return Step(outgoing=outgoing, timers=list(honest.timers))
