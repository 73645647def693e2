"""The overlay handshake, MAC keys and framing of `synod.stellar.peer`, checked against a
hand-written implementation of stellar-core's definitions (`raw_overlay`), not against
synod's own code, and every refusal the handshake owes: each drops the connection with
an ERROR_MSG, and nothing raises."""

from __future__ import annotations

import hashlib
import os

import pytest
from raw_overlay import (
    TESTNET,
    RawNode,
    auth_message,
    record,
    split_records,
    verify_cert,
)
from stellar_sdk import xdr

from synod.crypto import KeyPair
from synod.stellar.auth import OverlayIdentity
from synod.stellar.peer import (
    Authenticated,
    Closed,
    MessageReceived,
    OverlaySettings,
    Role,
    State,
    StellarPeer,
    Write,
)

NOW = 1_800_000_000
SETTINGS = OverlaySettings(passphrase=TESTNET)


def synod_peer(role: Role, settings: OverlaySettings = SETTINGS, **kwargs: object) -> StellarPeer:
    keys = KeyPair.from_seed(hashlib.sha256(role.value.encode()).digest())
    identity = OverlayIdentity.create(keys, settings.network_id, os.urandom(32))
    return StellarPeer(identity, settings, role, os.urandom(32), **kwargs)  # type: ignore[arg-type]


def written(outputs: list[object]) -> bytes:
    return b"".join(output.data for output in outputs if isinstance(output, Write))


def closed(outputs: list[object]) -> Closed | None:
    return next((output for output in outputs if isinstance(output, Closed)), None)


def error_of(raw: RawNode, outputs: list[object]) -> xdr.Error:
    """The ERROR_MSG synod sent before closing (ERROR_MSG is never MAC'd)."""
    bodies = split_records(written(outputs))
    message = xdr.StellarMessage.from_xdr_bytes(bodies[-1][12:-32])
    assert message.type == xdr.MessageType.ERROR_MSG
    return message.error


def accept(raw: RawNode, synod: StellarPeer) -> xdr.Hello:
    """Raw dialer sends HELLO; returns synod's HELLO, keys derived by hand."""
    outputs = synod.receive(raw.seal(raw.hello(NOW)), NOW)
    (body,) = split_records(written(outputs))
    hello = raw.open(body).hello
    raw.derive_keys(hello)
    return hello


def authenticated_pair() -> tuple[RawNode, StellarPeer]:
    raw, synod = RawNode(we_called_remote=True), synod_peer(Role.REMOTE_CALLED_US)
    accept(raw, synod)
    outputs = synod.receive(raw.seal(auth_message()), NOW)
    assert any(isinstance(output, Authenticated) for output in outputs)
    for body in split_records(written(outputs)):
        raw.open(body)
    return raw, synod


# Values computed independently ---------------------------------------------------------


def test_dialer_hello_is_a_marked_record_with_a_valid_certificate() -> None:
    synod = synod_peer(Role.WE_CALLED_REMOTE)
    data = written(synod.start(NOW))
    assert data[0] & 0x80, "the record mark (high bit of the length) is set"
    (body,) = split_records(data)
    assert body[:12] == bytes(12), "HELLO travels with version 0, sequence 0"
    assert body[-32:] == bytes(32), "and a zero MAC"
    hello = xdr.StellarMessage.from_xdr_bytes(body[12:-32]).hello
    assert bytes(hello.network_id.hash) == hashlib.sha256(TESTNET.encode()).digest()
    assert hello.cert.expiration.uint64 == NOW + 3600
    assert verify_cert(hello, TESTNET, NOW)
    assert not verify_cert(hello, "Public Global Stellar Network ; September 2015", NOW)


def test_acceptor_completes_the_handshake_with_keys_derived_by_hand() -> None:
    raw, synod = RawNode(we_called_remote=True), synod_peer(Role.REMOTE_CALLED_US)
    hello = accept(raw, synod)
    assert verify_cert(hello, TESTNET, NOW)
    outputs = synod.receive(raw.seal(auth_message()), NOW)
    messages = [raw.open(body) for body in split_records(written(outputs))]
    # stellar-core's acceptor answers AUTH with AUTH, then grants flood capacity.
    assert [message.type for message in messages] == [
        xdr.MessageType.AUTH,
        xdr.MessageType.SEND_MORE_EXTENDED,
    ]
    assert messages[0].auth.flags == 200
    grant = messages[1].send_more_extended_message
    assert (grant.num_messages.uint32, grant.num_bytes.uint32) == (200, 300_000)
    (event,) = [output for output in outputs if isinstance(output, Authenticated)]
    assert event.peer_id == raw.node_id
    assert synod.state is State.GOT_AUTH


def test_dialer_completes_the_handshake_with_keys_derived_by_hand() -> None:
    raw, synod = RawNode(we_called_remote=False), synod_peer(Role.WE_CALLED_REMOTE)
    (body,) = split_records(written(synod.start(NOW)))
    raw.derive_keys(raw.open(body).hello)
    outputs = synod.receive(raw.seal(raw.hello(NOW)), NOW)
    (auth,) = [raw.open(body) for body in split_records(written(outputs))]
    assert auth.type == xdr.MessageType.AUTH
    outputs = synod.receive(raw.seal(auth_message()), NOW)
    assert any(isinstance(output, Authenticated) for output in outputs)
    (grant,) = [raw.open(body) for body in split_records(written(outputs))]
    assert grant.type == xdr.MessageType.SEND_MORE_EXTENDED


