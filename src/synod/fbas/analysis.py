"""FBAS analyses: quorum intersection, minimal blocking and splitting sets, the top tier.

Theory of operation
-------------------
Definitions (SCP paper, sections 3 and 4.1; python-fbas and fbas_analyzer use the same):

- *quorum intersection*: every two quorums share a node.  A witness of its failure is
  two disjoint quorums; we shrink both to minimal quorums before reporting them.
- *blocking set* (the liveness buffer): a set B that intersects every quorum, so that
  when B crashes the others can never again form a quorum.  Equivalently the greatest
  quorum inside V \\ B is empty, or the cascade "a node is blocked once its quorum set is
  v-blocked by blocked nodes", started from B, eventually blocks every node of a quorum.
- *splitting set* (the safety buffer): a set B such that the network with B *deleted*
  (paper Definition 11: B's members say anything, so they count as present in every
  slice) has two disjoint quorums.  This is the intersection-despite-B notion of the
  paper; fbas_analyzer's older rule (two quorums meeting only inside B) never gives a
  smaller set, because both of its quorums minus B are quorums of the deleted network.
- *minimal quorum*: a quorum with no other quorum inside; the *top tier* is the union of
  all minimal quorums.  Every minimal blocking set lies in the top tier.

Method.  Each question is answered with a SAT (or MaxSAT) instance over node-membership
variables, after three reductions:

1. only the greatest quorum U (the nodes that are in any quorum at all) matters, and
   inside it only the *cores* of `synod.fbas.network.quorum_cores`: every quorum contains
   a quorum inside a single strongly connected component of the trust graph (take a
   component it touches from which no other such component is reachable), so every
   minimal quorum lies inside one core; two cores give two disjoint quorums at once,
   and top tier and blocking sets are computed core by core;
2. nodes with equal quorum sets share one encoded constraint (the Stellar top tier
   usually shares one quorum set), so the formula grows with the number of *distinct*
   quorum sets, not nodes;
3. interchangeable validators and organisations get lex-leader symmetry-breaking
   constraints (`synod.fbas.symmetry`), without which proving that no smaller
   set exists is a pigeonhole search, exponential in the number of organisations.

"B blocks everything" is a least fixpoint, which plain SAT cannot state directly; we
unroll the cascade in levels.  At each level all non-failed nodes with the same quorum
set become blocked together, so a cascade that still changes adds at least one new
distinct quorum set per level: `distinct quorum sets + 1` levels always suffice, which
keeps the encoding exact, not bounded.  Cascade constraints are encoded in both
directions, so that the cascade of a chosen set follows by unit propagation.  Minimum
cardinality comes from the RC2 MaxSAT solver (one soft clause per node or per group);
when grouping by organisation, domain, ISP or country, a group fails as a whole and the
objective counts groups.

Membership in the top tier: v is in a minimal quorum iff some quorum Q holds v while
Q \\ {v} holds no quorum, that is iff the cascade started from {v} inside Q blocks all
of Q; one incremental SAT call per node not yet known (each success reveals a whole
minimal quorum, whose members need no call).

Every answer carries its evidence (quorums, sets) and is re-checked against the plain
definitions in `synod.fbas.network` before it is returned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pysat.card import CardEnc, EncType
from pysat.examples.rc2 import RC2
from pysat.formula import WCNF
from pysat.solvers import Solver

from synod.fbas.annealing import ANNEAL_MOVES_PER_GROUP_SQUARED, Annealing, split_of
from synod.fbas.cascade import (
    BlockingSearch,
    Quotient,
    SearchStopped,
    organisation_quotient,
    seeded_nodes,
    seeds_cost,
    split_off_one_group,
    top_tier_witnesses,
)
from synod.fbas.network import (
    Fbas,
    Threshold,
    bits_from,
    is_blocking,
    is_quorum,
    is_quorum_despite,
    iter_bits,
    largest_quorum_within,
    quorum_cores,
    shrink_to_minimal_quorum,
)
from synod.fbas.quorum_size import QUORUM_SIZE_WORK, splitting_lower_bound
from synod.fbas.symmetry import add_lex_leader, find_symmetries

Progress = Callable[[str], None]
Stop = Callable[[], bool]
"""Asked between solver calls: True ends the search with what it has proven so far.
The caller owns the clock (this package reads none), e.g. a deadline check."""
Lit = int | bool
Scope = Literal["top-tier", "all"]

_SOLVER = "cadical153"
_CARD = EncType.seqcounter


def _quiet(_: str) -> None:
    """Default progress sink: say nothing."""


class _Stopped(Exception):
    """The caller's `Stop` ended a search before it decided."""


_FIRST_BUDGET = 100
_MAX_BUDGET = 1_000
"""Conflicts per solver call between two `Stop` checks: the budget doubles while a
query stays open, up to this cap, so a stop request is seen within one capped call
(about 0.2 s on the 50-organisation asymmetric networks, whose conflicts cost about
0.2 ms each on an idle core) while the solver keeps what it learned between calls."""
_LOAD_CHUNK = 50_000
"""Clauses handed to the solver between two `Stop` checks while a formula is loaded:
loading the 1.5 M clauses of an unrolled cascade takes seconds, 50,000 take about
0.05 s."""


def _attempt(solver: Any, assumptions: Sequence[int], budget: int) -> bool | None:
    """One solver call limited to `budget` conflicts: None when the budget ran out."""
    solver.conf_budget(budget)
    outcome = solver.solve_limited(assumptions=assumptions)
    return None if outcome is None else bool(outcome)


def _new_solver(clauses: list[list[int]], stop: Stop | None) -> Any:
    """A solver holding `clauses`, loaded in chunks with `stop` asked between them
    (raising `_Stopped`, the solver deleted) so that a large formula does not delay a
    stop request by seconds."""
    solver = Solver(name=_SOLVER)
    for start in range(0, len(clauses), _LOAD_CHUNK):
        if stop is not None and stop():
            solver.delete()
            raise _Stopped
        solver.append_formula(clauses[start : start + _LOAD_CHUNK])
    return solver


def _attempt_sliced(
    solver: Any, assumptions: Sequence[int], total: int, stop: Stop | None
) -> bool | None:
    """Up to `total` conflicts in slices of at most `_MAX_BUDGET`, with `stop` asked
    between them (raising `_Stopped`): None when the conflicts ran out undecided."""
    spent = 0
    while spent < total:
        if stop is not None and stop():
            raise _Stopped
        budget = min(_MAX_BUDGET, total - spent)
        outcome = _attempt(solver, assumptions, budget)
        if outcome is not None:
            return outcome
        spent += budget
    return None


def _solve(solver: Any, assumptions: Sequence[int], stop: Stop | None) -> bool | None:
    """`solver.solve(assumptions)`, or, with `stop`, the same in conflict-budgeted
    slices with `stop` asked between them: None when it asked to stop first."""
    if stop is None:
        return bool(solver.solve(assumptions=assumptions))
    budget = _FIRST_BUDGET
    while not stop():
        outcome = _attempt(solver, assumptions, budget)
        if outcome is not None:
            return outcome
        budget = min(2 * budget, _MAX_BUDGET)
    return None


# ---------------------------------------------------------------- CNF building


