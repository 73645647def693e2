"""Persistent maps chain -> position with structural sharing, for the causal index.

Theory of operation: the causal past of an update is, in a chain decomposition of the
DAG (`synod.crdt.causal`), one position per chain.  Storing that as a dictionary per
update costs memory proportional to the number of chains at every fork and merge, and
chains are cheap to make: every update without predecessors opens one.  So one author
with many such updates would make every later merge by honest authors copy a map as
large as everything it ever sent (issue 15, finding 3).

Here a map is a fixed-depth radix tree of tuples (32-way, `DEPTH` levels, so up to
2**25 chains), never modified once built: raising one entry copies the `DEPTH` nodes on
its path and shares the rest, and the union of two maps (the entrywise maximum) walks
only the subtrees that are not the same object in both.  A merge of updates whose
pasts differ in k chains costs O(k * DEPTH * 32) time and memory, whatever the total
number of chains.  Absent entries read as 0 (no position of that chain is in the past).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

BITS = 5
WIDTH = 1 << BITS
DEPTH = 5
CAPACITY = 1 << (BITS * DEPTH)
"""Chains a map can hold (33,554,432: more than the updates a replica keeps)."""
_MASK = WIDTH - 1
_LEAF_SHIFT = 0
_TOP_SHIFT = BITS * (DEPTH - 1)
_EMPTY_LEAF: tuple[int, ...] = (0,) * WIDTH

Positions = Any
"""A map: None (empty) or the root tuple of the tree."""

EMPTY: Positions = None


def get(node: Positions, chain: int) -> int:
    """The position of `chain` (0 when absent)."""
    shift = _TOP_SHIFT
    while node is not None:
        if shift == 0:
            value: int = node[chain & _MASK]
            return value
        node = node[(chain >> shift) & _MASK]
        shift -= BITS
    return 0


def raised(node: Positions, chain: int, position: int) -> Positions:
    """The map with `chain` at least at `position` (the same object if already so)."""
    if not 0 <= chain < CAPACITY:
        raise ValueError(f"chain {chain} outside 0..{CAPACITY - 1}")
    if get(node, chain) >= position:
        return node
    return _raised(node, chain, position, _TOP_SHIFT)


def _raised(node: Positions, chain: int, position: int, shift: int) -> Positions:
    index = (chain >> shift) & _MASK
    if shift == 0:
        leaf = list(node if node is not None else _EMPTY_LEAF)
        leaf[index] = position
        return tuple(leaf)
    children = list(node if node is not None else (None,) * WIDTH)
    children[index] = _raised(children[index], chain, position, shift - BITS)
    return tuple(children)


def union(first: Positions, second: Positions) -> Positions:
    """The entrywise maximum; shares every subtree the two have in common."""
    return _union(first, second, _TOP_SHIFT)


def _union(first: Positions, second: Positions, shift: int) -> Positions:  # noqa: PLR0911
    if first is second or second is None:
        return first
    if first is None:
        return second
    if shift == 0:
        merged = tuple(max(a, b) for a, b in zip(first, second, strict=True))
        if merged == first:
            return first
        return second if merged == second else merged
    children = tuple(_union(a, b, shift - BITS) for a, b in zip(first, second, strict=True))
    if all(child is old for child, old in zip(children, first, strict=True)):
        return first
    if all(child is old for child, old in zip(children, second, strict=True)):
        return second
    return children


def items(node: Positions) -> Iterator[tuple[int, int]]:
    """(chain, position) for every chain with a position above 0, ascending."""
    yield from _items(node, 0, _TOP_SHIFT)


def _items(node: Positions, prefix: int, shift: int) -> Iterator[tuple[int, int]]:
    if node is None:
        return
    for index, child in enumerate(node):
        key = prefix | (index << shift)
        if shift == 0:
            if child:
                yield key, child
        elif child is not None:
            yield from _items(child, key, shift - BITS)
