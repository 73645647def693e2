"""SCP in the deterministic simulator: safety and liveness over many seeds, forks
outside the assumptions, determinism, and the checkers themselves.

The seeds below run in CI (200 in all, across symmetric n = 4, 7, 10 and tiered
organisations).  Each run has Byzantine nodes at the topology's bound, a fault plan
drawn from the seed (latency, loss, duplication, reordering, partitions, crash and
restart of correct nodes) and a small workload (2 slots, about 1 s of faults), so
that the whole set stays within the CI budget.  A failure prints the seed; reproduce
it with `synod sim scp --topology ... --nodes ... --byzantine ... --seed S`.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from click.testing import CliRunner

from synod.quorum.qset import QuorumSet, is_satisfied_by
from synod.scp import ScpConfig
from synod.sim.checkers import check_history
from synod.sim.runner import RunSettings, run_scenario
from synod.sim.scenarios.scp import (
    ScpLivenessChecker,
    ScpScenario,
    ScpValidityChecker,
    SlotOrderChecker,
    Topology,
    build_topology,
    make_value,
    node_keys,
    scp_agreement_checker,
    symmetric_topology,
    tiered_topology,
)

SETTINGS = RunSettings(safety_ms=1_200, liveness_budget_ms=20_000)

# (topology, nodes, byzantine, slots, first seed, seeds): 205 seeds in all, chunked so
# that no single test runs long.  Byzantine counts are each topology's tolerated maximum.
SEED_CHUNKS = [
    ("symmetric", 4, 1, 2, 0, 40),
    ("symmetric", 4, 1, 3, 40, 40),
    ("symmetric", 7, 2, 2, 0, 25),
    ("symmetric", 7, 2, 2, 25, 25),
    ("symmetric", 10, 3, 2, 0, 10),
    ("symmetric", 10, 3, 2, 10, 10),
    ("tiered", 9, 2, 2, 0, 15),
    ("tiered", 9, 2, 3, 15, 15),
    ("tiered", 12, 1, 2, 0, 20),
    ("tiered", 15, 2, 2, 0, 5),
]


def test_ci_runs_at_least_200_seeds_across_the_topologies() -> None:
    assert sum(chunk[-1] for chunk in SEED_CHUNKS) >= 200
    sizes = {(kind, nodes) for kind, nodes, *_ in SEED_CHUNKS}
    assert {("symmetric", 4), ("symmetric", 7), ("symmetric", 10)} <= sizes
    assert any(kind == "tiered" for kind, _ in sizes)


@pytest.mark.parametrize(("kind", "nodes", "byzantine", "slots", "first", "count"), SEED_CHUNKS)
def test_intact_nodes_agree_on_valid_values_and_all_decide_after_healing(
    kind: str, nodes: int, byzantine: int, slots: int, first: int, count: int
) -> None:
    topology = build_topology(kind, nodes, byzantine)  # type: ignore[arg-type]
    assert topology.within_assumptions and len(topology.byzantine) == topology.tolerated
    failures = []
    for seed in range(first, first + count):
        outcome = run_scenario(ScpScenario(topology, slots=slots), seed, SETTINGS)
        if not outcome.ok:
            failures.append(f"{outcome.summary()}: {outcome.violations[0]}")
    assert not failures, "\n".join(failures)


# The costly insider (issue 12): one or two Byzantine members within the bound send
# MAYBE_VALID lures, partly invalid nominations and statements of made-up ids, some
# values are MAYBE_VALID at first and FULLY_VALID later (honest ones too), the slot
# window is 2 slots and, where the topology leaves a quorum without it, one correct
# node is away for the whole safety phase: after healing every intact node must
# deliver every slot, in order.  (topology, nodes, byzantine, away, slots, first, count)
INSIDER_CHUNKS = [
    ("symmetric", 4, 1, 0, 4, 0, 50),
    ("symmetric", 4, 1, 0, 4, 50, 50),
    ("symmetric", 7, 2, 0, 4, 0, 40),
    ("symmetric", 7, 1, 1, 5, 0, 30),
    ("symmetric", 10, 2, 1, 5, 0, 15),
    ("tiered", 9, 1, 1, 5, 0, 15),
]
INSIDER_SETTINGS = RunSettings(safety_ms=1_500, liveness_budget_ms=20_000)


def test_ci_runs_at_least_200_insider_seeds() -> None:
    assert sum(chunk[-1] for chunk in INSIDER_CHUNKS) >= 200
    assert any(chunk[3] for chunk in INSIDER_CHUNKS)


@pytest.mark.parametrize(
    ("kind", "nodes", "byzantine", "away", "slots", "first", "count"), INSIDER_CHUNKS
)
def test_a_costly_insider_neither_stalls_nor_mutes_and_nodes_away_deliver_every_slot(
    kind: str, nodes: int, byzantine: int, away: int, slots: int, first: int, count: int
) -> None:
    topology = build_topology(kind, nodes, byzantine)  # type: ignore[arg-type]
    assert topology.within_assumptions
    failures = []
    for seed in range(first, first + count):
        scenario = ScpScenario(topology, slots=slots, insider=True, away=away, window=2)
        outcome = run_scenario(scenario, seed, INSIDER_SETTINGS)
        if not outcome.ok:
            failures.append(f"{outcome.summary()}: {outcome.violations[0]}")
    assert not failures, "\n".join(failures)


# Nodes away for longer than peers keep decisions (2) and than the window (2 slots):
# 8 slots, a checkpoint every 2; the returning node must install checkpoints, then
# decisions, and deliver every slot in order.  (topology, nodes, byzantine, count)
RETENTION_CHUNKS = [
    ("symmetric", 4, 1, 12),
    ("symmetric", 7, 1, 8),
    ("tiered", 9, 1, 6),
    ("symmetric", 10, 2, 4),
]


def retention_scenario(kind: str, nodes: int, byzantine: int) -> ScpScenario:
    topology = build_topology(kind, nodes, byzantine)  # type: ignore[arg-type]
    return ScpScenario(topology, slots=8, insider=True, away=1, window=2, retention=2)


@pytest.mark.parametrize(("kind", "nodes", "byzantine", "count"), RETENTION_CHUNKS)
def test_nodes_away_beyond_what_peers_keep_rejoin_from_checkpoints(
    kind: str, nodes: int, byzantine: int, count: int
) -> None:
    failures = []
    for seed in range(count):
        outcome = run_scenario(retention_scenario(kind, nodes, byzantine), seed, INSIDER_SETTINGS)
        if not outcome.ok:
            failures.append(f"{outcome.summary()}: {outcome.violations[0]}")
    assert not failures, "\n".join(failures)


def test_without_checkpoints_the_liveness_checker_catches_a_node_left_behind() -> None:
    """The scenario above as the code was before checkpoints: no attestations, so the
    returning node is told `SlotsUnavailable` and never delivers slot 1."""

    class NoCheckpoints(ScpScenario):
        def _config(self, *args: Any, **kwargs: Any) -> ScpConfig:
            config = super()._config(*args, **kwargs)
            config.checkpoint_interval = 0
            return config

    topology = build_topology("symmetric", 7, 1)
    for seed in (0, 1):
        scenario = NoCheckpoints(topology, slots=8, insider=True, away=1, window=2, retention=2)
        outcome = run_scenario(scenario, seed, INSIDER_SETTINGS)
        assert not outcome.ok
        assert "liveness" in str(outcome.violations[0])
        scenario = retention_scenario("symmetric", 7, 1)
        assert run_scenario(scenario, seed, INSIDER_SETTINGS).ok


def test_a_node_that_trusted_attestations_without_checking_the_state_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The insider answers checkpoint requests with honest attestations (they are
    public) and a forged state; an application that skipped the state check would
    install it, and the agreement checker reports the fork."""
    from synod.sim.scenarios import scp as scenarios

    scenario = retention_scenario("symmetric", 7, 1)
    assert run_scenario(scenario, 6, INSIDER_SETTINGS).ok
    assert "checkpoint forgery" in " ".join(scenario.story)

    def unchecked(
        ledger: scenarios.ValueLedger, first: int, slot: int, digest: bytes, state: bytes
    ) -> bool:
        return first == ledger.through + 1

    monkeypatch.setattr(scenarios.ValueLedger, "matches", unchecked)
    outcome = run_scenario(retention_scenario("symmetric", 7, 1), 6, INSIDER_SETTINGS)
    assert not outcome.ok and "agreement" in str(outcome.violations[0])


