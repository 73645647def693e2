"""The Stellar Consensus Protocol (`synod.scp`) in the simulator.

Theory of operation.  Every node is an `ScpCore` in the `World`; the application behind
each core is `SimApplication`, whose values are ``b"<slot>:<proposer>:<nonce>"`` and
which judges a value fully valid exactly when it has that shape and names the slot it
is proposed for (anything else is invalid).  The workload targets `slots` consecutive
slots: each node's application proposes its own value for each slot at a time drawn
from the seed, later slots later, so slots overlap and proposals race the protocol.

Topologies (`Topology`), each node's quorum set and the Byzantine bound they tolerate:

* ``symmetric``: n nodes, every node trusts the same flat set with threshold n - f,
  f = (n - 1) // 3.  Two quorums share at least n - 2f >= f + 1 nodes, so with at most
  f Byzantine nodes they share a correct one (quorum intersection despite the faulty
  nodes), and the n - f correct nodes are a quorum by themselves (liveness).
* ``tiered``: k organisations of 3 nodes; each organisation is an inner set with
  threshold 2 of 3 and the top level needs t = floor(2k / 3) + 1 organisations (a
  majority-plus, like Stellar's 67 % tier).  Byzantine nodes go at most one per
  organisation, so every organisation keeps two correct nodes and the correct nodes
  alone still satisfy every slice (liveness).  For safety, two quorums each contain
  two nodes of at least t organisations, so they meet in at least 2t - k
  organisations; in an organisation without a Byzantine member their two pairs share a
  correct node.  A compromised organisation guarantees nothing (the pairs may meet only
  in its Byzantine node), so the bound is: at most one Byzantine node per organisation
  and at most 2t - k - 1 compromised organisations (`Topology.tolerated`).  The tests
  check this bound against a brute-force search for two quorums that meet only in
  Byzantine nodes.
* ``disjoint``: outside the assumptions on purpose, two halves that each trust only
  themselves (two disjoint quorums); each half decides alone and the agreement checker
  must report the fork.

Byzantine nodes run the real core (`ByzantineCore`) with a seeded mix of behaviours:
withholding, replaying old envelopes (their own and others', validly signed), garbage
bytes, equivocation (a different statement to each peer, re-signed with the node's own
key: other values, other counters, forged EXTERNALIZEs, a self-serving quorum set in
which the node alone is a quorum, statements naming another node)
and conflicting statements (two contradicting statements to every peer, in whatever
order the network delivers them).  `collude=True` is the attack outside the bound: the
Byzantine nodes each run two honest faces, one per half of the correct nodes
(`Topology.split`), so with more Byzantine nodes than tolerated each half plus the
colluders forms a quorum and the halves externalize different values; within the bound
the same attack must not fork.

Network faults come from the seed (`FaultPlan.draw`): latency, loss, duplication,
reordering, partitions, and crashes of correct nodes, which restart from what they
persisted.

Outside the scenario, `scp_world` puts correct nodes with the caller's configurations
into a perfect world (`World.perfect`: delay and optional loss only) for tests, examples
and benchmarks that drive the network themselves; `externalized` reads a node's
decisions back from its events.

Checkers, pure over the history (`scp_agreement_checker` is the generic agreement
checker on `Externalized` events):

* agreement: no two intact nodes externalize different values for a slot (and none
  externalizes a slot twice);
* validity (`ScpValidityChecker`): an externalized value passes the application's
  validity for its slot, and without Byzantine nodes it is one some node proposed;
* slot order (`SlotOrderChecker`): each intact node hands out its decisions in slot
  order, the promise `synod.scp.Application` makes;
* liveness (`ScpLivenessChecker`): every intact node has externalized every slot the
  workload targets (judged at the end of the liveness phase, within its budget).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from synod.core import (
    Broadcast,
    CancelTimer,
    Core,
    Input,
    Outgoing,
    Persist,
    Proposed,
    Received,
    Send,
    SetTimer,
    Step,
    Storage,
    TimerFired,
)
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet, qset_hash
from synod.scp import (
    CODEC,
    Application,
    Ballot,
    Confirm,
    Envelope,
    Externalize,
    Externalized,
    Nomination,
    Prepare,
    ScpConfig,
    ScpCore,
    SlotProposal,
    Statement,
    Validity,
    sign_statement,
)
from synod.scp.application import CheckpointVerified
from synod.scp.log import GENESIS_HEAD, SEGMENT_CODEC, LogSegment, chain_head
from synod.scp.messages import Attestation, Checkpoint, sign_attestation
from synod.sim.adversary import (
    AdversaryContext,
    Behaviour,
    ByzantineCore,
    Equivocate,
    Garbage,
    Replay,
    Withhold,
)
from synod.sim.checkers import AgreementChecker, Checker, Violation, events_of
from synod.sim.history import Record
from synod.sim.world import NodeFactory, NodeRef, World
from synod.wire import DecodeError, canonical_bytes

TopologyKind = Literal["symmetric", "tiered", "disjoint"]
TOPOLOGIES: tuple[TopologyKind, ...] = ("symmetric", "tiered", "disjoint")
ORGANISATION_SIZE = 3


def node_keys(index: int) -> KeyPair:
    """Deterministic keys for simulated SCP node `index`."""
    return KeyPair.from_seed(b"synod-sim-scp/" + index.to_bytes(18, "big"))


# ---------------------------------------------------------------- the application


def make_value(slot_index: int, proposer: str, nonce: str) -> bytes:
    """A value of the simulated application (valid for `slot_index` only)."""
    return f"{slot_index}:{proposer}:{nonce}".encode()


def is_valid_value(slot_index: int, value: bytes) -> bool:
    """The application's validity rule, also used by the validity checker."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return False
    parts = text.split(":")
    return len(parts) == 3 and parts[0] == str(slot_index) and all(parts)


