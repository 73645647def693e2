"""The websocket relayer and its client, on real sockets (127.0.0.1, ephemeral ports)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import deque
from collections.abc import Callable
from typing import Any

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
    RelayConfig,
    Relayer,
    TamperPolicy,
    hello_transcript,
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
            signature = signer.sign(HELLO_DOMAIN, hello_transcript(challenge))
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
            hello = Hello(rogue.node_id, rogue.sign(HELLO_DOMAIN, hello_transcript(challenge)))
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


async def raw_member(url: str, pair: KeyPair, local_host: str = "127.0.0.1") -> Any:
    """A websocket that says a correct hello and then does only what the test makes it."""
    from websockets.asyncio.client import connect

    websocket = await connect(
        url, compression=None, proxy=None, max_size=None, max_queue=1, local_addr=(local_host, 0)
    )
    challenge = RELAY_CODEC.decode(await websocket.recv(decode=False))
    assert isinstance(challenge, Challenge)
    signature = pair.sign(HELLO_DOMAIN, hello_transcript(challenge))
    await websocket.send(RELAY_CODEC.encode(Hello(pair.node_id, signature)))
    return websocket


@asynchronous
async def test_a_flooding_sender_delays_no_one_elses_frames_and_holds_a_bounded_queue() -> None:
    """A fresh key broadcasts 40 frames of 1 MiB; a member's small frame sent after them
    reaches a slow reader among the first, and the relayer holds at most the flooder's
    budget for that reader (first in, first out held all 40 MiB and sent them first)."""
    config = RelayConfig(queue_bytes_per_sender=4 * 1024 * 1024)
    relayer = Relayer(config)
    host, port = await relayer.start()
    url = f"ws://{host}:{port}"
    reader = await raw_member(url, keys(1))
    flooder = await raw_member(url, keys(2), local_host="127.0.0.2")
    honest = await raw_member(url, keys(3))
    try:
        await until(lambda: len(relayer.connections) == 3, "three registrations")
        for number in range(40):
            payload = number.to_bytes(4, "big") * (256 * 1024)
            await flooder.send(RELAY_CODEC.encode(Envelope(bytes(keys(1).node_id), payload)))
        await until(
            lambda: relayer.dropped_by_sender.get(bytes(keys(2).node_id), 0) > 0, "a drop"
        )
        # the flooder's budget for this reader, plus the one frame being written to it
        assert relayer.queued_bytes <= 5 * (1024 * 1024 + 1024)
        await honest.send(RELAY_CODEC.encode(Envelope(bytes(keys(1).node_id), b"update")))
        await until(lambda: relayer.forwarded >= 2, "the honest frame queued")
        senders = []
        while True:
            envelope = RELAY_CODEC.decode(await asyncio.wait_for(reader.recv(), DEADLINE_S))
            assert isinstance(envelope, Envelope)
            senders.append(envelope.peer)
            if envelope.payload == b"update":
                break
        # Frames already written into the kernel's socket buffers (up to about 12 MiB on
        # loopback) come first whatever the relayer does; of those still queued at the
        # relayer, the honest frame waits for at most one.  First in, first out: all 40.
        assert len(senders) < 20, f"the honest frame came after {len(senders) - 1} flood frames"
    finally:
        for websocket in (reader, flooder, honest):
            websocket.transport.abort()
        await relayer.close()


@asynchronous
async def test_only_members_may_connect_when_the_relayer_has_a_member_list() -> None:
    member, outsider = keys(1), keys(2)
    relayer = Relayer(RelayConfig(members=frozenset({bytes(member.node_id)})))
    host, port = await relayer.start()
    url = f"ws://{host}:{port}"
    inbox = Inbox()
    intruder = RelayClient(url, outsider, inbox.receive)
    intruder.start()
    insider = RelayClient(url, member, inbox.receive)
    insider.start()
    try:
        await until(lambda: member.node_id in relayer.connections, "the member's registration")
        await until(lambda: relayer.refused_hellos >= 1, "the outsider's refusal")
        assert outsider.node_id not in relayer.connections
    finally:
        await intruder.close()
        await insider.close()
        await relayer.close()


@asynchronous
async def test_a_hello_is_bound_to_the_relayer_and_the_network() -> None:
    """A hostile relayer cannot replay a hello it was given at another relayer, and a node
    of another network does not register."""
    from websockets.asyncio.client import connect

    first, second = Relayer(keys=keys(50)), Relayer(keys=keys(51))
    second_host, second_port = await second.start()
    second_url = f"ws://{second_host}:{second_port}"
    await first.start()
    node = keys(1)
    try:
        # the hello the node gave the first relayer, for the first relayer's challenge...
        given = Challenge(b"\x05" * 32, b"", bytes(keys(50).node_id))
        signature = node.sign(HELLO_DOMAIN, hello_transcript(given))
        # ...replayed at the second relayer, with the nonce forwarded as the first's own
        async with connect(second_url, compression=None, proxy=None) as websocket:
            challenge = RELAY_CODEC.decode(await websocket.recv(decode=False))
            assert isinstance(challenge, Challenge)
            assert challenge.relayer_id == bytes(keys(51).node_id)
            forged = Challenge(challenge.nonce, b"", bytes(keys(50).node_id))
            replayed = node.sign(HELLO_DOMAIN, hello_transcript(forged))
            await websocket.send(RELAY_CODEC.encode(Hello(node.node_id, replayed)))
            await asyncio.wait_for(websocket.wait_closed(), DEADLINE_S)
        assert node.node_id not in second.connections
        del signature
        # a node configured for another network refuses the challenge itself
        inbox = Inbox()
        stranger = RelayClient(second_url, node, inbox.receive, config=RelayConfig(network=b"x"))
        pinned = RelayClient(second_url, keys(2), inbox.receive, relayer_id=bytes(keys(50).node_id))
        good = RelayClient(second_url, keys(3), inbox.receive, relayer_id=bytes(keys(51).node_id))
        for client in (stranger, pinned, good):
            client.start()
        await until(lambda: keys(3).node_id in second.connections, "the pinned node")
        assert node.node_id not in second.connections
        assert keys(2).node_id not in second.connections
        for client in (stranger, pinned, good):
            await client.close()
    finally:
        await first.close()
        await second.close()


@asynchronous
async def test_one_host_cannot_take_every_connection_slot() -> None:
    from websockets.asyncio.client import connect

    relayer = Relayer(RelayConfig(max_connections=32, max_connections_per_host=4))
    host, port = await relayer.start()
    url = f"ws://{host}:{port}"
    held = []
    for _ in range(12):
        try:
            held.append(
                await connect(url, compression=None, proxy=None, local_addr=("127.0.0.2", 0))
            )
        except Exception:  # refused: the slot limit at work
            continue
    clients, _ = await start_clients(url, 2)
    try:
        await until(lambda: len(relayer.connections) == 2, "honest registrations")
        assert relayer.slots.held_by("127.0.0.2") <= 4
        assert relayer.slots.refused >= 8
    finally:
        for client in clients:
            await client.close()
        for websocket in held:
            await websocket.close()
        await relayer.close()
