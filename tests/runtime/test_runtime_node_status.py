"""`synod.runtime.node_status`: a status request answered in front of a server's own
handler, everything else passed through unchanged."""

from __future__ import annotations

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
