"""Analyses stopped early: the best set found so far and proven bounds, checked against
exhaustive answers on small random networks, for every point at which a search can be
stopped (a counting `Stop`, so no clock is involved)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st
from test_fbas_bruteforce_agreement import (
    networks,
    raw_keys,
    reference_groups,
    reference_network,
)

from synod.fbas import analysis
from synod.fbas import bruteforce as brute
from synod.fbas.analysis import (
    check_intersection,
    minimal_blocking_sets,
    minimal_splitting_sets,
    top_tier,
)
from synod.fbas.load import load_stellarbeat
from synod.fbas.network import is_quorum, iter_bits, largest_quorum_within
from synod.fbas.synthetic import asymmetric_network

EXAMPLES = settings(max_examples=150, deadline=None)


class StopAfter:
    """A `Stop` that says stop from its `allowed`-th question on, and counts them."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.asked = 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.asked > self.allowed


NEVER = 10**9


@EXAMPLES
@given(networks(), st.booleans(), st.integers(0, 12) | st.just(NEVER))
def test_stopped_blocking_search_brackets_the_exact_minimum(
    network: dict[str, Any], by_org: bool, allowed: int
) -> None:
    fbas = load_stellarbeat(network["nodes"])
    qsets = reference_network(network)
    groups = reference_groups(network, qsets, by_org)
    exact = brute.min_blocking_size(qsets, groups)
    assert exact is not None  # failing every node always blocks
    result = minimal_blocking_sets(fbas, "org" if by_org else None, stop=StopAfter(allowed))
    assert result.lower_bound is not None
    assert result.lower_bound <= exact
    if result.size is not None:
        assert exact <= result.size
        quorums = brute.all_quorums(qsets)
        failed = raw_keys(fbas.nodes, result.examples[0].nodes)
        assert all(quorum & failed for quorum in quorums)
        assert len(result.examples[0].groups) == result.size
    if result.optimal:
        assert result.size == result.lower_bound == exact
    if allowed == NEVER:
        assert result.optimal


@EXAMPLES
@given(
    networks(),
    st.booleans(),
    st.sampled_from(["all", "top-tier"]),
    st.integers(0, 12) | st.just(NEVER),
)
def test_stopped_splitting_search_brackets_the_exact_minimum(
    network: dict[str, Any], by_org: bool, scope: Any, allowed: int
) -> None:
    fbas = load_stellarbeat(network["nodes"])
    qsets = reference_network(network)
    groups = reference_groups(network, qsets, by_org)
    within = brute.top_tier(qsets) if scope == "top-tier" else None
    exact = brute.min_splitting_size(qsets, groups, within)
    result = minimal_splitting_sets(
        fbas, "org" if by_org else None, scope=scope, stop=StopAfter(allowed)
    )
    if result.optimal:
        assert result.size == exact
        if exact is not None:
            assert result.lower_bound == exact
    else:
        assert result.lower_bound is not None
        assert exact is None or result.lower_bound <= exact
    if result.size is not None:
        assert exact is not None and exact <= result.size
        example = result.examples[0]
        faulty = raw_keys(fbas.nodes, example.nodes)
        assert example.quorums is not None
        first, second = (raw_keys(fbas.nodes, q) for q in example.quorums)
        assert brute.is_quorum_despite(qsets, first, faulty)
        assert brute.is_quorum_despite(qsets, second, faulty)
        assert not first & second
        if within is not None:
            assert first <= within and second <= within
    if allowed == NEVER:
        assert result.optimal


@EXAMPLES
@given(networks(), st.integers(0, 6) | st.just(NEVER))
def test_stopped_top_tier_lies_between_its_known_and_open_nodes(
    network: dict[str, Any], allowed: int
) -> None:
    fbas = load_stellarbeat(network["nodes"])
    qsets = reference_network(network)
    exact = brute.top_tier(qsets)
    result = top_tier(fbas, stop=StopAfter(allowed))
    assert raw_keys(fbas.nodes, result.nodes) <= exact
    assert exact <= raw_keys(fbas.nodes, result.nodes | result.undecided)
    assert not result.nodes & result.undecided
    if allowed == NEVER:
        assert not result.undecided


@EXAMPLES
@given(networks(), st.integers(0, 3) | st.just(NEVER))
def test_stopped_intersection_check_is_undecided_or_right(
    network: dict[str, Any], allowed: int
) -> None:
    fbas = load_stellarbeat(network["nodes"])
    quorums = brute.all_quorums(reference_network(network))
    result = check_intersection(fbas, stop=StopAfter(allowed))
    if result.intersects is not None:
        assert result.intersects == (not brute.has_disjoint_pair(quorums))
    if allowed == NEVER:
        assert result.intersects is not None


def _asked_after_stop(run: Callable[[StopAfter], Any], allowed: int) -> tuple[Any, int]:
    stop = StopAfter(allowed)
    result = run(stop)
    return result, stop.asked - allowed


