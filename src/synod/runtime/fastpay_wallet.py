"""A FastPay wallet that talks to a running committee over TCP: transfer, query, benchmark.

Theory of operation.  `WalletClient` drives the `synod.fastpay.client.Client` core of
every wallet in an `Accounts` (in memory, or an `AccountsFile`) the way
`synod.runtime.host.NodeHost` drives a node: all cores share one input queue and one
task; each batch of inputs is handled, the wallets' records are saved (one durable
rewrite of the accounts file per batch), and only then are the batch's calls sent to the
authorities' shards (routed by `synod.fastpay.config.shard_router`).  A signed order is
therefore saved before any authority sees it, and after a crash the next transfer from
that account resumes the very same order.

A call that gets no answer within `timeout_ms` comes back to the core as `CallFailed`;
while an authority refuses connections (not started yet, restarting) the call is tried
again every 50 ms until that deadline.

`benchmark_in_processes` drives the load from several processes, so that the client
side is not what limits the figure: the wallets are split into parts written durably
beside the accounts file (``accounts.json.part-K``), each run by a `synod fastpay
client ... benchmark` process of its own, then merged back.  A part left behind by a
run that was killed holds the newer records of its wallets: `AccountsFile.load` merges
it, and `save` removes it once the accounts file holds its wallets durably.

Failures are typed (`synod.fastpay.wallet`): `UnknownAccount`, `TransferError`,
`NoQuorum` (all `WalletError`), and `FastPayFileError` for files that do not hold what
they should.  Nothing here prints or exits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from synod.core import CallFailed, LocalError, Proposed, Response
from synod.crypto import KeyPair, NodeId
from synod.fastpay.client import (
    AccountRecovered,
    Client,
    InsufficientFunds,
    Pay,
    Query,
    Receive,
    Recover,
    Resume,
    Synchronize,
    TransferReceived,
)
from synod.fastpay.config import CommitteeFile, FastPayFileError, read_text, shard_router
from synod.fastpay.messages import (
    REPLY_CODEC,
    REQUEST_CODEC,
    CertifiedTransferOrder,
    ErrorKind,
    Transfer,
    TransferOrder,
)
from synod.fastpay.wallet import (
    Accounts,
    TransferError,
    WalletError,
    decode_accounts,
    percentile,
    queried_balance,
    transfer_certificate,
)
from synod.runtime.rpc import RpcClient, RpcFailure
from synod.wire import DecodeError

DEFAULT_TIMEOUT_MS = 10_000
PART_SUFFIX = ".part-"
MAX_PUSHED_PAYMENTS = 64
"""Most received payments a transfer pushes to the authorities when a quorum vouches for
less than the wallet was paid (the most recent ones: older ones were spendable before)."""
_BEHIND_KINDS = (ErrorKind.UNEXPECTED_SEQUENCE_NUMBER, ErrorKind.INSUFFICIENT_BALANCE)
RETRY_INTERVAL_S = 0.05
MAX_BATCH_INPUTS = 512


class WalletFileError(WalletError):
    """The accounts file could not be written."""


# ---------------------------------------------------------------- the accounts file


class AccountsFile(Accounts):
    """``accounts.json``: one wallet per line, rewritten atomically (fsync, rename).

    A second process on the same file waits for the first: `lock` takes an exclusive
    lock on a ``.lock`` file beside it, held until `unlock`.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(source=str(path))
        self.path = path
        self._lock: IO[str] | None = None
        self._merged_parts: list[Path] = []
        self._saving = threading.Lock()
        """Held by one `save` at a time: the wallet loop saves in a worker thread, and a
        wallet cancelled meanwhile saves again on closing; both write the same temporary
        file, and the later state must be the one left."""

    @classmethod
    def open(cls, path: Path, *, missing_ok: bool = False) -> AccountsFile:
        """Lock `path` (waiting for another holder) and load it; a missing file is empty
        when `missing_ok`."""
        accounts = cls(path)
        accounts.lock()
        try:
            accounts.load(missing_ok=missing_ok)
        except BaseException:
            accounts.unlock()
            raise
        return accounts

    def lock(self) -> None:
        """Wait for, then hold, the exclusive lock of the accounts file."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            handle = lock_path.open("a")
        except OSError as error:
            raise FastPayFileError(f"{lock_path}: cannot open the lock file: {error}") from None
        fcntl.flock(handle, fcntl.LOCK_EX)
        self._lock = handle

    def unlock(self) -> None:
        """Release the lock (idempotent)."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load(self, *, missing_ok: bool = False) -> None:
        """Read the wallets of the file (replacing those in memory)."""
        if missing_ok and not self.path.exists():
            self.wallets = {}
            return
        wallets = decode_accounts(read_text(self.path, "accounts"), self.source)
        self.wallets = {bytes(wallet.keys.node_id): wallet for wallet in wallets}
        self.dirty = False
        self._merge_parts()

    def part_path(self, index: int) -> Path:
        """Where part `index` of a multi-process benchmark keeps its wallets."""
        return self.path.with_name(f"{self.path.name}{PART_SUFFIX}{index}")

    def _merge_parts(self) -> None:
        """Parts are newer than the accounts file for their wallets (the accounts file
        is not written while they exist): take their wallets."""
        self._merged_parts = [
            part
            for part in sorted(self.path.parent.glob(f"{self.path.name}{PART_SUFFIX}*"))
            if not part.name.endswith((".lock", ".tmp"))
        ]
        for part in self._merged_parts:
            # A worker of a killed run may still be writing it: wait for its lock.
            holder = AccountsFile(part)
            holder.lock()
            try:
                wallets = decode_accounts(read_text(part, "accounts"), str(part))
            finally:
                holder.unlock()
            for wallet in wallets:
                self.wallets[bytes(wallet.keys.node_id)] = wallet
                self.dirty = True

    def save(self) -> None:
        """Write every wallet durably: a temporary file, fsync, rename, fsync the folder
        (one save at a time, each writing the wallets as they are when it starts)."""
        with self._saving:
            self._save()

    def _save(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(self.encode())
                handle.flush()
                os.fsync(handle.fileno())
            temporary.replace(self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as error:
            raise WalletFileError(f"{self.path}: cannot write the accounts file: {error}") from None
        self.dirty = False
        for part in self._merged_parts:  # their wallets are durable here now
            part.unlink(missing_ok=True)
        self._merged_parts = []


def create_wallets(accounts: Accounts, count: int, initial_balance: int) -> list[NodeId]:
    """Add `count` wallets with fresh keys, funded with `initial_balance` at genesis."""
    created = []
    for _ in range(count):
        keys = KeyPair.generate()
        accounts.add(keys, initial_balance)
        created.append(keys.node_id)
    return created


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class TransferDone:
    """A confirmed transfer: its certificate, and what else `WalletClient.transfer` did.

    `resumed` is another interrupted transfer finished first (if any); `retried` says
    that this very payment was the pending order of an earlier, interrupted attempt
    (finished, not signed again); `recovered` that the wallet was brought up to date
    from the authorities first; `uncounted` the payments to wallets of these accounts
    that could not count them yet.
    """

    certificate: CertifiedTransferOrder
    elapsed_ms: float
    balance: int
    resumed: CertifiedTransferOrder | None = None
    uncounted: tuple[CertifiedTransferOrder, ...] = ()
    retried: bool = False
    recovered: bool = False


@dataclass(frozen=True, slots=True)
class BenchmarkSummary:
    """The outcome of `WalletClient.benchmark` (latencies of the confirmed transfers)."""

    transfers: int
    failed: int
    seconds: float
    transfers_per_s: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    first_failure: str | None
    processes: int = 1
    latencies_ms: tuple[float, ...] = ()
    started_unix_s: float = 0.0

    def to_json(self, *, raw: bool = False) -> dict[str, Any]:
        """The summary as a JSON object (`raw`: with every latency and the start time,
        what a multi-process run merges)."""
        document: dict[str, Any] = {
            "processes": self.processes,
            "transfers": self.transfers,
            "failed": self.failed,
            "seconds": self.seconds,
            "transfers_per_s": self.transfers_per_s,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p90_ms": self.latency_p90_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "first_failure": self.first_failure,
        }
        if raw:
            document["latencies_ms"] = list(self.latencies_ms)
            document["started_unix_s"] = self.started_unix_s
        return document


# ---------------------------------------------------------------- the client driver


@dataclass(slots=True)
class _Operation:
    events: list[Any] = field(default_factory=list)
    done: asyncio.Future[list[Any]] | None = None


@dataclass(frozen=True, slots=True)
class _Command:
    command: Any
    operation: _Operation


class WalletClient:
    """Drives the `Client` cores of the wallets in `accounts` against `committee`.

    Use it as an async context manager: leaving it cancels what is in flight, closes the
    connections and saves the wallets.
    """

    def __init__(
        self, committee: CommitteeFile, accounts: Accounts, *, timeout_ms: int = DEFAULT_TIMEOUT_MS
    ) -> None:
        self.committee_file = committee
        self.committee = committee.committee()
        self.accounts = accounts
        self.timeout_s = timeout_ms / 1000
        self.route = shard_router(committee)
        self.cores: dict[bytes, Client] = {}
        self.failure: BaseException | None = None
        self._operations: dict[bytes, _Operation] = {}
        self._inputs: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        self._rpc: dict[tuple[str, int], RpcClient] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._recoveries = 0

    async def __aenter__(self) -> WalletClient:
        self._worker = asyncio.create_task(self._process())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._rpc.values():
            await client.close()
        if self.accounts.dirty:
            self.accounts.save()

    # ------------------------------------------------------------ the accounts' cores

    def core(self, account: bytes) -> Client:
        """The client core of `account`, rebuilt from its wallet on first use."""
        key = bytes(account)
        core = self.cores.get(key)
        if core is None:
            wallet = self.accounts.wallet(key)
            core = self.cores[key] = wallet.client(
                self.committee, self.accounts.source, self.committee_file.network
            )
        return core

    def pending_sequence_number(self, account: bytes) -> int | None:
        """The sequence number of `account`'s interrupted transfer, if one is pending."""
        pending = self.core(account).pending
        return None if pending is None else pending.transfer.sequence_number

    def known_balance(self, account: bytes) -> int:
        """The balance of `account` as its own client knows it."""
        return self.core(account).balance

    # ------------------------------------------------------------ operations

    def pending_order(self, account: bytes) -> TransferOrder | None:
        """`account`'s signed order that is not certified yet, if any."""
        return self.core(account).pending

    async def transfer(self, sender: bytes, recipient: bytes, amount: int) -> TransferDone:
        """Pay `amount` from `sender`'s wallet to `recipient`, once, whatever was retried.

        A pending order that pays the same amount to the same recipient is this payment
        retried: it is finished and nothing new is signed.  Another pending order is
        finished first, then this payment made.  When the wallet is behind the
        authorities (its order's sequence number was used elsewhere, or the amount
        exceeds what it knows of), it recovers its state from them and tries once more.
        Wallets of these accounts that are paid count the payment.  `TransferError`
        when a transfer does not complete."""
        pending = self.pending_order(sender)
        unconfirmed = self.core(sender).unconfirmed
        interrupted = pending.transfer if pending is not None else None
        if interrupted is None and unconfirmed is not None:
            # Certified, but the command stopped before a quorum applied it.
            interrupted = unconfirmed.transfer
        if interrupted is not None and _same_payment(interrupted, recipient, amount):
            # This payment retried: finishing it is all that is left.
            started = time.perf_counter()
            certificate = await self._attempt(sender, recipient, amount, self.resume(sender))
            return await self._done(sender, certificate, started, retried=True)
        resumed = None
        uncounted: list[CertifiedTransferOrder] = []
        if pending is not None or unconfirmed is not None:
            resumed = await self.resume(sender)
            if not await self._count_if_ours(sender, resumed):
                uncounted.append(resumed)
        started = time.perf_counter()
        recoveries = self._recoveries
        certificate = await self._attempt(
            sender, recipient, amount, self.pay(sender, recipient, amount)
        )
        recovered = self._recoveries != recoveries
        done = await self._done(sender, certificate, started, recovered=recovered)
        return dataclasses.replace(
            done, resumed=resumed, uncounted=(*uncounted, *done.uncounted)
        )

    async def _attempt(
        self,
        sender: bytes,
        recipient: bytes,
        amount: int,
        first: Coroutine[Any, Any, CertifiedTransferOrder],
    ) -> CertifiedTransferOrder:
        """`first` (a payment, or the same payment resumed); when the wallet turns out to
        be behind the authorities, bring it up to date and try once more."""
        try:
            return await first
        except TransferError as error:
            if not _wallet_is_behind(error):
                raise
            self._recoveries += 1
            await self._bring_up_to_date(sender, amount)
            return await self._pay_again(sender, recipient, amount, error)

    async def _bring_up_to_date(self, sender: bytes, amount: int) -> None:
        """Recover the wallet; if a quorum still vouches for less than `amount`, push the
        payments it received to every authority (some honest ones may lack credits that
        a quorum with a Byzantine member confirmed) and recover again."""
        await self.recover(sender)
        if self.known_balance(sender) >= amount:
            return
        received = list(self.core(sender).received_certificates())
        received = received[max(0, len(received) - MAX_PUSHED_PAYMENTS) :]
        for certificate in received:
            await self.perform(sender, Synchronize(certificate))
        if received:
            await self.recover(sender)

    async def _pay_again(
        self, sender: bytes, recipient: bytes, amount: int, first: TransferError
    ) -> CertifiedTransferOrder:
        pending = self.pending_order(sender)
        if pending is None:
            return await self.pay(sender, recipient, amount)
        if _same_payment(pending.transfer, recipient, amount):
            return await self.resume(sender)  # refused for lack of funds: the same order
        raise first

    async def _done(
        self,
        sender: bytes,
        certificate: CertifiedTransferOrder,
        started: float,
        *,
        retried: bool = False,
        recovered: bool = False,
    ) -> TransferDone:
        elapsed_ms = (time.perf_counter() - started) * 1000
        balance = self.known_balance(sender)
        counted = await self._count_if_ours(sender, certificate)
        uncounted = () if counted else (certificate,)
        return TransferDone(
            certificate, elapsed_ms, balance, None, uncounted, retried=retried,
            recovered=recovered,
        )  # fmt: skip

    async def finish(self, account: bytes) -> CertifiedTransferOrder | None:
        """Finish `account`'s pending order without any new payment (its certificate), or
        None when nothing is pending."""
        if self.pending_order(account) is None:
            return None
        certificate = await self.resume(account)
        await self._count_if_ours(account, certificate)
        return certificate

    async def recover(self, account: bytes) -> AccountRecovered:
        """Bring `account`'s wallet up to date from the authorities: its sequence number,
        the certificates of its transfers, the pending order they hold, the payments it
        received (with their certificates) and the balance a quorum vouches for.  A
        wallet restored from its key alone is fully usable afterwards."""
        events = await self.perform(account, Recover())
        for event in events:
            if isinstance(event, AccountRecovered):
                return event
            if isinstance(event, LocalError):
                raise WalletError(str(event))
        raise WalletError("the authorities could not be asked about the account")

    async def pay(self, sender: bytes, recipient: bytes, amount: int) -> CertifiedTransferOrder:
        """One payment to its confirmation (refused while an order is pending)."""
        return transfer_certificate(await self.perform(sender, Pay(recipient, amount)))

    async def resume(self, account: bytes) -> CertifiedTransferOrder:
        """Finish `account`'s pending order (or confirm its last certificate again)."""
        return transfer_certificate(await self.perform(account, Resume()))

    async def receive(self, account: bytes, certificate: CertifiedTransferOrder) -> bool:
        """Confirm a certificate paying `account` and count it; whether it was counted."""
        events = await self.perform(account, Receive(certificate))
        return any(isinstance(event, TransferReceived) for event in events)

    async def query_balance(self, account: bytes) -> int:
        """The highest balance of `account` that a quorum of authorities vouches for."""
        events = await self.perform(account, Query())
        return queried_balance(events, len(self.committee))

    async def benchmark(
        self,
        *,
        max_in_flight: int = 500,
        amount: int = 1,
        on_progress: Callable[[], None] | None = None,
    ) -> BenchmarkSummary:
        """Every wallet pays `amount` to the next one, at most `max_in_flight` at once;
        `on_progress` runs after each transfer (confirmed or failed)."""
        accounts = list(self.accounts.wallets)
        if not accounts:
            raise WalletError(f"{self.accounts.source}: no accounts")
        limit = asyncio.Semaphore(max_in_flight)
        latencies_ms: list[float] = []
        failures: list[str] = []

        async def one(index: int) -> None:
            sender, recipient = accounts[index], accounts[(index + 1) % len(accounts)]
            async with limit:
                started = time.perf_counter()
                try:
                    # An order left pending by an interrupted run is this wallet's
                    # payment of that run: finishing it is the payment, not a second one.
                    if self.pending_sequence_number(sender) is not None:
                        await self.resume(sender)
                    else:
                        await self.pay(sender, recipient, amount)
                    latencies_ms.append((time.perf_counter() - started) * 1000)
                except WalletError as error:
                    failures.append(str(error))
                if on_progress is not None:
                    on_progress()

        started_unix_s = time.time()
        started = time.perf_counter()
        await asyncio.gather(*(one(index) for index in range(len(accounts))))
        summary = _summary(latencies_ms, failures, time.perf_counter() - started)
        return dataclasses.replace(summary, started_unix_s=started_unix_s)

    async def perform(self, account: bytes, command: Any) -> list[Any]:
        """Run one client command (`Pay`, `Resume`, `Query`, `Receive`...) to its end.

        Returns the events of the operation; a local refusal (insufficient known balance,
        a pending order) is returned as the `LocalError` itself.
        """
        key = bytes(account)
        self.core(key)
        if self._worker is None:
            raise RuntimeError("use the WalletClient as an async context manager")
        operation = _Operation(done=asyncio.get_running_loop().create_future())
        self._inputs.put_nowait((key, _Command(command, operation)))
        assert operation.done is not None
        return await operation.done

    async def _count_if_ours(self, sender: bytes, certificate: CertifiedTransferOrder) -> bool:
        account = certificate.transfer.recipient
        if account not in self.accounts.wallets or account == sender:
            return True
        return await self.receive(account, certificate)

    # ------------------------------------------------------------ the loop

    async def _process(self) -> None:
        try:
            while True:
                batch = [await self._inputs.get()]
                while len(batch) < MAX_BATCH_INPUTS and not self._inputs.empty():
                    batch.append(self._inputs.get_nowait())
                steps = self._run_batch(batch)
                if self.accounts.dirty:
                    await asyncio.to_thread(self.accounts.save)
                for account, step, busy, operation in steps:
                    self._apply(account, step, busy, operation)
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self.failure = error
            for operation in self._operations.values():
                if operation.done is not None and not operation.done.done():
                    operation.done.set_exception(error)

    def _run_batch(
        self, batch: list[tuple[bytes, Any]]
    ) -> list[tuple[bytes, Any, bool, _Operation | None]]:
        """Handle a batch; each step is paired with the operation it belongs to (a late
        answer handled before a new command's input belongs to none)."""
        steps = []
        for account, item in batch:
            core = self.cores[account]
            event = item
            if isinstance(item, _Command):
                self._operations[account] = item.operation
                event = Proposed(item.command)
            try:
                step = core.handle(event, int(time.monotonic() * 1000))
            except LocalError as error:
                if isinstance(item, _Command):
                    self._finish(account, item.operation, [error])
                    continue
                raise
            self.accounts.apply(account, step.persist)
            steps.append((account, step, core.busy, self._operations.get(account)))
        return steps

    def _apply(self, account: bytes, step: Any, busy: bool, operation: _Operation | None) -> None:
        for call in step.outgoing:
            task = asyncio.get_running_loop().create_task(self._call(account, call))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if operation is not None:
            operation.events.extend(step.events)
            if not busy:
                self._finish(account, operation, operation.events)

    def _finish(self, account: bytes, operation: _Operation, events: list[Any]) -> None:
        if self._operations.get(account) is operation:
            del self._operations[account]
        if operation.done is not None and not operation.done.done():
            operation.done.set_result(events)

    async def _call(self, account: bytes, call: Any) -> None:
        address = self.route(call.to, call.body)
        if address is None:
            self._inputs.put_nowait((account, CallFailed(call.to, call.request_id, "unknown")))
            return
        client = self._rpc.get(address)
        if client is None:
            client = self._rpc[address] = RpcClient(address)
        body = REQUEST_CODEC.encode(call.body)
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            result = await client.call(body, timeout_s=max(0.001, remaining))
            refused = isinstance(result, RpcFailure) and result.reason.startswith("cannot")
            if not refused or time.monotonic() + RETRY_INTERVAL_S >= deadline:
                break
            await asyncio.sleep(RETRY_INTERVAL_S)  # the authority is not listening (yet)
        if isinstance(result, RpcFailure):
            event: Any = CallFailed(call.to, call.request_id, result.reason)
        else:
            try:
                event = Response(call.to, call.request_id, REPLY_CODEC.decode(result.body))
            except DecodeError as error:
                event = CallFailed(call.to, call.request_id, f"undecodable reply: {error}")
        self._inputs.put_nowait((account, event))


def _same_payment(transfer: Transfer, recipient: bytes, amount: int) -> bool:
    return transfer.recipient == bytes(recipient) and transfer.amount == amount


def _wallet_is_behind(error: TransferError) -> bool:
    """True when the failure says the wallet lags the authorities (not the payment)."""
    failure = error.failure
    if failure is None:
        return isinstance(error.__cause__, InsufficientFunds)
    if failure.error is not None:
        return failure.error.kind in _BEHIND_KINDS
    return "another order" in failure.reason


async def benchmark_in_processes(
    committee_path: Path,
    accounts: AccountsFile,
    *,
    processes: int,
    max_in_flight: int = 500,
    amount: int = 1,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    on_progress: Callable[[int], None] | None = None,
) -> BenchmarkSummary:
    """`WalletClient.benchmark` from `processes` processes, each over a part of the
    wallets (every wallet pays the next one of its part); `max_in_flight` is shared
    between them.  `accounts` must be locked; its wallets are saved back at the end.
    `on_progress(n)` runs when a process ends, with the transfers it made."""
    wallets = list(accounts.wallets.values())
    if not wallets:
        raise WalletError(f"{accounts.source}: no accounts")
    count = max(1, min(processes, len(wallets) // 2))
    size = -(-len(wallets) // count)
    parts = []
    for index in range(count):
        part = AccountsFile(accounts.part_path(index))
        group = wallets[index * size : (index + 1) * size]
        part.wallets = {bytes(wallet.keys.node_id): wallet for wallet in group}
        await asyncio.to_thread(part.lock)  # no worker of an earlier run still on it
        try:
            await asyncio.to_thread(part.save)  # durable before any worker signs from it
        finally:
            part.unlock()
        parts.append(part.path)
    per_process = max(1, max_in_flight // count)
    try:
        results = await asyncio.gather(
            *(
                _benchmark_worker(committee_path, part, per_process, amount, timeout_ms)
                for part in parts
            )
        )
    finally:
        # The parts hold the newer records: merged, then removed once saved durably.
        await asyncio.to_thread(accounts.load)
        await asyncio.to_thread(accounts.save)
    if on_progress is not None:
        for result in results:
            on_progress(result.transfers + result.failed)
    return _merged_summary(results)


async def _benchmark_worker(
    committee_path: Path, part: Path, max_in_flight: int, amount: int, timeout_ms: int
) -> BenchmarkSummary:
    command = [
        sys.executable, "-m", "synod.cli.main", "fastpay", "client",
        "--committee", str(committee_path), "--accounts", str(part),
        "--timeout-ms", str(timeout_ms), "benchmark", "--processes", "1",
        "--max-in-flight", str(max_in_flight), "--amount", str(amount), "--raw-json",
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        document = json.loads(lines[-1])
        return BenchmarkSummary(
            transfers=document["transfers"],
            failed=document["failed"],
            seconds=document["seconds"],
            transfers_per_s=document["transfers_per_s"],
            latency_p50_ms=document["latency_p50_ms"],
            latency_p90_ms=document["latency_p90_ms"],
            latency_p99_ms=document["latency_p99_ms"],
            first_failure=document["first_failure"],
            latencies_ms=tuple(document["latencies_ms"]),
            started_unix_s=document["started_unix_s"],
        )
    except (IndexError, KeyError, TypeError, json.JSONDecodeError):
        reason = stderr.decode("utf-8", "replace").strip().splitlines()
        raise WalletError(
            f"{part}: the benchmark process failed (exit {process.returncode}): "
            f"{reason[-1] if reason else 'no message'}"
        ) from None


def _merged_summary(results: list[BenchmarkSummary]) -> BenchmarkSummary:
    latencies = [latency for result in results for latency in result.latencies_ms]
    failures = sum(result.failed for result in results)
    first = min(result.started_unix_s for result in results)
    # From the first process's start to the last one's end: the whole run's wall time.
    seconds = max(result.started_unix_s + result.seconds for result in results) - first
    summary = _summary(latencies, [], seconds)
    first_failure = next((r.first_failure for r in results if r.first_failure), None)
    return dataclasses.replace(
        summary, failed=failures, first_failure=first_failure, processes=len(results)
    )


def _summary(latencies_ms: list[float], failures: list[str], seconds: float) -> BenchmarkSummary:
    return BenchmarkSummary(
        transfers=len(latencies_ms),
        failed=len(failures),
        seconds=round(seconds, 3),
        transfers_per_s=round(len(latencies_ms) / seconds, 1) if seconds else 0.0,
        latency_p50_ms=round(percentile(latencies_ms, 0.50), 1),
        latency_p90_ms=round(percentile(latencies_ms, 0.90), 1),
        latency_p99_ms=round(percentile(latencies_ms, 0.99), 1),
        first_failure=failures[0] if failures else None,
        latencies_ms=tuple(round(latency, 3) for latency in latencies_ms),
    )


@asynccontextmanager
async def open_wallet(
    committee_path: Path,
    accounts_path: Path,
    *,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
) -> AsyncIterator[WalletClient]:
    """A `WalletClient` over the files `committee_path` and `accounts_path` (held
    locked, saved and unlocked on exit)."""
    committee = CommitteeFile.load(committee_path)
    accounts = await asyncio.to_thread(AccountsFile.open, accounts_path)
    try:
        async with WalletClient(committee, accounts, timeout_ms=timeout_ms) as wallet:
            yield wallet
    finally:
        accounts.unlock()
