"""Smallest blocking sets by a search over the blocking cascade of organisations.

Theory of operation
-------------------
*Organisation quotient.*  In the networks that operators build, the validators of one
organisation share one quorum set and every quorum set names them only through one leaf
inner set "k of exactly these validators" (or names a lone validator directly).  Such a
group of nodes behaves as one unit in the blocking cascade: its nodes outside the failed
set are blocked together (they have one quorum set), and a leaf inner set that names it is
v-blocked once `m = size - k + 1` of its nodes are (fewer failed nodes than `m` change
nothing).  So a blocking set by node is, without loss, a set of *seeded* groups, each
costing `m` failed nodes (its whole size when nobody names it or its own quorum set cannot
be v-blocked), and the cascade runs on groups: a group is blocked when at least `need` of
the entries of its quorum set are.  `organisation_quotient` builds that model when every
group of the greatest quorum has this shape and answers None otherwise.

*Exact search.*  Let C be a set of blocked groups closed under the cascade, and S the
seeds still to add, |S| costing at most r.  Unless S seeds every group left, some group
y outside C and S is the first to be blocked after them: S then holds enough entries of
y's quorum set to block it together with C.  So the search branches on y and on one
such choice D of entries (the cheapest first), recurses from the closure of C + D with
r - cost(D), and remembers the closed sets that failed with a given budget.  Every
branch is a real cascade, so a model is a blocking set; a search that fails proves that
no set of cost at most r exists.  Deepening r from the cost of blocking a single group
gives the minimum and, when stopped early, a proven lower bound.

This is exact, and on networks without symmetry (each organisation with its own random
set of trusted organisations) far faster than the unrolled cascade of
`synod.fbas.analysis`, whose formula needs one level per distinct quorum set.  On highly
symmetric networks the branching is wide, so callers give it a budget of closures and fall
back to the SAT search when it is spent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from math import gcd
from random import Random

from synod.fbas.network import (
    Fbas,
    Threshold,
    is_quorum_despite,
    iter_bits,
    largest_quorum_within,
)

Stop = Callable[[], bool]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Quotient:
    """The greatest quorum as groups of interchangeable nodes (see the module docstring)."""

    groups: tuple[int, ...]
    """Node bitset of each group."""
    cost: tuple[int, ...]
    """Failed nodes (or failed grouping groups) that block each group when seeded."""
    seed_nodes: tuple[int, ...]
    """The nodes failed when a group is seeded."""
    entries: tuple[int, ...]
    """For each group, the bitset of groups its quorum set names and that can be blocked."""
    need: tuple[int, ...]
    """For each group, how many of those entries block its quorum set."""
    inner_threshold: tuple[int | None, ...] = ()
    """For each group named by others, how many of its nodes satisfy the inner sets
    that name it (None when nobody names it)."""
    threshold: tuple[int, ...] = ()
    """For each group, the threshold of its quorum set over its entries (meaningful for
    a `closed` quotient, whose entries are exactly those of the quorum set)."""

    @property
    def size(self) -> int:
        return len(self.groups)


class _Unsupported(Exception):
    """The network does not have the organisation shape."""


def organisation_quotient(
    fbas: Fbas,
    within: int,
    grouping_groups: list[int] | None = None,
    *,
    closed: bool = False,
) -> Quotient | None:
    """The organisation quotient of the greatest quorum `within`, or None when a group of
    it is named in a way the quotient cannot express.  With `grouping_groups` (node
    bitsets of the groups that fail as a whole), each must meet `within` in exactly one
    group of the quotient, and seeding costs one grouping group.  With `closed`, every
    quorum set of `within` must name only nodes of `within`, with positive thresholds
    (the splitting search needs each entry to be a group)."""
    try:
        groups, qsets = _groups(fbas, within)
        group_of = {node: index for index, bits in enumerate(groups) for node in iter_bits(bits)}
        demand: dict[int, int] = {}
        shapes = [
            _entries(qset, within, group_of, groups, demand, closed=closed) for qset in qsets
        ]
    except _Unsupported:
        return None
    entries = [bits for bits, _ in shapes]
    need = [count for _, count in shapes]
    cost: list[int] = []
    seed_nodes: list[int] = []
    for index, bits in enumerate(groups):
        blockable = entries[index].bit_count() >= need[index]
        nodes = list(iter_bits(bits))
        count = demand.get(index, len(nodes)) if blockable else len(nodes)
        cost.append(count)
        seed_nodes.append(sum(1 << node for node in nodes[:count]))
    if grouping_groups is not None:
        seeds = _grouped_seeds(grouping_groups, within, groups)
        if seeds is None:
            return None
        seed_nodes = seeds
        cost = [1] * len(groups)
    inner_threshold = tuple(
        None if index not in demand else bits.bit_count() - demand[index] + 1
        for index, bits in enumerate(groups)
    )
    return Quotient(
        tuple(groups),
        tuple(cost),
        tuple(seed_nodes),
        tuple(entries),
        tuple(need),
        inner_threshold,
        tuple(qset.threshold for qset in qsets),
    )


def _named(qset: Threshold) -> list[tuple[tuple[int, ...], int]]:
    """The entries of `qset` as (validators, threshold): a lone validator is "1 of it"."""
    named: list[tuple[tuple[int, ...], int]] = [((validator,), 1) for validator in qset.validators]
    for inner in qset.inner:
        if inner.inner:
            raise _Unsupported
        named.append((inner.validators, inner.threshold))
    return named


def _groups(fbas: Fbas, within: int) -> tuple[list[int], list[Threshold]]:
    """Nodes of `within` grouped by quorum set and by the entries that name them, so that
    equal quorum sets of unrelated organisations stay apart; each group's quorum set."""
    holders: list[Threshold] = []
    for node in iter_bits(within):
        qset = fbas.qsets[node]
        assert qset is not None, "every node of a quorum has a quorum set"
        holders.append(qset)
    named_in: dict[int, set[int]] = {}
    for qset in set(holders):
        for members, _ in _named(qset):
            inside = sum(1 << node for node in members if within >> node & 1)
            for node in iter_bits(inside):
                named_in.setdefault(node, set()).add(inside)
    by_key: dict[tuple[Threshold, tuple[int, ...]], int] = {}
    for node, qset in zip(iter_bits(within), holders, strict=True):
        key = (qset, tuple(sorted(named_in.get(node, ()))))
        by_key[key] = by_key.get(key, 0) | (1 << node)
    return list(by_key.values()), [qset for qset, _ in by_key]


