"""Whole networks in the deterministic in-process loop: every node that takes part
externalizes, all externalize the same value (agreement), and that value is one that
was proposed (validity), for 4 and 7 nodes, with and without a silent node."""

from __future__ import annotations

import pytest

from synod.core import Proposed
from synod.crypto import KeyPair
from synod.quorum.qset import QuorumSet
from synod.scp import ScpConfig, ScpCore
from synod.scp.local import LocalNetwork

SLOTS = 3


def build_network(size: int, seed: int, silent: int = 0) -> tuple[LocalNetwork, list[KeyPair]]:
    keys = [KeyPair.from_seed(bytes([size, index + 1]) * 16) for index in range(size)]
    faulty = (size - 1) // 3
    qset = QuorumSet(threshold=size - faulty, validators=tuple(key.node_id for key in keys))
    cores = {key.node_id: ScpCore(ScpConfig(keys=key, quorum_set=qset)) for key in keys}
    network = LocalNetwork(cores, seed=seed)
    network.silent.update(key.node_id for key in keys[:silent])
    return network, keys


def run_slots(network: LocalNetwork, keys: list[KeyPair]) -> dict[int, set[bytes]]:
    """Propose one value per live node per slot; returns the proposals per slot."""
    live = [key.node_id for key in keys if key.node_id not in network.silent]
    proposals: dict[int, set[bytes]] = {}
    for slot_index in range(1, SLOTS + 1):
        proposals[slot_index] = set()
        for position, node in enumerate(live):
            value = b"slot %d from node %d" % (slot_index, position)
            proposals[slot_index].add(value)
            network.handle(node, Proposed(value))
        decided = network.run_until(
            lambda index=slot_index: all(index in network.externalized(n) for n in live)
        )
        assert decided, f"slot {slot_index} did not externalize everywhere"
    return proposals


def check_agreement_and_validity(
    network: LocalNetwork, keys: list[KeyPair], proposals: dict[int, set[bytes]]
) -> None:
    live = [key.node_id for key in keys if key.node_id not in network.silent]
    for slot_index, proposed in proposals.items():
        values = {network.externalized(node)[slot_index] for node in live}
        assert len(values) == 1, f"nodes disagree on slot {slot_index}: {values}"
        assert values <= proposed


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("size", [4, 7])
def test_all_nodes_externalize_the_same_proposed_value(size: int, seed: int) -> None:
    network, keys = build_network(size, seed)
    proposals = run_slots(network, keys)
    check_agreement_and_validity(network, keys, proposals)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("size", [4, 7])
def test_agreement_with_silent_nodes_up_to_the_tolerated_number(size: int, seed: int) -> None:
    network, keys = build_network(size, seed, silent=(size - 1) // 3)
    proposals = run_slots(network, keys)
    check_agreement_and_validity(network, keys, proposals)


def test_nothing_is_decided_when_too_many_nodes_are_silent() -> None:
    network, keys = build_network(4, seed=0, silent=2)
    live = [key.node_id for key in keys[2:]]
    for node in live:
        network.handle(node, Proposed(b"lonely"))
    # two of four cannot form a 3-of-4 quorum: the loop runs out of budget undecided
    assert not network.run_until(
        lambda: any(network.externalized(node) for node in live), max_actions=2_000
    )


@pytest.mark.parametrize("seed", range(4))
def test_agreement_and_progress_with_latency_and_message_loss(seed: int) -> None:
    # lost messages are made up for by the periodic rebroadcast of latest statements
    network, keys = build_network(7, seed)
    network.latency_ms = (5, 200)
    network.drop_probability = 0.2
    proposals = run_slots(network, keys)
    check_agreement_and_validity(network, keys, proposals)
    assert network.now_ms > 0


def test_without_rebroadcast_lost_messages_can_stall_a_slot() -> None:
    # the same lossy network with rebroadcast switched off: at least one seed stalls,
    # which is what the rebroadcast timer is for
    stalled = 0
    for seed in range(6):
        network, keys = build_network(4, seed)
        for core in network.cores.values():
            core.config.rebroadcast_interval_ms = None
        network.drop_probability = 0.3
        for index, key in enumerate(keys):
            network.handle(key.node_id, Proposed(b"value %d" % index))
        decided = network.run_until(
            lambda n=network, k=keys: all(1 in n.externalized(key.node_id) for key in k),
            max_actions=20_000,
        )
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
    cores = {key.node_id: ScpCore(ScpConfig(keys=key, quorum_set=qset)) for key in keys}
    network = LocalNetwork(cores, seed=seed, latency_ms=(5, 50))
    network.silent.update(key.node_id for key in organisations[2])
    proposals = run_slots(network, keys)
    check_agreement_and_validity(network, keys, proposals)
