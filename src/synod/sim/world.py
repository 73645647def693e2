"""A discrete-event world that drives sans-I/O cores (TigerBeetle's VOPR, FoundationDB's
simulation).

Theory of operation.  Virtual time is an integer of milliseconds; an event queue ordered
by (time, insertion number) holds message deliveries, timer expiries, inputs and fault
changes.  One `random.Random(seed)` is the only source of randomness: it draws the fault
plan, every latency, loss and duplication, and seeds each node's own RNG.  Nothing here
reads the clock or iterates an unordered set, so one seed gives one history, byte for
byte, in any process.

Each node is a core built by a factory from its persisted storage.  The world applies a
core's `Step` in the contract's order (persist, then send, then timers, then events), and
a crash throws away everything but what was persisted: the core object, its timers and
messages addressed to it while it is down.  A restart builds a new core from the storage
and feeds it `Started`.

Messages cross the network as bytes encoded with the sender's codec and are decoded by
the receiver's codec, so garbage from a Byzantine node meets the same decoder a real
node has.  Links are authenticated: the receiver learns the true sender.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

from synod.core import (
    Broadcast,
    Call,
    CallFailed,
    CancelTimer,
    Core,
    Input,
    Outgoing,
    Received,
    Reply,
    RequestReceived,
    Response,
    Send,
    SetTimer,
    Started,
    Step,
    Storage,
    TimerFired,
)
from synod.crypto import NodeId
from synod.sim.history import History, Record, to_plain
from synod.sim.network import FaultPlan, LatencyModel, Network
from synod.wire import Codec, DecodeError

NodeFactory = Callable[[Storage, random.Random], Core]
"""Builds a node's core from its persisted storage and its own seeded RNG."""

Observer = Callable[[Record], None]
DeliveryKind = Literal["message", "call", "reply"]
NodeRef = int | NodeId
"""A node named by its index (order of `add_node`) or by its id."""

_Kind = TypeVar("_Kind")


@dataclass(frozen=True, slots=True)
class RawBytes:
    """Outgoing payload that is sent as-is, unencoded (Byzantine garbage)."""

    data: bytes


@dataclass(slots=True)
class SimNode:
    node_id: NodeId
    index: int
    factory: NodeFactory
    codec: Codec[Any]
    byzantine: bool
    rng: random.Random
    storage: dict[bytes, bytes] = field(default_factory=dict)
    core: Core | None = None
    timers: dict[str, int] = field(default_factory=dict)
    incarnation: int = 0

    @property
    def up(self) -> bool:
        return self.core is not None


@dataclass(frozen=True, slots=True)
class _Delivery:
    sender: int
    receiver: int
    data: bytes
    kind: DeliveryKind
    request_id: int
    link_sequence: int


@dataclass(frozen=True, slots=True)
class _TimerExpiry:
    node: int
    name: str
    token: int


@dataclass(frozen=True, slots=True)
class _NodeInput:
    node: int
    event: Input


@dataclass(frozen=True, slots=True)
class _CallDeadline:
    node: int
    server: int
    request_id: int


@dataclass(frozen=True, slots=True)
class _Action:
    """A scheduled change to the world itself (fault plan spells, scripted steps)."""

    run: Callable[[], None]
    label: str


_Scheduled = _Delivery | _TimerExpiry | _NodeInput | _CallDeadline | _Action


