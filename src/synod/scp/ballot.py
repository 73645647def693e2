"""The ballot protocol of one slot: PREPARE, CONFIRM (the draft's COMMIT), EXTERNALIZE.

Theory of operation (draft-mazieres-dinrg-scp-05 sections 3.5-3.9; SCP paper section 6;
the field updates as stellar-core's `BallotProtocol` performs them).

State: the current ballot b; the two highest accepted-prepared ballots p and p' (p' <
p, incompatible; the draft's aCounter is p'.counter or p'.counter + 1); h, the highest
confirmed-prepared ballot (in CONFIRM: highest accepted committed); c, the lowest ballot
we vote (PREPARE) or accept (CONFIRM) to commit; the phase; and the latest statement
of every node, ours included.

Each new statement is recorded and then the slot *advances*, trying in turn:

1. accept prepare(x) for a candidate ballot x (from the statements' ballots), by a
   blocking threshold of nodes that accept it or a quorum threshold that votes or
   accepts it; it becomes p (or p'), and c is dropped if it now contradicts h;
2. confirm prepare(x): a quorum threshold accepts it; x becomes h, and if no c is set
   and nothing accepted prepared contradicts h, c becomes the lowest ballot down to b
   still confirmed prepared (we start voting to commit c..h); b moves up to h;
3. accept commit over a counter interval [c, h] (blocking threshold of accepting
   nodes or quorum threshold voting or accepting): enter CONFIRM, b follows h;
4. confirm commit over an interval: EXTERNALIZE, output the value;
5. (outermost call only) bump: while the nodes whose counter is above ours form a
   blocking threshold, jump to the lowest counter at which they no longer do;
6. heard-from-quorum: when a quorum reports a counter >= ours (EXTERNALIZE counts as
   infinite), arm the ballot timer for `ballot_timeout_ms(counter)`; when it fires,
   move to counter + 1.  The value of a new ballot is h's if a ballot is confirmed
   prepared (the "value override"), else the latest composite of confirmed nominated
   values, else the current ballot's.

The federated checks do not test every node's statement each time: recording a
statement updates per-value indexes of what it votes for and accepts (prepare up to
which counter, commit over which counter range) and each node's counter, and the checks
pick the nodes out of those (the same sets, exactly; see `_index_pledges`).

Every change of state produces a new own statement, which is itself recorded and fed
through the same rules; the slot signs and sends only the last one of a step.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final, Generic, NamedTuple, TypeVar

from synod.quorum.qset import QuorumSet, is_v_blocking
from synod.scp.messages import (
    Ballot,
    BallotPledges,
    Confirm,
    Externalize,
    Pledges,
    Prepare,
    Statement,
)
from synod.scp.slot_view import BallotSlot
from synod.scp.statements import (
    INFINITE_COUNTER,
    ballot_counter,
    compare_ballots,
    compatible,
    is_ballot_statement_sane,
    is_newer_ballot_statement,
    less_and_compatible,
    less_and_incompatible,
)
from synod.scp.voting import (
    accepts_with,
    is_quorum_threshold_set,
)

MAX_ADVANCE_DEPTH: Final = 50
"""Own statements feed back into the rules; this bounds the recursion (a bug guard)."""
COUNTER_HEADROOM: Final = 1000
"""Draft 3.6: ballot.counter stays below 1000 plus the seconds spent on the slot."""


_BALLOT_PLEDGES = (Prepare, Confirm, Externalize)
"""A tuple, not a `|` union: built once, not on every statement."""


class Phase(enum.IntEnum):
    PREPARE = 0
    CONFIRM = 1
    EXTERNALIZE = 2


Interval = tuple[int, int]

_Range = TypeVar("_Range")
_UNBOUNDED: Final = 2**64
"""Above every counter (they are 32-bit): the upper end of a range with none."""


class _RangeIndex(Generic[_Range]):
    """value -> node -> what that node's latest statement pledges for the value."""

    def __init__(self) -> None:
        self._by_value: dict[bytes, dict[bytes, _Range]] = {}

    def put(self, value: bytes, node: bytes, pledged: _Range, *, add: bool) -> None:
        """Record (`add`) or forget (the statement was replaced) a node's pledge."""
        if add:
            self._by_value.setdefault(value, {})[node] = pledged
            return
        nodes = self._by_value.get(value)
        if nodes is not None:
            nodes.pop(node, None)
            if not nodes:
                del self._by_value[value]

    def of(self, value: bytes) -> Mapping[bytes, _Range]:
        """Every node's pledge for `value` (read-only view)."""
        return self._by_value.get(value, _NO_PLEDGES)


