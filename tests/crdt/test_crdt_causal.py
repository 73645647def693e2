"""The update graph's reachability index and the bounded waiting buffer.

`UpdateGraph.is_ancestor` must equal reachability in the DAG (computed here by brute
force); `missing_from` must return exactly the updates outside the causal past of the
given heads, ancestors first.  The waiting buffer must stay within its bounds and evict
the longest-waiting update first.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.crdt.causal import UpdateGraph, Waiting, WaitingBuffer


@st.composite
def dags(draw: st.DrawFn) -> list[list[int]]:
    """Predecessor lists of updates 1..n (each names earlier updates only)."""
    count = draw(st.integers(1, 30))
    result: list[list[int]] = []
    for ordinal in range(1, count + 1):
        earlier = list(range(1, ordinal))
        chosen: list[int] = []
        if earlier:
            chosen = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True))
        result.append(sorted(chosen))
    return result


def build(predecessors: list[list[int]]) -> UpdateGraph:
    graph = UpdateGraph()
    for index, named in enumerate(predecessors, start=1):
        ordinal, twin = graph.add(index.to_bytes(32, "big"), b"a" * 32, index, 1, named)
        assert ordinal == index and twin is None
    return graph


def brute_force_past(predecessors: list[list[int]], ordinal: int) -> set[int]:
    seen = {ordinal}
    stack = [ordinal]
    while stack:
        for parent in predecessors[stack.pop() - 1]:
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


@settings(max_examples=200, deadline=None)
@given(predecessors=dags())
def test_is_ancestor_equals_reachability(predecessors: list[list[int]]) -> None:
    graph = build(predecessors)
    count = len(predecessors)
    for descendant in range(1, count + 1):
        past = brute_force_past(predecessors, descendant)
        for ancestor in range(1, count + 1):
            assert graph.is_ancestor(ancestor, descendant) == (ancestor in past)
        assert graph.is_ancestor(0, descendant), "the root is everyone's ancestor"


@settings(max_examples=150, deadline=None)
@given(predecessors=dags(), data=st.data())
def test_missing_from_heads_is_the_complement_of_their_past(
    predecessors: list[list[int]], data: st.DataObject
) -> None:
    graph = build(predecessors)
    count = len(predecessors)
    known = data.draw(st.lists(st.integers(1, count), max_size=3))
    covered: set[int] = set()
    for head in known:
        covered |= brute_force_past(predecessors, head)
    missing = graph.missing_from(known)
    assert set(missing) == set(range(1, count + 1)) - covered
    position = {ordinal: index for index, ordinal in enumerate(missing)}
    for ordinal in missing:
        for parent in predecessors[ordinal - 1]:
            if parent in position:
                assert position[parent] < position[ordinal], "ancestors are sent first"


@settings(max_examples=100, deadline=None)
@given(predecessors=dags())
def test_heads_are_the_updates_nobody_names(predecessors: list[list[int]]) -> None:
    graph = build(predecessors)
    named = {parent for named_list in predecessors for parent in named_list}
    assert graph.heads == set(range(1, len(predecessors) + 1)) - named


def test_same_author_and_sequence_is_reported_as_a_twin() -> None:
    graph = UpdateGraph()
    graph.add(b"\x01" * 32, b"a" * 32, 1, 1, [])
    _, twin = graph.add(b"\x02" * 32, b"a" * 32, 1, 1, [])
    assert twin == 1
    _, other = graph.add(b"\x03" * 32, b"b" * 32, 1, 1, [])
    assert other is None, "another author's sequence 1 is no equivocation"


def _waiting(size: int, missing: set[bytes]) -> Waiting:
    return Waiting(b"", b"a" * 32, size, missing, None)


def test_buffer_evicts_the_longest_waiting_update_when_full() -> None:
    buffer = WaitingBuffer(max_updates=3, max_bytes=10**6)
    ids = [bytes([n]) * 32 for n in range(5)]
    evicted: list[bytes] = []
    for update_id in ids:
        evicted += buffer.add(update_id, _waiting(10, {b"missing" + update_id}))
    assert evicted == ids[:2]
    assert list(buffer.entries) == ids[2:]
    assert len(buffer) == 3


def test_buffer_byte_bound_holds() -> None:
    buffer = WaitingBuffer(max_updates=100, max_bytes=100)
    evicted: list[bytes] = []
    for n in range(10):
        evicted += buffer.add(bytes([n]) * 32, _waiting(30, {b"x"}))
        assert buffer.total_bytes <= 100
    assert len(evicted) == 7
    assert buffer.add(b"big" * 11, _waiting(101, {b"x"})) == [b"big" * 11]


def test_buffer_releases_an_update_once_all_its_predecessors_arrived() -> None:
    buffer = WaitingBuffer()
    buffer.add(b"c" * 32, _waiting(1, {b"a" * 32, b"b" * 32}))
    assert buffer.arrived(b"a" * 32) == []
    assert buffer.arrived(b"b" * 32) == [b"c" * 32]
    assert buffer.remove(b"c" * 32) is not None
    assert not buffer.waiting_on
    assert buffer.total_bytes == 0
