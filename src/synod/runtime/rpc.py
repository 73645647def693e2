"""Request/response over TCP for passive servers and the active clients that drive them.

Theory of operation.  FastPay authorities and Tusk cores never initiate anything: they
listen, answer requests and hold no connection state that matters.  Their clients
(FastPay clients, Tusk drivers) do all the dialing, may pipeline many requests on one
connection and may crash at any time.

*Frames.*  Same framing as the peer transport (4-byte length checked against the cap
before the body is read).  A client sends ``RpcRequest(request_id, body)``; the server
answers ``RpcResponse(request_id, body)`` on the same connection, in any order.  Bodies
are opaque bytes here: the protocol's `synod.wire.Codec` gives them meaning.

*Server.*  Each connection gets a client id (``"rpc:<host>:<port>#<n>"``).  Requests of
one connection are handed to the handler in the order they arrived.  The handler either
returns the reply body, or returns ``None`` and answers later with `RpcServer.reply`
(this is how a `synod.runtime.host.NodeHost` passes a request through its core).  A
client that sends garbage (oversized or truncated frames, undecodable requests) or does
not read its replies (more than `RpcConfig.max_buffered_reply_bytes` waiting) is
disconnected and logged; every other client keeps being served.  The server does not
authenticate clients: passive cores check the signatures carried in requests.

*Under attack* (docs/runtime.md gives each number and its reason).  Anyone can connect,
so every resource a connection holds is budgeted per source host (`synod.runtime.
admission`): connection slots (`max_clients_per_host` of `max_clients`; a full server
makes room by closing the least recently active connection of the busiest host), bytes
of frames being received (`receive_budget_per_host_bytes` of `receive_budget_bytes`,
reserved from the header before the body is read), time (a frame must start within
`deadlines.idle_s` and finish within a deadline that grows with its length), and
unread replies: the server reads a connection's next request only once that
connection's replies have drained below the socket's high-water mark, waiting at most
`deadlines.idle_s`, so a client that never reads stops being served without growing the
server.

*Client.*  `RpcClient.call` reports every failure as a value (`RpcFailure`: cannot
connect, timeout, connection lost, garbage from the server), never as an exception; it
reconnects on the next call after a failure.  A reply that arrives after its call timed
out is discarded.

*Write coalescing.*  Both sides queue the frames written during one turn of the event
loop per connection and hand them to the socket together at the end of that turn (one
``send`` for many pipelined requests or for all replies of a host's batch), in the order
they were written.  Nothing waits longer than the current turn, so latency is unchanged;
the per-frame system calls and the receiver's wake-ups are what it saves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from synod.runtime.admission import ByteBudget, ConnectionSlots, Slot
from synod.runtime.framing import (
    FrameDeadlines,
    close_writer,
    connection_starter,
    read_frame,
    read_frame_guarded,
)
from synod.wire import (
    DEFAULT_MAX_FRAME_BYTES,
    U64,
    Codec,
    DecodeError,
    Message,
    WireError,
    canonical_bytes,
    encode_frame,
)

log = logging.getLogger("synod.runtime.rpc")

Address = tuple[str, int]

RequestHandler = Callable[[str, int, bytes], Awaitable[bytes | None]]
"""(client id, request id, request body) -> reply body now, or None to reply later."""


class RpcRequest(Message, frozen=True, tag="request"):
    request_id: U64
    body: bytes


class RpcResponse(Message, frozen=True, tag="response"):
    request_id: U64
    body: bytes


class RequestRejected(WireError):
    """Raised by a handler for a request that is garbage: the server drops that client."""


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """Limits and timings of the request/response layer (seconds, bytes)."""

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    connect_timeout_s: float = 5.0
    call_timeout_s: float = 5.0
    max_buffered_reply_bytes: int = 16 * 1024 * 1024
    close_timeout_s: float = 1.0
    max_clients: int = 1024
    """Connections served at once (a full server makes room from the busiest host)."""
    max_clients_per_host: int = 64
    """Connections from one source address: a client needs one per server, a load
    generator one per process; more than 64 from one host is an attack or a leak."""
    receive_budget_bytes: int = 256 * 1024 * 1024
    """Bytes of requests being received, all connections together."""
    receive_budget_per_host_bytes: int = 32 * 1024 * 1024
    """Bytes of requests being received from one host: eight maximum-size frames."""
    unread_reply_budget_bytes: int = 256 * 1024 * 1024
    """Replies written but not yet read by their clients, all connections together."""
    unread_reply_budget_per_host_bytes: int = 32 * 1024 * 1024
    """The same for the connections of one host."""
    deadlines: FrameDeadlines = field(default_factory=FrameDeadlines)


@dataclass(frozen=True, slots=True)
class RpcReply:
    """A call succeeded with this reply body."""

    body: bytes


@dataclass(frozen=True, slots=True)
class RpcFailure:
    """A call failed; `reason` says why (cannot connect, timeout, connection lost...)."""

    reason: str


RpcResult = RpcReply | RpcFailure

_REPLY_SUM_THRESHOLD_BYTES = 1024 * 1024
_EAGER_WRITE_BYTES = 64 * 1024
"""Replies of one client buffered in this loop turn beyond which they are written at
once, so that the socket's back-pressure applies before the next request is read."""

