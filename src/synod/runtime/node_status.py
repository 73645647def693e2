"""A running node's status over its request port, as stellar-core's ``info`` answers.

Theory of operation.  SCP nodes (submit port), Tusk cores and FastPay shards already
listen for requests through an `synod.runtime.rpc.RpcServer`; `answer_status` puts a
small handler in front of the server's own, so a `StatusRequest` is answered at once
from what the node holds in memory (slot or round, links, what is pending) and every
other request goes on to the core as before.  ``synod <protocol> status`` asks each
node with `ask_status`; a node that does not answer is down, and the command says so
without opening its SQLite file.

*Cost under attack.*  The request is unauthenticated (it reveals nothing a peer does not
see already: progress and counts), so it must be cheap and bounded: it goes through the
server's existing admission (per-host connection slots, receive budget, frame
deadlines, the unread-reply budget that stops serving a client that never reads), it is
recognised by comparing the request with the one encoding of `StatusRequest` (an
empty message: a few bytes, no decoding; any other request goes on unchanged), and
the answer is built in constant time from counters (`describe` must not walk a store,
a log or an account table), at most `MAX_STATUS_DETAILS` counters of bounded names.
It does not wait in the core's input queue, so a busy or stuck core still answers, and
status requests cannot delay the core's inputs by more than their own decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import msgspec

from synod.runtime.rpc import RpcClient, RpcFailure, RpcServer
from synod.runtime.transport import Address
from synod.wire import U32, U64, Codec, DecodeError, Message

MAX_STATUS_DETAILS = 32
"""Protocol counters in one reply: a core's monitoring set (Tusk has about 20)."""

MAX_NAME_BYTES = 64

_Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME_BYTES)]


class StatusRequest(Message, frozen=True, tag="synod-status"):
    """Ask a node how far it is (no fields: anyone may ask)."""


class StatusReply(Message, frozen=True, tag="synod-status-reply"):
    """How far a node is: `progress` counts `progress_name` units (``slot`` for SCP,
    ``round`` for Tusk, ``steps`` for a FastPay shard); `peers` the links it should have
    and `peers_connected` those up (or, for a passive server, clients connected);
    `pending` the work it holds that is not done (entries not in a slot, transactions
    not in a header, inputs waiting); `details` protocol counters."""

    protocol: _Name
    progress_name: _Name
    progress: U64
    peers: U32
    peers_connected: U32
    pending: U64
    details: Annotated[dict[_Name, int], msgspec.Meta(max_length=MAX_STATUS_DETAILS)] = {}


STATUS_CODEC: Codec[StatusRequest | StatusReply] = Codec(StatusRequest | StatusReply)


class StatusUnanswered(Exception):
    """The node did not answer a status request (down, unreachable, or not a node)."""


def answer_status(server: RpcServer, describe: Callable[[], StatusReply]) -> None:
    """Make `server` answer `StatusRequest` with `describe()` before its own handler sees
    the request; every other request goes to that handler unchanged."""
    inner = server.handler

    async def handler(client: str, request_id: int, body: bytes) -> bytes | None:
        if body == STATUS_REQUEST_BYTES:
            return STATUS_CODEC.encode(describe())
        return await inner(client, request_id, body)

    server.handler = handler


STATUS_REQUEST_BYTES = STATUS_CODEC.encode(StatusRequest())
"""The one encoding of a status request (an empty message has no other): recognised by
one comparison of a few bytes, before any decoding."""


async def ask_status(address: Address, *, timeout_s: float = 2.0) -> StatusReply:
    """The status of the node listening for requests at `address`.

    Raises `StatusUnanswered` (cannot connect, timeout, or an answer that is not a
    status: a server that predates it refuses the request and closes).
    """
    client = RpcClient(address)
    try:
        result = await client.call(STATUS_CODEC.encode(StatusRequest()), timeout_s=timeout_s)
    finally:
        await client.close()
    if isinstance(result, RpcFailure):
        raise StatusUnanswered(f"{address[0]}:{address[1]}: {result.reason}")
    try:
        reply = STATUS_CODEC.decode(result.body)
    except DecodeError as error:
        raise StatusUnanswered(f"{address[0]}:{address[1]}: unreadable answer: {error}") from None
    if not isinstance(reply, StatusReply):
        raise StatusUnanswered(f"{address[0]}:{address[1]}: not a status answer")
    return reply
