"""Stellar compatibility: synod's SCP messages and quorum sets as Stellar's XDR, byte for byte.

Theory of operation.  synod's SCP structs (`synod.scp.messages`) and `QuorumSet` mirror
`Stellar-SCP.x` field for field, so each converts one-to-one to the classes of
`stellar_sdk.xdr` and from there to the exact bytes stellar-core sends and hashes:

- node ids are raw Ed25519 public keys, XDR ``NodeID`` = ``PublicKey`` of type
  ``PUBLIC_KEY_TYPE_ED25519``, and print as Stellar strkeys ("G...", base32 with a
  version byte and a CRC16 checksum);
- a quorum set's Stellar hash is SHA-256 of its ``SCPQuorumSet`` XDR (stellar-core
  ``xdrSha256(qSet)``), which is what statements carry as ``quorumSetHash`` on Stellar;
- an envelope's signature (stellar-core ``HerderImpl::signEnvelope`` and
  ``verifyEnvelope``) is the raw Ed25519 signature, by ``statement.nodeID``, of
  ``networkID || XDR(ENVELOPE_TYPE_SCP) || XDR(statement)``, where ``networkID`` is
  SHA-256 of the network passphrase and ``ENVELOPE_TYPE_SCP`` is the XDR int 1;
- the SCP messages between nodes travel in stellar-core's overlay as ``StellarMessage``
  arms: SCP_MESSAGE (an envelope), GET_SCP_QUORUMSET and SCP_QUORUMSET (quorum-set
  request and answer), GET_SCP_STATE (a restarted node asking for recent statements).

Bytes from a peer are decoded strictly: trailing bytes, non-canonical encodings (XDR
padding that is not zero), and values beyond synod's bounds (`MAX_VALUE_BYTES`,
`MAX_NOMINATION_VALUES`)
raise `StellarFormatError` and nothing else, so decoding then re-encoding always gives
back the bytes that were received and a signature check covers exactly those bytes.

This module needs the `synod[stellar]` extra (stellar-sdk); nothing else in synod
imports it.  To run an SCP node with Stellar's signatures, hand the core
`StellarNetwork(passphrase).sign_statement` and `.verify_envelope` instead of the ones in
`synod.scp.messages`, and `stellar_qset_hash` as its quorum-set hash.
"""

from __future__ import annotations

from typing import Final, Protocol, Self, TypeVar

import msgspec
import nacl.bindings
import nacl.exceptions
from stellar_sdk import xdr
from stellar_sdk.network import Network
from stellar_sdk.strkey import StrKey

from synod.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, InvalidNodeId, KeyPair, NodeId, sha256
from synod.quorum.qset import QuorumSet
from synod.scp.messages import (
    MAX_NOMINATION_VALUES,
    MAX_VALUE_BYTES,
    Ballot,
    Confirm,
    Envelope,
    Externalize,
    Nomination,
    Pledges,
    Prepare,
    QuorumSetRequest,
    QuorumSetResponse,
    Statement,
    StateRequest,
)

PUBLIC_NETWORK_PASSPHRASE: Final = Network.PUBLIC_NETWORK_PASSPHRASE
"""Stellar's public network ("Public Global Stellar Network ; September 2015")."""
TESTNET_NETWORK_PASSPHRASE: Final = Network.TESTNET_NETWORK_PASSPHRASE
"""Stellar's test network ("Test SDF Network ; September 2015")."""

ENVELOPE_TYPE_SCP: Final = int(xdr.EnvelopeType.ENVELOPE_TYPE_SCP.value)
"""The XDR ``EnvelopeType`` tag that separates SCP signatures from all others (1)."""
MAX_QSET_XDR_DEPTH: Final = 32
"""Deepest quorum set accepted from XDR: far beyond the sanity limit, so a too-deep set
still decodes and `check_sanity` can say why it is insane, while recursion stays bounded."""
MAX_ENVELOPE_XDR_BYTES: Final = 2 * MAX_NOMINATION_VALUES * (MAX_VALUE_BYTES + 4) + 512
"""Largest envelope that can satisfy synod's bounds (two full nomination lists)."""
MAX_QSET_XDR_BYTES: Final = 4 * 1024 * 1024
"""Largest quorum-set XDR accepted (1000 validators need about 36 KiB)."""
_MAX_SLOT_INDEX: Final = 2**64 - 1
"""XDR uint64: every Stellar slot index fits synod's `SlotIndex`."""
_MAX_CACHED_KEYS: Final = 64