class _Cnf:
    """Clauses plus a variable counter, with constant folding for literals."""

    def __init__(self) -> None:
        self.top = 0
        self.clauses: list[list[int]] = []

    def new(self) -> int:
        self.top += 1
        return self.top

    def add(self, clause: Sequence[Lit]) -> None:
        """Add a clause; True literals satisfy it, False literals drop out."""
        if any(lit is True for lit in clause):
            return
        literals = [lit for lit in clause if lit is not False]
        assert all(isinstance(lit, int) for lit in literals)
        self.clauses.append([int(lit) for lit in literals])

    def implies_atleast(self, lits: Sequence[Lit], bound: int, exact: bool = False) -> Lit:
        """A literal y with y -> (at least `bound` of `lits`), folding constants; with
        `exact`, also (at least `bound`) -> y, so that y follows from its inputs by unit
        propagation (the cascade encodings rely on this to stay easy for the solver)."""
        bound -= sum(1 for lit in lits if lit is True)
        free = [int(lit) for lit in lits if lit is not True and lit is not False]
        if bound <= 0:
            return True
        if bound > len(free):
            return False
        if bound == 1 and len(free) == 1:
            return free[0]
        chosen = self.new()
        if bound == 1:
            self.clauses.append([-chosen, *free])
            if exact:
                self.clauses.extend([-lit, chosen] for lit in free)
        elif bound == len(free):
            self.clauses.extend([-chosen, lit] for lit in free)
            if exact:
                self.clauses.append([chosen, *(-lit for lit in free)])
        else:
            self._extend(
                CardEnc.atleast(free, bound=bound, top_id=self.top, encoding=_CARD), -chosen
            )
            if exact:
                self._extend(
                    CardEnc.atmost(free, bound=bound - 1, top_id=self.top, encoding=_CARD), chosen
                )
        return chosen

    def _extend(self, encoded: Any, guard: int) -> None:
        """Add an encoded constraint's clauses, each weakened by `guard`."""
        self.top = max(self.top, encoded.nv)
        self.clauses.extend([guard, *clause] for clause in encoded.clauses)

    def implies_any(self, lits: Sequence[Lit], exact: bool = False) -> Lit:
        return self.implies_atleast(lits, 1, exact)

    def negate(self, lit: Lit) -> Lit:
        if isinstance(lit, bool):
            return not lit
        return -lit


def _encode_satisfied(
    cnf: _Cnf, qset: Threshold, child: Callable[[int], Lit], memo: dict[Threshold, Lit]
) -> Lit:
    """A literal that implies `qset` is satisfied by the nodes whose `child` holds."""
    found = memo.get(qset)
    if found is not None:
        return found
    lits = [child(v) for v in qset.validators]
    lits.extend(_encode_satisfied(cnf, inner, child, memo) for inner in qset.inner)
    result = cnf.implies_atleast(lits, qset.threshold)
    memo[qset] = result
    return result


def _encode_blocked(
    cnf: _Cnf, qset: Threshold, child: Callable[[int], Lit], memo: dict[Threshold, Lit]
) -> Lit:
    """A literal that implies `qset` is v-blocked by the nodes whose `child` holds."""
    found = memo.get(qset)
    if found is not None:
        return found
    if qset.threshold <= 0:
        result: Lit = False
    else:
        lits = [child(v) for v in qset.validators]
        lits.extend(_encode_blocked(cnf, inner, child, memo) for inner in qset.inner)
        result = cnf.implies_atleast(lits, qset.entry_count - qset.threshold + 1, exact=True)
    memo[qset] = result
    return result


def _encode_quorum(cnf: _Cnf, fbas: Fbas, member: dict[int, Lit]) -> None:
    """Constrain the nodes whose `member` literal holds to satisfy their quorum sets;
    nodes without a literal count as absent."""
    memo: dict[Threshold, Lit] = {}

    def child(v: int) -> Lit:
        return member.get(v, False)

    for node, lit in member.items():
        qset = fbas.qsets[node]
        if qset is None:
            cnf.add([cnf.negate(lit)])
        else:
            cnf.add([cnf.negate(lit), _encode_satisfied(cnf, qset, child, memo)])


def _encode_cascade(
    cnf: _Cnf,
    fbas: Fbas,
    scope: int,
    start: dict[int, Lit],
    *,
    stop: Stop | None = None,
    levels: int | None = None,
) -> None:
    """Require that the v-blocking cascade from `start` (a literal per scope node; nodes
    outside `scope` are blocked from the start) blocks every node of `scope`.  `stop`
    is asked between levels (raising `_Stopped`): without symmetry a network has one
    level per organisation and the formula takes seconds to build."""
    nodes = list(iter_bits(scope))
    exact_levels = len({fbas.qsets[v] for v in nodes}) + 1
    # Fewer `levels` than that ask for a cascade that blocks everything that fast: a
    # model is still a real cascade, but "no model" proves nothing.
    levels = exact_levels if levels is None else min(levels, exact_levels)
    blocked: dict[int, Lit] = dict(start)
    for _ in range(levels):
        if stop is not None and stop():
            raise _Stopped
        memo: dict[Threshold, Lit] = {}
        previous = blocked

        def child(v: int, previous: dict[int, Lit] = previous) -> Lit:
            return previous.get(v, True)

        blocked = {}
        for v in nodes:
            qset = fbas.qsets[v]
            reason: Lit = True if qset is None else _encode_blocked(cnf, qset, child, memo)
            blocked[v] = cnf.implies_any([previous[v], reason], exact=True)
    for v in nodes:
        cnf.add([blocked[v]])


# ---------------------------------------------------------------- intersection


@dataclass(frozen=True)
class IntersectionResult:
    """Outcome of the quorum-intersection check."""

    has_quorum: bool
    intersects: bool | None
    """None when the search was stopped before it decided."""
    witness: tuple[int, int] | None = None
    """Two disjoint minimal quorums (bitsets) when `intersects` is False."""
    greatest_quorum: int = 0
    method: str = ""


def check_intersection(
    fbas: Fbas, progress: Progress = _quiet, *, stop: Stop | None = None
) -> IntersectionResult:
    """Decide quorum intersection; on failure return two disjoint minimal quorums.
    With `stop`, the SAT search may end undecided (`intersects` is None)."""
    greatest = largest_quorum_within(fbas, fbas.all_nodes)
    if not greatest:
        return IntersectionResult(False, True, None, 0, "no quorum exists")
    progress(f"greatest quorum: {greatest.bit_count()} nodes")
    cores = quorum_cores(fbas)
    progress(f"{len(cores)} strongly connected cores with quorums")
    if len(cores) >= 2:
        first = shrink_to_minimal_quorum(fbas, cores[0])
        second = shrink_to_minimal_quorum(fbas, cores[1])
        return _checked(
            fbas, IntersectionResult(True, False, (first, second), greatest, "components")
        )
    core = cores[0]
    try:
        formula = _split_formula(fbas, None, core, None)
        if formula is None:
            pair = find_disjoint_quorums(fbas, core, progress, stop=stop)
        else:
            pair = _disjoint_by_organisations(formula, progress, stop)
    except _Stopped:
        return IntersectionResult(True, None, None, greatest, "stopped")
    if pair is None:
        return IntersectionResult(True, True, None, greatest, "sat")
    witness = (shrink_to_minimal_quorum(fbas, pair[0]), shrink_to_minimal_quorum(fbas, pair[1]))
    return _checked(fbas, IntersectionResult(True, False, witness, greatest, "sat"))