_NO_PLEDGES: Final[Mapping[bytes, Any]] = MappingProxyType({})


class _CommitRanges(NamedTuple):
    """Per node, the counter ranges over which it votes-or-accepts and accepts commit
    of one value; and the sorted interval boundaries the statements name."""

    supporting: Mapping[bytes, Interval]
    accepting: Mapping[bytes, Interval]
    boundaries: list[int]


class BallotProtocol:
    """Ballot state of one slot (see the module docstring for the rules)."""

    def __init__(self, slot: BallotSlot) -> None:
        self.slot = slot
        self.phase = Phase.PREPARE
        self.current: Ballot | None = None
        self.prepared: Ballot | None = None
        self.prepared_prime: Ballot | None = None
        self.high: Ballot | None = None
        self.commit: Ballot | None = None
        self.value_override: bytes | None = None
        self.heard_from_quorum = False
        self.latest: dict[bytes, Statement] = {}
        self.node_qsets: dict[bytes, QuorumSet | None] = {}
        """The quorum set each node's latest statement was made under."""
        self.last_statement: Statement | None = None
        """Our newest statement worth sending (None until we have a ballot)."""
        self._depth = 0
        self._version = 0
        self._mentions: Counter[Ballot] = Counter()
        self._later_values: Counter[bytes] = Counter()
        self._confirm_prepared: Counter[Ballot] = Counter()
        self._candidates_cache: tuple[tuple[BallotPledges, int], set[Ballot]] | None = None
        self._counters: dict[bytes, int] = {}
        """Each node's ballot counter (EXTERNALIZE: infinite), for the timer and bump."""
        self._prepare_votes = _RangeIndex[int]()
        """Per value, per node: the highest counter whose prepare it votes or accepts."""
        self._prepare_accepts = _RangeIndex[int]()
        """Per value, per node: the highest counter whose prepare it accepts."""
        self._commit_votes = _RangeIndex[Interval]()
        """Per value, per node: the counters whose commit it votes or accepts."""
        self._commit_accepts = _RangeIndex[Interval]()
        """Per value, per node: the counters whose commit it accepts."""
        self._commit_boundaries: dict[bytes, Counter[int]] = {}
        """Per value: the commit interval boundaries the statements name (counted)."""

    # ------------------------------------------------------------ input

    def process(self, statement: Statement, *, from_self: bool = False) -> str | None:
        """Record a ballot statement and advance; returns a rejection reason or None."""
        pledges = statement.pledges
        assert isinstance(pledges, _BALLOT_PLEDGES)
        if not is_ballot_statement_sane(pledges, from_self=from_self):
            return "insane_statement"
        previous = self.latest.get(statement.node_id)
        if previous is not None and not is_newer_ballot_statement(
            _ballot_pledges(previous), pledges
        ):
            return "stale_statement"
        if self.phase == Phase.EXTERNALIZE:
            assert self.commit is not None
            if _working_value(pledges) != self.commit.value:
                return "contradicts_externalized"
            self._record(statement)
            return None
        self._record(statement)
        self._advance(pledges, own=from_self)
        return None

    def _record(self, statement: Statement) -> None:
        self._version += 1
        previous = self.latest.get(statement.node_id)
        if previous is not None:
            self._index(statement.node_id, _ballot_pledges(previous), -1)
            self._index_pledges(statement.node_id, _ballot_pledges(previous), add=False)
        self._index(statement.node_id, _ballot_pledges(statement), 1)
        self._index_pledges(statement.node_id, _ballot_pledges(statement), add=True)
        self.latest[statement.node_id] = statement
        self.node_qsets[statement.node_id] = self.slot.qset_of(statement)
        self._counters[statement.node_id] = ballot_counter(_ballot_pledges(statement))

    def _index(self, node: bytes, pledges: BallotPledges, change: int) -> None:
        """Keep the counted indexes that candidate ballots come from in step with
        `latest`: ballots named by PREPAREs (`_mentions`), values of CONFIRMs and
        EXTERNALIZEs (`_later_values`), CONFIRMs' accepted prepared ballots."""
        if isinstance(pledges, Prepare):
            mentioned: tuple[Ballot | None, ...] = (
                pledges.ballot,
                pledges.prepared,
                pledges.prepared_prime,
            )
            _count(self._mentions, mentioned, change)
        elif isinstance(pledges, Confirm):
            value = pledges.ballot.value
            _count(self._later_values, (value,), change)
            _count(self._confirm_prepared, (Ballot(pledges.n_prepared, value),), change)
        else:
            _count(self._later_values, (pledges.commit.value,), change)

    def _index_pledges(self, node: bytes, pledges: BallotPledges, *, add: bool) -> None:
        """Keep the per-value indexes of what each node votes and accepts in step with
        `latest`, so the federated checks read them instead of testing every node's
        statement (draft 3.5: what PREPARE, CONFIRM and EXTERNALIZE vote and accept)."""
        if isinstance(pledges, Prepare):
            value = pledges.ballot.value
            # votes prepare(<n, x>) for n <= b.counter; accepts up to p's and p''s
            self._prepare_votes.put(value, node, pledges.ballot.counter, add=add)
            accepted_tops: dict[bytes, int] = {}
            for accepted in (pledges.prepared, pledges.prepared_prime):
                if accepted is not None:
                    accepted_tops[accepted.value] = max(
                        accepted.counter, accepted_tops.get(accepted.value, 0)
                    )
            for accepted_value, top in accepted_tops.items():
                self._prepare_accepts.put(accepted_value, node, top, add=add)
            if pledges.n_c:
                # votes commit(<n, x>) for n_c <= n <= n_h
                self._commit_votes.put(value, node, (pledges.n_c, pledges.n_h), add=add)
                self._count_boundaries(value, (pledges.n_c, pledges.n_h), add=add)
        elif isinstance(pledges, Confirm):
            value = pledges.ballot.value
            # votes prepare(<n, x>) for every n, accepts it up to n_prepared; accepts
            # commit for n_commit..n_h and votes it for n_commit..infinity
            self._prepare_votes.put(value, node, _UNBOUNDED, add=add)
            self._prepare_accepts.put(value, node, pledges.n_prepared, add=add)
            self._commit_votes.put(value, node, (pledges.n_commit, _UNBOUNDED), add=add)
            self._commit_accepts.put(value, node, (pledges.n_commit, pledges.n_h), add=add)
            self._count_boundaries(value, (pledges.n_commit, pledges.n_h), add=add)
        else:
            value = pledges.commit.value
            # accepts (so votes) prepare(<n, x>) for every n, commit for c..infinity
            commit_range = (pledges.commit.counter, _UNBOUNDED)
            self._prepare_votes.put(value, node, _UNBOUNDED, add=add)
            self._prepare_accepts.put(value, node, _UNBOUNDED, add=add)
            self._commit_votes.put(value, node, commit_range, add=add)
            self._commit_accepts.put(value, node, commit_range, add=add)
            self._count_boundaries(
                value, (pledges.commit.counter, pledges.n_h, INFINITE_COUNTER), add=add
            )

    def _count_boundaries(self, value: bytes, boundaries: tuple[int, ...], *, add: bool) -> None:
        counted = self._commit_boundaries.setdefault(value, Counter())
        _count(counted, boundaries, 1 if add else -1)
        if not counted:
            del self._commit_boundaries[value]

    def timer_expired(self) -> None:
        """The ballot timer fired: abandon the current ballot for counter + 1."""
        if self.phase in (Phase.PREPARE, Phase.CONFIRM):
            self._abandon_ballot(0)

    def bump_state(self, value: bytes, *, force: bool) -> bool:
        """Start (or, with `force`, move past) a ballot for `value` (nomination's output)."""
        if not force and self.current is not None:
            return False
        counter = self.current.counter + 1 if self.current is not None else 1
        return self._bump_state_to(value, counter)

    def restore(self, statement: Statement) -> None:
        """Adopt our own persisted statement as the state (restart after a crash)."""
        pledges = _ballot_pledges(statement)
        if isinstance(pledges, Prepare):
            self.current = pledges.ballot if pledges.ballot.counter > 0 else None
            self.prepared = pledges.prepared
            self.prepared_prime = pledges.prepared_prime
            value = pledges.ballot.value
            self.high = Ballot(pledges.n_h, value) if pledges.n_h else None
            self.commit = Ballot(pledges.n_c, value) if pledges.n_c else None
            self.phase = Phase.PREPARE
        elif isinstance(pledges, Confirm):
            value = pledges.ballot.value
            self.current = pledges.ballot
            self.prepared = Ballot(pledges.n_prepared, value)
            self.high = Ballot(pledges.n_h, value)
            self.commit = Ballot(pledges.n_commit, value)
            self.value_override = value
            self.phase = Phase.CONFIRM
        else:
            value = pledges.commit.value
            self.current = Ballot(INFINITE_COUNTER, value)
            self.prepared = Ballot(INFINITE_COUNTER, value)
            self.high = Ballot(pledges.n_h, value)
            self.commit = pledges.commit
            self.phase = Phase.EXTERNALIZE
        if self.high is not None:
            self.value_override = self.high.value
        self._record(statement)
        self.last_statement = statement

    # ------------------------------------------------------------ advancing

    def _advance(self, hint: BallotPledges, *, own: bool = False) -> None:
        self._depth += 1
        assert self._depth <= MAX_ADVANCE_DEPTH, "ballot protocol recursion ran away"
        counter_before = self._local_counter()
        try:
            self._attempt_accept_prepared(hint)
            self._attempt_confirm_prepared(hint)
            self._attempt_accept_commit(hint)
            self._attempt_confirm_commit(hint)
            if self._depth == 1:
                # a blocking set can only have got ahead of us if the new statement is
                # ahead, if our counter went down (switching to an accepted commit of
                # another value), or if the statement is our own: a bump of ours (timer,
                # application) may land below a blocking set already further on, and
                # stellar-core checks the jump on every advance; otherwise skip the scan
                local_counter = self._local_counter()
                if (
                    own
                    or ballot_counter(hint) > local_counter
                    or local_counter < counter_before
                ):
                    while self._attempt_bump():
                        pass
                self._check_heard_from_quorum()
        finally:
            self._depth -= 1

    def _local_counter(self) -> int:
        return self.current.counter if self.current is not None else 0

    # accept prepared ------------------------------------------------

    def _attempt_accept_prepared(self, hint: BallotPledges) -> bool:
        if self.phase not in (Phase.PREPARE, Phase.CONFIRM):
            return False
        for ballot in sorted(self._prepare_candidates(hint), key=_key, reverse=True):
            if self.phase == Phase.CONFIRM:
                # only a ballot that raises p helps; p and c are compatible here
                assert self.prepared is not None
                if not less_and_compatible(self.prepared, ballot):
                    continue
            if (
                self.prepared_prime is not None
                and compare_ballots(ballot, self.prepared_prime) <= 0
            ):
                continue
            if self.prepared is not None and less_and_compatible(ballot, self.prepared):
                continue
            if self._accepts_prepared(ballot):
                return self._set_accept_prepared(ballot)
        return False

    def _set_accept_prepared(self, ballot: Ballot) -> bool:
        changed = self._set_prepared(ballot)
        if (
            self.commit is not None
            and self.high is not None
            and (
                (self.prepared is not None and less_and_incompatible(self.high, self.prepared))
                or (
                    self.prepared_prime is not None
                    and less_and_incompatible(self.high, self.prepared_prime)
                )
            )
        ):
            # an accepted prepared ballot aborts what we voted to commit
            assert self.phase == Phase.PREPARE
            self.commit = None
            changed = True
        if changed:
            self._emit_current_state()
        return changed

    def _set_prepared(self, ballot: Ballot) -> bool:
        if self.prepared is None:
            self.prepared = ballot
            return True
        order = compare_ballots(self.prepared, ballot)
        if order < 0:
            if not compatible(self.prepared, ballot):
                self.prepared_prime = self.prepared
            self.prepared = ballot
            return True
        if order > 0 and (
            self.prepared_prime is None
            or (
                compare_ballots(self.prepared_prime, ballot) < 0
                and not compatible(self.prepared, ballot)
            )
        ):
            self.prepared_prime = ballot
            return True
        return False

    # confirm prepared -----------------------------------------------

    def _attempt_confirm_prepared(self, hint: BallotPledges) -> bool:
        if self.phase != Phase.PREPARE or self.prepared is None:
            return False
        candidates = sorted(self._prepare_candidates(hint), key=_key, reverse=True)
        for index, new_high in enumerate(candidates):
            if self.high is not None and compare_ballots(self.high, new_high) >= 0:
                return False
            if self._confirms_prepared(new_high):
                new_commit = self._lowest_commit(candidates[index:], new_high)
                return self._set_confirm_prepared(new_commit, new_high)
        return False

    def _lowest_commit(self, candidates: list[Ballot], new_high: Ballot) -> Ballot | None:
        """Draft 3.6 cCounter: walk down from h while still confirmed prepared, not
        below the current ballot; only when nothing accepted contradicts h."""
        if self.commit is not None:
            return None
        for aborted in (self.prepared, self.prepared_prime):
            if aborted is not None and less_and_incompatible(new_high, aborted):
                return None
        floor = self.current if self.current is not None else Ballot(0, b"")
        lowest: Ballot | None = None
        for ballot in candidates:
            if compare_ballots(ballot, floor) < 0:
                break
            if not less_and_compatible(ballot, new_high):
                continue
            if not self._confirms_prepared(ballot):
                break
            lowest = ballot
        return lowest

    def _set_confirm_prepared(self, new_commit: Ballot | None, new_high: Ballot) -> bool:
        changed = False
        self.value_override = new_high.value
        if self.current is None or compatible(self.current, new_high):
            if self.high is None or compare_ballots(new_high, self.high) > 0:
                self.high = new_high
                changed = True
            if new_commit is not None and new_commit.counter != 0:
                assert self.commit is None
                self.commit = new_commit
                changed = True
            if changed:
                self.slot.confirmed_prepared()
        changed = self._update_current_if_needed(new_high) or changed
        if changed:
            self._emit_current_state()
        return changed

    # accept commit --------------------------------------------------

    def _attempt_accept_commit(self, hint: BallotPledges) -> bool:
        if self.phase not in (Phase.PREPARE, Phase.CONFIRM):
            return False
        ballot = _commit_hint(hint)
        if ballot is None or (
            self.phase == Phase.CONFIRM
            and self.high is not None
            and not compatible(ballot, self.high)
        ):
            return False

        ranges = self._commit_ranges(ballot.value)
        local_qset, qset_of = self.slot.local_qset, self.node_qsets.get
        if not accepts_with(local_qset, qset_of, ranges.accepting, ranges.supporting):
            # every interval's node sets are subsets of these, and both rules are
            # monotone in their sets: no interval can be accepted
            return False

        def accepted_over(interval: Interval) -> bool:
            accepting = _nodes_covering(ranges.accepting, interval)
            supporting = _nodes_covering(ranges.supporting, interval) | accepting
            return accepts_with(local_qset, qset_of, accepting, supporting)

        interval = _find_extended_interval(ranges.boundaries, accepted_over)
        if interval[0] == 0:
            return False
        if (
            self.phase == Phase.CONFIRM
            and self.high is not None
            and interval[1] <= self.high.counter
        ):
            return False  # in CONFIRM only a higher h is news
        return self._set_accept_commit(
            Ballot(interval[0], ballot.value), Ballot(interval[1], ballot.value)
        )

    def _set_accept_commit(self, commit: Ballot, high: Ballot) -> bool:
        changed = False
        self.value_override = high.value
        if self.high != high or self.commit != commit:
            self.commit, self.high = commit, high
            changed = True
        if self.phase == Phase.PREPARE:
            self.phase = Phase.CONFIRM
            if self.current is not None and not less_and_compatible(high, self.current):
                self._bump_to_ballot(high, check=False)
            self.prepared_prime = None
            changed = True
        if changed:
            assert self.high is not None
            self._update_current_if_needed(self.high)
            self.slot.accepted_commit()
            self._emit_current_state()
        return changed

    # confirm commit -------------------------------------------------

    def _attempt_confirm_commit(self, hint: BallotPledges) -> bool:
        if self.phase != Phase.CONFIRM or self.high is None or self.commit is None:
            return False
        ballot = _commit_hint(hint)
        if ballot is None or isinstance(hint, Prepare) or not compatible(ballot, self.commit):
            return False

        ranges = self._commit_ranges(ballot.value)
        local_qset, qset_of = self.slot.local_qset, self.node_qsets.get
        if not is_quorum_threshold_set(local_qset, qset_of, ranges.accepting):
            return False  # no interval's accepting set can hold more (monotone)

        def confirmed_over(interval: Interval) -> bool:
            accepting = _nodes_covering(ranges.accepting, interval)
            return is_quorum_threshold_set(local_qset, qset_of, accepting)

        interval = _find_extended_interval(ranges.boundaries, confirmed_over)
        if interval[0] == 0:
            return False
        self.commit = Ballot(interval[0], ballot.value)
        self.high = Ballot(interval[1], ballot.value)
        self._update_current_if_needed(self.high)
        self.phase = Phase.EXTERNALIZE
        self._emit_current_state()
        self.slot.externalized(self.commit.value)
        return True

    def _commit_ranges(self, value: bytes) -> _CommitRanges:
        """The commit rules' view of `value`: the counter range over which each node
        votes (or accepts) commit, the range over which it accepts commit, and the
        sorted interval boundaries the statements name."""
        return _CommitRanges(
            self._commit_votes.of(value),
            self._commit_accepts.of(value),
            sorted(self._commit_boundaries.get(value, ())),
        )

    # bumping and timers ---------------------------------------------

    def _attempt_bump(self) -> bool:
        """Draft 3.6: a blocking set of nodes ahead of us pulls our counter up."""
        if self.phase not in (Phase.PREPARE, Phase.CONFIRM):
            return False
        local_counter = self._local_counter()
        if not self._blocking_set_ahead_of(local_counter):
            return False
        counters = sorted(
            {counter for counter in self._counters.values() if counter > local_counter}
        )
        for counter in counters:
            if not self._blocking_set_ahead_of(counter):
                return self._abandon_ballot(counter)
        return False  # unreachable: the highest counter cannot have a set above it

    def _blocking_set_ahead_of(self, counter: int) -> bool:
        ahead = {node for node, reported in self._counters.items() if reported > counter}
        return is_v_blocking(self.slot.local_qset, ahead)

    def _abandon_ballot(self, counter: int) -> bool:
        value = self.slot.latest_composite_candidate
        if value is None and self.current is not None:
            value = self.current.value
        if value is None:
            return False
        if counter == 0:
            return self.bump_state(value, force=True)
        return self._bump_state_to(value, counter)

    def _bump_state_to(self, value: bytes, counter: int) -> bool:
        if self.phase not in (Phase.PREPARE, Phase.CONFIRM):
            return False
        limit = COUNTER_HEADROOM + self.slot.seconds_on_slot()
        if counter > limit:
            counter = limit
            if self.current is not None and counter <= self.current.counter:
                # at the ceiling: wait a second for it to rise, then try again
                self.slot.set_ballot_timer(1000)
                return False
        # once a ballot is confirmed prepared (or commit accepted), its value wins
        chosen = self.value_override if self.value_override is not None else value
        ballot = Ballot(counter, chosen)
        updated = self._update_current_value(ballot)
        if updated:
            self._emit_current_state()
            self._check_heard_from_quorum()
        return updated

    def _update_current_value(self, ballot: Ballot) -> bool:
        if self.phase not in (Phase.PREPARE, Phase.CONFIRM):
            return False
        if self.current is None:
            self._bump_to_ballot(ballot, check=True)
            return True
        if self.commit is not None and not compatible(self.commit, ballot):
            return False
        if compare_ballots(self.current, ballot) < 0:
            self._bump_to_ballot(ballot, check=True)
            return True
        return False

    def _update_current_if_needed(self, high: Ballot) -> bool:
        if self.current is None or compare_ballots(self.current, high) < 0:
            self._bump_to_ballot(high, check=True)
            return True
        return False

    def _bump_to_ballot(self, ballot: Ballot, *, check: bool) -> None:
        assert self.phase != Phase.EXTERNALIZE
        if check:
            assert self.current is None or compare_ballots(ballot, self.current) >= 0
        counter_changed = self.current is None or self.current.counter != ballot.counter
        self.current = ballot
        # invariant: h (and c with it) carries b's value
        if self.high is not None and not compatible(self.current, self.high):
            self.high = None
            self.commit = None
        if counter_changed:
            self.heard_from_quorum = False

    def _check_heard_from_quorum(self) -> None:
        """Draft 3.6: arm the timer once a quorum is at our counter or beyond."""
        if self.current is None:
            return
        if self.heard_from_quorum and self.phase != Phase.EXTERNALIZE:
            # the quorum seen at this counter almost always stays (a peer's counter only
            # drops when it switches to another value's accepted commit), and a timer
            # left armed in that rare case merely moves us on sooner: skip the check
            return
        counter = self.current.counter
        at_or_beyond = {node for node, reported in self._counters.items() if reported >= counter}
        if is_quorum_threshold_set(self.slot.local_qset, self.node_qsets.get, at_or_beyond):
            was_heard = self.heard_from_quorum
            self.heard_from_quorum = True
            if self.phase == Phase.EXTERNALIZE:
                self.slot.cancel_ballot_timer()
            elif not was_heard:
                self.slot.set_ballot_timer(self.slot.application.ballot_timeout_ms(counter))
        else:
            self.heard_from_quorum = False
            self.slot.cancel_ballot_timer()

    # ------------------------------------------------------------ statements

    def _accepts_prepared(self, ballot: Ballot) -> bool:
        """Federated accept of prepare(ballot), from the per-value indexes."""
        accepting = _nodes_reaching(self._prepare_accepts.of(ballot.value), ballot.counter)
        supporting = _nodes_reaching(self._prepare_votes.of(ballot.value), ballot.counter)
        return accepts_with(
            self.slot.local_qset, self.node_qsets.get, accepting, supporting | accepting
        )

    def _confirms_prepared(self, ballot: Ballot) -> bool:
        """Federated ratify of prepare(ballot): a quorum threshold accepts it."""
        accepting = _nodes_reaching(self._prepare_accepts.of(ballot.value), ballot.counter)
        return is_quorum_threshold_set(self.slot.local_qset, self.node_qsets.get, accepting)

    def _prepare_candidates(self, hint: BallotPledges) -> set[Ballot]:
        """Ballots that might have been prepared, limited to those the hint could affect."""
        cache_key = (hint, self._version)
        if self._candidates_cache is not None and self._candidates_cache[0] == cache_key:
            return self._candidates_cache[1]
        candidates: set[Ballot] = set()
        for top in _hint_ballots(hint):
            candidates.update(
                ballot for ballot in self._mentions if less_and_compatible(ballot, top)
            )
            if top.value in self._later_values:
                # a CONFIRM or EXTERNALIZE of this value votes prepare(top) itself ...
                candidates.add(top)
                # ... and a CONFIRM accepted prepare(<n_prepared, value>) below it
                candidates.update(
                    ballot
                    for ballot in self._confirm_prepared
                    if ballot.value == top.value and ballot.counter < top.counter
                )
        self._candidates_cache = (cache_key, candidates)
        return candidates

    def current_pledges(self) -> BallotPledges:
        """Our statement for the current state (stellar-core `createStatement`)."""
        qset_hash = self.slot.local_qset_hash
        if self.phase == Phase.PREPARE:
            return Prepare(
                quorum_set_hash=qset_hash,
                ballot=self.current if self.current is not None else Ballot(0, b""),
                prepared=self.prepared,
                prepared_prime=self.prepared_prime,
                n_c=self.commit.counter if self.commit is not None else 0,
                n_h=self.high.counter if self.high is not None else 0,
            )
        assert self.current and self.prepared and self.commit and self.high
        if self.phase == Phase.CONFIRM:
            return Confirm(
                ballot=self.current,
                n_prepared=self.prepared.counter,
                n_commit=self.commit.counter,
                n_h=self.high.counter,
                quorum_set_hash=qset_hash,
            )
        return Externalize(
            commit=self.commit, n_h=self.high.counter, commit_quorum_set_hash=qset_hash
        )

    def _emit_current_state(self) -> None:
        self.check_invariants()
        statement = Statement(self.slot.node_id, self.slot.slot_index, self.current_pledges())
        if self.latest.get(self.slot.node_id) == statement:
            return
        reason = self.process(statement, from_self=True)
        assert reason is None, f"own ballot statement rejected: {reason}"
        if self.current is not None and (
            self.last_statement is None
            or is_newer_ballot_statement(
                _ballot_pledges(self.last_statement), _as_ballot(statement.pledges)
            )
        ):
            self.last_statement = statement

    def check_invariants(self) -> None:
        """Draft invariants between b, p, p', h and c (our own state: assert)."""
        if self.current is not None:
            assert self.current.counter != 0
        if self.prepared is not None and self.prepared_prime is not None:
            assert less_and_incompatible(self.prepared_prime, self.prepared)
        if self.high is not None:
            assert self.current is not None
            assert less_and_compatible(self.high, self.current)
        if self.commit is not None:
            assert self.high is not None
            assert less_and_compatible(self.commit, self.high)
        if self.phase != Phase.PREPARE:
            assert self.commit is not None and self.high is not None