_T = TypeVar("_T")


class StellarFormatError(ValueError):
    """Bytes or XDR objects that are not a valid, canonical, in-bounds Stellar SCP message."""


# Node ids ------------------------------------------------------------------------------


def node_id_to_strkey(node_id: bytes) -> str:
    """The Stellar strkey ("G...") of a 32-byte Ed25519 node id."""
    if len(node_id) != PUBLIC_KEY_BYTES:
        raise InvalidNodeId(f"a node id is {PUBLIC_KEY_BYTES} bytes, got {len(node_id)}")
    return StrKey.encode_ed25519_public_key(bytes(node_id))


def node_id_from_strkey(text: str) -> NodeId:
    """Parse a Stellar strkey ("G...") into a node id; `InvalidNodeId` when malformed."""
    try:
        raw = StrKey.decode_ed25519_public_key(text)
    except Exception as error:  # stellar-sdk raises several unrelated types for bad text
        raise InvalidNodeId(f"{text!r} is not a Stellar public key: {error}") from None
    return NodeId(bytes(raw))


def node_id_to_xdr(node_id: bytes) -> xdr.NodeID:
    """XDR ``NodeID`` (``PUBLIC_KEY_TYPE_ED25519``) of a node id."""
    if len(node_id) != PUBLIC_KEY_BYTES:
        raise InvalidNodeId(f"a node id is {PUBLIC_KEY_BYTES} bytes, got {len(node_id)}")
    return xdr.NodeID(
        xdr.PublicKey(xdr.PublicKeyType.PUBLIC_KEY_TYPE_ED25519, xdr.Uint256(bytes(node_id)))
    )


def node_id_from_xdr(node_id: xdr.NodeID) -> NodeId:
    """The 32-byte node id inside an XDR ``NodeID``."""
    key = node_id.node_id
    if key.type != xdr.PublicKeyType.PUBLIC_KEY_TYPE_ED25519 or key.ed25519 is None:
        raise StellarFormatError("node id is not an Ed25519 public key")
    raw = key.ed25519.uint256
    if len(raw) != PUBLIC_KEY_BYTES:
        raise StellarFormatError(f"node id of {len(raw)} bytes")
    return NodeId(bytes(raw))


# Quorum sets ---------------------------------------------------------------------------


def qset_to_xdr_object(qset: QuorumSet) -> xdr.SCPQuorumSet:
    """The ``SCPQuorumSet`` with the same threshold, validators and inner sets, in order."""
    return xdr.SCPQuorumSet(
        xdr.Uint32(qset.threshold),
        [node_id_to_xdr(validator) for validator in qset.validators],
        [qset_to_xdr_object(inner) for inner in qset.inner_sets],
    )


def qset_from_xdr_object(qset: xdr.SCPQuorumSet) -> QuorumSet:
    """The `QuorumSet` of an ``SCPQuorumSet``; `StellarFormatError` beyond synod's bounds."""
    return _validated(_qset_from_xdr_object(qset, depth=0), QuorumSet)


def _qset_from_xdr_object(qset: xdr.SCPQuorumSet, depth: int) -> QuorumSet:
    if depth > MAX_QSET_XDR_DEPTH:
        raise StellarFormatError(f"quorum set nested deeper than {MAX_QSET_XDR_DEPTH}")
    return QuorumSet(
        threshold=qset.threshold.uint32,
        validators=tuple(node_id_from_xdr(v) for v in qset.validators),
        inner_sets=tuple(_qset_from_xdr_object(inner, depth + 1) for inner in qset.inner_sets),
    )


def qset_to_xdr(qset: QuorumSet) -> bytes:
    """The XDR bytes of a quorum set, exactly as stellar-core encodes it."""
    return bytes(qset_to_xdr_object(qset).to_xdr_bytes())