LATER_NONCE = "later"
"""Values whose nonce starts with this cannot be judged at first (`SimApplication`)."""


@dataclass
class SimApplication(Application):
    """Values of the simulated workload; short timeouts so that runs stay small.

    With `later_asks` > 0, a valid value whose nonce starts with ``later`` is
    `MAYBE_VALID` the first `later_asks` times this node's application is asked about
    it, then `FULLY_VALID` (an application that learns the previous slot, or whose
    clock reaches the value's timestamp)."""

    round_ms: int = 150
    later_asks: int = 0
    asked: dict[bytes, int] = field(default_factory=dict)
    ledger: ValueLedger | None = None
    """The node's delivered values, when it serves and installs checkpoints."""

    def checkpoint_state(self, first_slot_index: int, slot_index: int) -> bytes | None:
        return self.ledger.segment(first_slot_index, slot_index) if self.ledger else None

    def checkpoint_matches(
        self, first_slot_index: int, slot_index: int, digest: bytes, state: bytes
    ) -> bool:
        if self.ledger is None:
            return False
        return self.ledger.matches(first_slot_index, slot_index, digest, state)

    def validate_value(self, slot_index: int, value: bytes, nomination: bool) -> Validity:
        if not is_valid_value(slot_index, value):
            return Validity.INVALID
        if self.later_asks and value.split(b":")[2].startswith(LATER_NONCE.encode()):
            count = self.asked.get(value, 0) + 1
            self.asked[value] = count
            if count <= self.later_asks:
                return Validity.MAYBE_VALID
        return Validity.FULLY_VALID

    def nomination_timeout_ms(self, round_number: int) -> int:
        return self.round_ms * (1 + round_number)

    def ballot_timeout_ms(self, counter: int) -> int:
        return self.round_ms * (1 + counter)


# ---------------------------------------------------------------- checkpoints

_VALUE_KEY_PREFIX = b"sim/value/"


class ValueLedger:
    """What a simulated application keeps to take part in checkpoints: every value it
    was handed, in slot order, and the head of the replicated log's hash chain over
    them (`synod.scp.log.chain_head`), so its checkpoints are log segments."""

    def __init__(self, first_slot_index: int, storage: Mapping[bytes, bytes]) -> None:
        self.values: dict[int, bytes] = {}
        self.through = first_slot_index - 1
        self.head = GENESIS_HEAD
        for key in sorted(key for key in storage if key.startswith(_VALUE_KEY_PREFIX)):
            self.append(struct.unpack(">Q", key[len(_VALUE_KEY_PREFIX) :])[0], storage[key])

    def append(self, slot_index: int, value: bytes) -> None:
        assert slot_index == self.through + 1, "values are handed out in slot order"
        self.values[slot_index] = value
        self.through = slot_index
        self.head = chain_head(self.head, slot_index, value)

    def segment(self, first_slot_index: int, slot_index: int) -> bytes | None:
        if first_slot_index not in self.values or slot_index > self.through:
            return None
        values = tuple(self.values[index] for index in range(first_slot_index, slot_index + 1))
        return SEGMENT_CODEC.encode(LogSegment(first_slot_index, values))

    def matches(self, first_slot_index: int, slot_index: int, digest: bytes, state: bytes) -> bool:
        if first_slot_index != self.through + 1:
            return False
        try:
            segment = SEGMENT_CODEC.decode(state)
        except DecodeError:
            return False
        if (
            segment.first_slot_index != first_slot_index
            or len(segment.values) != slot_index - first_slot_index + 1
        ):
            return False
        head = self.head
        for offset, value in enumerate(segment.values):
            head = chain_head(head, first_slot_index + offset, value)
        return head == digest


class CheckpointingCore:
    """A correct node's application around its `ScpCore`: it records each value handed
    out (persisted, so a restart rebuilds the chain), attests every checkpoint slot,
    and installs a verified checkpoint as the values of the slots it missed (handed
    out as `Externalized`, in order) before moving SCP past them."""

    def __init__(self, core: ScpCore, ledger: ValueLedger) -> None:
        self.scp = core
        self.ledger = ledger

    @property
    def node_id(self) -> NodeId:
        return self.scp.node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        step = self.scp.handle(event, now_ms)
        for verified in [e for e in step.events if isinstance(e, CheckpointVerified)]:
            segment = SEGMENT_CODEC.decode(verified.state)
            step.events.extend(
                Externalized(verified.first_slot_index + offset, value)
                for offset, value in enumerate(segment.values)
            )
            _merge_steps(step, self.scp.advance_to(verified.slot_index + 1, now_ms))
        for handed in [e for e in step.events if isinstance(e, Externalized)]:
            if handed.slot_index == self.ledger.through + 1:
                self.ledger.append(handed.slot_index, handed.value)
                key = _VALUE_KEY_PREFIX + struct.pack(">Q", handed.slot_index)
                step.persist.append(Persist(key, handed.value))
                self._attest(handed.slot_index, step, now_ms)
        return step

    def _attest(self, slot_index: int, step: Step, now_ms: int) -> None:
        interval = self.scp.config.checkpoint_interval
        if interval > 0 and slot_index % interval == 0:
            _merge_steps(step, self.scp.attest(slot_index, self.ledger.head, now_ms))


