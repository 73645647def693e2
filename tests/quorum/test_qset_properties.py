"""Quorum-set math against brute-force references (SCP paper section 3, definitions 1-3).

The reference does not count thresholds the way `synod.quorum.qset` does: it expands a
quorum set into its *minimal slices* by choosing exactly `threshold` entries in every
possible way (and, for each chosen inner set, one of its own minimal slices).  Every
definition is then checked literally over all subsets of a six-node universe:

- N satisfies a quorum set iff some minimal slice is a subset of N;
- B is v-blocking iff every slice (equivalently every minimal slice) intersects B;
- Q is a quorum iff Q is non-empty and contains a slice of each of its members;
- the largest quorum inside S is the union of all quorums inside S;
- the transitive closure from v is the smallest node set containing v that contains the
  validators named by each member's quorum set.

Generated quorum sets are deliberately not all sane (threshold 0, threshold above the
entry count, a node named at two levels) so the functions are checked on what a peer
could send, not only on what a sanity check lets through.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.quorum.qset import (
    QuorumSet,
    is_quorum,
    is_sane,
    is_satisfied_by,
    is_v_blocking,
    largest_quorum_within,
    lookup,
    normalize,
    transitive_closure,
)

UNIVERSE = tuple(bytes([index]) * 32 for index in range(6))
EXAMPLES = settings(max_examples=100, deadline=None)


def subsets(nodes: tuple[bytes, ...] | frozenset[bytes]) -> Iterator[frozenset[bytes]]:
    ordered = sorted(nodes)
    for size in range(len(ordered) + 1):
        for chosen in itertools.combinations(ordered, size):
            yield frozenset(chosen)


ALL_SUBSETS = tuple(subsets(UNIVERSE))


def minimal_slices(qset: QuorumSet) -> set[frozenset[bytes]]:
    """Every union of exactly `threshold` entries (one minimal slice per inner set)."""
    entries: list[set[frozenset[bytes]]] = [{frozenset([v])} for v in qset.validators]
    entries += [minimal_slices(inner) for inner in qset.inner_sets]
    result: set[frozenset[bytes]] = set()
    for chosen in itertools.combinations(entries, qset.threshold):
        for parts in itertools.product(*chosen):
            result.add(frozenset().union(*parts))
    return result


def reference_satisfied(qset: QuorumSet, nodes: frozenset[bytes]) -> bool:
    return any(piece <= nodes for piece in minimal_slices(qset))


def reference_v_blocking(qset: QuorumSet, nodes: frozenset[bytes]) -> bool:
    return all(piece & nodes for piece in minimal_slices(qset))


def reference_is_quorum(nodes: frozenset[bytes], network: Mapping[bytes, QuorumSet]) -> bool:
    if not nodes:
        return False
    return all(
        member in network and reference_satisfied(network[member], nodes) for member in nodes
    )


def named_validators(qset: QuorumSet) -> set[bytes]:
    names = set(qset.validators)
    for inner in qset.inner_sets:
        names |= named_validators(inner)
    return names


@st.composite
def quorum_sets(draw: st.DrawFn, depth: int = 2) -> QuorumSet:
    validators = draw(st.lists(st.sampled_from(UNIVERSE), max_size=3, unique=True))
    inner_sets = draw(st.lists(quorum_sets(depth - 1), max_size=2)) if depth > 0 else []
    entry_count = len(validators) + len(inner_sets)
    # Mostly thresholds within range; sometimes 0 or one too many.
    threshold = draw(
        st.one_of(st.integers(1, max(1, entry_count)), st.sampled_from([0, entry_count + 1]))
    )
    return QuorumSet(
        threshold=threshold, validators=tuple(validators), inner_sets=tuple(inner_sets)
    )


@st.composite
def networks(draw: st.DrawFn) -> dict[bytes, QuorumSet]:
    """Quorum sets for some of the universe (a missing node's quorum set is unknown)."""
    known = draw(st.lists(st.sampled_from(UNIVERSE), min_size=1, unique=True))
    return {node: draw(quorum_sets(depth=1)) for node in known}


@st.composite
def shuffled(draw: st.DrawFn, qset: QuorumSet) -> QuorumSet:
    validators = draw(st.permutations(qset.validators))
    inner_sets = [draw(shuffled(inner)) for inner in qset.inner_sets]
    inner_sets = draw(st.permutations(inner_sets))
    return QuorumSet(
        threshold=qset.threshold, validators=tuple(validators), inner_sets=tuple(inner_sets)
    )


@EXAMPLES
@given(quorum_sets())
def test_satisfied_exactly_when_a_slice_is_contained(qset: QuorumSet) -> None:
    for nodes in ALL_SUBSETS:
        assert is_satisfied_by(qset, nodes) == reference_satisfied(qset, nodes), nodes


@EXAMPLES
@given(quorum_sets())
def test_v_blocking_exactly_when_every_slice_is_hit(qset: QuorumSet) -> None:
    for nodes in ALL_SUBSETS:
        assert is_v_blocking(qset, nodes) == reference_v_blocking(qset, nodes), nodes


@EXAMPLES
@given(quorum_sets())
def test_v_blocking_exactly_when_the_rest_holds_no_slice(qset: QuorumSet) -> None:
    # SCP paper, definition 3 restated: B blocks v iff the nodes outside B hold no slice.
    universe = frozenset(UNIVERSE)
    for nodes in ALL_SUBSETS:
        assert is_v_blocking(qset, nodes) == (not reference_satisfied(qset, universe - nodes))


@EXAMPLES
@given(networks())
def test_quorum_exactly_when_it_holds_a_slice_of_each_member(
    network: dict[bytes, QuorumSet],
) -> None:
    qset_of = lookup(network)
    for nodes in ALL_SUBSETS:
        assert is_quorum(nodes, qset_of) == reference_is_quorum(nodes, network), nodes


@EXAMPLES
@given(networks(), st.sets(st.sampled_from(UNIVERSE)))
def test_largest_quorum_within_is_the_union_of_all_quorums_inside(
    network: dict[bytes, QuorumSet], within: set[bytes]
) -> None:
    quorums_inside = [q for q in subsets(frozenset(within)) if reference_is_quorum(q, network)]
    expected = frozenset().union(*quorums_inside)
    result = largest_quorum_within(within, lookup(network))
    assert result == expected
    assert not result or reference_is_quorum(result, network)


@EXAMPLES
@given(networks(), st.sampled_from(UNIVERSE))
def test_transitive_closure_is_the_smallest_closed_set_holding_the_start(
    network: dict[bytes, QuorumSet], start: bytes
) -> None:
    def closed(nodes: frozenset[bytes]) -> bool:
        return all(
            named_validators(network[member]) <= nodes for member in nodes if member in network
        )

    closed_sets = [s for s in ALL_SUBSETS if start in s and closed(s)]
    expected = frozenset(UNIVERSE).intersection(*closed_sets)
    assert transitive_closure(start, lookup(network)) == expected


@EXAMPLES
@given(quorum_sets())
def test_normalize_keeps_the_same_satisfying_sets(qset: QuorumSet) -> None:
    normal = normalize(qset)
    for nodes in ALL_SUBSETS:
        assert is_satisfied_by(normal, nodes) == reference_satisfied(qset, nodes), nodes


@EXAMPLES
@given(quorum_sets(), st.sampled_from(UNIVERSE))
def test_normalize_removing_a_node_treats_it_as_always_present(
    qset: QuorumSet, removed: bytes
) -> None:
    normal = normalize(qset, removing=removed)
    assert removed not in named_validators(normal)
    for nodes in ALL_SUBSETS:
        if removed in nodes:
            continue
        expected = reference_satisfied(qset, nodes | {removed})
        assert is_satisfied_by(normal, nodes) == expected, nodes


@EXAMPLES
@given(quorum_sets())
def test_normalize_is_idempotent(qset: QuorumSet) -> None:
    assert normalize(normalize(qset)) == normalize(qset)


@EXAMPLES
@given(st.data())
def test_normalize_ignores_the_order_of_entries(data: st.DataObject) -> None:
    qset = data.draw(quorum_sets())
    assert normalize(data.draw(shuffled(qset))) == normalize(qset)


@EXAMPLES
@given(quorum_sets())
def test_normalize_keeps_a_sane_set_sane(qset: QuorumSet) -> None:
    if is_sane(qset):
        assert is_sane(normalize(qset))
