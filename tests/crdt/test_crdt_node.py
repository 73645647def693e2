"""`synod.runtime.crdt_node.LogNode` from Python: one node on its own store.

Every wait is on the node's own callbacks, under a deadline; nothing waits a fixed time.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from synod.crdt.config import PeerEntry
from synod.crdt.log import EntryAppended, log_digest
from synod.crypto import KeyPair
from synod.runtime.crdt_node import LogNode
from synod.runtime.lock import NodeAlreadyRunning

pytestmark = pytest.mark.timeout(30)

KEYS = KeyPair.from_seed(b"\x07" * 32)


def open_node(directory: Path, **options: Any) -> LogNode:
    return LogNode.open(KEYS, directory / "alice.sqlite", name="alice", **options)


async def append_and_inspect(directory: Path, lines: list[str]) -> tuple[list[Any], list[str]]:
    """Append `lines`, then inspect: the events emitted and the log the inspection saw."""
    events: list[Any] = []
    node = open_node(directory, on_event=events.append)
    seen: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
    await node.start()
    try:
        for line in lines:
            node.append(line)
        node.inspect(lambda replica: seen.set_result([entry["text"] for entry in node.entries()]))
        async with asyncio.timeout(10):
            texts = await seen
    finally:
        await node.stop()
    return events, texts


def test_an_inspection_sees_every_append_queued_before_it(tmp_path: Path) -> None:
    events, texts = asyncio.run(append_and_inspect(tmp_path, ["one", "two", "three"]))
    assert texts == ["one", "two", "three"]
    appended = [event for event in events if isinstance(event, EntryAppended)]
    assert [(event.text, event.name, event.local) for event in appended] == [
        ("one", "alice", True),
        ("two", "alice", True),
        ("three", "alice", True),
    ]
    assert all(event.author == KEYS.node_id for event in appended)


def test_a_node_reopened_on_its_store_resumes_with_its_log(tmp_path: Path) -> None:
    asyncio.run(append_and_inspect(tmp_path, ["kept"]))
    reopened = open_node(tmp_path)
    try:
        assert reopened.restored_updates > 0
        assert [entry["text"] for entry in reopened.entries()] == ["kept"]
        assert log_digest(reopened.replica).entries == 1
    finally:
        asyncio.run(reopened.stop())


def test_a_second_node_on_one_store_is_refused_until_the_first_stops(tmp_path: Path) -> None:
    first = open_node(tmp_path)
    with pytest.raises(NodeAlreadyRunning, match="already running"):
        open_node(tmp_path)
    asyncio.run(first.stop())
    asyncio.run(open_node(tmp_path).stop())


def test_direct_peers_need_a_listen_address(tmp_path: Path) -> None:
    bob = PeerEntry("bob", KeyPair.from_seed(b"\x08" * 32).node_id, "127.0.0.1", 9)
    with pytest.raises(ValueError, match="listen address"):
        open_node(tmp_path, peers=[bob])
    asyncio.run(open_node(tmp_path).stop())  # the refusal released the lock and the store


def test_a_misspelt_key_in_node_toml_is_refused_naming_it(tmp_path: Path) -> None:
    from synod.config import ConfigError
    from synod.crdt.config import load_config

    (tmp_path / "node.toml").write_text(
        '[node]\nname = "a"\nid = "x"\nkey_file = "node.key"\nrelayy = "ws://x"\n'
    )
    with pytest.raises(ConfigError, match=r"node\.relayy: unknown key"):
        load_config(tmp_path)
