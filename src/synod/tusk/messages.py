"""Tusk wire messages: headers, votes, certificates, and the driver/core exchange.

The Narwhal core design (Narwhal & Tusk) builds a DAG in rounds.  Each *header* of
round r names its creator, carries a small batch of transactions and references the
certificates of at least a quorum (by weight) of round r-1, and possibly, as weak
parents, older certificates nothing references yet (DAG-Rider's weak links, so that a
late block still gets delivered).  A core *votes* for at
most one header per creator and round; a quorum of votes on one header is a
*certificate*, which proves the block is stored by enough cores and is the only thing
the DAG (and the commit rule) refers to.  Because two quorums intersect in an honest
core, there is at most one certificate per creator and round, so a header digest names
a certified block.

Passive cores never talk to each other.  A driver sends a core a `CoreRequest` (the
certificates and headers it carries, the certificates it wants) and receives a
`CoreAnswer` signed by the core; clients send `SubmitRequest` and get `SubmitAnswer`.

Signatures are domain-separated (`DOMAIN_*`): a header signature is over the header
digest; a vote is over (header digest, round, creator); an answer is over its whole
canonical encoding with a zero signature.  The header digest covers the creator, the
round, the parents, the weak parents and the *batch digest* (not the transactions), so
a `HeaderStub` without its batch still proves what its creator signed: two stubs of one
creator and round with different digests are self-contained evidence of equivocation.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated

import msgspec

from synod.crypto import KeyPair, NodeId, blake2b, in_network, verify
from synod.wire import U32, U64, Bytes32, Codec, Message, Signature, canonical_bytes

MAX_COMMITTEE_SIZE = 128
"""Cores in one Tusk committee (bounds every per-member list on the wire)."""

DOMAIN_HEADER = b"synod/tusk/header"
DOMAIN_VOTE = b"synod/tusk/vote"
DOMAIN_ANSWER = b"synod/tusk/answer"
DOMAIN_SUBMIT_ANSWER = b"synod/tusk/submit-answer"
DOMAIN_COMMIT_ACK = b"synod/tusk/commit-ack"
DOMAIN_CHECKPOINT = b"synod/tusk/checkpoint"

MAX_TRANSACTION_BYTES = 4096
MAX_BATCH_TRANSACTIONS = 512
MAX_BATCH_BYTES = 1024 * 1024
"""A core's `max_batch_bytes` at most: a certificate, a request's other certificates
(2 MiB) and an answer's stay under the 4 MiB frame cap."""
MAX_CERTIFICATES_PER_MESSAGE = 32
MAX_HEADERS_PER_REQUEST = 2 * MAX_COMMITTEE_SIZE
MAX_WANTED = 2 * MAX_COMMITTEE_SIZE
KNOWN_WINDOW_ROUNDS = 4
"""Rounds of certificate references a core lists in one answer."""
MAX_KNOWN = KNOWN_WINDOW_ROUNDS * MAX_COMMITTEE_SIZE
MAX_SUBMIT_TRANSACTIONS = 1024
MAX_QUERIED_TRANSACTIONS = MAX_SUBMIT_TRANSACTIONS
"""Transaction digests one `CommitQuery` may ask about (a whole submission)."""
MAX_REFUSALS = 2 * MAX_CERTIFICATES_PER_MESSAGE + MAX_HEADERS_PER_REQUEST + 1
MAX_CHECKPOINT_DELIVERED = 8192
"""Certificates a checkpoint names as delivered (those of its last `gc_depth` + 1
rounds): a core refuses a committee and `gc_depth` with (gc_depth + 1) x members above
it.  About 44 bytes each on the wire, so at most about 360 KiB: a request or an answer
carrying one still fits the 4 MiB frame beside its 2 MiB of batches."""

ZERO_DIGEST = bytes(32)
_ZERO_SIGNATURE = bytes(64)

Transaction = Annotated[bytes, msgspec.Meta(max_length=MAX_TRANSACTION_BYTES)]
Parents = Annotated[tuple[Bytes32, ...], msgspec.Meta(max_length=MAX_COMMITTEE_SIZE)]
MAX_WEAK_PARENTS = MAX_COMMITTEE_SIZE


