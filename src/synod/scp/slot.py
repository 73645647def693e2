"""One slot: nomination and ballot protocol side by side (draft section 3, table of
phases), the application's validity verdicts, and what the slot wants sent.

The two protocols call back into their slot for everything outside themselves: the
local quorum set, other nodes' quorum sets, value validation (cached per slot), timers,
and the events `Externalized`.  They see the slot only through the narrow views of
`synod.scp.slot_view` (`NominationSlot`, `BallotSlot`), which `Slot` satisfies.  The
slot gathers these into the `Step` that `ScpCore` is building for the current input.

A slot is *fully validated* while every value it has seen was judged `FULLY_VALID`.  A
`MAYBE_VALID` value (the application cannot yet tell) clears the flag: the node keeps
following the slot, and may externalize, but stops sending statements for it, as a
non-validating watcher would (stellar-core's rule, so a node never vouches for what it
could not check).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from synod.core import CancelTimer, SetTimer, Step
from synod.crypto import NodeId
from synod.quorum.qset import QuorumSet
from synod.scp.application import Application, Validity
from synod.scp.ballot import BallotProtocol, Phase
from synod.scp.messages import Externalize, Nomination, Statement, companion_quorum_set_hash
from synod.scp.nomination import NominationProtocol
from synod.scp.statements import statement_values

MAX_CACHED_VERDICTS: Final = 4096
"""Validity verdicts remembered per slot (beyond this, values are judged again)."""

NOMINATION_TIMER_PREFIX: Final = "scp/nominate/"
BALLOT_TIMER_PREFIX: Final = "scp/ballot/"


class Slot:
    """The agreement on one slot index."""

    def __init__(
        self,
        *,
        slot_index: int,
        node_id: NodeId,
        local_qset: QuorumSet,
        local_qset_hash: bytes,
        application: Application,
        qset_by_hash: Callable[[bytes], QuorumSet | None],
        started_ms: int,
        validator: bool = True,
    ) -> None:
        self.slot_index = slot_index
        self.node_id = node_id
        self.local_qset = local_qset
        self.local_qset_hash = local_qset_hash
        self.application = application
        self._qset_by_hash = qset_by_hash
        self.started_ms = started_ms
        self.validator = validator
        self.now_ms = started_ms
        self.step = Step()
        self.fully_validated = True
        self.externalized_value: bytes | None = None
        self._verdicts: dict[tuple[bytes, bool], Validity] = {}
        self._sent: dict[str, Statement] = {}
        self.nomination = NominationProtocol(self)
        self.ballot = BallotProtocol(self)

    # ------------------------------------------------------------ queries

    @property
    def latest_composite_candidate(self) -> bytes | None:
        return self.nomination.latest_composite

    @property
    def phase(self) -> Phase:
        return self.ballot.phase

    def qset_of(self, statement: Statement) -> QuorumSet | None:
        """The sender's quorum set; an EXTERNALIZE stands alone (a singleton set)."""
        if isinstance(statement.pledges, Externalize):
            return QuorumSet(threshold=1, validators=(statement.node_id,))
        return self._qset_by_hash(companion_quorum_set_hash(statement.pledges))

    def validate(self, value: bytes, *, nomination: bool) -> Validity:
        """The application's verdict on `value`, cached for the slot."""
        key = (value, nomination)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = Validity(self.application.validate_value(self.slot_index, value, nomination))
            # a MAYBE_VALID verdict may improve (the application learns more): ask again
            if verdict != Validity.MAYBE_VALID and len(self._verdicts) < MAX_CACHED_VERDICTS:
                self._verdicts[key] = verdict
        return verdict

    def seconds_on_slot(self) -> int:
        return max(0, self.now_ms - self.started_ms) // 1000

    def statement_validity(self, statement: Statement) -> Validity:
        """The lowest verdict over the values a statement carries."""
        nomination = isinstance(statement.pledges, Nomination)
        verdicts = [
            self.validate(value, nomination=nomination)
            for value in statement_values(statement.pledges)
        ]
        return min(verdicts, default=Validity.FULLY_VALID)

    # ------------------------------------------------------------ inputs

    def process(self, statement: Statement, *, from_self: bool = False) -> str | None:
        """Feed a (verified) statement to its protocol; returns a rejection or None."""
        validity = self.statement_validity(statement)
        if validity == Validity.INVALID:
            return "invalid_value"
        if isinstance(statement.pledges, Nomination):
            if not from_self and self.validator and not self.nomination.started:
                # join a nomination the network started even without a value of our
                # own (we lag, or the application proposes later): echoing and
                # accepting others' values is what lets their candidates confirm
                self.nominate(None)
            reason = self.nomination.process(statement, from_self=from_self)
        else:
            reason = self.ballot.process(statement, from_self=from_self)
        if reason is None and validity == Validity.MAYBE_VALID:
            self.fully_validated = False
        return reason

    def nominate(self, value: bytes | None, *, timed_out: bool = False) -> bool:
        """Propose `value` for this slot (or run the next round after a timeout)."""
        if self.externalized_value is not None:
            return False
        return self.nomination.nominate(value, timed_out=timed_out)

    def bump_state(self, value: bytes, *, force: bool) -> bool:
        return self.ballot.bump_state(value, force=force)

    def timer_fired(self, name: str) -> None:
        if name.startswith(NOMINATION_TIMER_PREFIX):
            self.nominate(None, timed_out=True)
        elif name.startswith(BALLOT_TIMER_PREFIX):
            self.ballot.timer_expired()

    # ------------------------------------------------------------ callbacks

    def confirmed_prepared(self) -> None:
        """Draft table of phases: NOMINATE ends once a ballot is confirmed prepared."""
        self.nomination.stop()

    def accepted_commit(self) -> None:
        """Hook for accept commit (nothing to do beyond the ballot state)."""

    def externalized(self, value: bytes) -> None:
        assert self.externalized_value is None or self.externalized_value == value
        if self.externalized_value is None:
            # the core hands out the `Externalized` event, in slot order
            self.externalized_value = value
            self.nomination.stop()
            self.cancel_ballot_timer()

    def set_nomination_timer(self, delay_ms: int) -> None:
        self.step.timers.append(SetTimer(self.nomination_timer_name, delay_ms))

    def cancel_nomination_timer(self) -> None:
        self.step.timers.append(CancelTimer(self.nomination_timer_name))

    def set_ballot_timer(self, delay_ms: int) -> None:
        self.step.timers.append(SetTimer(self.ballot_timer_name, delay_ms))

    def cancel_ballot_timer(self) -> None:
        self.step.timers.append(CancelTimer(self.ballot_timer_name))

    @property
    def nomination_timer_name(self) -> str:
        return f"{NOMINATION_TIMER_PREFIX}{self.slot_index}"

    @property
    def ballot_timer_name(self) -> str:
        return f"{BALLOT_TIMER_PREFIX}{self.slot_index}"

    # ------------------------------------------------------------ outputs

    def new_statements(self) -> list[Statement]:
        """Our newest statements not handed out yet (at most one per protocol)."""
        if not self.fully_validated:
            return []
        fresh: list[Statement] = []
        for kind, statement in (
            ("nomination", self.nomination.last_statement),
            ("ballot", self.ballot.last_statement),
        ):
            if statement is not None and self._sent.get(kind) != statement:
                self._sent[kind] = statement
                fresh.append(statement)
        return fresh

    def mark_sent(self, statement: Statement) -> None:
        """Record a restored statement as already sent (it was, before the crash)."""
        kind = "nomination" if isinstance(statement.pledges, Nomination) else "ballot"
        self._sent[kind] = statement

    def own_statements(self) -> list[Statement]:
        """Our latest statements of this slot (to re-send to peers that lag)."""
        return [
            statement
            for statement in (self.nomination.last_statement, self.ballot.last_statement)
            if statement is not None
        ]
