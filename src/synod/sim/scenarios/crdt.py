"""The BFT-CRDT (`synod.crdt`) in the simulator: convergence despite faults and liars.

Theory of operation (Kleppmann, *Making CRDTs Byzantine Fault Tolerant*, PaPoC 2022,
sections 3 and 4; Kleppmann and Howard 2020, section 4).  Every node is a `Replica`
wrapped so that it reports its document after each change.  Correct nodes edit one
JSON document at random times (registers, a text, a list, a counter); their updates
spread by broadcast and by reconciliation of heads.  Faults, all drawn from the seed:

- the network's (latency, loss, duplication, reordering, symmetric and asymmetric
  partitions) between all nodes;
- crash and restart of correct replicas, rebuilt from the updates they persisted;
- Byzantine replicas running the real replica with their output corrupted: withheld,
  replayed, garbage bytes, and `CrdtLies`: equivocating twins (two valid updates with
  one author and sequence, one per recipient), forged authors, wrong signatures,
  references to elements that do not exist, updates that point past themselves,
  inflated clocks and sequences, updates whose predecessor never arrives, dependants of
  invalid updates, and heads or wants naming random ids (or no heads: "send me
  everything", which the replica's per-peer rate limit absorbs).

Correctness of a CRDT needs no honest majority: any number of Byzantine replicas is
within the assumptions, as long as the correct ones can eventually exchange updates.

Checkers (pure, over the history's events of correct nodes, after every step):

- `SameUpdatesSameDocumentChecker`: whenever two correct replicas hold the same set of
  updates they hold the same document (strong eventual consistency); at the end, all
  correct replicas hold the same updates and the same document (convergence);
- `SameVerdictChecker`: no update applied by one correct replica is rejected as invalid
  by another (a verdict that depends only on the causal past is the same everywhere).

Liveness after healing: all correct replicas report the same set of updates.

`CrdtScenario(arrival_order_merge=True)` runs correct replicas whose document orders
operations by local arrival instead of by (clock, id): the classic "last write to arrive
wins" mistake.  Within the network's assumptions (it only reorders messages) replicas
with the same updates then hold different documents, and the checker reports it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from synod.core import Core, Input, LocalError, Proposed, Send, Started, Step, Storage
from synod.crdt.document import Document
from synod.crdt.messages import (
    CODEC,
    MAX_DELETED_PER_UPDATE,
    MAX_IDS_PER_MESSAGE,
    MAX_PREDECESSORS,
    ROOT,
    UPDATE_CODEC,
    UPDATE_DOMAIN,
    Heads,
    MapPut,
    MapRemove,
    NewCounter,
    NewList,
    NewMap,
    NewText,
    Operation,
    Ref,
    SequenceDelete,
    Span,
    TextInsert,
    Update,
    UpdateBody,
    Updates,
    Value,
    Want,
    body_id,
    operation_size,
)
from synod.crdt.replica import (
    Delete,
    Edit,
    Increment,
    Insert,
    InsertText,
    LocalChange,
    Put,
    Remove,
    Replica,
    ReplicaConfig,
    UpdateApplied,
)
from synod.crypto import KeyPair, NodeId
from synod.sim.adversary import Behaviour, ByzantineCore, Equivocate, Garbage, Replay, Withhold
from synod.sim.checkers import Checker, Violation, events_of
from synod.sim.history import Record
from synod.sim.world import World

EDIT_WINDOW_MS = 2_000
"""Correct replicas edit at random times in this first part of the safety phase."""

SIM_ANSWER_BYTES = 16 * 1024
"""Per-peer answer budget of simulated replicas (and what it earns per second): small
enough that the Byzantine replicas' empty announcements and `Want`s of everything would
exceed it in every run without pacing, large enough for catch-up within the budget."""

SIM_REPLICA_CONFIG = ReplicaConfig(
    announce_interval_ms=250,
    max_waiting_updates=64,
    heads_answer_burst=4,
    heads_answer_interval_ms=100,
    answer_bytes_per_peer=SIM_ANSWER_BYTES,
    answer_bytes_per_peer_per_second=SIM_ANSWER_BYTES,
    answer_bytes_total=4 * SIM_ANSWER_BYTES,
    answer_bytes_total_per_second=4 * SIM_ANSWER_BYTES,
)


def node_keys(index: int) -> KeyPair:
    """Deterministic keys for simulated replica `index`."""
    return KeyPair.from_seed(b"crdt" + index.to_bytes(4, "big") * 7)


# ---------------------------------------------------------------- edits


@dataclass(frozen=True, slots=True)
class EditPlan:
    """A `Proposed` value: draw edits from `seed` against the document as it is then."""

    seed: int


def draw_edits(replica: Replica, rng: random.Random) -> list[Edit]:
    """One to three edits on distinct objects, each valid against the current document."""
    edits: list[Edit] = []
    for target in rng.sample(["register", "remove", "text", "list", "counter"], rng.randint(1, 3)):
        edit = _draw_edit(replica, target, rng)
        if edit is not None:
            edits.append(edit)
    return edits


def _kind(replica: Replica, key: str) -> str | None:
    try:
        return replica.document.kind_at((key,))
    except LocalError:
        return None


def _draw_edit(replica: Replica, target: str, rng: random.Random) -> Edit | None:  # noqa: PLR0911
    if target == "register":
        value = rng.choice([rng.randint(-99, 99), f"v{rng.randrange(100)}", True, None])
        return Put((), f"r{rng.randrange(3)}", value)
    if target == "remove":
        key = f"r{rng.randrange(3)}"
        return Remove((), key) if _kind(replica, key) is not None else None
    if target == "counter":
        if _kind(replica, "counter") != "counter":
            return Put((), "counter", NewCounter())
        return Increment(("counter",), rng.randint(-5, 5))
    kind = "text" if target == "text" else "list"
    if _kind(replica, target) != kind:
        return Put((), target, NewText() if kind == "text" else NewList())
    length = replica.document.length((target,))
    if length and rng.random() < 0.3:
        index = rng.randrange(length)
        return Delete((target,), index, rng.randint(1, min(3, length - index)))
    index = rng.randint(0, length)
    if kind == "text":
        return InsertText((target,), index, "".join(rng.choices("abcdefgh", k=rng.randint(1, 4))))
    values: list[Value] = [rng.randrange(1000), NewMap()]
    return Insert((target,), index, values[: rng.randint(1, 2)])


# ---------------------------------------------------------------- observed replicas


@dataclass(frozen=True, slots=True)
class DocumentObserved:
    """The replica's state after a change: digests of its update set and its document."""

    updates: int
    updates_digest: str
    document_digest: str


