"""Rules about single statements: ballot order, sanity, and which statement is newer.

Ballot order (draft section 3.5): ballots compare by counter, then by value as unsigned
octet strings; a missing ballot is below every ballot.  Two ballots are *compatible*
when their values are equal; `less_and_compatible(a, b)` is a <= b with equal values
and `less_and_incompatible(a, b)` is a <= b with different values.

Sanity (draft 3.6 "to be valid, an SCPPrepare message must satisfy"; stellar-core
`isStatementSane`), for the PREPARE encoding with two prepared ballots:

* PREPARE: ballot.counter > 0 (our own initial statement may have 0); if both
  prepared ballots are present then prepared_prime < prepared and they are
  incompatible; n_h <= prepared.counter (n_h = 0 when nothing is prepared);
  n_c = 0 or n_c <= n_h <= ballot.counter.
* CONFIRM: ballot.counter > 0, n_h <= ballot.counter, n_commit <= n_h.
* EXTERNALIZE: commit.counter > 0, n_h >= commit.counter.
* NOMINATE: at least one value; votes and accepted each strictly increasing (sorted,
  no duplicates).

Newer (stellar-core `isNewerStatement`; the draft's monotonic messages): a node's
statements only move forward.  Ballot statements order first by kind (PREPARE <
CONFIRM < EXTERNALIZE); two PREPAREs by (ballot, prepared, prepared_prime, n_h); two
CONFIRMs by (ballot, n_prepared, n_h); an EXTERNALIZE is never superseded.  A
nomination is newer when its votes and accepted sets both contain the old ones and at
least one grew.  A statement that is not newer than the last one recorded from its
node is stale and ignored.
"""

from __future__ import annotations

import itertools
from typing import Final

from synod.scp.messages import (
    Ballot,
    BallotPledges,
    Confirm,
    Externalize,
    Nomination,
    Prepare,
    Statement,
)

INFINITE_COUNTER: Final = 2**32 - 1
"""Stands for the draft's 'infinity' counter (EXTERNALIZE, accept prepare <inf, x>)."""


def ballot_key(ballot: Ballot | None) -> tuple[int, int, bytes]:
    """Total-order key with None below every ballot."""
    if ballot is None:
        return (0, 0, b"")
    return (1, ballot.counter, ballot.value)


def compare_ballots(first: Ballot | None, second: Ballot | None) -> int:
    """-1, 0 or 1 as `first` is below, equal to or above `second` (None lowest)."""
    first_key, second_key = ballot_key(first), ballot_key(second)
    return (first_key > second_key) - (first_key < second_key)


def compatible(first: Ballot, second: Ballot) -> bool:
    return first.value == second.value


def less_and_compatible(first: Ballot, second: Ballot) -> bool:
    """first <= second and both carry the same value."""
    return first.value == second.value and first.counter <= second.counter


def less_and_incompatible(first: Ballot, second: Ballot) -> bool:
    """first <= second and they carry different values."""
    return first.value != second.value and compare_ballots(first, second) <= 0


def is_ballot_statement_sane(pledges: BallotPledges, *, from_self: bool = False) -> bool:
    """The draft's validity conditions on a ballot statement's fields."""
    if isinstance(pledges, Prepare):
        return _is_prepare_sane(pledges, from_self=from_self)
    if isinstance(pledges, Confirm):
        return (
            pledges.ballot.counter > 0
            and pledges.n_h <= pledges.ballot.counter
            and pledges.n_commit <= pledges.n_h
        )
    return pledges.commit.counter > 0 and pledges.n_h >= pledges.commit.counter


def _is_prepare_sane(prepare: Prepare, *, from_self: bool) -> bool:
    if prepare.ballot.counter == 0 and not from_self:
        return False
    prepared, prepared_prime = prepare.prepared, prepare.prepared_prime
    if (
        prepared is not None
        and prepared_prime is not None
        and not (
            less_and_incompatible(prepared_prime, prepared)
            and compare_ballots(prepared_prime, prepared) < 0
        )
    ):
        return False
    if prepare.n_h != 0 and (prepared is None or prepare.n_h > prepared.counter):
        return False
    return prepare.n_c == 0 or (
        prepare.n_h != 0 and prepare.ballot.counter >= prepare.n_h >= prepare.n_c
    )


