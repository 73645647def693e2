"""Stellar compatibility: XDR bytes, quorum-set hashes, strkeys and envelope signatures.

Expected bytes come from three independent places: XDR packed by hand here with
`struct` following `Stellar-SCP.x` (RFC 4506 encoding), objects built and read with
stellar-sdk's own XDR classes, and real Stellar network data (a pubnet quorum set as a
node sent it, and stellarbeat snapshots whose `hashKey` is the hash stellar-core gave
each quorum set).  Signatures are cross-checked with stellar-sdk's `Keypair` over a
payload assembled here from stellar-sdk's network id and envelope-type encoding.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("stellar_sdk", reason="needs the synod[stellar] extra (stellar-sdk)")
from stellar_sdk import Keypair, Network, xdr
from stellar_sdk.exceptions import BadSignatureError

from synod.crypto import InvalidNodeId, KeyPair
from synod.quorum.qset import QuorumSet, is_sane
from synod.scp import messages
from synod.scp.messages import (
    MAX_NOMINATION_VALUES,
    MAX_VALUE_BYTES,
    Ballot,
    Confirm,
    Envelope,
    Externalize,
    Nomination,
    Prepare,
    QuorumSetRequest,
    QuorumSetResponse,
    Statement,
    StateRequest,
)
from synod.scp.stellar import (
    PUBLIC_NETWORK_PASSPHRASE,
    TESTNET_NETWORK_PASSPHRASE,
    StellarFormatError,
    StellarNetwork,
    envelope_from_xdr,
    envelope_to_xdr,
    node_id_from_strkey,
    node_id_to_strkey,
    overlay_message_from_xdr,
    overlay_message_to_xdr,
    qset_from_xdr,
    qset_to_xdr,
    statement_from_xdr,
    statement_to_xdr,
    stellar_qset_hash,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fbas"
KEYS = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(4)]
EXAMPLES = settings(max_examples=80, deadline=None)

# A pubnet quorum set as a node sent it in a StellarMessage (type 10, SCP_QUORUMSET):
# 7 of 9 organisations, seven of them 2-of-3 and two 3-of-5 (from the tests of
# stellarbeat's js-stellar-node-connector).
PUBNET_QSET_MESSAGE = base64.b64decode(
    "AAAACgAAAAcAAAAAAAAACQAAAAIAAAADAAAAAAFdGFUq2t7rTo0wWu9k/6rxa0T+pf6CHmBj2vO56O1XAAAAACtw"
    "/kFMcHkbypQPj/G/SAsV8eWuRNtbQIo9kimhTJklAAAAADF88fn7/Qdf5AnejN22xxQnBxZIgcsq0VC/dFJbol8/"
    "AAAAAAAAAAIAAAADAAAAAALFJZ5Gu3RxX6evZlFupBENfCKbFy8HGJOsqYaXrFMrAAAAAIwdS0o2ARfVAN/PjN6x"
    "ZrGaEuD0t7zToaDF6Z5B9peZAAAAAJnoMfsa4vmDNtUy8T76WXcr2up7H7MouQjkXcMmro3YAAAAAAAAAAMAAAAF"
    "AAAAAANLAi7Z6GdWn+x4zmK4IspnZakCCcfQZEyflPbKll7aAAAAACxvBigpTgmzVqp4CsCq0rZsbpwng2M7MHI3"
    "8IGhKKrlAAAAAFaWt2CucvNouAYniCiCbacMYpTGlVK3TqKyoNF3RcOeAAAAAJF6qaV6rVYpKqq1XjVfHyYvW2Gj"
    "LyQnfuwoC9gxe9N0AAAAAKqeZ9NHs6k4xGyfccNU5FR9ibBWKHbKT8Fe201ml4gTAAAAAAAAAAIAAAADAAAAAAOz"
    "ZQT1wYtc2aDZwzClWkJWLJpI30Fambscye2nuM5LAAAAAEMIT2RFJXikXpmoI1QbLV965WY23JwAVgktgJ6c9ZK7"
    "AAAAAO9FFMb/rJF8AiH2mj1qZ1vZf9CTGjC5sSUu8WcVe5ZbAAAAAAAAAAIAAAADAAAAAAaweClXqq3sjNIHBm/r"
    "6o1RY6yR5HqkHJCaZtEEdMUfAAAAADPN/Tz0hFfkg11MNisvWV3/3TyFQUjJNY5VqfZfvQp7AAAAAP0swruxE0Pv"
    "umzqtRK6SzUT696ryM+Q/YLWj+cgAti2AAAAAAAAAAIAAAADAAAAABXs9pU1KyIrzyOEDCUSnPpEhDvj27a5ZIG1"
    "KirxrXRfAAAAAFMKIvR3Lya8FJ+cNeaJjXTX3wCSqBxw3WYftnPvFVHeAAAAALsrraBmxcawytPurkd8D0zc8+XE"
    "NcygJRlcKnh8UFvHAAAAAAAAAAIAAAADAAAAADEP2bl6LBZeQDc+D0s21t3EWLRE8cFv+Nm4LnuXojWuAAAAAGSO"
    "jdK+CEZXk+NquAzFdel7ao9eLVNWGuH1IhUhYgPFAAAAAGoDBgM8mjoqhyF2+omrrrN2fuD5JXRY/DidtZfRdw53"
    "AAAAAAAAAAIAAAADAAAAADfZ7/rdH6ulYtH+xq/VYrOUFXqtv3OwpUqUgGipFia1AAAAAKyVM4Q0zJpWVqJG8UCO"
    "I/qzycVUgcOBYZudyfD7OI7mAAAAANViLMmkYquQRtnOU92Rv7mLQfQ6hViSTr7J17PDZzF1AAAAAAAAAAMAAAAF"
    "AAAAADsphZX0B3KMw/aYQ61nzN40f/TbyuHqRF07FIzwsGPWAAAAAD8yPEEcFI+mC4b5mkYsVzg64Eg1bwhZsrAJ"
    "CPlB4VggAAAAAIrmk1sAf48LuMuYqijEm9AEg5B2Fy7VsuJOEyo5E/BxAAAAAO8A7cxkPMMbm32KHNglUEI6ZRWV"
    "BgzmcQWhlRJaEOROAAAAAPsLErXhs5nB/PBjevRUYxi38TMxR/LbCU2ivvBEXjyTAAAAAA=="
)


# XDR packed by hand (RFC 4506: big-endian, opaque padded with zeros to 4 bytes) -------


def u32(number: int) -> bytes:
    return struct.pack(">I", number)


def u64(number: int) -> bytes:
    return struct.pack(">Q", number)


def opaque(data: bytes) -> bytes:
    return u32(len(data)) + data + bytes(-len(data) % 4)


def public_key(raw: bytes) -> bytes:
    return u32(0) + raw  # PUBLIC_KEY_TYPE_ED25519 = 0


def ballot(counter: int, value: bytes) -> bytes:
    return u32(counter) + opaque(value)


def hand_signature_payload(passphrase: str, statement_xdr: bytes) -> bytes:
    # Built from stellar-sdk's pieces, not from synod's: network id, then the XDR of
    # EnvelopeType.ENVELOPE_TYPE_SCP, then the statement.
    network_id = Network(passphrase).network_id()
    envelope_type = xdr.EnvelopeType.ENVELOPE_TYPE_SCP.to_xdr_bytes()
    return network_id + envelope_type + statement_xdr


# Strategies ------------------------------------------------------------------------


values = st.binary(max_size=40)
digests = st.binary(min_size=32, max_size=32)
counters = st.integers(0, 2**32 - 1)
ballots = st.builds(Ballot, counter=counters, value=values)
pledges = st.one_of(
    st.builds(
        Prepare,
        quorum_set_hash=digests,
        ballot=ballots,
        prepared=st.none() | ballots,
        prepared_prime=st.none() | ballots,
        n_c=counters,
        n_h=counters,
    ),
    st.builds(
        Confirm,
        ballot=ballots,
        n_prepared=counters,
        n_commit=counters,
        n_h=counters,
        quorum_set_hash=digests,
    ),
    st.builds(Externalize, commit=ballots, n_h=counters, commit_quorum_set_hash=digests),
    st.builds(
        Nomination,
        quorum_set_hash=digests,
        votes=st.lists(values, max_size=4).map(tuple),
        accepted=st.lists(values, max_size=4).map(tuple),
    ),
)
statements = st.builds(
    Statement,
    node_id=st.sampled_from([k.node_id for k in KEYS]) | digests,
    slot_index=st.integers(0, 2**64 - 1),
    pledges=pledges,
)


@st.composite
def quorum_sets(draw: st.DrawFn, depth: int = 3) -> QuorumSet:
    validators = draw(st.lists(digests, max_size=4))
    inner = draw(st.lists(quorum_sets(depth - 1), max_size=3)) if depth else []
    return QuorumSet(
        threshold=draw(st.integers(0, 2**32 - 1)),
        validators=tuple(validators),
        inner_sets=tuple(inner),
    )


def sdk_ballot_fields(sdk: xdr.SCPBallot | None) -> tuple[int, bytes] | None:
    return None if sdk is None else (sdk.counter.uint32, sdk.value.value)


def sdk_statement_fields(sdk: xdr.SCPStatement) -> tuple[Any, ...]:
    """A statement's fields as read by stellar-sdk, in `Stellar-SCP.x` order."""
    head = (sdk.node_id.node_id.ed25519.uint256, sdk.slot_index.uint64, sdk.pledges.type.value)
    pledge = sdk.pledges
    if pledge.prepare is not None:
        p = pledge.prepare
        body: tuple[Any, ...] = (
            p.quorum_set_hash.hash,
            sdk_ballot_fields(p.ballot),
            sdk_ballot_fields(p.prepared),
            sdk_ballot_fields(p.prepared_prime),
            p.n_c.uint32,
            p.n_h.uint32,
        )
    elif pledge.confirm is not None:
        c = pledge.confirm
        body = (
            sdk_ballot_fields(c.ballot),
            c.n_prepared.uint32,
            c.n_commit.uint32,
            c.n_h.uint32,
            c.quorum_set_hash.hash,
        )
    elif pledge.externalize is not None:
        e = pledge.externalize
        body = (sdk_ballot_fields(e.commit), e.n_h.uint32, e.commit_quorum_set_hash.hash)
    else:
        assert pledge.nominate is not None
        n = pledge.nominate
        body = (
            n.quorum_set_hash.hash,
            tuple(v.value for v in n.votes),
            tuple(v.value for v in n.accepted),
        )
    return head + body


