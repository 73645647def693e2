"""Peer transport over real sockets on 127.0.0.1: authentication, isolation of bad peers,
reconnection, bounded queues and the duplicate-connection rule."""

from __future__ import annotations

import asyncio
import contextlib
import random
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from runtime_helpers import CODEC, Note, asynchronous, free_port, keys, read_to_end

from synod.crypto import KeyPair, NodeId
from synod.runtime.transport import (
    HANDSHAKE_DOMAIN,
    PROTOCOL_VERSION,
    HandshakeFailed,
    Hello,
    PeerTransport,
    Proof,
    TransportConfig,
    handshake,
)
from synod.wire import Codec, encode_frame

pytestmark = pytest.mark.timeout(20)

DEADLINE_S = 5.0


HANDSHAKE_CODEC: Codec[Hello | Proof] = Codec(Hello | Proof)
FAST = TransportConfig(backoff_initial_s=0.01, backoff_max_s=0.2, handshake_timeout_s=2.0)


class Inbox:
    """Collects (sender, message) pairs delivered by a transport."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[NodeId, Any]] = asyncio.Queue()

    async def handler(self, sender: NodeId, message: Any) -> None:
        self.queue.put_nowait((sender, message))

    async def next(self) -> tuple[NodeId, Any]:
        return await asyncio.wait_for(self.queue.get(), DEADLINE_S)


@contextlib.asynccontextmanager
async def running(transport: PeerTransport, port: int = 0) -> AsyncIterator[PeerTransport]:
    await transport.start("127.0.0.1", port)
    try:
        yield transport
    finally:
        await transport.close(flush_timeout_s=0.5)


@asynchronous
async def test_messages_arrive_with_the_authenticated_sender_id() -> None:
    a, b = keys(0), keys(1)
    port_b = await free_port()
    inbox_b = Inbox()
    transport_b = PeerTransport(b, {a.node_id: ("127.0.0.1", 1)}, CODEC, inbox_b.handler)
    async with running(transport_b, port_b):
        transport_a = PeerTransport(
            a, {b.node_id: ("127.0.0.1", port_b)}, CODEC, Inbox().handler, config=FAST
        )
        async with running(transport_a):
            transport_a.send(b.node_id, Note("first"))
            transport_a.broadcast(Note("second"))
            assert await inbox_b.next() == (a.node_id, Note("first"))
            assert await inbox_b.next() == (a.node_id, Note("second"))


@asynchronous
async def test_unknown_peer_is_refused_at_the_handshake() -> None:
    a, b, stranger = keys(0), keys(1), keys(9)
    inbox_b = Inbox()
    transport_b = PeerTransport(b, {a.node_id: ("127.0.0.1", 1)}, CODEC, inbox_b.handler)
    async with running(transport_b) as server:
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await asyncio.wait_for(
                handshake(reader, writer, stranger, dialer=True, accept=lambda _: True),
                DEADLINE_S,
            )
        writer.close()
        assert server.rejected_connections == 1
        assert inbox_b.queue.empty()


async def _garbage_before_handshake(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_to_end(reader)
    writer.close()


async def _oversized_header(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(struct.pack(">I", 2**31))  # announces 2 GiB; nothing more follows
    await read_to_end(reader)
    writer.close()


async def _forged_handshake(port: int, claimed: KeyPair) -> None:
    """Claims a member's id but cannot sign for it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hello = Hello(PROTOCOL_VERSION, b"", claimed.node_id, b"\x07" * 32)
    writer.write(encode_frame(HANDSHAKE_CODEC.encode(hello)))
    writer.write(encode_frame(HANDSHAKE_CODEC.encode(Proof(b"\x00" * 64))))
    await read_to_end(reader)
    writer.close()


async def _undecodable_after_handshake(port: int, member: KeyPair) -> None:
    """A real member completes the handshake, then sends a frame no codec accepts."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await handshake(reader, writer, member, dialer=True, accept=lambda _: True)
    writer.write(encode_frame(b"\xc1\xc1 not msgpack"))
    await read_to_end(reader)
    writer.close()


async def _oversized_after_handshake(port: int, member: KeyPair) -> None:
    """A real member announces a frame above the cap: refused before any body is read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await handshake(reader, writer, member, dialer=True, accept=lambda _: True)
    writer.write(struct.pack(">I", FAST.max_frame_bytes + 1))
    await read_to_end(reader)
    writer.close()


