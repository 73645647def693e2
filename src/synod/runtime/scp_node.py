"""SCP log nodes on a real network, from a program: create, run, submit to, read back.

What `synod scp` does, as a library:

- `create_network` writes a new network: one key file per node and ``network.toml``
  (`synod.scp.network` is the model, loader and renderer);
- `LogNode` runs one node of a network in the caller's event loop (`start` / `stop`):
  its `LogCore` (`synod.scp.log`) driven by a `NodeHost` over the peer transport, its
  state and log in ``<name>.sqlite``, clients' entries on its submit port, an exclusive
  lock file so that one process at a time runs it; `run_log_node` runs one until
  SIGINT/SIGTERM, the way ``synod scp run`` does;
- `submit_entries` hands entries to a running node's submit port and returns once the
  node has stored them;
- `read_log` reads a node's log from its SQLite file, read-only, even while it runs.

Nothing here prints or exits: failures are typed errors (`NodeAlreadyRunning`,
`RestoreFailed`, `StorageError`, `HostFailed`, `SubmitFailed`, `LogReadError`...) and
the command line chooses the messages and exit statuses.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from synod.crypto import KeyPair, node_id_text, write_key_file
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
from synod.runtime.rpc import RpcClient, RpcFailure
from synod.runtime.storage import StorageError
from synod.runtime.store_identity import claim_records, identity_record, mark_store
from synod.scp.application import SlotsUnavailable
from synod.scp.log import (
    LOG_CODEC,
    LOG_KEY_PREFIX,
    MAX_ENTRY_BYTES,
    MAX_SUBMIT_ENTRIES,
    LogAppended,
    LogCore,
    SubmitReply,
    SubmitRequest,
    decode_batch,
    entry_fits,
    log_from_records,
)
from synod.scp.network import (
    CONFIG_NAME,
    NetworkConfig,
    NetworkSettings,
    NodeEntry,
    PlannedNode,
    StellarMode,
    build_log_core,
    load_network,
    plan_nodes,
    planned_quorum_set,
    render_config,
)
from synod.wire import DecodeError

log = logging.getLogger("synod.runtime.scp_node")

if TYPE_CHECKING:
    from synod.runtime.transport import Address

AppendedHandler = Callable[[LogAppended], None]


class SubmitFailed(Exception):
    """Entries were not stored by the node: `SubmitUnanswered` or `SubmitRefused`."""

    def __init__(self, address: Address, reason: str) -> None:
        super().__init__(f"{address[0]}:{address[1]}: {reason}")
        self.address = address
        self.reason = reason


class SubmitUnanswered(SubmitFailed):
    """The submit port did not answer: cannot connect, timeout, or an unreadable reply."""


class SubmitRefused(SubmitFailed):
    """The node answered with a refusal (`reply.error`: its pending list is full...).

    `queued` counts the new entries that earlier requests of the same call stored
    (entries travel in requests of at most `MAX_SUBMIT_ENTRIES`).
    """

    def __init__(self, address: Address, reply: SubmitReply, queued: int) -> None:
        super().__init__(address, reply.error)
        self.reply = reply
        self.queued = queued


class LogReadError(Exception):
    """A node's SQLite file cannot be read (the message names the file)."""


# ---------------------------------------------------------------- a new network


def create_network(
    directory: Path,
    *,
    nodes: int = 4,
    threshold: int | None = None,
    organisations: int | None = None,
    per_organisation: int = 3,
    host: str = "127.0.0.1",
    ports: Sequence[int] | None = None,
    submit_ports: Sequence[int] | None = None,
    settings: NetworkSettings | None = None,
    stellar: StellarMode | None = None,
) -> NetworkConfig:
    """Write a key file per node and ``DIRECTORY/network.toml``; return the loaded file.

    With `stellar`, the file gets a ``[stellar]`` table: its nodes run in Stellar mode
    (`synod.runtime.scp_stellar_node`).

    `nodes` nodes each trusting any `threshold` of them (by default n - (n-1)//3), or
    `organisations` of `per_organisation` nodes each with the tiered quorum set of
    `synod.scp.network.tiered_quorum_set`.  Node *i* listens on ``ports[i]`` (peers)
    and ``submit_ports[i]`` (clients); when either is None, every port is picked by the
    kernel now, free at this moment (another program could take one before the node
    starts: fine for tests and examples, not for a network meant to last).

    Raises `NetworkExists` rather than overwrite a network, `ValueError` for an
    impossible plan or a string no TOML file holds, `ConfigError` for a value its
    loader refuses (nothing is left written then), `KeyFileError` when a key file
    exists or cannot be written.
    """
    planned = plan_nodes(nodes, organisations, per_organisation)
    quorum_set = planned_quorum_set(planned, threshold)
    if ports is None or submit_ports is None:
        chosen = free_ports(host, 2 * len(planned))
        ports, submit_ports = chosen[: len(planned)], chosen[len(planned) :]
    _check_ports(len(planned), ports, submit_ports)
    config_path = directory / CONFIG_NAME
    if config_path.exists():
        raise NetworkExists(config_path)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for node, port, submit_port in zip(planned, ports, submit_ports, strict=True):
            _write_node_key(directory, node, port, submit_port)
            written.append(directory / f"{node.name}.key")
        text = render_config(settings or NetworkSettings(), planned, host, quorum_set, stellar)
        written.append(config_path)
        config_path.write_text(text, encoding="utf-8")
        return load_network(directory)
    except BaseException:
        # a network its own loader refuses is removed, so that the same command with a
        # corrected value can run again (it refuses to overwrite a network file)
        for path in written:
            path.unlink(missing_ok=True)
        raise