def committee_context(
    network: bytes, weights: Mapping[NodeId, int], gc_depth: int, *, kept_commits: int | None
) -> bytes:
    """The digest of what every core of one committee must agree on: the network id,
    the members and their weights, `gc_depth` (cores collecting at different depths
    deliver different histories) and `kept_commits` (None: the whole log).  Every header
    carries it, covered by its digest and so by its signature and every vote; a core
    refuses a header or a certificate of another context before checking anything else,
    so that cores configured differently refuse each other instead of ordering
    differently.  `kept_commits` is not needed for safety but for liveness: a core
    keeping more of the delivery log than the others would wait for ever on a gap below
    what they keep, and one keeping less would give up positions they could still serve
    (its own batches there reported as possibly lost); refusing at once says so loudly."""
    members = tuple(sorted((bytes(node), weight) for node, weight in weights.items()))
    settings = (network, members, gc_depth, -1 if kept_commits is None else kept_commits)
    return blake2b(canonical_bytes(settings), person=b"synod-tusk-ctx")


def batch_digest(transactions: tuple[bytes, ...]) -> bytes:
    """Digest of a batch of transactions (what a header digest commits to)."""
    return blake2b(canonical_bytes(transactions), person=b"synod-tusk-batch")


class WeakParent(Message, frozen=True, tag="tusk.WeakParent"):
    """A certificate of an older round (below round - 1) that a header also references,
    so that a block no later block took as a parent still gets delivered (DAG-Rider's
    weak links).  The round is stated so that every core can tell, without holding it,
    whether it lies below its collection floor."""

    round: U64
    digest: Bytes32


WeakParents = Annotated[tuple[WeakParent, ...], msgspec.Meta(max_length=MAX_WEAK_PARENTS)]


def header_digest(
    creator: bytes,
    round_number: int,
    batch: bytes,
    parents: tuple[bytes, ...],
    weak_parents: tuple[WeakParent, ...] = (),
    *,
    context: bytes = ZERO_DIGEST,
) -> bytes:
    """Digest of a header's signed content; also the name of its certificate."""
    weak = tuple((weak.round, weak.digest) for weak in weak_parents)
    return blake2b(
        canonical_bytes((creator, round_number, batch, parents, weak, context)),
        person=b"synod-tusk-hdr",
    )


class Header(Message, frozen=True, tag="tusk.Header"):
    """A block proposal: creator, round, a small batch and parent certificate digests."""

    creator: Bytes32
    round: U64
    transactions: Annotated[
        tuple[Transaction, ...], msgspec.Meta(max_length=MAX_BATCH_TRANSACTIONS)
    ]
    parents: Parents
    signature: Signature
    weak_parents: WeakParents = ()
    context: Bytes32 = ZERO_DIGEST
    """The creator's `committee_context`."""

    def digest(self) -> bytes:
        """The digest the creator signed (recomputed: structs are immutable values)."""
        return header_digest(
            self.creator,
            self.round,
            batch_digest(self.transactions),
            self.parents,
            self.weak_parents,
            context=self.context,
        )

    def stub(self) -> HeaderStub:
        """This header without its batch (enough to check the signature)."""
        return HeaderStub(
            creator=self.creator,
            round=self.round,
            batch_digest=batch_digest(self.transactions),
            parents=self.parents,
            signature=self.signature,
            weak_parents=self.weak_parents,
            context=self.context,
        )

    def batch_bytes(self) -> int:
        """Total size of the transactions carried."""
        return sum(len(transaction) for transaction in self.transactions)


class HeaderStub(Message, frozen=True, tag="tusk.HeaderStub"):
    """A header with its batch replaced by the batch digest."""

    creator: Bytes32
    round: U64
    batch_digest: Bytes32
    parents: Parents
    signature: Signature
    weak_parents: WeakParents = ()
    context: Bytes32 = ZERO_DIGEST

    def digest(self) -> bytes:
        return header_digest(
            self.creator,
            self.round,
            self.batch_digest,
            self.parents,
            self.weak_parents,
            context=self.context,
        )

    def has_valid_signature(self, network: bytes = b"") -> bool:
        """Signed by its creator for `network`."""
        domain = in_network(DOMAIN_HEADER, network)
        return verify(self.creator, domain, self.digest(), self.signature)


