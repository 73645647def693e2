"""`NodeHost`: drive one sans-I/O core on a real network, clock and disk.

Theory of operation.  The host turns the world into the core's inputs and the core's
outputs into effects, following the contract of `synod.core`:

*Inputs.*  `Started` first; then peer messages from the `PeerTransport` (decoded with
the protocol's `Codec`, sender authenticated by the handshake) as `Received`, client
requests from the `RpcServer` as `RequestReceived`, answers to the core's own calls as
`Response` / `CallFailed`, expired timers as `TimerFired`, and the application's
`propose` as `Proposed`.  One task feeds them to the core, so the core sees one input at
a time.  The node's own inputs (timers, call results, proposals) wait in arrival order
and go first; remote inputs wait in a `synod.runtime.admission.FairQueue`, one source per
peer and one per client host, served by deficit round robin counted in request bytes
plus a fixed 4 KiB per input: a peer or host that sends much, many, or large requests
waits for its own turn, not everyone's.  A source whose queue is full
(`HostConfig.per_source_inputs` items or `per_source_bytes`), or a full host
(`input_queue_limit` remote inputs), stops reading that source's connection, which
pushes back on it alone; the node's own inputs are never refused.

*Outputs, in the contract's order.*  For each input the core returns a `Step`:

1. its `Persist` records are committed to SQLite (WAL, synchronous=FULL, one
   transaction) **before** any of its messages is handed to the transport;
2. its `Send`/`Broadcast` go to the peer transport, `Reply` to the request's
   connection, `Call` to the named passive server through an `RpcClient`;
3. its timer commands are applied (`SetTimer` replaces a pending timer of that name);
4. its events go to the application callback.

Group commit: when several inputs are waiting, the host handles up to
`HostConfig.max_batch_inputs` of them, commits all their records in one transaction,
then sends and emits step by step in order.  Nothing of any of those steps has left the
node before the commit, so a crash at any point leaves only states the contract allows,
and one fsync serves the whole batch.  Timer commands take effect as each step is
handled rather than after the commit: a timer can only fire into the input queue,
which is read after the batch, so the order is not observable, and a `TimerFired`
that a later step in the batch made stale is discarded (each timer carries a
generation number).

*Clock.*  ``now_ms`` is ``time.monotonic_ns() // 1_000_000``: Linux ``CLOCK_MONOTONIC``,
which never goes backwards and ignores wall-clock changes; its origin is arbitrary
(usually boot) and it does not survive a reboot, so cores compare ``now_ms`` values
only within one run.

*Failures.*  Bad peer input never reaches here (the transport drops the connection).
An exception from the core, from the store (disk full, file removed) or an unencodable
output is a bug or a fatal condition: nothing more of that step is applied, the host
stops, and `serve` raises `HostFailed`.

*Shutdown.*  `stop` (or SIGINT/SIGTERM under `serve`): stop taking input, finish the
step in progress, close the RPC listener and clients, flush the peer send queues for at
most `HostConfig.flush_timeout_s`, close the connections, cancel timers, close SQLite.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from synod.core import (
    Broadcast,
    Call,
    CallFailed,
    CancelTimer,
    Core,
    Input,
    Outgoing,
    Persist,
    Proposed,
    Received,
    Reply,
    RequestReceived,
    Response,
    Send,
    SetTimer,
    Started,
    Step,
    TimerCommand,
    TimerFired,
)
from synod.crypto import KeyPair, NodeId, node_id_short
from synod.runtime.admission import FairQueue
from synod.runtime.rpc import (
    RequestRejected,
    RpcClient,
    RpcConfig,
    RpcFailure,
    RpcResult,
    RpcServer,
)
from synod.runtime.storage import SqliteStorage
from synod.runtime.transport import Address, PeerTransport, TransportConfig
from synod.wire import Codec, DecodeError

log = logging.getLogger("synod.runtime.host")

EventHandler = Callable[[Any], None]
CallRouter = Callable[[NodeId, Any], Address | None]
"""(server id, request message) -> the address to call, for servers split in shards."""


def monotonic_ms() -> int:
    """The host's clock: CLOCK_MONOTONIC in whole milliseconds (arbitrary origin)."""
    return time.monotonic_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Limits and timings of a `NodeHost`."""

    max_batch_inputs: int = 256
    input_queue_limit: int = 10_000
    """Remote inputs waiting, all sources together."""
    per_source_inputs: int = 1_024
    """Inputs waiting from one peer or one client host."""
    per_source_bytes: int = 16 * 1024 * 1024
    """Request bytes waiting from one peer or one client host."""
    fair_quantum_bytes: int = 64 * 1024
    """Bytes of input each waiting source may have handled per round."""
    call_timeout_ms: int = 5_000
    flush_timeout_s: float = 1.0
    transport: TransportConfig = field(default_factory=TransportConfig)
    rpc: RpcConfig = field(default_factory=RpcConfig)


class HostFailed(Exception):
    """The core, the store or an output failed; the host stopped (see the cause)."""


@dataclass(frozen=True, slots=True)
class _TimerExpiry:
    name: str
    generation: int


_Item = Input | _TimerExpiry

_INPUT_BASE_COST_BYTES = 4_096
"""What any remote input costs in the fair queue besides its bytes: handling one has a
fixed price (a decode, a signature check or two), so a source of many tiny requests gets
at most quantum / 4 KiB of them (16 by default) per round, not thousands."""


class NodeHost:
    """Runs one `synod.core.Core` with a peer transport, an RPC server/clients and SQLite.

    Build the core from ``storage.load()`` first, then hand both to the host.  `peers`
    maps every peer's id to its transport address; `servers` maps passive servers this
    core may `Call` to their RPC addresses; `route_call`, when given, chooses the address
    of each call instead (a server split in shards: one address per shard, picked from
    the request).  `network` is the network id every peer must share (see
    `synod.runtime.transport`).
    """

    def __init__(
        self,
        core: Core,
        *,
        keys: KeyPair,
        codec: Codec[Any],
        storage: SqliteStorage,
        peers: Mapping[NodeId, Address] | None = None,
        servers: Mapping[NodeId, Address] | None = None,
        on_event: EventHandler | None = None,
        route_call: CallRouter | None = None,
        config: HostConfig | None = None,
        clock: Callable[[], int] = monotonic_ms,
        network: bytes = b"",
    ) -> None:
        if core.node_id != keys.node_id:
            raise ValueError("the core's node id is not the id of these keys")
        self.core = core
        self.keys = keys
        self.codec = codec
        self.storage = storage
        self.peers = dict(peers or {})
        self.servers = dict(servers or {})
        self.on_event = on_event
        self.route_call = route_call
        self.config = config if config is not None else HostConfig()
        self.clock = clock
        self.network = network
        """The network id peers must share (checked at the transport's handshake)."""
        self.transport: PeerTransport | None = None
        self.rpc_server: RpcServer | None = None
        self.address: Address | None = None
        self.rpc_address: Address | None = None
        self.failure: BaseException | None = None
        self.steps_applied = 0
        self.commits = 0
        self._local: deque[_Item] = deque()
        # Started is queued first, before any proposal or listener: the core's first input.
        self._local.append(Started())
        self._remote: FairQueue[str, Input] = FairQueue(
            quantum_bytes=self.config.fair_quantum_bytes,
            per_source_items=self.config.per_source_inputs,
            per_source_bytes=self.config.per_source_bytes,
        )
        self._ready = asyncio.Event()
        self._ready.set()
        self._room = asyncio.Event()
        self._room.set()
        self._rpc_clients: dict[Address, RpcClient] = {}
        self._call_tasks: set[asyncio.Task[None]] = set()
        self._timers: dict[str, tuple[int, asyncio.TimerHandle]] = {}
        self._generations = itertools.count(1)
        self._worker: asyncio.Task[None] | None = None
        self._busy = False
        self._stopping = False
        self._stopped = asyncio.Event()
        self._stop_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(
        self, *, listen: Address | None = None, rpc_listen: Address | None = None
    ) -> None:
        """Feed `Started`, open the listeners, begin processing inputs.

        `listen` is the peer transport's address (needed when the host has peers; port 0
        picks one, see `address`); `rpc_listen` opens a request/response server for a
        passive core (see `rpc_address`).
        """
        if self._worker is not None:
            raise RuntimeError("host already started")
        if self.peers and listen is None:
            raise ValueError("a host with peers needs a listen address")
        if listen is not None:
            self.transport = PeerTransport(
                self.keys,
                self.peers,
                self.codec,
                self._on_peer_message,
                config=self.config.transport,
                network=self.network,
            )
            self.address = await self.transport.start(*listen)
        if rpc_listen is not None:
            self.rpc_server = RpcServer(self._on_request, config=self.config.rpc)
            self.rpc_address = await self.rpc_server.start(*rpc_listen)
        self._worker = asyncio.create_task(self._process_inputs(), name="host inputs")
        log.info("host started", extra={"node": node_id_short(self.keys.node_id)})

    @property
    def waiting_inputs(self) -> int:
        """Inputs from peers and clients waiting for their turn."""
        return len(self._remote)

    def propose(self, value: Any) -> None:
        """Hand the core a `Proposed(value)` (processed in order with other inputs)."""
        if self._stopping:
            raise RuntimeError("host is stopping")
        self._put_local(Proposed(value))

    async def wait_stopped(self) -> None:
        """Wait until the host stopped (after `stop` or a failure)."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """Shut down cleanly (see the module docstring); idempotent."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        if self._worker is not None:
            if not self._busy:
                self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        await self._close_io()
        self._stopped.set()
        log.info("host stopped", extra={"node": node_id_short(self.keys.node_id)})

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run until SIGINT or SIGTERM, then stop; raise `HostFailed` if the host failed.

        `on_ready` runs once the signal handlers are installed: a process that announces
        readiness there can be stopped cleanly by anyone who saw the announcement.
        """
        loop = asyncio.get_running_loop()
        signalled = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, signalled.set)
        try:
            if on_ready is not None:
                on_ready()
            waiters = [
                asyncio.ensure_future(signalled.wait()),
                asyncio.ensure_future(self._stopped.wait()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if signalled.is_set():
                log.info("signal received; stopping")
            await self.stop()
        finally:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(number)
        if self.failure is not None:
            raise HostFailed(str(self.failure)) from self.failure

    async def _close_io(self) -> None:
        for task in list(self._call_tasks):
            task.cancel()
        await asyncio.gather(*self._call_tasks, return_exceptions=True)
        if self.rpc_server is not None:
            await self.rpc_server.close()
        for client in self._rpc_clients.values():
            await client.close()
        if self.transport is not None:
            await self.transport.close(flush_timeout_s=self.config.flush_timeout_s)
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self.storage.close()

    # ------------------------------------------------------------ input sources

    def _put_local(self, item: _Item) -> None:
        self._local.append(item)
        self._ready.set()

    async def _put_remote(self, source: str, item: Input, cost_bytes: int) -> None:
        while (
            len(self._remote) >= self.config.input_queue_limit
            or not self._remote.has_room(source, cost_bytes)
        ):
            self._room.clear()
            await self._room.wait()
        self._remote.put(source, item, cost_bytes)
        self._ready.set()

    async def _on_peer_message(self, sender: NodeId, message: Any) -> None:
        source = "peer:" + bytes(sender).hex()
        await self._put_remote(source, Received(sender, message), _INPUT_BASE_COST_BYTES)

    async def _on_request(self, client: str, request_id: int, body: bytes) -> bytes | None:
        try:
            message = self.codec.decode(body)
        except DecodeError as error:
            raise RequestRejected(f"undecodable request: {error}") from None
        server = self.rpc_server
        source = "host:" + (server.host_of(client) if server is not None else client)
        cost = _INPUT_BASE_COST_BYTES + len(body)
        await self._put_remote(source, RequestReceived(client, request_id, message), cost)
        return None

    def _timer_expired(self, name: str, generation: int) -> None:
        self._put_local(_TimerExpiry(name, generation))

    async def _next_batch(self) -> list[_Item]:
        while not self._local and not len(self._remote):
            self._ready.clear()
            await self._ready.wait()
        limit = self.config.max_batch_inputs
        batch: list[_Item] = []
        while self._local and len(batch) < limit:
            batch.append(self._local.popleft())
        batch.extend(self._remote.take(limit - len(batch)))
        self._room.set()
        return batch

    # ------------------------------------------------------------ the step loop

    async def _process_inputs(self) -> None:
        try:
            while not self._stopping:
                batch = await self._next_batch()
                self._busy = True
                await self._run_batch(batch)
                self._busy = False
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.failure = error
            log.exception("host failed; stopping")
            self._stop_task = asyncio.get_running_loop().create_task(self.stop())

    async def _run_batch(self, batch: list[_Item]) -> None:
        steps: list[Step] = []
        for item in batch:
            event = self._admit(item)
            if event is None:
                continue
            step = self.core.handle(event, self.clock())
            self._apply_timers(step.timers)
            steps.append(step)
        records = [record for step in steps for record in step.persist]
        if records:
            await self._persist(records)
        for step in steps:
            self._apply_outgoing(step.outgoing)
            self._emit(step.events)
            self.steps_applied += 1

    async def _persist(self, records: list[Persist]) -> None:
        # The commit (an fsync) runs on a worker thread so the sockets keep being served;
        # this task waits for it, so nothing of the batch is sent before it is durable.
        await asyncio.to_thread(self.storage.apply, records)
        self.commits += 1

    def _admit(self, item: _Item) -> Input | None:
        if not isinstance(item, _TimerExpiry):
            return item
        pending = self._timers.get(item.name)
        if pending is None or pending[0] != item.generation:
            return None  # cancelled or replaced after it expired
        del self._timers[item.name]
        return TimerFired(item.name)

    def _apply_timers(self, commands: list[TimerCommand]) -> None:
        loop = asyncio.get_running_loop()
        for command in commands:
            pending = self._timers.pop(command.name, None)
            if pending is not None:
                pending[1].cancel()
            if isinstance(command, SetTimer):
                generation = next(self._generations)
                handle = loop.call_later(
                    max(0, command.delay_ms) / 1000,
                    self._timer_expired,
                    command.name,
                    generation,
                )
                self._timers[command.name] = (generation, handle)
            else:
                assert isinstance(command, CancelTimer)

    def _apply_outgoing(self, outgoing: list[Outgoing]) -> None:
        for effect in outgoing:
            match effect:
                case Send(to=to, message=message):
                    self._send(to, message)
                case Broadcast(message=message):
                    if self.transport is not None:
                        self.transport.broadcast(message)
                case Reply(client=client, request_id=request_id, body=body):
                    self._reply(client, request_id, body)
                case Call(to=to, request_id=request_id, body=body):
                    self._call(to, request_id, body)
                case _:
                    raise TypeError(f"unknown output {effect!r}")

    def _send(self, to: NodeId, message: Any) -> None:
        if to == self.keys.node_id:
            self._put_local(Received(to, message))
        elif self.transport is not None:
            self.transport.send(to, message)
        else:
            log.warning("send without a transport dropped", extra={"peer": node_id_short(to)})

    def _reply(self, client: str, request_id: int, body: Any) -> None:
        if self.rpc_server is None:
            log.warning("reply without an rpc server dropped", extra={"client": client})
            return
        self.rpc_server.reply(client, request_id, self.codec.encode(body))

    def _call(self, to: NodeId, request_id: int, body: Any) -> None:
        encoded = self.codec.encode(body)
        router = self.route_call
        address = router(to, body) if router is not None else self.servers.get(to)
        client = self._rpc_clients.get(address) if address is not None else None
        if client is not None and client.connected:
            # The common case under load: no task per call, the same inputs in the end.
            try:
                reply = client.start_call(encoded, timeout_s=self.config.call_timeout_ms / 1000)
            except ValueError as error:  # a request larger than the frame cap
                self._put_local(CallFailed(to, request_id, str(error)))
                return
            reply.add_done_callback(functools.partial(self._call_completed, to, request_id))
            return
        task = asyncio.get_running_loop().create_task(
            self._complete_call(to, address, request_id, encoded)
        )
        self._call_tasks.add(task)
        task.add_done_callback(self._call_tasks.discard)

    def _call_completed(
        self, to: NodeId, request_id: int, reply: asyncio.Future[RpcResult]
    ) -> None:
        if self._stopping or reply.cancelled():
            return
        self._complete_with(to, request_id, reply.result())

    def _complete_with(self, to: NodeId, request_id: int, result: RpcResult) -> None:
        if isinstance(result, RpcFailure):
            self._put_local(CallFailed(to, request_id, result.reason))
            return
        try:
            message = self.codec.decode(result.body)
        except DecodeError as error:
            self._put_local(CallFailed(to, request_id, f"undecodable reply: {error}"))
            return
        self._put_local(Response(to, request_id, message))

    async def _complete_call(
        self, to: NodeId, address: Address | None, request_id: int, body: bytes
    ) -> None:
        if address is None:
            self._put_local(CallFailed(to, request_id, "unknown server"))
            return
        client = self._rpc_clients.get(address)
        if client is None:
            client = self._rpc_clients[address] = RpcClient(address, config=self.config.rpc)
        try:
            result = await client.call(body, timeout_s=self.config.call_timeout_ms / 1000)
        except ValueError as error:  # a request larger than the frame cap
            self._put_local(CallFailed(to, request_id, str(error)))
            return
        self._complete_with(to, request_id, result)

    def _emit(self, events: list[Any]) -> None:
        if self.on_event is None:
            return
        for event in events:
            try:
                self.on_event(event)
            except Exception:
                # The application's bug; the node keeps running for its peers.
                log.exception("event handler failed")
