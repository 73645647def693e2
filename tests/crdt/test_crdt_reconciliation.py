"""Reconciliation by heads (Kleppmann and Howard 2020, section 4) and restart.

Replicas that edited while apart exchange heads through an in-memory network (every
message goes through the codec) and must end with identical documents and update sets,
also when the relay shuffles, drops or alters messages, or a peer lies.  A replica
rebuilt from what it persisted must have the same document and continue its own
sequence without equivocating.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from synod.core import Received, Send, Step
from synod.crdt.messages import CODEC, UPDATE_CODEC, Heads, NewCounter, NewText, Updates, Want
from synod.crdt.replica import (
    EquivocationDetected,
    Increment,
    InsertText,
    Put,
    Replica,
    UpdateApplied,
)
from synod.crypto import KeyPair


def shared_start(
    make_replica: Callable[..., Replica], count: int, network: Any
) -> tuple[list[Replica], Any]:
    replicas = [make_replica(seed) for seed in range(1, count + 1)]
    net = network(replicas)
    net.absorb(
        replicas[0].node_id,
        replicas[0].transact([Put((), "t", NewText()), Put((), "n", NewCounter())]),
    )
    net.run()
    return replicas, net


def edit_offline(replica: Replica, rounds: int, label: str) -> None:
    for index in range(rounds):
        replica.transact([InsertText(("t",), 0, f"{label}{index}"), Increment(("n",), 1)])


def assert_all_equal(replicas: list[Replica]) -> None:
    first = replicas[0]
    for other in replicas[1:]:
        assert other.value() == first.value()
        assert set(other.applied_ids()) == set(first.applied_ids())
        assert other.heads() == first.heads()


def test_diverged_replicas_converge_after_exchanging_heads(
    make_replica: Callable[..., Replica], network: Any
) -> None:
    replicas, net = shared_start(make_replica, 3, network)
    for replica, label in zip(replicas, "abc", strict=True):
        edit_offline(replica, 5, label)  # their broadcasts are lost: never absorbed
    net.announce_all()
    net.run()
    assert_all_equal(replicas)
    assert replicas[0].value()["n"] == 15
    assert len(replicas[0].applied_ids()) == 1 + 15


def test_heads_answer_holds_exactly_what_the_peer_misses(
    make_replica: Callable[..., Replica], network: Any
) -> None:
    (ahead, behind), _ = shared_start(make_replica, 2, network)
    edit_offline(ahead, 5, "a")  # the broadcasts are lost
    for update_id in ahead.applied_ids()[:3]:  # the start and two edits reach `behind`
        behind.receive(UPDATE_CODEC.decode(ahead.encoded_update(update_id)), Step())
    expected = ahead.applied_ids()[3:]
    step = ahead.handle(Received(behind.node_id, Heads(behind.heads())), 0)
    sent = [
        encoded
        for out in step.outgoing
        if isinstance(out.message, Updates)
        for encoded in out.message.updates
    ]
    assert sent == [ahead.encoded_update(i) for i in expected], "only the missing, oldest first"
    assert not [out for out in step.outgoing if isinstance(out.message, Heads)]


def test_long_offline_gap_is_caught_up_with_a_tiny_waiting_buffer(
    make_replica: Callable[..., Replica], network: Any
) -> None:
    writer = make_replica(1)
    sleeper = make_replica(2, max_waiting_updates=2, max_updates_per_message=16)
    writer.transact([Put((), "t", NewText())])
    for index in range(300):
        writer.transact([InsertText(("t",), index, "x")])
    net = network([writer, sleeper])
    net.announce_all()
    net.run()
    assert sleeper.value() == writer.value()
    assert len(sleeper.applied_ids()) == 301


def test_convergence_through_a_relay_that_shuffles_drops_and_alters(
    make_replica: Callable[..., Replica], network: Any
) -> None:
    replicas, _ = shared_start(make_replica, 4, network)
    honest_updates: set[bytes] = set(replicas[0].applied_ids())
    rng = random.Random(7)

    def tamper(sender: bytes, to: bytes, encoded: bytes) -> bytes | None:
        roll = rng.random()
        if roll < 0.15:
            return None
        if roll < 0.35:
            altered = bytearray(encoded)
            altered[rng.randrange(len(altered))] ^= 1 << rng.randrange(8)
            return bytes(altered)
        return encoded

    faulty = network(replicas, rng=rng, tamper=tamper)
    for round_index in range(3):
        for replica, label in zip(replicas, "abcd", strict=True):
            faulty.absorb(
                replica.node_id, replica.transact([InsertText(("t",), 0, f"{label}{round_index}")])
            )
            honest_updates.add(replica.applied_ids()[-1])
        faulty.announce_all()
        faulty.run()
    for replica in replicas:
        assert set(replica.applied_ids()) <= honest_updates, "nothing forged was applied"
    healed = network(replicas, rng=rng)
    healed.announce_all()
    healed.run()
    assert_all_equal(replicas)
    assert set(replicas[0].applied_ids()) == honest_updates


def test_a_lying_peer_cannot_stop_reconciliation(
    make_replica: Callable[..., Replica], network: Any
) -> None:
    replicas, net = shared_start(make_replica, 2, network)
    liar = KeyPair.from_seed(b"\x99" * 32).node_id
    edit_offline(replicas[0], 3, "a")
    edit_offline(replicas[1], 3, "b")
    lies: list[object] = [
        Heads([b"\x01" * 32, b"\x02" * 32]),
        Want([b"\x03" * 32, *replicas[0].applied_ids()]),
        Updates([b"\xc1", CODEC.encode(Heads([]))]),
        Heads([]),
    ]
    for replica in replicas:
        for lie in lies:
            step = replica.handle(Received(liar, lie), 0)
            # Answers go to the liar only; they never change the replica's document.
            assert all(isinstance(out, Send) and out.to == liar for out in step.outgoing)
    net.announce_all()
    net.run()
    assert_all_equal(replicas)


def test_restart_rebuilds_the_document_and_continues_the_authors_sequence(
    make_replica: Callable[..., Replica], network: Any
) -> None:
    replicas, net = shared_start(make_replica, 2, network)
    first, second = replicas
    for index in range(3):
        net.absorb(first.node_id, first.transact([InsertText(("t",), 0, str(index))]))
        net.absorb(second.node_id, second.transact([Increment(("n",), 2)]))
        net.run()
    keys = KeyPair.from_seed((1).to_bytes(32, "big"))  # the seed `make_replica(1)` used
    assert keys.node_id == first.node_id
    restarted = Replica(keys, storage=dict(net.storage[first.node_id]))
    assert restarted.value() == first.value()
    assert restarted.heads() == first.heads()
    assert restarted.applied_ids() == first.applied_ids()
    net.replicas[first.node_id] = restarted
    step = restarted.transact([InsertText(("t",), 0, "after restart")])
    applied = [e for e in step.events if isinstance(e, UpdateApplied)]
    assert applied[0].sequence == 5, "sequence 1 was the shared start, 2-4 the edits above"
    net.absorb(restarted.node_id, step)
    net.run()
    assert not [e for e in net.events[second.node_id] if isinstance(e, EquivocationDetected)]
    assert second.value() == restarted.value()


def test_a_key_used_by_two_processes_still_produces_valid_updates(
    make_replica: Callable[..., Replica], network: Any
) -> None:
    # Two processes sign with the same key (a misconfiguration).  Once one has seen the
    # other's update, its next update follows the sequence rule and is accepted.
    original, copy, observer = make_replica(1), make_replica(1), make_replica(2)
    net = network([original, observer])
    net.absorb(original.node_id, original.transact([Put((), "n", NewCounter())]))
    net.run()
    for update_id in original.applied_ids():
        copy.receive(UPDATE_CODEC.decode(original.encoded_update(update_id)), Step())
    step = copy.transact([Increment(("n",), 1)])
    (applied,) = [e for e in step.events if isinstance(e, UpdateApplied)]
    assert applied.sequence == 2
    (encoded,) = [u for out in step.outgoing for u in out.message.updates]  # type: ignore[union-attr]
    observer.handle(Received(copy.node_id, Updates([encoded])), 0)
    assert observer.value() == copy.value() == {"n": 1}


def test_a_replica_that_lost_its_disk_equivocates_and_both_updates_stay(
    make_replica: Callable[..., Replica], network: Any
) -> None:
    first, observer = make_replica(1), make_replica(2)
    net = network([first, observer])
    net.absorb(first.node_id, first.transact([Put((), "a", 1)]))
    net.run()
    amnesiac = make_replica(1)  # same key, nothing persisted: starts again at sequence 1
    net.replicas[amnesiac.node_id] = amnesiac
    net.events[amnesiac.node_id] = []
    net.absorb(amnesiac.node_id, amnesiac.transact([Put((), "b", 2)]))
    net.run()
    assert observer.value() == {"a": 1, "b": 2}
    assert any(isinstance(e, EquivocationDetected) for e in net.events[observer.node_id])


def test_history_is_one_causal_order_on_every_replica(
    make_replica: Callable[..., Replica], network: Any
) -> None:
    replicas, net = shared_start(make_replica, 3, network)
    for replica, label in zip(replicas, "abc", strict=True):
        edit_offline(replica, 4, label)
    net.announce_all()
    net.run()
    histories = [replica.history() for replica in replicas]
    assert histories[0] == histories[1] == histories[2]
    position = {update_id: index for index, update_id in enumerate(histories[0])}
    for update_id in histories[0]:
        body = UPDATE_CODEC.decode(replicas[0].encoded_update(update_id)).body
        assert all(position[p] < position[update_id] for p in body.predecessors)
