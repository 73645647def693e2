"""`synod.runtime.stellar_overlay` on 127.0.0.1: nodes that serve their SCP state and quorum
sets, a crawl that rebuilds a 4-node network's quorum sets from verified envelopes, and a
listener that drops bad connections while it serves good ones."""

from __future__ import annotations

import asyncio
import hashlib
import time

from raw_overlay import TESTNET, RawNode, auth_message, split_records
from stellar_sdk import xdr

from synod.crypto import KeyPair
from synod.fbas.analysis import check_intersection
from synod.fbas.load import load_stellarbeat
from synod.quorum.qset import QuorumSet
from synod.runtime.stellar_overlay import (
    CrawlLimits,
    OverlayConnection,
    OverlayLimits,
    OverlayNode,
    crawl,
    speaks_scp,
)
from synod.scp.stellar import StellarNetwork, node_id_to_strkey
from synod.stellar.peer import OverlaySettings
from synod.stellar.state import ScpStateStore, stellar_value

SETTINGS = OverlaySettings(passphrase=TESTNET)
KEYS = [KeyPair.from_seed(hashlib.sha256(b"node %d" % index).digest()) for index in range(4)]
QSET = QuorumSet(threshold=3, validators=tuple(sorted(keys.node_id for keys in KEYS)))


async def start_network(count: int = 4) -> list[tuple[OverlayNode, int]]:
    """`count` nodes on free ports; each nominates for slot 5 and names the others in PEERS."""
    network = StellarNetwork(TESTNET)
    nodes = []
    for keys in KEYS[:count]:
        store = ScpStateStore()
        store.nominate(keys, network, QSET, 5, stellar_value(1_800_000_000))
        node = OverlayNode(keys, SETTINGS, store=store)
        _host, port = await node.start("127.0.0.1", 0)
        nodes.append((node, port))
    ports = [port for _node, port in nodes]
    for node, port in nodes:
        node.set_peers([("127.0.0.1", other) for other in ports if other != port])
    return nodes


async def stop(nodes: list[tuple[OverlayNode, int]]) -> None:
    for node, _port in nodes:
        await node.close()


def test_crawl_rebuilds_every_quorum_set_from_one_address() -> None:
    async def scenario() -> list[dict[str, object]]:
        nodes = await start_network()
        try:
            progress: list[tuple[int, int]] = []
            book = await crawl(
                [f"127.0.0.1:{nodes[0][1]}"],
                SETTINGS,
                limits=CrawlLimits(listen_s=10.0, total_s=60.0),
                on_progress=lambda done, total: progress.append((done, total)),
            )
        finally:
            await stop(nodes)
        assert progress and progress[-1] == (4, 4)
        return book.to_stellarbeat()

    records = asyncio.run(scenario())
    assert {record["publicKey"] for record in records} == {
        node_id_to_strkey(keys.node_id) for keys in KEYS
    }
    expected = {
        "threshold": 3,
        "validators": [node_id_to_strkey(v) for v in QSET.validators],
        "innerQuorumSets": [],
    }
    assert all(record["quorumSet"] == expected for record in records)
    result = check_intersection(load_stellarbeat(records))
    assert result.has_quorum and result.intersects


def test_forged_envelopes_and_unsolicited_quorum_sets_teach_the_crawl_nothing() -> None:
    from synod.scp.messages import Envelope
    from synod.scp.stellar import envelope_to_xdr_object, qset_to_xdr_object
    from synod.stellar.crawl import Crawl

    network = StellarNetwork(TESTNET)
    book = Crawl(network)
    store = ScpStateStore()
    genuine = store.nominate(KEYS[0], network, QSET, 5, b"value")
    forged = Envelope(statement=genuine.statement, signature=bytes(64))
    other_network = StellarNetwork("a private network").sign_statement(KEYS[0], genuine.statement)
    asked: set[bytes] = set()
    for envelope in (forged, other_network):
        message = xdr.StellarMessage(
            xdr.MessageType.SCP_MESSAGE, envelope=envelope_to_xdr_object(envelope)
        )
        assert book.on_message(message, asked) == []
    assert book.rejected_envelopes == 2 and not book.nodes
    unsolicited = xdr.StellarMessage(xdr.MessageType.SCP_QUORUMSET, q_set=qset_to_xdr_object(QSET))
    book.on_message(unsolicited, asked)
    assert book.quorum_sets == {} and book.unsolicited_quorum_sets == 1
    genuine_message = xdr.StellarMessage(
        xdr.MessageType.SCP_MESSAGE, envelope=envelope_to_xdr_object(genuine)
    )
    (request,) = book.on_message(genuine_message, asked)
    assert request.type == xdr.MessageType.GET_SCP_QUORUMSET
    assert book.on_message(genuine_message, asked) == [], "each hash asked once per connection"
    book.on_message(unsolicited, asked)
    assert book.quorum_set_of(KEYS[0].node_id) == QSET


