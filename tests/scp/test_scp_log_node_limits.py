"""A log node run from a program (`synod.runtime.scp_node.LogNode`) on 127.0.0.1: its
limits and the settings it warns about.

The submit port's per-client budget counts per host, not per connection: a client
opening a fresh connection for each request (as `submit_entries` does) still shares
one budget of pending entries with every other connection from its host.  One node of
a four-node network runs alone, so nothing is decided and every accepted entry stays
pending."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from synod.crypto import read_key_file
from synod.runtime.scp_node import LogNode, SubmitRefused, create_network, submit_entries

pytestmark = pytest.mark.timeout(30)


def test_many_connections_from_one_host_share_one_budget(tmp_path: Path) -> None:
    """Before, each connection had its own budget of 1,000 pending entries, so one host
    could hold the whole pending list by opening connections."""
    config = create_network(tmp_path, nodes=4)
    entry = config.nodes[0]
    node = LogNode(config, entry, read_key_file(entry.key_file))

    async def scenario() -> None:
        await node.start()
        try:
            node.core.max_pending_per_client = 3
            for name in ("a", "b", "c"):  # three requests, three connections
                reply = await submit_entries(node.submit_address, [name])
                assert reply.queued == 1
            with pytest.raises(SubmitRefused, match="host already has 3 pending"):
                await submit_entries(node.submit_address, ["d"])
            assert node.core.pending == ["a", "b", "c"]
        finally:
            await node.stop()

    asyncio.run(scenario())


def test_a_node_warns_when_peers_keep_fewer_decisions_than_a_checkpoint_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from synod.scp.network import NetworkSettings

    settings = NetworkSettings(retained_decisions=8, checkpoint_interval=64)
    config = create_network(tmp_path, nodes=4, settings=settings)
    entry = config.nodes[0]
    node = LogNode(config, entry, read_key_file(entry.key_file))

    async def start_and_stop() -> None:
        await node.start()
        await node.stop()

    with caplog.at_level("WARNING", logger="synod.runtime.scp_node"):
        asyncio.run(start_and_stop())
    (record,) = [r for r in caplog.records if "checkpoint_interval" in r.getMessage()]
    assert record.retained_decisions == 8 and record.checkpoint_interval == 64  # type: ignore[attr-defined]
