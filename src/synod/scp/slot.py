"""One slot: nomination and ballot protocol side by side (draft section 3, table of
phases), the application's validity verdicts, and what the slot wants sent.

The two protocols call back into their slot for everything outside themselves: the
local quorum set, other nodes' quorum sets, value validation (cached per slot), timers,
and the events `Externalized`.  They see the slot only through the narrow views of
`synod.scp.slot_view` (`NominationSlot`, `BallotSlot`), which `Slot` satisfies.  The
slot gathers these into the `Step` that `ScpCore` is building for the current input.

Validity.  A NOMINATE is recorded whatever its values (stellar-core records the
statement and ignores only the values it cannot vote for): nomination votes for and
accepts `FULLY_VALID` values only, so an `INVALID` or `MAYBE_VALID` value in a peer's
nomination costs the node nothing but the verdict.  A ballot statement carrying an
`INVALID` value is dropped; one carrying a `MAYBE_VALID` value is recorded.

A slot is *fully validated* while every value in the node's own latest statements is
judged `FULLY_VALID` now.  Only then does the node send its statements for the slot: a
node never vouches for what it could not check (stellar-core's rule), but a peer cannot
mute it by merely mentioning a `MAYBE_VALID` value, and a value the application later
judges `FULLY_VALID` unmutes it (only `FULLY_VALID` verdicts are cached, so `INVALID`
and `MAYBE_VALID` ones are asked again: a value whose time has not come yet, such as a
timestamp slightly in the future, is accepted once it has).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from synod.core import CancelTimer, SetTimer, Step
from synod.crypto import NodeId
from synod.quorum.qset import QuorumSet
from synod.scp.application import Application, Validity
from synod.scp.ballot import BallotProtocol, Phase
from synod.scp.leaders import LeaderRule
from synod.scp.messages import Externalize, Nomination, Statement, companion_quorum_set_hash
from synod.scp.nomination import NominationProtocol
from synod.scp.statements import statement_values

MAX_CACHED_VERDICTS: Final = 4096
"""`FULLY_VALID` verdicts remembered per slot (beyond this, values are judged again)."""

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
        leader_rule: LeaderRule | None = None,
        previous_value: Callable[[], bytes] = bytes,
    ) -> None:
        self.slot_index = slot_index
        self.node_id = node_id
        self.local_qset = local_qset
        self.local_qset_hash = local_qset_hash
        self.application = application
        self._qset_by_hash = qset_by_hash
        self.started_ms = started_ms
        self.validator = validator
        self.leader_rule = leader_rule
        self._previous_value = previous_value
        self.now_ms = started_ms
        self.step = Step()
        self.externalized_value: bytes | None = None
        self._verdicts: dict[tuple[bytes, bool], Validity] = {}
        self._fully_validated_own: tuple[Statement, ...] = ()
        """Our latest statements when every value in them was last found FULLY_VALID (a
        verdict that is cached for the slot, so it cannot change while they stay ours)."""
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
        """The application's verdict on `value`; a `FULLY_VALID` one is cached for the
        slot, the others are asked again (the application may learn more: the previous
        slot, or a clock that reaches a value's timestamp)."""
        key = (value, nomination)
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = Validity(self.application.validate_value(self.slot_index, value, nomination))
            if verdict == Validity.FULLY_VALID and len(self._verdicts) < MAX_CACHED_VERDICTS:
                self._verdicts[key] = verdict
        return verdict

    @property
    def fully_validated(self) -> bool:
        """Every value of our own latest statements is `FULLY_VALID` now: only then do
        we send (or re-send) our statements of this slot."""
        own = tuple(self.own_statements())
        if own and own == self._fully_validated_own:
            return True  # asked on every input: skip re-judging statements already judged
        validated = all(
            self.validate(value, nomination=isinstance(statement.pledges, Nomination))
            == Validity.FULLY_VALID
            for statement in own
            for value in statement_values(statement.pledges)
        )
        if validated:
            self._fully_validated_own = own
        return validated

    def previous_value(self) -> bytes:
        return self._previous_value()

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
        if isinstance(statement.pledges, Nomination):
            # recorded whatever its values: nomination judges each value where it
            # would vote for or accept it, so one bad value cannot hide the others
            if not from_self and self.validator and not self.nomination.started:
                # join a nomination the network started even without a value of our
                # own (we lag, or the application proposes later): echoing and
                # accepting others' values is what lets their candidates confirm
                self.nominate(None)
            return self.nomination.process(statement, from_self=from_self)
        if self.statement_validity(statement) == Validity.INVALID:
            return "invalid_value"
        return self.ballot.process(statement, from_self=from_self)

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
