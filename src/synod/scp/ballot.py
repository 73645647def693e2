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

Every change of state produces a new own statement, which is itself recorded and fed
through the same rules; the slot signs and sends only the last one of a step.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Final

from synod.quorum.qset import QuorumSet
from synod.scp.messages import (
    Ballot,
    BallotPledges,
    Confirm,
    Externalize,
    Pledges,
    Prepare,
    Statement,
)
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
    federated_accept,
    federated_ratify,
    is_blocking_threshold,
    is_quorum_threshold,
)

if TYPE_CHECKING:
    from synod.scp.slot import Slot

MAX_ADVANCE_DEPTH: Final = 50
"""Own statements feed back into the rules; this bounds the recursion (a bug guard)."""
COUNTER_HEADROOM: Final = 1000
"""Draft 3.6: ballot.counter stays below 1000 plus the seconds spent on the slot."""


class Phase(enum.IntEnum):
    PREPARE = 0
    CONFIRM = 1
    EXTERNALIZE = 2


Interval = tuple[int, int]


class BallotProtocol:
    """Ballot state of one slot (see the module docstring for the rules)."""

    def __init__(self, slot: Slot) -> None:
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

    # ------------------------------------------------------------ input

    def process(self, statement: Statement, *, from_self: bool = False) -> str | None:
        """Record a ballot statement and advance; returns a rejection reason or None."""
        pledges = statement.pledges
        assert isinstance(pledges, Prepare | Confirm | Externalize)
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
        self._advance(pledges)
        return None

    def _record(self, statement: Statement) -> None:
        self._version += 1
        previous = self.latest.get(statement.node_id)
        if previous is not None:
            self._index(statement.node_id, _ballot_pledges(previous), -1)
        self._index(statement.node_id, _ballot_pledges(statement), 1)
        self.latest[statement.node_id] = statement
        self.node_qsets[statement.node_id] = self.slot.qset_of(statement)

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

    def _advance(self, hint: BallotPledges) -> None:
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
                # ahead, or if our counter went down (switching to an accepted commit
                # of another value); otherwise skip the scan over every node
                local_counter = self._local_counter()
                if ballot_counter(hint) > local_counter or local_counter < counter_before:
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
            if self._federated_accept(
                partial(_votes_prepared, ballot),
                partial(_has_prepared, ballot),
            ):
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
            if self._federated_ratify(partial(_has_prepared, new_high)):
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
            if not self._federated_ratify(partial(_has_prepared, ballot)):
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

        def accepted_over(interval: Interval) -> bool:
            return self._federated_accept(
                lambda pledges: _votes_commit(ballot, interval, pledges),
                lambda pledges: _accepts_commit(ballot, interval, pledges),
            )

        interval = _find_extended_interval(self._commit_boundaries(ballot), accepted_over)
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

        def confirmed_over(interval: Interval) -> bool:
            return self._federated_ratify(
                lambda pledges: _accepts_commit(ballot, interval, pledges)
            )

        interval = _find_extended_interval(self._commit_boundaries(ballot), confirmed_over)
        if interval[0] == 0:
            return False
        self.commit = Ballot(interval[0], ballot.value)
        self.high = Ballot(interval[1], ballot.value)
        self._update_current_if_needed(self.high)
        self.phase = Phase.EXTERNALIZE
        self._emit_current_state()
        self.slot.externalized(self.commit.value)
        return True

    def _commit_boundaries(self, ballot: Ballot) -> list[int]:
        boundaries: set[int] = set()
        for statement in self.latest.values():
            pledges = statement.pledges
            if isinstance(pledges, Prepare):
                if compatible(ballot, pledges.ballot) and pledges.n_c:
                    boundaries.update((pledges.n_c, pledges.n_h))
            elif isinstance(pledges, Confirm):
                if compatible(ballot, pledges.ballot):
                    boundaries.update((pledges.n_commit, pledges.n_h))
            elif isinstance(pledges, Externalize) and compatible(ballot, pledges.commit):
                boundaries.update((pledges.commit.counter, pledges.n_h, INFINITE_COUNTER))
        return sorted(boundaries)

    # bumping and timers ---------------------------------------------

    def _attempt_bump(self) -> bool:
        """Draft 3.6: a blocking set of nodes ahead of us pulls our counter up."""
        if self.phase not in (Phase.PREPARE, Phase.CONFIRM):
            return False
        local_counter = self._local_counter()
        if not self._blocking_set_ahead_of(local_counter):
            return False
        counters = sorted(
            {
                counter
                for counter in (
                    ballot_counter(_ballot_pledges(statement)) for statement in self.latest.values()
                )
                if counter > local_counter
            }
        )
        for counter in counters:
            if not self._blocking_set_ahead_of(counter):
                return self._abandon_ballot(counter)
        return False  # unreachable: the highest counter cannot have a set above it

    def _blocking_set_ahead_of(self, counter: int) -> bool:
        return is_blocking_threshold(
            self.slot.local_qset,
            self.latest,
            lambda pledges: ballot_counter(_as_ballot(pledges)) > counter,
        )

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
        if is_quorum_threshold(
            self.slot.local_qset,
            self.latest,
            self.node_qsets.get,
            lambda pledges: ballot_counter(_as_ballot(pledges)) >= counter,
        ):
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

    def _federated_accept(
        self, voted: Callable[[Pledges], bool], accepted: Callable[[Pledges], bool]
    ) -> bool:
        return federated_accept(
            self.slot.local_qset, self.latest, self.node_qsets.get, voted, accepted
        )

    def _federated_ratify(self, accepted: Callable[[Pledges], bool]) -> bool:
        return federated_ratify(self.slot.local_qset, self.latest, self.node_qsets.get, accepted)

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
    assert isinstance(pledges, Prepare | Confirm | Externalize)
    return pledges


