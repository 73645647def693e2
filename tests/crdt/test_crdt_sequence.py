"""RGA integration checked against the definition: a tree walked in pre-order.

Roh et al. (2011) and Kleppmann et al. (2017, section 3.2) define the order of an RGA
as a tree: each element is a child of the element it was inserted after, siblings are
ordered by descending key, and the document is the pre-order walk.  The reference below
builds that tree directly; the chunked skip-scan in `synod.crdt.sequence` must produce
the same order whatever the (causal) delivery order and chunk size.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.crdt import sequence as sequence_module
from synod.crdt.sequence import Sequence

SEQUENCE_HANDLE = 0
History = tuple[dict[int, int], dict[int, tuple[int, int]], list[int]]


@contextmanager
def chunks_of(size: int) -> Iterator[None]:
    """Small chunks make every test cross chunk boundaries and split often."""
    original = sequence_module.MAX_CHUNK_ELEMENTS
    sequence_module.MAX_CHUNK_ELEMENTS = size
    try:
        yield
    finally:
        sequence_module.MAX_CHUNK_ELEMENTS = original


def reference_order(parents: dict[int, int], keys: dict[int, tuple[int, int]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for element, parent in parents.items():
        children.setdefault(parent, []).append(element)
    order: list[int] = []
    stack = sorted(children.get(SEQUENCE_HANDLE, []), key=keys.__getitem__)
    while stack:
        element = stack.pop()
        order.append(element)
        stack.extend(sorted(children.get(element, []), key=keys.__getitem__))
    return order


@st.composite
def insertion_histories(draw: st.DrawFn) -> History:
    """Elements 1..n with a parent each, keys greater than the parent's, a causal order."""
    count = draw(st.integers(1, 40))
    parents: dict[int, int] = {}
    keys: dict[int, tuple[int, int]] = {SEQUENCE_HANDLE: (0, 0)}
    for element in range(1, count + 1):
        parent = draw(st.sampled_from([SEQUENCE_HANDLE, *parents]))
        parents[element] = parent
        clock = keys[parent][0] + draw(st.integers(1, 3))
        keys[element] = (clock, draw(st.integers(0, 10**6)) * 100 + element)
    priority = draw(st.permutations(list(parents)))
    order: list[int] = []
    placed = {SEQUENCE_HANDLE}
    waiting = list(priority)
    while waiting:
        ready = next(e for e in waiting if parents[e] in placed)
        waiting.remove(ready)
        order.append(ready)
        placed.add(ready)
    return parents, keys, order


@settings(max_examples=150, deadline=None)
@given(history=insertion_histories(), chunk_size=st.sampled_from([2, 5, 512]))
def test_rga_order_is_the_preorder_walk_of_the_insertion_tree(
    history: History, chunk_size: int
) -> None:
    parents, keys, delivery = history
    with chunks_of(chunk_size):
        sequence = Sequence(SEQUENCE_HANDLE, [None] * (len(parents) + 1))
        for element in delivery:
            sequence.insert_after(parents[element], [element], keys.__getitem__)
        assert list(sequence.all_handles()) == reference_order(parents, keys)


@settings(max_examples=60, deadline=None)
@given(
    history=insertion_histories(),
    hidden=st.sets(st.integers(1, 40)),
    chunk_size=st.sampled_from([2, 3, 512]),
)
def test_positions_count_only_visible_elements(
    history: History, hidden: set[int], chunk_size: int
) -> None:
    parents, keys, delivery = history
    with chunks_of(chunk_size):
        sequence = Sequence(SEQUENCE_HANDLE, [None] * (len(parents) + 1))
        for element in delivery:
            sequence.insert_after(parents[element], [element], keys.__getitem__)
        hidden &= set(parents)
        for element in hidden:
            assert sequence.set_visible(element, False)
            assert not sequence.set_visible(element, False), "deleting twice changes nothing"
        expected = [e for e in reference_order(parents, keys) if e not in hidden]
        assert list(sequence.visible_handles()) == expected
        assert len(sequence) == len(expected)
        assert [sequence.element_at(i) for i in range(len(expected))] == expected
        with pytest.raises(IndexError):
            sequence.element_at(len(expected))


def test_concurrent_insertions_at_one_place_order_by_descending_key() -> None:
    # Three elements inserted after the start concurrently: the greatest key comes first
    # (hand-computed from the RGA rule), whatever order they arrive in.
    keys = {SEQUENCE_HANDLE: (0, 0), 1: (1, 5), 2: (1, 9), 3: (2, 1)}
    for delivery in ([1, 2, 3], [3, 2, 1], [2, 3, 1]):
        sequence = Sequence(SEQUENCE_HANDLE, [None] * 4)
        for element in delivery:
            sequence.insert_after(SEQUENCE_HANDLE, [element], keys.__getitem__)
        assert list(sequence.all_handles()) == [3, 2, 1]


def test_removing_an_insertion_restores_the_previous_order() -> None:
    keys = {SEQUENCE_HANDLE: (0, 0), 1: (1, 1), 2: (2, 1), 3: (3, 1)}
    sequence = Sequence(SEQUENCE_HANDLE, [None] * 4)
    sequence.insert_after(SEQUENCE_HANDLE, [1], keys.__getitem__)
    sequence.insert_after(1, [2, 3], keys.__getitem__)
    sequence.remove(3)
    sequence.remove(2)
    assert list(sequence.all_handles()) == [1]
    assert len(sequence) == 1
