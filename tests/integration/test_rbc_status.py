"""`synod rbc status` asks running reliable-broadcast members over the network, as
`synod scp|tusk|fastpay status` do: each member `up` starts answers status requests on a
port of its own (`synod rbc run --status-port`), and that port answers nothing else."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from synod.cli.cluster import WatchedProcess, free_ports, synod_command
from synod.rbc.core import CODEC, Initial
from synod.runtime.node_status import StatusReply, ask_status
from synod.runtime.rpc import RpcClient, RpcFailure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def synod(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        synod_command(*arguments),
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
    )


def rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in text.splitlines()[1:]}


def test_rbc_status_asks_each_member_and_names_the_one_that_is_down(tmp_path: Path) -> None:
    ports = ",".join(str(port) for port in free_ports(4))
    assert synod(tmp_path, "rbc", "init", "net", "--ports", ports).returncode == 0
    up = synod(tmp_path, "rbc", "up", "net")
    assert up.returncode == 0, up.stderr
    try:
        net = tmp_path / "net"
        status = synod(tmp_path, "rbc", "status", "net")
        assert status.returncode == 0, status.stderr
        assert status.stdout.splitlines()[0].split()[:3] == ["process", "state", "delivered"]
        table = rows(status.stdout)
        assert sorted(table) == [f"node-{index}" for index in range(4)]
        assert all(row[1] == "running" for row in table.values())
        assert all(len(line) <= 80 for line in status.stdout.splitlines())
        answers = [json.loads(line) for line in synod(tmp_path, "rbc", "status", "net", "--json")
                   .stdout.splitlines()]  # fmt: skip
        assert {answer["protocol"] for answer in answers} == {"rbc"}
        assert {answer["peers"] for answer in answers} == {3}
        recorded = json.loads((net / "processes.json").read_text())["processes"]
        os.kill(next(p["pid"] for p in recorded if p["name"] == "node-2"), signal.SIGKILL)
        after = synod(tmp_path, "rbc", "status", "net", "--timeout", "3")
        assert after.returncode == 1
        table = rows(after.stdout)
        assert table["node-2"][1] == "down"
        assert all(table[name][1] == "running" for name in ("node-0", "node-1", "node-3"))
    finally:
        down = synod(tmp_path, "rbc", "down", "net")
    assert down.returncode == 0, down.stderr


def test_a_member_counts_its_deliveries_and_its_status_port_refuses_other_requests(
    tmp_path: Path,
) -> None:
    ports = ",".join(str(port) for port in free_ports(4))
    assert synod(tmp_path, "rbc", "init", "net", "--ports", ports).returncode == 0
    members = [
        WatchedProcess(
            f"node-{index}",
            ["rbc", "run", str(tmp_path / "net"), f"node-{index}", "--status-port", "0"],
            tmp_path / f"node-{index}.err",
            deadline_s=30,
            stdin=index == 0,
        )
        for index in range(4)
    ]
    try:
        addresses = []
        for member in members:
            host, port = member.wait_ready()["status_address"].rsplit(":", 1)
            addresses.append((host, int(port)))
        for text in ("one", "two", "three"):
            members[0].send_line(text)
        for member in members:  # each of the three payloads, delivered once everywhere
            member.wait_event("delivered", 3)

        async def ask_all() -> list[StatusReply]:
            return [await ask_status(address, timeout_s=5) for address in addresses]

        replies = asyncio.run(ask_all())
        assert [reply.progress for reply in replies] == [3, 3, 3, 3]
        assert {(reply.protocol, reply.progress_name, reply.peers) for reply in replies} == {
            ("rbc", "delivered", 3)
        }
        assert replies[0].pending == 0  # its own three were delivered: none in flight

        async def outsider() -> tuple[object, StatusReply]:
            client = RpcClient(addresses[1])
            try:
                # a well-formed RBC message: a node's own request handler would queue
                # it for the core (which answers no requests: no reply, ever)
                request = CODEC.encode(Initial(sequence=0, payload=b"x"))
                refused = await client.call(request, timeout_s=5)
            finally:
                await client.close()
            return refused, await ask_status(addresses[1], timeout_s=5)

        refused, still = asyncio.run(outsider())
        # dropped at once, not left to time out: the request never reached the core
        assert isinstance(refused, RpcFailure), refused
        assert "no reply within" not in refused.reason, refused.reason
        assert still.progress == 3
    finally:
        for member in members:
            member.kill_if_running()
