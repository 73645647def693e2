"""A wallet never gets stuck: a pending order certified by someone else is adopted, a
wallet restored from its key alone recovers its state from the authorities, and
payments from wallets it shares no file with are counted.

Expected balances are hand computed from the genesis and the payments made."""

from __future__ import annotations

from typing import Any

from synod.crypto import KeyPair
from synod.fastpay.client import (
    AccountRecovered,
    Client,
    TransferCertified,
    TransferConfirmed,
    TransferFailed,
)
from synod.fastpay.messages import (
    AuthoritySignature,
    CertifiedTransferOrder,
    SignedTransferOrder,
    Transfer,
    certify,
    make_transfer_order,
)
from synod.quorum.committee import Committee
from synod.sim.scenarios.fastpay import account_at, add_authorities, add_client
from synod.sim.world import World

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
NAMES = sorted(keys.node_id for keys in AUTHORITIES)
COMMITTEE = Committee.equal_weights(NAMES)
ALICE = KeyPair.from_seed(b"a" * 32)
BOB = KeyPair.from_seed(b"b" * 32)
CAROL = KeyPair.from_seed(b"c" * 32)


def world_with(genesis: dict[bytes, int]) -> World:
    world = World.perfect(seed=3, latency_ms=(1, 20))
    add_authorities(world, AUTHORITIES, genesis, shards=2)
    return world


def run(world: World, node: bytes, step: Any) -> list[Any]:
    before = len(world.events_of(node, object))
    world.apply(node, step)
    assert world.step_until(lambda: world.idle)
    return world.events_of(node, object)[before:]


def kinds(events: list[Any]) -> list[type]:
    return [type(event) for event in events]


def certificate_from_published_votes(world: World, account: bytes) -> CertifiedTransferOrder:
    """What anyone can do: read three authorities' pending votes and assemble them."""
    votes: list[SignedTransferOrder] = []
    for name in NAMES[:3]:
        vote = account_at(world, name, account).pending
        assert vote is not None
        votes.append(vote)
    signatures = [AuthoritySignature(vote.authority, vote.signature) for vote in votes]
    return CertifiedTransferOrder(order=votes[0].order, signatures=signatures)


def test_a_pending_order_certified_by_someone_else_is_adopted_not_stuck() -> None:
    world = world_with({ALICE.node_id: 10})
    alice = add_client(world, ALICE, COMMITTEE, balance=10)
    bob = add_client(world, BOB, COMMITTEE)
    # Alice's order reaches every authority, then her client dies before any vote.
    world.apply(ALICE.node_id, alice.transfer(BOB.node_id, 4))
    world.crash(ALICE.node_id)
    assert world.step_until(lambda: world.idle)
    # Bob assembles the certificate from the published votes and confirms it everywhere.
    certificate = certificate_from_published_votes(world, ALICE.node_id)
    run(world, BOB.node_id, bob.synchronize(certificate))
    assert all(account_at(world, name, BOB.node_id).balance == 4 for name in NAMES)

    world.restart(ALICE.node_id)
    alice = world.core(ALICE.node_id, Client)
    assert alice.pending is not None
    events = run(world, ALICE.node_id, alice.resume())
    assert TransferCertified(certificate) in events
    assert TransferConfirmed in kinds(events)
    assert (alice.pending, alice.next_sequence_number, alice.balance) == (None, 1, 6)
    # And the wallet goes on: its next transfer is #1.
    events = run(world, ALICE.node_id, alice.transfer(BOB.node_id, 6))
    assert TransferConfirmed in kinds(events) and alice.next_sequence_number == 2
    assert all(account_at(world, name, BOB.node_id).balance == 10 for name in NAMES)


def test_a_sequence_number_used_by_another_copy_of_the_wallet_drops_the_order() -> None:
    world = world_with({ALICE.node_id: 10})
    alice = add_client(world, ALICE, COMMITTEE, balance=10)
    # Another copy of Alice's wallet paid Carol 3 with sequence number 0.
    other = make_transfer_order(ALICE, Transfer(ALICE.node_id, CAROL.node_id, 3, 0))
    helper = add_client(world, BOB, COMMITTEE)
    run(world, BOB.node_id, helper.synchronize(certify(other, AUTHORITIES[:3])))

    events = run(world, ALICE.node_id, alice.transfer(BOB.node_id, 4))
    failed = [event for event in events if isinstance(event, TransferFailed)]
    assert len(failed) == 1 and "another order" in failed[0].reason
    assert alice.pending is None and alice.next_sequence_number == 1
    assert alice.sent[0].transfer == other.transfer and alice.balance == 7
    events = run(world, ALICE.node_id, alice.transfer(BOB.node_id, 4))
    assert TransferConfirmed in kinds(events)
    assert all(account_at(world, name, BOB.node_id).balance == 4 for name in NAMES)
    assert all(account_at(world, name, ALICE.node_id).balance == 3 for name in NAMES)


