"""Federated quorum sets: nested k-of-n slices (SCP paper section 3; draft section 2.1).

A quorum set is a threshold over a list of validators and nested inner sets.  A set of
nodes *satisfies* it when at least `threshold` of its entries are satisfied (a validator
by membership, an inner set recursively).  Over these:

- a *slice* of node v is any set satisfying v's quorum set;
- a *quorum* is a non-empty set Q such that every member's quorum set is satisfied by Q;
- a set B is *v-blocking* for v when it intersects every slice of v, that is when more
  than `len(entries) - threshold` entries are blocked by B.

Sanity rules follow stellar-core's `isQuorumSetSane` (`src/scp/QuorumSetUtils.cpp`):
threshold in 1..entries at every level, no node twice anywhere, nesting at most
`MAX_NESTING_DEPTH` levels below the top, between 1 and `MAX_TOTAL_NODES` validators in all;
its optional "extra checks" also demand that every threshold be a strict majority of its
entries (a threshold below the v-blocking size lets two disjoint slices exist).

`normalize` is stellar-core's `normalizeQSet`: optionally drop one node (lowering each
threshold it counted towards, as if that node always agreed), merge singleton inner sets
into their parent's validators, collapse a 1-of-one-inner-set wrapper into that inner set,
and sort validators and inner sets into one canonical order.  Without a node to drop,
normalising never changes which node sets satisfy the quorum set; it only gives equal
structures equal bytes (and so equal hashes).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Annotated

import msgspec

from synod.crypto import NodeId, blake2b
from synod.wire import U32, Bytes32, Message, canonical_bytes

MAX_NESTING_DEPTH = 4
"""How deep inner sets may nest below the top level, which is level 0 (stellar-core
`QuorumSetUtils.cpp`: `MAXIMUM_QUORUM_NESTING_LEVEL = 4`, insane when `depth > 4`)."""
MAX_TOTAL_NODES = 1000
"""Validators in one quorum set, counted through every level (stellar-core
`QuorumSetSanityChecker`: insane unless the count is within 1 and 1000)."""
_MAX_ENTRIES = 1000


class QuorumSet(Message, frozen=True, tag="qset"):
    """A threshold over validators (32-byte node ids) and nested inner quorum sets."""

    threshold: U32
    validators: Annotated[tuple[Bytes32, ...], msgspec.Meta(max_length=_MAX_ENTRIES)] = ()
    inner_sets: Annotated[tuple[QuorumSet, ...], msgspec.Meta(max_length=_MAX_ENTRIES)] = ()

    @property
    def entry_count(self) -> int:
        return len(self.validators) + len(self.inner_sets)


class InsaneQuorumSet(ValueError):
    """A quorum set breaks a sanity rule; the message says which."""


def check_sanity(qset: QuorumSet, *, extra_checks: bool = False) -> None:
    """Raise `InsaneQuorumSet` unless `qset` passes stellar-core's sanity rules.

    With `extra_checks` (what stellar-core applies to a node's own configuration) every
    threshold must also be a strict majority of its level's entries.
    """
    seen: set[bytes] = set()
    _check_level(qset, depth=0, seen=seen, extra_checks=extra_checks)
    # stellar-core counts validators through every level and wants 1..1000 of them.
    if not 1 <= len(seen) <= MAX_TOTAL_NODES:
        raise InsaneQuorumSet(
            f"{len(seen)} validators in all; a quorum set needs 1..{MAX_TOTAL_NODES}"
        )


def _check_level(qset: QuorumSet, depth: int, seen: set[bytes], extra_checks: bool) -> None:
    if depth > MAX_NESTING_DEPTH:
        raise InsaneQuorumSet(f"nesting deeper than {MAX_NESTING_DEPTH}")
    if not 1 <= qset.threshold <= qset.entry_count:
        raise InsaneQuorumSet(
            f"threshold {qset.threshold} outside 1..{qset.entry_count} at depth {depth}"
        )
    v_blocking_size = qset.entry_count - qset.threshold + 1
    if extra_checks and qset.threshold < v_blocking_size:
        raise InsaneQuorumSet(
            f"threshold {qset.threshold} of {qset.entry_count} at depth {depth} is not a"
            " strict majority"
        )
    for validator in qset.validators:
        if validator in seen:
            raise InsaneQuorumSet(f"validator {validator.hex()[:12]} appears twice")
        seen.add(validator)
    for inner in qset.inner_sets:
        _check_level(inner, depth + 1, seen, extra_checks)


def is_sane(qset: QuorumSet, *, extra_checks: bool = False) -> bool:
    """True when `check_sanity` accepts `qset`."""
    try:
        check_sanity(qset, extra_checks=extra_checks)
    except InsaneQuorumSet:
        return False
    return True


def normalize(qset: QuorumSet, *, removing: bytes | None = None) -> QuorumSet:
    """stellar-core's `normalizeQSet`: the canonical form of `qset`.

    - `removing`, when given, is dropped from every level and each threshold lowered by
      the number of times it was dropped there (never below 0): the result is satisfied
      by N exactly when `qset` is satisfied by N plus that node.
    - an inner set that is 1-of-one-validator becomes a validator of its parent;
    - a 1-of-one-inner-set with no validators becomes that inner set;
    - validators are sorted by bytes, inner sets by (validators, inner sets, threshold)
      compared lexicographically, as stellar-core's `qSetCompareInt` does.
    """
    return _reorder(_simplify(qset, removing))


def _simplify(qset: QuorumSet, removing: bytes | None) -> QuorumSet:
    validators = [v for v in qset.validators if v != removing]
    threshold = max(0, qset.threshold - (len(qset.validators) - len(validators)))
    inner_sets: list[QuorumSet] = []
    for inner in qset.inner_sets:
        simple = _simplify(inner, removing)
        if simple.threshold == 1 and len(simple.validators) == 1 and not simple.inner_sets:
            validators.append(simple.validators[0])
        else:
            inner_sets.append(simple)
    if threshold == 1 and not validators and len(inner_sets) == 1:
        return inner_sets[0]
    return QuorumSet(
        threshold=threshold, validators=tuple(validators), inner_sets=tuple(inner_sets)
    )


_OrderKey = tuple[tuple[bytes, ...], tuple["_OrderKey", ...], int]


def _order_key(qset: QuorumSet) -> _OrderKey:
    # Python compares tuples lexicographically, a shorter prefix first: the same order
    # as stellar-core's qSetCompareInt over (validators, inner sets, threshold).
    return (
        tuple(qset.validators),
        tuple(_order_key(inner) for inner in qset.inner_sets),
        qset.threshold,
    )


def _reorder(qset: QuorumSet) -> QuorumSet:
    inner_sets = sorted((_reorder(inner) for inner in qset.inner_sets), key=_order_key)
    return QuorumSet(
        threshold=qset.threshold,
        validators=tuple(sorted(qset.validators)),
        inner_sets=tuple(inner_sets),
    )


def qset_hash(qset: QuorumSet) -> bytes:
    """Stable 32-byte hash of a quorum set's canonical encoding."""
    return blake2b(canonical_bytes(qset), person=b"synod-qset")


def all_validators(qset: QuorumSet) -> Iterator[NodeId]:
    """Every validator named at any level (in order, possibly repeated if insane)."""
    for validator in qset.validators:
        yield NodeId(validator)
    for inner in qset.inner_sets:
        yield from all_validators(inner)


def is_satisfied_by(qset: QuorumSet, nodes: Collection[bytes]) -> bool:
    """True when `nodes` contains a slice of `qset`."""
    remaining = qset.threshold
    for validator in qset.validators:
        if validator in nodes:
            remaining -= 1
            if remaining <= 0:
                return True
    for inner in qset.inner_sets:
        if is_satisfied_by(inner, nodes):
            remaining -= 1
            if remaining <= 0:
                return True
    return remaining <= 0


def is_v_blocking(qset: QuorumSet, nodes: Collection[bytes]) -> bool:
    """True when `nodes` intersects every slice of `qset` (a threshold of 0 is never blocked)."""
    if qset.threshold == 0:
        return False
    needed = qset.entry_count - qset.threshold + 1
    for validator in qset.validators:
        if validator in nodes:
            needed -= 1
            if needed <= 0:
                return True
    for inner in qset.inner_sets:
        if is_v_blocking(inner, nodes):
            needed -= 1
            if needed <= 0:
                return True
    return needed <= 0


def is_quorum(nodes: Collection[bytes], qset_of: Callable[[bytes], QuorumSet | None]) -> bool:
    """True when `nodes` is non-empty and every member's quorum set is satisfied by it.

    A member whose quorum set is unknown (`qset_of` returns None) cannot be in a quorum.
    """
    members = set(nodes)
    if not members:
        return False
    return next(_unsatisfied_members(members, qset_of), None) is None


def largest_quorum_within(
    nodes: Collection[bytes], qset_of: Callable[[bytes], QuorumSet | None]
) -> frozenset[bytes]:
    """The largest quorum contained in `nodes` (empty if none): the fixpoint that drops
    every member whose quorum set the remaining members do not satisfy.

    Dropping such a member never drops a member of a quorum inside `nodes` (that quorum
    stays inside what remains), so the fixpoint is the union of all those quorums.
    """
    members = set(nodes)
    while members:
        failing = list(_unsatisfied_members(members, qset_of))
        if not failing:
            break
        members.difference_update(failing)
    return frozenset(members)


def _unsatisfied_members(
    members: set[bytes], qset_of: Callable[[bytes], QuorumSet | None]
) -> Iterator[bytes]:
    """Members whose quorum set is unknown or not satisfied by `members`.

    Members usually share a handful of quorum-set objects (every node of a symmetric
    network has the same one), so each distinct object is evaluated once per call.
    """
    verdicts: dict[int, tuple[QuorumSet, bool]] = {}
    for node in members:
        qset = qset_of(node)
        if qset is None:
            yield node
            continue
        # Keyed by identity: the dict holds the object, so its id cannot be reused.
        verdict = verdicts.get(id(qset))
        if verdict is None:
            verdict = (qset, is_satisfied_by(qset, members))
            verdicts[id(qset)] = verdict
        if not verdict[1]:
            yield node


def transitive_closure(
    start: bytes, qset_of: Callable[[bytes], QuorumSet | None]
) -> frozenset[bytes]:
    """Every node reachable from `start` through quorum-set membership (start included)."""
    reached = {start}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        qset = qset_of(node)
        if qset is None:
            continue
        for validator in all_validators(qset):
            if validator not in reached:
                reached.add(validator)
                frontier.append(validator)
    return frozenset(reached)


def singleton_threshold_set(validators: Collection[NodeId], threshold: int) -> QuorumSet:
    """A flat `threshold`-of-`validators` quorum set (validators sorted for a stable hash)."""
    return QuorumSet(threshold=threshold, validators=tuple(sorted(validators)))


def lookup(qsets: Mapping[bytes, QuorumSet]) -> Callable[[bytes], QuorumSet | None]:
    """Adapter: a mapping of node -> quorum set as the `qset_of` callable above."""
    return qsets.get
