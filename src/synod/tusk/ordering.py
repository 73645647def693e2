"""The Tusk commit rule over a round-based DAG of certificates.

Narwhal & Tusk, the Tusk protocol, in the form of Narwhal's implementation: a leader
every second round, committed with f+1 support in the next round, no extra messages.

Leader rule (every core computes it identically, without randomness):
    the leader of even round r is `members[(r // 2) % len(members)]`, members in the
    committee's canonical order (by node id); odd rounds have no leader.
Round-robin replaces the paper's common coin: it is deterministic, so an adversary who
controls the network can delay each leader in turn (Tusk's asynchronous liveness needs
the coin; safety does not depend on the rule at all).  The rule lives in `leader_of`.

Commit rule.  When a certificate of round r+1 is added and r is an even round above
the last committed leader round, the leader certificate of round r (if present) is
committed once certificates of round r+1 referencing it weigh at least the validity
threshold (f+1).  Why that is safe: every certificate of round r+2 references a quorum
(2f+1) of round r+1, which meets those f+1 supporters, and each (creator, round) has at
most one certificate; so every certificate from round r+2 on has a path to the leader.
Hence any later leader committed by any core reaches it, and all cores agree.

Before a newly committed leader, the earlier uncommitted leaders linked to it by paths
are ordered first: walk back two rounds at a time down to the last committed round,
keeping a leader when the current one has a path to it (then continuing from it).

Delivery.  Each committed leader delivers its causal history not yet delivered, down
to `gc_depth` rounds below the leader, sorted by (round, creator id); that order is a
pure function of the DAG below the leader, so every core produces the same sequence.
The causal history follows parents and weak parents (DAG-Rider's weak links: older
certificates a header names so that blocks nobody took as a parent still get
delivered); paths between leaders, and the support of a leader, use parents only.

Garbage collection: vertices of rounds below `last committed round - gc_depth` are
dropped; no later leader's delivery reaches that deep.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from synod.crypto import NodeId
from synod.quorum.committee import Committee


@dataclass(frozen=True, slots=True)
class Vertex:
    """A certificate as the commit rule sees it."""

    digest: bytes
    round: int
    creator: NodeId
    parents: tuple[bytes, ...]
    weak_parents: tuple[tuple[int, bytes], ...] = ()
    """(round, digest) of older certificates referenced besides the parents."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The commit state right after leader `leader_round` was delivered: positions
    0..`next_sequence` - 1 are committed, and `delivered` lists (round, digest) of the
    delivered vertices of rounds `floor_round` and above, by round then digest."""

    leader_round: int
    next_sequence: int
    floor_round: int
    delivered: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Ordered:
    """One vertex delivered at position `sequence`, as part of leader `leader_round`."""

    sequence: int
    leader_round: int
    vertex: Vertex


def leader_of(round_number: int, members: Sequence[NodeId]) -> NodeId:
    """The leader of even round `round_number` (round-robin over the canonical order)."""
    if round_number % 2 != 0 or round_number < 2:
        raise ValueError(f"round {round_number} has no leader (leaders are in even rounds)")
    return members[(round_number // 2) % len(members)]


@dataclass(slots=True)
class Dag:
    """Certified vertices by round and creator, and by digest."""

    by_round: dict[int, dict[NodeId, Vertex]] = field(default_factory=dict)
    by_digest: dict[bytes, Vertex] = field(default_factory=dict)

    def add(self, vertex: Vertex) -> None:
        """Insert a vertex (its slot must be free: one certificate per creator and round)."""
        slot = self.by_round.setdefault(vertex.round, {})
        assert vertex.creator not in slot, "one certificate per creator and round"
        slot[vertex.creator] = vertex
        self.by_digest[vertex.digest] = vertex

    def get(self, digest: bytes) -> Vertex | None:
        return self.by_digest.get(digest)

    def at(self, round_number: int) -> Mapping[NodeId, Vertex]:
        """The vertices of one round, by creator."""
        return self.by_round.get(round_number, {})

    def rounds(self) -> Iterator[int]:
        return iter(sorted(self.by_round))

    def prune_below(self, round_number: int) -> list[Vertex]:
        """Drop every vertex of a round below `round_number`; returns what was dropped."""
        dropped: list[Vertex] = []
        for old_round in [r for r in self.by_round if r < round_number]:
            for vertex in self.by_round.pop(old_round).values():
                del self.by_digest[vertex.digest]
                dropped.append(vertex)
        return dropped


def has_path(dag: Dag, source: Vertex, target: Vertex) -> bool:
    """True when `target` is reachable from `source` through parent links in `dag`."""
    if source.round < target.round:
        return False
    frontier = {source.digest}
    for round_number in range(source.round, target.round, -1):
        next_frontier: set[bytes] = set()
        for digest in frontier:
            vertex = dag.get(digest)
            if vertex is not None and vertex.round == round_number:
                next_frontier.update(vertex.parents)
        frontier = next_frontier
        if not frontier:
            return False
    return target.digest in frontier


def support_weight(dag: Dag, committee: Committee, leader: Vertex) -> int:
    """Weight of the creators of round `leader.round + 1` vertices referencing `leader`."""
    return committee.weight_of(
        vertex.creator
        for vertex in dag.at(leader.round + 1).values()
        if leader.digest in vertex.parents
    )


def causal_history(
    dag: Dag, leader: Vertex, lowest_round: int, skip: Container[bytes]
) -> list[Vertex]:
    """Vertices reachable from `leader` (itself included), of round >= `lowest_round`,
    not in `skip`, in delivery order: by round, then creator id."""
    found: dict[bytes, Vertex] = {}
    stack = [leader]
    while stack:
        vertex = stack.pop()
        if vertex.digest in found or vertex.digest in skip or vertex.round < lowest_round:
            continue
        found[vertex.digest] = vertex
        for parent_digest in vertex.parents:
            parent = dag.get(parent_digest)
            if parent is not None:
                stack.append(parent)
        for weak_round, weak_digest in vertex.weak_parents:
            # Decided by the stated round, not by what this core still holds: every core
            # holds every vertex at or above `lowest_round` (the caller's collection floor
            # is below it), so all of them follow the same links.
            weak = dag.get(weak_digest) if weak_round >= lowest_round else None
            if weak is not None:
                stack.append(weak)
    return sorted(found.values(), key=lambda vertex: (vertex.round, vertex.creator))


class TuskOrdering:
    """The commit state of one core: which leaders and vertices are already delivered."""

    def __init__(
        self, committee: Committee, *, gc_depth: int, checkpoint_rounds: int = 0
    ) -> None:
        if gc_depth < 2:
            raise ValueError("gc_depth must be at least 2 rounds")
        self.committee = committee
        self._members = tuple(committee.members)
        self.gc_depth = gc_depth
        self.checkpoint_rounds = checkpoint_rounds
        """A `Snapshot` is taken after each delivered leader whose round reaches a new
        multiple of this (0: none).  Which leaders are delivered is the same on every
        core, so every core snapshots at the same positions."""
        self.snapshots: list[Snapshot] = []
        """Snapshots taken by `vertex_added` calls, for the caller to take away."""
        self.last_committed_round = 0
        self.next_sequence = 0
        self._delivered: dict[bytes, int] = {}  # digest -> round, for rounds >= gc_round

    @property
    def gc_round(self) -> int:
        """Vertices below this round are garbage: no future delivery reaches them."""
        return max(0, self.last_committed_round - self.gc_depth)

    def restore(self, delivered: Sequence[Ordered]) -> None:
        """Resume from the deliveries made before a restart (in sequence order)."""
        for ordered in delivered:
            assert ordered.sequence == self.next_sequence, "delivery log has a gap"
            self._mark(ordered)
        self._forget_old()

    def install(self, snapshot: Snapshot) -> None:
        """Continue from `snapshot` (a checkpoint of the committee, ahead of this state):
        what was delivered before is forgotten, as collection would have done."""
        assert snapshot.leader_round > self.last_committed_round, "a checkpoint moves forward"
        assert snapshot.next_sequence >= self.next_sequence, "a checkpoint moves forward"
        self.last_committed_round = snapshot.leader_round
        self.next_sequence = snapshot.next_sequence
        self._delivered = {digest: round_number for round_number, digest in snapshot.delivered}
        self._forget_old()

    def was_delivered(self, digest: bytes) -> bool:
        return digest in self._delivered

    def vertex_added(self, dag: Dag, vertex: Vertex) -> list[Ordered]:
        """Apply the commit rule after `vertex` joined `dag`; returns the new deliveries.

        The caller prunes `dag` below `gc_round` afterwards if it wishes.
        """
        leader_round = vertex.round - 1
        if leader_round < 2 or leader_round % 2 != 0:
            return []
        if leader_round <= self.last_committed_round:
            return []
        leader = dag.at(leader_round).get(leader_of(leader_round, self._members))
        if leader is None:
            return []
        if support_weight(dag, self.committee, leader) < self.committee.validity_threshold:
            return []
        deliveries: list[Ordered] = []
        for linked_leader in self._linked_leaders(dag, leader):
            deliveries.extend(self._deliver(dag, linked_leader))
        self._forget_old()
        return deliveries

    def _linked_leaders(self, dag: Dag, leader: Vertex) -> list[Vertex]:
        """`leader` and the earlier uncommitted leaders linked to it, oldest first."""
        chain = [leader]
        current = leader
        for round_number in range(leader.round - 2, self.last_committed_round, -2):
            previous = dag.at(round_number).get(leader_of(round_number, self._members))
            if previous is not None and has_path(dag, current, previous):
                chain.append(previous)
                current = previous
        chain.reverse()
        return chain

    def _deliver(self, dag: Dag, leader: Vertex) -> list[Ordered]:
        previous_round = self.last_committed_round
        lowest_round = max(0, leader.round - self.gc_depth)
        history = causal_history(dag, leader, lowest_round, self._delivered)
        deliveries = []
        for vertex in history:
            ordered = Ordered(sequence=self.next_sequence, leader_round=leader.round, vertex=vertex)
            self._mark(ordered)
            deliveries.append(ordered)
        self.last_committed_round = leader.round
        interval = self.checkpoint_rounds
        if interval and leader.round // interval > previous_round // interval:
            self.snapshots.append(self._snapshot())
        return deliveries

    def _snapshot(self) -> Snapshot:
        floor = self.gc_round
        delivered = sorted(
            (round_number, digest)
            for digest, round_number in self._delivered.items()
            if round_number >= floor
        )
        return Snapshot(self.last_committed_round, self.next_sequence, floor, tuple(delivered))

    def _mark(self, ordered: Ordered) -> None:
        self._delivered[ordered.vertex.digest] = ordered.vertex.round
        self.next_sequence = ordered.sequence + 1
        self.last_committed_round = max(self.last_committed_round, ordered.leader_round)

    def _forget_old(self) -> None:
        floor = self.gc_round
        for digest in [d for d, r in self._delivered.items() if r < floor]:
            del self._delivered[digest]
