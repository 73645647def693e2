"""`synod fastpay client benchmark --processes 2` on real processes: every wallet pays
once, the parts are merged back into the accounts file and removed, and every
authority agrees with the wallets."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from synod.crypto import KeyPair
from synod.fastpay.client import Client
from synod.quorum.committee import Committee

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

sys.path.insert(0, str(Path(__file__).parent))
from test_fastpay_quickstart import free_port_blocks  # noqa: E402
from test_fastpay_recovery import client, start_shard, synod  # noqa: E402


def next_numbers(path: Path) -> list[int]:
    numbers = []
    for line in path.read_text().splitlines():
        wallet = json.loads(line)
        keys = KeyPair.from_seed(bytes.fromhex(wallet["secret_key"]))
        records = {bytes.fromhex(k): bytes.fromhex(v) for k, v in wallet["records"].items()}
        core = Client(keys, Committee.equal_weights([keys.node_id]), storage=records)
        assert core.pending is None
        numbers.append(core.next_sequence_number)
    return numbers


def test_a_benchmark_from_two_processes_pays_once_per_wallet(tmp_path: Path) -> None:
    lines = []
    for index, base in enumerate(free_port_blocks(4, 1), start=1):
        made = synod(
            tmp_path, "server", "--server", f"s{index}.json", "generate", "--port", str(base)
        )
        lines.append(made.stdout)
    (tmp_path / "committee.json").write_text("".join(lines))
    made = client(tmp_path, "create-accounts", "30", "--initial-funding", "10")
    (tmp_path / "initial_accounts.txt").write_text(made.stdout)
    shards = [start_shard(tmp_path, f"s{index}.json") for index in range(1, 5)]
    try:
        for shard in shards:
            assert shard.stdout is not None and '"ready"' in shard.stdout.readline()
        for run in (1, 2):
            done = client(tmp_path, "benchmark", "--processes", "2", "--json")
            assert done.returncode == 0, done.stderr[-2000:]
            summary = json.loads(done.stdout.splitlines()[-1])
            assert (summary["transfers"], summary["failed"], summary["processes"]) == (30, 0, 2)
            assert next_numbers(tmp_path / "accounts.json") == [run] * 30
            assert not [p for p in tmp_path.glob("accounts.json.part-*") if p.suffix != ".lock"]
        # Each wallet paid 1 twice and was paid 1 twice (rings within each part).
        first = json.loads((tmp_path / "accounts.json").read_text().splitlines()[0])
        balance = client(tmp_path, "query-balance", first["address"])
        assert balance.stdout.strip() == "10"
    finally:
        for shard in shards:
            shard.send_signal(signal.SIGTERM)
        for shard in shards:
            assert shard.wait(timeout=20) == 0
