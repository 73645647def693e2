"""Tusk (`synod.tusk`) in the simulator: passive cores, untrusted drivers.

Every core and every driver is a world node.  Cores are passive (`TuskCore` only answers
`RequestReceived`); drivers issue `Call`s to the cores and turn their signed answers into
certificates.  Faults, all drawn from the seed:

- the network's (latency, loss, duplication, reordering, partitions) between drivers
  and cores; a lost request or answer becomes `CallFailed` after `call_timeout_ms`;
- crash and restart of correct cores (rebuilt from what they persisted) and of correct
  drivers (restarted empty: a driver holds nothing needed for safety);
- in half the runs, one correct core far from every driver and client (`SlowCore`, a
  one-way delay drawn from `slow_core_ms`), before and after healing;
- up to f Byzantine cores, each with a seeded mix of: silence or lost answers
  (`Withhold`), undecodable answers (`GarbageAnswers`), answers to other requests
  (`StaleAnswers`), correctly signed answers carrying forged certificates and votes
  (`ForgedCertificates`), a second signed header per round shown to some drivers
  (`ForkHeaders`: equivocation), votes for every carried header (`DoubleVoter`) and
  own headers naming a made-up weak parent just under the core's collection floor
  (`MadeUpWeakParents`, the weak-parent attack), and, always, false checkpoint votes
  (`FalseCheckpoints`) and forged delivery-log records served to drivers filling a
  core's gap (`ForgedLogRecords`);
- Byzantine drivers (`synod.tusk.driver.ByzantineDriver`: withholding, reordering,
  replaying, mixing rounds, forging certificates and log records) beside the honest
  ones.

Every core's node answers `LogRequest`s from what the core persisted
(`LogServingCore`, the twin of `synod.runtime.tusk_node.LogService`).

Checkers (pure, over the history's `Committed` events of correct cores, after every
step): `TuskPrefixChecker`, every two correct cores' committed sequences are one a
prefix of the other, and no core delivers a certificate twice; a core that skipped
positions by installing a checkpoint fills them with the agreed certificates, and has
filled them all by the end.  Liveness after healing:
every correct core commits at least one certificate after the heal and delivers every
transaction a correct core took: proposed to it by the local application while it was
up, or receipted by it to the `SubmitClient` (which submits to cores of its choice,
Byzantine ones included, and moves on when no valid receipt comes), and a stream of
transactions given to each correct core after healing.  The last part is what finds a
correct core left out (too far from the drivers, or knocked out by a Byzantine one):
having committed once after healing, or everything it had before, proves nothing
about the work it takes from now on.

`TuskScenario(collude=True)` is the attack that breaks the prefix property once the
colluding cores exceed f: a `SplitBrainDriver` holding the colluders' keys runs two
copies of each colluding core, one per half of the honest cores, each copy proposing its
own headers and voting for everything.  With more than f colluders each half plus the
colluders weighs a quorum, so each half certifies its own DAG and commits a different
sequence (Narwhal & Tusk section 3: certificate uniqueness needs quorum intersection in
an honest core).  With at most f colluders the same attack only slows the halves down.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from synod.core import (
    Call,
    CallFailed,
    Core,
    Input,
    Outgoing,
    Proposed,
    Reply,
    RequestReceived,
    Response,
    SetTimer,
    Started,
    Step,
    Storage,
    TimerFired,
)
from synod.crypto import KeyPair, NodeId, blake2b
from synod.quorum.committee import Committee
from synod.sim.adversary import AdversaryContext, Behaviour, ByzantineCore, Withhold
from synod.sim.checkers import Checker, Violation, events_of
from synod.sim.history import Record
from synod.sim.world import NodeFactory, NodeRef, RawBytes, World
from synod.tusk.core import (
    CHECKPOINT_SLACK_ROUNDS,
    Committed,
    TuskConfig,
    TuskCore,
    checkpoint_rounds,
    commit_log_key,
    log_positions,
    serve_log,
)
from synod.tusk.driver import ByzantineDriver, Driver
from synod.tusk.messages import (
    CODEC,
    MAX_HEADERS_PER_REQUEST,
    MAX_WEAK_PARENTS,
    CoreAnswer,
    CoreRequest,
    Header,
    LogAnswer,
    LogRequest,
    RefusalReason,
    SubmitAnswer,
    SubmitRefusal,
    SubmitRequest,
    WeakParent,
    header_signature_valid,
    request_digest,
    sign_answer,
    sign_checkpoint,
    sign_header,
    sign_vote,
)

SUBMIT_WINDOW_MS = 1_000
"""Client transactions reach correct cores at random times in this first window."""

AFTER_HEALING_TRANSACTIONS = 10
AFTER_HEALING_INTERVAL_MS = 100
"""Once the network heals, each correct core is given this many more transactions,
this far apart, and must get every one committed on every correct core."""
LONG_OUTAGE_INTERVAL_MS = 100
"""While a core is away in the long-outage fault, the others get a transaction this
often, so that the committee keeps making rounds."""


def core_keys(index: int) -> KeyPair:
    """Deterministic keys for simulated Tusk core `index`."""
    return KeyPair.from_seed(b"tusk" + index.to_bytes(4, "big") * 7)


# ---------------------------------------------------------------- Byzantine cores


@dataclass(slots=True)
class GarbageAnswers:
    """Replace some answers by random bytes (the driver's decoder must cope)."""

    probability: float = 0.3
    name: str = "garbage answers"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        if not isinstance(outgoing, Reply) or context.rng.random() >= self.probability:
            return [outgoing]
        data = context.rng.randbytes(context.rng.randint(0, 64))
        return [Reply(outgoing.client, outgoing.request_id, RawBytes(data))]


@dataclass(slots=True)
class StaleAnswers:
    """Answer some requests with an earlier answer (signed, but for another request)."""

    probability: float = 0.3
    name: str = "stale answers"
    earlier: list[Any] = field(default_factory=list)

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        if not isinstance(outgoing, Reply):
            return [outgoing]
        chosen = outgoing
        if self.earlier and context.rng.random() < self.probability:
            old = self.earlier[context.rng.randrange(len(self.earlier))]
            chosen = Reply(outgoing.client, outgoing.request_id, old)
        self.earlier = [*self.earlier[-31:], outgoing.body]
        return [chosen]


@dataclass(slots=True)
class ForgedCertificates:
    """Answer with correctly signed lies: certificates stripped to one vote, votes
    claimed for other cores, a round far ahead.  Drivers must check what they learn."""

    keys: KeyPair
    probability: float = 0.3
    name: str = "forged certificates"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        if not isinstance(outgoing, Reply) or not isinstance(outgoing.body, CoreAnswer):
            return [outgoing]
        answer = outgoing.body
        if context.rng.random() >= self.probability:
            return [outgoing]
        stripped = tuple(
            msgspec.structs.replace(certificate, votes=certificate.votes[:1])
            for certificate in answer.certificates
        )
        others = [peer for peer in context.peers if peer != self.keys.node_id]
        stolen = tuple(
            msgspec.structs.replace(vote, voter=others[context.rng.randrange(len(others))])
            for vote in answer.votes
        )
        lie = msgspec.structs.replace(
            answer, round=answer.round + 1_000, certificates=stripped, votes=stolen
        )
        return [Reply(outgoing.client, outgoing.request_id, sign_answer(self.keys, lie))]


@dataclass(slots=True)
class FalseCheckpoints:
    """Sign checkpoint statements that lie: positions and a leader far ahead of the
    core's true checkpoint, with a made-up chain digest, in correctly signed answers.
    The lie is a function of the true statement, so Byzantine cores at one checkpoint
    sign the same one: f of them still weigh less than the f + 1 a checkpoint needs."""

    keys: KeyPair
    probability: float = 0.5
    name: str = "false checkpoints"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        if not isinstance(outgoing, Reply) or not isinstance(outgoing.body, CoreAnswer):
            return [outgoing]
        answer = outgoing.body
        if answer.checkpoint is None:
            return [outgoing]
        if self.probability < 1.0 and context.rng.random() >= self.probability:
            return [outgoing]
        true = answer.checkpoint.statement
        ahead = 1_000  # rounds: above every correct core, so each would install it
        lie = msgspec.structs.replace(
            true,
            sequence=true.sequence + 10 * ahead,
            leader_round=true.leader_round + ahead,
            floor_round=true.floor_round + ahead,
            chain=blake2b(true.chain, person=b"synod-sim-lie"),
            delivered=tuple(
                WeakParent(round=weak.round + ahead, digest=weak.digest)
                for weak in true.delivered
            ),
        )
        vote = sign_checkpoint(self.keys, lie)
        forged = msgspec.structs.replace(answer, checkpoint=vote)
        return [Reply(outgoing.client, outgoing.request_id, sign_answer(self.keys, forged))]


@dataclass(slots=True)
class ForgedLogRecords:
    """Serve delivery-log records that lie, to a driver filling another core's gap:
    a batch changed, a chain digest changed, positions shifted, or the records of
    other positions.  The core with the gap must refuse each (they do not hash to the
    chain it trusts) and get the true ones from a correct core."""

    name: str = "forged log records"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        if not isinstance(outgoing, Reply) or not isinstance(outgoing.body, LogAnswer):
            return [outgoing]
        answer = outgoing.body
        if not answer.records:
            return [outgoing]
        records = list(answer.records)
        index = context.rng.randrange(len(records))
        record = records[index]
        forgery = context.rng.randrange(4)
        if forgery == 0:
            records[index] = msgspec.structs.replace(record, transactions=(b"forged",))
        elif forgery == 1:
            chain = blake2b(record.previous_chain, person=b"synod-sim-lie")
            records[index] = msgspec.structs.replace(record, previous_chain=chain)
        elif forgery == 2:
            records = [
                msgspec.structs.replace(item, sequence=item.sequence + 1) for item in records
            ]
        else:
            records = records[1:] + records[:1]  # the records of other positions
        lie = msgspec.structs.replace(answer, records=tuple(records))
        return [Reply(outgoing.client, outgoing.request_id, lie)]


@dataclass(slots=True)
class ForkHeaders:
    """Equivocate: show some drivers a second header for the core's round, signed and
    voted for by the core, in a correctly signed answer."""

    keys: KeyPair
    probability: float = 0.5
    name: str = "fork headers"
    forks: dict[int, Header] = field(default_factory=dict)

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        if not isinstance(outgoing, Reply) or not isinstance(outgoing.body, CoreAnswer):
            return [outgoing]
        answer = outgoing.body
        if answer.header is None or context.rng.random() >= self.probability:
            return [outgoing]
        fork = self._fork_of(answer.header)
        honest_digest = answer.header.digest()
        votes = tuple(vote for vote in answer.votes if vote.header_digest != honest_digest)
        fork_vote = sign_vote(self.keys, fork.digest(), fork.round, fork.creator)
        forked = msgspec.structs.replace(answer, header=fork, votes=(*votes, fork_vote))
        return [Reply(outgoing.client, outgoing.request_id, sign_answer(self.keys, forked))]

    def _fork_of(self, header: Header) -> Header:
        fork = self.forks.get(header.round)
        if fork is None:
            marker = b"fork of round %d" % header.round
            transactions = (*header.transactions[1:], marker)
            fork = sign_header(
                self.keys, header.round, transactions, header.parents, context=header.context
            )
            self.forks = {r: h for r, h in self.forks.items() if r > header.round - 8}
            self.forks[header.round] = fork
        return fork


class DoubleVoter:
    """A core that also votes for every correctly signed header a driver carries,
    whatever it voted before (breaking the one-vote-per-slot rule)."""

    def __init__(self, inner: TuskCore | MadeUpWeakParents, keys: KeyPair) -> None:
        self._inner = inner
        self._keys = keys

    @property
    def node_id(self) -> NodeId:
        return self._inner.node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        step = self._inner.handle(event, now_ms)
        if not isinstance(event, RequestReceived) or not isinstance(event.body, CoreRequest):
            return step
        step.outgoing = [self._add_votes(out, event.body) for out in step.outgoing]
        return step

    def _add_votes(self, outgoing: Outgoing, request: CoreRequest) -> Outgoing:
        if not isinstance(outgoing, Reply) or not isinstance(outgoing.body, CoreAnswer):
            return outgoing
        answer = outgoing.body
        voted = {vote.header_digest for vote in answer.votes}
        votes = list(answer.votes)
        for header in request.headers:
            digest = header.digest()
            if len(votes) > MAX_HEADERS_PER_REQUEST or digest in voted:
                continue
            if header.creator in self._inner.committee and header_signature_valid(header, digest):
                votes.append(sign_vote(self._keys, digest, header.round, header.creator))
                voted.add(digest)
        replaced = msgspec.structs.replace(answer, votes=tuple(votes))
        return Reply(outgoing.client, outgoing.request_id, sign_answer(self._keys, replaced))


class MadeUpWeakParents:
    """The weak-parent attack: the core's own header goes out with one more weak parent,
    a digest that names nothing, stated one round below the core's collection floor
    (or as far back as the header allows while the floor is low).  Voters that skipped
    weak parents below their own floor voted for it, a correct core with a lower floor
    refused it for the missing parent, and a driver that waited for that parent blocked
    the certificate and everything built on it at that core for good."""

    def __init__(self, inner: TuskCore, keys: KeyPair) -> None:
        self._inner = inner
        self._keys = keys
        self._forged: dict[int, Header] = {}

    @property
    def node_id(self) -> NodeId:
        return self._inner.node_id

    @property
    def committee(self) -> Committee:
        return self._inner.committee

    def handle(self, event: Input, now_ms: int) -> Step:
        step = self._inner.handle(event, now_ms)
        if isinstance(event, RequestReceived) and isinstance(event.body, CoreRequest):
            step.outgoing = [self._forge(outgoing) for outgoing in step.outgoing]
        return step

    def _forge(self, outgoing: Outgoing) -> Outgoing:
        own = self._inner.own_header()
        if not isinstance(outgoing, Reply) or not isinstance(outgoing.body, CoreAnswer):
            return outgoing
        if own is None or own.round < 3 or outgoing.body.round != own.round:
            return outgoing
        forged = self._forged_header(own)
        honest_digest = own.digest()
        votes = tuple(vote for vote in outgoing.body.votes if vote.header_digest != honest_digest)
        forged_vote = sign_vote(self._keys, forged.digest(), forged.round, forged.creator)
        answer = msgspec.structs.replace(
            outgoing.body, header=forged, votes=(*votes, forged_vote)
        )
        return Reply(outgoing.client, outgoing.request_id, sign_answer(self._keys, answer))

    def _forged_header(self, own: Header) -> Header:
        forged = self._forged.get(own.round)
        if forged is None:
            # Even rounds: just under the floor (the finding); odd rounds: a recent round
            # that every voter holds, so the made-up digest is plainly missing.
            below_floor = max(1, self._inner.gc_round - 1)
            stated = min(own.round - 2, below_floor if own.round % 2 == 0 else own.round - 2)
            made_up = WeakParent(
                round=stated, digest=blake2b(b"made up %d" % own.round, person=b"synod-sim-weak")
            )
            weak_parents = (*own.weak_parents[: MAX_WEAK_PARENTS - 1], made_up)
            forged = sign_header(
                self._keys,
                own.round,
                own.transactions,
                own.parents,
                weak_parents,
                context=own.context,
            )
            self._forged = {r: h for r, h in self._forged.items() if r > own.round - 8}
            self._forged[own.round] = forged
        return forged


# ---------------------------------------------------------------- the slow-core fault


class SlowCore:
    """A correct core far from every driver, as behind a delay proxy: each request
    reaches the core `one_way_ms` after it arrived and each answer leaves `one_way_ms`
    after the core made it (the core persists at once, as it would).  The fault lasts
    after healing: distance is not a fault that heals, and liveness must hold with it."""

    def __init__(self, inner: Core, one_way_ms: int) -> None:
        self._inner = inner
        self.one_way_ms = one_way_ms
        self._inbound: dict[str, RequestReceived] = {}
        self._outbound: dict[str, Reply] = {}
        self._next = 0

    @property
    def node_id(self) -> NodeId:
        return self._inner.node_id

    @property
    def inner(self) -> Core:
        return self._inner

    def handle(self, event: Input, now_ms: int) -> Step:
        if isinstance(event, RequestReceived):
            return Step(timers=[self._hold(self._inbound, event)])
        if isinstance(event, TimerFired) and event.name in self._outbound:
            return Step(outgoing=[self._outbound.pop(event.name)])
        if isinstance(event, TimerFired) and event.name in self._inbound:
            event = self._inbound.pop(event.name)
        step = self._inner.handle(event, now_ms)
        replies = [outgoing for outgoing in step.outgoing if isinstance(outgoing, Reply)]
        step.outgoing = [outgoing for outgoing in step.outgoing if not isinstance(outgoing, Reply)]
        step.timers.extend(self._hold(self._outbound, reply) for reply in replies)
        return step

    def _hold(self, held: dict[str, Any], item: Any) -> SetTimer:
        self._next += 1
        name = f"slow-{self._next}"
        held[name] = item
        return SetTimer(name, self.one_way_ms)


def slow_core(world: World, node: NodeRef, one_way_ms: int) -> None:
    """Put core `node` `one_way_ms` away from every driver and client, from now on
    (it restarts from what it persisted, behind a `SlowCore`)."""
    build = world.node(node).factory

    def slowed(storage: Storage, rng: random.Random) -> Core:
        return SlowCore(build(storage, rng), one_way_ms)

    world.crash(node)
    world.restart(node, slowed)


# ---------------------------------------------------------------- the split-brain attack


@dataclass(slots=True)
class _Side:
    """One half of the split: its driver, its copies of the colluders, its honest cores."""

    label: str
    driver: Driver
    shadows: dict[NodeId, DoubleVoter]
    honest: frozenset[NodeId]
    local_calls: list[Call] = field(default_factory=list)


LOCAL_TIMER = "split-local"


class SplitBrainDriver:
    """A driver that holds the keys of colluding cores and shows each half of the honest
    cores its own DAG (see the module docstring).

    Inside it runs one honest `Driver` per half; that driver's calls to a colluding core
    are answered by that half's private copy of the colluder (a `DoubleVoter` around a
    `TuskCore` seeded with a different transaction), calls to the half's honest cores go
    out on the network, and calls to the other half's honest cores fail at once.
    """

    def __init__(
        self,
        node_id: NodeId,
        committee: Committee,
        colluders: list[KeyPair],
        halves: tuple[frozenset[NodeId], frozenset[NodeId]],
        *,
        config: TuskConfig,
        poll_interval_ms: int,
    ) -> None:
        self._node_id = node_id
        self._sides: list[_Side] = []
        for label, honest in zip(("left", "right"), halves, strict=True):
            driver = Driver(f"split-{label}", committee, poll_interval_ms=poll_interval_ms)
            shadows = {}
            for keys in colluders:
                core = TuskCore(keys, committee, {}, config=config)
                core.handle(Proposed(f"split {label}".encode()), 0)
                shadows[keys.node_id] = DoubleVoter(core, keys)
            self._sides.append(_Side(label, driver, shadows, honest))
        self._calls: dict[int, tuple[_Side, int]] = {}
        self._next_request_id = 1

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        out = Step()
        if isinstance(event, Started):
            for side in self._sides:
                self._drive(side, Started(), now_ms, out)
        elif isinstance(event, TimerFired):
            self._on_timer(event.name, now_ms, out)
        elif isinstance(event, Response):
            found = self._calls.pop(event.request_id, None)
            if found is not None:
                answer = Response(event.server, found[1], event.body)
                self._drive(found[0], answer, now_ms, out)
        elif isinstance(event, CallFailed):
            found = self._calls.pop(event.request_id, None)
            if found is not None:
                failed = CallFailed(event.server, found[1], event.reason)
                self._drive(found[0], failed, now_ms, out)
        return out

    def _on_timer(self, name: str, now_ms: int, out: Step) -> None:
        if name == LOCAL_TIMER:
            for side in self._sides:
                self._answer_locally(side, now_ms, out)
            return
        label, _, inner = name.partition("/")
        for side in self._sides:
            if side.label == label:
                self._drive(side, TimerFired(inner), now_ms, out)

    def _drive(self, side: _Side, event: Input, now_ms: int, out: Step) -> None:
        step = side.driver.handle(event, now_ms)
        for timer in step.timers:
            if isinstance(timer, SetTimer):
                out.timers.append(SetTimer(f"{side.label}/{timer.name}", timer.delay_ms))
        for call in step.outgoing:
            assert isinstance(call, Call), "a driver only calls cores"
            if call.to in side.shadows:
                if not side.local_calls:
                    out.timers.append(SetTimer(LOCAL_TIMER, 1))
                side.local_calls.append(call)
            elif call.to in side.honest:
                request_id = self._next_request_id
                self._next_request_id += 1
                self._calls[request_id] = (side, call.request_id)
                out.outgoing.append(Call(call.to, request_id, call.body))
            else:
                failed = CallFailed(call.to, call.request_id, "other half")
                self._drive(side, failed, now_ms, out)

    def _answer_locally(self, side: _Side, now_ms: int, out: Step) -> None:
        calls, side.local_calls = side.local_calls, []
        for call in calls:
            shadow = side.shadows[call.to]
            step = shadow.handle(RequestReceived("split", call.request_id, call.body), now_ms)
            reply = step.outgoing[0]
            assert isinstance(reply, Reply)
            self._drive(side, Response(call.to, call.request_id, reply.body), now_ms, out)


# ---------------------------------------------------------------- clients


@dataclass(frozen=True, slots=True)
class Submitted:
    """A core returned a signed receipt for the client's transaction."""

    core: NodeId
    transaction: bytes


CLIENT_RETRY_MS = 100


class SubmitClient:
    """A client that hands each transaction to one core (`SubmitRequest`) at its time,
    and to the next core when no valid signed receipt comes back."""

    def __init__(
        self, node_id: NodeId, cores: list[NodeId], schedule: list[tuple[int, bytes]]
    ) -> None:
        self._node_id = node_id
        self._cores = cores
        self._schedule = schedule
        self._attempts = list(range(len(schedule)))
        self._calls: dict[int, tuple[int, SubmitRequest]] = {}
        self._next_request_id = 1

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        step = Step()
        if isinstance(event, Started):
            for index, (at_ms, _) in enumerate(self._schedule):
                step.timers.append(SetTimer(f"tx-{index}", max(0, at_ms - now_ms)))
        elif isinstance(event, TimerFired) and event.name.startswith("tx-"):
            self._send(int(event.name[3:]), step)
        elif isinstance(event, Response):
            self._on_response(event, step)
        elif isinstance(event, CallFailed):
            found = self._calls.pop(event.request_id, None)
            if found is not None:
                step.timers.append(SetTimer(f"tx-{found[0]}", CLIENT_RETRY_MS))
        return step

    def _send(self, index: int, step: Step) -> None:
        core = self._cores[self._attempts[index] % len(self._cores)]
        self._attempts[index] += 1
        request = SubmitRequest(transactions=(self._schedule[index][1],))
        request_id = self._next_request_id
        self._next_request_id += 1
        self._calls[request_id] = (index, request)
        step.outgoing.append(Call(core, request_id, request))

    def _on_response(self, event: Response, step: Step) -> None:
        found = self._calls.pop(event.request_id, None)
        if found is None:
            return
        index, request = found
        answer = event.body
        if (
            isinstance(answer, SubmitAnswer)
            and answer.core == event.server
            and answer.request_digest == request_digest(request)
            and answer.accepted == 1
            and answer.has_valid_signature()
        ):
            step.events.append(Submitted(event.server, request.transactions[0]))
        else:
            step.timers.append(SetTimer(f"tx-{index}", CLIENT_RETRY_MS))


# ---------------------------------------------------------------- the scenario


@dataclass(slots=True)
class TuskScenario:
    """`cores` Tusk cores, the first `byzantine_cores` of them Byzantine, driven by
    `honest_drivers` honest and `byzantine_drivers` Byzantine drivers; `transactions`
    transactions the local application proposes to each correct core, and a client
    that submits `client_transactions` more to cores of its choice (Byzantine ones
    included: only a correct core's receipt makes a transaction expected)."""

    cores: int = 4
    byzantine_cores: int = 1
    honest_drivers: int = 2
    byzantine_drivers: int = 1
    transactions: int = 1
    client_transactions: int = 4
    collude: bool = False
    gc_depth: int = 10
    min_header_delay_ms: int = 150
    poll_interval_ms: int = 40
    call_timeout_ms: int = 2_000
    """As `synod tusk driver`'s: a call to the slow core takes twice its distance plus
    two network delays (the bimodal model's slow tail reaches 600 ms)."""
    slow_core_ms: tuple[int, int] = (150, 400)
    """One-way delay range of the slow-core fault (one correct core, drawn by the seed
    in half the runs, is that far from every driver and client, before and after
    healing); (0, 0) turns the fault off.  Wider than the 100-200 ms of the process
    test because a hop here already takes up to about 100 ms: what makes a core slow
    is its distance next to the others' round trips."""
    weak_parent_attack_only: bool = False
    """Byzantine cores do nothing but `MadeUpWeakParents` (the attack alone, so that a
    run shows it rather than the other behaviours that silence the core)."""
    false_checkpoints_only: bool = False
    """Byzantine cores do nothing but sign `FalseCheckpoints` in every answer carrying a
    checkpoint vote: within f they never make a checkpoint; more than f make one that
    the checker reports once a correct core installs it."""
    long_outage: bool = False
    """In half the runs (drawn by the seed), one correct core goes down early and stays
    down until healing while the others are handed a transaction every
    `LONG_OUTAGE_INTERVAL_MS` until `long_outage_ms`: with the drivers' short window the
    committee moves on further than the drivers remember, and the core rejoins only by
    installing a checkpoint."""
    long_outage_ms: int = 5_000
    window_rounds: int = 0
    """The honest drivers' window (`Driver.window_rounds`); 0: 40, or with `long_outage`
    the shortest that lets a core install a checkpoint (`shortest_window`), so that
    the committee goes beyond what drivers remember within the outage."""
    name: str = "tusk"
    _keys: list[KeyPair] = field(default_factory=list)
    _expected: set[tuple[str, str]] = field(default_factory=set)
    _delivered: set[tuple[str, str]] = field(default_factory=set)
    _fresh: set[str] = field(default_factory=set)
    _healed: bool = False
    _client: str = ""
    _correct_cores: set[str] = field(default_factory=set)
    _slow: dict[int, int] = field(default_factory=dict)
    _world: World | None = None
    _by_position: dict[int, list[str]] = field(default_factory=dict)
    _skipped: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    _unfilled: dict[str, set[int]] = field(default_factory=dict)
    _outage: NodeId | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.cores <= 64 or not 0 <= self.byzantine_cores <= self.cores:
            raise ValueError("core counts out of range")
        self._keys = [core_keys(index) for index in range(self.cores)]
        if self.window_rounds == 0:
            self.window_rounds = shortest_window(self.gc_depth) if self.long_outage else 40
        self._correct_cores = {keys.node_id.hex() for keys in self._keys[self.byzantine_cores :]}

    @property
    def committee(self) -> Committee:
        return Committee.equal_weights(keys.node_id for keys in self._keys)

    def correct_cores(self) -> set[str]:
        """Hex ids of the correct cores (the checkers judge only these)."""
        return set(self._correct_cores)

    def config(self) -> TuskConfig:
        return TuskConfig(gc_depth=self.gc_depth, min_header_delay_ms=self.min_header_delay_ms)

    def build(self, world: World) -> None:
        world.call_timeout_ms = self.call_timeout_ms
        self._world = world
        committee, config = self.committee, self.config()
        self._draw_slow_core(world.rng)
        for index, keys in enumerate(self._keys):
            if index < self.byzantine_cores:
                factory = self._byzantine_core(keys, committee, config, world)
                world.add_node(keys.node_id, factory, CODEC, byzantine=True)
            else:
                slow_ms = self._slow.get(index, 0)
                factory = _core_factory(keys, committee, config, world, slow_ms)
                world.add_node(keys.node_id, factory, CODEC)
        for number in range(self.honest_drivers):
            driver = Driver(f"driver-{number}", committee)
            world.add_node(driver.node_id, self._driver_factory(driver.name, False), CODEC)
        for number in range(self.byzantine_drivers):
            name = f"byzantine-driver-{number}"
            node_id = Driver(name, committee).node_id
            world.add_node(node_id, self._driver_factory(name, True), CODEC, byzantine=True)
        if self.collude:
            self._add_split_brain(world, committee, config)
        if self.client_transactions:
            self._add_client(world)
        world.observe(self._track)
        self._schedule_transactions(world)
        if self.long_outage:
            self._schedule_long_outage(world)

    def _schedule_long_outage(self, world: World) -> None:
        """Draw the long outage: one correct core (not the slow one) goes down early in
        the safety phase; see `_extend_outage` for the rest."""
        rng = world.rng
        if rng.random() < 0.5:
            return
        correct = [i for i in range(self.byzantine_cores, self.cores) if i not in self._slow]
        down = self._keys[rng.choice(correct)].node_id
        world.schedule(rng.randint(100, 400), lambda: world.crash(down), "long outage")
        self._outage = down

    def _extend_outage(self, world: World) -> None:
        """At healing, the core away stays down `long_outage_ms` more while the others,
        on a healed network, are handed a transaction every `LONG_OUTAGE_INTERVAL_MS`:
        they go on further than the drivers remember (`window_rounds`), and the core
        rejoins only by installing a checkpoint, then must get its own work committed
        (its after-healing transactions come once it is back)."""
        down = self._outage
        assert down is not None
        now_ms = world.now_ms
        world.schedule(now_ms + 1, lambda: world.crash(down), "long outage")
        world.schedule(now_ms + self.long_outage_ms, lambda: world.restart(down), "back")
        correct = self._keys[self.byzantine_cores :]
        others = [keys.node_id for keys in correct if keys.node_id != down]
        times = range(now_ms + 2, now_ms + self.long_outage_ms, LONG_OUTAGE_INTERVAL_MS)
        for number, at_ms in enumerate(times):
            transaction = f"during the outage {number}".encode()
            target = others[number % len(others)]
            world.input_at(at_ms, target, Proposed(transaction))
            self._expected.add((target.hex(), transaction.hex()))

    def _draw_slow_core(self, rng: random.Random) -> None:
        low_ms, high_ms = self.slow_core_ms
        if high_ms > 0 and self.byzantine_cores < self.cores and rng.random() < 0.5:
            index = rng.randrange(self.byzantine_cores, self.cores)
            self._slow = {index: rng.randint(low_ms, high_ms)}

    def slow_cores(self) -> dict[str, int]:
        """The correct cores far from the drivers, by hex id, with their one-way delay."""
        return {self._keys[index].node_id.hex(): delay for index, delay in self._slow.items()}

    def _byzantine_core(
        self, keys: KeyPair, committee: Committee, config: TuskConfig, world: World
    ) -> Any:
        rng = world.rng
        pool: list[Behaviour] = [
            Withhold(rng.choice((0.2, 1.0))),
            GarbageAnswers(),
            StaleAnswers(),
            ForkHeaders(keys),
            ForgedCertificates(keys),
        ]
        behaviours = [behaviour for behaviour in pool if rng.random() < 0.5]
        behaviours = behaviours or [pool[rng.randrange(len(pool))]]
        # Every Byzantine core lies in every checkpoint vote it sends (drawing nothing,
        # so that the faults each seed draws stay what they were).
        behaviours.append(FalseCheckpoints(keys, probability=1.0))
        behaviours.append(ForgedLogRecords())
        double_vote = rng.random() < 0.5
        made_up_weak_parents = rng.random() < 0.5
        if self.weak_parent_attack_only:
            behaviours, double_vote, made_up_weak_parents = [], False, True
        if self.false_checkpoints_only:
            behaviours = [FalseCheckpoints(keys, probability=1.0)]
            double_vote = made_up_weak_parents = False
        members = list(committee.members)

        persisted = _persisted_of(world, keys.node_id)

        def build(storage: Storage, node_rng: random.Random) -> Core:
            core = LogServingCore(keys, committee, storage, config=config, persisted=persisted)
            attacker = MadeUpWeakParents(core, keys) if made_up_weak_parents else core
            inner: Core = DoubleVoter(attacker, keys) if double_vote else attacker
            return ByzantineCore(inner, members, node_rng, CODEC, behaviours)

        return build

    def _driver_factory(self, name: str, byzantine: bool) -> Any:
        committee, poll_interval_ms = self.committee, self.poll_interval_ms

        window_rounds = self.window_rounds

        def build(storage: Storage, rng: random.Random) -> Core:
            if byzantine:
                return ByzantineDriver(name, committee, rng, poll_interval_ms=poll_interval_ms)
            return Driver(
                name, committee, poll_interval_ms=poll_interval_ms, window_rounds=window_rounds
            )

        return build

    def _add_split_brain(self, world: World, committee: Committee, config: TuskConfig) -> None:
        honest = [keys.node_id for keys in self._keys[self.byzantine_cores :]]
        middle = (len(honest) + 1) // 2
        halves = (frozenset(honest[:middle]), frozenset(honest[middle:]))
        colluders = self._keys[: self.byzantine_cores]
        node_id = Driver("split-brain", committee).node_id
        poll_interval_ms = self.poll_interval_ms

        def build(storage: Storage, rng: random.Random) -> Core:
            return SplitBrainDriver(
                node_id,
                committee,
                colluders,
                halves,
                config=config,
                poll_interval_ms=poll_interval_ms,
            )

        world.add_node(node_id, build, CODEC, byzantine=True)

    def _add_client(self, world: World) -> None:
        cores = [keys.node_id for keys in self._keys]
        schedule = [
            (world.rng.randint(0, SUBMIT_WINDOW_MS), f"client tx {number}".encode())
            for number in range(self.client_transactions)
        ]
        offset = world.rng.randrange(len(cores))
        cores = cores[offset:] + cores[:offset]
        node_id = Driver("client", self.committee).node_id

        def build(storage: Storage, rng: random.Random) -> Core:
            return SubmitClient(node_id, cores, schedule)

        world.add_node(node_id, build, CODEC)
        self._client = node_id.hex()

    def _schedule_transactions(self, world: World) -> None:
        for keys in self._keys[self.byzantine_cores :]:
            for number in range(self.transactions):
                transaction = f"tx {keys.node_id.hex()[:8]} {number}".encode()
                at_ms = world.rng.randint(0, SUBMIT_WINDOW_MS)
                world.input_at(at_ms, keys.node_id, Proposed(transaction))
                self._expected.add((keys.node_id.hex(), transaction.hex()))

    def _track(self, record: Record) -> None:
        kind = record["kind"]
        if kind == "heal":
            self._healed = True
            if self._outage is not None and self._world is not None:
                self._extend_outage(self._world)
            self._submit_after_healing()
        elif kind == "input lost" and record["event"]["type"] == "Proposed":
            # The client's transaction reached a core that was down: nothing to expect.
            self._expected.discard((record["node"], record["event"]["value"]))
        receipt = events_of(record, "Submitted")
        if receipt is not None and receipt["core"] in self._correct_cores:
            self._expected.add((receipt["core"], receipt["transaction"]))
        installed = events_of(record, "CheckpointInstalled")
        if installed is not None and record["node"] in self._correct_cores:
            skipped = (installed["first_skipped"], installed["sequence"])
            self._skipped.setdefault(record["node"], []).append(skipped)
            self._unfilled.setdefault(record["node"], set()).update(range(*skipped))
        filled = events_of(record, "LogFilled")
        if filled is not None and record["node"] in self._unfilled:
            first = filled["first"]
            self._unfilled[record["node"]].difference_update(
                range(first, first + len(filled["digests"]))
            )
        event = events_of(record, "Committed")
        if event is None or record["node"] not in self._correct_cores:
            return
        self._by_position.setdefault(event["sequence"], list(event["transactions"]))
        for transaction in event["transactions"]:
            self._delivered.add((record["node"], transaction))
        if self._healed:
            self._fresh.add(record["node"])

    def _submit_after_healing(self) -> None:
        """A stream of transactions for each correct core once the network heals
        (`AFTER_HEALING_TRANSACTIONS`, one every `AFTER_HEALING_INTERVAL_MS`): every
        correct core must still get its own work committed, under load (a core knocked
        out or left behind during the faults, or too far from the drivers ever to get a
        header in, would commit nothing new), not merely what it had before."""
        world = self._world
        assert world is not None, "built before it runs"
        for keys in self._keys[self.byzantine_cores :]:
            back_ms = self.long_outage_ms if keys.node_id == self._outage else 0
            for number in range(AFTER_HEALING_TRANSACTIONS):
                transaction = f"after healing {keys.node_id.hex()[:8]} {number}".encode()
                at_ms = world.now_ms + back_ms + 1 + number * AFTER_HEALING_INTERVAL_MS
                world.input_at(at_ms, keys.node_id, Proposed(transaction))
                self._expected.add((keys.node_id.hex(), transaction.hex()))

    def checkers(self) -> list[Checker]:
        return [TuskPrefixChecker(self.correct_cores())]

    def crashable(self, world: World) -> list[int]:
        """Correct cores and drivers (the client keeps its schedule: it is the test's)."""
        return [node.index for node in world.correct_nodes() if node.node_id.hex() != self._client]

    def max_crashed(self) -> int:
        return max(1, (self.cores - 1) // 3)

    def is_live(self, world: World) -> bool:
        if self._fresh != self._correct_cores:
            return False
        if any(self._unfilled.values()):
            return False  # a checkpoint's gap must be filled too: the records exist
        expected = {transaction for _, transaction in self._expected}
        for core in self._correct_cores:
            missing = {tx for tx in expected if (core, tx) not in self._delivered}
            if missing and not missing <= self._skipped_transactions(core):
                return False
        return True

    def _skipped_transactions(self, core: str) -> set[str]:
        """The transactions at the positions `core` skipped by installing a checkpoint:
        committed by the committee (the checkpoint's chain covers them)."""
        skipped: set[str] = set()
        for first, end in self._skipped.get(core, []):
            for position in range(first, end):
                skipped.update(self._by_position.get(position, []))
        return skipped


def shortest_window(gc_depth: int) -> int:
    """The smallest `window_rounds` with which drivers still hold the rounds a core
    installing a checkpoint needs (as `synod tusk` requires of ``tusk.toml``)."""
    return gc_depth + checkpoint_rounds(gc_depth) + CHECKPOINT_SLACK_ROUNDS


class LogServingCore(TuskCore):
    """A `TuskCore` whose node answers `LogRequest`s from the delivery-log records it
    persisted (`persisted()`: the world's copy of its storage), the twin of what
    `synod.runtime.tusk_node.CoreNode` does from its SQLite file: the core itself keeps
    no log in memory and does no I/O."""

    def __init__(
        self,
        keys: KeyPair,
        committee: Committee,
        storage: Storage,
        *,
        config: TuskConfig,
        persisted: Callable[[], Mapping[bytes, bytes]],
    ) -> None:
        super().__init__(keys, committee, storage, config=config)
        self._persisted = persisted

    def handle(self, event: Any, now_ms: int) -> Step:
        if isinstance(event, RequestReceived) and isinstance(event.body, LogRequest):
            stored = self._persisted()
            records = {
                position: stored[commit_log_key(position)]
                for position in log_positions(event.body)
                if commit_log_key(position) in stored
            }
            answer = serve_log(self.node_id, event.body, records)
            return Step(outgoing=[Reply(event.client, event.request_id, answer)])
        return super().handle(event, now_ms)


def _persisted_of(world: World, node_id: NodeId) -> Callable[[], Mapping[bytes, bytes]]:
    return lambda: world.node(node_id).storage


def _core_factory(
    keys: KeyPair, committee: Committee, config: TuskConfig, world: World, slow_ms: int = 0
) -> Any:
    persisted = _persisted_of(world, keys.node_id)

    def build(storage: Storage, rng: random.Random) -> Core:
        core = LogServingCore(keys, committee, storage, config=config, persisted=persisted)
        return SlowCore(core, slow_ms) if slow_ms else core

    return build


# ---------------------------------------------------------------- the checker


@dataclass(slots=True)
class TuskPrefixChecker:
    """Total order: every two correct cores' committed sequences are one a prefix of the
    other, positions are consecutive, and no core delivers a certificate twice.

    It keeps one agreed sequence (the longest seen): a core's delivery at position i
    must equal the agreed digest there, which is the pairwise prefix property.
    """

    correct_nodes: set[str]
    name: str = "prefix"
    agreed: list[tuple[str, str]] = field(default_factory=list)
    lengths: dict[str, int] = field(default_factory=dict)
    delivered: dict[str, set[str]] = field(default_factory=dict)
    skipped: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    """Positions each core skipped by installing a checkpoint, as [first, end) ranges."""

    unfilled: dict[str, set[int]] = field(default_factory=dict)
    """Positions each core skipped by installing a checkpoint and has not filled yet."""

    def observe(self, record: Record) -> list[Violation]:
        node = record.get("node")
        installed = events_of(record, "CheckpointInstalled")
        if installed is not None and node in self.correct_nodes:
            return self._installed(record, node, installed)
        filled = events_of(record, "LogFilled")
        if filled is not None and node in self.correct_nodes:
            return self._filled(record, node, filled)
        closed = events_of(record, "GapClosed")
        if closed is not None and node in self.correct_nodes and not closed["consistent"]:
            detail = f"{node[:8]} filled a gap that does not continue its own sequence"
            return [self._violation(record, detail)]
        event = events_of(record, "Committed")
        if event is None or node not in self.correct_nodes:
            return []
        found: list[Violation] = []
        position, digest = event["sequence"], event["digest"]
        expected = self.lengths.get(node, 0)
        if position != expected:
            found.append(
                self._violation(record, f"{node[:8]} delivered {position} after {expected}")
            )
        self.lengths[node] = max(expected, position + 1)
        seen = self.delivered.setdefault(node, set())
        if digest in seen:
            found.append(self._violation(record, f"{node[:8]} delivered {digest[:12]} twice"))
        seen.add(digest)
        if position < len(self.agreed):
            first_digest, first_node = self.agreed[position]
            if first_digest != digest:
                detail = (
                    f"position {position}: {first_node[:8]} delivered {first_digest[:12]} "
                    f"but {node[:8]} delivered {digest[:12]}"
                )
                found.append(self._violation(record, detail))
        elif position == len(self.agreed):
            self.agreed.append((digest, node))
        return found

    def _installed(self, record: Record, node: str, event: dict[str, Any]) -> list[Violation]:
        """A checkpoint jumps a core from its position to the checkpoint's, which some
        correct core must have reached (cores of weight f + 1 signed it)."""
        found: list[Violation] = []
        position = self.lengths.get(node, 0)
        if event["first_skipped"] != position:
            first = event["first_skipped"]
            detail = f"{node[:8]} installed a checkpoint from {first} at {position}"
            found.append(self._violation(record, detail))
        if event["sequence"] > len(self.agreed):
            detail = (
                f"{node[:8]} installed a checkpoint at {event['sequence']}, beyond every"
                f" correct core ({len(self.agreed)})"
            )
            found.append(self._violation(record, detail))
        self.lengths[node] = max(position, event["sequence"])
        self.skipped.setdefault(node, []).append((position, event["sequence"]))
        self.unfilled.setdefault(node, set()).update(range(position, event["sequence"]))
        return found

    def _filled(self, record: Record, node: str, event: dict[str, Any]) -> list[Violation]:
        """Records written into a core's gap: at positions it skipped, each the agreed
        certificate there, none it delivered already."""
        found: list[Violation] = []
        seen = self.delivered.setdefault(node, set())
        unfilled = self.unfilled.setdefault(node, set())
        for position, digest in enumerate(event["digests"], start=event["first"]):
            if position >= self.lengths.get(node, 0):
                detail = f"{node[:8]} filled position {position}, beyond its own sequence"
                found.append(self._violation(record, detail))
            if position < len(self.agreed) and self.agreed[position][0] != digest:
                detail = (
                    f"position {position}: {node[:8]} filled {digest[:12]} but"
                    f" {self.agreed[position][1][:8]} delivered {self.agreed[position][0][:12]}"
                )
                found.append(self._violation(record, detail))
            if digest in seen and position in unfilled:
                found.append(self._violation(record, f"{node[:8]} has {digest[:12]} twice"))
            seen.add(digest)
            unfilled.discard(position)
        return found

    def _violation(self, record: Record, detail: str) -> Violation:
        return Violation(self.name, record["t"], detail)

    def finish(self) -> list[Violation]:
        """Once the run is over (healed, every correct core live), no correct core's
        delivery log may still have a gap: the records were there to fetch."""
        return [
            Violation(self.name, -1, f"{node[:8]} never filled {len(positions)} positions")
            for node, positions in sorted(self.unfilled.items())
            if positions
        ]


# ---------------------------------------------------------------- plain networks
#
# Tests, documentation examples and benchmarks run Tusk in a perfect world built here:
# correct cores, drivers, and a client that submits on demand, with the prefix property
# checked after every step.  Faults are the caller's: `world.crash`, `world.silence`,
# `restart_driver`, `replace_core`.

CLIENT_ID = NodeId(blake2b(b"client", person=b"synod-sim-tusk"))
"""The node id of the submitting client that `tusk_world` adds."""


@dataclass(frozen=True, slots=True)
class Submission:
    """Input for a `SubmittingClient` (as `Proposed(Submission(...))`): hand
    `transactions` to `core` in one `SubmitRequest`."""

    core: NodeId
    transactions: tuple[bytes, ...]


NOT_IN_CONTACT_RETRY_MS = 20
"""A submission refused by a core that no driver has reached yet is sent again after
this long (as `submit_transactions` does)."""


class SubmittingClient:
    """A client node that sends each `Submission` it is given as one `SubmitRequest`
    and hands every `SubmitAnswer` that comes back to the caller as an event, as it came
    (the caller judges it).  A submission a core refused as `NOT_IN_CONTACT` (a new
    core no driver has reached yet) is sent again `NOT_IN_CONTACT_RETRY_MS` later, as a
    real client does; a request that fails gets no event and no retry."""

    def __init__(self, node_id: NodeId = CLIENT_ID) -> None:
        self._node_id = node_id
        self._next_request_id = 1
        self._sent: dict[int, Submission] = {}
        self._retries: dict[str, Submission] = {}

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        if isinstance(event, Proposed) and isinstance(event.value, Submission):
            return self._send(event.value)
        if isinstance(event, TimerFired) and event.name in self._retries:
            return self._send(self._retries.pop(event.name))
        if isinstance(event, Response) and isinstance(event.body, SubmitAnswer):
            step = Step(events=[event.body])
            submission = self._sent.pop(event.request_id, None)
            if submission is not None and event.body.reason == SubmitRefusal.NOT_IN_CONTACT:
                name = f"again-{event.request_id}"
                self._retries[name] = submission
                step.timers.append(SetTimer(name, NOT_IN_CONTACT_RETRY_MS))
            return step
        return Step()

    def _send(self, submission: Submission) -> Step:
        request_id = self._next_request_id
        self._next_request_id += 1
        self._sent[request_id] = submission
        request = SubmitRequest(transactions=submission.transactions)
        return Step(outgoing=[Call(submission.core, request_id, request)])


def tusk_world(
    keys: Sequence[KeyPair],
    *,
    seed: int = 0,
    drivers: Iterable[str] = ("driver-a", "driver-b"),
    byzantine_drivers: Iterable[str] = (),
    config: TuskConfig | None = None,
    latency_ms: tuple[int, int] = (1, 10),
    call_timeout_ms: int = 300,
    record_events: bool = True,
    core_configs: Mapping[NodeId, TuskConfig] | None = None,
) -> World:
    """A perfect world with one correct core per key (in order), then the named honest
    and Byzantine drivers, then a `SubmittingClient` (`CLIENT_ID`), all started.

    Every request and answer is delayed by a latency drawn from `latency_ms`, so the
    seed decides which overtake which; nothing else goes wrong unless the caller makes
    it.  A call to a core that is down fails after `call_timeout_ms`.  The prefix
    property is checked after every step (`check_prefix`), unless `record_events` is
    False (benchmarks: see `World.record_events`; check the order after the run then).
    `core_configs` gives some cores settings of their own (a misconfigured core).
    """
    world = World.perfect(
        seed, latency_ms=latency_ms, call_timeout_ms=call_timeout_ms, record_events=record_events
    )
    committee = Committee.equal_weights(key.node_id for key in keys)
    config = config or TuskConfig()
    configs = core_configs or {}
    factories = {
        key.node_id: _core_factory(key, committee, configs.get(key.node_id, config), world)
        for key in keys
    }
    world.add_nodes(factories, CODEC)
    add_drivers(world, committee, drivers, network=config.network)
    add_drivers(world, committee, byzantine_drivers, byzantine=True, network=config.network)
    world.add_nodes({CLIENT_ID: lambda storage, rng: SubmittingClient()}, CODEC)
    if record_events:
        check_prefix(world, (key.node_id for key in keys))
    return world


def add_drivers(
    world: World,
    committee: Committee,
    names: Iterable[str],
    *,
    byzantine: bool = False,
    network: bytes = b"",
) -> None:
    """Add and start one driver per name for `network` (`ByzantineDriver`s, seeded by
    the world, if asked); a driver persists nothing, so a restarted one starts empty."""

    def factory(name: str) -> NodeFactory:
        def build(storage: Storage, rng: random.Random) -> Core:
            if byzantine:
                return ByzantineDriver(name, committee, rng, network=network)
            return Driver(name, committee, network=network)

        return build

    world.add_nodes({Driver(name, committee).node_id: factory(name) for name in names}, CODEC)


def restart_driver(world: World, name: str) -> None:
    """Crash the running driver called `name` and restart it empty, at once: what it
    held is lost; answers to its earlier life may still reach the new one."""
    found = [node for node in world.nodes if isinstance(node.core, Driver)]
    node = next((node for node in found if _driver_name(node.core) == name), None)
    if node is None:
        raise LookupError(f"no running driver called {name!r}")
    world.crash(node.index)
    world.restart(node.index)


def _driver_name(core: Core | None) -> str:
    return core.name if isinstance(core, Driver) else ""


def replace_core(world: World, node: NodeRef, wrap: Callable[[TuskCore], Core]) -> None:
    """Put `wrap(core)` (a Byzantine or instrumented wrapper) in place of a correct
    core, from now on: the node restarts from what it persisted, its factory's
    `TuskCore` wrapped."""
    build = world.node(node).factory

    def wrapped(storage: Storage, rng: random.Random) -> Core:
        core = build(storage, rng)
        if not isinstance(core, TuskCore):
            raise TypeError(f"replace_core wraps a TuskCore, not a {type(core).__name__}")
        return wrap(core)

    world.crash(node)
    world.restart(node, wrapped)


def submit(world: World, core: NodeRef, transactions: Iterable[bytes]) -> None:
    """The client of `tusk_world` sends `transactions` to `core` now; the core's answer
    arrives later as a `SubmitAnswer` event of `CLIENT_ID` (see `answers`)."""
    submission = Submission(world.node(core).node_id, tuple(transactions))
    world.input(CLIENT_ID, Proposed(submission))


def answers(world: World) -> list[SubmitAnswer]:
    """The answers the client of `tusk_world` received, in order."""
    return world.events_of(CLIENT_ID, SubmitAnswer)


def committed(world: World, core: NodeRef) -> list[Committed]:
    """The certificates a core delivered, in order (over all its restarts)."""
    return world.events_of(core, Committed)


def delivered_transactions(world: World, core: NodeRef) -> list[bytes]:
    """The transactions a core delivered, in order."""
    return [transaction for event in committed(world, core) for transaction in event.transactions]


class PrefixViolated(AssertionError):
    """Two cores delivered different certificates at one position, a core skipped or
    repeated a position, or delivered a certificate twice (`TuskPrefixChecker`)."""


def check_prefix(world: World, cores: Iterable[NodeId]) -> TuskPrefixChecker:
    """Check the Tusk prefix property among `cores` after every step of `world`.

    The step whose event breaks it raises `PrefixViolated` out of `world.step` (and so
    out of `step_until` and `run_until`).  The returned checker's `lengths` holds the
    number of positions each core (by hex id) delivered.
    """
    if not world.record_events:
        raise ValueError("this world keeps no event records: there is nothing to check")
    checker = TuskPrefixChecker({core.hex() for core in cores})

    def observe(record: Record) -> None:
        violations = checker.observe(record)
        if violations:
            raise PrefixViolated("; ".join(str(violation) for violation in violations))

    world.observe(observe)
    return checker


class RefusalTally:
    """A core wrapper that counts, by reason, the refusals in the core's answers: what
    the drivers tried to carry (see `tally_refusals`)."""

    def __init__(self, inner: TuskCore, tally: Counter[RefusalReason]) -> None:
        self.inner = inner
        self.tally = tally

    @property
    def node_id(self) -> NodeId:
        return self.inner.node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        step = self.inner.handle(event, now_ms)
        for outgoing in step.outgoing:
            if isinstance(outgoing, Reply) and isinstance(outgoing.body, CoreAnswer):
                self.tally.update(refusal.reason for refusal in outgoing.body.refusals)
        return step


def tally_refusals(world: World, cores: Iterable[NodeRef]) -> Counter[RefusalReason]:
    """Count from now on how often `cores` refuse carried items, by reason."""
    tally: Counter[RefusalReason] = Counter()
    for core in cores:
        replace_core(world, core, lambda inner: RefusalTally(inner, tally))
    return tally
