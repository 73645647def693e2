"""Four real `synod scp run` processes on 127.0.0.1 agreeing on a replicated log: values
handed over with `synod scp submit`, one node killed with SIGKILL and restarted from its
SQLite file, every node's log the same slot by slot, all stopped with SIGTERM (exit 0).

Every wait is on a line the processes print (readiness, externalized slots) or on their
exit, each with a deadline; nothing waits a fixed time."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.cli.cluster import WatchedProcess, free_ports, synod_command
from synod.runtime.scp_node import read_log
from synod.scp.log import compare_logs, decode_batch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NODES = 4
DEADLINE_S = 30.0


def synod(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        synod_command(*arguments), capture_output=True, text=True, check=False, timeout=60
    )


class NodeProcess(WatchedProcess):
    """One `synod scp run` process; its stdout JSON lines are collected by a thread."""

    def __init__(self, directory: Path, name: str, life: int) -> None:
        super().__init__(
            name,
            ["scp", "run", str(directory), name],
            directory / f"{name}.life{life}.stderr",
            deadline_s=DEADLINE_S,
            stdin=False,
        )

    def slots(self) -> dict[int, list[str]]:
        return {line["slot"]: line["entries"] for line in self.events("externalized")}

    def wait_entries(self, entries: set[str]) -> None:
        self.wait_for(
            lambda _: entries <= {e for batch in self.slots().values() for e in batch},
            f"externalizing {sorted(entries)}",
        )


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Path, dict[str, NodeProcess]]]:
    ports = free_ports(2 * NODES)
    initialised = synod(
        "scp",
        "init",
        str(tmp_path),
        "--ports",
        ",".join(map(str, ports[:NODES])),
        "--submit-ports",
        ",".join(map(str, ports[NODES:])),
    )
    assert initialised.returncode == 0, initialised.stderr
    nodes = {f"node-{i}": NodeProcess(tmp_path, f"node-{i}", 0) for i in range(NODES)}
    try:
        yield tmp_path, nodes
    finally:
        for node in nodes.values():
            node.kill_if_running()


def submit(directory: Path, node: str, *values: str) -> None:
    result = synod("scp", "submit", str(directory), node, *values)
    assert result.returncode == 0, result.stderr


def test_nodes_externalize_the_same_log_across_a_kill_and_restart(
    network: tuple[Path, dict[str, NodeProcess]],
) -> None:
    directory, nodes = network
    for node in nodes.values():
        node.wait_ready()

    first = {f"first from {name}" for name in nodes}
    for name in nodes:
        submit(directory, name, f"first from {name}")
    for node in nodes.values():
        node.wait_entries(first)

    victim = nodes["node-3"]
    # node-3 answers only once the entry is in its store, so the entry survives the kill
    submit(directory, "node-3", "stored by node-3 before the kill")
    victim.process.send_signal(signal.SIGKILL)
    assert victim.process.wait(timeout=DEADLINE_S) == -signal.SIGKILL
    victim.collect_after_exit()
    printed_before_kill = victim.slots()

    survivors = {name: node for name, node in nodes.items() if name != "node-3"}
    second = {f"second from {name}" for name in survivors}
    for name in survivors:
        submit(directory, name, f"second from {name}")
    for node in survivors.values():  # three of four: a quorum of every survivor's slice
        node.wait_entries(second)

    restarted = NodeProcess(directory, "node-3", 1)
    ready = restarted.wait_ready()
    # everything it printed was committed first, so its store holds at least those slots
    assert ready["restored_slots"] >= len(printed_before_kill)
    nodes["node-3"] = restarted
    submit(directory, "node-3", "third from node-3")
    everything = first | second | {"stored by node-3 before the kill", "third from node-3"}
    # a restarted node does not print restored slots again, and the SIGKILL may have
    # fallen between a commit and its print: what its store held at restart counts too
    restored = read_log(directory / "node-3.sqlite") or {}
    already = {e for batch in printed_before_kill.values() for e in batch}
    already |= {e for value in restored.values() for e in decode_batch(value) or []}
    for name, node in nodes.items():
        node.wait_entries(everything - already if name == "node-3" else everything)

    # what each process printed agrees slot by slot, across node-3's two lives
    printed = {name: node.slots() for name, node in nodes.items()}
    printed["node-3"] = {**printed_before_kill, **restarted.slots()}
    for name, slots in printed.items():
        for slot, entries in slots.items():
            assert entries == printed["node-0"].get(slot, entries), (name, slot)

    for node in nodes.values():
        node.process.send_signal(signal.SIGTERM)
    for name, node in nodes.items():
        assert node.process.wait(timeout=DEADLINE_S) == 0, name

    # the stores: the same value for every slot on every node, each entry exactly once
    logs = {name: read_log(directory / f"{name}.sqlite") or {} for name in nodes}
    comparison = compare_logs(logs)
    assert comparison.agree and comparison.complete, comparison
    logged = [e for value in logs["node-0"].values() for e in decode_batch(value) or []]
    assert sorted(logged) == sorted(everything)
    status = synod("scp", "status", str(directory), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["agree"] is True
