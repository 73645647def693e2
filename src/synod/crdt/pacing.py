"""Byte budgets that pace what a replica sends in answer to peers' requests.

Theory of operation: answering `Heads` or `Want` costs this replica bytes out (and the
CPU to encode and send them) for a few bytes in; an empty announcement asks for the
whole history.  Each answer is cut to what the budgets allow *now*, ancestors first, so
what is sent applies at the peer and the rest follows at the peer's next announcement
(Kleppmann and Howard 2020, section 4, answered in slices).  A budget is a token bucket
counted in bytes: it holds at most `capacity` bytes and earns `bytes_per_second` (in
whole bytes per millisecond of the time the caller passes in; the core reads no clock).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ByteBudget:
    """A token bucket of bytes (`capacity` 0: no limit)."""

    capacity: int
    bytes_per_second: int
    tokens: int = -1
    since_ms: int = 0

    def available(self, now_ms: int) -> int:
        """Bytes that may be spent now (refilled up to `now_ms`)."""
        if self.capacity <= 0:
            return 1 << 62
        if self.tokens < 0:
            self.tokens, self.since_ms = self.capacity, now_ms
        elapsed_ms = max(0, now_ms - self.since_ms)
        earned = elapsed_ms * self.bytes_per_second // 1000
        if earned:
            self.tokens = min(self.capacity, self.tokens + earned)
            self.since_ms = now_ms
        return self.tokens

    def spend(self, amount: int) -> None:
        """Take `amount` bytes (at most what `available` returned)."""
        if self.capacity > 0:
            self.tokens = max(0, self.tokens - amount)
