"""FastPay worlds built by hand (`synod.sim.scenarios.fastpay`): authorities routed by
shard, scripted Byzantine answers over honest state, one shard restarted alone, a world
that says when it is idle, and enum members in the history."""

from __future__ import annotations

from typing import Any

from synod.crypto import KeyPair
from synod.fastpay.authority import TransferApplied, TransferCredited
from synod.fastpay.client import Client, TransferCertified, TransferFailed
from synod.fastpay.messages import ErrorKind, ErrorReply, shard_of
from synod.sim.history import to_plain
from synod.sim.scenarios.fastpay import (
    ScriptedAuthority,
    account_at,
    add_authorities,
    add_client,
    authority_shards,
    restart_shard,
)
from synod.sim.world import World

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
NAMES = [keys.node_id for keys in AUTHORITIES]
ALICE = KeyPair.from_seed(b"a" * 32)
SHARDS = 2
BOB = next(
    keys
    for keys in (KeyPair.from_seed(bytes([index]) * 32) for index in range(100, 200))
    if shard_of(keys.node_id, SHARDS) != shard_of(ALICE.node_id, SHARDS)
)
"""An account in the other shard than Alice's: paying it takes a cross-shard update."""


def pay_world(
    scripted: dict[Any, Any] | None = None, seed: int = 0
) -> tuple[World, Client]:
    world = World.perfect(seed, latency_ms=(1, 5))
    committee = add_authorities(
        world, AUTHORITIES, {ALICE.node_id: 10}, shards=SHARDS, scripted=scripted
    )
    return world, add_client(world, ALICE, committee, balance=10)


def test_idle_holds_once_nothing_is_scheduled() -> None:
    world, alice = pay_world()
    idle_at_start = world.idle
    world.apply(ALICE.node_id, alice.transfer(BOB.node_id, 3))
    assert idle_at_start and not world.idle
    assert world.step_until(lambda: world.idle)
    assert not world.step()


def test_requests_reach_the_shard_that_keeps_the_account_and_credits_cross_shards() -> None:
    world, alice = pay_world()
    world.apply(ALICE.node_id, alice.transfer(BOB.node_id, 3))
    assert world.step_until(lambda: world.idle)
    for name in NAMES:
        shards = authority_shards(world, name)
        assert shards[shard_of(ALICE.node_id, SHARDS)].accounts[ALICE.node_id].balance == 7
        assert shards[shard_of(BOB.node_id, SHARDS)].accounts[BOB.node_id].balance == 3
        assert account_at(world, name, BOB.node_id).balance == 3
        assert all(not shard.outbox for shard in shards)
        assert len(world.events_of(name, TransferCredited)) == 1


def test_a_scripted_authority_keeps_honest_state_but_answers_what_it_is_told() -> None:
    mute = NAMES[0]
    world, alice = pay_world(scripted={mute: lambda request, honest: None})
    world.apply(ALICE.node_id, alice.transfer(BOB.node_id, 3))
    assert world.step_until(lambda: world.idle)
    (certified,) = world.events_of(ALICE.node_id, TransferCertified)
    assert mute not in {vote.authority for vote in certified.certificate.signatures}
    # It never answered, yet it voted and applied the certificate like the others.
    assert account_at(world, mute, ALICE.node_id).next_sequence_number == 1
    world.core(mute, ScriptedAuthority).rewrite = None
    world.apply(ALICE.node_id, alice.transfer(BOB.node_id, 2))
    assert world.step_until(lambda: world.idle)
    certified = world.events_of(ALICE.node_id, TransferCertified)[-1]
    assert mute in {vote.authority for vote in certified.certificate.signatures}


def test_restart_shard_keeps_what_it_persisted_and_resends_its_outbox() -> None:
    world, alice = pay_world()
    name = NAMES[0]
    sender_shard, recipient_shard = shard_of(ALICE.node_id, SHARDS), shard_of(BOB.node_id, SHARDS)
    world.apply(ALICE.node_id, alice.transfer(BOB.node_id, 3))
    # The sender's shard debits, then its cross-shard update is on its way.
    assert world.step_until(lambda: bool(world.events_of(name, TransferApplied)))
    assert authority_shards(world, name)[sender_shard].outbox
    untouched = authority_shards(world, name)[recipient_shard]
    restart_shard(world, name, sender_shard)
    rebuilt = authority_shards(world, name)[sender_shard]
    assert rebuilt.accounts[ALICE.node_id].balance == 7 and rebuilt.outbox
    assert authority_shards(world, name)[recipient_shard] is untouched
    assert world.step_until(lambda: world.idle)
    # The update arrived twice (before the restart and re-sent after it): credited once.
    assert account_at(world, name, BOB.node_id).balance == 3
    assert len(world.events_of(name, TransferCredited)) == 1
    assert all(not shard.outbox for shard in authority_shards(world, name))


def test_enum_members_enter_the_history_as_their_values() -> None:
    assert to_plain(ErrorKind.INSUFFICIENT_BALANCE) == "insufficient-balance"
    world, alice = pay_world(scripted=dict.fromkeys(NAMES[:2], refuse))
    world.apply(ALICE.node_id, alice.transfer(BOB.node_id, 3))
    assert world.step_until(lambda: world.idle)
    (failed,) = world.events_of(ALICE.node_id, TransferFailed)
    assert failed.error is not None and failed.error.kind is ErrorKind.INSUFFICIENT_BALANCE
    recorded = [r for r in world.history if r["kind"] == "event" and "error" in r["event"]]
    assert recorded[-1]["event"]["error"]["kind"] == "insufficient-balance"


def refuse(request: Any, honest: Any) -> ErrorReply:
    return ErrorReply(kind=ErrorKind.INSUFFICIENT_BALANCE)
