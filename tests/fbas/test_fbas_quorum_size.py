"""Lower bounds on splitting sets from the size of the smallest quorums
(`synod.fbas.quorum_size`): the quorum-size search agrees with enumeration, the bound
never exceeds the exact minimum, and it lifts the bound of the asymmetric networks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fbas_anytime import StopAfter
from test_fbas_bruteforce_agreement import reference_groups, reference_network
from test_fbas_cascade_search import organisation_networks

from synod.fbas import bruteforce as brute
from synod.fbas.analysis import minimal_splitting_sets
from synod.fbas.cascade import SearchStopped, organisation_quotient
from synod.fbas.load import load_stellarbeat
from synod.fbas.quorum_size import QuorumSizeSearch, splitting_lower_bound
from synod.fbas.synthetic import asymmetric_network


@st.composite
def group_models(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """Up to 9 groups, each trusting its own subset with a threshold over it."""
    size = draw(st.integers(1, 9))
    entries: list[int] = []
    thresholds: list[int] = []
    for _ in range(size):
        trusted = draw(st.lists(st.integers(0, size - 1), min_size=1, max_size=size, unique=True))
        entries.append(sum(1 << group for group in trusted))
        thresholds.append(draw(st.integers(1, len(trusted))))
    return entries, thresholds


def _satisfied(entries: list[int], thresholds: list[int], chosen: int, group: int) -> bool:
    return (entries[group] & chosen).bit_count() >= thresholds[group]


def _smallest_with_exceptions(entries: list[int], thresholds: list[int], allowed: int) -> int:
    """Fewest groups of a set where all but `allowed` members are satisfied within it
    and one member at least is: every subset, by enumeration (0 when there is none)."""
    best = 0
    for chosen in range(1, 1 << len(entries)):
        members = [g for g in range(len(entries)) if chosen >> g & 1]
        satisfied = sum(1 for g in members if _satisfied(entries, thresholds, chosen, g))
        valid = satisfied and len(members) - satisfied <= allowed
        if valid and (not best or len(members) < best):
            best = len(members)
    return best


@settings(max_examples=300, deadline=None)
@given(group_models(), st.integers(0, 9), st.integers(0, 2))
def test_quorum_size_search_matches_enumeration(
    model: tuple[list[int], list[int]], limit: int, allowed: int
) -> None:
    entries, thresholds = model
    search = QuorumSizeSearch(tuple(entries), tuple(thresholds), (1 << len(entries)) - 1)
    found = search.exists(limit, allowed)
    smallest = _smallest_with_exceptions(entries, thresholds, allowed)
    assert (found is not None) == (0 < smallest <= limit)
    if found is not None:
        members = [g for g in range(len(entries)) if found >> g & 1]
        unsatisfied = [g for g in members if not _satisfied(entries, thresholds, found, g)]
        assert len(members) <= limit
        assert len(unsatisfied) <= allowed
        assert len(unsatisfied) < len(members)  # one member at least is satisfied


@settings(max_examples=200, deadline=None)
@given(organisation_networks())
def test_splitting_lower_bound_never_exceeds_the_exact_minimum(network: dict[str, Any]) -> None:
    fbas = load_stellarbeat(network["nodes"])
    quotient = organisation_quotient(fbas, fbas.all_nodes, closed=True)
    assert quotient is not None
    qsets = reference_network(network)
    exact = brute.min_splitting_size(qsets, reference_groups(network, qsets, False), None)
    bound = splitting_lower_bound(quotient)
    if exact is not None:
        assert bound <= exact
    assert splitting_lower_bound(quotient, upper=0) == 0


def _asymmetric(seed: int) -> Any:
    nodes, orgs = asymmetric_network(50, seed)
    return load_stellarbeat(nodes, organizations=orgs)


def test_asymmetric_networks_have_no_split_of_fewer_than_six_nodes() -> None:
    # Seed 1: no quorum of 27 organisations or fewer (28 with one exception, 27 with
    # two), so two quorums share at least 2 * 28 - 50 = 6 organisations, each with a
    # faulty validator; an exception costs 2 faulty validators.  The SAT search proved
    # only 1 or 2 within a 10 s stop.
    fbas = _asymmetric(1)
    quotient = organisation_quotient(fbas, fbas.all_nodes, closed=True)
    assert quotient is not None
    assert splitting_lower_bound(quotient, upper=20, budget=10_000_000) >= 6


def test_stopped_asymmetric_splitting_keeps_the_quorum_size_bound() -> None:
    # 600 stop questions: about 12 million groups examined by the quorum-size search,
    # enough for 5 on seed 2; the SAT search alone proved 1 with the same questions.
    result = minimal_splitting_sets(_asymmetric(2), stop=StopAfter(600))
    assert not result.optimal
    assert result.lower_bound is not None and result.lower_bound >= 5
    assert result.size is not None and result.size <= 20


def test_quorum_size_search_stops_within_its_budget() -> None:
    fbas = _asymmetric(1)
    quotient = organisation_quotient(fbas, fbas.all_nodes, closed=True)
    assert quotient is not None
    assert splitting_lower_bound(quotient, budget=100_000) <= 3
    stop = StopAfter(3)
    assert splitting_lower_bound(quotient, stop=stop) <= 3
    assert stop.asked == 4


def test_quorum_size_search_examines_a_bounded_number_of_groups_between_stop_questions() -> None:
    fbas = _asymmetric(1)
    quotient = organisation_quotient(fbas, fbas.all_nodes, closed=True)
    assert quotient is not None
    seen: list[int] = []

    def stop() -> bool:
        seen.append(search.work)
        return len(seen) > 50

    search = QuorumSizeSearch(
        quotient.entries, quotient.threshold, (1 << quotient.size) - 1, stop=stop
    )
    with pytest.raises(SearchStopped):
        search.exists(28, 1)  # about 200 questions to finish: stopped on the 51st
    gaps = [later - earlier for earlier, later in zip([0, *seen], seen, strict=False)]
    # One step between two questions examines at most one pass over the groups.
    assert max(gaps) <= search.check_work + quotient.size
