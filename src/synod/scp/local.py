"""An in-process, deterministic network of SCP cores: for examples, tests and notebooks.

`LocalNetwork` is the smallest possible driver of `synod.core.Core`s: it applies each
step in the contract's order (persist into an in-memory store, then queue the messages,
then set timers, then record events), delivers queued messages one at a time in an
order drawn from a seeded `random.Random` (each message may take a random latency), and
advances a virtual clock to whatever is due next: a message or a timer.  Messages pass
through the wire codec, so what a node receives is what a real peer would decode.

Nodes can be silenced (they neither send nor receive), crashed and rebuilt from what
they persisted, and messages can be lost at random (`drop_probability`).  There is no
fault model beyond that; `synod.sim` is the simulator with faults and Byzantine nodes.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synod.core import Broadcast, Received, Send, SetTimer, Started, Step, TimerFired
from synod.crypto import NodeId
from synod.scp.application import Externalized
from synod.scp.core import ScpCore
from synod.scp.messages import CODEC


@dataclass(order=True)
class _InFlight:
    deliver_at_ms: int
    tiebreak: float
    sender: NodeId = field(compare=False)
    receiver: NodeId = field(compare=False)
    payload: bytes = field(compare=False)


@dataclass
class LocalNetwork:
    """Cores connected by reliable, reordering links and driven by a virtual clock."""

    cores: dict[NodeId, ScpCore]
    seed: int = 0
    now_ms: int = 0
    storage: dict[NodeId, dict[bytes, bytes]] = field(default_factory=dict)
    events: list[tuple[NodeId, Any]] = field(default_factory=list)
    silent: set[NodeId] = field(default_factory=set)
    messages_delivered: int = 0
    drop_probability: float = 0.0
    """Chance that a sent message is lost (drawn from the seeded generator)."""
    latency_ms: tuple[int, int] = (0, 0)
    """Each message takes a delay drawn uniformly from this range; messages due at the
    same time are delivered in random order."""

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._in_flight: list[_InFlight] = []
        self._timers: dict[tuple[NodeId, str], int] = {}
        for node in self.cores:
            self.storage.setdefault(node, {})

    # ------------------------------------------------------------ driving

    def apply(self, node: NodeId, step: Step) -> None:
        """Apply one core's step: persist, send, set timers, record events."""
        store = self.storage[node]
        for record in step.persist:
            if record.value is None:
                store.pop(record.key, None)
            else:
                store[record.key] = record.value
        if node not in self.silent:
            for outgoing in step.outgoing:
                if isinstance(outgoing, Broadcast):
                    for peer in self.cores:
                        if peer != node:
                            self._queue(node, peer, outgoing.message)
                elif isinstance(outgoing, Send):
                    self._queue(node, outgoing.to, outgoing.message)
        for timer in step.timers:
            if isinstance(timer, SetTimer):
                self._timers[(node, timer.name)] = self.now_ms + timer.delay_ms
            else:
                self._timers.pop((node, timer.name), None)
        self.events.extend((node, event) for event in step.events)

    def handle(self, node: NodeId, event: Any) -> None:
        """Give `event` to `node` now and apply what it returns."""
        self.apply(node, self.cores[node].handle(event, self.now_ms))

    def _queue(self, sender: NodeId, receiver: NodeId, message: Any) -> None:
        if receiver in self.cores and receiver not in self.silent:
            if self.drop_probability and self._random.random() < self.drop_probability:
                return
            delay_ms = self._random.randint(*self.latency_ms)
            heapq.heappush(
                self._in_flight,
                _InFlight(
                    self.now_ms + delay_ms,
                    self._random.random(),
                    sender,
                    receiver,
                    CODEC.encode(message),
                ),
            )

    def run_once(self) -> bool:
        """Deliver the next message or fire the next timer, whichever is due first;
        False when nothing is left."""
        next_timer = min(self._timers.items(), key=lambda item: item[1], default=None)
        if self._in_flight and (
            next_timer is None or self._in_flight[0].deliver_at_ms <= next_timer[1]
        ):
            message = heapq.heappop(self._in_flight)
            self.now_ms = max(self.now_ms, message.deliver_at_ms)
            self.messages_delivered += 1
            self.handle(message.receiver, Received(message.sender, message.payload))
            return True
        if next_timer is None:
            return False
        (node, name), fire_at_ms = next_timer
        del self._timers[(node, name)]
        self.now_ms = max(self.now_ms, fire_at_ms)
        if node not in self.silent:
            self.handle(node, TimerFired(name))
        return True

    def run_until(self, done: Callable[[], bool], *, max_actions: int = 200_000) -> bool:
        """Run until `done()` holds (True) or nothing is left or the budget ends (False)."""
        for _ in range(max_actions):
            if done():
                return True
            if not self.run_once():
                return done()
        return done()

    # ------------------------------------------------------------ faults

    def crash_and_restart(
        self, node: NodeId, rebuild: Callable[[dict[bytes, bytes]], ScpCore]
    ) -> None:
        """Drop the node's volatile state and timers; rebuild it from what it persisted."""
        self._timers = {key: due for key, due in self._timers.items() if key[0] != node}
        self._in_flight = [message for message in self._in_flight if message.receiver != node]
        heapq.heapify(self._in_flight)
        self.cores[node] = rebuild(dict(self.storage[node]))
        self.handle(node, Started())

    # ------------------------------------------------------------ results

    def externalized(self, node: NodeId) -> dict[int, bytes]:
        """Slot -> value for every `Externalized` event `node` produced."""
        return {
            event.slot_index: event.value
            for source, event in self.events
            if source == node and isinstance(event, Externalized)
        }
