"""Byzantine authors and relays (Kleppmann, PaPoC 2022, sections 3-4).

Each scenario gives the same updates to two correct replicas, in different orders where
order could matter, and checks that both accept and reject exactly the same updates and
end with the same document.  Faulty updates are forged by hand with an attacker's key.

The base document, built by the honest author A in one update `base`, has (by the rule
that each operation consumes counters in order) text "t" at counter 0 with characters
"a", "b" at 1 and 2, text "u" at 3 with "z" at 4, and counter "n" at 5.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from synod.core import LocalError, Received, Step
from synod.crdt.messages import (
    UPDATE_CODEC,
    UPDATE_DOMAIN,
    CounterAdd,
    Heads,
    MapPut,
    NewCounter,
    NewMap,
    NewText,
    Operation,
    Ref,
    SequenceDelete,
    Span,
    TextInsert,
    Update,
    UpdateBody,
    Updates,
    Want,
    body_id,
)
from synod.crdt.replica import (
    EquivocationDetected,
    InsertText,
    MessageDropped,
    Put,
    Replica,
    UpdateApplied,
    UpdateEvicted,
    UpdateRejected,
)
from synod.crypto import KeyPair

ATTACKER = KeyPair.from_seed(b"\x66" * 32)
ACCOMPLICE = KeyPair.from_seed(b"\x67" * 32)


def forge(
    signer: KeyPair,
    predecessors: list[bytes],
    operations: list[Operation],
    *,
    clock: int = 2,
    sequence: int = 1,
    author: bytes | None = None,
    sort: bool = True,
) -> tuple[bytes, Update]:
    body = UpdateBody(
        author if author is not None else signer.node_id,
        sequence,
        clock,
        sorted(predecessors) if sort else predecessors,
        operations,
    )
    update_id = body_id(body)
    return update_id, Update(body, signer.sign(UPDATE_DOMAIN, update_id))


class World:
    """Honest author A and two correct replicas P and Q that hold A's base update."""

    def __init__(self, make_replica: Callable[..., Replica]) -> None:
        self.author = make_replica(1)
        step = self.author.transact(
            [
                Put((), "t", NewText()),
                InsertText(("t",), 0, "ab"),
                Put((), "u", NewText()),
                InsertText(("u",), 0, "z"),
                Put((), "n", NewCounter()),
            ]
        )
        self.base = self.author.applied_ids()[0]
        self.base_update = UPDATE_CODEC.decode(self.author.encoded_update(self.base))
        assert step.events
        self.p = make_replica(2)
        self.q = make_replica(3)
        self.events: dict[int, list[Any]] = {id(self.p): [], id(self.q): []}
        for replica in (self.p, self.q):
            self.give(replica, self.base_update)

    def ref(self, counter: int) -> Ref:
        return Ref(self.base, counter)

    def give(self, replica: Replica, *updates: Update) -> None:
        for update in updates:
            step = Step()
            replica.receive(update, step, sender=ATTACKER.node_id)
            self.events.setdefault(id(replica), []).extend(step.events)

    def rejected(self, replica: Replica) -> set[bytes]:
        return {e.update_id for e in self.events[id(replica)] if isinstance(e, UpdateRejected)}

    def assert_converged(self) -> None:
        assert self.p.value() == self.q.value()
        assert self.p.document.structure() == self.q.document.structure()
        assert set(self.p.applied_ids()) == set(self.q.applied_ids())


@pytest.fixture
def world(make_replica: Callable[..., Replica]) -> World:
    return World(make_replica)


def test_forged_author_is_rejected_by_every_replica(world: World) -> None:
    insert = TextInsert(world.ref(0), world.ref(2), "!")
    forged_id, forged = forge(ATTACKER, [world.base], [insert], author=world.author.node_id)
    for replica in (world.p, world.q):
        world.give(replica, forged)
        assert forged_id not in replica.applied_ids()
        assert replica.value()["t"] == "ab"
    reasons = {e.reason for e in world.events[id(world.p)] if isinstance(e, UpdateRejected)}
    assert reasons == {"bad signature"}
    world.assert_converged()


def test_every_tampered_byte_of_a_relayed_update_is_refused(
    world: World, make_replica: Callable[..., Replica]
) -> None:
    world.author.transact([InsertText(("t",), 2, "cd")])
    genuine_id = world.author.applied_ids()[-1]
    genuine = world.author.encoded_update(genuine_id)
    receiver = world.p
    for index in range(len(genuine)):
        for mask in (0x01, 0x80):
            tampered = bytearray(genuine)
            tampered[index] ^= mask
            step = receiver.handle(Received(ATTACKER.node_id, Updates([bytes(tampered)])), 0)
            applied = {e.update_id for e in step.events if isinstance(e, UpdateApplied)}
            # Only a byte change that decodes to the very same update could be applied.
            assert applied <= {genuine_id}
    assert receiver.value()["t"] in ("ab", "abcd")
    step = receiver.handle(Received(world.author.node_id, Updates([genuine])), 0)
    assert receiver.value()["t"] == "abcd"