def synod_statement_fields(statement: Statement) -> tuple[Any, ...]:
    def ballot_fields(b: Ballot | None) -> tuple[int, bytes] | None:
        return None if b is None else (b.counter, b.value)

    p = statement.pledges
    kind = messages.STATEMENT_TYPE[type(p)]
    head = (statement.node_id, statement.slot_index, kind)
    if isinstance(p, Prepare):
        body: tuple[Any, ...] = (
            p.quorum_set_hash,
            ballot_fields(p.ballot),
            ballot_fields(p.prepared),
            ballot_fields(p.prepared_prime),
            p.n_c,
            p.n_h,
        )
    elif isinstance(p, Confirm):
        body = (ballot_fields(p.ballot), p.n_prepared, p.n_commit, p.n_h, p.quorum_set_hash)
    elif isinstance(p, Externalize):
        body = (ballot_fields(p.commit), p.n_h, p.commit_quorum_set_hash)
    else:
        body = (p.quorum_set_hash, p.votes, p.accepted)
    return head + body


def sdk_signed_envelope(seed: bytes, passphrase: str, sdk_statement: xdr.SCPStatement) -> bytes:
    """An envelope built and signed with stellar-sdk alone; its XDR bytes."""
    signer = Keypair.from_raw_ed25519_seed(seed)
    payload = hand_signature_payload(passphrase, sdk_statement.to_xdr_bytes())
    envelope = xdr.SCPEnvelope(sdk_statement, xdr.Signature(signer.sign(payload)))
    return bytes(envelope.to_xdr_bytes())


