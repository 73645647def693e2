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
from synod.fbas.symmetry import add_lex_leader, find_symmetries

Progress = Callable[[str], None]
Lit = int | bool
Scope = Literal["top-tier", "all"]

_SOLVER = "cadical153"
_CARD = EncType.seqcounter


def _quiet(_: str) -> None:
    """Default progress sink: say nothing."""


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


def _encode_cascade(cnf: _Cnf, fbas: Fbas, scope: int, start: dict[int, Lit]) -> None:
    """Require that the v-blocking cascade from `start` (a literal per scope node; nodes
    outside `scope` are blocked from the start) blocks every node of `scope`."""
    nodes = list(iter_bits(scope))
    levels = len({fbas.qsets[v] for v in nodes}) + 1
    blocked: dict[int, Lit] = dict(start)
    for _ in range(levels):
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
    intersects: bool
    witness: tuple[int, int] | None = None
    """Two disjoint minimal quorums (bitsets) when `intersects` is False."""
    greatest_quorum: int = 0
    method: str = ""


def check_intersection(fbas: Fbas, progress: Progress = _quiet) -> IntersectionResult:
    """Decide quorum intersection; on failure return two disjoint minimal quorums."""
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
    pair = find_disjoint_quorums(fbas, core, progress)
    if pair is None:
        return IntersectionResult(True, True, None, greatest, "sat")
    witness = (shrink_to_minimal_quorum(fbas, pair[0]), shrink_to_minimal_quorum(fbas, pair[1]))
    return _checked(fbas, IntersectionResult(True, False, witness, greatest, "sat"))


def _checked(fbas: Fbas, result: IntersectionResult) -> IntersectionResult:
    assert result.witness is not None
    first, second = result.witness
    assert is_quorum(fbas, first) and is_quorum(fbas, second) and not first & second
    return result


def find_disjoint_quorums(
    fbas: Fbas, within: int, progress: Progress = _quiet
) -> tuple[int, int] | None:
    """Two disjoint quorums inside `within`, or None when every two intersect."""
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
    with Solver(name=_SOLVER, bootstrap_with=cnf.clauses) as solver:
        if not solver.solve():
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


def _minimize(cnf: _Cnf, variables: list[int], limit: int, progress: Progress) -> list[set[int]]:
    """Models (as true-variable sets) of minimum cardinality over `variables`: the first
    from RC2, further ones (up to `limit`) by SAT with an at-most bound and blocking
    clauses."""
    formula = WCNF()
    for clause in cnf.clauses:
        formula.append(clause)
    for variable in variables:
        formula.append([-variable], weight=1)
    progress(f"MaxSAT: {cnf.top} variables, {len(cnf.clauses)} clauses, {len(variables)} soft")
    with RC2(formula, solver="g4") as rc2:
        model = rc2.compute()
    if model is None:
        return []
    chosen = {v for v in variables if model[v - 1] > 0}
    solutions = [set(model)]
    if limit <= 1:
        return solutions
    bound = CardEnc.atmost(
        variables, bound=len(chosen), top_id=cnf.top, encoding=EncType.seqcounter
    )
    with Solver(name=_SOLVER, bootstrap_with=cnf.clauses + bound.clauses) as solver:
        solver.add_clause([-v for v in chosen])
        while len(solutions) < limit and solver.solve():
            found = set(solver.get_model() or [])
            solutions.append(found)
            solver.add_clause([-v for v in variables if v in found])
            progress(f"{len(solutions)} minimum sets found")
    return solutions


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
) -> MinimalSetResult:
    """Smallest sets of nodes (or groups) that intersect every quorum.

    `symmetry` and `reduce` (one cascade per core instead of one over the greatest
    quorum) only change the speed, never the answer; they exist to measure that."""
    greatest = largest_quorum_within(fbas, fbas.all_nodes)
    if not greatest:
        return MinimalSetResult(
            "blocking", grouping, 0, (MinimalSet((), 0),), True, 0, ("no quorum exists",)
        )
    cnf = _Cnf()
    groups, variables, faulty = _group_variables(cnf, fbas, grouping, greatest)
    # No quorum outside B iff no core keeps a quorum outside B (every minimal quorum
    # lies in one core), so each core gets its own, shorter cascade.
    for core in quorum_cores(fbas) if reduce else [greatest]:
        start = {v: faulty.get(v, False) for v in iter_bits(core)}
        _encode_cascade(cnf, fbas, core, start)
    if symmetry and limit <= 1:
        _break_symmetries(cnf, fbas, grouping, lambda v: [faulty.get(v, False)], progress)
    solutions = _minimize(cnf, variables, limit, progress)
    assert solutions, "failing every node of the greatest quorum always blocks"
    examples = []
    for model in solutions:
        chosen = _selected(groups, variables, model)
        nodes = union(group.nodes for group in chosen)
        assert is_blocking(fbas, nodes), "a reported blocking set must block"
        examples.append(MinimalSet(chosen, nodes))
    size = len(examples[0].groups)
    return MinimalSetResult(
        "blocking", grouping, size, tuple(examples), len(examples) < limit, greatest
    )


