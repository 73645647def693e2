"""Lower bounds on smallest splitting sets from the size of the smallest quorums.

Theory of operation
-------------------
Take a `closed` organisation quotient (`synod.fbas.cascade.organisation_quotient`) in
which every group that someone names has n nodes and inner threshold k with 2k > n (3
validators named "2 of 3" in the networks operators build).  A split deletes nodes S and
leaves disjoint quorums Q1, Q2.  A group *counts* on side i when at least k of its nodes
lie in Qi + S, and is a *member* of side i when one of its nodes lies in Qi: each
member's quorum set is satisfied by the groups that count on its side.

1. A member that does not count on its side can leave its quorum (nobody relies on it):
   the split keeps its cost.  If that empties Qi, a member of Qi needed `threshold`
   groups counting on side i without being members there, each with k nodes in S: the
   cost is at least k_min * threshold_min.
2. Otherwise Pi, the groups counting on side i, is a *quorum with exceptions*: every
   member is satisfied within Pi, and the exceptions (groups counting without being
   members) need nothing.  A group counting on both sides has at least 2k - n >= beta
   nodes in S; an exception at least k >= phi.  With f exceptions in all:
   cost >= beta * |P1 & P2| + (phi - beta) * f >= beta * (|P1| + |P2| - groups) +
   (phi - beta) * f, and cost >= phi * f.
3. With q(f) the fewest groups of a quorum with at most f exceptions (one member at
   least), no split costs less than L when phi * threshold_min >= L and, for every f
   with phi * f < L, beta * (2 q(f) - groups) + (phi - beta) * f >= L.
4. When groups fail as a whole (`--group-by`: a quotient whose groups match the
   grouping groups one to one, the cost counted in failed groups F), the proof is
   redone, not converted from the node bound (a failed group costs one unit, not k
   nodes).  A group not failed has no node in S, so with 2k > n it cannot count on
   both sides (that needs 2k of its nodes in the disjoint Q1 and Q2).  After step 1
   (a lone quorum emptied there leans on `threshold_min` failed groups), the members
   M1, M2 of the two sides are disjoint and outside F, and every exception is in F.
   So with f failed named groups the smaller side is a quorum with at most f
   exceptions and at most (groups - f) // 2 members: no split costs fewer than L
   groups when `threshold_min` >= L and, for every f < L, every quorum with at most f
   exceptions has more than (groups - f) // 2 members.  That is the member-capped
   search (`QuorumSizeSearch.exists(..., members=)`), again first through the lowered
   thresholds: the members of a quorum with g exceptions form a quorum of thresholds
   lowered by g.

So the bound deepens L and proves each q(f) it needs by a branch and bound
(`QuorumSizeSearch`): "no quorum of at most `limit` groups with at most f exceptions".
The lowest member is fixed first (lower groups are out); a member tolerates at most
`|entries| - threshold` entries outside the quorum, and since at least `groups - limit`
groups stay out, the members' tolerances must cover the cheapest such groups (each out
group uses one unit of every member that names it): that count prunes most branches and
forces groups in.  Each q(f) is first sought through thresholds lowered by the
exceptions (see `_QuorumSizes`), which that search proves much faster.  On the random
asymmetric networks of 50 organisations (where the SAT search proves 1 or 2) this
proves 5 to 7 within a 10 s stop; the true minimum there is about 17, and this
argument cannot reach it once exceptions are allowed: each exception lowers the
smallest quorum by about one organisation.  Counted in organisations (step 4) it
proves 3 to 4 within a 10 s stop, where the cheapest split found costs 10.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from synod.fbas.cascade import Quotient, SearchStopped, Stop, next_stop_question

Progress = Callable[[str], None]

QUORUM_SIZE_WORK = 35_000_000
"""Groups examined by `splitting_lower_bound` before it keeps the bound reached: about
0.11 microsecond each (measured on the 50-organisation asymmetric networks), so at most
about 4 s of a 10 s stop on a network built to make it branch, leaving the rest to the
annealing and the solver that look for cheaper splits."""

MAX_GROUPS = 200
"""Larger quotients get no bound from here: each group costs at most three frames of
recursion (joining or leaving, then member or exception), so the depth stays within
600 frames, below Python's recursion limit of 1,000."""