def test_a_wallet_restored_from_its_key_alone_recovers_and_spends_everything() -> None:
    world = world_with({ALICE.node_id: 10, CAROL.node_id: 5})
    alice = add_client(world, ALICE, COMMITTEE, balance=10)
    carol = add_client(world, CAROL, COMMITTEE, balance=5)
    run(world, ALICE.node_id, alice.transfer(BOB.node_id, 2))
    run(world, ALICE.node_id, alice.transfer(BOB.node_id, 3))
    # Carol pays Alice from a wallet Alice does not share: Alice's client never hears of it.
    run(world, CAROL.node_id, carol.transfer(ALICE.node_id, 5))
    assert alice.balance == 5
    # Alice loses her wallet file and starts again from her key alone.
    world.crash(ALICE.node_id)
    assert world.step_until(lambda: world.idle)
    world.restart(ALICE.node_id, lambda storage, rng: Client(ALICE, COMMITTEE))
    alice = world.core(ALICE.node_id, Client)
    assert (alice.next_sequence_number, alice.balance) == (0, 0)

    events = run(world, ALICE.node_id, alice.recover())
    recovered = [event for event in events if isinstance(event, AccountRecovered)]
    assert len(recovered) == 1
    assert [c.transfer.amount for c in recovered[0].sent] == [2, 3]
    assert [c.transfer.sender for c in recovered[0].received] == [CAROL.node_id]
    assert (alice.next_sequence_number, alice.balance, alice.pending) == (2, 10, None)
    # 10 - 2 - 3 + 5: every unit can be spent, in one transfer.
    events = run(world, ALICE.node_id, alice.transfer(BOB.node_id, 10))
    assert TransferConfirmed in kinds(events)
    assert all(account_at(world, name, BOB.node_id).balance == 15 for name in NAMES)


def test_recover_adopts_the_pending_order_the_authorities_hold() -> None:
    world = world_with({ALICE.node_id: 10})
    alice = add_client(world, ALICE, COMMITTEE, balance=10)
    world.apply(ALICE.node_id, alice.transfer(BOB.node_id, 4))
    world.crash(ALICE.node_id)
    assert world.step_until(lambda: world.idle)
    world.restart(ALICE.node_id, lambda storage, rng: Client(ALICE, COMMITTEE))
    alice = world.core(ALICE.node_id, Client)
    events = run(world, ALICE.node_id, alice.recover())
    recovered = next(event for event in events if isinstance(event, AccountRecovered))
    assert recovered.adopted_pending is not None
    assert recovered.adopted_pending.transfer.amount == 4
    assert alice.pending == recovered.adopted_pending
    events = run(world, ALICE.node_id, alice.resume())
    assert TransferConfirmed in kinds(events)
    assert all(account_at(world, name, BOB.node_id).balance == 4 for name in NAMES)


def test_recover_does_not_wait_for_a_silent_authority_once_a_quorum_agrees() -> None:
    world = World.perfect(seed=3, latency_ms=(1, 20))
    silent = {NAMES[0]: lambda request, honest: None}
    add_authorities(world, AUTHORITIES, {ALICE.node_id: 10}, shards=2, scripted=silent)
    alice = add_client(world, ALICE, COMMITTEE, balance=10)
    run(world, ALICE.node_id, alice.transfer(BOB.node_id, 4))
    world.crash(ALICE.node_id)
    assert world.step_until(lambda: world.idle)
    world.restart(ALICE.node_id, lambda storage, rng: Client(ALICE, COMMITTEE))
    alice = world.core(ALICE.node_id, Client)
    started_ms = world.now_ms
    world.apply(ALICE.node_id, alice.recover())

    def recovered() -> list[AccountRecovered]:
        return world.events_of(ALICE.node_id, AccountRecovered)

    assert world.step_until(lambda: bool(recovered()))
    # Virtual time: done before the silent authority's call could even time out.
    assert world.now_ms - started_ms < world.call_timeout_ms
    assert (alice.next_sequence_number, alice.balance) == (1, 6)
