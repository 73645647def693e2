"""Bracha reliable broadcast: the thresholds, persistence of votes, bounded peer input."""

from __future__ import annotations

from synod.core import Broadcast, Persist, Proposed, Received, Started, Step
from synod.crypto import KeyPair, NodeId
from synod.rbc import CODEC, Delivered, Echo, Forward, Initial, RbcCore, Ready, Rejected, Status
from synod.rbc.core import CATCHUP_HISTORY, RETRANSMIT_TAIL, WINDOW, payload_digest
from synod.sim.world import World

KEYS = [KeyPair.from_seed(bytes([index]) * 32) for index in range(4)]
MEMBERS = [pair.node_id for pair in KEYS]
A, B, C, D = MEMBERS


def member(index: int, storage: dict[bytes, bytes] | None = None) -> RbcCore:
    return RbcCore(KEYS[index], MEMBERS, storage or {})


def broadcasts(step: Step) -> list[object]:
    return [item.message for item in step.outgoing if isinstance(item, Broadcast)]


def apply_persist(storage: dict[bytes, bytes], step: Step) -> None:
    for record in step.persist:
        assert isinstance(record, Persist)
        if record.value is None:
            storage.pop(record.key, None)
        else:
            storage[record.key] = record.value


def test_first_initial_is_echoed_once_and_the_vote_persisted_with_it() -> None:
    core = member(1)
    step = core.handle(Received(A, Initial(0, b"v")), now_ms=0)
    assert Echo(A, 0, payload_digest(b"v")) in broadcasts(step)
    votes = [record for record in step.persist if record.key.startswith(b"vote/")]
    assert len(votes) == 1, "the echo vote must be persisted in the same step"
    assert votes[0].value is not None and payload_digest(b"v") in votes[0].value
    again = core.handle(Received(A, Initial(0, b"other")), now_ms=1)
    assert not any(isinstance(message, Echo) for message in broadcasts(again))


def test_ready_needs_two_f_plus_one_echoes() -> None:
    core = member(3)
    digest = payload_digest(b"v")
    first = core.handle(Received(A, Echo(A, 0, digest)), 0)
    second = core.handle(Received(B, Echo(A, 0, digest)), 0)
    assert not any(isinstance(m, Ready) for m in broadcasts(first) + broadcasts(second))
    third = core.handle(Received(C, Echo(A, 0, digest)), 0)
    assert Ready(A, 0, digest) in broadcasts(third)


def test_f_plus_one_readies_amplify_to_a_ready() -> None:
    core = member(3)
    digest = payload_digest(b"v")
    assert not broadcasts(core.handle(Received(A, Ready(A, 0, digest)), 0))
    assert Ready(A, 0, digest) in broadcasts(core.handle(Received(B, Ready(A, 0, digest)), 0))


def test_delivery_needs_two_f_plus_one_readies_and_the_payload() -> None:
    core = member(3)
    digest = payload_digest(b"v")
    for sender in (A, B, C):
        step = core.handle(Received(sender, Ready(A, 0, digest)), 0)
        assert not step.events, "no payload yet: nothing to deliver"
    step = core.handle(Received(A, Initial(0, b"v")), 0)
    assert Delivered(A, 0, b"v") in step.events


def test_a_vote_from_one_member_counts_once() -> None:
    core = member(3)
    digest = payload_digest(b"v")
    for _ in range(5):
        step = core.handle(Received(B, Echo(A, 0, digest)), 0)
        assert not any(isinstance(m, Ready) for m in broadcasts(step))


def test_restarted_member_never_echoes_a_second_payload() -> None:
    storage: dict[bytes, bytes] = {}
    core = member(1, storage)
    apply_persist(storage, core.handle(Received(A, Initial(0, b"first")), 0))
    restarted = member(1, storage)
    restarted.handle(Started(), 0)
    step = restarted.handle(Received(A, Initial(0, b"second")), 1)
    assert not any(isinstance(message, Echo) for message in broadcasts(step))
    retransmitted = broadcasts(restarted.handle(Started(), 2))
    assert Echo(A, 0, payload_digest(b"first")) in retransmitted


def test_own_proposal_survives_a_restart_and_is_retransmitted() -> None:
    storage: dict[bytes, bytes] = {}
    core = member(0, storage)
    apply_persist(storage, core.handle(Proposed(b"mine"), 0))
    restarted = member(0, storage)
    assert Initial(0, b"mine") in broadcasts(restarted.handle(Started(), 1))
    follow_up = restarted.handle(Proposed(b"next"), 2)
    assert Initial(1, b"next") in broadcasts(follow_up), "sequence numbers are never reused"


def test_non_member_and_far_future_messages_are_rejected_without_state() -> None:
    core = member(1)
    stranger = NodeId(b"\x09" * 32)
    step = core.handle(Received(stranger, Initial(0, b"x")), 0)
    assert step.events == [Rejected(stranger, "sender is not a member")]
    step = core.handle(Received(A, Initial(WINDOW, b"x")), 0)
    assert step.events == [Rejected(A, "instance too far ahead")]
    assert not step.outgoing