def sign_header(
    keys: KeyPair,
    round_number: int,
    transactions: tuple[bytes, ...],
    parents: tuple[bytes, ...],
    weak_parents: tuple[WeakParent, ...] = (),
    *,
    context: bytes = ZERO_DIGEST,
    network: bytes = b"",
) -> Header:
    """Build and sign a header of `keys`' node for `network`, in committee `context`."""
    digest = header_digest(
        keys.node_id,
        round_number,
        batch_digest(transactions),
        parents,
        weak_parents,
        context=context,
    )
    return Header(
        creator=keys.node_id,
        round=round_number,
        transactions=transactions,
        parents=parents,
        signature=keys.sign(in_network(DOMAIN_HEADER, network), digest),
        weak_parents=weak_parents,
        context=context,
    )


def header_signature_valid(header: Header, digest: bytes, network: bytes = b"") -> bool:
    """True when `header` (whose digest is `digest`) is signed by its creator for
    `network`."""
    return verify(header.creator, in_network(DOMAIN_HEADER, network), digest, header.signature)


def _vote_bytes(digest: bytes, round_number: int, creator: bytes) -> bytes:
    return canonical_bytes((digest, round_number, creator))


class Vote(Message, frozen=True, tag="tusk.Vote"):
    """A core's signature that it stored a header and votes for no other of that slot."""

    header_digest: Bytes32
    round: U64
    creator: Bytes32
    voter: Bytes32
    signature: Signature

    def has_valid_signature(self, network: bytes = b"") -> bool:
        """Signed by its voter for `network`."""
        return verify(
            self.voter,
            in_network(DOMAIN_VOTE, network),
            _vote_bytes(self.header_digest, self.round, self.creator),
            self.signature,
        )


def sign_vote(
    keys: KeyPair, digest: bytes, round_number: int, creator: bytes, network: bytes = b""
) -> Vote:
    """`keys`' node votes, in `network`, for the header `digest` of (`creator`,
    `round_number`)."""
    domain = in_network(DOMAIN_VOTE, network)
    return Vote(
        header_digest=digest,
        round=round_number,
        creator=creator,
        voter=keys.node_id,
        signature=keys.sign(domain, _vote_bytes(digest, round_number, creator)),
    )


class VoteSignature(Message, frozen=True, tag="tusk.VoteSignature"):
    """One vote inside a certificate (the header fields are the certificate's)."""

    voter: Bytes32
    signature: Signature


class Certificate(Message, frozen=True, tag="tusk.Certificate"):
    """A header with the votes of a quorum of distinct cores (by weight)."""

    header: Header
    votes: Annotated[tuple[VoteSignature, ...], msgspec.Meta(max_length=MAX_COMMITTEE_SIZE)]

    @property
    def round(self) -> int:
        return self.header.round

    @property
    def creator(self) -> bytes:
        return self.header.creator

    def vote_valid(self, digest: bytes, vote: VoteSignature, network: bytes = b"") -> bool:
        """True when `vote` is a valid vote, in `network`, for this certificate's header
        `digest`."""
        return verify(
            vote.voter,
            in_network(DOMAIN_VOTE, network),
            _vote_bytes(digest, self.header.round, self.header.creator),
            vote.signature,
        )


def make_certificate(header: Header, votes: list[Vote]) -> Certificate:
    """Assemble a certificate from votes on `header` (in canonical voter order)."""
    ordered = sorted({vote.voter: vote for vote in votes}.values(), key=lambda vote: vote.voter)
    return Certificate(
        header=header,
        votes=tuple(VoteSignature(voter=vote.voter, signature=vote.signature) for vote in ordered),
    )


class CertifiedDigest(Message, frozen=True, tag="tusk.CertifiedDigest"):
    """A certificate without its header, for a core that already holds the header (it
    voted for it): the header's digest and the quorum's votes.  The core rebuilds the
    certificate and checks it like any other; the batch does not travel again."""

    header_digest: Bytes32
    votes: Annotated[tuple[VoteSignature, ...], msgspec.Meta(max_length=MAX_COMMITTEE_SIZE)]


class CertificateRef(Message, frozen=True, tag="tusk.CertificateRef"):
    """Names a certificate a core holds: enough for a driver to see what it lacks."""

    round: U64
    creator: Bytes32
    digest: Bytes32


