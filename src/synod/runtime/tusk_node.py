"""Tusk on a real network: passive cores, drivers and a submit client (asyncio, TCP, SQLite).

- `CoreNode` runs one passive `synod.tusk.TuskCore` behind a request/response listener,
  with its state in one SQLite file: a `synod.runtime.host.NodeHost` commits the records
  of every batch of requests before any answer leaves, and a core opened again on the
  same file resumes from them.  It opens no connection.
- `DriverNode` drives a sans-I/O `synod.tusk.Driver`: its `Call`s become RPC calls to the
  cores, answers and failures come back as `Response` / `CallFailed`, its timers become
  loop timers; one input at a time, in arrival order.  It holds no key and no file, so
  it may be stopped (or killed) at any time, and several may run at once.
- `submit_transactions` hands transactions to one core and returns its receipt once the
  core's signature over it checks.
- `CommitLogReader` reads a core's committed sequence from its SQLite file (read-only;
  the core need not run).  A running `CoreNode` also answers drivers' `LogRequest`s
  from it (`LogService`), for cores filling the gap a checkpoint left in their log:
  the core keeps no log in memory and does no I/O, so its node serves the records.

Nothing here prints or exits: failures are typed errors (`SubmitFailed`,
`DriverFailed`, `synod.runtime.host.HostFailed`, `synod.runtime.storage.StorageError`,
`synod.runtime.lock.NodeAlreadyRunning`) for the caller to report.  See docs/tusk.md
("From Python").
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from synod.core import Call, CallFailed, Response, SetTimer, Started, Step, TimerFired
from synod.crypto import KeyPair, NodeId
from synod.quorum.committee import Committee
from synod.runtime.host import EventHandler, HostConfig, NodeHost, monotonic_ms
from synod.runtime.node_status import MAX_STATUS_DETAILS, StatusReply, answer_status
from synod.runtime.nodes import open_on_store
from synod.runtime.rpc import RequestRejected, RpcClient, RpcFailure, RpcServer
from synod.runtime.storage import SqliteStorage, StorageError
from synod.runtime.transport import Address
from synod.tusk.core import (
    COMMIT_LOG_PREFIX,
    LOG_GAP_KEY,
    Committed,
    TuskConfig,
    TuskCore,
    commit_log_key,
    log_positions,
    read_commit_record,
    read_log_gap,
    serve_log,
)
from synod.tusk.driver import Driver
from synod.tusk.messages import (
    CODEC,
    LOG_ANSWER_BYTES,
    MAX_SUBMIT_TRANSACTIONS,
    MAX_TRANSACTION_BYTES,
    CommitAck,
    CommitQuery,
    CommittedAt,
    LogAnswer,
    LogRequest,
    SubmitAnswer,
    SubmitRefusal,
    SubmitRequest,
    proven_commits,
    request_digest,
    transaction_digest,
)
from synod.wire import DecodeError

log = logging.getLogger("synod.runtime.tusk_node")

# ---------------------------------------------------------------- cores


class CoreNode:
    """One passive Tusk core: a `TuskCore` rebuilt from `storage`, served by a `NodeHost`.

    `on_event` receives the core's events (`Committed`, `EquivocationDetected`, ...) in
    order, each after the records of its step are durable.
    """

    def __init__(
        self,
        keys: KeyPair,
        committee: Committee,
        storage: SqliteStorage,
        *,
        config: TuskConfig | None = None,
        on_event: EventHandler | None = None,
        host_config: HostConfig | None = None,
    ) -> None:
        self.core = TuskCore(keys, committee, storage.load(), config=config)
        self.host = NodeHost(
            self.core,
            keys=keys,
            codec=CODEC,
            storage=storage,
            on_event=on_event,
            config=host_config,
        )
        self._lock: IO[str] | None = None
        self._store_path = storage.path
        self.log_service: LogService | None = None

    @classmethod
    def open(
        cls,
        keys: KeyPair,
        committee: Committee,
        store_path: Path,
        *,
        config: TuskConfig | None = None,
        on_event: EventHandler | None = None,
        host_config: HostConfig | None = None,
    ) -> CoreNode:
        """A core whose state is the SQLite file `store_path` (created if absent).

        The core holds the lock file beside it (``<store>.lock``) until it stops: two
        processes on one file would answer from diverging states.  Raises
        `NodeAlreadyRunning` when another process holds it, `StorageError` when the file
        cannot be used, `RestoreFailed` when its records cannot rebuild a core.
        """
        node, lock = open_on_store(
            store_path,
            lambda storage: cls(
                keys,
                committee,
                storage,
                config=config,
                on_event=on_event,
                host_config=host_config,
            ),
            f"core {store_path.stem}",
        )
        node._lock = lock
        return node

    @property
    def node_id(self) -> NodeId:
        """The core's id (its public key)."""
        return self.core.node_id

    @property
    def address(self) -> Address | None:
        """The address the core listens on, once started."""
        return self.host.rpc_address

    async def start(self, listen: Address) -> Address:
        """Listen on `listen` (port 0 picks a free one) and begin answering requests;
        returns the address bound."""
        await self.host.start(rpc_listen=listen)
        assert self.host.rpc_address is not None and self.host.rpc_server is not None
        answer_status(self.host.rpc_server, self.status)
        self.log_service = LogService(self.node_id, self._store_path)
        self.log_service.install(self.host.rpc_server)
        return self.host.rpc_address

    def status(self) -> StatusReply:
        """What ``synod tusk status`` asks over the core's port: its round, drivers
        connected, transactions not yet in a header, and its monitoring counters."""
        metrics = self.core.metrics()
        server = self.host.rpc_server
        return StatusReply(
            protocol="tusk",
            progress_name="round",
            progress=metrics["round"],
            peers=0,
            peers_connected=server.client_count if server is not None else 0,
            pending=metrics["pending_transactions"],
            details=dict(list(metrics.items())[:MAX_STATUS_DETAILS]),
        )

    async def stop(self) -> None:
        """Finish the step in progress, close the listener and the SQLite file, release
        the lock; idempotent."""
        await self.host.stop()
        self._release()

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Answer requests until SIGINT or SIGTERM, then stop; `HostFailed` on a failure.

        `on_ready` runs once the signal handlers are installed.
        """
        try:
            await self.host.serve(on_ready=on_ready)
        finally:
            self._release()

    def _release(self) -> None:
        if self.log_service is not None:
            self.log_service.close()
            self.log_service = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


# ---------------------------------------------------------------- serving the log

LOG_REQUEST_INTERVAL_MS = 20
"""One `LogRequest` per client connection is answered in this long at most (50 a
second); one asked sooner gets an empty answer marked `busy`.  Each answer reads at most
`MAX_LOG_RECORDS` records and about `LOG_ANSWER_BYTES` (1 MiB) from the file, so a
connection costs the node at most about 50 MiB of reads a second; connections are
capped by the server's admission (per-host slots), like every other request's."""
LOG_SERVE_BYTES_PER_SECOND = 16 * 1024 * 1024
"""What the node reads from its file for `LogRequest`s, all connections together, in a
second (with one second of it as a burst, and one answer's overdraft): the interval above
is per connection, and a keyless driver can open connections anew, so without this a
host could keep the node's event loop busy reading its file.  16 MiB a second refills a
gap of 100,000 records without batches (about 18 MiB) in a couple of seconds, and costs
the node a small part of one CPU; past it, answers are `busy` and nothing is read."""
MAX_LOG_CLIENTS_REMEMBERED = 1024
"""Connections whose last log request time is kept (the idle ones are forgotten first
when more come: it only gates their next request)."""

_LOG_REQUEST_PREFIX = CODEC.encode(LogRequest(end=0))[:17]
"""The start of every encoded `LogRequest` (a three-element array, then its tag): a
request that starts otherwise goes to the core unread."""
assert _LOG_REQUEST_PREFIX.endswith(b"tusk.LogRequest")


class LogService:
    """Answers `LogRequest`s for core `core_id` from its SQLite file `store_path`,
    through a read-only connection of its own (the store is in write-ahead-log mode:
    reading never waits on the core's writes), in front of the server's handler: the
    core's input queue never sees them, and a driver filling another core's gap costs
    this core no step.  The answers are not signed: the core that receives the records
    checks each against the chain digest it trusts."""

    def __init__(
        self,
        core_id: NodeId,
        store_path: Path,
        *,
        bytes_per_second: int = LOG_SERVE_BYTES_PER_SECOND,
    ) -> None:
        self.core_id = core_id
        self._reader = CommitLogReader(store_path)
        self._served_at: dict[str, int] = {}
        self._bytes_per_second = bytes_per_second
        self._byte_tokens = float(bytes_per_second)
        self._tokens_at_ms: int | None = None
        self.served = 0
        self.refused_early = 0
        self.refused_over_budget = 0

    def install(self, server: RpcServer) -> None:
        """Answer `LogRequest`s on `server` before its handler sees them."""
        inner = server.handler

        async def handler(client: str, request_id: int, body: bytes) -> bytes | None:
            if body.startswith(_LOG_REQUEST_PREFIX):
                return self.answer(client, body, monotonic_ms())
            return await inner(client, request_id, body)

        server.handler = handler

    def answer(self, client: str, body: bytes, now_ms: int) -> bytes:
        """The encoded answer to the request `body` of connection `client`."""
        try:
            request = CODEC.decode(body)
        except DecodeError as error:
            raise RequestRejected(f"undecodable log request: {error}") from None
        if not isinstance(request, LogRequest):
            raise RequestRejected("not a log request")
        last_ms = self._served_at.get(client)
        if last_ms is not None and now_ms - last_ms < LOG_REQUEST_INTERVAL_MS:
            self.refused_early += 1
            return CODEC.encode(LogAnswer(core=self.core_id, end=request.end, busy=True))
        if not self._budget_left(now_ms):
            self.refused_over_budget += 1
            return CODEC.encode(LogAnswer(core=self.core_id, end=request.end, busy=True))
        self._remember(client, now_ms)
        positions = log_positions(request)
        try:
            stored = self._reader.read_below(positions.stop, len(positions), LOG_ANSWER_BYTES)
        except StorageError as error:
            log.warning("cannot read the delivery log: %s", error)
            stored = {}
        self.served += 1
        encoded = CODEC.encode(serve_log(self.core_id, request, stored))
        self._byte_tokens -= len(encoded)
        return encoded

    def _budget_left(self, now_ms: int) -> bool:
        """Refill the shared byte budget for the time since it was last looked at; true
        while some is left (an answer may overdraw it by its own size)."""
        if self._tokens_at_ms is not None:
            elapsed_ms = max(0, now_ms - self._tokens_at_ms)
            refill = elapsed_ms * self._bytes_per_second / 1000
            self._byte_tokens = min(float(self._bytes_per_second), self._byte_tokens + refill)
        self._tokens_at_ms = now_ms
        return self._byte_tokens > 0

    def _remember(self, client: str, now_ms: int) -> None:
        if len(self._served_at) >= MAX_LOG_CLIENTS_REMEMBERED:
            oldest = sorted(self._served_at, key=self._served_at.__getitem__)
            for name in oldest[: len(oldest) // 2]:
                del self._served_at[name]
        self._served_at[client] = now_ms

    def close(self) -> None:
        """Close the read-only connection."""
        self._reader.close()


# ---------------------------------------------------------------- drivers


class DriverFailed(Exception):
    """The driver stopped because handling an input failed (see the cause)."""


class DriverNode:
    """Runs a sans-I/O `Driver` against the cores at `addresses` (id -> address).

    `call_timeout_ms` bounds each call; a call that fails or times out reaches the
    driver as `CallFailed`, which retries on its own schedule.  `on_round` is called with
    the driver's highest round each time it grows.
    """

    def __init__(
        self,
        driver: Driver,
        addresses: Mapping[NodeId, Address],
        *,
        call_timeout_ms: int = 2_000,
        on_round: Callable[[int], None] | None = None,
    ) -> None:
        if call_timeout_ms < 1:
            raise ValueError("call_timeout_ms must be positive")
        self.driver = driver
        self.call_timeout_ms = call_timeout_ms
        self.on_round = on_round
        self.clients = {node_id: RpcClient(address) for node_id, address in addresses.items()}
        self.failure: BaseException | None = None
        self._inputs: asyncio.Queue[Any] = asyncio.Queue()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._calls: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None
        self._stopped = False
        self._highest_round = 0

    async def start(self) -> None:
        """Feed the driver `Started` and begin carrying messages between the cores."""
        if self._worker is not None:
            raise RuntimeError("driver already started")
        self._inputs.put_nowait(Started())
        self._worker = asyncio.create_task(self._work(), name=f"driver {self.driver.name}")

    async def stop(self) -> None:
        """Cancel the calls in flight and the timers, close the connections; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        tasks = [*self._calls, *([self._worker] if self._worker is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for client in self.clients.values():
            await client.close()

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run until SIGINT or SIGTERM (or a failure), then stop; `DriverFailed` on a failure.

        `on_ready` runs once the signal handlers are installed.
        """
        if self._worker is None:
            await self.start()
        assert self._worker is not None
        loop = asyncio.get_running_loop()
        signalled = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, signalled.set)
        waiter = asyncio.ensure_future(signalled.wait())
        try:
            if on_ready is not None:
                on_ready()
            await asyncio.wait({self._worker, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(number)
            await self.stop()
        if self.failure is not None:
            raise DriverFailed(str(self.failure)) from self.failure

    async def _work(self) -> None:
        try:
            while True:
                event = await self._inputs.get()
                self._apply(self.driver.handle(event, monotonic_ms()))
                if self.driver.highest_round > self._highest_round:
                    self._highest_round = self.driver.highest_round
                    if self.on_round is not None:
                        self.on_round(self._highest_round)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("driver failed")
            self.failure = error

    def _apply(self, step: Step) -> None:
        loop = asyncio.get_running_loop()
        for out in step.outgoing:
            assert isinstance(out, Call), "a driver only calls cores"
            task = loop.create_task(self._call(out))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        for command in step.timers:
            previous = self._timers.pop(command.name, None)
            if previous is not None:
                previous.cancel()
            if isinstance(command, SetTimer):
                self._timers[command.name] = loop.call_later(
                    command.delay_ms / 1000, self._inputs.put_nowait, TimerFired(command.name)
                )

    async def _call(self, call: Call) -> None:
        timeout_s = self.call_timeout_ms / 1000
        try:
            result = await self.clients[call.to].call(CODEC.encode(call.body), timeout_s=timeout_s)
        except ValueError as error:  # a request larger than the frame cap
            self._inputs.put_nowait(CallFailed(call.to, call.request_id, str(error)))
            return
        if isinstance(result, RpcFailure):
            self._inputs.put_nowait(CallFailed(call.to, call.request_id, result.reason))
            return
        try:
            body = CODEC.decode(result.body)
        except DecodeError as error:
            self._inputs.put_nowait(CallFailed(call.to, call.request_id, f"undecodable: {error}"))
            return
        self._inputs.put_nowait(Response(call.to, call.request_id, body))


# ---------------------------------------------------------------- metrics

MAX_METRICS_CONNECTIONS = 4
"""Scrapes served at once; more are closed at once (a monitoring system makes one)."""
METRICS_REQUEST_BYTES = 8 * 1024
"""A scrape request's head is read up to this size, then answered whatever it says."""
METRICS_TIMEOUT_S = 2.0
"""A connection that sends no complete request head within this is closed."""

Series = list[tuple[str, dict[str, str], int]]
"""Metric name, labels, value."""


def render_metrics(series: Series) -> str:
    """The Prometheus text exposition format (version 0.0.4) of `series`."""
    lines = []
    for name, labels, value in series:
        label_text = ",".join(
            f'{key}="{_escape_label(text)}"' for key, text in sorted(labels.items())
        )
        lines.append(f"{name}{{{label_text}}} {value}" if labels else f"{name} {value}")
    return "\n".join(lines) + "\n"


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsServer:
    """A Prometheus text endpoint: every request on its port, whatever its path, gets
    the current `collect()` series, then the connection closes.  At most
    `MAX_METRICS_CONNECTIONS` at once, each read up to `METRICS_REQUEST_BYTES` within
    `METRICS_TIMEOUT_S`: an outsider holding sockets or sending endless headers costs
    four sockets and 32 KiB."""

    def __init__(self, collect: Callable[[], Series]) -> None:
        self.collect = collect
        self._server: asyncio.Server | None = None
        self._open = 0

    @property
    def open_connections(self) -> int:
        """Scrapes being served now."""
        return self._open

    async def start(self, listen: Address) -> Address:
        """Listen on `listen` (port 0 picks one); the address bound."""
        self._server = await asyncio.start_server(self._serve, listen[0], listen[1])
        host, port = self._server.sockets[0].getsockname()[:2]
        return (host, port)

    async def stop(self) -> None:
        """Close the listener; idempotent."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_METRICS_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            await asyncio.wait_for(self._read_head(reader), METRICS_TIMEOUT_S)
            body = render_metrics(self.collect()).encode()
            head = (
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await asyncio.wait_for(writer.drain(), METRICS_TIMEOUT_S)
        except (TimeoutError, OSError, ValueError):
            pass
        finally:
            self._open -= 1
            writer.close()

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> None:
        received = 0
        while received < METRICS_REQUEST_BYTES:
            line = await reader.readline()
            received += len(line)
            if line in (b"\r\n", b"\n", b""):
                return


def core_series(core: TuskCore, name: str) -> Series:
    """A core's `metrics()` as series `synod_tusk_core_<metric>{core="name"}`."""
    return [
        (f"synod_tusk_core_{metric}", {"core": name}, value)
        for metric, value in core.metrics().items()
    ]


def driver_series(driver: Driver, names: Mapping[bytes, str]) -> Series:
    """A driver's `metrics()` and, per core, the round it reported, how many rounds it
    is behind the driver's highest certificate (`synod_tusk_driver_core_lag_rounds`),
    and how many rounds since its last certified header
    (`synod_tusk_driver_core_uncertified_rounds`: a starved core keeps its round but
    not this)."""
    labels = {"driver": driver.name}
    series: Series = [
        (f"synod_tusk_driver_{metric}", labels, value)
        for metric, value in driver.metrics().items()
    ]
    certified = driver.certified_rounds()
    unserved = driver.unserved_gaps()
    other_context = driver.context_refusals()
    for core, round_number in driver.core_rounds().items():
        core_labels = {**labels, "core": names.get(core, bytes(core).hex()[:12])}
        series.append(("synod_tusk_driver_core_round", core_labels, round_number))
        lag = max(0, driver.highest_round - round_number)
        series.append(("synod_tusk_driver_core_lag_rounds", core_labels, lag))
        uncertified = max(0, driver.highest_round - certified.get(core, 0))
        series.append(("synod_tusk_driver_core_uncertified_rounds", core_labels, uncertified))
        series.append(("synod_tusk_driver_core_gap_unserved", core_labels, int(core in unserved)))
        refused = len(other_context.get(core, ()))
        series.append(("synod_tusk_driver_core_other_context_members", core_labels, refused))
    return series


# ---------------------------------------------------------------- submitting


class SubmitFailed(Exception):
    """The core could not be reached, or its answer is not a receipt it signed."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """A core's signed answer to a submission: how many transactions it `accepted`
    (persisted, to be ordered), `refused`, and how many it holds `pending`; `reason`
    says why it refused (`FULL`, `BEHIND`, `NOT_IN_CONTACT`; `NONE` when it took all)."""

    accepted: int
    refused: int
    pending: int
    reason: SubmitRefusal = SubmitRefusal.NONE


NOT_IN_CONTACT_RETRY_S = 0.05
"""How soon `submit_transactions` asks again a core that refused as `NOT_IN_CONTACT`
(started with an empty store, no driver has reached it yet: a new committee's first
moments)."""


def check_submission(transactions: Iterable[bytes]) -> tuple[bytes, ...]:
    """The transactions as one request's tuple; `ValueError` when a core would refuse
    them all (too many at once, or one too large)."""
    batch = tuple(transactions)
    if len(batch) > MAX_SUBMIT_TRANSACTIONS:
        raise ValueError(f"at most {MAX_SUBMIT_TRANSACTIONS} transactions at once")
    if any(len(transaction) > MAX_TRANSACTION_BYTES for transaction in batch):
        raise ValueError(f"a transaction is at most {MAX_TRANSACTION_BYTES} bytes")
    return batch


async def submit_transactions(
    address: Address,
    core_id: NodeId,
    transactions: Iterable[bytes],
    *,
    timeout_s: float = 5.0,
    network: bytes = b"",
) -> Receipt:
    """Hand `transactions` to the core `core_id` of `network` listening at `address`;
    its receipt.

    A core that refuses as `NOT_IN_CONTACT` (new, and not reached by a driver yet) is
    asked again every `NOT_IN_CONTACT_RETRY_S` within `timeout_s`; its last receipt is
    returned.  Raises `ValueError` for a submission no core takes (see
    `check_submission`) and `SubmitFailed` when the core cannot be reached in
    `timeout_s` or its answer is not a receipt for this request signed by `core_id`.
    """
    request = SubmitRequest(transactions=check_submission(transactions))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    client = RpcClient(address)
    try:
        while True:
            receipt = await _submit_once(client, request, core_id, timeout_s, network)
            if receipt.reason != SubmitRefusal.NOT_IN_CONTACT or loop.time() >= deadline:
                return receipt
            await asyncio.sleep(NOT_IN_CONTACT_RETRY_S)  # the retry pace, not a wait on state
    finally:
        await client.close()


async def _submit_once(
    client: RpcClient, request: SubmitRequest, core_id: NodeId, timeout_s: float, network: bytes
) -> Receipt:
    result = await client.call(CODEC.encode(request), timeout_s=timeout_s)
    if isinstance(result, RpcFailure):
        raise SubmitFailed(result.reason)
    try:
        answer = CODEC.decode(result.body)
    except DecodeError as error:
        raise SubmitFailed(f"undecodable answer: {error}") from None
    if (
        not isinstance(answer, SubmitAnswer)
        or answer.core != core_id
        or answer.request_digest != request_digest(request)
        or not answer.has_valid_signature(network)
    ):
        raise SubmitFailed("the answer is not a receipt signed by it")
    return Receipt(answer.accepted, answer.refused, answer.pending, answer.reason)


class CommitUnproven(Exception):
    """Cores of weight f + 1 did not state one position for every transaction in time."""


async def wait_for_commit(
    committee: Committee,
    addresses: Mapping[NodeId, Address],
    transactions: Iterable[bytes],
    *,
    timeout_s: float,
    interval_s: float = 0.2,
    network: bytes = b"",
) -> dict[bytes, CommittedAt]:
    """Ask every core (`CommitQuery`), every `interval_s`, where `transactions` were
    committed, until cores of weight at least f + 1 (the validity threshold) state one
    position for each: at least one of them is correct and correct cores agree on the
    order, so no single core is trusted.  Returns transaction -> its position; raises
    `CommitUnproven` after `timeout_s`.
    """
    wanted = {transaction_digest(transaction): transaction for transaction in transactions}
    query = CommitQuery(transactions=tuple(wanted))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        acks = await asyncio.gather(
            *(_ask_commits(address, query, interval_s) for address in addresses.values())
        )
        valid = [ack for ack in acks if ack is not None and ack.core in addresses]
        proven = proven_commits(
            valid, committee.weights, committee.validity_threshold, network
        )
        if set(wanted) <= set(proven):
            return {wanted[digest]: proven[digest] for digest in wanted}
        if loop.time() >= deadline:
            raise CommitUnproven(f"{len(set(wanted) - set(proven))} not proven committed")
        await asyncio.sleep(interval_s)  # the polling period, not a synchronisation


async def _ask_commits(address: Address, query: CommitQuery, timeout_s: float) -> CommitAck | None:
    client = RpcClient(address)
    try:
        result = await client.call(CODEC.encode(query), timeout_s=max(timeout_s, 1.0))
    finally:
        await client.close()
    if isinstance(result, RpcFailure):
        return None
    try:
        answer = CODEC.decode(result.body)
    except DecodeError:
        return None
    return answer if isinstance(answer, CommitAck) else None


# ---------------------------------------------------------------- reading a core's log

_LAST_COMMIT_KEY = COMMIT_LOG_PREFIX + b"\xff" * 8


class CommitLogReader:
    """A core's committed sequence, read from its SQLite file through a read-only
    connection (the core may be running: it commits its records before it answers).

    Raises `StorageError` when the file cannot be opened or read.
    """

    def __init__(self, store_path: Path) -> None:
        self.path = store_path
        try:
            self._connection = sqlite3.connect(f"file:{store_path}?mode=ro", uri=True)
        except sqlite3.Error as error:
            raise StorageError(store_path, f"cannot open: {error}") from None

    def read_from(self, first: int) -> list[Committed]:
        """The deliveries held in the file now at positions `first` and above, in order.
        Positions may be missing: pruned below a checkpoint (`kept_commits`) or skipped
        by installing one.  (A write in progress is never half seen: the core commits
        each batch of records in one SQLite transaction.)"""
        try:
            rows = self._connection.execute(
                "SELECT value FROM records WHERE key >= ? AND key <= ? ORDER BY key",
                (commit_log_key(first), _LAST_COMMIT_KEY),
            ).fetchall()
        except sqlite3.Error as error:
            raise StorageError(self.path, f"cannot read: {error}") from None
        return self._decoded(rows)

    def _decoded(self, rows: list[Any]) -> list[Committed]:
        """The records of `rows`; a damaged one is a `StorageError` naming the file (a
        file edited or written by something else), not a decoder's traceback."""
        try:
            return [read_commit_record(bytes(value)) for (value,) in rows]
        except (DecodeError, ValueError) as error:
            raise StorageError(self.path, f"a damaged delivery-log record: {error}") from None

    def read_range(self, first: int, end: int, count: int) -> list[Committed]:
        """At most `count` deliveries held at positions `first` .. `end` - 1, in order."""
        try:
            rows = self._connection.execute(
                "SELECT value FROM records WHERE key >= ? AND key < ? ORDER BY key LIMIT ?",
                (commit_log_key(first), commit_log_key(end), count),
            ).fetchall()
        except sqlite3.Error as error:
            raise StorageError(self.path, f"cannot read: {error}") from None
        return self._decoded(rows)

    def log_gap(self) -> tuple[int, int] | None:
        """The positions [first, end) the core is still filling (`read_log_gap`), or
        None when its log has no gap being filled."""
        try:
            row = self._connection.execute(
                "SELECT value FROM records WHERE key = ?", (LOG_GAP_KEY,)
            ).fetchone()
        except sqlite3.Error as error:
            raise StorageError(self.path, f"cannot read: {error}") from None
        try:
            return None if row is None else read_log_gap(bytes(row[0]))
        except (DecodeError, ValueError) as error:
            raise StorageError(self.path, f"a damaged log-gap record: {error}") from None

    def read_below(self, end: int, count: int, max_bytes: int) -> dict[int, bytes]:
        """The stored records of positions `end` - 1, `end` - 2, ... (at most `count`,
        stopping once more than `max_bytes` were read), by position, as stored."""
        try:
            cursor = self._connection.execute(
                "SELECT key, value FROM records WHERE key >= ? AND key < ? ORDER BY key DESC",
                (commit_log_key(max(0, end - count)), commit_log_key(end)),
            )
            found: dict[int, bytes] = {}
            size = 0
            for key, value in cursor:
                found[int.from_bytes(bytes(key)[len(COMMIT_LOG_PREFIX) :], "big")] = bytes(value)
                size += len(value)
                if size > max_bytes:
                    break
            cursor.close()
        except sqlite3.Error as error:
            raise StorageError(self.path, f"cannot read: {error}") from None
        return found

    def close(self) -> None:
        """Close the connection."""
        self._connection.close()

    def __enter__(self) -> CommitLogReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
