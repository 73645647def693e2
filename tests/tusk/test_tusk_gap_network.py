"""A core away beyond the drivers' window, in a seeded in-process network: after it
installs a checkpoint, its delivery log is complete (drivers fill the gap from the
other cores' logs) and equal to the others' at every position, and an own batch the
committee committed while it was away is committed once, not proposed again.

Only names that existed before gap filling are used, so these tests can be run against
the tree before it (they fail there: positions missing, and the batch committed twice).
"""

from __future__ import annotations

import pytest

from synod.crypto import KeyPair
from synod.sim.scenarios.tusk import delivered_transactions, submit, tusk_world
from synod.sim.world import World
from synod.tusk.core import COMMIT_LOG_PREFIX, CheckpointInstalled, TuskConfig, TuskCore
from synod.tusk.core import read_commit_record as read_record

KEYS = [KeyPair.from_seed(bytes([index + 11]) * 32) for index in range(4)]
CORES = [key.node_id for key in KEYS]
CONFIG = TuskConfig(gc_depth=10, min_header_delay_ms=50)


def log_of(world: World, index: int) -> dict[int, tuple[bytes, tuple[bytes, ...]]]:
    """Position -> (certificate digest, transactions) of core `index`'s stored log."""
    records = (
        read_record(value)
        for key, value in world.node(CORES[index]).storage.items()
        if key.startswith(COMMIT_LOG_PREFIX)
    )
    return {record.sequence: (record.digest, record.transactions) for record in records}


def keep_busy_without(world: World, rounds: int) -> None:
    """Cores 0-2 order a transaction every 100 ms for `rounds` rounds (drivers keep 40)."""
    first_round = world.core(CORES[0], TuskCore).round
    number = 0
    while world.core(CORES[0], TuskCore).round < first_round + rounds:
        submit(world, CORES[number % 3], [f"while away {number}".encode()])
        number += 1
        world.run_until(world.now_ms + 100)


def rejoin(world: World) -> TuskCore:
    """Restart core 3 and wait until it installed a checkpoint, took a transaction and
    every core committed it."""
    world.restart(CORES[3])
    restarted = world.core(CORES[3], TuskCore)
    assert world.step_until(lambda: restarted.takes_transactions, max_ms=world.now_ms + 10_000)
    assert world.events_of(CORES[3], CheckpointInstalled), "it came back by a checkpoint"
    submit(world, CORES[3], [b"after rejoining"])
    assert world.step_until(
        lambda: all(b"after rejoining" in delivered_transactions(world, core) for core in CORES),
        max_ms=world.now_ms + 10_000,
    )
    return restarted


def complete(world: World, restarted: TuskCore) -> bool:
    log = log_of(world, 3)
    return len(log) == restarted.committed_count


def test_a_core_away_beyond_the_drivers_window_ends_with_a_complete_and_equal_log() -> None:
    world = tusk_world(KEYS, seed=1, config=CONFIG)
    submit(world, CORES[3], [b"before leaving"])
    assert world.step_until(lambda: b"before leaving" in delivered_transactions(world, CORES[3]))
    world.crash(CORES[3])
    keep_busy_without(world, 80)
    restarted = rejoin(world)
    assert world.step_until(lambda: complete(world, restarted), max_ms=world.now_ms + 20_000)
    mine, theirs = log_of(world, 3), log_of(world, 0)
    assert sorted(mine) == list(range(restarted.committed_count)), "every position"
    assert all(mine[position] == theirs[position] for position in mine)


@pytest.mark.parametrize("seed", [2, 3])
def test_an_own_batch_committed_while_the_core_was_away_is_committed_once(seed: int) -> None:
    world = tusk_world(KEYS, seed=seed, config=CONFIG)
    submit(world, CORES[3], [b"mine"])
    # Core 3 goes down right after another core delivered its batch, before it did.
    assert world.step_until(
        lambda: any(b"mine" in delivered_transactions(world, core) for core in CORES[:3])
    )
    assert b"mine" not in delivered_transactions(world, CORES[3]), "a seed where it had not"
    world.crash(CORES[3])
    keep_busy_without(world, 80)
    restarted = rejoin(world)
    world.run_until(world.now_ms + 3_000)  # a batch queued again would be committed by now
    assert delivered_transactions(world, CORES[0]).count(b"mine") == 1
    assert world.step_until(lambda: complete(world, restarted), max_ms=world.now_ms + 20_000)
    mine = [transaction for _, batch in log_of(world, 3).values() for transaction in batch]
    assert mine.count(b"mine") == 1
