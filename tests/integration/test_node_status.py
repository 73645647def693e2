"""Running nodes answer status over the network: `synod tusk status`, `synod fastpay
status` and `synod scp status` ask each process on its request port (round or slot,
lag, pending work, links) and say which node is down, without opening a SQLite file
(real processes on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from synod.cli.cluster import free_ports, synod_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEADLINE_S = 30.0


def synod(*arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        synod_command(*arguments), capture_output=True, text=True, check=False, timeout=60,
        cwd=cwd, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


def rows_of(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + DEADLINE_S
    while Path(f"/proc/{pid}/cmdline").exists() and Path(f"/proc/{pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_tusk_cores_answer_their_round_and_a_killed_core_is_reported_down(
    tmp_path: Path,
) -> None:
    ports = ",".join(str(port) for port in free_ports(4))
    assert synod("tusk", "init", str(tmp_path), "--ports", ports).returncode == 0
    up = synod("tusk", "up", str(tmp_path))
    try:
        assert up.returncode == 0, up.stderr
        submitted = synod("tusk", "submit", str(tmp_path), "--core", "core-1", "--wait", "x")
        assert submitted.returncode == 0, submitted.stderr
        # the stores are moved away: whatever status says, it did not read them
        for store in tmp_path.glob("*.sqlite"):
            store.rename(store.with_suffix(".moved"))
        status = synod("tusk", "status", str(tmp_path), "--json")
        assert status.returncode == 0, status.stderr
        rows = rows_of(status)
        cores = [rows[f"core-{index}"] for index in range(4)]
        assert all(row["state"] == "running" and row["protocol"] == "tusk" for row in cores)
        # a committed transaction needs a leader round (2) plus its support round
        assert all(row["progress_name"] == "round" and row["progress"] >= 2 for row in cores)
        furthest = max(row["progress"] for row in cores)
        assert all(row["lag"] == furthest - row["progress"] for row in cores)
        assert all(row["details"]["committed"] >= 1 for row in cores)
        assert rows["driver-0"]["state"] == "running"  # no port: its process is shown
        assert sum(row["peers_connected"] for row in cores) >= 4  # the driver and submit
        kill(rows["core-3"]["pid"])
        after = synod("tusk", "status", str(tmp_path))
        assert after.returncode == 1
        lines = {line.split()[0]: line for line in after.stdout.splitlines()[1:]}
        assert lines["core-3"].split()[1] == "down" and "no answer" in lines["core-3"]
        assert lines["core-0"].split()[1] == "running"
        assert all(len(line) <= 80 for line in after.stdout.splitlines())
    finally:
        down = synod("tusk", "down", str(tmp_path))
    assert down.returncode == 0, down.stderr
    stopped = synod("tusk", "status", str(tmp_path), "--json")
    assert stopped.returncode == 1
    assert {row["state"] for row in rows_of(stopped).values()} == {"down"}


def test_fastpay_shards_answer_status_and_scp_nodes_their_slot(tmp_path: Path) -> None:
    """FastPay: a committee of one-shard authorities; SCP: four nodes after an entry."""
    committee = ""
    for index, port in enumerate(free_ports(4), start=1):
        server = ["fastpay", "server", "--server", f"server{index}.json", "generate",
                  "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        generated = synod(*server, cwd=tmp_path)
        assert generated.returncode == 0, generated.stderr
        committee += generated.stdout
    (tmp_path / "committee.json").write_text(committee)
    genesis = synod("fastpay", "client", "--committee", "committee.json", "--accounts",
                    "accounts.json", "create-accounts", "2", cwd=tmp_path)  # fmt: skip
    (tmp_path / "initial_accounts.txt").write_text(genesis.stdout)
    up = synod("fastpay", "up", str(tmp_path))
    try:
        assert up.returncode == 0, up.stderr
        status = synod("fastpay", "status", str(tmp_path), "--json")
        assert status.returncode == 0, status.stderr
        rows = rows_of(status)
        assert sorted(rows) == [f"server{index}.shard-0" for index in range(1, 5)]
        assert all(row["protocol"] == "fastpay" for row in rows.values())
        # every account lives in shard 0 of each authority: both are held everywhere
        assert all(row["details"]["accounts"] == 2 for row in rows.values())
    finally:
        assert synod("fastpay", "down", str(tmp_path)).returncode == 0

    network = tmp_path / "scp"
    ports = [str(port) for port in free_ports(8)]
    init = synod("scp", "init", str(network), "--nodes", "4", "--ports", ",".join(ports[:4]),
                 "--submit-ports", ",".join(ports[4:]))  # fmt: skip
    assert init.returncode == 0, init.stderr
    up = synod("scp", "up", str(network))
    try:
        assert up.returncode == 0, up.stderr
        assert synod("scp", "submit", str(network), "node-2", "hello").returncode == 0
        deadline = time.monotonic() + DEADLINE_S
        while True:
            status = synod("scp", "status", str(network), "--json")
            live = {row["name"]: row for row in json.loads(status.stdout)["live"]}
            if all(row.get("progress", 0) >= 1 for row in live.values()):
                break
            assert time.monotonic() < deadline, live
            time.sleep(0.1)
        assert all(row["peers_connected"] == 3 and row["peers"] == 3 for row in live.values())
        assert all(row["lag"] == 0 and row["pending"] == 0 for row in live.values())
        kill(live["node-0"]["pid"])
        table = synod("scp", "status", str(network))
        states = dict(line.split()[:2] for line in table.stderr.splitlines()[1:])
        assert states == {"node-0": "down", "node-1": "running", "node-2": "running",
                          "node-3": "running"}  # fmt: skip
    finally:
        assert synod("scp", "down", str(network)).returncode == 0
