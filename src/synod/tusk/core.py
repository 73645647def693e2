"""The passive Tusk core: answers drivers' requests, never initiates anything.

Theory of operation (Narwhal & Tusk: the Narwhal design for the DAG, Tusk for the commit;
the passive-core split follows sleepyseal).  A Narwhal primary normally broadcasts its
header, collects votes, broadcasts certificates and fetches what it misses.  Here every
one of those transfers is done by untrusted *drivers*; the core only reacts to a
`RequestReceived` carrying a `CoreRequest` (or a client's `SubmitRequest`) and returns
one `Reply` with its signed answer.  For each request, in this order, it:

1. stores the carried certificates (and those named by header digest, rebuilt from a
   header it voted for) that are valid (creator and voters in the committee,
   a quorum of distinct voters by weight, every signature correct) and whose parents it
   already holds, lowest rounds first, so that its DAG is causally complete; a valid
   certificate for a slot that already has one (more than f faulty cores) is refused
   and the pair kept as `CertificateConflict` evidence;
2. runs the Tusk commit rule (`synod.tusk.ordering`) after each stored certificate and
   emits `Committed` events in sequence; garbage-collects rounds no delivery can reach;
3. advances its round, after each stored certificate, while it holds certificates of
   its current round from a quorum;
4. votes for each carried header that deserves it: valid signature, a round above the
   collection floor, parents it holds, all of the previous round, weighing a quorum, a
   batch within limits, and no other header of that creator and round voted before (a
   second one is refused and kept, with the first, as `Equivocation` evidence);
5. proposes its own header for its current round if it has none yet (its parents are
   the certificates it holds of the previous round; its weak parents the older ones it
   holds that nothing delivered or referenced yet, DAG-Rider's weak links; its batch
   comes from the pending client transactions) and votes for it; with
   `min_header_delay_ms`, only once that long has passed (by `now_ms`) since it entered
   the round, or, when there are transactions to order, once it holds every member's
   certificate of the previous round, so that late parents still get in and an idle
   committee makes few empty rounds;
6. answers with its round, its own header (unless the driver says it holds it), the
   votes, references to the certificates
   it holds around the driver's `since_round`, the certificates the driver wanted, and
   a typed `Refusal` for everything refused (a refused item changes nothing).

Everything the core must not forget (votes, own headers, certificates, deliveries,
pending transactions, evidence) is emitted as `Persist` in the same step, before the
`Reply`; `TuskCore(keys, committee, storage)` rebuilds the same state from those
records.  A request about rounds at or below the collection floor changes nothing; a
request from future rounds is only accepted through certificates whose whole chain of
parents has been checked.

A core far behind (its round below the committee's collection floor) installs a
checkpoint signed by cores of weight f + 1 (`CheckpointCertificate`) and continues the
order from there; the positions it skipped are a gap in its delivery log, which drivers
fill with records fetched from other cores (`LogRequest`, served by the core's node from
what it persisted: `serve_log`), each checked from the top down against the chain the
checkpoint states.  Own batches whose delivery may lie in the gap wait until the gap is
filled that far (see docs/tusk.md, "Checkpoints" and "Filling the gap").

State that peers can grow stays bounded.  Evidence is kept for at most
`MAX_EVIDENCE_PER_CREATOR` slots per creator and kind (equivocation, certificate
conflict), the first ones seen: one proof already shows the creator faulty, so later
ones are refused like the first but neither stored nor reported again.  The pending
queue never exceeds `max_pending_transactions`: when collection gives an own batch that
was never delivered back to the queue, only what fits is queued again (in batch order)
and the rest is dropped and reported as `PendingTransactionsDropped`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from synod.core import LocalError, Persist, Proposed, Reply, RequestReceived, Step, Storage
from synod.crypto import KeyPair, NodeId, in_network, node_id_text
from synod.quorum.committee import Committee
from synod.tusk.messages import (
    KNOWN_WINDOW_ROUNDS,
    LOG_ANSWER_BYTES,
    MAX_BATCH_BYTES,
    MAX_BATCH_TRANSACTIONS,
    MAX_CERTIFICATES_PER_MESSAGE,
    MAX_CHECKPOINT_DELIVERED,
    MAX_COMMITTEE_SIZE,
    MAX_LOG_RECORDS,
    MAX_TRANSACTION_BYTES,
    MAX_WEAK_PARENTS,
    ZERO_DIGEST,
    Certificate,
    CertificateConflict,
    CertificateRef,
    CertifiedDigest,
    CheckpointCertificate,
    CheckpointStatement,
    CheckpointVote,
    CommitAck,
    CommitQuery,
    CommittedAt,
    CoreAnswer,
    CoreRequest,
    Equivocation,
    Header,
    HeaderStub,
    LogAnswer,
    LogRecord,
    LogRequest,
    LogWanted,
    Refusal,
    RefusalReason,
    SubmitAnswer,
    SubmitRefusal,
    SubmitRequest,
    Vote,
    WeakParent,
    chain_next,
    committee_context,
    genesis_chain,
    header_signature_valid,
    request_digest,
    sign_answer,
    sign_checkpoint,
    sign_commit_ack,
    sign_header,
    sign_submit_answer,
    sign_vote,
    transaction_digest,
)
from synod.tusk.ordering import Dag, Ordered, Snapshot, TuskOrdering, Vertex
from synod.wire import U64, Bytes32, Message, canonical_bytes

# ---------------------------------------------------------------- configuration and events

MAX_ACKNOWLEDGED_TRANSACTIONS = 65_536
"""Committed transactions a core can acknowledge (`CommitQuery`), the most recent ones:
an index entry costs about 200 bytes (a digest, a position, a certificate digest and
the dict's overhead), so about 13 MiB at most.  A client asks right after its receipt,
when its transactions are among the latest; older ones are answered by nobody (the
commit log on disk still has them)."""

MAX_EVIDENCE_PER_CREATOR = 2
"""Proofs kept per creator and kind of misbehaviour, the first ones seen: one already
proves the creator faulty, and the cap stops a creator that misbehaves in every round
from growing this core's memory and storage round after round."""


@dataclass(frozen=True, slots=True)
class TuskConfig:
    """Limits of one core (the batch limits should be the same on every core;
    `gc_depth`, `kept_commits` and `network` must be, and are checked: see
    `committee_context`)."""

    gc_depth: int = 50
    max_batch_transactions: int = 64
    max_batch_bytes: int = 64 * 1024
    max_pending_transactions: int = 10_000
    min_header_delay_ms: int = 0
    """Wait this long (by `now_ms`) after this core's previous header before proposing
    the next, unless every member's certificate of the previous round is already held
    and there are transactions to order (pending here, or in that round): late
    certificates can still become parents, so a slow core's blocks (and the client
    transactions in them) are not left out of the DAG, and an idle committee makes few
    empty rounds."""
    network: bytes = b""
    """The network id (`synod.crypto.in_network`): in every signature domain and in the
    committee context every header carries, so that a core of one network refuses what
    was signed for another, even with the same key."""
    kept_commits: int | None = None
    """Delivery-log records kept below this core's latest checkpoint (None: the whole
    log).  At each checkpoint it signs or installs, the records more than this many
    positions below it are deleted: the core needs none of them (it resumes from the
    checkpoint), only readers of the log (`synod tusk watch`, acknowledgements after a
    restart) and cores filling a gap do.  The same on every core, and checked (part of
    `committee_context`): a core filling a gap gives up what the others no longer
    keep, at the same checkpoints as they prune it."""

    def __post_init__(self) -> None:
        if self.gc_depth < 2:
            raise ValueError("gc_depth must be at least 2 rounds")
        if not 1 <= self.max_batch_transactions <= MAX_BATCH_TRANSACTIONS:
            raise ValueError(f"max_batch_transactions must be 1..{MAX_BATCH_TRANSACTIONS}")
        if not MAX_TRANSACTION_BYTES <= self.max_batch_bytes <= MAX_BATCH_BYTES:
            raise ValueError(
                f"max_batch_bytes must hold one transaction of {MAX_TRANSACTION_BYTES}"
                f" and be at most {MAX_BATCH_BYTES}"
            )
        if self.max_pending_transactions < 1:
            raise ValueError("max_pending_transactions must be positive")
        if self.min_header_delay_ms < 0:
            raise ValueError("min_header_delay_ms must not be negative")
        if self.kept_commits is not None and self.kept_commits < 0:
            raise ValueError("kept_commits must not be negative")
        in_network(b"synod/tusk", self.network)  # raises ValueError for a bad network id


@dataclass(frozen=True, slots=True)
class Committed:
    """The certificate `digest` was delivered at position `sequence` of the total order."""

    sequence: int
    leader_round: int
    round: int
    creator: NodeId
    digest: bytes
    transactions: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class EquivocationDetected:
    """A creator signed two headers for one round; `evidence` proves it to anyone."""

    evidence: Equivocation


@dataclass(frozen=True, slots=True)
class PendingTransactionsDropped:
    """The batch of this core's header for `round` was never delivered and the pending
    queue had no room to take all of it back: `transactions` are dropped (their clients
    must submit them again)."""

    round: int
    transactions: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class FellBehind:
    """A certificate of `seen_round`, checked (creator and a quorum of votes), shows the
    committee more than `gc_depth` rounds ahead of this core's `round`: the others may
    have collected the rounds it needs, and until it is back within `gc_depth` it
    accepts no client transaction (it could not promise to get them committed).  The
    core never reaches out; it catches up only from what drivers carry."""

    round: int
    seen_round: int


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """This core is back within `gc_depth` rounds of the highest checked certificate it
    was shown (after a `FellBehind`), and accepts client transactions again."""

    round: int


@dataclass(frozen=True, slots=True)
class CheckpointInstalled:
    """A checkpoint of the committee, signed by cores of weight at least f + 1, was
    installed: this core was more than `gc_depth` rounds behind (down for long, or new),
    and continues the total order from position `sequence` (after the delivery of the
    leader of `leader_round`).  Positions `first_skipped`..`sequence` - 1 are committed
    by the committee but not in this core's log (their certificates were collected)."""

    first_skipped: int
    sequence: int
    leader_round: int


@dataclass(frozen=True, slots=True)
class LogFilled:
    """Positions `first`..`first` + len(`digests`) - 1 of the gap an installed checkpoint
    left in this core's delivery log are filled with records drivers carried from other
    cores, each checked against the chain of the checkpoint; `digests` are the
    certificates delivered there, in order."""

    first: int
    digests: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class GapGivenUp:
    """Positions `first`..`end` - 1 of the gap lie below what this core keeps of its log
    (`kept_commits` below its latest checkpoint): they will not be filled.  An own batch
    that may have been delivered there is not queued again (it may have been committed:
    a loss reported here is better than a duplicate); see `GapClosed.dropped`."""

    first: int
    end: int


@dataclass(frozen=True, slots=True)
class GapClosed:
    """The gap of this core's delivery log is closed: filled down to `first` (from
    `end`), or what is left of it given up (`GapGivenUp`).  `consistent` is False when
    the filled records do not continue this core's own sequence below the gap (the
    checkpoint lied: more than f signers).  `dropped` are the transactions of own
    batches whose fate lies in positions given up: not queued again, their clients
    must check (`synod tusk submit --wait`)."""

    first: int
    end: int
    consistent: bool
    dropped: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CertificateConflictDetected:
    """Two valid certificates for one slot: proof that more than f cores are faulty
    (`evidence.double_voters()` names those that voted for both)."""

    evidence: CertificateConflict


# ---------------------------------------------------------------- persisted records


class _VoteRecord(Message, frozen=True, tag="tusk.VoteRecord"):
    header: HeaderStub
    vote: Vote


class _CommitRecord(Message, frozen=True, tag="tusk.CommitRecord"):
    sequence: U64
    leader_round: U64
    round: U64
    creator: Bytes32
    digest: Bytes32
    transactions: tuple[bytes, ...]
    # What proves the record to a core filling a gap (`LogRecord`); absent from records
    # written before gaps were filled, which are then not served.
    parents: tuple[bytes, ...] = ()
    weak_parents: tuple[WeakParent, ...] = ()
    previous_chain: bytes = ZERO_DIGEST


class _Gap(Message, frozen=True, tag="tusk.Gap"):
    """The positions `first`..`end` - 1 the delivery log lacks since a checkpoint was
    installed at `top`.  `head` is the chain of positions 0..`end` - 1 (trusted: the
    checkpoint's, then each filled record's `previous_chain`); `bottom_chain` this
    core's own chain at `first` (ZERO_DIGEST once the bottom is given up);
    `leader_round` the leader round of the record at `end` (the checkpoint's before
    any is filled): no position below `end` delivers a header of a higher round."""

    first: U64
    end: U64
    top: U64
    head: Bytes32
    bottom_chain: Bytes32
    leader_round: U64


_ANSWER_BATCH_BYTES = 2 * 1024 * 1024
"""Transactions returned in one answer's certificates: well under the 4 MiB frame cap."""

_TUSK = b"tusk/"
"""The prefix of every key a Tusk core persists."""
_CERTIFICATE = b"tusk/certificate/"
_CHAIN = b"tusk/chain"
_OWN_CHECKPOINT = b"tusk/checkpoint"
_INSTALLED = b"tusk/installed-checkpoint"
_VOTE = b"tusk/vote/"
_OWN_HEADER = b"tusk/own-header/"
_COMMIT = b"tusk/commit/"
_PENDING = b"tusk/pending/"
_EVIDENCE = b"tusk/evidence/"
_CONFLICT = b"tusk/conflict/"
_GAP = b"tusk/gap"
_UNSETTLED = b"tusk/unsettled/"


COMMIT_LOG_PREFIX = _COMMIT
"""Storage keys of the delivery log: this prefix, then the sequence (8 bytes, big-endian),
so that a key-ordered scan reads the committed sequence in order."""


def commit_log_key(sequence: int) -> bytes:
    """The storage key of the delivery at position `sequence`."""
    return _number_key(_COMMIT, sequence)


LOG_GAP_KEY = _GAP
"""The storage key of the gap a core's delivery log has while it fills it (absent when
it has none): see `read_log_gap`."""


def read_log_gap(value: bytes) -> tuple[int, int]:
    """The positions [first, end) still missing from a core's delivery log, from its
    record under `LOG_GAP_KEY`: they are filled from `end` - 1 down; positions of a
    skipped range outside them are either filled already or will never be (pruned
    everywhere, given up)."""
    gap = _decode_gap(value)
    return gap.first, gap.end


def read_commit_record(value: bytes) -> Committed:
    """The `Committed` event a delivery-log record (under `COMMIT_LOG_PREFIX`) holds."""
    record = _decode_commit(value)
    return Committed(
        sequence=record.sequence,
        leader_round=record.leader_round,
        round=record.round,
        creator=NodeId(record.creator),
        digest=record.digest,
        transactions=record.transactions,
    )


def _slot_key(prefix: bytes, round_number: int, creator: bytes) -> bytes:
    return prefix + round_number.to_bytes(8, "big") + creator


def _number_key(prefix: bytes, number: int) -> bytes:
    return prefix + number.to_bytes(8, "big")


_decode_certificate = msgspec.msgpack.Decoder(Certificate).decode
_decode_vote_record = msgspec.msgpack.Decoder(_VoteRecord).decode
_decode_header = msgspec.msgpack.Decoder(Header).decode
_decode_commit = msgspec.msgpack.Decoder(_CommitRecord).decode
_decode_evidence = msgspec.msgpack.Decoder(Equivocation).decode
_decode_conflict = msgspec.msgpack.Decoder(CertificateConflict).decode
_decode_checkpoint_vote = msgspec.msgpack.Decoder(CheckpointVote).decode
_decode_statement = msgspec.msgpack.Decoder(CheckpointStatement).decode
_decode_chain = msgspec.msgpack.Decoder(tuple[int, bytes]).decode
_decode_gap = msgspec.msgpack.Decoder(_Gap).decode


CHECKPOINT_SLACK_ROUNDS = 4
"""Rounds the committee may move on while a checkpoint's signatures gather at drivers
(see `checkpoint_rounds`)."""


def checkpoint_rounds(gc_depth: int) -> int:
    """Leader rounds between two checkpoints: a quarter of `gc_depth` (at least 2, one
    leader).  A core installing a checkpoint needs the certificates from its floor
    (`gc_depth` rounds below its leader) up, so drivers must still hold that round when
    the checkpoint reaches it: `window_rounds` above `gc_depth` plus this."""
    return max(2, gc_depth // 4)


def _vertex(certificate: Certificate, digest: bytes) -> Vertex:
    return Vertex(
        digest=digest,
        round=certificate.header.round,
        creator=NodeId(certificate.header.creator),
        parents=certificate.header.parents,
        weak_parents=tuple((weak.round, weak.digest) for weak in certificate.header.weak_parents),
    )


# ---------------------------------------------------------------- the core


class TuskCore:
    """A passive Tusk core (see the module docstring). Rebuild with the same storage."""

    def __init__(
        self,
        keys: KeyPair,
        committee: Committee,
        storage: Storage | None = None,
        *,
        config: TuskConfig | None = None,
    ) -> None:
        if keys.node_id not in committee:
            raise LocalError("this core's key is not a committee member")
        if len(committee) > MAX_COMMITTEE_SIZE:
            raise LocalError(f"a Tusk committee has at most {MAX_COMMITTEE_SIZE} members")
        self._keys = keys
        self.committee = committee
        self.config = config or TuskConfig()
        if (self.config.gc_depth + 1) * len(committee) > MAX_CHECKPOINT_DELIVERED:
            raise LocalError(
                f"(gc_depth + 1) x members must be at most {MAX_CHECKPOINT_DELIVERED}:"
                " a checkpoint names every certificate of its last gc_depth + 1 rounds"
            )
        self._network = self.config.network
        self.context = committee_context(
            self._network,
            committee.weights,
            self.config.gc_depth,
            kept_commits=self.config.kept_commits,
        )
        """The committee context this core signs in and requires (`committee_context`)."""
        self._dag = Dag()
        self._certificates: dict[bytes, Certificate] = {}
        self._ordering = TuskOrdering(
            committee,
            gc_depth=self.config.gc_depth,
            checkpoint_rounds=checkpoint_rounds(self.config.gc_depth),
        )
        # The digest of the committed sequence so far (`chain_next`), and this core's
        # latest checkpoint vote with its statement's digest.
        self._chain = genesis_chain(self.context)
        self._checkpoint: CheckpointVote | None = None
        self._checkpoint_digest = ZERO_DIGEST
        self._installed: CheckpointStatement | None = None
        self._log_start = 0  # the lowest position the delivery log may still hold
        self._gap: _Gap | None = None
        # Own headers below the floor when a checkpoint left a gap, by round: whether
        # they were delivered is known only once the gap is filled that far.
        self._unsettled: dict[int, Header] = {}
        self._log_records_refused = 0
        self._votes: dict[tuple[int, bytes], _VoteRecord] = {}
        # Headers voted for and not certified yet, by digest: lets a driver carry their
        # certificates without the batch (soft state: empty after a restart).
        self._voted_headers: dict[bytes, Header] = {}
        self._own_headers: dict[int, Header] = {}
        self._own_delivered: set[int] = set()  # rounds of own headers already delivered
        self._pending: dict[int, bytes] = {}
        self._next_pending = 0
        self._evidence: dict[tuple[int, bytes], Equivocation] = {}
        self._conflicts: dict[tuple[int, bytes], CertificateConflict] = {}
        self._round = 1
        self._last_header_ms: int | None = None  # unknown after a restart
        # The highest round of a certificate shown and checked, and whether this core is
        # reported behind it (soft state: a restarted core learns it again).
        self._highest_seen_round = 0
        self._reported_behind = False
        self._now_ms = 0
        self._stale_keys: list[bytes] = []  # evidence over the cap found in storage
        self._refusal_counts: dict[str, int] = {}  # by reason name, since start
        # transaction digest -> where it was first committed, the most recent ones only
        self._acknowledgeable: dict[bytes, CommittedAt] = {}
        self._restore(storage or {})
        # A core does not know where the committee is until a driver tells it: no
        # receipts until it has stored a certificate (it is in contact and within
        # reach), or, with an empty store, a driver stated the committee's round within
        # its reach (a brand-new committee has no certificate to show).
        self._unproven = True
        self._fresh = not storage
        self._contacted = False  # a driver's request has come since it was built

    # ------------------------------------------------------------ read-only views

    @property
    def node_id(self) -> NodeId:
        return self._keys.node_id

    @property
    def round(self) -> int:
        """The round this core proposes in."""
        return self._round

    @property
    def gc_round(self) -> int:
        """Rounds below this one are collected; requests about them change nothing."""
        return self._ordering.gc_round

    @property
    def committed_count(self) -> int:
        """How many certificates this core has delivered."""
        return self._ordering.next_sequence

    @property
    def behind(self) -> bool:
        """Whether a checked certificate shows the committee more than `gc_depth`
        rounds ahead (see `FellBehind`): client transactions are refused meanwhile."""
        return self._highest_seen_round > self._round + self.config.gc_depth

    @property
    def takes_transactions(self) -> bool:
        """Whether this core signs receipts now: not `behind`, and once it knows where
        the committee is: it has stored a certificate since it was built, or, built
        with an empty store (new, or its disk lost), a driver's request stated the
        committee's round within `gc_depth` of its own.  Before that it cannot tell
        whether the others collected what it needs (a core joining late, or back from
        an outage).  A driver that understates the round costs only time: receipts
        signed early are honoured once the core has installed a checkpoint (its pending
        transactions stay queued across installing)."""
        return not self.behind and not self._unproven

    @property
    def pending_count(self) -> int:
        """Client transactions accepted but not yet in one of this core's headers."""
        return len(self._pending)

    @property
    def evidence(self) -> tuple[Equivocation, ...]:
        """Equivocations this core has seen (each proven by two signed headers)."""
        return tuple(self._evidence.values())

    @property
    def conflicts(self) -> tuple[CertificateConflict, ...]:
        """Pairs of certificates for one slot this core was shown (more than f faulty)."""
        return tuple(self._conflicts.values())

    @property
    def chain(self) -> bytes:
        """The digest of this core's committed sequence so far (`chain_next`): two cores
        at one position with one chain committed the same sequence."""
        return self._chain

    @property
    def checkpoint(self) -> CheckpointVote | None:
        """This core's latest checkpoint vote (None before its first checkpoint)."""
        return self._checkpoint

    @property
    def log_gap(self) -> tuple[int, int] | None:
        """The positions [first, end) an installed checkpoint left out of this core's
        delivery log and not filled yet (None: none)."""
        return None if self._gap is None else (self._gap.first, self._gap.end)

    @property
    def unsettled_batches(self) -> int:
        """Own batches whose delivery may lie in the gap (not queued again until the gap
        is filled that far)."""
        return len(self._unsettled)

    def certificate_digests(self) -> frozenset[bytes]:
        """Digests of the certificates held (rounds at or above the collection floor)."""
        return frozenset(self._certificates)

    def metrics(self) -> dict[str, int]:
        """Counters and gauges for monitoring (`synod tusk core --metrics-port`):
        round, collection floor, committed certificates, pending transactions, whether
        behind, whether it signs receipts now, the highest round seen, evidence held,
        and refusals by reason since this core started (`refusals_<reason>`)."""
        values = {
            "round": self._round,
            "gc_round": self.gc_round,
            "committed": self.committed_count,
            "pending_transactions": len(self._pending),
            "behind": int(self.behind),
            "takes_transactions": int(self.takes_transactions),
            "highest_seen_round": max(self._highest_seen_round, self._round),
            "equivocations": len(self._evidence),
            "certificate_conflicts": len(self._conflicts),
            "checkpoint_sequence": self._checkpoint.statement.sequence if self._checkpoint else 0,
            "installed_checkpoint_sequence": self._installed.sequence if self._installed else 0,
            "log_gap_positions": 0 if self._gap is None else self._gap.end - self._gap.first,
            "unsettled_batches": len(self._unsettled),
            "log_records_refused": self._log_records_refused,
        }
        for reason, count in sorted(self._refusal_counts.items()):
            values[f"refusals_{reason}"] = count
        return values

    def certificate(self, digest: bytes) -> Certificate | None:
        """The certificate held under `digest`, if any."""
        return self._certificates.get(digest)

    def own_header(self) -> Header | None:
        """This core's header for its current round, once proposed."""
        return self._own_headers.get(self._round)

    # ------------------------------------------------------------ inputs

    def handle(self, event: Any, now_ms: int) -> Step:
        """Answer requests; every other input is ignored (a passive core never initiates)."""
        self._now_ms = now_ms
        if isinstance(event, RequestReceived):
            step = self._on_request(event)
        elif isinstance(event, Proposed):
            step = self._on_proposed(event.value)
        else:
            return Step()
        if self._stale_keys:
            # A constructor cannot persist: storage over the evidence cap is trimmed here.
            step.persist[:0] = [Persist(key, None) for key in self._stale_keys]
            self._stale_keys = []
        return step

    def _on_proposed(self, value: object) -> Step:
        if not isinstance(value, bytes) or len(value) > MAX_TRANSACTION_BYTES:
            raise LocalError(
                f"a proposed value is one transaction of 0..{MAX_TRANSACTION_BYTES} bytes"
            )
        step = Step()
        self._add_pending([value], step)
        return step

    def _on_request(self, event: RequestReceived) -> Step:
        body = event.body
        step = Step()
        answer: CoreAnswer | SubmitAnswer | CommitAck
        if isinstance(body, CoreRequest):
            answer = self._serve(body, step)
        elif isinstance(body, SubmitRequest):
            answer = self._serve_submit(body, step)
        elif isinstance(body, CommitQuery):
            answer = self._acknowledge(body)
        else:
            answer = self._answer(
                ZERO_DIGEST,
                [],
                [],
                [],
                [Refusal(digest=ZERO_DIGEST, reason=RefusalReason.MALFORMED_REQUEST)],
            )
        step.outgoing.append(Reply(client=event.client, request_id=event.request_id, body=answer))
        return step

    def _serve(self, request: CoreRequest, step: Step) -> CoreAnswer:
        refusals: list[Refusal] = []
        self._contacted = True
        if self._fresh and request.committee_round <= self._round + self.config.gc_depth:
            self._unproven = False
        if request.checkpoint is not None:
            self._consider_checkpoint(request.checkpoint, step)
        if request.log_records:
            self._fill_gap(request.log_records, step)
        carried = [*request.certificates, *self._rebuild(request.certified, refusals)]
        for certificate in sorted(carried, key=lambda c: c.header.round):
            refusal = self._accept_certificate(certificate, step)
            if refusal is not None:
                refusals.append(refusal)
        self._notice_lag(carried, refusals, step)
        votes: list[Vote] = []
        for header in self._headers_worth_checking(request.headers, refusals):
            outcome = self._vote_on(header, step)
            if isinstance(outcome, Refusal):
                refusals.append(outcome)
            elif outcome not in votes:
                votes.append(outcome)
        own = self._ensure_own_header(step)
        if own is not None:
            own_vote = self._votes[(own.round, self.node_id)].vote
            if own_vote not in votes:
                votes.append(own_vote)
        return self._answer(
            request_digest(request),
            votes,
            self._known(request.since_round),
            self._wanted(request.wanted),
            refusals,
            header_held=request.header_held,
            checkpoint_held=request.checkpoint_held,
            late_held=request.late_held,
        )

    def _notice_lag(
        self, carried: list[Certificate], refusals: list[Refusal], step: Step
    ) -> None:
        """Learn from the carried certificates refused for missing parents how far
        ahead the committee is, and report a change of `behind`.

        Only a certificate more than `gc_depth` rounds ahead and above the highest seen
        is checked, at most one per request, highest first: a driver cannot make the
        core verify more than one certificate's signatures per request this way, and
        a forged one (fewer than a quorum of valid votes) proves nothing.
        """
        missing = {r.digest for r in refusals if r.reason == RefusalReason.MISSING_PARENTS}
        threshold = max(self._highest_seen_round, self._round + self.config.gc_depth)
        candidates = [
            certificate
            for certificate in carried
            if certificate.header.round > threshold and certificate.header.digest() in missing
        ]
        if candidates:
            highest = max(candidates, key=lambda certificate: certificate.header.round)
            if self._signatures_valid(highest, highest.header.digest()):
                self._highest_seen_round = highest.header.round
        if self.behind and not self._reported_behind:
            self._reported_behind = True
            step.events.append(FellBehind(self._round, self._highest_seen_round))
        elif self._reported_behind and not self.behind:
            self._reported_behind = False
            step.events.append(CaughtUp(self._round))

    def _headers_worth_checking(
        self, headers: tuple[Header, ...], refusals: list[Refusal]
    ) -> list[Header]:
        """The distinct headers of a request, at most two per committee member.

        A driver carries at most one header per creator for the round it serves and the
        next; beyond that a request can only be an attempt to make the core verify
        signatures for nothing (each costs about 60 us), so the excess is refused unread.
        """
        limit = 2 * len(self.committee)
        distinct = list({header.digest(): header for header in headers}.items())
        # at most MAX_HEADERS_PER_REQUEST refusals: the answer's refusal bound holds
        refusals.extend(
            Refusal(digest=digest, reason=RefusalReason.MALFORMED_REQUEST)
            for digest, _ in distinct[limit:]
        )
        return [header for _, header in distinct[:limit]]

    def _answer(
        self,
        digest: bytes,
        votes: list[Vote],
        known: list[CertificateRef],
        certificates: list[Certificate],
        refusals: list[Refusal],
        *,
        header_held: bytes = ZERO_DIGEST,
        checkpoint_held: bytes = ZERO_DIGEST,
        late_held: bytes = ZERO_DIGEST,
    ) -> CoreAnswer:
        for refusal in refusals:
            name = refusal.reason.name.lower()
            self._refusal_counts[name] = self._refusal_counts.get(name, 0) + 1
        header = self._own_headers.get(self._round)
        own_vote = self._votes.get((self._round, self.node_id))
        # The own vote names the own header's digest (both are made together).
        if header_held != ZERO_DIGEST and own_vote is not None:
            held = own_vote.vote.header_digest == header_held
            header = None if held else header  # the driver has it: no batch on every call
        answer = CoreAnswer(
            core=self.node_id,
            request_digest=digest,
            round=self._round,
            header=header,
            votes=tuple(votes),
            known=tuple(known),
            certificates=tuple(certificates),
            refusals=tuple(refusals),
            checkpoint=None if checkpoint_held == self._checkpoint_digest else self._checkpoint,
            late_header=self._late_header(late_held),
            log_wanted=None if self._gap is None else LogWanted(self._gap.first, self._gap.end),
        )
        return sign_answer(self._keys, answer, self._network)

    def _late_header(self, held: bytes) -> Header | None:
        """The oldest own header of an earlier round above the floor that carries
        transactions and whose certificate this core does not hold, unless the driver
        holds it (`held`).  Voters still vote for it while its round is above their
        floor; certified, it becomes a weak parent and is delivered."""
        for round_number in sorted(self._own_headers):
            if round_number >= self._round:
                break
            header = self._own_headers[round_number]
            if round_number <= self.gc_round or not header.transactions:
                continue
            if self.node_id in self._dag.at(round_number):
                continue  # certified (and held, above the floor)
            # The own vote names the header's digest: no batch is hashed per answer.
            digest = self._votes[(round_number, self.node_id)].vote.header_digest
            return None if digest == held else header
        return None

    def _wanted(self, digests: tuple[bytes, ...]) -> list[Certificate]:
        """The wanted certificates held, within the answer's count and byte budget."""
        chosen: list[Certificate] = []
        total_bytes = 0
        for digest in dict.fromkeys(digests):
            certificate = self._certificates.get(digest)
            if certificate is None:
                continue
            total_bytes += certificate.header.batch_bytes()
            if len(chosen) == MAX_CERTIFICATES_PER_MESSAGE or total_bytes > _ANSWER_BATCH_BYTES:
                break
            chosen.append(certificate)
        return chosen

    def _known(self, since_round: int) -> list[CertificateRef]:
        first = since_round if since_round > 0 else max(1, self._round - 1)
        first = max(first, self.gc_round)
        refs = []
        for round_number in range(first, first + KNOWN_WINDOW_ROUNDS):
            for creator, vertex in sorted(self._dag.at(round_number).items()):
                refs.append(
                    CertificateRef(round=round_number, creator=creator, digest=vertex.digest)
                )
        return refs

    # ------------------------------------------------------------ certificates

    def _accept_certificate(self, certificate: Certificate, step: Step) -> Refusal | None:
        digest = certificate.header.digest()
        if digest in self._certificates:
            return Refusal(digest=digest, reason=RefusalReason.ALREADY_KNOWN)
        reason, missing = self._check_certificate(certificate, digest)
        if reason is not None:
            return Refusal(digest=digest, reason=reason, missing=missing)
        header = certificate.header
        held = self._dag.at(header.round).get(NodeId(header.creator))
        if held is not None:
            # Two certificates for one slot need more than f faulty cores: keep the proof.
            self._keep_conflict(self._certificates[held.digest], certificate, step)
            return Refusal(digest=digest, reason=RefusalReason.CONFLICTING_CERTIFICATE)
        self._store_certificate(certificate, digest, step)
        return None

    def _rebuild(
        self, certified: tuple[CertifiedDigest, ...], refusals: list[Refusal]
    ) -> list[Certificate]:
        """The certificates named by header digest, with the headers this core voted
        for; a digest it does not hold is refused (the driver then sends it in full)."""
        rebuilt: list[Certificate] = []
        for item in certified:
            digest = item.header_digest
            header = self._voted_headers.get(digest)
            if digest in self._certificates:
                refusals.append(Refusal(digest=digest, reason=RefusalReason.ALREADY_KNOWN))
            elif header is None:
                refusals.append(Refusal(digest=digest, reason=RefusalReason.HEADER_UNKNOWN))
            else:
                rebuilt.append(Certificate(header=header, votes=item.votes))
        return rebuilt

    def _keep_conflict(self, held: Certificate, other: Certificate, step: Step) -> None:
        header = other.header
        slot = (header.round, header.creator)
        if slot in self._conflicts or _count_of(self._conflicts, header.creator) >= (
            MAX_EVIDENCE_PER_CREATOR
        ):
            return
        evidence = CertificateConflict(first=held, second=other)
        assert evidence.is_valid(self._network)
        self._conflicts[slot] = evidence
        step.persist.append(
            Persist(_slot_key(_CONFLICT, header.round, header.creator), canonical_bytes(evidence))
        )
        step.events.append(CertificateConflictDetected(evidence))

    def _check_certificate(
        self, certificate: Certificate, digest: bytes
    ) -> tuple[RefusalReason | None, tuple[bytes, ...]]:
        header = certificate.header
        reason = self._check_slot(header)
        if reason is None:
            reason = _check_parent_shape(header, self.config.gc_depth)
        if reason is None:
            reason = self._check_voters(certificate)
        if reason is not None:
            return reason, ()
        reason, missing = self._check_parents_present(header)
        if reason is not None:
            return reason, missing
        if not self._signatures_valid(certificate, digest):
            return RefusalReason.BAD_SIGNATURE, ()
        return None, ()

    def _signatures_valid(self, certificate: Certificate, digest: bytes) -> bool:
        """The creator's signature and every vote's (membership and quorum are checked
        before, by `_check_voters`)."""
        network = self._network
        if not header_signature_valid(certificate.header, digest, network):
            return False
        return all(certificate.vote_valid(digest, vote, network) for vote in certificate.votes)

    def _check_slot(self, header: Header) -> RefusalReason | None:
        if header.context != self.context:
            return RefusalReason.OTHER_COMMITTEE
        if header.creator not in self.committee:
            return RefusalReason.UNKNOWN_CREATOR
        if header.round == 0:
            return RefusalReason.ROUND_ZERO
        if header.round < self.gc_round:
            return RefusalReason.ROUND_TOO_OLD
        return None

    def _check_voters(self, certificate: Certificate) -> RefusalReason | None:
        voters = [vote.voter for vote in certificate.votes]
        if len(set(voters)) != len(voters):
            return RefusalReason.DUPLICATE_VOTER
        if any(voter not in self.committee for voter in voters):
            return RefusalReason.UNKNOWN_VOTER
        if not self.committee.reaches_quorum(voters):
            return RefusalReason.NOT_ENOUGH_VOTES
        return None

    def _check_parents_present(
        self, header: Header, *, for_vote: bool = False
    ) -> tuple[RefusalReason | None, tuple[bytes, ...]]:
        """Parents and weak parents must be held, of the round the header gives them.

        A voter checks every weak parent, whatever its own collection floor: a weak
        parent it has already collected cannot be checked, so it does not vote
        (`ROUND_TOO_OLD`).  Hence a certificate's quorum holds f + 1 correct cores that
        held each weak parent, so none is made up and a core still below that round can
        fetch it through a driver.  (Skipping the ones below the own floor, as before,
        let a Byzantine creator state a made-up weak parent just under some voters'
        floor: they voted, and a correct core with a lower floor could never store the
        certificate nor anything built on it.)  A core storing a certificate checks those
        at or above its floor only: below it, no delivery of its reaches (the leaders it
        commits from now on deliver at most `gc_depth` rounds deep), and the voters
        checked them.
        """
        floor = self.gc_round
        expected: dict[bytes, int] = {}
        if header.round > 1 and header.round - 1 >= floor:
            expected = dict.fromkeys(header.parents, header.round - 1)
        for weak in header.weak_parents:
            if weak.round >= floor:
                expected[weak.digest] = weak.round
            elif for_vote:
                return RefusalReason.ROUND_TOO_OLD, ()
        missing = tuple(digest for digest in expected if self._dag.get(digest) is None)
        if missing:
            return RefusalReason.MISSING_PARENTS, missing[:MAX_COMMITTEE_SIZE]
        for digest, round_number in expected.items():
            vertex = self._dag.get(digest)
            assert vertex is not None
            if vertex.round != round_number:
                return RefusalReason.PARENT_WRONG_ROUND, ()
        return None, ()

    def _store_certificate(self, certificate: Certificate, digest: bytes, step: Step) -> None:
        header = certificate.header
        vertex = _vertex(certificate, digest)
        self._certificates[digest] = certificate
        self._voted_headers.pop(digest, None)
        self._dag.add(vertex)
        self._unproven = False
        # Advance now, before a commit may collect the rounds the advance is judged on.
        self._advance_round()
        step.persist.append(
            Persist(
                _slot_key(_CERTIFICATE, header.round, header.creator), canonical_bytes(certificate)
            )
        )
        deliveries = self._ordering.vertex_added(self._dag, vertex)
        snapshots = {snapshot.next_sequence: snapshot for snapshot in self._ordering.snapshots}
        self._ordering.snapshots.clear()
        latest: tuple[Snapshot, bytes] | None = None
        for ordered in deliveries:
            self._record_delivery(ordered, step)
            snapshot = snapshots.get(ordered.sequence + 1)
            if snapshot is not None:
                latest = (snapshot, self._chain)
        if deliveries:
            self._persist_chain(step)
            if latest is not None:
                self._sign_checkpoint(*latest, step)
            self._collect_garbage(step)

    def _record_delivery(self, ordered: Ordered, step: Step) -> None:
        vertex = ordered.vertex
        if vertex.creator == self.node_id:
            self._own_delivered.add(vertex.round)
        transactions = self._certificates[vertex.digest].header.transactions
        record = _CommitRecord(
            sequence=ordered.sequence,
            leader_round=ordered.leader_round,
            round=vertex.round,
            creator=vertex.creator,
            digest=vertex.digest,
            transactions=transactions,
            parents=vertex.parents,
            weak_parents=self._certificates[vertex.digest].header.weak_parents,
            previous_chain=self._chain,
        )
        step.persist.append(
            Persist(_number_key(_COMMIT, ordered.sequence), canonical_bytes(record))
        )
        self._chain = chain_next(
            self._chain,
            sequence=ordered.sequence,
            leader_round=ordered.leader_round,
            round_number=vertex.round,
            creator=vertex.creator,
            digest=vertex.digest,
        )
        self._index_commit(ordered.sequence, vertex.digest, transactions)
        step.events.append(
            Committed(
                sequence=ordered.sequence,
                leader_round=ordered.leader_round,
                round=vertex.round,
                creator=vertex.creator,
                digest=vertex.digest,
                transactions=transactions,
            )
        )

    def _collect_garbage(self, step: Step) -> None:
        floor = self.gc_round
        for vertex in self._dag.prune_below(floor):
            del self._certificates[vertex.digest]
            step.persist.append(
                Persist(_slot_key(_CERTIFICATE, vertex.round, vertex.creator), None)
            )
        for round_number, creator in [slot for slot in self._votes if slot[0] < floor]:
            record = self._votes.pop((round_number, creator))
            self._voted_headers.pop(record.vote.header_digest, None)
            step.persist.append(Persist(_slot_key(_VOTE, round_number, creator), None))
        for round_number in [r for r in self._own_headers if r < floor]:
            header = self._own_headers.pop(round_number)
            step.persist.append(Persist(_number_key(_OWN_HEADER, round_number), None))
            if round_number not in self._own_delivered:
                # No core can deliver a round below the floor any more (every later leader
                # delivers at most gc_depth rounds deep), so the batch is proposed again.
                self._requeue(round_number, header.transactions, step)
        self._own_delivered = {r for r in self._own_delivered if r >= floor}

    def _advance_round(self) -> None:
        while self.committee.reaches_quorum(self._dag.at(self._round)):
            self._round += 1

    # ------------------------------------------------------------ votes

    def _vote_on(self, header: Header, step: Step) -> Vote | Refusal:
        digest = header.digest()
        reason = self._check_slot(header)
        if reason is None and header.round <= self.gc_round:
            reason = RefusalReason.ROUND_TOO_OLD
        if reason is not None:
            return Refusal(digest=digest, reason=reason)
        earlier = self._earlier_header(header)
        if earlier is not None:
            if earlier.digest() == digest:
                previous = self._votes.get((header.round, header.creator))
                if previous is not None:
                    return previous.vote
            else:
                return self._refuse_equivocation(earlier, header, digest, step)
        reason, missing = self._check_header(header)
        if reason is None and not header_signature_valid(header, digest, self._network):
            reason = RefusalReason.BAD_SIGNATURE
        if reason is not None:
            return Refusal(digest=digest, reason=reason, missing=missing)
        return self._cast_vote(header, digest, step)

    def _earlier_header(self, header: Header) -> HeaderStub | None:
        """The header of this slot already voted for or certified, if any."""
        record = self._votes.get((header.round, header.creator))
        if record is not None:
            return record.header
        vertex = self._dag.at(header.round).get(NodeId(header.creator))
        if vertex is not None:
            return self._certificates[vertex.digest].header.stub()
        return None

    def _refuse_equivocation(
        self, earlier: HeaderStub, header: Header, digest: bytes, step: Step
    ) -> Refusal:
        slot = (header.round, header.creator)
        full = _count_of(self._evidence, header.creator) >= MAX_EVIDENCE_PER_CREATOR
        if slot in self._evidence or full:
            # Refused either way; a signature is checked only when it buys evidence.
            return Refusal(digest=digest, reason=RefusalReason.EQUIVOCATION)
        if not header_signature_valid(header, digest, self._network):
            return Refusal(digest=digest, reason=RefusalReason.BAD_SIGNATURE)
        if slot not in self._evidence and not full:
            evidence = Equivocation(first=earlier, second=header.stub())
            assert evidence.is_valid(self._network)
            self._evidence[slot] = evidence
            step.persist.append(
                Persist(
                    _slot_key(_EVIDENCE, header.round, header.creator), canonical_bytes(evidence)
                )
            )
            step.events.append(EquivocationDetected(evidence))
        return Refusal(digest=digest, reason=RefusalReason.EQUIVOCATION)

    def _check_header(self, header: Header) -> tuple[RefusalReason | None, tuple[bytes, ...]]:
        if (
            len(header.transactions) > self.config.max_batch_transactions
            or header.batch_bytes() > self.config.max_batch_bytes
        ):
            return RefusalReason.BATCH_TOO_LARGE, ()
        reason = _check_parent_shape(header, self.config.gc_depth)
        if reason is not None or header.round == 1:
            return reason, ()
        reason, missing = self._check_parents_present(header, for_vote=True)
        if reason is not None:
            return reason, missing
        parent_creators = [self._dag.by_digest[parent].creator for parent in header.parents]
        if not self.committee.reaches_quorum(parent_creators):
            return RefusalReason.TOO_FEW_PARENTS, ()
        return None, ()

    def _cast_vote(self, header: Header, digest: bytes, step: Step) -> Vote:
        vote = sign_vote(self._keys, digest, header.round, header.creator, self._network)
        record = _VoteRecord(header=header.stub(), vote=vote)
        self._votes[(header.round, header.creator)] = record
        self._voted_headers[digest] = header
        step.persist.append(
            Persist(_slot_key(_VOTE, header.round, header.creator), canonical_bytes(record))
        )
        return vote

    # ------------------------------------------------------------ own headers

    def _ensure_own_header(self, step: Step) -> Header | None:
        existing = self._own_headers.get(self._round)
        if existing is not None:
            return existing
        if self._round > 1 and not self.committee.reaches_quorum(self._dag.at(self._round - 1)):
            return None  # just installed a checkpoint: no parents to name yet
        if self._waits_before_proposing():
            return None
        # Holding a certificate of round r implies a quorum of round r - 1, so the round
        # is never behind the DAG, nor at or below the floor where own headers are dropped.
        assert self._round > self.gc_round, "an own header is never proposed twice"
        parents: tuple[bytes, ...] = ()
        if self._round > 1:
            previous = self._dag.at(self._round - 1)
            parents = tuple(previous[creator].digest for creator in sorted(previous))
        weak_parents = self._orphans(parents)
        transactions = self._take_batch(step)
        header = sign_header(
            self._keys,
            self._round,
            transactions,
            parents,
            weak_parents,
            context=self.context,
            network=self._network,
        )
        self._own_headers[self._round] = header
        self._last_header_ms = self._now_ms
        step.persist.append(Persist(_number_key(_OWN_HEADER, self._round), canonical_bytes(header)))
        assert (self._round, self.node_id) not in self._votes, "only this core signs its headers"
        self._cast_vote(header, header.digest(), step)
        return header

    def _orphans(self, parents: tuple[bytes, ...]) -> tuple[WeakParent, ...]:
        """Held certificates of rounds below round - 1, at or above the floor and at most
        `gc_depth // 2` rounds back, neither delivered nor reachable from `parents`:
        named as weak parents so that they get delivered with this header's history
        (DAG-Rider's weak links).  Voters must hold every weak parent, so naming only
        recent ones keeps the header votable by cores a few commits ahead of this one
        (their floor is below these rounds)."""
        floor = max(self.gc_round, self._round - self.config.gc_depth // 2)
        reachable: set[bytes] = set()
        stack = [self._dag.by_digest[digest] for digest in parents]
        while stack:
            vertex = stack.pop()
            if vertex.digest in reachable or vertex.round < floor:
                continue
            reachable.add(vertex.digest)
            links = [*vertex.parents, *(digest for _, digest in vertex.weak_parents)]
            stack.extend(self._dag.by_digest[d] for d in links if d in self._dag.by_digest)
        orphans = [
            WeakParent(round=round_number, digest=vertex.digest)
            for round_number in range(max(1, floor), self._round - 1)
            for _, vertex in sorted(self._dag.at(round_number).items())
            if vertex.digest not in reachable and not self._ordering.was_delivered(vertex.digest)
        ]
        return tuple(orphans[:MAX_WEAK_PARENTS])

    def _waits_before_proposing(self) -> bool:
        """Whether the pacing delay, counted from this core's previous header, is still
        running.  Counting from the previous header rather than from entering the round
        matters for a core far from the drivers: it often learns a quorum of its round
        and of the next one in the same answer, and a delay restarted on each round
        entry would let it skip round after round without proposing (Narwhal's proposer
        resets its timer only when it makes a header)."""
        delay_ms = self.config.min_header_delay_ms
        if delay_ms == 0 or self._round == 1:
            return False
        if self._busy() and len(self._dag.at(self._round - 1)) == len(self.committee):
            return False  # every member's block of the previous round is in: nobody to wait for
        if self._last_header_ms is None:
            self._last_header_ms = self._now_ms  # restarted: wait a whole delay, to be safe
        if self._now_ms - self._last_header_ms < delay_ms:
            return True
        return self._idle()

    def _idle(self) -> bool:
        """Nothing to order that this core can see, and no other core has started its
        round: a paced committee then stops making rounds (an idle committee made one
        round per delay, every core's store growing by each empty certificate).  Any
        work restarts it: the core holding it proposes, the others see that header for
        their votes and complete the round, and the certificates carrying transactions
        keep every core that holds them proposing until they are delivered."""
        if self._busy():
            return False
        if self._unproven:
            # Rebuilt from records, it needs a certificate to know it is within reach; in
            # an idle committee only its own header can make one (a core far behind
            # proposes in a collected round, is refused, and stays unproven).
            return False
        if self._dag.at(self._round) or any(
            round_number == self._round and creator != self.node_id
            for round_number, creator in self._votes
        ):
            return False  # someone started this round: complete it, or nobody advances
        if any(
            self._certificates[vertex.digest].header.transactions
            and not self._ordering.was_delivered(vertex.digest)
            for vertex in self._dag.at(self._round - 1).values()
        ):
            return False
        # An own batch never certified waits for collection to queue it again, which
        # needs commits, which need rounds.
        return not any(
            header.transactions and round_number not in self._own_delivered
            for round_number, header in self._own_headers.items()
        )

    def _busy(self) -> bool:
        """Transactions wait here, or the previous round carried some, or a held
        certificate carries some that are not delivered yet (their commit needs the
        next rounds): worth hurrying."""
        if self._pending:
            return True
        previous = self._dag.at(self._round - 1).values()
        if any(self._certificates[vertex.digest].header.transactions for vertex in previous):
            return True
        return any(
            self._certificates[vertex.digest].header.transactions
            and not self._ordering.was_delivered(vertex.digest)
            for round_number in range(max(1, self.gc_round), self._round - 1)
            for vertex in self._dag.at(round_number).values()
        )

    def _take_batch(self, step: Step) -> tuple[bytes, ...]:
        taken: list[bytes] = []
        total_bytes = 0
        for sequence, transaction in list(self._pending.items()):
            if len(taken) == self.config.max_batch_transactions:
                break
            if total_bytes + len(transaction) > self.config.max_batch_bytes:
                break
            taken.append(transaction)
            total_bytes += len(transaction)
            del self._pending[sequence]
            step.persist.append(Persist(_number_key(_PENDING, sequence), None))
        return tuple(taken)

    # ------------------------------------------------------------ checkpoints

    def _persist_chain(self, step: Step) -> None:
        record = canonical_bytes((self.committed_count, self._chain))
        step.persist.append(Persist(_CHAIN, record))

    def _sign_checkpoint(self, snapshot: Snapshot, chain: bytes, step: Step) -> None:
        statement = CheckpointStatement(
            context=self.context,
            sequence=snapshot.next_sequence,
            leader_round=snapshot.leader_round,
            floor_round=snapshot.floor_round,
            chain=chain,
            delivered=tuple(
                WeakParent(round=round_number, digest=digest)
                for round_number, digest in snapshot.delivered
            ),
        )
        self._checkpoint = sign_checkpoint(self._keys, statement, self._network)
        self._checkpoint_digest = statement.digest()
        step.persist.append(Persist(_OWN_CHECKPOINT, canonical_bytes(self._checkpoint)))
        self._prune_log(statement.sequence, step)

    def _prune_log(self, checkpoint_sequence: int, step: Step) -> None:
        """Delete the delivery-log records more than `kept_commits` below a checkpoint
        (each position once: `_log_start` moves past what is deleted)."""
        kept = self.config.kept_commits
        if kept is None:
            return
        end = checkpoint_sequence - kept
        step.persist.extend(
            Persist(_number_key(_COMMIT, sequence), None)
            for sequence in range(self._log_start, end)
        )
        self._log_start = max(self._log_start, end)
        self._give_up_below(end, step)

    def _prune_below_gap(self, first_skipped: int, sequence: int, step: Step) -> None:
        """Prune this core's own records for a checkpoint installed at `sequence`,
        never walking the gap (`first_skipped`..`sequence`, which may be hours of
        positions) unless it is shorter than `kept_commits`."""
        kept = self.config.kept_commits
        if kept is None:
            return
        end = min(first_skipped, sequence - kept)
        step.persist.extend(
            Persist(_number_key(_COMMIT, position), None)
            for position in range(self._log_start, end)
        )
        if sequence - kept > first_skipped:
            self._log_start = sequence  # every record below the gap is gone
        else:
            self._log_start = max(self._log_start, end)

    def _consider_checkpoint(self, certificate: CheckpointCertificate, step: Step) -> None:
        """Install `certificate` when it shows this core out of the committee's reach
        and is signed by cores of weight at least f + 1 (see `CheckpointCertificate`).

        Every cheap check comes before the signatures, and a request carries one
        checkpoint: a driver can make a core verify at most one checkpoint's signatures
        (one per member) per request, and only while the core is behind it.
        """
        statement = certificate.statement
        if not self._installable(statement):
            return
        weights = self.committee.weights
        threshold = self.committee.validity_threshold
        if not certificate.signers_valid(weights, threshold, self._network):
            return
        self._install(statement, step)

    def _installable(self, statement: CheckpointStatement) -> bool:
        """Of this committee, well formed, and ahead of this core by more than it can
        catch up through certificates: its floor is above this core's round, so the
        committee may have collected every round this core still needs."""
        gc_depth = self.config.gc_depth
        return (
            statement.context == self.context
            and statement.floor_round == max(0, statement.leader_round - gc_depth)
            and statement.leader_round % 2 == 0
            and statement.floor_round > self._round
            and statement.leader_round > self._ordering.last_committed_round
            and statement.sequence >= self._ordering.next_sequence
            and all(
                statement.floor_round <= weak.round <= statement.leader_round
                for weak in statement.delivered
            )
        )

    def _install(self, statement: CheckpointStatement, step: Step) -> None:
        first_skipped = self._ordering.next_sequence
        bottom_chain = self._chain
        self._ordering.install(_statement_snapshot(statement))
        self._chain = statement.chain
        self._installed = statement
        self._voted_headers.clear()
        self._prune_below_gap(first_skipped, statement.sequence, step)
        if statement.sequence > first_skipped:
            self._unsettle_own_headers(statement.floor_round, step)
        self._collect_garbage(step)  # everything held lies below the new floor
        self._round = max(self._round, statement.floor_round)
        self._advance_round()
        step.persist.append(Persist(_INSTALLED, canonical_bytes(statement)))
        self._persist_chain(step)
        step.events.append(
            CheckpointInstalled(first_skipped, statement.sequence, statement.leader_round)
        )
        if statement.sequence > first_skipped:
            self._open_gap(first_skipped, bottom_chain, statement, step)

    # ------------------------------------------------------------ filling the gap

    def _unsettle_own_headers(self, floor: int, step: Step) -> None:
        """Set aside the own headers below a checkpoint's `floor` not known delivered:
        their delivery, if any, lies in the positions skipped, so queueing their batches
        again now could commit them twice.  Those the checkpoint names as delivered are
        marked so (collection would queue them again otherwise)."""
        for round_number, header in sorted(self._own_headers.items()):
            if self._ordering.was_delivered(header.digest()):
                self._own_delivered.add(round_number)
            elif round_number < floor and round_number not in self._own_delivered:
                del self._own_headers[round_number]
                self._unsettled[round_number] = header
                step.persist.append(Persist(_number_key(_OWN_HEADER, round_number), None))
                step.persist.append(
                    Persist(_number_key(_UNSETTLED, round_number), canonical_bytes(header))
                )

    def _open_gap(
        self, first_skipped: int, bottom_chain: bytes, statement: CheckpointStatement, step: Step
    ) -> None:
        """Note the positions a checkpoint skipped, to be filled from the top down.  A
        gap still open widens to the new one's top (one gap at most: the records of
        the first one filled so far come again, and check alike)."""
        if self._gap is not None:
            first_skipped, bottom_chain = self._gap.first, self._gap.bottom_chain
        self._gap = _Gap(
            first=first_skipped,
            end=statement.sequence,
            top=statement.sequence,
            head=statement.chain,
            bottom_chain=bottom_chain,
            leader_round=statement.leader_round,
        )
        step.persist.append(Persist(_GAP, canonical_bytes(self._gap)))
        if self.config.kept_commits is not None:
            self._give_up_below(statement.sequence - self.config.kept_commits, step)

    def _fill_gap(self, records: tuple[LogRecord, ...], step: Step) -> None:
        """Write the carried records into the gap, each checked against the chain this
        core trusts at the gap's top end, from the top down: record `end` - 1 must hash,
        with its own `previous_chain`, to the trusted head, which then becomes that
        `previous_chain`.  The first record that does not fit stops the rest (refused,
        counted in `log_records_refused`): a junk request costs at most the three hashes
        of one record, and a good one three hashes per record of its bytes, no
        signature."""
        gap = self._gap
        if gap is None or len(records) > MAX_LOG_RECORDS:
            self._log_records_refused += len(records)
            return
        head, position = gap.head, gap.end
        filled: list[tuple[LogRecord, bytes]] = []
        for record in records:
            if position <= gap.first or record.sequence != position - 1:
                break
            digest = record.digest(self.context)
            if record.chain(digest) != head:
                break
            filled.append((record, digest))
            head, position = record.previous_chain, position - 1
        self._log_records_refused += len(records) - len(filled)
        if not filled:
            return
        for record, digest in filled:
            self._write_filled(record, digest, step)
        lowest_leader_round = filled[-1][0].leader_round
        self._gap = msgspec.structs.replace(
            gap, end=position, head=head, leader_round=lowest_leader_round
        )
        self._log_start = min(self._log_start, position)
        step.events.append(LogFilled(position, tuple(digest for _, digest in reversed(filled))))
        # No position below the lowest one filled delivers a header of a higher round.
        self._settle(lambda round_number: round_number > lowest_leader_round, step)
        if position == gap.first:
            self._close_gap(step)
        else:
            step.persist.append(Persist(_GAP, canonical_bytes(self._gap)))

    def _write_filled(self, record: LogRecord, digest: bytes, step: Step) -> None:
        stored = _CommitRecord(
            sequence=record.sequence,
            leader_round=record.leader_round,
            round=record.round,
            creator=record.creator,
            digest=digest,
            transactions=record.transactions,
            parents=record.parents,
            weak_parents=record.weak_parents,
            previous_chain=record.previous_chain,
        )
        step.persist.append(Persist(_number_key(_COMMIT, record.sequence), canonical_bytes(stored)))
        if len(self._acknowledgeable) + len(record.transactions) <= MAX_ACKNOWLEDGED_TRANSACTIONS:
            # Acknowledged while there is room: older than what is indexed, a filled
            # record must not evict a more recent one.
            self._index_commit(record.sequence, digest, record.transactions)
        own = self._unsettled.get(record.round) if record.creator == self.node_id else None
        if own is not None and own.digest() == digest:
            del self._unsettled[record.round]  # delivered in the gap: never queue it again
            step.persist.append(Persist(_number_key(_UNSETTLED, record.round), None))

    def _settle(self, undelivered: Callable[[int], bool], step: Step) -> None:
        """Queue again the set-aside own batches of the rounds `undelivered` selects
        (known now not to have been delivered)."""
        for round_number in sorted(self._unsettled):
            if undelivered(round_number):
                header = self._unsettled.pop(round_number)
                step.persist.append(Persist(_number_key(_UNSETTLED, round_number), None))
                self._requeue(round_number, header.transactions, step)

    def _give_up_below(self, position: int, step: Step) -> None:
        """Positions below `position` fall outside what this core keeps of its log: the
        part of the gap there will not be filled."""
        gap = self._gap
        if gap is None or position <= gap.first:
            return
        step.events.append(GapGivenUp(gap.first, min(position, gap.end)))
        self._gap = msgspec.structs.replace(
            gap, first=min(position, gap.end), bottom_chain=ZERO_DIGEST
        )
        if position >= gap.end:
            self._close_gap(step)
        else:
            step.persist.append(Persist(_GAP, canonical_bytes(self._gap)))

    def _close_gap(self, step: Step) -> None:
        """The gap is filled down to its first position: the set-aside own batches not
        found in it were not delivered and are queued again, unless the bottom was given
        up, where they may have been: then they are dropped, and reported."""
        gap = self._gap
        assert gap is not None and gap.end == gap.first
        complete = gap.bottom_chain != ZERO_DIGEST
        dropped: list[bytes] = []
        if complete:
            self._settle(lambda round_number: True, step)
        else:
            for round_number in sorted(self._unsettled):
                dropped.extend(self._unsettled.pop(round_number).transactions)
                step.persist.append(Persist(_number_key(_UNSETTLED, round_number), None))
        consistent = not complete or gap.head == gap.bottom_chain
        self._gap = None
        step.persist.append(Persist(_GAP, None))
        step.events.append(GapClosed(gap.first, gap.top, consistent, tuple(dropped)))

    # ------------------------------------------------------------ client transactions

    def _acknowledge(self, query: CommitQuery) -> CommitAck:
        """Where the queried transactions were committed, as far as this core knows."""
        entries = [
            self._acknowledgeable[digest]
            for digest in dict.fromkeys(query.transactions)
            if digest in self._acknowledgeable
        ]
        return sign_commit_ack(self._keys, CommitAck(self.node_id, tuple(entries)), self._network)

    def _index_commit(self, sequence: int, digest: bytes, transactions: Iterable[bytes]) -> None:
        for transaction in transactions:
            entry = CommittedAt(transaction_digest(transaction), sequence, digest)
            self._acknowledgeable.setdefault(entry.transaction, entry)
        excess = len(self._acknowledgeable) - MAX_ACKNOWLEDGED_TRANSACTIONS
        for oldest in list(itertools.islice(self._acknowledgeable, max(0, excess))):
            del self._acknowledgeable[oldest]

    def _serve_submit(self, request: SubmitRequest, step: Step) -> SubmitAnswer:
        room = max(0, self.config.max_pending_transactions - len(self._pending))
        reason = SubmitRefusal.FULL
        if not self.takes_transactions:
            room = 0  # a receipt is a promise this core cannot keep while it is behind
            in_contact = self._contacted or not self._fresh
            reason = SubmitRefusal.BEHIND if in_contact else SubmitRefusal.NOT_IN_CONTACT
        accepted = list(request.transactions[:room])
        self._add_pending(accepted, step)
        refused = len(request.transactions) - len(accepted)
        answer = SubmitAnswer(
            core=self.node_id,
            request_digest=request_digest(request),
            accepted=len(accepted),
            refused=refused,
            pending=len(self._pending),
            reason=reason if refused else SubmitRefusal.NONE,
        )
        return sign_submit_answer(self._keys, answer, self._network)

    def _requeue(self, round_number: int, transactions: tuple[bytes, ...], step: Step) -> None:
        """Queue an undelivered own batch again, as much as the pending cap allows (the
        batch's first transactions); the rest is dropped and reported."""
        room = max(0, self.config.max_pending_transactions - len(self._pending))
        self._add_pending(transactions[:room], step)
        if len(transactions) > room:
            step.events.append(PendingTransactionsDropped(round_number, transactions[room:]))

    def _add_pending(self, transactions: Iterable[bytes], step: Step) -> None:
        for transaction in transactions:
            self._pending[self._next_pending] = transaction
            step.persist.append(Persist(_number_key(_PENDING, self._next_pending), transaction))
            self._next_pending += 1

    # ------------------------------------------------------------ restart

    def _restore(self, storage: Storage) -> None:
        certificates: list[Certificate] = []
        commits: list[_CommitRecord] = []
        for key, value in storage.items():
            if key.startswith(_CERTIFICATE):
                certificates.append(_decode_certificate(value))
            elif key.startswith(_VOTE):
                record = _decode_vote_record(value)
                self._votes[(record.header.round, record.header.creator)] = record
            elif key.startswith(_OWN_HEADER):
                header = _decode_header(value)
                self._require_own(header.creator, "a header")
                self._own_headers[header.round] = header
            elif key.startswith(_COMMIT):
                commits.append(_decode_commit(value))
            elif key.startswith(_PENDING):
                self._pending[int.from_bytes(key[len(_PENDING) :], "big")] = value
            elif key.startswith(_CONFLICT):
                conflict = _decode_conflict(value)
                self._conflicts[(conflict.first.round, conflict.first.creator)] = conflict
            elif key.startswith(_EVIDENCE):
                evidence = _decode_evidence(value)
                self._evidence[(evidence.first.round, evidence.first.creator)] = evidence
            else:
                self._restore_checkpoint_record(key, value)
        self._stale_keys = [
            *_trim_evidence(self._conflicts, _CONFLICT),
            *_trim_evidence(self._evidence, _EVIDENCE),
        ]
        for certificate in sorted(certificates, key=lambda c: c.header.round):
            digest = certificate.header.digest()
            self._certificates[digest] = certificate
            self._dag.add(_vertex(certificate, digest))
        commits.sort(key=lambda record: record.sequence)
        for commit in commits:
            self._index_commit(commit.sequence, commit.digest, commit.transactions)
        base, base_chain = self._restore_base()
        after_base = [record for record in commits if record.sequence >= base]
        self._ordering.restore(
            [
                Ordered(
                    sequence=record.sequence,
                    leader_round=record.leader_round,
                    vertex=Vertex(record.digest, record.round, NodeId(record.creator), ()),
                )
                for record in after_base
            ]
        )
        self._restore_chain(storage.get(_CHAIN), after_base, base_chain)
        # From what the ordering holds as delivered, not the log: the log may be pruned.
        self._own_delivered = {
            round_number
            for round_number, header in self._own_headers.items()
            if self._ordering.was_delivered(header.digest())
        }
        self._log_start = min([record.sequence for record in commits], default=base)
        self._pending = dict(sorted(self._pending.items()))
        self._next_pending = max(self._pending, default=-1) + 1
        # Not below the floor: a core restarted right after installing a checkpoint
        # holds no certificate yet, and round 1 would be a collected round.
        self._round = max([1, self.gc_round, *self._own_headers, *self._dag.by_round])
        self._advance_round()

    def _restore_checkpoint_record(self, key: bytes, value: bytes) -> None:
        """Restore a record of checkpoints and of the gap one left (other keys: none)."""
        if key == _OWN_CHECKPOINT:
            self._checkpoint = _decode_checkpoint_vote(value)
            self._require_own(self._checkpoint.signer, "a checkpoint vote")
            self._checkpoint_digest = self._checkpoint.statement.digest()
        elif key == _INSTALLED:
            self._installed = _decode_statement(value)
        elif key == _GAP:
            self._gap = _decode_gap(value)
        elif key.startswith(_UNSETTLED):
            header = _decode_header(value)
            self._unsettled[header.round] = header
        elif not key.startswith(_TUSK):
            # another protocol's store given as this core's: serving it would mix the two
            # and restart this core from nothing, free to sign again what it signed before
            kind = key.split(b"/", 1)[0][:20].decode("ascii", "replace")
            raise ValueError(f"records of another kind ({kind}/...): not a Tusk core's store")

    def _require_own(self, signer: bytes, what: str) -> None:
        """Refuse a store whose own records another core signed: that core's file, copied
        or misnamed, would let this one forget its own votes and headers."""
        if signer != self.node_id:
            raise ValueError(
                f"{what} signed by {node_id_text(NodeId(signer))}, not by this core"
                f" ({node_id_text(self.node_id)}): another core's store"
            )

    def _restore_base(self) -> tuple[int, bytes]:
        """Install the latest checkpoint this core signed or installed (the log below it
        may be pruned or, below an installed one, missing); the position the delivery
        log is replayed from, and the digest of the sequence before it."""
        candidates = [self._installed]
        if self._checkpoint is not None:
            candidates.append(self._checkpoint.statement)
        statements = [statement for statement in candidates if statement is not None]
        if not statements:
            return 0, genesis_chain(self.context)
        base = max(statements, key=lambda statement: statement.sequence)
        self._ordering.install(_statement_snapshot(base))
        return base.sequence, base.chain

    def _restore_chain(
        self, stored: bytes | None, replayed: list[_CommitRecord], base_chain: bytes
    ) -> None:
        if stored is not None:
            position, self._chain = _decode_chain(stored)
            assert position == self.committed_count, "the chain is persisted with each commit"
            return
        # A store written before the chain (and checkpoints) existed: its log is whole.
        self._chain = base_chain
        for record in replayed:
            self._chain = chain_next(
                self._chain,
                sequence=record.sequence,
                leader_round=record.leader_round,
                round_number=record.round,
                creator=record.creator,
                digest=record.digest,
            )


def log_positions(request: LogRequest) -> range:
    """The delivery-log positions a `LogRequest` asks about (for the reader of the
    store: `serve_log` takes what it found at these)."""
    count = min(request.count, MAX_LOG_RECORDS)
    return range(max(0, request.end - count), request.end)


def serve_log(core: NodeId, request: LogRequest, stored: Mapping[int, bytes]) -> LogAnswer:
    """The answer of core `core` to `request`, from its delivery-log records `stored`
    (position -> the record's bytes, as under `commit_log_key`; read by whoever runs
    the core: the core keeps no log in memory).  Records from position `end` - 1 down,
    consecutive, stopping at the first missing, unreadable or written before records
    carried their proof, and within `MAX_LOG_RECORDS` and `LOG_ANSWER_BYTES`."""
    records: list[LogRecord] = []
    size = 0
    for position in reversed(log_positions(request)):
        value = stored.get(position)
        if value is None or (records and size + len(value) > LOG_ANSWER_BYTES):
            break
        try:
            record = _decode_commit(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            break
        if record.sequence != position or record.previous_chain == ZERO_DIGEST:
            break
        size += len(value)
        records.append(
            LogRecord(
                sequence=record.sequence,
                leader_round=record.leader_round,
                round=record.round,
                creator=record.creator,
                parents=record.parents,
                weak_parents=record.weak_parents,
                transactions=record.transactions,
                previous_chain=record.previous_chain,
            )
        )
    return LogAnswer(core=core, end=request.end, records=tuple(records))


def _statement_snapshot(statement: CheckpointStatement) -> Snapshot:
    return Snapshot(
        leader_round=statement.leader_round,
        next_sequence=statement.sequence,
        floor_round=statement.floor_round,
        delivered=tuple((weak.round, weak.digest) for weak in statement.delivered),
    )


def _count_of(kept: dict[tuple[int, bytes], Any], creator: bytes) -> int:
    return sum(1 for _, kept_creator in kept if kept_creator == creator)


def _trim_evidence(kept: dict[tuple[int, bytes], Any], prefix: bytes) -> list[bytes]:
    """Drop from `kept` the slots of each creator beyond the cap (the lowest rounds
    stay); the storage keys of the dropped ones."""
    dropped: list[bytes] = []
    per_creator: dict[bytes, int] = {}
    for round_number, creator in sorted(kept):
        per_creator[creator] = per_creator.get(creator, 0) + 1
        if per_creator[creator] > MAX_EVIDENCE_PER_CREATOR:
            del kept[(round_number, creator)]
            dropped.append(_slot_key(prefix, round_number, creator))
    return dropped


def _check_parent_shape(header: Header, gc_depth: int) -> RefusalReason | None:
    """What every core decides alike from the header alone.  A weak parent lies below
    round - 1 and at most `gc_depth` rounds below the header: any leader that delivers
    the header is at or above its round and delivers `gc_depth` rounds deep at most, so
    an older weak parent would never be followed by anyone."""
    if header.round == 1 and (header.parents or header.weak_parents):
        return RefusalReason.PARENTS_IN_FIRST_ROUND
    links = [*header.parents, *(weak.digest for weak in header.weak_parents)]
    if len(set(links)) != len(links):
        return RefusalReason.DUPLICATE_PARENT
    lowest = max(1, header.round - gc_depth)
    if any(not lowest <= weak.round < header.round - 1 for weak in header.weak_parents):
        return RefusalReason.PARENT_WRONG_ROUND
    if header.round > 1 and not header.parents:
        return RefusalReason.TOO_FEW_PARENTS
    return None
