"""FastPay benchmark: four authorities of S shards each on this machine, JSON lines.

What runs on this machine during a run: every shard of all four authorities as a real
`synod fastpay server run` process (4 x S processes, each with its SQLite file, durable
before each reply) and this script, the load generator, one Python process.  Every
account pays its neighbour once.  For each transfer the load generator, on the clock:

1. signs the transfer order (the sender's signature) and sends it to all four
   authorities (to the shard of each that holds the sender);
2. checks votes as they arrive until a quorum (3 of 4) of valid votes is reached (a
   later fourth vote is received but not needed, so not checked), and builds the
   certificate from those three;
3. sends the certificate as a confirmation order to all four authorities and waits until
   every one of them has applied it.

Each authority checks the sender's signature and signs its vote, checks the three votes
of the certificate and, when the recipient lives in another of its shards (probability
(S-1)/S), signs a cross-shard update that the recipient's shard checks.

The crypto bound, measured in the same run with the same `synod.crypto` functions on
messages of the benchmark's sizes: the CPU time of all the signatures the protocol
requires per transfer across every process of the run,

    sign(order) + 4 x verify(order) + 4 x sign(vote) + 3 x verify(vote, client)
    + 4 x 3 x verify(certificate vote) + 4 x (S-1)/S x (sign + verify)(cross-shard),

divided over the machine's cores: `crypto_bound_per_s = cores / that`.  The figure is
`ratio_to_crypto_bound = transfers_per_s / crypto_bound_per_s`.  Because the load
generator and all shards share the cores, the measurement and the bound cover the same
work.  `cpu_us_per_transfer` splits the processes' CPU time (shards, load generator).

    python benchmarks/fastpay_bench.py [--quick] [--transfers N] [--max-in-flight M]
        [--shards 1,2,4]

`--replay-flood SECONDS` measures instead what replays of a public certificate cost one
shard process: four connections each keep 64 replays of an applied certificate in
flight while a fifth asks for an account every 50 ms; one JSON line with the replays
served per second and the query's latency, quiet and under the flood.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synod.crypto import KeyPair, node_id_text, verify
from synod.fastpay.config import AuthorityEntry, CommitteeFile, shard_router
from synod.fastpay.messages import (
    CROSS_SHARD_DOMAIN,
    REPLY_CODEC,
    REQUEST_CODEC,
    TRANSFER_ORDER_DOMAIN,
    VOTE_DOMAIN,
    AccountInfoRequest,
    AccountInfoResponse,
    AuthoritySignature,
    CertifiedTransferOrder,
    ConfirmationOrder,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    make_transfer_order,
    vote_is_valid,
)
from synod.fastpay.wallet import percentile
from synod.runtime.fastpay_node import (
    create_server_file,
    free_port_block,
    process_cpu_s,
    stop_processes,
)
from synod.runtime.rpc import RpcClient, RpcFailure, RpcResult
from synod.wire import canonical_bytes

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/report.py
from report import add_json_option, configure, emit

AUTHORITIES = 4
QUORUM = 3  # smallest weight above two thirds of 4
MEASUREMENT_ROUNDS = 7


# Runs `synod.cli.main` under cProfile counting CPU time (not wall time, which on a
# shared machine mostly measures waiting for a core); argv: the output file, then the
# command's arguments.
PROFILED_MAIN = """
import cProfile, runpy, sys, time
output = sys.argv[1]
sys.argv = ["synod", *sys.argv[2:]]
profiler = cProfile.Profile(time.process_time)
profiler.enable()
try:
    runpy.run_module("synod.cli.main", run_name="__main__")
finally:
    profiler.disable()
    profiler.dump_stats(output)
