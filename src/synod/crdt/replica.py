"""A BFT-CRDT replica: a sans-I/O core that edits, validates, delivers and reconciles.

Theory of operation:

* Delivery (Kleppmann, *Making CRDTs Byzantine Fault Tolerant*, PaPoC 2022, section 3):
  an update received from anyone is first checked on its own (shape, bounds, the
  author's signature over its id); it then waits in a bounded buffer until all its
  predecessors are applied, and is applied in causal order.  An update whose
  predecessors never arrive is never applied.
* Validity (section 4): at delivery an update must have clock = 1 + the largest clock of
  its predecessors, sequence = 1 + the largest sequence of its author's updates among
  its predecessors (1 if none), and operations whose references all lie in its causal
  past (`document.py`).  These depend only on the update and its causal past, so every
  correct replica accepts or rejects it alike; an update that names a rejected update is
  rejected too.  Rejections are remembered (bounded, FIFO); a forgotten rejection is
  simply re-derived when the update comes back.
* Equivocation: two valid updates by one author with one sequence number.  With
  hash-named updates this cannot make replicas diverge (each update is its own DAG node
  with its own element identifiers, and reconciliation spreads both), so both are
  applied, as the paper prescribes, and `EquivocationDetected` reports the evidence.  A
  correct author never equivocates: it names its own previous update among the
  predecessors of the next, and persists an update before sending it.
* Reconciliation (Kleppmann and Howard, *Byzantine Eventual Consistency and the
  Fundamental Limits of Peer-to-Peer Databases*, 2020, section 4): replicas announce
  their heads (`Heads`) on start and every `announce_interval_ms`.  A replica that
  receives heads sends back, ancestors first, every update not in the causal past of
  the heads it knows; if some heads are unknown to it, it answers with its own heads so
  that the peer does the same.  Updates that arrive with missing predecessors are asked
  for by id (`Want`).  Nothing a peer says is trusted: every update is verified and
  validated as if it came from its author directly.

Persistence: every applied update is a `Persist` record keyed by its application order,
so a restarted replica rebuilds the same document by re-applying its records in key
order (its own disk is trusted, so signatures are not checked again).
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from synod.core import (
    Broadcast,
    Core,
    Input,
    LocalError,
    Persist,
    Proposed,
    Received,
    Send,
    SetTimer,
    Started,
    Step,
    Storage,
    TimerFired,
)
from synod.crdt.causal import UpdateGraph, Waiting, WaitingBuffer, waiting_memory_bytes
from synod.crdt.document import Document, InvalidUpdate, LocalTransaction, Path
from synod.crdt.messages import (
    MAX_IDS_PER_MESSAGE,
    MAX_PREDECESSORS,
    UPDATE_CODEC,
    Heads,
    Update,
    UpdateBody,
    Updates,
    Value,
    Want,
    body_id,
    sign_update,
    signature_is_valid,
    standalone_error,
)
from synod.crdt.pacing import ByteBudget
from synod.crdt.snapshot import ENCODER as SNAPSHOT_ENCODER
from synod.crdt.snapshot import FORMAT_VERSION, SNAPSHOT_KEY, Snapshot, decode_snapshot
from synod.crypto import KeyPair, NodeId, blake2b
from synod.wire import DecodeError

ANNOUNCE_TIMER = "crdt.announce"
WALK_BYTES_PER_UPDATE = 16
"""What walking the history to answer `Heads` is charged to the answer budgets, per
applied update visited (about the CPU of sending that many bytes)."""
STORAGE_PREFIX = b"crdt/update/"


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """Bounds and periods of a replica (all peer-driven memory is bounded here)."""

    announce_interval_ms: int = 5_000
    max_waiting_updates: int = 10_000
    max_waiting_bytes: int = 32 * 1024 * 1024
    max_remembered_rejections: int = 65_536
    max_updates_per_message: int = 1_024
    max_bytes_per_message: int = 1024 * 1024
    heads_answer_burst: int = 8
    """Answers to one peer's `Heads` allowed at once (a token bucket; 0: no limit)."""
    heads_answer_interval_ms: int = 500
    """One more answer to a peer's `Heads` is allowed per this many milliseconds."""
    max_rate_limited_peers: int = 4_096
    answer_bytes_per_peer: int = 8 * 1024 * 1024
    """Bytes one peer's requests (`Heads`, `Want`) may make this replica send at once
    (a byte budget; 0: no limit): two maximum-size updates."""
    answer_bytes_per_peer_per_second: int = 2 * 1024 * 1024
    """What one peer's budget earns per second."""
    answer_bytes_total: int = 32 * 1024 * 1024
    """Bytes all peers' requests together may make this replica send at once, so that
    many identities (keys are free) cost no more than this (0: no limit)."""
    answer_bytes_total_per_second: int = 8 * 1024 * 1024
    """What the shared budget earns per second."""
    network: bytes = b""
    """The network id in the updates' signature domain (`synod.crypto.in_network`)."""
    members: frozenset[bytes] | None = None
    """The group: the only authors whose updates are accepted (None: anyone)."""
    snapshot_interval: int = 10_000
    """Persist a snapshot of the state after this many applied updates, and then each
    time the history has grown by this many or by a quarter, whichever is more: a
    restart applies at most that many updates, and writing snapshots costs a constant
    factor per update, not the whole state at every interval (0: never; see
    `synod.crdt.snapshot`)."""