def sdk_externalize(node: bytes, slot: int, value: bytes) -> xdr.SCPStatement:
    return xdr.SCPStatement(
        xdr.NodeID(xdr.PublicKey(xdr.PublicKeyType.PUBLIC_KEY_TYPE_ED25519, xdr.Uint256(node))),
        xdr.Uint64(slot),
        xdr.SCPStatementPledges(
            xdr.SCPStatementType.SCP_ST_EXTERNALIZE,
            externalize=xdr.SCPStatementExternalize(
                xdr.SCPBallot(xdr.Uint32(3), xdr.Value(value)), xdr.Uint32(5), xdr.Hash(bytes(32))
            ),
        ),
    )


def sdk_nomination(node: bytes, votes: list[bytes]) -> xdr.SCPStatement:
    return xdr.SCPStatement(
        xdr.NodeID(xdr.PublicKey(xdr.PublicKeyType.PUBLIC_KEY_TYPE_ED25519, xdr.Uint256(node))),
        xdr.Uint64(1),
        xdr.SCPStatementPledges(
            xdr.SCPStatementType.SCP_ST_NOMINATE,
            nominate=xdr.SCPNomination(xdr.Hash(bytes(32)), [xdr.Value(v) for v in votes], []),
        ),
    )


# Node ids and strkeys ----------------------------------------------------------------


