"""The BFT-CRDT in the simulator: faults, Byzantine replicas, crashes, and the checkers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from synod.sim.checkers import check_history
from synod.sim.runner import RunSettings, run_scenario
from synod.sim.scenarios.crdt import (
    CrdtScenario,
    SameUpdatesSameDocumentChecker,
    SameVerdictChecker,
)
from synod.sim.world import World

# 200 seeds in CI: 150 with one Byzantine replica in four, 50 with a Byzantine majority
# (three in five): a CRDT's correctness needs no honest majority.
SEED_SETS = [(4, 1, range(150)), (5, 3, range(1000, 1050))]


@pytest.mark.parametrize(("nodes", "byzantine", "seeds"), SEED_SETS)
def test_correct_replicas_converge_under_faults_and_byzantine_replicas(
    nodes: int, byzantine: int, seeds: range
) -> None:
    failures = []
    for seed in seeds:
        outcome = run_scenario(CrdtScenario(nodes=nodes, byzantine=byzantine), seed)
        if not outcome.ok:
            failures.append(f"{outcome.summary()} {outcome.violations[0]}")
    assert not failures, "\n".join(failures)


def test_the_scenario_exercises_every_fault_and_lie() -> None:
    # A scenario whose Byzantine replicas never got a lie past decoding would prove
    # nothing: count what actually happened over a few seeds.
    kinds: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for seed in range(30):
        outcome = run_scenario(CrdtScenario(nodes=4, byzantine=1), seed)
        for record in outcome.world.history:
            kinds[record["kind"]] += 1
            if record["kind"] == "event":
                event = record["event"]
                kinds[event["type"]] += 1
                if event["type"] == "UpdateRejected":
                    reasons[event["reason"].split(":")[0]] += 1
    for kind in ("crash", "restart", "partition", "duplicate", "reorder", "undecodable"):
        assert kinds[kind] > 0, f"no {kind} in 30 seeds"
    assert kinds["EquivocationDetected"] > 0
    assert kinds["UpdateApplied"] > 0
    expected_reasons = {
        "bad signature",
        "clock is not one more than the predecessors' largest",
        "sequence does not follow the author's previous update",
        "a predecessor was rejected",
        "a reference to this update points at a later operation",
        # issue 15: overlapping or repeated delete spans, more deleted elements than an
        # update may name
        "delete spans overlap or touch",
        "delete spans are not in ascending order",
        "too many deleted elements in one update",
    }
    assert expected_reasons <= set(reasons), sorted(reasons)
    assert any(reason.startswith("reference to an update outside") for reason in reasons)


def test_arrival_order_merge_is_caught_by_the_convergence_checker() -> None:
    # Ordering operations by local arrival ("last write to arrive wins") is not a CRDT:
    # replicas that received the same updates in different orders disagree.  Nothing
    # outside the assumptions is needed: the network only reorders.
    caught = []
    for seed in range(10):
        outcome = run_scenario(CrdtScenario(arrival_order_merge=True), seed)
        caught.extend(
            violation
            for violation in outcome.violations
            if violation.checker == "convergence" and "same" in violation.detail
        )
    assert len(caught) >= 5


def test_a_partition_never_healed_is_reported_as_divergence() -> None:
    # Outside the assumptions: one correct replica never exchanges anything again after
    # the faulty phase.  The end-of-run check must see the replicas differ.
    scenario = CrdtScenario(nodes=4, byzantine=0, edits=3)
    world = World(seed=7)
    scenario.build(world)
    isolated = 3
    links = {(isolated, other) for other in range(4) if other != isolated}
    world.network.blocked.update(links | {(b, a) for a, b in links})
    world.start()
    world.run_until(5_000)
    violations = check_history(scenario.checkers(), world.history)
    assert [v.checker for v in violations] == ["convergence"]
    assert "did not converge" in violations[0].detail


def _applied(t: int, node: str, update: str) -> dict[str, object]:
    event = {"type": "UpdateApplied", "update_id": update, "author": "aa", "sequence": 1}
    return {"t": t, "kind": "event", "node": node, "event": {**event, "local": False}}


def _rejected(t: int, node: str, update: str, reason: str) -> dict[str, object]:
    event = {"type": "UpdateRejected", "update_id": update, "author": "aa", "reason": reason}
    return {"t": t, "kind": "event", "node": node, "event": {**event, "sender": None}}


def _observed(t: int, node: str, updates: str, document: str) -> dict[str, object]:
    event = {
        "type": "DocumentObserved",
        "updates": 1,
        "updates_digest": updates,
        "document_digest": document,
    }
    return {"t": t, "kind": "event", "node": node, "event": event}


def test_verdict_checker_flags_an_update_applied_here_and_rejected_there() -> None:
    history = [_applied(1, "n1", "u1"), _rejected(2, "n2", "u1", "clock is wrong")]
    violations = check_history([SameVerdictChecker({"n1", "n2"})], history)
    assert len(violations) == 1
    assert "applied by n1" in violations[0].detail


def test_verdict_checker_ignores_bad_signatures_and_byzantine_nodes() -> None:
    history = [
        _applied(1, "n1", "u1"),
        _rejected(2, "n2", "u1", "bad signature"),  # a tampered copy, not a verdict
        _rejected(3, "byz", "u1", "clock is wrong"),  # not a correct node
    ]
    assert check_history([SameVerdictChecker({"n1", "n2"})], history) == []


def test_convergence_checker_flags_same_updates_with_different_documents() -> None:
    checker = SameUpdatesSameDocumentChecker({"n1", "n2"})
    assert checker.observe(_observed(1, "n1", "set-a", "doc-x")) == []
    (violation,) = checker.observe(_observed(2, "n2", "set-a", "doc-y"))
    assert "same 1 updates but different documents" in violation.detail
    (final,) = checker.finish()
    assert "did not converge" in final.detail


def test_convergence_checker_accepts_replicas_that_catch_up() -> None:
    history = [
        _observed(1, "n1", "set-a", "doc-x"),
        _observed(2, "n2", "set-b", "doc-y"),  # behind for a while: allowed
        _observed(3, "n2", "set-a", "doc-x"),
    ]
    assert check_history([SameUpdatesSameDocumentChecker({"n1", "n2"})], history) == []


def test_history_is_identical_across_processes_and_hash_seeds(
    outputs_under_hash_seeds: Callable[[str], set[str]],
) -> None:
    # Update ids are bytes and Python randomises their hashing per process: a replica or
    # scenario that let set order reach an output would differ between these runs.
    script = (
        "from synod.sim.runner import run_scenario\n"
        "from synod.sim.scenarios.crdt import CrdtScenario\n"
        "print(run_scenario(CrdtScenario(nodes=5, byzantine=2), seed=41).history_digest)\n"
    )
    digests = outputs_under_hash_seeds(script)
    assert len(digests) == 1


def test_same_seed_gives_the_same_history() -> None:
    settings = RunSettings(safety_ms=2_000)
    first = run_scenario(CrdtScenario(), seed=9, settings=settings)
    second = run_scenario(CrdtScenario(), seed=9, settings=settings)
    assert first.history_digest == second.history_digest


def test_the_answer_budget_checker_on_hand_written_histories() -> None:
    from synod.sim.scenarios.crdt import AnswerBudgetChecker

    def answer(t: int, size: int, node: str = "aa") -> dict[str, object]:
        event = {"type": "AnswerSent", "peer": "bb", "size_bytes": size}
        return {"t": t, "kind": "event", "node": node, "event": event}

    within = [answer(0, 1000), answer(500, 500), answer(1000, 500)]  # 2,000 by t=1 s
    assert check_history([AnswerBudgetChecker({"aa"}, 1000, 1000)], within) == []
    over = [answer(0, 1000), answer(400, 500)]
    (violation,) = check_history([AnswerBudgetChecker({"aa"}, 1000, 1000)], over)
    assert violation.checker == "answer budget"
    restarted = [answer(0, 1000), {"t": 10, "kind": "restart", "node": "aa"}, answer(20, 1000)]
    assert check_history([AnswerBudgetChecker({"aa"}, 1000, 1000)], restarted) == []
    other_node = [answer(0, 5000, node="cc")]
    assert check_history([AnswerBudgetChecker({"aa"}, 1000, 1000)], other_node) == []
