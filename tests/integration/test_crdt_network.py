"""Real `synod crdt` processes on 127.0.0.1: a relayer and four nodes sharing a log, one
node killed and brought back (catch-up by heads from its SQLite state), a tampering
relayer, and nodes connected directly without a relayer.

Every wait is on a line the processes print (readiness, transactions, digests) or on
their exit, each with a deadline; nothing waits a fixed time."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synod.cli.cluster import WatchedProcess, free_ports, synod_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DEADLINE_S = 25.0
ANNOUNCE_MS = "250"


class Process(WatchedProcess):
    """A `synod crdt` process; its stdout JSON lines are collected by a thread."""

    def __init__(self, label: str, arguments: list[str], stderr_path: Path) -> None:
        super().__init__(label, arguments, stderr_path, deadline_s=DEADLINE_S)

    def type(self, text: str) -> None:
        self.send_line(text)

    def texts(self) -> set[str]:
        return {line["text"] for line in self.events("transaction")}

    def wait_texts(self, texts: set[str]) -> None:
        self.wait_for(lambda _: texts <= self.texts(), f"transactions {sorted(texts)}")

    def ask(self, command: str) -> dict[str, Any]:
        """Type a console command and wait for its answer (the next line of that event)."""
        count = sum(line["event"] == command for line in self.seen)
        self.type(f"/{command}")
        return self.wait_event(command, count + 1)


class Cluster:
    """Node directories made by `synod crdt init`, and the processes running them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: list[Process] = []
        self.lives: dict[str, int] = {}
        self.ids: dict[str, str] = {}

    def init(self, name: str, *options: str) -> str:
        result = subprocess.run(
            synod_command("crdt", "init", str(self.directory / name), *options, "--json"),
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        self.ids[name] = json.loads(result.stdout)["id"]
        return self.ids[name]

    def relayer(self, port: int, *options: str) -> Process:
        arguments = ["crdt", "relayer", "--port", str(port), *options]
        relayer = Process("relayer", arguments, self.directory / "relayer.stderr")
        self.processes.append(relayer)
        relayer.wait_event("ready")
        return relayer

    def node(self, name: str, *options: str) -> Process:
        life = self.lives.get(name, 0)
        self.lives[name] = life + 1
        stderr_path = self.directory / f"{name}.life{life}.stderr"
        node = Process(name, ["crdt", "run", str(self.directory / name), *options], stderr_path)
        self.processes.append(node)
        node.wait_event("ready")
        return node

    def kill_all(self) -> None:
        for process in self.processes:
            process.kill_if_running()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    created = Cluster(tmp_path)
    try:
        yield created
    finally:
        created.kill_all()


def assert_identical_histories(nodes: list[Process], texts: set[str]) -> None:
    """Every node holds the same updates, the same document and the same log."""
    digests = [node.ask("digest") for node in nodes]
    assert len({(d["document"], d["updates_digest"]) for d in digests}) == 1, digests
    histories = [node.ask("history")["entries"] for node in nodes]
    assert all(history == histories[0] for history in histories), histories
    assert sorted(entry["text"] for entry in histories[0]) == sorted(texts)


def test_four_nodes_and_a_relayer_agree_after_one_node_is_killed_and_comes_back(
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

    first = {f"first from {name}" for name in names}
    for name, node in nodes.items():
        node.type(f"first from {name}")
    for node in nodes.values():
        node.wait_texts(first)

    victim = nodes.pop("node-3")
    victim.process.send_signal(signal.SIGKILL)
    assert victim.process.wait(timeout=DEADLINE_S) == -signal.SIGKILL
    while_offline = {f"{name} while node-3 is offline #{n}" for name in nodes for n in (1, 2)}
    for text in sorted(while_offline):
        nodes[text.split()[0]].type(text)
    for node in nodes.values():
        node.wait_texts(first | while_offline)

    back = cluster.node("node-3")
    # Genesis + 4 first lines were persisted before they were shown.
    assert back.wait_event("ready")["restored_updates"] >= 5
    back.wait_texts(while_offline)  # caught up: received, not typed
    back.type("node-3 is back")
    nodes["node-3"] = back
    everything = first | while_offline | {"node-3 is back"}
    for name, node in nodes.items():
        node.wait_texts(everything - (first if name == "node-3" else set()))

    assert_identical_histories(list(nodes.values()), everything)
    for name, node in nodes.items():
        assert node.stop() == 0, f"{name}: {node.stderr_tail()}"


def test_nodes_stay_correct_behind_a_relayer_that_drops_reorders_replays_and_alters(
    cluster: Cluster,
) -> None:
    (port,) = free_ports(1)
    relay = f"ws://127.0.0.1:{port}"
    names = [f"node-{index}" for index in range(3)]
    for name in names:
        cluster.init(name, "--relay", relay, "--announce-ms", ANNOUNCE_MS)
    relayer = cluster.relayer(port, "--tamper", "0.2", "--tamper-seed", "7")
    nodes = [cluster.node(name) for name in names]
    texts = {f"{name} line {n}" for name in names for n in range(4)}
    for text in sorted(texts):
        nodes[int(text.split()[0][-1])].type(text)
    for node in nodes:
        node.wait_texts(texts)
    assert_identical_histories(nodes, texts)
    for node in nodes:
        assert node.stop() == 0, node.stderr_tail()
    assert relayer.stop() == 0
    # The relayer did tamper with what the nodes received (and the log above holds
    # exactly the typed lines: nothing altered was applied).
    stopped = relayer.wait_event("stopped")
    assert set(stopped["tampered"]) == {"replayed", "dropped", "altered", "reordered"}
    assert all(count > 0 for count in stopped["tampered"].values()), stopped


def test_nodes_connected_directly_catch_up_without_a_relayer(cluster: Cluster) -> None:
    names = ["alice", "bob", "carol"]
    ports = dict(zip(names, free_ports(3), strict=True))
    for name in names:
        cluster.init(name, "--listen", f"127.0.0.1:{ports[name]}", "--announce-ms", ANNOUNCE_MS)

    def peers_of(name: str) -> list[str]:
        options = []
        for other in names:
            if other != name:
                options += ["--peer", f"{other}={cluster.ids[other]}@127.0.0.1:{ports[other]}"]
        return options

    alice = cluster.node("alice", *peers_of("alice"))
    bob = cluster.node("bob", *peers_of("bob"))
    early = {"alice 1", "bob 1", "alice 2"}
    alice.type("alice 1")
    bob.type("bob 1")
    alice.type("alice 2")
    alice.wait_texts(early)
    bob.wait_texts(early)

    carol = cluster.node("carol", *peers_of("carol"))  # was never online: catches up
    carol.wait_texts(early)
    carol.type("carol 1")
    everything = early | {"carol 1"}
    for node in (alice, bob):
        node.wait_texts(everything)
    assert_identical_histories([alice, bob, carol], everything)
    for node in (alice, bob, carol):
        assert node.stop() == 0, node.stderr_tail()