def test_zero_key_has_the_well_known_strkey() -> None:
    assert (
        node_id_to_strkey(bytes(32)) == "GAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWHF"
    )


def test_strkey_matches_stellar_sdk_for_the_same_seed() -> None:
    for index, keys in enumerate(KEYS):
        expected = Keypair.from_raw_ed25519_seed(bytes([index + 1]) * 32).public_key
        assert node_id_to_strkey(keys.node_id) == expected
        assert node_id_from_strkey(expected) == keys.node_id


@pytest.mark.parametrize(
    "text",
    [
        "GAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWHG",  # checksum off by one
        "SAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAWHF",  # a secret-seed prefix
        "G",
        "",
        "not a key at all",
    ],
)
def test_malformed_strkeys_are_refused(text: str) -> None:
    with pytest.raises(InvalidNodeId):
        node_id_from_strkey(text)


def test_node_ids_of_the_wrong_length_have_no_strkey() -> None:
    with pytest.raises(InvalidNodeId):
        node_id_to_strkey(bytes(31))


# Quorum sets ---------------------------------------------------------------------------


def test_quorum_set_xdr_matches_hand_packed_bytes() -> None:
    a, b = KEYS[0].node_id, KEYS[1].node_id
    inner = QuorumSet(threshold=1, validators=(b,))
    qset = QuorumSet(threshold=2, validators=(a,), inner_sets=(inner,))
    expected = u32(2) + u32(1) + public_key(a) + u32(1) + (u32(1) + u32(1) + public_key(b) + u32(0))
    assert qset_to_xdr(qset) == expected
    assert stellar_qset_hash(qset) == hashlib.sha256(expected).digest()
    assert qset_from_xdr(expected) == qset


def test_pubnet_quorum_set_decodes_and_reencodes_byte_for_byte() -> None:
    body = PUBNET_QSET_MESSAGE[4:]
    assert PUBNET_QSET_MESSAGE[:4] == u32(10)  # StellarMessage type SCP_QUORUMSET
    qset = qset_from_xdr(body)
    assert qset.threshold == 7 and not qset.validators and len(qset.inner_sets) == 9
    shapes = sorted((inner.threshold, len(inner.validators)) for inner in qset.inner_sets)
    assert shapes == [(2, 3)] * 7 + [(3, 5)] * 2
    assert is_sane(qset)
    assert qset_to_xdr(qset) == body


def stellarbeat_qset(data: dict[str, Any]) -> QuorumSet:
    return QuorumSet(
        threshold=data["threshold"],
        validators=tuple(node_id_from_strkey(v) for v in data["validators"]),
        inner_sets=tuple(stellarbeat_qset(i) for i in data.get("innerQuorumSets", [])),
    )


