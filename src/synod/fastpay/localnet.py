"""An in-memory, deterministic driver for FastPay cores (tests, examples, benchmarks).

Theory of operation.  `LocalNetwork` plays the part that `synod.runtime` plays on real
machines, following the `synod.core` ordering contract: a core's `Persist` records are
applied to its storage (a dict) before its messages enter the network.  Requests (`Call`)
and replies travel as encoded bytes through one queue; the next delivery is the oldest, or
a random one when a seeded `random.Random` is given.  A `Call` addressed to an authority
goes to the shard that `messages.request_shard` names, as it would on the wire.

Faults, all drawn by the caller: `duplicate` delivers a message twice, `lose` turns a
delivery into `CallFailed` for the caller (a timeout), `crash` rebuilds a core from
exactly what it persisted (calls to it fail, replies to it are dropped, then it gets
`Started`), and `reply_filters` let a test replace what an authority answers (a Byzantine
authority).  Timers fire, in the order set, when the queue is empty.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from synod.core import (
    Call,
    CallFailed,
    CancelTimer,
    Input,
    Reply,
    RequestReceived,
    Response,
    Started,
    Step,
    TimerFired,
)
from synod.crypto import KeyPair, NodeId
from synod.fastpay.authority import AuthorityShard
from synod.fastpay.client import Client
from synod.fastpay.messages import (
    REPLY_CODEC,
    REQUEST_CODEC,
    AuthoritySignature,
    CertifiedTransferOrder,
    TransferOrder,
    make_vote,
    request_shard,
)
from synod.quorum.committee import Committee
from synod.wire import DecodeError

ReplyFilter = Callable[[AuthorityShard, Any, Any], Any]
"""(shard, decoded request, honest reply) -> the reply actually sent (object or bytes)."""


@dataclass
class _Delivery:
    kind: str  # "call" or "reply"
    caller: str
    request_id: int
    server: NodeId
    body: bytes
    shard: int = 0


@dataclass
class LocalNetwork:
    """Authorities (each with `shard_count` shards) and clients joined by one queue."""

    authority_keys: list[KeyPair]
    shard_count: int = 1
    genesis: Mapping[NodeId, int] | Mapping[bytes, int] = field(default_factory=dict)
    rng: random.Random | None = None
    authority_genesis: Mapping[NodeId, Mapping[bytes, int]] = field(default_factory=dict)
    """Per-authority overrides of `genesis` (to model authorities that disagree)."""
    weights: Mapping[NodeId, int] | None = None
    """Voting weights (default: 1 each)."""
    committee: Committee = field(init=False)
    shards: dict[tuple[NodeId, int], AuthorityShard] = field(init=False, default_factory=dict)
    clients: dict[NodeId, Client] = field(init=False, default_factory=dict)
    storage: dict[str, dict[bytes, bytes]] = field(init=False, default_factory=dict)
    events: list[tuple[str, Any]] = field(init=False, default_factory=list)
    reply_filters: dict[NodeId, ReplyFilter] = field(init=False, default_factory=dict)
    deliveries: int = field(init=False, default=0)
    _queue: list[_Delivery] = field(init=False, default_factory=list)
    _timers: list[tuple[str, str]] = field(init=False, default_factory=list)
    _keys: dict[NodeId, KeyPair] = field(init=False, default_factory=dict)
    _balances: dict[NodeId, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        names = [keys.node_id for keys in self.authority_keys]
        self.committee = Committee(self.weights) if self.weights else Committee.equal_weights(names)
        for keys in self.authority_keys:
            self._keys[keys.node_id] = keys
            for shard in range(self.shard_count):
                self.storage[_shard_name(keys.node_id, shard)] = {}
                self.shards[(keys.node_id, shard)] = self._build_shard(keys.node_id, shard)

    # -- building and rebuilding cores

    def _build_shard(self, authority: NodeId, shard: int) -> AuthorityShard:
        return AuthorityShard(
            self._keys[authority],
            self.committee,
            shard=shard,
            shard_count=self.shard_count,
            genesis=self._genesis_of(authority),
            storage=dict(self.storage[_shard_name(authority, shard)]),
        )

    def _genesis_of(self, authority: NodeId) -> dict[bytes, int]:
        genesis: dict[bytes, int] = {bytes(k): v for k, v in self.genesis.items()}
        genesis.update(self.authority_genesis.get(authority, {}))
        return genesis

    def add_client(self, keys: KeyPair, balance: int | None = None) -> Client:
        """A client for `keys` that knows `balance` (default: the least genesis grant)."""
        self._keys[keys.node_id] = keys
        if balance is None:  # what every authority's genesis grants at least
            grants = [self._genesis_of(name).get(keys.node_id, 0) for name in self.committee]
            balance = min(grants)
        self._balances[keys.node_id] = balance
        self.storage[_client_name(keys.node_id)] = {}
        client = Client(keys, self.committee, balance=self._balances[keys.node_id])
        self.clients[keys.node_id] = client
        return client

    def crash_client(self, account: NodeId) -> Client:
        """Rebuild the client from its persisted records, losing its calls in flight."""
        name = _client_name(account)
        self._forget(name)
        client = Client(
            self._keys[account],
            self.committee,
            balance=self._balances[account],
            storage=dict(self.storage[name]),
        )
        self.clients[account] = client
        return client

    def crash_shard(self, authority: NodeId, shard: int) -> AuthorityShard:
        """Rebuild one shard from its persisted records and start it again."""
        name = _shard_name(authority, shard)
        self._forget(name)
        for delivery in list(self._queue):
            if delivery.kind == "call" and (delivery.server, delivery.shard) == (authority, shard):
                self._queue.remove(delivery)
                self._fail_call(delivery)
        rebuilt = self._build_shard(authority, shard)
        self.shards[(authority, shard)] = rebuilt
        self._apply(name, rebuilt.handle(Started(), 0))
        return rebuilt

    def _forget(self, name: str) -> None:
        # Its connections close: its calls never arrive, answers to it are lost.
        self._queue = [d for d in self._queue if d.caller != name]
        self._timers = [timer for timer in self._timers if timer[0] != name]

    # -- stepping

    def submit(self, account: NodeId, step: Step) -> None:
        """Apply a step that the application obtained from a client's command."""
        self._apply(_client_name(account), step)

    def _apply(self, name: str, step: Step) -> None:
        store = self.storage[name]
        for record in step.persist:
            if record.value is None:
                store.pop(record.key, None)
            else:
                store[record.key] = record.value
        for message in step.outgoing:
            if isinstance(message, Call):
                body = REQUEST_CODEC.encode(message.body)
                shard = request_shard(message.body, self.shard_count)
                self._queue.append(
                    _Delivery("call", name, message.request_id, message.to, body, shard)
                )
            elif isinstance(message, Reply):
                self._queue.append(self._reply_delivery(message))
        for timer in step.timers:
            self._timers = [t for t in self._timers if t != (name, timer.name)]
            if not isinstance(timer, CancelTimer):
                self._timers.append((name, timer.name))
        self.events.extend((name, event) for event in step.events)

    def _reply_delivery(self, reply: Reply) -> _Delivery:
        body = reply.body if isinstance(reply.body, bytes) else REPLY_CODEC.encode(reply.body)
        return _Delivery("reply", reply.client, reply.request_id, NodeId(b""), body)

    def pending(self) -> int:
        """Deliveries waiting in the queue."""
        return len(self._queue)

    def deliver_one(self, *, lose: bool = False, duplicate: bool = False) -> bool:
        """Deliver (or lose) the next message; fire a timer when none is queued.

        `duplicate` delivers it and leaves a copy in the queue (a replay).
        """
        if not self._queue:
            if not self._timers:
                return False
            name, timer = self._timers.pop(0)
            self._apply(name, self._core(name).handle(TimerFired(timer), 0))
            return True
        index = self.rng.randrange(len(self._queue)) if self.rng else 0
        delivery = self._queue.pop(index)
        self.deliveries += 1
        if duplicate and not lose:
            self._queue.append(replace(delivery))
        if lose:
            self._fail_call(delivery)
        elif delivery.kind == "call":
            self._deliver_call(delivery)
        else:
            self._deliver_to_caller(delivery.caller, delivery.request_id, delivery.body)
        return True

    def run(self, max_deliveries: int = 1_000_000) -> None:
        """Deliver until nothing is left (timers included) or the budget is spent."""
        for _ in range(max_deliveries):
            if not self.deliver_one():
                return
        raise RuntimeError(f"the network did not settle within {max_deliveries} deliveries")

    def _deliver_call(self, delivery: _Delivery) -> None:
        shard = self.shards.get((delivery.server, delivery.shard))
        if shard is None:
            self._fail_call(delivery)
            return
        name = _shard_name(delivery.server, delivery.shard)
        event = RequestReceived(delivery.caller, delivery.request_id, delivery.body)
        step = shard.handle(event, 0)
        behaviour = self.reply_filters.get(delivery.server)
        if behaviour is not None:
            step.outgoing = [
                self._filtered(behaviour, shard, delivery.body, message)
                for message in step.outgoing
            ]
        self._apply(name, step)

    def _filtered(
        self, behaviour: ReplyFilter, shard: AuthorityShard, raw: bytes, message: Any
    ) -> Any:
        if not isinstance(message, Reply):
            return message
        try:
            request: Any = REQUEST_CODEC.decode(raw)
        except DecodeError:
            request = raw
        return Reply(message.client, message.request_id, behaviour(shard, request, message.body))

    def _deliver_to_caller(self, caller: str, request_id: int, body: bytes) -> None:
        core = self._core(caller)
        self._apply(caller, core.handle(Response(NodeId(b""), request_id, body), 0))

    def _fail_call(self, delivery: _Delivery) -> None:
        core = self._core(delivery.caller)
        failed = CallFailed(NodeId(b""), delivery.request_id, "lost")
        self._apply(delivery.caller, core.handle(failed, 0))

    def _core(self, name: str) -> Client | AuthorityShard:
        kind, _, rest = name.partition("/")
        if kind == "client":
            return self.clients[NodeId(bytes.fromhex(rest))]
        authority, _, shard = rest.partition("/")
        return self.shards[(NodeId(bytes.fromhex(authority)), int(shard))]

    def handle(self, name: str, event: Input) -> None:
        """Feed `event` to the core called `name` and apply its step."""
        self._apply(name, self._core(name).handle(event, 0))

    # -- inspection

    def client_events(self, account: NodeId) -> list[Any]:
        """Events emitted by the client of `account`, oldest first."""
        name = _client_name(account)
        return [event for source, event in self.events if source == name]

    def balance_at(self, authority: NodeId, account: bytes) -> int:
        """`account`'s balance as `authority` (its right shard) sees it."""
        for (name, _), shard in self.shards.items():
            if name == authority and shard.owns(account):
                return shard.account(account).balance
        raise KeyError(account)

    def authority_shards(self, authority: NodeId) -> list[AuthorityShard]:
        """The shards of one authority, in shard order."""
        return [self.shards[(authority, index)] for index in range(self.shard_count)]


def client_name(account: NodeId) -> str:
    """The name under which a client's storage and events are kept."""
    return _client_name(account)


def _client_name(account: bytes) -> str:
    return f"client/{bytes(account).hex()}"


def _shard_name(authority: bytes, shard: int) -> str:
    return f"shard/{bytes(authority).hex()}/{shard}"


def certify(order: TransferOrder, authorities: Iterable[KeyPair]) -> CertifiedTransferOrder:
    """A certificate for `order` carrying the votes of `authorities` (tests and examples)."""
    votes = [make_vote(keys, order) for keys in authorities]
    return CertifiedTransferOrder(
        order=order,
        signatures=[AuthoritySignature(vote.authority, vote.signature) for vote in votes],
    )