class RefusalReason(enum.IntEnum):
    """Why a core refused an item a driver carried (its state did not change)."""

    MALFORMED_REQUEST = 1
    UNKNOWN_CREATOR = 2
    BAD_SIGNATURE = 3
    ROUND_TOO_OLD = 4
    MISSING_PARENTS = 5
    TOO_FEW_PARENTS = 6
    PARENT_WRONG_ROUND = 7
    DUPLICATE_PARENT = 8
    BATCH_TOO_LARGE = 9
    NOT_ENOUGH_VOTES = 10
    UNKNOWN_VOTER = 11
    DUPLICATE_VOTER = 12
    EQUIVOCATION = 13
    CONFLICTING_CERTIFICATE = 14
    ALREADY_KNOWN = 15
    ROUND_ZERO = 16
    PARENTS_IN_FIRST_ROUND = 17
    HEADER_UNKNOWN = 18
    """A certificate named by its header's digest, for a header the core does not hold."""
    OTHER_COMMITTEE = 19
    """A header or certificate of another `committee_context`: another network, other
    members or weights, or another `gc_depth`."""


class Refusal(Message, frozen=True, tag="tusk.Refusal"):
    """One refused item (`digest` names it; `missing` lists absent parents)."""

    digest: Bytes32
    reason: RefusalReason
    missing: Parents = ()


class CoreRequest(Message, frozen=True, tag="tusk.CoreRequest"):
    """What a driver carries to a core and asks of it.

    The core stores the valid `certificates` (lowest rounds first, so a chain can travel
    in one request), votes for the valid `headers`, returns the `wanted` certificates it
    holds, and lists the certificates it holds from `since_round` (0: its round minus 1).
    `header_held` is the digest of the core's own header that the driver already has:
    when the core's header of its current round has that digest, the answer leaves it
    out (`header` None) instead of sending the same batch back on every call.
    `certified` carries certificates for headers the core voted for, without the header.
    """

    certificates: Annotated[
        tuple[Certificate, ...], msgspec.Meta(max_length=MAX_CERTIFICATES_PER_MESSAGE)
    ] = ()
    headers: Annotated[tuple[Header, ...], msgspec.Meta(max_length=MAX_HEADERS_PER_REQUEST)] = ()
    wanted: Annotated[tuple[Bytes32, ...], msgspec.Meta(max_length=MAX_WANTED)] = ()
    since_round: U64 = 0
    header_held: Bytes32 = ZERO_DIGEST
    certified: Annotated[
        tuple[CertifiedDigest, ...], msgspec.Meta(max_length=MAX_CERTIFICATES_PER_MESSAGE)
    ] = ()
    checkpoint_held: Bytes32 = ZERO_DIGEST
    """The digest of the core's latest checkpoint statement the driver already has: the
    answer then leaves the core's `CheckpointVote` out."""
    checkpoint: CheckpointCertificate | None = None
    """A checkpoint for a core far behind the committee to install."""
    late_held: Bytes32 = ZERO_DIGEST
    """The digest of the core's late own header (see `CoreAnswer.late_header`) the
    driver already has: the answer then leaves it out."""
    committee_round: U64 = 0
    """The highest round of a certificate the driver holds (0: none).  A core with an
    empty store takes it as where the committee is: within its reach, it signs
    receipts; beyond, it waits for a checkpoint (see `TuskCore.takes_transactions`)."""
    log_records: Annotated[tuple[LogRecord, ...], msgspec.Meta(max_length=MAX_LOG_RECORDS)] = ()
    """Delivery-log records for the positions the core says it lacks (`log_wanted`),
    from position `log_wanted.end` - 1 down, fetched from other cores (`LogRequest`)."""