"""


class BenchFailed(Exception):
    """The run could not complete (a shard did not start, refused or failed)."""


# ---------------------------------------------------------------- the crypto bound


@dataclass(frozen=True, slots=True)
class CryptoCost:
    """CPU seconds of one signature and one check, over a transfer and over a certificate."""

    sign_s: float
    verify_s: float
    certificate_sign_s: float
    certificate_verify_s: float

    def per_transfer_s(self, shards: int) -> float:
        """CPU seconds of every signature the protocol requires for one transfer."""
        cross_shard = (shards - 1) / shards
        return (
            self.sign_s  # the sender signs its order
            + AUTHORITIES * self.verify_s  # each authority checks the order
            + AUTHORITIES * self.sign_s  # and signs its vote
            + QUORUM * self.verify_s  # the client checks a quorum of votes
            + AUTHORITIES * QUORUM * self.verify_s  # each authority checks the certificate
            + AUTHORITIES
            * cross_shard
            * (self.certificate_sign_s + self.certificate_verify_s)  # cross-shard update
        )


def measure_crypto_cost(repeats: int = 200) -> CryptoCost:
    """The fastest of several rounds of each signature operation, in process CPU time."""
    keys = KeyPair.from_seed(b"\x01" * 32)
    other = KeyPair.from_seed(b"\x02" * 32)
    transfer = Transfer(keys.node_id, other.node_id, 1, 0)
    order = make_transfer_order(keys, transfer)
    signed = transfer.signed_bytes()
    certificate = CertifiedTransferOrder(
        order=order,
        signatures=[AuthoritySignature(other.node_id, other.sign(VOTE_DOMAIN, signed))] * QUORUM,
    )
    certificate_bytes = canonical_bytes(certificate)
    certificate_signature = keys.sign(CROSS_SHARD_DOMAIN, certificate_bytes)

    def fastest_s(operation: Callable[[], object]) -> float:
        # Other load delays the work but does not make it cost more: take the fastest.
        rounds = []
        for _ in range(MEASUREMENT_ROUNDS):
            started = time.process_time()
            for _ in range(repeats):
                operation()
            rounds.append((time.process_time() - started) / repeats)
        return min(rounds)

    return CryptoCost(
        sign_s=fastest_s(lambda: keys.sign(TRANSFER_ORDER_DOMAIN, signed)),
        verify_s=fastest_s(
            lambda: verify(keys.node_id, TRANSFER_ORDER_DOMAIN, signed, order.signature)
        ),
        certificate_sign_s=fastest_s(lambda: keys.sign(CROSS_SHARD_DOMAIN, certificate_bytes)),
        certificate_verify_s=fastest_s(
            lambda: verify(
                keys.node_id, CROSS_SHARD_DOMAIN, certificate_bytes, certificate_signature
            )
        ),
    )


def cheaper(first: CryptoCost, second: CryptoCost) -> CryptoCost:
    """Each operation's lower measurement: the less disturbed one."""
    return CryptoCost(*(min(a, b) for a, b in zip(astuple(first), astuple(second), strict=True)))


def astuple(cost: CryptoCost) -> tuple[float, float, float, float]:
    return (cost.sign_s, cost.verify_s, cost.certificate_sign_s, cost.certificate_verify_s)


# ---------------------------------------------------------------- setup


@dataclass(frozen=True, slots=True)
class Setup:
    directory: Path
    committee: CommitteeFile
    authorities: list[KeyPair]
    accounts: list[KeyPair]


def prepare(directory: Path, shards: int, transfers: int) -> Setup:
    """Committee, server files and genesis for four authorities of `shards` shards."""
    authorities = [KeyPair.generate() for _ in range(AUTHORITIES)]
    entries: list[AuthorityEntry] = []
    taken: set[int] = set()
    for keys in authorities:
        base = free_port_block(shards)
        while taken & set(range(base, base + shards)):
            base = free_port_block(shards)
        taken |= set(range(base, base + shards))
        entries.append(AuthorityEntry(keys.node_id, "127.0.0.1", base, shards))
    (directory / "committee.json").write_text(
        "".join(json.dumps(entry.to_json()) + "\n" for entry in entries), encoding="utf-8"
    )
    for index, (entry, keys) in enumerate(zip(entries, authorities, strict=True)):
        create_server_file(directory / f"server{index}.json", keys, entry)  # mode 0600
    accounts = [KeyPair.generate() for _ in range(transfers)]
    (directory / "initial_accounts.txt").write_text(
        "".join(f"{node_id_text(keys.node_id)}:100\n" for keys in accounts), encoding="utf-8"
    )
    committee = CommitteeFile(tuple(entries), directory / "committee.json")
    return Setup(directory, committee, authorities, accounts)


