"""`synod.runtime.scp_node`: SCP log nodes run from a program, on 127.0.0.1.

A one-node network (the node trusts itself) decides alone, so these tests check the
runner itself: durable submissions, waiting on the durable log, restart from the store,
the lock, and the typed errors of the submit client and of a store that cannot be
restored.  Four processes agreeing are in tests/integration/test_scp_network.py, four
nodes of one program in docs/scp-network.md (run by tests/scp/test_docs_network.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from runtime_helpers import DEADLINE_S, asynchronous, free_port

from synod.core import Persist
from synod.crypto import read_key_file
from synod.runtime.lock import hold_exclusive_lock
from synod.runtime.scp_node import (
    LogNode,
    LogReadError,
    NetworkExists,
    NodeAlreadyRunning,
    NodeStopped,
    RestoreFailed,
    SubmitRefused,
    SubmitUnanswered,
    create_network,
    read_log,
    submit_entries,
)
from synod.runtime.storage import SqliteStorage
from synod.scp.log import PENDING_KEY, SubmitReply, decode_batch
from synod.scp.network import NetworkConfig, NetworkSettings

pytestmark = pytest.mark.timeout(30)


def one_node(directory: Path, **settings: int) -> NetworkConfig:
    return create_network(directory, nodes=1, settings=NetworkSettings(**settings))


def node_of(config: NetworkConfig) -> LogNode:
    entry = config.nodes[0]
    return LogNode(config, entry, read_key_file(entry.key_file))


def test_a_new_network_has_a_key_per_node_and_every_port_distinct(tmp_path: Path) -> None:
    config = create_network(tmp_path, nodes=4)
    assert [node.name for node in config.nodes] == ["node-0", "node-1", "node-2", "node-3"]
    for node in config.nodes:
        assert read_key_file(node.key_file).node_id == node.node_id
        assert node.quorum_set.threshold == 3
    ports = [port for node in config.nodes for port in (node.port, node.submit_port)]
    assert len(set(ports)) == 8
    with pytest.raises(NetworkExists):
        create_network(tmp_path, nodes=4)


def test_an_impossible_plan_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threshold"):
        create_network(tmp_path, nodes=3, threshold=4)
    with pytest.raises(ValueError, match="differ"):
        create_network(tmp_path, nodes=1, ports=[9000], submit_ports=[9000])
    assert not any(tmp_path.iterdir())


@asynchronous
async def test_a_submitted_entry_is_logged_durably_and_restored_after_a_restart(
    tmp_path: Path,
) -> None:
    config = one_node(tmp_path)
    appended: list[int] = []
    node = node_of(config)
    node.on_appended = lambda event: appended.append(event.slot_index)
    await node.start()
    try:
        reply = await submit_entries(node.submit_address, ["pay ada 5", "pay bob 7"])
        assert reply == SubmitReply(queued=2, pending=2)
        await node.wait_for_entries(["pay ada 5", "pay bob 7"], timeout_s=DEADLINE_S)
        assert appended and set(node.log) == set(appended)
        # submitting again is safe: nothing new is queued
        assert await submit_entries(node.submit_address, ["pay ada 5"]) == SubmitReply(0, 0)
    finally:
        await node.stop()
    stored = read_log(config.store_path(config.nodes[0]))
    assert stored == dict(node.log)
    logged = {entry for value in stored.values() for entry in decode_batch(value) or ()}
    assert logged == {"pay ada 5", "pay bob 7"}

    again = node_of(config)
    await again.start()
    try:
        assert again.restored_slots == len(stored)
        await again.wait_for_entries(["pay ada 5"], timeout_s=DEADLINE_S)
        assert dict(again.log) == stored
    finally:
        await again.stop()


@asynchronous
async def test_a_node_runs_in_one_place_at_a_time(tmp_path: Path) -> None:
    config = one_node(tmp_path)
    node = node_of(config)
    await node.start()
    try:
        with pytest.raises(NodeAlreadyRunning):
            await node_of(config).start()
    finally:
        await node.stop()
    # stopping released the lock
    hold_exclusive_lock(config.lock_path(config.nodes[0])).close()


@asynchronous
async def test_a_store_that_cannot_be_restored_is_reported_and_releases_the_lock(
    tmp_path: Path,
) -> None:
    config = one_node(tmp_path)
    with SqliteStorage.open(config.store_path(config.nodes[0])) as storage:
        storage.apply([Persist(PENDING_KEY, b'{"not": "a list"}')])
    with pytest.raises(RestoreFailed, match="cannot restore"):
        await node_of(config).start()
    hold_exclusive_lock(config.lock_path(config.nodes[0])).close()


@asynchronous
async def test_waiting_for_entries_ends_when_the_node_stops(tmp_path: Path) -> None:
    node = node_of(one_node(tmp_path))
    await node.start()
    waiting = asyncio.ensure_future(node.wait_for_entries(["never"], timeout_s=DEADLINE_S))
    await asyncio.sleep(0)  # one loop turn: the waiter, scheduled first, registers (FIFO)
    await node.stop()
    with pytest.raises(NodeStopped):
        await waiting


@asynchronous
async def test_a_full_pending_list_is_a_typed_refusal(tmp_path: Path) -> None:
    node = node_of(one_node(tmp_path, max_pending_entries=1))
    await node.start()
    try:
        with pytest.raises(SubmitRefused, match="pending entries") as caught:
            await submit_entries(node.submit_address, ["a", "b"])
        assert caught.value.queued == 0 and caught.value.reply.queued == 0
    finally:
        await node.stop()


@asynchronous
async def test_a_port_nobody_listens_on_leaves_entries_unanswered() -> None:
    address = ("127.0.0.1", await free_port())
    with pytest.raises(SubmitUnanswered) as caught:
        await submit_entries(address, ["hello"], timeout_s=1.0)
    assert caught.value.address == address and str(address[1]) in str(caught.value)


@asynchronous
async def test_an_entry_that_can_never_be_logged_is_refused_before_sending() -> None:
    address = ("127.0.0.1", 1)  # never contacted
    for entry in ("", "x" * 1025):
        with pytest.raises(ValueError, match="bytes of UTF-8"):
            await submit_entries(address, [entry])


def test_reading_a_log_says_which_file_is_not_a_store(tmp_path: Path) -> None:
    assert read_log(tmp_path / "absent.sqlite") is None
    other = tmp_path / "other.sqlite"
    other.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LogReadError, match=str(other)):
        read_log(other)
