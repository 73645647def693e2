"""Flow control of `synod.stellar.peer` (stellar-core ``FlowControl``): flood messages
only within the capacity granted by SEND_MORE_EXTENDED, in messages and in bytes."""

from __future__ import annotations

import hashlib
import os

from raw_overlay import TESTNET, RawNode, auth_message, split_records
from stellar_sdk import xdr

from synod.crypto import KeyPair
from synod.scp.messages import Nomination, Statement
from synod.scp.stellar import StellarNetwork, envelope_to_xdr_object
from synod.stellar.auth import OverlayIdentity
from synod.stellar.peer import (
    Authenticated,
    Closed,
    MessageReceived,
    OverlaySettings,
    Role,
    StellarPeer,
    Write,
)

NOW = 1_800_000_000
SIGNER = KeyPair.from_seed(bytes(range(32)))


def scp_message(slot: int, value: bytes = b"v") -> xdr.StellarMessage:
    statement = Statement(
        node_id=SIGNER.node_id,
        slot_index=slot,
        pledges=Nomination(quorum_set_hash=bytes(32), votes=(value,), accepted=()),
    )
    envelope = StellarNetwork(TESTNET).sign_statement(SIGNER, statement)
    return xdr.StellarMessage(
        xdr.MessageType.SCP_MESSAGE, envelope=envelope_to_xdr_object(envelope)
    )


def transaction_of(size: int) -> xdr.StellarMessage:
    """A TRANSACTION-typed message whose body bytes are filler: flow control meters a
    flood message by its size before anything decodes it."""
    return _Filler(size)  # type: ignore[return-value]


class _Filler:
    """Stands in for a StellarMessage in `RawNode.seal`: type TRANSACTION, raw bytes."""

    type = xdr.MessageType.TRANSACTION

    def __init__(self, size: int) -> None:
        self.size = size

    def to_xdr_bytes(self) -> bytes:
        return (8).to_bytes(4, "big") + bytes(self.size - 4)


def pair(settings: OverlaySettings) -> tuple[RawNode, StellarPeer, list[xdr.StellarMessage]]:
    keys = KeyPair.from_seed(hashlib.sha256(b"flow").digest())
    identity = OverlayIdentity.create(keys, settings.network_id, os.urandom(32))
    synod = StellarPeer(identity, settings, Role.REMOTE_CALLED_US, os.urandom(32))
    raw = RawNode()
    outputs = synod.receive(raw.seal(raw.hello(NOW)), NOW)
    (body,) = split_records(b"".join(o.data for o in outputs if isinstance(o, Write)))
    raw.derive_keys(raw.open(body).hello)
    outputs = synod.receive(raw.seal(auth_message()), NOW)
    assert any(isinstance(output, Authenticated) for output in outputs)
    messages = [raw.open(body) for body in split_records(_written(outputs))]
    return raw, synod, messages


def _written(outputs: list[object]) -> bytes:
    return b"".join(output.data for output in outputs if isinstance(output, Write))


def grants(raw: RawNode, outputs: list[object]) -> list[tuple[int, int]]:
    found = []
    for body in split_records(_written(outputs)):
        message = raw.open(body)
        if message.type == xdr.MessageType.SEND_MORE_EXTENDED:
            grant = message.send_more_extended_message
            found.append((grant.num_messages.uint32, grant.num_bytes.uint32))
    return found


def send_more(messages: int, size: int) -> xdr.StellarMessage:
    return xdr.StellarMessage(
        xdr.MessageType.SEND_MORE_EXTENDED,
        send_more_extended_message=xdr.SendMoreExtended(xdr.Uint32(messages), xdr.Uint32(size)),
    )


