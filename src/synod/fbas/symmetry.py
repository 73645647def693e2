"""Interchangeable nodes and organisations, and symmetry-breaking clauses for them.

Theory of operation
-------------------
Real and synthetic top tiers are highly symmetric: the validators of one organisation
sit in one inner set and trust the same quorum set, and organisations of the same size
and threshold sit side by side.  A SAT solver that must prove "no smaller blocking or
splitting set exists" otherwise re-proves the same fact for every permutation of them
(a pigeonhole-like search that grows exponentially with the number of organisations).

We look for two kinds of permutation sigma of the nodes, and keep those that map the
network to itself: for every node x, sigma(qset(x)) = qset(sigma(x)) after sorting, and
the grouping in use (organisation, domain, ...) maps onto itself.

- a *node swap* (u v): two validators next to each other in some validators list;
- a *block swap* (L1 L2): two sibling inner sets that list only validators, with the
  same threshold and size, the j-th member of one exchanged with the j-th of the other.

Verified swaps generate a group in which every connected class of nodes (or of blocks)
can be permuted freely.  Lex-leader constraints then keep, from each orbit of
solutions, the one whose per-node vectors are sorted in descending order of node index
(within a class of nodes) and whose block vectors are sorted likewise: sorting within
classes, then sorting blocks (which moves a sorted block onto a sorted block) reaches
that representative from any solution, so at least one optimum always survives.  Block
swaps are only used when each block is exactly one class of node swaps, so the two sorts
never fight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from synod.fbas.network import Fbas, Threshold, bits_from, iter_bits, threshold_of

Lit = int | bool


@dataclass(frozen=True)
class Symmetries:
    node_pairs: tuple[tuple[int, int], ...]
    """Interchangeable nodes (u < v)."""
    block_pairs: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    """Interchangeable blocks, members aligned by position (first block has the lower
    first index)."""

    def orbits(self, size: int) -> list[int]:
        """Representative of each node's orbit under the verified swaps (union-find)."""
        parent = list(range(size))

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        def join(a: int, b: int) -> None:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)

        for u, v in self.node_pairs:
            join(u, v)
        for first, second in self.block_pairs:
            for u, v in zip(first, second, strict=True):
                join(u, v)
        return [find(x) for x in range(size)]


def _image(
    qset: Threshold, mapping: dict[int, int], moved: int, memo: dict[int, Threshold]
) -> Threshold:
    if not qset.member_bits & moved:
        return qset
    found = memo.get(id(qset))
    if found is None:
        found = threshold_of(
            qset.threshold,
            (mapping.get(v, v) for v in qset.validators),
            (_image(inner, mapping, moved, memo) for inner in qset.inner),
        )
        memo[id(qset)] = found
    return found


def _holders(fbas: Fbas) -> list[tuple[Threshold, int]]:
    """Each distinct quorum set with the bitset of the nodes that hold it."""
    by_qset: dict[Threshold, int] = {}
    for node, qset in enumerate(fbas.qsets):
        if qset is not None:
            by_qset[qset] = by_qset.get(qset, 0) | 1 << node
    return list(by_qset.items())


def _is_automorphism(
    fbas: Fbas,
    mapping: dict[int, int],
    partition: dict[int, int],
    holders: Sequence[tuple[Threshold, int]],
) -> bool:
    """True when the permutation `mapping` (identity elsewhere) maps the network and the
    grouping (node -> group id) onto themselves."""
    memo: dict[int, Threshold] = {}
    moved = bits_from(mapping)
    # A node that stays put must keep its quorum set: checked once per distinct quorum
    # set rather than per node (hundreds of watchers share a few quorum sets).
    for shared, nodes in holders:
        affected = nodes & ~moved and shared.member_bits & moved
        if affected and _image(shared, mapping, moved, memo) != shared:
            return False
    for x, y in mapping.items():
        qset, target = fbas.qsets[x], fbas.qsets[y]
        if qset is None or target is None:
            if qset is not target:
                return False
            continue
        if _image(qset, mapping, moved, memo) != target:
            return False
    # sigma is an involution: it maps the grouping onto itself when the group of
    # sigma(n) is a function of the group of n, checked over every touched group.
    touched = {partition[x] for x in mapping}
    group_image: dict[int, int] = {}
    for node, group in partition.items():
        if group in touched:
            image = partition[mapping.get(node, node)]
            if group_image.setdefault(group, image) != image:
                return False
    return True