def test_insider_runs_exercise_made_up_ids_maybe_values_and_catch_up() -> None:
    rejected: collections.Counter[str] = collections.Counter()
    asked_later = 0
    delivered_after_heal = 0
    for seed in range(6):
        scenario = ScpScenario(
            symmetric_topology(7, 1), slots=5, insider=True, away=1, window=2
        )
        outcome = run_scenario(scenario, seed, INSIDER_SETTINGS)
        assert outcome.ok
        heal_ms = next(record["t"] for record in outcome.world.history if record["kind"] == "heal")
        away_node = outcome.world.correct_nodes()[0]
        delivered_after_heal += sum(
            1
            for record in outcome.world.history
            if record["kind"] == "event"
            and record["node"] == away_node.node_id.hex()
            and record["t"] >= heal_ms
        )
        for node in outcome.world.correct_nodes():
            core = node.core
            assert core is not None
            rejected.update(str(reason) for reason in core.rejected)  # type: ignore[attr-defined]
            application = core.config.application  # type: ignore[attr-defined]
            asked_later += sum(application.asked.values())
    assert rejected["not_in_quorum"], "no made-up id was refused"
    assert asked_later, "no value was MAYBE_VALID at first"
    assert delivered_after_heal >= 6 * 5, "the away nodes did not deliver after healing"