def test_unknown_quorum_set_hash_is_answered_dont_have() -> None:
    store = ScpStateStore()
    store.add_quorum_set(QSET)
    request = xdr.StellarMessage(
        xdr.MessageType.GET_SCP_QUORUMSET, q_set_hash=xdr.Uint256(bytes(32))
    )
    (answer,) = store.answer(request)
    assert answer.type == xdr.MessageType.DONT_HAVE
    assert answer.dont_have.type == xdr.MessageType.SCP_QUORUMSET
    assert bytes(answer.dont_have.req_hash.uint256) == bytes(32)


def test_store_keeps_recent_slots_only() -> None:
    network = StellarNetwork(TESTNET)
    store = ScpStateStore(max_slots=3)
    for slot in range(1, 7):
        store.nominate(KEYS[0], network, QSET, slot, b"v%d" % slot)
    slots = [m.envelope.statement.slot_index.uint64 for m in store.envelopes_from(0)]
    assert slots == [4, 5, 6]
    assert [m.envelope.statement.slot_index.uint64 for m in store.envelopes_from(6)] == [6]


async def _raw_handshake(
    port: int, raw: RawNode
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A hand-written dialer: HELLO, keys, AUTH; returns the open streams."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw.seal(raw.hello(int(time.time()))))
    header = await reader.readexactly(4)
    body = await reader.readexactly(int.from_bytes(header, "big") & 0x7FFFFFFF)
    raw.derive_keys(raw.open(body).hello)
    writer.write(raw.seal(auth_message()))
    return reader, writer


async def _read_message(reader: asyncio.StreamReader, raw: RawNode) -> xdr.StellarMessage:
    header = await reader.readexactly(4)
    body = await reader.readexactly(int.from_bytes(header, "big") & 0x7FFFFFFF)
    return raw.open(body)


def test_listener_drops_a_bad_peer_and_keeps_serving_others() -> None:
    async def scenario() -> None:
        nodes = await start_network(1)
        _node, port = nodes[0]
        try:
            # A peer that authenticates, then sends a message with a bad MAC.
            bad = RawNode()
            reader, writer = await _raw_handshake(port, bad)
            request = xdr.StellarMessage(
                xdr.MessageType.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(0)
            )
            writer.write(bad.seal(request, mac_key=bytes(32)))
            seen = []
            while True:
                message = await asyncio.wait_for(_read_message(reader, bad), 10)
                seen.append(message.type)
                if message.type == xdr.MessageType.ERROR_MSG:
                    break
            assert await asyncio.wait_for(reader.read(), 10) == b"", "then the socket closes"
            writer.close()
            # A good peer still gets the node's state and quorum set.
            good = RawNode()
            reader, writer = await _raw_handshake(port, good)
            writer.write(good.seal(request))
            grant = xdr.StellarMessage(
                xdr.MessageType.SEND_MORE_EXTENDED,
                send_more_extended_message=xdr.SendMoreExtended(
                    xdr.Uint32(10), xdr.Uint32(100_000)
                ),
            )
            writer.write(good.seal(grant))
            while True:
                message = await asyncio.wait_for(_read_message(reader, good), 10)
                if message.type == xdr.MessageType.SCP_MESSAGE:
                    break
            envelope = message.envelope
            assert bytes(envelope.statement.node_id.node_id.ed25519.uint256) == KEYS[0].node_id
            writer.close()
        finally:
            await stop(nodes)

    asyncio.run(scenario())


def test_slow_handshakes_are_cut_at_the_deadline_and_hosts_hold_few_slots() -> None:
    async def scenario() -> None:
        limits = OverlayLimits(handshake_s=0.5, connections_per_host=2, total_connections=4)
        node = OverlayNode(KEYS[0], SETTINGS, limits=limits)
        _host, port = await node.start("127.0.0.1", 0)
        try:
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            # The third is refused at once; the first two are told why at the deadline.
            answers = [await asyncio.wait_for(reader.read(), 10) for reader, _writer in held]
            assert answers[2] == b""
            for answer in answers[:2]:
                (body,) = split_records(answer)
                error = xdr.StellarMessage.from_xdr_bytes(body[12:-32]).error
                assert bytes(error.msg) == b"handshake deadline passed"
            assert node.refused_connections == 1
            raw = RawNode()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw.seal(raw.hello(int(time.time())))[:10])
            answer = await asyncio.wait_for(reader.read(), 10)
            assert b"handshake deadline passed" in answer, "a trickled HELLO is cut"
            for _reader, held_writer in held:
                held_writer.close()
            writer.close()
        finally:
            await node.close()

    asyncio.run(scenario())


