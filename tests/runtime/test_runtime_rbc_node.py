"""`synod.runtime.rbc_node`: reliable-broadcast members run from a program, on 127.0.0.1.

The runner itself is checked here: deliveries handed to the program, restart from the
store, the pacing of a member's own broadcasts, the lock.  Four processes are in
tests/integration/test_rbc_network.py, four members of one program in docs/runtime.md
(run by tests/runtime/test_runtime_docs.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from runtime_helpers import DEADLINE_S, asynchronous

from synod.crypto import read_key_file
from synod.rbc import Delivered
from synod.rbc.network import NetworkConfig
from synod.runtime.rbc_node import (
    NetworkExists,
    NodeAlreadyRunning,
    NodeStopped,
    RbcNode,
    create_network,
)

pytestmark = pytest.mark.timeout(30)


def member(config: NetworkConfig, index: int = 0) -> RbcNode:
    entry = config.nodes[index]
    return RbcNode(config, entry, read_key_file(entry.key_file))


def test_a_new_network_has_a_key_per_member_and_refuses_to_be_overwritten(
    tmp_path: Path,
) -> None:
    config = create_network(tmp_path, nodes=3)
    assert [node.name for node in config.nodes] == ["node-0", "node-1", "node-2"]
    assert len({node.port for node in config.nodes}) == 3
    for node in config.nodes:
        assert read_key_file(node.key_file).node_id == node.node_id
    with pytest.raises(NetworkExists):
        create_network(tmp_path, nodes=3)


@asynchronous
async def test_a_lone_member_delivers_its_broadcasts_and_restores_them(tmp_path: Path) -> None:
    config = create_network(tmp_path, nodes=1)
    delivered: asyncio.Queue[Delivered] = asyncio.Queue()
    node = member(config)
    node.on_delivered = delivered.put_nowait
    await node.start()
    try:
        await node.broadcast(b"one")
        await node.broadcast(b"two")
        async with asyncio.timeout(DEADLINE_S):
            first, second = await delivered.get(), await delivered.get()
    finally:
        await node.stop()
    assert [(first.sequence, first.payload), (second.sequence, second.payload)] == [
        (0, b"one"),
        (1, b"two"),
    ]
    again = member(config)
    await again.start()
    try:
        assert again.restored_deliveries == 2
    finally:
        await again.stop()


@asynchronous
async def test_own_broadcasts_wait_for_room_and_a_stop_releases_them(tmp_path: Path) -> None:
    # member 1 never runs: with two members nothing is delivered, so nothing makes room
    config = create_network(tmp_path, nodes=2)
    node = member(config)
    node.max_in_flight = 1
    await node.start()
    try:
        await node.broadcast(b"first")  # room for one
        second = asyncio.ensure_future(node.broadcast(b"second"))
        await asyncio.sleep(0)  # one loop turn: the broadcast runs until it must wait
        assert not second.done()
    finally:
        await node.stop()
    with pytest.raises(NodeStopped):
        await second


@asynchronous
async def test_a_payload_that_cannot_be_broadcast_is_refused(tmp_path: Path) -> None:
    node = member(create_network(tmp_path, nodes=1))
    await node.start()
    try:
        for payload in (b"", b"x" * (64 * 1024 + 1)):
            with pytest.raises(ValueError, match="bytes"):
                await node.broadcast(payload)
    finally:
        await node.stop()


@asynchronous
async def test_a_member_runs_in_one_place_at_a_time(tmp_path: Path) -> None:
    config = create_network(tmp_path, nodes=1)
    node = member(config)
    await node.start()
    try:
        with pytest.raises(NodeAlreadyRunning):
            await member(config).start()
    finally:
        await node.stop()


@asynchronous
async def test_members_of_two_networks_never_connect(tmp_path: Path) -> None:
    """The same keys and addresses under two network ids: the handshake refuses them, so
    a broadcast of one never reaches the other (it waits for a quorum that never forms)."""
    main = create_network(tmp_path / "main", nodes=2, network="main")
    other_text = (tmp_path / "main" / "network.toml").read_text().replace(
        'network_id = "main"', 'network_id = "test"'
    )
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "network.toml").write_text(other_text)
    for node in main.nodes:
        (tmp_path / "test" / node.key_file.name).write_bytes(node.key_file.read_bytes())
        (tmp_path / "test" / node.key_file.name).chmod(0o600)
    from synod.rbc.network import load_network

    other = load_network(tmp_path / "test")
    assert other.network_id == b"test"
    first, second = member(main, 0), member(other, 1)
    await first.start()
    await second.start()
    try:
        transport = first._host.transport if first._host is not None else None
        assert transport is not None
        async with asyncio.timeout(DEADLINE_S):
            while second._host is None or second._host.transport is None or (
                second._host.transport.rejected_connections == 0
            ):
                await asyncio.sleep(0.02)
        assert all(not stats.outgoing_connected for stats in transport.stats.values())
    finally:
        await first.stop()
        await second.stop()
