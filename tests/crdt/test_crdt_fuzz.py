"""Randomly forged updates: every correct replica reaches the same verdicts.

A Byzantine author signs random transactions whose references, clocks and sequence
numbers are sometimes right and often wrong.  Three correct replicas receive them in
different orders (the second in reverse, so most updates wait for predecessors).  The
rule under test (Kleppmann, PaPoC 2022, section 4): validity depends only on the update
and its causal past, so all replicas apply and reject the same updates, never raise,
and hold the same document.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.core import Step
from synod.crdt.messages import (
    UPDATE_CODEC,
    UPDATE_DOMAIN,
    CounterAdd,
    ListInsert,
    MapPut,
    MapRemove,
    NewCounter,
    NewList,
    NewMap,
    NewText,
    Operation,
    Ref,
    SequenceDelete,
    Span,
    TextInsert,
    Update,
    UpdateBody,
    body_id,
)
from synod.crdt.replica import Insert, InsertText, Put, Replica, UpdateApplied, UpdateRejected
from synod.crypto import KeyPair

ATTACKER = KeyPair.from_seed(b"\x77" * 32)


def base_update(make_replica: Callable[..., Replica]) -> tuple[bytes, Update]:
    author = make_replica(1)
    author.transact(
        [
            Put((), "t", NewText()),
            InsertText(("t",), 0, "ab"),
            Put((), "l", NewList()),
            Insert(("l",), 0, [1, NewMap()]),
            Put((), "n", NewCounter()),
        ]
    )
    (base_id,) = author.applied_ids()
    return base_id, UPDATE_CODEC.decode(author.encoded_update(base_id))


@st.composite
def forged_histories(draw: st.DrawFn) -> list[tuple[list[int], list[tuple[object, ...]], int, int]]:
    """Per update: predecessors (indexes, -1 = base), operation recipes, clock and
    sequence offsets (0 = correct)."""
    count = draw(st.integers(1, 6))
    history = []
    for index in range(count):
        predecessors = draw(
            st.lists(st.integers(-1, index - 1), min_size=1, max_size=3, unique=True)
        )
        recipes = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["put", "remove", "text", "list", "delete", "add"]),
                    st.integers(0, 20),
                    st.integers(0, 20),
                    st.integers(1, 3),
                ),
                max_size=3,
            )
        )
        clock_offset = draw(st.sampled_from([0] * 8 + [1, -1]))
        sequence_offset = draw(st.sampled_from([0] * 9 + [1]))
        history.append((predecessors, recipes, clock_offset, sequence_offset))
    return history


# Counters of the base update (by the rule that operations consume counters in order):
# text "t" 0 with "a" 1 and "b" 2, list "l" 3 with items 4 (the number 1) and 5 (a map),
# counter "n" 6.
TARGETS = {"put": 5, "remove": 5, "text": 0, "list": 3, "delete": 0, "add": 6}
ELEMENTS = {"text": 1, "list": 4, "delete": 2}


def make_ref(choice: int, kind: str, base_id: bytes, earlier: list[bytes]) -> Ref:
    """Mostly the right reference for `kind`, sometimes a subtly or plainly wrong one."""
    if choice <= 4 or choice > 12:  # an element of the right sequence, or the right object
        return Ref(base_id, ELEMENTS.get(kind, TARGETS[kind]))
    if choice == 5:  # the start of the sequence (the object itself)
        return Ref(base_id, TARGETS[kind])
    if choice <= 9 and earlier:  # typed by an earlier forgery: an ancestor or concurrent
        return Ref(earlier[(choice - 6) % len(earlier)], 0)
    if choice == 10:
        return Ref(b"", 0)  # this update's first counter
    if choice == 11:
        return Ref(base_id, (TARGETS[kind] + 2) % 7)  # another object or element
    return Ref(b"\x5a" * 32, 0)  # an unknown hash


def make_operation(recipe: tuple[object, ...], base_id: bytes, earlier: list[bytes]) -> Operation:
    kind, first, second, count = recipe
    assert isinstance(kind, str) and isinstance(first, int) and isinstance(second, int)
    assert isinstance(count, int)
    right_target = first <= 8 or first > 12
    target = (
        Ref(base_id, TARGETS[kind]) if right_target else make_ref(first, kind, base_id, earlier)
    )
    other = make_ref(second, kind, base_id, earlier)
    if kind == "put":
        return MapPut(target, "k", [1, NewMap(), NewText()][count - 1])
    if kind == "remove":
        return MapRemove(target, "k")
    if kind == "text":
        return TextInsert(target, other, "xyz"[:count])
    if kind == "list":
        return ListInsert(target, other, [count] * count)
    if kind == "delete":
        return SequenceDelete(target, [Span(other.update, other.counter, count)])
    return CounterAdd(target, count)


def forge_all(
    base_id: bytes, history: list[tuple[list[int], list[tuple[object, ...]], int, int]]
) -> list[Update]:
    ids: list[bytes] = []
    clocks: dict[bytes, int] = {base_id: 1}
    sequences: dict[bytes, int] = {}
    updates: list[Update] = []
    for predecessors, recipes, clock_offset, sequence_offset in history:
        named = sorted({base_id if p < 0 else ids[p] for p in predecessors})
        clock = 1 + max(clocks[p] for p in named) + clock_offset
        sequence = 1 + max((sequences[p] for p in named if p in sequences), default=0)
        # Every forgery first types one character, so that counter 0 of any forged update
        # is a character of "t" that later forgeries may (validly or not) refer to.
        operations: list[Operation] = [TextInsert(Ref(base_id, 0), Ref(base_id, 1), "w")]
        operations += [make_operation(recipe, base_id, ids) for recipe in recipes]
        body = UpdateBody(
            ATTACKER.node_id, sequence + sequence_offset, max(clock, 1), named, operations
        )
        update_id = body_id(body)
        updates.append(Update(body, ATTACKER.sign(UPDATE_DOMAIN, update_id)))
        ids.append(update_id)
        clocks[update_id] = body.clock
        sequences[update_id] = body.sequence
    return updates


@settings(max_examples=150, deadline=None)
@given(history=forged_histories(), seed=st.integers(0, 2**32))
def test_random_forgeries_get_the_same_verdict_everywhere(
    make_replica: Callable[..., Replica],
    history: list[tuple[list[int], list[tuple[object, ...]], int, int]],
    seed: int,
) -> None:
    base_id, base = base_update(make_replica)
    updates = forge_all(base_id, history)
    shuffled = list(updates)
    random.Random(seed).shuffle(shuffled)
    outcomes = []
    for seed_of_replica, order in ((2, updates), (3, updates[::-1]), (4, shuffled)):
        replica = make_replica(seed_of_replica)
        step = Step()
        for update in [base, *order]:
            replica.receive(update, step)
        applied = {e.update_id for e in step.events if isinstance(e, UpdateApplied)}
        rejected = {e.update_id for e in step.events if isinstance(e, UpdateRejected)}
        assert applied.isdisjoint(rejected)
        outcomes.append(
            (
                applied,
                rejected,
                replica.waiting_ids(),
                replica.value(),
                replica.document.structure(),
            )
        )
    assert outcomes[0] == outcomes[1] == outcomes[2]
