"""Client behaviour (FastPay paper sections 3.2 and 4; the reference's client test scenarios).

Four authorities of weight 1: quorum threshold 3, validity threshold 2.  A
"strong majority" value is the highest one that a quorum (3 of 4) vouches for; expected
values below are computed by hand from the per-authority balances.
"""

from __future__ import annotations

from typing import Any

import pytest

from synod.crypto import KeyPair, NodeId
from synod.fastpay.client import (
    AccountQueried,
    Client,
    InsufficientFunds,
    PendingOrder,
    ReceiveFailed,
    TransferCertified,
    TransferConfirmed,
    TransferFailed,
    TransferReceived,
)
from synod.fastpay.localnet import LocalNetwork
from synod.fastpay.messages import (
    REPLY_CODEC,
    AccountInfoRequest,
    ErrorKind,
    SignedTransferOrder,
    Transfer,
    make_transfer_order,
    make_vote,
)

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
NAMES = sorted(keys.node_id for keys in AUTHORITIES)
KEYS_BY_NAME = {keys.node_id: keys for keys in AUTHORITIES}
ALICE = KeyPair.from_seed(b"a" * 32)
BOB = KeyPair.from_seed(b"b" * 32)
CAROL = KeyPair.from_seed(b"c" * 32)


def network(balances: dict[bytes, list[int]], shard_count: int = 1) -> LocalNetwork:
    """Authorities in `NAMES` order hold `balances[account][i]`."""
    per_authority = {
        name: {account: values[index] for account, values in balances.items()}
        for index, name in enumerate(NAMES)
    }
    return LocalNetwork(AUTHORITIES, shard_count=shard_count, authority_genesis=per_authority)


def run(net: LocalNetwork, client: Client, step: Any) -> list[Any]:
    """Apply a command's step, run the network to rest, return the client's new events."""
    before = len(net.client_events(client.node_id))
    net.submit(client.node_id, step)
    net.run()
    return net.client_events(client.node_id)[before:]


def strong_majority_balance(
    net: LocalNetwork, client: Client, account: bytes | None = None
) -> int | None:
    events = run(net, client, client.query(account))
    queried = [event for event in events if isinstance(event, AccountQueried)]
    assert len(queried) == 1
    return queried[0].balance


def strong_majority_sequence_number(net: LocalNetwork, client: Client) -> int | None:
    events = run(net, client, client.query())
    return next(e for e in events if isinstance(e, AccountQueried)).next_sequence_number


def test_strong_majority_balance_is_what_a_quorum_vouches_for() -> None:
    for balances, expected in (([3, 4, 4, 4], 4), ([0, 3, 4, 4], 3), ([0, 0, 4, 4], 0)):
        net = network({ALICE.node_id: balances})
        assert strong_majority_balance(net, net.add_client(ALICE)) == expected


def test_initiating_a_valid_transfer() -> None:
    net = network({ALICE.node_id: [2, 4, 4, 4]})
    sender = net.add_client(ALICE, balance=4)
    events = run(net, sender, sender.transfer(BOB.node_id, 3, b"hello" * 6))
    certified = [e for e in events if isinstance(e, TransferCertified)]
    assert len(certified) == 1 and any(isinstance(e, TransferConfirmed) for e in events)
    assert sender.next_sequence_number == 1 and sender.pending is None
    assert sender.balance == 1
    # [2,4,4,4] - 3 = [-1,1,1,1]: a quorum vouches for 1.
    assert strong_majority_balance(net, sender) == 1
    # The certificate can be fetched back from the authorities.
    before = len(net.events)
    net.submit(sender.node_id, sender.query())
    net.run()
    assert len(net.events) > before
    for name in NAMES:
        shard = net.authority_shards(name)[0]
        assert shard.account(ALICE.node_id).confirmed == [certified[0].certificate]