def qset_from_xdr(data: bytes) -> QuorumSet:
    """Decode peer bytes holding an ``SCPQuorumSet``; raises only `StellarFormatError`.

    The result is not checked for sanity: call `synod.quorum.qset.check_sanity`.
    """
    if len(data) > MAX_QSET_XDR_BYTES:
        raise StellarFormatError(f"quorum set of {len(data)} bytes exceeds {MAX_QSET_XDR_BYTES}")
    decoded = _decode(xdr.SCPQuorumSet, data, "quorum set")
    return qset_from_xdr_object(decoded)


def stellar_qset_hash(qset: QuorumSet) -> bytes:
    """Stellar's quorum-set hash: SHA-256 of the ``SCPQuorumSet`` XDR."""
    return sha256(qset_to_xdr(qset))


# Statements and envelopes -------------------------------------------------------------


def _ballot_to_xdr(ballot: Ballot) -> xdr.SCPBallot:
    return xdr.SCPBallot(xdr.Uint32(ballot.counter), xdr.Value(bytes(ballot.value)))


def _optional_ballot_to_xdr(ballot: Ballot | None) -> xdr.SCPBallot | None:
    return None if ballot is None else _ballot_to_xdr(ballot)


def _ballot_from_xdr(ballot: xdr.SCPBallot) -> Ballot:
    return Ballot(counter=ballot.counter.uint32, value=bytes(ballot.value.value))


def _optional_ballot_from_xdr(ballot: xdr.SCPBallot | None) -> Ballot | None:
    return None if ballot is None else _ballot_from_xdr(ballot)


def _pledges_to_xdr(pledges: Pledges) -> xdr.SCPStatementPledges:
    kind = xdr.SCPStatementType
    if isinstance(pledges, Prepare):
        return xdr.SCPStatementPledges(
            kind.SCP_ST_PREPARE,
            prepare=xdr.SCPStatementPrepare(
                xdr.Hash(bytes(pledges.quorum_set_hash)),
                _ballot_to_xdr(pledges.ballot),
                _optional_ballot_to_xdr(pledges.prepared),
                _optional_ballot_to_xdr(pledges.prepared_prime),
                xdr.Uint32(pledges.n_c),
                xdr.Uint32(pledges.n_h),
            ),
        )
    if isinstance(pledges, Confirm):
        return xdr.SCPStatementPledges(
            kind.SCP_ST_CONFIRM,
            confirm=xdr.SCPStatementConfirm(
                _ballot_to_xdr(pledges.ballot),
                xdr.Uint32(pledges.n_prepared),
                xdr.Uint32(pledges.n_commit),
                xdr.Uint32(pledges.n_h),
                xdr.Hash(bytes(pledges.quorum_set_hash)),
            ),
        )
    if isinstance(pledges, Externalize):
        return xdr.SCPStatementPledges(
            kind.SCP_ST_EXTERNALIZE,
            externalize=xdr.SCPStatementExternalize(
                _ballot_to_xdr(pledges.commit),
                xdr.Uint32(pledges.n_h),
                xdr.Hash(bytes(pledges.commit_quorum_set_hash)),
            ),
        )
    return xdr.SCPStatementPledges(
        kind.SCP_ST_NOMINATE,
        nominate=xdr.SCPNomination(
            xdr.Hash(bytes(pledges.quorum_set_hash)),
            [xdr.Value(bytes(value)) for value in pledges.votes],
            [xdr.Value(bytes(value)) for value in pledges.accepted],
        ),
    )


