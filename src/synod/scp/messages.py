"""SCP wire messages: ballots, the four pledge kinds, statements and signed envelopes.

The structs mirror Stellar's XDR (`Stellar-SCP.x`) field for field, in the same order,
so that `synod.scp.stellar` can convert them to and from Stellar's bytes one-to-one:

=====================  =====================================================
synod struct           Stellar XDR
=====================  =====================================================
`Ballot`               ``SCPBallot {counter, value}``
`Nomination`           ``SCPNomination {quorumSetHash, votes, accepted}``
`Prepare`              ``SCPStatement.pledges.prepare {quorumSetHash, ballot,
                       prepared*, preparedPrime*, nC, nH}``
`Confirm`              ``SCPStatement.pledges.confirm {ballot, nPrepared,
                       nCommit, nH, quorumSetHash}``
`Externalize`          ``SCPStatement.pledges.externalize {commit, nH,
                       commitQuorumSetHash}``
`Statement`            ``SCPStatement {nodeID, slotIndex, pledges}``
`Envelope`             ``SCPEnvelope {statement, signature}``
=====================  =====================================================

The pledge union's discriminant is the struct type (Stellar's ``SCPStatementType``:
PREPARE 0, CONFIRM 1, EXTERNALIZE 2, NOMINATE 3; see `STATEMENT_TYPE`).  Optional XDR
fields (``SCPBallot*``) are ``Ballot | None``.  Node ids are raw 32-byte Ed25519 public
keys (XDR ``PUBLIC_KEY_TYPE_ED25519``).

Semantics follow draft-mazieres-dinrg-scp-05 section 3 with stellar-core's encoding of
the PREPARE phase: ``prepared`` and ``preparedPrime`` are the two highest incompatible
accepted-prepared ballots (the draft's ``aCounter`` is implied by ``preparedPrime``).
As in stellar-core, a nomination's ``votes`` include its ``accepted`` values.

Every field filled by a peer is bounded (values, vote lists), so a decoded envelope has
a bounded size before any protocol logic looks at it.

Signatures.  An envelope's signature is Ed25519 by ``statement.node_id`` over the domain
tag `ENVELOPE_DOMAIN` followed by `canonical_bytes(statement)` (see `sign_statement`,
`verify_envelope`).  Stellar signs differently (network id, envelope type, XDR); the
core takes the signer and verifier as parameters so `synod.scp.stellar` can plug its own.

Quorum sets travel separately: a statement carries only the hash of its sender's quorum
set.  A node that meets an unknown hash asks the sender with `QuorumSetRequest` and gets
a `QuorumSetResponse`; see `synod.scp.core.QuorumSetStore`.  A restarted node asks
its peers for their latest envelopes with `StateRequest`.
"""

from __future__ import annotations

from typing import Annotated, Final

import msgspec

from synod.crypto import KeyPair, in_network, verify
from synod.quorum.qset import QuorumSet
from synod.wire import U32, U64, Bytes32, Codec, Message, Signature, canonical_bytes

MAX_VALUE_BYTES: Final = 16 * 1024
"""Largest value (opaque application bytes) accepted in any statement."""
MAX_NOMINATION_VALUES: Final = 64
"""Most values in one nomination's `votes` (and, separately, in its `accepted`)."""
ENVELOPE_DOMAIN: Final = b"synod/scp/envelope/v1"
"""Domain tag of envelope signatures (never reused for another purpose)."""

Value = Annotated[bytes, msgspec.Meta(max_length=MAX_VALUE_BYTES)]
"""A value to agree on: opaque bytes, compared as unsigned octet strings."""
SlotIndex = U64
"""Slot numbers: XDR uint64 on Stellar's wire (MessagePack integers stop at 2**64 - 1)."""
ValueList = Annotated[tuple[Value, ...], msgspec.Meta(max_length=MAX_NOMINATION_VALUES)]


class Ballot(Message, frozen=True, tag="ballot"):
    """A ballot <counter, value>; ballots order by counter first, then value."""

    counter: U32
    value: Value

    @property
    def key(self) -> tuple[int, bytes]:
        """Sort key realising the draft's total order on ballots."""
        return (self.counter, self.value)