@asynchronous
async def test_bad_input_from_one_connection_closes_it_and_others_keep_being_served() -> None:
    a, b, c = keys(0), keys(1), keys(2)
    inbox_b = Inbox()
    members = {a.node_id: ("127.0.0.1", 1), c.node_id: ("127.0.0.1", 1)}
    transport_b = PeerTransport(b, members, CODEC, inbox_b.handler, config=FAST)
    port_b = await free_port()
    async with running(transport_b, port_b):
        transport_a = PeerTransport(
            a, {b.node_id: ("127.0.0.1", port_b)}, CODEC, Inbox().handler, config=FAST
        )
        async with running(transport_a):
            transport_a.send(b.node_id, Note("before"))
            assert await inbox_b.next() == (a.node_id, Note("before"))
            attacks = [
                _garbage_before_handshake(port_b),
                _oversized_header(port_b),
                _forged_handshake(port_b, c),
                _undecodable_after_handshake(port_b, c),
                _oversized_after_handshake(port_b, c),
            ]
            for number, attack in enumerate(attacks):
                # Each attack returns only once the server closed that connection.
                await asyncio.wait_for(attack, DEADLINE_S)
                transport_a.send(b.node_id, Note(f"after {number}"))
                assert await inbox_b.next() == (a.node_id, Note(f"after {number}"))
            assert transport_b.rejected_connections == 3  # the three failed handshakes
            assert transport_b.stats[c.node_id].received_frames == 0


@asynchronous
async def test_full_send_queue_drops_the_oldest_frames_and_counts_them() -> None:
    a, b = keys(0), keys(1)
    port_b = await free_port()
    config = TransportConfig(send_queue_limit=4, backoff_initial_s=0.01, backoff_max_s=0.05)
    transport_a = PeerTransport(
        a, {b.node_id: ("127.0.0.1", port_b)}, CODEC, Inbox().handler, config=config
    )
    async with running(transport_a):
        for number in range(10):  # b is not listening yet: everything waits in the queue
            transport_a.send(b.node_id, Note(str(number)))
        assert transport_a.stats[b.node_id].dropped_frames == 6
        inbox_b = Inbox()
        transport_b = PeerTransport(b, {a.node_id: ("127.0.0.1", 1)}, CODEC, inbox_b.handler)
        async with running(transport_b, port_b):
            received = [(await inbox_b.next())[1].text for _ in range(4)]
            assert received == ["6", "7", "8", "9"]


@asynchronous
async def test_sender_reconnects_after_the_peer_restarts() -> None:
    a, b = keys(0), keys(1)
    port_b = await free_port()
    transport_a = PeerTransport(
        a, {b.node_id: ("127.0.0.1", port_b)}, CODEC, Inbox().handler, config=FAST
    )
    async with running(transport_a):
        for life in range(2):
            inbox_b = Inbox()
            peers = {a.node_id: ("127.0.0.1", 1)}
            async with running(PeerTransport(b, peers, CODEC, inbox_b.handler), port_b):
                transport_a.send(b.node_id, Note(f"life {life}"))
                # A frame written into the dying connection may be lost (at most once),
                # so resend until this life of b has it.
                while True:
                    with contextlib.suppress(TimeoutError):
                        _, message = await asyncio.wait_for(inbox_b.queue.get(), 0.5)
                        if message == Note(f"life {life}"):
                            break
                    transport_a.send(b.node_id, Note(f"life {life}"))
        assert transport_a.stats[b.node_id].connections_made >= 2


