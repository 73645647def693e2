"""The application of a synod network in Stellar mode: a chain of ``StellarValue``s.

Each slot decides one ``StellarValue`` (transaction-set hash, close time, upgrades), the
value stellar-core's ledgers close on.  A synod network in Stellar mode carries no
transactions, so the rules are stellar-core's for what a value may say about time, with
an empty transaction set:

- the XDR must be a well-formed ``StellarValue`` of type ``STELLAR_VALUE_BASIC`` with no
  upgrades and the empty transaction set's hash (anything else names contents this
  network cannot fetch or apply: INVALID);
- its close time must be later than the previous slot's (stellar-core's
  ``closeTime > lastCloseTime``), and a nominated value's at most
  `MAX_TIME_SLIP_S` ahead of this node's wall clock (stellar-core's
  ``MAX_TIME_SLIP_SECONDS``), so a Byzantine leader cannot push the chain's time far
  into the future;
- when the previous slot's value is unknown (this node is behind), the value cannot be
  judged yet: MAYBE_VALID, as stellar-core answers.

Candidates combine to the one with the latest close time (ties: the largest XDR), as
stellar-core's combination keeps the highest close time.  `previous_value` hands the
leader rule the previous slot's value, so leaders follow stellar-core's schedule.

The wall clock arrives as a callable (this package reads no clock); decided values
arrive through `record`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

from stellar_sdk import xdr

from synod.scp.application import Application, Validity
from synod.stellar.state import EMPTY_TX_SET_HASH

MAX_TIME_SLIP_S: Final = 60
"""How far ahead of this node's clock a nominated close time may be (stellar-core's
MAX_TIME_SLIP_SECONDS)."""
MAX_VALUE_BYTES: Final = 128
"""A basic StellarValue with no upgrades is 48 bytes; anything much larger is not one."""
REMEMBERED_SLOTS: Final = 64
"""Decided values kept for validation and leader selection: the previous slot is what
the rules read; a few more cover slots decided out of order during catch-up."""


def close_time_of(value: bytes) -> int | None:
    """The close time of a basic StellarValue this network accepts, or None."""
    if len(value) > MAX_VALUE_BYTES:
        return None
    try:
        parsed = xdr.StellarValue.from_xdr_bytes(value)
    except Exception:  # the SDK raises several types on malformed XDR
        return None
    if bytes(parsed.to_xdr_bytes()) != value:
        return None  # not canonical: trailing bytes or padding
    if parsed.ext.v != xdr.StellarValueType.STELLAR_VALUE_BASIC or parsed.upgrades:
        return None
    if parsed.tx_set_hash.hash != EMPTY_TX_SET_HASH:
        return None
    return int(parsed.close_time.time_point.uint64)


class LedgerApplication(Application):
    """Validates and combines ``StellarValue``s as described in the module doc."""

    def __init__(
        self,
        wall_clock_s: Callable[[], float],
        decided: Mapping[int, bytes] | None = None,
        *,
        nomination_timeout_ms: int = 1000,
        ballot_timeout_ms: int = 1000,
    ) -> None:
        self._wall_clock_s = wall_clock_s
        self._decided: dict[int, bytes] = {}
        self._nomination_timeout_ms = nomination_timeout_ms
        self._ballot_timeout_ms = ballot_timeout_ms
        for slot_index in sorted(decided or {})[-REMEMBERED_SLOTS:]:
            self._decided[slot_index] = (decided or {})[slot_index]

    def record(self, slot_index: int, value: bytes) -> None:
        """A slot was decided: the next slot's rules read it."""
        self._decided[slot_index] = value
        while len(self._decided) > REMEMBERED_SLOTS:
            del self._decided[min(self._decided)]

    @property
    def last_decided(self) -> tuple[int, bytes] | None:
        """The latest decided slot and its value, if any."""
        if not self._decided:
            return None
        slot_index = max(self._decided)
        return slot_index, self._decided[slot_index]

    def validate_value(self, slot_index: int, value: bytes, nomination: bool) -> Validity:
        close_time = close_time_of(value)
        if close_time is None:
            return Validity.INVALID
        if nomination and close_time > self._wall_clock_s() + MAX_TIME_SLIP_S:
            return Validity.INVALID
        if slot_index == 1:
            return Validity.FULLY_VALID
        previous = self._decided.get(slot_index - 1)
        if previous is None:
            return Validity.MAYBE_VALID
        previous_close = close_time_of(previous)
        if previous_close is not None and close_time <= previous_close:
            return Validity.INVALID
        return Validity.FULLY_VALID

    def combine_candidates(self, slot_index: int, candidates: Sequence[bytes]) -> bytes:
        return max(candidates, key=lambda value: (close_time_of(value) or -1, value))

    def previous_value(self, slot_index: int) -> bytes | None:
        return self._decided.get(slot_index - 1)

    def nomination_timeout_ms(self, round_number: int) -> int:
        return (1 + round_number) * self._nomination_timeout_ms

    def ballot_timeout_ms(self, counter: int) -> int:
        return (1 + counter) * self._ballot_timeout_ms