def _merge_steps(step: Step, other: Step) -> None:
    step.persist.extend(other.persist)
    step.outgoing.extend(other.outgoing)
    step.timers.extend(other.timers)
    step.events.extend(other.events)


# ---------------------------------------------------------------- topologies


@dataclass(frozen=True, slots=True)
class Topology:
    """Who trusts whom: one quorum set per node index, and who is Byzantine."""

    kind: TopologyKind
    quorum_sets: tuple[QuorumSet, ...]
    byzantine: tuple[int, ...]
    tolerated: int
    """How many Byzantine nodes (placed as `byzantine` places them) keep safety."""
    description: str

    @property
    def size(self) -> int:
        return len(self.quorum_sets)

    @property
    def within_assumptions(self) -> bool:
        return self.kind != "disjoint" and len(self.byzantine) <= self.tolerated

    def correct(self) -> list[int]:
        return [index for index in range(self.size) if index not in self.byzantine]

    def split(self) -> tuple[list[int], list[int]]:
        """Two halves of the correct nodes for colluders to show different faces.

        Tiered: the correct members of a compromised organisation go one to each half,
        whole clean organisations alternate, so each half plus the colluders covers
        as many organisations as it can.  Otherwise: the first and second half."""
        correct = self.correct()
        if self.kind != "tiered":
            middle = len(correct) // 2
            return correct[:middle], correct[middle:]
        halves: tuple[list[int], list[int]] = ([], [])
        clean = 0
        for first in range(0, self.size, ORGANISATION_SIZE):
            members = [index for index in correct if first <= index < first + ORGANISATION_SIZE]
            if len(members) < ORGANISATION_SIZE:
                for position, index in enumerate(members):
                    halves[position % 2].append(index)
            else:
                halves[clean % 2].extend(members)
                clean += 1
        return halves


def _ids(indices: Sequence[int]) -> tuple[NodeId, ...]:
    return tuple(node_keys(index).node_id for index in indices)


def symmetric_topology(nodes: int, byzantine: int) -> Topology:
    """n nodes with one flat quorum set of threshold n - f; nodes 0..k-1 Byzantine."""
    if nodes < 1 or not 0 <= byzantine <= nodes:
        raise ValueError("need at least one node and 0 <= byzantine <= nodes")
    faulty = (nodes - 1) // 3
    qset = QuorumSet(threshold=nodes - faulty, validators=_ids(range(nodes)))
    return Topology(
        kind="symmetric",
        quorum_sets=(qset,) * nodes,
        byzantine=tuple(range(byzantine)),
        tolerated=faulty,
        description=f"symmetric: {nodes} nodes, threshold {nodes - faulty} (f = {faulty})",
    )


def tiered_threshold(organisations: int) -> int:
    """Organisations a top-level slice needs: a majority-plus, floor(2k / 3) + 1."""
    return (2 * organisations) // 3 + 1


def tiered_topology(organisations: int, byzantine: int) -> Topology:
    """`organisations` of 3 nodes (2-of-3 inside, majority-plus on top); the first node
    of each of the first `byzantine` organisations is Byzantine (one per organisation)."""
    if organisations < 1 or not 0 <= byzantine <= organisations:
        raise ValueError("need at least one organisation and at most one Byzantine node each")
    threshold = tiered_threshold(organisations)
    inner = tuple(
        QuorumSet(
            threshold=2,
            validators=_ids(range(org * ORGANISATION_SIZE, (org + 1) * ORGANISATION_SIZE)),
        )
        for org in range(organisations)
    )
    qset = QuorumSet(threshold=threshold, inner_sets=inner)
    tolerated = max(0, 2 * threshold - organisations - 1)
    return Topology(
        kind="tiered",
        quorum_sets=(qset,) * (organisations * ORGANISATION_SIZE),
        byzantine=tuple(org * ORGANISATION_SIZE for org in range(byzantine)),
        tolerated=tolerated,
        description=(
            f"tiered: {organisations} organisations of {ORGANISATION_SIZE} (2 of 3 each), "
            f"top threshold {threshold}; tolerates {tolerated} compromised organisation(s), "
            "one Byzantine node each"
        ),
    )


def disjoint_topology(nodes: int) -> Topology:
    """Two halves that each trust only themselves: two disjoint quorums."""
    if nodes < 2:
        raise ValueError("a split needs at least two nodes")
    half = nodes // 2
    groups = (range(half), range(half, nodes))
    sets = [QuorumSet(threshold=len(group), validators=_ids(group)) for group in groups]
    return Topology(
        kind="disjoint",
        quorum_sets=tuple(sets[0] if index < half else sets[1] for index in range(nodes)),
        byzantine=(),
        tolerated=0,
        description=f"disjoint: two halves of {half} and {nodes - half} nodes, each a quorum",
    )


