"""The JSON document through the replica's local API and the `Core` contract."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from synod.core import (
    Broadcast,
    LocalError,
    Proposed,
    SetTimer,
    Started,
    Step,
    TimerFired,
)
from synod.crdt.messages import UPDATE_CODEC, Heads, NewCounter, NewList, NewMap, NewText, Updates
from synod.crdt.replica import (
    ANNOUNCE_TIMER,
    Delete,
    Increment,
    Insert,
    InsertText,
    LocalChange,
    Put,
    Remove,
    Replica,
    UpdateApplied,
)


def exchange(first: Replica, second: Replica) -> None:
    for source, target in ((first, second), (second, first)):
        for update_id in source.applied_ids():
            target.receive(UPDATE_CODEC.decode(source.encoded_update(update_id)), Step())


def test_nested_values_are_addressed_by_path(make_replica: Callable[..., Replica]) -> None:
    replica = make_replica(1)
    replica.transact(
        [
            Put((), "doc", NewMap()),
            Put(("doc",), "title", NewText()),
            InsertText(("doc", "title"), 0, "Hello"),
            Put(("doc",), "tags", NewList()),
            Insert(("doc", "tags"), 0, ["a", NewMap(), 3.5, None, True]),
            Put(("doc", "tags", 1), "votes", NewCounter()),
            Increment(("doc", "tags", 1, "votes"), 4),
            Delete(("doc", "tags"), 0),
            Put((), "gone", 1),
            Remove((), "gone"),
        ]
    )
    assert replica.value() == {
        "doc": {"tags": [{"votes": 4}, 3.5, None, True], "title": "Hello"},
    }
    assert replica.document.kind_at(("doc", "tags")) == "list"
    assert replica.value(("doc", "title")) == "Hello"


def test_a_failing_edit_undoes_the_whole_transaction(make_replica: Callable[..., Replica]) -> None:
    replica = make_replica(1)
    replica.transact([Put((), "t", NewText()), InsertText(("t",), 0, "keep")])
    before = (replica.value(), replica.applied_ids(), replica.document.structure())
    bad_edits = [
        [InsertText(("t",), 0, "x"), Put((), "k", 1), InsertText(("t",), 99, "y")],
        [Put((), "c", NewCounter()), Increment(("missing",), 1)],
        [Delete(("t",), 2, 5)],
        [Put((), "k", object())],  # type: ignore[arg-type]
        [InsertText(("t",), 1, "ab"), Delete(("t",), 0, 3), Insert(("t",), 0, [1])],
    ]
    for edits in bad_edits:
        with pytest.raises(LocalError):
            replica.transact(edits)  # type: ignore[arg-type]
        assert (replica.value(), replica.applied_ids(), replica.document.structure()) == before
    replica.transact([InsertText(("t",), 4, "!")])
    assert replica.value() == {"t": "keep!"}


def test_concurrent_typing_at_one_place_does_not_interleave(
    make_replica: Callable[..., Replica],
) -> None:
    # RGA keeps each typed run contiguous: the outcome is one run then the other.
    first, second = make_replica(1), make_replica(2)
    first.transact([Put((), "t", NewText())])
    exchange(first, second)
    for index, char in enumerate("abc"):
        first.transact([InsertText(("t",), index, char)])
    for index, char in enumerate("xyz"):
        second.transact([InsertText(("t",), index, char)])
    exchange(first, second)
    assert first.value() == second.value()
    assert first.value()["t"] in ("abcxyz", "xyzabc")


def test_concurrent_counter_increments_all_count(make_replica: Callable[..., Replica]) -> None:
    first, second = make_replica(1), make_replica(2)
    first.transact([Put((), "n", NewCounter())])
    exchange(first, second)
    first.transact([Increment(("n",), 5)])
    second.transact([Increment(("n",), -2), Increment(("n",), 10)])
    exchange(first, second)
    assert first.value()["n"] == second.value()["n"] == 13


def test_core_contract_announces_heads_and_persists_before_sending(
    make_replica: Callable[..., Replica],
) -> None:
    replica = make_replica(1, announce_interval_ms=250)
    for event in (Started(), TimerFired(ANNOUNCE_TIMER)):
        step = replica.handle(event, 0)
        assert step.outgoing == [Broadcast(Heads([]))]
        assert step.timers == [SetTimer(ANNOUNCE_TIMER, 250)]
    step = replica.handle(Proposed(LocalChange((Put((), "k", 1),))), 10)
    (applied,) = step.events
    assert isinstance(applied, UpdateApplied) and applied.local and applied.sequence == 1
    (record,) = step.persist
    (broadcast,) = step.outgoing
    assert isinstance(broadcast, Broadcast) and isinstance(broadcast.message, Updates)
    assert broadcast.message.updates == [record.value]
    assert replica.handle(TimerFired(ANNOUNCE_TIMER), 0).outgoing == [
        Broadcast(Heads([applied.update_id]))
    ]
    with pytest.raises(LocalError):
        replica.handle(Proposed("not a change"), 0)