# ---------------------------------------------------------------- outside the assumptions


def test_disjoint_quorums_fork_and_the_agreement_checker_reports_it() -> None:
    # two halves that each trust only themselves decide alone: nothing makes their
    # values meet, so every seed must show a fork of slot 1 or 2
    for seed in range(3):
        scenario = ScpScenario(build_topology("disjoint", 4, 0))
        outcome = run_scenario(scenario, seed, SETTINGS)
        forks = [violation for violation in outcome.violations if violation.checker == "agreement"]
        assert forks, f"seed {seed}: disjoint quorums did not fork"
        # the checker is pure over the history: replaying the history finds the same fork
        again = check_history([scp_agreement_checker(scenario.intact_hex())], outcome.world.history)
        assert [str(violation) for violation in again][: len(forks)] == [
            str(violation) for violation in forks
        ]


@pytest.mark.parametrize(
    "topology",
    [symmetric_topology(4, 2), symmetric_topology(7, 3), tiered_topology(4, 2)],
    ids=["symmetric-4-with-2", "symmetric-7-with-3", "tiered-4-orgs-with-2"],
)
def test_colluding_byzantine_nodes_beyond_the_bound_fork_the_network(topology: Topology) -> None:
    # one more colluder than tolerated: each shows one half of the correct nodes its own
    # face, and each half plus the colluders is a quorum, so the halves decide apart
    assert len(topology.byzantine) == topology.tolerated + 1
    for seed in range(2):
        outcome = run_scenario(ScpScenario(topology, collude=True), seed, SETTINGS)
        forks = [violation for violation in outcome.violations if violation.checker == "agreement"]
        assert forks, f"seed {seed}: {len(topology.byzantine)} colluders did not fork"


