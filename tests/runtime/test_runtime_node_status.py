"""`synod.runtime.node_status`: a status request answered in front of a server's own
handler, everything else passed through unchanged."""

from __future__ import annotations

import asyncio

import pytest
from runtime_helpers import asynchronous

from synod.runtime.node_status import (
    STATUS_REQUEST_BYTES,
    StatusReply,
    StatusUnanswered,
    answer_status,
    ask_status,
)
from synod.runtime.rpc import RequestRejected, RpcClient, RpcReply, RpcServer

REPLY = StatusReply("scp", "slot", 7, 3, 2, 1, {"highest_seen_slot": 9})


@asynchronous
async def test_a_status_request_is_answered_without_reaching_the_core() -> None:
    reached: list[bytes] = []

    async def core(client: str, request_id: int, body: bytes) -> bytes | None:
        reached.append(body)
        return b"core:" + body

    server = RpcServer(core)
    address = await server.start("127.0.0.1", 0)
    answer_status(server, lambda: REPLY)
    try:
        assert await ask_status(address) == REPLY
        assert reached == []
        client = RpcClient(address)
        # a request that only starts like a status request is the core's
        for body in (b"other", STATUS_REQUEST_BYTES + b"x", STATUS_REQUEST_BYTES[:-1]):
            result = await client.call(body, timeout_s=5)
            assert isinstance(result, RpcReply) and result.body == b"core:" + body
        await client.close()
        assert len(reached) == 3
    finally:
        await server.close()


@asynchronous
async def test_a_server_without_status_and_a_closed_port_are_unanswered() -> None:
    async def refuses(client: str, request_id: int, body: bytes) -> bytes | None:
        raise RequestRejected("undecodable request")

    server = RpcServer(refuses)
    address = await server.start("127.0.0.1", 0)
    try:
        with pytest.raises(StatusUnanswered):
            await ask_status(address, timeout_s=5)
    finally:
        await server.close()
    with pytest.raises(StatusUnanswered, match="cannot connect"):
        await ask_status(address, timeout_s=5)


@asynchronous
async def test_a_flood_of_status_requests_is_answered_and_never_reaches_the_core() -> None:
    """An outsider pipelining status requests on one connection: each is answered from
    counters (the core's handler never runs), and a request for the core still passes."""
    reached: list[bytes] = []
    described = 0

    async def core(client: str, request_id: int, body: bytes) -> bytes | None:
        reached.append(body)
        return b"done"

    def describe() -> StatusReply:
        nonlocal described
        described += 1
        return REPLY

    server = RpcServer(core)
    address = await server.start("127.0.0.1", 0)
    answer_status(server, describe)
    client = RpcClient(address)
    try:
        results = await asyncio.gather(
            *(client.call(STATUS_REQUEST_BYTES, timeout_s=30) for _ in range(500))
        )
        assert all(isinstance(result, RpcReply) for result in results)
        assert described == 500 and reached == []
        after = await client.call(b"work", timeout_s=5)
        assert isinstance(after, RpcReply) and after.body == b"done"
        assert reached == [b"work"]
    finally:
        await client.close()
        await server.close()