def _disjoint_by_organisations(
    formula: _SplitFormula, progress: Progress, stop: Stop | None
) -> tuple[int, int] | None:
    """Two disjoint quorums from the organisation encoding with no faulty node, or None
    when every two intersect (raises `_Stopped` when `stop` ended the search first)."""
    cnf = formula.cnf
    progress(
        f"disjoint quorums: {formula.quotient.size} organisations, {cnf.top} variables, "
        f"{len(cnf.clauses)} clauses"
    )
    with _new_solver(cnf.clauses, stop) as solver:
        outcome = _solve(solver, [-unit for unit in formula.costs], stop)
        if outcome is None:
            raise _Stopped
        if not outcome:
            return None
        faulty, first, second = formula.split(set(solver.get_model() or []))
    assert not faulty
    return first, second


def _checked(fbas: Fbas, result: IntersectionResult) -> IntersectionResult:
    assert result.witness is not None
    first, second = result.witness
    assert is_quorum(fbas, first) and is_quorum(fbas, second) and not first & second
    return result


def find_disjoint_quorums(
    fbas: Fbas, within: int, progress: Progress = _quiet, *, stop: Stop | None = None
) -> tuple[int, int] | None:
    """Two disjoint quorums inside `within`, or None when every two intersect (raises
    `_Stopped` when `stop` ended the search first)."""
    cnf = _Cnf()
    nodes = list(iter_bits(within))
    side_a: dict[int, Lit] = {v: cnf.new() for v in nodes}
    side_b: dict[int, Lit] = {v: cnf.new() for v in nodes}
    _encode_quorum(cnf, fbas, side_a)
    _encode_quorum(cnf, fbas, side_b)
    cnf.add(list(side_a.values()))
    cnf.add(list(side_b.values()))
    for v in nodes:
        cnf.add([cnf.negate(side_a[v]), cnf.negate(side_b[v])])
    progress(f"disjoint quorums: {cnf.top} variables, {len(cnf.clauses)} clauses")
    with _new_solver(cnf.clauses, stop) as solver:
        outcome = _solve(solver, [], stop)
        if outcome is None:
            raise _Stopped
        if not outcome:
            return None
        model = set(solver.get_model() or [])
    first = bits_from(v for v in nodes if side_a[v] in model)
    second = bits_from(v for v in nodes if side_b[v] in model)
    return first, second


# ---------------------------------------------------------------- minimal sets


@dataclass(frozen=True)
class Group:
    label: str
    nodes: int


@dataclass(frozen=True)
class MinimalSet:
    """One minimum-cardinality blocking or splitting set."""

    groups: tuple[Group, ...]
    nodes: int
    quorums: tuple[int, int] | None = None
    """For a splitting set: the two quorums of the network with the set deleted."""


@dataclass(frozen=True)
class MinimalSetResult:
    kind: str
    grouping: str | None
    size: int | None
    """Smallest number of nodes (or groups); None when no such set exists."""
    examples: tuple[MinimalSet, ...] = ()
    complete: bool = True
    """False when `examples` was cut at the requested limit."""
    scope: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    lower_bound: int | None = None
    """Proven: no such set has fewer nodes (or groups).  Equals `size` when `optimal`;
    None only when no set exists."""
    optimal: bool = True
    """False when a `Stop` ended the search first: `examples` holds the best set found
    (of `size`, the proven upper bound; None when none was found yet)."""

    def __post_init__(self) -> None:
        if self.optimal and self.lower_bound is None:
            object.__setattr__(self, "lower_bound", self.size)


def _group_variables(
    cnf: _Cnf, fbas: Fbas, grouping: str | None, candidates: int
) -> tuple[list[Group], list[int], dict[int, Lit]]:
    """One variable per group that meets `candidates`; every node of such a group maps
    to its group's variable, other nodes to False."""
    groups = [Group(label, bits) for label, bits in fbas.groups(grouping) if bits & candidates]
    variables = [cnf.new() for _ in groups]
    faulty: dict[int, Lit] = {}
    for group, variable in zip(groups, variables, strict=True):
        for node in iter_bits(group.nodes):
            faulty[node] = variable
    return groups, variables, faulty


@dataclass
class _Search:
    """What a minimisation proved: models (true-variable sets), the best first, and the
    bounds on the minimum."""

    models: list[set[int]]
    lower: int
    upper: int | None
    optimal: bool


def _minimize(
    cnf: _Cnf,
    variables: list[int],
    limit: int,
    progress: Progress,
    *,
    stop: Stop | None = None,
    shrink: Callable[[set[int]], set[int]] | None = None,
    initial: set[int] | None = None,
    lower: int = 0,
    known_upper: int | None = None,
) -> _Search:
    """Models of minimum cardinality over `variables`: the first from RC2 (or, with
    `stop`, from the anytime search, which may start from the `initial` solution, a
    known `lower` bound and the cost of a solution found outside the formula,
    `known_upper`), further ones (up to `limit`) by SAT with an at-most bound and
    blocking clauses.  A stopped search that proves `known_upper` optimal returns no
    model; RC2 (no `stop`) ignores it."""
    if stop is not None:
        search = _minimize_anytime(
            cnf,
            variables,
            stop,
            progress,
            shrink=shrink,
            initial=initial,
            lower=lower,
            known_upper=known_upper,
        )
        if not search.optimal or not search.models:
            return search
    else:
        search = _minimize_rc2(cnf, variables, progress)
        if not search.models:
            return search
    if limit <= 1:
        return search
    chosen = {v for v in variables if v in search.models[0]}
    bound = CardEnc.atmost(
        variables, bound=len(chosen), top_id=cnf.top, encoding=EncType.seqcounter
    )
    try:
        solver = _new_solver(cnf.clauses + bound.clauses, stop)
    except _Stopped:
        return search
    with solver:
        solver.add_clause([-v for v in chosen])
        while len(search.models) < limit and _solve(solver, [], stop):
            found = set(solver.get_model() or [])
            search.models.append(found)
            solver.add_clause([-v for v in variables if v in found])
            progress(f"{len(search.models)} minimum sets found")
    return search


def _minimize_rc2(cnf: _Cnf, variables: list[int], progress: Progress) -> _Search:
    formula = WCNF()
    for clause in cnf.clauses:
        formula.append(clause)
    for variable in variables:
        formula.append([-variable], weight=1)
    progress(f"MaxSAT: {cnf.top} variables, {len(cnf.clauses)} clauses, {len(variables)} soft")
    with RC2(formula, solver="g4") as rc2:
        model = rc2.compute()
    if model is None:
        return _Search([], 0, None, True)
    size = sum(1 for v in variables if model[v - 1] > 0)
    return _Search([set(model)], size, size, True)