@dataclass(frozen=True, slots=True)
class AnswerSent:
    """The replica sent `peer` this many bytes of updates in answers (not broadcasts)."""

    peer: bytes
    size_bytes: int


class ObservedReplica:
    """A `Replica` that turns `EditPlan`s into edits and reports its document and the
    bytes it sends each peer in answers."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    @property
    def node_id(self) -> NodeId:
        return self.replica.node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        if isinstance(event, Proposed) and isinstance(event.value, EditPlan):
            edits = draw_edits(self.replica, random.Random(event.value.seed))
            event = Proposed(LocalChange(tuple(edits)))
        step = self.replica.handle(event, now_ms)
        answered: dict[bytes, int] = {}
        for out in step.outgoing:
            if isinstance(out, Send) and isinstance(out.message, Updates):
                size = sum(len(encoded) for encoded in out.message.updates)
                answered[out.to] = answered.get(out.to, 0) + size
        step.events.extend(AnswerSent(peer, size) for peer, size in answered.items())
        if isinstance(event, Started) or any(isinstance(e, UpdateApplied) for e in step.events):
            step.events.append(
                DocumentObserved(
                    len(self.replica.graph),
                    self.replica.updates_digest(),
                    self.replica.document_digest(),
                )
            )
        return step


class ArrivalOrderDocument(Document):
    """A deliberately wrong document: operations ordered by local arrival.

    The key of an operation becomes (application index of its update, counter): the
    last write to *arrive* wins a map entry and ties in lists follow arrival, so two
    replicas that received the same updates in different orders disagree.
    """

    def key(self, handle: int) -> tuple[int, bytes, int]:
        ordinal = self._handle_update[handle]
        return (ordinal, b"", handle - self._bases[ordinal])


class ArrivalOrderReplica(Replica):
    """A `Replica` over `ArrivalOrderDocument` (for showing that the checker bites)."""

    def __init__(
        self, keys: KeyPair, storage: Storage | None = None, config: ReplicaConfig | None = None
    ) -> None:
        super().__init__(keys, None, config)
        self.document = ArrivalOrderDocument(self.graph)
        if storage:
            self._restore(storage)


# ---------------------------------------------------------------- Byzantine lies


@dataclass(slots=True)
class CrdtLies:
    """Protocol-specific mutations of a Byzantine replica's broadcasts (see module doc)."""

    keys: KeyPair
    replica: Replica
    victims: tuple[NodeId, ...]
    flooded: bool = False

    def __call__(self, message: Any, rng: random.Random, recipient: NodeId) -> Any:  # noqa: PLR0911
        if isinstance(message, Heads):
            choice = rng.randrange(3)
            if choice == 0:
                return Heads([])
            if choice == 1:
                return Heads(sorted(rng.randbytes(32) for _ in range(rng.randint(1, 3))))
            return message
        if isinstance(message, Want):
            if rng.random() < 0.5:  # amplifying: everything it holds, again and again
                return Want(sorted(self.replica.applied_ids()[:MAX_IDS_PER_MESSAGE]))
            return Want(sorted(rng.randbytes(32) for _ in range(rng.randint(1, 3))))
        if isinstance(message, Updates):
            lies = self._lies(rng, recipient)
            keep = list(message.updates) if rng.random() < 0.5 else []
            return Updates([*keep, *lies])
        return message

    def _header(self) -> tuple[int, int, list[bytes]]:
        graph = self.replica.graph
        heads = sorted(graph.heads)
        clock = 1 + max((graph.clocks[h] for h in heads), default=0)
        own = [graph.sequences[h] for h in heads if graph.authors[h] == self.keys.node_id]
        return 1 + max(own, default=0), clock, graph.head_ids()

    def _signed(self, body: UpdateBody, keys: KeyPair | None = None) -> bytes:
        keys = keys or self.keys
        signature = keys.sign(UPDATE_DOMAIN, body_id(body))
        return UPDATE_CODEC.encode(Update(body, signature))

    def _lies(self, rng: random.Random, recipient: NodeId) -> list[bytes]:
        choice = rng.randrange(14)
        if choice >= 9:
            return self._costly_lies(choice - 9, rng)
        return self._simple_lies(choice, rng, recipient)

    def _costly_lies(self, choice: int, rng: random.Random) -> list[bytes]:
        """Valid or nearly valid updates chosen to cost the most (issue 15's attacks)."""
        sequence, clock, predecessors = self._header()
        author = self.keys.node_id
        if choice == 0 and not self.flooded:  # many heads: more than an update may name
            # Once per run at most: the flood costs every replica a few hundred
            # signature checks, which the simulator's budget pays for each seed.
            self.flooded = True
            fresh = KeyPair.from_seed(rng.randbytes(32))
            orphans = [
                UpdateBody(fresh.node_id, 1, 1, [], [MapPut(ROOT, f"head{index}", index)])
                for index in range(MAX_PREDECESSORS + 20)
            ]
            return [self._signed(body, fresh) for body in orphans]
        typed = self._typed_text()
        if choice in (1, 2) and typed is not None:
            target, span = typed
            # 1: repeated or touching spans; 2: valid, deleting typed text again and again
            touching = Span(span.update, span.counter + span.count, 1)
            spans = [span, rng.choice((span, touching))] if choice == 1 else [span]
            deletion: list[Operation] = [SequenceDelete(target, spans)]
            return [self._signed(UpdateBody(author, sequence, clock, predecessors, deletion))]
        if choice == 3:  # rewriting what others wrote: remove their objects, forge names
            keys = ["text", "list", "counter", "r0"]
            rewrite: list[Operation] = [MapRemove(ROOT, key) for key in keys]
            rewrite.append(MapPut(ROOT, "author", self.victims[0].hex()))
            return [self._signed(UpdateBody(author, sequence, clock, predecessors, rewrite))]
        # oversized: more deleted elements than an update may name, in a few bytes
        spans = [Span(b"\x01" * 32, 0, MAX_DELETED_PER_UPDATE), Span(b"\x02" * 32, 0, 9)]
        operation = SequenceDelete(Ref(b"\x01" * 32, 0), spans)
        return [self._signed(UpdateBody(author, sequence, clock, predecessors, [operation]))]

    def _typed_text(self) -> tuple[Ref, Span] | None:
        """The text and the characters of the latest applied `TextInsert` it holds."""
        replica = self.replica
        for update_id in reversed(replica.applied_ids()[-16:]):
            counter = 0
            for operation in UPDATE_CODEC.decode(replica.encoded_update(update_id)).body.operations:
                if isinstance(operation, TextInsert):
                    target = operation.target
                    if not target.update:  # created by the same update
                        target = Ref(update_id, target.counter)
                    return target, Span(update_id, counter, len(operation.text))
                counter += operation_size(operation)
        return None

    def _simple_lies(  # noqa: PLR0911
        self, choice: int, rng: random.Random, recipient: NodeId
    ) -> list[bytes]:
        sequence, clock, predecessors = self._header()
        author = self.keys.node_id
        twin_value = f"to {recipient.hex()[:6]} #{rng.randrange(1 << 20)}"
        valid: list[Operation] = [MapPut(ROOT, "byzantine", twin_value)]
        if choice == 0:  # a valid twin per recipient: equivocation
            return [self._signed(UpdateBody(author, sequence, clock, predecessors, valid))]
        if choice == 1:  # forged author: signed with our key, naming a victim
            victim = self.victims[rng.randrange(len(self.victims))]
            return [self._signed(UpdateBody(victim, 1, clock, predecessors, valid))]
        if choice == 2:  # a reference to an element no update created
            dangling: list[Operation] = [MapPut(Ref(rng.randbytes(32), 0), "k", 1)]
            return [self._signed(UpdateBody(author, sequence, clock, predecessors, dangling))]
        if choice == 3:  # a reference into this update past the operation itself
            forward: list[Operation] = [TextInsert(Ref(b"", 5), Ref(b"", 5), "x")]
            return [self._signed(UpdateBody(author, sequence, clock, predecessors, forward))]
        if choice == 4:  # inflated clock
            body = UpdateBody(author, sequence, clock + rng.randint(1, 9), predecessors, valid)
            return [self._signed(body)]
        if choice == 5:  # skipped sequence numbers
            body = UpdateBody(author, sequence + rng.randint(1, 9), clock, predecessors, valid)
            return [self._signed(body)]
        if choice == 6:  # a predecessor that nobody will ever have
            unknown = sorted([*predecessors, rng.randbytes(32)])
            return [self._signed(UpdateBody(author, sequence, clock, unknown, valid))]
        if choice == 7:  # a valid-looking child of an invalid update
            bad = UpdateBody(author, sequence, clock + 1, predecessors, valid)
            child = UpdateBody(author, sequence + 1, clock + 2, [body_id(bad)], valid)
            return [self._signed(bad), self._signed(child)]
        # the right body with someone else's signature bytes
        body = UpdateBody(author, sequence, clock, predecessors, valid)
        return [UPDATE_CODEC.encode(Update(body, rng.randbytes(64)))]