def build_topology(kind: TopologyKind, nodes: int, byzantine: int) -> Topology:
    """The topology named `kind` (`nodes` counts nodes; tiered uses nodes // 3 orgs)."""
    if kind == "symmetric":
        return symmetric_topology(nodes, byzantine)
    if kind == "tiered":
        if nodes % ORGANISATION_SIZE:
            raise ValueError("a tiered topology has a multiple of 3 nodes")
        return tiered_topology(nodes // ORGANISATION_SIZE, byzantine)
    if byzantine:
        raise ValueError("the disjoint topology has no Byzantine nodes (it forks anyway)")
    return disjoint_topology(nodes)


# ---------------------------------------------------------------- Byzantine behaviour


MADE_UP_IDS = 6
"""Made-up identities (fresh keys) an insider signs statements with."""


def made_up_keys(owner: KeyPair) -> tuple[KeyPair, ...]:
    """Fresh keys only `owner` (a Byzantine node) holds: ids no honest node trusts."""
    return tuple(
        KeyPair.from_seed(b"synod-sim-scp/made-up/" + owner.node_id[:8] + bytes([index]) * 2)
        for index in range(MADE_UP_IDS)
    )


@dataclass(slots=True)
class Forger:
    """Rewrites a Byzantine node's envelopes and signs them with its own key."""

    keys: KeyPair
    others: tuple[NodeId, ...]
    insider: bool = False

    @property
    def selfish_quorum_set(self) -> QuorumSet:
        """A quorum set in which this node alone is a quorum (claimed now and then; the
        node's inner core knows it, so it answers peers that ask for it)."""
        return QuorumSet(threshold=1, validators=(self.keys.node_id,))

    @property
    def crowd_quorum_set(self) -> QuorumSet:
        """A quorum set naming the node's made-up ids (an insider claims it so that the
        ids join its peers' transitive quorums and fill their slot tables)."""
        validators = (self.keys.node_id, *(key.node_id for key in made_up_keys(self.keys)))
        return QuorumSet(threshold=1, validators=validators)

    @property
    def claimable_quorum_sets(self) -> list[QuorumSet]:
        return [self.selfish_quorum_set, self.crowd_quorum_set]

    def claimed_quorum_set_hash(self, honest_hash: bytes, rng: random.Random) -> bytes:
        draw = rng.random()
        if draw < 0.2:
            return qset_hash(self.selfish_quorum_set)
        if self.insider and draw < 0.4:
            return qset_hash(self.crowd_quorum_set)
        return honest_hash

    def forged_value(self, slot_index: int, rng: random.Random) -> bytes:
        if rng.random() < 0.1:
            return rng.randbytes(rng.randint(1, 12))  # invalid: the application rejects it
        return make_value(slot_index, self.keys.node_id.hex()[:8], f"forged{rng.randrange(3)}")

    def mutate(self, message: Any, rng: random.Random, recipient: NodeId) -> Any:
        """Equivocation: a different statement for this recipient."""
        if not isinstance(message, Envelope) or message.statement.node_id != self.keys.node_id:
            return message  # not ours (a replayed envelope): its signature is not ours to make
        statement = message.statement
        pledges = self._mutate_pledges(statement, rng)
        node_id = statement.node_id
        if rng.random() < 0.05 and self.others:
            # a statement claiming to be another node's: its signature must not verify
            node_id = self.others[rng.randrange(len(self.others))]
            return Envelope(Statement(node_id, statement.slot_index, pledges), message.signature)
        return sign_statement(self.keys, Statement(node_id, statement.slot_index, pledges))

    def _mutate_pledges(self, statement: Statement, rng: random.Random) -> Any:
        value = self.forged_value(statement.slot_index, rng)
        pledges = statement.pledges
        match pledges:
            case Nomination(quorum_set_hash=honest_hash, votes=votes):
                digest = self.claimed_quorum_set_hash(honest_hash, rng)
                kept = tuple(vote for vote in votes if rng.random() < 0.5)
                chosen = tuple(sorted({value, *kept}))
                accepted = chosen if rng.random() < 0.5 else ()
                return Nomination(digest, chosen, accepted)
            case Prepare(quorum_set_hash=honest_hash, ballot=ballot):
                digest = self.claimed_quorum_set_hash(honest_hash, rng)
                counter = max(1, ballot.counter + rng.randint(-1, 3))
                if rng.random() < 0.1:
                    counter = rng.randint(1_000, 2**32 - 2)  # races far ahead of everyone
                if rng.random() < 0.3:
                    # claims to have prepared and to vote commit for the forged value
                    forged = Ballot(counter, value)
                    return Prepare(digest, forged, forged, None, 1, counter)
                return Prepare(digest, Ballot(counter, value), None, None, 0, 0)
            case Confirm(ballot=ballot, quorum_set_hash=honest_hash):
                digest = self.claimed_quorum_set_hash(honest_hash, rng)
                counter = max(1, ballot.counter)
                return Confirm(Ballot(counter, value), counter, 1, counter, digest)
            case Externalize(commit=commit, commit_quorum_set_hash=digest):
                return Externalize(Ballot(commit.counter, value), commit.counter, digest)


@dataclass(frozen=True, slots=True)
class ConflictingStatements:
    """Besides each broadcast envelope, broadcast a contradicting one (both signed)."""

    forger: Forger
    probability: float = 0.5
    name: str = "conflicting statements"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        if not isinstance(outgoing, Broadcast) or context.rng.random() >= self.probability:
            return [outgoing]
        if not context.peers:  # a network of one node: no one to mislead
            return [outgoing]
        peer = context.peers[context.rng.randrange(len(context.peers))]
        return [outgoing, Broadcast(self.forger.mutate(outgoing.message, context.rng, peer))]


@dataclass(frozen=True, slots=True)
class CostlyInsider:
    """A member within the bound sending well-formed, signed statements chosen to cost
    the most (issue 12): beside a broadcast envelope it broadcasts one of

    * a nomination signed by one of its made-up ids (never trusted: refused before the
      signature, unless the id joined a peer's transitive quorum through the node's
      crowd quorum set; then it takes a slot-table entry);
    * a partly invalid nomination of its own: a valid value, an invalid one and a
      ``later`` value the application cannot judge yet;
    * a lure: a nomination voting and accepting only a ``later`` value.
    """

    forger: Forger
    probability: float = 0.6
    name: str = "costly insider"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        message = outgoing.message if isinstance(outgoing, Broadcast) else None
        if not isinstance(message, Envelope) or context.rng.random() >= self.probability:
            return [outgoing]
        statement = message.statement
        rng = context.rng
        slot_index = statement.slot_index
        proposer = self.forger.keys.node_id.hex()[:8]
        later = make_value(slot_index, proposer, f"{LATER_NONCE}{rng.randrange(3)}")
        valid = self.forger.forged_value(slot_index, rng)
        invalid = rng.randbytes(rng.randint(1, 12))
        honest_hash = qset_hash(self.forger.selfish_quorum_set)
        if isinstance(statement.pledges, Nomination | Prepare | Confirm):
            honest_hash = statement.pledges.quorum_set_hash
        choice = rng.randrange(3)
        if choice == 0:
            keys = made_up_keys(self.forger.keys)[rng.randrange(MADE_UP_IDS)]
            pledges = Nomination(honest_hash, tuple(sorted({valid, later})), ())
        elif choice == 1:
            keys = self.forger.keys
            votes = tuple(sorted({valid, invalid, later}))
            pledges = Nomination(honest_hash, votes, tuple(sorted({invalid, later})))
        else:
            keys = self.forger.keys
            pledges = Nomination(honest_hash, (later,), (later,))
        extra = sign_statement(keys, Statement(keys.node_id, slot_index, pledges))
        return [outgoing, Broadcast(extra)]


UNENCODABLE_BATCH = b'["\\ud800"]'
"""A log batch in ASCII and valid JSON whose entry is a lone surrogate (JSON's escape),
which no UTF-8 log can hold."""


@dataclass(frozen=True, slots=True)
class UnencodableBatch:
    """A member within the bound that, beside each nomination it broadcasts, broadcasts
    one (signed, a superset) that also votes for and accepts `UNENCODABLE_BATCH`.  A log
    application must judge it invalid: encoding it raised out of every correct core,
    which stopped its host.  For worlds of `synod.scp.log.LogCore`s (this module's own
    application refuses it as any value it does not know)."""

    keys: KeyPair
    name: str = "unencodable batch"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        message = outgoing.message if isinstance(outgoing, Broadcast) else None
        if not isinstance(message, Envelope) or not isinstance(
            message.statement.pledges, Nomination
        ):
            return [outgoing]
        statement = message.statement
        pledges = message.statement.pledges
        lure = Nomination(
            pledges.quorum_set_hash,
            tuple(sorted({*pledges.votes, UNENCODABLE_BATCH})),
            tuple(sorted({*pledges.accepted, UNENCODABLE_BATCH})),
        )
        signed = sign_statement(self.keys, Statement(statement.node_id, statement.slot_index, lure))
        return [outgoing, Broadcast(signed)]


@dataclass(frozen=True, slots=True)
class CheckpointForgery:
    """A member within the bound attacking nodes that rejoin from checkpoints: it
    answers a checkpoint request with the honest attestations (they are public) and a
    forged state, attests another digest to some peers than to others, and sends
    checkpoints nobody asked for.  (It acts only where checkpoints are on, so runs
    without them draw nothing more from the seed.)"""

    forger: Forger
    probability: float = 0.5
    name: str = "checkpoint forgery"

    def transform(self, outgoing: Outgoing, context: AdversaryContext) -> list[Outgoing]:
        if not isinstance(outgoing, Send | Broadcast):
            return [outgoing]
        message = outgoing.message
        rng = context.rng
        if isinstance(message, Checkpoint) and isinstance(outgoing, Send):
            # always: an honest answer from this node would only help the asker
            return [Send(outgoing.to, self._forged_state(message, rng))]
        if (
            isinstance(message, Attestation)
            and isinstance(outgoing, Broadcast)
            and message.node_id == self.forger.keys.node_id
        ):
            wrong = sign_attestation(self.forger.keys, message.slot_index, rng.randbytes(32))
            chosen: list[Outgoing] = [
                Send(peer, wrong if rng.random() < self.probability else message)
                for peer in context.peers
            ]
            unasked = Checkpoint(message.slot_index, message.digest, (message,), b"junk")
            return [*chosen, Broadcast(unasked)]
        return [outgoing]

    def _forged_state(self, checkpoint: Checkpoint, rng: random.Random) -> Checkpoint:
        try:
            segment = SEGMENT_CODEC.decode(checkpoint.state)
        except DecodeError:
            return checkpoint
        values = list(segment.values)
        position = rng.randrange(len(values)) if values else 0
        forged = make_value(segment.first_slot_index + position, "forger", "forged")
        values[position:position + 1] = [forged]
        state = SEGMENT_CODEC.encode(LogSegment(segment.first_slot_index, tuple(values)))
        return Checkpoint(checkpoint.slot_index, checkpoint.digest, checkpoint.attestations, state)


def draw_behaviours(rng: random.Random, forger: Forger) -> list[Behaviour]:
    """A seeded mix of misbehaviour for one Byzantine node (never empty); an insider
    (`Forger.insider`) always runs `CostlyInsider` as well."""
    pool: list[Behaviour] = [
        Withhold(rng.choice((0.3, 1.0))),
        Replay(probability=0.3),
        Garbage(probability=0.2),
        Equivocate(forger.mutate, probability=0.6),
        ConflictingStatements(forger),
    ]
    chosen = [behaviour for behaviour in pool if rng.random() < 0.4]
    chosen = chosen or [pool[rng.randrange(len(pool))]]
    if forger.insider:
        chosen += [CostlyInsider(forger), CheckpointForgery(forger)]
    return chosen


@dataclass(slots=True)
class Collusion:
    """What colluding Byzantine nodes share: which face produced each envelope."""

    halves: tuple[frozenset[NodeId], frozenset[NodeId]]
    colluders: frozenset[NodeId]
    face_of: dict[bytes, int] = field(default_factory=dict)

    def half_of(self, node: NodeId) -> int | None:
        for number, half in enumerate(self.halves):
            if node in half:
                return number
        return None


class TwoFacedCore:
    """A Byzantine node running two honest cores, one for each half of the correct
    nodes; colluders route envelopes face to face through `Collusion`."""

    def __init__(self, faces: tuple[ScpCore, ScpCore], collusion: Collusion) -> None:
        self._faces = faces
        self._collusion = collusion

    @property
    def node_id(self) -> NodeId:
        return self._faces[0].node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        if isinstance(event, Received):
            face = self._face_for(event.sender, event.message)
            return self._run(face, event, now_ms) if face is not None else Step()
        if isinstance(event, TimerFired):
            face_text, _, name = event.name.partition("|")
            if face_text in ("0", "1"):
                return self._run(int(face_text), TimerFired(name), now_ms)
            return Step()
        step = Step()
        for number in (0, 1):
            face_event: Input = event
            if isinstance(event, Proposed) and isinstance(event.value, SlotProposal):
                proposal = event.value
                face_event = Proposed(
                    SlotProposal(proposal.slot_index, proposal.value + f"/{number}".encode())
                )
            part = self._run(number, face_event, now_ms)
            step.outgoing.extend(part.outgoing)
            step.timers.extend(part.timers)
        return step

    def _face_for(self, sender: NodeId, message: Any) -> int | None:
        if sender in self._collusion.colluders:
            if isinstance(message, Envelope):
                return self._collusion.face_of.get(bytes(message.signature))
            return None
        return self._collusion.half_of(sender)

    def _run(self, number: int, event: Input, now_ms: int) -> Step:
        inner = self._faces[number].handle(event, now_ms)
        step = Step()
        for outgoing in inner.outgoing:
            step.outgoing.extend(self._route(number, outgoing))
        for timer in inner.timers:
            if isinstance(timer, SetTimer):
                step.timers.append(SetTimer(f"{number}|{timer.name}", timer.delay_ms))
            else:
                step.timers.append(CancelTimer(f"{number}|{timer.name}"))
        return step

    def _route(self, number: int, outgoing: Outgoing) -> list[Outgoing]:
        if isinstance(outgoing, Broadcast):
            message = outgoing.message
            if isinstance(message, Envelope):
                self._collusion.face_of[bytes(message.signature)] = number
            audience = sorted(self._collusion.halves[number] | self._collusion.colluders)
            return [Send(peer, message) for peer in audience if peer != self.node_id]
        if isinstance(outgoing, Send):
            if isinstance(outgoing.message, Envelope):
                self._collusion.face_of[bytes(outgoing.message.signature)] = number
            if outgoing.to in self._collusion.colluders:
                return [outgoing]
            half = self._collusion.half_of(outgoing.to)
            return [outgoing] if half == number else []
        return [outgoing]


# ---------------------------------------------------------------- plain networks


def scp_factory(config: ScpConfig) -> NodeFactory:
    """Builds a correct node: an `ScpCore` with `config`, restored from its storage."""

    def build(storage: Storage, rng: random.Random) -> Core:
        return ScpCore(config, storage)

    return build


def scp_world(
    configs: Iterable[ScpConfig],
    *,
    seed: int = 0,
    latency_ms: tuple[int, int] = (1, 10),
    loss_probability: float = 0.0,
) -> World:
    """A perfect world with one started, correct node per configuration, in order.

    Every message is delayed by a latency drawn from `latency_ms`, so the seed decides
    which messages overtake which; nothing else goes wrong unless the caller makes it
    (`silence`, `crash`, `restart`, `loss_probability`).
    """
    world = World.perfect(seed, latency_ms=latency_ms, loss_probability=loss_probability)
    world.add_nodes({config.keys.node_id: scp_factory(config) for config in configs}, CODEC)
    return world


def externalized(world: World, node: NodeRef) -> dict[int, bytes]:
    """Slot -> value of every `Externalized` event the node has handed out."""
    return {event.slot_index: event.value for event in world.events_of(node, Externalized)}


# ---------------------------------------------------------------- the scenario


@dataclass(slots=True)
class ScpScenario:
    """SCP nodes on `topology`, `slots` slots of seeded proposals, Byzantine nodes."""

    topology: Topology
    slots: int = 2
    proposal_spacing_ms: int = 300
    round_ms: int = 150
    rebroadcast_interval_ms: int = 500
    collude: bool = False
    insider: bool = False
    """Byzantine nodes add `CostlyInsider`'s attacks; some values are ``later`` ones
    (`SimApplication.later_asks`), honest ones included."""
    away: int = 0
    """Correct nodes cut off for the whole safety phase (they rejoin at healing, behind
    by more than their slot window, and must deliver every slot in order)."""
    window: int | None = None
    """Slots retained and slots ahead of each node (None: the whole workload fits)."""
    retention: int | None = None
    """Decisions each node keeps, and slots between checkpoints (None: the defaults,
    beyond any workload): smaller than an outage, a node that was away rejoins from
    checkpoints its application installs, then from decisions."""
    name: str = "scp"
    story: list[str] = field(default_factory=list)
    _keys: list[KeyPair] = field(default_factory=list)
    _externalized: dict[str, dict[int, str]] = field(default_factory=dict)
    _cores: dict[int, ScpCore] = field(default_factory=dict)
    """The running SCP core of each node (the inner one of a Byzantine node)."""

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("the workload needs at least one slot")
        self._keys = [node_keys(index) for index in range(self.topology.size)]
        self.name = f"scp-{self.topology.kind}" + ("-insider" if self.insider else "")
        if self.away > len(self.topology.correct()):
            raise ValueError("more nodes away than correct nodes")

    @property
    def members(self) -> list[NodeId]:
        return [keys.node_id for keys in self._keys]

    def intact_hex(self) -> set[str]:
        """Correct nodes (within the assumptions every correct node is intact)."""
        return {self._keys[index].node_id.hex() for index in self.topology.correct()}

    def target_slots(self) -> range:
        return range(1, self.slots + 1)

    # ------------------------------------------------------------ building

    def build(self, world: World) -> None:
        topology = self.topology
        self.story.append(topology.description)
        collusion = self._collusion() if self.collude else None
        for index, keys in enumerate(self._keys):
            if index in topology.byzantine:
                if collusion is not None:
                    factory = self._two_faced_factory(index, collusion)
                    self.story.append(f"node {index} Byzantine: two faces (collusion)")
                else:
                    others = tuple(member for member in self.members if member != keys.node_id)
                    forger = Forger(keys, others, insider=self.insider)
                    behaviours = draw_behaviours(world.rng, forger)
                    factory = self._byzantine_factory(index, behaviours, forger)
                    names = ", ".join(behaviour.name for behaviour in behaviours)
                    self.story.append(f"node {index} Byzantine: {names}")
                world.add_node(keys.node_id, factory, CODEC, byzantine=True)
            else:
                world.add_node(keys.node_id, self._correct_factory(index), CODEC)
        for index in self.topology.correct()[: self.away]:
            world.silence(self._keys[index].node_id)
            self.story.append(f"node {index} away until healing")
        if self.retention is not None:
            self.story.append(
                f"peers keep {self.retention} decision(s), a checkpoint every "
                f"{self.retention} slot(s)"
            )
        world.observe(self._track)
        self._schedule_proposals(world)

    def _config(
        self,
        index: int,
        extra_quorum_sets: Sequence[QuorumSet] = (),
        ledger: ValueLedger | None = None,
    ) -> ScpConfig:
        known = sorted(set(self.topology.quorum_sets), key=_qset_order)
        # by default the whole workload fits the slot window; a small `window` makes a
        # node that was away fall behind it, so it catches up from decisions and proofs
        retained = self.window if self.window is not None else max(4, self.slots)
        ahead = self.window if self.window is not None else max(8, self.slots)
        application = SimApplication(
            self.round_ms, later_asks=2 if self.insider else 0, ledger=ledger
        )
        config = ScpConfig(
            keys=self._keys[index],
            quorum_set=self.topology.quorum_sets[index],
            application=application,
            known_quorum_sets=[*known, *extra_quorum_sets],
            rebroadcast_interval_ms=self.rebroadcast_interval_ms,
            retained_slots=retained,
            max_slots_ahead=ahead,
        )
        if self.retention is not None:
            config.retained_decisions = self.retention
            config.checkpoint_interval = self.retention
        return config

    def _running(self, config: ScpConfig, storage: Storage) -> tuple[ScpCore, Core]:
        """The node's SCP core, and the core the world runs: with a ledger, the
        application that attests and installs checkpoints around it."""
        core = ScpCore(config, storage)
        application = config.application
        if isinstance(application, SimApplication) and application.ledger is not None:
            return core, CheckpointingCore(core, application.ledger)
        return core, core

    def _ledger(self, storage: Storage) -> ValueLedger | None:
        return ValueLedger(1, storage) if self.retention is not None else None

    def _correct_factory(self, index: int) -> Callable[[Storage, random.Random], Core]:
        def build(storage: Storage, rng: random.Random) -> Core:
            config = self._config(index, ledger=self._ledger(storage))
            self._cores[index], running = self._running(config, storage)
            return running

        return build

    def _byzantine_factory(
        self, index: int, behaviours: list[Behaviour], forger: Forger
    ) -> Callable[[Storage, random.Random], Core]:
        members = self.members

        def build(storage: Storage, rng: random.Random) -> Core:
            config = self._config(index, forger.claimable_quorum_sets, self._ledger(storage))
            self._cores[index], inner = self._running(config, storage)
            return ByzantineCore(inner, members, rng, CODEC, behaviours)

        return build

    def _collusion(self) -> Collusion:
        first, second = self.topology.split()
        halves = (
            frozenset(self.members[index] for index in first),
            frozenset(self.members[index] for index in second),
        )
        colluders = frozenset(self.members[index] for index in self.topology.byzantine)
        return Collusion(halves, colluders)

    def _two_faced_factory(
        self, index: int, collusion: Collusion
    ) -> Callable[[Storage, random.Random], Core]:
        def build(storage: Storage, rng: random.Random) -> Core:
            faces = (ScpCore(self._config(index)), ScpCore(self._config(index)))
            return TwoFacedCore(faces, collusion)

        return build

    def _schedule_proposals(self, world: World) -> None:
        for slot_index in self.target_slots():
            start_ms = (slot_index - 1) * self.proposal_spacing_ms
            for index in range(len(self._keys)):
                at_ms = start_ms + world.rng.randint(0, self.proposal_spacing_ms)
                nonce = f"{world.rng.getrandbits(32):08x}"
                if self.insider and world.rng.random() < 0.3:
                    nonce = LATER_NONCE + nonce
                value = make_value(slot_index, f"n{index}", nonce)
                self._propose_at(world, at_ms, index, SlotProposal(slot_index, value))

    def _propose_at(self, world: World, at_ms: int, index: int, proposal: SlotProposal) -> None:
        """The application proposes once the slot is inside its node's window (a node
        behind it, say one that was away, proposes after it caught up)."""

        def attempt() -> None:
            node = world.node(index)
            core = self._cores.get(index)
            if not node.up:
                return
            if core is not None:
                if proposal.slot_index < core.floor:
                    return
                if proposal.slot_index > core.window_top:
                    world.schedule(world.now_ms + self.proposal_spacing_ms, attempt, "propose")
                    return
            world.input(index, Proposed(proposal))

        world.schedule(at_ms, attempt, "propose")

    # ------------------------------------------------------------ judging

    def _track(self, record: Record) -> None:
        event = events_of(record, "Externalized")
        if event is not None and record["node"] in self.intact_hex():
            decided = self._externalized.setdefault(record["node"], {})
            decided[event["slot_index"]] = event["value"]

    def checkers(self) -> list[Checker]:
        intact = self.intact_hex()
        return [
            scp_agreement_checker(intact),
            ScpValidityChecker(intact, require_proposed=not self.topology.byzantine),
            SlotOrderChecker(intact),
            ScpLivenessChecker(intact, tuple(self.target_slots())),
        ]

    def crashable(self, world: World) -> list[int]:
        return [node.index for node in world.correct_nodes()]

    def max_crashed(self) -> int:
        return max(1, self.topology.size // 4)

    def is_live(self, world: World) -> bool:
        targets = set(self.target_slots())
        return all(targets <= self._externalized.get(node, {}).keys() for node in self.intact_hex())

    def externalized(self) -> dict[str, dict[int, str]]:
        """Node (hex) -> slot -> value (hex) externalized so far, intact nodes only."""
        return self._externalized


def _qset_order(qset: QuorumSet) -> bytes:
    return canonical_bytes(qset)


# ---------------------------------------------------------------- checkers


def scp_agreement_checker(intact: set[str]) -> AgreementChecker:
    """Agreement: no two intact nodes externalize different values for one slot."""
    return AgreementChecker(
        "Externalized",
        key_of=lambda event: f"slot {event['slot_index']}",
        value_of=lambda event: event["value"],
        correct_nodes=intact,
    )


@dataclass(slots=True)
class ScpValidityChecker:
    """An externalized value passes the application's validity for its slot; with
    `require_proposed` (no Byzantine nodes) it is also a value some node proposed.

    Proposals come from the history's `input` records."""

    intact: set[str]
    require_proposed: bool
    name: str = "validity"
    proposed: set[tuple[int, str]] = field(default_factory=set)

    def observe(self, record: Record) -> list[Violation]:
        if record["kind"] == "input" and record["event"].get("type") == "Proposed":
            proposal = record["event"]["value"]
            if isinstance(proposal, dict):
                self.proposed.add((proposal["slot_index"], proposal["value"]))
            return []
        event = events_of(record, "Externalized")
        if event is None or record["node"] not in self.intact:
            return []
        slot_index, value = event["slot_index"], event["value"]
        if not is_valid_value(slot_index, bytes.fromhex(value)):
            detail = f"slot {slot_index}: node {record['node'][:8]} externalized an invalid value"
            return [Violation(self.name, record["t"], detail)]
        if self.require_proposed and (slot_index, value) not in self.proposed:
            detail = (
                f"slot {slot_index}: node {record['node'][:8]} externalized an unproposed value"
            )
            return [Violation(self.name, record["t"], detail)]
        return []

    def finish(self) -> list[Violation]:
        return []


@dataclass(slots=True)
class SlotOrderChecker:
    """The application contract: each intact node hands out `Externalized` events in
    slot order, one per slot, without gaps from the first slot."""

    intact: set[str]
    first_slot_index: int = 1
    name: str = "slot order"
    delivered_through: dict[str, int] = field(default_factory=dict)

    def observe(self, record: Record) -> list[Violation]:
        event = events_of(record, "Externalized")
        if event is None or record["node"] not in self.intact:
            return []
        node, slot_index = record["node"], event["slot_index"]
        expected = self.delivered_through.get(node, self.first_slot_index - 1) + 1
        self.delivered_through[node] = max(slot_index, expected - 1)
        if slot_index == expected:
            return []
        detail = f"node {node[:8]} externalized slot {slot_index} when slot {expected} was next"
        return [Violation(self.name, record["t"], detail)]

    def finish(self) -> list[Violation]:
        return []


@dataclass(slots=True)
class ScpLivenessChecker:
    """At the end of the history every intact node has externalized every target slot."""

    intact: set[str]
    slots: tuple[int, ...]
    name: str = "liveness"
    decided: set[tuple[str, int]] = field(default_factory=set)
    last_ms: int = 0

    def observe(self, record: Record) -> list[Violation]:
        self.last_ms = record["t"]
        event = events_of(record, "Externalized")
        if event is not None and record["node"] in self.intact:
            self.decided.add((record["node"], event["slot_index"]))
        return []

    def finish(self) -> list[Violation]:
        missing = [
            f"{node[:8]}#{slot_index}"
            for node in sorted(self.intact)
            for slot_index in self.slots
            if (node, slot_index) not in self.decided
        ]
        if not missing:
            return []
        detail = f"not externalized: {', '.join(missing[:8])}" + (
            " ..." if len(missing) > 8 else ""
        )
        return [Violation(self.name, self.last_ms, detail)]