@pytest.mark.parametrize(
    "topology",
    [symmetric_topology(4, 1), symmetric_topology(7, 2), tiered_topology(3, 2)],
    ids=["symmetric-4-with-1", "symmetric-7-with-2", "tiered-3-orgs-with-2"],
)
def test_the_same_collusion_within_the_bound_does_not_fork(topology: Topology) -> None:
    for seed in range(2):
        outcome = run_scenario(ScpScenario(topology, collude=True), seed, SETTINGS)
        assert outcome.ok, outcome.violations


# ---------------------------------------------------------------- the Byzantine bound


def byzantine_split_exists(topology: Topology) -> bool:
    """Brute force: two quorums whose only common members are Byzantine.

    A Byzantine node can claim any slice, so it fits every quorum; a set is a quorum
    when each correct member's own slice is satisfied inside it.  Look for two such
    sets with disjoint correct parts."""
    ids = [node_keys(index).node_id for index in range(topology.size)]
    byzantine = {ids[index] for index in topology.byzantine}
    correct = [index for index in range(topology.size) if index not in topology.byzantine]
    quorums: list[int] = []
    for size in range(1, len(correct) + 1):
        for members in itertools.combinations(correct, size):
            chosen = {ids[index] for index in members} | byzantine
            if all(is_satisfied_by(topology.quorum_sets[index], chosen) for index in members):
                quorums.append(sum(1 << index for index in members))
    return any(first & second == 0 for first, second in itertools.combinations(quorums, 2))


@pytest.mark.parametrize("nodes", [4, 7])
def test_symmetric_bound_is_f_by_brute_force(nodes: int) -> None:
    faulty = (nodes - 1) // 3
    assert symmetric_topology(nodes, faulty).tolerated == faulty
    assert not byzantine_split_exists(symmetric_topology(nodes, faulty))
    assert byzantine_split_exists(symmetric_topology(nodes, faulty + 1))


@pytest.mark.parametrize("organisations", [3, 4])
def test_tiered_bound_keeps_quorum_intersection_by_brute_force(organisations: int) -> None:
    tolerated = tiered_topology(organisations, 0).tolerated
    assert not byzantine_split_exists(tiered_topology(organisations, tolerated))
    # one more compromised organisation and two quorums can meet only in Byzantine nodes
    assert byzantine_split_exists(tiered_topology(organisations, tolerated + 1))


def test_tiered_topology_nests_organisations_as_two_of_three() -> None:
    topology = tiered_topology(4, 1)
    qset = topology.quorum_sets[0]
    assert qset.threshold == 3 and len(qset.inner_sets) == 4
    assert all(inner.threshold == 2 and len(inner.validators) == 3 for inner in qset.inner_sets)
    assert topology.byzantine == (0,)


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_history() -> None:
    topology = tiered_topology(3, 2)
    first = run_scenario(ScpScenario(topology), 11, SETTINGS)
    second = run_scenario(ScpScenario(topology), 11, SETTINGS)
    assert first.history_digest == second.history_digest
    assert run_scenario(ScpScenario(topology), 12, SETTINGS).history_digest != first.history_digest


def test_history_is_identical_across_processes_and_hash_seeds(
    outputs_under_hash_seeds: Callable[[str], set[str]],
) -> None:
    # str/bytes hashing differs per process: any set order that leaks into a decision or
    # an output would change the history between these runs
    script = (
        "from synod.sim.runner import RunSettings, run_scenario\n"
        "from synod.sim.scenarios.scp import ScpScenario, tiered_topology\n"
        "outcome = run_scenario(ScpScenario(tiered_topology(3, 2)), 21, "
        "RunSettings(safety_ms=1200))\n"
        "print(outcome.history_digest, len(outcome.world.history))\n"
    )
    outputs = outputs_under_hash_seeds(script)
    assert len(outputs) == 1


