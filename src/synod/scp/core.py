"""`ScpCore`: a multi-slot SCP node as a sans-I/O `synod.core.Core`.

Theory of operation.  The core keeps one `Slot` per slot index in a window: slots below
`floor` are forgotten (statements for them are refused as too old); slots more than
`max_slots_ahead` beyond the next slot to decide are refused as too far in the future.
After a slot externalizes, the window moves and slots older than `retained_slots` are
purged, their persisted records deleted.  Each slot holds at most one nomination and one
ballot statement per node and at most `max_nodes_per_slot` nodes, so memory is bounded
whatever peers send.

Inputs:

* `Received(sender, message)`: an `Envelope`, a quorum-set request or response, a state
  request (decoded structs, or raw bytes that the core decodes itself).  An envelope
  passes, cheapest first: window, statement sanity, staleness (the draft's "newer"
  order), quorum set known, signature, the application's verdict on its values.  Peer
  input that fails is dropped and counted in `rejected` by `RejectReason`; it never
  raises.
* `Proposed(value)`: nominate `value` (bytes) for the next slot to decide, or a
  `SlotProposal` for a given slot.
* `TimerFired`: `scp/nominate/<slot>` starts the next nomination round,
  `scp/ballot/<slot>` abandons the current ballot, `scp/rebroadcast` re-sends our
  latest statements and asks for state when we may have missed something (below).
* `Started`: ask peers for their latest statements (`StateRequest`); after a restart
  also re-send ours and resume nomination rounds.

Decisions.  `Externalized(slot, value)` events leave in slot order: a slot decided
while an earlier one is still open is held back until the earlier one is decided (or
skipped: purged undecided, or passed by `advance_to`).  The highest slot handed out is
persisted (`scp/delivered`), so a restarted core hands out what it held back, once.

Catching up (stellar-core's GET_SCP_STATE).  Lost messages can leave a node behind
peers that have finished and fallen silent, so on each rebroadcast tick the core
broadcasts a `StateRequest` when it waits for answers after `Started` (until peers
forming one of its slices have spoken), when a slot below a decided one is still open,
or when an open slot heard nothing since the previous tick.  Peers answer with their
latest statements; a decided slot's EXTERNALIZE statements let the node decide it.

Quorum sets.  Statements carry the hash of their sender's quorum set.  The core keeps a
`QuorumSetStore` (hash -> set) seeded with its own set and any the application adds
(`add_quorum_set`, or `ScpConfig.known_quorum_sets`).  An envelope naming an unknown hash
is parked and the set is requested from the sender (`QuorumSetRequest`); a
`QuorumSetResponse` whose hash was asked for and that is sane is stored and the parked
envelopes are processed.  Unsolicited or insane sets are refused.  Sets learnt from peers
are capped (`max_learned_quorum_sets`): beyond the cap the oldest learnt set that no
statement of a retained slot names is forgotten (it is fetched again if needed); sets
added locally are never forgotten.  Parked envelopes are capped globally
(`max_pending_envelopes`) and per peer (`max_pending_per_sender`, counted both per
transport sender and per statement node): a peer over its share loses its own oldest
parked envelope, so one peer cannot crowd out the others.

Answering peers costs no signatures.  Each own statement is signed once, when it is made
(the signed envelope is what is persisted); re-sends, answers to stragglers and answers
to `StateRequest` reuse that envelope.  A straggler (a peer repeating a stale statement
on a slot we decided) is answered only once its envelope's signature verifies, and
`StateRequest` answers are rate-limited per transport sender by a token bucket
(`state_request_burst` answers, one more every `state_request_refill_ms`, time from the
input's now_ms): an honest peer asks at most once per rebroadcast tick and once per
restart, well inside the budget.

Persistence (draft: never contradict what you said).  Before any own statement leaves
the node, the step carries `Persist(b"scp/slot/<index>/<kind>", envelope)`; the driver
makes it durable before sending.  A restarted core adopts these statements as its state
(the ballot fields b, p, p', c, h and phase come straight from its last ballot
statement; nomination votes never shrink), so whatever it says next is newer than, and
consistent with, what it said before.
"""

from __future__ import annotations