def _bit_tables(size: int) -> list[list[tuple[int, ...]]]:
    """For each byte of a `size`-bit set, the positions each of its 256 values holds:
    listing a set's members byte by byte is about 3.5 times faster than bit by bit,
    and listing members is most of the search's time."""
    return [
        [tuple(offset + bit for bit in range(8) if value >> bit & 1) for value in range(256)]
        for offset in range(0, max(size, 1), 8)
    ]


@dataclass
class _State:
    constrained: int
    exceptions: int
    undecided: int
    out: int
    only_exception: int = 0


def _settle_exceptions(state: _State, allowed: int) -> bool | None:
    """Groups in that can only be exceptions become exceptions, and once `allowed` are
    used the other groups in are members: whether none is left, None when too many."""
    if state.undecided & state.only_exception:
        state.exceptions |= state.undecided & state.only_exception
        state.undecided &= ~state.only_exception
    used = state.exceptions.bit_count()
    if used > allowed:
        return None
    if used == allowed and state.undecided:
        state.constrained |= state.undecided
        state.undecided = 0
    return used == allowed


@dataclass
class QuorumSizeSearch:
    """Branch and bound for "a quorum of at most `limit` groups with at most `allowed`
    exceptions" over groups (`entries` and `threshold` per group, as in a `closed`
    quotient).  `candidates` are the groups that may be in such a quorum.  `work` counts
    the groups examined; `stop` is asked every `check_work` of them and `budget` caps
    them (both raise `SearchStopped`)."""

    entries: tuple[int, ...]
    threshold: tuple[int, ...]
    candidates: int
    stop: Stop | None = None
    budget: int | None = None
    check_work: int = 20_000
    work: int = 0

    def __post_init__(self) -> None:
        size = len(self.entries)
        self._all = (1 << size) - 1
        self._tolerance = [
            entries.bit_count() - need
            for entries, need in zip(self.entries, self.threshold, strict=True)
        ]
        self._namers = [
            sum(1 << y for y in range(size) if self.entries[y] >> z & 1) for z in range(size)
        ]
        self._next_check = self.check_work
        self._member_cap = len(self.entries)
        self._tables = _bit_tables(size)
        self._names_itself = [entries >> group & 1 for group, entries in enumerate(self.entries)]

    def _bits(self, value: int) -> list[int]:
        """The positions of the bits of `value`, lowest first."""
        found: list[int] = []
        for table in self._tables:
            if not value:
                break
            found += table[value & 255]
            value >>= 8
        return found

    def exists(self, limit: int, allowed: int, members: int | None = None) -> int | None:
        """A quorum (group bitset) of at most `limit` groups, with at most `allowed`
        members whose quorum sets it need not satisfy (exceptions) and at most `members`
        others (no cap when None), or None when there is none."""
        self._member_cap = limit if members is None else members
        lower = self._all & ~self.candidates
        for first in self._bits(self.candidates):
            starts = [_State(1 << first, 0, 0, lower)]
            if allowed:
                starts.append(_State(0, 1 << first, 0, lower))
            for start in starts:
                found = self._search(start, limit, allowed)
                if found is not None:
                    return found
            lower |= 1 << first
        return None

    def _charge(self, amount: int) -> None:
        self.work += amount
        self._next_check = next_stop_question(
            self.work, self._next_check, self.check_work, self.stop, self.budget
        )

    def _search(self, state: _State, limit: int, allowed: int) -> int | None:
        if not self._propagate(state, limit, allowed):
            return None
        if state.undecided:
            return self._decide_status(state, limit, allowed)
        inside = state.constrained | state.exceptions
        free = self._all & ~inside & ~state.out
        if not state.constrained:
            choice = free & -free  # one member at least: try the lowest free group
        else:
            choice = self._branch_group(state, inside, free)
            if choice < 0:
                return inside  # every member is satisfied
        if not choice:
            return None
        joined = _State(
            state.constrained, state.exceptions, choice, state.out, state.only_exception
        )
        found = self._search(joined, limit, allowed)
        if found is not None:
            return found
        left = _State(
            state.constrained, state.exceptions, 0, state.out | choice, state.only_exception
        )
        return self._search(left, limit, allowed)

    def _decide_status(self, state: _State, limit: int, allowed: int) -> int | None:
        """Branch on whether the lowest group known to be in is a member or an
        exception."""
        group = state.undecided & -state.undecided
        rest = state.undecided & ~group
        as_member = _State(
            state.constrained | group, state.exceptions, rest, state.out, state.only_exception
        )
        found = self._search(as_member, limit, allowed)
        if found is not None:
            return found
        as_exception = _State(
            state.constrained, state.exceptions | group, rest, state.out, state.only_exception
        )
        return self._search(as_exception, limit, allowed)

    def _branch_group(self, state: _State, inside: int, free: int) -> int:
        """The group to decide next: an entry of the least slack unsatisfied member,
        the one most members name; -1 when every member is satisfied."""
        best: tuple[int, int] | None = None
        for member in self._bits(state.constrained):
            entries = self.entries[member]
            if (entries & inside).bit_count() < self.threshold[member]:
                slack = (entries & ~state.out).bit_count() - self.threshold[member]
                if best is None or slack < best[0]:
                    best = (slack, member)
        if best is None:
            return -1
        options = self._bits(self.entries[best[1]] & free)
        if not options:
            return 0
        chosen = max(options, key=lambda z: (self._namers[z] & state.constrained).bit_count())
        return 1 << chosen

    def _propagate(self, state: _State, limit: int, allowed: int) -> bool:
        """Apply the forced decisions in place; False when the state has no quorum."""
        while True:
            self._charge(len(self.entries))
            changed = False
            full = self._settle(state, allowed)
            if full is None:
                return False
            inside = state.constrained | state.exceptions | state.undecided
            free = self._all & ~inside & ~state.out
            room = limit - inside.bit_count()
            if room < 0:
                return False
            tolerance = 0
            everyone, thresholds, out = self.entries, self.threshold, state.out
            for member in self._bits(state.constrained):
                entries = everyone[member]
                left = self._tolerance[member] - (entries & out).bit_count()
                if left < 0 or thresholds[member] - (entries & inside).bit_count() > room:
                    return False
                if left == 0 and entries & free:
                    state.undecided |= entries & free
                    changed = True
                tolerance += left
            if changed:
                continue
            changed = self._exclude_unreachable(state, inside, free, room, full)
            if changed:
                continue
            verdict = self._cover_tolerance(state, free, limit, tolerance)
            if verdict is None:
                return False
            if not verdict:
                return True

    def _settle(self, state: _State, allowed: int) -> bool | None:
        """`_settle_exceptions` and the member cap until neither changes anything:
        whether the exceptions are all used, None when the state has no quorum."""
        while True:
            full = _settle_exceptions(state, allowed)
            inside = state.constrained | state.exceptions | state.undecided
            if full is None or inside & state.out:
                return None
            capped = self._cap_members(state, self._all & ~inside & ~state.out)
            if capped is None:
                return None
            if not capped:
                return full

    def _cap_members(self, state: _State, free: int) -> bool | None:
        """Once the members reach their cap, every other group in or joining is an
        exception: whether that changed the state, None when the cap is exceeded."""
        count = state.constrained.bit_count()
        if count > self._member_cap:
            return None
        if count < self._member_cap:
            return False
        changed = bool(state.undecided or free & ~state.only_exception)
        state.exceptions |= state.undecided
        state.undecided = 0
        state.only_exception |= free
        return changed

    def _exclude_unreachable(
        self, state: _State, inside: int, free: int, room: int, full: bool
    ) -> bool:
        """Groups that could not join as members within `room` join only as exceptions,
        or stay out once no exception is left."""
        changed = False
        everyone, thresholds, names_itself = self.entries, self.threshold, self._names_itself
        present = ~state.out
        for group in self._bits(free & ~state.only_exception):
            entries = everyone[group]
            need = thresholds[group] - (entries & inside).bit_count() - names_itself[group]
            if need >= room or (entries & present).bit_count() < thresholds[group]:
                state.only_exception |= 1 << group
                changed = True
        if full and free & state.only_exception:
            state.out |= free & state.only_exception
            changed = True
        return changed

    def _cover_tolerance(
        self, state: _State, free: int, limit: int, tolerance: int
    ) -> bool | None:
        """At least `groups - limit` groups stay out, each using one unit of tolerance of
        every member naming it: None when the cheapest ones cost more than the members
        tolerate, True when a group had to be forced in, False when nothing changed."""
        outside = len(self.entries) - limit - state.out.bit_count()
        if outside <= 0:
            return False
        groups = self._bits(free)
        if outside > len(groups):
            return None
        self._charge(len(groups))
        costs = [(self._namers[group] & state.constrained).bit_count() for group in groups]
        cheapest = sorted(costs)
        total = sum(cheapest[:outside])
        if total > tolerance:
            return None
        # A group dearer than this, kept out, would replace one of the cheapest and
        # break the tolerance: it must be in.
        dearest = tolerance - total + cheapest[outside - 1]
        forced = 0
        for group, cost in zip(groups, costs, strict=True):
            if cost > dearest:
                forced |= 1 << group
        if forced:
            state.undecided |= forced
            return True
        return False