def _minimize_anytime(
    cnf: _Cnf,
    variables: list[int],
    stop: Stop,
    progress: Progress,
    *,
    shrink: Callable[[set[int]], set[int]] | None,
    initial: set[int] | None = None,
    lower: int = 0,
    known_upper: int | None = None,
) -> _Search:
    """Bounds on the minimum that tighten until they meet or `stop` says so.

    One incremental solver holds the formula and a totalizer over `variables` (its
    output k says "more than k are true"), and alternates two budgeted queries: "at
    most upper - 1" (a model improves the best set; UNSAT proves it optimal) and "at
    most lower" (UNSAT raises the proven lower bound; a model is optimal).  `shrink`
    may turn a model into a smaller one that is still a solution (a cheap greedy step).
    """
    from pysat.card import ITotalizer

    totalizer = ITotalizer(lits=variables, ubound=len(variables), top_id=cnf.top)
    at_least = totalizer.rhs  # at_least[k] holds when more than k variables are true

    def at_most(bound: int) -> list[int]:
        return [-at_least[bound]] if bound < len(at_least) else []

    def size_of(model: set[int]) -> int:
        return sum(1 for v in variables if v in model)

    best = initial
    upper = known_upper if initial is None else size_of(initial)
    budget = _FIRST_BUDGET
    try:
        solver = _new_solver(cnf.clauses + totalizer.cnf.clauses, stop)
    except _Stopped:
        totalizer.delete()
        return _Search([] if best is None else [best], lower, upper, False)
    with solver:
        while not stop() and (upper is None or lower < upper):
            target = len(variables) if upper is None else upper - 1
            improved = _attempt(solver, at_most(target), budget)
            if improved is True:
                model = set(solver.get_model() or [])
                best = shrink(model) if shrink else model
                upper = size_of(best)
            elif improved is False:
                if upper is None:
                    totalizer.delete()
                    return _Search([], 0, None, True)  # no solution at all
                lower = upper
                break
            proved = None
            if upper is not None and lower < upper and not stop():
                proved = _attempt(solver, at_most(lower), budget)
                if proved is False:
                    lower += 1
                elif proved is True:
                    best = set(solver.get_model() or [])
                    upper = lower = size_of(best)
            if improved is None and proved is None:
                budget = min(2 * budget, _MAX_BUDGET)
            progress(f"bounds: {lower} <= minimum <= {'?' if upper is None else upper}")
        totalizer.delete()
    models = [] if best is None else [best]
    return _Search(models, lower, upper, upper is not None and lower >= upper)


def _break_symmetries(
    cnf: _Cnf,
    fbas: Fbas,
    grouping: str | None,
    vector: Callable[[int], list[Lit]],
    progress: Progress,
) -> None:
    """Keep one solution per orbit of interchangeable nodes and organisations; only
    used when a single optimum is wanted (enumeration must see every orbit member)."""
    symmetries = find_symmetries(fbas, grouping)
    count = add_lex_leader(cnf.add, cnf.new, symmetries, vector)
    if count:
        progress(f"symmetry breaking: {count} lex-leader constraints")


def _selected(groups: list[Group], variables: list[int], model: set[int]) -> tuple[Group, ...]:
    return tuple(g for g, v in zip(groups, variables, strict=True) if v in model)


def minimal_blocking_sets(
    fbas: Fbas,
    grouping: str | None = None,
    limit: int = 1,
    *,
    progress: Progress = _quiet,
    symmetry: bool = True,
    reduce: bool = True,
    stop: Stop | None = None,
) -> MinimalSetResult:
    """Smallest sets of nodes (or groups) that intersect every quorum.

    `symmetry` and `reduce` (one cascade per core instead of one over the greatest
    quorum) only change the speed, never the answer; they exist to measure that.
    With `stop`, the search may end early with the best set found and proven bounds
    (`optimal` False)."""
    greatest = largest_quorum_within(fbas, fbas.all_nodes)
    if not greatest:
        return MinimalSetResult(
            "blocking", grouping, 0, (MinimalSet((), 0),), True, 0, ("no quorum exists",)
        )
    cnf = _Cnf()
    groups, variables, faulty = _group_variables(cnf, fbas, grouping, greatest)
    shrink = _blocking_shrinker(fbas, groups, variables)
    # Without a stop the exact search needs no start; with one, a greedy blocking set
    # (all groups, then each dropped while the rest still blocks) is the first answer,
    # found before the formula is built.
    greedy = shrink(set(variables)) if stop is not None else None
    searched: _Search | None = None
    proven = 1  # the empty set leaves the greatest quorum standing
    if reduce and limit <= 1:
        searched, proven = _blocking_by_cascade_search(
            fbas,
            grouping,
            greatest,
            groups=groups,
            variables=variables,
            greedy=greedy,
            stop=stop,
            progress=progress,
        )
    try:
        if searched is not None:
            raise _Decided
        # No quorum outside B iff no core keeps a quorum outside B (every minimal
        # quorum lies in one core), so each core gets its own, shorter cascade.
        for core in quorum_cores(fbas) if reduce else [greatest]:
            start = {v: faulty.get(v, False) for v in iter_bits(core)}
            _encode_cascade(cnf, fbas, core, start, stop=stop)
        if symmetry and limit <= 1:
            _break_symmetries(cnf, fbas, grouping, lambda v: [faulty.get(v, False)], progress)
        # The empty set leaves the greatest quorum standing: at least one group.
        search = _minimize(
            cnf, variables, limit, progress, stop=stop, shrink=shrink, initial=greedy, lower=proven
        )
    except _Decided:
        assert searched is not None
        search = searched
    except _Stopped:
        assert greedy is not None
        search = _Search([greedy], proven, len(greedy), len(greedy) <= proven)
    assert search.models or not search.optimal, "failing the greatest quorum always blocks"
    examples = []
    for model in search.models:
        chosen = _selected(groups, variables, model)
        nodes = union(group.nodes for group in chosen)
        assert is_blocking(fbas, nodes), "a reported blocking set must block"
        examples.append(MinimalSet(chosen, nodes))
    size = len(examples[0].groups) if examples else None
    return MinimalSetResult(
        "blocking",
        grouping,
        size,
        tuple(examples),
        len(examples) < limit,
        greatest,
        lower_bound=search.lower,
        optimal=search.optimal,
    )


_CASCADE_SEARCH_WORK = 40_000_000
"""Groups and quorum-set entries the organisation search may examine before the SAT
search takes over: the asymmetric 50-organisation networks need 2.1 to 13.9 million
(seeds 1..10), while on highly symmetric networks, where the SAT search with symmetry
breaking is fast, the search's branching is wide.  At about 110 ns per unit (idle
core), a spent budget costs about 4.4 s (measured at 100 asymmetric organisations); the
failed states it remembers are at most one per cascade, and a cascade examines at least
one unit per group."""


class _Decided(Exception):
    """The organisation search settled the question: skip the SAT search."""