def start_shards(
    setup: Setup, shards: int, profile: Path | None = None
) -> list[subprocess.Popen[str]]:
    processes: list[subprocess.Popen[str]] = []
    for index in range(AUTHORITIES):
        for shard in range(shards):
            profiler: list[str] = []
            if profile is not None:
                output = profile / f"shards{shards}-server{index}-shard{shard}.prof"
                profiler = ["-c", PROFILED_MAIN, str(output)]
            command = [
                sys.executable, *(profiler or ["-m", "synod.cli.main"]), "fastpay", "server",
                "--server", f"server{index}.json", "run", "--shard", str(shard),
                "--initial-accounts", "initial_accounts.txt", "--committee", "committee.json",
                "--log-level", "warning",
            ]  # fmt: skip
            log = setup.directory / f"server{index}-shard{shard}.log"
            with log.open("w") as stderr:
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=setup.directory,
                        stdout=subprocess.PIPE,
                        stderr=stderr,
                        text=True,
                    )
                )
    for process in processes:
        assert process.stdout is not None
        if not process.stdout.readline():
            raise BenchFailed(f"a shard did not start; logs in {setup.directory}")
    return processes


# ---------------------------------------------------------------- the load generator


class LoadGenerator:
    """Certify and confirm one transfer per account, at most `max_in_flight` at a time."""

    def __init__(self, setup: Setup, max_in_flight: int) -> None:
        self.setup = setup
        self.route = shard_router(setup.committee)
        self.names = [keys.node_id for keys in setup.authorities]
        self.clients: dict[tuple[str, int], RpcClient] = {}
        self.max_in_flight = max_in_flight
        self.latencies_ms: list[float] = []

    async def run(self) -> float:
        accounts = self.setup.accounts
        # `max_in_flight` workers take the next payment when theirs is confirmed (cheaper
        # than a task per payment waiting on a semaphore).
        payments = iter(
            [(keys, accounts[(index + 1) % len(accounts)]) for index, keys in enumerate(accounts)]
        )
        started = time.perf_counter()
        try:
            await asyncio.gather(*(self.worker(payments) for _ in range(self.max_in_flight)))
        finally:
            for client in self.clients.values():
                await client.close()
        return time.perf_counter() - started

    async def worker(self, payments: Iterator[tuple[KeyPair, KeyPair]]) -> None:
        for sender, recipient in payments:
            await self.transfer(sender, recipient)

    async def transfer(self, sender: KeyPair, recipient: KeyPair) -> None:
        started = time.perf_counter()
        order = make_transfer_order(sender, Transfer(sender.node_id, recipient.node_id, 1, 0))
        votes = await self.quorum_of_votes(order)
        if len(votes) < QUORUM:
            raise BenchFailed(f"no quorum of votes for {node_id_text(sender.node_id)}")
        confirmation = ConfirmationOrder(CertifiedTransferOrder(order=order, signatures=votes))
        applied = await asyncio.gather(*self.send_to_all(confirmation))
        for result in applied:
            if not isinstance(self.reply_of(result), AccountInfoResponse):
                raise BenchFailed(f"a confirmation was refused: {self.reply_of(result)}")
        self.latencies_ms.append((time.perf_counter() - started) * 1000)

    def quorum_of_votes(self, order: TransferOrder) -> asyncio.Future[list[AuthoritySignature]]:
        """Valid votes, checked as they arrive until a quorum; the rest is not checked."""
        quorum: asyncio.Future[list[AuthoritySignature]] = (
            asyncio.get_running_loop().create_future()
        )
        votes: list[AuthoritySignature] = []
        waiting = [AUTHORITIES]

        def arrived(result: asyncio.Future[RpcResult]) -> None:
            waiting[0] -= 1
            if quorum.done():
                return
            try:
                vote = self.reply_of(result.result())
            except BenchFailed as error:
                quorum.set_exception(error)
                return
            if (
                isinstance(vote, SignedTransferOrder)
                and vote.order == order
                and vote_is_valid(vote)
            ):
                votes.append(AuthoritySignature(vote.authority, vote.signature))
            if len(votes) == QUORUM or waiting[0] == 0:
                quorum.set_result(votes)

        for future in self.send_to_all(order):
            future.add_done_callback(arrived)
        return quorum

    def send_to_all(self, request: Any) -> list[asyncio.Future[RpcResult]]:
        """Send `request` to the shard of every authority that must handle it."""
        body = REQUEST_CODEC.encode(request)
        futures = []
        for name in self.names:
            address = self.route(name, request)
            assert address is not None
            client = self.clients.get(address)
            if client is None:
                client = self.clients[address] = RpcClient(address)
            futures.append(client.start_call(body, timeout_s=60))
        return futures

    @staticmethod
    def reply_of(outcome: RpcResult) -> Any:
        if isinstance(outcome, RpcFailure):
            raise BenchFailed(f"a shard failed: {outcome.reason}")
        return REPLY_CODEC.decode(outcome.body)


