"""Federated quorum sets: nested k-of-n slices (SCP paper section 3; draft section 2.1).

A quorum set is a threshold over a list of validators and nested inner sets.  A set of
nodes *satisfies* it when at least `threshold` of its entries are satisfied (a validator
by membership, an inner set recursively).  Over these:

- a *slice* of node v is any set satisfying v's quorum set;
- a *quorum* is a non-empty set Q such that every member's quorum set is satisfied by Q;
- a set B is *v-blocking* for v when it intersects every slice of v, that is when more
  than `len(entries) - threshold` entries are blocked by B.

Sanity rules follow stellar-core's `isQuorumSetSane`: threshold in 1..entries, no node
twice, nesting at most `MAX_NESTING_DEPTH` deep, at most `MAX_TOTAL_NODES` validators.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Annotated

import msgspec

from synod.crypto import NodeId, blake2b
from synod.wire import U32, Bytes32, Message, canonical_bytes

MAX_NESTING_DEPTH = 4
"""How deep inner sets may nest (stellar-core: MAXIMUM_QUORUM_NESTING_LEVEL)."""
MAX_TOTAL_NODES = 1000
"""Validators in one quorum set, counted through every level (stellar-core's limit)."""
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


def check_sanity(qset: QuorumSet) -> None:
    """Raise `InsaneQuorumSet` unless `qset` passes stellar-core's sanity rules."""
    seen: set[bytes] = set()
    _check_level(qset, depth=0, seen=seen)
    if len(seen) > MAX_TOTAL_NODES:
        raise InsaneQuorumSet(f"{len(seen)} validators exceed the limit {MAX_TOTAL_NODES}")


def _check_level(qset: QuorumSet, depth: int, seen: set[bytes]) -> None:
    if depth > MAX_NESTING_DEPTH:
        raise InsaneQuorumSet(f"nesting deeper than {MAX_NESTING_DEPTH}")
    if not 1 <= qset.threshold <= qset.entry_count:
        raise InsaneQuorumSet(
            f"threshold {qset.threshold} outside 1..{qset.entry_count} at depth {depth}"
        )
    for validator in qset.validators:
        if validator in seen:
            raise InsaneQuorumSet(f"validator {validator.hex()[:12]} appears twice")
        seen.add(validator)
    for inner in qset.inner_sets:
        _check_level(inner, depth + 1, seen)


def is_sane(qset: QuorumSet) -> bool:
    try:
        check_sanity(qset)
    except InsaneQuorumSet:
        return False
    return True


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


def is_quorum(
    nodes: Collection[bytes], qset_of: Callable[[bytes], QuorumSet | None]
) -> bool:
    """True when `nodes` is non-empty and every member's quorum set is satisfied by it.

    A member whose quorum set is unknown (`qset_of` returns None) cannot be in a quorum.
    """
    members = set(nodes)
    if not members:
        return False
    for node in members:
        qset = qset_of(node)
        if qset is None or not is_satisfied_by(qset, members):
            return False
    return True


def largest_quorum_within(
    nodes: Collection[bytes], qset_of: Callable[[bytes], QuorumSet | None]
) -> frozenset[bytes]:
    """The largest quorum contained in `nodes` (empty if none): the fixpoint that drops
    every member whose quorum set the remaining members do not satisfy."""
    members = set(nodes)
    changed = True
    while changed and members:
        changed = False
        for node in list(members):
            qset = qset_of(node)
            if qset is None or not is_satisfied_by(qset, members):
                members.discard(node)
                changed = True
    return frozenset(members)


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
