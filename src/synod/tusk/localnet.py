"""A deterministic in-memory world for Tusk cores and drivers (no I/O, seeded).

It plays the part the runtime plays in production, in one thread and virtual time:
every request from a driver and every answer from a core travels with a latency drawn
by the seeded `random.Random` (1 to `max_latency_ms`), so messages overtake each other
in a reproducible way; each `step` delivers the earliest message or fires the earliest
driver timer, and virtual time moves to it.
Every message crosses the wire codec, so what travels is exactly what could be encoded.
Each core step is applied in the contract's order: persist, then reply, then events.

After every step the world checks the Tusk safety property on the `Committed` events:
each core delivers consecutive sequence numbers, and every two cores' sequences are
one a prefix of the other (all are prefixes of the longest).  A violation raises
`SafetyViolation` at the step that caused it.  Faults: crash and restart of a core
(rebuilt from exactly what it persisted), restart of a driver (empty), Byzantine
drivers and wrapped Byzantine cores supplied by the caller.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from synod.core import (
    Call,
    CallFailed,
    Core,
    Persist,
    Reply,
    RequestReceived,
    Response,
    SetTimer,
    Started,
    Step,
    TimerFired,
)
from synod.crypto import KeyPair, NodeId
from synod.quorum.committee import Committee
from synod.tusk.core import Committed, TuskConfig, TuskCore
from synod.tusk.driver import Driver
from synod.tusk.messages import CODEC, CoreAnswer, RefusalReason, SubmitAnswer, SubmitRequest


class SafetyViolation(AssertionError):
    """Two cores delivered different certificates at one position of the order."""


@dataclass(frozen=True, slots=True)
class _InFlightRequest:
    driver_index: int
    call: Call
    encoded: bytes


@dataclass(frozen=True, slots=True)
class _InFlightAnswer:
    driver_index: int
    server: NodeId
    request_id: int
    encoded: bytes


@dataclass(frozen=True, slots=True)
class _InFlightFailure:
    driver_index: int
    server: NodeId
    request_id: int


_InFlight = _InFlightRequest | _InFlightAnswer | _InFlightFailure


class LocalNet:
    """Cores and drivers exchanging requests in a seeded, deterministic loop."""

    def __init__(
        self,
        keys: Sequence[KeyPair],
        drivers: Sequence[Driver],
        rng: random.Random,
        *,
        config: TuskConfig | None = None,
        max_latency_ms: int = 10,
    ) -> None:
        if max_latency_ms < 1:
            raise ValueError("max_latency_ms must be at least 1")
        self.max_latency_ms = max_latency_ms
        self.committee = Committee.equal_weights(key.node_id for key in keys)
        self.config = config or TuskConfig()
        self.rng = rng
        self.keys = {key.node_id: key for key in keys}
        self.storages: dict[NodeId, dict[bytes, bytes]] = {key.node_id: {} for key in keys}
        self.cores: dict[NodeId, Core | None] = {
            key.node_id: TuskCore(key, self.committee, config=self.config) for key in keys
        }
        self.drivers: list[Driver] = list(drivers)
        self.committed: dict[NodeId, list[Committed]] = {key.node_id: [] for key in keys}
        self.agreed: list[bytes] = []
        self.now_ms = 0
        self.steps = 0
        self._in_flight: list[tuple[int, int, _InFlight]] = []  # heap: (due_ms, number, item)
        self._sent = 0
        self._timers: dict[tuple[int, str], int] = {}
        self.on_event: Callable[[NodeId, Any], None] | None = None
        self.refusals: Counter[RefusalReason] = Counter()
        """How often cores refused carried items, by reason (shows what drivers tried)."""

    # ------------------------------------------------------------ control

    def start(self) -> None:
        """Start every driver (cores are passive: they need no start)."""
        for index in range(len(self.drivers)):
            self._apply_driver_step(index, self.drivers[index].handle(Started(), self.now_ms))

    def run(self, max_steps: int, until: Callable[[LocalNet], bool] | None = None) -> bool:
        """Step until `until(self)` holds (True) or `max_steps` pass (False)."""
        for _ in range(max_steps):
            if until is not None and until(self):
                return True
            if not self.step():
                break
        return until is not None and until(self)

    def step(self) -> bool:
        """Deliver one message, or fire the next timer; False when nothing is left."""
        self.steps += 1
        timer = min(self._timers.items(), key=lambda entry: entry[1], default=None)
        if self._in_flight and (timer is None or self._in_flight[0][0] <= timer[1]):
            due_ms, _, item = heapq.heappop(self._in_flight)
            self.now_ms = max(self.now_ms, due_ms)
            self._deliver(item)
            return True
        if timer is None:
            return False
        (index, name), fire_at_ms = timer
        del self._timers[(index, name)]
        self.now_ms = max(self.now_ms, fire_at_ms)
        self._apply_driver_step(index, self.drivers[index].handle(TimerFired(name), self.now_ms))
        return True

    def _send(self, item: _InFlight) -> None:
        due_ms = self.now_ms + self.rng.randint(1, self.max_latency_ms)
        self._sent += 1
        heapq.heappush(self._in_flight, (due_ms, self._sent, item))

    def crash(self, node: NodeId) -> None:
        """Stop a core: it keeps what it persisted, requests to it fail."""
        self.cores[node] = None
        lost = [
            entry
            for entry in self._in_flight
            if isinstance(entry[2], _InFlightRequest) and entry[2].call.to == node
        ]
        self._in_flight = [entry for entry in self._in_flight if entry not in lost]
        heapq.heapify(self._in_flight)
        for _, _, item in lost:
            assert isinstance(item, _InFlightRequest)
            self._send(_InFlightFailure(item.driver_index, node, item.call.request_id))

    def restart(self, node: NodeId) -> TuskCore:
        """Rebuild a crashed core from exactly its persisted records."""
        core = TuskCore(
            self.keys[node], self.committee, dict(self.storages[node]), config=self.config
        )
        self.cores[node] = core
        return core

    def replace_core(self, node: NodeId, core: Core) -> None:
        """Put another implementation (a Byzantine one, say) in `node`'s place."""
        self.cores[node] = core

    def restart_driver(self, index: int, driver: Driver) -> None:
        """Replace a driver by a fresh one: what the old one had in flight is lost."""
        self._in_flight = [entry for entry in self._in_flight if entry[2].driver_index != index]
        heapq.heapify(self._in_flight)
        self._timers = {key: when for key, when in self._timers.items() if key[0] != index}
        self.drivers[index] = driver
        self._apply_driver_step(index, driver.handle(Started(), self.now_ms))

    def submit(self, node: NodeId, transactions: Sequence[bytes]) -> SubmitAnswer:
        """A client hands transactions to one core (answered at once)."""
        core = self.cores[node]
        if core is None:
            raise RuntimeError("that core is down")
        body = CODEC.decode(CODEC.encode(SubmitRequest(transactions=tuple(transactions))))
        step = core.handle(RequestReceived("client", 0, body), self.now_ms)
        self._apply_core_effects(node, step)
        replies = [out for out in step.outgoing if isinstance(out, Reply)]
        assert len(replies) == 1
        answer = replies[0].body
        assert isinstance(answer, SubmitAnswer)
        return answer

    def delivered_transactions(self, node: NodeId) -> list[bytes]:
        """The transactions `node` delivered, in order."""
        return [tx for event in self.committed[node] for tx in event.transactions]

    # ------------------------------------------------------------ delivery

    def _deliver(self, item: _InFlight) -> None:
        if isinstance(item, _InFlightFailure):
            failed = CallFailed(item.server, item.request_id, "core down")
            self._apply_driver_step(
                item.driver_index, self.drivers[item.driver_index].handle(failed, self.now_ms)
            )
        elif isinstance(item, _InFlightAnswer):
            response = Response(item.server, item.request_id, CODEC.decode(item.encoded))
            driver = self.drivers[item.driver_index]
            self._apply_driver_step(item.driver_index, driver.handle(response, self.now_ms))
        else:
            self._deliver_request(item)

    def _deliver_request(self, item: _InFlightRequest) -> None:
        node = item.call.to
        core = self.cores.get(node)
        if core is None:
            self._send(_InFlightFailure(item.driver_index, node, item.call.request_id))
            return
        client = self.drivers[item.driver_index].name
        request = RequestReceived(client, item.call.request_id, CODEC.decode(item.encoded))
        step = core.handle(request, self.now_ms)
        self._apply_core_effects(node, step)
        for out in step.outgoing:
            assert isinstance(out, Reply), "a passive core only replies"
            if isinstance(out.body, CoreAnswer):
                self.refusals.update(refusal.reason for refusal in out.body.refusals)
            self._send(
                _InFlightAnswer(item.driver_index, node, out.request_id, CODEC.encode(out.body))
            )

    def _apply_core_effects(self, node: NodeId, step: Step) -> None:
        assert not step.timers, "a passive core sets no timers"
        self._persist(node, step.persist)
        for event in step.events:
            if isinstance(event, Committed):
                self._check_committed(node, event)
            if self.on_event is not None:
                self.on_event(node, event)

    def _persist(self, node: NodeId, records: list[Persist]) -> None:
        storage = self.storages[node]
        for record in records:
            if record.value is None:
                storage.pop(record.key, None)
            else:
                storage[record.key] = record.value

    def _check_committed(self, node: NodeId, event: Committed) -> None:
        log = self.committed[node]
        if event.sequence != len(log):
            raise SafetyViolation(
                f"core {node.hex()[:8]} delivered position {event.sequence} after {len(log)}"
            )
        log.append(event)
        if event.sequence < len(self.agreed):
            if self.agreed[event.sequence] != event.digest:
                raise SafetyViolation(
                    f"core {node.hex()[:8]} delivered a different certificate at position "
                    f"{event.sequence} (step {self.steps})"
                )
        else:
            self.agreed.append(event.digest)

    def _apply_driver_step(self, index: int, step: Step) -> None:
        for out in step.outgoing:
            if not isinstance(out, Call):
                raise AssertionError(f"a driver only calls cores, got {out!r}")
            self._send(_InFlightRequest(index, out, CODEC.encode(out.body)))
        for timer in step.timers:
            if isinstance(timer, SetTimer):
                self._timers[(index, timer.name)] = self.now_ms + timer.delay_ms
            else:
                self._timers.pop((index, timer.name), None)