def _blocking_by_cascade_search(
    fbas: Fbas,
    grouping: str | None,
    greatest: int,
    *,
    groups: list[Group],
    variables: list[int],
    greedy: set[int] | None,
    stop: Stop | None,
    progress: Progress,
) -> tuple[_Search | None, int]:
    """The minimum by `synod.fbas.cascade` when the network has the organisation shape,
    or None when it has not or the search spent its budget undecided; with the lower
    bound proven on the way (at least 1)."""
    grouping_groups = None if grouping is None else [group.nodes for group in groups]
    quotient = organisation_quotient(fbas, greatest, grouping_groups)
    if quotient is None:
        return None, 1
    progress(f"blocking: cascade search over {quotient.size} organisations")
    search = BlockingSearch(quotient, stop=stop, budget=_CASCADE_SEARCH_WORK)
    upper = None if greedy is None else len(greedy)
    try:
        seeds = search.minimum(upper, progress)
    except SearchStopped:
        # Every cost below the one being searched was refuted (or is below the cost of
        # blocking any single group).
        lower = max(1, search.lower)
        if stop is None or not stop():
            return None, lower
        assert greedy is not None
        return _Search([greedy], lower, len(greedy), lower >= len(greedy)), lower
    if seeds is None:
        assert greedy is not None and upper is not None
        return _Search([greedy], upper, upper, True), upper
    nodes = seeded_nodes(quotient, seeds)
    model = {v for group, v in zip(groups, variables, strict=True) if group.nodes & ~nodes == 0}
    size = seeds_cost(quotient, seeds)
    assert len(model) == size, "each seeded group costs the nodes or groups it fails"
    return _Search([model], size, size, True), size


def _blocking_shrinker(
    fbas: Fbas, groups: list[Group], variables: list[int]
) -> Callable[[set[int]], set[int]]:
    """Drop groups from a blocking model while the rest still blocks (greedy, one pass):
    a cheap way to a better upper bound between two solver calls."""

    def shrink(model: set[int]) -> set[int]:
        kept = [(g, v) for g, v in zip(groups, variables, strict=True) if v in model]
        for candidate in list(kept):
            rest = [pair for pair in kept if pair is not candidate]
            if is_blocking(fbas, union(g.nodes for g, _ in rest)):
                kept = rest
        return {v for _, v in kept}

    return shrink


def minimal_splitting_sets(
    fbas: Fbas,
    grouping: str | None = None,
    limit: int = 1,
    *,
    scope: Scope = "top-tier",
    progress: Progress = _quiet,
    symmetry: bool = True,
    reduce: bool = True,
    stop: Stop | None = None,
) -> MinimalSetResult:
    """Smallest sets of nodes (or groups) whose deletion leaves two disjoint quorums.
    With `stop`, the search may end early with the best set found and proven bounds.

    `scope` says which nodes may form those quorums: the top tier (default: the safety
    buffer of the core network, as the known tools report it) or every node (then a
    node that trusts few others may be split off by corrupting those few).
    """
    notes: tuple[str, ...] = ()
    if scope == "top-tier":
        tier = top_tier(fbas, progress, symmetry=symmetry, reduce=reduce, stop=stop)
        members = tier.nodes
        if tier.undecided:
            # Quorums inside the known part of the top tier keep every set found valid;
            # a lower bound would need the whole tier, so none is claimed.
            notes = ("top tier not decided in time: searched its known part only",)
    else:
        members = bits_from(v for v, q in enumerate(fbas.qsets) if q is not None)
    if notes:
        # Only a stop leaves the tier undecided: the search would give up at once, so
        # the formula is not even built.
        return MinimalSetResult(
            "splitting", grouping, None, (), True, 0, notes, lower_bound=0, optimal=False
        )
    if not members:
        return MinimalSetResult("splitting", grouping, None, (), True, 0, ("no quorum exists",))
    relevant = members
    for v in iter_bits(members):
        qset = fbas.qsets[v]
        if qset is not None:
            relevant |= qset.member_bits
    cnf = _Cnf()
    groups, variables, faulty = _group_variables(cnf, fbas, grouping, relevant)
    if reduce and limit <= 1:
        by_organisation = _splitting_by_organisations(
            fbas, grouping, members, groups, stop=stop, progress=progress
        )
        if by_organisation is not None:
            found, split = by_organisation
            return _splitting_result(
                fbas, grouping, members, groups, search=found, split=split
            )
    sides = [_encode_quorum_despite(cnf, fbas, members, relevant, faulty) for _ in range(2)]
    for v in iter_bits(members):
        cnf.add([-sides[0][v], -sides[1][v]])
    if symmetry and limit <= 1:
        _break_symmetries(
            cnf,
            fbas,
            grouping,
            lambda v: [faulty.get(v, False), sides[0].get(v, False), sides[1].get(v, False)],
            progress,
        )
    shrink = _splitting_shrinker(fbas, groups, variables, sides)
    search = _minimize(cnf, variables, limit, progress, stop=stop, shrink=shrink)
    examples = []
    for model in search.models:
        chosen = _selected(groups, variables, model)
        nodes = union(group.nodes for group in chosen)
        first = bits_from(v for v, lit in sides[0].items() if lit in model)
        second = bits_from(v for v, lit in sides[1].items() if lit in model)
        first = shrink_to_minimal_quorum(fbas, first, faulty=nodes)
        second = shrink_to_minimal_quorum(fbas, second, faulty=nodes)
        assert is_quorum_despite(fbas, first, nodes) and is_quorum_despite(fbas, second, nodes)
        assert not first & second
        examples.append(MinimalSet(chosen, nodes, (first, second)))
    size = len(examples[0].groups) if examples else None
    complete = len(examples) < limit
    optimal = search.optimal and not notes
    return MinimalSetResult(
        "splitting",
        grouping,
        size,
        tuple(examples),
        complete,
        members,
        notes,
        lower_bound=0 if notes else search.lower,
        optimal=optimal,
    )


def _splitting_result(
    fbas: Fbas,
    grouping: str | None,
    members: int,
    groups: list[Group],
    *,
    search: _Search,
    split: tuple[int, int, int] | None,
) -> MinimalSetResult:
    """The result of the organisation search: `split` is (faulty nodes, first quorum,
    second quorum) of its best model, re-checked at node level."""
    examples = []
    if split is not None:
        nodes, first, second = split
        chosen = tuple(group for group in groups if group.nodes & ~nodes == 0)
        first = shrink_to_minimal_quorum(fbas, first, faulty=nodes)
        second = shrink_to_minimal_quorum(fbas, second, faulty=nodes)
        assert is_quorum_despite(fbas, first, nodes) and is_quorum_despite(fbas, second, nodes)
        assert not first & second
        assert search.upper is not None and len(chosen) <= search.upper
        examples.append(MinimalSet(chosen, union(group.nodes for group in chosen), (first, second)))
    size = len(examples[0].groups) if examples else None
    return MinimalSetResult(
        "splitting",
        grouping,
        size,
        tuple(examples),
        True,
        members,
        lower_bound=search.lower,
        optimal=search.optimal,
    )


@dataclass(frozen=True)
class _Role:
    """A group's part in a split: nodes faulty, in the first and in the second quorum."""

    cost: int
    faulty: int
    first: int
    second: int
    counts: tuple[bool, bool]
    """Whether the inner sets naming the group are satisfied on each side."""


