"""Shared fixtures for the CRDT tests: replicas with fixed keys and an in-memory network."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from synod.core import Broadcast, Received, Send, Step
from synod.crdt.messages import CODEC
from synod.crdt.replica import Replica, ReplicaConfig
from synod.crypto import KeyPair


def keys_for(seed: int) -> KeyPair:
    return KeyPair.from_seed(seed.to_bytes(32, "big"))


class LoopNetwork:
    """Carries replicas' messages through the codec, in FIFO order or shuffled by `rng`.

    `tamper(sender, to, bytes) -> bytes | None` plays an untrusted relay: it may alter or
    drop (None) each encoded message.
    """

    def __init__(
        self,
        replicas: list[Replica],
        rng: random.Random | None = None,
        tamper: Callable[[bytes, bytes, bytes], bytes | None] | None = None,
    ) -> None:
        self.replicas = {replica.node_id: replica for replica in replicas}
        self.queue: deque[tuple[bytes, bytes, bytes]] = deque()
        self.rng = rng
        self.tamper = tamper
        self.events: dict[bytes, list[Any]] = {node: [] for node in self.replicas}
        self.storage: dict[bytes, dict[bytes, bytes]] = {node: {} for node in self.replicas}
        self.delivered = 0

    def absorb(self, sender: bytes, step: Step) -> None:
        """Apply a step's outputs: persist, queue messages, keep events."""
        for record in step.persist:
            if record.value is None:
                self.storage[sender].pop(record.key, None)
            else:
                self.storage[sender][record.key] = record.value
        for out in step.outgoing:
            encoded = CODEC.encode(out.message)
            if isinstance(out, Broadcast):
                targets = [node for node in self.replicas if node != sender]
            else:
                assert isinstance(out, Send)
                targets = [out.to] if out.to in self.replicas else []
            for target in targets:
                self.queue.append((sender, target, encoded))
        self.events[sender].extend(step.events)

    def run(self, max_messages: int = 100_000) -> int:
        """Deliver until no message is left; returns how many were delivered."""
        count = 0
        while self.queue:
            assert count < max_messages, "reconciliation did not settle"
            if self.rng is not None:
                index = self.rng.randrange(len(self.queue))
                self.queue.rotate(-index)
            sender, target, encoded = self.queue.popleft()
            if self.tamper is not None:
                altered = self.tamper(sender, target, encoded)
                if altered is None:
                    continue
                encoded = altered
            count += 1
            try:
                message = CODEC.decode(encoded)
            except Exception:  # undecodable frames never reach a core
                continue
            step = self.replicas[target].handle(Received(sender, message), 0)  # type: ignore[arg-type]
            self.absorb(target, step)
        self.delivered += count
        return count

    def announce_all(self) -> None:
        """Every replica announces its heads (what the periodic timer does)."""
        from synod.core import TimerFired
        from synod.crdt.replica import ANNOUNCE_TIMER

        for node, replica in self.replicas.items():
            self.absorb(node, replica.handle(TimerFired(ANNOUNCE_TIMER), 0))


@pytest.fixture(scope="session")
def make_replica() -> Callable[..., Replica]:
    def make(seed: int, **config: Any) -> Replica:
        return Replica(keys_for(seed), config=ReplicaConfig(**config))

    return make


@pytest.fixture(scope="session")
def network() -> type[LoopNetwork]:
    return LoopNetwork