class CoreAnswer(Message, frozen=True, tag="tusk.CoreAnswer"):
    """A core's signed state after it processed one request."""

    core: Bytes32
    request_digest: Bytes32
    round: U64
    header: Header | None
    votes: Annotated[tuple[Vote, ...], msgspec.Meta(max_length=MAX_HEADERS_PER_REQUEST + 1)]
    known: Annotated[tuple[CertificateRef, ...], msgspec.Meta(max_length=MAX_KNOWN)]
    certificates: Annotated[
        tuple[Certificate, ...], msgspec.Meta(max_length=MAX_CERTIFICATES_PER_MESSAGE)
    ]
    refusals: Annotated[tuple[Refusal, ...], msgspec.Meta(max_length=MAX_REFUSALS)]
    signature: Signature = _ZERO_SIGNATURE
    checkpoint: CheckpointVote | None = None
    """The core's latest checkpoint vote, unless the request named it as held."""
    late_header: Header | None = None
    """The core's oldest own header of an earlier round that carries transactions and
    is not certified as far as it knows (unless the request named it as held): a core
    whose round moved on before any driver learnt its header would otherwise never
    show it again, and its transactions would wait for collection to queue them anew."""
    log_wanted: LogWanted | None = None
    """The positions this core's delivery log lacks since it installed a checkpoint
    (None: its log is whole from where it keeps it)."""

    def has_valid_signature(self, network: bytes = b"") -> bool:
        """Signed by the core it names, for `network`."""
        unsigned = msgspec.structs.replace(self, signature=_ZERO_SIGNATURE)
        domain = in_network(DOMAIN_ANSWER, network)
        return verify(self.core, domain, canonical_bytes(unsigned), self.signature)


def sign_answer(keys: KeyPair, answer: CoreAnswer, network: bytes = b"") -> CoreAnswer:
    """`answer` signed by `keys`' node for `network` (its `core` field must be that
    node)."""
    if answer.core != keys.node_id:
        raise ValueError("an answer is signed by the core it names")
    unsigned = msgspec.structs.replace(answer, signature=_ZERO_SIGNATURE)
    domain = in_network(DOMAIN_ANSWER, network)
    return msgspec.structs.replace(answer, signature=keys.sign(domain, canonical_bytes(unsigned)))


class SubmitRequest(Message, frozen=True, tag="tusk.SubmitRequest"):
    """A client's transactions for a core to include in its next headers."""

    transactions: Annotated[
        tuple[Transaction, ...], msgspec.Meta(max_length=MAX_SUBMIT_TRANSACTIONS)
    ]


class SubmitRefusal(enum.IntEnum):
    """Why a core refused transactions of a submission (`SubmitAnswer.reason`)."""

    NONE = 0
    FULL = 1
    """Its pending queue is full: submit again later, or to another core."""
    BEHIND = 2
    """It is behind the committee, or was restarted and has not yet stored a
    certificate to show it is within reach: it takes transactions again once caught up
    (by certificates, or by installing a checkpoint)."""
    NOT_IN_CONTACT = 3
    """It started with an empty store and no driver has told it yet where the committee
    is (a brand-new committee's first moments, or a core joining late): submit again
    shortly."""


class SubmitAnswer(Message, frozen=True, tag="tusk.SubmitAnswer"):
    """How many of a client's transactions a core accepted (and persisted), and why it
    refused the rest (`reason`)."""

    core: Bytes32
    request_digest: Bytes32
    accepted: U32
    refused: U32
    pending: U32
    signature: Signature = _ZERO_SIGNATURE
    reason: SubmitRefusal = SubmitRefusal.NONE

    def has_valid_signature(self, network: bytes = b"") -> bool:
        """Signed by the core it names, for `network`."""
        unsigned = msgspec.structs.replace(self, signature=_ZERO_SIGNATURE)
        domain = in_network(DOMAIN_SUBMIT_ANSWER, network)
        return verify(self.core, domain, canonical_bytes(unsigned), self.signature)


def sign_submit_answer(keys: KeyPair, answer: SubmitAnswer, network: bytes = b"") -> SubmitAnswer:
    """`answer` signed by `keys`' node for `network`."""
    if answer.core != keys.node_id:
        raise ValueError("an answer is signed by the core it names")
    unsigned = msgspec.structs.replace(answer, signature=_ZERO_SIGNATURE)
    domain = in_network(DOMAIN_SUBMIT_ANSWER, network)
    return msgspec.structs.replace(answer, signature=keys.sign(domain, canonical_bytes(unsigned)))


def transaction_digest(transaction: bytes) -> bytes:
    """The name of a transaction in commit queries and acknowledgements."""
    return blake2b(transaction, person=b"synod-tusk-tx")