def _roles(size: int, inner: int | None, whole_group: bool) -> list[_Role]:
    """The roles worth considering for a group of `size` nodes whose naming inner sets
    need `inner` of them: the cheapest per (counts on each side, members on each side).
    When groups fail as a whole (`whole_group`), a role fails none or all of it, at
    cost one group."""
    cheapest: dict[tuple[bool, bool, bool, bool], _Role] = {}
    for faulty in (0, size) if whole_group else range(size + 1):
        for first in range(size - faulty + 1):
            for second in range(size - faulty - first + 1):
                if whole_group and faulty and (first or second):
                    continue
                counts = (
                    inner is not None and faulty + first >= inner,
                    inner is not None and faulty + second >= inner,
                )
                cost = (1 if faulty else 0) if whole_group else faulty
                role = _Role(cost, faulty, first, second, counts)
                key = (*counts, first > 0, second > 0)
                if key not in cheapest or cost < cheapest[key].cost:
                    cheapest[key] = role
    return list(cheapest.values())


@dataclass
class _SplitFormula:
    """The organisation encoding of "two disjoint quorums despite some faulty nodes":
    one selector per role of each group, and unit literals counting the faulty cost."""

    cnf: _Cnf
    quotient: Quotient
    roles: list[list[_Role]]
    chosen: list[list[int]]
    costs: list[int]
    whole_groups: bool

    def split(self, model: set[int]) -> tuple[int, int, int]:
        """(faulty nodes, first quorum, second quorum) of a model."""
        faulty = first = second = 0
        for index, (xs, rs) in enumerate(zip(self.chosen, self.roles, strict=True)):
            role = next(r for x, r in zip(xs, rs, strict=True) if x in model)
            nodes = list(iter_bits(self.quotient.groups[index]))
            if self.whole_groups and role.faulty:
                faulty |= self.quotient.seed_nodes[index]
            else:
                faulty |= bits_from(nodes[: role.faulty])
            after_faulty = role.faulty + role.first
            first |= bits_from(nodes[role.faulty : after_faulty])
            second |= bits_from(nodes[after_faulty : after_faulty + role.second])
        return faulty, first, second


def _split_formula(
    fbas: Fbas, grouping: str | None, members: int, groups: list[Group] | None
) -> _SplitFormula | None:
    """The organisation encoding over `members` (see `synod.fbas.cascade`): one variable
    per role of each group instead of three per node, no interchangeable validators left
    to break.  None when `members` does not have the organisation shape (every quorum
    set naming only members) or has interchangeable organisations (the node encoding
    with symmetry breaking is the fast one there)."""
    grouping_groups = None if groups is None else [group.nodes for group in groups]
    quotient = organisation_quotient(fbas, members, grouping_groups, closed=True)
    if quotient is None or _interchangeable_groups(fbas, grouping, quotient):
        return None
    cnf = _Cnf()
    whole = grouping_groups is not None
    roles = [
        _roles(bits.bit_count(), quotient.inner_threshold[index], whole)
        for index, bits in enumerate(quotient.groups)
    ]
    chosen = [[cnf.new() for _ in options] for options in roles]
    pairs = list(zip(chosen, roles, strict=True))
    counted = [
        [
            cnf.implies_any([x for x, r in zip(xs, rs, strict=True) if r.counts[side]])
            for side in (0, 1)
        ]
        for xs, rs in pairs
    ]
    # Exact, so that a role with nodes in a quorum makes the group a member there.
    inside = [
        [
            cnf.implies_any(
                [x for x, r in zip(xs, rs, strict=True) if (r.first, r.second)[side]],
                exact=True,
            )
            for side in (0, 1)
        ]
        for xs, rs in pairs
    ]
    costs: list[int] = []
    for index, (xs, rs) in enumerate(pairs):
        cnf.add(xs)
        cnf.clauses.extend([-a, -b] for i, a in enumerate(xs) for b in xs[i + 1 :])
        entries = list(iter_bits(quotient.entries[index]))
        for side in (0, 1):
            if inside[index][side] is False:
                continue
            satisfied = cnf.implies_atleast(
                [counted[e][side] for e in entries], quotient.threshold[index]
            )
            cnf.add([cnf.negate(inside[index][side]), satisfied])
        costs.extend(_cost_units(cnf, xs, rs))
    for side in (0, 1):
        cnf.add([lits[side] for lits in inside])  # each quorum holds at least one node
    # Swapping the two quorums maps a split onto one of the same cost: keep those where
    # the lowest group with a node in either quorum has one in the first.
    for index, lits in enumerate(inside):
        earlier = [other[0] for other in inside[:index]]
        cnf.add([cnf.negate(lits[1]), lits[0], *earlier])
    return _SplitFormula(cnf, quotient, roles, chosen, costs, whole)