# ---------------------------------------------------------------- pure predicates


def _key(ballot: Ballot) -> tuple[int, bytes]:
    return (ballot.counter, ballot.value)


def _ballot_pledges(statement: Statement) -> BallotPledges:
    return _as_ballot(statement.pledges)


def _as_ballot(pledges: Pledges) -> BallotPledges:
    assert isinstance(pledges, _BALLOT_PLEDGES)
    return pledges


def _working_value(pledges: BallotPledges) -> bytes:
    if isinstance(pledges, Externalize):
        return pledges.commit.value
    return pledges.ballot.value


# The federated checks read the per-value indexes (`_RangeIndex`): a node votes or
# accepts a statement about <n, x> exactly when n lies in the range it pledged for x.


def _nodes_reaching(tops: Mapping[bytes, int], counter: int) -> set[bytes]:
    """The nodes whose highest counter is at least `counter`."""
    return {node for node, top in tops.items() if counter <= top}


def _nodes_covering(ranges: Mapping[bytes, Interval], interval: Interval) -> set[bytes]:
    """The nodes whose range holds every counter of `interval`."""
    low, high = interval
    return {node for node, (first, last) in ranges.items() if first <= low and high <= last}


def _commit_hint(hint: BallotPledges) -> Ballot | None:
    """The (value, highest counter) a statement may let us commit; None if it votes none."""
    if isinstance(hint, Prepare):
        return Ballot(hint.n_h, hint.ballot.value) if hint.n_c != 0 else None
    if isinstance(hint, Confirm):
        return Ballot(hint.n_h, hint.ballot.value)
    return Ballot(hint.n_h, hint.commit.value)


