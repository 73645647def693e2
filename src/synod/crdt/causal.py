"""The hash DAG of applied updates, its reachability index, and the waiting buffer.

Theory of operation (Kleppmann, *Making CRDTs Byzantine Fault Tolerant*, PaPoC 2022,
sections 3 and 4): an update is delivered only once all its predecessors are delivered,
so a replica always holds a causally closed set of updates.  Validity of an update must
depend only on its causal past; the most common question is "was the element this
operation refers to created by one of my ancestors?".  `UpdateGraph.is_ancestor` answers
it exactly with a chain decomposition: each update extends the chain of one predecessor
that is still that chain's tip, or opens a new chain; an update's causal past is then the
prefix of every chain up to a position, recorded as a persistent map chain -> position
(`synod.crdt.positions`) that an update shares with its single predecessor on the same
chain, and that forks and merges extend by copying only the paths that change (never a
whole map: many chains, which one author can open cheaply, cost nothing per merge).
The answer does not depend on the order in which the replica received the updates,
only on the graph.

`WaitingBuffer` holds updates whose predecessors have not all arrived, as their encoded
bytes (decoded again when they are ready: a decoded update takes several times its
encoded size).  It is bounded in both count and bytes of memory, each entry counted
with its bookkeeping (`waiting_memory_bytes`); when a new update would exceed a bound,
the updates that have waited longest are evicted first (FIFO).  Eviction only forgets:
an evicted update is not marked invalid and is accepted if it arrives again
(reconciliation by heads fetches missing updates ancestors-first, so an honest peer's
updates rarely wait at all).  An update whose predecessors never arrive is never
applied.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from synod.crdt import positions
from synod.crdt.messages import ROOT_UPDATE

ROOT_ORDINAL = 0
"""The pseudo update that created the root map; an ancestor of every update."""


class UpdateGraph:
    """Applied updates, numbered 1, 2, ... in the (topological) order they were applied."""

    def __init__(self) -> None:
        self.ids: list[bytes] = [ROOT_UPDATE]
        self.clocks = array("Q", [0])
        self.sequences = array("Q", [0])
        self.authors: list[bytes] = [b""]
        self.ordinal_of: dict[bytes, int] = {ROOT_UPDATE: ROOT_ORDINAL}
        self.heads: set[int] = set()
        self._chain = array("q", [-1])
        self._position = array("q", [0])
        self._past: list[positions.Positions] = [positions.EMPTY]
        self._chain_tip: list[int] = []
        self._by_author_sequence: dict[tuple[bytes, int], int] = {}
        self._author_names: dict[bytes, bytes] = {}
        # Every update's predecessors, flat (8 bytes each), for snapshots.
        self._predecessor_flat = array("q")
        self._predecessor_ends = array("q", [0])

    def __len__(self) -> int:
        """Number of applied updates (the root does not count)."""
        return len(self.ids) - 1

    def __contains__(self, update_id: object) -> bool:
        return update_id in self.ordinal_of and update_id != ROOT_UPDATE

    def add(
        self, update_id: bytes, author: bytes, sequence: int, clock: int, predecessors: list[int]
    ) -> tuple[int, int | None]:
        """Record an applied update; returns its ordinal and an equivocating twin, if any.

        The twin is an earlier applied update by the same author with the same sequence
        number: both stay in the graph (each is a valid node of the DAG).
        """
        ordinal = len(self.ids)
        author = self._author_names.setdefault(author, author)  # one copy per author
        self.ids.append(update_id)
        self.clocks.append(clock)
        self.sequences.append(sequence)
        self.authors.append(author)
        self.ordinal_of[update_id] = ordinal
        self._predecessor_flat.extend(predecessors)
        self._predecessor_ends.append(len(self._predecessor_flat))
        self._index_chain(ordinal, predecessors)
        self.heads.difference_update(predecessors)
        self.heads.add(ordinal)
        twin = self._by_author_sequence.setdefault((author, sequence), ordinal)
        return ordinal, (twin if twin != ordinal else None)

    def _index_chain(self, ordinal: int, predecessors: list[int]) -> None:
        extended = next((p for p in predecessors if self._chain_tip[self._chain[p]] == p), None)
        if len(predecessors) == 1 and extended is not None:
            past = self._past[extended]
        else:
            past = positions.EMPTY
            for predecessor in predecessors:
                past = positions.union(past, self._past[predecessor])
                past = positions.raised(
                    past, self._chain[predecessor], self._position[predecessor]
                )
        if extended is None:
            self._chain.append(len(self._chain_tip))
            self._position.append(1)
            self._chain_tip.append(ordinal)
        else:
            chain = self._chain[extended]
            self._chain.append(chain)
            self._position.append(self._position[extended] + 1)
            self._chain_tip[chain] = ordinal
        self._past.append(past)

    def is_ancestor(self, ancestor: int, descendant: int) -> bool:
        """True when `ancestor` is `descendant` or in its causal past (exact)."""
        if ancestor in (ROOT_ORDINAL, descendant):
            return True
        if descendant == ROOT_ORDINAL:
            return False
        chain = self._chain[ancestor]
        if self._chain[descendant] == chain:
            return self._position[ancestor] <= self._position[descendant]
        return positions.get(self._past[descendant], chain) >= self._position[ancestor]

    def missing_from(self, known_heads: Iterable[int]) -> list[int]:
        """Applied updates that are not in the causal past of any of `known_heads`.

        Returned in application order, so ancestors come before descendants.
        """
        past = positions.EMPTY
        for head in known_heads:
            if head == ROOT_ORDINAL:
                continue
            past = positions.union(past, self._past[head])
            past = positions.raised(past, self._chain[head], self._position[head])
        covered = dict(positions.items(past))
        chains, position_of = self._chain, self._position
        return [
            ordinal
            for ordinal in range(1, len(self.ids))
            if position_of[ordinal] > covered.get(chains[ordinal], 0)
        ]

    def predecessors_of(self, ordinal: int) -> list[int]:
        """The ordinals `ordinal` names as predecessors (for snapshots)."""
        ends = self._predecessor_ends
        return self._predecessor_flat[ends[ordinal - 1] : ends[ordinal]].tolist()

    def head_ids(self) -> list[bytes]:
        """The current heads' ids, ascending (a canonical predecessor list)."""
        return sorted(self.ids[ordinal] for ordinal in self.heads)

    def chain_count(self) -> int:
        """How many chains the index uses (grows with the concurrency seen)."""
        return len(self._chain_tip)


