"""One host with no key against a FastPay committee of real `synod fastpay` processes.

Four authorities of one shard each run as `synod fastpay server run` processes, set up
with the documented commands.  The attacker, at 127.0.0.2, goes after two of the four
shards (enough to deny a quorum if it worked): it holds 1,100 idle connections to each
(more than the old 1,024-connection cap), trickles header bytes (slowloris), and opens
100 frames announcing 4 MiB each and sending 1 MiB of them.  While it does, an honest
user at 127.0.0.1 queries a balance and pays with `synod fastpay client`, which must
succeed, and each attacked shard must stay up with its resident memory under a bound:
its idle size plus 96 MiB (the receive budget of one host is 32 MiB; the rest is
per-connection buffers of the admitted connections and allocator slack).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ATTACKER = "127.0.0.2"
AUTHORITIES = 4
RSS_GROWTH_BOUND_BYTES = 96 * 1024 * 1024
DEADLINE_S = 30.0


def synod(*arguments: str, cwd: Path, timeout_s: float = DEADLINE_S) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "synod.cli.main", "fastpay", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_s,
    )
    assert done.returncode == 0, f"{arguments}: {done.stderr[-2000:]}"
    return done.stdout


def free_ports(count: int) -> list[int]:
    sys.path.insert(0, str(Path(__file__).parents[1] / "integration"))
    from test_fastpay_quickstart import free_port_blocks

    return free_port_blocks(count, 1)


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def committee(tmp_path: Path) -> Iterator[tuple[Path, list[subprocess.Popen[str]], list[int]]]:
    ports = free_ports(AUTHORITIES)
    lines = []
    for index, port in enumerate(ports, start=1):
        generate = ["--server", f"server{index}.json", "generate", "--host", "127.0.0.1"]
        lines.append(synod("server", *generate, "--port", str(port), "--shards", "1", cwd=tmp_path))
    (tmp_path / "committee.json").write_text("".join(lines))
    genesis = synod(
        "client", "--committee", "committee.json", "--accounts", "accounts.json",
        "create-accounts", "2", "--initial-funding", "100",
        cwd=tmp_path,
    )  # fmt: skip
    (tmp_path / "initial_accounts.txt").write_text(genesis)
    processes = []
    for index in range(1, AUTHORITIES + 1):
        process = subprocess.Popen(
            [
                sys.executable, "-m", "synod.cli.main", "fastpay", "server",
                "--server", f"server{index}.json", "run", "--shard", "0",
                "--initial-accounts", "initial_accounts.txt", "--committee", "committee.json",
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=(tmp_path / f"server{index}.stderr").open("wb"),
            text=True,
        )  # fmt: skip
        processes.append(process)
    try:
        for process in processes:
            assert process.stdout is not None
            ready = json.loads(process.stdout.readline())
            assert ready["event"] == "ready"
        yield tmp_path, processes, ports
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


async def open_from_attacker(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))


async def attack(port: int) -> list[asyncio.StreamWriter]:
    """Idle sockets, slowloris headers and unfinished 4 MiB frames, all held open."""
    held: list[asyncio.StreamWriter] = []
    for _ in range(1_100):
        try:
            _, writer = await open_from_attacker(port)
        except OSError:
            continue
        held.append(writer)
    for number in range(150):
        try:
            _, writer = await open_from_attacker(port)
        except OSError:
            continue
        if number < 50:
            writer.write(b"\x00")  # one byte of a header, then nothing
        else:
            writer.write(struct.pack(">I", 4 * 1024 * 1024) + b"x" * (1024 * 1024))
        held.append(writer)
    for writer in held:
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.drain(), 1.0)
    return held


def test_an_outsider_holding_sockets_and_unfinished_frames_denies_no_one(
    committee: tuple[Path, list[subprocess.Popen[str]], list[int]],
) -> None:
    directory, processes, ports = committee
    accounts = [
        line.split(":")[0]
        for line in (directory / "initial_accounts.txt").read_text().splitlines()
    ]
    victims = processes[:2]
    idle_rss = [resident_bytes(process.pid) for process in victims]

    async def scenario() -> list[asyncio.StreamWriter]:
        held = []
        for port in ports[:2]:
            held.extend(await attack(port))
        return held

    loop = asyncio.new_event_loop()
    try:
        held = loop.run_until_complete(scenario())
        client = ["client", "--committee", "committee.json", "--accounts", "accounts.json"]
        balance = synod(*client, "query-balance", accounts[0], cwd=directory)
        assert balance.strip() == "100"
        paid = synod(*client, "transfer", "10", "--from", accounts[0], "--to", accounts[1],
                     cwd=directory)  # fmt: skip
        assert "confirmed" in paid
        assert synod(*client, "query-balance", accounts[1], cwd=directory).strip() == "110"
        for process, before in zip(victims, idle_rss, strict=True):
            assert process.poll() is None, "an attacked shard died"
            growth = resident_bytes(process.pid) - before
            assert growth < RSS_GROWTH_BOUND_BYTES, f"shard grew by {growth / 2**20:.0f} MiB"
        for writer in held:
            writer.transport.abort()
    finally:
        loop.close()
    for process in processes:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    logged = sum(
        len((directory / f"server{index}.stderr").read_bytes().splitlines())
        for index in (1, 2)
    )
    assert logged < 200, f"{logged} log lines for one attack: warnings are not throttled"