def _working_value(pledges: BallotPledges) -> bytes:
    if isinstance(pledges, Externalize):
        return pledges.commit.value
    return pledges.ballot.value


# The predicates below run once per node for every federated check, so they compare
# fields directly instead of calling the ballot helpers (same rules, fewer calls).


def _votes_prepared(ballot: Ballot, pledges: Pledges) -> bool:
    """The statement votes (or accepts) prepare(ballot)."""
    if isinstance(pledges, Prepare):
        voted = pledges.ballot
        return voted.value == ballot.value and ballot.counter <= voted.counter
    if isinstance(pledges, Confirm):
        return pledges.ballot.value == ballot.value
    if isinstance(pledges, Externalize):
        return pledges.commit.value == ballot.value
    return False


def _has_prepared(ballot: Ballot, pledges: Pledges) -> bool:
    """The statement accepts prepare(ballot)."""
    if isinstance(pledges, Prepare):
        prepared = pledges.prepared
        if (
            prepared is not None
            and prepared.value == ballot.value
            and ballot.counter <= prepared.counter
        ):
            return True
        prime = pledges.prepared_prime
        return prime is not None and prime.value == ballot.value and ballot.counter <= prime.counter
    if isinstance(pledges, Confirm):
        return pledges.ballot.value == ballot.value and ballot.counter <= pledges.n_prepared
    if isinstance(pledges, Externalize):
        return pledges.commit.value == ballot.value
    return False


def _votes_commit(ballot: Ballot, interval: Interval, pledges: Pledges) -> bool:
    """The statement votes (or accepts) commit for every counter in `interval`."""
    low, high = interval
    if isinstance(pledges, Prepare):
        return (
            compatible(ballot, pledges.ballot)
            and pledges.n_c != 0
            and pledges.n_c <= low
            and high <= pledges.n_h
        )
    if isinstance(pledges, Confirm):
        return compatible(ballot, pledges.ballot) and pledges.n_commit <= low
    if isinstance(pledges, Externalize):
        return compatible(ballot, pledges.commit) and pledges.commit.counter <= low
    return False


def _accepts_commit(ballot: Ballot, interval: Interval, pledges: Pledges) -> bool:
    """The statement accepts commit for every counter in `interval`."""
    low, high = interval
    if isinstance(pledges, Confirm):
        return (
            compatible(ballot, pledges.ballot) and pledges.n_commit <= low and high <= pledges.n_h
        )
    if isinstance(pledges, Externalize):
        return compatible(ballot, pledges.commit) and pledges.commit.counter <= low
    return False


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
