"""A node of a synod SCP network in Stellar mode: what ``synod scp run`` runs when the
network file has a ``[stellar]`` table.

The node is a `synod.runtime.stellar_scp.StellarScpNode` set up from ``network.toml``:
its key, its quorum set, every other node's address as a peer to keep a connection to
(each node dials every other; the overlay keeps one authenticated connection per pair
of directions), the network's windows and timings, the ``[stellar]`` passphrase and
overlay versions.  Each slot decides one ``StellarValue``
(`synod.stellar.ledger.LedgerApplication`: empty transaction set, close time later than
the previous slot's and at most a minute ahead of the clock).  The node proposes slot
n + 1 ``close_interval_ms`` after slot n closed, with a close time of at least one
second past the previous one, and keeps every decided value in its SQLite file under
the replicated log's keys, committed with the step that decided it, so ``synod scp
status`` and `synod.runtime.scp_node.read_log` read it like any other node.

Outside tools (a Stellar crawler, stellar-core as a watcher) connect to the node's peer
port like any Stellar peer.  Clients' entries need transaction sets, which this mode
does not carry: the submit port answers status requests only (`synod.runtime.node_status`:
the slot, links to the other nodes, overlay counters) and refuses anything else.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from synod.crypto import KeyPair
from synod.runtime.node_status import StatusReply, answer_status
from synod.runtime.rpc import RequestRejected, RpcServer
from synod.runtime.scp_node import read_log
from synod.runtime.stellar_scp import ScpTuning, StellarScpNode
from synod.scp.application import Externalized
from synod.scp.network import NetworkConfig, NodeEntry, StellarMode
from synod.stellar.ledger import LedgerApplication, close_time_of
from synod.stellar.peer import OverlaySettings
from synod.stellar.state import stellar_value

log = logging.getLogger("synod.runtime.scp_stellar_node")


@dataclass(frozen=True, slots=True)
class LedgerClosed:
    """Slot `slot_index` decided `value`, a ``StellarValue`` closing at `close_time`."""

    slot_index: int
    value: bytes
    close_time: int


ClosedHandler = Callable[[LedgerClosed], None]


def stellar_mode_of(config: NetworkConfig) -> StellarMode:
    """The network's ``[stellar]`` table; `ValueError` if the network is not in that mode."""
    if config.stellar is None:
        raise ValueError(f"{config.path}: no [stellar] table: not a Stellar-mode network")
    return config.stellar