def _check_ports(count: int, ports: Sequence[int], submit_ports: Sequence[int]) -> None:
    if len(ports) != count or len(submit_ports) != count:
        raise ValueError(f"expected {count} ports and {count} submit ports")
    if len({*ports, *submit_ports}) != 2 * count:
        raise ValueError("every port must differ")
    if not all(1 <= port <= 65535 for port in (*ports, *submit_ports)):
        raise ValueError("ports are 1..65535")


def _write_node_key(directory: Path, node: PlannedNode, port: int, submit_port: int) -> None:
    keys = KeyPair.generate()
    write_key_file(directory / f"{node.name}.key", keys)
    node.port, node.submit_port, node.id_text = port, submit_port, node_id_text(keys.node_id)


# ---------------------------------------------------------------- running a node


STORE_IDENTITY_KEY = b"scp/identity"
"""The record naming whose store a file is (`synod.runtime.store_identity`): the node
id and the network id."""
SCP_RECORD_PREFIXES = (b"scp/", b"app/")
"""The keys an SCP log node writes: the core's statements and the log's entries."""


class LogNode(HostedNode):
    """One node of an SCP log network, run in the caller's asyncio event loop.

    `start` takes the node's lock file, rebuilds its `LogCore` from its SQLite file,
    listens on its peer port and its submit port; `stop` shuts it down cleanly and
    releases the lock.  `on_appended` receives each slot added to the log, once the slot
    is durably in the store (a restarted node does not see again what it had).
    """

    def __init__(
        self,
        config: NetworkConfig,
        entry: NodeEntry,
        keys: KeyPair,
        *,
        on_appended: AppendedHandler | None = None,
        host_config: HostConfig | None = None,
    ) -> None:
        if keys.node_id != entry.node_id:
            raise ValueError(f"these keys are not those of {entry.name} in {config.path}")
        self.config = config
        self.entry = entry
        self.keys = keys
        self.on_appended = on_appended
        self.host_config = host_config
        self.restored_slots = 0
        """How many slots the log held when the node started."""
        super().__init__()
        self._log: dict[int, bytes] = {}
        self._waiters: list[tuple[set[str], asyncio.Future[None]]] = []

    @property
    def core(self) -> LogCore:
        """The node's `LogCore` (once started); read it, never feed it directly."""
        core = self.host.core
        assert isinstance(core, LogCore)
        return core

    @property
    def submit_address(self) -> Address:
        """Where clients submit entries (see `submit_entries`)."""
        return self.entry.host, self.entry.submit_port

    @property
    def log(self) -> Mapping[int, bytes]:
        """slot index -> value, for every slot durably in this node's store."""
        return self._log

    async def start(self) -> None:
        """Lock, restore, listen and start deciding.

        Raises `NodeAlreadyRunning` (another process runs this node), `StorageError`
        (the store cannot be opened), `RestoreFailed`, or `OSError` (a port in use).
        """
        settings = self.config.settings
        if 0 < settings.retained_decisions < settings.checkpoint_interval:
            # not an error: a node away that long still rejoins, at the next checkpoint
            log.warning(
                "retained_decisions is below checkpoint_interval: a node away for longer "
                "than peers keep decisions may wait for the next checkpoint to rejoin",
                extra={
                    "retained_decisions": settings.retained_decisions,
                    "checkpoint_interval": settings.checkpoint_interval,
                },
            )
        host = await self._start_host(
            self.config.lock_path(self.entry),
            self._open_host,
            listen=(self.entry.host, self.entry.port),
            rpc_listen=self.submit_address,
        )
        assert host.rpc_server is not None
        answer_status(host.rpc_server, self.status)

    def _open_host(self) -> NodeHost:
        identity = identity_record(
            protocol="scp",
            node=node_id_text(self.keys.node_id),
            network=self.config.settings.network_id.hex(),
        )
        unmarked: list[bool] = []

        def build(records: Mapping[bytes, bytes]) -> LogCore:
            try:
                own, fresh = claim_records(
                    path, records, STORE_IDENTITY_KEY, identity, SCP_RECORD_PREFIXES
                )
            except StorageError as error:
                raise ValueError(error.reason) from None  # restore_core names the file
            unmarked.append(fresh)
            return build_log_core(self.config, self.entry, self.keys, own)

        path = self.config.store_path(self.entry)
        storage, core = restore_core(path, build)
        mark_store(storage, unmarked[0], STORE_IDENTITY_KEY, identity)
        self._log = dict(core.log)
        self.restored_slots = len(core.log)
        # a host opening many connections to the submit port gets one budget of pending
        # entries, not one per connection
        core.client_key = self._client_host
        others = [node for node in self.config.nodes if node.node_id != self.keys.node_id]
        return NodeHost(
            core,
            keys=self.keys,
            codec=LOG_CODEC,
            storage=storage,
            peers={node.node_id: (node.host, node.port) for node in others},
            on_event=self._on_event,
            config=self.host_config,
            network=self.config.settings.network_id,
        )

    def _client_host(self, client: str) -> str:
        server = self._host.rpc_server if self._host is not None else None
        return server.host_of(client) if server is not None else client

    def status(self) -> StatusReply:
        """What ``synod scp status`` asks over the submit port: the slot through which
        the log is complete, links up, entries waiting for a slot (constant time but
        for the pending list, at most `LogCore.max_pending` entries)."""
        core, host = self.core, self.host
        return StatusReply(
            protocol="scp",
            progress_name="slot",
            progress=max(0, core.complete_through),
            peers=len(host.peers),
            peers_connected=self._links_up(),
            pending=len(core.pending),
            details={
                "logged_slots": len(self._log),
                "highest_seen_slot": core.highest_seen_slot,
                "waiting_inputs": host.waiting_inputs,
            },
        )

    async def stop(self) -> None:
        """Stop deciding, flush and close the connections and the store, release the
        lock (idempotent)."""
        await self._stop_host()
        self._fail_waiters()

    # ------------------------------------------------------------ the log as it grows

    def _on_event(self, event: object) -> None:
        if isinstance(event, SlotsUnavailable):
            # say so rather than leave a silent gap; the node asks for a checkpoint, and
            # stays behind only when no peer holds one that reaches back this far
            log.warning(
                "peers no longer hold the decisions of the slots this node missed; "
                "asking for a checkpoint",
                extra={
                    "first_slot": event.first_slot_index,
                    "available_from_slot": event.available_from_slot_index,
                },
            )
            return
        if not isinstance(event, LogAppended):
            return
        self._log[event.slot_index] = event.value
        if self._waiters:
            logged = set(event.entries or ())
            for remaining, done in self._waiters:
                remaining.difference_update(logged)
                if not remaining and not done.done():
                    done.set_result(None)
        if self.on_appended is not None:
            self.on_appended(event)

    async def wait_for_entries(self, entries: Iterable[str], *, timeout_s: float) -> None:
        """Return once every one of `entries` is durably in this node's log.

        Raises `TimeoutError` after `timeout_s`, `NodeStopped` if the node stops first.
        """
        remaining = self._not_yet_durable(entries)
        if not remaining:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (remaining, done)
        self._waiters.append(waiter)
        stopped = asyncio.ensure_future(self.host.wait_stopped())
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.wait([done, stopped], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            self._waiters.remove(waiter)
        if not done.done() or done.exception() is not None:
            raise NodeStopped(f"{self.entry.name} stopped; {len(remaining)} entries not logged")

    def _not_yet_durable(self, entries: Iterable[str]) -> set[str]:
        # The core's log runs ahead of the store while a commit is in flight (the host
        # commits on a worker thread): its slots count only once an event confirms them.
        core = self.core
        unconfirmed: set[str] = set()
        if len(core.log) != len(self._log):
            for slot_index in core.log.keys() - self._log.keys():
                unconfirmed.update(decode_batch(core.log[slot_index]) or ())
        return {entry for entry in entries if entry not in core.logged or entry in unconfirmed}

    def _fail_waiters(self) -> None:
        for _, done in self._waiters:
            if not done.done():
                done.set_exception(NodeStopped(f"{self.entry.name} stopped"))


async def run_log_node(
    config: NetworkConfig,
    entry: NodeEntry,
    keys: KeyPair,
    *,
    on_appended: AppendedHandler | None = None,
    on_ready: Callable[[LogNode], None] | None = None,
    host_config: HostConfig | None = None,
) -> None:
    """Run node `entry` of `config` until SIGINT/SIGTERM (what ``synod scp run`` does).

    Raises what `LogNode.start` raises, and `HostFailed` when the node failed.
    """
    node = LogNode(config, entry, keys, on_appended=on_appended, host_config=host_config)
    await node.start()
    await node.serve(on_ready)


# ---------------------------------------------------------------- clients


async def submit_entries(
    address: Address, entries: Sequence[str], *, timeout_s: float = 5.0
) -> SubmitReply:
    """Hand `entries` to the node whose submit port is `address`.

    Returns once the node has stored them durably: the reply's `queued` counts the
    entries that were new to it (an entry already logged or pending is not queued
    again, so a retry is safe), `pending` how many wait for a slot.  Raises
    `SubmitUnanswered` or `SubmitRefused`, and `ValueError` for an entry that can never
    be logged (empty, or over `MAX_ENTRY_BYTES` bytes of UTF-8).
    """
    if not all(entry_fits(entry) for entry in entries):
        raise ValueError(f"each entry must be 1..{MAX_ENTRY_BYTES} bytes of UTF-8")
    client = RpcClient(address)
    try:
        queued = 0
        reply = SubmitReply(0, 0)
        for start in range(0, len(entries), MAX_SUBMIT_ENTRIES):
            chunk = tuple(entries[start : start + MAX_SUBMIT_ENTRIES])
            reply = await _submit_chunk(client, address, chunk, timeout_s)
            if reply.error:
                raise SubmitRefused(address, reply, queued)
            queued += reply.queued
        return SubmitReply(queued, reply.pending)
    finally:
        await client.close()


async def _submit_chunk(
    client: RpcClient, address: Address, chunk: tuple[str, ...], timeout_s: float
) -> SubmitReply:
    result = await client.call(LOG_CODEC.encode(SubmitRequest(chunk)), timeout_s=timeout_s)
    if isinstance(result, RpcFailure):
        raise SubmitUnanswered(address, result.reason)
    try:
        reply = LOG_CODEC.decode(result.body)
    except DecodeError as error:
        raise SubmitUnanswered(address, f"unreadable reply: {error}") from None
    if not isinstance(reply, SubmitReply):
        raise SubmitUnanswered(address, "unexpected reply")
    return reply


def read_log(path: Path) -> dict[int, bytes] | None:
    """The externalized log in a node's SQLite file, read-only; None if there is no file.

    Safe while the node runs: SQLite's write-ahead log lets a reader see the last
    committed state without blocking the writer.  Raises `LogReadError`.
    """
    if not path.exists():
        return None
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise LogReadError(f"{path}: cannot open: {error}") from None
    try:
        rows = connection.execute(
            "SELECT key, value FROM records WHERE key >= ? AND key < ?",
            (LOG_KEY_PREFIX, LOG_KEY_PREFIX[:-1] + b"0"),
        ).fetchall()
    except sqlite3.Error as error:
        raise LogReadError(f"{path}: not a synod node store ({error})") from None
    finally:
        connection.close()
    return log_from_records({bytes(key): bytes(value) for key, value in rows})


def read_network_logs(config: NetworkConfig) -> dict[str, dict[int, bytes] | None]:
    """Every node's log by name, from the SQLite files (None: that node never ran)."""
    return {node.name: read_log(config.store_path(node)) for node in config.nodes}


__all__ = [
    "HostFailed",
    "LogNode",
    "LogReadError",
    "NetworkExists",
    "NodeAlreadyRunning",
    "NodeStopped",
    "RestoreFailed",
    "SubmitFailed",
    "SubmitRefused",
    "SubmitUnanswered",
    "create_network",
    "free_ports",
    "read_log",
    "read_network_logs",
    "run_log_node",
    "submit_entries",
]
