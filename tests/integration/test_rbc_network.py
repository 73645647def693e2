"""Four real `synod rbc run` processes on 127.0.0.1: reliable broadcast over TCP, one node
killed with SIGKILL and restarted from its SQLite file, then all stopped with SIGTERM.

Every wait is on a line the processes print (readiness, deliveries) or on their exit,
each with a deadline; nothing waits a fixed time."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NODES = 4
DEADLINE_S = 20.0


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free now (held open together, so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def synod_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "synod.cli.main", *arguments]


class NodeProcess:
    """One `synod rbc run` process; its stdout JSON lines are collected by a thread."""

    def __init__(self, directory: Path, name: str, life: int) -> None:
        self.name = name
        self.stderr_path = directory / f"{name}.life{life}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                synod_command("rbc", "run", str(directory), name),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(json.loads(raw))

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
        """Collect lines until `predicate(all lines so far)` holds, within the deadline."""
        deadline = time.monotonic() + DEADLINE_S
        while not predicate(self.seen):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None:
                raise AssertionError(f"{self.name}: {what} did not happen; {self._stderr_tail()}")
            try:
                self.seen.append(self.lines.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                continue

    def wait_ready(self) -> dict[str, Any]:
        self.wait_for(lambda lines: any(line["event"] == "ready" for line in lines), "ready")
        return next(line for line in self.seen if line["event"] == "ready")

    def wait_payloads(self, payloads: set[str]) -> None:
        self.wait_for(
            lambda lines: payloads <= delivered_payloads(lines), f"delivery of {payloads}"
        )

    def propose(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def deliveries(self) -> list[tuple[str, int, str]]:
        return [
            (line["origin"], line["sequence"], line["payload"])
            for line in self.seen
            if line["event"] == "delivered"
        ]

    def _stderr_tail(self) -> str:
        return "stderr tail: " + self.stderr_path.read_text(errors="replace")[-2000:]


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
            if node.process.poll() is None:
                node.process.kill()
                node.process.wait()


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
        assert node.process.wait(timeout=DEADLINE_S) == 0, f"{name}: {node._stderr_tail()}"


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