WAITING_ENTRY_BYTES = 768
"""Memory of one held update besides its bytes: the `Waiting` object, its id and its
entry in the buffer's table, an empty set of missing ids (measured with tracemalloc on
CPython 3.11, rounded up)."""
WAITING_MISSING_BYTES = 352
"""Memory per missing predecessor: the id, its place in the entry's set and in the
buffer's reverse table (a set per missing id; measured likewise, rounded up)."""


def waiting_memory_bytes(encoded_bytes: int, missing: int) -> int:
    """What holding an update of `encoded_bytes` that misses `missing` ids costs."""
    return 33 + encoded_bytes + WAITING_ENTRY_BYTES + WAITING_MISSING_BYTES * missing


@dataclass(slots=True)
class Waiting:
    """An update held, encoded, until its missing predecessors are applied."""

    encoded: bytes
    author: bytes
    size_bytes: int
    missing: set[bytes]
    sender: bytes | None
    arrival: int = 0


@dataclass(slots=True)
class WaitingBuffer:
    """Bounded buffer of updates waiting for predecessors (FIFO eviction)."""

    max_updates: int = 10_000
    max_bytes: int = 32 * 1024 * 1024
    entries: dict[bytes, Waiting] = field(default_factory=dict)
    waiting_on: dict[bytes, set[bytes]] = field(default_factory=dict)
    total_bytes: int = 0
    arrivals: int = 0

    def __contains__(self, update_id: object) -> bool:
        return update_id in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, update_id: bytes, waiting: Waiting) -> list[bytes]:
        """Hold `waiting`; returns the ids evicted to stay within the bounds.

        An update larger than the whole byte bound is not held (returned as evicted).
        """
        if waiting.size_bytes > self.max_bytes or self.max_updates == 0:
            return [update_id]
        evicted: list[bytes] = []
        while self.entries and (
            len(self.entries) + 1 > self.max_updates
            or self.total_bytes + waiting.size_bytes > self.max_bytes
        ):
            oldest = next(iter(self.entries))
            self.remove(oldest)
            evicted.append(oldest)
        self.arrivals += 1
        waiting.arrival = self.arrivals
        self.entries[update_id] = waiting
        self.total_bytes += waiting.size_bytes
        for missing in waiting.missing:
            self.waiting_on.setdefault(missing, set()).add(update_id)
        return evicted

    def remove(self, update_id: bytes) -> Waiting | None:
        """Forget a held update (evicted, rejected or ready)."""
        waiting = self.entries.pop(update_id, None)
        if waiting is None:
            return None
        self.total_bytes -= waiting.size_bytes
        for missing in waiting.missing:
            dependants = self.waiting_on.get(missing)
            if dependants is not None:
                dependants.discard(update_id)
                if not dependants:
                    del self.waiting_on[missing]
        return waiting

    def arrived(self, update_id: bytes) -> list[bytes]:
        """`update_id` was applied: the held updates that now miss nothing, in arrival order."""
        dependants = self.waiting_on.pop(update_id, set())
        ready = []
        for dependant in dependants:
            waiting = self.entries[dependant]
            waiting.missing.discard(update_id)
            if not waiting.missing:
                ready.append(dependant)
        ready.sort(key=lambda key: self.entries[key].arrival)
        return ready

    def dependants_of(self, update_id: bytes) -> list[bytes]:
        """Held updates that name `update_id` as a missing predecessor."""
        return sorted(self.waiting_on.get(update_id, ()))

    def missing_ids(self) -> set[bytes]:
        """Every predecessor some held update is waiting for (not itself held)."""
        return {key for key in self.waiting_on if key not in self.entries}