def _pledges_from_xdr(pledges: xdr.SCPStatementPledges) -> Pledges:
    kind = xdr.SCPStatementType
    if pledges.type == kind.SCP_ST_PREPARE and pledges.prepare is not None:
        prepare = pledges.prepare
        return Prepare(
            quorum_set_hash=bytes(prepare.quorum_set_hash.hash),
            ballot=_ballot_from_xdr(prepare.ballot),
            prepared=_optional_ballot_from_xdr(prepare.prepared),
            prepared_prime=_optional_ballot_from_xdr(prepare.prepared_prime),
            n_c=prepare.n_c.uint32,
            n_h=prepare.n_h.uint32,
        )
    if pledges.type == kind.SCP_ST_CONFIRM and pledges.confirm is not None:
        confirm = pledges.confirm
        return Confirm(
            ballot=_ballot_from_xdr(confirm.ballot),
            n_prepared=confirm.n_prepared.uint32,
            n_commit=confirm.n_commit.uint32,
            n_h=confirm.n_h.uint32,
            quorum_set_hash=bytes(confirm.quorum_set_hash.hash),
        )
    if pledges.type == kind.SCP_ST_EXTERNALIZE and pledges.externalize is not None:
        externalize = pledges.externalize
        return Externalize(
            commit=_ballot_from_xdr(externalize.commit),
            n_h=externalize.n_h.uint32,
            commit_quorum_set_hash=bytes(externalize.commit_quorum_set_hash.hash),
        )
    if pledges.type == kind.SCP_ST_NOMINATE and pledges.nominate is not None:
        nominate = pledges.nominate
        return Nomination(
            quorum_set_hash=bytes(nominate.quorum_set_hash.hash),
            votes=tuple(bytes(value.value) for value in nominate.votes),
            accepted=tuple(bytes(value.value) for value in nominate.accepted),
        )
    raise StellarFormatError(f"statement type {pledges.type!r} without its body")


def statement_to_xdr_object(statement: Statement) -> xdr.SCPStatement:
    """The ``SCPStatement`` of a synod statement."""
    return xdr.SCPStatement(
        node_id_to_xdr(statement.node_id),
        xdr.Uint64(statement.slot_index),
        _pledges_to_xdr(statement.pledges),
    )


def statement_from_xdr_object(statement: xdr.SCPStatement) -> Statement:
    """The synod statement of an ``SCPStatement``; `StellarFormatError` beyond synod's bounds."""
    slot_index = statement.slot_index.uint64
    if slot_index > _MAX_SLOT_INDEX:
        raise StellarFormatError(f"slot {slot_index} is beyond synod's slot range")
    converted = Statement(
        node_id=node_id_from_xdr(statement.node_id),
        slot_index=slot_index,
        pledges=_pledges_from_xdr(statement.pledges),
    )
    return _validated(converted, Statement)


def statement_to_xdr(statement: Statement) -> bytes:
    """The XDR bytes of a statement, exactly as stellar-core encodes it."""
    return bytes(statement_to_xdr_object(statement).to_xdr_bytes())


def statement_from_xdr(data: bytes) -> Statement:
    """Decode peer bytes holding an ``SCPStatement``; raises only `StellarFormatError`."""
    _check_envelope_size(data)
    return statement_from_xdr_object(_decode(xdr.SCPStatement, data, "statement"))


def envelope_to_xdr_object(envelope: Envelope) -> xdr.SCPEnvelope:
    """The ``SCPEnvelope`` of a synod envelope (the signature is carried as is)."""
    return xdr.SCPEnvelope(
        statement_to_xdr_object(envelope.statement), xdr.Signature(bytes(envelope.signature))
    )


def envelope_from_xdr_object(envelope: xdr.SCPEnvelope) -> Envelope:
    """The synod envelope of an ``SCPEnvelope``; a signature must be 64 bytes.

    The signature is not checked here: use `StellarNetwork.verify_envelope`.
    """
    signature = bytes(envelope.signature.signature)
    if len(signature) != SIGNATURE_BYTES:
        raise StellarFormatError(f"signature of {len(signature)} bytes, not {SIGNATURE_BYTES}")
    return Envelope(statement=statement_from_xdr_object(envelope.statement), signature=signature)


def envelope_to_xdr(envelope: Envelope) -> bytes:
    """The XDR bytes of an envelope, exactly as stellar-core sends it."""
    return bytes(envelope_to_xdr_object(envelope).to_xdr_bytes())


def envelope_from_xdr(data: bytes) -> Envelope:
    """Decode peer bytes holding an ``SCPEnvelope``; raises only `StellarFormatError`."""
    _check_envelope_size(data)
    return envelope_from_xdr_object(_decode(xdr.SCPEnvelope, data, "envelope"))


# Overlay messages ------------------------------------------------------------------------

OverlayMessage = Envelope | QuorumSetRequest | QuorumSetResponse | StateRequest
"""The synod SCP messages that have a ``StellarMessage`` counterpart."""

