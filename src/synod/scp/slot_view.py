"""What the two protocols of a slot may ask of the slot (draft section 3: nomination
and the ballot protocol run side by side on one slot).

A `synod.scp.slot.Slot` owns a `NominationProtocol` and a `BallotProtocol` and hands
itself to each.  Each protocol sees the slot only through the narrow view below, so
neither protocol module imports the slot module: the slot knows both protocols, the
protocols know only these interfaces, and the imports inside `synod.scp` form no cycle
(`tests/scp/test_import_cycles.py` checks it).
"""

from __future__ import annotations

from typing import Protocol

from synod.crypto import NodeId
from synod.quorum.qset import QuorumSet
from synod.scp.application import Application, Validity
from synod.scp.leaders import LeaderRule
from synod.scp.messages import Statement


class SlotContext(Protocol):
    """What both protocols read: the slot, the local node and its quorum set, other
    nodes' quorum sets and the application."""

    @property
    def slot_index(self) -> int: ...

    @property
    def node_id(self) -> NodeId: ...

    @property
    def local_qset(self) -> QuorumSet: ...

    @property
    def local_qset_hash(self) -> bytes: ...

    @property
    def application(self) -> Application: ...

    def qset_of(self, statement: Statement) -> QuorumSet | None:
        """The quorum set of the statement's sender, or None while it is unknown."""
        ...


class NominationSlot(SlotContext, Protocol):
    """The slot as nomination sees it: validity verdicts, the ballot protocol to start
    on a composite value, and the nomination timer."""

    def validate(self, value: bytes, *, nomination: bool) -> Validity:
        """The application's verdict on `value` (cached by the slot)."""
        ...

    @property
    def leader_rule(self) -> LeaderRule | None:
        """stellar-core's rule (or an application's); None: the draft's formulas."""
        ...

    def previous_value(self) -> bytes:
        """What the slot before this one externalized (b"" when nobody can tell)."""
        ...

    def bump_state(self, value: bytes, *, force: bool) -> bool:
        """Start (or move) balloting on `value`; True if the ballot changed."""
        ...

    def set_nomination_timer(self, delay_ms: int) -> None: ...

    def cancel_nomination_timer(self) -> None: ...


class BallotSlot(SlotContext, Protocol):
    """The slot as the ballot protocol sees it: nomination's latest composite value,
    time on the slot, the ballot timer, and the phase changes it reports."""

    @property
    def latest_composite_candidate(self) -> bytes | None: ...

    def seconds_on_slot(self) -> int: ...

    def set_ballot_timer(self, delay_ms: int) -> None: ...

    def cancel_ballot_timer(self) -> None: ...

    def confirmed_prepared(self) -> None:
        """A ballot is confirmed prepared: nomination ends (draft table of phases)."""
        ...

    def accepted_commit(self) -> None:
        """A commit was accepted."""
        ...

    def externalized(self, value: bytes) -> None:
        """The slot decided `value`."""
        ...