def _grouped_seeds(grouping_groups: list[int], within: int, groups: list[int]) -> list[int] | None:
    """The grouping group that holds each quotient group, when they match one to one."""
    seeds: dict[int, int] = {}
    for bits in grouping_groups:
        inside = bits & within
        if not inside:
            continue
        matches = [index for index, group in enumerate(groups) if group == inside]
        if not matches:
            return None
        seeds[matches[0]] = bits
    if len(seeds) != len(groups):
        return None
    return [seeds[index] for index in range(len(groups))]


def _entries(
    qset: Threshold,
    within: int,
    group_of: dict[int, int],
    groups: list[int],
    demand: dict[int, int],
    *,
    closed: bool = False,
) -> tuple[int, int]:
    """(bitset of the groups `qset` names that can be blocked, how many of them block it);
    records in `demand` how many nodes of a named group block its leaf inner set."""
    need = qset.entry_count - qset.threshold + 1
    if qset.threshold <= 0:
        if closed:
            raise _Unsupported
        return 0, 1  # always satisfied: never blocked
    entries = 0
    for members, threshold in _named(qset):
        inside = [node for node in members if within >> node & 1]
        if closed and (threshold <= 0 or len(inside) < len(members)):
            raise _Unsupported
        # Nodes outside the greatest quorum are in no quorum: blocked from the start.
        blocked_needed = len(members) - threshold + 1 - (len(members) - len(inside))
        if threshold <= 0 or blocked_needed > len(inside):
            continue  # this entry can never be blocked
        if blocked_needed <= 0:
            if closed:
                raise _Unsupported
            need -= 1  # already blocked
            continue
        group = group_of[inside[0]]
        if groups[group] != sum(1 << node for node in inside) or entries >> group & 1:
            raise _Unsupported
        if demand.setdefault(group, blocked_needed) != blocked_needed:
            raise _Unsupported
        entries |= 1 << group
    return entries, max(need, 0)


