"""What an honest user in a hurry does, through `synod fastpay` on real processes: retry a
failed transfer, finish it, restore a wallet from its key alone, query with an authority
down, start again from new keys next to old stores, fund a genesis beyond 2^63-1.

Expected balances are hand computed from the genesis (100 each) and the payments made.
Every wait is on a process exit or a ready line, each with a deadline."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

sys.path.insert(0, str(Path(__file__).parent))
from test_fastpay_quickstart import free_port_blocks  # noqa: E402
from test_fastpay_recovery import client, start_shard, synod  # noqa: E402


def generate_committee(directory: Path) -> None:
    lines = []
    for index, base in enumerate(free_port_blocks(4, 1), start=1):
        made = synod(
            directory, "server", "--server", f"s{index}.json", "generate", "--port", str(base)
        )
        assert made.returncode == 0, made.stderr
        lines.append(made.stdout)
    (directory / "committee.json").write_text("".join(lines))


def failed_shard(directory: Path, server: str) -> subprocess.CompletedProcess[str]:
    """Run shard 0 of `server`, expecting it to refuse to start."""
    return synod(
        directory, "server", "--server", server, "run", "--shard", "0",
        "--initial-accounts", "initial_accounts.txt", "--committee", "committee.json",
    )  # fmt: skip


def started(directory: Path, indexes: range) -> dict[int, subprocess.Popen[str]]:
    shards = {index: start_shard(directory, f"s{index}.json") for index in indexes}
    for shard in shards.values():
        assert shard.stdout is not None and '"ready"' in shard.stdout.readline()
    return shards


def stop(shards: dict[int, subprocess.Popen[str]]) -> None:
    for shard in shards.values():
        if shard.poll() is None:
            shard.send_signal(signal.SIGTERM)
    for shard in shards.values():
        assert shard.wait(timeout=20) == 0


def test_a_retried_transfer_pays_once_and_a_restored_wallet_is_usable(tmp_path: Path) -> None:
    generate_committee(tmp_path)
    made = client(tmp_path, "create-accounts", "2", "--initial-funding", "100")
    (tmp_path / "initial_accounts.txt").write_text(made.stdout)
    first, second = (line.split(":")[0] for line in made.stdout.split())
    shards = started(tmp_path, range(1, 3))  # two authorities of four: no quorum
    try:
        failed = client(
            tmp_path, "--timeout-ms", "500", "transfer", "10", "--from", first, "--to", second
        )
        assert failed.returncode == 1 and "stays pending" in failed.stderr
        assert "Traceback" not in failed.stderr
        shards |= started(tmp_path, range(3, 5))
        retried = client(tmp_path, "transfer", "10", "--from", first, "--to", second)
        assert retried.returncode == 0, retried.stderr
        assert "this same payment, paid once" in retried.stderr
        assert retried.stdout.startswith("transfer #0 of 10 confirmed")
        balances = [client(tmp_path, "query-balance", a).stdout.strip() for a in (first, second)]
        assert balances == ["90", "110"]  # not 80 and 120
        nothing = client(tmp_path, "finish", "--from", first)
        assert (nothing.returncode, nothing.stdout.strip()) == (0, "nothing is pending")

        # The first wallet restored from its key alone, in a file of its own.
        wallet = json.loads((tmp_path / "accounts.json").read_text().splitlines()[0])
        restored = ("--accounts", "restored.json")
        synced = subprocess.run(
            [sys.executable, "-m", "synod.cli.main", "fastpay", "client",
             "--committee", "committee.json", *restored, "restore-account"],
            input=wallet["secret_key"] + "\n", cwd=tmp_path, capture_output=True,
            text=True, check=False, timeout=30,
        )  # fmt: skip
        assert synced.returncode == 0, synced.stderr
        address, summary = synced.stdout.splitlines()
        assert address == first and summary.startswith("next transfer #1; 1 transfers")
        assert "known balance 90" in summary
        again = client(tmp_path, *restored, "sync", first)
        assert again.stdout.startswith("next transfer #1; 0 transfers")
        # The second account pays the first from its own wallet; the restored one spends
        # everything, that payment included.
        paid = client(tmp_path, "transfer", "5", "--from", second, "--to", first)
        assert paid.returncode == 0, paid.stderr
        spent = client(tmp_path, *restored, "transfer", "95", "--from", first, "--to", second)
        assert spent.returncode == 0, spent.stderr
        assert spent.stdout.startswith("transfer #1 of 95 confirmed")
        assert client(tmp_path, "query-balance", second).stdout.strip() == "200"

        # One authority down: a quorum's agreeing answers suffice, no waiting for it.
        stop({4: shards.pop(4)})
        query = client(tmp_path, "--timeout-ms", "600000", "query-balance", second)
        assert (query.returncode, query.stdout.strip()) == (0, "200")
    finally:
        stop(shards)


def test_new_keys_refuse_old_stores_and_a_genesis_above_the_supply_bound(tmp_path: Path) -> None:
    generate_committee(tmp_path)
    made = client(tmp_path, "create-accounts", "1", "--initial-funding", "100")
    (tmp_path / "initial_accounts.txt").write_text(made.stdout)
    stop(started(tmp_path, range(1, 2)))
    assert (tmp_path / "s1.shard-0.sqlite").exists()

    # The quickstart's clean-up, then a fresh start: the old SQLite files are still there.
    for path in [*tmp_path.glob("*.json"), *tmp_path.glob("*.txt")]:
        path.unlink()
    generate_committee(tmp_path)
    # The client refuses to make such a genesis; an edited (or hand-written) one reaches
    # the shard, which must refuse it too.
    made = client(tmp_path, "create-accounts", "3", "--initial-funding", "100")
    addresses = [line.partition(":")[0] for line in made.stdout.splitlines() if line.strip()]
    assert len(addresses) == 3
    (tmp_path / "initial_accounts.txt").write_text(
        "".join(f"{address}:{2**63 - 1}\n" for address in addresses)
    )
    refused = failed_shard(tmp_path, "s1.json")
    assert refused.returncode == 2
    assert "total supply would exceed" in refused.stderr
    assert "initial_accounts.txt:2" in refused.stderr

    made = client(tmp_path, "create-accounts", "1", "--initial-funding", "100")
    (tmp_path / "initial_accounts.txt").write_text(made.stdout)
    refused = failed_shard(tmp_path, "s1.json")
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "s1.shard-0.sqlite" in lines[0], refused.stderr
    assert "belong to authority" in lines[0] and "Traceback" not in refused.stderr