def test_an_insider_run_with_a_node_away_is_identical_across_hash_seeds(
    outputs_under_hash_seeds: Callable[[str], set[str]],
) -> None:
    script = (
        "from synod.sim.runner import RunSettings, run_scenario\n"
        "from synod.sim.scenarios.scp import ScpScenario, symmetric_topology\n"
        "scenario = ScpScenario(symmetric_topology(7, 1), slots=8, insider=True, away=1,"
        " window=2, retention=2)\n"
        "outcome = run_scenario(scenario, 5, RunSettings(safety_ms=1500))\n"
        "print(outcome.ok, outcome.history_digest, len(outcome.world.history))\n"
    )
    outputs = outputs_under_hash_seeds(script)
    assert len(outputs) == 1
    assert next(iter(outputs)).startswith("True ")


# ---------------------------------------------------------------- the runs exercise faults


def test_runs_exercise_network_faults_restarts_and_byzantine_input() -> None:
    kinds: collections.Counter[str] = collections.Counter()
    rejected: collections.Counter[str] = collections.Counter()
    behaviours: set[str] = set()
    for seed in range(12):
        scenario = ScpScenario(symmetric_topology(4, 1))
        outcome = run_scenario(scenario, seed, SETTINGS)
        assert outcome.ok
        kinds.update(record["kind"] for record in outcome.world.history)
        behaviours.update(line for line in scenario.story if "Byzantine" in line)
        for node in outcome.world.correct_nodes():
            core = node.core
            assert core is not None
            rejected.update(str(reason) for reason in core.rejected)  # type: ignore[attr-defined]
    for kind in ("drop", "duplicate", "reorder", "partition", "crash", "restart", "undecodable"):
        assert kinds[kind], f"no {kind} in 12 seeds"
    for reason in (
        "bad_signature",
        "stale_statement",
        "invalid_value",
        "unknown_quorum_set",
    ):
        assert rejected[reason], f"no {reason} rejections in 12 seeds"
    text = " ".join(sorted(behaviours))
    for behaviour in ("withhold", "replay", "garbage", "equivocate", "conflicting statements"):
        assert behaviour in text


# ---------------------------------------------------------------- the checkers alone


def externalized(node: str, slot_index: int, value: bytes, t: int = 0) -> dict[str, object]:
    event = {"type": "Externalized", "slot_index": slot_index, "value": value.hex()}
    return {"t": t, "kind": "event", "node": node, "event": event}


def proposed(node: str, slot_index: int, value: bytes) -> dict[str, object]:
    proposal = {"type": "SlotProposal", "slot_index": slot_index, "value": value.hex()}
    return {"t": 0, "kind": "input", "node": node, "event": {"type": "Proposed", "value": proposal}}


A, B, C = "aa" * 32, "bb" * 32, "cc" * 32
X, Y = make_value(1, "n0", "x"), make_value(1, "n1", "y")


def violations_of(checker: object, records: Sequence[dict[str, object]]) -> list[str]:
    return [v.checker for v in check_history([checker], records)]  # type: ignore[list-item]


def test_agreement_checker_reports_two_values_for_one_slot() -> None:
    fork = [externalized(A, 1, X), externalized(B, 1, Y)]
    assert violations_of(scp_agreement_checker({A, B}), fork) == ["agreement"]
    assert violations_of(scp_agreement_checker({A, B}), [externalized(A, 1, X)] * 1) == []
    # a Byzantine node's claim is not judged
    assert violations_of(scp_agreement_checker({A}), fork) == []


def test_validity_checker_requires_a_valid_and_proposed_value() -> None:
    checker = ScpValidityChecker({A}, require_proposed=True)
    assert violations_of(checker, [proposed(B, 1, X), externalized(A, 1, X)]) == []
    checker = ScpValidityChecker({A}, require_proposed=True)
    assert violations_of(checker, [proposed(B, 1, X), externalized(A, 1, Y)]) == ["validity"]
    # with Byzantine nodes a value they made up is fine if the application accepts it ...
    checker = ScpValidityChecker({A}, require_proposed=False)
    assert violations_of(checker, [externalized(A, 1, Y)]) == []
    # ... but never one it rejects (a value for another slot, or garbage)
    checker = ScpValidityChecker({A}, require_proposed=False)
    assert violations_of(checker, [externalized(A, 1, make_value(2, "n0", "x"))]) == ["validity"]


