"""One hostile client with a fresh key against a relayer and four real `synod crdt run`
nodes (issue 15): it floods concurrent heads, removes the log's key, signs an entry
naming another node, sends overlapping delete spans and asks for everything again and
again.  The honest nodes keep writing, their histories stay equal and complete, and
their memory stays within a stated bound.

Every wait is on a line the processes print or a condition polled under a deadline."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_crdt_network import (  # the cluster of the other real-process tests
    ANNOUNCE_MS,
    DEADLINE_S,
    Cluster,
    Process,
    assert_identical_histories,
)

from synod.cli.cluster import free_ports
from synod.crdt.log import genesis_update
from synod.crdt.messages import (
    CODEC,
    ROOT,
    UPDATE_CODEC,
    Heads,
    MapPut,
    MapRemove,
    Operation,
    Ref,
    SequenceDelete,
    Span,
    UpdateBody,
    Updates,
    Want,
    sign_update,
)
from synod.crypto import KeyPair, node_id_text, parse_node_id
from synod.runtime.relay import RelayClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RSS_BOUND_BYTES = 128 * 1024 * 1024
"""What one honest node may hold here: the interpreter and libraries (about 35 MiB
measured), the waiting buffer's 32 MiB (counted in memory), and a few hundred small
updates; the attack must not add more than the buffer's bound."""
FLOOD_HEADS = 300


def _hostile_frames(victim_id: bytes) -> list[bytes]:
    """Everything the hostile client sends, as relay payloads (encoded CRDT messages)."""
    attacker = KeyPair.from_seed(b"\x66" * 32)
    genesis_id, _ = genesis_update("log")
    frames = []
    orphans = []
    for index in range(FLOOD_HEADS):  # as many concurrent heads, each from a fresh key
        keys = KeyPair.from_seed(index.to_bytes(4, "big") * 8)
        body = UpdateBody(keys.node_id, 1, 1, [], [MapPut(ROOT, f"head{index}", index)])
        orphans.append(UPDATE_CODEC.encode(sign_update(keys, body)[1]))
    frames += [CODEC.encode(Updates(orphans[start : start + 100])) for start in range(0, 300, 100)]
    forged: list[Operation] = [
        MapRemove(ROOT, "log"),  # erase the shared log (the document's view of it)
        MapPut(ROOT, "author", node_id_text(victim_id)),
        MapPut(ROOT, "name", "node-0"),
        MapPut(ROOT, "text", "signed by the hostile client"),
    ]
    body = UpdateBody(attacker.node_id, 1, 2, [genesis_id], forged)
    frames.append(CODEC.encode(Updates([UPDATE_CODEC.encode(sign_update(attacker, body)[1])])))
    spans = [Span(genesis_id, 0, 1), Span(genesis_id, 0, 1)]
    overlapping = UpdateBody(
        attacker.node_id, 2, 3, [], [SequenceDelete(Ref(genesis_id, 0), spans)]
    )
    frames.append(
        CODEC.encode(Updates([UPDATE_CODEC.encode(sign_update(attacker, overlapping)[1])]))
    )
    asks = [CODEC.encode(Heads([])), CODEC.encode(Want([genesis_id]))]
    frames += asks * 50
    return frames


class HostileClient:
    """A relayer client with a fresh key, run by an event loop in its own thread so that
    the test can wait on the nodes' output meanwhile."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.url = url
        self.client: RelayClient | None = None

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._connect(), self.loop).result(DEADLINE_S)

    async def _connect(self) -> None:
        connected = asyncio.Event()

        async def ignore(sender: bytes, payload: bytes) -> None:
            return None

        self.client = RelayClient(
            self.url, KeyPair.from_seed(b"\x67" * 32), ignore, on_connected=connected.set
        )
        self.client.start()
        await asyncio.wait_for(connected.wait(), DEADLINE_S)

    def send(self, frames: list[bytes]) -> None:
        client = self.client
        assert client is not None
        for frame in frames:
            self.loop.call_soon_threadsafe(client.send, None, frame)

    def close(self) -> None:
        if self.client is not None:
            future = asyncio.run_coroutine_threadsafe(self.client.close(), self.loop)
            future.result(DEADLINE_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE_S)
        self.loop.close()


def _rss_bytes(process: Process) -> int:
    status = Path(f"/proc/{process.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    created = Cluster(tmp_path)
    try:
        yield created
    finally:
        created.kill_all()


def test_four_honest_nodes_stay_equal_and_complete_against_one_hostile_client(
    cluster: Cluster,
) -> None:
    (port,) = free_ports(1)
    relay = f"ws://127.0.0.1:{port}"
    names = [f"node-{index}" for index in range(4)]
    for name in names:
        cluster.init(name, "--relay", relay, "--announce-ms", ANNOUNCE_MS)
    cluster.relayer(port)
    nodes = {name: cluster.node(name) for name in names}
    for node in nodes.values():
        node.wait_event("connected")
    before = {f"before the attack from {name}" for name in names}
    for name, node in nodes.items():
        node.type(f"before the attack from {name}")
    for node in nodes.values():
        node.wait_texts(before)

    victim = parse_node_id(cluster.ids["node-0"])
    hostile_client = HostileClient(relay)
    hostile_client.start()
    try:
        hostile_client.send(_hostile_frames(victim))
        hostile = "signed by the hostile client"
        for node in nodes.values():
            node.wait_texts({hostile})
        after = {f"after the attack from {name}" for name in names}
        for name, node in nodes.items():
            node.type(f"after the attack from {name}")
        everything = before | after | {hostile}
        for node in nodes.values():
            node.wait_texts(everything)
        assert_identical_histories(list(nodes.values()), everything)
        history = nodes["node-1"].ask("history")["entries"]
        (entry,) = [entry for entry in history if entry["text"] == hostile]
        assert entry["author"] != cluster.ids["node-0"]
        for name, node in nodes.items():
            assert _rss_bytes(node) < RSS_BOUND_BYTES, name
        for name, node in nodes.items():
            assert node.stop() == 0, f"{name}: {node.stderr_tail()}"
    finally:
        hostile_client.close()
