"""Client behaviour (FastPay paper sections 3.2 and 4; the reference's client test scenarios).

Four authorities of weight 1: quorum threshold 3, validity threshold 2.  A
"strong majority" value is the highest one that a quorum (3 of 4) vouches for; expected
values below are computed by hand from the per-authority balances.

The cores run in the simulator's perfect world (`synod.sim`): each message takes 1 ms,
so messages arrive in the order they were sent, and a call to a silenced authority fails
after the call timeout.
"""

from __future__ import annotations

from typing import Any

import pytest

from synod.core import Step
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
from synod.fastpay.messages import (
    AccountInfoRequest,
    ErrorKind,
    ErrorReply,
    SignedTransferOrder,
    Transfer,
    make_transfer_order,
    make_vote,
)
from synod.quorum.committee import Committee
from synod.sim.scenarios.fastpay import (
    ReplyRewrite,
    ScriptedAuthority,
    account_at,
    add_authorities,
    add_client,
    authority_shards,
)
from synod.sim.world import RawBytes, World

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
NAMES = sorted(keys.node_id for keys in AUTHORITIES)
KEYS_BY_NAME = {keys.node_id: keys for keys in AUTHORITIES}
ALICE = KeyPair.from_seed(b"a" * 32)
BOB = KeyPair.from_seed(b"b" * 32)
CAROL = KeyPair.from_seed(b"c" * 32)
COMMITTEE = Committee.equal_weights(NAMES)
GARBAGE = RawBytes(b"\x93\x01\x02")


def network(
    balances: dict[bytes, list[int]],
    shard_count: int = 1,
    scripted: dict[NodeId, ReplyRewrite | None] | None = None,
) -> World:
    """Authorities in `NAMES` order hold `balances[account][i]`; those in `scripted`
    answer what their rewrite says."""
    per_authority = {
        name: {account: values[index] for account, values in balances.items()}
        for index, name in enumerate(NAMES)
    }
    world = World.perfect()
    add_authorities(
        world,
        AUTHORITIES,
        {},
        shards=shard_count,
        authority_genesis=per_authority,
        scripted=scripted,
    )
    return world


def join(world: World, keys: KeyPair, balance: int | None = None) -> Client:
    """The client of `keys`, knowing the least balance an authority grants unless told."""
    if balance is None:
        balance = min(account_at(world, name, keys.node_id).balance for name in NAMES)
    return add_client(world, keys, COMMITTEE, balance=balance)


def client_events(world: World, client: Client) -> list[Any]:
    return world.events_of(client.node_id, object)


def silent(request: Any, honest: Any) -> None:
    """A Byzantine (or unreachable) authority that never answers."""
    return None


def garbage(request: Any, honest: Any) -> RawBytes:
    """A Byzantine authority's answer that no client can decode."""
    return GARBAGE


def run(world: World, client: Client, step: Step) -> list[Any]:
    """Apply a command's step, run the world to rest, return the client's new events."""
    before = len(client_events(world, client))
    world.apply(client.node_id, step)
    assert world.step_until(lambda: world.idle)
    return client_events(world, client)[before:]


def restart(world: World, keys: KeyPair) -> Client:
    """Crash a client (what is on its way to it is lost) and rebuild it from its records."""
    world.crash(keys.node_id)
    assert world.step_until(lambda: world.idle)
    world.restart(keys.node_id)
    return world.core(keys.node_id, Client)


def strong_majority_balance(
    world: World, client: Client, account: bytes | None = None
) -> int | None:
    events = run(world, client, client.query(account))
    queried = [event for event in events if isinstance(event, AccountQueried)]
    assert len(queried) == 1
    return queried[0].balance


def strong_majority_sequence_number(world: World, client: Client) -> int | None:
    events = run(world, client, client.query())
    return next(e for e in events if isinstance(e, AccountQueried)).next_sequence_number


def test_strong_majority_balance_is_what_a_quorum_vouches_for() -> None:
    for balances, expected in (([3, 4, 4, 4], 4), ([0, 3, 4, 4], 3), ([0, 0, 4, 4], 0)):
        world = network({ALICE.node_id: balances})
        assert strong_majority_balance(world, join(world, ALICE)) == expected


