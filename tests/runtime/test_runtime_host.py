"""NodeHost drives a core by the contract: Started first, persist before send, timers,
events, passive-server replies, active calls, fatal errors, restart from SQLite.

The core here is scripted by the test: `Proposed(step)` makes it return that step, so each
test states exactly the outputs whose handling it checks."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import CODEC, Note, asynchronous, free_port, keys

from synod.core import (
    Broadcast,
    Call,
    CallFailed,
    CancelTimer,
    Input,
    Persist,
    Proposed,
    Received,
    Reply,
    RequestReceived,
    Response,
    Send,
    SetTimer,
    Started,
    Step,
    Storage,
    TimerFired,
)
from synod.crypto import KeyPair, NodeId
from synod.runtime.host import HostConfig, HostFailed, NodeHost
from synod.runtime.rpc import RpcClient, RpcReply, RpcRequest
from synod.runtime.storage import SqliteStorage
from synod.runtime.transport import Address, TransportConfig
from synod.wire import canonical_bytes, encode_frame

pytestmark = pytest.mark.timeout(20)

DEADLINE_S = 5.0
CONFIG = HostConfig(
    call_timeout_ms=2000,
    transport=TransportConfig(backoff_initial_s=0.01, backoff_max_s=0.2),
)


class ScriptedCore:
    """Returns the step it is given as a proposal; answers requests by upper-casing; reports
    every other input as an event."""

    def __init__(self, keys: KeyPair, storage: Storage) -> None:
        self._node_id = keys.node_id
        self.restored = dict(storage)
        self.inputs: list[Input] = []

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        self.inputs.append(event)
        match event:
            case Proposed(value=Step() as step):
                return step
            case Proposed(value=RuntimeError() as error):
                raise error
            case RequestReceived(client=client, request_id=request_id, body=Note(text=text)):
                return Step(outgoing=[Reply(client, request_id, Note(text.upper()))])
            case _:
                return Step(events=[event])


class SlowStorage(SqliteStorage):
    """Commits late: widens the window in which a send-before-persist bug would show."""

    def apply(self, records: Iterable[Persist]) -> None:
        time.sleep(0.3)
        super().apply(records)


class FailingStorage(SqliteStorage):
    def apply(self, records: Iterable[Persist]) -> None:
        raise OSError("disk full (simulated)")


class Node:
    """One host under test and the events it emitted."""

    def __init__(self, host: NodeHost, core: ScriptedCore) -> None:
        self.host = host
        self.core = core
        self.events: asyncio.Queue[Any] = asyncio.Queue()

    async def next_event(self, kind: type[Any] | None = None) -> Any:
        """The next event (of `kind`, skipping others) within the deadline."""
        async with asyncio.timeout(DEADLINE_S):
            while True:
                event = await self.events.get()
                if kind is None or isinstance(event, kind):
                    return event


def build_node(
    directory: Path,
    pair: KeyPair,
    peers: dict[NodeId, Address] | None = None,
    *,
    storage_class: type[SqliteStorage] = SqliteStorage,
    servers: dict[NodeId, Address] | None = None,
    on_event: Callable[[Any], None] | None = None,
) -> Node:
    storage = storage_class.open(directory / f"{pair.node_id.hex()[:8]}.sqlite")
    core = ScriptedCore(pair, storage.load())
    host = NodeHost(
        core,
        keys=pair,
        codec=CODEC,
        storage=storage,
        peers=peers,
        servers=servers,
        config=CONFIG,
    )
    node = Node(host, core)

    def record(event: Any) -> None:
        if on_event is not None:
            on_event(event)
        node.events.put_nowait(event)

    host.on_event = record
    return node


def read_records(path: Path) -> dict[bytes, bytes]:
    """The committed records, read through a connection of its own."""
    connection = sqlite3.connect(path)
    try:
        return dict(connection.execute("SELECT key, value FROM records").fetchall())
    finally:
        connection.close()


@asynchronous
async def test_started_is_the_first_input(tmp_path: Path) -> None:
    node = build_node(tmp_path, keys(0))
    node.host.propose(Step(events=["proposal handled"]))
    await node.host.start()
    assert await node.next_event() == Started()
    assert await node.next_event() == "proposal handled"
    await node.host.stop()
    assert node.core.inputs[0] == Started()


@asynchronous
async def test_records_are_committed_before_the_peer_receives_the_message(tmp_path: Path) -> None:
    a, b = keys(0), keys(1)
    port_a, port_b = await free_port(), await free_port()
    a_file = tmp_path / f"{a.node_id.hex()[:8]}.sqlite"
    seen_by_b: asyncio.Queue[dict[bytes, bytes]] = asyncio.Queue()

    def on_b_event(event: Any) -> None:
        # Runs the moment b's core has handled the message: look at a's file right now.
        if isinstance(event, Received) and event.message == Note("Y"):
            seen_by_b.put_nowait(read_records(a_file))

    node_a = build_node(tmp_path, a, {b.node_id: ("127.0.0.1", port_b)}, storage_class=SlowStorage)
    node_b = build_node(tmp_path, b, {a.node_id: ("127.0.0.1", port_a)}, on_event=on_b_event)
    await node_a.host.start(listen=("127.0.0.1", port_a))
    await node_b.host.start(listen=("127.0.0.1", port_b))
    try:
        node_a.host.propose(
            Step(persist=[Persist(b"X", b"vote")], outgoing=[Send(b.node_id, Note("Y"))])
        )
        records = await asyncio.wait_for(seen_by_b.get(), DEADLINE_S)
        assert records.get(b"X") == b"vote"
    finally:
        await node_a.host.stop()
        await node_b.host.stop()


@asynchronous
async def test_events_reach_the_application_after_their_records_are_committed(
    tmp_path: Path,
) -> None:
    pair = keys(0)
    path = tmp_path / f"{pair.node_id.hex()[:8]}.sqlite"
    seen: list[dict[bytes, bytes]] = []
    node = build_node(
        tmp_path,
        pair,
        storage_class=SlowStorage,
        on_event=lambda event: seen.append(read_records(path)) if event == "done" else None,
    )
    await node.host.start()
    node.host.propose(Step(persist=[Persist(b"k", b"v")], events=["done"]))
    assert await node.next_event(str) == "done"
    await node.host.stop()
    assert seen == [{b"k": b"v"}]


@asynchronous
async def test_a_step_whose_records_cannot_be_committed_sends_nothing(tmp_path: Path) -> None:
    a, b = keys(0), keys(1)
    port_a, port_b = await free_port(), await free_port()
    node_a = build_node(
        tmp_path, a, {b.node_id: ("127.0.0.1", port_b)}, storage_class=FailingStorage
    )
    node_b = build_node(tmp_path, b, {a.node_id: ("127.0.0.1", port_a)})
    await node_b.host.start(listen=("127.0.0.1", port_b))
    await node_a.host.start(listen=("127.0.0.1", port_a))
    try:
        node_a.host.propose(Step(outgoing=[Send(b.node_id, Note("ok"))]))
        received = await node_b.next_event(Received)
        assert received.message == Note("ok")
        failing = Step(persist=[Persist(b"X", b"1")], outgoing=[Send(b.node_id, Note("no"))])
        node_a.host.propose(failing)
        await asyncio.wait_for(node_a.host.wait_stopped(), DEADLINE_S)
        assert isinstance(node_a.host.failure, OSError)
        assert node_a.host.storage.closed
        # Only "ok" was ever handed to a's transport (written, queued or dropped).
        assert node_a.host.transport is not None
        stats = node_a.host.transport.stats[b.node_id]
        assert (stats.sent_frames, stats.queued_frames, stats.dropped_frames) == (1, 0, 0)
    finally:
        await node_b.host.stop()


def drain(queue: asyncio.Queue[Any]) -> list[Any]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


@asynchronous
async def test_broadcast_reaches_every_peer_but_not_the_sender(tmp_path: Path) -> None:
    pairs = [keys(i) for i in range(3)]
    ports = [await free_port() for _ in pairs]
    addresses = {p.node_id: ("127.0.0.1", port) for p, port in zip(pairs, ports, strict=True)}
    nodes = [
        build_node(tmp_path, p, {i: a for i, a in addresses.items() if i != p.node_id})
        for p in pairs
    ]
    for node, port in zip(nodes, ports, strict=True):
        await node.host.start(listen=("127.0.0.1", port))
    try:
        nodes[0].host.propose(Step(outgoing=[Broadcast(Note("to all"))], events=["sent"]))
        for node in nodes[1:]:
            received = await node.next_event(Received)
            assert received == Received(pairs[0].node_id, Note("to all"))
        assert await nodes[0].next_event(str) == "sent"
        assert not any(isinstance(e, Received) for e in drain(nodes[0].events))
    finally:
        for node in nodes:
            await node.host.stop()


@asynchronous
async def test_send_to_self_is_received_locally(tmp_path: Path) -> None:
    pair = keys(0)
    node = build_node(tmp_path, pair)
    await node.host.start()
    node.host.propose(Step(outgoing=[Send(pair.node_id, Note("me"))]))
    assert await node.next_event(Received) == Received(pair.node_id, Note("me"))
    await node.host.stop()


@asynchronous
async def test_set_timer_replaces_and_cancel_timer_cancels(tmp_path: Path) -> None:
    node = build_node(tmp_path, keys(0))
    await node.host.start()
    node.host.propose(
        Step(
            timers=[
                SetTimer("replaced", 20),
                SetTimer("replaced", 60_000),
                SetTimer("cancelled", 20),
                CancelTimer("cancelled"),
                SetTimer("marker", 300),
                SetTimer("kept", 40),
            ]
        )
    )
    # Timers fire in deadline order: by the time the marker (300 ms) fires, the 20 ms
    # timers would have fired had they not been replaced or cancelled.
    fired = [await node.next_event(TimerFired), await node.next_event(TimerFired)]
    assert fired == [TimerFired("kept"), TimerFired("marker")]
    await node.host.stop()


@asynchronous
async def test_passive_core_answers_requests_on_the_same_connection(tmp_path: Path) -> None:
    node = build_node(tmp_path, keys(0))
    await node.host.start(rpc_listen=("127.0.0.1", 0))
    assert node.host.rpc_address is not None
    client = RpcClient(node.host.rpc_address)
    try:
        reply = await client.call(CODEC.encode(Note("ping")))
        assert reply == RpcReply(CODEC.encode(Note("PING")))
        garbage = await RpcClient(node.host.rpc_address).call(b"\xc1 not a note")
        assert not isinstance(garbage, RpcReply)  # that client was disconnected
        reply = await client.call(CODEC.encode(Note("again")))
        assert reply == RpcReply(CODEC.encode(Note("AGAIN")))
    finally:
        await client.close()
        await node.host.stop()


@asynchronous
async def test_active_core_calls_get_responses_or_call_failed(tmp_path: Path) -> None:
    server_keys, client_keys, absent = keys(0), keys(1), keys(2)
    server = build_node(tmp_path, server_keys)
    await server.host.start(rpc_listen=("127.0.0.1", 0))
    assert server.host.rpc_address is not None
    closed_port = await free_port()
    client = build_node(
        tmp_path,
        client_keys,
        servers={
            server_keys.node_id: server.host.rpc_address,
            absent.node_id: ("127.0.0.1", closed_port),
        },
    )
    await client.host.start()
    try:
        client.host.propose(Step(outgoing=[Call(server_keys.node_id, 7, Note("hi"))]))
        response = await client.next_event(Response)
        assert response == Response(server_keys.node_id, 7, Note("HI"))
        client.host.propose(Step(outgoing=[Call(absent.node_id, 8, Note("hi"))]))
        failed = await client.next_event(CallFailed)
        assert (failed.server, failed.request_id) == (absent.node_id, 8)
        client.host.propose(Step(outgoing=[Call(keys(5).node_id, 9, Note("hi"))]))
        unknown = await client.next_event(CallFailed)
        assert (unknown.request_id, unknown.reason) == (9, "unknown server")
    finally:
        await client.host.stop()
        await server.host.stop()


@asynchronous
async def test_core_exception_stops_the_host_and_serve_raises(tmp_path: Path) -> None:
    node = build_node(tmp_path, keys(0))
    await node.host.start()
    node.host.propose(RuntimeError("core bug"))
    with pytest.raises(HostFailed, match="core bug"):
        await asyncio.wait_for(node.host.serve(), DEADLINE_S)
    assert node.host.storage.closed


@asynchronous
async def test_restarted_core_is_rebuilt_from_exactly_what_was_committed(tmp_path: Path) -> None:
    pair = keys(0)
    node = build_node(tmp_path, pair)
    await node.host.start()
    node.host.propose(Step(persist=[Persist(b"a", b"1"), Persist(b"b", b"2")]))
    node.host.propose(Step(persist=[Persist(b"a", None)], events=["done"]))
    assert await node.next_event(str) == "done"
    await node.host.stop()
    again = build_node(tmp_path, pair)
    assert again.core.restored == {b"b": b"2"}
    again.host.storage.close()


def test_host_refuses_keys_of_another_node(tmp_path: Path) -> None:
    storage = SqliteStorage.open(tmp_path / "x.sqlite")
    with pytest.raises(ValueError, match="node id"):
        NodeHost(ScriptedCore(keys(0), {}), keys=keys(1), codec=CODEC, storage=storage)
    storage.close()


@asynchronous
async def test_route_call_picks_the_shard_address_from_the_request(tmp_path: Path) -> None:
    authority = keys(0)
    shards = []
    for index in range(2):
        (tmp_path / f"shard{index}").mkdir()
        shards.append(build_node(tmp_path / f"shard{index}", authority))
    for shard in shards:
        await shard.host.start(rpc_listen=("127.0.0.1", 0))
    addresses = [shard.host.rpc_address for shard in shards]

    def route(server: NodeId, body: Any) -> Address | None:
        assert server == authority.node_id
        address = addresses[int(body.text.removeprefix("shard "))]
        assert address is not None
        return address

    client = build_node(tmp_path, keys(1))
    client.host.route_call = route
    await client.host.start()
    try:
        client.host.propose(Step(outgoing=[Call(authority.node_id, 1, Note("shard 1"))]))
        assert await client.next_event(Response) == Response(authority.node_id, 1, Note("SHARD 1"))
        requests = [
            [i for i in shard.core.inputs if isinstance(i, RequestReceived)] for shard in shards
        ]
        assert [len(found) for found in requests] == [0, 1]
    finally:
        await client.host.stop()
        for shard in shards:
            await shard.host.stop()


@pytest.mark.parametrize("replaced", [False, True])
@asynchronous
async def test_an_expiry_made_stale_by_a_later_step_of_its_batch_is_discarded(
    tmp_path: Path, replaced: bool
) -> None:
    """Group commit handles queued inputs together; a timer that expired while queued
    must not fire if an earlier input of the same batch replaced it."""
    from synod.runtime.host import _TimerExpiry

    node = build_node(tmp_path, keys(0))
    node.host._apply_timers([SetTimer("t", 60_000)])  # generation 1, far in the future
    generation = node.host._timers["t"][0]
    if replaced:
        node.host.propose(Step(timers=[SetTimer("t", 60_000)]))
    else:
        node.host.propose(Step())
    node.host._put_local(_TimerExpiry("t", generation))  # it expired meanwhile
    node.host.propose(Step(events=["marker"]))
    await node.host.start()
    assert await node.next_event(str) == "marker"
    fired = [event for event in node.core.inputs if isinstance(event, TimerFired)]
    assert fired == ([] if replaced else [TimerFired("t")])
    await node.host.stop()


@asynchronous
async def test_a_host_flooding_requests_waits_for_its_own_turn(tmp_path: Path) -> None:
    """One client host queues hundreds of requests; an honest client's request from another
    host is handled after at most one round of them (16 inputs of the flooding host), not
    after all (first in, first out would serve the whole flood first)."""
    node = build_node(tmp_path, keys(0), storage_class=SlowStorage)
    await node.host.start(rpc_listen=("127.0.0.1", 0))
    assert node.host.rpc_address is not None
    # keep the host busy with a slow commit while the requests queue up
    node.host.propose(Step(persist=[Persist(b"k", b"v")], events=["committed"]))
    _, flood = await asyncio.open_connection(*node.host.rpc_address, local_addr=("127.0.0.2", 0))
    big = CODEC.encode(Note("a" * 100))
    frames = (encode_frame(canonical_bytes(RpcRequest(n, big))) for n in range(300))
    flood.write(b"".join(frames))
    async with asyncio.timeout(DEADLINE_S):
        while node.host.waiting_inputs < 200:
            await asyncio.sleep(0.01)
    client = RpcClient(node.host.rpc_address)
    reply = await client.call(CODEC.encode(Note("honest")), timeout_s=DEADLINE_S)
    await client.close()
    flood.close()
    await node.host.stop()
    assert isinstance(reply, RpcReply)
    requests = [event.body for event in node.core.inputs if isinstance(event, RequestReceived)]
    position = requests.index(Note("honest"))
    assert position <= 16, f"the honest request waited behind {position} flood requests"