class _QuorumSizes:
    """Proven lower bounds on q(f), the fewest groups of a quorum with at most f
    exceptions, shared by the deepening of `splitting_lower_bound`.

    Each bound is first sought through a relaxation: the members C of such a quorum
    with g <= f exceptions satisfy thresholds lowered by g among themselves, so q(f) >=
    min over g <= f of g + q'(g), q' being the smallest quorum with thresholds lowered by
    g and no exception; q' is proven by the search without exceptions, which prunes far
    better.  Only when the relaxation meets a small quorum does the exact search with
    exceptions run.  All searches share one budget of groups examined."""

    def __init__(
        self, quotient: Quotient, candidates: int, stop: Stop | None, budget: int | None
    ) -> None:
        self.quotient = quotient
        self.candidates = candidates
        self.stop = stop
        self.budget = budget
        self.exact = self._search(0)
        self.lowered: dict[int, QuorumSizeSearch] = {0: self.exact}
        self.proven: dict[int, int] = {}
        self.proven_lowered: dict[int, int] = {}
        self.proven_members: dict[int, int] = {}

    def _search(self, lowered: int) -> QuorumSizeSearch:
        thresholds = tuple(max(0, need - lowered) for need in self.quotient.threshold)
        return QuorumSizeSearch(
            self.quotient.entries, thresholds, self.candidates, stop=self.stop
        )

    def _run(
        self, search: QuorumSizeSearch, limit: int, allowed: int, members: int | None = None
    ) -> bool:
        """Whether `search` proves no quorum of at most `limit` groups (and at most
        `members` members) exists."""
        if limit < 1 or (members is not None and members < 1):
            return True
        if self.budget is not None:
            spent = sum(other.work for other in self.lowered.values())
            search.budget = search.work + max(0, self.budget - spent)
        return search.exists(limit, allowed, members) is None

    def _lowered_at_least(self, lowered: int, need: int) -> bool:
        if self.proven_lowered.get(lowered, 0) >= need:
            return True
        if lowered not in self.lowered:
            self.lowered[lowered] = self._search(lowered)
        if not self._run(self.lowered[lowered], need - 1, 0):
            return False
        self.proven_lowered[lowered] = need
        return True

    def at_least(self, exceptions: int, need: int) -> bool:
        """Whether q(`exceptions`) >= `need` is proven (raises `SearchStopped`)."""
        if self.proven.get(exceptions, 0) < need:
            relaxed = all(
                self._lowered_at_least(lowered, need - lowered)
                for lowered in range(exceptions + 1)
            )
            if not relaxed and not self._run(self.exact, need - 1, exceptions):
                return False
            for fewer in range(exceptions + 1):
                self.proven[fewer] = max(self.proven.get(fewer, 0), need)
        return True


    def members_at_least(self, exceptions: int, need: int) -> bool:
        """Whether every quorum with at most `exceptions` exceptions is proven to have at
        least `need` members (raises `SearchStopped`).  The same relaxation first: its
        members form a quorum of thresholds lowered by the exceptions it uses."""
        if self.proven_members.get(exceptions, 0) >= need:
            return True
        relaxed = all(
            self._lowered_at_least(lowered, need) for lowered in range(exceptions + 1)
        )
        if not relaxed:
            limit = need - 1 + exceptions
            if not self._run(self.exact, limit, exceptions, members=need - 1):
                return False
        for fewer in range(exceptions + 1):
            self.proven_members[fewer] = max(self.proven_members.get(fewer, 0), need)
        return True


