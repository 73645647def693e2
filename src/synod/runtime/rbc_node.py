"""Reliable-broadcast nodes on a real network, from a program: create, run, broadcast.

What `synod rbc` does, as a library: `create_network` writes a key file per member and
``network.toml`` (`synod.rbc.network`); `RbcNode` runs one member in the caller's event
loop (`start` / `stop`): its `RbcCore` driven by a `NodeHost` over the peer transport,
its records in ``<name>.sqlite``, its lock file held while it runs; `broadcast` hands
it payloads, paced so that a fast producer cannot outrun the core's window.

With a `status_address`, a member also answers `synod.runtime.node_status` requests
there (deliveries, links up, own broadcasts in flight), as SCP nodes, Tusk cores and
FastPay shards do on their request ports, so ``synod rbc status`` asks running members
instead of reading their files.  That port answers nothing else: any other request
drops the client (`RequestRejected`), so it never reaches the core.

Nothing here prints or exits: failures are typed errors (`NodeAlreadyRunning`,
`StorageError`, `RestoreFailed`, `HostFailed`, `NodeStopped`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from synod.crypto import KeyFileError, KeyPair, node_id_text, write_key_file
from synod.rbc.core import CODEC, MAX_PAYLOAD_BYTES, WINDOW, Delivered, RbcCore, Rejected
from synod.rbc.network import (
    CONFIG_NAME,
    DEFAULT_RETRANSMIT_MS,
    NetworkConfig,
    load_network,
    render_config,
)
from synod.runtime.host import HostConfig, HostFailed, NodeHost
from synod.runtime.lock import NodeAlreadyRunning
from synod.runtime.node_status import StatusReply, answer_status
from synod.runtime.nodes import (
    HostedNode,
    NetworkExists,
    NodeStopped,
    RestoreFailed,
    free_ports,
    restore_core,
)
from synod.runtime.rpc import RequestRejected

if TYPE_CHECKING:
    from synod.config import NodeEntry
    from synod.runtime.transport import Address


def create_network(
    directory: Path,
    *,
    nodes: int = 4,
    host: str = "127.0.0.1",
    ports: Sequence[int] | None = None,
    retransmit_ms: int = DEFAULT_RETRANSMIT_MS,
    network: str = "",
) -> NetworkConfig:
    """Write a key file per member and ``DIRECTORY/network.toml``; return the loaded file.

    `network` names the network (its peers must name the same).  Member *i*
    (``node-i``) listens on ``ports[i]``; with no ports, on ports the kernel
    hands out now (free at this moment: fine for tests and examples).  Raises
    `NetworkExists` rather than overwrite a network, `ValueError` for ports that do not
    fit, `KeyFileError` when a key file exists or cannot be written.
    """
    chosen = list(ports) if ports is not None else free_ports(host, nodes)
    if len(chosen) != nodes or len(set(chosen)) != nodes:
        raise ValueError(f"expected {nodes} distinct ports")
    config_path = directory / CONFIG_NAME
    if config_path.exists():
        raise NetworkExists(config_path)
    for index in range(nodes):
        # checked before writing any: a refusal half way left keys that refused the next try
        key_path = directory / f"node-{index}.key"
        if key_path.exists():
            raise KeyFileError(key_path, "already exists; refusing to overwrite a key")
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, port in enumerate(chosen):
        name = f"node-{index}"
        keys = KeyPair.generate()
        write_key_file(directory / f"{name}.key", keys)
        entries.append((name, node_id_text(keys.node_id), host, port, f"{name}.key"))
    config_path.write_text(render_config(entries, retransmit_ms, network), encoding="utf-8")
    return load_network(directory)


class RbcNode(HostedNode):
    """One member of a reliable-broadcast network, run in the caller's event loop.

    `start` takes the member's lock file, rebuilds its `RbcCore` from its SQLite file and
    listens on its port; `stop` shuts it down cleanly and releases the lock.
    `on_delivered` receives each `Delivered` payload once it is durably recorded (a
    restarted member does not deliver again what it had); `on_rejected` each peer
    message the core refused.
    """

    def __init__(
        self,
        config: NetworkConfig,
        entry: NodeEntry,
        keys: KeyPair,
        *,
        on_delivered: Callable[[Delivered], None] | None = None,
        on_rejected: Callable[[Rejected], None] | None = None,
        host_config: HostConfig | None = None,
        status_address: Address | None = None,
    ) -> None:
        if keys.node_id != entry.node_id:
            raise ValueError(f"these keys are not those of {entry.name} in {config.path}")
        self.config = config
        self.entry = entry
        self.keys = keys
        self.on_delivered = on_delivered
        self.on_rejected = on_rejected
        self.host_config = host_config
        self.status_address = status_address
        """Where the member answers status requests (None: it does not)."""
        self.max_in_flight = WINDOW // 2
        """Own broadcasts at most undelivered at once (see `broadcast`)."""
        self.restored_deliveries = 0
        """How many payloads the member had delivered when it started."""
        super().__init__()
        self._in_flight = 0
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = False

    @property
    def core(self) -> RbcCore:
        """The member's `RbcCore` (once started); read it, never feed it directly."""
        core = self.host.core
        assert isinstance(core, RbcCore)
        return core

    @property
    def address(self) -> Address:
        """Where the member listens for its peers."""
        return self.entry.host, self.entry.port

    async def start(self) -> None:
        """Lock, restore, listen and start broadcasting.

        Raises `NodeAlreadyRunning`, `StorageError`, `RestoreFailed`, or `OSError` (the
        port is in use).
        """
        host = await self._start_host(
            self.config.lock_path(self.entry),
            self._open_host,
            listen=self.address,
            rpc_listen=self.status_address,
        )
        if host.rpc_server is not None:
            host.rpc_server.handler = _status_only
            answer_status(host.rpc_server, self.status)

    def _open_host(self) -> NodeHost:
        members = [node.node_id for node in self.config.nodes]
        storage, core = restore_core(
            self.config.store_path(self.entry),
            lambda records: RbcCore(
                self.keys, members, records, retransmit_ms=self.config.retransmit_ms
            ),
        )
        self.restored_deliveries = core.delivered_count
        others = [node for node in self.config.nodes if node.node_id != self.keys.node_id]
        return NodeHost(
            core,
            keys=self.keys,
            codec=CODEC,
            storage=storage,
            peers={node.node_id: (node.host, node.port) for node in others},
            on_event=self._on_event,
            config=self.host_config,
            network=self.config.network_id,
        )

    @property
    def bound_status_address(self) -> Address | None:
        """Where status requests are answered once started (the port the kernel picked
        for port 0), or None."""
        return self.host.rpc_address if self.status_address is not None else None

    def status(self) -> StatusReply:
        """What ``synod rbc status`` asks: payloads delivered (the member's progress),
        links up of the others, own broadcasts not delivered yet; constant time."""
        core, host = self.core, self.host
        return StatusReply(
            protocol="rbc",
            progress_name="delivered",
            progress=core.delivered_count,
            peers=len(host.peers),
            peers_connected=self._links_up(),
            pending=self._in_flight,
            details={
                "restored_deliveries": self.restored_deliveries,
                "waiting_inputs": host.waiting_inputs,
            },
        )

    async def stop(self) -> None:
        """Stop, flush and close the connections and the store, release the lock
        (idempotent); a `broadcast` waiting for room raises `NodeStopped`."""
        self._stopping = True
        self._room.set()
        await self._stop_host()

    async def broadcast(self, payload: bytes) -> None:
        """Propose `payload` to every member; waits while `max_in_flight` of this
        member's own broadcasts are undelivered.

        `RbcCore` refuses instances more than its window ahead of an origin's lowest
        undelivered one, so an unpaced burst larger than the window would stall.
        Raises `ValueError` for an empty payload or one over `MAX_PAYLOAD_BYTES`, and
        `NodeStopped` when the member stops first.
        """
        if not 0 < len(payload) <= MAX_PAYLOAD_BYTES:
            raise ValueError(f"a payload is 1..{MAX_PAYLOAD_BYTES} bytes, not {len(payload)}")
        while self._in_flight >= self.max_in_flight and not self._stopping:
            self._room.clear()
            await self._room.wait()
        if self._stopping:
            raise NodeStopped(f"{self.entry.name} stopped")
        self._in_flight += 1
        try:
            self.host.propose(payload)
        except RuntimeError:  # the host is stopping on its own (a failure)
            raise NodeStopped(f"{self.entry.name} stopped") from None

    def _on_event(self, event: object) -> None:
        if isinstance(event, Delivered):
            if event.origin == self.keys.node_id and self._in_flight > 0:
                self._in_flight -= 1
                self._room.set()
            if self.on_delivered is not None:
                self.on_delivered(event)
        elif isinstance(event, Rejected) and self.on_rejected is not None:
            self.on_rejected(event)


async def _status_only(client: str, request_id: int, body: bytes) -> bytes | None:
    """The status port's own handler, behind `answer_status`: an RBC core takes no
    client requests, so anything but a status request drops the client."""
    raise RequestRejected("an RBC member's status port answers status requests only")


__all__ = [
    "HostFailed",
    "NetworkExists",
    "NodeAlreadyRunning",
    "NodeStopped",
    "RbcNode",
    "RestoreFailed",
    "create_network",
]
