"""The request/response paths the FastPay processes use under load (`synod.runtime.rpc`):
`RpcClient.start_call` (no task per call) and write coalescing must give exactly the
results `RpcClient.call` gives: each reply to its own call, failures as values."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from synod.runtime.rpc import RpcClient, RpcFailure, RpcReply, RpcServer

pytestmark = pytest.mark.timeout(20)


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


async def upper(client: str, request_id: int, body: bytes) -> bytes:
    return body.upper()


def test_pipelined_start_calls_each_get_their_own_reply() -> None:
    async def body() -> None:
        server = RpcServer(upper)
        client = RpcClient(await server.start())
        try:
            connected_before = client.connected
            assert not connected_before
            first = await client.start_call(b"first")  # connects on the slow path
            assert first == RpcReply(b"FIRST") and client.connected
            # Many calls written in one loop turn travel coalesced; each reply is matched
            # to its call by request id, whatever the framing on the wire.
            futures = [client.start_call(b"call %d" % n) for n in range(300)]
            assert await asyncio.gather(*futures) == [RpcReply(b"CALL %d" % n) for n in range(300)]
        finally:
            await client.close()
            await server.close()

    run(body)


def test_deferred_replies_of_one_turn_reach_their_calls_out_of_order() -> None:
    async def body() -> None:
        held: list[tuple[str, int, bytes]] = []
        all_held = asyncio.Event()

        async def hold(client: str, request_id: int, request: bytes) -> None:
            held.append((client, request_id, request))
            if len(held) == 3:
                all_held.set()

        server = RpcServer(hold)
        client = RpcClient(await server.start())
        try:
            futures = [asyncio.ensure_future(client.call(b"r%d" % n)) for n in range(3)]
            await asyncio.wait_for(all_held.wait(), 5)
            for connection, request_id, request in reversed(held):  # one turn, reversed
                assert server.reply(connection, request_id, b"re: " + request)
            assert await asyncio.gather(*futures) == [RpcReply(b"re: r%d" % n) for n in range(3)]
        finally:
            await client.close()
            await server.close()

    run(body)


def test_start_call_without_reply_fails_by_timeout_as_a_value() -> None:
    async def body() -> None:
        async def never(client: str, request_id: int, request: bytes) -> None:
            return None

        server = RpcServer(never)
        client = RpcClient(await server.start())
        try:
            assert isinstance(await client.call(b"connect", timeout_s=0.05), RpcFailure)
            assert client.connected
            result = await client.start_call(b"anyone?", timeout_s=0.1)
            assert isinstance(result, RpcFailure) and "no reply" in result.reason
        finally:
            await client.close()
            await server.close()

    run(body)


def test_start_calls_pending_when_the_server_goes_away_fail_as_values() -> None:
    async def body() -> None:
        async def never(client: str, request_id: int, request: bytes) -> None:
            return None

        server = RpcServer(never)
        client = RpcClient(await server.start())
        try:
            await client.call(b"connect", timeout_s=0.05)
            pending = [client.start_call(b"x", timeout_s=5) for _ in range(5)]
            await server.close()
            results = await asyncio.wait_for(asyncio.gather(*pending), 5)
            assert all(isinstance(result, RpcFailure) for result in results)
        finally:
            await client.close()

    run(body)