def test_a_query_does_not_wait_for_a_silent_authority_once_the_answer_is_settled() -> None:
    # Three agreeing answers settle it: whatever the fourth says cannot change the
    # highest balance that a quorum vouches for.
    world = network({ALICE.node_id: [4, 4, 4, 4]}, scripted={NAMES[0]: silent})
    client = join(world, ALICE)
    world.apply(client.node_id, client.query())

    def answered() -> list[AccountQueried]:
        return [e for e in client_events(world, client) if isinstance(e, AccountQueried)]

    assert world.step_until(lambda: bool(answered()))
    # Virtual time: answered before the silent authority's call could even time out.
    assert world.now_ms < world.call_timeout_ms
    queried = answered()
    assert len(queried) == 1 and queried[0].balance == 4
    assert NAMES[0] not in queried[0].responses and not client.busy


def test_initiating_a_valid_transfer() -> None:
    world = network({ALICE.node_id: [2, 4, 4, 4]})
    sender = join(world, ALICE, balance=4)
    events = run(world, sender, sender.transfer(BOB.node_id, 3, b"hello" * 6))
    certified = [e for e in events if isinstance(e, TransferCertified)]
    assert len(certified) == 1 and any(isinstance(e, TransferConfirmed) for e in events)
    assert sender.next_sequence_number == 1 and sender.pending is None
    assert sender.balance == 1
    # [2,4,4,4] - 3 = [-1,1,1,1]: a quorum vouches for 1.
    assert strong_majority_balance(world, sender) == 1
    # The certificate can be fetched back from the authorities.
    before = len(world.events)
    run(world, sender, sender.query())
    assert len(world.events) > before
    for name in NAMES:
        assert account_at(world, name, ALICE.node_id).confirmed == [certified[0].certificate]


def test_valid_transfer_despite_an_authority_with_a_wrong_key() -> None:
    impostor = KeyPair.from_seed(b"i" * 32)
    bad = NAMES[0]

    def wrong_key(request: Any, reply: Any) -> Any:
        if isinstance(reply, SignedTransferOrder):
            return SignedTransferOrder(reply.order, bad, make_vote(impostor, reply.order).signature)
        return reply

    world = network({ALICE.node_id: [4, 4, 4, 4]}, scripted={bad: wrong_key})
    sender = join(world, ALICE)
    events = run(world, sender, sender.transfer(BOB.node_id, 3))
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert bad not in {vote.authority for vote in certificate.signatures}
    assert sender.next_sequence_number == 1 and sender.pending is None
    assert strong_majority_balance(world, sender) == 1


def test_transfer_beyond_the_known_balance_is_refused_locally_and_blocks_nothing() -> None:
    world = network({ALICE.node_id: [2, 2, 4, 4]})
    sender = join(world, ALICE, balance=2)
    with pytest.raises(InsufficientFunds):
        sender.transfer(BOB.node_id, 3)
    assert sender.next_sequence_number == 0 and sender.pending is None
    assert strong_majority_balance(world, sender) == 2
    run(world, sender, sender.transfer(BOB.node_id, 2))  # the account still works
    assert sender.next_sequence_number == 1


def test_client_stops_once_a_validity_weight_agrees_on_a_refusal() -> None:
    # The first two authorities (weight 2 = validity threshold) cannot fund 3.
    world = network({ALICE.node_id: [2, 2, 4, 4]})
    sender = join(world, ALICE)
    world.apply(ALICE.node_id, sender.transfer(BOB.node_id, 3, check_balance=False))
    # One step per delivery, first in, first out: 4 orders reach the authorities, then
    # their replies come back in committee order; the two refusals come first.
    for _ in range(6):
        world.step()
    events = client_events(world, sender)
    assert len(events) == 1 and isinstance(events[0], TransferFailed)
    assert events[0].error is not None and events[0].error.kind is ErrorKind.INSUFFICIENT_BALANCE
    assert world.step_until(lambda: world.idle)  # the two late votes change nothing
    assert not any(isinstance(e, TransferCertified) for e in client_events(world, sender))
    assert sender.pending is not None and sender.next_sequence_number == 0
    with pytest.raises(PendingOrder):
        sender.transfer(BOB.node_id, 1)


