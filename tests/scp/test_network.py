"""Whole networks in the simulator's perfect world: every node that takes part
externalizes, all externalize the same value (agreement), and that value is one that
was proposed (validity), for 4 and 7 nodes, with and without a silent node."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import pytest

from synod.core import Proposed
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet
from synod.scp import ScpConfig
from synod.sim.scenarios.scp import externalized, scp_world
from synod.sim.world import World

SLOTS = 3


def build_network(
    size: int,
    seed: int,
    silent: int = 0,
    *,
    latency_ms: tuple[int, int] = (1, 10),
    loss_probability: float = 0.0,
    rebroadcast_interval_ms: int | None = 2000,
) -> tuple[World, list[NodeId]]:
    """`size` nodes trusting any `size - f` of them, the first `silent` ones silenced;
    returns the world and the nodes that are not silenced."""
    keys = [KeyPair.from_seed(bytes([size, index + 1]) * 16) for index in range(size)]
    faulty = (size - 1) // 3
    qset = QuorumSet(threshold=size - faulty, validators=tuple(key.node_id for key in keys))
    configs = [
        ScpConfig(keys=key, quorum_set=qset, rebroadcast_interval_ms=rebroadcast_interval_ms)
        for key in keys
    ]
    world = scp_world(
        configs, seed=seed, latency_ms=latency_ms, loss_probability=loss_probability
    )
    for key in keys[:silent]:
        world.silence(key.node_id)
    return world, [key.node_id for key in keys[silent:]]


def decided_everywhere(world: World, live: Sequence[NodeId], slot_index: int) -> bool:
    return all(slot_index in externalized(world, node) for node in live)


def run_slots(world: World, live: Sequence[NodeId]) -> dict[int, set[bytes]]:
    """Propose one value per live node per slot; returns the proposals per slot."""
    proposals: dict[int, set[bytes]] = {}
    for slot_index in range(1, SLOTS + 1):
        proposals[slot_index] = set()
        for position, node in enumerate(live):
            value = b"slot %d from node %d" % (slot_index, position)
            proposals[slot_index].add(value)
            world.input(node, Proposed(value))
        decided = world.step_until(partial(decided_everywhere, world, live, slot_index))
        assert decided, f"slot {slot_index} did not externalize everywhere"
    return proposals


def check_agreement_and_validity(
    world: World, live: Sequence[NodeId], proposals: dict[int, set[bytes]]
) -> None:
    for slot_index, proposed in proposals.items():
        values = {externalized(world, node)[slot_index] for node in live}
        assert len(values) == 1, f"nodes disagree on slot {slot_index}: {values}"
        assert values <= proposed


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("size", [4, 7])
def test_all_nodes_externalize_the_same_proposed_value(size: int, seed: int) -> None:
    world, live = build_network(size, seed)
    proposals = run_slots(world, live)
    check_agreement_and_validity(world, live, proposals)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("size", [4, 7])
def test_agreement_with_silent_nodes_up_to_the_tolerated_number(size: int, seed: int) -> None:
    world, live = build_network(size, seed, silent=(size - 1) // 3)
    proposals = run_slots(world, live)
    check_agreement_and_validity(world, live, proposals)


def test_nothing_is_decided_when_too_many_nodes_are_silent() -> None:
    world, live = build_network(4, seed=0, silent=2)
    for node in live:
        world.input(node, Proposed(b"lonely"))
    # two of four cannot form a 3-of-4 quorum: the world runs out of budget undecided
    assert not world.step_until(
        lambda: any(externalized(world, node) for node in live), max_steps=2_000
    )


@pytest.mark.parametrize("seed", range(4))
def test_agreement_and_progress_with_latency_and_message_loss(seed: int) -> None:
    # lost messages are made up for by the periodic rebroadcast of latest statements
    world, live = build_network(7, seed, latency_ms=(5, 200), loss_probability=0.2)
    proposals = run_slots(world, live)
    check_agreement_and_validity(world, live, proposals)
    assert world.now_ms > 0


def test_without_rebroadcast_lost_messages_can_stall_a_slot() -> None:
    # the same lossy network with rebroadcast switched off: at least one seed stalls,
    # which is what the rebroadcast timer is for
    stalled = 0
    for seed in range(6):
        world, live = build_network(
            4, seed, loss_probability=0.3, rebroadcast_interval_ms=None
        )
        for index, node in enumerate(live):
            world.input(node, Proposed(b"value %d" % index))
        decided = world.step_until(partial(decided_everywhere, world, live, 1), max_ms=60_000)
        stalled += not decided
    assert stalled > 0


@pytest.mark.parametrize("seed", range(3))
def test_tiered_organisations_agree_with_one_organisation_silent(seed: int) -> None:
    # three organisations of three nodes; every node requires 2 of the 3 organisations,
    # each organisation counting when 2 of its 3 nodes agree (nested quorum sets)
    keys = [KeyPair.from_seed(bytes([99, index + 1]) * 16) for index in range(9)]
    organisations = [keys[start : start + 3] for start in (0, 3, 6)]
    inner = tuple(
        QuorumSet(threshold=2, validators=tuple(key.node_id for key in members))
        for members in organisations
    )
    qset = QuorumSet(threshold=2, inner_sets=inner)
    configs = [ScpConfig(keys=key, quorum_set=qset) for key in keys]
    world = scp_world(configs, seed=seed, latency_ms=(5, 50))
    for key in organisations[2]:
        world.silence(key.node_id)
    live = [key.node_id for key in keys[:6]]
    proposals = run_slots(world, live)
    check_agreement_and_validity(world, live, proposals)