@pytest.mark.parametrize("name", ["correct.json", "stellarbeat_nodes_2019-09-17.json"])
def test_quorum_set_hash_matches_the_hashes_the_stellar_network_published(name: str) -> None:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"reference data {path} is absent")
    checked = 0
    for node in json.loads(path.read_text()):
        published = (node.get("quorumSet") or {}).get("hashKey")
        if not published:
            continue
        assert node_id_to_strkey(node_id_from_strkey(node["publicKey"])) == node["publicKey"]
        qset = stellarbeat_qset(node["quorumSet"])
        assert stellar_qset_hash(qset) == base64.b64decode(published), node["publicKey"]
        checked += 1
    assert checked >= 40


@EXAMPLES
@given(quorum_sets())
def test_quorum_set_round_trips_through_xdr(qset: QuorumSet) -> None:
    data = qset_to_xdr(qset)
    assert qset_from_xdr(data) == qset
    assert xdr.SCPQuorumSet.from_xdr_bytes(data).to_xdr_bytes() == data


def test_quorum_set_xdr_with_trailing_bytes_is_refused() -> None:
    data = qset_to_xdr(QuorumSet(threshold=1, validators=(KEYS[0].node_id,)))
    with pytest.raises(StellarFormatError):
        qset_from_xdr(data + bytes(4))


def test_quorum_set_xdr_nested_beyond_the_decoding_bound_is_refused() -> None:
    qset = QuorumSet(threshold=1, validators=(KEYS[0].node_id,))
    for _ in range(40):
        qset = QuorumSet(threshold=1, inner_sets=(qset,))
    with pytest.raises(StellarFormatError, match="deeper"):
        qset_from_xdr(qset_to_xdr(qset))


# Statements and envelopes ----------------------------------------------------------


@EXAMPLES
@given(statements)
def test_statement_round_trips_through_xdr(statement: Statement) -> None:
    assert statement_from_xdr(statement_to_xdr(statement)) == statement


@EXAMPLES
@given(statements)
def test_statement_xdr_reads_back_field_for_field_in_stellar_sdk(statement: Statement) -> None:
    sdk = xdr.SCPStatement.from_xdr_bytes(statement_to_xdr(statement))
    assert sdk_statement_fields(sdk) == synod_statement_fields(statement)
    assert bytes(sdk.to_xdr_bytes()) == statement_to_xdr(statement)


@EXAMPLES
@given(statements, st.binary(min_size=64, max_size=64))
def test_envelope_round_trips_through_xdr(statement: Statement, signature: bytes) -> None:
    envelope = Envelope(statement=statement, signature=signature)
    data = envelope_to_xdr(envelope)
    assert envelope_from_xdr(data) == envelope
    assert bytes(xdr.SCPEnvelope.from_xdr_bytes(data).to_xdr_bytes()) == data


def test_prepare_statement_matches_hand_packed_bytes() -> None:
    node = KEYS[0].node_id
    statement = Statement(
        node_id=node,
        slot_index=2**40 + 7,
        pledges=Prepare(
            quorum_set_hash=bytes(range(32)),
            ballot=Ballot(counter=4, value=b"abcde"),
            prepared=None,
            prepared_prime=Ballot(counter=2, value=b"xy"),
            n_c=1,
            n_h=3,
        ),
    )
    expected = (
        public_key(node)
        + u64(2**40 + 7)
        + u32(0)  # SCP_ST_PREPARE
        + bytes(range(32))
        + ballot(4, b"abcde")
        + u32(0)  # prepared absent
        + u32(1)  # preparedPrime present
        + ballot(2, b"xy")
        + u32(1)
        + u32(3)
    )
    assert statement_to_xdr(statement) == expected


