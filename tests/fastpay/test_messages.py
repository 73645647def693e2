"""FastPay wire format: round trips, bounds on peer-filled fields, domain separation and
shard routing."""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.crypto import KeyPair
from synod.fastpay.messages import (
    MAX_AMOUNT,
    MAX_COMMITTEE_SIZE,
    MAX_RECEIVED_PER_RESPONSE,
    MAX_USER_DATA_BYTES,
    MESSAGE_CODEC,
    REPLY_CODEC,
    REQUEST_CODEC,
    TRANSFER_ORDER_DOMAIN,
    VOTE_DOMAIN,
    AccountInfoRequest,
    AccountInfoResponse,
    AuthoritySignature,
    CertifiedTransferOrder,
    ConfirmationOrder,
    CrossShardAck,
    CrossShardUpdate,
    ErrorKind,
    ErrorReply,
    Transfer,
    TransferOrder,
    certify,
    encode_balance,
    make_transfer_order,
    make_vote,
    request_shard,
    shard_of,
    transfer_order_is_valid,
    vote_is_valid,
)
from synod.wire import DecodeError

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
ALICE = KeyPair.from_seed(b"a" * 32)
BOB = KeyPair.from_seed(b"b" * 32)


def sample_order(amount: int = 5, user_data: bytes | None = b"memo") -> TransferOrder:
    return make_transfer_order(ALICE, Transfer(ALICE.node_id, BOB.node_id, amount, 3, user_data))


def test_every_request_and_reply_round_trips() -> None:
    order = sample_order()
    certificate = certify(order, AUTHORITIES[:3])
    update = CrossShardUpdate(certificate, AUTHORITIES[0].node_id, b"\0" * 64)
    for request in (
        order,
        ConfirmationOrder(certificate),
        AccountInfoRequest(ALICE.node_id, 0, 2),
        update,
    ):
        assert REQUEST_CODEC.decode(REQUEST_CODEC.encode(request)) == request
    vote = make_vote(AUTHORITIES[0], order)
    info = AccountInfoResponse(
            ALICE.node_id, encode_balance(-7), 4, vote, certificate, [certificate], 1
        )
    error = ErrorReply(ErrorKind.MISSING_EARLIER_CONFIRMATIONS, "detail", 2, vote)
    for reply in (vote, info, CrossShardAck(ALICE.node_id, 3), error):
        assert REPLY_CODEC.decode(REPLY_CODEC.encode(reply)) == reply


def encoded_transfer(**changes: object) -> bytes:
    fields = {
        "sender": ALICE.node_id,
        "recipient": BOB.node_id,
        "amount": 1,
        "sequence_number": 0,
        "user_data": None,
    }
    fields.update(changes)
    transfer = ["Transfer", *fields.values()]
    return msgspec.msgpack.encode(["TransferOrder", transfer, b"\0" * 64])


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": -1},
        {"amount": MAX_AMOUNT + 1},
        {"sequence_number": -1},
        {"user_data": b"x" * (MAX_USER_DATA_BYTES + 1)},
        {"sender": b"short"},
    ],
)
def test_out_of_bounds_fields_are_refused_at_decoding(changes: dict[str, object]) -> None:
    assert isinstance(REQUEST_CODEC.decode(encoded_transfer()), TransferOrder)
    with pytest.raises(DecodeError):
        REQUEST_CODEC.decode(encoded_transfer(**changes))


def test_oversized_signature_lists_and_received_lists_are_refused() -> None:
    order = sample_order()
    signature = AuthoritySignature(AUTHORITIES[0].node_id, b"\0" * 64)
    too_many = CertifiedTransferOrder(order, [signature] * (MAX_COMMITTEE_SIZE + 1))
    with pytest.raises(DecodeError):
        REQUEST_CODEC.decode(REQUEST_CODEC.encode(ConfirmationOrder(too_many)))
    certificate = certify(order, AUTHORITIES[:3])
    info = AccountInfoResponse(
        ALICE.node_id,
        encode_balance(0),
        0,
        received=[certificate] * (MAX_RECEIVED_PER_RESPONSE + 1),
    )
    with pytest.raises(DecodeError):
        REPLY_CODEC.decode(REPLY_CODEC.encode(info))