class CommitQuery(Message, frozen=True, tag="tusk.CommitQuery"):
    """A client asks a core where the transactions with these digests were committed."""

    transactions: Annotated[tuple[Bytes32, ...], msgspec.Meta(max_length=MAX_QUERIED_TRANSACTIONS)]


class CommittedAt(Message, frozen=True, tag="tusk.CommittedAt"):
    """Transaction `transaction` (a digest) was delivered at position `sequence` of the
    total order, in the certificate `certificate`."""

    transaction: Bytes32
    sequence: U64
    certificate: Bytes32


class CommitAck(Message, frozen=True, tag="tusk.CommitAck"):
    """A core's signed statement of where queried transactions were committed (those it
    does not know as committed are left out).  A statement about the past stays true,
    so an acknowledgement needs no request digest: replaying one proves nothing false."""

    core: Bytes32
    entries: Annotated[tuple[CommittedAt, ...], msgspec.Meta(max_length=MAX_QUERIED_TRANSACTIONS)]
    signature: Signature = _ZERO_SIGNATURE

    def has_valid_signature(self, network: bytes = b"") -> bool:
        """Signed by the core it names, for `network`."""
        unsigned = msgspec.structs.replace(self, signature=_ZERO_SIGNATURE)
        domain = in_network(DOMAIN_COMMIT_ACK, network)
        return verify(self.core, domain, canonical_bytes(unsigned), self.signature)


def sign_commit_ack(keys: KeyPair, ack: CommitAck, network: bytes = b"") -> CommitAck:
    """`ack` signed by `keys`' node for `network`."""
    if ack.core != keys.node_id:
        raise ValueError("an acknowledgement is signed by the core it names")
    unsigned = msgspec.structs.replace(ack, signature=_ZERO_SIGNATURE)
    domain = in_network(DOMAIN_COMMIT_ACK, network)
    return msgspec.structs.replace(ack, signature=keys.sign(domain, canonical_bytes(unsigned)))


def proven_commits(
    acks: list[CommitAck], weights: Mapping[NodeId, int], threshold: int, network: bytes = b""
) -> dict[bytes, CommittedAt]:
    """The transactions (by digest) whose position is stated alike by cores of weight at
    least `threshold` (the committee's validity threshold, f + 1: at least one of them
    is correct, and correct cores agree on the order), in valid acknowledgements of
    distinct members.  Anything fewer cores say, or cores disagree on, is left out."""
    backing: dict[CommittedAt, set[bytes]] = {}
    seen: set[bytes] = set()
    for ack in acks:
        if ack.core in seen or NodeId(ack.core) not in weights:
            continue
        if not ack.has_valid_signature(network):
            continue
        seen.add(ack.core)
        for entry in dict.fromkeys(ack.entries):
            backing.setdefault(entry, set()).add(ack.core)
    proven: dict[bytes, CommittedAt] = {}
    for entry, cores in backing.items():
        if sum(weights[NodeId(core)] for core in cores) < threshold:
            continue
        earlier = proven.get(entry.transaction)
        if earlier is None or entry.sequence < earlier.sequence:
            proven[entry.transaction] = entry  # submitted twice: the first commit counts
    return proven


def genesis_chain(context: bytes) -> bytes:
    """The digest of the empty committed sequence of committee `context`."""
    return blake2b(context, person=b"synod-tusk-chain")


def chain_next(
    chain: bytes,
    *,
    sequence: int,
    leader_round: int,
    round_number: int,
    creator: bytes,
    digest: bytes,
) -> bytes:
    """The digest of the committed sequence after the delivery of certificate `digest`
    at position `sequence` (`chain` is the digest of the positions before it).  The
    certificate digest covers its batch, so the chain covers every transaction."""
    return blake2b(
        canonical_bytes((chain, sequence, leader_round, round_number, creator, digest)),
        person=b"synod-tusk-chain",
    )