def document_digest(value: Any) -> str:
    """Hex BLAKE2b of `value` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return blake2b(text.encode("utf-8", "surrogatepass"), person=b"synod-crdt-doc").hex()


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class UpdateApplied:
    """An update was applied to the document (`local`: built by this replica)."""

    update_id: bytes
    author: bytes
    sequence: int
    local: bool


@dataclass(frozen=True, slots=True)
class UpdateRejected:
    """An update is invalid; every correct replica rejects it too."""

    update_id: bytes
    author: bytes
    reason: str
    sender: bytes | None


@dataclass(frozen=True, slots=True)
class UpdateEvicted:
    """A waiting update was dropped to keep the buffer bounded (it may come back)."""

    update_id: bytes


@dataclass(frozen=True, slots=True)
class EquivocationDetected:
    """Evidence: `author` signed two different updates with the same sequence number."""

    author: bytes
    sequence: int
    first_id: bytes
    second_id: bytes


@dataclass(frozen=True, slots=True)
class MessageDropped:
    """A peer message was not understood (wrong type or undecodable update)."""

    sender: bytes
    reason: str


# ---------------------------------------------------------------- local edits


@dataclass(frozen=True, slots=True)
class Put:
    """Set `key` of the map at `path` to `value` (NewMap() etc. create objects)."""

    path: Path
    key: str
    value: Value

    def apply(self, transaction: LocalTransaction) -> None:
        transaction.put(self.path, self.key, self.value)


@dataclass(frozen=True, slots=True)
class Remove:
    """Remove `key` from the map at `path`."""

    path: Path
    key: str

    def apply(self, transaction: LocalTransaction) -> None:
        transaction.remove(self.path, self.key)


@dataclass(frozen=True, slots=True)
class InsertText:
    """Insert `text` at character `index` of the text at `path`."""

    path: Path
    index: int
    text: str

    def apply(self, transaction: LocalTransaction) -> None:
        transaction.insert_text(self.path, self.index, self.text)


@dataclass(frozen=True, slots=True)
class Insert:
    """Insert `values` at position `index` of the list at `path`."""

    path: Path
    index: int
    values: list[Value]

    def apply(self, transaction: LocalTransaction) -> None:
        transaction.insert(self.path, self.index, self.values)


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete `count` elements from position `index` of the text or list at `path`."""

    path: Path
    index: int
    count: int = 1

    def apply(self, transaction: LocalTransaction) -> None:
        transaction.delete(self.path, self.index, self.count)