# ---------------------------------------------------------------- the scenario


@dataclass(slots=True)
class CrdtScenario:
    """`nodes` replicas, the first `byzantine` of them Byzantine; `edits` per replica."""

    nodes: int = 4
    byzantine: int = 1
    edits: int = 4
    arrival_order_merge: bool = False
    name: str = "crdt"
    _keys: list[KeyPair] = field(default_factory=list)
    _latest: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.byzantine <= self.nodes:
            raise ValueError("byzantine count out of range")
        if self.byzantine == self.nodes:
            raise ValueError("at least one replica must be correct")
        self._keys = [node_keys(index) for index in range(self.nodes)]

    @property
    def members(self) -> list[NodeId]:
        return [keys.node_id for keys in self._keys]

    def correct_hex(self) -> set[str]:
        return {keys.node_id.hex() for keys in self._keys[self.byzantine :]}

    def build(self, world: World) -> None:
        for index, keys in enumerate(self._keys):
            if index < self.byzantine:
                world.add_node(keys.node_id, self._byzantine_factory(keys), CODEC, byzantine=True)
            else:
                world.add_node(keys.node_id, self._correct_factory(keys), CODEC)
        world.observe(self._track)
        for keys in self._keys:
            for _ in range(self.edits):
                plan = EditPlan(world.rng.getrandbits(32))
                world.input_at(world.rng.randint(0, EDIT_WINDOW_MS), keys.node_id, Proposed(plan))

    def _make_replica(self, keys: KeyPair, storage: Storage) -> Replica:
        kind = ArrivalOrderReplica if self.arrival_order_merge else Replica
        return kind(keys, storage, SIM_REPLICA_CONFIG)

    def _correct_factory(self, keys: KeyPair) -> Any:
        def build(storage: Storage, rng: random.Random) -> Core:
            return ObservedReplica(self._make_replica(keys, storage))

        return build

    def _byzantine_factory(self, keys: KeyPair) -> Any:
        members = self.members
        victims = tuple(members[self.byzantine :])

        def build(storage: Storage, rng: random.Random) -> Core:
            replica = Replica(keys, storage, SIM_REPLICA_CONFIG)
            # Two runs in five see the flood of heads (see CrdtLies._costly_lies).
            lies = CrdtLies(keys, replica, victims, flooded=rng.random() < 0.6)
            return ByzantineCore(
                ObservedReplica(replica), members, rng, CODEC, _behaviours(rng, lies)
            )

        return build

    def _track(self, record: Record) -> None:
        event = events_of(record, "DocumentObserved")
        if event is not None and record["node"] in self.correct_hex():
            self._latest[record["node"]] = event["updates_digest"]

    def checkers(self) -> list[Checker]:
        correct = self.correct_hex()
        return [
            SameUpdatesSameDocumentChecker(correct),
            SameVerdictChecker(correct),
            AnswerBudgetChecker(correct, SIM_ANSWER_BYTES, SIM_ANSWER_BYTES),
        ]

    def crashable(self, world: World) -> list[int]:
        return [node.index for node in world.correct_nodes()]

    def max_crashed(self) -> int:
        return max(1, self.nodes - self.byzantine - 1)

    def is_live(self, world: World) -> bool:
        correct = self.correct_hex()
        if not all(world.node(NodeId(bytes.fromhex(node))).up for node in sorted(correct)):
            return False
        digests = {self._latest.get(node) for node in correct}
        return len(digests) == 1 and None not in digests


