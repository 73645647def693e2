"""`synod <protocol> up | status | logs | down`: a whole local network in the background,
started and stopped with one command each (real processes on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from synod.cli.cluster import free_ports, synod_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


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


def test_a_reliable_broadcast_network_comes_up_reports_and_goes_down(tmp_path: Path) -> None:
    ports = ",".join(str(port) for port in free_ports(4))
    assert synod("rbc", "init", str(tmp_path), "--ports", ports).returncode == 0
    up = synod("rbc", "up", str(tmp_path))
    assert up.returncode == 0, up.stderr
    try:
        assert [line.split()[0] for line in up.stdout.splitlines()] == [
            f"node-{index}" for index in range(4)
        ]
        again = synod("rbc", "up", str(tmp_path))
        assert again.returncode == 1 and "already up" in again.stderr
        status = synod("rbc", "status", str(tmp_path), "--json")
        assert status.returncode == 0, status.stderr
        entries = [json.loads(line) for line in status.stdout.splitlines()]
        assert all(entry["running"] and pid_alive(entry["pid"]) for entry in entries)
        assert all(json.loads(entry["last"])["event"] == "ready" for entry in entries)
        logs = synod("rbc", "logs", str(tmp_path), "-n", "1")
        assert "node-3.out:" in logs.stdout and '"event": "ready"' in logs.stdout
    finally:
        down = synod("rbc", "down", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert [line.split() for line in down.stdout.splitlines()] == [
        [f"node-{index}", "stopped"] for index in range(4)
    ]
    assert not any(pid_alive(entry["pid"]) for entry in entries)
    after = synod("rbc", "status", str(tmp_path))
    assert after.returncode == 1 and "not up" in after.stderr


def test_a_process_that_cannot_start_fails_up_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    ports = ",".join(str(port) for port in free_ports(2))
    assert synod("rbc", "init", str(tmp_path), "--nodes", "2", "--ports", ports).returncode == 0
    (tmp_path / "node-1.key").write_text("not a key\n")
    up = synod("rbc", "up", str(tmp_path), "--timeout", "20")
    assert up.returncode == 1
    assert "node-1 exited before it was ready" in up.stderr
    assert not (tmp_path / "processes.json").exists()
    status = synod("rbc", "status", str(tmp_path))
    assert status.returncode == 1


def test_a_fastpay_committee_laid_out_as_the_quickstart_comes_up_and_pays(
    tmp_path: Path,
) -> None:
    def fastpay(*arguments: str) -> str:
        done = subprocess.run(
            synod_command("fastpay", *arguments), cwd=tmp_path, capture_output=True,
            text=True, check=False, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    sys.path.insert(0, str(Path(__file__).parent))
    from test_fastpay_quickstart import free_port_blocks

    committee = ""
    for index, base in enumerate(free_port_blocks(4, 2), start=1):
        server = ["server", "--server", f"server{index}.json", "generate", "--host", "127.0.0.1"]
        committee += fastpay(*server, "--port", str(base), "--shards", "2")
    (tmp_path / "committee.json").write_text(committee)
    genesis = fastpay("client", "--committee", "committee.json", "--accounts", "accounts.json",
                      "create-accounts", "2", "--initial-funding", "100")  # fmt: skip
    (tmp_path / "initial_accounts.txt").write_text(genesis)
    up = synod("fastpay", "up", str(tmp_path))
    try:
        assert up.returncode == 0, up.stderr
        assert len(up.stdout.splitlines()) == 8  # 4 authorities x 2 shards
        first, second = (line.split(":")[0] for line in genesis.splitlines())
        client = ["client", "--committee", "committee.json", "--accounts", "accounts.json"]
        assert "confirmed" in fastpay(*client, "transfer", "10", "--from", first, "--to", second)
        assert fastpay(*client, "query-balance", second).strip() == "110"
    finally:
        down = synod("fastpay", "down", str(tmp_path))
    assert down.returncode == 0 and len(down.stdout.splitlines()) == 8


def test_an_scp_log_network_comes_up_takes_an_entry_and_goes_down(tmp_path: Path) -> None:
    ports = [str(port) for port in free_ports(8)]  # not the defaults: others may hold them
    init = synod("scp", "init", str(tmp_path / "net"), "--nodes", "4",
                 "--ports", ",".join(ports[:4]), "--submit-ports", ",".join(ports[4:]))  # fmt: skip
    assert init.returncode == 0, init.stderr
    up = synod("scp", "up", str(tmp_path / "net"))
    try:
        assert up.returncode == 0, up.stderr
        submitted = synod("scp", "submit", str(tmp_path / "net"), "node-1", "hello")
        assert submitted.returncode == 0, submitted.stderr
        status = synod("scp", "status", str(tmp_path / "net"), "--json")
        assert status.returncode == 0, status.stderr  # the logs agree
        assert json.loads(status.stdout)["agree"] is True
        assert [line.split()[:2] for line in status.stderr.splitlines()[1:]] == [
            [f"node-{index}", "running"] for index in range(4)
        ]  # each node answered over its submit port (the first line is the header)
    finally:
        down = synod("scp", "down", str(tmp_path / "net"))
    assert down.returncode == 0 and len(down.stdout.splitlines()) == 4
