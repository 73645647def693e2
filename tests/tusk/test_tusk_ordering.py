"""The Tusk commit rule on hand-built DAGs (scenarios after Narwhal's consensus tests).

Members are four ids m0 < m1 < m2 < m3.  Leader rule under test: the leader of even
round r is members[(r // 2) % 4], so round 2 -> m1, 4 -> m2, 6 -> m3, 8 -> m0.  Expected
sequences below are worked out by hand from the paper's rule: a leader commits when
f+1 = 2 certificates of the next round reference it; it first orders earlier linked
leaders; each leader delivers its not-yet-delivered history sorted by (round, creator).
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.crypto import NodeId, blake2b
from synod.quorum.committee import Committee
from synod.tusk.ordering import (
    Dag,
    Ordered,
    TuskOrdering,
    Vertex,
    causal_history,
    has_path,
    leader_of,
)

MEMBERS = [NodeId(bytes([index + 1]) * 32) for index in range(4)]
M0, M1, M2, M3 = MEMBERS
COMMITTEE = Committee.equal_weights(MEMBERS)


def make_vertex(round_number: int, creator: NodeId, parents: list[Vertex]) -> Vertex:
    digest = blake2b(bytes([round_number]) + creator + b"".join(p.digest for p in parents))
    return Vertex(digest, round_number, creator, tuple(p.digest for p in parents))


class Builder:
    """Builds a DAG round by round and feeds it to one ordering instance."""

    def __init__(self, gc_depth: int = 50) -> None:
        self.dag = Dag()
        self.ordering = TuskOrdering(COMMITTEE, gc_depth=gc_depth)
        self.rounds: dict[int, dict[NodeId, Vertex]] = {0: {}}
        self.delivered: list[Ordered] = []

    def add(
        self, round_number: int, creator: NodeId, parents: list[NodeId] | None = None
    ) -> Vertex:
        previous = self.rounds.get(round_number - 1, {})
        chosen = list(previous.values()) if parents is None else [previous[p] for p in parents]
        vertex = make_vertex(round_number, creator, chosen)
        self.rounds.setdefault(round_number, {})[creator] = vertex
        self.dag.add(vertex)
        self.delivered.extend(self.ordering.vertex_added(self.dag, vertex))
        return vertex

    def full_rounds(self, first: int, last: int, creators: list[NodeId]) -> None:
        for round_number in range(first, last + 1):
            for creator in creators:
                self.add(round_number, creator)

    def sequence(self) -> list[tuple[int, NodeId]]:
        return [(o.vertex.round, o.vertex.creator) for o in self.delivered]


def test_leader_rule_is_round_robin_over_even_rounds() -> None:
    assert [leader_of(r, MEMBERS) for r in (2, 4, 6, 8, 10)] == [M1, M2, M3, M0, M1]
    with pytest.raises(ValueError):
        leader_of(3, MEMBERS)


def test_commit_one_leader_with_f_plus_one_support() -> None:
    dag = Builder()
    dag.full_rounds(1, 2, MEMBERS)
    dag.add(3, M0)
    assert dag.delivered == [], "one supporter is not f+1"
    dag.add(3, M1)
    assert dag.sequence() == [(1, M0), (1, M1), (1, M2), (1, M3), (2, M1)]
    assert [o.sequence for o in dag.delivered] == [0, 1, 2, 3, 4]
    assert {o.leader_round for o in dag.delivered} == {2}


def test_dead_node_skips_its_leader_round() -> None:
    dag = Builder()
    dag.full_rounds(1, 9, [M0, M1, M2])  # m3 never produces (and leads round 6)
    expected = [(1, M0), (1, M1), (1, M2), (2, M1)]
    expected += [(2, M0), (2, M2), (3, M0), (3, M1), (3, M2), (4, M2)]
    expected += [(4, M0), (4, M1)] + [(r, m) for r in (5, 6, 7) for m in (M0, M1, M2)]
    expected += [(8, M0)]
    assert dag.sequence() == expected
    assert [o.leader_round for o in dag.delivered][-1] == 8


def test_not_enough_support_then_ordered_before_a_later_linked_leader() -> None:
    dag = Builder()
    dag.full_rounds(1, 2, MEMBERS)
    # Round 3: only m1's certificate references the round-2 leader (m1).
    dag.add(3, M0, [M0, M2, M3])
    dag.add(3, M1, [M0, M1, M2])
    dag.add(3, M2, [M0, M2, M3])
    dag.add(3, M3, [M0, M2, M3])
    assert dag.delivered == []
    dag.full_rounds(4, 4, MEMBERS)  # round 4 references all of round 3: a path to leader 2
    dag.add(5, M0)
    dag.add(5, M1)
    expected = [(1, M0), (1, M1), (1, M2), (1, M3), (2, M1)]
    expected += [(2, M0), (2, M2), (2, M3)] + [(3, m) for m in MEMBERS] + [(4, M2)]
    assert dag.sequence() == expected
    assert [o.leader_round for o in dag.delivered] == [2] * 5 + [4] * 8


def test_missing_leader_is_skipped() -> None:
    dag = Builder()
    dag.full_rounds(1, 2, [M0, M2, M3])  # m1, the round-2 leader, is absent
    dag.full_rounds(3, 4, MEMBERS)
    dag.add(5, M0)
    dag.add(5, M1)
    expected = [(1, M0), (1, M2), (1, M3), (2, M0), (2, M2), (2, M3)]
    expected += [(3, m) for m in MEMBERS] + [(4, M2)]
    assert dag.sequence() == expected


def test_unlinked_earlier_leader_is_never_ordered() -> None:
    dag = Builder()
    dag.full_rounds(1, 2, MEMBERS)
    dag.add(3, M0, [M0, M2, M3])
    dag.add(3, M1, [M0, M1, M2])  # the only supporter of leader 2
    dag.add(3, M2, [M0, M2, M3])
    dag.add(3, M3, [M0, M2, M3])
    for creator in MEMBERS:  # round 4 ignores the supporter: no path to leader 2
        dag.add(4, creator, [M0, M2, M3])
    dag.add(5, M0)
    dag.add(5, M1)
    sequence = dag.sequence()
    assert (2, M1) not in sequence
    assert (3, M1) not in sequence
    assert sequence[-1] == (4, M2)
    expected = [(1, m) for m in MEMBERS] + [(2, M0), (2, M2), (2, M3)]
    expected += [(3, M0), (3, M2), (3, M3), (4, M2)]
    assert sequence == expected


def test_earlier_linked_leaders_are_ordered_oldest_first() -> None:
    dag = Builder()
    dag.full_rounds(1, 2, MEMBERS)
    for creator in MEMBERS:  # leader 2 (m1) gets one supporter only: m1 itself
        dag.add(3, creator, [M0, M1, M2] if creator == M1 else [M0, M2, M3])
    dag.full_rounds(4, 4, MEMBERS)
    for creator in MEMBERS:  # leader 4 (m2) gets one supporter only: m2 itself
        dag.add(5, creator, [M0, M1, M2] if creator == M2 else [M0, M1, M3])
    assert dag.delivered == []
    dag.full_rounds(6, 6, MEMBERS)
    dag.add(7, M0)
    assert dag.delivered == []
    dag.add(7, M1)
    leaders = [
        o.vertex for o in dag.delivered if o.vertex.creator == leader_of_round(o.vertex.round)
    ]
    assert [(v.round, v.creator) for v in leaders] == [(2, M1), (4, M2), (6, M3)]
    rounds_of_leaders = [o.leader_round for o in dag.delivered]
    assert rounds_of_leaders == sorted(rounds_of_leaders)


def leader_of_round(round_number: int) -> NodeId | None:
    return leader_of(round_number, MEMBERS) if round_number % 2 == 0 and round_number else None


def test_a_lone_supporter_commits_nothing_so_its_arrival_time_cannot_matter() -> None:
    """Leader 2 has one supporter s that round 4 ignores.  One core receives s early,
    another only at the end: with f+1 support required, both deliver the same sequence
    (committing on f supporters would let the first core deliver leader 2 alone)."""
    round_1 = [make_vertex(1, m, []) for m in MEMBERS]
    round_2 = [make_vertex(2, m, round_1) for m in MEMBERS]
    lone = make_vertex(3, M1, [round_2[0], round_2[1], round_2[2]])
    round_3 = [make_vertex(3, m, [round_2[0], round_2[2], round_2[3]]) for m in (M0, M2, M3)]
    round_4 = [make_vertex(4, m, round_3) for m in MEMBERS]
    round_5 = [make_vertex(5, m, round_4) for m in MEMBERS]
    early = deliver_in_order(round_1 + round_2 + [lone] + round_3 + round_4 + round_5, 50)
    late = deliver_in_order(round_1 + round_2 + round_3 + round_4 + round_5 + [lone], 50)
    assert [o.vertex for o in early] == [o.vertex for o in late]
    assert round_2[1] not in [o.vertex for o in early]


def test_garbage_collection_bounds_delivery_depth() -> None:
    dag = Builder(gc_depth=2)
    dag.full_rounds(1, 9, [M0, M1, M2])
    assert dag.ordering.last_committed_round == 8
    assert dag.ordering.gc_round == 6
    dropped = dag.dag.prune_below(dag.ordering.gc_round)
    assert {v.round for v in dropped} == {1, 2, 3, 4, 5}
    # Leader 8 delivered nothing below round 8 - 2 = 6.
    assert all(o.vertex.round >= 6 for o in dag.delivered if o.leader_round == 8)


def test_has_path_follows_parent_links_only() -> None:
    dag = Builder()
    dag.full_rounds(1, 1, MEMBERS)
    lone = dag.add(2, M0, [M0, M1, M2])
    assert has_path(dag.dag, lone, dag.rounds[1][M2])
    assert not has_path(dag.dag, lone, dag.rounds[1][M3])
    assert not has_path(dag.dag, dag.rounds[1][M2], lone)


# ---------------------------------------------------------------- order independence


def random_dag(rng: random.Random, rounds: int, weak_links: bool = False) -> list[Vertex]:
    """A DAG where each round has 3 or 4 creators, each referencing a random quorum.

    In most rounds one vertex of the previous round is *shunned*: each new vertex
    references it only with probability 0.25.  The shunned vertex is the leader,
    or a vertex that supports the last leader, when there is one: that makes leaders
    with a single supporter that nobody builds on, the shape in which an unsafe commit
    rule (too little support, no linking of earlier leaders) splits the cores.  With
    `weak_links`, some vertices also name one or two random vertices of rounds below
    round - 1 as weak parents.
    """
    previous: list[Vertex] = []
    vertices: list[Vertex] = []
    for round_number in range(1, rounds + 1):
        creators = rng.sample(MEMBERS, rng.choice([3, 4]))
        shunned = None
        if len(previous) == 4 and rng.random() < 0.8:
            shunned = rng.choice(shunning_targets(previous, vertices))
        current = []
        for creator in sorted(creators):
            candidates = [v for v in previous if v is not shunned or rng.random() < 0.25]
            parents = rng.sample(candidates, rng.randint(3, len(candidates))) if previous else []
            vertex = make_vertex(round_number, creator, parents)
            older = [v for v in vertices if v.round < round_number - 1]
            if weak_links and older and rng.random() < 0.4:
                for weak in rng.sample(older, min(len(older), rng.randint(1, 2))):
                    vertex = Vertex(
                        vertex.digest,
                        vertex.round,
                        vertex.creator,
                        vertex.parents,
                        (*vertex.weak_parents, (weak.round, weak.digest)),
                    )
            current.append(vertex)
        vertices.extend(current)
        previous = current
    return vertices


def shunning_targets(previous: list[Vertex], vertices: list[Vertex]) -> list[Vertex]:
    round_number = previous[0].round
    if round_number % 2 == 0:
        leaders = [v for v in previous if v.creator == leader_of(round_number, MEMBERS)]
        return leaders or previous
    leader = leader_of(round_number - 1, MEMBERS) if round_number > 1 else None
    leader_digests = {
        v.digest for v in vertices if v.round == round_number - 1 and v.creator == leader
    }
    supporters = [v for v in previous if leader_digests & set(v.parents)]
    return supporters or previous


def links_of(vertex: Vertex) -> list[bytes]:
    return [*vertex.parents, *(digest for _, digest in vertex.weak_parents)]


def topological_shuffle(rng: random.Random, vertices: list[Vertex]) -> list[Vertex]:
    """A random insertion order in which parents always come before children.

    Half of the picks race ahead (the highest ready round), so some vertices arrive
    long after their round, as they would behind a slow link.
    """
    remaining = list(vertices)
    placed: set[bytes] = set()
    order: list[Vertex] = []
    while remaining:
        ready = [v for v in remaining if all(p in placed for p in links_of(v))]
        if rng.random() < 0.5:
            highest = max(v.round for v in ready)
            ready = [v for v in ready if v.round == highest]
        pick = rng.choice(ready)
        remaining.remove(pick)
        placed.add(pick.digest)
        order.append(pick)
    return order


def deliver_in_order(order: list[Vertex], gc_depth: int) -> list[Ordered]:
    dag = Dag()
    ordering = TuskOrdering(COMMITTEE, gc_depth=gc_depth)
    delivered: list[Ordered] = []
    for vertex in order:
        dag.add(vertex)
        delivered.extend(ordering.vertex_added(dag, vertex))
        dag.prune_below(ordering.gc_round)
    return delivered


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    rounds=st.integers(3, 14),
    gc_depth=st.sampled_from([3, 50]),
    weak_links=st.booleans(),
)
def test_every_insertion_order_yields_prefixes_of_one_sequence(
    seed: int, rounds: int, gc_depth: int, weak_links: bool
) -> None:
    rng = random.Random(seed)
    vertices = random_dag(rng, rounds, weak_links)
    sequences = []
    for _ in range(6):
        delivered = deliver_in_order(topological_shuffle(rng, vertices), gc_depth)
        digests = [o.vertex.digest for o in delivered]
        assert len(digests) == len(set(digests)), "a certificate delivered twice"
        assert [o.sequence for o in delivered] == list(range(len(delivered)))
        position = {d: i for i, d in enumerate(digests)}
        for ordered in delivered:  # causal order: delivered parents come first
            for parent in links_of(ordered.vertex):
                if parent in position:
                    assert position[parent] < position[ordered.vertex.digest]
        sequences.append(digests)
    longest = max(sequences, key=len)
    for sequence in sequences:
        assert sequence == longest[: len(sequence)]


def _with_weak_parent(vertex: Vertex, weak: Vertex) -> Vertex:
    return Vertex(
        vertex.digest, vertex.round, vertex.creator, vertex.parents, ((weak.round, weak.digest),)
    )


@pytest.mark.parametrize("weak_link", [True, False])
def test_a_weak_parent_delivers_a_block_no_later_block_took_as_a_parent(weak_link: bool) -> None:
    dag = Builder()
    dag.full_rounds(1, 1, MEMBERS)
    for creator in MEMBERS:
        dag.add(2, creator, [M0, M1, M2])  # m3's round-1 block is left out by everyone
    orphan = dag.rounds[1][M3]
    first = make_vertex(3, M0, list(dag.rounds[2].values()))
    if weak_link:
        first = _with_weak_parent(first, orphan)  # m0's round-3 block names it
    dag.rounds[3] = {M0: first}
    dag.dag.add(first)
    dag.delivered.extend(dag.ordering.vertex_added(dag.dag, first))
    for creator in (M1, M2, M3):
        dag.add(3, creator)
    dag.full_rounds(4, 5, MEMBERS)
    leader_two = [(1, M0), (1, M1), (1, M2), (2, M1)]
    later = [(2, M0), (2, M2), (2, M3), (3, M0), (3, M1), (3, M2), (3, M3), (4, M2)]
    if weak_link:
        assert dag.sequence() == [*leader_two, (1, M3), *later]
    else:
        assert dag.sequence() == leader_two + later, "without the link it is never delivered"


def test_weak_parents_are_in_the_causal_history_but_not_paths_between_leaders() -> None:
    # Leader paths use parents only (the Tusk safety argument is about them).
    dag = Builder()
    dag.full_rounds(1, 1, MEMBERS)
    for creator in MEMBERS:
        dag.add(2, creator, [M0, M1, M2])
    old = dag.rounds[1][M3]
    top = _with_weak_parent(make_vertex(3, M0, list(dag.rounds[2].values())), old)
    dag.dag.add(top)
    assert not has_path(dag.dag, top, old)
    assert old in causal_history(dag.dag, top, 1, set())
    assert old not in causal_history(dag.dag, top, 2, set()), "below the lowest round"