def test_liveness_checker_reports_a_slot_an_intact_node_did_not_decide() -> None:
    records = [externalized(A, 1, X), externalized(B, 1, X), externalized(A, 2, X)]
    assert violations_of(ScpLivenessChecker({A, B}, (1, 2)), records) == ["liveness"]
    assert violations_of(ScpLivenessChecker({A}, (1, 2)), records) == []


def test_slot_order_checker_reports_a_decision_out_of_order() -> None:
    assert violations_of(SlotOrderChecker({A}), [externalized(A, 2, X)]) == ["slot order"]
    in_order = [externalized(A, 1, X), externalized(A, 2, X), externalized(C, 1, X)]
    assert violations_of(SlotOrderChecker({A, C}), in_order) == []


# ---------------------------------------------------------------- the command


def test_sim_scp_command_prints_seed_story_and_verdict() -> None:
    from synod.cli.sim_scp import command

    result = CliRunner().invoke(command, ["--seed", "7", "--nodes", "4", "--byzantine", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "SEED=7"
    assert any("symmetric: 4 nodes" in line for line in lines)
    assert any(line.strip().startswith("slot 1:") and "by 3" in line for line in lines)
    assert any(line.startswith("SEED=7 scenario=scp-symmetric ok") for line in lines)


def test_sim_scp_command_runs_the_costly_insider_with_a_node_away() -> None:
    from synod.cli.sim_scp import command

    arguments = ["--seed", "4", "--nodes", "7", "--byzantine", "1", "--insider"]
    arguments += ["--away", "1", "--window", "2", "--slots", "5"]
    result = CliRunner().invoke(command, arguments)
    assert result.exit_code == 0, result.output
    assert "costly insider" in result.output
    assert "node 1 away until healing" in result.output
    assert "slot 5:" in result.output and "by 6 (of 6 intact nodes)" in result.output
    refused = CliRunner().invoke(command, ["--nodes", "4", "--away", "4"])
    assert refused.exit_code == 2


def test_sim_scp_command_runs_nodes_away_beyond_what_peers_keep() -> None:
    from synod.cli.sim_scp import command

    arguments = ["--seed", "3", "--nodes", "4", "--insider", "--away", "1"]
    arguments += ["--window", "2", "--retention", "2", "--slots", "8"]
    result = CliRunner().invoke(command, arguments)
    assert result.exit_code == 0, result.output
    assert "peers keep 2 decision(s), a checkpoint every 2 slot(s)" in result.output
    assert "slot 8:" in result.output and "by 3 (of 3 intact nodes)" in result.output


def test_sim_scp_command_exits_1_on_a_fork() -> None:
    from synod.cli.sim_scp import command

    result = CliRunner().invoke(command, ["--seed", "1", "--nodes", "4", "--topology", "disjoint"])
    assert result.exit_code == 1
    assert "[agreement]" in result.output
    assert "outside the assumptions" in result.output


def test_sim_scp_command_rejects_a_tiered_size_that_is_not_organisations() -> None:
    from synod.cli.sim_scp import command

    result = CliRunner().invoke(command, ["--seed", "1", "--nodes", "10", "--topology", "tiered"])
    assert result.exit_code == 2
    assert "multiple of 3" in result.output


def test_quorum_sets_are_sane_for_every_topology() -> None:
    from synod.quorum.qset import is_sane

    for topology in (
        symmetric_topology(10, 3),
        tiered_topology(5, 2),
        build_topology("disjoint", 6, 0),
    ):
        assert all(isinstance(qset, QuorumSet) and is_sane(qset) for qset in topology.quorum_sets)