def test_valid_transfer_despite_an_authority_with_a_wrong_key() -> None:
    net = network({ALICE.node_id: [4, 4, 4, 4]})
    impostor = KeyPair.from_seed(b"i" * 32)
    bad = NAMES[0]

    def wrong_key(shard: Any, request: Any, reply: Any) -> Any:
        if isinstance(reply, SignedTransferOrder):
            return SignedTransferOrder(reply.order, bad, make_vote(impostor, reply.order).signature)
        return reply

    net.reply_filters[bad] = wrong_key
    sender = net.add_client(ALICE)
    events = run(net, sender, sender.transfer(BOB.node_id, 3))
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert bad not in {vote.authority for vote in certificate.signatures}
    assert sender.next_sequence_number == 1 and sender.pending is None
    assert strong_majority_balance(net, sender) == 1


def test_transfer_beyond_the_known_balance_is_refused_locally_and_blocks_nothing() -> None:
    net = network({ALICE.node_id: [2, 2, 4, 4]})
    sender = net.add_client(ALICE, balance=2)
    with pytest.raises(InsufficientFunds):
        sender.transfer(BOB.node_id, 3)
    assert sender.next_sequence_number == 0 and sender.pending is None
    assert strong_majority_balance(net, sender) == 2
    run(net, sender, sender.transfer(BOB.node_id, 2))  # the account still works
    assert sender.next_sequence_number == 1


def test_client_stops_once_a_validity_weight_agrees_on_a_refusal() -> None:
    # The first two authorities (weight 2 = validity threshold) cannot fund 3.
    net = network({ALICE.node_id: [2, 2, 4, 4]})
    sender = net.add_client(ALICE)
    step = sender.transfer(BOB.node_id, 3, check_balance=False)
    net.submit(sender.node_id, step)
    # FIFO delivery: 4 orders reach the authorities, then their replies come back in
    # committee order; the two refusals come first.
    for _ in range(6):
        net.deliver_one()
    events = net.client_events(sender.node_id)
    assert len(events) == 1 and isinstance(events[0], TransferFailed)
    assert events[0].error is not None and events[0].error.kind is ErrorKind.INSUFFICIENT_BALANCE
    net.run()  # the two late votes change nothing
    assert not any(isinstance(e, TransferCertified) for e in net.client_events(sender.node_id))
    assert sender.pending is not None and sender.next_sequence_number == 0
    with pytest.raises(PendingOrder):
        sender.transfer(BOB.node_id, 1)


def test_bidirectional_transfers() -> None:
    net = network({ALICE.node_id: [2, 3, 4, 4]})
    alice, bob = net.add_client(ALICE), net.add_client(BOB)
    alice.balance = strong_majority_balance(net, alice) or 0
    assert alice.balance == 3
    events = run(net, alice, alice.transfer(BOB.node_id, 3))
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert alice.next_sequence_number == 1 and alice.pending is None and alice.balance == 0
    # [2,3,4,4] - 3 = [-1,0,1,1]
    assert strong_majority_balance(net, alice) == 0
    assert strong_majority_sequence_number(net, alice) == 1
    # The sender already confirmed: Bob's balance is 3 at the authorities, 0 locally.
    assert strong_majority_balance(net, bob) == 3 and bob.balance == 0
    events = run(net, bob, bob.receive(certificate))
    assert [type(e) for e in events] == [TransferReceived]
    assert bob.balance == 3 and strong_majority_balance(net, bob) == 3
    # Send some back.
    run(net, bob, bob.transfer(ALICE.node_id, 1))
    assert bob.next_sequence_number == 1 and bob.pending is None
    assert strong_majority_balance(net, bob) == 2
    assert strong_majority_sequence_number(net, bob) == 1
    assert strong_majority_balance(net, alice) == 1


