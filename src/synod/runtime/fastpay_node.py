"""Run a FastPay authority shard on a real network and disk; benchmark one authority.

Theory of operation.  `FastPayShard` is one shard of one authority as a process-level
object: it holds an exclusive lock beside its SQLite file (one process per shard),
rebuilds the sans-I/O `synod.fastpay.authority.AuthorityShard` from the file's records
and the genesis, and serves it with a `synod.runtime.host.NodeHost` as a passive RPC
server on ``port + shard`` of its committee line.  The host commits every step's
records before any reply leaves, so an answered vote, lock or confirmation survives a
crash.  The shard's cross-shard calls to its own authority are routed to the sibling
shard's port (`synod.fastpay.config.shard_router`); its outbox is re-sent after a
restart.

The second half benchmarks one authority's shards as separate processes fed with
pre-signed orders and certificates (`run_local_bench`), against the cost of the
signatures the work requires, measured in the same run.

Failures are typed: `ShardAlreadyRunning`, `ShardRebuildFailed`, `ShardStoreMismatch`
(records made for another key, shard, committee or genesis; all `ShardError`),
`synod.runtime.storage.StorageError`, `OSError` when the port cannot be listened on,
`synod.runtime.host.HostFailed` from `serve`, `BenchFailed`.  Nothing here prints or
exits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from synod.crypto import KeyPair, verify
from synod.fastpay.authority import AuthorityShard, StoreMismatch
from synod.fastpay.config import (
    AuthorityEntry,
    CommitteeFile,
    ServerFile,
    encode_initial_accounts,
    shard_router,
)
from synod.fastpay.messages import (
    MESSAGE_CODEC,
    REPLY_CODEC,
    REQUEST_CODEC,
    AccountInfoResponse,
    AuthoritySignature,
    CertifiedTransferOrder,
    ConfirmationOrder,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    make_transfer_order,
    make_vote,
)
from synod.fastpay.wallet import percentile
from synod.quorum.committee import quorum_threshold_of
from synod.runtime.host import HostConfig, NodeHost
from synod.runtime.node_status import StatusReply, answer_status
from synod.runtime.rpc import RpcClient, RpcFailure
from synod.runtime.storage import SqliteStorage
from synod.wire import DecodeError


class ShardError(Exception):
    """A shard could not start."""


class ShardAlreadyRunning(ShardError):
    """Another process (or object) holds this shard's lock file."""


class ShardRebuildFailed(ShardError):
    """The shard's records do not rebuild a shard (the SQLite file was altered)."""


class ShardStoreMismatch(ShardError):
    """The SQLite file was made for another authority key, shard, committee or genesis."""


class BenchFailed(Exception):
    """The benchmark could not complete (a shard did not start, refused or failed)."""


# ---------------------------------------------------------------- one shard