def _behaviours(rng: random.Random, lies: CrdtLies) -> list[Behaviour]:
    pool: list[Behaviour] = [
        Withhold(rng.choice((0.3, 0.7))),
        Replay(),
        Garbage(),
        Equivocate(lies, probability=0.7),
    ]
    chosen = [behaviour for behaviour in pool if rng.random() < 0.5]
    return chosen or [pool[3]]


# ---------------------------------------------------------------- checkers


@dataclass(slots=True)
class SameUpdatesSameDocumentChecker:
    """Correct replicas with the same updates hold the same document; all converge.

    Reads `DocumentObserved` events: each says which set of updates (by digest) a
    replica held and which document (by digest) it computed from them.
    """

    correct_nodes: set[str]
    name: str = "convergence"
    document_of: dict[str, tuple[str, str]] = field(default_factory=dict)
    latest: dict[str, tuple[str, str, int]] = field(default_factory=dict)

    def observe(self, record: Record) -> list[Violation]:
        event = events_of(record, "DocumentObserved")
        if event is None or record["node"] not in self.correct_nodes:
            return []
        node = record["node"]
        updates, document = event["updates_digest"], event["document_digest"]
        self.latest[node] = (updates, document, event["updates"])
        first = self.document_of.setdefault(updates, (document, node))
        if first[0] == document:
            return []
        detail = (
            f"replicas {first[1][:8]} and {node[:8]} hold the same {event['updates']} updates "
            f"but different documents ({first[0][:12]} vs {document[:12]})"
        )
        return [Violation(self.name, record["t"], detail)]

    def finish(self) -> list[Violation]:
        states = {node: self.latest.get(node) for node in sorted(self.correct_nodes)}
        if len({state[:2] if state else None for state in states.values()}) <= 1:
            return []
        described = ", ".join(
            f"{node[:8]}: {state[2]} updates, document {state[1][:12]}"
            if state
            else f"{node[:8]}: -"
            for node, state in states.items()
        )
        return [Violation(self.name, -1, f"correct replicas did not converge: {described}")]


