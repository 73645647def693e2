"""Strong eventual consistency: delivery order and duplicates do not matter.

Random editing sessions of three replicas that sync now and then produce a set of signed
updates.  Fresh replicas then receive all of them (a) in different random causal orders
(commutativity of concurrent updates), (b) in arbitrary order, relying on the waiting
buffer, and (c) with every update delivered several times (idempotence).  All must reach
the same document, tombstones included.  Last-writer-wins and counters are also checked
against values computed directly from the updates' operations.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.core import Step
from synod.crdt.messages import (
    UPDATE_CODEC,
    CounterAdd,
    MapPut,
    MapRemove,
    NewCounter,
    NewList,
    NewText,
    Update,
    body_id,
)
from synod.crdt.replica import (
    Delete,
    Edit,
    Increment,
    Insert,
    InsertText,
    Put,
    Remove,
    Replica,
)

KEYS = ("a", "b", "c")
Action = tuple[Any, ...]

actions = st.lists(
    st.one_of(
        st.tuples(
            st.just("text"),
            st.integers(0, 2),
            st.integers(0, 1000),
            st.text("xyz", min_size=1, max_size=4),
        ),
        st.tuples(st.just("erase"), st.integers(0, 2), st.integers(0, 1000), st.integers(1, 3)),
        st.tuples(st.just("put"), st.integers(0, 2), st.sampled_from(KEYS), st.integers(-5, 5)),
        st.tuples(st.just("remove"), st.integers(0, 2), st.sampled_from(KEYS)),
        st.tuples(st.just("add"), st.integers(0, 2), st.integers(-3, 3)),
        st.tuples(st.just("item"), st.integers(0, 2), st.integers(0, 1000), st.booleans()),
        st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(
            st.just("typing"),
            st.integers(0, 2),
            st.integers(0, 1000),
            st.text("pq", min_size=1, max_size=5),
            st.booleans(),
        ),
    ),
    min_size=1,
    max_size=25,
)


def edit_for(replica: Replica, action: Action) -> list[Edit]:
    kind, _, *args = action
    if kind == "text":
        position, text = args
        return [InsertText(("t",), position * (replica.document.length(("t",)) + 1) // 1001, text)]
    if kind == "erase":
        position, count = args
        length = replica.document.length(("t",))
        if length == 0:
            return []
        start = position * length // 1001
        return [Delete(("t",), start, min(count, length - start))]
    if kind == "put":
        return [Put((), args[0], args[1])]
    if kind == "remove":
        return [Remove((), args[0])]
    if kind == "add":
        return [Increment(("n",), args[0])]
    if kind == "typing":
        # One transaction of keystrokes, optionally ending with a backspace.
        position, text, backspace = args
        start = position * (replica.document.length(("t",)) + 1) // 1001
        edits: list[Edit] = [
            InsertText(("t",), start + offset, char) for offset, char in enumerate(text)
        ]
        if backspace:
            edits.append(Delete(("t",), start + len(text) - 1))
        return edits
    position, delete = args
    length = replica.document.length(("l",))
    if delete and length:
        return [Delete(("l",), position * length // 1001)]
    return [Insert(("l",), position * (length + 1) // 1001, [position])]


def sync(source: Replica, target: Replica) -> None:
    step = Step()
    for update_id in source.applied_ids():
        target.receive(UPDATE_CODEC.decode(source.encoded_update(update_id)), step)


def run_session(
    make_replica: Callable[..., Replica], script: list[Action]
) -> tuple[list[Replica], list[bytes]]:
    replicas = [make_replica(seed) for seed in (1, 2, 3)]
    replicas[0].transact(
        [Put((), "t", NewText()), Put((), "n", NewCounter()), Put((), "l", NewList())]
    )
    for other in replicas[1:]:
        sync(replicas[0], other)
    for action in script:
        if action[0] == "sync":
            sync(replicas[action[1]], replicas[action[2]])
            continue
        replica = replicas[action[1]]
        replica.transact(edit_for(replica, action))
    every: dict[bytes, bytes] = {}
    for replica in replicas:
        for update_id in replica.applied_ids():
            every[update_id] = replica.encoded_update(update_id)
    return replicas, list(every.values())


def causal_shuffle(encoded: list[bytes], rng: random.Random) -> list[bytes]:
    updates = {body_id(UPDATE_CODEC.decode(e).body): e for e in encoded}
    waiting = dict(updates)
    delivered: set[bytes] = set()
    order: list[bytes] = []
    while waiting:
        ready = [
            update_id
            for update_id, e in waiting.items()
            if all(p in delivered for p in UPDATE_CODEC.decode(e).body.predecessors)
        ]
        chosen = rng.choice(sorted(ready))
        order.append(waiting.pop(chosen))
        delivered.add(chosen)
    return order


def deliver(replica: Replica, encoded: list[bytes]) -> None:
    step = Step()
    for e in encoded:
        replica.receive(UPDATE_CODEC.decode(e), step)


def fingerprint(replica: Replica) -> tuple[Any, Any]:
    return replica.value(), replica.document.structure()


@settings(max_examples=40, deadline=None)
@given(script=actions, seed=st.integers(0, 2**32))
def test_any_causal_delivery_order_gives_the_same_document(
    make_replica: Callable[..., Replica], script: list[Action], seed: int
) -> None:
    _, encoded = run_session(make_replica, script)
    rng = random.Random(seed)
    results = []
    for index in range(3):
        replica = make_replica(10 + index)
        deliver(replica, causal_shuffle(encoded, rng))
        assert len(replica.applied_ids()) == len(encoded)
        results.append(fingerprint(replica))
    assert results[0] == results[1] == results[2]


@settings(max_examples=40, deadline=None)
@given(script=actions, seed=st.integers(0, 2**32))
def test_arbitrary_order_with_duplicates_converges_through_the_buffer(
    make_replica: Callable[..., Replica], script: list[Action], seed: int
) -> None:
    replicas, encoded = run_session(make_replica, script)
    rng = random.Random(seed)
    reference = make_replica(20)
    deliver(reference, causal_shuffle(encoded, rng))
    shuffled = encoded * 3
    rng.shuffle(shuffled)
    replica = make_replica(21)
    deliver(replica, shuffled)
    assert not replica.waiting_ids()
    assert fingerprint(replica) == fingerprint(reference)
    applied_before = replica.applied_ids()
    deliver(replica, encoded)
    assert replica.applied_ids() == applied_before, "duplicates change nothing"
    assert fingerprint(replica) == fingerprint(reference)
    for original in replicas:
        deliver(original, encoded)
        assert fingerprint(original) == fingerprint(reference)


@settings(max_examples=40, deadline=None)
@given(script=actions)
def test_registers_and_counters_follow_their_rules(
    make_replica: Callable[..., Replica], script: list[Action]
) -> None:
    _, encoded = run_session(make_replica, script)
    updates: list[tuple[bytes, Update]] = []
    for e in encoded:
        update = UPDATE_CODEC.decode(e)
        updates.append((body_id(update.body), update))
    # Computed from the operations alone: the greatest (clock, id, counter) wins a key;
    # a counter is the sum of every addition.
    winners: dict[str, tuple[tuple[int, bytes, int], Any]] = {}
    total = 0
    for update_id, update in updates:
        counter = 0
        for operation in update.body.operations:
            if isinstance(operation, MapPut | MapRemove) and operation.target.update == bytes(32):
                stamp = (update.body.clock, update_id, counter)
                value = operation.value if isinstance(operation, MapPut) else "<removed>"
                if operation.key not in winners or winners[operation.key][0] < stamp:
                    winners[operation.key] = (stamp, value)
            if isinstance(operation, CounterAdd):
                total += operation.delta
            counter += 1 if isinstance(operation, MapPut | MapRemove) else 0
            if not isinstance(operation, MapPut | MapRemove | CounterAdd):
                counter += len(getattr(operation, "text", "")) + len(
                    getattr(operation, "values", [])
                )
    replica = make_replica(30)
    deliver(replica, encoded)
    document = replica.value()
    for key in KEYS:
        if key in winners and winners[key][1] != "<removed>":
            assert document[key] == winners[key][1]
        else:
            assert key not in document
    assert document["n"] == total