class FastPayShard:
    """Shard `shard` of the authority of `keys`, listed in `committee`, served over TCP.

    `genesis` (account -> initial balance) must be the same at every start; the state
    lives in the SQLite file `storage_path` (with a ``.lock`` file beside it).  A
    committee line with port 0 and one shard listens on a port the system picks: read
    it from `address` (or `authority`, the line with that port) after `start`.

    `start` then `stop`, or ``async with``; `serve` runs until SIGINT/SIGTERM.
    """

    def __init__(
        self,
        keys: KeyPair,
        committee: CommitteeFile,
        shard: int,
        genesis: Mapping[bytes, int],
        storage_path: Path,
        *,
        config: HostConfig | None = None,
    ) -> None:
        entry = committee.find(keys.node_id)
        if entry is None:
            raise ValueError("this authority is not in the committee")
        if not 0 <= shard < entry.shards:
            raise ValueError(f"this authority has shards 0..{entry.shards - 1}")
        if entry.port == 0 and entry.shards > 1:
            raise ValueError("port 0 (any free port) is for authorities of one shard")
        self.keys = keys
        self.committee = committee
        self.entry = entry
        self.shard = shard
        self.genesis = dict(genesis)
        self.storage_path = storage_path
        self.config = config
        self.host: NodeHost | None = None
        self._lock: IO[str] | None = None

    @property
    def address(self) -> tuple[str, int]:
        """Where the shard listens (the port it got, once started)."""
        if self.host is not None and self.host.rpc_address is not None:
            return self.host.rpc_address
        return self.entry.address(self.shard)

    @property
    def authority(self) -> AuthorityEntry:
        """The authority's committee line, with the base port actually listened on."""
        return dataclasses.replace(self.entry, port=self.address[1] - self.shard)

    @property
    def core(self) -> AuthorityShard:
        """The running shard core (after `start`)."""
        if self.host is None:
            raise RuntimeError("the shard is not started")
        core = self.host.core
        assert isinstance(core, AuthorityShard)
        return core

    async def start(self) -> None:
        """Lock, rebuild from the SQLite file and the genesis, and listen."""
        if self.host is not None:
            raise RuntimeError("shard already started")
        lock_path = self.storage_path.with_name(self.storage_path.name + ".lock")
        self._lock = _lock_exclusively(lock_path)
        try:
            self.host = self._host(SqliteStorage.open(self.storage_path))
            await self.host.start(rpc_listen=self.entry.address(self.shard))
            assert self.host.rpc_server is not None
            answer_status(self.host.rpc_server, self.status)
        except BaseException:
            if self.host is not None:
                await self.host.stop()
                self.host = None
            self._unlock()
            raise

    def status(self) -> StatusReply:
        """What ``synod fastpay status`` asks over the shard's port: steps handled,
        clients connected, cross-shard updates not yet acknowledged plus requests
        waiting, and the accounts the shard holds (constant time)."""
        host, core = self.host, self.core
        assert host is not None
        server = host.rpc_server
        return StatusReply(
            protocol="fastpay",
            progress_name="steps",
            progress=host.steps_applied,
            peers=0,
            peers_connected=server.client_count if server is not None else 0,
            pending=len(core.outbox) + host.waiting_inputs,
            details={"shard": self.shard, "accounts": len(core.accounts)},
        )

    def _host(self, storage: SqliteStorage) -> NodeHost:
        try:
            core = AuthorityShard(
                self.keys,
                self.committee.committee(),
                shard=self.shard,
                shard_count=self.entry.shards,
                genesis=self.genesis,
                storage=storage.load(),
                network=self.committee.network,
            )
        except StoreMismatch as error:
            storage.close()
            raise ShardStoreMismatch(
                f"{self.storage_path}: {error}; refusing to serve them (move the file "
                "away, or give this shard another --storage)"
            ) from None
        except (DecodeError, AssertionError, ValueError) as error:
            storage.close()
            reason = str(error) or type(error).__name__
            raise ShardRebuildFailed(
                f"{self.storage_path}: cannot rebuild the shard: {reason}"
            ) from None
        # Bound to this identity before anything is served, durably.
        storage.apply(core.identity_records())
        return NodeHost(
            core,
            keys=self.keys,
            codec=MESSAGE_CODEC,
            storage=storage,
            route_call=shard_router(self.committee),
            config=self.config,
        )

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGINT/SIGTERM (starting first if needed), then stop cleanly.

        `on_ready` runs once the shard listens and the signal handlers are installed;
        raises `HostFailed` when the shard failed.
        """
        if self.host is None:
            await self.start()
        assert self.host is not None
        try:
            await self.host.serve(on_ready=on_ready)
        finally:
            self._unlock()

    async def stop(self) -> None:
        """Stop serving, close the SQLite file, release the lock (idempotent)."""
        if self.host is not None:
            await self.host.stop()
        self._unlock()

    async def __aenter__(self) -> FastPayShard:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _lock_exclusively(path: Path) -> IO[str]:
    try:
        handle = path.open("a")
    except OSError as error:
        raise ShardError(f"{path}: cannot open the lock file: {error}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ShardAlreadyRunning(f"{path}: this shard is already running") from None
    return handle


def create_server_file(path: Path, keys: KeyPair, authority: AuthorityEntry) -> ServerFile:
    """Write a new server file (mode 0600); `FileExistsError` rather than overwrite one."""
    server = ServerFile(keys, authority, path)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(server.encode())
    return server


# ---------------------------------------------------------------- benchmark helpers


def free_port_block(width: int, host: str = "127.0.0.1") -> int:
    """A base port with `width` consecutive ports free now (shard i on base + i)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10_000, 32_000 - width)  # below the ephemeral range
        sockets: list[socket.socket] = []
        try:
            for offset in range(width):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind((host, base + offset))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise OSError(f"no block of {width} free ports found on {host}")


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds a running process has used (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def measure_crypto_cost_s(shards: int, repeats: int = 200) -> float:
    """CPU seconds of signature work one authority does per transfer, measured now.

    Per transfer an authority verifies the sender's order, signs its vote, verifies the
    quorum of votes in the certificate and, when the recipient lives in another shard
    (probability (shards - 1) / shards), signs and verifies a cross-shard update.
    """
    signer = KeyPair.from_seed(b"\x01" * 32)
    message = b"\x02" * 120
    signature = signer.sign(b"bench", message)
    votes = quorum_threshold_of(4)

    def fastest_s(operation: Callable[[], object]) -> float:
        # CPU time of this process, the fastest of several rounds: other load on the
        # machine delays the work but does not make it cost more.
        rounds = []
        for _ in range(7):
            started = time.process_time()
            for _ in range(repeats):
                operation()
            rounds.append((time.process_time() - started) / repeats)
        return min(rounds)

    sign_s = fastest_s(lambda: signer.sign(b"bench", message))
    verify_s = fastest_s(lambda: verify(signer.node_id, b"bench", message, signature))
    cross_shard = (shards - 1) / shards
    return verify_s + sign_s + votes * verify_s + cross_shard * (sign_s + verify_s)


# ---------------------------------------------------------------- one authority's benchmark


@dataclass(frozen=True, slots=True)
class BenchSetup:
    """The files and the pre-signed workload of `run_local_bench`."""

    directory: Path
    committee: CommitteeFile
    target: AuthorityEntry
    orders: list[TransferOrder]
    certificates: list[CertifiedTransferOrder]


def prepare_bench(directory: Path, shards: int, transfers: int) -> BenchSetup:
    """Keys, files and the pre-signed workload: every account pays once."""
    authorities = [KeyPair.generate() for _ in range(4)]
    base = free_port_block(shards)
    entries = [AuthorityEntry(authorities[0].node_id, "127.0.0.1", base, shards)]
    entries += [
        AuthorityEntry(keys.node_id, "127.0.0.1", 1 + index * 1024, shards)
        for index, keys in enumerate(authorities[1:])
    ]
    committee = CommitteeFile(tuple(entries), directory / "committee.json")
    (directory / "committee.json").write_text(committee.encode(), encoding="utf-8")
    create_server_file(directory / "server.json", authorities[0], entries[0])
    accounts = [KeyPair.generate() for _ in range(transfers)]
    genesis = {bytes(keys.node_id): 100 for keys in accounts}
    (directory / "initial_accounts.txt").write_text(
        encode_initial_accounts(genesis), encoding="utf-8"
    )
    orders, certificates = [], []
    for index, keys in enumerate(accounts):
        recipient = accounts[(index + 1) % len(accounts)].node_id
        order = make_transfer_order(keys, Transfer(keys.node_id, recipient, 1, 0))
        signatures = [
            AuthoritySignature(voter.node_id, make_vote(voter, order).signature)
            for voter in authorities[1:]
        ]
        orders.append(order)
        certificates.append(CertifiedTransferOrder(order=order, signatures=signatures))
    return BenchSetup(directory, committee, entries[0], orders, certificates)


async def _drive_bench(setup: BenchSetup, max_in_flight: int) -> tuple[float, list[float]]:
    route = shard_router(setup.committee)
    clients: dict[tuple[str, int], RpcClient] = {}
    limit = asyncio.Semaphore(max_in_flight)
    latencies_ms: list[float] = []

    def prepared(request: Any) -> tuple[tuple[str, int], bytes]:
        # Routed and encoded before the clock starts: the load generator shares the CPU.
        address = route(setup.target.name, request)
        assert address is not None
        return address, REQUEST_CODEC.encode(request)

    work = [
        (prepared(order), prepared(ConfirmationOrder(certificate)))
        for order, certificate in zip(setup.orders, setup.certificates, strict=True)
    ]

    async def call(request: tuple[tuple[str, int], bytes]) -> Any:
        address, body = request
        client = clients.get(address)
        if client is None:
            client = clients[address] = RpcClient(address)
        result = await client.call(body, timeout_s=30)
        if isinstance(result, RpcFailure):
            raise BenchFailed(f"the shard at {address} failed: {result.reason}")
        return REPLY_CODEC.decode(result.body)

    async def one(order: Any, confirmation: Any) -> None:
        async with limit:
            started = time.perf_counter()
            vote = await call(order)
            if not isinstance(vote, SignedTransferOrder):
                raise BenchFailed(f"the authority refused an order: {vote}")
            applied = await call(confirmation)
            if not isinstance(applied, AccountInfoResponse):
                raise BenchFailed(f"the authority refused a confirmation: {applied}")
            latencies_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(order, confirmation) for order, confirmation in work))
    finally:
        for client in clients.values():
            await client.close()
    return time.perf_counter() - started, latencies_ms