import enum
import struct
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from synod.core import (
    Broadcast,
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
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet, all_validators, is_sane, is_satisfied_by, qset_hash
from synod.scp.application import (
    Application,
    CheckpointVerified,
    Externalized,
    SlotProposal,
    SlotsUnavailable,
)
from synod.scp.ballot import Phase
from synod.scp.checkpoints import AttestationGathering, AttestationStore, check_checkpoint
from synod.scp.decisions import DecisionStore, build_decision, check_decision
from synod.scp.leaders import LeaderRule
from synod.scp.messages import (
    CODEC,
    Attestation,
    Checkpoint,
    CheckpointRequest,
    Confirm,
    Decision,
    DecisionRequest,
    DecisionsUnavailable,
    Envelope,
    Externalize,
    Nomination,
    QuorumSetRequest,
    QuorumSetResponse,
    Statement,
    StateRequest,
    companion_quorum_set_hash,
    sign_attestation,
    sign_statement,
    verify_attestation,
    verify_envelope,
)
from synod.scp.slot import BALLOT_TIMER_PREFIX, NOMINATION_TIMER_PREFIX, Slot
from synod.scp.statements import (
    is_newer_ballot_statement,
    is_newer_nomination,
    is_statement_sane,
)
from synod.scp.transitive import TransitiveQuorum
from synod.wire import DecodeError

_SLOT_KEY_PREFIX: Final = b"scp/slot/"
_FLOOR_KEY: Final = b"scp/floor"
_DELIVERED_KEY: Final = b"scp/delivered"
_DECISION_KEY_PREFIX: Final = b"scp/decision/"
_ATTESTATION_KEY_PREFIX: Final = b"scp/attestation/"
REBROADCAST_TIMER: Final = "scp/rebroadcast"


_RAW_BYTES = (bytes, bytearray, memoryview)
_REQUESTS = (StateRequest, DecisionRequest, CheckpointRequest)


class RejectReason(enum.StrEnum):
    """Why a peer's input was dropped (the keys of `ScpCore.rejected`)."""

    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    INSANE_STATEMENT = "insane_statement"
    INSANE_QUORUM_SET = "insane_quorum_set"
    UNSOLICITED_QUORUM_SET = "unsolicited_quorum_set"
    UNKNOWN_QUORUM_SET = "unknown_quorum_set"
    STALE_STATEMENT = "stale_statement"
    TOO_OLD = "too_old"
    FAR_FUTURE = "far_future"
    INVALID_VALUE = "invalid_value"
    CONTRADICTS_EXTERNALIZED = "contradicts_externalized"
    OWN_STATEMENT = "own_statement"
    SLOT_FULL = "slot_full"
    PENDING_FULL = "pending_full"
    PENDING_EVICTED = "pending_evicted"
    """A parked envelope dropped because its sender or node went over its share."""
    STATE_REQUEST_LIMITED = "state_request_limited"
    NOT_IN_QUORUM = "not_in_quorum"
    """The statement's node is outside the local node's transitive quorum."""
    UNNEEDED_DECISION = "unneeded_decision"
    """A `Decision` for a slot already delivered or decided, or too far ahead."""
    BAD_DECISION = "bad_decision"
    """A `Decision` whose proof does not hold for the local quorum set."""
    DECISION_LIMITED = "decision_limited"
    """A `Decision` over its sender's budget of proof checks."""
    INTRODUCED_OVER_BUDGET = "introduced_over_budget"
    """A statement of a node some member introduced, beyond what that member's
    introduced nodes may hold in the slot (`max_introduced_bytes_per_slot`)."""
    UNNEEDED_ATTESTATION = "unneeded_attestation"
    """An `Attestation` for a slot that is no checkpoint slot, outside the kept range,
    already held from that node, or sent to a node that keeps none."""
    BAD_ATTESTATION = "bad_attestation"
    """An `Attestation` with a bad signature, or with another digest than the one the
    local node attested for that slot."""
    UNNEEDED_CHECKPOINT = "unneeded_checkpoint"
    """A `Checkpoint` the node did not ask for, or for a slot it has delivered."""
    BAD_CHECKPOINT = "bad_checkpoint"
    """A `Checkpoint` whose attestations do not hold for the local quorum set, or whose
    state the application finds does not match the attested digest."""
    CHECKPOINT_LIMITED = "checkpoint_limited"
    """A `Checkpoint` over its sender's budget of checks."""


EnvelopeSigner = Callable[[KeyPair, Statement], Envelope]
EnvelopeVerifier = Callable[[Envelope], bool]


@dataclass
class ScpConfig:
    """How one SCP node is set up."""

    keys: KeyPair
    quorum_set: QuorumSet
    application: Application = field(default_factory=Application)
    validator: bool = True
    """False: a watcher that follows and externalizes but never sends statements."""
    first_slot_index: int = 1
    max_slots_ahead: int = 8
    retained_slots: int = 4
    max_nodes_per_slot: int = 1000
    max_transitive_nodes: int = 256
    """Nodes whose statements are admitted: the local quorum set's validators always,
    then those the members' quorum sets name, first declared first (`TransitiveQuorum`).
    Stellar's public network has a transitive quorum of about 100 validators."""
    max_introduced_per_member: int = 64
    """Nodes one member's declared quorum sets may add to the transitive quorum (a
    Stellar organisation's validators name about 20 to 30 validators in all)."""
    max_introduced_bytes_per_slot: int = 5 * 1024 * 1024 // 2
    """Bytes of statements (values, plus a little per statement and value) that the
    nodes one member introduced may hold in one slot, together: one maximal NOMINATE
    (2 MiB) and ballot statements beside it.  Honest introduced nodes name a slot's few
    candidate values; a member naming made-up ids gets this much per slot for all of
    them, not 2 MiB for each."""
    max_pending_envelopes: int = 256
    max_pending_per_sender: int = 16
    """Parked envelopes per transport sender and per statement node; a newer one evicts
    that peer's oldest (a slot holds at most one nomination and one ballot statement per
    node, so 16 covers an honest peer's statements for the whole slot window)."""
    max_learned_quorum_sets: int = 1024
    """Quorum sets learnt from peers kept beyond those named by retained statements."""
    state_request_burst: int = 8
    """`StateRequest` answers a sender may get back to back."""
    state_request_refill_ms: int = 125
    """One more `StateRequest` answer per sender per this many ms (8 per second).  An
    honest peer asks once per rebroadcast tick (500 ms or more in synod's settings),
    once per restart, and while catching up once per half window decided; each answer
    is at most two cached envelopes per retained slot, and costs no signature."""
    retained_decisions: int = 1024
    """Decided slots kept (with their proofs, in memory and in storage) to answer
    peers that were away: a node away for longer catches up by a checkpoint."""
    decisions_per_answer: int = 16
    """Decisions sent back for one `DecisionRequest`."""
    decision_check_burst: int = 32
    """Proofs of a sender checked back to back (each check verifies at most
    `MAX_PROOF_ENVELOPES` signatures, and only for a slot the node still needs)."""
    decision_check_refill_ms: int = 50
    """One more proof check per sender per this many ms (20 per second: a node away
    for 1,000 slots catches up in under a minute from one peer, faster from several;
    a sender of bad proofs costs at most 20 x 128 signature checks per second)."""
    checkpoint_interval: int = 64
    """Slots between checkpoint slots: the application attests its state after each
    (`ScpCore.attest`), one signature per validator per 64 slots; 0: no checkpoints.
    Keep `retained_decisions` at least this, so the slots after the newest checkpoint
    are still served as decisions."""
    retained_checkpoints: int = 1024
    """Checkpoint slots whose agreeing attestations are kept (65,536 slots at the
    default interval): a node away for longer than that is told `SlotsUnavailable`."""
    checkpoint_check_burst: int = 4
    """Checkpoints of a sender checked back to back (each check verifies at most one
    signature per validator of the local quorum set and has the application hash at
    most `MAX_CHECKPOINT_STATE_BYTES`)."""
    checkpoint_check_refill_ms: int = 250
    """One more checkpoint check per sender per this many ms (4 per second: a node
    catches up 256 slots a second at the default interval; a sender of forged states
    costs at most 8 MiB of hashing and 4 x 128 signature checks per second)."""
    rebroadcast_interval_ms: int | None = 2000
    """While a slot is undecided, re-send our latest statements this often, so that lost
    messages do not stall the slot once the network heals (None: never)."""
    known_quorum_sets: Iterable[QuorumSet] = ()
    qset_hasher: Callable[[QuorumSet], bytes] = qset_hash
    leader_rule: LeaderRule | None = None
    """How nomination picks round leaders: None for the draft's formulas,
    `synod.scp.leaders.StellarLeaders()` for stellar-core's (64-bit priorities over the
    previous slot's value, weights without the local node, ties, skipped rounds), or an
    application's own `LeaderRule`."""
    network: bytes = b""
    """The network id in every envelope signature (`synod.crypto.in_network`): a
    statement signed for one network is refused by the nodes of another.  It applies to
    synod's own signer and verifier; a replacement pair (Stellar's) binds its own."""
    signer: EnvelopeSigner = sign_statement
    verifier: EnvelopeVerifier = verify_envelope


class QuorumSetStore:
    """Quorum sets by hash: sane ones only, added by the application (kept for good) or
    learnt from peers (at most `max_learned` beyond those `in_use` returns; the oldest
    learnt set not in use is forgotten first)."""

    def __init__(
        self,
        hasher: Callable[[QuorumSet], bytes],
        max_learned: int = 1024,
        in_use: Callable[[], set[bytes]] = set,
    ) -> None:
        self._hasher = hasher
        self._max_learned = max_learned
        self._in_use = in_use
        self._local: dict[bytes, QuorumSet] = {}
        self._learned: OrderedDict[bytes, QuorumSet] = OrderedDict()

    def add(self, qset: QuorumSet) -> bytes:
        """Store a quorum set for good (raises `LocalError` if it is insane); returns
        its hash."""
        digest = self._checked_hash(qset)
        self._learned.pop(digest, None)
        self._local[digest] = qset
        return digest

    def learn(self, qset: QuorumSet) -> bytes:
        """Store a quorum set a peer sent (raises `LocalError` if it is insane), then
        forget the oldest learnt sets not in use while over the cap; returns its hash."""
        digest = self._checked_hash(qset)
        if digest in self._local:
            return digest
        self._learned.pop(digest, None)
        self._learned[digest] = qset
        if len(self._learned) > self._max_learned:
            spared = self._in_use() | {digest}
            for candidate in [key for key in self._learned if key not in spared]:
                if len(self._learned) <= self._max_learned:
                    break
                del self._learned[candidate]
        return digest

    def get(self, digest: bytes) -> QuorumSet | None:
        """The quorum set with this hash, or None when it is not (or no longer) known."""
        found = self._local.get(digest)
        return found if found is not None else self._learned.get(digest)

    def hash_of(self, qset: QuorumSet) -> bytes:
        return self._hasher(qset)

    def _checked_hash(self, qset: QuorumSet) -> bytes:
        if not is_sane(qset):
            raise LocalError("quorum set breaks the sanity rules")
        return self._hasher(qset)

    def __len__(self) -> int:
        return len(self._local) + len(self._learned)


@dataclass
class _TokenBucket:
    tokens: float
    updated_ms: int


class SenderRateLimit:
    """Per-sender token buckets: `burst` actions back to back, then one per `refill_ms`.
    At most `max_senders` buckets are kept (least recently used forgotten first)."""

    def __init__(self, burst: int, refill_ms: int, max_senders: int = 4096) -> None:
        self._burst = burst
        self._refill_ms = max(1, refill_ms)
        self._max_senders = max_senders
        self._buckets: OrderedDict[bytes, _TokenBucket] = OrderedDict()

    def allow(self, sender: bytes, now_ms: int) -> bool:
        """Take one token from `sender`'s bucket; False when it is empty."""
        bucket = self._buckets.pop(sender, None)
        if bucket is None:
            bucket = _TokenBucket(float(self._burst), now_ms)
        elapsed_ms = max(0, now_ms - bucket.updated_ms)
        bucket.tokens = min(float(self._burst), bucket.tokens + elapsed_ms / self._refill_ms)
        bucket.updated_ms = max(bucket.updated_ms, now_ms)
        self._buckets[sender] = bucket
        while len(self._buckets) > self._max_senders:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True


def slot_record_key(slot_index: int, kind: str) -> bytes:
    """Storage key of our latest `kind` ("nomination" or "ballot") envelope of a slot."""
    return _SLOT_KEY_PREFIX + struct.pack(">Q", slot_index) + b"/" + kind.encode()


class ScpCore:
    """A multi-slot SCP node (see the module docstring)."""

    def __init__(self, config: ScpConfig, storage: Storage | None = None) -> None:
        if not is_sane(config.quorum_set):
            raise LocalError("the local quorum set breaks the sanity rules")
        self.config = config
        self.keys = config.keys
        self._signer = config.signer
        self._verify = config.verifier
        if config.signer is sign_statement:
            self._signer = partial(sign_statement, network=config.network)
        if config.verifier is verify_envelope:
            self._verify = partial(verify_envelope, network=config.network)
        self.application = config.application
        self.quorum_sets = QuorumSetStore(
            config.qset_hasher, config.max_learned_quorum_sets, self._quorum_sets_in_use
        )
        self.local_qset_hash = self.quorum_sets.add(config.quorum_set)
        for qset in config.known_quorum_sets:
            self.quorum_sets.add(qset)
        self.rejected: Counter[RejectReason] = Counter()
        self.transitive_quorum = TransitiveQuorum(
            config.keys.node_id,
            config.quorum_set,
            max(config.max_transitive_nodes, len(list(all_validators(config.quorum_set))) + 1),
            config.max_introduced_per_member,
        )
        self.slots: dict[int, Slot] = {}
        self.floor = config.first_slot_index
        self.next_slot_index = config.first_slot_index
        self._pending: dict[tuple[bytes, int, bool], tuple[NodeId, Envelope]] = {}
        self._own_envelopes: dict[tuple[int, str], Envelope] = {}
        """Our latest signed envelope per (slot, kind), reused for every re-send."""
        self._state_request_limit = SenderRateLimit(
            config.state_request_burst, config.state_request_refill_ms
        )
        self._decision_request_limit = SenderRateLimit(
            config.state_request_burst, config.state_request_refill_ms
        )
        self._rebroadcast_armed = False
        self._awaiting_state = False
        self._state_responders: set[bytes] = set()
        self._heard: Counter[int] = Counter()
        self._heard_at_last_tick: dict[int, int] = {}
        self.decisions = DecisionStore()
        """Decided slots with their proofs (`retained_decisions` below the next slot)."""
        self._ballot_envelopes: dict[tuple[int, bytes], Envelope] = {}
        """Per (slot, node), the envelope of the ballot statement the slot recorded."""
        self._decision_check_limit = SenderRateLimit(
            config.decision_check_burst, config.decision_check_refill_ms
        )
        self._far_future_heard = 0
        """Highest slot a member's statement named beyond the window (we are behind)."""
        self._decision_request_through = 0
        self._unavailable_reported: tuple[int, int] | None = None
        self._init_checkpoints_and_budgets(config)
        self.delivered_through = config.first_slot_index - 1
        """Highest slot whose `Externalized` event was handed out; every slot below it
        was handed out too, or skipped (purged undecided, or passed by `advance_to`)."""
        if storage:
            self._restore(storage)

    def _init_checkpoints_and_budgets(self, config: ScpConfig) -> None:
        self.attestations = AttestationStore(config.retained_checkpoints)
        """Own attestations and the peers' that agree, by checkpoint slot."""
        self._checkpoint_request_limit = SenderRateLimit(
            config.state_request_burst, config.state_request_refill_ms
        )
        self._checkpoint_check_limit = SenderRateLimit(
            config.checkpoint_check_burst, config.checkpoint_check_refill_ms
        )
        self._gathered = AttestationGathering()
        """Verified attestations of the checkpoint answers received while asking."""
        self._introduced_bytes: Counter[tuple[int, bytes]] = Counter()
        """Per (slot, introducing member), the bytes its introduced nodes' statements
        take in the slot."""
        self._statement_bytes: dict[tuple[int, bytes, bool], int] = {}
        """Per (slot, introduced node, is a nomination), the bytes charged for it."""
        self._checkpoint_from: int | None = None
        """The first missing slot a checkpoint is asked for (no peer has its decision)."""

    # ------------------------------------------------------------ Core protocol

    @property
    def node_id(self) -> NodeId:
        return self.keys.node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        """Process one input (see the module docstring); never raises on peer input."""
        step = Step()
        if isinstance(event, Received):
            self._receive(event.sender, event.message, now_ms, step)
        elif isinstance(event, Proposed):
            self._propose(event.value, now_ms, step)
        elif isinstance(event, TimerFired):
            self._timer_fired(event.name, now_ms, step)
        elif isinstance(event, Started):
            self._started(now_ms, step)
        return step

    # ------------------------------------------------------------ application API

    def nominate(self, slot_index: int, value: bytes, now_ms: int) -> Step:
        """Propose `value` for `slot_index` (same as `Proposed(SlotProposal(...))`)."""
        step = Step()
        self._propose(SlotProposal(slot_index, value), now_ms, step)
        return step

    def bump_state(self, slot_index: int, value: bytes, now_ms: int) -> Step:
        """Start (or move past) a ballot for `value` directly, bypassing nomination:
        for applications that pick the value themselves, and for tests."""
        if not self.floor <= slot_index <= self.window_top:
            raise LocalError(f"slot {slot_index} is outside the window")
        step = Step()
        slot = self._slot(slot_index, now_ms, step)
        slot.bump_state(value, force=True)
        self._flush(slot, step)
        return step

    def advance_to(self, slot_index: int, now_ms: int) -> Step:
        """Skip ahead: the application learnt the values of the slots before
        `slot_index` by other means (catch-up from peers' logs), so the window moves
        there and older slots are purged.  Needed when a node was away for longer
        than the window covers; never moves backwards."""
        step = Step()
        if slot_index - 1 > self.delivered_through:
            # the application has the slots before `slot_index`: no events for them,
            # not even from the purge below
            self._set_delivered_through(slot_index - 1, step)
        if slot_index > self.next_slot_index:
            self.next_slot_index = slot_index
            self._purge(step)
        self._release_externalized(step)
        if self._behind():
            # after a checkpoint: the slots after it come as decisions, ask at once
            self._request_decisions(Broadcast, step)
        self._arm_rebroadcast(step)
        return step

    def attest(self, slot_index: int, digest: bytes, now_ms: int) -> Step:
        """Attest `digest` (32 bytes) as the application's state after delivering slot
        `slot_index`, a multiple of `checkpoint_interval` that was delivered: signed,
        persisted, then broadcast (a watcher keeps it to itself).  Attesting a slot
        again with another digest raises: a correct node's state after a slot is one."""
        interval = self.config.checkpoint_interval
        if interval <= 0 or slot_index % interval or slot_index > self.delivered_through:
            raise LocalError(f"slot {slot_index} is not a delivered checkpoint slot")
        if len(digest) != 32:
            raise LocalError("a state digest is 32 bytes")
        step = Step()
        known = self.attestations.own.get(slot_index)
        if known is not None:
            if known != digest:
                raise LocalError(f"slot {slot_index} was attested with another digest")
            return step
        own = sign_attestation(self.keys, slot_index, digest, self.config.network)
        for attestation in [own, *self.attestations.add_own(own)]:
            self._persist_attestation(attestation, step)
        self._prune_attestations(step)
        if self.config.validator:
            step.outgoing.append(Broadcast(own))
        return step

    def _previous_value(self, slot_index: int) -> bytes:
        """The value slot `slot_index - 1` externalized, from the node or else from the
        application (`Application.previous_value`); b"" when neither knows it."""
        known = self.externalized_value(slot_index - 1)
        if known is None:
            known = self.application.previous_value(slot_index)
        return known if known is not None else b""

    @property
    def window_top(self) -> int:
        """The highest slot this node takes part in: `max_slots_ahead` beyond the first
        slot it has not delivered (so slots it holds stay within `retained_slots` +
        `max_slots_ahead` + 1, however far peers are ahead)."""
        return self.delivered_through + 1 + self.config.max_slots_ahead

    def add_quorum_set(self, qset: QuorumSet) -> bytes:
        """Make a quorum set known ahead of time; returns its hash."""
        return self.quorum_sets.add(qset)

    def externalized_value(self, slot_index: int) -> bytes | None:
        """The value decided for a retained slot (or a kept decision), or None."""
        slot = self.slots.get(slot_index)
        if slot is not None and slot.externalized_value is not None:
            return slot.externalized_value
        decision = self.decisions.get(slot_index)
        return decision.value if decision is not None else None

    # ------------------------------------------------------------ inputs

    def _propose(self, proposal: Any, now_ms: int, step: Step) -> None:
        if not self.config.validator:
            raise LocalError("a watcher (validator=False) does not nominate")
        if isinstance(proposal, bytes):
            proposal = SlotProposal(self.next_slot_index, proposal)
        if not isinstance(proposal, SlotProposal) or not isinstance(proposal.value, bytes):
            raise LocalError("propose bytes or a SlotProposal")
        if proposal.slot_index < self.floor:
            return
        if proposal.slot_index > self.window_top:
            raise LocalError(f"slot {proposal.slot_index} is beyond the window")
        slot = self._slot(proposal.slot_index, now_ms, step)
        slot.nominate(proposal.value)
        self._flush(slot, step)

    def _timer_fired(self, name: str, now_ms: int, step: Step) -> None:
        if name == REBROADCAST_TIMER:
            self._rebroadcast(step)
            return
        for prefix in (NOMINATION_TIMER_PREFIX, BALLOT_TIMER_PREFIX):
            if name.startswith(prefix):
                suffix = name[len(prefix) :]
                slot = self.slots.get(int(suffix)) if suffix.isdigit() else None
                if slot is not None:
                    self._bind(slot, now_ms, step)
                    slot.timer_fired(name)
                    self._flush(slot, step)
                return

    def _started(self, now_ms: int, step: Step) -> None:
        """Re-announce what we said before a restart and ask peers what they said."""
        for slot in sorted(self.slots.values(), key=lambda slot: slot.slot_index):
            self._bind(slot, now_ms, step)
            if self.config.validator and slot.fully_validated:
                for envelope in self._own_envelopes_of(slot):
                    step.outgoing.append(Broadcast(envelope))
            slot.nominate(None, timed_out=True)
            self._flush(slot, step)
        # decisions restored from storage that were not handed out yet leave now
        self._release_externalized(step)
        step.outgoing.append(Broadcast(StateRequest(self.floor)))
        # the request or its answers may be lost: ask again on every rebroadcast tick
        # until peers forming one of our slices have spoken
        self._awaiting_state = True
        self._state_responders.clear()
        self._arm_rebroadcast(step)

    def _receive(self, sender: NodeId, message: Any, now_ms: int, step: Step) -> None:
        # Envelopes first, and tuples rather than `A | B` unions, which would build a new
        # union object on every message: this runs once per statement received.
        if type(message) is Envelope:
            self._receive_envelope(sender, message, now_ms, step)
            return
        if isinstance(message, _RAW_BYTES):
            try:
                message = CODEC.decode(bytes(message))
            except DecodeError:
                self._reject(RejectReason.MALFORMED)
                return
        if isinstance(message, Envelope):
            self._receive_envelope(sender, message, now_ms, step)
        else:
            self._receive_other(sender, message, now_ms, step)

    def _receive_other(self, sender: NodeId, message: Any, now_ms: int, step: Step) -> None:
        if isinstance(message, QuorumSetRequest):
            qset = self.quorum_sets.get(message.quorum_set_hash)
            if qset is not None:
                step.outgoing.append(Send(sender, QuorumSetResponse(qset)))
        elif isinstance(message, QuorumSetResponse):
            self._receive_quorum_set(message.quorum_set, now_ms, step)
        elif isinstance(message, _REQUESTS):
            self._receive_request(sender, message, now_ms, step)
        elif isinstance(message, Decision):
            self._receive_decision(sender, message, now_ms, step)
        elif isinstance(message, DecisionsUnavailable):
            self._decisions_unavailable(sender, message, step)
        elif isinstance(message, Attestation):
            self._receive_attestation(sender, message, step)
        elif isinstance(message, Checkpoint):
            self._receive_checkpoint(sender, message, now_ms, step)
        else:
            self._reject(RejectReason.MALFORMED)

    def _receive_request(
        self,
        sender: NodeId,
        message: StateRequest | DecisionRequest | CheckpointRequest,
        now_ms: int,
        step: Step,
    ) -> None:
        """State, decision and checkpoint requests have a budget each per sender (a
        node behind sends several kinds on every tick: one shared budget would starve
        the others); all are answered from what was signed earlier, no signature is
        made for them."""
        if isinstance(message, StateRequest):
            if self._state_request_limit.allow(sender, now_ms):
                self._answer_state_request(sender, message.from_slot_index, step)
                return
        elif isinstance(message, DecisionRequest):
            if self._decision_request_limit.allow(sender, now_ms):
                self._answer_decision_request(sender, message.from_slot_index, step)
                return
        elif self._checkpoint_request_limit.allow(sender, now_ms):
            self._answer_checkpoint_request(sender, message.from_slot_index, step)
            return
        self._reject(RejectReason.STATE_REQUEST_LIMITED)

    def _receive_envelope(
        self, sender: NodeId, envelope: Envelope, now_ms: int, step: Step
    ) -> None:
        statement = envelope.statement
        reason = self._precheck(statement)
        if reason is None and self._over_introduced_budget(statement):
            reason = RejectReason.INTRODUCED_OVER_BUDGET
        if reason is not None:
            self._refused_before_signature(sender, envelope, reason, step)
            return
        # verified before parking, so a forger cannot displace a parked envelope
        if not self._verify(envelope):
            self._reject(RejectReason.BAD_SIGNATURE)
            return
        self._admit_envelope(sender, envelope, now_ms, step)

    def _refused_before_signature(
        self, sender: NodeId, envelope: Envelope, reason: RejectReason, step: Step
    ) -> None:
        statement = envelope.statement
        self._reject(reason)
        if reason == RejectReason.FAR_FUTURE:
            # unverified, but from a member: at worst it costs one DecisionRequest
            # broadcast per rebroadcast tick, which peers rate-limit
            self._far_future_heard = max(self._far_future_heard, statement.slot_index)
            self._arm_rebroadcast(step)
        if reason == RejectReason.STALE_STATEMENT:
            # a peer repeating itself on a slot we decided has likely missed our
            # EXTERNALIZE (lost message); answering only the transport-authenticated
            # sender cannot be used to reflect traffic at a third party, and only
            # a verified envelope earns an answer, so junk costs no sends
            slot = self.slots[statement.slot_index]
            if self._straggler_answer(slot, statement) is None:
                return
            if self._verify(envelope):
                self._help_straggler(slot, sender, statement, step)
            else:
                self._reject(RejectReason.BAD_SIGNATURE)

    def _admit_envelope(self, sender: NodeId, envelope: Envelope, now_ms: int, step: Step) -> None:
        statement = envelope.statement
        pledges = statement.pledges
        qset_hash_value = companion_quorum_set_hash(pledges)
        declared = self.quorum_sets.get(qset_hash_value)
        if declared is None and not isinstance(pledges, Externalize):
            self._park(sender, envelope, qset_hash_value, step)
            return
        if declared is not None:
            self.transitive_quorum.declare(statement.node_id, qset_hash_value, declared)
        slot = self._slot(statement.slot_index, now_ms, step)
        if (
            statement.node_id not in slot.ballot.latest
            and statement.node_id not in slot.nomination.latest
            and len(slot.ballot.latest.keys() | slot.nomination.latest.keys())
            >= self.config.max_nodes_per_slot
        ):
            self._reject(RejectReason.SLOT_FULL)
            return
        reason_text = slot.process(statement)
        self._charge_introduced(slot, statement)
        if reason_text is not None:
            self._reject(RejectReason(reason_text))
        else:
            self._heard[statement.slot_index] += 1
            if not isinstance(pledges, Nomination):
                self._ballot_envelopes[(statement.slot_index, statement.node_id)] = envelope
        self._note_state_responder(statement.node_id)
        # flushed first: the answer is the envelope signed (and persisted) by the flush
        self._flush(slot, step)
        self._help_straggler(slot, sender, statement, step)

    def _precheck(self, statement: Statement) -> RejectReason | None:
        """Checks that need no signature: window, sanity, staleness."""
        if statement.node_id == self.node_id:
            return RejectReason.OWN_STATEMENT
        if statement.node_id not in self.transitive_quorum:
            return RejectReason.NOT_IN_QUORUM
        outside = self._outside_window(statement.slot_index)
        if outside is not None:
            return outside
        if not is_statement_sane(statement):
            return RejectReason.INSANE_STATEMENT
        slot = self.slots.get(statement.slot_index)
        if slot is not None and _is_stale(slot, statement):
            return RejectReason.STALE_STATEMENT
        return None

    def _over_introduced_budget(self, statement: Statement) -> bool:
        """The statement would take its introducer's nodes past their share of the slot
        (the statement it replaces is given back first)."""
        introducer = self.transitive_quorum.introducer.get(statement.node_id)
        if introducer is None:
            return False
        key = _statement_key(statement)
        held = self._introduced_bytes[(statement.slot_index, introducer)]
        after = held - self._statement_bytes.get(key, 0) + statement_size(statement)
        return after > self.config.max_introduced_bytes_per_slot

    def _charge_introduced(self, slot: Slot, statement: Statement) -> None:
        """Charge what the slot now holds of an introduced node to its introducer."""
        introducer = self.transitive_quorum.introducer.get(statement.node_id)
        if introducer is None:
            return
        is_nomination = isinstance(statement.pledges, Nomination)
        latest = slot.nomination.latest if is_nomination else slot.ballot.latest
        held = latest.get(statement.node_id)
        key = _statement_key(statement)
        size = statement_size(held) if held is not None else 0
        self._introduced_bytes[(statement.slot_index, introducer)] += size - (
            self._statement_bytes.get(key, 0)
        )
        self._statement_bytes[key] = size

    def _outside_window(self, slot_index: int) -> RejectReason | None:
        if slot_index < self.floor:
            return RejectReason.TOO_OLD
        if slot_index > self.window_top:
            return RejectReason.FAR_FUTURE
        return None

    def _help_straggler(self, slot: Slot, sender: NodeId, statement: Statement, step: Step) -> None:
        """A peer still working on a slot we decided gets our EXTERNALIZE directly."""
        answer = self._straggler_answer(slot, statement)
        if answer is not None:
            step.outgoing.append(Send(sender, answer))

    def _straggler_answer(self, slot: Slot, statement: Statement) -> Envelope | None:
        """Our signed EXTERNALIZE for a peer whose `statement` shows it has not decided."""
        if (
            self.config.validator
            and slot.phase == Phase.EXTERNALIZE
            and not isinstance(statement.pledges, Externalize)
            and slot.ballot.last_statement is not None
            and slot.fully_validated
        ):
            return self._own_envelope(slot.slot_index, slot.ballot.last_statement)
        return None

    def _note_state_responder(self, node: bytes) -> None:
        if self._awaiting_state:
            self._state_responders.add(node)
            if is_satisfied_by(self.config.quorum_set, self._state_responders | {self.node_id}):
                self._awaiting_state = False
                self._state_responders.clear()

    def _answer_state_request(self, sender: NodeId, from_slot_index: int, step: Step) -> None:
        if not self.config.validator:
            return
        for slot_index in sorted(self.slots):
            slot = self.slots[slot_index]
            if slot_index >= from_slot_index and slot.fully_validated:
                for envelope in self._own_envelopes_of(slot):
                    step.outgoing.append(Send(sender, envelope))

    def _own_envelope(self, slot_index: int, statement: Statement) -> Envelope | None:
        """The envelope signed when `statement` was made, or None if it was not sent."""
        envelope = self._own_envelopes.get((slot_index, _kind_of(statement)))
        return envelope if envelope is not None and envelope.statement == statement else None

    def _own_envelopes_of(self, slot: Slot) -> list[Envelope]:
        found = (self._own_envelope(slot.slot_index, s) for s in slot.own_statements())
        return [envelope for envelope in found if envelope is not None]

    def _quorum_sets_in_use(self) -> set[bytes]:
        """Hashes named by the statements that retained slots hold."""
        in_use = {self.local_qset_hash}
        for slot in self.slots.values():
            for latest in (slot.nomination.latest, slot.ballot.latest):
                for statement in latest.values():
                    in_use.add(companion_quorum_set_hash(statement.pledges))
        return in_use

    def _park(self, sender: NodeId, envelope: Envelope, digest: bytes, step: Step) -> None:
        statement = envelope.statement
        key = (
            statement.node_id,
            statement.slot_index,
            isinstance(statement.pledges, Nomination),
        )
        # a replacement moves to the back: the newest envelope of a peer is kept longest
        self._pending.pop(key, None)
        self._evict_over_share(lambda parked_key, parked_sender: parked_sender == sender)
        self._evict_over_share(lambda parked_key, parked_sender: parked_key[0] == key[0])
        if len(self._pending) >= self.config.max_pending_envelopes:
            self._reject(RejectReason.PENDING_FULL)
            return
        self._pending[key] = (sender, envelope)
        self._reject(RejectReason.UNKNOWN_QUORUM_SET)
        step.outgoing.append(Send(sender, QuorumSetRequest(digest)))

    def _evict_over_share(self, belongs: Callable[[tuple[bytes, int, bool], NodeId], bool]) -> None:
        """Drop one peer's oldest parked envelopes until it has room for one more."""
        owned = [
            key for key, (parked_sender, _) in self._pending.items() if belongs(key, parked_sender)
        ]
        for key in owned[: max(0, len(owned) - self.config.max_pending_per_sender + 1)]:
            del self._pending[key]
            self._reject(RejectReason.PENDING_EVICTED)

    def _receive_quorum_set(self, qset: QuorumSet, now_ms: int, step: Step) -> None:
        digest = self.quorum_sets.hash_of(qset)
        waiting = [
            key
            for key, (_, envelope) in self._pending.items()
            if companion_quorum_set_hash(envelope.statement.pledges) == digest
        ]
        if not waiting:
            self._reject(RejectReason.UNSOLICITED_QUORUM_SET)
            return
        if not is_sane(qset):
            self._reject(RejectReason.INSANE_QUORUM_SET)
            for key in waiting:
                del self._pending[key]
            return
        self.quorum_sets.learn(qset)
        for key in waiting:
            sender, envelope = self._pending.pop(key)
            self._receive_envelope(sender, envelope, now_ms, step)

    # ------------------------------------------------------------ slots

    def _slot(self, slot_index: int, now_ms: int, step: Step) -> Slot:
        slot = self.slots.get(slot_index)
        if slot is None:
            slot = Slot(
                slot_index=slot_index,
                node_id=self.node_id,
                local_qset=self.config.quorum_set,
                local_qset_hash=self.local_qset_hash,
                application=self.application,
                qset_by_hash=self.quorum_sets.get,
                started_ms=now_ms,
                validator=self.config.validator,
                leader_rule=self.config.leader_rule,
                previous_value=partial(self._previous_value, slot_index),
            )
            self.slots[slot_index] = slot
        self._bind(slot, now_ms, step)
        return slot

    @staticmethod
    def _bind(slot: Slot, now_ms: int, step: Step) -> None:
        slot.step = step
        slot.now_ms = now_ms

    def _flush(self, slot: Slot, step: Step) -> None:
        """Persist, then send, the slot's new statements; then move the window."""
        for statement in slot.new_statements():
            envelope = self._sign(statement)
            kind = _kind_of(statement)
            self._own_envelopes[(slot.slot_index, kind)] = envelope
            step.persist.append(
                Persist(slot_record_key(slot.slot_index, kind), CODEC.encode(envelope))
            )
            if self.config.validator:
                step.outgoing.append(Broadcast(envelope))
        if slot.externalized_value is not None and slot.slot_index not in self.decisions:
            self._record_decision(self._build_decision(slot), step)
        if slot.externalized_value is not None and slot.slot_index >= self.next_slot_index:
            self.next_slot_index = slot.slot_index + 1
            self._purge(step)
        self._release_externalized(step)
        self._arm_rebroadcast(step)

    def _release_externalized(self, step: Step) -> None:
        """Hand out `Externalized` events in slot order: a slot decided while an
        earlier one is still open waits for it (the application applies slots in
        order, and a restarted node re-delivers what it held back)."""
        through = self.delivered_through
        while True:
            value = self.externalized_value(through + 1)
            if value is None:
                break
            through += 1
            step.events.append(Externalized(through, value))
        if through != self.delivered_through:
            self._set_delivered_through(through, step)
            self._purge(step)  # the floor may have waited for these slots

    def _set_delivered_through(self, slot_index: int, step: Step) -> None:
        self.delivered_through = slot_index
        step.persist.append(Persist(_DELIVERED_KEY, struct.pack(">Q", slot_index)))

    def _undecided_slots(self) -> list[Slot]:
        return [
            self.slots[index]
            for index in sorted(self.slots)
            if self.slots[index].externalized_value is None
        ]

    def _arm_rebroadcast(self, step: Step) -> None:
        interval_ms = self.config.rebroadcast_interval_ms
        if interval_ms is None or self._rebroadcast_armed:
            return
        if (
            self._awaiting_state
            or self._behind()
            or self._wants_checkpoint()
            or self._undecided_slots()
        ):
            self._rebroadcast_armed = True
            step.timers.append(SetTimer(REBROADCAST_TIMER, interval_ms))

    def _rebroadcast(self, step: Step) -> None:
        """Re-send our latest statements of undecided slots, and of the newest decided
        one (which lets peers that missed it catch up).  Ask peers for their state
        when a slot heard nothing new since the last tick (its messages were lost and
        the peers may have moved on and fallen silent), when a slot below a decided one
        is still open (we missed it), or while still waiting for answers after a
        restart."""
        self._rebroadcast_armed = False
        undecided = self._undecided_slots()
        if self.config.validator:
            decided = [index for index, slot in self.slots.items() if slot.externalized_value]
            chosen = list(undecided)
            if decided:
                chosen.append(self.slots[max(decided)])
            for slot in chosen:
                if slot.fully_validated:
                    for envelope in self._own_envelopes_of(slot):
                        step.outgoing.append(Broadcast(envelope))
        stuck = [
            slot.slot_index
            for slot in undecided
            if self._heard_at_last_tick.get(slot.slot_index) == self._heard[slot.slot_index]
        ]
        self._heard_at_last_tick = {
            slot.slot_index: self._heard[slot.slot_index] for slot in undecided
        }
        from_slot_index: int | None = None
        if self._awaiting_state:
            from_slot_index = self.floor
        elif self._has_gap():
            from_slot_index = self.delivered_through + 1
        elif stuck:
            from_slot_index = min(stuck)
        if from_slot_index is not None:
            step.outgoing.append(Broadcast(StateRequest(from_slot_index)))
        if self._behind():
            self._request_decisions(Broadcast, step)
        if self._wants_checkpoint():
            step.outgoing.append(Broadcast(CheckpointRequest(self.delivered_through + 1)))
        self._arm_rebroadcast(step)

    def _has_gap(self) -> bool:
        """A later slot is decided but an earlier one is not (we missed its messages,
        for example while down): its `Externalized` event, and the later ones, wait."""
        return self.delivered_through + 1 < self.next_slot_index

    def _purge(self, step: Step) -> None:
        # a slot not yet delivered stays: forgetting it would leave the application a
        # hole that no peer may be able to fill (the window's top follows it, so the
        # slot table stays bounded)
        retained_from = self.next_slot_index - self.config.retained_slots
        new_floor = max(self.floor, min(retained_from, self.delivered_through + 1))
        if new_floor == self.floor:
            return
        for slot_index in [index for index in self.slots if index < new_floor]:
            slot = self.slots.pop(slot_index)
            if slot.externalized_value is not None:
                # kept, with the fullest proof seen, for our own delivery in slot order
                # (an undecided slot is not skipped: it is fetched from peers)
                self._record_decision(self._build_decision(slot), step)
            for timer_cancel in (slot.cancel_nomination_timer, slot.cancel_ballot_timer):
                slot.step = step
                timer_cancel()
            for kind in ("nomination", "ballot"):
                step.persist.append(Persist(slot_record_key(slot_index, kind), None))
        self._pending = {
            key: parked for key, parked in self._pending.items() if key[1] >= new_floor
        }
        self._own_envelopes = {
            key: envelope for key, envelope in self._own_envelopes.items() if key[0] >= new_floor
        }
        self._ballot_envelopes = {
            key: envelope for key, envelope in self._ballot_envelopes.items() if key[0] >= new_floor
        }
        # a decision not delivered yet stays whatever its age: it may be the only
        # record of its slot anywhere (peers prune theirs the same way)
        for slot_index in self.decisions.prune(
            min(self.next_slot_index - self.config.retained_decisions, self.delivered_through + 1)
        ):
            step.persist.append(Persist(decision_record_key(slot_index), None))
        for slot_index in [index for index in self._heard if index < new_floor]:
            del self._heard[slot_index]
        self._introduced_bytes = Counter(
            {key: held for key, held in self._introduced_bytes.items() if key[0] >= new_floor}
        )
        self._statement_bytes = {
            key: held for key, held in self._statement_bytes.items() if key[0] >= new_floor
        }
        self._prune_attestations(step)
        self.floor = new_floor
        step.persist.append(Persist(_FLOOR_KEY, struct.pack(">Q", new_floor)))

    # ------------------------------------------------------------ decisions

    def _behind(self) -> bool:
        """A slot before a decided one is missing, or a member spoke of a slot beyond
        the window that is still not decided here (its statements were refused then and
        may never come again): ask peers for decisions with proofs."""
        return self._has_gap() or self._far_future_heard >= self.next_slot_index

    def _build_decision(self, slot: Slot) -> Decision:
        assert slot.externalized_value is not None
        envelopes = [
            self._ballot_envelopes[(slot.slot_index, node)]
            for node in slot.ballot.latest
            if (slot.slot_index, node) in self._ballot_envelopes
        ]
        own = self._own_envelopes.get((slot.slot_index, "ballot"))
        if own is not None:
            envelopes.append(own)
        return build_decision(slot.slot_index, slot.externalized_value, envelopes)

    def _record_decision(self, decision: Decision, step: Step) -> None:
        if self.decisions.get(decision.slot_index) == decision:
            return
        self.decisions.put(decision)
        step.persist.append(
            Persist(decision_record_key(decision.slot_index), CODEC.encode(decision))
        )

    def _request_decisions(self, send: Callable[[DecisionRequest], Any], step: Step) -> None:
        from_slot_index = self.delivered_through + 1
        self._decision_request_through = from_slot_index + self.config.decisions_per_answer - 1
        step.outgoing.append(send(DecisionRequest(from_slot_index)))

    def _answer_decision_request(self, sender: NodeId, from_slot_index: int, step: Step) -> None:
        answers: list[Decision] = []
        last = from_slot_index + self.config.decisions_per_answer
        for slot_index in range(from_slot_index, last):
            decision = self.decisions.get(slot_index)
            if decision is None:
                break
            answers.append(decision)
        oldest = self.decisions.oldest()
        if not answers and oldest is not None and from_slot_index < oldest:
            step.outgoing.append(Send(sender, DecisionsUnavailable(from_slot_index, oldest)))
        step.outgoing.extend(Send(sender, decision) for decision in answers)

    def _receive_decision(
        self, sender: NodeId, decision: Decision, now_ms: int, step: Step
    ) -> None:
        slot_index = decision.slot_index
        if (
            slot_index <= self.delivered_through
            or self.externalized_value(slot_index) is not None
            or slot_index > self.delivered_through + self.config.retained_decisions
        ):
            self._reject(RejectReason.UNNEEDED_DECISION)
            return
        if not self._decision_check_limit.allow(sender, now_ms):
            self._reject(RejectReason.DECISION_LIMITED)
            return
        if not check_decision(
            decision,
            local_qset=self.config.quorum_set,
            qset_by_hash=self.quorum_sets.get,
            admits=self.transitive_quorum.__contains__,
            verifier=self._verify,
        ):
            self._reject(RejectReason.BAD_DECISION)
            return
        self._record_decision(decision, step)
        if slot_index >= self.next_slot_index:
            self.next_slot_index = slot_index + 1
            self._purge(step)
        self._release_externalized(step)
        if self._behind() and self.delivered_through >= self._decision_request_through:
            # the answer is used up: ask the peer that had it for the next ones at once
            self._request_decisions(lambda request: Send(sender, request), step)
        self._arm_rebroadcast(step)

    def _decisions_unavailable(
        self, sender: NodeId, message: DecisionsUnavailable, step: Step
    ) -> None:
        first = self.delivered_through + 1
        if message.from_slot_index != first or message.oldest_slot_index <= first:
            return
        report = (first, message.oldest_slot_index)
        if self._unavailable_reported != report:
            self._unavailable_reported = report
            step.events.append(SlotsUnavailable(*report))
            if self.config.checkpoint_interval > 0:
                # unverified word of one peer: it costs one request, answered or not;
                # later ticks ask every peer while the slot is still missing
                self._checkpoint_from = first
                step.outgoing.append(Send(sender, CheckpointRequest(first)))
                self._arm_rebroadcast(step)

    # ------------------------------------------------------------ checkpoints

    def _wants_checkpoint(self) -> bool:
        return self._checkpoint_from is not None and (
            self._checkpoint_from == self.delivered_through + 1
        )

    def _receive_attestation(self, sender: NodeId, attestation: Attestation, step: Step) -> None:
        reason = self._attestation_precheck(attestation)
        if reason is not None:
            self._reject(reason)
            return
        if not verify_attestation(attestation, self.config.network):
            self._reject(RejectReason.BAD_ATTESTATION)
            return
        if self.attestations.add(attestation):
            self._persist_attestation(attestation, step)
            self._answer_late_attestation(sender, attestation, step)

    def _answer_late_attestation(
        self, sender: NodeId, attestation: Attestation, step: Step
    ) -> None:
        """A peer attesting a slot after we moved past it was likely behind and missed
        our attestation of that slot: it gets it back (once: a second copy of its
        attestation is refused before this), so it can serve that checkpoint too.
        Peers in step attest within the same slot and get nothing back."""
        slot_index = attestation.slot_index
        if self.delivered_through <= slot_index:
            return
        kept = self.attestations.agreeing(slot_index)
        own = [found for found in kept if found.node_id == self.node_id]
        if own and self.config.validator:
            step.outgoing.append(Send(sender, own[0]))

    def _attestation_precheck(self, attestation: Attestation) -> RejectReason | None:
        """Checks without a signature: a checkpoint slot within the kept range (up to
        the window's top, so early ones are at most a window's worth per node), a
        member of the transitive quorum, one per node and slot, the local digest."""
        node, slot_index = attestation.node_id, attestation.slot_index
        interval = self.config.checkpoint_interval
        if node == self.node_id:
            return RejectReason.OWN_STATEMENT
        if node not in self.transitive_quorum:
            return RejectReason.NOT_IN_QUORUM
        lowest = self.delivered_through + 1 - interval * self.config.retained_checkpoints
        if (
            interval <= 0
            or slot_index % interval
            or not lowest <= slot_index <= self.window_top
            or self.attestations.has(attestation)
            # a delivered slot the node did not attest: nothing to agree with, ever
            or (slot_index <= self.delivered_through and slot_index not in self.attestations.own)
        ):
            return RejectReason.UNNEEDED_ATTESTATION
        if self.attestations.conflicts(attestation):
            return RejectReason.BAD_ATTESTATION
        return None

    def _persist_attestation(self, attestation: Attestation, step: Step) -> None:
        key = attestation_record_key(attestation.slot_index, attestation.node_id)
        step.persist.append(Persist(key, CODEC.encode(attestation)))

    def _prune_attestations(self, step: Step) -> None:
        for slot_index, node in self.attestations.prune(self.delivered_through + 1):
            step.persist.append(Persist(attestation_record_key(slot_index, node), None))

    def _answer_checkpoint_request(
        self, sender: NodeId, from_slot_index: int, step: Step
    ) -> None:
        slot_index = self.attestations.best_from(from_slot_index, self.config.quorum_set)
        if slot_index is None:
            return
        state = self.application.checkpoint_state(from_slot_index, slot_index)
        if state is None:
            return
        checkpoint = Checkpoint(
            slot_index,
            self.attestations.own[slot_index],
            tuple(self.attestations.agreeing(slot_index)),
            state,
        )
        step.outgoing.append(Send(sender, checkpoint))

    def _receive_checkpoint(
        self, sender: NodeId, checkpoint: Checkpoint, now_ms: int, step: Step
    ) -> None:
        first = self.delivered_through + 1
        if not self._wants_checkpoint() or checkpoint.slot_index < first:
            self._reject(RejectReason.UNNEEDED_CHECKPOINT)
            return
        if not self._checkpoint_check_limit.allow(sender, now_ms):
            self._reject(RejectReason.CHECKPOINT_LIMITED)
            return
        holds = check_checkpoint(
            checkpoint,
            local_qset=self.config.quorum_set,
            admits=self.transitive_quorum.__contains__,
            verifier=partial(verify_attestation, network=self.config.network),
            gathered=self._gathered,
        )
        if not holds or not self.application.checkpoint_matches(
            first, checkpoint.slot_index, checkpoint.digest, checkpoint.state
        ):
            self._reject(RejectReason.BAD_CHECKPOINT)
            return
        self._checkpoint_from = None
        self._gathered.clear()
        step.events.append(
            CheckpointVerified(first, checkpoint.slot_index, checkpoint.digest, checkpoint.state)
        )

    def _sign(self, statement: Statement) -> Envelope:
        return self._signer(self.keys, statement)

    def _reject(self, reason: RejectReason) -> None:
        self.rejected[reason] += 1

    # ------------------------------------------------------------ restore

    def _restore(self, storage: Storage) -> None:
        floor_record = storage.get(_FLOOR_KEY)
        if floor_record is not None and len(floor_record) == 8:
            self.floor = max(self.floor, struct.unpack(">Q", floor_record)[0])
            self.next_slot_index = max(self.next_slot_index, self.floor)
        delivered_record = storage.get(_DELIVERED_KEY)
        if delivered_record is None:
            self.delivered_through = max(self.delivered_through, self.floor - 1)
        for key in sorted(storage):
            if key.startswith(_DECISION_KEY_PREFIX):
                self._restore_decision(key, storage[key])
            if key.startswith(_ATTESTATION_KEY_PREFIX):
                self._restore_attestation(key, storage[key])
            if not key.startswith(_SLOT_KEY_PREFIX):
                continue
            try:
                envelope = CODEC.decode(storage[key])
            except DecodeError as error:
                raise LocalError(f"storage record {key!r} is corrupt: {error}") from None
            if not isinstance(envelope, Envelope):
                raise LocalError(f"storage record {key!r} is not an envelope")
            self._restore_statement(envelope)
        if delivered_record is not None and len(delivered_record) == 8:
            delivered = struct.unpack(">Q", delivered_record)[0]
            self.delivered_through = max(self.delivered_through, delivered)

    def _restore_decision(self, key: bytes, record: bytes) -> None:
        try:
            decision = CODEC.decode(record)
        except DecodeError as error:
            raise LocalError(f"storage record {key!r} is corrupt: {error}") from None
        if not isinstance(decision, Decision):
            raise LocalError(f"storage record {key!r} is not a decision")
        self.decisions.put(decision)
        self.next_slot_index = max(self.next_slot_index, decision.slot_index + 1)

    def _restore_attestation(self, key: bytes, record: bytes) -> None:
        try:
            attestation = CODEC.decode(record)
        except DecodeError as error:
            raise LocalError(f"storage record {key!r} is corrupt: {error}") from None
        if not isinstance(attestation, Attestation):
            raise LocalError(f"storage record {key!r} is not an attestation")
        self.attestations.restore(attestation, own=attestation.node_id == self.node_id)

    def _restore_statement(self, envelope: Envelope) -> None:
        statement = envelope.statement
        if statement.node_id != self.node_id:
            raise LocalError("storage holds another node's statement")
        if statement.slot_index < self.floor:
            return
        slot = self._slot(statement.slot_index, 0, Step())
        if isinstance(statement.pledges, Nomination):
            slot.nomination.restore(statement)
        else:
            slot.ballot.restore(statement)
            if slot.ballot.phase == Phase.EXTERNALIZE:
                assert slot.ballot.commit is not None
                slot.externalized_value = slot.ballot.commit.value
                slot.nomination.stopped = True
                self.next_slot_index = max(self.next_slot_index, statement.slot_index + 1)
        slot.mark_sent(statement)
        self._own_envelopes[(statement.slot_index, _kind_of(statement))] = envelope


def decision_record_key(slot_index: int) -> bytes:
    """Storage key of the decision (value and proof) of a slot."""
    return _DECISION_KEY_PREFIX + struct.pack(">Q", slot_index)


def attestation_record_key(slot_index: int, node: bytes) -> bytes:
    """Storage key of an attestation kept for a checkpoint slot (own or agreeing)."""
    return _ATTESTATION_KEY_PREFIX + struct.pack(">Q", slot_index) + node


def statement_size(statement: Statement) -> int:
    """What a statement costs to hold, counted as its values' bytes plus 16 per value
    and 200 for the rest (ids, hashes, counters)."""
    pledges = statement.pledges
    if isinstance(pledges, Nomination):
        values: list[bytes] = [*pledges.votes, *pledges.accepted]
    elif isinstance(pledges, Externalize):
        values = [pledges.commit.value]
    elif isinstance(pledges, Confirm):
        values = [pledges.ballot.value]
    else:
        values = [pledges.ballot.value]
        values += [ballot.value for ballot in (pledges.prepared, pledges.prepared_prime) if ballot]
    return 200 + sum(len(value) + 16 for value in values)


def _statement_key(statement: Statement) -> tuple[int, bytes, bool]:
    return (
        statement.slot_index,
        statement.node_id,
        isinstance(statement.pledges, Nomination),
    )


def _kind_of(statement: Statement) -> str:
    return "nomination" if isinstance(statement.pledges, Nomination) else "ballot"


def _is_stale(slot: Slot, statement: Statement) -> bool:
    pledges = statement.pledges
    if isinstance(pledges, Nomination):
        previous = slot.nomination.latest.get(statement.node_id)
        return (
            previous is not None
            and isinstance(previous.pledges, Nomination)
            and not is_newer_nomination(previous.pledges, pledges)
        )
    previous = slot.ballot.latest.get(statement.node_id)
    return (
        previous is not None
        and not isinstance(previous.pledges, Nomination)
        and not is_newer_ballot_statement(previous.pledges, pledges)
    )
