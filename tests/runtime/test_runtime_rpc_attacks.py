"""The request/response server against one hostile host with no key (real sockets).

The attacker connects from 127.0.0.2 and honest clients from 127.0.0.1: two hosts on the
loopback network.  Each test scales the attack to the server's configured limits so it
stays short; `synod.runtime.rpc`'s defaults and docs/runtime.md give the real numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable

import pytest
from runtime_helpers import asynchronous

from synod.runtime.framing import FrameDeadlines
from synod.runtime.rpc import RpcClient, RpcConfig, RpcReply, RpcRequest, RpcServer
from synod.wire import canonical_bytes, encode_frame

ATTACKER = "127.0.0.2"

pytestmark = pytest.mark.timeout(60)


async def upper(client: str, request_id: int, body: bytes) -> bytes:
    return body.upper()


@contextlib.asynccontextmanager
async def serving(config: RpcConfig) -> AsyncIterator[tuple[RpcServer, tuple[str, int]]]:
    server = RpcServer(upper, config=config)
    address = await server.start("127.0.0.1", 0)
    try:
        yield server, address
    finally:
        await server.close()


async def attacker_connection(
    address: tuple[str, int],
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*address, local_addr=(ATTACKER, 0))


async def honest_call(address: tuple[str, int]) -> bool:
    client = RpcClient(address)
    try:
        result = await client.call(b"pay", timeout_s=5.0)
        return isinstance(result, RpcReply) and result.body == b"PAY"
    finally:
        await client.close()


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closes (or resets) the connection."""
    try:
        return await reader.read(1) == b""
    except ConnectionError:
        return True


@asynchronous
async def test_idle_connections_from_one_host_do_not_lock_out_honest_clients() -> None:
    config = RpcConfig(max_clients=32, max_clients_per_host=8)
    async with serving(config) as (server, address):
        held = [await attacker_connection(address) for _ in range(40)]
        assert all([await honest_call(address) for _ in range(5)])
        assert server.slots.held_by(ATTACKER) <= 8
        assert server.refused_clients >= 32
        for _, writer in held:
            writer.close()


@asynchronous
async def test_a_full_server_makes_room_from_the_busiest_host() -> None:
    config = RpcConfig(max_clients=16, max_clients_per_host=16)
    async with serving(config) as (server, address):
        held = [await attacker_connection(address) for _ in range(16)]
        await wait_until(lambda: len(server.slots) == 16)
        assert await honest_call(address)
        assert server.slots.evicted >= 1
        for _, writer in held:
            writer.close()


@asynchronous
async def test_slow_senders_are_disconnected_at_the_frame_deadline() -> None:
    deadlines = FrameDeadlines(idle_s=0.3, frame_s=0.3, min_bytes_per_s=1024 * 1024)
    async with serving(RpcConfig(deadlines=deadlines)) as (_, address):
        # one byte of a header, then nothing
        header_reader, header_writer = await attacker_connection(address)
        header_writer.write(b"\x00")
        # a whole header for 1 KiB, then a trickle of the body
        body_reader, body_writer = await attacker_connection(address)
        body_writer.write(struct.pack(">I", 1024) + b"x")
        # a connection that never sends anything
        idle_reader, _ = await attacker_connection(address)
        results = await asyncio.wait_for(
            asyncio.gather(
                closed_by_server(header_reader),
                closed_by_server(body_reader),
                closed_by_server(idle_reader),
            ),
            timeout=10,
        )
        assert results == [True, True, True]
        assert await honest_call(address)


@asynchronous
async def test_unfinished_frames_hold_at_most_the_hosts_byte_budget() -> None:
    config = RpcConfig(
        receive_budget_per_host_bytes=4 * 1024 * 1024, receive_budget_bytes=64 * 1024 * 1024
    )
    async with serving(config) as (server, address):
        connections = []
        for _ in range(20):
            reader, writer = await attacker_connection(address)
            writer.write(struct.pack(">I", 1024 * 1024 - 4) + b"x" * 1024)
            connections.append((reader, writer))
        # four frames of 1 MiB fit the host's budget; the rest are refused and closed
        closed = await asyncio.wait_for(
            asyncio.gather(*(closed_by_server(reader) for reader, _ in connections[4:])),
            timeout=10,
        )
        assert all(closed)
        assert server.receive_budget.used_by(ATTACKER) <= 4 * 1024 * 1024
        assert server.receive_budget.refused >= 16
        assert await honest_call(address)
        for _, writer in connections:
            writer.close()


@asynchronous
async def test_a_client_that_never_reads_stops_being_served_without_growing_the_server() -> None:
    handled = 0

    async def big(client: str, request_id: int, body: bytes) -> bytes:
        nonlocal handled
        handled += 1
        return b"r" * 256 * 1024

    config = RpcConfig(
        max_buffered_reply_bytes=64 * 1024 * 1024, deadlines=FrameDeadlines(idle_s=0.5)
    )
    server = RpcServer(big, config=config)
    address = await server.start("127.0.0.1", 0)
    try:
        _, writer = await attacker_connection(address)
        # 2,000 requests asking for 500 MiB of replies, none of which is ever read
        writer.write(b"".join(request_frame(number) for number in range(2_000)))
        await wait_until(lambda: server.client_count == 0)
        # the kernel's socket buffers hold a few MiB; the server itself stops at once
        assert handled < 100, f"{handled} replies of 256 KiB made for a client that never reads"
        assert await honest_call_to(server, address)
        writer.close()
    finally:
        await server.close()


async def honest_call_to(server: RpcServer, address: tuple[str, int]) -> bool:
    return await honest_call(address) if server.handler is upper else await served(address)


async def served(address: tuple[str, int]) -> bool:
    client = RpcClient(address)
    try:
        return isinstance(await client.call(b"q", timeout_s=5.0), RpcReply)
    finally:
        await client.close()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll a condition of the server's state, failing the test after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


def request_frame(request_id: int) -> bytes:
    return encode_frame(canonical_bytes(RpcRequest(request_id, b"q")))
