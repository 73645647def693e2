"""Four real `synod scp run` processes; one is stopped while the other three decide 300
slots (far beyond the 64 slots of statements a node retains), then restarted: it
fetches every slot it missed from its peers, each with a quorum's signed proof checked
against its own quorum set, and every node's log is equal slot by slot.  Then the same
with peers that keep 8 decisions and 4 slots of statements while the node misses 60:
it rejoins from checkpoints (log segments whose chain head a slice attested).

Every wait is on a line the processes print or on their exit, each with a deadline;
nothing waits a fixed time."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.cli.cluster import WatchedProcess, free_ports, synod_command
from synod.runtime.scp_node import read_log, submit_entries
from synod.scp.log import compare_logs
from synod.scp.network import load_network

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NODES = 4
SLOTS_AWAY = 300
DEADLINE_S = 150.0
"""Generous: a deadline only decides how long a failure takes to show; under a loaded
machine (the suite on both cores) the 300-slot catch-up has taken over 60 s."""
FAST_TIMINGS = {"nomination_timeout_ms": 20, "ballot_timeout_ms": 50, "rebroadcast_ms": 100}
"""Short timeouts: the slots follow each other quickly on 127.0.0.1."""


class NodeProcess(WatchedProcess):
    def __init__(self, directory: Path, name: str, life: int) -> None:
        super().__init__(
            name,
            ["scp", "run", str(directory), name],
            directory / f"{name}.life{life}.stderr",
            deadline_s=DEADLINE_S,
            stdin=False,
        )

    def entries(self) -> set[str]:
        return {e for line in self.events("externalized") for e in line["entries"]}

    def wait_entries(self, entries: set[str]) -> None:
        self.wait_for(lambda _: entries <= self.entries(), f"{len(entries)} entries")


CHECKPOINT_SETTINGS = {"retained_slots": 4, "retained_decisions": 8, "checkpoint_interval": 4}
"""Peers keep far less than the 60 slots the node misses: only checkpoints bridge it."""


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Path, dict[str, NodeProcess]]]:
    yield from started_network(tmp_path, FAST_TIMINGS)


@pytest.fixture
def forgetful_network(tmp_path: Path) -> Iterator[tuple[Path, dict[str, NodeProcess]]]:
    yield from started_network(tmp_path, {**FAST_TIMINGS, **CHECKPOINT_SETTINGS})


def started_network(
    tmp_path: Path, settings: dict[str, int]
) -> Iterator[tuple[Path, dict[str, NodeProcess]]]:
    ports = free_ports(2 * NODES)
    initialised = subprocess.run(
        synod_command(
            "scp",
            "init",
            str(tmp_path),
            "--ports",
            ",".join(map(str, ports[:NODES])),
            "--submit-ports",
            ",".join(map(str, ports[NODES:])),
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert initialised.returncode == 0, initialised.stderr
    path = tmp_path / "network.toml"
    text = path.read_text(encoding="utf-8")
    for key, value in settings.items():
        lines = [line for line in text.splitlines() if line.startswith(f"{key} = ")]
        text = text.replace(lines[0], f"{key} = {value}")
    path.write_text(text, encoding="utf-8")
    nodes = {f"node-{i}": NodeProcess(tmp_path, f"node-{i}", 0) for i in range(NODES)}
    try:
        yield tmp_path, nodes
    finally:
        for node in nodes.values():
            node.kill_if_running()


def test_a_node_down_for_300_slots_rejoins_and_every_log_is_equal(
    network: tuple[Path, dict[str, NodeProcess]],
) -> None:
    away_and_back(network, SLOTS_AWAY)


def test_a_node_down_beyond_what_peers_keep_rejoins_from_checkpoints(
    forgetful_network: tuple[Path, dict[str, NodeProcess]],
) -> None:
    """Before checkpoints the node was told `SlotsUnavailable` and stayed behind."""
    away_and_back(forgetful_network, 60)


def away_and_back(network: tuple[Path, dict[str, NodeProcess]], slots_away: int) -> None:
    directory, nodes = network
    config = load_network(directory)
    address = {entry.name: (entry.host, entry.submit_port) for entry in config.nodes}
    for node in nodes.values():
        node.wait_ready()
    asyncio.run(submit_entries(address["node-0"], ["before"]))
    for node in nodes.values():
        node.wait_entries({"before"})

    away = nodes["node-3"]
    away.process.send_signal(signal.SIGTERM)
    assert away.process.wait(timeout=DEADLINE_S) == 0
    away.collect_after_exit()

    # one entry per slot: each is submitted once the previous one is decided
    survivor = nodes["node-0"]
    missed = [f"while away {number:03d}" for number in range(slots_away)]
    for entry in missed:
        asyncio.run(submit_entries(address["node-0"], [entry]))
        survivor.wait_entries({entry})

    returned = NodeProcess(directory, "node-3", 1)
    nodes["node-3"] = returned
    returned.wait_ready()
    asyncio.run(submit_entries(address["node-3"], ["after"]))
    everything = {"before", "after", *missed}
    for name, node in nodes.items():
        node.wait_entries(everything if name != "node-3" else {*missed, "after"})

    for node in nodes.values():
        node.process.send_signal(signal.SIGTERM)
    for name, node in nodes.items():
        assert node.process.wait(timeout=DEADLINE_S) == 0, name
    logs = {name: read_log(directory / f"{name}.sqlite") or {} for name in nodes}
    comparison = compare_logs(logs)
    assert comparison.agree and comparison.complete, comparison
    assert len(logs["node-3"]) >= slots_away + 2
    assert sorted(logs["node-3"]) == list(range(1, len(logs["node-3"]) + 1))
