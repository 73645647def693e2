"""Lower bounds on splitting sets from the size of the smallest quorums
(`synod.fbas.quorum_size`): the quorum-size search agrees with enumeration, the bound
never exceeds the exact minimum, and it lifts the bound of the asymmetric networks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_fbas_anytime import StopAfter
from test_fbas_bruteforce_agreement import KEYS, reference_groups, reference_network
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
    # about 200 questions to finish: stopped on the 51st
    _assert_bounded_work_between_questions(quotient, lambda search: search.exists(28, 1))


def _assert_bounded_work_between_questions(
    quotient: Any, run: Callable[[QuorumSizeSearch], object]
) -> None:
    """Stop `run` on its 51st stop question; one step between two questions examines
    at most one pass over the groups."""
    seen: list[int] = []

    def stop() -> bool:
        seen.append(search.work)
        return len(seen) > 50

    search = QuorumSizeSearch(
        quotient.entries, quotient.threshold, (1 << quotient.size) - 1, stop=stop
    )
    with pytest.raises(SearchStopped):
        run(search)
    gaps = [later - earlier for earlier, later in zip([0, *seen], seen, strict=False)]
    assert max(gaps) <= search.check_work + quotient.size


def _capped_quorum_exists(
    entries: list[int], thresholds: list[int], limit: int, allowed: int, members: int
) -> bool:
    """Whether some set of at most `limit` groups splits into at least one and at most
    `members` members, each satisfied within the set, and at most `allowed` exceptions:
    every subset, by enumeration."""
    for chosen in range(1, 1 << len(entries)):
        size = chosen.bit_count()
        satisfied = sum(
            1
            for g in range(len(entries))
            if chosen >> g & 1 and _satisfied(entries, thresholds, chosen, g)
        )
        # Satisfied groups may be named members or exceptions; the others only exceptions.
        fewest_members = max(1, size - allowed)
        if size <= limit and fewest_members <= min(satisfied, members):
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(group_models(), st.integers(0, 9), st.integers(0, 2), st.integers(0, 5))
def test_member_capped_quorum_size_search_matches_enumeration(
    model: tuple[list[int], list[int]], limit: int, allowed: int, members: int
) -> None:
    entries, thresholds = model
    search = QuorumSizeSearch(tuple(entries), tuple(thresholds), (1 << len(entries)) - 1)
    found = search.exists(limit, allowed, members)
    assert (found is not None) == _capped_quorum_exists(
        entries, thresholds, limit, allowed, members
    )
    if found is not None:
        chosen = [g for g in range(len(entries)) if found >> g & 1]
        satisfied = [g for g in chosen if _satisfied(entries, thresholds, found, g)]
        assert len(chosen) <= limit
        assert max(1, len(chosen) - allowed) <= min(len(satisfied), members)


def _grouped_quotient(fbas: Any) -> Any:
    return organisation_quotient(
        fbas, fbas.all_nodes, [bits for _, bits in fbas.groups("org")], closed=True
    )


@st.composite
def many_organisations(draw: st.DrawFn) -> dict[str, Any]:
    """5 to 8 nodes in 4 to 8 organisations of one or two validators (a pair named "2
    of 2"), each trusting its own subset of organisations: more organisations than
    `organisation_networks` has, so that the member cap of a grouped bound matters."""
    sizes = [1] * draw(st.integers(4, 8))
    for index in draw(st.lists(st.integers(0, len(sizes) - 1), max_size=4, unique=True)):
        if sum(sizes) < 8:
            sizes[index] = 2
    members: list[list[int]] = []
    for size in sizes:
        start = sum(len(m) for m in members)
        members.append(list(range(start, start + size)))
    nodes = []
    for org, keys in enumerate(members):
        everyone = st.integers(0, len(members) - 1)
        trusted = draw(st.lists(everyone, min_size=2, max_size=len(members), unique=True))
        leaves = [
            {
                "threshold": len(members[t]),
                "validators": [KEYS[v] for v in members[t]],
                "innerQuorumSets": [],
            }
            for t in trusted
        ]
        qset = {
            "threshold": draw(st.integers(2, len(trusted))),
            "validators": [],
            "innerQuorumSets": leaves,
        }
        for node in keys:
            nodes.append({"publicKey": KEYS[node], "quorumSet": qset, "organizationId": f"o{org}"})
    return {"nodes": nodes, "count": len(nodes)}


@settings(max_examples=200, deadline=None)
@given(organisation_networks() | many_organisations())
def test_grouped_splitting_lower_bound_never_exceeds_the_exact_minimum(
    network: dict[str, Any],
) -> None:
    # Counted in organisations: every node of `organisation_networks` has one.  The
    # bound needs organisations that match the quotient's groups one to one (two
    # organisations nobody names, with equal quorum sets, make one group).
    fbas = load_stellarbeat(network["nodes"])
    quotient = _grouped_quotient(fbas)
    assume(quotient is not None)
    qsets = reference_network(network)
    exact = brute.min_splitting_size(qsets, reference_groups(network, qsets, True), None)
    bound = splitting_lower_bound(quotient, whole_groups=True)
    if exact is not None:
        assert bound <= exact
    assert splitting_lower_bound(quotient, upper=0, whole_groups=True) == 0


def test_asymmetric_networks_have_no_split_of_fewer_than_four_organisations() -> None:
    # Seed 1, counted in organisations: with f < 4 organisations failed, every quorum
    # with f exceptions has more than (50 - f) // 2 members, so the two sides of a
    # split, disjoint outside the failed ones, cannot both fit.  Cutting one
    # organisation off costs 10.  The SAT search proved 1 within a 10 s stop.
    quotient = _grouped_quotient(_asymmetric(1))
    assert quotient is not None
    bound = splitting_lower_bound(quotient, upper=10, budget=30_000_000, whole_groups=True)
    assert bound >= 4


def test_stopped_grouped_splitting_keeps_the_quorum_size_bound() -> None:
    # 600 stop questions: about 12 million groups examined, enough for 3 on seed 1; the
    # SAT search alone proved 1 with the same questions.
    result = minimal_splitting_sets(_asymmetric(1), "org", stop=StopAfter(600))
    assert not result.optimal
    assert result.lower_bound is not None and result.lower_bound >= 3
    assert result.size is not None and result.size <= 10


def test_grouped_quorum_size_bound_stops_within_its_budget() -> None:
    quotient = _grouped_quotient(_asymmetric(1))
    assert quotient is not None
    assert splitting_lower_bound(quotient, budget=100_000, whole_groups=True) <= 2
    stop = StopAfter(3)
    assert splitting_lower_bound(quotient, stop=stop, whole_groups=True) <= 2
    assert stop.asked == 4


def test_member_capped_search_examines_a_bounded_number_of_groups_between_stop_questions() -> (
    None
):
    quotient = _grouped_quotient(_asymmetric(1))
    assert quotient is not None
    # the grouped bound's step to 4 on seed 1
    _assert_bounded_work_between_questions(
        quotient, lambda search: search.exists(27, 3, members=24)
    )


def test_the_benchmark_measures_how_the_quorum_size_certificate_grows() -> None:
    """`fbas_bench.py --quorum-growth LIMIT` prints one line per limit: the search at a
    larger limit explores every state of the smaller one and more, so its work grows."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "fbas_bench.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quorum-growth", "27", "--asymmetric-seeds", "1",
         "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["limit"] for line in lines] == [24, 25, 26, 27]
    assert {line["bench"] for line in lines} == {"fbas-quorum-growth"}
    work = [line["groups_examined"] for line in lines]
    assert work == sorted(work) and work[0] < work[-1]
    assert [line["growth"] is None for line in lines] == [True, False, False, False]