def test_wrong_network_is_refused_over_tcp() -> None:
    async def scenario() -> None:
        nodes = await start_network(1)
        try:
            raw = RawNode(passphrase="Public Global Stellar Network ; September 2015")
            reader, writer = await asyncio.open_connection("127.0.0.1", nodes[0][1])
            writer.write(raw.seal(raw.hello(int(time.time()))))
            message = await asyncio.wait_for(_read_message(reader, raw), 10)
            assert message.type == xdr.MessageType.ERROR_MSG
            assert bytes(message.error.msg) == b"wrong network passphrase"
            writer.close()
        finally:
            await stop(nodes)

    asyncio.run(scenario())



def test_a_node_never_decodes_a_quorum_set_it_did_not_ask_for() -> None:
    import os

    from synod.runtime.stellar_overlay import serves
    from synod.scp.stellar import qset_to_xdr_object
    from synod.stellar.auth import OverlayIdentity
    from synod.stellar.peer import Closed, MessageReceived, Role, StellarPeer, Write

    identity = OverlayIdentity.create(KEYS[0], SETTINGS.network_id, os.urandom(32))
    synod = StellarPeer(identity, SETTINGS, Role.REMOTE_CALLED_US, os.urandom(32), accept=serves)
    raw = RawNode()
    now = int(time.time())
    outputs = synod.receive(raw.seal(raw.hello(now)), now)
    (body,) = split_records(b"".join(o.data for o in outputs if isinstance(o, Write)))
    raw.derive_keys(raw.open(body).hello)
    synod.receive(raw.seal(auth_message()), now)
    many = QuorumSet(threshold=1, validators=tuple(os.urandom(32) for _ in range(20_000)))
    unsolicited = xdr.StellarMessage(xdr.MessageType.SCP_QUORUMSET, q_set=qset_to_xdr_object(many))
    outputs = synod.receive(raw.seal(unsolicited), now)
    assert not any(isinstance(o, MessageReceived | Closed) for o in outputs)
    assert synod.ignored_messages == 1


def test_repeated_state_requests_do_not_grow_the_outbound_queue() -> None:
    async def scenario() -> None:
        nodes = await start_network(1)
        node, port = nodes[0]
        try:
            raw = RawNode()
            reader, writer = await _raw_handshake(port, raw)
            request = xdr.StellarMessage(
                xdr.MessageType.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(0)
            )
            for _ in range(50):  # never granting capacity, so no answer can leave
                writer.write(raw.seal(request))
            last = raw.seal(xdr.StellarMessage(
                xdr.MessageType.GET_SCP_QUORUMSET, q_set_hash=xdr.Uint256(bytes(32))
            ))
            writer.write(last)
            while True:  # the DONT_HAVE answer to the last request: all 50 were read
                message = await asyncio.wait_for(_read_message(reader, raw), 10)
                if message.type == xdr.MessageType.DONT_HAVE:
                    break
            assert node.ignored_state_requests == 49
            (connection,) = node.connections
            assert connection.peer.queued_flood_bytes < 1024, "one envelope waits, once"
            writer.close()
        finally:
            await stop(nodes)

    asyncio.run(scenario())