@dataclass(frozen=True, slots=True)
class Increment:
    """Add `delta` to the counter at `path`."""

    path: Path
    delta: int

    def apply(self, transaction: LocalTransaction) -> None:
        transaction.increment(self.path, self.delta)


Edit = Put | Remove | InsertText | Insert | Delete | Increment


@dataclass(frozen=True, slots=True)
class LocalChange:
    """The value of `Proposed`: edits that become one signed update (a transaction)."""

    edits: tuple[Edit, ...] = field(default_factory=tuple)


# ---------------------------------------------------------------- the core


class Replica:
    """One replica of a BFT-CRDT document (implements `synod.core.Core`)."""

    def __init__(
        self, keys: KeyPair, storage: Storage | None = None, config: ReplicaConfig | None = None
    ) -> None:
        self._keys = keys
        self.config = config or ReplicaConfig()
        self.graph = UpdateGraph()
        self.document = Document(self.graph)
        self._encoded: list[bytes] = [b""]
        self._buffer = WaitingBuffer(self.config.max_waiting_updates, self.config.max_waiting_bytes)
        self._rejected: dict[bytes, str] = {}
        self._own_last: int | None = None
        self._heads_tokens: dict[bytes, tuple[int, int]] = {}
        self._next_snapshot = 0
        self._plan_snapshot(0)
        self._answer_budgets: dict[bytes, ByteBudget] = {}
        self._answer_resume: dict[bytes, tuple[bytes, int]] = {}
        self._answer_total = ByteBudget(
            self.config.answer_bytes_total, self.config.answer_bytes_total_per_second
        )
        if storage:
            self._restore(storage)

    @property
    def node_id(self) -> NodeId:
        """This replica's identity (the author key of its updates)."""
        return self._keys.node_id

    # ------------------------------------------------------------ queries

    def value(self, path: Path = ()) -> Any:
        """The plain JSON value at `path`."""
        return self.document.value(path)

    def heads(self) -> list[bytes]:
        """Ids of the current heads, ascending."""
        return self.graph.head_ids()

    def encoded_update(self, update_id: bytes) -> bytes:
        """The canonical bytes of an applied update (KeyError if not applied)."""
        return self._encoded[self.graph.ordinal_of[update_id]]

    def applied_ids(self) -> list[bytes]:
        """Ids of the applied updates, in application order."""
        return self.graph.ids[1:]

    def history(self) -> list[bytes]:
        """Applied update ids in a canonical order: by (clock, id).

        Replicas holding the same updates list them identically, and every update comes
        after its predecessors (its clock is greater), whatever order they arrived in.
        """
        graph = self.graph
        return sorted(graph.ids[1:], key=lambda i: (graph.clocks[graph.ordinal_of[i]], i))

    def document_digest(self) -> str:
        """Hex BLAKE2b of the document's canonical JSON: equal documents, equal digests."""
        return document_digest(self.value())

    def updates_digest(self) -> str:
        """Hex BLAKE2b of the sorted applied update ids: equal sets, equal digests."""
        return blake2b(b"".join(sorted(self.graph.ids[1:])), person=b"synod-crdt-set").hex()

    def rejected_ids(self) -> set[bytes]:
        """Ids of the rejections still remembered."""
        return set(self._rejected)

    def waiting_ids(self) -> set[bytes]:
        """Ids of updates waiting for predecessors."""
        return set(self._buffer.entries)

    # ------------------------------------------------------------ inputs

    def handle(self, event: Input, now_ms: int) -> Step:
        """Process one input (see `synod.core.Core`); peer input never raises."""
        step = Step()
        if isinstance(event, Started) or (
            isinstance(event, TimerFired) and event.name == ANNOUNCE_TIMER
        ):
            step.outgoing.append(Broadcast(self._heads_message()))
            step.timers.append(SetTimer(ANNOUNCE_TIMER, self.config.announce_interval_ms))
        elif isinstance(event, Proposed):
            change = event.value
            if not isinstance(change, LocalChange):
                raise LocalError("propose a LocalChange")
            self.transact(change.edits, step)
        elif isinstance(event, Received):
            self._received(event.sender, event.message, step, now_ms)
        return step

    def transact(self, edits: Iterable[Edit], step: Step | None = None) -> Step:
        """Apply `edits` as one signed update and broadcast it.

        All or nothing: an edit the caller gets wrong, or an update that another replica
        would refuse (too large, too many counters, text that cannot be encoded), raises
        `LocalError` and undoes every edit of the transaction.
        """
        step = step if step is not None else Step()
        graph = self.graph
        chosen = self._chosen_predecessors()
        clock = 1 + max((graph.clocks[p] for p in chosen), default=0)
        transaction = self.document.begin(len(graph.ids), clock, chosen)
        try:
            for edit in edits:
                edit.apply(transaction)
            # Edits may have named more predecessors (references outside the past of
            # the chosen ones); the list is canonical: ascending ids, no duplicates.
            ordered = sorted(set(chosen), key=graph.ids.__getitem__)
            update_id, update, encoded = self._signed_update(ordered, clock, transaction)
        except LocalError:
            transaction.abort()
            raise
        except Exception as error:  # msgspec refuses e.g. a lone surrogate in a string
            transaction.abort()
            raise LocalError(f"the transaction cannot be encoded: {error}") from None
        transaction.commit(update_id)
        body = update.body
        self._record(update_id, body, ordered, encoded, step)
        step.outgoing.append(Broadcast(Updates([encoded])))
        step.events.append(UpdateApplied(update_id, self.node_id, body.sequence, local=True))
        return step

    def _chosen_predecessors(self) -> list[int]:
        """The predecessors a new local update starts from (a list edits may extend).

        At most `MAX_PREDECESSORS // 2`, whatever the number of heads (so that any
        number of concurrent writers, honest or not, can never make an update that
        receivers refuse): this author's last update, then the heads by descending
        clock, so that the largest clock is among them and later additions cannot
        change the update's clock.  Heads left out stay heads and are merged by the
        next updates.
        """
        graph = self.graph
        chosen = [] if self._own_last is None else [self._own_last]
        if len(graph.heads) < MAX_PREDECESSORS // 2:  # the usual case: name them all
            chosen.extend(head for head in graph.heads if head != self._own_last)
            return chosen
        heads = sorted(graph.heads, key=lambda head: (-graph.clocks[head], head))
        for head in heads:
            if len(chosen) >= MAX_PREDECESSORS // 2:
                break
            if head != self._own_last:
                chosen.append(head)
        return chosen

    def _signed_update(
        self, ordered: list[int], clock: int, transaction: LocalTransaction
    ) -> tuple[bytes, Update, bytes]:
        graph = self.graph
        # The validity rule itself, so the update is valid even if another process
        # signs with this key (its updates then reach us as foreign ones).
        own = [graph.sequences[p] for p in ordered if graph.authors[p] == self.node_id]
        body = UpdateBody(
            self.node_id,
            1 + max(own, default=0),
            clock,
            [graph.ids[p] for p in ordered],
            transaction.operations,
        )
        update_id, update = sign_update(self._keys, body, self.config.network)
        encoded = UPDATE_CODEC.encode(update)
        # Clock and sequence follow the causal rule by construction (above); the rule
        # that could refuse what an honest author makes is the one checked here.
        problem = self._standalone_error(body, len(encoded))
        if problem is not None:
            raise LocalError(f"other replicas would refuse this transaction: {problem}")
        return update_id, update, encoded

    def _standalone_error(self, body: UpdateBody, encoded_bytes: int) -> str | None:
        return standalone_error(body, encoded_bytes, self.config.members)

    def _record(
        self,
        update_id: bytes,
        body: UpdateBody,
        predecessors: list[int],
        encoded: bytes,
        step: Step,
    ) -> int:
        ordinal, twin = self.graph.add(
            update_id, body.author, body.sequence, body.clock, predecessors
        )
        self._encoded.append(encoded)
        assert len(self._encoded) == len(self.graph.ids)
        if body.author == self.node_id and (
            self._own_last is None or self.graph.sequences[self._own_last] < body.sequence
        ):
            self._own_last = ordinal
        step.persist.append(Persist(STORAGE_PREFIX + ordinal.to_bytes(8, "big"), encoded))
        if self.config.snapshot_interval > 0 and ordinal >= self._next_snapshot:
            step.persist.append(Persist(SNAPSHOT_KEY, self._snapshot_bytes()))
            self._plan_snapshot(ordinal)
        if twin is not None:
            step.events.append(
                EquivocationDetected(body.author, body.sequence, self.graph.ids[twin], update_id)
            )
        return ordinal

    def _received(self, sender: bytes, message: object, step: Step, now_ms: int) -> None:
        if isinstance(message, Updates):
            self._received_updates(sender, message, step)
        elif isinstance(message, Heads | Want) and not self._is_member(sender):
            step.events.append(MessageDropped(sender, "requests are answered to members only"))
        elif isinstance(message, Heads):
            if self._may_answer_heads(sender, now_ms):
                self._received_heads(sender, message, step, now_ms)
            else:
                step.events.append(MessageDropped(sender, "heads answered too often"))
        elif isinstance(message, Want):
            self._received_want(sender, message, step, now_ms)
        else:
            step.events.append(MessageDropped(sender, f"not a CRDT message: {type(message)}"))

    # ------------------------------------------------------------ reconciliation

    def _may_answer_heads(self, sender: bytes, now_ms: int) -> bool:
        """Token bucket per peer: answering heads costs work proportional to the history.

        A peer that announces empty heads over and over would otherwise make this replica
        send its whole history each time.  A skipped answer costs only time: the peer's
        next periodic announcement is answered once a token is back.
        """
        burst = self.config.heads_answer_burst
        if burst <= 0:
            return True
        interval_ms = max(1, self.config.heads_answer_interval_ms)
        tokens, since_ms = self._heads_tokens.pop(sender, (burst, now_ms))
        earned = max(0, now_ms - since_ms) // interval_ms
        if tokens + earned >= burst:
            tokens, since_ms = burst, now_ms
        else:
            tokens, since_ms = tokens + earned, since_ms + earned * interval_ms
        allowed = tokens > 0
        self._heads_tokens[sender] = (tokens - 1 if allowed else tokens, since_ms)
        while len(self._heads_tokens) > self.config.max_rate_limited_peers:
            del self._heads_tokens[next(iter(self._heads_tokens))]
        return allowed

    def _is_member(self, sender: bytes) -> bool:
        members = self.config.members
        return members is None or sender in members

    def _received_heads(self, sender: bytes, message: Heads, step: Step, now_ms: int) -> None:
        ordinal_of = self.graph.ordinal_of
        if set(message.heads) == {self.graph.ids[h] for h in self.graph.heads}:
            return
        known = [ordinal_of[h] for h in message.heads if h in self.graph]
        unknown = [h for h in message.heads if h not in self.graph and h not in self._rejected]
        # Walking the history is charged to the budgets like the bytes it would send, so
        # requests from many identities cost a bucket check each once they are spent.
        walk_bytes = WALK_BYTES_PER_UPDATE * len(self.graph)
        if self._answer_allowance(sender, now_ms) >= walk_bytes:
            missing = self.graph.missing_from(known)
            announced = blake2b(b"".join(message.heads), person=b"synod-crdt-ann")
            start = self._resume_at(sender, announced, len(missing))
            sent = self._send_ordinals(
                sender, missing[start:], step, now_ms, minimum_charge=walk_bytes
            )
            resume = start + sent if start + sent < len(missing) else 0
            self._remember_resume(sender, announced, resume)
        else:
            step.events.append(MessageDropped(sender, "answer paced: budget spent"))
        if unknown:
            step.outgoing.append(Send(NodeId(sender), self._heads_message()))

    def _heads_message(self) -> Heads:
        """At most `MAX_IDS_PER_MESSAGE` heads (those with the largest clocks): any
        subset is a correct announcement, answered with what it does not cover."""
        graph = self.graph
        heads = sorted(graph.heads, key=lambda head: (-graph.clocks[head], head))
        return Heads(sorted(graph.ids[head] for head in heads[:MAX_IDS_PER_MESSAGE]))

    def _received_want(self, sender: bytes, message: Want, step: Step, now_ms: int) -> None:
        ordinal_of = self.graph.ordinal_of
        wanted = sorted({ordinal_of[i] for i in message.ids if i in self.graph})
        self._send_ordinals(sender, wanted, step, now_ms)

    def _answer_budget(self, peer: bytes) -> ByteBudget:
        budget = self._answer_budgets.pop(peer, None)
        if budget is None:
            config = self.config
            budget = ByteBudget(
                config.answer_bytes_per_peer, config.answer_bytes_per_peer_per_second
            )
        self._answer_budgets[peer] = budget  # most recently used last
        while len(self._answer_budgets) > self.config.max_rate_limited_peers:
            del self._answer_budgets[next(iter(self._answer_budgets))]
        return budget

    def _resume_at(self, peer: bytes, announced: bytes, missing: int) -> int:
        """Where the answer to these same heads of `peer` left off (0: from the start).

        A paced answer is a prefix of what the peer misses.  When its heads did not
        move (two replicas that each hold a head the other does not know answer each
        other with everything, and the prefix may hold only what the peer has), the
        next answer goes on after that prefix instead of sending it again; past the
        end it starts over, so what the network lost is sent again.
        """
        remembered = self._answer_resume.get(peer)
        if remembered is None or remembered[0] != announced or remembered[1] >= missing:
            return 0
        return remembered[1]

    def _remember_resume(self, peer: bytes, announced: bytes, resume: int) -> None:
        self._answer_resume.pop(peer, None)
        self._answer_resume[peer] = (announced, resume)
        while len(self._answer_resume) > self.config.max_rate_limited_peers:
            del self._answer_resume[next(iter(self._answer_resume))]

    def _answer_allowance(self, peer: bytes, now_ms: int) -> int:
        """Bytes this replica may send `peer` in answers now (both budgets)."""
        peer_now = self._answer_budget(peer).available(now_ms)
        return min(peer_now, self._answer_total.available(now_ms))

    def _send_ordinals(
        self, to: bytes, ordinals: list[int], step: Step, now_ms: int, minimum_charge: int = 0
    ) -> int:
        """Send `ordinals` (ancestors first) in batches, cut to the peer's and the shared
        byte budgets (charged at least `minimum_charge`); what is cut follows at the
        peer's next request.  Returns how many were sent."""
        peer_budget = self._answer_budget(to)
        allowed = self._answer_allowance(to, now_ms)
        spent = 0
        count = 0
        batch: list[bytes] = []
        batch_bytes = 0
        for ordinal in ordinals:
            encoded = self._encoded[ordinal]
            if spent + len(encoded) > allowed:
                left = len(ordinals) - count
                step.events.append(MessageDropped(to, f"answer paced: {left} updates later"))
                break
            spent += len(encoded)
            count += 1
            if batch and (
                len(batch) >= self.config.max_updates_per_message
                or batch_bytes + len(encoded) > self.config.max_bytes_per_message
            ):
                step.outgoing.append(Send(NodeId(to), Updates(batch)))
                batch, batch_bytes = [], 0
            batch.append(encoded)
            batch_bytes += len(encoded)
        if batch:
            step.outgoing.append(Send(NodeId(to), Updates(batch)))
        peer_budget.spend(max(spent, minimum_charge))
        self._answer_total.spend(max(spent, minimum_charge))
        return count

    # ------------------------------------------------------------ delivery

    def _received_updates(self, sender: bytes, message: Updates, step: Step) -> None:
        asked: set[bytes] = set()
        for encoded in message.updates:
            try:
                update = UPDATE_CODEC.decode(encoded)
            except DecodeError as error:
                step.events.append(MessageDropped(sender, f"undecodable update: {error}"))
                continue
            asked.update(self.receive(update, step, sender=sender))
        missing = [i for i in sorted(asked) if i not in self.graph and i not in self._buffer]
        if missing:
            step.outgoing.append(Send(NodeId(sender), Want(missing[:MAX_IDS_PER_MESSAGE])))

    def receive(
        self,
        update: Update,
        step: Step,
        sender: bytes | None = None,
    ) -> list[bytes]:
        """Take one update from a peer (or a test); returns predecessors it waits for."""
        body = update.body
        update_id = body_id(body)
        if update_id in self.graph or update_id in self._buffer or update_id in self._rejected:
            return []
        # The canonical encoding, never the peer's bytes: a peer could pad its encoding
        # to make one replica find the update too large and another not.
        encoded = UPDATE_CODEC.encode(update)
        if not self._passes_checks_alone(update_id, update, len(encoded), sender, step):
            return []
        missing = {p for p in body.predecessors if p not in self.graph}
        if missing:
            size = waiting_memory_bytes(len(encoded), len(missing))
            waiting = Waiting(encoded, body.author, size, missing, sender)
            for evicted in self._buffer.add(update_id, waiting):
                step.events.append(UpdateEvicted(evicted))
            return sorted(missing)
        self._deliver_ready(update_id, update, encoded, sender, step)
        return []

    def _passes_checks_alone(
        self, update_id: bytes, update: Update, encoded_bytes: int, sender: bytes | None, step: Step
    ) -> bool:
        body = update.body
        problem = self._standalone_error(body, encoded_bytes)
        if problem is None and any(p in self._rejected for p in body.predecessors):
            problem = "a predecessor was rejected"
        if problem is not None:
            self._reject(update_id, body.author, problem, sender, step)
            return False
        if not signature_is_valid(update_id, update, self.config.network):
            # Not remembered: the signature is not part of the id, so a genuine copy of
            # this update may still arrive.
            step.events.append(UpdateRejected(update_id, body.author, "bad signature", sender))
            return False
        return True

    def _deliver_ready(
        self, update_id: bytes, update: Update, encoded: bytes, sender: bytes | None, step: Step
    ) -> None:
        queue = [(update_id, update, encoded, sender)]
        while queue:
            current_id, current, current_encoded, current_sender = queue.pop()
            if not self._deliver(current_id, current, current_encoded, current_sender, step):
                continue
            ready = self._buffer.arrived(current_id)
            for ready_id in reversed(ready):
                waiting = self._buffer.remove(ready_id)
                assert waiting is not None
                ready_update = UPDATE_CODEC.decode(waiting.encoded)  # decoded once before
                queue.append((ready_id, ready_update, waiting.encoded, waiting.sender))

    def _deliver(
        self, update_id: bytes, update: Update, encoded: bytes, sender: bytes | None, step: Step
    ) -> bool:
        body = update.body
        problem = self._causal_error(body)
        predecessors = [self.graph.ordinal_of[p] for p in body.predecessors]
        if problem is None:
            try:
                self.document.apply_update(
                    len(self.graph.ids), update_id, body.clock, body.operations, predecessors
                )
            except InvalidUpdate as error:
                problem = str(error)
        if problem is not None:
            self._reject(update_id, body.author, problem, sender, step)
            return False
        self._record(update_id, body, predecessors, encoded, step)
        step.events.append(UpdateApplied(update_id, body.author, body.sequence, local=False))
        return True

    def _causal_error(self, body: UpdateBody) -> str | None:
        graph = self.graph
        predecessors = [graph.ordinal_of[p] for p in body.predecessors]
        clock = 1 + max((graph.clocks[p] for p in predecessors), default=0)
        if body.clock != clock:
            return "clock is not one more than the predecessors' largest"
        own = [graph.sequences[p] for p in predecessors if graph.authors[p] == body.author]
        if body.sequence != 1 + max(own, default=0):
            return "sequence does not follow the author's previous update"
        return None

    def _reject(
        self, update_id: bytes, author: bytes, reason: str, sender: bytes | None, step: Step
    ) -> None:
        pending = [(update_id, author, reason)]
        while pending:
            current, current_author, current_reason = pending.pop()
            self._remember_rejection(current, current_reason)
            step.events.append(UpdateRejected(current, current_author, current_reason, sender))
            for dependant in self._buffer.dependants_of(current):
                waiting = self._buffer.remove(dependant)
                if waiting is not None:
                    pending.append((dependant, waiting.author, "a predecessor was rejected"))

    def _remember_rejection(self, update_id: bytes, reason: str) -> None:
        self._rejected[update_id] = reason
        while len(self._rejected) > self.config.max_remembered_rejections:
            del self._rejected[next(iter(self._rejected))]

    # ------------------------------------------------------------ restart

    def _plan_snapshot(self, covered: int) -> None:
        self._next_snapshot = covered + max(self.config.snapshot_interval, covered // 4)

    def _snapshot_bytes(self) -> bytes:
        graph = self.graph
        ends, flat = array("q"), array("q")
        for ordinal in range(1, len(graph.ids)):
            flat.extend(graph.predecessors_of(ordinal))
            ends.append(len(flat))
        state = self.document.export_state()
        snapshot = Snapshot(
            version=FORMAT_VERSION,
            updates=len(graph),
            own_last=-1 if self._own_last is None else self._own_last,
            ids=graph.ids[1:],
            authors=graph.authors[1:],
            sequences=graph.sequences[1:].tobytes(),
            clocks=graph.clocks[1:].tobytes(),
            predecessor_ends=ends.tobytes(),
            predecessors=flat.tobytes(),
            **state,
        )
        return SNAPSHOT_ENCODER.encode(snapshot)

    def _load_snapshot(self, storage: Storage, keys: list[bytes]) -> int:
        """Load the persisted snapshot if it matches the records; how many it covers."""
        data = storage.get(SNAPSHOT_KEY)
        snapshot = decode_snapshot(data) if data is not None else None
        if snapshot is None or not 0 < snapshot.updates <= len(keys):
            return 0
        if keys[snapshot.updates - 1] != STORAGE_PREFIX + snapshot.updates.to_bytes(8, "big"):
            return 0
        graph = self.graph
        sequences = array("Q", snapshot.sequences)
        clocks = array("Q", snapshot.clocks)
        ends = array("q", snapshot.predecessor_ends)
        flat = array("q", snapshot.predecessors)
        start = 0
        for index, update_id in enumerate(snapshot.ids):
            predecessors = flat[start : ends[index]].tolist()
            start = ends[index]
            graph.add(
                update_id, snapshot.authors[index], sequences[index], clocks[index], predecessors
            )
        self.document.load_state(snapshot, snapshot.ids, clocks.tolist())
        self._own_last = None if snapshot.own_last < 0 else snapshot.own_last
        self._encoded.extend(storage[key] for key in keys[: snapshot.updates])
        return snapshot.updates

    def _restore(self, storage: Storage) -> None:
        keys = sorted(key for key in storage if key.startswith(STORAGE_PREFIX))
        loaded = self._load_snapshot(storage, keys)
        if loaded:
            self._plan_snapshot(loaded)
        for key in keys[loaded:]:
            encoded = storage[key]
            update = UPDATE_CODEC.decode(encoded)
            body = update.body
            update_id = body_id(body)
            step = Step()
            if not self._deliver(update_id, update, encoded, None, step):
                raise ValueError(f"persisted update {update_id.hex()} does not apply")


if TYPE_CHECKING:

    def _replica_is_a_core(replica: Replica) -> Core:
        return replica  # mypy checks that Replica satisfies the Core protocol
