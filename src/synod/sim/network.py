"""The simulated network and the fault plan drawn from a seed.

A `FaultPlan` says how hostile one run is: a latency model per link, probabilities of
loss and duplication, how often a message is held back (which reorders a link), and a
schedule of partitions and crashes during the safety phase.  `FaultPlan.draw(rng, ...)`
draws all of it from the run's seeded RNG, so the seed alone reproduces the run.

Partitions are sets of blocked directed links: a symmetric partition blocks both
directions between two groups, an asymmetric one only some directions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from synod.crypto import NodeId

LatencyKind = Literal["uniform", "exponential", "bimodal"]


@dataclass(frozen=True, slots=True)
class LatencyModel:
    """Per-message delay of one link, in virtual milliseconds."""

    kind: LatencyKind
    base_ms: int
    spread_ms: int

    def sample(self, rng: random.Random) -> int:
        match self.kind:
            case "uniform":
                return self.base_ms + rng.randint(0, self.spread_ms)
            case "exponential":
                return self.base_ms + int(rng.expovariate(1.0 / max(1, self.spread_ms)))
            case "bimodal":
                slow = rng.random() < 0.1
                return self.base_ms + (self.spread_ms * 10 if slow else rng.randint(0, 3))


@dataclass(frozen=True, slots=True)
class PartitionSpell:
    """Links blocked from `start_ms` for `duration_ms` (directed pairs of node indices)."""

    start_ms: int
    duration_ms: int
    blocked: frozenset[tuple[int, int]]
    symmetric: bool


@dataclass(frozen=True, slots=True)
class CrashSpell:
    """Node index `node` is down from `start_ms` for `duration_ms`, then restarts."""

    start_ms: int
    duration_ms: int
    node: int


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Everything hostile about one run; `FaultPlan.calm()` is a perfect network."""

    latency: LatencyModel = LatencyModel("uniform", 1, 0)
    link_base_ms: tuple[tuple[int, ...], ...] = ()
    loss_probability: float = 0.0
    duplicate_probability: float = 0.0
    hold_back_probability: float = 0.0
    hold_back_ms: int = 0
    partitions: tuple[PartitionSpell, ...] = ()
    crashes: tuple[CrashSpell, ...] = ()

    @classmethod
    def calm(cls) -> FaultPlan:
        return cls()

    @classmethod
    def draw(
        cls,
        rng: random.Random,
        *,
        node_count: int,
        crashable: Sequence[int],
        safety_ms: int,
        max_crashed: int,
    ) -> FaultPlan:
        """Draw a fault plan for `node_count` nodes; only `crashable` indices crash."""
        latency = LatencyModel(
            rng.choice(("uniform", "exponential", "bimodal")),
            base_ms=rng.randint(1, 20),
            spread_ms=rng.randint(1, 60),
        )
        link_base = tuple(
            tuple(rng.randint(0, 30) for _ in range(node_count)) for _ in range(node_count)
        )
        return cls(
            latency=latency,
            link_base_ms=link_base,
            loss_probability=rng.choice((0.0, 0.01, 0.05, 0.2)),
            duplicate_probability=rng.choice((0.0, 0.02, 0.1)),
            hold_back_probability=rng.choice((0.0, 0.05, 0.2)),
            hold_back_ms=rng.randint(50, 400),
            partitions=_draw_partitions(rng, node_count, safety_ms),
            crashes=_draw_crashes(rng, crashable, safety_ms, max_crashed),
        )


def _draw_partitions(
    rng: random.Random, node_count: int, safety_ms: int
) -> tuple[PartitionSpell, ...]:
    spells = []
    for _ in range(rng.randint(0, 3)):
        start = rng.randint(0, max(1, safety_ms - 1))
        duration = rng.randint(50, max(51, safety_ms // 2))
        symmetric = rng.random() < 0.6
        spells.append(
            PartitionSpell(start, duration, _draw_blocked(rng, node_count, symmetric), symmetric)
        )
    return tuple(sorted(spells, key=lambda spell: spell.start_ms))


def _draw_blocked(
    rng: random.Random, node_count: int, symmetric: bool
) -> frozenset[tuple[int, int]]:
    indices = list(range(node_count))
    rng.shuffle(indices)
    cut = rng.randint(1, max(1, node_count - 1))
    left, right = indices[:cut], indices[cut:]
    blocked: set[tuple[int, int]] = set()
    for a in left:
        for b in right:
            if symmetric:
                blocked.update({(a, b), (b, a)})
            elif rng.random() < 0.5:
                blocked.add((a, b))
            else:
                blocked.add((b, a))
    return frozenset(blocked)


def _draw_crashes(
    rng: random.Random, crashable: Sequence[int], safety_ms: int, max_crashed: int
) -> tuple[CrashSpell, ...]:
    if not crashable or max_crashed <= 0:
        return ()
    spells: list[CrashSpell] = []
    for _ in range(rng.randint(0, 3)):
        node = rng.choice(list(crashable))
        start = rng.randint(0, max(1, safety_ms - 1))
        duration = rng.randint(20, max(21, safety_ms // 3))
        candidate = CrashSpell(start, duration, node)
        if _crashed_at_once([*spells, candidate]) <= max_crashed and not _overlaps_same_node(
            spells, candidate
        ):
            spells.append(candidate)
    return tuple(sorted(spells, key=lambda spell: spell.start_ms))


def _crashed_at_once(spells: Sequence[CrashSpell]) -> int:
    edges = sorted(
        [(spell.start_ms, 1) for spell in spells]
        + [(spell.start_ms + spell.duration_ms, -1) for spell in spells]
    )
    most = current = 0
    for _, change in edges:
        current += change
        most = max(most, current)
    return most


def _overlaps_same_node(spells: Sequence[CrashSpell], candidate: CrashSpell) -> bool:
    return any(
        spell.node == candidate.node
        and spell.start_ms < candidate.start_ms + candidate.duration_ms
        and candidate.start_ms < spell.start_ms + spell.duration_ms
        for spell in spells
    )


@dataclass(slots=True)
class Network:
    """Live link state: which directed links are blocked right now."""

    node_ids: tuple[NodeId, ...]
    plan: FaultPlan
    blocked: set[tuple[int, int]] = field(default_factory=set)
    silenced: set[int] = field(default_factory=set)
    """Nodes cut off from everyone (`World.silence`), apart from the blocked links."""
    healed: bool = False

    def index(self, node: NodeId) -> int:
        return self.node_ids.index(node)

    def is_blocked(self, sender: int, receiver: int) -> bool:
        return (
            (sender, receiver) in self.blocked
            or sender in self.silenced
            or receiver in self.silenced
        )

    def delay_ms(self, rng: random.Random, sender: int, receiver: int) -> int:
        base = self.plan.link_base_ms[sender][receiver] if self.plan.link_base_ms else 0
        delay = base + self.plan.latency.sample(rng)
        if not self.healed and rng.random() < self.plan.hold_back_probability:
            delay += self.plan.hold_back_ms
        return max(1, delay)

    def lose(self, rng: random.Random) -> bool:
        return not self.healed and rng.random() < self.plan.loss_probability

    def duplicate(self, rng: random.Random) -> bool:
        return not self.healed and rng.random() < self.plan.duplicate_probability