_MESSAGE_TYPE = xdr.MessageType
_OVERLAY_TYPES: Final = frozenset(
    int(kind.value)
    for kind in (
        _MESSAGE_TYPE.GET_SCP_QUORUMSET,
        _MESSAGE_TYPE.SCP_QUORUMSET,
        _MESSAGE_TYPE.SCP_MESSAGE,
        _MESSAGE_TYPE.GET_SCP_STATE,
    )
)
MAX_OVERLAY_XDR_BYTES: Final = max(MAX_ENVELOPE_XDR_BYTES, MAX_QSET_XDR_BYTES)
"""Largest SCP ``StellarMessage`` accepted."""


def overlay_message_to_xdr(message: OverlayMessage) -> bytes:
    """The ``StellarMessage`` bytes of an SCP message, as stellar-core's overlay frames them:
    `Envelope` is SCP_MESSAGE, `QuorumSetRequest` GET_SCP_QUORUMSET, `QuorumSetResponse`
    SCP_QUORUMSET and `StateRequest` GET_SCP_STATE (whose slot must fit XDR's uint32)."""
    if isinstance(message, Envelope):
        wrapped = xdr.StellarMessage(
            _MESSAGE_TYPE.SCP_MESSAGE, envelope=envelope_to_xdr_object(message)
        )
    elif isinstance(message, QuorumSetRequest):
        wrapped = xdr.StellarMessage(
            _MESSAGE_TYPE.GET_SCP_QUORUMSET,
            q_set_hash=xdr.Uint256(bytes(message.quorum_set_hash)),
        )
    elif isinstance(message, QuorumSetResponse):
        wrapped = xdr.StellarMessage(
            _MESSAGE_TYPE.SCP_QUORUMSET, q_set=qset_to_xdr_object(message.quorum_set)
        )
    else:
        if not 0 <= message.from_slot_index <= 2**32 - 1:
            raise ValueError(f"GET_SCP_STATE carries a uint32, not {message.from_slot_index}")
        wrapped = xdr.StellarMessage(
            _MESSAGE_TYPE.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(message.from_slot_index)
        )
    return bytes(wrapped.to_xdr_bytes())


def overlay_message_from_xdr(data: bytes) -> OverlayMessage:
    """Decode peer bytes holding an SCP ``StellarMessage``; raises only `StellarFormatError`.

    Other overlay message types (transactions, peers, ...) are refused by their type tag
    before their body is decoded.
    """
    if len(data) > MAX_OVERLAY_XDR_BYTES:
        raise StellarFormatError(f"{len(data)} bytes exceed {MAX_OVERLAY_XDR_BYTES}")
    if len(data) < 4 or int.from_bytes(data[:4], "big") not in _OVERLAY_TYPES:
        raise StellarFormatError("not an SCP overlay message")
    message = _decode(xdr.StellarMessage, data, "overlay message")
    if message.envelope is not None:
        return envelope_from_xdr_object(message.envelope)
    if message.q_set_hash is not None:
        return QuorumSetRequest(quorum_set_hash=bytes(message.q_set_hash.uint256))
    if message.q_set is not None:
        return QuorumSetResponse(quorum_set=qset_from_xdr_object(message.q_set))
    if message.get_scp_ledger_seq is not None:
        return StateRequest(from_slot_index=message.get_scp_ledger_seq.uint32)
    raise StellarFormatError("SCP overlay message without its body")


# Signatures ----------------------------------------------------------------------------


def network_id(passphrase: str) -> bytes:
    """Stellar's network id: SHA-256 of the network passphrase (UTF-8)."""
    return sha256(passphrase.encode("utf-8"))


def envelope_signature_payload(network: bytes, statement_xdr: bytes) -> bytes:
    """The bytes an SCP envelope signature covers: networkID || XDR(1) || XDR(statement)."""
    if len(network) != 32:
        raise ValueError(f"a network id is 32 bytes, got {len(network)}")
    return network + ENVELOPE_TYPE_SCP.to_bytes(4, "big") + statement_xdr