def test_bidirectional_transfers() -> None:
    world = network({ALICE.node_id: [2, 3, 4, 4]})
    alice, bob = join(world, ALICE), join(world, BOB)
    alice.balance = strong_majority_balance(world, alice) or 0
    assert alice.balance == 3
    events = run(world, alice, alice.transfer(BOB.node_id, 3))
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert alice.next_sequence_number == 1 and alice.pending is None and alice.balance == 0
    # [2,3,4,4] - 3 = [-1,0,1,1]
    assert strong_majority_balance(world, alice) == 0
    assert strong_majority_sequence_number(world, alice) == 1
    # The sender already confirmed: Bob's balance is 3 at the authorities, 0 locally.
    assert strong_majority_balance(world, bob) == 3 and bob.balance == 0
    events = run(world, bob, bob.receive(certificate))
    assert [type(e) for e in events] == [TransferReceived]
    assert bob.balance == 3 and strong_majority_balance(world, bob) == 3
    # Send some back.
    run(world, bob, bob.transfer(ALICE.node_id, 1))
    assert bob.next_sequence_number == 1 and bob.pending is None
    assert strong_majority_balance(world, bob) == 2
    assert strong_majority_sequence_number(world, bob) == 1
    assert strong_majority_balance(world, alice) == 1


def test_receiving_an_unconfirmed_transfer() -> None:
    world = network({ALICE.node_id: [2, 3, 4, 4]})
    alice, bob = join(world, ALICE, balance=0), join(world, BOB)
    events = run(world, alice, alice.transfer(BOB.node_id, 2, check_balance=False, confirm=False))
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert not any(isinstance(e, TransferConfirmed) for e in events)
    assert alice.balance == -2 and alice.next_sequence_number == 1 and alice.pending is None
    # Not confirmed anywhere: the authorities still see the old state.
    assert strong_majority_balance(world, alice) == 3
    assert strong_majority_sequence_number(world, alice) == 0
    # The recipient confirms in the sender's place.
    run(world, bob, bob.receive(certificate))
    assert strong_majority_balance(world, bob) == 2 and bob.balance == 2


def test_receiving_an_unconfirmed_transfer_with_lagging_sender_balances() -> None:
    world = network({ALICE.node_id: [2, 3, 4, 4]})
    alice, bob, carol = join(world, ALICE, 0), join(world, BOB, 0), join(world, CAROL)
    run(world, alice, alice.transfer(BOB.node_id, 1, check_balance=False, confirm=False))
    # The second order finds every authority one confirmation behind: the client pushes
    # certificate 0 to them first.
    run(world, alice, alice.transfer(BOB.node_id, 1, check_balance=False, confirm=False))
    run(world, alice, alice.resume())  # confirm the last certificate at a quorum
    events = run(world, bob, bob.transfer(CAROL.node_id, 2, check_balance=False, confirm=False))
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert alice.balance == -2 and alice.next_sequence_number == 2 and alice.pending is None
    assert bob.balance == -2 and bob.next_sequence_number == 1 and bob.pending is None
    assert strong_majority_balance(world, bob) == 2
    assert strong_majority_sequence_number(world, bob) == 0
    run(world, carol, carol.receive(certificate))
    assert strong_majority_balance(world, carol) == 2


def run_with_down(world: World, client: Client, step: Step, down: set[NodeId]) -> list[Any]:
    """Like `run`, but the authorities in `down` are silenced: every call to them is lost
    (it times out)."""
    for name in down:
        world.silence(name)
    events = run(world, client, step)
    for name in down:
        world.unsilence(name)
    return events


def test_lagging_authority_is_brought_up_to_date_before_voting() -> None:
    world = network({ALICE.node_id: [10, 10, 10, 10]})
    alice = join(world, ALICE)
    lagging, other = NAMES[3], NAMES[0]
    run_with_down(world, alice, alice.transfer(BOB.node_id, 1), {lagging})
    run_with_down(world, alice, alice.transfer(BOB.node_id, 2), {lagging})
    assert account_at(world, lagging, ALICE.node_id).next_sequence_number == 0
    # Now another authority is down: the quorum needs the lagging one, which refuses the
    # order for sequence number 2 until it has been given certificates 0 and 1.
    events = run_with_down(world, alice, alice.transfer(BOB.node_id, 3), {other})
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert lagging in {vote.authority for vote in certificate.signatures}
    caught_up = account_at(world, lagging, ALICE.node_id)
    assert caught_up.next_sequence_number == 3 and caught_up.balance == 4
    assert account_at(world, lagging, BOB.node_id).balance == 6