# ---------------------------------------------------------------- one run


def run_bench(
    shards: int, transfers: int, max_in_flight: int, profile: Path | None = None
) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    cost_before = measure_crypto_cost()
    with tempfile.TemporaryDirectory(prefix="synod-fastpay-bench-") as temporary:
        setup = prepare(Path(temporary), shards, transfers)
        processes = start_shards(setup, shards, profile)
        try:
            shard_cpu_before_s = sum(process_cpu_s(process.pid) for process in processes)
            own_cpu_before_s = time.process_time()
            generator = LoadGenerator(setup, max_in_flight)
            if profile is None:
                seconds = asyncio.run(generator.run())
            else:
                import cProfile

                with cProfile.Profile(time.process_time) as profiler:
                    seconds = asyncio.run(generator.run())
                profiler.dump_stats(profile / f"shards{shards}-load-generator.prof")
            own_cpu_s = time.process_time() - own_cpu_before_s
            shard_cpu_s = (
                sum(process_cpu_s(process.pid) for process in processes) - shard_cpu_before_s
            )
        finally:
            stop_processes(processes)
    cost = cheaper(cost_before, measure_crypto_cost())
    crypto_s = cost.per_transfer_s(shards)
    cores = os.cpu_count() or 1
    bound_per_s = cores / crypto_s
    done = len(generator.latencies_ms)
    throughput = done / seconds
    return {
        "benchmark": "fastpay-committee",
        "authorities": AUTHORITIES,
        "shards": shards,
        "processes": AUTHORITIES * shards + 1,
        "transfers": done,
        "max_in_flight": max_in_flight,
        "seconds": round(seconds, 3),
        "transfers_per_s": round(throughput, 1),
        "latency_p50_ms": round(percentile(generator.latencies_ms, 0.50), 2),
        "latency_p99_ms": round(percentile(generator.latencies_ms, 0.99), 2),
        "sign_us": round(cost.sign_s * 1e6, 1),
        "verify_us": round(cost.verify_s * 1e6, 1),
        "crypto_us_per_transfer": round(crypto_s * 1e6, 1),
        "cores": cores,
        "crypto_bound_per_s": round(bound_per_s, 1),
        "ratio_to_crypto_bound": round(throughput / bound_per_s, 3),
        "shard_cpu_us_per_transfer": round(shard_cpu_s / max(1, done) * 1e6, 1),
        "client_cpu_us_per_transfer": round(own_cpu_s / max(1, done) * 1e6, 1),
        # Other jobs on the machine take cores from the run: the load average (1 min)
        # before and after says how shared the machine was.
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        # The part of all the run's CPU time that the required signatures take: the ratio
        # to the bound that the run reaches when it has the cores to itself.
        "crypto_share_of_cpu": round(
            crypto_s / max(1e-9, (shard_cpu_s + own_cpu_s) / max(1, done)), 3
        ),
    }


# ---------------------------------------------------------------- replays of public material

