"""Interrupted transfers are finished, never signed anew: a transfer made while the
authorities are down stays pending in the wallet and the next `transfer` resumes it; a
`client benchmark` killed with SIGKILL mid-run leaves its signed orders in the accounts
file and the next run completes them as its own payments (never paying twice), with
every authority agreeing with the wallets."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synod.crypto import KeyPair
from synod.fastpay.client import Client
from synod.fastpay.messages import REPLY_CODEC, REQUEST_CODEC, AccountInfoRequest, shard_of
from synod.quorum.committee import Committee
from synod.runtime.rpc import RpcClient, RpcReply

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

sys.path.insert(0, str(Path(__file__).parent))
from test_fastpay_quickstart import free_port_blocks  # noqa: E402


def synod(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synod.cli.main", "fastpay", *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def client(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    base = ("client", "--committee", "committee.json", "--accounts", "accounts.json")
    return synod(directory, *base, *arguments)


def start_shard(directory: Path, server: str, shard: int = 0) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "synod.cli.main", "fastpay", "server", "--server", server,
        "run", "--shard", str(shard), "--initial-accounts", "initial_accounts.txt",
        "--committee", "committee.json",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=directory, stdout=subprocess.PIPE, text=True)


def test_an_interrupted_transfer_is_resumed_then_the_new_one_is_made(tmp_path: Path) -> None:
    committee = []
    for index, base in enumerate(free_port_blocks(4, 1), start=1):
        made = synod(
            tmp_path, "server", "--server", f"s{index}.json", "generate", "--port", str(base)
        )
        assert made.returncode == 0, made.stderr
        committee.append(made.stdout)
    (tmp_path / "committee.json").write_text("".join(committee))
    made = client(tmp_path, "create-accounts", "2", "--initial-funding", "50")
    (tmp_path / "initial_accounts.txt").write_text(made.stdout)
    first, second = (line.split(":")[0] for line in made.stdout.split())

    down = client(tmp_path, "--timeout-ms", "300", "transfer", "5", "--from", first, "--to", second)
    assert down.returncode == 1 and "stays pending" in down.stderr

    shards = [start_shard(tmp_path, f"s{index}.json") for index in range(1, 5)]
    try:
        for shard in shards:
            assert shard.stdout is not None and '"ready"' in shard.stdout.readline()
        resumed = client(tmp_path, "transfer", "7", "--from", first, "--to", second)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming the interrupted transfer #0" in resumed.stderr
        assert resumed.stdout.startswith("transfer #1 of 7 confirmed")
        balances = [client(tmp_path, "query-balance", a).stdout.strip() for a in (first, second)]
        assert balances == ["38", "62"]  # 50 - 5 - 7 and 50 + 5 + 7
        wallets = [
            json.loads(line) for line in (tmp_path / "accounts.json").read_text().splitlines()
        ]
        assert len(wallets) == 2
    finally:
        for shard in shards:
            shard.send_signal(signal.SIGTERM)
        for shard in shards:
            assert shard.wait(timeout=20) == 0


def wait_until_stopped(pid: int) -> None:
    """SIGSTOP takes effect asynchronously: wait until the kernel reports it (state T)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] in {"T", "t", "Z"}:
            return
        time.sleep(0.001)  # polling interval of a condition that has a deadline
    raise AssertionError("the client did not stop")


def wallet_states(path: Path) -> dict[bytes, tuple[int, bool]]:
    """(next sequence number, order pending) of every wallet, read by the client core."""
    states = {}
    for line in path.read_text().splitlines():
        wallet = json.loads(line)
        keys = KeyPair.from_seed(bytes.fromhex(wallet["secret_key"]))
        records = {bytes.fromhex(k): bytes.fromhex(v) for k, v in wallet["records"].items()}
        core = Client(keys, Committee.equal_weights([keys.node_id]), storage=records)
        states[keys.node_id] = (core.next_sequence_number, core.pending is not None)
    return states


def test_a_client_killed_mid_benchmark_resumes_every_order_it_signed(tmp_path: Path) -> None:
    accounts, shards = 200, 2
    committee = []
    for index, base in enumerate(free_port_blocks(4, shards), start=1):
        made = synod(
            tmp_path, "server", "--server", f"s{index}.json", "generate",
            "--port", str(base), "--shards", str(shards),
        )  # fmt: skip
        committee.append(made.stdout)
    (tmp_path / "committee.json").write_text("".join(committee))
    made = client(tmp_path, "create-accounts", str(accounts), "--initial-funding", "10")
    (tmp_path / "initial_accounts.txt").write_text(made.stdout)
    processes = [
        start_shard(tmp_path, f"s{index}.json", shard)
        for index in range(1, 5)
        for shard in range(shards)
    ]
    try:
        for process in processes:
            assert process.stdout is not None and '"ready"' in process.stdout.readline()
        base = ("client", "--committee", "committee.json", "--accounts", "accounts.json")
        benchmark = subprocess.Popen(
            [sys.executable, "-m", "synod.cli.main", "fastpay", *base,
             "benchmark", "--processes", "1", "--max-in-flight", "4"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        # Freeze the client when its wallets show progress and an order in flight, then
        # kill it: the wallets are exactly what the killed process last made durable.
        deadline = time.monotonic() + 30
        interrupted: dict[bytes, tuple[int, bool]] = {}
        while time.monotonic() < deadline and benchmark.poll() is None:
            benchmark.send_signal(signal.SIGSTOP)
            wait_until_stopped(benchmark.pid)
            interrupted = wallet_states(tmp_path / "accounts.json")
            progress = sum(number for number, _ in interrupted.values())
            if progress >= 8 and any(pending for _, pending in interrupted.values()):
                break
            benchmark.send_signal(signal.SIGCONT)
            time.sleep(0.02)  # polling interval of a condition that has a deadline
        assert benchmark.poll() is None, "the benchmark ended before it could be killed"
        benchmark.send_signal(signal.SIGKILL)
        benchmark.communicate()
        assert interrupted == wallet_states(tmp_path / "accounts.json")
        assert any(pending for _, pending in interrupted.values()), "no order was in flight"

        again = client(tmp_path, "benchmark", "--processes", "1", "--max-in-flight", "50")
        assert again.returncode == 0, again.stdout + again.stderr[-2000:]
        assert again.stdout.startswith(f"{accounts} transfers confirmed")
        final = wallet_states(tmp_path / "accounts.json")
        for account, (number, pending) in final.items():
            before, was_pending = interrupted[account]
            assert not pending
            # One transfer per wallet per run: an order left pending by the killed run is
            # finished as this run's payment, never followed by a second one.
            assert number == before + 1, (before, was_pending, number)

        entries = [json.loads(line) for line in committee]

        async def next_numbers(account: bytes) -> list[int]:
            numbers = []
            for entry in entries:
                address = (entry["host"], entry["port"] + shard_of(account, shards))
                rpc = RpcClient(address)
                request = REQUEST_CODEC.encode(AccountInfoRequest(account=account))
                reply = await rpc.call(request, timeout_s=5)
                await rpc.close()
                assert isinstance(reply, RpcReply)
                numbers.append(REPLY_CODEC.decode(reply.body).next_sequence_number)
            return numbers

        for account, (number, _) in final.items():
            numbers = asyncio.run(next_numbers(account))
            # No authority applied a transfer the wallet does not know of, and a quorum
            # applied every one it knows of.
            assert max(numbers) == number and sorted(numbers)[1] == number
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=20)