def test_equivocating_origin_cannot_grow_memory_for_one_instance() -> None:
    core = member(1)
    for number in range(100):
        core.handle(Received(A, Initial(0, number.to_bytes(4, "big"))), 0)
    instance = core._instances[(A, 0)]
    assert len(instance.payloads) == 1


# ---------------------------------------------------------------- in a calm simulated world


def calm_world(seed: int = 5) -> World:
    world = World(seed)
    for pair in KEYS:
        world.add_node(
            pair.node_id,
            lambda storage, rng, pair=pair: RbcCore(pair, MEMBERS, storage, retransmit_ms=100),
            CODEC,
        )
    world.start()
    return world


def delivered(world: World, node: NodeId) -> list[tuple[bytes, int]]:
    core = world.node(node).core
    assert isinstance(core, RbcCore)
    return [(entry.origin, entry.sequence) for entry in core.delivered_log]


def test_a_burst_beyond_the_window_waits_and_is_all_delivered() -> None:
    world = calm_world()
    burst = WINDOW * 2 + 10
    for number in range(burst):
        world.input_at(0, A, Proposed(number.to_bytes(4, "big")))
    world.run_until(60_000, stop=lambda: all(len(delivered(world, m)) == burst for m in MEMBERS))
    for member_id in MEMBERS:
        assert delivered(world, member_id) == [(A, sequence) for sequence in range(burst)]


def test_a_member_far_behind_catches_up_after_restart() -> None:
    world = calm_world()
    world.crash(3)
    count = RETRANSMIT_TAIL * 5
    for number in range(count):
        world.input_at(number, A, Proposed(number.to_bytes(4, "big")))
    world.run_until(30_000, stop=lambda: len(delivered(world, C)) == count)
    assert len(delivered(world, C)) == count
    world.restart(3)
    world.run_until(90_000, stop=lambda: len(delivered(world, D)) == count)
    assert delivered(world, D) == [(A, sequence) for sequence in range(count)]


def test_a_forwarded_payload_needs_f_plus_one_readies() -> None:
    core = member(3)
    digest = payload_digest(b"v")
    core.handle(Received(B, Ready(A, 0, digest)), 0)
    assert not core.handle(Received(B, Forward(A, 0, b"v")), 0).events
    assert core._instances[(A, 0)].payloads == {}
    core.handle(Received(C, Ready(A, 0, digest)), 0)
    core.handle(Received(B, Ready(A, 0, digest)), 0)
    step = core.handle(Received(C, Forward(A, 0, b"v")), 0)
    assert Delivered(A, 0, b"v") in step.events


def test_restarted_member_never_readies_a_second_digest() -> None:
    storage: dict[bytes, bytes] = {}
    core = member(3, storage)
    first = payload_digest(b"first")
    for sender in (A, B):
        apply_persist(storage, core.handle(Received(sender, Ready(A, 0, first)), 0))
    restarted = member(3, storage)
    restarted.handle(Started(), 1)
    second = payload_digest(b"second")
    sent: list[object] = []
    for sender in (A, B, C):
        sent += broadcasts(restarted.handle(Received(sender, Echo(A, 0, second)), 2))
        sent += broadcasts(restarted.handle(Received(sender, Ready(A, 0, second)), 2))
    assert not any(isinstance(m, Ready) and m.digest == second for m in sent)
    assert Ready(A, 0, first) in broadcasts(restarted.handle(Started(), 3))


def test_status_answers_are_limited_to_one_per_member_per_interval() -> None:
    world = calm_world()
    for number in range(10):
        world.input_at(0, A, Proposed(number.to_bytes(4, "big")))
    world.run_until(30_000, stop=lambda: len(delivered(world, B)) == 10)
    core = world.node(B).core
    assert isinstance(core, RbcCore)
    behind = Status(tuple(0 for _ in MEMBERS))
    first = core.handle(Received(D, behind), 50_000)
    assert len(first.outgoing) == 2 * 10, "a Ready and a Forward per missing instance"
    assert core.handle(Received(D, behind), 50_001).outgoing == []
    later = core.handle(Received(D, behind), 50_000 + core.retransmit_ms)
    assert len(later.outgoing) == 2 * 10


def test_delivered_payloads_held_in_memory_are_bounded_per_origin() -> None:
    world = calm_world()
    count = CATCHUP_HISTORY + 40
    for number in range(count):
        world.input_at(number, A, Proposed(number.to_bytes(4, "big")))
    world.run_until(
        600_000,
        stop=lambda: (
            all(len(delivered(world, m)) >= CATCHUP_HISTORY for m in MEMBERS)
            and world.node(B).core.delivered_count == count
        ),
    )  # type: ignore[union-attr]
    core = world.node(B).core
    assert isinstance(core, RbcCore)
    assert core.delivered_count == count
    held = delivered(world, B)
    assert held == [(A, sequence) for sequence in range(40, count)]
