"""Bracha reliable broadcast: the thresholds, persistence of votes, bounded peer input."""

from __future__ import annotations

from synod.core import Broadcast, Persist, Proposed, Received, Started, Step
from synod.crypto import KeyPair, NodeId
from synod.rbc import Delivered, Echo, Initial, RbcCore, Ready, Rejected
from synod.rbc.core import WINDOW, payload_digest

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
    assert step.persist, "the echo vote must be persisted in the same step"
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
