"""Request/response layer over real sockets: replies by id, failures as values, bad
clients disconnected while the others keep being served."""

from __future__ import annotations

import asyncio
import struct

import pytest
from runtime_helpers import asynchronous, read_to_end

from synod.runtime.rpc import (
    RequestRejected,
    RpcClient,
    RpcConfig,
    RpcFailure,
    RpcReply,
    RpcServer,
)
from synod.wire import encode_frame

pytestmark = pytest.mark.timeout(20)

DEADLINE_S = 5.0


async def upper(client: str, request_id: int, body: bytes) -> bytes:
    if body == b"reject me":
        raise RequestRejected("the handler refuses this request")
    return body.upper()


@asynchronous
async def test_call_returns_the_handlers_reply() -> None:
    server = RpcServer(upper)
    address = await server.start()
    client = RpcClient(address)
    try:
        assert await client.call(b"hello") == RpcReply(b"HELLO")
        results = await asyncio.gather(*(client.call(b"x%d" % n) for n in range(50)))
        assert results == [RpcReply(b"X%d" % n) for n in range(50)]
    finally:
        await client.close()
        await server.close()


@asynchronous
async def test_replies_out_of_order_reach_their_own_calls() -> None:
    """A deferred reply (handler returns None) is matched by request id, not by order."""
    held: list[tuple[str, int, bytes]] = []
    both_held = asyncio.Event()

    async def hold(client: str, request_id: int, body: bytes) -> None:
        held.append((client, request_id, body))
        if len(held) == 2:
            both_held.set()

    server = RpcServer(hold)
    client = RpcClient(await server.start())
    try:
        first = asyncio.ensure_future(client.call(b"first"))
        second = asyncio.ensure_future(client.call(b"second"))
        await asyncio.wait_for(both_held.wait(), DEADLINE_S)
        for connection, request_id, body in reversed(held):
            assert server.reply(connection, request_id, b"re: " + body)
        assert await first == RpcReply(b"re: first")
        assert await second == RpcReply(b"re: second")
    finally:
        await client.close()
        await server.close()


@asynchronous
async def test_call_without_reply_fails_by_timeout_as_a_value() -> None:
    async def never(client: str, request_id: int, body: bytes) -> None:
        return None

    server = RpcServer(never)
    client = RpcClient(await server.start())
    try:
        result = await client.call(b"anyone?", timeout_s=0.2)
        assert isinstance(result, RpcFailure)
        assert "no reply" in result.reason
    finally:
        await client.close()
        await server.close()


@asynchronous
async def test_call_to_a_closed_port_fails_as_a_value() -> None:
    server = RpcServer(upper)
    address = await server.start()
    await server.close()
    client = RpcClient(address)
    result = await client.call(b"hello")
    await client.close()
    assert isinstance(result, RpcFailure)
    assert "cannot connect" in result.reason


@asynchronous
async def test_client_reconnects_after_the_server_restarts() -> None:
    server = RpcServer(upper)
    address = await server.start()
    client = RpcClient(address)
    try:
        assert await client.call(b"one") == RpcReply(b"ONE")
        await server.close()
        down = await client.call(b"two")
        assert isinstance(down, RpcFailure)
        server = RpcServer(upper)
        await server.start(*address)
        assert await client.call(b"three") == RpcReply(b"THREE")
    finally:
        await client.close()
        await server.close()


async def _send_raw(port: int, data: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await read_to_end(reader)  # returns only once the server closed the connection
    writer.close()


@asynchronous
async def test_garbage_clients_are_disconnected_while_another_is_served() -> None:
    config = RpcConfig(max_frame_bytes=1024)
    server = RpcServer(upper, config=config)
    host, port = await server.start()
    good = RpcClient((host, port), config=config)
    try:
        assert await good.call(b"before") == RpcReply(b"BEFORE")
        garbage = [
            struct.pack(">I", 10**9),  # oversized: refused before any body is read
            encode_frame(b"\xc1 not a request"),  # undecodable
            struct.pack(">I", 100) + b"short",  # truncated, then the client hangs up
        ]
        for number, data in enumerate(garbage):
            if number == 2:
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(data)
                writer.write_eof()
                await read_to_end(reader)
                writer.close()
            else:
                await asyncio.wait_for(_send_raw(port, data), DEADLINE_S)
            assert await good.call(b"still %d" % number) == RpcReply(b"STILL %d" % number)
        # A request the handler rejects as garbage also costs that client its connection.
        rejected = RpcClient((host, port), config=config)
        result = await rejected.call(b"reject me")
        await rejected.close()
        assert isinstance(result, RpcFailure)
        assert await good.call(b"after") == RpcReply(b"AFTER")
        assert server.dropped_clients == 4
    finally:
        await good.close()
        await server.close()


@asynchronous
async def test_oversized_reply_from_server_fails_the_call_as_a_value() -> None:
    async def huge(client: str, request_id: int, body: bytes) -> bytes:
        return b"x" * 2000

    server = RpcServer(huge, config=RpcConfig(max_frame_bytes=4096))
    client = RpcClient(await server.start(), config=RpcConfig(max_frame_bytes=1024))
    try:
        result = await client.call(b"give me a lot")
        assert isinstance(result, RpcFailure)
        assert "bad reply" in result.reason
    finally:
        await client.close()
        await server.close()


@asynchronous
async def test_request_larger_than_the_cap_is_a_caller_error() -> None:
    client = RpcClient(("127.0.0.1", 1), config=RpcConfig(max_frame_bytes=64))
    with pytest.raises(ValueError, match="exceeds the cap"):
        await client.call(b"y" * 100)
    await client.close()


@asynchronous
async def test_clients_beyond_the_limit_are_refused_while_the_others_are_served() -> None:
    server = RpcServer(upper, config=RpcConfig(max_clients=2))
    address = await server.start()
    clients = [RpcClient(address) for _ in range(3)]
    try:
        assert await clients[0].call(b"a") == RpcReply(b"A")
        assert await clients[1].call(b"b") == RpcReply(b"B")
        refused = await clients[2].call(b"c", timeout_s=DEADLINE_S)
        assert isinstance(refused, RpcFailure)
        assert server.refused_clients >= 1
        assert await clients[0].call(b"still") == RpcReply(b"STILL")
    finally:
        for client in clients:
            await client.close()
        await server.close()