def test_a_vote_signature_is_not_a_transfer_order_signature() -> None:
    order = sample_order()
    assert transfer_order_is_valid(order)
    signed = order.transfer.signed_bytes()
    as_vote = TransferOrder(order.transfer, ALICE.sign(VOTE_DOMAIN, signed))
    assert not transfer_order_is_valid(as_vote)
    vote = make_vote(AUTHORITIES[0], order)
    assert vote_is_valid(vote)
    forged = type(vote)(order, vote.authority, AUTHORITIES[0].sign(TRANSFER_ORDER_DOMAIN, signed))
    assert not vote_is_valid(forged)


def test_signatures_cover_every_transfer_field() -> None:
    order = sample_order()
    for changed in (
        Transfer(ALICE.node_id, ALICE.node_id, 5, 3, b"memo"),
        Transfer(ALICE.node_id, BOB.node_id, 6, 3, b"memo"),
        Transfer(ALICE.node_id, BOB.node_id, 5, 4, b"memo"),
        Transfer(ALICE.node_id, BOB.node_id, 5, 3, b"meme"),
        Transfer(ALICE.node_id, BOB.node_id, 5, 3, None),
    ):
        assert not transfer_order_is_valid(TransferOrder(changed, order.signature))


def test_only_the_sender_can_make_a_transfer_order() -> None:
    with pytest.raises(ValueError, match="sender"):
        make_transfer_order(BOB, Transfer(ALICE.node_id, BOB.node_id, 1, 0))


def test_shards_are_stable_and_all_used() -> None:
    accounts = [KeyPair.from_seed(bytes([n]) * 32).node_id for n in range(64)]
    counts = Counter(shard_of(account, 4) for account in accounts)
    assert set(counts) == {0, 1, 2, 3}
    # The documented rule, computed here independently: persisted shard files depend on
    # it never changing.
    for account in accounts:
        digest = hashlib.blake2b(account, digest_size=32, person=b"fastpay-shard").digest()
        assert shard_of(account, 4) == int.from_bytes(digest[:8], "big") % 4
    assert all(shard_of(a, 1) == 0 for a in accounts)
    with pytest.raises(ValueError, match="shard count"):
        shard_of(accounts[0], 0)


def test_requests_route_to_the_shard_of_the_account_they_change() -> None:
    order = sample_order()
    certificate = certify(order, AUTHORITIES[:3])
    for count in (2, 3, 7):
        sender_shard, recipient_shard = shard_of(ALICE.node_id, count), shard_of(BOB.node_id, count)
        assert request_shard(order, count) == sender_shard
        assert request_shard(ConfirmationOrder(certificate), count) == sender_shard
        assert request_shard(AccountInfoRequest(BOB.node_id), count) == recipient_shard
        update = CrossShardUpdate(certificate, AUTHORITIES[0].node_id, b"\0" * 64)
        assert request_shard(update, count) == recipient_shard


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_decoding_garbage_raises_only_decode_error(data: bytes) -> None:
    for codec in (REQUEST_CODEC, REPLY_CODEC):
        with contextlib.suppress(DecodeError):
            codec.decode(data)


def test_the_message_codec_decodes_requests_and_replies() -> None:
    order = sample_order()
    for message in (order, make_vote(AUTHORITIES[0], order), CrossShardAck(ALICE.node_id, 1)):
        assert MESSAGE_CODEC.decode(MESSAGE_CODEC.encode(message)) == message


@pytest.mark.parametrize("balance", [-(2**127), -(2**63) - 1, -1, 0, 2**63, 2**127 - 1])
def test_balances_are_128_bit_on_the_wire(balance: int) -> None:
    # Beyond MessagePack's 64-bit integers: what a lagging authority may have to report.
    info = AccountInfoResponse(ALICE.node_id, encode_balance(balance), 0)
    decoded = REPLY_CODEC.decode(REPLY_CODEC.encode(info))
    assert isinstance(decoded, AccountInfoResponse) and decoded.balance == balance


def test_a_balance_outside_128_bits_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="outside"):
        encode_balance(2**127)
