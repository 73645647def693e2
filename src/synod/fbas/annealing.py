"""Cheap splitting sets by simulated annealing over the roles of organisations.

Theory of operation
-------------------
On a `closed` organisation quotient (`synod.fbas.cascade.organisation_quotient`) a
split only depends on each group's *role*: out of both quorums; all its nodes in the
first quorum or all in the second (it counts on that side and must be satisfied
there); *shared*, with 2k - n of its n nodes faulty and k - (2k - n) in each quorum (it
counts on both sides and must be satisfied on both; needs n > k); or *faulty*, with k
nodes faulty and none in either quorum (it counts on both sides and needs nothing).
Here k is the inner threshold that names the group; a group nobody names never counts.
Any two quorums of groups P1, P2 give a split: the groups in both are shared.

The annealing walks over roles, one group at a time, minimising the faulty nodes plus
`penalty` times the members' missing counted entries, and keeps the cheapest
assignment with nothing missing and a member on each side.  It proves nothing (the
caller's solver and `synod.fbas.quorum_size` give the bounds); on the random asymmetric
networks of 50 organisations it finds 17-18 node splits within a few seconds where
cutting one organisation off gives 20 and the SAT search finds nothing cheaper in 10 s.
Every split it returns is checked against the definitions by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from random import Random

from synod.fbas.cascade import Quotient

Stop = Callable[[], bool]

OUT, FIRST, SECOND, SHARED, FAULTY = range(5)

ANNEAL_MOVES_PER_GROUP_SQUARED = 400
"""Moves tried for a quotient of g groups: 400 g^2 (one million for 50 organisations,
about 4.5 s at 4.5 microseconds a move), so that small networks, which the solver
settles at once, cost milliseconds."""

MOVES_PER_QUESTION = 10_000
"""Moves between two stop questions: about 45 ms."""

MOVES_PER_COOLING = 1_000
"""Moves at one temperature; it falls by 1 % each time (from 2 to 0.05 in 370,000
moves, then back to 1): the schedule that found the 17-18 node splits."""


@dataclass(frozen=True)
class _Role:
    counts: tuple[bool, bool]
    member: tuple[bool, bool]
    cost: int
    faulty: int
    first: int
    second: int


def _roles(size: int, inner: int | None) -> list[_Role | None]:
    """The five roles of a group of `size` nodes named with inner threshold `inner`
    (None where a role is impossible)."""
    if inner is None:
        return [
            _Role((False, False), (False, False), 0, 0, 0, 0),
            _Role((False, False), (True, False), 0, 0, size, 0),
            _Role((False, False), (False, True), 0, 0, 0, size),
            None,
            None,
        ]
    shared_faulty = max(0, 2 * inner - size)
    on_each_side = inner - shared_faulty
    shared = None
    if on_each_side >= 1:
        shared = _Role(
            (True, True), (True, True), shared_faulty, shared_faulty, on_each_side, on_each_side
        )
    return [
        _Role((False, False), (False, False), 0, 0, 0, 0),
        _Role((True, False), (True, False), 0, 0, size, 0),
        _Role((False, True), (False, True), 0, 0, 0, size),
        shared,
        _Role((True, True), (False, False), inner, inner, 0, 0),
    ]


@dataclass
class Annealing:
    """Simulated annealing for a cheap split of a `closed` quotient (see the module
    docstring).  `best` holds the cheapest valid roles found and `best_cost` their
    faulty nodes; `stop` is asked every `MOVES_PER_QUESTION` moves."""

    quotient: Quotient
    stop: Stop | None = None
    seed: int = 0
    penalty: float = 1.0
    best_cost: int | None = None
    moves: int = 0

    def __post_init__(self) -> None:
        quotient = self.quotient
        size = quotient.size
        self.roles = [
            _roles(quotient.groups[g].bit_count(), quotient.inner_threshold[g])
            for g in range(size)
        ]
        self._choices = [[r for r, role in enumerate(rs) if role] for rs in self.roles]
        self._namers = [
            [y for y in range(size) if quotient.entries[y] >> z & 1 and y != z]
            for z in range(size)
        ]
        self.best: list[int] | None = None
        self._walk: _Walk | None = None
        self._random = Random(self.seed)
        self._temperature = 2.0

    def run(self, moves: int | None = None, goal: int = 0) -> list[int] | None:
        """Anneal until `moves` moves were made in all (400 g^2 by default; a later call
        goes on from where the last stopped) or a split of `goal` faulty nodes (a
        proven lower bound) is found; the best roles, or None."""
        size = self.quotient.size
        total = ANNEAL_MOVES_PER_GROUP_SQUARED * size * size if moves is None else moves
        if self._walk is None:
            # Start with everything on both sides: costly, but nothing missing there.
            state = [
                next(r for r in (SHARED, FAULTY, OUT) if self.roles[g][r]) for g in range(size)
            ]
            self._walk = _Walk(self, state)
        walk, random = self._walk, self._random
        while self.moves < total:
            if self.best_cost is not None and self.best_cost <= goal:
                break
            if self.stop is not None and self.stop():
                break
            batch = min(MOVES_PER_QUESTION, total - self.moves)
            self.moves += batch
            while batch > 0:
                for _ in range(min(batch, MOVES_PER_COOLING)):
                    group = random.randrange(size)
                    choice = random.choice(self._choices[group])
                    walk.try_move(group, choice, self._temperature, random)
                batch -= MOVES_PER_COOLING
                # Cool slowly, and warm up again once cold: restarts from the current
                # roles escape the local minimum the walk has settled in.
                cooled = self._temperature * 0.99
                self._temperature = cooled if self._temperature > 0.05 else 1.0
        return self.best


class _Walk:
    """The current roles with each group's counted entries on both sides."""

    def __init__(self, annealing: Annealing, state: list[int]) -> None:
        self.annealing = annealing
        self.quotient = annealing.quotient
        self.state = state
        roles = annealing.roles
        entries = self.quotient.entries
        self.counted = [
            [
                sum(
                    1
                    for z in range(self.quotient.size)
                    if entries[y] >> z & 1 and _role(roles, z, state[z]).counts[side]
                )
                for side in (0, 1)
            ]
            for y in range(self.quotient.size)
        ]
        self.cost = sum(_role(roles, g, s).cost for g, s in enumerate(state))
        self.missing = sum(self._missing(g, state[g], *self.counted[g]) for g in range(len(state)))
        self.members = [
            sum(1 for g, s in enumerate(state) if _role(roles, g, s).member[side])
            for side in (0, 1)
        ]

    def _missing(self, group: int, role_index: int, first: int, second: int) -> int:
        role = _role(self.annealing.roles, group, role_index)
        need = self.quotient.threshold[group]
        return role.member[0] * max(0, need - first) + role.member[1] * max(0, need - second)

    def try_move(self, group: int, choice: int, temperature: float, random: Random) -> None:
        old = self.state[group]
        if choice == old:
            return
        roles = self.annealing.roles
        before, after = _role(roles, group, old), _role(roles, group, choice)
        deltas = (after.counts[0] - before.counts[0], after.counts[1] - before.counts[1])
        change = 0
        for namer in self.annealing._namers[group]:
            role = _role(roles, namer, self.state[namer])
            for side in (0, 1):
                if deltas[side] and role.member[side]:
                    need = self.quotient.threshold[namer] - self.counted[namer][side]
                    change += max(0, need - deltas[side]) - max(0, need)
        own = self.quotient.entries[group] >> group & 1
        first, second = self.counted[group]
        change += self._missing(
            group, choice, first + own * deltas[0], second + own * deltas[1]
        ) - self._missing(group, old, first, second)
        cost_change = after.cost - before.cost
        energy = cost_change + self.annealing.penalty * change
        if energy > 0 and random.random() >= math.exp(-energy / temperature):
            return
        self.state[group] = choice
        if deltas != (0, 0):
            for namer in (*self.annealing._namers[group], *([group] if own else [])):
                self.counted[namer][0] += deltas[0]
                self.counted[namer][1] += deltas[1]
        self.cost += cost_change
        self.missing += change
        for side in (0, 1):
            self.members[side] += after.member[side] - before.member[side]
        self._keep_if_best()

    def _keep_if_best(self) -> None:
        annealing = self.annealing
        if self.missing or not (self.members[0] and self.members[1]):
            return
        if annealing.best_cost is None or self.cost < annealing.best_cost:
            annealing.best_cost = self.cost
            annealing.best = list(self.state)


def _role(roles: list[list[_Role | None]], group: int, index: int) -> _Role:
    role = roles[group][index]
    assert role is not None, "only possible roles are chosen"
    return role


def split_of(
    quotient: Quotient, roles: list[list[_Role | None]], state: list[int]
) -> tuple[int, int, int]:
    """(faulty nodes, first quorum, second quorum) of an assignment of roles."""
    faulty = first = second = 0
    for group, index in enumerate(state):
        role = _role(roles, group, index)
        nodes = _node_list(quotient.groups[group])
        cut_first = role.faulty + role.first
        faulty |= _bits_of(nodes[: role.faulty])
        first |= _bits_of(nodes[role.faulty : cut_first])
        second |= _bits_of(nodes[cut_first : cut_first + role.second])
    return faulty, first, second


def _node_list(bits: int) -> list[int]:
    nodes = []
    while bits:
        low = bits & -bits
        nodes.append(low.bit_length() - 1)
        bits ^= low
    return nodes


def _bits_of(nodes: list[int]) -> int:
    return sum(1 << node for node in nodes)