@asynchronous
async def test_newer_connection_from_the_same_peer_replaces_the_older() -> None:
    a, b = keys(0), keys(1)
    inbox_b = Inbox()
    transport_b = PeerTransport(b, {a.node_id: ("127.0.0.1", 1)}, CODEC, inbox_b.handler)
    async with running(transport_b) as server:
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        old_reader, old_writer = await asyncio.open_connection("127.0.0.1", port)
        await handshake(old_reader, old_writer, a, dialer=True, accept=lambda _: True)
        new_reader, new_writer = await asyncio.open_connection("127.0.0.1", port)
        await handshake(new_reader, new_writer, a, dialer=True, accept=lambda _: True)
        await read_to_end(old_reader)  # returns only because the server closed it
        new_writer.write(encode_frame(CODEC.encode(Note("on the new one"))))
        assert await inbox_b.next() == (a.node_id, Note("on the new one"))
        assert server._inbound[a.node_id] is not None
        old_writer.close()
        new_writer.close()


@asynchronous
async def test_dialer_proof_cannot_be_replayed_for_another_nonce() -> None:
    """The proof binds the verifier's fresh nonce: a recorded proof fails a new session."""
    a, b = keys(0), keys(1)
    transport_b = PeerTransport(b, {a.node_id: ("127.0.0.1", 1)}, CODEC, Inbox().handler)
    async with running(transport_b) as server:
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        # Record a genuine dialer proof made for one server nonce...
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await handshake(reader, writer, a, dialer=True, accept=lambda _: True)
        writer.close()
        # ...and present a proof for a nonce the server did not issue in a new session.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        hello = Hello(PROTOCOL_VERSION, b"", a.node_id, b"\x01" * 32)
        writer.write(encode_frame(HANDSHAKE_CODEC.encode(hello)))
        stale_transcript = b"D" + b"\x00" + b"\x00" * 32 + b"\x01" * 32 + a.node_id + b.node_id
        stale = a.sign(HANDSHAKE_DOMAIN, stale_transcript)
        writer.write(encode_frame(HANDSHAKE_CODEC.encode(Proof(stale))))
        await read_to_end(reader)
        writer.close()
        assert server.rejected_connections == 1