class CheckpointStatement(Message, frozen=True, tag="tusk.CheckpointStatement"):
    """What a core states at a checkpoint: in committee `context`, positions
    0..`sequence` - 1 of the total order are committed, the last by the leader of
    `leader_round`, with `chain` the digest of that sequence (`chain_next`); `delivered`
    names the certificates of rounds `floor_round` (`leader_round` - `gc_depth`) and
    above delivered so far, which is all the commit state a core needs to continue
    from there with the certificates of those rounds.  Correct cores make identical
    statements at each checkpoint (the order is the same on every correct core)."""

    context: Bytes32
    sequence: U64
    leader_round: U64
    floor_round: U64
    chain: Bytes32
    delivered: Annotated[
        tuple[WeakParent, ...], msgspec.Meta(max_length=MAX_CHECKPOINT_DELIVERED)
    ] = ()

    def digest(self) -> bytes:
        """What the cores sign (a digest: a signature check then costs the same for any
        length of `delivered`)."""
        return blake2b(canonical_bytes(self), person=b"synod-tusk-ckpt")


class CheckpointVote(Message, frozen=True, tag="tusk.CheckpointVote"):
    """A core's signature over a `CheckpointStatement`."""

    statement: CheckpointStatement
    signer: Bytes32
    signature: Signature

    def has_valid_signature(self, network: bytes = b"") -> bool:
        """Signed by `signer` for `network`."""
        domain = in_network(DOMAIN_CHECKPOINT, network)
        return verify(self.signer, domain, self.statement.digest(), self.signature)


def sign_checkpoint(
    keys: KeyPair, statement: CheckpointStatement, network: bytes = b""
) -> CheckpointVote:
    """`keys`' node signs `statement` for `network`."""
    domain = in_network(DOMAIN_CHECKPOINT, network)
    signature = keys.sign(domain, statement.digest())
    return CheckpointVote(statement=statement, signer=keys.node_id, signature=signature)


class CheckpointCertificate(Message, frozen=True, tag="tusk.CheckpointCertificate"):
    """A checkpoint statement with the signatures of several cores.  Cores of weight at
    least the validity threshold (f + 1) include a correct one, and a correct core
    states only what it committed, which every correct core commits alike: so the
    statement is true, and a core far behind may install it (2f + 1 would add nothing
    to its truth, and f + 1 is what a driver can collect while up to f cores are
    silent or far behind)."""

    statement: CheckpointStatement
    signatures: Annotated[
        tuple[VoteSignature, ...], msgspec.Meta(max_length=MAX_COMMITTEE_SIZE)
    ]

    def signers_valid(
        self, weights: Mapping[NodeId, int], threshold: int, network: bytes = b""
    ) -> bool:
        """Distinct members of weight at least `threshold` signed the statement for
        `network` (membership and weight are checked before any signature)."""
        signers = [signature.voter for signature in self.signatures]
        if len(set(signers)) != len(signers):
            return False
        if any(NodeId(signer) not in weights for signer in signers):
            return False
        if sum(weights[NodeId(signer)] for signer in signers) < threshold:
            return False
        domain = in_network(DOMAIN_CHECKPOINT, network)
        digest = self.statement.digest()
        return all(
            verify(signature.voter, domain, digest, signature.signature)
            for signature in self.signatures
        )


MAX_LOG_RECORDS = 256
"""Delivery-log records one `LogAnswer` (and one `CoreRequest`) carries at most: a core
filling a gap of hours (about 100,000 positions at the default `kept_commits`) takes
about 400 requests, and checking one record costs three hashes of its bytes."""
LOG_ANSWER_BYTES = 1024 * 1024
"""Encoded bytes of stored records one `LogAnswer` carries at most, beyond its first
record (one record holds at most one batch, `MAX_BATCH_BYTES`): with a request's 2 MiB
of certificates and headers it stays under the 4 MiB frame cap."""


class LogRecord(Message, frozen=True, tag="tusk.LogRecord"):
    """The delivery at position `sequence` of the total order, with what proves it to a
    core that trusts the digest of the sequence up to and including it: the header's
    fields, so that its digest (which binds the batch) can be recomputed, and the chain
    digest of the positions before it (`chain_next(previous_chain, ...)` of this record
    is the chain after it)."""

    sequence: U64
    leader_round: U64
    round: U64
    creator: Bytes32
    parents: Parents
    weak_parents: WeakParents
    transactions: Annotated[
        tuple[Transaction, ...], msgspec.Meta(max_length=MAX_BATCH_TRANSACTIONS)
    ]
    previous_chain: Bytes32

    def digest(self, context: bytes) -> bytes:
        """The digest of the certificate delivered here, in committee `context`."""
        return header_digest(
            self.creator,
            self.round,
            batch_digest(self.transactions),
            self.parents,
            self.weak_parents,
            context=context,
        )

    def chain(self, digest: bytes) -> bytes:
        """The chain digest after this delivery (`digest` is `self.digest(context)`)."""
        return chain_next(
            self.previous_chain,
            sequence=self.sequence,
            leader_round=self.leader_round,
            round_number=self.round,
            creator=self.creator,
            digest=digest,
        )


