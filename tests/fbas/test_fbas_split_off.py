"""Splitting sets that cut one organisation off: an upper bound found without a solver."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st
from test_fbas_anytime import StopAfter
from test_fbas_bruteforce_agreement import raw_keys, reference_groups, reference_network
from test_fbas_cascade_search import organisation_networks

from synod.fbas import bruteforce as brute
from synod.fbas import cascade
from synod.fbas.analysis import minimal_splitting_sets
from synod.fbas.cascade import organisation_quotient, split_off_one_group
from synod.fbas.load import load_stellarbeat
from synod.fbas.network import is_quorum_despite
from synod.fbas.synthetic import asymmetric_network, two_thirds


@settings(max_examples=200, deadline=None)
@given(organisation_networks(), st.booleans())
def test_a_cut_off_organisation_is_a_real_split_no_cheaper_than_the_minimum(
    network: dict[str, Any], whole_groups: bool
) -> None:
    fbas = load_stellarbeat(network["nodes"])
    quotient = organisation_quotient(fbas, fbas.all_nodes, closed=True)
    assert quotient is not None
    grouping = [bits for _, bits in fbas.groups("org")] if whole_groups else None
    if grouping is not None:
        quotient = organisation_quotient(fbas, fbas.all_nodes, grouping, closed=True)
        if quotient is None:
            return  # organisations unlike the groups of the quotient: not this path
    found = split_off_one_group(fbas, quotient, fbas.all_nodes, whole_groups)
    qsets = reference_network(network)
    groups = reference_groups(network, qsets, whole_groups)
    exact = brute.min_splitting_size(qsets, groups, None)
    if found is None:
        return
    cost, faulty, first, second = found
    assert exact is not None and exact <= cost
    failed = raw_keys(fbas.nodes, faulty)
    assert sum(1 for group in groups if group <= failed) == cost
    one, other = raw_keys(fbas.nodes, first), raw_keys(fbas.nodes, second)
    assert brute.is_quorum_despite(qsets, one, failed)
    assert brute.is_quorum_despite(qsets, other, failed)
    assert one and other and not one & other


def test_asymmetric_networks_get_the_cheapest_cut_within_ten_stop_questions() -> None:
    # Organisation o of `asymmetric_network` trusts its own set of organisations, itself
    # included, with threshold two thirds; each organisation is named "2 of its 3".  The
    # organisation trusting the fewest (16 in each of these seeds) is cut off by failing
    # 2 validators in each of the two_thirds(16) - 1 other organisations it needs.
    for seed in (1, 3):
        nodes, orgs = asymmetric_network(50, seed)
        fbas = load_stellarbeat(nodes, organizations=orgs)
        fewest = min(len(node["quorumSet"]["innerQuorumSets"]) for node in nodes)
        expected = 2 * (two_thirds(fewest) - 1)
        stop = StopAfter(10)
        result = minimal_splitting_sets(fbas, stop=stop)
        # Cheaper splits exist (18 nodes on seed 1), but the solver needs far more than
        # ten questions to find one: what matters is that the cut is there at once.
        assert result.size is not None and result.size <= expected
        assert result.size == result.examples[0].nodes.bit_count()
        assert result.lower_bound is not None and result.lower_bound <= result.size
        example = result.examples[0]
        assert example.quorums is not None
        first, second = example.quorums
        assert is_quorum_despite(fbas, first, example.nodes)
        assert is_quorum_despite(fbas, second, example.nodes)
        assert not first & second


def test_cutting_off_asks_to_stop_every_sixteen_organisations() -> None:
    nodes, orgs = asymmetric_network(50, 1)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    quotient = organisation_quotient(fbas, fbas.all_nodes, closed=True)
    assert quotient is not None
    tried: list[int] = []
    original = cascade._cut_off

    def counting(*args: Any) -> Any:
        tried.append(args[-1])
        return original(*args)

    for allowed in (0, 1, 2):
        tried.clear()
        stop = StopAfter(allowed)
        with patch.object(cascade, "_cut_off", counting):
            found = split_off_one_group(fbas, quotient, fbas.all_nodes, False, stop)
        assert len(tried) == 16 * allowed
        assert (found is None) == (allowed == 0)
    with patch.object(cascade, "_cut_off", counting):
        tried.clear()
        assert split_off_one_group(fbas, quotient, fbas.all_nodes, False, StopAfter(10**9))
    assert len(tried) == 50