def test_confirm_externalize_and_nominate_match_hand_packed_bytes() -> None:
    node = KEYS[1].node_id
    digest = bytes([9]) * 32
    cases = [
        (
            Confirm(
                ballot=Ballot(counter=5, value=b"v"),
                n_prepared=4,
                n_commit=2,
                n_h=5,
                quorum_set_hash=digest,
            ),
            u32(1) + ballot(5, b"v") + u32(4) + u32(2) + u32(5) + digest,
        ),
        (
            Externalize(
                commit=Ballot(counter=2, value=b"four"), n_h=9, commit_quorum_set_hash=digest
            ),
            u32(2) + ballot(2, b"four") + u32(9) + digest,
        ),
        (
            Nomination(quorum_set_hash=digest, votes=(b"a", b"bb"), accepted=(b"bb",)),
            u32(3) + digest + u32(2) + opaque(b"a") + opaque(b"bb") + u32(1) + opaque(b"bb"),
        ),
    ]
    for pledge, body in cases:
        statement = Statement(node_id=node, slot_index=12, pledges=pledge)
        assert statement_to_xdr(statement) == public_key(node) + u64(12) + body
        assert statement_from_xdr(public_key(node) + u64(12) + body) == statement


# Overlay messages --------------------------------------------------------------------


def test_pubnet_quorum_set_message_is_a_quorum_set_response_byte_for_byte() -> None:
    message = overlay_message_from_xdr(PUBNET_QSET_MESSAGE)
    assert isinstance(message, QuorumSetResponse)
    assert message.quorum_set == qset_from_xdr(PUBNET_QSET_MESSAGE[4:])
    assert overlay_message_to_xdr(message) == PUBNET_QSET_MESSAGE


def test_overlay_requests_match_hand_packed_bytes() -> None:
    digest = bytes(range(32))
    request = QuorumSetRequest(quorum_set_hash=digest)
    assert overlay_message_to_xdr(request) == u32(9) + digest  # GET_SCP_QUORUMSET
    assert overlay_message_from_xdr(u32(9) + digest) == request
    state = StateRequest(from_slot_index=123_456)
    assert overlay_message_to_xdr(state) == u32(12) + u32(123_456)  # GET_SCP_STATE
    assert overlay_message_from_xdr(u32(12) + u32(123_456)) == state


@EXAMPLES
@given(statements, st.binary(min_size=64, max_size=64))
def test_envelope_travels_as_scp_message(statement: Statement, signature: bytes) -> None:
    envelope = Envelope(statement=statement, signature=signature)
    data = overlay_message_to_xdr(envelope)
    assert data == u32(11) + envelope_to_xdr(envelope)  # SCP_MESSAGE
    assert overlay_message_from_xdr(data) == envelope


def test_state_request_beyond_uint32_cannot_be_sent() -> None:
    with pytest.raises(ValueError, match="uint32"):
        overlay_message_to_xdr(StateRequest(from_slot_index=2**32))


def test_other_overlay_messages_are_refused_by_their_type() -> None:
    get_tx_set = u32(6) + bytes(32)  # GET_TX_SET: a valid StellarMessage, not SCP
    assert xdr.StellarMessage.from_xdr_bytes(get_tx_set).to_xdr_bytes() == get_tx_set
    with pytest.raises(StellarFormatError, match="not an SCP"):
        overlay_message_from_xdr(get_tx_set)
    with pytest.raises(StellarFormatError):
        overlay_message_from_xdr(b"")


# Signatures --------------------------------------------------------------------------


@EXAMPLES
@given(statements.map(lambda s: Statement(KEYS[2].node_id, s.slot_index, s.pledges)))
def test_our_signature_verifies_with_stellar_sdk_over_stellar_core_payload(
    statement: Statement,
) -> None:
    envelope = StellarNetwork(PUBLIC_NETWORK_PASSPHRASE).sign_statement(KEYS[2], statement)
    payload = hand_signature_payload(PUBLIC_NETWORK_PASSPHRASE, statement_to_xdr(statement))
    verifier = Keypair.from_raw_ed25519_public_key(KEYS[2].node_id)
    verifier.verify(payload, envelope.signature)  # raises BadSignatureError if wrong