@dataclass(slots=True)
class SameVerdictChecker:
    """No update is applied by one correct replica and rejected as invalid by another.

    A bad signature is not a verdict on the update (its id does not cover the signature,
    and a genuine copy may still come), so such rejections are not compared.
    """

    correct_nodes: set[str]
    name: str = "same verdict"
    applied: dict[str, str] = field(default_factory=dict)
    rejected: dict[str, tuple[str, str]] = field(default_factory=dict)

    def observe(self, record: Record) -> list[Violation]:
        if record["kind"] != "event" or record["node"] not in self.correct_nodes:
            return []
        node = record["node"]
        event = record["event"]
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "UpdateApplied":
            update = event["update_id"]
            self.applied.setdefault(update, node)
            if update in self.rejected:
                return [self._violation(record, update)]
        elif kind == "UpdateRejected" and event["reason"] != "bad signature":
            update = event["update_id"]
            self.rejected.setdefault(update, (node, event["reason"]))
            if update in self.applied:
                return [self._violation(record, update)]
        return []

    def _violation(self, record: Record, update: str) -> Violation:
        rejecter, reason = self.rejected[update]
        detail = (
            f"update {update[:12]} applied by {self.applied[update][:8]} but rejected by "
            f"{rejecter[:8]} ({reason})"
        )
        return Violation(self.name, record["t"], detail)

    def finish(self) -> list[Violation]:
        return []