def _hint_ballots(hint: BallotPledges) -> Iterator[Ballot]:
    if isinstance(hint, Prepare):
        yield hint.ballot
        if hint.prepared is not None:
            yield hint.prepared
        if hint.prepared_prime is not None:
            yield hint.prepared_prime
    elif isinstance(hint, Confirm):
        yield Ballot(hint.n_prepared, hint.ballot.value)
        yield Ballot(INFINITE_COUNTER, hint.ballot.value)
    else:
        yield Ballot(INFINITE_COUNTER, hint.commit.value)


def _count(counter: Counter[Any], items: tuple[Any, ...], change: int) -> None:
    """Add `change` to each non-None item's count, dropping counts that reach zero."""
    for item in items:
        if item is not None:
            counter[item] += change
            if counter[item] <= 0:
                del counter[item]


def _find_extended_interval(
    boundaries: list[int], predicate: Callable[[Interval], bool]
) -> Interval:
    """The widest [low, high] from the boundaries, highest first, on which `predicate`
    holds: find the highest single boundary that works, then extend it downwards."""
    low, high = 0, 0
    for boundary in reversed(boundaries):
        if low == 0:
            candidate = (boundary, boundary)
        elif boundary > high:
            continue
        else:
            candidate = (boundary, high)
        if boundary != 0 and predicate(candidate):
            low, high = candidate
        elif low != 0:
            break
    return (low, high)