class LogRequest(Message, frozen=True, tag="tusk.LogRequest"):
    """A driver asks a core for the delivery-log records just below position `end`
    (positions end - 1, end - 2, ..., at most `count`), to carry them to a core whose log
    has a gap there.  The answer is not signed: the receiving core checks every record
    against a chain digest it already trusts."""

    end: U64
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_LOG_RECORDS)] = MAX_LOG_RECORDS


class LogAnswer(Message, frozen=True, tag="tusk.LogAnswer"):
    """The records a core holds at positions `end` - 1, `end` - 2, ... (in that order,
    consecutive, stopping at the first it does not hold, within `MAX_LOG_RECORDS` and
    `LOG_ANSWER_BYTES`)."""

    core: Bytes32
    end: U64
    records: Annotated[tuple[LogRecord, ...], msgspec.Meta(max_length=MAX_LOG_RECORDS)] = ()
    busy: bool = False
    """Not answered now (the core's node limits how often one connection is served):
    says nothing about which records it holds; ask again later, or another core."""


class LogWanted(Message, frozen=True, tag="tusk.LogWanted"):
    """The positions `first`..`end` - 1 a core's delivery log lacks (it installed a
    checkpoint): it wants the records just below `end` first, and holds the chain digest
    of the positions below `end`, against which it checks them."""

    first: U64
    end: U64


class Equivocation(Message, frozen=True, tag="tusk.Equivocation"):
    """Proof that a creator signed two different headers for one round."""

    first: HeaderStub
    second: HeaderStub

    def is_valid(self, network: bytes = b"") -> bool:
        """Same creator and round, different digests, both signatures valid (for
        `network`)."""
        return (
            self.first.creator == self.second.creator
            and self.first.round == self.second.round
            and self.first.digest() != self.second.digest()
            and self.first.has_valid_signature(network)
            and self.second.has_valid_signature(network)
        )


class CertificateConflict(Message, frozen=True, tag="tusk.CertificateConflict"):
    """Proof that more than f cores misbehaved: two certificates for one slot.

    Two quorums meet in more than f weight, so with at most f faulty cores this cannot
    exist; every core that voted in both (`double_voters`) signed votes for two headers
    of one slot, which a correct core never does, and the creator signed both headers.
    """

    first: Certificate
    second: Certificate

    def double_voters(self) -> tuple[bytes, ...]:
        """The cores whose votes are in both certificates (sorted)."""
        first = {vote.voter for vote in self.first.votes}
        return tuple(sorted(first & {vote.voter for vote in self.second.votes}))

    def is_valid(self, network: bytes = b"") -> bool:
        """Same creator and round, different headers, every signature in both correct
        (for `network`)."""
        first, second = self.first.header, self.second.header
        if first.creator != second.creator or first.round != second.round:
            return False
        first_digest, second_digest = first.digest(), second.digest()
        if first_digest == second_digest:
            return False
        return all(
            header_signature_valid(certificate.header, digest, network)
            and all(certificate.vote_valid(digest, vote, network) for vote in certificate.votes)
            for certificate, digest in ((self.first, first_digest), (self.second, second_digest))
        )


def request_digest(request: CoreRequest | SubmitRequest) -> bytes:
    """Digest of a request, echoed in the signed answer to it."""
    return blake2b(canonical_bytes(request), person=b"synod-tusk-req")


TuskMessage = (
    CoreRequest
    | CoreAnswer
    | SubmitRequest
    | SubmitAnswer
    | CommitQuery
    | CommitAck
    | Header
    | HeaderStub
    | Vote
    | Certificate
    | Equivocation
    | CertificateConflict
    | CheckpointStatement
    | CheckpointVote
    | CheckpointCertificate
    | LogRequest
    | LogAnswer
)
"""Every message of the Tusk protocol (one tagged union)."""

CODEC: Codec[TuskMessage] = Codec(TuskMessage)