async def _hello_and_frames(port: int, claimed: KeyPair, network: bytes = b"") -> list[object]:
    """Send a Hello claiming `claimed` (without its key) and a bad proof; return every
    handshake message the listener sent before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    hello = Hello(PROTOCOL_VERSION, network, claimed.node_id, b"\x02" * 32)
    writer.write(encode_frame(HANDSHAKE_CODEC.encode(hello)))
    writer.write(encode_frame(HANDSHAKE_CODEC.encode(Proof(b"\x00" * 64))))
    received = await read_to_end(reader)
    writer.close()
    messages: list[object] = []
    while len(received) >= 4:
        length = struct.unpack(">I", received[:4])[0]
        messages.append(HANDSHAKE_CODEC.decode(received[4 : 4 + length]))
        received = received[4 + length :]
    return messages


@asynchronous
async def test_the_listener_signs_nothing_for_a_dialer_that_has_not_proven_itself() -> None:
    """Knowing a member's id must not buy the listener's signature (no signing oracle)."""
    a, b = keys(0), keys(1)
    transport_b = PeerTransport(b, {a.node_id: ("127.0.0.1", 1)}, CODEC, Inbox().handler)
    async with running(transport_b) as server:
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        messages = await asyncio.wait_for(_hello_and_frames(port, a), DEADLINE_S)
        assert [type(message) for message in messages] == [Hello]
        assert server.rejected_connections == 1


@asynchronous
async def test_a_peer_of_another_network_is_refused_at_the_handshake() -> None:
    a, b = keys(0), keys(1)
    inbox_b = Inbox()
    port_b = await free_port()
    transport_b = PeerTransport(
        b, {a.node_id: ("127.0.0.1", 1)}, CODEC, inbox_b.handler, config=FAST, network=b"main"
    )
    async with running(transport_b, port_b):
        to_b = {b.node_id: ("127.0.0.1", port_b)}
        other = PeerTransport(a, to_b, CODEC, Inbox().handler, config=FAST, network=b"test")
        async with running(other):
            other.send(b.node_id, Note("cross-network"))
            reader, writer = await asyncio.open_connection("127.0.0.1", port_b)
            # a handshake by hand in the wrong network fails like the transport's does
            with pytest.raises(HandshakeFailed, match="network"):
                await asyncio.wait_for(
                    handshake(
                        reader, writer, a, dialer=True, accept=lambda _: True, network=b"test"
                    ),
                    DEADLINE_S,
                )
            writer.close()
        same = PeerTransport(a, to_b, CODEC, Inbox().handler, config=FAST, network=b"main")
        async with running(same):
            same.send(b.node_id, Note("same network"))
            assert await inbox_b.next() == (a.node_id, Note("same network"))
        assert transport_b.stats[a.node_id].received_frames == 1


@asynchronous
async def test_one_host_cannot_hold_every_handshake_slot() -> None:
    a, b = keys(0), keys(1)
    inbox_b = Inbox()
    port_b = await free_port()
    config = TransportConfig(
        max_handshakes=16,
        max_handshakes_per_host=4,
        handshake_timeout_s=30.0,
        backoff_initial_s=0.01,
        backoff_max_s=0.2,
    )
    to_a = {a.node_id: ("127.0.0.1", 1)}
    transport_b = PeerTransport(b, to_a, CODEC, inbox_b.handler, config=config)
    async with running(transport_b, port_b):
        held = [
            await asyncio.open_connection("127.0.0.1", port_b, local_addr=("127.0.0.2", 0))
            for _ in range(30)
        ]
        to_b = {b.node_id: ("127.0.0.1", port_b)}
        transport_a = PeerTransport(a, to_b, CODEC, Inbox().handler, config=FAST)
        async with running(transport_a):
            transport_a.send(b.node_id, Note("through"))
            assert await inbox_b.next() == (a.node_id, Note("through"))
        assert transport_b.handshake_slots.held_by("127.0.0.2") <= 4
        for _, writer in held:
            writer.close()


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    config = TransportConfig(backoff_initial_s=0.1, backoff_max_s=1.0)
    rng = random.Random(7)
    # Ceiling of attempt k: min(1.0, 0.1 * 2**k), by the documented rule.
    for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]):
        delays = [config.backoff_s(attempt, rng) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not a constant


@asynchronous
async def test_bytes_on_a_send_only_link_close_it_and_the_dialer_reconnects() -> None:
    """A peer must stay silent on the connection we dialed; writing on it is misbehaviour."""
    a, b = keys(0), keys(1)
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()
    closed: asyncio.Queue[bool] = asyncio.Queue()

    async def fake_b(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await handshake(reader, writer, b, dialer=False, accept=lambda _: True)
        accepted.put_nowait(writer)
        await read_to_end(reader)
        closed.put_nowait(True)

    server = await asyncio.start_server(fake_b, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport_a = PeerTransport(
        a, {b.node_id: ("127.0.0.1", port)}, CODEC, Inbox().handler, config=FAST
    )
    async with running(transport_a):
        first = await asyncio.wait_for(accepted.get(), DEADLINE_S)
        first.write(b"unsolicited")
        assert await asyncio.wait_for(closed.get(), DEADLINE_S)  # a hung up on it
        second = await asyncio.wait_for(accepted.get(), DEADLINE_S)  # and dialed again
        assert transport_a.stats[b.node_id].connections_made == 2
        second.close()
    server.close()
    await server.wait_closed()


@asynchronous
async def test_send_queue_byte_bound_also_drops_the_oldest() -> None:
    a, b = keys(0), keys(1)
    port_b = await free_port()
    frame_bytes = len(encode_frame(CODEC.encode(Note("0"))))  # every note below: one digit
    config = TransportConfig(
        send_queue_limit=100,
        send_queue_max_bytes=3 * frame_bytes,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
    )
    transport_a = PeerTransport(
        a, {b.node_id: ("127.0.0.1", port_b)}, CODEC, Inbox().handler, config=config
    )
    async with running(transport_a):
        for number in range(10):
            transport_a.send(b.node_id, Note(str(number)))
        assert transport_a.stats[b.node_id].dropped_frames == 7
        inbox_b = Inbox()
        transport_b = PeerTransport(b, {a.node_id: ("127.0.0.1", 1)}, CODEC, inbox_b.handler)
        async with running(transport_b, port_b):
            received = [(await inbox_b.next())[1].text for _ in range(3)]
            assert received == ["7", "8", "9"]