def minimal_splitting_sets(
    fbas: Fbas,
    grouping: str | None = None,
    limit: int = 1,
    *,
    scope: Scope = "top-tier",
    progress: Progress = _quiet,
    symmetry: bool = True,
    reduce: bool = True,
) -> MinimalSetResult:
    """Smallest sets of nodes (or groups) whose deletion leaves two disjoint quorums.

    `scope` says which nodes may form those quorums: the top tier (default: the safety
    buffer of the core network, as the known tools report it) or every node (then a
    node that trusts few others may be split off by corrupting those few).
    """
    if scope == "top-tier":
        members = top_tier(fbas, progress, symmetry=symmetry, reduce=reduce).nodes
    else:
        members = bits_from(v for v, q in enumerate(fbas.qsets) if q is not None)
    if not members:
        return MinimalSetResult("splitting", grouping, None, (), True, 0, ("no quorum exists",))
    relevant = members
    for v in iter_bits(members):
        qset = fbas.qsets[v]
        if qset is not None:
            relevant |= qset.member_bits
    cnf = _Cnf()
    groups, variables, faulty = _group_variables(cnf, fbas, grouping, relevant)
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
    solutions = _minimize(cnf, variables, limit, progress)
    examples = []
    for model in solutions:
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
    return MinimalSetResult("splitting", grouping, size, tuple(examples), complete, members)


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


def top_tier(
    fbas: Fbas, progress: Progress = _quiet, *, symmetry: bool = True, reduce: bool = True
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
    found: list[int] = []
    for core in quorum_cores(fbas) if reduce else [greatest]:
        core_tier, core_found = _core_top_tier(fbas, core, orbit, progress)
        tier |= core_tier
        found.extend(core_found)
    return TopTierResult(tier, tuple(found), greatest)


def _core_top_tier(
    fbas: Fbas, core: int, orbit: list[int], progress: Progress
) -> tuple[int, list[int]]:
    """Members of minimal quorums inside `core` (a strongly connected quorum), and the
    minimal quorums found on the way."""
    cnf = _Cnf()
    nodes = list(iter_bits(core))
    member: dict[int, Lit] = {v: cnf.new() for v in nodes}
    starter: dict[int, int] = {v: cnf.new() for v in nodes}
    _encode_quorum(cnf, fbas, member)
    # A node starts the cascade when it is the chosen start, else when it is outside Q.
    start: dict[int, Lit] = {
        v: cnf.implies_any([starter[v], -int(member[v])], exact=True) for v in nodes
    }
    _encode_cascade(cnf, fbas, core, start)
    progress(f"top tier: {len(nodes)} candidates, {cnf.top} variables, {len(cnf.clauses)} clauses")
    tier = 0
    outside: set[int] = set()
    found: list[int] = []
    step = max(1, len(nodes) // 10)
    with Solver(name=_SOLVER, bootstrap_with=cnf.clauses) as solver:
        for index, v in enumerate(nodes):
            if tier >> v & 1 or orbit[v] in outside:
                continue
            if any(orbit[w] == orbit[v] and tier >> w & 1 for w in nodes):
                # An automorphism maps a minimal quorum through that node to one through v.
                tier |= 1 << v
                continue
            assumptions = [int(member[v]), starter[v]] + [-starter[w] for w in nodes if w != v]
            if solver.solve(assumptions=assumptions):
                model = set(solver.get_model() or [])
                quorum = bits_from(w for w in nodes if member[w] in model)
                minimal = shrink_to_minimal_quorum(fbas, quorum, keep=1 << v)
                assert minimal >> v & 1
                found.append(minimal)
                tier |= minimal
            else:
                outside.add(orbit[v])
            if (index + 1) % step == 0:
                progress(f"top tier: {index + 1}/{len(nodes)} checked, {tier.bit_count()} in it")
    return tier, found


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
