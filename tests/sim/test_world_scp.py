"""`scp_world` and `externalized`: SCP nodes in a perfect world in one line, for tests,
examples and benchmarks that drive the network themselves."""

from __future__ import annotations

from synod.core import Proposed
from synod.crypto import KeyPair
from synod.quorum.qset import QuorumSet
from synod.scp import ScpConfig, ScpCore
from synod.sim.scenarios.scp import externalized, scp_world
from synod.sim.world import World

KEYS = [KeyPair.from_seed(bytes([0x77, index]) * 16) for index in range(4)]
IDS = [key.node_id for key in KEYS]
QSET = QuorumSet(threshold=3, validators=tuple(IDS))
CONFIGS = [ScpConfig(keys=key, quorum_set=QSET) for key in KEYS]


def decide_slot_1(world: World) -> bytes:
    for index, node_id in enumerate(IDS):
        world.input(node_id, Proposed(b"value %d" % index))
    assert world.step_until(lambda: all(1 in externalized(world, node_id) for node_id in IDS))
    values = {externalized(world, node_id)[1] for node_id in IDS}
    assert len(values) == 1
    return values.pop()


def test_one_started_node_per_config_in_order_and_decisions_read_back() -> None:
    world = scp_world(CONFIGS)
    assert [node.node_id for node in world.nodes] == IDS
    assert all(node.up for node in world.nodes)
    value = decide_slot_1(world)
    assert all(world.core(node_id, ScpCore).externalized_value(1) == value for node_id in IDS)
    assert externalized(world, IDS[0]) == {1: value}


def test_a_restarted_node_is_rebuilt_from_what_it_persisted() -> None:
    world = scp_world(CONFIGS)
    value = decide_slot_1(world)
    before = world.core(IDS[2], ScpCore)
    world.crash(IDS[2])
    world.restart(IDS[2])
    rebuilt = world.core(IDS[2], ScpCore)
    assert rebuilt is not before
    assert rebuilt.externalized_value(1) == value


def test_the_seed_decides_the_run_and_loss_reaches_the_network() -> None:
    def digest(seed: int) -> str:
        world = scp_world(CONFIGS, seed=seed)
        decide_slot_1(world)
        return world.history.digest()

    assert digest(1) == digest(1)
    assert len({digest(seed) for seed in range(4)}) > 1
    lossy = scp_world(CONFIGS, loss_probability=0.3)
    decide_slot_1(lossy)
    assert any(record.get("reason") == "loss" for record in lossy.history)