class Nomination(Message, frozen=True, tag="nominate"):
    """NOMINATE: the values the sender voted for (X) and accepted (Y) as nominated."""

    quorum_set_hash: Bytes32
    votes: ValueList
    accepted: ValueList


class Prepare(Message, frozen=True, tag="prepare"):
    """PREPARE: vote-or-accept prepare(ballot); accepted prepared `prepared` and
    `prepared_prime`; confirmed prepared <n_h, ballot.value>; vote commit for
    <n, ballot.value> with n_c <= n <= n_h (n_c = 0: no commit vote)."""

    quorum_set_hash: Bytes32
    ballot: Ballot
    prepared: Ballot | None
    prepared_prime: Ballot | None
    n_c: U32
    n_h: U32


class Confirm(Message, frozen=True, tag="confirm"):
    """CONFIRM (the draft's COMMIT): accepted commit for <n, ballot.value> with
    n_commit <= n <= n_h, accepted prepared <n_prepared, ballot.value>."""

    ballot: Ballot
    n_prepared: U32
    n_commit: U32
    n_h: U32
    quorum_set_hash: Bytes32


class Externalize(Message, frozen=True, tag="externalize"):
    """EXTERNALIZE: confirmed commit for <n, commit.value>, commit.counter <= n <= n_h."""

    commit: Ballot
    n_h: U32
    commit_quorum_set_hash: Bytes32


Pledges = Prepare | Confirm | Externalize | Nomination
BallotPledges = Prepare | Confirm | Externalize

STATEMENT_TYPE: Final[dict[type[Message], int]] = {
    Prepare: 0,
    Confirm: 1,
    Externalize: 2,
    Nomination: 3,
}
"""Stellar's ``SCPStatementType`` discriminant for each pledge struct."""


class Statement(Message, frozen=True, tag="statement"):
    """What a node says about one slot."""

    node_id: Bytes32
    slot_index: SlotIndex
    pledges: Pledges


class Envelope(Message, frozen=True, tag="envelope"):
    """A statement signed by `statement.node_id`."""

    statement: Statement
    signature: Signature


class QuorumSetRequest(Message, frozen=True, tag="qset_request"):
    """Ask a peer for the quorum set whose hash is `quorum_set_hash`."""

    quorum_set_hash: Bytes32


class QuorumSetResponse(Message, frozen=True, tag="qset_response"):
    """A quorum set sent in answer to a `QuorumSetRequest` (the receiver hashes it)."""

    quorum_set: QuorumSet


class StateRequest(Message, frozen=True, tag="state_request"):
    """Ask a peer to re-send its latest envelopes for slots >= `from_slot_index` (sent by
    a node that restarted and lost what its peers said; stellar's GET_SCP_STATE)."""

    from_slot_index: SlotIndex


MAX_PROOF_ENVELOPES: Final = 128
"""Envelopes in one decision's proof: a quorum's signed statements (Stellar's public
network needs about 25); 128 envelopes of the largest value fit a 4 MiB frame."""


class Decision(Message, frozen=True, tag="decision"):
    """Slot `slot_index` decided `value`; `proof` holds the signed CONFIRM and
    EXTERNALIZE statements, committing `value`, of nodes that form a quorum for the
    node that made the decision (a receiver checks them against its own quorum set)."""

    slot_index: SlotIndex
    value: Value
    proof: Annotated[tuple[Envelope, ...], msgspec.Meta(max_length=MAX_PROOF_ENVELOPES)]


class DecisionRequest(Message, frozen=True, tag="decision_request"):
    """Ask a peer for its decisions of slots >= `from_slot_index` (sent by a node that
    missed slots its peers no longer hold statements for)."""

    from_slot_index: SlotIndex


class DecisionsUnavailable(Message, frozen=True, tag="decisions_unavailable"):
    """The answer when the peer no longer holds the decision of `from_slot_index`: the
    oldest decision it holds is that of `oldest_slot_index`."""

    from_slot_index: SlotIndex
    oldest_slot_index: SlotIndex


CHECKPOINT_DOMAIN: Final = b"synod/scp/checkpoint/v1"
"""Domain tag of attestation signatures (never reused for another purpose)."""
MAX_CHECKPOINT_STATE_BYTES: Final = 2 * 1024 * 1024
"""Largest application state in one `Checkpoint`: with 128 attestations it fits the
4 MiB frame; the replicated log sends at most `checkpoint_interval` batches of 8 KiB
(512 KiB at the default 64)."""


