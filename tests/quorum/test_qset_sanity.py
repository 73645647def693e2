"""Sanity rules and normalisation of quorum sets, by hand-built scenarios.

The scenarios follow the cases of stellar-core's "sane quorum set" test group
(`src/scp/test/QuorumSetTests.cpp`) and the rules of `QuorumSetUtils.cpp`; the expected
verdicts and normal forms are worked out by hand from those rules.
"""

from __future__ import annotations

import pytest

from synod.crypto import NodeId
from synod.quorum.qset import (
    MAX_NESTING_DEPTH,
    MAX_TOTAL_NODES,
    InsaneQuorumSet,
    QuorumSet,
    check_sanity,
    is_sane,
    normalize,
    qset_hash,
    singleton_threshold_set,
)


def node(index: int) -> bytes:
    """A distinct 32-byte node id whose byte order follows `index` (up to 65535)."""
    return index.to_bytes(2, "big") + bytes(30)


def single(index: int) -> QuorumSet:
    return QuorumSet(threshold=1, validators=(node(index),))


def nested_chain(levels: int) -> QuorumSet:
    """{t:1, v0, {t:1, v1, {... {t:1, v_levels}}}}: `levels` levels below the top."""
    qset = single(levels)
    for index in range(levels - 1, -1, -1):
        qset = QuorumSet(threshold=1, validators=(node(index),), inner_sets=(qset,))
    return qset


def test_threshold_zero_is_insane_even_without_entries() -> None:
    assert not is_sane(QuorumSet(threshold=0))
    assert not is_sane(QuorumSet(threshold=0, validators=(node(0),)))


def test_threshold_above_entry_count_is_insane() -> None:
    assert not is_sane(QuorumSet(threshold=2, validators=(node(0),)))


def test_one_of_one_validator_is_sane() -> None:
    assert is_sane(single(0))


def test_insane_inner_threshold_makes_the_whole_set_insane() -> None:
    # {t:1, v0, {t:2, v1}}: the inner 2-of-1 can never be met.
    qset = QuorumSet(
        threshold=1,
        validators=(node(0),),
        inner_sets=(QuorumSet(threshold=2, validators=(node(1),)),),
    )
    with pytest.raises(InsaneQuorumSet, match=r"threshold 2 outside 1\.\.1 at depth 1"):
        check_sanity(qset)


def test_validator_twice_at_different_levels_is_insane() -> None:
    qset = QuorumSet(threshold=1, validators=(node(0),), inner_sets=(single(0),))
    with pytest.raises(InsaneQuorumSet, match="appears twice"):
        check_sanity(qset)


def test_nesting_down_to_the_maximum_level_is_sane() -> None:
    assert MAX_NESTING_DEPTH == 4  # stellar-core's MAXIMUM_QUORUM_NESTING_LEVEL
    assert is_sane(nested_chain(MAX_NESTING_DEPTH))


def test_nesting_one_level_beyond_the_maximum_is_insane() -> None:
    with pytest.raises(InsaneQuorumSet, match="nesting deeper"):
        check_sanity(nested_chain(MAX_NESTING_DEPTH + 1))


def test_one_thousand_validators_are_sane() -> None:
    assert MAX_TOTAL_NODES == 1000
    flat = QuorumSet(threshold=1, validators=tuple(node(i) for i in range(1000)))
    assert is_sane(flat)


def test_one_thousand_and_one_validators_are_insane() -> None:
    flat = QuorumSet(threshold=1, validators=tuple(node(i) for i in range(1001)))
    assert not is_sane(flat)


def test_node_limit_counts_validators_through_every_level() -> None:
    # {t:1, v0, {t:1, v1..v100}, ..., {t:1, v901..v1000}}: 1001 validators in all.
    inner = tuple(
        QuorumSet(threshold=1, validators=tuple(node(j) for j in range(i * 100 + 1, i * 100 + 101)))
        for i in range(10)
    )
    qset = QuorumSet(threshold=1, validators=(node(0),), inner_sets=inner)
    with pytest.raises(InsaneQuorumSet, match="1001 validators"):
        check_sanity(qset)


def test_extra_checks_demand_a_strict_majority_threshold() -> None:
    # 2 of 4: the v-blocking size is 3 > 2, so two disjoint slices {0,1} and {2,3} exist.
    half = QuorumSet(threshold=2, validators=tuple(node(i) for i in range(4)))
    majority = QuorumSet(threshold=3, validators=tuple(node(i) for i in range(4)))
    assert is_sane(half)
    assert not is_sane(half, extra_checks=True)
    assert is_sane(majority, extra_checks=True)


def test_extra_checks_apply_to_inner_sets() -> None:
    weak_inner = QuorumSet(threshold=1, validators=(node(1), node(2)))
    qset = QuorumSet(threshold=2, validators=(node(0),), inner_sets=(weak_inner,))
    assert is_sane(qset)
    with pytest.raises(InsaneQuorumSet, match="depth 1 is not a strict majority"):
        check_sanity(qset, extra_checks=True)