FLOOD_CONNECTIONS = 4
FLOOD_PIPELINE = 64
PROBE_INTERVAL_S = 0.05


async def _flood(setup: Setup, seconds: float) -> dict[str, Any]:
    alice, bob = setup.accounts[0], setup.accounts[1]
    order = make_transfer_order(alice, Transfer(alice.node_id, bob.node_id, 5, 0))
    certificate = CertifiedTransferOrder(
        order=order,
        signatures=[
            AuthoritySignature(keys.node_id, keys.sign(VOTE_DOMAIN, order.transfer.signed_bytes()))
            for keys in setup.authorities[1:]
        ],
    )
    replay = REQUEST_CODEC.encode(ConfirmationOrder(certificate))
    query = REQUEST_CODEC.encode(AccountInfoRequest(account=bob.node_id))
    address = setup.committee.authorities[0].address(0)
    probe = RpcClient(address)
    applied = REPLY_CODEC.decode(_body(await probe.call(replay, timeout_s=30)))
    if not isinstance(applied, AccountInfoResponse):
        raise BenchFailed(f"the certificate was not applied: {applied}")
    quiet = [await _timed_ms(probe, query) for _ in range(20)]
    stop = time.monotonic() + seconds
    served = [0]

    async def flooder() -> None:
        client = RpcClient(address)
        while time.monotonic() < stop:
            batch = [client.start_call(replay, timeout_s=30) for _ in range(FLOOD_PIPELINE)]
            await asyncio.gather(*batch)
            served[0] += FLOOD_PIPELINE
        await client.close()

    loaded: list[float] = []

    async def prober() -> None:
        while time.monotonic() < stop:
            loaded.append(await _timed_ms(probe, query))
            await asyncio.sleep(PROBE_INTERVAL_S)  # a paced probe, not synchronisation

    started = time.monotonic()
    await asyncio.gather(*(flooder() for _ in range(FLOOD_CONNECTIONS)), prober())
    elapsed = time.monotonic() - started
    await probe.close()
    return {
        "benchmark": "fastpay-replay-flood",
        "seconds": round(elapsed, 2),
        "replays_per_s": round(served[0] / elapsed),
        "query_ms_quiet_p50": round(statistics.median(quiet), 2),
        "query_ms_under_flood_p50": round(statistics.median(loaded), 2),
        "query_ms_under_flood_max": round(max(loaded), 2),
    }


def _body(result: RpcResult) -> bytes:
    if isinstance(result, RpcFailure):
        raise BenchFailed(f"the shard failed: {result.reason}")
    return result.body


async def _timed_ms(client: RpcClient, request: bytes) -> float:
    started = time.perf_counter()
    _body(await client.call(request, timeout_s=30))
    return (time.perf_counter() - started) * 1000


def run_replay_flood(seconds: float) -> dict[str, Any]:
    """One authority's single shard, flooded with replays of an applied certificate."""
    with tempfile.TemporaryDirectory(prefix="synod-fastpay-flood-") as temporary:
        setup = prepare(Path(temporary), 1, 2)
        processes = start_shards(setup, 1)
        try:
            return asyncio.run(_flood(setup, seconds))
        finally:
            stop_processes(processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--transfers", type=int, default=3000)
    parser.add_argument("--max-in-flight", type=int, default=500)
    parser.add_argument("--shards", default="1,2,4", help="comma-separated shard counts")
    parser.add_argument(
        "--profile", type=Path, help="write cProfile files of every process to this folder"
    )
    parser.add_argument(
        "--replay-flood", type=float, metavar="SECONDS", help="measure replays instead"
    )
    add_json_option(parser)
    arguments = parser.parse_args()
    configure(arguments)
    if arguments.replay_flood:
        emit(run_replay_flood(arguments.replay_flood))
        return
    shard_counts = [int(part) for part in arguments.shards.split(",")]
    transfers = arguments.transfers
    if arguments.quick:
        shard_counts, transfers = [1, 2], 100
    for shards in shard_counts:
        line = run_bench(shards, transfers, arguments.max_in_flight, arguments.profile)
        emit(line)


if __name__ == "__main__":
    main()
