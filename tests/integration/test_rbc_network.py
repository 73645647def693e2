"""Four real `synod rbc run` processes on 127.0.0.1: reliable broadcast over TCP, one node
killed with SIGKILL and restarted from its SQLite file, then all stopped with SIGTERM.

Every wait is on a line the processes print (readiness, deliveries) or on their exit,
each with a deadline; nothing waits a fixed time."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synod.cli.cluster import WatchedProcess, free_ports, synod_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NODES = 4
DEADLINE_S = 20.0


class NodeProcess(WatchedProcess):
    """One `synod rbc run` process; its stdout JSON lines are collected by a thread."""

    def __init__(self, directory: Path, name: str, life: int) -> None:
        super().__init__(
            name,
            ["rbc", "run", str(directory), name],
            directory / f"{name}.life{life}.stderr",
            deadline_s=DEADLINE_S,
        )

    def wait_payloads(self, payloads: set[str]) -> None:
        self.wait_for(
            lambda lines: payloads <= delivered_payloads(lines), f"delivery of {payloads}"
        )

    def propose(self, text: str) -> None:
        self.send_line(text)

    def deliveries(self) -> list[tuple[str, int, str]]:
        return [
            (line["origin"], line["sequence"], line["payload"]) for line in self.events("delivered")
        ]


def delivered_payloads(lines: list[dict[str, Any]]) -> set[str]:
    return {line["payload"] for line in lines if line["event"] == "delivered"}


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Path, dict[str, NodeProcess]]]:
    ports = ",".join(str(port) for port in free_ports(NODES))
    initialised = subprocess.run(
        synod_command("rbc", "init", str(tmp_path), "--nodes", str(NODES), "--ports", ports),
        capture_output=True,
        text=True,
        check=False,
    )
    assert initialised.returncode == 0, initialised.stderr
    nodes = {f"node-{i}": NodeProcess(tmp_path, f"node-{i}", 0) for i in range(NODES)}
    try:
        yield tmp_path, nodes
    finally:
        for node in nodes.values():
            node.kill_if_running()


def test_nodes_deliver_the_same_set_across_a_kill_and_restart(
    network: tuple[Path, dict[str, NodeProcess]],
) -> None:
    directory, nodes = network
    for node in nodes.values():
        node.wait_ready()

    first = {f"first from {name}" for name in nodes}
    for name, node in nodes.items():
        node.propose(f"first from {name}")
    for node in nodes.values():
        node.wait_payloads(first)

    victim = nodes["node-3"]
    before_kill = victim.deliveries()
    victim.process.send_signal(signal.SIGKILL)
    assert victim.process.wait(timeout=DEADLINE_S) == -signal.SIGKILL

    survivors = {name: node for name, node in nodes.items() if name != "node-3"}
    second = {f"second from {name}" for name in survivors}
    for name, node in survivors.items():
        node.propose(f"second from {name}")
    for node in survivors.values():  # 3 of 4 alive: 2f + 1 with f = 1
        node.wait_payloads(second)

    restarted = NodeProcess(directory, "node-3", 1)
    ready = restarted.wait_ready()
    # Every delivery it printed was committed first, so the store has at least those.
    assert ready["restored_deliveries"] >= len(before_kill)
    nodes["node-3"] = restarted
    restarted.propose("third from node-3")
    everything = first | second | {"third from node-3"}
    for name, node in nodes.items():
        # The restarted process prints only what it delivers in its new life.
        printed_before = {payload for _, _, payload in before_kill} if name == "node-3" else set()
        node.wait_payloads(everything - printed_before)

    lives = {name: node.deliveries() for name, node in nodes.items()}
    lives["node-3"] = before_kill + restarted.deliveries()
    for name, deliveries in lives.items():
        instances = [(origin, sequence) for origin, sequence, _ in deliveries]
        assert len(instances) == len(set(instances)), f"{name} delivered an instance twice"
    sets = {name: set(deliveries) for name, deliveries in lives.items()}
    assert all(found == sets["node-0"] for found in sets.values()), sets
    assert {payload for _, _, payload in sets["node-0"]} == everything

    for node in nodes.values():
        node.process.send_signal(signal.SIGTERM)
    for name, node in nodes.items():
        assert node.process.wait(timeout=DEADLINE_S) == 0, f"{name}: {node.stderr_tail()}"


def test_a_burst_of_proposals_larger_than_the_window_is_delivered_everywhere(
    network: tuple[Path, dict[str, NodeProcess]],
) -> None:
    """The reliable-broadcast core accepts instances at most 64 ahead of an origin's
    lowest undelivered one; `synod rbc run` paces stdin so a long burst still completes."""
    _, nodes = network
    for node in nodes.values():
        node.wait_ready()
    burst = [f"burst {number}" for number in range(150)]
    node_0 = nodes["node-0"]
    assert node_0.process.stdin is not None
    node_0.process.stdin.write("".join(f"{line}\n" for line in burst).encode())
    node_0.process.stdin.flush()
    for node in nodes.values():
        node.wait_payloads(set(burst))
    # Per origin, instances are numbered in proposal order and delivered once each.
    for node in nodes.values():
        sequences = [sequence for _, sequence, payload in node.deliveries() if payload in burst]
        assert sorted(sequences) == list(range(150))
    for node in nodes.values():
        node.process.send_signal(signal.SIGTERM)
    for node in nodes.values():
        assert node.process.wait(timeout=DEADLINE_S) == 0