def test_normalize_merges_a_singleton_inner_set_into_validators() -> None:
    # {t:1, v0, {t:1, v1}} -> {t:1, v0, v1}
    qset = QuorumSet(threshold=1, validators=(node(0),), inner_sets=(single(1),))
    assert normalize(qset) == QuorumSet(threshold=1, validators=(node(0), node(1)))


def test_normalize_keeps_inner_sets_that_are_not_singletons() -> None:
    # {t:1, v0, {t:1, v1}, {t:1, v2, v3}} -> {t:1, v0, v1, {t:1, v2, v3}}
    pair = QuorumSet(threshold=1, validators=(node(2), node(3)))
    qset = QuorumSet(threshold=1, validators=(node(0),), inner_sets=(single(1), pair))
    expected = QuorumSet(threshold=1, validators=(node(0), node(1)), inner_sets=(pair,))
    assert normalize(qset) == expected


def test_normalize_unwraps_one_of_a_single_inner_set() -> None:
    # {t:1, {t:1, v0, {t:1, v1}, {t:1, v2, v3}}} -> {t:1, v0, v1, {t:1, v2, v3}}
    pair = QuorumSet(threshold=1, validators=(node(2), node(3)))
    body = QuorumSet(threshold=1, validators=(node(0),), inner_sets=(single(1), pair))
    wrapped = QuorumSet(threshold=1, inner_sets=(body,))
    expected = QuorumSet(threshold=1, validators=(node(0), node(1)), inner_sets=(pair,))
    assert normalize(wrapped) == expected


def test_normalize_merges_only_the_deepest_singleton_of_a_chain() -> None:
    # {t:1, v0, {t:1, v1, {t:1, v2, {t:1, v3}}}} -> {t:1, v0, {t:1, v1, {t:1, v2, v3}}}
    expected = QuorumSet(
        threshold=1,
        validators=(node(0),),
        inner_sets=(
            QuorumSet(
                threshold=1,
                validators=(node(1),),
                inner_sets=(QuorumSet(threshold=1, validators=(node(2), node(3))),),
            ),
        ),
    )
    assert normalize(nested_chain(3)) == expected


def test_normalize_sorts_validators_and_inner_sets() -> None:
    late = QuorumSet(threshold=2, validators=(node(7), node(5)))
    early = QuorumSet(threshold=2, validators=(node(4), node(6)))
    qset = QuorumSet(threshold=2, validators=(node(3), node(1)), inner_sets=(late, early))
    expected = QuorumSet(
        threshold=2,
        validators=(node(1), node(3)),
        inner_sets=(
            QuorumSet(threshold=2, validators=(node(4), node(6))),
            QuorumSet(threshold=2, validators=(node(5), node(7))),
        ),
    )
    assert normalize(qset) == expected


def test_normalize_orders_inner_sets_by_validators_then_threshold() -> None:
    # Same validators: the lower threshold first. A prefix sorts before a longer list.
    two = QuorumSet(threshold=2, validators=(node(1), node(2)))
    one = QuorumSet(threshold=1, validators=(node(1), node(2)))
    longer = QuorumSet(threshold=1, validators=(node(1), node(2), node(3)))
    qset = QuorumSet(threshold=1, inner_sets=(longer, two, one))
    assert normalize(qset).inner_sets == (one, two, longer)


def test_normalize_removing_a_node_lowers_the_threshold_where_it_was() -> None:
    # {t:2, v0, v1, {t:2, v0, v2, v3}} without v0 -> {t:1, v1, {t:1, v2, v3}}
    qset = QuorumSet(
        threshold=2,
        validators=(node(0), node(1)),
        inner_sets=(QuorumSet(threshold=2, validators=(node(0), node(2), node(3))),),
    )
    expected = QuorumSet(
        threshold=1,
        validators=(node(1),),
        inner_sets=(QuorumSet(threshold=1, validators=(node(2), node(3))),),
    )
    assert normalize(qset, removing=node(0)) == expected


def test_normalize_removing_can_merge_what_becomes_a_singleton() -> None:
    # {t:2, v0, {t:2, v1, v2}} without v2 -> inner {t:1, v1} merges: {t:2, v0, v1}
    qset = QuorumSet(
        threshold=2,
        validators=(node(0),),
        inner_sets=(QuorumSet(threshold=2, validators=(node(2), node(1))),),
    )
    expected = QuorumSet(threshold=2, validators=(node(0), node(1)))
    assert normalize(qset, removing=node(2)) == expected


def test_equal_structures_in_any_order_hash_equal_once_normalized() -> None:
    first = QuorumSet(threshold=2, validators=(node(2), node(1)), inner_sets=(single(9), single(8)))
    second = QuorumSet(
        threshold=2, validators=(node(1), node(2)), inner_sets=(single(8), single(9))
    )
    assert qset_hash(first) != qset_hash(second)
    assert qset_hash(normalize(first)) == qset_hash(normalize(second))


def test_singleton_threshold_set_sorts_validators() -> None:
    qset = singleton_threshold_set([NodeId(node(3)), NodeId(node(1)), NodeId(node(2))], 2)
    assert qset == QuorumSet(threshold=2, validators=(node(1), node(2), node(3)))