def _splitting_by_organisations(
    fbas: Fbas,
    grouping: str | None,
    members: int,
    groups: list[Group],
    *,
    stop: Stop | None,
    progress: Progress,
) -> tuple[_Search, tuple[int, int, int] | None] | None:
    """Smallest splitting set over the organisation encoding; None when it does not
    apply (see `_split_formula`)."""
    formula = _split_formula(fbas, grouping, members, None if grouping is None else groups)
    if formula is None:
        return None
    cnf = formula.cnf
    progress(
        f"splitting: {formula.quotient.size} organisations, {cnf.top} variables, "
        f"{len(cnf.clauses)} clauses"
    )
    cut = split_off_one_group(fbas, formula.quotient, members, formula.whole_groups, stop)
    known = None if cut is None else cut[0]
    if known is not None:
        progress(f"splitting: {known} by cutting one organisation off")
    lower = 0
    # A tenth of the bound's budget, a quarter of the annealing, then the whole of
    # each: a short --timeout still gets both a bound and a better split.  The bound
    # restarts the proof a stop interrupted, so its first share stays small.  With
    # whole groups the bound counts failed groups, and there is no annealing: over
    # roles without a shared one it found 14-18 organisations on the asymmetric
    # networks, never below the 10 of cutting one organisation off.
    whole = formula.whole_groups
    annealing = None
    if stop is not None and not whole:
        annealing = Annealing(formula.quotient, stop)
    total = ANNEAL_MOVES_PER_GROUP_SQUARED * formula.quotient.size**2
    shares = [(QUORUM_SIZE_WORK // 10, total // 4), (QUORUM_SIZE_WORK, total)]
    for budget, moves in shares[1:] if whole else shares:
        if known is None or lower < known:
            lower = splitting_lower_bound(
                formula.quotient,
                lower=lower,
                upper=known,
                stop=stop,
                budget=budget,
                progress=progress,
                whole_groups=whole,
            )
        cut = _annealed_split(fbas, annealing, moves, lower, cut, progress=progress)
        known = None if cut is None else cut[0]
    if cut is not None and known is not None and lower >= known:
        return _Search([], lower, known, True), cut[1:]
    search = _minimize(
        cnf, formula.costs, 1, progress, stop=stop, lower=lower, known_upper=known
    )
    if search.models:
        return search, formula.split(search.models[0])
    if cut is None or search.upper is None:
        return search, None
    # The solver found nothing cheaper than the cut (or was stopped first).
    return search, cut[1:]


def _annealed_split(
    fbas: Fbas,
    annealing: Annealing | None,
    moves: int,
    goal: int,
    known: tuple[int, int, int, int] | None,
    *,
    progress: Progress,
) -> tuple[int, int, int, int] | None:
    """The cheaper of the `known` split and the best the annealing finds within `moves`
    moves in all, as (cost, faulty nodes, first quorum, second quorum); the annealed
    one is checked against the definitions.  No annealing once `known` costs `goal`."""
    if annealing is None or (known is not None and known[0] <= goal):
        return known
    state = annealing.run(moves, goal)
    if state is None:
        return known
    faulty, first, second = split_of(annealing.quotient, annealing.roles, state)
    valid = first and second and not first & second and not (first | second) & faulty
    if not valid or not is_quorum_despite(fbas, first, faulty):
        return known
    if not is_quorum_despite(fbas, second, faulty):
        return known
    if known is not None and known[0] <= faulty.bit_count():
        return known
    progress(f"splitting: {faulty.bit_count()} by annealing the organisations' roles")
    return faulty.bit_count(), faulty, first, second


def _interchangeable_groups(fbas: Fbas, grouping: str | None, quotient: Quotient) -> bool:
    """Whether two groups of the quotient are interchangeable: its encoding has no
    symmetry breaking, so such networks (the symmetric ones, where the node encoding
    with lex-leader constraints is fast) keep the node encoding."""
    group_of = {
        node: index for index, bits in enumerate(quotient.groups) for node in iter_bits(bits)
    }
    symmetries = find_symmetries(fbas, grouping)
    pairs = [*symmetries.node_pairs, *((a[0], b[0]) for a, b in symmetries.block_pairs)]
    return any(
        u in group_of and v in group_of and group_of[u] != group_of[v] for u, v in pairs
    )


def _cost_units(cnf: _Cnf, chosen: list[int], roles: list[_Role]) -> list[int]:
    """Unit literals u_1..u_c for a group: u_j holds iff the chosen role costs at least
    j, so that the objective counts exactly the nodes (or groups) made faulty."""
    units = []
    for level in range(1, max(role.cost for role in roles) + 1):
        unit = cnf.new()
        costly = [x for x, role in zip(chosen, roles, strict=True) if role.cost >= level]
        cnf.add([-unit, *costly])
        cnf.clauses.extend([-x, unit] for x in costly)
        units.append(unit)
    return units


def _splitting_shrinker(
    fbas: Fbas, groups: list[Group], variables: list[int], sides: list[dict[int, int]]
) -> Callable[[set[int]], set[int]]:
    """Drop groups from a splitting model while its two quorums stay quorums of the
    network with the smaller set deleted (greedy, one pass; the quorums are kept, so
    each check is two slice checks, no search)."""

    def shrink(model: set[int]) -> set[int]:
        first = bits_from(v for v, lit in sides[0].items() if lit in model)
        second = bits_from(v for v, lit in sides[1].items() if lit in model)
        kept = [(g, v) for g, v in zip(groups, variables, strict=True) if v in model]
        for candidate in list(kept):
            rest = [pair for pair in kept if pair is not candidate]
            faulty = union(g.nodes for g, _ in rest)
            if is_quorum_despite(fbas, first, faulty) and is_quorum_despite(
                fbas, second, faulty
            ):
                kept = rest
        chosen = {v for _, v in kept}
        return chosen | {lit for side in sides for lit in side.values() if lit in model}

    return shrink


def _encode_quorum_despite(
    cnf: _Cnf, fbas: Fbas, members: int, relevant: int, faulty: dict[int, Lit]
) -> dict[int, int]:
    """Variables for one quorum of the network with the faulty nodes deleted: made of
    non-faulty `members`, each with a slice among quorum members and faulty nodes."""
    inside = {v: cnf.new() for v in iter_bits(members)}
    counted: dict[int, Lit] = {}
    for v in iter_bits(relevant):
        counted[v] = cnf.implies_any([inside.get(v, False), faulty.get(v, False)])
    memo: dict[Threshold, Lit] = {}

    def child(w: int) -> Lit:
        return counted.get(w, False)

    for v, lit in inside.items():
        qset = fbas.qsets[v]
        assert qset is not None
        cnf.add([-lit, cnf.negate(faulty.get(v, False))])
        cnf.add([-lit, _encode_satisfied(cnf, qset, child, memo)])
    cnf.add(list(inside.values()))
    return inside


# ---------------------------------------------------------------- top tier


@dataclass(frozen=True)
class TopTierResult:
    nodes: int
    """Union of all minimal quorums."""
    minimal_quorums: tuple[int, ...]
    """The minimal quorums met while computing it (not all of them)."""
    greatest_quorum: int
    undecided: int = 0
    """Nodes whose membership a `Stop` left open: the top tier holds `nodes` and lies
    within `nodes | undecided`."""


def top_tier(
    fbas: Fbas,
    progress: Progress = _quiet,
    *,
    symmetry: bool = True,
    reduce: bool = True,
    stop: Stop | None = None,
) -> TopTierResult:
    """The union of all minimal quorums, by one incremental SAT call per node whose
    membership is not yet known (see the module docstring).

    With `symmetry`, a node interchangeable with a known member (or non-member) is
    decided without a call; without it, every member is covered by one of the returned
    minimal quorums.  With `reduce`, each core (see `quorum_cores`) is searched on its
    own; without it, the greatest quorum at once (slower, same answer).
    """
    greatest = largest_quorum_within(fbas, fbas.all_nodes)
    if not greatest:
        return TopTierResult(0, (), 0)
    orbit = find_symmetries(fbas).orbits(len(fbas)) if symmetry else list(range(len(fbas)))
    tier = 0
    undecided = 0
    found: list[int] = []
    for core in quorum_cores(fbas) if reduce else [greatest]:
        core_tier, core_found, core_open = _core_top_tier(fbas, core, orbit, progress, stop)
        tier |= core_tier
        undecided |= core_open
        found.extend(core_found)
    return TopTierResult(tier, tuple(found), greatest, undecided & ~tier)


_SHORT_CASCADE_ABOVE = 12
"""Distinct quorum sets in a core above which membership in the top tier is first
sought with a cascade cut at `_SHORT_LEVELS` levels (see `_short_cascade_members`)."""
_SHORT_LEVELS = 4
_SHORT_BUDGET = 2_000
"""Conflicts per node for the cut cascade: a proof of membership is usually found in a
few hundred; a node it does not settle goes to the exact pass."""


def _top_tier_formula(
    fbas: Fbas, core: int, levels: int | None, stop: Stop | None
) -> tuple[_Cnf, dict[int, Lit], dict[int, int]]:
    """"Q is a quorum inside `core`, the cascade from the chosen starter inside Q blocks
    all of Q": member and starter variables per node."""
    cnf = _Cnf()
    nodes = list(iter_bits(core))
    member: dict[int, Lit] = {v: cnf.new() for v in nodes}
    starter: dict[int, int] = {v: cnf.new() for v in nodes}
    _encode_quorum(cnf, fbas, member)
    # A node starts the cascade when it is the chosen start, else when it is outside Q.
    start: dict[int, Lit] = {
        v: cnf.implies_any([starter[v], -int(member[v])], exact=True) for v in nodes
    }
    _encode_cascade(cnf, fbas, core, start, stop=stop, levels=levels)
    return cnf, member, starter


def _membership_assumptions(
    v: int, nodes: list[int], member: dict[int, Lit], starter: dict[int, int]
) -> list[int]:
    return [int(member[v]), starter[v]] + [-starter[w] for w in nodes if w != v]


def _minimal_quorum_from(
    fbas: Fbas, solver: Any, nodes: list[int], member: dict[int, Lit], v: int
) -> int:
    """The minimal quorum through `v` that a model of the top-tier formula reveals: its
    quorum minus v holds no quorum, so every quorum inside it holds v."""
    model = set(solver.get_model() or [])
    quorum = bits_from(w for w in nodes if member[w] in model)
    minimal = shrink_to_minimal_quorum(fbas, quorum, keep=1 << v)
    assert minimal >> v & 1
    return minimal


def _short_cascade_members(
    fbas: Fbas, core: int, orbit: list[int], progress: Progress, stop: Stop | None
) -> tuple[int, list[int]]:
    """Top-tier members proven with a cascade cut at `_SHORT_LEVELS` levels: a formula
    many times smaller than the exact one when every organisation has its own quorum
    set, whose models are still real minimal quorums."""
    try:
        cnf, member, starter = _top_tier_formula(fbas, core, _SHORT_LEVELS, stop)
    except _Stopped:
        return 0, []
    nodes = list(iter_bits(core))
    tier = 0
    found: list[int] = []
    try:
        with _new_solver(cnf.clauses, stop) as solver:
            for v in nodes:
                if any(orbit[w] == orbit[v] and tier >> w & 1 for w in nodes):
                    continue
                assumptions = _membership_assumptions(v, nodes, member, starter)
                if _attempt_sliced(solver, assumptions, _SHORT_BUDGET, stop):
                    minimal = _minimal_quorum_from(fbas, solver, nodes, member, v)
                    found.append(minimal)
                    tier |= minimal
    except _Stopped:
        pass  # what was proven stays proven
    progress(f"top tier: {tier.bit_count()} of {len(nodes)} proven with a cut cascade")
    return tier, found


def _organisation_members(
    fbas: Fbas, core: int, progress: Progress, stop: Stop | None
) -> tuple[int, list[int]]:
    """Top-tier members of `core` proven without a solver when it has the organisation
    shape (`synod.fbas.cascade.top_tier_witnesses`), with node-level minimal quorums
    for each witness: k nodes of each of its groups, rotated so that every node of the
    witness's groups is in one of them."""
    quotient = organisation_quotient(fbas, core, closed=True)
    if quotient is None:
        return 0, []
    groups, witnesses = top_tier_witnesses(quotient, stop)
    tier = union(quotient.groups[group] for group in iter_bits(groups))
    found = []
    for witness in witnesses:
        members: list[tuple[list[int], int]] = []
        for group in iter_bits(witness):
            needed = quotient.inner_threshold[group]
            assert needed is not None, "a group of a minimal quorum is named by others"
            members.append((list(iter_bits(quotient.groups[group])), needed))
        rounds = max(-(-len(nodes) // needed) for nodes, needed in members)
        for turn in range(rounds):
            quorum = 0
            for nodes, needed in members:
                quorum |= bits_from(nodes[(turn * needed + i) % len(nodes)] for i in range(needed))
            assert is_quorum(fbas, quorum)
            found.append(quorum)
    progress(f"top tier: {tier.bit_count()} nodes proven over {quotient.size} organisations")
    return tier, found


def _core_top_tier(
    fbas: Fbas, core: int, orbit: list[int], progress: Progress, stop: Stop | None = None
) -> tuple[int, list[int], int]:
    """Members of minimal quorums inside `core` (a strongly connected quorum), the
    minimal quorums found on the way, and the nodes left open when `stop` ended it."""
    nodes = list(iter_bits(core))
    tier, found = _organisation_members(fbas, core, progress, stop)

    def known(v: int) -> bool:
        return bool(tier >> v & 1) or any(orbit[w] == orbit[v] and tier >> w & 1 for w in nodes)

    distinct = len({fbas.qsets[v] for v in nodes})
    if not all(known(v) for v in nodes) and distinct > _SHORT_CASCADE_ABOVE:
        short_tier, short_found = _short_cascade_members(fbas, core, orbit, progress, stop)
        tier |= short_tier
        found.extend(short_found)
    if all(known(v) for v in nodes):
        return core, found, 0
    try:
        cnf, member, starter = _top_tier_formula(fbas, core, None, stop)
    except _Stopped:
        return tier, found, core & ~tier
    progress(f"top tier: {len(nodes)} candidates, {cnf.top} variables, {len(cnf.clauses)} clauses")
    outside: set[int] = set()
    step = max(1, len(nodes) // 10)
    undecided = 0
    try:
        solver = _new_solver(cnf.clauses, stop)
    except _Stopped:
        return tier, found, core & ~tier
    with solver:
        for index, v in enumerate(nodes):
            if tier >> v & 1 or orbit[v] in outside:
                continue
            if undecided:
                undecided |= 1 << v
                continue
            if known(v):
                # An automorphism maps a minimal quorum through that node to one through v.
                tier |= 1 << v
                continue
            outcome = _solve(solver, _membership_assumptions(v, nodes, member, starter), stop)
            if outcome is None:
                undecided |= 1 << v
                continue
            if outcome:
                minimal = _minimal_quorum_from(fbas, solver, nodes, member, v)
                found.append(minimal)
                tier |= minimal
            else:
                outside.add(orbit[v])
            if (index + 1) % step == 0:
                progress(f"top tier: {index + 1}/{len(nodes)} checked, {tier.bit_count()} in it")
    # A node put in the tier after an open one was skipped (through a later minimal
    # quorum) is decided after all.
    return tier, found, undecided & ~tier


def enumerate_minimal_quorums(
    fbas: Fbas, limit: int = 1000, progress: Progress = _quiet
) -> tuple[list[int], bool]:
    """Minimal quorums (up to `limit`) and whether the list is complete.

    Each SAT model is a quorum that contains no minimal quorum found so far; shrinking it
    gives a new minimal quorum, which a clause then excludes (with all its supersets).
    """
    greatest = largest_quorum_within(fbas, fbas.all_nodes)
    if not greatest:
        return [], True
    cnf = _Cnf()
    nodes = list(iter_bits(greatest))
    member: dict[int, Lit] = {v: cnf.new() for v in nodes}
    _encode_quorum(cnf, fbas, member)
    cnf.add(list(member.values()))
    found: list[int] = []
    with Solver(name=_SOLVER, bootstrap_with=cnf.clauses) as solver:
        while solver.solve():
            if len(found) >= limit:
                return found, False
            model = set(solver.get_model() or [])
            quorum = bits_from(v for v in nodes if member[v] in model)
            minimal = shrink_to_minimal_quorum(fbas, quorum)
            found.append(minimal)
            solver.add_clause([-int(member[v]) for v in iter_bits(minimal)])
            if len(found) % 500 == 0:
                progress(f"{len(found)} minimal quorums")
    return found, True


def group_summary(fbas: Fbas, nodes: int, grouping: str | None) -> list[tuple[str, int]]:
    """(group label, node count) for the groups that `nodes` meets, largest first."""
    counts: dict[str, int] = {}
    for label, bits in fbas.groups(grouping):
        if bits & nodes:
            counts[label] = (bits & nodes).bit_count()
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def labels(fbas: Fbas, nodes: int) -> list[str]:
    return [fbas.nodes[v].label for v in iter_bits(nodes)]


def union(bitsets: Iterable[int]) -> int:
    result = 0
    for bits in bitsets:
        result |= bits
    return result
