"""The organisation search for smallest blocking sets (`synod.fbas.cascade`) agrees with
brute force on small networks of organisations, brackets the exact answer when stopped,
and proves the minimum on the 50-organisation asymmetric networks."""

from __future__ import annotations

from functools import partial
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fbas_anytime import NEVER, StopAfter
from test_fbas_bruteforce_agreement import KEYS, raw_keys, reference_groups, reference_network

from synod.fbas import analysis, cascade
from synod.fbas import bruteforce as brute
from synod.fbas.analysis import (
    check_intersection,
    minimal_blocking_sets,
    minimal_splitting_sets,
    top_tier,
)
from synod.fbas.cascade import organisation_quotient
from synod.fbas.load import load_stellarbeat
from synod.fbas.network import is_blocking, is_quorum, iter_bits, largest_quorum_within
from synod.fbas.synthetic import asymmetric_network

EXAMPLES = settings(max_examples=200, deadline=None)


@st.composite
def organisation_networks(draw: st.DrawFn) -> dict[str, Any]:
    """Up to 8 nodes in organisations of 1 to 3 validators; each organisation trusts its
    own subset of organisations, each named by a leaf inner set with the organisation's
    inner threshold (a lone validator sometimes named directly), as real networks do."""
    sizes = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
    while sum(sizes) > 8:
        sizes.pop()
    members: list[list[int]] = []
    for size in sizes:
        start = sum(len(m) for m in members)
        members.append(list(range(start, start + size)))
    inner = [draw(st.integers(1, len(m))) for m in members]
    direct = [len(m) == 1 and draw(st.booleans()) for m in members]
    nodes = []
    for org, keys in enumerate(members):
        trusted = draw(
            st.lists(st.integers(0, len(members) - 1), min_size=1, max_size=4, unique=True)
        )
        validators = [KEYS[members[t][0]] for t in trusted if direct[t]]
        leaves = [
            {
                "threshold": inner[t],
                "validators": [KEYS[v] for v in members[t]],
                "innerQuorumSets": [],
            }
            for t in trusted
            if not direct[t]
        ]
        qset = {
            "threshold": draw(st.integers(1, len(trusted))),
            "validators": validators,
            "innerQuorumSets": leaves,
        }
        for node in keys:
            nodes.append({"publicKey": KEYS[node], "quorumSet": qset, "organizationId": f"o{org}"})
    return {"nodes": nodes, "count": len(nodes)}


def _prepared(network: dict[str, Any], by_org: bool) -> tuple[Any, Any, int]:
    fbas = load_stellarbeat(network["nodes"])
    qsets = reference_network(network)
    groups = reference_groups(network, qsets, by_org)
    exact = brute.min_blocking_size(qsets, groups)
    assert exact is not None
    return fbas, qsets, exact


@EXAMPLES
@given(organisation_networks(), st.booleans())
def test_organisation_search_finds_the_exact_minimum(
    network: dict[str, Any], by_org: bool
) -> None:
    fbas, qsets, exact = _prepared(network, by_org)
    greatest = largest_quorum_within(fbas, fbas.all_nodes)
    if greatest:
        # The network has the organisation shape, so the search (not SAT) answers.
        assert organisation_quotient(fbas, greatest) is not None
    result = minimal_blocking_sets(fbas, "org" if by_org else None)
    assert result.optimal and result.size == exact == result.lower_bound
    failed = raw_keys(fbas.nodes, result.examples[0].nodes)
    assert all(quorum & failed for quorum in brute.all_quorums(qsets))
    assert len(result.examples[0].groups) == exact