def is_nomination_sane(nomination: Nomination) -> bool:
    """At least one value, and both lists strictly increasing."""
    if not nomination.votes and not nomination.accepted:
        return False
    return _strictly_increasing(nomination.votes) and _strictly_increasing(nomination.accepted)


def _strictly_increasing(values: tuple[bytes, ...]) -> bool:
    return all(earlier < later for earlier, later in itertools.pairwise(values))


def is_statement_sane(statement: Statement, *, from_self: bool = False) -> bool:
    """Sanity of the pledges (quorum-set sanity is checked where the set is known)."""
    pledges = statement.pledges
    if isinstance(pledges, Nomination):
        return is_nomination_sane(pledges)
    return is_ballot_statement_sane(pledges, from_self=from_self)


_KIND_ORDER: Final[dict[type, int]] = {Prepare: 0, Confirm: 1, Externalize: 2}


def is_newer_ballot_statement(old: BallotPledges, new: BallotPledges) -> bool:
    """True when `new` supersedes `old` (both from the same node and slot)."""
    old_kind, new_kind = _KIND_ORDER[type(old)], _KIND_ORDER[type(new)]
    if old_kind != new_kind:
        return old_kind < new_kind
    if isinstance(old, Externalize):
        return False
    if isinstance(old, Confirm):
        assert isinstance(new, Confirm)
        return (ballot_key(old.ballot), old.n_prepared, old.n_h) < (
            ballot_key(new.ballot),
            new.n_prepared,
            new.n_h,
        )
    assert isinstance(old, Prepare) and isinstance(new, Prepare)
    return _prepare_key(old) < _prepare_key(new)


def _prepare_key(prepare: Prepare) -> tuple[object, ...]:
    return (
        ballot_key(prepare.ballot),
        ballot_key(prepare.prepared),
        ballot_key(prepare.prepared_prime),
        prepare.n_h,
    )


def is_newer_nomination(old: Nomination, new: Nomination) -> bool:
    """True when `new`'s sets contain `old`'s and at least one of them grew."""
    old_votes, new_votes = set(old.votes), set(new.votes)
    old_accepted, new_accepted = set(old.accepted), set(new.accepted)
    if not (old_votes <= new_votes and old_accepted <= new_accepted):
        return False
    return len(new_votes) > len(old_votes) or len(new_accepted) > len(old_accepted)


def working_ballot(pledges: BallotPledges) -> Ballot:
    """The ballot a statement works on (stellar-core `getWorkingBallot`)."""
    if isinstance(pledges, Prepare):
        return pledges.ballot
    if isinstance(pledges, Confirm):
        return Ballot(pledges.n_commit, pledges.ballot.value)
    return pledges.commit


def ballot_counter(pledges: BallotPledges) -> int:
    """The counter a statement reports for timer and bump rules (EXTERNALIZE: infinite)."""
    if isinstance(pledges, Externalize):
        return INFINITE_COUNTER
    return pledges.ballot.counter


def statement_values(pledges: BallotPledges | Nomination) -> list[bytes]:
    """Every value a statement mentions (what the application must validate)."""
    if isinstance(pledges, Nomination):
        return list(dict.fromkeys(pledges.votes + pledges.accepted))
    if isinstance(pledges, Prepare):
        # our own PREPARE with counter 0 (nothing to vote for yet) carries no real value
        values = [pledges.ballot.value] if pledges.ballot.counter > 0 else []
        for extra in (pledges.prepared, pledges.prepared_prime):
            if extra is not None and extra.value not in values:
                values.append(extra.value)
        return values
    if isinstance(pledges, Confirm):
        return [pledges.ballot.value]
    return [pledges.commit.value]