def test_messages_after_the_handshake_carry_consecutive_sequences_and_macs() -> None:
    raw, synod = authenticated_pair()
    request = xdr.StellarMessage(xdr.MessageType.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(7))
    outputs = synod.receive(raw.seal(request) + raw.seal(request), NOW)
    received = [output for output in outputs if isinstance(output, MessageReceived)]
    assert [m.message.get_scp_ledger_seq.uint32 for m in received] == [7, 7]
    before = raw.receive_sequence
    for _ in range(3):
        (body,) = split_records(written(synod.send(request)))
        raw.open(body)  # asserts the sequence and the MAC
    assert raw.receive_sequence == before + 3


def test_records_split_anywhere_are_reassembled() -> None:
    raw, synod = RawNode(), synod_peer(Role.REMOTE_CALLED_US)
    data = raw.seal(raw.hello(NOW))
    outputs: list[object] = []
    for index in range(len(data)):
        outputs += synod.receive(data[index : index + 1], NOW)
    assert synod.state is State.GOT_HELLO
    assert len(split_records(written(outputs))) == 1


# Refusals ----------------------------------------------------------------------------


def test_bad_mac_drops_the_connection() -> None:
    raw, synod = authenticated_pair()
    request = xdr.StellarMessage(xdr.MessageType.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(0))
    outputs = synod.receive(raw.seal(request, mac_key=bytes(32)), NOW)
    assert closed(outputs) is not None
    assert error_of(raw, outputs).code == xdr.ErrorCode.ERR_AUTH
    assert b"MAC" in bytes(error_of(raw, outputs).msg)
    assert not any(isinstance(output, MessageReceived) for output in outputs)
    assert synod.receive(raw.seal(request), NOW) == [], "a closed connection takes nothing"


@pytest.mark.parametrize("sequence", [0, 2, 2**64 - 1])
def test_wrong_sequence_drops_the_connection(sequence: int) -> None:
    raw, synod = authenticated_pair()  # the next sequence is 1 (AUTH was 0)
    request = xdr.StellarMessage(xdr.MessageType.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(0))
    outputs = synod.receive(raw.seal(request, sequence=sequence), NOW)
    assert closed(outputs) is not None
    assert bytes(error_of(raw, outputs).msg) == b"unexpected auth sequence"


def test_replayed_message_is_refused() -> None:
    raw, synod = authenticated_pair()
    request = xdr.StellarMessage(xdr.MessageType.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(0))
    sealed = raw.seal(request)
    assert closed(synod.receive(sealed, NOW)) is None
    assert closed(synod.receive(sealed, NOW)) is not None


def test_expired_certificate_is_refused() -> None:
    raw, synod = RawNode(), synod_peer(Role.REMOTE_CALLED_US)
    stale = raw.cert(NOW - 7200)  # expired an hour ago
    outputs = synod.receive(raw.seal(raw.hello(NOW, cert=stale)), NOW)
    assert closed(outputs) is not None
    assert b"expired" in bytes(error_of(raw, outputs).msg)
    assert synod.peer_id is None


def test_certificate_signed_by_another_key_is_refused() -> None:
    raw, synod = RawNode(), synod_peer(Role.REMOTE_CALLED_US)
    import nacl.signing

    forged = raw.cert(NOW, signer=nacl.signing.SigningKey.generate())
    outputs = synod.receive(raw.seal(raw.hello(NOW, cert=forged)), NOW)
    assert closed(outputs) is not None
    assert error_of(raw, outputs).code == xdr.ErrorCode.ERR_AUTH


def test_certificate_made_for_another_network_is_refused() -> None:
    raw, synod = RawNode(), synod_peer(Role.REMOTE_CALLED_US)
    other = raw.cert(NOW, network="Public Global Stellar Network ; September 2015")
    outputs = synod.receive(raw.seal(raw.hello(NOW, cert=other)), NOW)
    assert closed(outputs) is not None
    assert error_of(raw, outputs).code == xdr.ErrorCode.ERR_AUTH


def test_wrong_network_passphrase_is_refused() -> None:
    raw, synod = RawNode(passphrase="a private network"), synod_peer(Role.REMOTE_CALLED_US)
    outputs = synod.receive(raw.seal(raw.hello(NOW)), NOW)
    assert bytes(error_of(raw, outputs).msg) == b"wrong network passphrase"
    assert error_of(raw, outputs).code == xdr.ErrorCode.ERR_CONF


@pytest.mark.parametrize("versions", [(34, 30), (60, 39)])
def test_overlay_versions_that_do_not_overlap_are_refused(versions: tuple[int, int]) -> None:
    raw, synod = RawNode(), synod_peer(Role.REMOTE_CALLED_US)
    outputs = synod.receive(raw.seal(raw.hello(NOW, overlay=versions)), NOW)
    assert bytes(error_of(raw, outputs).msg) == b"wrong protocol version"


