"""`synod crdt init-network | up | submit | status | logs | down`: a relayer and BFT-CRDT
nodes started in the background with one command, a line submitted to one node reaching
every node, and nothing left running afterwards (real processes on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from synod.cli.cluster import synod_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEADLINE_S = 30.0
NODES = [f"node-{index}" for index in range(3)]


def synod(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        synod_command(*arguments), capture_output=True, text=True, check=False, timeout=60
    )


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/cmdline").read_bytes() != b""


def status_rows(directory: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    done = synod("crdt", "status", str(directory), "--json")
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    return done.returncode, {row["name"]: row for row in rows}


def wait_for_entries(directory: Path, count: int) -> dict[str, dict[str, Any]]:
    """Poll `status` until every node reports `count` entries (under a deadline)."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        code, rows = status_rows(directory)
        if code == 0 and all(rows[name].get("entries") == count for name in NODES):
            return rows
        assert time.monotonic() < deadline, f"entries never reached {count}: {rows}"
        time.sleep(0.1)


def test_a_crdt_network_comes_up_takes_a_line_everywhere_reports_and_goes_down(
    tmp_path: Path,
) -> None:
    network = tmp_path / "net"
    init = synod("crdt", "init-network", str(network), "--nodes", "3", "--json")
    assert init.returncode == 0, init.stderr
    ids = {line["name"]: line["id"] for line in map(json.loads, init.stdout.splitlines())}
    assert sorted(ids) == NODES
    up = synod("crdt", "up", str(network))
    try:
        assert up.returncode == 0, up.stderr
        assert [line.split()[0] for line in up.stdout.splitlines()] == ["relayer", *NODES]
        control = network / "node-1" / "control.sock"
        assert stat.S_IMODE(control.stat().st_mode) == 0o600  # only its user signs with it
        submitted = synod("crdt", "submit", str(network), "node-1", "hello", "/not a command")
        assert submitted.returncode == 0, submitted.stderr
        rows = wait_for_entries(network, 2)
        assert {rows[name]["document"] for name in NODES} == {rows["node-0"]["document"]}
        assert all(rows[name]["relay_connected"] for name in NODES)
        assert rows["relayer"]["state"] == "running"
        table = synod("crdt", "status", str(network))
        assert table.returncode == 0
        assert all(len(line) <= 80 for line in table.stdout.splitlines())
        # every node printed both transactions, signed by node-1, in its log file
        for name in NODES:
            lines = (network / "logs" / f"{name}.out").read_text().splitlines()
            texts = [
                (entry["author"], entry["text"])
                for entry in map(json.loads, lines)
                if entry["event"] == "transaction"
            ]
            assert texts == [(ids["node-1"], "hello"), (ids["node-1"], "/not a command")]
        logs = synod("crdt", "logs", str(network), "-n", "1")
        assert "node-2.out:" in logs.stdout and "relayer.out:" in logs.stdout
        os.kill(rows["node-2"]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + DEADLINE_S
        while pid_alive(rows["node-2"]["pid"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        code, after_kill = status_rows(network)
        assert code == 1
        assert after_kill["node-2"]["state"] == "down"
        assert after_kill["node-0"]["state"] == "answering"
        refused = synod("crdt", "submit", str(network), "node-2", "to a dead node")
        assert refused.returncode == 1 and "synod crdt up" in refused.stderr
    finally:
        down = synod("crdt", "down", str(network))
    assert down.returncode == 0, down.stderr
    outcome = dict(line.split(maxsplit=1) for line in down.stdout.splitlines())
    assert outcome == {"relayer": "stopped", "node-0": "stopped", "node-1": "stopped",
                       "node-2": "not running"}  # fmt: skip
    assert not any(pid_alive(rows[name]["pid"]) for name in ["relayer", *NODES])
    assert not (network / "node-1" / "control.sock").exists()
    after = synod("crdt", "status", str(network))
    assert after.returncode == 1 and "not up" in after.stderr


def test_up_refuses_nodes_that_do_not_share_one_relayer(tmp_path: Path) -> None:
    network = tmp_path / "net"
    for name, port in (("alice", 7400), ("bob", 7401)):
        relay = f"ws://127.0.0.1:{port}"
        assert synod("crdt", "init", str(network / name), "--relay", relay).returncode == 0
    up = synod("crdt", "up", str(network))
    assert up.returncode == 1 and "one relayer" in up.stderr
    assert not (network / "processes.json").exists()
    empty = synod("crdt", "up", str(tmp_path))
    assert empty.returncode == 1 and "init-network" in empty.stderr


def test_status_finds_a_node_run_by_hand_with_a_control_socket(tmp_path: Path) -> None:
    network = tmp_path / "net"
    assert synod("crdt", "init-network", str(network), "--nodes", "2").returncode == 0
    node = subprocess.Popen(  # one node by hand, no `up`: no processes.json
        synod_command("crdt", "run", "node-0", "--control", "node-0/control.sock"),
        cwd=network, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert node.stdout is not None
        assert json.loads(node.stdout.readline())["event"] == "ready"
        code, rows = status_rows(network)
        assert code == 1  # node-1 never started
        assert rows["node-0"]["state"] == "answering" and rows["node-0"]["entries"] == 0
        assert rows["node-1"]["state"] == "down"
        assert synod("crdt", "submit", str(network), "node-0", "by hand").returncode == 0
        assert status_rows(network)[1]["node-0"]["entries"] == 1
    finally:
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=DEADLINE_S) == 0
    after = synod("crdt", "status", str(network))
    assert after.returncode == 1 and "not up" in after.stderr