@EXAMPLES
@given(organisation_networks(), st.booleans(), st.integers(0, 8))
def test_stopped_organisation_search_brackets_the_exact_minimum(
    network: dict[str, Any], by_org: bool, allowed: int
) -> None:
    fbas, qsets, exact = _prepared(network, by_org)
    # Every cascade asks, so that small networks can be stopped at any step.
    original = cascade.BlockingSearch.__post_init__

    def every_cascade(self: Any) -> None:
        self.check_work = 0
        original(self)

    cascade.BlockingSearch.__post_init__ = every_cascade  # type: ignore[method-assign]
    try:
        result = minimal_blocking_sets(fbas, "org" if by_org else None, stop=StopAfter(allowed))
    finally:
        cascade.BlockingSearch.__post_init__ = original  # type: ignore[method-assign]
    assert result.lower_bound is not None and result.lower_bound <= exact
    assert result.size is not None and exact <= result.size
    failed = raw_keys(fbas.nodes, result.examples[0].nodes)
    assert all(quorum & failed for quorum in brute.all_quorums(qsets))
    if result.optimal:
        assert result.size == result.lower_bound == exact


def test_asymmetric_fifty_organisations_are_proven_within_a_bounded_search() -> None:
    # Each organisation trusts its own random third to two thirds of the others: the SAT
    # search's cascade needs 51 levels and did not prove the minimum in minutes.  The
    # organisation search proves it within a few thousand stop questions (one per 4,096
    # groups examined), independent of the machine's speed.
    nodes, orgs = asymmetric_network(50, seed=1)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    stop = StopAfter(5_000)
    result = minimal_blocking_sets(fbas, stop=stop)
    assert result.optimal and result.size == result.lower_bound
    assert result.size is not None
    blocking = result.examples[0].nodes
    assert is_blocking(fbas, blocking)
    # Minimal: giving back any one node leaves a quorum standing.
    assert all(not is_blocking(fbas, blocking & ~(1 << v)) for v in iter_bits(blocking))
    # An organisation's quorum set needs at least 6 of its trusted organisations blocked,
    # each by 2 of its 3 validators, before any node outside the set is blocked.
    assert result.size >= 12
    by_org = minimal_blocking_sets(fbas, "org", stop=StopAfter(5_000))
    assert by_org.optimal and by_org.size is not None and 2 * by_org.size == result.size


def test_a_search_needing_more_seeds_than_its_depth_allows_falls_back_to_sat() -> None:
    # Five validators that each trust only themselves: each is a quorum on its own, so
    # every one must fail, five seeds deep.
    nodes = [
        {
            "publicKey": KEYS[v],
            "quorumSet": {"threshold": 1, "validators": [KEYS[v]], "innerQuorumSets": []},
        }
        for v in range(5)
    ]
    fbas = load_stellarbeat(nodes)
    quotient = organisation_quotient(fbas, fbas.all_nodes)
    assert quotient is not None
    shallow = cascade.BlockingSearch(quotient, max_seeds=2)
    with pytest.raises(cascade.SearchStopped):
        shallow.minimum()
    assert shallow.lower == 5  # no validator is ever blocked by the others
    with patch.object(analysis, "BlockingSearch", partial(cascade.BlockingSearch, max_seeds=2)):
        result = minimal_blocking_sets(fbas)
    assert result.optimal and result.size == 5
    assert cascade.BlockingSearch(quotient).minimum() == 0b11111


@EXAMPLES
@given(
    organisation_networks(),
    st.booleans(),
    st.sampled_from(["all", "top-tier"]),
    st.integers(0, 12) | st.just(NEVER),
)
def test_splitting_by_organisations_brackets_the_exact_minimum(
    network: dict[str, Any], by_org: bool, scope: Any, allowed: int
) -> None:
    fbas = load_stellarbeat(network["nodes"])
    qsets = reference_network(network)
    groups = reference_groups(network, qsets, by_org)
    within = brute.top_tier(qsets) if scope == "top-tier" else None
    exact = brute.min_splitting_size(qsets, groups, within)
    if scope == "all":
        # Every quorum set names only nodes with quorum sets: the organisation path.
        assert organisation_quotient(fbas, fbas.all_nodes, closed=True) is not None
    stop = None if allowed == NEVER else StopAfter(allowed)
    result = minimal_splitting_sets(fbas, "org" if by_org else None, scope=scope, stop=stop)
    if allowed == NEVER:
        assert result.optimal
    if result.optimal:
        assert result.size == exact
    assert result.lower_bound is not None
    assert exact is None or result.lower_bound <= exact
    if result.size is not None:
        assert exact is not None and exact <= result.size
        example = result.examples[0]
        assert len(example.groups) == result.size
        faulty = raw_keys(fbas.nodes, example.nodes)
        assert example.quorums is not None
        first, second = (raw_keys(fbas.nodes, q) for q in example.quorums)
        assert brute.is_quorum_despite(qsets, first, faulty)
        assert brute.is_quorum_despite(qsets, second, faulty)
        assert not first & second
        if within is not None:
            assert first <= within and second <= within


