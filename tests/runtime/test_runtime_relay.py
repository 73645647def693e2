"""The websocket relayer and its client, on real sockets (127.0.0.1, ephemeral ports)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque
from collections.abc import Callable

import pytest
from runtime_helpers import asynchronous

from synod.crypto import KeyPair, NodeId
from synod.runtime.relay import (
    HELLO_DOMAIN,
    MAX_HELD_FRAMES,
    RELAY_CODEC,
    Challenge,
    Envelope,
    Hello,
    RelayClient,
    Relayer,
    TamperPolicy,
)

pytestmark = pytest.mark.timeout(30)

DEADLINE_S = 10.0


def keys(seed: int) -> KeyPair:
    return KeyPair.from_seed(seed.to_bytes(32, "big"))


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition` with a deadline (the relayer's state changes asynchronously)."""
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen")
        await asyncio.sleep(0.005)


class Inbox:
    def __init__(self) -> None:
        self.frames: asyncio.Queue[tuple[NodeId, bytes]] = asyncio.Queue()
        self.connections = 0

    async def receive(self, sender: NodeId, payload: bytes) -> None:
        await self.frames.put((sender, payload))

    def connected(self) -> None:
        self.connections += 1

    async def next(self) -> tuple[NodeId, bytes]:
        return await asyncio.wait_for(self.frames.get(), DEADLINE_S)


async def start_clients(url: str, count: int) -> tuple[list[RelayClient], list[Inbox]]:
    clients, inboxes = [], []
    for index in range(count):
        inbox = Inbox()
        client = RelayClient(url, keys(index + 1), inbox.receive, on_connected=inbox.connected)
        client.start()
        clients.append(client)
        inboxes.append(inbox)
    return clients, inboxes


@asynchronous
async def test_broadcasts_reach_every_other_node_and_directed_frames_only_their_target() -> None:
    relayer = Relayer()
    host, port = await relayer.start()
    clients, inboxes = await start_clients(f"ws://{host}:{port}", 3)
    try:
        await until(lambda: len(relayer.connections) == 3, "three registrations")
        alice, bob, carol = clients
        alice.send(None, b"to everyone")
        bob.send(carol.keys.node_id, b"for carol")
        # The relayer names the true sender (as authenticated by the hello).
        assert await inboxes[1].next() == (alice.keys.node_id, b"to everyone")
        received = {await inboxes[2].next(), await inboxes[2].next()}
        assert received == {(alice.keys.node_id, b"to everyone"), (bob.keys.node_id, b"for carol")}
        carol.send(alice.keys.node_id, b"reply")
        assert await inboxes[0].next() == (carol.keys.node_id, b"reply")
        assert inboxes[0].frames.empty()  # alice never got her own broadcast
        assert inboxes[1].frames.empty()  # nor did bob get carol's frames
    finally:
        for client in clients:
            await client.close()
        await relayer.close()


@asynchronous
async def test_a_hello_signed_with_another_key_is_refused() -> None:
    from websockets.asyncio.client import connect

    relayer = Relayer()
    host, port = await relayer.start()
    try:
        async with connect(f"ws://{host}:{port}", compression=None, proxy=None) as websocket:
            challenge = RELAY_CODEC.decode(await websocket.recv(decode=False))
            assert isinstance(challenge, Challenge)
            claimed, signer = keys(1), keys(2)
            signature = signer.sign(HELLO_DOMAIN, challenge.nonce)
            await websocket.send(RELAY_CODEC.encode(Hello(claimed.node_id, signature)))
            await asyncio.wait_for(websocket.wait_closed(), DEADLINE_S)
        assert claimed.node_id not in relayer.connections
    finally:
        await relayer.close()


@asynchronous
async def test_garbage_from_one_client_does_not_disturb_the_others() -> None:
    from websockets.asyncio.client import connect

    relayer = Relayer()
    host, port = await relayer.start()
    url = f"ws://{host}:{port}"
    clients, inboxes = await start_clients(url, 2)
    try:
        async with connect(url, compression=None, proxy=None) as websocket:
            challenge = RELAY_CODEC.decode(await websocket.recv(decode=False))
            assert isinstance(challenge, Challenge)
            rogue = keys(9)
            hello = Hello(rogue.node_id, rogue.sign(HELLO_DOMAIN, challenge.nonce))
            await websocket.send(RELAY_CODEC.encode(hello))
            await until(lambda: len(relayer.connections) == 3, "three registrations")
            await websocket.send(b"\xff\x00garbage")
            await websocket.send("text frames are not envelopes")
            await websocket.send(RELAY_CODEC.encode(Envelope(b"\x01" * 5, b"bad recipient")))
            clients[0].send(None, b"still works")
            assert await inboxes[1].next() == (clients[0].keys.node_id, b"still works")
    finally:
        for client in clients:
            await client.close()
        await relayer.close()


@asynchronous
async def test_a_client_reconnects_to_a_restarted_relayer_and_announces_again() -> None:
    relayer = Relayer()
    host, port = await relayer.start()
    clients, inboxes = await start_clients(f"ws://{host}:{port}", 2)
    try:
        await until(lambda: all(inbox.connections == 1 for inbox in inboxes), "connections")
        await relayer.close()
        # A frame sent while the relayer is away waits in the client's queue and is
        # flushed on reconnection, reaching only the clients registered by then: nothing
        # is promised about it (nodes repair such gaps by exchanging heads). Sending it
        # must not break the client.
        clients[0].send(None, b"sent while offline")
        relayer = Relayer()
        await relayer.start(host, port)
        await until(lambda: all(inbox.connections == 2 for inbox in inboxes), "reconnections")
        await until(lambda: len(relayer.connections) == 2, "registrations")
        clients[0].send(None, b"after")
        payloads = set()
        while b"after" not in payloads:
            payloads.add((await inboxes[1].next())[1])
    finally:
        for client in clients:
            await client.close()
        await relayer.close()


def test_tamper_policy_with_probability_zero_forwards_exactly() -> None:
    policy = TamperPolicy(0.0, random.Random(1))
    memory: deque[Envelope] = deque(maxlen=64)
    held: list[Envelope] = []
    for number in range(100):
        frame = Envelope(b"\x01" * 32, number.to_bytes(4, "big"))
        assert policy.apply(frame, memory, held) == [frame]
    assert set(policy.counts.values()) == {0}


def test_tamper_policy_only_ever_sends_past_frames_or_altered_copies() -> None:
    policy = TamperPolicy(0.3, random.Random(2))
    memory: deque[Envelope] = deque(maxlen=64)
    held: list[Envelope] = []
    sent: list[Envelope] = []
    originals: list[Envelope] = []
    known: set[Envelope] = set()
    for number in range(1_000):
        frame = Envelope(b"\x02" * 32, number.to_bytes(4, "big") * 4)
        originals.append(frame)
        known.add(frame)
        out = policy.apply(frame, memory, held)
        assert len(held) <= MAX_HELD_FRAMES
        for item in out:
            assert item.peer == frame.peer
            if item not in known:  # altered: same length, at most 3 bytes differ
                nearest = min(
                    originals,
                    key=lambda o: sum(a != b for a, b in zip(o.payload, item.payload, strict=True)),
                )
                differing = sum(a != b for a, b in zip(nearest.payload, item.payload, strict=True))
                assert 1 <= differing <= 3
        sent.extend(out)
    assert all(count > 50 for count in policy.counts.values()), policy.counts
    # Reordering: some frame went out after a frame that was handed over later.
    positions = [int.from_bytes(item.payload[:4], "big") for item in sent if item in known]
    assert any(later < earlier for earlier, later in itertools.pairwise(positions))