def test_configured_versions_let_an_older_peer_in() -> None:
    settings = OverlaySettings(passphrase=TESTNET, overlay_version=38, overlay_min_version=16)
    raw, synod = RawNode(), synod_peer(Role.REMOTE_CALLED_US, settings)
    outputs = synod.receive(raw.seal(raw.hello(NOW, overlay=(17, 16))), NOW)
    assert closed(outputs) is None


def test_dialed_node_must_be_the_expected_one() -> None:
    raw, synod = RawNode(we_called_remote=False), synod_peer(
        Role.WE_CALLED_REMOTE, expected_peer_id=bytes(32)
    )
    synod.start(NOW)
    outputs = synod.receive(raw.seal(raw.hello(NOW)), NOW)
    assert bytes(error_of(raw, outputs).msg) == b"not the node that was dialed"


def test_auth_without_byte_flow_control_is_refused() -> None:
    raw, synod = RawNode(), synod_peer(Role.REMOTE_CALLED_US)
    accept(raw, synod)
    legacy = xdr.StellarMessage(xdr.MessageType.AUTH, auth=xdr.Auth(0))
    outputs = synod.receive(raw.seal(legacy), NOW)
    assert bytes(error_of(raw, outputs).msg) == b"flow control bytes disabled"


def test_messages_before_the_handshake_are_refused() -> None:
    raw, synod = RawNode(), synod_peer(Role.REMOTE_CALLED_US)
    request = xdr.StellarMessage(xdr.MessageType.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(0))
    outputs = synod.receive(raw.seal(request, mac_key=bytes(32)), NOW)
    assert closed(outputs) is not None
    accept_then = RawNode()
    other = synod_peer(Role.REMOTE_CALLED_US)
    accept(accept_then, other)
    outputs = other.receive(accept_then.seal(request), NOW)  # MAC'd, but AUTH not yet done
    assert bytes(error_of(accept_then, outputs).msg) == b"message before completed handshake"


def test_repeated_hello_and_auth_are_refused() -> None:
    raw, synod = RawNode(), synod_peer(Role.REMOTE_CALLED_US)
    accept(raw, synod)
    outputs = synod.receive(raw.seal(raw.hello(NOW)), NOW)  # a HELLO is never MAC'd
    assert closed(outputs) is not None
    raw, synod = authenticated_pair()
    outputs = synod.receive(raw.seal(auth_message()), NOW)
    assert bytes(error_of(raw, outputs).msg) == b"out-of-order AUTH message"


def test_oversized_records_are_refused_from_their_header() -> None:
    synod = synod_peer(Role.REMOTE_CALLED_US)
    header_only = (0x80000000 | 4097).to_bytes(4, "big")  # above 4096 before the handshake
    outputs = synod.receive(header_only, NOW)
    assert closed(outputs) is not None and synod.buffered_bytes == 0
    _raw, synod = authenticated_pair()
    big = (0x80000000 | (SETTINGS.max_message_bytes + 1)).to_bytes(4, "big")
    assert closed(synod.receive(big, NOW)) is not None
    assert closed(synod_peer(Role.REMOTE_CALLED_US).receive(bytes(4), NOW)) is not None


@pytest.mark.parametrize(
    "garbage",
    [
        record(b"\x00" * 3),
        record(b"\x00\x00\x00\x01" + bytes(60)),  # union arm 1 does not exist
        record(bytes(12) + b"\x00\x00\x00\x0d" + b"\xff" * 40 + bytes(32)),  # broken HELLO
        record(os.urandom(200)),
    ],
)
def test_garbage_closes_without_raising(garbage: bytes) -> None:
    synod = synod_peer(Role.REMOTE_CALLED_US)
    assert closed(synod.receive(garbage, NOW)) is not None


def test_remote_error_closes_the_connection() -> None:
    raw, synod = authenticated_pair()
    error = xdr.StellarMessage(
        xdr.MessageType.ERROR_MSG, error=xdr.Error(xdr.ErrorCode.ERR_LOAD, b"busy")
    )
    outputs = synod.receive(raw.seal(error), NOW)
    event = closed(outputs)
    assert event is not None and event.by_remote and "busy" in event.reason
    assert written(outputs) == b""


def test_low_order_curve_key_in_a_valid_certificate_is_refused() -> None:
    from raw_overlay import cert_hash, network_id

    raw, synod = RawNode(), synod_peer(Role.REMOTE_CALLED_US)
    zero_key = bytes(32)  # its product with any secret is all zeros: no shared key
    expiration = NOW + 3600
    signature = raw.signing_key.sign(cert_hash(network_id(TESTNET), expiration, zero_key))
    cert = xdr.AuthCert(
        xdr.Curve25519Public(zero_key), xdr.Uint64(expiration), xdr.Signature(signature.signature)
    )
    outputs = synod.receive(raw.seal(raw.hello(NOW, cert=cert)), NOW)
    assert closed(outputs) is not None
    assert error_of(raw, outputs).code == xdr.ErrorCode.ERR_AUTH
    assert synod.state is State.CLOSED