def _start_shard_processes(
    directory: Path, shards: int, processes: list[subprocess.Popen[str]]
) -> None:
    """Start the shards, adding each to `processes` (for the caller to stop), and wait
    until each is ready."""
    for shard in range(shards):
        command = [
            sys.executable, "-m", "synod.cli.main", "fastpay", "server",
            "--server", "server.json", "run", "--shard", str(shard),
            "--initial-accounts", "initial_accounts.txt", "--committee", "committee.json",
        ]  # fmt: skip
        with (directory / f"shard-{shard}.log").open("w") as stderr:
            processes.append(
                subprocess.Popen(  # noqa: S603 - our own interpreter and module
                    command, cwd=directory, stdout=subprocess.PIPE, stderr=stderr, text=True
                )
            )
    for shard, process in enumerate(processes):
        assert process.stdout is not None
        if not process.stdout.readline():
            log_text = (directory / f"shard-{shard}.log").read_text()[-500:]
            raise BenchFailed(f"shard {shard} did not start: {log_text}")


def stop_processes(processes: list[subprocess.Popen[str]]) -> None:
    """SIGTERM every process still running, wait, SIGKILL what does not stop in 10 s."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_local_bench(shards: int, transfers: int, max_in_flight: int) -> dict[str, Any]:
    """Start one authority's `shards` shard processes, push `transfers` pre-signed
    orders and certificates through them, and compare with the crypto bound."""
    # Measured before and after the run; the lower figure is the less disturbed one.
    cost_before_s = measure_crypto_cost_s(shards)
    with tempfile.TemporaryDirectory(prefix="synod-fastpay-bench-") as temporary:
        setup = prepare_bench(Path(temporary), shards, transfers)
        processes: list[subprocess.Popen[str]] = []
        try:
            _start_shard_processes(Path(temporary), shards, processes)
            cpu_before_s = sum(process_cpu_s(process.pid) for process in processes)
            seconds, latencies_ms = asyncio.run(_drive_bench(setup, max_in_flight))
            shard_cpu_s = sum(process_cpu_s(process.pid) for process in processes) - cpu_before_s
        finally:
            stop_processes(processes)
    cost_s = min(cost_before_s, measure_crypto_cost_s(shards))
    cores = os.cpu_count() or 1
    bound_per_s = cores / cost_s
    throughput = len(latencies_ms) / seconds
    return {
        "benchmark": "fastpay-authority-shards",
        # What runs: one authority's shards; the other three only signed certificates.
        "authorities_running": 1,
        "committee_size": 4,
        "shards": shards,
        "transfers": len(latencies_ms),
        "max_in_flight": max_in_flight,
        "seconds": round(seconds, 3),
        "transfers_per_s": round(throughput, 1),
        "latency_p50_ms": round(percentile(latencies_ms, 0.50), 2),
        "latency_p99_ms": round(percentile(latencies_ms, 0.99), 2),
        "crypto_us_per_transfer": round(cost_s * 1e6, 1),
        "cores": cores,
        "crypto_bound_per_s": round(bound_per_s, 1),
        "ratio_to_crypto_bound": round(throughput / bound_per_s, 3),
        "shard_cpu_us_per_transfer": round(shard_cpu_s / max(1, len(latencies_ms)) * 1e6, 1),
        # The part of the shards' own CPU time that the signatures need: how close the
        # shards come to the bound per core, whatever else runs on the machine.
        "crypto_share_of_shard_cpu": round(cost_s / max(1e-9, shard_cpu_s / transfers), 3),
    }
