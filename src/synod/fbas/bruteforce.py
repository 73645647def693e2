"""Brute-force FBAS analyses over synod `QuorumSet`s: the reference for tests and benchmarks.

Theory of operation
-------------------
Every answer here comes straight from the definitions (SCP paper sections 3 and 4.1) by
enumerating all subsets of the nodes, using only `synod.quorum.qset` for slice checks.
It shares no code with the SAT analyses in `synod.fbas.analysis`, which is the
point: the two are compared on small random networks.  Cost is exponential (about 2^n
quorum checks, 3^n for splitting sets), so keep n small (up to about 10).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import combinations

from synod.quorum.qset import QuorumSet, is_satisfied_by

QsetOf = Mapping[bytes, QuorumSet | None]


def _subsets(items: Sequence[bytes]) -> list[frozenset[bytes]]:
    return [
        frozenset(items[i] for i in range(len(items)) if mask >> i & 1)
        for mask in range(1, 1 << len(items))
    ]


def is_quorum_despite(qsets: QsetOf, nodes: frozenset[bytes], faulty: frozenset[bytes]) -> bool:
    """A quorum of the network with `faulty` deleted (paper Definition 11)."""
    if not nodes or nodes & faulty:
        return False
    present = nodes | faulty
    for node in nodes:
        qset = qsets.get(node)
        if qset is None or not is_satisfied_by(qset, present):
            return False
    return True


def all_quorums(qsets: QsetOf, faulty: frozenset[bytes] = frozenset()) -> list[frozenset[bytes]]:
    """Every quorum (of the network with `faulty` deleted)."""
    candidates = sorted(set(qsets) - faulty)
    return [s for s in _subsets(candidates) if is_quorum_despite(qsets, s, faulty)]


def has_disjoint_pair(quorums: Sequence[frozenset[bytes]]) -> bool:
    return any(not a & b for a, b in combinations(quorums, 2))


def enjoys_intersection(qsets: QsetOf) -> bool:
    return not has_disjoint_pair(all_quorums(qsets))


def minimal_quorums(qsets: QsetOf) -> list[frozenset[bytes]]:
    quorums = all_quorums(qsets)
    return [q for q in quorums if not any(other < q for other in quorums)]


def top_tier(qsets: QsetOf) -> frozenset[bytes]:
    result: frozenset[bytes] = frozenset()
    for quorum in minimal_quorums(qsets):
        result |= quorum
    return result


def smallest_group_union(
    groups: Sequence[frozenset[bytes]], accept: Callable[[frozenset[bytes]], bool]
) -> int | None:
    """The fewest groups whose union `accept`s, or None."""
    for size in range(len(groups) + 1):
        for chosen in combinations(groups, size):
            union: frozenset[bytes] = frozenset().union(*chosen)
            if accept(union):
                return size
    return None


def min_blocking_size(qsets: QsetOf, groups: Sequence[frozenset[bytes]]) -> int | None:
    """Fewest groups whose failure hits every quorum."""
    quorums = all_quorums(qsets)
    return smallest_group_union(groups, lambda failed: all(q & failed for q in quorums))


def min_splitting_size(
    qsets: QsetOf, groups: Sequence[frozenset[bytes]], within: frozenset[bytes] | None = None
) -> int | None:
    """Fewest groups whose deletion leaves two disjoint quorums (made of nodes of
    `within` when given)."""

    def splits(faulty: frozenset[bytes]) -> bool:
        quorums = all_quorums(qsets, faulty)
        if within is not None:
            quorums = [q for q in quorums if q <= within]
        return has_disjoint_pair(quorums)

    return smallest_group_union(groups, splits)