def _whole_group_bound(
    quorums: _QuorumSizes,
    groups: int,
    passengers: int,
    *,
    lower: int,
    upper: int | None,
    progress: Progress | None,
) -> int:
    """The bound in failed groups when groups fail as a whole (step 4 of the module
    docstring): a split failing f named groups leaves two disjoint member sets among
    the other `groups - f`, so the smaller has at most (groups - f) // 2 members and
    at most f exceptions."""
    try:
        while upper is None or lower < upper:
            target = lower + 1
            if passengers < target:
                break
            for failed in range(target):
                if not quorums.members_at_least(failed, (groups - failed) // 2 + 1):
                    return lower
            lower = target
            if progress is not None:
                progress(f"splitting: no split of fewer than {lower} groups (quorum sizes)")
    except SearchStopped:
        pass
    return lower


def splitting_lower_bound(
    quotient: Quotient,
    *,
    lower: int = 0,
    upper: int | None = None,
    stop: Stop | None = None,
    budget: int | None = QUORUM_SIZE_WORK,
    progress: Progress | None = None,
    whole_groups: bool = False,
) -> int:
    """A proven lower bound, in nodes, on the smallest splitting set of a `closed`
    quotient (see the module docstring), at least `lower` and at most `upper`; `lower`
    itself when the quotient lacks the shape, or when the stop or the budget end the
    search first.  With `whole_groups` (a quotient built with grouping groups, which
    fail as a whole) the bound counts failed groups instead (step 4)."""
    named = [index for index, k in enumerate(quotient.inner_threshold) if k is not None]
    if not named or quotient.size > MAX_GROUPS or len(quotient.threshold) != quotient.size:
        return lower
    inner = [quotient.inner_threshold[index] or 0 for index in named]
    sizes = [quotient.groups[index].bit_count() for index in named]
    beta = min(2 * k - n for k, n in zip(inner, sizes, strict=True))
    phi = min(inner)
    if beta < 1:
        return lower  # a group can count on both sides at no cost
    quorums = _QuorumSizes(quotient, sum(1 << index for index in named), stop, budget)
    groups = len(named)
    if whole_groups:
        passengers = min(quotient.threshold)
        return _whole_group_bound(
            quorums, groups, passengers, lower=lower, upper=upper, progress=progress
        )
    passengers = phi * min(quotient.threshold)
    try:
        while upper is None or lower < upper:
            target = lower + 1
            if passengers < target:
                break
            for exceptions in range((target - 1) // phi + 1):
                excess = -(-(target - (phi - beta) * exceptions) // beta)
                if not quorums.at_least(exceptions, -(-(groups + excess) // 2)):
                    return lower  # a small quorum exists: this argument goes no further
            lower = target
            if progress is not None:
                progress(f"splitting: no split of fewer than {lower} nodes (quorum sizes)")
    except SearchStopped:
        pass
    return lower
