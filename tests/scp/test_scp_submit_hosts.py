"""The submit port's per-client budget counts per host, not per connection: a client
opening a fresh connection for each request (as `submit_entries` does) still shares
one budget of pending entries with every other connection from its host.

One node of a four-node network runs alone on 127.0.0.1, so nothing is decided and
every accepted entry stays pending."""

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