def test_receiving_an_unconfirmed_transfer() -> None:
    net = network({ALICE.node_id: [2, 3, 4, 4]})
    alice, bob = net.add_client(ALICE, balance=0), net.add_client(BOB)
    events = run(net, alice, alice.transfer(BOB.node_id, 2, check_balance=False, confirm=False))
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert not any(isinstance(e, TransferConfirmed) for e in events)
    assert alice.balance == -2 and alice.next_sequence_number == 1 and alice.pending is None
    # Not confirmed anywhere: the authorities still see the old state.
    assert strong_majority_balance(net, alice) == 3
    assert strong_majority_sequence_number(net, alice) == 0
    # The recipient confirms in the sender's place.
    run(net, bob, bob.receive(certificate))
    assert strong_majority_balance(net, bob) == 2 and bob.balance == 2


def test_receiving_an_unconfirmed_transfer_with_lagging_sender_balances() -> None:
    net = network({ALICE.node_id: [2, 3, 4, 4]})
    alice, bob, carol = net.add_client(ALICE, 0), net.add_client(BOB, 0), net.add_client(CAROL)
    run(net, alice, alice.transfer(BOB.node_id, 1, check_balance=False, confirm=False))
    # The second order finds every authority one confirmation behind: the client pushes
    # certificate 0 to them first.
    run(net, alice, alice.transfer(BOB.node_id, 1, check_balance=False, confirm=False))
    run(net, alice, alice.resume())  # confirm the last certificate at a quorum
    events = run(net, bob, bob.transfer(CAROL.node_id, 2, check_balance=False, confirm=False))
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert alice.balance == -2 and alice.next_sequence_number == 2 and alice.pending is None
    assert bob.balance == -2 and bob.next_sequence_number == 1 and bob.pending is None
    assert strong_majority_balance(net, bob) == 2
    assert strong_majority_sequence_number(net, bob) == 0
    run(net, carol, carol.receive(certificate))
    assert strong_majority_balance(net, carol) == 2


def run_with_down(net: LocalNetwork, client: Client, step: Any, down: set[NodeId]) -> list[Any]:
    """Like `run`, but every call to an authority in `down` is lost (it times out)."""
    before = len(net.client_events(client.node_id))
    net.submit(client.node_id, step)
    while net.pending():
        delivery = net._queue[0]
        net.deliver_one(lose=delivery.kind == "call" and delivery.server in down)
    return net.client_events(client.node_id)[before:]


def test_lagging_authority_is_brought_up_to_date_before_voting() -> None:
    net = network({ALICE.node_id: [10, 10, 10, 10]})
    alice = net.add_client(ALICE)
    lagging, other = NAMES[3], NAMES[0]
    run_with_down(net, alice, alice.transfer(BOB.node_id, 1), {lagging})
    run_with_down(net, alice, alice.transfer(BOB.node_id, 2), {lagging})
    assert net.authority_shards(lagging)[0].account(ALICE.node_id).next_sequence_number == 0
    # Now another authority is down: the quorum needs the lagging one, which refuses the
    # order for sequence number 2 until it has been given certificates 0 and 1.
    events = run_with_down(net, alice, alice.transfer(BOB.node_id, 3), {other})
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert lagging in {vote.authority for vote in certificate.signatures}
    caught_up = net.authority_shards(lagging)[0].account(ALICE.node_id)
    assert caught_up.next_sequence_number == 3 and caught_up.balance == 4
    assert net.balance_at(lagging, BOB.node_id) == 6


def test_receiver_fetches_the_certificates_a_lagging_authority_misses() -> None:
    net = network({ALICE.node_id: [10, 10, 10, 10]})
    alice, bob = net.add_client(ALICE), net.add_client(BOB)
    lagging, other = NAMES[0], NAMES[3]
    run_with_down(net, alice, alice.transfer(CAROL.node_id, 1), {lagging})
    run_with_down(net, alice, alice.transfer(BOB.node_id, 2, confirm=False), {lagging})
    certificate = alice.sent[1]
    # Bob holds only the certificate paying him; the lagging authority misses Alice's
    # first one, which Bob fetches from another authority and pushes first.
    events = run_with_down(net, bob, bob.receive(certificate), {other})
    assert [type(e) for e in events] == [TransferReceived]
    account = net.authority_shards(lagging)[0].account(ALICE.node_id)
    assert account.next_sequence_number == 2 and account.balance == 7
    assert net.balance_at(lagging, BOB.node_id) == 2


