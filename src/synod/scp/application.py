"""What an application plugs into SCP, and what SCP tells it.

SCP agrees on opaque byte strings, one per slot.  The application decides what the
bytes mean through four hooks (draft section 3.4 and 3.6; stellar-core `SCPDriver`):

* `validate_value(slot_index, value, nomination)`: `Validity.FULLY_VALID`,
  `MAYBE_VALID` (cannot tell yet, for example the previous slot is not known; the node
  keeps following the slot but stops sending statements for it) or `INVALID` (the
  statement carrying it is dropped).  Validity must not depend on state that can
  permanently differ between honest nodes.
* `combine_candidates(slot_index, candidates)`: one value from the confirmed
  nominated ones; deterministic, so all nodes compute the same composite.
* `extract_valid_value(slot_index, value)`: a valid variation of a value that is not
  fully valid (or None), voted for instead of it during nomination.
* `nomination_timeout_ms(round_number)` and `ballot_timeout_ms(counter)`: the timeout
  policy; the draft's defaults are 1 + n seconds for both.

The application proposes values with `synod.core.Proposed` and receives
`Externalized(slot_index, value)` events, in slot order, every slot once: a slot
decided before an earlier one waits for it, and a slot the node missed (it was down or
cut off) is fetched from peers with a proof and delivered in its turn.  When no peer
holds a missed slot any more, the node says so with `SlotsUnavailable` and asks peers
for a checkpoint: a state that nodes forming one of its slices attested (`ScpCore.attest`
every `checkpoint_interval` slots), which `checkpoint_state` supplies on one side and
`checkpoint_matches` checks on the other; a verified one arrives as `CheckpointVerified`,
the application installs it and calls `ScpCore.advance_to`.  No slot is ever skipped
silently.  Subclass `Application` and override what you need.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Validity(enum.IntEnum):
    """How much the application trusts a value; ordered so min() combines them."""

    INVALID = 0
    MAYBE_VALID = 1
    FULLY_VALID = 2


class Application:
    """Default hooks: every value valid, the largest candidate wins, draft timeouts."""

    def validate_value(self, slot_index: int, value: bytes, nomination: bool) -> Validity:
        """Judge `value` for `slot_index` (`nomination` is True while nominating)."""
        return Validity.FULLY_VALID

    def combine_candidates(self, slot_index: int, candidates: Sequence[bytes]) -> bytes:
        """Combine the confirmed nominated values (sorted, non-empty) into one."""
        return max(candidates)

    def extract_valid_value(self, slot_index: int, value: bytes) -> bytes | None:
        """A fully valid value derived from `value`, or None."""
        return None

    def previous_value(self, slot_index: int) -> bytes | None:
        """The value slot `slot_index - 1` decided, when the node no longer holds it
        (the first slot, or after `advance_to`): stellar-core's leader rule hashes it.
        None: unknown (hashed as the empty value)."""
        return None

    def checkpoint_state(self, first_slot_index: int, slot_index: int) -> bytes | None:
        """The state to send a node whose first missing slot is `first_slot_index`, as
        of slot `slot_index` (a slot this node attested with `ScpCore.attest`), at most
        `MAX_CHECKPOINT_STATE_BYTES`; None: this application serves no checkpoints."""
        return None

    def checkpoint_matches(
        self, first_slot_index: int, slot_index: int, digest: bytes, state: bytes
    ) -> bool:
        """Whether `state`, sent for a node whose first missing slot is
        `first_slot_index`, is the state after slot `slot_index` whose digest a quorum
        attested as `digest`.  Called only once the attestations hold; the sender may
        still be Byzantine (attestations are public), so check every byte."""
        return False

    def nomination_timeout_ms(self, round_number: int) -> int:
        """How long nomination round `round_number` (1, 2, ...) lasts."""
        return (1 + round_number) * 1000

    def ballot_timeout_ms(self, counter: int) -> int:
        """How long to wait on ballot `counter` once a quorum has reached it."""
        return (1 + counter) * 1000


@dataclass(frozen=True, slots=True)
class Externalized:
    """SCP decided `value` for slot `slot_index`."""

    slot_index: int
    value: bytes


@dataclass(frozen=True, slots=True)
class SlotProposal:
    """A value for a specific slot (`Proposed(SlotProposal(...))`); a bare `bytes`
    proposal targets the next slot this node has not externalized."""

    slot_index: int
    value: bytes


@dataclass(frozen=True, slots=True)
class SlotsUnavailable:
    """A peer no longer holds the decisions from slot `first_slot_index` on: the oldest
    it holds is that of `available_from_slot_index`.  The node cannot deliver slots
    `first_slot_index` .. `available_from_slot_index - 1` from decisions; later slots
    wait for them.  The node asks its peers for a checkpoint (`CheckpointVerified`
    follows when one proves itself); an application that serves none installs its
    state as of slot `available_from_slot_index - 1`, obtained and verified by its own
    means, and calls `ScpCore.advance_to(available_from_slot_index)`.  One peer's word
    proves nothing: the node keeps asking every peer meanwhile."""

    first_slot_index: int
    available_from_slot_index: int


@dataclass(frozen=True, slots=True)
class CheckpointVerified:
    """A checkpoint for a node whose first missing slot is `first_slot_index`: `state`
    as of slot `slot_index`, whose digest a quorum of the local node's quorum set
    attested and which `Application.checkpoint_matches` accepted.  The application
    installs it (durably, in the same step where it can) and then calls
    `ScpCore.advance_to(slot_index + 1)`; the node then catches up by decisions."""

    first_slot_index: int
    slot_index: int
    digest: bytes
    state: bytes