def test_reference_to_a_concurrent_update_is_rejected_in_either_order(world: World) -> None:
    concurrent_id, concurrent = forge(
        ATTACKER, [world.base], [TextInsert(world.ref(0), world.ref(2), "x")]
    )
    # Names the character created by `concurrent` without having it as an ancestor.
    cheat_id, cheat = forge(
        ACCOMPLICE, [world.base], [TextInsert(world.ref(0), Ref(concurrent_id, 0), "y")]
    )
    world.give(world.p, concurrent, cheat)
    world.give(world.q, cheat, concurrent)
    assert world.rejected(world.p) == world.rejected(world.q) == {cheat_id}
    assert world.p.value()["t"] == "abx"
    world.assert_converged()


@pytest.mark.parametrize(
    "name",
    [
        "insert into a map",
        "insert after another text's element",
        "delete past the end of an update",
        "add to a text",
        "put into a character",
        "reference an unknown update hash",
        "delete another text's element",
        "valid edit then invalid edit",
    ],
)
def test_invalid_references_are_rejected_whole(world: World, name: str) -> None:
    ref = world.ref
    operations: dict[str, list[Operation]] = {
        "insert into a map": [TextInsert(Ref(bytes(32), 0), ref(0), "x")],
        "insert after another text's element": [TextInsert(ref(0), ref(4), "x")],
        "delete past the end of an update": [SequenceDelete(ref(0), [Span(world.base, 2, 9)])],
        "add to a text": [CounterAdd(ref(0), 1)],
        "put into a character": [MapPut(ref(1), "k", 1)],
        "reference an unknown update hash": [TextInsert(ref(0), Ref(b"\x42" * 32, 0), "x")],
        "delete another text's element": [SequenceDelete(ref(0), [Span(world.base, 4, 1)])],
        "valid edit then invalid edit": [CounterAdd(ref(5), 7), CounterAdd(ref(0), 1)],
    }
    before = world.p.value()
    bad_id, bad = forge(ATTACKER, [world.base], operations[name])
    for replica in (world.p, world.q):
        world.give(replica, bad)
        assert replica.value() == before, "a rejected update leaves no trace"
        assert world.rejected(replica) == {bad_id}
    # The document still accepts valid work afterwards (no leftover state).
    _, good = forge(ATTACKER, [world.base], [CounterAdd(ref(5), 3)], sequence=1)
    for replica in (world.p, world.q):
        world.give(replica, good)
        assert replica.value()["n"] == 3
    world.assert_converged()


@pytest.mark.parametrize(("clock", "sequence"), [(2**40, 1), (1, 1), (3, 1), (2, 2), (2, 0)])
def test_clock_and_sequence_must_follow_from_the_predecessors(
    world: World, clock: int, sequence: int
) -> None:
    # With the single predecessor `base` (clock 1, by A) the only valid pair is (2, 1).
    bad_id, bad = forge(
        ATTACKER, [world.base], [MapPut(Ref(bytes(32), 0), "k", 1)], clock=clock, sequence=sequence
    )
    for replica in (world.p, world.q):
        world.give(replica, bad)
        assert "k" not in replica.value()
        assert bad_id in world.rejected(replica)
    world.assert_converged()


def test_unsorted_or_duplicate_predecessors_are_malformed(world: World) -> None:
    _, first = forge(ATTACKER, [world.base], [])
    twice_id, twice = forge(ATTACKER, [world.base, world.base], [], clock=2, sequence=2, sort=False)
    world.give(world.p, first, twice)
    world.give(world.q, twice, first)
    assert world.rejected(world.p) == world.rejected(world.q) == {twice_id}
    world.assert_converged()


def test_equivocating_updates_are_both_applied_and_reported(world: World, network: Any) -> None:
    root = Ref(bytes(32), 0)
    one_id, one = forge(ATTACKER, [world.base], [MapPut(root, "k", 1)])
    two_id, two = forge(ATTACKER, [world.base], [MapPut(root, "k", 2)])
    world.give(world.p, one)
    world.give(world.q, two)
    net = network([world.p, world.q])
    net.announce_all()
    net.run()
    world.assert_converged()
    assert {one_id, two_id} <= set(world.p.applied_ids())
    # Last writer wins by (clock, id): both have clock 2, so the greater id wins.
    assert world.p.value()["k"] == (1 if one_id > two_id else 2)
    for replica in (world.p, world.q):
        evidence = [e for e in net.events[replica.node_id] if isinstance(e, EquivocationDetected)]
        assert len(evidence) == 1
        assert evidence[0].author == ATTACKER.node_id
        assert {evidence[0].first_id, evidence[0].second_id} == {one_id, two_id}