def test_client_never_signs_two_orders_for_one_sequence_number_even_after_a_crash() -> None:
    net = network({ALICE.node_id: [5, 5, 5, 5]})
    alice = net.add_client(ALICE)
    net.submit(alice.node_id, alice.transfer(BOB.node_id, 4))
    for _ in range(3):  # some authorities have voted; the client crashes
        net.deliver_one()
    pending = alice.pending
    restarted = net.crash_client(ALICE.node_id)
    assert restarted.pending == pending
    with pytest.raises(PendingOrder):
        restarted.transfer(BOB.node_id, 1)
    events = run(net, restarted, restarted.resume())
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert pending is not None and certificate.order == pending
    assert any(isinstance(e, TransferConfirmed) for e in events)
    assert restarted.balance == 1 and restarted.next_sequence_number == 1


def test_client_state_survives_a_restart() -> None:
    net = network({ALICE.node_id: [5, 5, 5, 5]})
    alice, bob = net.add_client(ALICE), net.add_client(BOB)
    run(net, alice, alice.transfer(BOB.node_id, 4))
    run(net, bob, bob.receive(alice.sent[0]))
    alice_again, bob_again = net.crash_client(ALICE.node_id), net.crash_client(BOB.node_id)
    assert (alice_again.balance, alice_again.next_sequence_number, alice_again.sent) == (
        1,
        1,
        alice.sent,
    )
    assert bob_again.balance == 4 and list(bob_again.received.values()) == [alice.sent[0]]
    # Receiving the same certificate again does not count it twice.
    run(net, bob_again, bob_again.receive(alice.sent[0]))
    assert bob_again.balance == 4


def test_cross_shard_transfers_reach_the_recipient_shard() -> None:
    net = network({ALICE.node_id: [5, 5, 5, 5]}, shard_count=4)
    alice, bob = net.add_client(ALICE), net.add_client(BOB)
    run(net, alice, alice.transfer(BOB.node_id, 4))
    assert all(net.balance_at(name, BOB.node_id) == 4 for name in NAMES)
    assert all(not shard.outbox for shard in net.shards.values())
    assert strong_majority_balance(net, bob) == 4


# ---------------------------------------------------------------- Byzantine authorities


def test_transfer_succeeds_with_one_byzantine_authority_sending_garbage() -> None:
    for behaviour in ("garbage", "other-order", "stale-error", "wrong-authority"):
        net = network({ALICE.node_id: [5, 5, 5, 5]})
        net.reply_filters[NAMES[1]] = byzantine(behaviour)
        alice = net.add_client(ALICE)
        events = run(net, alice, alice.transfer(BOB.node_id, 4))
        certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
        assert NAMES[1] not in {vote.authority for vote in certificate.signatures}, behaviour
        assert any(isinstance(e, TransferConfirmed) for e in events), behaviour


def byzantine(behaviour: str) -> Any:
    liar = KEYS_BY_NAME[NAMES[1]]

    def reply(shard: Any, request: Any, honest: Any) -> Any:
        if behaviour == "garbage":
            return b"\x93\x01\x02"
        if behaviour == "other-order" and isinstance(honest, SignedTransferOrder):
            transfer = honest.order.transfer
            other = Transfer(transfer.sender, transfer.sender, 1, transfer.sequence_number)
            return make_vote(liar, make_transfer_order(ALICE, other))
        if behaviour == "stale-error":
            return REPLY_CODEC.encode(
                __import__("synod.fastpay.messages", fromlist=["ErrorReply"]).ErrorReply(
                    kind=ErrorKind.UNEXPECTED_SEQUENCE_NUMBER, expected_sequence_number=0
                )
            )
        if behaviour == "wrong-authority" and isinstance(honest, SignedTransferOrder):
            other_keys = KEYS_BY_NAME[NAMES[2]]
            return make_vote(other_keys, honest.order)
        return honest

    return reply