def _all_thresholds(fbas: Fbas) -> list[Threshold]:
    seen: dict[Threshold, None] = {}
    stack = [q for q in fbas.qsets if q is not None]
    while stack:
        qset = stack.pop()
        if qset in seen:
            continue
        seen[qset] = None
        stack.extend(qset.inner)
    return list(seen)


def find_symmetries(fbas: Fbas, grouping: str | None = None) -> Symmetries:
    """Verified node swaps and block swaps (see the module docstring)."""
    partition: dict[int, int] = {}
    for group_id, (_, bits) in enumerate(fbas.groups(grouping)):
        for node in iter_bits(bits):
            partition[node] = group_id
    thresholds = _all_thresholds(fbas)
    node_candidates: set[tuple[int, int]] = set()
    block_candidates: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    for qset in thresholds:
        for u, v in pairwise(qset.validators):
            node_candidates.add((min(u, v), max(u, v)))
        leaves = [inner for inner in qset.inner if not inner.inner and inner.validators]
        by_shape: dict[tuple[int, int], list[tuple[int, ...]]] = {}
        for leaf in leaves:
            by_shape.setdefault((leaf.threshold, len(leaf.validators)), []).append(leaf.validators)
        for blocks in by_shape.values():
            ordered = sorted(blocks)
            for first, second in pairwise(ordered):
                if not set(first) & set(second):
                    block_candidates.add((first, second))
    holders = _holders(fbas)
    node_pairs = tuple(
        sorted(
            pair
            for pair in node_candidates
            if _is_automorphism(fbas, {pair[0]: pair[1], pair[1]: pair[0]}, partition, holders)
        )
    )
    classes = Symmetries(node_pairs, ()).orbits(len(fbas))
    block_pairs = []
    for first, second in sorted(block_candidates):
        if not (_is_single_class(first, classes) and _is_single_class(second, classes)):
            continue
        mapping = dict(zip(first, second, strict=True)) | dict(zip(second, first, strict=True))
        if _is_automorphism(fbas, mapping, partition, holders):
            block_pairs.append((first, second))
    return Symmetries(node_pairs, tuple(block_pairs))


def _is_single_class(block: Sequence[int], classes: list[int]) -> bool:
    """The block's members are exactly one class of interchangeable nodes."""
    roots = {classes[v] for v in block}
    if len(roots) != 1:
        return False
    root = roots.pop()
    return sum(1 for c in classes if c == root) == len(block)


def add_lex_leader(
    add_clause: Callable[[list[Lit]], None],
    new_variable: Callable[[], int],
    symmetries: Symmetries,
    vector: Callable[[int], list[Lit]],
) -> int:
    """Add vector(u) >=lex vector(v) for every node pair, and the concatenated vectors of
    the first block >=lex those of the second for every block pair; return how many
    constraints were added."""
    count = 0
    for u, v in symmetries.node_pairs:
        _lex_at_least(add_clause, new_variable, vector(u), vector(v))
        count += 1
    for first, second in symmetries.block_pairs:
        left = [lit for node in first for lit in vector(node)]
        right = [lit for node in second for lit in vector(node)]
        _lex_at_least(add_clause, new_variable, left, right)
        count += 1
    return count


def _lex_at_least(
    add_clause: Callable[[list[Lit]], None],
    new_variable: Callable[[], int],
    left: Sequence[Lit],
    right: Sequence[Lit],
) -> None:
    """left >=lex right: while the prefixes are equal, left_i >= right_i.

    `equal` over-approximates "prefix equal": it is forced true when the prefix is
    equal, which is all soundness needs.
    """
    equal: Lit = True
    for x, y in zip(left, right, strict=True):
        add_clause([_neg(equal), x, _neg(y)])
        if x is y:
            continue
        following = new_variable()
        add_clause([_neg(equal), _neg(x), _neg(y), following])
        add_clause([_neg(equal), x, y, following])
        equal = following


def _neg(lit: Lit) -> Lit:
    return (not lit) if isinstance(lit, bool) else -lit