@dataclass(slots=True)
class AnswerBudgetChecker:
    """No correct replica answers one peer with more bytes than its budget allows.

    A replica's answers to one peer's `Heads` and `Want`s are paced by a token bucket of
    `budget_bytes` that earns `bytes_per_second`: from its first answer to that peer at
    t0, all it sends that peer by t is at most budget + rate * (t - t0).  A restart
    starts the bucket again.  Without pacing, the Byzantine replicas' empty
    announcements and `Want`s of everything break this in every run.
    """

    correct_nodes: set[str]
    budget_bytes: int
    bytes_per_second: int
    name: str = "answer budget"
    sent: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def observe(self, record: Record) -> list[Violation]:
        node = record.get("node")
        if record["kind"] == "restart":
            for key in [key for key in self.sent if key[0] == node]:
                del self.sent[key]
            return []
        event = events_of(record, "AnswerSent")
        if event is None or node not in self.correct_nodes:
            return []
        key = (node, event["peer"])
        first_t, total = self.sent.get(key, (record["t"], 0))
        total += event["size_bytes"]
        self.sent[key] = (first_t, total)
        bound = self.budget_bytes + self.bytes_per_second * (record["t"] - first_t) // 1000
        if total <= bound:
            return []
        detail = (
            f"{node[:8]} sent {str(event['peer'])[:8]} {total} bytes of answers since "
            f"t={first_t} ms, more than the budget allows ({bound})"
        )
        return [Violation(self.name, record["t"], detail)]

    def finish(self) -> list[Violation]:
        return []