class StellarLogNode:
    """One node of a Stellar-mode network, in the caller's event loop (module doc)."""

    def __init__(
        self,
        config: NetworkConfig,
        entry: NodeEntry,
        keys: KeyPair,
        *,
        on_closed: ClosedHandler | None = None,
        wall_clock_s: Callable[[], float] = time.time,
    ) -> None:
        mode = stellar_mode_of(config)
        settings = config.settings
        self.config = config
        self.entry = entry
        self.mode = mode
        self.on_closed = on_closed
        self._wall_clock_s = wall_clock_s
        self.application = LedgerApplication(
            wall_clock_s,
            nomination_timeout_ms=settings.nomination_timeout_ms,
            ballot_timeout_ms=settings.ballot_timeout_ms,
        )
        self.node = StellarScpNode(
            keys,
            entry.quorum_set,
            OverlaySettings(
                passphrase=mode.passphrase,
                ledger_version=mode.ledger_version,
                overlay_version=mode.overlay_version,
                overlay_min_version=mode.overlay_min_version,
                listening_port=entry.port,
            ),
            application=self.application,
            peers=[(node.host, node.port) for node in config.nodes if node is not entry],
            on_externalized=self._closed,
            store_path=config.store_path(entry),
            lock_path=config.lock_path(entry),
            keep_log=True,
            tuning=ScpTuning(
                max_slots_ahead=settings.max_slots_ahead,
                retained_slots=settings.retained_slots,
                retained_decisions=settings.retained_decisions,
                rebroadcast_interval_ms=settings.rebroadcast_ms,
                known_quorum_sets=tuple(node.quorum_set for node in config.nodes),
            ),
        )
        # The values decided before a restart: the next slot's rules and leaders read them.
        restored = read_log(config.store_path(entry)) or {}
        for slot_index, value in sorted(restored.items()):
            self.application.record(slot_index, value)
        self.restored_slots = len(restored)
        self._next_proposal: asyncio.TimerHandle | None = None
        self._status_server: RpcServer | None = None

    @property
    def next_slot(self) -> int:
        """The first slot this node has not decided."""
        return self.node.core.next_slot_index

    async def start(self) -> tuple[str, int]:
        """Listen on the node's peer address, dial the others, propose the next slot."""
        address = await self.node.start(self.entry.host, self.entry.port)
        self._status_server = RpcServer(_refuse_entries)
        answer_status(self._status_server, self.status)
        await self._status_server.start(self.entry.host, self.entry.submit_port)
        self.node.connect_to(
            [(node.host, node.port) for node in self.config.nodes if node is not self.entry]
        )
        self._propose(self.next_slot)
        return address

    async def stop(self) -> None:
        """Stop proposing and close the node (its store and lock included)."""
        if self._next_proposal is not None:
            self._next_proposal.cancel()
        if self._status_server is not None:
            await self._status_server.close()
        await self.node.close()

    def status(self) -> StatusReply:
        """What ``synod scp status`` asks over the submit port, from counters only."""
        others = {bytes(node.node_id) for node in self.config.nodes if node is not self.entry}
        connections = self.node.overlay.connections
        linked = {
            bytes(connection.peer.peer_id)
            for connection in connections
            if connection.peer.authenticated and connection.peer.peer_id is not None
        }
        return StatusReply(
            protocol="scp",
            progress_name="slot",
            progress=max(0, self.next_slot - 1),
            peers=len(others),
            peers_connected=len(others & linked),
            pending=0,
            details={
                "overlay_connections": len(connections),
                "relayed_envelopes": self.node.relayed,
                "unsent_messages": self.node.unsent,
            },
        )

    async def serve(self, on_ready: Callable[[StellarLogNode], None] | None = None) -> int:
        """Run until SIGINT/SIGTERM (exit status 0) or a store failure (1)."""
        loop = asyncio.get_running_loop()
        signalled = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, signalled.set)
        try:
            await self.start()
            if on_ready is not None:
                on_ready(self)
            waiters = [
                asyncio.ensure_future(signalled.wait()),
                asyncio.ensure_future(self.node.failed.wait()),
            ]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
        finally:
            for number in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(number)
            await self.stop()
        return 1 if self.node.failure is not None else 0

    def _closed(self, event: Externalized) -> None:
        self.application.record(event.slot_index, event.value)
        close_time = close_time_of(event.value)
        if self.on_closed is not None:
            self.on_closed(LedgerClosed(event.slot_index, event.value, close_time or 0))
        if self._next_proposal is not None:
            self._next_proposal.cancel()
        self._next_proposal = asyncio.get_running_loop().call_later(
            self.mode.close_interval_ms / 1000, self._propose, event.slot_index + 1
        )

    def _propose(self, slot_index: int) -> None:
        self._next_proposal = None
        if slot_index != self.next_slot or self.node.failure is not None:
            return  # decided meanwhile (from peers); its own decision schedules the next
        close_time = int(self._wall_clock_s())
        last = self.application.last_decided
        if last is not None:
            previous_close = close_time_of(last[1])
            if previous_close is not None:
                close_time = max(close_time, previous_close + 1)
        self.node.propose(stellar_value(close_time), slot_index)


async def _refuse_entries(client: str, request_id: int, body: bytes) -> bytes | None:
    raise RequestRejected("a Stellar-mode node takes no entries (status requests only)")


async def run_stellar_log_node(
    config: NetworkConfig,
    entry: NodeEntry,
    keys: KeyPair,
    *,
    on_closed: ClosedHandler | None = None,
    on_ready: Callable[[StellarLogNode], None] | None = None,
) -> int:
    """Run one Stellar-mode node until SIGINT/SIGTERM, as ``synod scp run`` does;
    returns the exit status (1: its store failed and it stopped)."""
    node = StellarLogNode(config, entry, keys, on_closed=on_closed)
    return await node.serve(on_ready)


__all__ = [
    "LedgerClosed",
    "StellarLogNode",
    "run_stellar_log_node",
    "stellar_mode_of",
]