def test_a_hard_search_ends_soon_after_it_is_asked_to_stop() -> None:
    # 20 organisations trusting random subsets: for the SAT search (the organisation
    # search is switched off here) the exact answer takes seconds, many solver slices.
    nodes, orgs = asymmetric_network(20, seed=1)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    with patch.object(analysis, "organisation_quotient", lambda *_, **__: None):
        result, extra = _asked_after_stop(
            lambda stop: minimal_blocking_sets(fbas, stop=stop), 2
        )
    # Each question after the first "stop" is one more solver slice that was not cut:
    # the search must give up at once, not finish its proof.
    assert extra <= 2
    assert not result.optimal
    assert result.size is not None and result.lower_bound is not None
    assert result.lower_bound <= result.size


@EXAMPLES
@given(networks())
def test_top_tier_through_a_cut_cascade_is_still_exact(network: dict[str, Any]) -> None:
    # Real networks without symmetry take this path (more than 12 distinct quorum sets
    # in a core); here it is forced on every small network.
    fbas = load_stellarbeat(network["nodes"])
    expected = brute.top_tier(reference_network(network))
    with patch.object(analysis, "_SHORT_CASCADE_ABOVE", 0), patch.object(
        analysis, "_SHORT_LEVELS", 1
    ):
        result = top_tier(fbas)
    assert raw_keys(fbas.nodes, result.nodes) == expected
    assert not result.undecided


def test_asymmetric_top_tier_is_decided_without_the_exact_cascade() -> None:
    # 50 organisations, each its own quorum set: the exact cascade has 51 levels.  The
    # cut cascade proves membership for enough nodes that, with the validators of one
    # organisation interchangeable, every node is settled before it is built.
    nodes, orgs = asymmetric_network(50, seed=1)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    built: list[int | None] = []
    original = analysis._top_tier_formula

    def recording(*arguments: Any) -> Any:
        built.append(arguments[2])
        return original(*arguments)

    with (
        patch.object(analysis, "_top_tier_formula", recording),
        patch.object(analysis, "top_tier_witnesses", lambda *_: (0, [])),
    ):
        result = top_tier(fbas)
    assert built == [analysis._SHORT_LEVELS]
    assert result.nodes == fbas.all_nodes and not result.undecided
    # Each minimal quorum found is one, checked against the definitions.
    for quorum in result.minimal_quorums:
        assert is_quorum(fbas, quorum)
        assert all(not largest_quorum_within(fbas, quorum & ~(1 << v)) for v in iter_bits(quorum))


class _Recorder:
    """Counts the work done between two questions of a `StopAfter`: solver conflicts
    allowed and clauses handed to a solver."""

    def __init__(self, stop: StopAfter) -> None:
        self.stop = stop
        self.conflicts: dict[int, int] = {}
        self.clauses: dict[int, int] = {}

    def add(self, table: dict[int, int], amount: int) -> None:
        table[self.stop.asked] = table.get(self.stop.asked, 0) + amount


def _recording(stop: StopAfter) -> tuple[_Recorder, Any, Any]:
    recorder = _Recorder(stop)
    original_attempt = analysis._attempt
    original_solver = analysis.Solver

    def attempt(solver: Any, assumptions: Any, budget: int) -> Any:
        recorder.add(recorder.conflicts, budget)
        return original_attempt(solver, assumptions, budget)

    class RecordingSolver(original_solver):  # type: ignore[misc, valid-type]
        def __init__(self, *arguments: Any, **keywords: Any) -> None:
            recorder.add(recorder.clauses, len(keywords.get("bootstrap_with") or ()))
            super().__init__(*arguments, **keywords)

        def append_formula(self, formula: Any, **keywords: Any) -> Any:
            recorder.add(recorder.clauses, len(formula))
            return super().append_formula(formula, **keywords)

    return recorder, attempt, RecordingSolver


def test_work_between_two_stop_questions_is_bounded() -> None:
    # The stated bound of `--timeout`: between two questions the search does at most
    # one solver call of `_MAX_BUDGET` conflicts and hands the solver at most
    # `_LOAD_CHUNK` clauses, so a stop is seen within one such step (a wall-clock margin
    # measured in docs/fbas.md, not here).  20 organisations trusting random subsets,
    # with the SAT searches over nodes (the organisation quotient switched off) and over
    # organisations (splitting) doing the work.
    nodes, orgs = asymmetric_network(20, seed=1)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    analyses: list[tuple[Callable[[StopAfter], Any], bool]] = [
        (lambda stop: minimal_blocking_sets(fbas, stop=stop), True),
        (lambda stop: minimal_splitting_sets(fbas, stop=stop), True),
        (lambda stop: minimal_splitting_sets(fbas, stop=stop), False),
        (lambda stop: top_tier(fbas, stop=stop), True),
        (lambda stop: check_intersection(fbas, stop=stop), True),
    ]
    for run, by_node in analyses:
        stop = StopAfter(60)
        recorder, attempt, solver = _recording(stop)
        quotient = (lambda *_, **__: None) if by_node else analysis.organisation_quotient
        with (
            patch.object(analysis, "organisation_quotient", quotient),
            patch.object(analysis, "_attempt", attempt),
            patch.object(analysis, "Solver", solver),
            patch.object(analysis, "_LOAD_CHUNK", 2_000),
        ):
            run(stop)
        assert max(recorder.conflicts.values(), default=0) <= analysis._MAX_BUDGET
        assert max(recorder.clauses.values(), default=0) <= 2_000