@EXAMPLES
@given(organisation_networks(), st.integers(0, 3) | st.just(NEVER))
def test_intersection_by_organisations_matches_enumeration(
    network: dict[str, Any], allowed: int
) -> None:
    fbas = load_stellarbeat(network["nodes"])
    quorums = brute.all_quorums(reference_network(network))
    stop = None if allowed == NEVER else StopAfter(allowed)
    result = check_intersection(fbas, stop=stop)
    if allowed == NEVER:
        assert result.intersects is not None
    if result.intersects is not None:
        assert result.intersects == (not brute.has_disjoint_pair(quorums))
    if result.witness is not None:
        first, second = (raw_keys(fbas.nodes, q) for q in result.witness)
        assert first in quorums and second in quorums and not first & second


def test_asymmetric_top_tier_needs_no_solver_over_organisations() -> None:
    # Greedy minimal quorums over organisations prove every node of the 50-organisation
    # asymmetric network to be in the top tier, so no SAT formula is built at all.
    nodes, orgs = asymmetric_network(50, seed=1)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    with patch.object(analysis, "_top_tier_formula", None):
        result = top_tier(fbas)
    assert result.nodes == fbas.all_nodes and not result.undecided
    covered = 0
    for quorum in result.minimal_quorums:
        assert is_quorum(fbas, quorum)
        assert all(not largest_quorum_within(fbas, quorum & ~(1 << v)) for v in iter_bits(quorum))
        covered |= quorum
    # Every node is in one of the minimal quorums returned, which prove the tier.
    assert covered == fbas.all_nodes


@EXAMPLES
@given(organisation_networks())
def test_top_tier_over_organisations_matches_enumeration(network: dict[str, Any]) -> None:
    fbas = load_stellarbeat(network["nodes"])
    expected = brute.top_tier(reference_network(network))
    # The greedy witnesses over organisations, and the exact search for what they leave.
    result = top_tier(fbas)
    assert raw_keys(fbas.nodes, result.nodes) == expected
    for quorum in result.minimal_quorums:
        assert is_quorum(fbas, quorum)
        assert all(not largest_quorum_within(fbas, quorum & ~(1 << v)) for v in iter_bits(quorum))


def test_top_tier_witnesses_stop_at_their_work_budget() -> None:
    nodes, orgs = asymmetric_network(50, seed=1)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    quotient = organisation_quotient(fbas, fbas.all_nodes, closed=True)
    assert quotient is not None
    assert cascade.top_tier_witnesses(quotient, budget=0) == (0, [])
    proven, found = cascade.top_tier_witnesses(quotient)
    assert proven == (1 << quotient.size) - 1
    # Each witness is a minimal quorum of organisations.
    for witness in found:
        assert cascade.greatest_quorum(quotient, witness) == witness
        for group in iter_bits(witness):
            assert not cascade.greatest_quorum(quotient, witness & ~(1 << group))


def test_lower_bound_of_a_spent_organisation_search_is_kept() -> None:
    # With almost no budget the organisation search only proves its first bound (an
    # organisation needs at least 6 trusted organisations blocked, 2 nodes each) before
    # the SAT search takes over; a stopped SAT search still reports that bound.
    nodes, orgs = asymmetric_network(50, seed=1)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    with patch.object(analysis, "_CASCADE_SEARCH_WORK", 1_000):
        result = minimal_blocking_sets(fbas, stop=StopAfter(3))
    assert not result.optimal
    assert result.lower_bound is not None and result.lower_bound >= 12
    assert result.size is not None and result.size >= result.lower_bound
    assert is_blocking(fbas, result.examples[0].nodes)
