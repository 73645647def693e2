"""Budgets that keep one host from monopolising a listener: slots, bytes, turns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synod.runtime.admission import ByteBudget, ConnectionSlots, FairQueue


def test_one_host_gets_at_most_its_share_of_slots() -> None:
    slots = ConnectionSlots(total=10, per_host=3)
    admitted = [slots.admit("10.0.0.9", lambda: None, now=0) for _ in range(5)]
    assert sum(slot is not None for slot in admitted) == 3
    assert slots.refused == 2
    assert slots.admit("10.0.0.1", lambda: None, now=0) is not None


def test_a_full_listener_makes_room_from_the_busiest_host() -> None:
    closed: list[int] = []
    slots = ConnectionSlots(total=4, per_host=4)
    for number in range(4):
        assert slots.admit("attacker", lambda number=number: closed.append(number), now=number)
    honest = slots.admit("honest", lambda: None, now=10)
    assert honest is not None
    assert closed == [0], "the attacker's least recently active connection makes room"
    assert (slots.held_by("attacker"), slots.held_by("honest"), len(slots)) == (3, 1, 4)


def test_the_busiest_host_cannot_evict_others_or_itself() -> None:
    slots = ConnectionSlots(total=4, per_host=4)
    for host in ("a", "a", "b", "b"):
        assert slots.admit(host, lambda: None, now=0)
    assert slots.admit("a", lambda: None, now=1) is None
    assert slots.admit("c", lambda: None, now=1) is not None  # a or b hold 2 > 0 + 1
    assert slots.admit("c", lambda: None, now=1) is None  # now 2 <= 1 + 1: fair already


def test_released_slots_can_be_taken_again() -> None:
    slots = ConnectionSlots(total=2, per_host=1)
    first = slots.admit("a", lambda: None, now=0)
    assert first is not None
    slots.release(first)
    slots.release(first)
    assert len(slots) == 0
    assert slots.admit("a", lambda: None, now=0) is not None


def test_byte_budget_bounds_each_host_and_the_process() -> None:
    budget = ByteBudget(total=100, per_host=60)
    assert budget.reserve("a", 60)
    assert not budget.reserve("a", 1)
    assert budget.reserve("b", 40)
    assert not budget.reserve("c", 1)
    budget.release("a", 60)
    assert budget.reserve("c", 50)
    assert (budget.used, budget.refused) == (90, 2)
    with pytest.raises(ValueError):
        budget.release("c", 51)


def test_fair_queue_serves_a_cheap_source_between_the_expensive_ones() -> None:
    queue: FairQueue[str, str] = FairQueue(quantum_bytes=1_000)
    for number in range(10):
        queue.put("attacker", f"big{number}", 68_000)
    for number in range(3):
        queue.put("driver", f"small{number}", 500)
    order = queue.take(100)
    assert order.index("small2") < order.index("big1"), order
    assert sorted(order) == sorted([f"big{n}" for n in range(10)] + [f"small{n}" for n in range(3)])


def test_fair_queue_bounds_each_source_on_its_own() -> None:
    queue: FairQueue[str, int] = FairQueue(per_source_items=2, per_source_bytes=1_000)
    queue.put("a", 1, 10)
    queue.put("a", 2, 10)
    assert not queue.has_room("a")
    assert queue.has_room("b")
    queue.put("b", 3, 5_000)
    assert not queue.has_room("b")
    queue.take(1)
    assert queue.has_room("a") or queue.has_room("b")


@given(
    st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(min_value=0, max_value=200_000)),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=10),
)
def test_fair_queue_keeps_each_sources_order_and_loses_nothing(
    puts: list[tuple[str, int]], limit: int
) -> None:
    queue: FairQueue[str, tuple[str, int]] = FairQueue(quantum_bytes=4_096)
    for position, (source, cost) in enumerate(puts):
        queue.put(source, (source, position), cost)
    taken: list[tuple[str, int]] = []
    while len(queue):
        batch = queue.take(limit)
        assert 1 <= len(batch) <= limit
        taken.extend(batch)
    assert sorted(taken) == sorted((source, n) for n, (source, _) in enumerate(puts))
    for source in "abcd":
        positions = [n for s, n in taken if s == source]
        assert positions == sorted(positions)