def test_capacity_is_granted_again_after_each_batch() -> None:
    settings = OverlaySettings(passphrase=TESTNET)
    raw, synod, _ = pair(settings)
    outputs: list[object] = []
    for slot in range(1, 201):
        outputs += synod.receive(raw.seal(scp_message(slot)), NOW)
    assert not any(isinstance(output, Closed) for output in outputs)
    assert sum(isinstance(output, MessageReceived) for output in outputs) == 200
    regranted = grants(raw, outputs)
    # 40 messages per batch (stellar-core FLOW_CONTROL_SEND_MORE_BATCH_SIZE).
    assert [count for count, _ in regranted] == [40] * 5
    size = len(scp_message(1).to_xdr_bytes())
    assert all(grant_bytes == 40 * size for _, grant_bytes in regranted)


def test_flood_bytes_beyond_the_grant_drop_the_connection() -> None:
    settings = OverlaySettings(
        passphrase=TESTNET, flood_capacity_bytes=1000, send_more_batch_bytes=1000
    )
    raw, synod, _ = pair(settings)
    assert not any(isinstance(o, Closed) for o in synod.receive(raw.seal(transaction_of(400)), NOW))
    assert not any(isinstance(o, Closed) for o in synod.receive(raw.seal(transaction_of(400)), NOW))
    outputs = synod.receive(raw.seal(transaction_of(400)), NOW)  # 200 bytes of grant left
    event = next(output for output in outputs if isinstance(output, Closed))
    assert "capacity" in event.reason
    assert synod.ignored_messages == 2, "transactions are metered, never decoded"


def test_one_flood_message_larger_than_the_whole_grant_is_refused() -> None:
    raw, synod, _ = pair(OverlaySettings(passphrase=TESTNET))
    outputs = synod.receive(raw.seal(transaction_of(300_001)), NOW)
    assert any(isinstance(output, Closed) for output in outputs)


def test_outbound_flood_messages_wait_for_the_remotes_grant() -> None:
    raw, synod, _ = pair(OverlaySettings(passphrase=TESTNET))
    assert _written(synod.send(scp_message(1))) == b"", "no capacity granted yet"
    assert _written(synod.send(scp_message(2))) == b""
    outputs = synod.receive(raw.seal(send_more(1, 100_000)), NOW)
    (body,) = split_records(_written(outputs))
    assert raw.open(body).envelope.statement.slot_index.uint64 == 1
    outputs = synod.receive(raw.seal(send_more(5, 100_000)), NOW)
    (body,) = split_records(_written(outputs))
    assert raw.open(body).envelope.statement.slot_index.uint64 == 2
    non_flood = xdr.StellarMessage(xdr.MessageType.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(0))
    assert _written(synod.send(non_flood)) != b"", "only flood messages are metered"


def test_outbound_queue_is_bounded_in_bytes_and_keeps_the_newest() -> None:
    size = len(scp_message(1).to_xdr_bytes())
    settings = OverlaySettings(passphrase=TESTNET, max_outbound_queue_bytes=3 * size)
    raw, synod, _ = pair(settings)
    for slot in range(1, 11):
        synod.send(scp_message(slot))
    assert synod.queued_flood_bytes <= 3 * size
    assert synod.dropped_outbound == 7
    outputs = synod.receive(raw.seal(send_more(100, 1_000_000)), NOW)
    slots = [raw.open(body).envelope.statement.slot_index.uint64
             for body in split_records(_written(outputs))]
    assert slots == [8, 9, 10]


def test_grant_of_zero_bytes_and_legacy_send_more_are_refused() -> None:
    raw, synod, _ = pair(OverlaySettings(passphrase=TESTNET))
    outputs = synod.receive(raw.seal(send_more(10, 0)), NOW)
    assert any(isinstance(output, Closed) for output in outputs)
    raw, synod, _ = pair(OverlaySettings(passphrase=TESTNET))
    legacy = xdr.StellarMessage(
        xdr.MessageType.SEND_MORE, send_more_message=xdr.SendMore(xdr.Uint32(10))
    )
    outputs = synod.receive(raw.seal(legacy), NOW)
    assert any(isinstance(output, Closed) for output in outputs)