class Attestation(Message, frozen=True, tag="attestation"):
    """`node_id` says: after delivering every slot through `slot_index`, the digest of
    my application's state is `digest` (signed under `CHECKPOINT_DOMAIN` for the
    network; see `sign_attestation`)."""

    node_id: Bytes32
    slot_index: SlotIndex
    digest: Bytes32
    signature: Signature


class CheckpointRequest(Message, frozen=True, tag="checkpoint_request"):
    """Ask a peer for a checkpoint covering slots from `from_slot_index` on (sent by a
    node whose missing slots no peer holds decisions for any more)."""

    from_slot_index: SlotIndex


class Checkpoint(Message, frozen=True, tag="checkpoint"):
    """The application's state as of slot `slot_index` for a node whose first missing
    slot was asked for, with `digest` and the attestations of nodes that agree on it
    (the receiver checks them against its own quorum set, and the state against the
    digest through its application)."""

    slot_index: SlotIndex
    digest: Bytes32
    attestations: Annotated[tuple[Attestation, ...], msgspec.Meta(max_length=MAX_PROOF_ENVELOPES)]
    state: Annotated[bytes, msgspec.Meta(max_length=MAX_CHECKPOINT_STATE_BYTES)]


ScpMessage = (
    Envelope
    | QuorumSetRequest
    | QuorumSetResponse
    | StateRequest
    | Decision
    | DecisionRequest
    | DecisionsUnavailable
    | Attestation
    | CheckpointRequest
    | Checkpoint
)
"""Everything an SCP node sends to another."""

CODEC: Final[Codec[ScpMessage]] = Codec(ScpMessage)
"""Encoder/decoder for `ScpMessage` (decode raises only `synod.wire.DecodeError`)."""


def statement_bytes(statement: Statement) -> bytes:
    """The bytes an envelope signature covers (after the domain tag)."""
    return canonical_bytes(statement)


def sign_statement(keys: KeyPair, statement: Statement, network: bytes = b"") -> Envelope:
    """Sign `statement` with `keys` (which must belong to `statement.node_id`) for the
    network `network` (`synod.crypto.in_network`; empty: networks without an id)."""
    if keys.node_id != statement.node_id:
        raise ValueError("a statement can only be signed by the node it names")
    domain = in_network(ENVELOPE_DOMAIN, network)
    return Envelope(statement, keys.sign(domain, statement_bytes(statement)))


def verify_envelope(envelope: Envelope, network: bytes = b"") -> bool:
    """True when the envelope's signature is its statement's node's, under synod's domain
    for `network`: an envelope signed for another network never verifies."""
    statement = envelope.statement
    domain = in_network(ENVELOPE_DOMAIN, network)
    return verify(statement.node_id, domain, statement_bytes(statement), envelope.signature)


def companion_quorum_set_hash(pledges: Pledges) -> bytes:
    """The quorum-set hash a statement carries, whatever its kind."""
    if isinstance(pledges, Externalize):
        return pledges.commit_quorum_set_hash
    return pledges.quorum_set_hash


def attestation_bytes(node_id: bytes, slot_index: int, digest: bytes) -> bytes:
    """The bytes an attestation signature covers (after the domain tag): fixed widths,
    so no two attestations share them."""
    return node_id + slot_index.to_bytes(8, "big") + digest


def sign_attestation(
    keys: KeyPair, slot_index: int, digest: bytes, network: bytes = b""
) -> Attestation:
    """Attest `digest` as this node's state after slot `slot_index`, for `network`."""
    domain = in_network(CHECKPOINT_DOMAIN, network)
    signed = attestation_bytes(keys.node_id, slot_index, digest)
    return Attestation(keys.node_id, slot_index, digest, keys.sign(domain, signed))


def verify_attestation(attestation: Attestation, network: bytes = b"") -> bool:
    """True when the attestation is signed by its node for `network`."""
    domain = in_network(CHECKPOINT_DOMAIN, network)
    signed = attestation_bytes(attestation.node_id, attestation.slot_index, attestation.digest)
    return verify(attestation.node_id, domain, signed, attestation.signature)