def test_broadcast_envelopes_reach_peers_once_and_forgeries_not_at_all() -> None:
    from synod.scp.messages import Envelope

    async def scenario() -> None:
        delivered: list[Envelope] = []
        sender = OverlayNode(KEYS[0], SETTINGS)
        receiver = OverlayNode(KEYS[1], SETTINGS, on_envelope=delivered.append)
        _host, port = await sender.start("127.0.0.1", 0)
        receiver.keep_connected([("127.0.0.1", port)], retry_s=0.2)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while not any(c.peer.authenticated for c in sender.connections):
                assert loop.time() < deadline, "the receiver never connected"
                await asyncio.sleep(0.01)
            network = StellarNetwork(TESTNET)
            genuine = ScpStateStore().nominate(KEYS[0], network, QSET, 9, b"value")
            forged = Envelope(statement=genuine.statement, signature=bytes(64))
            foreign = StellarNetwork("another network").sign_statement(
                KEYS[0], genuine.statement
            )
            for envelope in (forged, foreign, genuine, genuine):
                sender.broadcast(envelope)
            while not delivered:
                assert loop.time() < deadline, "the genuine envelope never arrived"
                await asyncio.sleep(0.01)
            (connection,) = [c for c in receiver.connections if c.peer.authenticated]
            while connection.received < 2:  # forged and foreign (the repeat is not sent)
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
            assert delivered == [genuine]
            assert receiver.rejected_envelopes == 2
        finally:
            await receiver.close()
            await sender.close()

    asyncio.run(scenario())


def test_a_peer_that_never_reads_its_answers_is_dropped() -> None:
    import os

    async def scenario() -> None:
        big = QuorumSet(threshold=1, validators=tuple(os.urandom(32) for _ in range(1000)))
        store = ScpStateStore()
        digest = store.add_quorum_set(big)
        limits = OverlayLimits(max_write_buffer_bytes=256 * 1024)
        node = OverlayNode(KEYS[0], SETTINGS, store=store, limits=limits)
        _host, port = await node.start("127.0.0.1", 0)
        try:
            raw = RawNode()
            _reader, writer = await _raw_handshake(port, raw)
            request = xdr.StellarMessage(
                xdr.MessageType.GET_SCP_QUORUMSET, q_set_hash=xdr.Uint256(digest)
            )
            # ~36 KiB answered per 100-byte request: 2,000 requests ask for ~70 MiB,
            # far more than the kernel's buffers hold for a reader that never reads.
            writer.write(b"".join(raw.seal(request) for _ in range(2000)))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while node.slow_readers_dropped == 0 or node.connections:
                assert loop.time() < deadline, "the silent reader was never dropped"
                await asyncio.sleep(0.05)
            writer.transport.abort()
        finally:
            await node.close()

    asyncio.run(scenario())


def test_a_reply_sent_while_a_message_is_delivered_keeps_the_mac_sequence_in_order() -> None:
    """A handler that answers on the same connection while its message is delivered:
    the answer must not overtake the flow-control grant made with that delivery (it
    carries the next MAC sequence number), or the remote refuses the connection with
    "unexpected auth sequence", as four `synod scp run` nodes in Stellar mode did."""
    from synod.scp.stellar import envelope_to_xdr_object

    network = StellarNetwork(TESTNET)
    flood = 3 * SETTINGS.send_more_batch_messages  # crosses two grant batches

    async def scenario() -> tuple[int, str | None, str | None]:
        answered = 0

        def answer(connection: OverlayConnection, message: xdr.StellarMessage) -> None:
            nonlocal answered
            if message.type == xdr.MessageType.SCP_MESSAGE:
                state_request = xdr.StellarMessage(
                    xdr.MessageType.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(0)
                )
                connection.send(state_request)
                answered += 1

        receiver = OverlayNode(KEYS[1], SETTINGS, handler=answer, accept=speaks_scp)
        sender = OverlayNode(KEYS[0], SETTINGS)
        _host, port = await receiver.start("127.0.0.1", 0)
        try:
            connection = await sender.connect("127.0.0.1", port)
            assert await connection.wait_for(lambda: connection.peer.authenticated, 10)
            store = ScpStateStore()
            for slot in range(1, flood + 1):
                envelope = store.nominate(KEYS[0], network, QSET, slot, stellar_value(slot))
                connection.send(
                    xdr.StellarMessage(
                        xdr.MessageType.SCP_MESSAGE, envelope=envelope_to_xdr_object(envelope)
                    )
                )
            await connection.wait_for(lambda: answered >= flood, 20)
            # The answers come back after the grants; the sender reads all of them.
            await connection.wait_for(lambda: connection.received >= flood, 20)
            (accepted,) = receiver.connections
            return answered, connection.close_reason, accepted.close_reason
        finally:
            await sender.close()
            await receiver.close()

    answered, sender_closed, receiver_closed = asyncio.run(scenario())
    assert (sender_closed, receiver_closed) == (None, None)
    assert answered == flood