def test_two_byzantine_authorities_refusing_make_the_transfer_fail_not_hang() -> None:
    net = network({ALICE.node_id: [5, 5, 5, 5]})
    for name in NAMES[:2]:
        net.reply_filters[name] = lambda shard, request, honest: b"garbage"
    alice = net.add_client(ALICE)
    events = run(net, alice, alice.transfer(BOB.node_id, 4))
    assert [type(e) for e in events] == [TransferFailed]
    assert alice.pending is not None and not alice.busy


def test_receive_of_a_certificate_paying_someone_else_is_refused() -> None:
    net = network({ALICE.node_id: [5, 5, 5, 5]})
    alice, bob = net.add_client(ALICE), net.add_client(BOB)
    run(net, alice, alice.transfer(CAROL.node_id, 4))
    with pytest.raises(Exception, match="another account"):
        bob.receive(alice.sent[0])
    assert not bob.busy


def test_receive_fails_cleanly_when_no_quorum_answers() -> None:
    net = network({ALICE.node_id: [5, 5, 5, 5]})
    alice, bob = net.add_client(ALICE), net.add_client(BOB)
    run(net, alice, alice.transfer(BOB.node_id, 4, confirm=False))
    net.submit(bob.node_id, bob.receive(alice.sent[0]))
    while net.pending():
        net.deliver_one(lose=True)
    events = net.client_events(bob.node_id)
    assert [type(e) for e in events] == [ReceiveFailed] and bob.balance == 0


def test_query_of_another_account() -> None:
    net = network({ALICE.node_id: [1, 2, 3, 4]})
    bob = net.add_client(BOB)
    # 4,3,2 reach the quorum: 2.
    assert strong_majority_balance(net, bob, ALICE.node_id) == 2
    net.submit(bob.node_id, bob.query(ALICE.node_id))
    net.run()
    assert isinstance(net.client_events(bob.node_id)[-1], AccountQueried)
    assert AccountInfoRequest(NodeId(ALICE.node_id)).account == ALICE.node_id


def test_weighted_committee_counts_weight_not_heads() -> None:
    # Weights 3,1,1,1: total 6, quorum threshold 5, validity threshold 3.
    heavy = NAMES[0]
    weights = {name: (3 if name == heavy else 1) for name in NAMES}
    net = LocalNetwork(AUTHORITIES, genesis={ALICE.node_id: 5}, weights=weights)
    alice = net.add_client(ALICE)
    # Without the heavy authority, the three others weigh 3 < 5: no certificate.
    net.reply_filters[heavy] = lambda shard, request, honest: b"garbage"
    events = run(net, alice, alice.transfer(BOB.node_id, 1))
    assert [type(e) for e in events] == [TransferFailed]
    # With it, the heavy authority and two others (weight 5) certify.
    del net.reply_filters[heavy]
    net.reply_filters[NAMES[3]] = lambda shard, request, honest: b"garbage"
    events = run(net, alice, alice.resume())
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert heavy in {vote.authority for vote in certificate.signatures}


def test_weighted_committee_stops_early_on_a_heavy_refusal() -> None:
    # The heavy authority alone reaches the validity threshold (3 of 6).
    heavy = NAMES[0]
    weights = {name: (3 if name == heavy else 1) for name in NAMES}
    per_authority = {heavy: {ALICE.node_id: 0}}
    net = LocalNetwork(
        AUTHORITIES, genesis={ALICE.node_id: 5}, authority_genesis=per_authority, weights=weights
    )
    alice = net.add_client(ALICE, balance=5)
    net.submit(alice.node_id, alice.transfer(BOB.node_id, 1))
    for _ in range(5):  # four orders in, then the heavy authority's refusal comes back first
        net.deliver_one()
    events = net.client_events(alice.node_id)
    assert [type(e) for e in events] == [TransferFailed]
    assert events[0].error is not None and events[0].error.kind is ErrorKind.INSUFFICIENT_BALANCE
