"""SCP in Stellar mode over the Stellar overlay on 127.0.0.1: four synod validators
(Stellar signatures, quorum-set hashes and messages) externalize the same
``StellarValue``, and a crawl of them rebuilds their quorum sets."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from raw_overlay import TESTNET
from stellar_sdk import xdr

from synod.crypto import KeyPair
from synod.fbas.analysis import check_intersection
from synod.fbas.load import load_stellarbeat
from synod.quorum.qset import QuorumSet
from synod.runtime.lock import NodeAlreadyRunning
from synod.runtime.stellar_overlay import CrawlLimits, crawl
from synod.runtime.stellar_scp import StellarScpNode
from synod.scp.application import Externalized
from synod.stellar.peer import OverlaySettings
from synod.stellar.state import stellar_value

SETTINGS = OverlaySettings(passphrase=TESTNET)
KEYS = [KeyPair.from_seed(hashlib.sha256(b"scp %d" % index).digest()) for index in range(4)]
QSET = QuorumSet(threshold=3, validators=tuple(keys.node_id for keys in KEYS))


# Each validator lists the same members in its own order: four Stellar hashes, so no node
# can count another before fetching its quorum set over the overlay (GET_SCP_QUORUMSET).
ROTATED = [
    QuorumSet(threshold=3, validators=QSET.validators[index:] + QSET.validators[:index])
    for index in range(4)
]


@pytest.mark.parametrize("qsets", [[QSET] * 4, ROTATED], ids=["shared", "fetched"])
def test_four_validators_agree_over_the_overlay_and_a_crawl_sees_them(
    qsets: list[QuorumSet],
) -> None:
    async def scenario() -> tuple[list[list[Externalized]], list[dict[str, object]]]:
        nodes = [
            StellarScpNode(keys, qset, SETTINGS) for keys, qset in zip(KEYS, qsets, strict=True)
        ]
        addresses = [await node.start("127.0.0.1", 0) for node in nodes]
        for index, node in enumerate(nodes):
            node.overlay.set_peers([a for a in addresses if a != addresses[index]])
            node.connect_to(addresses[:index])  # each pair dialed once
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            for index, node in enumerate(nodes):
                node.propose(stellar_value(1_800_000_000 + index), slot_index=1)
            while not all(node.externalized for node in nodes):
                assert loop.time() < deadline, [len(n.externalized) for n in nodes]
                await asyncio.sleep(0.05)
            book = await crawl(
                [f"{addresses[0][0]}:{addresses[0][1]}"],
                SETTINGS,
                limits=CrawlLimits(listen_s=10, total_s=60),
            )
        finally:
            for node in nodes:
                await node.close()
        return [node.externalized for node in nodes], book.to_stellarbeat()

    decided, records = asyncio.run(scenario())
    values = {events[0].value for events in decided}
    assert len(values) == 1 and all(events[0].slot_index == 1 for events in decided)
    (value,) = values
    decoded = xdr.StellarValue.from_xdr_bytes(value)
    assert 1_800_000_000 <= decoded.close_time.time_point.uint64 <= 1_800_000_003
    assert len(records) == 4 and all(record["quorumSet"] is not None for record in records)
    result = check_intersection(load_stellarbeat(records))
    assert result.has_quorum and result.intersects


def test_a_validator_restarts_from_its_store_and_a_second_copy_is_refused(
    tmp_path: Path,
) -> None:
    alone = QuorumSet(threshold=1, validators=(KEYS[0].node_id,))
    store = tmp_path / "v0.sqlite"

    async def decide_slot_one() -> Externalized:
        node = StellarScpNode(KEYS[0], alone, SETTINGS, store_path=store)
        await node.start("127.0.0.1", 0)
        try:
            with pytest.raises(NodeAlreadyRunning):
                StellarScpNode(KEYS[0], alone, SETTINGS, store_path=store)
            node.propose(stellar_value(1_800_000_000), slot_index=1)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while not node.externalized:
                assert loop.time() < deadline
                await asyncio.sleep(0.02)
            return node.externalized[0]
        finally:
            await node.close()

    async def restart() -> int:
        node = StellarScpNode(KEYS[0], alone, SETTINGS, store_path=store)
        try:
            return node.core.next_slot_index
        finally:
            await node.close()

    decided = asyncio.run(decide_slot_one())
    assert decided.slot_index == 1
    assert asyncio.run(restart()) == 2, "slot 1's decision was restored from the store"


def test_envelopes_are_relayed_along_a_line_of_validators() -> None:
    """A - B - C, A and C never connected, every node needing all three: C hears A only
    through B's relay (and A hears C the same way)."""
    line = QuorumSet(threshold=3, validators=tuple(keys.node_id for keys in KEYS[:3]))

    async def scenario() -> list[StellarScpNode]:
        nodes = [StellarScpNode(keys, line, SETTINGS) for keys in KEYS[:3]]
        addresses = [await node.start("127.0.0.1", 0) for node in nodes]
        nodes[1].connect_to([addresses[0], addresses[2]])
        try:
            for index, node in enumerate(nodes):
                node.propose(stellar_value(1_800_000_000 + index), slot_index=1)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not all(node.externalized for node in nodes):
                assert loop.time() < deadline, [n.relayed for n in nodes]
                await asyncio.sleep(0.05)
        finally:
            for node in nodes:
                await node.close()
        return nodes

    nodes = asyncio.run(scenario())
    assert len({node.externalized[0].value for node in nodes}) == 1
    assert nodes[1].relayed > 0 and nodes[0].relayed == nodes[2].relayed == 0