class SearchStopped(Exception):
    """The caller's stop, or the closure budget, ended the search before it decided."""


def next_stop_question(
    work: int, next_check: int, check_work: int, stop: Stop | None, budget: int | None
) -> int:
    """Ask `stop` once `work` has reached `next_check`, and end the search past `budget`
    (both raise `SearchStopped`); the work at which to ask next."""
    if work >= next_check:
        next_check = work + check_work
        if stop is not None and stop():
            raise SearchStopped
    if budget is not None and work > budget:
        raise SearchStopped
    return next_check


@dataclass
class BlockingSearch:
    """Deepening search for the cheapest seeds whose cascade blocks every group.

    `lower` is proven after each finished depth: no seeds cost less.  `work` counts the
    groups and quorum-set entries examined (by cascades and by the choice of the next
    group to block), the unit that `budget` caps; `stop` is asked each time
    `check_work` more were examined.  Each recursion level seeds
    at least one group, so the depth stays below `max_seeds`: a search that would need
    more seeds gives up (raising `SearchStopped`) rather than reach Python's recursion
    limit."""

    quotient: Quotient
    stop: Stop | None = None
    budget: int | None = None
    check_work: int = 4_096
    max_seeds: int = 300
    closures: int = 0
    work: int = 0
    lower: int = 0

    def __post_init__(self) -> None:
        self._failed: dict[int, int] = {}
        self._next_check = self.check_work
        quotient = self.quotient
        self._full = (1 << quotient.size) - 1
        self._rules = [
            (group, quotient.entries[group], quotient.need[group]) for group in range(quotient.size)
        ]
        # Each group's entries, cheapest first, so that the first `missing` free ones give
        # the least cost of blocking it next.
        self._ordered = [
            sorted(
                (c for c in iter_bits(quotient.entries[group]) if c != group),
                key=lambda c: (quotient.cost[c], c),
            )
            for group in range(quotient.size)
        ]

    def closure(self, blocked: int) -> int:
        """The cascade from `blocked`: add each group whose quorum set is v-blocked."""
        self.closures += 1
        self._next_check = next_stop_question(
            self.work, self._next_check, self.check_work, self.stop, self.budget
        )
        while True:
            self.work += len(self._rules)
            grown = blocked
            for group, entries, need in self._rules:
                if not grown >> group & 1 and (entries & grown).bit_count() >= need:
                    grown |= 1 << group
            if grown == blocked:
                return blocked
            blocked = grown

    def minimum(self, upper: int | None = None, progress: Progress | None = None) -> int | None:
        """Seeds (a group bitset) of minimum cost, or None when `upper` (the cost of a
        known answer) is already minimum; raises `SearchStopped` with `lower` proven."""
        step = 0
        for cost in self.quotient.cost:
            step = gcd(step, cost)
        step = max(step, 1)

        def achievable(cost: int) -> int:
            # Every total is a multiple of the costs' common divisor.
            return -(-cost // step) * step

        start = self.closure(0)
        self.lower = achievable(max(self.lower, self._cheapest_block(start)))
        cheapest = min(self.quotient.cost, default=1)
        while upper is None or self.lower < upper:
            if self.lower > self.max_seeds * cheapest:
                raise SearchStopped
            found = self._search(start, self.lower)
            if found is not None:
                return found
            if progress is not None:
                progress(f"blocking: no set of cost {self.lower}, {self.closures} cascades")
            self.lower = achievable(self.lower + 1)
        return None

    def _cheapest_block(self, blocked: int) -> int:
        """The least cost that makes some group outside `blocked` the next one blocked
        (or seeds all of them): a lower bound on any completion."""
        cost = self.quotient.cost
        best = sum(cost[group] for group in range(self.quotient.size) if not blocked >> group & 1)
        for group, candidates in self._next_blocked(blocked):
            missing = self._missing(blocked, group)
            best = min(best, sum(cost[c] for c in candidates[:missing]))
        return best

    def _missing(self, blocked: int, group: int) -> int:
        _, entries, need = self._rules[group]
        return need - (entries & blocked).bit_count()

    def _next_blocked(self, blocked: int) -> list[tuple[int, list[int]]]:
        """(group, its free entries cheapest first) for each group outside `blocked`
        that seeds could make the next one blocked."""
        options = []
        self.work += len(self._rules)
        for group, _, _ in self._rules:
            if blocked >> group & 1:
                continue
            self.work += len(self._ordered[group])
            candidates = [c for c in self._ordered[group] if not blocked >> c & 1]
            if self._missing(blocked, group) <= len(candidates):
                options.append((group, candidates))
        return options

    def _search(self, blocked: int, budget: int) -> int | None:
        """Seeds of cost at most `budget` that, added to the closed set `blocked`,
        block every group; None when there are none."""
        if blocked == self._full:
            return 0
        cost = self.quotient.cost
        rest = self._full & ~blocked
        if sum(cost[group] for group in iter_bits(rest)) <= budget:
            return rest
        if budget <= 0 or self._failed.get(blocked, -1) >= budget:
            return None
        for group, candidates in self._next_blocked(blocked):
            missing = self._missing(blocked, group)
            if sum(cost[c] for c in candidates[:missing]) > budget:
                continue
            for chosen in combinations(candidates, missing):
                spent = sum(cost[c] for c in chosen)
                if spent > budget:
                    continue
                seeds = sum(1 << c for c in chosen)
                found = self._search(self.closure(blocked | seeds), budget - spent)
                if found is not None:
                    return found | seeds
        self._failed[blocked] = budget
        return None


def seeds_cost(quotient: Quotient, seeds: int) -> int:
    return sum(quotient.cost[group] for group in iter_bits(seeds))


def seeded_nodes(quotient: Quotient, seeds: int) -> int:
    """The failed nodes of a choice of seeded groups."""
    nodes = 0
    for group in iter_bits(seeds):
        nodes |= quotient.seed_nodes[group]
    return nodes


def greatest_quorum(quotient: Quotient, within: int, work: list[int] | None = None) -> int:
    """The greatest quorum of groups inside `within` (a group bitset) of a `closed`
    quotient: drop each group whose quorum set the remaining groups do not satisfy.
    Adds the groups it examined to `work[0]` when given."""
    while True:
        kept = within
        for group in iter_bits(within):
            satisfied = (quotient.entries[group] & within).bit_count()
            if satisfied < quotient.threshold[group]:
                kept &= ~(1 << group)
        if work is not None:
            work[0] += within.bit_count()
        if kept == within:
            return within
        within = kept


WITNESS_WORK = 2_000_000
"""Groups examined by `top_tier_witnesses` before it leaves the rest to the solver:
the 50-organisation asymmetric networks need 20,000 to 40,000 (about 4 ms); at about
0.1 microsecond each this caps the greedy pass at about 0.2 s on a network built to
defeat it."""


def top_tier_witnesses(
    quotient: Quotient, stop: Stop | None = None, attempts: int = 4, budget: int = WITNESS_WORK
) -> tuple[int, list[int]]:
    """Groups proven to lie in a minimal quorum of a `closed` quotient, and those minimal
    quorums (group bitsets), found without a solver.

    A group y is in one when some quorum S holds y while S without y holds no quorum
    (every quorum inside S then holds y, and S holds a minimal one).  Such an S is
    sought greedily: from the greatest quorum, drop groups in a seeded random order
    while the greatest quorum of the rest still holds y, then check S without y; a
    success is shrunk to a minimal quorum, all of whose groups are then known.  Groups
    not proven in `attempts` orders, or once `budget` groups were examined, are left to
    the caller's exact search; none is ever claimed outside the top tier here."""
    work = [0]
    everything = greatest_quorum(quotient, (1 << quotient.size) - 1, work)
    known = 0
    found: list[int] = []
    orders = Random(0)
    for group in iter_bits(everything):
        for _ in range(attempts if not known >> group & 1 else 0):
            if (stop is not None and stop()) or work[0] > budget:
                return known, found
            minimal = _minimal_quorum_through(quotient, everything, group, orders, work)
            if minimal:
                known |= minimal
                found.append(minimal)
                break
    return known, found


def _minimal_quorum_through(
    quotient: Quotient, everything: int, group: int, orders: Random, work: list[int]
) -> int:
    """A minimal quorum holding `group` found by one greedy order, or 0."""
    order = list(iter_bits(everything & ~(1 << group)))
    orders.shuffle(order)
    quorum = everything
    for other in order:
        if quorum >> other & 1:
            smaller = greatest_quorum(quotient, quorum & ~(1 << other), work)
            if smaller >> group & 1:
                quorum = smaller
    if greatest_quorum(quotient, quorum & ~(1 << group), work):
        return 0
    # Every quorum inside `quorum` holds `group`: one shrinking pass gives a minimal one.
    for other in iter_bits(quorum & ~(1 << group)):
        if quorum >> other & 1:
            smaller = greatest_quorum(quotient, quorum & ~(1 << other), work)
            if smaller:
                quorum = smaller
    return quorum


CUT_OFF_GROUPS_PER_QUESTION = 16
"""Groups `split_off_one_group` tries between two stop questions: each costs one
greatest-quorum pass over the members (0.12 ms for 150 nodes, 1.2 ms for 600), so a stop is seen
within a few milliseconds even on networks of thousands of nodes."""


def split_off_one_group(
    fbas: Fbas,
    quotient: Quotient,
    members: int,
    whole_groups: bool,
    stop: Stop | None = None,
) -> tuple[int, int, int, int] | None:
    """The cheapest split that cuts one group off from the rest: (cost, faulty nodes,
    first quorum, second quorum), or None when no group can be cut off that way.

    The second quorum is one group p alone.  Its quorum set needs `threshold` entries
    counted; p counts itself when it names itself, and every other entry is made to
    count on both sides by failing as many of its nodes as the inner set needs (or the
    whole grouping group when groups fail as a whole), cheapest first.  The first
    quorum is the greatest quorum of the other members despite those failures.  On
    networks where each organisation trusts its own random set of others, the
    organisation that trusts the fewest is the cheapest to cut off, and the SAT search
    finds no cheaper split within 10 s (cheaper ones exist): this gives a good answer at
    once (a few milliseconds for 50 organisations).  `stop` is asked every
    `CUT_OFF_GROUPS_PER_QUESTION` groups.  Every split
    returned is checked against the definitions, so a `quotient` that does not have the
    organisation shape only costs a weaker answer."""
    best: tuple[int, int, int, int] | None = None
    for group in range(quotient.size):
        if stop is not None and group % CUT_OFF_GROUPS_PER_QUESTION == 0 and stop():
            break  # the best cut so far is still a real split
        found = _cut_off(fbas, quotient, members, whole_groups, group)
        if found is not None and (best is None or found[0] < best[0]):
            best = found
    return best


def _cut_off(
    fbas: Fbas, quotient: Quotient, members: int, whole_groups: bool, group: int
) -> tuple[int, int, int, int] | None:
    """The split of `split_off_one_group` that cuts off `group`, or None."""
    entries = quotient.entries[group]
    needed = quotient.threshold[group] - (1 if entries >> group & 1 else 0)
    others: list[tuple[int, int]] = []
    for entry in iter_bits(entries & ~(1 << group)):
        inner = quotient.inner_threshold[entry]
        if whole_groups:
            others.append((1, quotient.seed_nodes[entry]))
        elif inner is not None:
            members_of_entry = list(iter_bits(quotient.groups[entry]))
            others.append((inner, sum(1 << node for node in members_of_entry[:inner])))
    if needed > len(others):
        return None
    others.sort(key=lambda pair: pair[0])
    chosen = others[: max(needed, 0)]
    cost = sum(price for price, _ in chosen)
    faulty = 0
    for _, failed in chosen:
        faulty |= failed
    second = quotient.groups[group] & ~faulty
    if not second or not is_quorum_despite(fbas, second, faulty):
        return None
    first = largest_quorum_within(fbas, members & ~second, faulty)
    if not first:
        return None
    return cost, faulty, first, second