class World:
    """Virtual time, a seeded RNG, a faulty network and nodes that are cores."""

    def __init__(
        self,
        seed: int,
        *,
        call_timeout_ms: int = 1_000,
        record_messages: bool = False,
        record_events: bool = True,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now_ms = 0
        self.history = History()
        self.call_timeout_ms = call_timeout_ms
        self.record_messages = record_messages
        self.record_events = record_events
        """False keeps events only as objects (`events`, `events_of`): no history record,
        so observers and checkers do not see them.  For benchmarks, where turning large
        events into JSON would cost more than the cores' own work."""
        self.nodes: list[SimNode] = []
        self._by_id: dict[NodeId, SimNode] = {}
        self._queue: list[tuple[int, int, _Scheduled]] = []
        self._counter = 0
        self._observers: list[Observer] = []
        self._pending_calls: set[tuple[int, int, int]] = set()
        self._link_sent: dict[tuple[int, int], int] = {}
        self._link_delivered: dict[tuple[int, int], int] = {}
        self.network = Network((), FaultPlan.calm())
        self.steps = 0
        self.replies: list[tuple[NodeId, Reply]] = []
        """Answers to requests from clients that are not nodes of the world (`input`)."""
        self.events: list[tuple[NodeId, object]] = []
        """Every event a core produced, as the object itself, in the order produced."""

    @classmethod
    def perfect(
        cls,
        seed: int = 0,
        *,
        latency_ms: tuple[int, int] = (1, 1),
        loss_probability: float = 0.0,
        call_timeout_ms: int = 1_000,
        record_events: bool = True,
    ) -> World:
        """A world whose network only delays (and, if asked, loses) messages.

        Each message takes a delay drawn uniformly from `latency_ms` (at least 1 ms), so
        messages overtake each other in an order drawn from `seed`; nothing is duplicated,
        partitioned or crashed unless a test does it (`silence`, `crash`, `restart`).
        """
        low_ms, high_ms = latency_ms
        if not 0 <= low_ms <= high_ms:
            raise ValueError(f"latency range {latency_ms} is not (low, high) with 0 <= low <= high")
        if not 0.0 <= loss_probability < 1.0:
            raise ValueError(f"loss probability {loss_probability} is not in [0, 1)")
        world = cls(seed, call_timeout_ms=call_timeout_ms, record_events=record_events)
        latency = LatencyModel("uniform", base_ms=low_ms, spread_ms=high_ms - low_ms)
        world.network = Network((), FaultPlan(latency=latency, loss_probability=loss_probability))
        return world

    # ------------------------------------------------------------ building

    def add_node(
        self, node_id: NodeId, factory: NodeFactory, codec: Codec[Any], *, byzantine: bool = False
    ) -> None:
        """Add a node; a Byzantine node's factory builds its adversary."""
        if node_id in self._by_id:
            raise ValueError("node added twice")
        node = SimNode(
            node_id=node_id,
            index=len(self.nodes),
            factory=factory,
            codec=codec,
            byzantine=byzantine,
            rng=random.Random(self.rng.getrandbits(64)),
        )
        self.nodes.append(node)
        self._by_id[node_id] = node
        self.network.node_ids = tuple(n.node_id for n in self.nodes)

    def add_nodes(
        self, factories: Mapping[NodeId, NodeFactory], codec: Codec[Any], *, start: bool = True
    ) -> None:
        """Add one correct node per factory (in the mapping's order), started unless asked."""
        for node_id, factory in factories.items():
            self.add_node(node_id, factory, codec)
        if start:
            for node_id in factories:
                self._boot(self._by_id[node_id])

    def use_fault_plan(self, plan: FaultPlan) -> None:
        """Install a fault plan and schedule its partitions and crashes."""
        self.network.plan = plan
        for spell in plan.partitions:
            self.schedule(spell.start_ms, partial(self._partition, spell.blocked), "partition")
            end_ms = spell.start_ms + spell.duration_ms
            self.schedule(end_ms, partial(self._unblock, spell.blocked), "unblock")
        for crash in plan.crashes:
            self.schedule(crash.start_ms, partial(self.crash, crash.node), "crash")
            end_ms = crash.start_ms + crash.duration_ms
            self.schedule(end_ms, partial(self.restart, crash.node), "restart")

    def observe(self, observer: Observer) -> None:
        """Call `observer` with every history record as it is written."""
        self._observers.append(observer)

    def node(self, node: NodeRef) -> SimNode:
        """The node with this index or id."""
        if isinstance(node, int):
            return self.nodes[node]
        found = self._by_id.get(node)
        if found is None:
            raise KeyError(f"no node {bytes(node).hex()[:12]} in this world")
        return found

    def core(self, node: NodeRef, kind: type[_Kind]) -> _Kind:
        """The running core of a node, checked to be a `kind` (raises if it is down)."""
        core = self.node(node).core
        if core is None:
            raise LookupError(f"node {self.node(node).index} is down")
        if not isinstance(core, kind):
            raise TypeError(f"node {self.node(node).index} runs a {type(core).__name__}")
        return core

    def events_of(self, node: NodeRef, kind: type[_Kind]) -> list[_Kind]:
        """The events of type `kind` that a node's cores produced, oldest first."""
        node_id = self.node(node).node_id
        return [
            event
            for source, event in self.events
            if source == node_id and isinstance(event, kind)
        ]

    def correct_nodes(self) -> list[SimNode]:
        return [node for node in self.nodes if not node.byzantine]

    # ------------------------------------------------------------ scheduling

    def schedule(self, at_ms: int, run: Callable[[], None], label: str) -> None:
        self._push(at_ms, _Action(run, label))

    def input_at(self, at_ms: int, node_id: NodeId, event: Input) -> None:
        """Feed `event` to a node at virtual time `at_ms` (dropped if it is down then)."""
        self._push(at_ms, _NodeInput(self._by_id[node_id].index, event))

    def start(self) -> None:
        """Start every node that is not up yet, at the current time."""
        for node in self.nodes:
            if not node.up:
                self._boot(node)

    def input(self, node: NodeRef, event: Input) -> None:
        """Feed `event` to a node now (a local proposal, a client's request)."""
        target = self.node(node)
        if not target.up:
            raise LookupError(f"node {target.index} is down: it takes no input")
        self.record("input", node=target.node_id.hex(), event=to_plain(event))
        self.feed(target, event)

    def apply(self, node: NodeRef, step: Step) -> None:
        """Apply `step` as if the node's core had returned it (scripted Byzantine output)."""
        self._apply(self.node(node), step)

    def _push(self, at_ms: int, item: _Scheduled) -> None:
        self._counter += 1
        heapq.heappush(self._queue, (max(at_ms, self.now_ms), self._counter, item))

    # ------------------------------------------------------------ running

    def step(self) -> bool:
        """Process the next scheduled item; False when nothing is left."""
        if not self._queue:
            return False
        at_ms, _, item = heapq.heappop(self._queue)
        self.now_ms = at_ms
        self.steps += 1
        self._process(item)
        return True

    @property
    def idle(self) -> bool:
        """Nothing is left to do: no message, timer, call deadline, input or fault to come.

        `world.step_until(lambda: world.idle)` runs a world whose cores set no endless
        timers to rest, and says whether it got there within the step budget.
        """
        return not self._queue

    def run_until(self, end_ms: int, *, stop: Callable[[], bool] | None = None) -> bool:
        """Run until virtual time `end_ms`, the queue empties, or `stop()` holds (True)."""
        while self._queue and self._queue[0][0] <= end_ms:
            self.step()
            if stop is not None and stop():
                return True
        self.now_ms = max(self.now_ms, end_ms)
        return stop is not None and stop()

    def step_until(
        self, done: Callable[[], bool], *, max_steps: int = 200_000, max_ms: int | None = None
    ) -> bool:
        """Step until `done()` holds (True), or nothing is left to do, `max_steps` steps were
        taken or virtual time would pass `max_ms` (False unless `done()` holds then)."""
        for _ in range(max_steps):
            if done():
                return True
            if not self._queue or (max_ms is not None and self._queue[0][0] > max_ms):
                break
            self.step()
        return done()

    def silence(self, node: NodeRef) -> None:
        """Cut a node off: it neither sends nor receives until `unsilence` or `heal`."""
        self.network.silenced.add(self.node(node).index)
        self.record("silence", node=self.node(node).node_id.hex())

    def unsilence(self, node: NodeRef) -> None:
        self.network.silenced.discard(self.node(node).index)
        self.record("unsilence", node=self.node(node).node_id.hex())

    def heal(self) -> None:
        """End every fault: unblock all links, stop loss and duplication, restart nodes.

        Scheduled fault spells that have not happened yet are cancelled.
        """
        self._queue = [
            entry
            for entry in self._queue
            if not (isinstance(entry[2], _Action) and entry[2].label in _FAULT_LABELS)
        ]
        heapq.heapify(self._queue)
        self.network.blocked.clear()
        self.network.silenced.clear()
        self.network.healed = True
        self.record("heal")
        for node in self.nodes:
            if not node.up:
                self.restart(node.index)

    def _process(self, item: _Scheduled) -> None:
        match item:
            case _Delivery():
                self._deliver(item)
            case _TimerExpiry(node=index, name=name, token=token):
                node = self.nodes[index]
                if node.up and node.timers.get(name) == token:
                    del node.timers[name]
                    self.feed(node, TimerFired(name))
            case _NodeInput(node=index, event=event):
                node = self.nodes[index]
                if node.up:
                    self.record("input", node=node.node_id.hex(), event=to_plain(event))
                    self.feed(node, event)
                else:
                    self.record("input lost", node=node.node_id.hex(), event=to_plain(event))
            case _CallDeadline(node=index, server=server, request_id=request_id):
                self._call_deadline(index, server, request_id)
            case _Action(run=run):
                run()

    # ------------------------------------------------------------ nodes

    def feed(self, node: SimNode, event: Input) -> None:
        """Hand one input to a node's core and apply the resulting step."""
        assert node.core is not None, "feeding a node that is down"
        step = node.core.handle(event, self.now_ms)
        self._apply(node, step)

    def _apply(self, node: SimNode, step: Step) -> None:
        for record in step.persist:
            if record.value is None:
                node.storage.pop(record.key, None)
            else:
                node.storage[record.key] = record.value
        incarnation = node.incarnation
        for outgoing in step.outgoing:
            self._send(node, outgoing)
        for command in step.timers:
            self._timer(node, command)
        for event in step.events:
            self.events.append((node.node_id, event))
            if self.record_events:
                self.record("event", node=node.node_id.hex(), event=to_plain(event))
        assert node.incarnation == incarnation, "a node crashed while applying its own step"

    def _boot(self, node: SimNode) -> None:
        node.core = node.factory(dict(node.storage), node.rng)
        assert node.core.node_id == node.node_id, "factory built a core with another identity"
        self.feed(node, Started())

    def crash(self, index: NodeRef) -> None:
        """Crash a node: it keeps exactly what it persisted."""
        node = self.node(index)
        if not node.up:
            return
        node.core = None
        node.timers.clear()
        node.incarnation += 1
        self.record("crash", node=node.node_id.hex())

    def restart(self, index: NodeRef, factory: NodeFactory | None = None) -> None:
        """Rebuild a crashed node from its persisted records and start it.

        With `factory`, the node is rebuilt by it from now on (an upgraded or Byzantine core).
        """
        node = self.node(index)
        if node.up:
            return
        if factory is not None:
            node.factory = factory
        self.record("restart", node=node.node_id.hex())
        self._boot(node)

    def _timer(self, node: SimNode, command: SetTimer | CancelTimer) -> None:
        if isinstance(command, CancelTimer):
            node.timers.pop(command.name, None)
            return
        if command.delay_ms < 0:
            raise ValueError(f"negative timer delay {command.delay_ms}")
        self._counter += 1
        token = self._counter
        node.timers[command.name] = token
        self._push(self.now_ms + command.delay_ms, _TimerExpiry(node.index, command.name, token))

    # ------------------------------------------------------------ network

    def _send(self, node: SimNode, outgoing: Outgoing) -> None:
        match outgoing:
            case Send(to=to, message=message):
                self._transmit(node, self._index_of(to), message, "message", 0)
            case Broadcast(message=message):
                for other in self.nodes:
                    if other.index != node.index:
                        self._transmit(node, other.index, message, "message", 0)
            case Reply(client=client, request_id=request_id, body=body):
                receiver = self._client_node(client)
                if receiver is None:
                    # a request fed by the test itself (`input`): the answer is kept here
                    self.replies.append((node.node_id, outgoing))
                    self.record("reply", node=node.node_id.hex(), client=client)
                    return
                self._transmit(node, receiver, body, "reply", request_id)
            case Call(to=to, request_id=request_id, body=body):
                server = self._index_of(to)
                self._pending_calls.add((node.index, server, request_id))
                self._push(
                    self.now_ms + self.call_timeout_ms,
                    _CallDeadline(node.index, server, request_id),
                )
                self._transmit(node, server, body, "call", request_id)

    def _index_of(self, node_id: NodeId) -> int:
        node = self._by_id.get(node_id)
        if node is None:
            raise ValueError(f"message addressed to unknown node {bytes(node_id).hex()[:12]}")
        return node.index

    def _client_node(self, client: str) -> int | None:
        """The node a client id names (its hex id), or None for a client outside the world."""
        try:
            node = self._by_id.get(NodeId(bytes.fromhex(client)))
        except ValueError:
            return None
        return None if node is None else node.index

    def _transmit(
        self, node: SimNode, receiver: int, message: object, kind: DeliveryKind, request_id: int
    ) -> None:
        data = message.data if isinstance(message, RawBytes) else node.codec.encode(message)
        link = (node.index, receiver)
        if self.record_messages:
            self.record("send", link=list(link), via=kind, bytes=data.hex())
        if self.network.is_blocked(*link):
            self.record("drop", link=list(link), reason="partition")
            return
        if self.network.lose(self.rng):
            self.record("drop", link=list(link), reason="loss")
            return
        copies = 2 if self.network.duplicate(self.rng) else 1
        if copies == 2:
            self.record("duplicate", link=list(link))
        for _ in range(copies):
            sequence = self._link_sent.get(link, 0) + 1
            self._link_sent[link] = sequence
            delay = self.network.delay_ms(self.rng, *link)
            delivery = _Delivery(node.index, receiver, data, kind, request_id, sequence)
            self._push(self.now_ms + delay, delivery)

    def _deliver(self, delivery: _Delivery) -> None:
        link = (delivery.sender, delivery.receiver)
        receiver = self.nodes[delivery.receiver]
        if self.network.is_blocked(*link):
            self.record("drop", link=list(link), reason="partition")
            return
        if not receiver.up:
            self.record("drop", link=list(link), reason="receiver down")
            return
        if delivery.link_sequence < self._link_delivered.get(link, 0):
            self.record("reorder", link=list(link))
        self._link_delivered[link] = max(self._link_delivered.get(link, 0), delivery.link_sequence)
        try:
            message = receiver.codec.decode(delivery.data)
        except DecodeError as error:
            self.record("undecodable", link=list(link), error=str(error)[:120])
            return
        if self.record_messages:
            self.record("deliver", link=list(link), via=delivery.kind)
        self.feed(receiver, self._input_for(delivery, message))

    def _input_for(self, delivery: _Delivery, message: object) -> Input:
        sender = self.nodes[delivery.sender].node_id
        if delivery.kind == "call":
            return RequestReceived(sender.hex(), delivery.request_id, message)
        if delivery.kind == "reply":
            self._pending_calls.discard((delivery.receiver, delivery.sender, delivery.request_id))
            return Response(sender, delivery.request_id, message)
        return Received(sender, message)

    def _call_deadline(self, index: int, server: int, request_id: int) -> None:
        key = (index, server, request_id)
        if key not in self._pending_calls:
            return
        self._pending_calls.discard(key)
        node = self.nodes[index]
        if node.up:
            self.feed(node, CallFailed(self.nodes[server].node_id, request_id, "timeout"))

    def _partition(self, blocked: Iterable[tuple[int, int]]) -> None:
        links = sorted(blocked)
        self.network.blocked.update(links)
        self.record("partition", links=[list(link) for link in links])

    def _unblock(self, blocked: Iterable[tuple[int, int]]) -> None:
        links = sorted(blocked)
        self.network.blocked.difference_update(links)
        self.record("unblock", links=[list(link) for link in links])

    # ------------------------------------------------------------ history

    def record(self, kind: str, **fields: Any) -> None:
        record: Record = {"t": self.now_ms, "kind": kind, **fields}
        self.history.append(record)
        for observer in self._observers:
            observer(record)


_FAULT_LABELS = frozenset({"partition", "unblock", "crash", "restart"})