def test_a_validator_whose_store_fails_stops_before_sending(tmp_path: Path) -> None:
    from synod.runtime.storage import StorageError

    alone = QuorumSet(threshold=1, validators=(KEYS[0].node_id,))

    async def scenario() -> StellarScpNode:
        node = StellarScpNode(KEYS[0], alone, SETTINGS, store_path=tmp_path / "v.sqlite")
        await node.start("127.0.0.1", 0)
        sent: list[object] = []
        node._send_to = lambda to, message: sent.append(message)  # type: ignore[method-assign]

        def full_disk(records: object) -> None:
            raise StorageError(tmp_path / "v.sqlite", "disk full")

        assert node._sqlite is not None
        node._sqlite.apply = full_disk  # type: ignore[method-assign]
        try:
            node.propose(stellar_value(1_800_000_000), slot_index=1)
            assert node.failed.is_set() and sent == [], "nothing of the failed step left"
            node.propose(stellar_value(1_800_000_001), slot_index=2)
            assert sent == [] and not node.externalized
        finally:
            await node.close()
        return node

    asyncio.run(scenario())


def test_a_watcher_connected_to_one_validator_follows_the_network() -> None:
    """A node that never votes (stellar-core's watcher) dials one validator only; with
    that validator relaying the others' envelopes it externalizes what they decided."""
    watcher_keys = KeyPair.from_seed(hashlib.sha256(b"watcher").digest())

    async def scenario() -> tuple[list[StellarScpNode], StellarScpNode]:
        nodes = [StellarScpNode(keys, QSET, SETTINGS) for keys in KEYS]
        addresses = [await node.start("127.0.0.1", 0) for node in nodes]
        for index, node in enumerate(nodes):
            node.connect_to(addresses[:index])
        watcher = StellarScpNode(watcher_keys, QSET, SETTINGS, validator=False)
        await watcher.start("127.0.0.1", 0)
        watcher.connect_to([addresses[0]])
        try:
            for index, node in enumerate(nodes):
                node.propose(stellar_value(1_800_000_000 + index), slot_index=1)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not watcher.externalized or not all(node.externalized for node in nodes):
                assert loop.time() < deadline
                await asyncio.sleep(0.05)
        finally:
            for node in [*nodes, watcher]:
                await node.close()
        return nodes, watcher

    nodes, watcher = asyncio.run(scenario())
    assert watcher.externalized[0] == nodes[0].externalized[0]
    assert len(watcher.overlay.connections) == 0  # closed; it had dialed one validator only


def test_envelopes_of_nodes_outside_the_transitive_quorum_are_neither_checked_nor_relayed() -> (
    None
):
    """On Stellar's overlay anyone may authenticate.  An outsider that signs statements
    with thirty fresh keys for the slot being decided gets none of them relayed (before,
    each cost a signature check and went on to every other peer, as stellar-core never
    floods an envelope from outside its transitive quorum), and nothing reaches the core's
    tables."""
    from synod.runtime.stellar_overlay import OverlayNode
    from synod.scp.stellar import StellarNetwork, envelope_to_xdr_object
    from synod.stellar.state import ScpStateStore

    made_up = [KeyPair.from_seed(hashlib.sha256(b"made up %d" % i).digest()) for i in range(30)]

    async def scenario() -> tuple[int, int]:
        target, neighbour = (StellarScpNode(keys, QSET, SETTINGS) for keys in KEYS[:2])
        address = await target.start("127.0.0.1", 0)
        await neighbour.start("127.0.0.1", 0)
        neighbour.connect_to([address])
        outsider = OverlayNode(KeyPair.generate(), SETTINGS)
        try:
            connection = await outsider.connect(*address)
            assert await connection.wait_for(lambda: connection.peer.authenticated, 10)
            store, network = ScpStateStore(), StellarNetwork(TESTNET)
            for keys in made_up:
                envelope = store.nominate(keys, network, QSET, 1, stellar_value(1_800_000_000))
                message = xdr.StellarMessage(
                    xdr.MessageType.SCP_MESSAGE, envelope=envelope_to_xdr_object(envelope)
                )
                connection.send(message)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while sum(c.received for c in target.overlay.connections) < len(made_up):
                assert loop.time() < deadline
                await asyncio.sleep(0.02)
            return target.relayed, len(target.core.transitive_quorum)
        finally:
            await outsider.close()
            await neighbour.close()
            await target.close()

    relayed, known = asyncio.run(scenario())
    assert relayed == 0
    assert known == len(QSET.validators)