def test_dependants_of_a_rejected_update_are_rejected(world: World) -> None:
    bad_id, bad = forge(ATTACKER, [world.base], [], clock=9)
    child_id, child = forge(ATTACKER, [bad_id], [], clock=10, sequence=2)
    world.give(world.p, child, bad)
    world.give(world.q, bad, child)
    assert world.rejected(world.p) == world.rejected(world.q) == {bad_id, child_id}
    assert not world.p.waiting_ids()
    world.assert_converged()


def test_update_with_missing_predecessor_waits_and_is_never_applied_alone(world: World) -> None:
    hidden_id, hidden = forge(ATTACKER, [world.base], [CounterAdd(world.ref(5), 1)])
    child_id, child = forge(
        ATTACKER, [hidden_id], [CounterAdd(world.ref(5), 10)], clock=3, sequence=2
    )
    step = world.p.handle(Received(ATTACKER.node_id, Updates([UPDATE_CODEC.encode(child)])), 0)
    assert world.p.waiting_ids() == {child_id}
    assert world.p.value()["n"] == 0
    wants = [out.message for out in step.outgoing if isinstance(out.message, Want)]
    assert wants == [Want([hidden_id])], "the missing predecessor is asked for"
    world.give(world.p, hidden)
    assert world.p.value()["n"] == 11
    assert not world.p.waiting_ids()


def test_waiting_buffer_stays_bounded_under_a_flood_of_orphans(
    make_replica: Callable[..., Replica],
) -> None:
    replica = make_replica(2, max_waiting_updates=5)
    step = Step()
    for n in range(50):
        _, orphan = forge(ATTACKER, [bytes([n + 1]) * 32], [], clock=5)
        replica.receive(orphan, step)
        assert len(replica.waiting_ids()) <= 5
    assert sum(isinstance(e, UpdateEvicted) for e in step.events) == 45
    assert replica.applied_ids() == []


def test_garbage_from_a_peer_never_raises(world: World) -> None:
    sender = ATTACKER.node_id
    replica = world.p
    inputs: list[object] = [
        "hello",
        None,
        Updates([b"", b"\x00\x01", b"\x93\xa6Update"]),
        Heads([b"\x11" * 32, world.base]),
        Want([b"\x12" * 32]),
        Updates([UPDATE_CODEC.encode(world.base_update)]),
    ]
    dropped = 0
    for message in inputs:
        step = replica.handle(Received(sender, message), 0)
        dropped += sum(isinstance(e, MessageDropped) for e in step.events)
    assert dropped == 5  # two foreign objects, three undecodable updates
    assert replica.value() == world.author.value()


def test_an_answer_with_the_wrong_update_does_not_fill_the_gap(world: World) -> None:
    # The waiting update names `wanted` by hash; a peer that answers the Want with some
    # other update (whatever it claims) cannot stand in for it.
    wanted_id, wanted = forge(ATTACKER, [world.base], [CounterAdd(world.ref(5), 1)])
    child_id, child = forge(ATTACKER, [wanted_id], [], clock=3, sequence=2)
    impostor_id, impostor = forge(ATTACKER, [world.base], [CounterAdd(world.ref(5), 100)])
    world.give(world.p, child, impostor)
    assert world.p.waiting_ids() == {child_id}
    assert impostor_id in world.p.applied_ids()
    assert child_id not in world.p.applied_ids()
    world.give(world.p, wanted)
    assert {wanted_id, child_id} <= set(world.p.applied_ids())
    assert world.p.value()["n"] == 101


@pytest.mark.parametrize(("levels", "valid"), [(64, True), (65, False)])
def test_nesting_is_bounded(world: World, levels: int, valid: bool) -> None:
    # Operation i creates a map inside the map created by operation i - 1 (counter i - 1
    # of this same update): the last one sits `levels` deep under the root.
    operations: list[Operation] = [MapPut(Ref(bytes(32), 0), "deep", NewMap())]
    operations += [MapPut(Ref(b"", level - 1), "k", NewMap()) for level in range(1, levels)]
    update_id, update = forge(ATTACKER, [world.base], operations)
    for replica in (world.p, world.q):
        world.give(replica, update)
        assert (update_id in replica.applied_ids()) is valid
    world.assert_converged()
    if valid:
        with pytest.raises(LocalError):
            world.p.transact([Put(("deep",) + ("k",) * (levels - 1), "k", NewMap())])
        world.p.transact([Put(("deep",) + ("k",) * (levels - 1), "k", 1)])