class StellarNetwork:
    """Signs and verifies SCP envelopes the way stellar-core does on one Stellar network.

    `sign_statement` and `verify_envelope` have the shapes of the functions of the same
    name in `synod.scp.messages`, so an SCP core can take either pair.
    """

    __slots__ = ("_secret_keys", "network_id", "passphrase")

    def __init__(self, passphrase: str) -> None:
        self.passphrase = passphrase
        self.network_id: bytes = network_id(passphrase)
        """SHA-256 of the passphrase."""
        # libsodium's expanded signing key per seed: deriving it costs about as much as
        # a signature, and a node signs with one key (or a handful, in tests).
        self._secret_keys: dict[bytes, bytes] = {}

    def sign_statement(self, keys: KeyPair, statement: Statement) -> Envelope:
        """Sign `statement` with `keys` (which must belong to `statement.node_id`)."""
        if keys.node_id != statement.node_id:
            raise ValueError("a statement can only be signed by the node it names")
        return Envelope(statement, self.sign_statement_xdr(keys, statement_to_xdr(statement)))

    def sign_statement_xdr(self, keys: KeyPair, statement_xdr: bytes) -> bytes:
        """The 64-byte Stellar signature by `keys` of a statement given as XDR."""
        payload = envelope_signature_payload(self.network_id, statement_xdr)
        secret = self._secret_keys.get(keys.seed)
        if secret is None:
            if len(self._secret_keys) >= _MAX_CACHED_KEYS:
                self._secret_keys.clear()
            _public, secret = nacl.bindings.crypto_sign_seed_keypair(keys.seed)
            self._secret_keys[keys.seed] = secret
        return bytes(nacl.bindings.crypto_sign(payload, secret)[:SIGNATURE_BYTES])

    def verify_envelope(self, envelope: Envelope) -> bool:
        """True when the envelope carries its statement's node's Stellar signature."""
        statement = envelope.statement
        try:
            statement_xdr = statement_to_xdr(statement)
        except (ValueError, TypeError, OverflowError):
            return False  # a struct no XDR can hold carries no valid Stellar signature
        return self.verify_statement_xdr(statement.node_id, statement_xdr, envelope.signature)

    def verify_statement_xdr(self, signer: bytes, statement_xdr: bytes, signature: bytes) -> bool:
        """True when `signature` is `signer`'s Stellar signature of the statement XDR."""
        if len(signer) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
            return False
        payload = envelope_signature_payload(self.network_id, statement_xdr)
        try:
            nacl.bindings.crypto_sign_open(bytes(signature) + payload, bytes(signer))
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            return False
        return True

    def __repr__(self) -> str:
        return f"StellarNetwork({self.passphrase!r})"


# Decoding helpers ----------------------------------------------------------------------


def _check_envelope_size(data: bytes) -> None:
    if len(data) > MAX_ENVELOPE_XDR_BYTES:
        raise StellarFormatError(f"{len(data)} bytes exceed {MAX_ENVELOPE_XDR_BYTES}")


class _Xdr(Protocol):
    """What `_decode` needs of a stellar-sdk XDR class."""

    @classmethod
    def from_xdr_bytes(cls, xdr: bytes, /) -> Self: ...

    def to_xdr_bytes(self) -> bytes: ...


_X = TypeVar("_X", bound=_Xdr)


def _decode(kind: type[_X], data: bytes, what: str) -> _X:
    try:
        decoded = kind.from_xdr_bytes(bytes(data))
        # xdrlib3 does not check that padding bytes are zero; re-encoding does, and it
        # makes every accepted message have exactly one byte form.
        canonical = decoded.to_xdr_bytes()
    except Exception as error:  # stellar-sdk and xdrlib3 raise many types on bad bytes
        raise StellarFormatError(f"malformed {what} XDR: {error!r}") from None
    if canonical != data:
        raise StellarFormatError(f"non-canonical {what} XDR (padding bytes are not zero)")
    return decoded


def _validated(value: _T, kind: type[_T]) -> _T:
    """`value` re-decoded against its msgspec bounds (constructors do not check them)."""
    try:
        return msgspec.msgpack.decode(msgspec.msgpack.encode(value), type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise StellarFormatError(f"outside synod's bounds: {error}") from None