# ---------------------------------------------------------------- server


class RpcServer:
    """Accepts client connections and maps each request to `handler` (see module doc)."""

    def __init__(self, handler: RequestHandler, *, config: RpcConfig | None = None) -> None:
        self.handler = handler
        self.config = config if config is not None else RpcConfig()
        self._codec: Codec[RpcRequest] = Codec(
            RpcRequest, max_message_bytes=self.config.max_frame_bytes
        )
        self._clients: dict[str, asyncio.StreamWriter] = {}
        self._unsent: dict[str, list[bytes]] = {}
        self._unsent_bytes: dict[str, int] = {}
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._hosts: dict[str, str] = {}
        self.slots = ConnectionSlots(
            total=self.config.max_clients, per_host=self.config.max_clients_per_host
        )
        self.receive_budget = ByteBudget(
            total=self.config.receive_budget_bytes,
            per_host=self.config.receive_budget_per_host_bytes,
        )
        self.dropped_clients = 0
        """Connections closed because the client misbehaved."""

    @property
    def refused_clients(self) -> int:
        """Connections refused on accept (their host, or the server, was full)."""
        return self.slots.refused

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def host_of(self, client: str) -> str:
        """The source address of a connected client (its own id when it has gone)."""
        return self._hosts.get(client, client)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Address:
        """Listen on host:port (0 picks a free port); return the bound address."""
        if self._server is not None:
            raise RuntimeError("server already started")
        self._server = await asyncio.start_server(
            connection_starter(self._accept, self._tasks), host, port
        )
        bound = self._server.sockets[0].getsockname()
        log.info("rpc listening", extra={"address": f"{bound[0]}:{bound[1]}"})
        return str(bound[0]), int(bound[1])

    def reply(self, client: str, request_id: int, body: bytes) -> bool:
        """Send a reply; False (logged) when that client is gone or was too slow."""
        writer = self._clients.get(client)
        if writer is None or writer.is_closing():
            log.info("reply to a departed client dropped", extra={"client": client})
            return False
        frame = encode_frame(
            canonical_bytes(RpcResponse(request_id, body)),
            max_frame_bytes=self.config.max_frame_bytes,
        )
        unsent_bytes = self._unsent_bytes.get(client, 0) + len(frame)
        buffered = writer.transport.get_write_buffer_size() + unsent_bytes
        if self._over_reply_budget(client, buffered):
            log.warning("client does not read its replies; disconnected", extra={"client": client})
            self.dropped_clients += 1
            self._unsent.pop(client, None)
            self._unsent_bytes.pop(client, None)
            writer.transport.abort()
            return False
        self._unsent.setdefault(client, []).append(frame)
        self._unsent_bytes[client] = unsent_bytes
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return True

    def _buffered(self, client: str) -> int:
        writer = self._clients.get(client)
        if writer is None or writer.is_closing():
            return 0
        return writer.transport.get_write_buffer_size() + self._unsent_bytes.get(client, 0)

    def _over_reply_budget(self, client: str, buffered: int) -> bool:
        """Whether replies waiting for `client` pass its bound, its host's or the server's.

        Honest clients read their replies, so the sums over a host's clients and over all
        clients are taken only for a client that already has 1 MiB waiting.
        """
        config = self.config
        if buffered > config.max_buffered_reply_bytes:
            return True
        if buffered <= _REPLY_SUM_THRESHOLD_BYTES:
            return False
        host = self._hosts.get(client)
        others = [other for other in self._clients if other != client]
        same_host = sum(self._buffered(other) for other in others if self._hosts.get(other) == host)
        if buffered + same_host > config.unread_reply_budget_per_host_bytes:
            return True
        everyone = sum(self._buffered(other) for other in others)
        return buffered + everyone > config.unread_reply_budget_bytes

    def _write_unsent(self, client: str) -> None:
        frames = self._unsent.pop(client, [])
        self._unsent_bytes.pop(client, None)
        writer = self._clients.get(client)
        if frames and writer is not None and not writer.is_closing():
            writer.write(b"".join(frames))

    def _flush(self) -> None:
        """Write each client's replies of this loop turn in one go (see module doc)."""
        self._flush_scheduled = False
        unsent, self._unsent = self._unsent, {}
        self._unsent_bytes = {}
        for client, frames in unsent.items():
            writer = self._clients.get(client)
            if writer is not None and not writer.is_closing():
                writer.write(b"".join(frames))

    async def close(self) -> None:
        """Stop listening and close every client connection."""
        self._flush()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host = _peer_host(writer)
        loop = asyncio.get_running_loop()
        slot = self.slots.admit(host, writer.transport.abort, loop.time())
        if slot is None:
            log.warning(
                "too many clients; connection refused",
                extra={"host": host, "from_host": self.slots.held_by(host)},
            )
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        client = f"rpc:{_peer_address(writer)}#{next(self._numbers)}"
        self._clients[client] = writer
        self._hosts[client] = host
        try:
            await self._serve(client, slot, reader, writer)
        except asyncio.CancelledError:
            pass  # cancelled by `close`: end quietly (asyncio would log it as an error)
        finally:
            self.slots.release(slot)
            frames = self._unsent.pop(client, [])
            self._unsent_bytes.pop(client, None)
            if frames and not writer.is_closing():
                writer.write(b"".join(frames))  # replies of this turn still go out
            self._clients.pop(client, None)
            self._hosts.pop(client, None)
            self._tasks.discard(task)
            await close_writer(writer, timeout_s=self.config.close_timeout_s)

    async def _serve(
        self,
        client: str,
        slot: Slot,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadlines = self.config.deadlines
        try:
            while True:
                body = await read_frame_guarded(
                    reader,
                    max_frame_bytes=self.config.max_frame_bytes,
                    deadlines=deadlines,
                    budget=self.receive_budget,
                    host=slot.host,
                )
                slot.last_active = loop.time()
                request = self._codec.decode(body)
                reply = await self.handler(client, request.request_id, request.body)
                if reply is not None:
                    self.reply(client, request.request_id, reply)
                if self._unsent_bytes.get(client, 0) >= _EAGER_WRITE_BYTES:
                    self._write_unsent(client)  # so that `drain` sees them
                async with asyncio.timeout(deadlines.idle_s):
                    await writer.drain()  # replies read before the next request is
        except asyncio.IncompleteReadError as error:
            if error.partial:
                self._drop(client, "connection closed mid-frame")
        except TimeoutError:
            log.info("idle or stalled client disconnected", extra={"client": client})
        except (DecodeError, WireError) as error:
            self._drop(client, f"{type(error).__name__}: {error}")
        except OSError as error:
            log.info("client connection lost", extra={"client": client, "reason": str(error)})
        except Exception:
            # A handler bug must not stop the server; that client is disconnected.
            self.dropped_clients += 1
            log.exception("request handler failed", extra={"client": client})

    def _drop(self, client: str, reason: str) -> None:
        self.dropped_clients += 1
        log.warning(
            "client sent bad input; disconnected", extra={"client": client, "reason": reason}
        )


# ---------------------------------------------------------------- client


class _ClientConnection:
    """One open connection of an `RpcClient` and its pending calls."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        config: RpcConfig,
        codec: Codec[RpcResponse],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.config = config
        self.codec = codec
        self.pending: dict[int, asyncio.Future[RpcResult]] = {}
        self.unsent: list[bytes] = []
        self.failure: str | None = None
        self.reader_task = asyncio.create_task(self._read_replies())

    def submit(self, request_id: int, frame: bytes) -> asyncio.Future[RpcResult]:
        future: asyncio.Future[RpcResult] = asyncio.get_running_loop().create_future()
        if self.failure is not None:
            future.set_result(RpcFailure(self.failure))
            return future
        self.pending[request_id] = future
        if not self.unsent:
            asyncio.get_running_loop().call_soon(self._flush)
        self.unsent.append(frame)
        return future

    def _flush(self) -> None:
        """Write the requests of this loop turn in one go (see module doc)."""
        frames, self.unsent = self.unsent, []
        if frames and self.failure is None and not self.writer.is_closing():
            self.writer.write(b"".join(frames))

    async def _read_replies(self) -> None:
        try:
            while True:
                body = await read_frame(self.reader, max_frame_bytes=self.config.max_frame_bytes)
                response = self.codec.decode(body)
                future = self.pending.pop(response.request_id, None)
                if future is not None and not future.done():
                    future.set_result(RpcReply(response.body))
        except asyncio.IncompleteReadError:
            self._fail("connection closed by the server")
        except (DecodeError, WireError) as error:
            self._fail(f"bad reply from the server: {error}")
        except OSError as error:
            self._fail(f"connection lost: {error}")
        finally:
            self.writer.transport.abort()

    def expire(self, request_id: int, reason: str) -> None:
        """Give up waiting for one reply; a late reply is then discarded."""
        future = self.pending.pop(request_id, None)
        if future is not None and not future.done():
            future.set_result(RpcFailure(reason))

    def _fail(self, reason: str) -> None:
        self.failure = reason
        self.unsent = []
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_result(RpcFailure(reason))

    async def close(self) -> None:
        self._fail("client closed")
        self.reader_task.cancel()
        await asyncio.gather(self.reader_task, return_exceptions=True)
        await close_writer(self.writer, timeout_s=self.config.close_timeout_s)


class RpcClient:
    """Calls to one server over one (re)connected TCP connection; failures are values."""

    def __init__(self, address: Address, *, config: RpcConfig | None = None) -> None:
        self.address = address
        self.config = config if config is not None else RpcConfig()
        self._request_codec: Codec[RpcRequest] = Codec(
            RpcRequest, max_message_bytes=self.config.max_frame_bytes
        )
        self._response_codec: Codec[RpcResponse] = Codec(
            RpcResponse, max_message_bytes=self.config.max_frame_bytes
        )
        self._connection: _ClientConnection | None = None
        self._connect_lock = asyncio.Lock()
        self._request_ids = itertools.count(1)
        self._closed = False

    async def call(self, body: bytes, *, timeout_s: float | None = None) -> RpcResult:
        """Send `body`, wait for the reply (at most `timeout_s`, default from the config).

        Raises only for caller misuse (a body larger than the frame cap, a closed client).
        """
        if self._closed:
            raise RuntimeError("client is closed")
        request_id = next(self._request_ids)
        frame = encode_frame(
            self._request_codec.encode(RpcRequest(request_id, body)),
            max_frame_bytes=self.config.max_frame_bytes,
        )
        timeout = self.config.call_timeout_s if timeout_s is None else timeout_s
        connection: _ClientConnection | RpcFailure | None = None
        try:
            async with asyncio.timeout(timeout):
                connection = await self._connected()
                if isinstance(connection, RpcFailure):
                    return connection
                reply = connection.submit(request_id, frame)
                with contextlib.suppress(ConnectionError):
                    # Push back on callers that pipeline faster than the socket drains;
                    # a broken connection is reported through `reply`.
                    await connection.writer.drain()
                return await reply
        except TimeoutError:
            return RpcFailure(f"no reply within {timeout:g} s")
        finally:
            if isinstance(connection, _ClientConnection):
                connection.pending.pop(request_id, None)

    @property
    def connected(self) -> bool:
        """True while the client holds an open connection (calls need no connect)."""
        connection = self._connection
        return not self._closed and connection is not None and connection.failure is None

    def start_call(
        self, body: bytes, *, timeout_s: float | None = None
    ) -> asyncio.Future[RpcResult]:
        """Start a call and return the future of its result at once.

        Same results as `call` (failures are values, the same timeout).  On an open
        connection no task is created, which is what a caller that keeps thousands of
        calls in flight saves; unlike `call` it does not wait for the socket to drain,
        so such a caller bounds its calls in flight itself.
        """
        if self._closed:
            raise RuntimeError("client is closed")
        connection = self._connection
        if connection is None or connection.failure is not None:
            return asyncio.ensure_future(self.call(body, timeout_s=timeout_s))
        request_id = next(self._request_ids)
        frame = encode_frame(
            self._request_codec.encode(RpcRequest(request_id, body)),
            max_frame_bytes=self.config.max_frame_bytes,
        )
        timeout = self.config.call_timeout_s if timeout_s is None else timeout_s
        reply = connection.submit(request_id, frame)
        if reply.done():
            return reply
        expiry = asyncio.get_running_loop().call_later(
            timeout, connection.expire, request_id, f"no reply within {timeout:g} s"
        )
        reply.add_done_callback(lambda _: expiry.cancel())
        return reply

    async def _connected(self) -> _ClientConnection | RpcFailure:
        async with self._connect_lock:
            current = self._connection
            if current is not None and current.failure is None:
                return current
            if current is not None:
                await current.close()
                self._connection = None
            host, port = self.address
            try:
                async with asyncio.timeout(self.config.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(host, port)
            except (OSError, TimeoutError) as error:
                return RpcFailure(f"cannot connect to {host}:{port}: {error or 'timeout'}")
            self._connection = _ClientConnection(reader, writer, self.config, self._response_codec)
            return self._connection

    async def close(self) -> None:
        """Fail pending calls and close the connection."""
        self._closed = True
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()


def _peer_address(writer: asyncio.StreamWriter) -> str:
    peername = writer.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(peername)


def _peer_host(writer: asyncio.StreamWriter) -> str:
    """The source address a connection comes from: what admission is fair between."""
    peername = writer.get_extra_info("peername")
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername)