def test_envelope_built_and_signed_by_stellar_sdk_verifies_here() -> None:
    seed = bytes([1]) * 32
    sdk_statement = sdk_externalize(KEYS[0].node_id, slot=77, value=b"ledger value")
    data = sdk_signed_envelope(seed, TESTNET_NETWORK_PASSPHRASE, sdk_statement)
    envelope = envelope_from_xdr(data)
    assert envelope.statement.slot_index == 77
    assert envelope.statement.pledges == Externalize(
        commit=Ballot(counter=3, value=b"ledger value"), n_h=5, commit_quorum_set_hash=bytes(32)
    )
    assert envelope_to_xdr(envelope) == data
    assert StellarNetwork(TESTNET_NETWORK_PASSPHRASE).verify_envelope(envelope)


def test_envelope_signed_for_another_network_does_not_verify() -> None:
    sdk_statement = sdk_externalize(KEYS[0].node_id, slot=77, value=b"v")
    data = sdk_signed_envelope(bytes([1]) * 32, TESTNET_NETWORK_PASSPHRASE, sdk_statement)
    envelope = envelope_from_xdr(data)
    assert not StellarNetwork(PUBLIC_NETWORK_PASSPHRASE).verify_envelope(envelope)


def test_envelope_signed_by_another_key_does_not_verify() -> None:
    # Statement names KEYS[0], signature by KEYS[1]'s seed.
    sdk_statement = sdk_externalize(KEYS[0].node_id, slot=77, value=b"v")
    data = sdk_signed_envelope(bytes([2]) * 32, TESTNET_NETWORK_PASSPHRASE, sdk_statement)
    assert not StellarNetwork(TESTNET_NETWORK_PASSPHRASE).verify_envelope(envelope_from_xdr(data))


def test_any_changed_statement_field_breaks_the_signature() -> None:
    network = StellarNetwork(TESTNET_NETWORK_PASSPHRASE)
    statement = Statement(
        KEYS[3].node_id,
        9,
        Nomination(quorum_set_hash=bytes(32), votes=(b"x",), accepted=()),
    )
    envelope = network.sign_statement(KEYS[3], statement)
    assert network.verify_envelope(envelope)
    changed = [
        Statement(KEYS[3].node_id, 10, statement.pledges),
        Statement(KEYS[3].node_id, 9, Nomination(bytes(32), (b"y",), ())),
        Statement(KEYS[3].node_id, 9, Nomination(bytes(32), (b"x",), (b"x",))),
    ]
    for other in changed:
        assert not network.verify_envelope(Envelope(other, envelope.signature))
    flipped = bytes([envelope.signature[0] ^ 1]) + envelope.signature[1:]
    assert not network.verify_envelope(Envelope(statement, flipped))


def test_stellar_and_synod_signatures_never_stand_in_for_each_other() -> None:
    network = StellarNetwork(TESTNET_NETWORK_PASSPHRASE)
    statement = Statement(KEYS[0].node_id, 1, Externalize(Ballot(1, b"v"), 1, bytes(32)))
    native = messages.sign_statement(KEYS[0], statement)
    stellar = network.sign_statement(KEYS[0], statement)
    assert messages.verify_envelope(native) and network.verify_envelope(stellar)
    assert not network.verify_envelope(native)
    assert not messages.verify_envelope(stellar)


def test_one_network_signs_for_several_keys_each_with_its_own() -> None:
    network = StellarNetwork(TESTNET_NETWORK_PASSPHRASE)
    for keys in [*KEYS, *reversed(KEYS)]:
        statement = Statement(keys.node_id, 3, Externalize(Ballot(1, b"v"), 1, bytes(32)))
        envelope = network.sign_statement(keys, statement)
        payload = hand_signature_payload(TESTNET_NETWORK_PASSPHRASE, statement_to_xdr(statement))
        Keypair.from_raw_ed25519_public_key(keys.node_id).verify(payload, envelope.signature)


def test_signing_a_statement_of_another_node_is_refused() -> None:
    statement = Statement(KEYS[0].node_id, 1, Externalize(Ballot(1, b"v"), 1, bytes(32)))
    with pytest.raises(ValueError, match="signed by the node it names"):
        StellarNetwork(TESTNET_NETWORK_PASSPHRASE).sign_statement(KEYS[1], statement)


