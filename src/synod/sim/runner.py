"""Runs a scenario in two phases and reports the verdict with the seed.

1. Safety: the fault plan drawn from the seed is active (latency, loss, duplication,
   reordering, partitions, crashes) and Byzantine nodes misbehave; every checker sees
   every record as it is written, so the run stops at the first violation.
2. Liveness: the network heals (links unblocked, loss and duplication off, crashed
   nodes restarted with what they persisted) and every correct node must reach the
   scenario's goal within the budget of virtual time.

A run is a pure function of (scenario, seed, settings): the same seed gives a
byte-identical history, whose digest `Outcome.history_digest` shows it.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from typing import Protocol

from synod.sim.checkers import Checker, Violation
from synod.sim.network import FaultPlan
from synod.sim.world import World


class Scenario(Protocol):
    """A protocol set up in a world: nodes, proposals, checkers and a liveness goal."""

    name: str

    def build(self, world: World) -> None:
        """Add nodes (correct and Byzantine) and schedule the workload."""
        ...

    def checkers(self) -> list[Checker]:
        """Fresh checkers for one run."""
        ...

    def crashable(self, world: World) -> list[int]:
        """Indices of nodes the fault plan may crash (correct nodes)."""
        ...

    def max_crashed(self) -> int:
        """How many nodes may be down at once during the safety phase."""
        ...

    def is_live(self, world: World) -> bool:
        """True once every correct node has reached the liveness goal."""
        ...


@dataclass(frozen=True, slots=True)
class RunSettings:
    safety_ms: int = 3_000
    liveness_budget_ms: int = 20_000
    faults: bool = True
    record_messages: bool = False


@dataclass(slots=True)
class Outcome:
    scenario: str
    seed: int
    violations: list[Violation]
    history_digest: str
    phase: str
    end_ms: int
    steps: int
    world: World
    fault_plan: FaultPlan = field(default_factory=FaultPlan.calm)

    @property
    def ok(self) -> bool:
        return not self.violations

    def named_violations(self) -> list[Violation]:
        """The violations as printed: node ids named by their index (`name_nodes`);
        `violations` keeps the checkers' own text (a history replayed gives it again)."""
        return [name_nodes(violation, self.world) for violation in self.violations]

    def summary(self) -> str:
        verdict = "ok" if self.ok else f"FAILED ({len(self.violations)} violations)"
        return (
            f"SEED={self.seed} scenario={self.scenario} {verdict} phase={self.phase} "
            f"t={self.end_ms}ms steps={self.steps} history={self.history_digest[:16]}"
        )


class _Stop(Exception):
    pass


def run_scenario(scenario: Scenario, seed: int, settings: RunSettings | None = None) -> Outcome:
    """Run one scenario under one seed; never raises for protocol failures."""
    settings = settings or RunSettings()
    world = World(seed, record_messages=settings.record_messages)
    violations: list[Violation] = []
    checkers = scenario.checkers()

    def observe(record: dict[str, object]) -> None:
        for checker in checkers:
            violations.extend(checker.observe(record))

    world.observe(observe)
    plan = FaultPlan.calm()
    phase = "build"
    try:
        scenario.build(world)
        if settings.faults:
            plan = FaultPlan.draw(
                world.rng,
                node_count=len(world.nodes),
                crashable=scenario.crashable(world),
                safety_ms=settings.safety_ms,
                max_crashed=scenario.max_crashed(),
            )
            world.use_fault_plan(plan)
        phase = "safety"
        world.start()
        world.run_until(settings.safety_ms, stop=lambda: bool(violations))
        if not violations:
            phase = "liveness"
            world.heal()
            deadline = world.now_ms + settings.liveness_budget_ms
            live = world.run_until(
                deadline, stop=lambda: bool(violations) or scenario.is_live(world)
            )
            if not violations and not live:
                violations.append(
                    Violation(
                        "liveness",
                        world.now_ms,
                        "correct nodes did not all reach the goal "
                        f"within {settings.liveness_budget_ms} ms after healing",
                    )
                )
        if not violations:
            for checker in checkers:
                violations.extend(checker.finish())
            phase = "done"
    except Exception as error:  # a core raised: a bug, reported with the seed
        detail = "".join(traceback.format_exception(error)[-3:]).strip()
        violations.append(Violation("exception", world.now_ms, detail))
    return Outcome(
        scenario=scenario.name,
        seed=seed,
        violations=violations,
        history_digest=world.history.digest(),
        phase=phase,
        end_ms=world.now_ms,
        steps=world.steps,
        world=world,
        fault_plan=plan,
    )


_HEX_TOKEN = re.compile(r"\b(?:node )?([0-9a-f]{8,64})\b")


def name_nodes(violation: Violation, world: World) -> Violation:
    """`violation` with every node id (a hex prefix of 8 to 64 digits) named as the
    run's header and the world number nodes: ``node 2``, not ``node 2fb964dc``."""
    ids = [(bytes(node.node_id).hex(), node.index) for node in world.nodes]

    def named(match: re.Match[str]) -> str:
        token = match.group(1)
        found = [index for hex_id, index in ids if hex_id.startswith(token)]
        return f"node {found[0]}" if len(found) == 1 else match.group(0)

    detail = _HEX_TOKEN.sub(named, violation.detail)
    if detail == violation.detail:
        return violation
    return Violation(violation.checker, violation.t, detail)