def test_receiver_fetches_the_certificates_a_lagging_authority_misses() -> None:
    world = network({ALICE.node_id: [10, 10, 10, 10]})
    alice, bob = join(world, ALICE), join(world, BOB)
    lagging, other = NAMES[0], NAMES[3]
    run_with_down(world, alice, alice.transfer(CAROL.node_id, 1), {lagging})
    run_with_down(world, alice, alice.transfer(BOB.node_id, 2, confirm=False), {lagging})
    certificate = alice.sent[1]
    # Bob holds only the certificate paying him; the lagging authority misses Alice's
    # first one, which Bob fetches from another authority and pushes first.
    events = run_with_down(world, bob, bob.receive(certificate), {other})
    assert [type(e) for e in events] == [TransferReceived]
    account = account_at(world, lagging, ALICE.node_id)
    assert account.next_sequence_number == 2 and account.balance == 7
    assert account_at(world, lagging, BOB.node_id).balance == 2


def test_client_never_signs_two_orders_for_one_sequence_number_even_after_a_crash() -> None:
    world = network({ALICE.node_id: [5, 5, 5, 5]})
    alice = join(world, ALICE)
    world.apply(ALICE.node_id, alice.transfer(BOB.node_id, 4))
    for _ in range(3):  # some authorities have voted; the client crashes
        world.step()
    pending = alice.pending
    restarted = restart(world, ALICE)
    assert restarted.pending == pending
    with pytest.raises(PendingOrder):
        restarted.transfer(BOB.node_id, 1)
    events = run(world, restarted, restarted.resume())
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert pending is not None and certificate.order == pending
    assert any(isinstance(e, TransferConfirmed) for e in events)
    assert restarted.balance == 1 and restarted.next_sequence_number == 1


def test_client_state_survives_a_restart() -> None:
    world = network({ALICE.node_id: [5, 5, 5, 5]})
    alice, bob = join(world, ALICE), join(world, BOB)
    run(world, alice, alice.transfer(BOB.node_id, 4))
    run(world, bob, bob.receive(alice.sent[0]))
    alice_again, bob_again = restart(world, ALICE), restart(world, BOB)
    assert (alice_again.balance, alice_again.next_sequence_number, alice_again.sent) == (
        1,
        1,
        alice.sent,
    )
    assert bob_again.balance == 4 and list(bob_again.received.values()) == [alice.sent[0]]
    # Receiving the same certificate again does not count it twice.
    run(world, bob_again, bob_again.receive(alice.sent[0]))
    assert bob_again.balance == 4


def test_cross_shard_transfers_reach_the_recipient_shard() -> None:
    world = network({ALICE.node_id: [5, 5, 5, 5]}, shard_count=4)
    alice, bob = join(world, ALICE), join(world, BOB)
    run(world, alice, alice.transfer(BOB.node_id, 4))
    assert all(account_at(world, name, BOB.node_id).balance == 4 for name in NAMES)
    assert all(not shard.outbox for name in NAMES for shard in authority_shards(world, name))
    assert strong_majority_balance(world, bob) == 4


# ---------------------------------------------------------------- Byzantine authorities


def test_transfer_succeeds_with_one_byzantine_authority_sending_garbage() -> None:
    for behaviour in ("garbage", "other-order", "stale-error", "wrong-authority"):
        world = network({ALICE.node_id: [5, 5, 5, 5]}, scripted={NAMES[1]: byzantine(behaviour)})
        alice = join(world, ALICE)
        events = run(world, alice, alice.transfer(BOB.node_id, 4))
        certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
        assert NAMES[1] not in {vote.authority for vote in certificate.signatures}, behaviour
        assert any(isinstance(e, TransferConfirmed) for e in events), behaviour


def byzantine(behaviour: str) -> ReplyRewrite:
    liar = KEYS_BY_NAME[NAMES[1]]

    def reply(request: Any, honest: Any) -> Any:
        if behaviour == "garbage":
            return GARBAGE
        if behaviour == "other-order" and isinstance(honest, SignedTransferOrder):
            transfer = honest.order.transfer
            other = Transfer(transfer.sender, transfer.sender, 1, transfer.sequence_number)
            return make_vote(liar, make_transfer_order(ALICE, other))
        if behaviour == "stale-error":
            return ErrorReply(kind=ErrorKind.UNEXPECTED_SEQUENCE_NUMBER, expected_sequence_number=0)
        if behaviour == "wrong-authority" and isinstance(honest, SignedTransferOrder):
            other_keys = KEYS_BY_NAME[NAMES[2]]
            return make_vote(other_keys, honest.order)
        return honest

    return reply


