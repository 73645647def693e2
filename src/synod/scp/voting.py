"""Federated voting over the latest statement of each node (draft section 3.1).

A node confirms statements in two steps.  It *accepts* statement `a` when either

* the nodes whose latest message *accepts* `a` form a blocking threshold for it (a
  v-blocking set: they meet every one of its slices), or
* the nodes whose latest message *votes for or accepts* `a` form, together, a quorum
  threshold: a quorum (every member's slice is satisfied by the set, checked with each
  member's own quorum set) that contains a slice of the local node.

It *confirms* (ratifies) `a` when the nodes that accept it form a quorum threshold.

Here messages are the latest `Statement` recorded from each node, and "votes for" /
"accepts" are predicates over a statement's pledges, so the ballot and nomination
protocols express every rule of the draft as a pair of predicates.  Quorum-set
lookups go through `QuorumSetOf` (by node, for the statement recorded from it); a node
whose set is unknown cannot be in a quorum.

The protocols themselves keep, per value, the nodes that vote for and accept it, so
their hot paths call the set forms (`accepts_with`, `is_quorum_threshold_set`) on those
node sets directly; the predicate forms define the rules and check the indexes in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

from synod.quorum.qset import (
    QuorumSet,
    is_satisfied_by,
    is_v_blocking,
    largest_quorum_within,
)
from synod.scp.messages import Pledges, Statement

QuorumSetOf = Callable[[bytes], QuorumSet | None]
"""The quorum set a node's latest statement was made under (None when unknown)."""
PledgePredicate = Callable[[Pledges], bool]


def nodes_where(latest: Mapping[bytes, Statement], predicate: PledgePredicate) -> set[bytes]:
    """The nodes whose latest statement satisfies `predicate`."""
    return {node for node, statement in latest.items() if predicate(statement.pledges)}


def is_blocking_threshold(
    local_qset: QuorumSet, latest: Mapping[bytes, Statement], predicate: PledgePredicate
) -> bool:
    """The nodes whose latest statement satisfies `predicate` are v-blocking for us."""
    return is_v_blocking(local_qset, nodes_where(latest, predicate))


def is_quorum_threshold(
    local_qset: QuorumSet,
    latest: Mapping[bytes, Statement],
    qset_of: QuorumSetOf,
    predicate: PledgePredicate,
) -> bool:
    """Some quorum that includes one of our slices satisfies `predicate` throughout."""
    return is_quorum_threshold_set(local_qset, qset_of, nodes_where(latest, predicate))


def federated_accept(
    local_qset: QuorumSet,
    latest: Mapping[bytes, Statement],
    qset_of: QuorumSetOf,
    voted: PledgePredicate,
    accepted: PledgePredicate,
) -> bool:
    """Accept by a blocking threshold of accepts or a quorum threshold of vote-or-accept."""
    accepting: set[bytes] = set()
    supporting: set[bytes] = set()
    for node, statement in latest.items():
        pledges = statement.pledges
        if accepted(pledges):
            accepting.add(node)
            supporting.add(node)
        elif voted(pledges):
            supporting.add(node)
    return accepts_with(local_qset, qset_of, accepting, supporting)


def accepts_with(
    local_qset: QuorumSet,
    qset_of: QuorumSetOf,
    accepting: Collection[bytes],
    supporting: Collection[bytes],
) -> bool:
    """The accept rule given its two node sets: `accepting` (nodes that accept the
    statement) is v-blocking, or `supporting` (nodes that vote for or accept it, a
    superset) holds a quorum that contains one of our slices."""
    if is_v_blocking(local_qset, accepting):
        return True
    return is_quorum_threshold_set(local_qset, qset_of, supporting)


def is_quorum_threshold_set(
    local_qset: QuorumSet, qset_of: QuorumSetOf, candidates: Collection[bytes]
) -> bool:
    """Some quorum within `candidates` includes one of our slices."""
    if not is_satisfied_by(local_qset, candidates):
        return False  # cheap early exit: the fixpoint only removes nodes
    return is_satisfied_by(local_qset, largest_quorum_within(candidates, qset_of))


def federated_ratify(
    local_qset: QuorumSet,
    latest: Mapping[bytes, Statement],
    qset_of: QuorumSetOf,
    accepted: PledgePredicate,
) -> bool:
    """Confirm: a quorum threshold of nodes accepts."""
    return is_quorum_threshold(local_qset, latest, qset_of, accepted)
