"""An authority shard killed with SIGKILL under load and restarted from its SQLite file
keeps its promises: it never votes for two different orders for one account and
sequence number, and it loses no confirmation it acknowledged (nor any credit).

Four authorities of two shards each run as real `synod fastpay server run` processes.
The test is its own client (it signs orders and assembles certificates), so that it
sees every vote and acknowledgement of the victim shard.  Every wait is on a process
line or exit, or on replies, each with a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from synod.crypto import KeyPair, NodeId, parse_node_id
from synod.fastpay.checkers import final_balances
from synod.fastpay.messages import (
    REPLY_CODEC,
    REQUEST_CODEC,
    AccountInfoRequest,
    AccountInfoResponse,
    AuthoritySignature,
    CertifiedTransferOrder,
    ConfirmationOrder,
    ErrorKind,
    ErrorReply,
    SignedTransferOrder,
    Transfer,
    make_transfer_order,
    request_shard,
    shard_of,
    vote_is_valid,
)
from synod.runtime.rpc import RpcClient, RpcFailure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

AUTHORITIES = 4
SHARDS = 2
ACCOUNTS = 16
TRANSFERS_PER_ACCOUNT = 6
FUNDING = 100
KILL_AFTER_CERTIFICATES = 25
RESTART_AFTER_CERTIFICATES = 50
DEADLINE_S = 30.0

sys.path.insert(0, str(Path(__file__).parent))
from test_fastpay_quickstart import free_port_blocks  # noqa: E402


def synod(*arguments: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "synod.cli.main", "fastpay", *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


class Shard:
    """One `server run` process; `ready` waits for its readiness line."""

    def __init__(self, directory: Path, authority: int, shard: int, life: int) -> None:
        self.stderr_path = directory / f"a{authority}s{shard}.life{life}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "synod.cli.main",
                    "fastpay",
                    "server",
                    "--server",
                    f"server{authority}.json",
                    "run",
                    "--shard",
                    str(shard),
                    "--initial-accounts",
                    "initial_accounts.txt",
                    "--committee",
                    "committee.json",
                ],
                cwd=directory,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )

    def ready(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the process prints it once it listens
        assert line, f"no readiness line; {self.stderr_path.read_text()[-2000:]}"
        ready: dict[str, Any] = json.loads(line)
        assert ready["event"] == "ready"
        return ready


@dataclass
class Observations:
    """Everything the victim shard answered, in both of its lives."""

    victim: NodeId
    victim_shard: int
    votes: dict[tuple[bytes, int], set[Transfer]] = field(default_factory=dict)
    acknowledged: set[tuple[bytes, int]] = field(default_factory=set)
    certificates: list[CertifiedTransferOrder] = field(default_factory=list)


class Network:
    def __init__(self, committee: list[dict[str, Any]]) -> None:
        self.entries = {parse_node_id(entry["name"]): entry for entry in committee}
        self.clients: dict[tuple[str, int], RpcClient] = {}

    async def call(self, authority: NodeId, request: Any, timeout_s: float = 2.0) -> Any:
        entry = self.entries[authority]
        address = (entry["host"], entry["port"] + request_shard(request, entry["shards"]))
        client = self.clients.setdefault(address, RpcClient(address))
        result = await client.call(REQUEST_CODEC.encode(request), timeout_s=timeout_s)
        if isinstance(result, RpcFailure):
            return None
        return REPLY_CODEC.decode(result.body)

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


async def pay(
    network: Network, seen: Observations, keys: KeyPair, transfer: Transfer
) -> CertifiedTransferOrder | None:
    """Collect votes from every authority, certify, confirm; None without a quorum."""
    order = make_transfer_order(keys, transfer)
    members = sorted(network.entries)
    replies = await asyncio.gather(*(network.call(member, order) for member in members))
    votes = [
        reply
        for reply in replies
        if isinstance(reply, SignedTransferOrder)
        and reply.order.transfer == transfer
        and vote_is_valid(reply)
    ]
    for vote in votes:
        if vote.authority == seen.victim:
            key = (transfer.sender, transfer.sequence_number)
            seen.votes.setdefault(key, set()).add(vote.order.transfer)
    if len(votes) < 3:
        return None
    certificate = CertifiedTransferOrder(
        order=order,
        signatures=[AuthoritySignature(vote.authority, vote.signature) for vote in votes[:3]],
    )
    confirmation = ConfirmationOrder(certificate)
    answers = await asyncio.gather(*(network.call(member, confirmation) for member in members))
    applied = 0
    for member, answer in zip(members, answers, strict=True):
        if (
            isinstance(answer, AccountInfoResponse)
            and answer.next_sequence_number > transfer.sequence_number
        ):
            applied += 1
            if member == seen.victim:
                seen.acknowledged.add((transfer.sender, transfer.sequence_number))
    assert applied >= 3, "three live honest authorities must apply a valid certificate"
    return certificate


def test_a_shard_killed_under_load_keeps_its_votes_and_confirmations(tmp_path: Path) -> None:
    bases = free_port_blocks(AUTHORITIES, SHARDS)
    for index, base in enumerate(bases, start=1):
        synod(
            "server", "--server", f"server{index}.json", "generate",
            "--host", "127.0.0.1", "--port", str(base), "--shards", str(SHARDS),
            cwd=tmp_path,
        )  # fmt: skip
    committee_lines = []
    for index in range(1, AUTHORITIES + 1):
        server = json.loads((tmp_path / f"server{index}.json").read_text())
        committee_lines.append(json.dumps(server["authority"]))
    (tmp_path / "committee.json").write_text("\n".join(committee_lines) + "\n")
    genesis_text = synod(
        "client", "--committee", "committee.json", "--accounts", "accounts.json",
        "create-accounts", str(ACCOUNTS + 1), "--initial-funding", str(FUNDING),
        cwd=tmp_path,
    )  # fmt: skip
    (tmp_path / "initial_accounts.txt").write_text(genesis_text)
    wallets = [
        KeyPair.from_seed(bytes.fromhex(json.loads(line)["secret_key"]))
        for line in (tmp_path / "accounts.json").read_text().splitlines()
    ]
    committee = [json.loads(line) for line in committee_lines]

    shards = {
        (authority, shard): Shard(tmp_path, authority, shard, 0)
        for authority in range(1, AUTHORITIES + 1)
        for shard in range(SHARDS)
    }
    try:
        for process in shards.values():
            process.ready()
        asyncio.run(_exercise(tmp_path, shards, committee, wallets))
        for process in shards.values():
            process.process.send_signal(signal.SIGTERM)
        for process in shards.values():
            assert process.process.wait(timeout=DEADLINE_S) == 0
    finally:
        for process in shards.values():
            if process.process.poll() is None:
                process.process.kill()
                process.process.wait()


async def _exercise(
    directory: Path,
    shards: dict[tuple[int, int], Shard],
    committee: list[dict[str, Any]],
    wallets: list[KeyPair],
) -> None:
    network = Network(committee)
    victim = parse_node_id(committee[0]["name"])
    victim_shard = 0
    seen = Observations(victim, victim_shard)
    # A probe account in the victim's shard gets an order voted only by the victim: the
    # victim is locked on it when it dies.
    probe = next(keys for keys in wallets if shard_of(keys.node_id, SHARDS) == victim_shard)
    payers = [keys for keys in wallets if keys is not probe][:ACCOUNTS]
    locked = make_transfer_order(probe, Transfer(probe.node_id, payers[0].node_id, 7, 0))
    locked_vote = await network.call(victim, locked)
    assert isinstance(locked_vote, SignedTransferOrder)

    killed = asyncio.Event()
    restarted = asyncio.Event()
    acknowledged_before_kill: set[tuple[bytes, int]] = set()
    rng = random.Random(5)

    async def lifecycle() -> None:
        while len(seen.certificates) < KILL_AFTER_CERTIFICATES:
            await asyncio.sleep(0.005)  # polls the shared counter; not a synchronisation
        os.kill(shards[(1, victim_shard)].process.pid, signal.SIGKILL)
        shards[(1, victim_shard)].process.wait()
        acknowledged_before_kill.update(seen.acknowledged)
        killed.set()
        while len(seen.certificates) < RESTART_AFTER_CERTIFICATES:
            await asyncio.sleep(0.005)
        shards[(1, victim_shard)] = Shard(directory, 1, victim_shard, 1)
        await asyncio.to_thread(shards[(1, victim_shard)].ready)
        restarted.set()

    async def payer(keys: KeyPair) -> None:
        for number in range(TRANSFERS_PER_ACCOUNT):
            recipient = rng.choice([other for other in wallets if other is not keys])
            transfer = Transfer(keys.node_id, recipient.node_id, rng.randint(1, 5), number)
            certificate = await pay(network, seen, keys, transfer)
            assert certificate is not None, "three live authorities must vote"
            seen.certificates.append(certificate)

    watcher = asyncio.create_task(lifecycle())
    await asyncio.gather(*(payer(keys) for keys in payers))
    await asyncio.wait_for(watcher, DEADLINE_S)
    assert killed.is_set() and restarted.is_set()

    # 1. The lock survived: a conflicting order for the probe is refused, naming the vote.
    conflicting = make_transfer_order(probe, Transfer(probe.node_id, payers[1].node_id, 8, 0))
    refusal = await network.call(victim, conflicting)
    assert isinstance(refusal, ErrorReply)
    assert refusal.kind is ErrorKind.CONFLICTING_PENDING_ORDER
    assert refusal.pending == locked_vote
    assert await network.call(victim, locked) == locked_vote

    # 2. No confirmation it acknowledged before the kill was lost.
    for sender, number in sorted(acknowledged_before_kill):
        info = await network.call(victim, AccountInfoRequest(account=sender))
        assert isinstance(info, AccountInfoResponse)
        assert info.next_sequence_number > number, "an acknowledged confirmation was lost"
    assert acknowledged_before_kill, "the kill came after some confirmations"

    # 3. Over both lives it never voted for two transfers with one sequence number.
    for key, transfers in seen.votes.items():
        assert len(transfers) == 1, f"two votes for {key}"

    # 4. Brought up to date, every authority holds exactly the certified balances.
    for certificate in sorted(seen.certificates, key=lambda c: c.transfer.sequence_number):
        for member in sorted(network.entries):
            await network.call(member, ConfirmationOrder(certificate))
    genesis = {keys.node_id: FUNDING for keys in wallets}
    expected = final_balances(genesis, seen.certificates)
    deadline = time.monotonic() + DEADLINE_S
    for member in sorted(network.entries):
        while True:  # cross-shard credits are asynchronous: wait for them, with a deadline
            held = {}
            for keys in wallets:
                info = await network.call(member, AccountInfoRequest(account=keys.node_id))
                assert isinstance(info, AccountInfoResponse)
                held[keys.node_id] = info.balance
            if held == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert held == expected, f"balances differ at {member.hex()[:8]}"
    await network.close()
