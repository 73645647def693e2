"""What one remote host may make a process hold: connection slots, buffered bytes, turns.

Theory of operation.  Every listener of synod (the peer transport, the request/response
server, the relayer) faces outsiders with no key who can open connections from one host,
hold them, send partial frames and never read replies.  Three budgets, each counted in
what it protects and each fair between source hosts (the IP address a connection comes
from: one machine can have many ports but, without spoofing, few addresses):

- `ConnectionSlots`: at most `per_host` connections from one host and `total` in all.
  When every slot is taken, a newcomer from a host that holds fewer slots than the
  busiest host takes the least recently active slot of that busiest host (stellar-core's
  overlay makes room the same way), so a host holding thousands of sockets cannot lock
  everyone else out; a newcomer from the busiest host itself is refused.
- `ByteBudget`: bytes reserved for frames that are being received (or replies not yet
  read), at most `per_host` for one host and `total` for the process.  A frame's length
  is known from its header before its body is read, so the reservation happens before a
  byte of the body is buffered; a connection whose reservation fails is closed.
- `FairQueue`: inputs waiting for one worker, served by deficit round robin between
  sources, each source's share counted in bytes of input (the cost that the work grows
  with), so a source that sends large or many requests waits for its own turn and no one
  else's; each source also has its own bound of queued items and bytes, and a full source
  pushes back on itself only.

All three are plain synchronous data structures: the asyncio code that uses them lives in
`rpc.py`, `transport.py`, `relay.py` and `host.py`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

_Source = TypeVar("_Source", bound=Hashable)
_Item = TypeVar("_Item")


@dataclass(slots=True, eq=False)
class Slot:
    """One admitted connection: its host, how to close it, when it was last active."""

    host: str
    close: Callable[[], None]
    last_active: float


class ConnectionSlots:
    """Connection slots, at most `per_host` per host and `total` in all (see module doc)."""

    def __init__(self, *, total: int, per_host: int) -> None:
        if per_host < 1 or total < 1:
            raise ValueError(f"budgets must be positive: total {total}, per host {per_host}")
        self.total = total
        self.per_host = min(per_host, total)
        self._by_host: dict[str, list[Slot]] = {}
        self._count = 0
        self.refused = 0
        self.evicted = 0

    def __len__(self) -> int:
        return self._count

    def held_by(self, host: str) -> int:
        return len(self._by_host.get(host, ()))

    def admit(self, host: str, close: Callable[[], None], now: float) -> Slot | None:
        """A slot for a new connection from `host`, or None (refused, counted).

        May close another host's least recently active connection to make room.
        """
        if self.held_by(host) >= self.per_host:
            self.refused += 1
            return None
        if self._count >= self.total and not self._evict_for(host):
            self.refused += 1
            return None
        slot = Slot(host, close, now)
        self._by_host.setdefault(host, []).append(slot)
        self._count += 1
        return slot

    def _evict_for(self, host: str) -> bool:
        busiest = max(self._by_host, key=lambda other: len(self._by_host[other]))
        if len(self._by_host[busiest]) <= self.held_by(host) + 1:
            return False
        victim = min(self._by_host[busiest], key=lambda slot: slot.last_active)
        self.release(victim)
        self.evicted += 1
        victim.close()
        return True

    def release(self, slot: Slot) -> None:
        """Give a slot back (idempotent)."""
        slots = self._by_host.get(slot.host)
        if slots is None or slot not in slots:
            return
        slots.remove(slot)
        self._count -= 1
        if not slots:
            del self._by_host[slot.host]


class ByteBudget:
    """Bytes held on behalf of remote hosts: `per_host` each, `total` in all."""

    def __init__(self, *, total: int, per_host: int) -> None:
        if per_host < 1 or total < 1:
            raise ValueError(f"budgets must be positive: total {total}, per host {per_host}")
        self.total = total
        self.per_host = min(per_host, total)
        self.used = 0
        self._by_host: dict[str, int] = {}
        self.refused = 0

    def used_by(self, host: str) -> int:
        return self._by_host.get(host, 0)

    def reserve(self, host: str, size: int) -> bool:
        """Hold `size` bytes for `host`; False (counted) when either bound would be passed."""
        if size < 0:
            raise ValueError("negative reservation")
        held = self.used_by(host)
        if held + size > self.per_host or self.used + size > self.total:
            self.refused += 1
            return False
        self._by_host[host] = held + size
        self.used += size
        return True

    def release(self, host: str, size: int) -> None:
        held = self.used_by(host)
        if size > held:
            raise ValueError(f"releasing {size} bytes for {host}, which holds {held}")
        self.used -= size
        if held == size:
            del self._by_host[host]
        else:
            self._by_host[host] = held - size


@dataclass(slots=True)
class _SourceQueue(Generic[_Item]):
    items: deque[tuple[_Item, int]] = field(default_factory=deque)
    queued_bytes: int = 0
    deficit: int = 0


class FairQueue(Generic[_Source, _Item]):
    """Deficit round robin between sources, costs in bytes (see module doc).

    `put` never blocks; callers ask `has_room(source)` first and wait for `room_changed`
    to be called back (the host turns it into an asyncio event) when a source is full.
    """

    def __init__(
        self,
        *,
        quantum_bytes: int = 64 * 1024,
        per_source_items: int = 1_024,
        per_source_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        if quantum_bytes < 1 or per_source_items < 1 or per_source_bytes < 1:
            raise ValueError("fair queue bounds must be positive")
        self.quantum_bytes = quantum_bytes
        self.per_source_items = per_source_items
        self.per_source_bytes = per_source_bytes
        self._sources: OrderedDict[_Source, _SourceQueue[_Item]] = OrderedDict()
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def has_room(self, source: _Source, cost_bytes: int = 1) -> bool:
        """Whether `source` may queue an item of `cost_bytes` within its bounds (an item
        of any size fits a source that has nothing queued)."""
        queue = self._sources.get(source)
        return queue is None or (
            len(queue.items) < self.per_source_items
            and queue.queued_bytes + max(1, cost_bytes) <= self.per_source_bytes
        )

    def put(self, source: _Source, item: _Item, cost_bytes: int) -> None:
        """Queue `item`; its cost is at least 1 byte (an empty request still costs a turn)."""
        queue = self._sources.get(source)
        if queue is None:
            queue = self._sources[source] = _SourceQueue()
        cost = max(1, cost_bytes)
        queue.items.append((item, cost))
        queue.queued_bytes += cost
        self._length += 1

    def take(self, limit: int) -> list[_Item]:
        """Up to `limit` items, each source served in turn by its deficit."""
        taken: list[_Item] = []
        while self._sources and len(taken) < limit:
            source, queue = next(iter(self._sources.items()))
            queue.deficit += self.quantum_bytes
            while queue.items and queue.items[0][1] <= queue.deficit and len(taken) < limit:
                item, cost = queue.items.popleft()
                queue.deficit -= cost
                queue.queued_bytes -= cost
                self._length -= 1
                taken.append(item)
            if not queue.items:
                del self._sources[source]  # an idle source keeps no credit
            else:
                self._sources.move_to_end(source)
        return taken