def test_two_byzantine_authorities_refusing_make_the_transfer_fail_not_hang() -> None:
    world = network({ALICE.node_id: [5, 5, 5, 5]}, scripted=dict.fromkeys(NAMES[:2], garbage))
    alice = join(world, ALICE)
    events = run(world, alice, alice.transfer(BOB.node_id, 4))
    assert [type(e) for e in events] == [TransferFailed]
    assert alice.pending is not None and not alice.busy


def test_receive_of_a_certificate_paying_someone_else_is_refused() -> None:
    world = network({ALICE.node_id: [5, 5, 5, 5]})
    alice, bob = join(world, ALICE), join(world, BOB)
    run(world, alice, alice.transfer(CAROL.node_id, 4))
    with pytest.raises(Exception, match="another account"):
        bob.receive(alice.sent[0])
    assert not bob.busy


def test_receive_fails_cleanly_when_no_quorum_answers() -> None:
    world = network({ALICE.node_id: [5, 5, 5, 5]})
    alice, bob = join(world, ALICE), join(world, BOB)
    run(world, alice, alice.transfer(BOB.node_id, 4, confirm=False))
    events = run_with_down(world, bob, bob.receive(alice.sent[0]), set(NAMES))
    assert [type(e) for e in events] == [ReceiveFailed] and bob.balance == 0


def test_query_of_another_account() -> None:
    world = network({ALICE.node_id: [1, 2, 3, 4]})
    bob = join(world, BOB)
    # 4,3,2 reach the quorum: 2.
    assert strong_majority_balance(world, bob, ALICE.node_id) == 2
    run(world, bob, bob.query(ALICE.node_id))
    assert isinstance(client_events(world, bob)[-1], AccountQueried)
    assert AccountInfoRequest(NodeId(ALICE.node_id)).account == ALICE.node_id


def test_weighted_committee_counts_weight_not_heads() -> None:
    # Weights 3,1,1,1: total 6, quorum threshold 5, validity threshold 3.
    heavy = NAMES[0]
    weights = {name: (3 if name == heavy else 1) for name in NAMES}
    world = World.perfect()
    scripted = {heavy: garbage, NAMES[3]: None}
    genesis = {ALICE.node_id: 5}
    committee = add_authorities(world, AUTHORITIES, genesis, weights=weights, scripted=scripted)
    alice = add_client(world, ALICE, committee, balance=5)
    # Without the heavy authority, the three others weigh 3 < 5: no certificate.
    events = run(world, alice, alice.transfer(BOB.node_id, 1))
    assert [type(e) for e in events] == [TransferFailed]
    # With it, the heavy authority and two others (weight 5) certify.
    world.core(heavy, ScriptedAuthority).rewrite = None
    world.core(NAMES[3], ScriptedAuthority).rewrite = garbage
    events = run(world, alice, alice.resume())
    certificate = next(e for e in events if isinstance(e, TransferCertified)).certificate
    assert heavy in {vote.authority for vote in certificate.signatures}


def test_weighted_committee_stops_early_on_a_heavy_refusal() -> None:
    # The heavy authority alone reaches the validity threshold (3 of 6).
    heavy = NAMES[0]
    weights = {name: (3 if name == heavy else 1) for name in NAMES}
    per_authority = {heavy: {ALICE.node_id: 0}}
    world = World.perfect()
    genesis = {ALICE.node_id: 5}
    committee = add_authorities(
        world, AUTHORITIES, genesis, weights=weights, authority_genesis=per_authority
    )
    alice = add_client(world, ALICE, committee, balance=5)
    world.apply(ALICE.node_id, alice.transfer(BOB.node_id, 1))
    for _ in range(5):  # four orders in, then the heavy authority's refusal comes back first
        world.step()
    events = client_events(world, alice)
    assert [type(e) for e in events] == [TransferFailed]
    assert events[0].error is not None and events[0].error.kind is ErrorKind.INSUFFICIENT_BALANCE