def test_stellar_sdk_rejects_a_signature_over_the_wrong_payload() -> None:
    # Guards the cross-check above: stellar-sdk's verify does fail on a wrong payload.
    statement = Statement(KEYS[2].node_id, 1, Externalize(Ballot(1, b"v"), 1, bytes(32)))
    envelope = StellarNetwork(PUBLIC_NETWORK_PASSPHRASE).sign_statement(KEYS[2], statement)
    verifier = Keypair.from_raw_ed25519_public_key(KEYS[2].node_id)
    with pytest.raises(BadSignatureError):
        verifier.verify(statement_to_xdr(statement), envelope.signature)


# Bad input ---------------------------------------------------------------------------


def valid_envelope_bytes() -> bytes:
    sdk_statement = sdk_externalize(KEYS[0].node_id, slot=5, value=b"a")
    return sdk_signed_envelope(bytes([1]) * 32, TESTNET_NETWORK_PASSPHRASE, sdk_statement)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(StellarFormatError):
        envelope_from_xdr(valid_envelope_bytes() + bytes(4))


def test_every_truncation_is_refused() -> None:
    data = valid_envelope_bytes()
    for length in range(len(data)):
        with pytest.raises(StellarFormatError):
            envelope_from_xdr(data[:length])


def test_nonzero_padding_is_refused() -> None:
    node = KEYS[0].node_id
    body = u32(2) + u32(1) + u32(1) + b"a\x00\x00\x01" + u32(1) + bytes(32)  # bad pad byte
    with pytest.raises(StellarFormatError, match="non-canonical"):
        statement_from_xdr(public_key(node) + u64(1) + body)


def test_unknown_statement_type_is_refused() -> None:
    node = KEYS[0].node_id
    with pytest.raises(StellarFormatError):
        statement_from_xdr(public_key(node) + u64(1) + u32(4) + bytes(64))


def test_the_largest_uint64_slot_converts() -> None:
    # XDR slot indices are uint64; synod's SlotIndex covers the whole range.
    data = sdk_externalize(KEYS[0].node_id, slot=2**64 - 1, value=b"a").to_xdr_bytes()
    assert statement_from_xdr(data).slot_index == 2**64 - 1


def test_value_beyond_the_size_bound_is_refused() -> None:
    data = sdk_externalize(KEYS[0].node_id, slot=1, value=bytes(MAX_VALUE_BYTES + 1))
    with pytest.raises(StellarFormatError, match="bounds"):
        statement_from_xdr(data.to_xdr_bytes())


def test_too_many_nominated_values_are_refused() -> None:
    votes = [bytes([i]) for i in range(MAX_NOMINATION_VALUES + 1)]
    with pytest.raises(StellarFormatError, match="bounds"):
        statement_from_xdr(sdk_nomination(KEYS[0].node_id, votes).to_xdr_bytes())


def test_short_signature_is_refused() -> None:
    sdk_statement = sdk_externalize(KEYS[0].node_id, slot=5, value=b"a")
    data = xdr.SCPEnvelope(sdk_statement, xdr.Signature(bytes(63))).to_xdr_bytes()
    with pytest.raises(StellarFormatError, match="signature"):
        envelope_from_xdr(data)


def test_oversized_input_is_refused_before_decoding() -> None:
    with pytest.raises(StellarFormatError, match="exceed"):
        envelope_from_xdr(bytes(4 * 1024 * 1024))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_only_the_format_error(data: bytes) -> None:
    decoders = (envelope_from_xdr, statement_from_xdr, qset_from_xdr, overlay_message_from_xdr)
    for decode in decoders:
        with contextlib.suppress(StellarFormatError):
            decode(data)
    for overlay_type in (9, 10, 11, 12):  # past the type check, into each SCP arm
        with contextlib.suppress(StellarFormatError):
            overlay_message_from_xdr(u32(overlay_type) + data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 255))
def test_corrupted_envelopes_decode_canonically_or_raise_the_format_error(
    position: int, replacement: int
) -> None:
    data = bytearray(valid_envelope_bytes())
    data[position % len(data)] = replacement
    try:
        envelope = envelope_from_xdr(bytes(data))
    except StellarFormatError:
        return
    assert envelope_to_xdr(envelope) == bytes(data)
