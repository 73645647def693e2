"""Authority shard rules (FastPay paper section 3.2; the reference's authority test scenarios).

Expected balances are hand computed from the paper's rules: a vote changes no balance,
a confirmation debits the sender and credits the recipient once.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.core import (
    Call,
    CallFailed,
    Persist,
    Reply,
    RequestReceived,
    Response,
    Started,
    Step,
    TimerFired,
)
from synod.crypto import KeyPair, NodeId
from synod.fastpay.authority import (
    CROSS_SHARD_RETRY_TIMER,
    AuthorityShard,
    check_certificate,
)
from synod.fastpay.messages import (
    MAX_SUPPLY,
    REQUEST_CODEC,
    AccountInfoRequest,
    AccountInfoResponse,
    AuthoritySignature,
    CertifiedTransferOrder,
    ConfirmationOrder,
    CrossShardAck,
    CrossShardUpdate,
    ErrorKind,
    ErrorReply,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    certify,
    make_transfer_order,
    shard_of,
    vote_is_valid,
)
from synod.quorum.committee import Committee

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
COMMITTEE = Committee.equal_weights(keys.node_id for keys in AUTHORITIES)
ALICE = KeyPair.from_seed(b"a" * 32)
BOB = KeyPair.from_seed(b"b" * 32)


def shard(balances: dict[bytes, int], storage: dict[bytes, bytes] | None = None) -> AuthorityShard:
    return AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis=balances, storage=storage)


def order(
    sender: KeyPair, recipient: bytes, amount: int, sequence_number: int = 0
) -> TransferOrder:
    transfer = Transfer(sender.node_id, recipient, amount, sequence_number)
    return make_transfer_order(sender, transfer)


def ask(core: AuthorityShard, request: Any, storage: dict[bytes, bytes] | None = None) -> Any:
    """Send one request; return the reply, checking that persistence precedes it."""
    step = core.handle(RequestReceived("client", 7, request), 0)
    replies = [message for message in step.outgoing if isinstance(message, Reply)]
    assert len(replies) == 1 and replies[0].request_id == 7
    if storage is not None:
        apply_records(storage, step.persist)
    return replies[0].body


def apply_records(storage: dict[bytes, bytes], records: list[Persist]) -> None:
    for record in records:
        if record.value is None:
            storage.pop(record.key, None)
        else:
            storage[record.key] = record.value


def certified(
    sender: KeyPair, recipient: bytes, amount: int, sequence_number: int = 0
) -> CertifiedTransferOrder:
    return certify(order(sender, recipient, amount, sequence_number), AUTHORITIES[:3])


def is_error(reply: Any, kind: ErrorKind) -> bool:
    return isinstance(reply, ErrorReply) and reply.kind is kind


# ---------------------------------------------------------------- transfer orders


def test_transfer_order_with_bad_signature_is_refused_and_sets_no_lock() -> None:
    core = shard({ALICE.node_id: 5})
    good = order(ALICE, BOB.node_id, 5)
    forged = TransferOrder(good.transfer, BOB.sign(b"synod/fastpay/transfer-order", b"x"))
    assert is_error(ask(core, forged), ErrorKind.BAD_SIGNATURE)
    assert core.account(ALICE.node_id).pending is None


def test_transfer_order_with_zero_amount_is_refused() -> None:
    core = shard({ALICE.node_id: 5})
    assert is_error(ask(core, order(ALICE, BOB.node_id, 0)), ErrorKind.ZERO_AMOUNT)
    assert core.account(ALICE.node_id).pending is None


def test_transfer_order_signed_by_someone_other_than_the_sender_is_refused() -> None:
    # The reference's "unknown sender": the order names Alice but Bob signed it.
    core = shard({ALICE.node_id: 5})
    transfer = Transfer(ALICE.node_id, BOB.node_id, 5, 0)
    signature = BOB.sign(b"synod/fastpay/transfer-order", transfer.signed_bytes())
    assert is_error(ask(core, TransferOrder(transfer, signature)), ErrorKind.BAD_SIGNATURE)
    assert core.account(ALICE.node_id).pending is None


def test_transfer_order_with_a_past_sequence_number_is_refused() -> None:
    core = shard({ALICE.node_id: 5})
    assert isinstance(
        ask(core, ConfirmationOrder(certified(ALICE, BOB.node_id, 1))), AccountInfoResponse
    )
    reply = ask(core, order(ALICE, BOB.node_id, 1, sequence_number=0))
    assert is_error(reply, ErrorKind.UNEXPECTED_SEQUENCE_NUMBER)
    assert reply.expected_sequence_number == 1
    assert core.account(ALICE.node_id).pending is None


def test_transfer_order_with_a_future_sequence_number_is_refused() -> None:
    core = shard({ALICE.node_id: 5})
    reply = ask(core, order(ALICE, BOB.node_id, 1, sequence_number=3))
    assert is_error(reply, ErrorKind.UNEXPECTED_SEQUENCE_NUMBER)
    assert reply.expected_sequence_number == 0


def test_transfer_order_exceeding_the_balance_is_refused() -> None:
    core = shard({ALICE.node_id: 5})
    assert is_error(ask(core, order(ALICE, BOB.node_id, 1000)), ErrorKind.INSUFFICIENT_BALANCE)
    assert core.account(ALICE.node_id).pending is None


def test_transfer_order_from_an_unfunded_account_is_refused() -> None:
    core = shard({})
    assert is_error(ask(core, order(ALICE, BOB.node_id, 1)), ErrorKind.INSUFFICIENT_BALANCE)


def test_valid_transfer_order_gets_a_vote_persisted_before_the_reply() -> None:
    core = shard({ALICE.node_id: 5})
    step = core.handle(RequestReceived("client", 1, order(ALICE, BOB.node_id, 5)), 0)
    vote = step.outgoing[0].body
    assert isinstance(vote, SignedTransferOrder)
    assert vote.authority == AUTHORITIES[0].node_id and vote_is_valid(vote)
    assert step.persist, "the lock must be persisted in the step that sends the vote"
    assert core.account(ALICE.node_id).pending == vote
    assert core.account(ALICE.node_id).balance == 5  # a vote moves no money


def test_same_order_twice_gets_the_same_vote() -> None:
    core = shard({ALICE.node_id: 5})
    first = ask(core, order(ALICE, BOB.node_id, 5))
    assert ask(core, order(ALICE, BOB.node_id, 5)) == first


def test_different_order_for_a_locked_sequence_number_is_refused() -> None:
    core = shard({ALICE.node_id: 5})
    first = ask(core, order(ALICE, BOB.node_id, 5))
    reply = ask(core, order(ALICE, BOB.node_id, 4))
    assert is_error(reply, ErrorKind.CONFLICTING_PENDING_ORDER)
    assert reply.pending == first
    # A different recipient with the same amount is just as different.
    other = ask(core, order(ALICE, ALICE.node_id, 5))
    assert is_error(other, ErrorKind.CONFLICTING_PENDING_ORDER)


def test_order_for_another_shard_is_refused() -> None:
    owner = next(
        k
        for k in (KeyPair.from_seed(bytes([n]) * 32) for n in range(50, 90))
        if shard_of(k.node_id, 2) == 1
    )
    core = AuthorityShard(
        AUTHORITIES[0], COMMITTEE, shard=0, shard_count=2, genesis={owner.node_id: 5}
    )
    assert is_error(ask(core, order(owner, BOB.node_id, 1)), ErrorKind.WRONG_SHARD)


# ---------------------------------------------------------------- confirmation orders


def test_confirmation_debits_sender_credits_recipient_and_clears_the_lock() -> None:
    core = shard({ALICE.node_id: 5})
    ask(core, order(ALICE, BOB.node_id, 5))
    certificate = certified(ALICE, BOB.node_id, 5)
    info = ask(core, ConfirmationOrder(certificate))
    assert isinstance(info, AccountInfoResponse)
    assert (info.account, info.balance, info.next_sequence_number, info.pending) == (
        ALICE.node_id,
        0,
        1,
        None,
    )
    assert core.account(ALICE.node_id).confirmed == [certificate]
    assert core.account(BOB.node_id).balance == 5
    received = ask(core, AccountInfoRequest(BOB.node_id, received_from=0))
    assert received.received == [certificate] and received.received_count == 1


def test_replayed_confirmation_changes_nothing() -> None:
    core = shard({ALICE.node_id: 5})
    certificate = certified(ALICE, BOB.node_id, 3)
    ask(core, ConfirmationOrder(certificate))
    step = core.handle(RequestReceived("client", 2, ConfirmationOrder(certificate)), 0)
    assert step.persist == []
    assert core.account(ALICE.node_id).balance == 2 and core.account(BOB.node_id).balance == 3
    assert core.account(ALICE.node_id).next_sequence_number == 1


def test_confirmation_behind_the_account_is_a_no_op() -> None:
    # Reference: an account already at sequence number 1 ignores a certificate for 0.
    core = shard({ALICE.node_id: 5})
    ask(core, ConfirmationOrder(certified(ALICE, BOB.node_id, 1, 0)))
    other_certificate_for_zero = certified(ALICE, ALICE.node_id, 2, 0)
    info = ask(core, ConfirmationOrder(other_certificate_for_zero))
    assert isinstance(info, AccountInfoResponse) and info.balance == 4
    assert len(core.account(ALICE.node_id).confirmed) == 1


def test_confirmation_ahead_of_the_account_names_the_missing_sequence_number() -> None:
    core = shard({ALICE.node_id: 5})
    reply = ask(core, ConfirmationOrder(certified(ALICE, BOB.node_id, 1, 2)))
    assert is_error(reply, ErrorKind.MISSING_EARLIER_CONFIRMATIONS)
    assert reply.expected_sequence_number == 0
    assert core.account(ALICE.node_id).balance == 5


def test_certified_transfer_exceeding_the_local_balance_is_applied() -> None:
    # The quorum vouches for it: this authority merely missed credits.
    core = shard({ALICE.node_id: 5})
    ask(core, ConfirmationOrder(certified(ALICE, BOB.node_id, 1000)))
    assert core.account(ALICE.node_id).balance == -995
    assert core.account(ALICE.node_id).next_sequence_number == 1
    assert core.account(BOB.node_id).balance == 1000


def test_receiver_at_the_supply_bound_is_credited_in_full() -> None:
    core = shard({ALICE.node_id: 1, BOB.node_id: MAX_SUPPLY - 1})
    ask(core, ConfirmationOrder(certified(ALICE, BOB.node_id, 1)))
    assert core.account(ALICE.node_id).balance == 0
    assert core.account(BOB.node_id).balance == MAX_SUPPLY


def test_transfer_to_oneself_leaves_the_balance_unchanged() -> None:
    core = shard({ALICE.node_id: 1})
    ask(core, ConfirmationOrder(certified(ALICE, ALICE.node_id, 10)))
    account = core.account(ALICE.node_id)
    assert (account.balance, account.next_sequence_number, len(account.confirmed)) == (1, 1, 1)


# ---------------------------------------------------------------- forged certificates


def forged_certificates() -> dict[str, CertifiedTransferOrder]:
    good = certified(ALICE, BOB.node_id, 5)
    outsider = KeyPair.from_seed(b"o" * 32)
    first = good.signatures[0]
    other = certified(ALICE, BOB.node_id, 4)
    return {
        "duplicate signer": CertifiedTransferOrder(good.order, [first, first, good.signatures[1]]),
        "non-member": certify(good.order, [*AUTHORITIES[:2], outsider]),
        "too little weight": CertifiedTransferOrder(good.order, good.signatures[:2]),
        "votes for another transfer": CertifiedTransferOrder(good.order, other.signatures),
        # Valid votes over the transfer, but an order its sender never signed.
        "unsigned order": CertifiedTransferOrder(
            TransferOrder(good.order.transfer, bytes(range(64))), good.signatures
        ),
        "garbage signature": CertifiedTransferOrder(
            good.order,
            [*good.signatures[:2], AuthoritySignature(AUTHORITIES[2].node_id, b"\0" * 64)],
        ),
    }


@pytest.mark.parametrize("name", sorted(forged_certificates()))
def test_forged_certificate_is_refused_and_changes_nothing(name: str) -> None:
    certificate = forged_certificates()[name]
    assert check_certificate(certificate, COMMITTEE) is not None
    core = shard({ALICE.node_id: 5})
    step = core.handle(RequestReceived("c", 1, ConfirmationOrder(certificate)), 0)
    assert is_error(step.outgoing[0].body, ErrorKind.BAD_CERTIFICATE)
    assert step.persist == []
    assert core.account(ALICE.node_id).balance == 5 and core.account(BOB.node_id).balance == 0


def test_weighted_certificate_needs_quorum_weight_not_signer_count() -> None:
    heavy = {AUTHORITIES[0].node_id: 5, **{k.node_id: 1 for k in AUTHORITIES[1:]}}
    committee = Committee(heavy)  # total 8, quorum threshold 6
    transfer_order = order(ALICE, BOB.node_id, 1)
    assert check_certificate(certify(transfer_order, AUTHORITIES[1:]), committee) is not None
    assert check_certificate(certify(transfer_order, AUTHORITIES[:2]), committee) is None


# ---------------------------------------------------------------- cross-shard


def two_shard_accounts() -> tuple[KeyPair, KeyPair]:
    candidates = [KeyPair.from_seed(bytes([n]) * 32) for n in range(100, 140)]
    sender = next(k for k in candidates if shard_of(k.node_id, 2) == 0)
    recipient = next(k for k in candidates if shard_of(k.node_id, 2) == 1)
    return sender, recipient


def test_cross_shard_confirmation_credits_the_recipient_shard_once() -> None:
    sender, recipient = two_shard_accounts()
    genesis = {sender.node_id: 10}
    storages: list[dict[bytes, bytes]] = [{}, {}]
    shards = [
        AuthorityShard(AUTHORITIES[0], COMMITTEE, shard=n, shard_count=2, genesis=genesis)
        for n in range(2)
    ]
    certificate = certified(sender, recipient.node_id, 4)
    step = shards[0].handle(RequestReceived("c", 1, ConfirmationOrder(certificate)), 0)
    apply_records(storages[0], step.persist)
    calls = [m for m in step.outgoing if isinstance(m, Call)]
    assert len(calls) == 1 and isinstance(calls[0].body, CrossShardUpdate)
    assert calls[0].to == AUTHORITIES[0].node_id
    assert shards[1].account(recipient.node_id).balance == 0  # not yet
    assert shards[0].outbox

    ack = ask(shards[1], calls[0].body, storages[1])
    assert ack == CrossShardAck(sender.node_id, 0)
    assert shards[1].account(recipient.node_id).balance == 4
    # A duplicate delivery of the update credits nothing more.
    ask(shards[1], REQUEST_CODEC.encode(calls[0].body), storages[1])
    assert shards[1].account(recipient.node_id).balance == 4

    done = shards[0].handle(Response(AUTHORITIES[0].node_id, calls[0].request_id, ack), 0)
    apply_records(storages[0], done.persist)
    assert not shards[0].outbox
    rebuilt = AuthorityShard(
        AUTHORITIES[0], COMMITTEE, shard=0, shard_count=2, genesis=genesis, storage=storages[0]
    )
    assert rebuilt.handle(Started(), 0).outgoing == []


def test_cross_shard_update_is_resent_after_a_crash_and_after_a_failed_call() -> None:
    sender, recipient = two_shard_accounts()
    genesis = {sender.node_id: 10}
    storage: dict[bytes, bytes] = {}
    source = AuthorityShard(AUTHORITIES[0], COMMITTEE, shard=0, shard_count=2, genesis=genesis)
    step = source.handle(
        RequestReceived("c", 1, ConfirmationOrder(certified(sender, recipient.node_id, 4))), 0
    )
    apply_records(storage, step.persist)
    # Crash before the update reached the other shard: the outbox survives.
    rebuilt = AuthorityShard(
        AUTHORITIES[0], COMMITTEE, shard=0, shard_count=2, genesis=genesis, storage=storage
    )
    resent = [m for m in rebuilt.handle(Started(), 0).outgoing if isinstance(m, Call)]
    assert len(resent) == 1 and isinstance(resent[0].body, CrossShardUpdate)
    failed = rebuilt.handle(CallFailed(AUTHORITIES[0].node_id, resent[0].request_id, "down"), 0)
    assert failed.timers and failed.timers[0].name == CROSS_SHARD_RETRY_TIMER
    again = rebuilt.handle(TimerFired(CROSS_SHARD_RETRY_TIMER), 0)
    assert [type(m.body) for m in again.outgoing] == [CrossShardUpdate]


def test_cross_shard_update_signed_by_another_authority_is_refused() -> None:
    sender, recipient = two_shard_accounts()
    certificate = certified(sender, recipient.node_id, 4)
    update = CrossShardUpdate(
        certificate,
        AUTHORITIES[1].node_id,
        AUTHORITIES[1].sign(b"synod/fastpay/cross-shard-update", b"whatever"),
    )
    target = AuthorityShard(AUTHORITIES[0], COMMITTEE, shard=1, shard_count=2)
    assert is_error(ask(target, update), ErrorKind.BAD_SIGNATURE)
    assert target.account(recipient.node_id).balance == 0


# ---------------------------------------------------------------- durability


def test_lock_survives_a_restart() -> None:
    storage: dict[bytes, bytes] = {}
    core = shard({ALICE.node_id: 5}, storage)
    vote = ask(core, order(ALICE, BOB.node_id, 5), storage)
    restarted = shard({ALICE.node_id: 5}, dict(storage))
    assert ask(restarted, order(ALICE, BOB.node_id, 5)) == vote
    assert is_error(
        ask(restarted, order(ALICE, BOB.node_id, 2)), ErrorKind.CONFLICTING_PENDING_ORDER
    )


def test_confirmed_state_survives_a_restart() -> None:
    storage: dict[bytes, bytes] = {}
    core = shard({ALICE.node_id: 5}, storage)
    first = certified(ALICE, BOB.node_id, 2, 0)
    second = certified(ALICE, BOB.node_id, 1, 1)
    ask(core, ConfirmationOrder(first), storage)
    ask(core, ConfirmationOrder(second), storage)
    restarted = shard({ALICE.node_id: 5}, dict(storage))
    alice, bob = restarted.account(ALICE.node_id), restarted.account(BOB.node_id)
    assert (alice.balance, alice.next_sequence_number, alice.confirmed) == (2, 2, [first, second])
    assert (bob.balance, bob.received) == (3, [first, second])
    # Replays after the restart still credit nothing.
    ask(restarted, ConfirmationOrder(first))
    assert restarted.account(BOB.node_id).balance == 3


# ---------------------------------------------------------------- account information


def test_account_info_returns_a_sent_certificate_or_not_found() -> None:
    core = shard({ALICE.node_id: 5})
    certificate = certified(ALICE, BOB.node_id, 2)
    ask(core, ConfirmationOrder(certificate))
    info = ask(core, AccountInfoRequest(ALICE.node_id, sequence_number=0))
    assert info.requested_certificate == certificate
    assert is_error(
        ask(core, AccountInfoRequest(ALICE.node_id, sequence_number=1)),
        ErrorKind.CERTIFICATE_NOT_FOUND,
    )


# ---------------------------------------------------------------- peer input never raises


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_requests_get_an_error_reply_and_change_nothing(data: bytes) -> None:
    core = shard({ALICE.node_id: 5})
    step = core.handle(RequestReceived("c", 1, data), 0)
    assert step.persist == [] and len(step.outgoing) == 1
    assert isinstance(step.outgoing[0].body, ErrorReply)


def test_a_non_request_object_gets_an_error_reply() -> None:
    core = shard({})
    assert is_error(ask(core, 42), ErrorKind.MALFORMED)
    assert core.handle(Response(NodeId(b""), 99, b"junk"), 0) == Step()
