"""`synod rbc`: a local network of Bracha reliable-broadcast nodes over real TCP.

- ``synod rbc init DIR --nodes 4`` writes one key file per node and ``DIR/network.toml``;
- ``synod rbc run DIR NODE`` runs one node (NODE is its name, ``node-0``, or its index);
  every line read on its standard input is proposed as a payload (UTF-8 bytes of the
  line, without the newline), and every delivery is printed on standard output as one
  JSON object per line.  Logs are JSON lines on standard error.  SIGINT or SIGTERM stops
  the node cleanly (exit 0); the node's records are in ``DIR/<name>.sqlite`` and it
  resumes from them when started again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from synod.cli.common import (
    ConfigError,
    NodeEntry,
    find_named,
    lock_exclusively,
    log_level_option,
    node_entry,
    parse_ports,
    print_json_line,
    read_node_keys,
    read_stdin_lines,
    read_toml,
    refuse_to_overwrite,
    render_node_tables,
    run_process,
    serve_until_stopped,
    write_new_key,
)

if TYPE_CHECKING:
    from synod.crypto import KeyPair, NodeId

CONFIG_NAME = "network.toml"
DEFAULT_BASE_PORT = 7100
DEFAULT_RETRANSMIT_MS = 300


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    path: Path
    retransmit_ms: int
    nodes: tuple[NodeEntry, ...]

    def find(self, selector: str) -> NodeEntry:
        return find_named(self.path, self.nodes, selector)


# ---------------------------------------------------------------- configuration


def load_config(directory: Path) -> NetworkConfig:
    """Read and check ``DIR/network.toml``; raise `ConfigError` naming what is wrong."""
    path = directory / CONFIG_NAME
    document = read_toml(path, f"synod rbc init {directory}")
    network = document.get("network", {})
    if not isinstance(network, dict):
        raise ConfigError(path, "network", "expected a table")
    retransmit_ms = network.get("retransmit_ms", DEFAULT_RETRANSMIT_MS)
    if not isinstance(retransmit_ms, int) or isinstance(retransmit_ms, bool) or retransmit_ms < 1:
        raise ConfigError(path, "network.retransmit_ms", "expected a positive integer")
    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError(path, "nodes", "expected a non-empty array of tables [[nodes]]")
    nodes = tuple(node_entry(path, f"nodes[{index}]", raw) for index, raw in enumerate(raw_nodes))
    _check_distinct(path, nodes)
    return NetworkConfig(path, retransmit_ms, nodes)


def _check_distinct(path: Path, nodes: tuple[NodeEntry, ...]) -> None:
    for attribute in ("name", "node_id"):
        seen: set[object] = set()
        for index, node in enumerate(nodes):
            value = getattr(node, attribute)
            if value in seen:
                key = "name" if attribute == "name" else "id"
                raise ConfigError(
                    path, f"nodes[{index}].{key}", "expected a value unique among nodes"
                )
            seen.add(value)
    addresses: set[tuple[str, int]] = set()
    for index, node in enumerate(nodes):
        if (node.host, node.port) in addresses:
            raise ConfigError(
                path, f"nodes[{index}].port", "expected an address unique among nodes"
            )
        addresses.add((node.host, node.port))


def render_config(nodes: list[tuple[str, str, str, int, str]], retransmit_ms: int) -> str:
    lines = [
        "# A synod reliable-broadcast network (written by `synod rbc init`).",
        "[network]",
        f"retransmit_ms = {retransmit_ms}",
    ]
    lines += render_node_tables("nodes", nodes)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- commands


@click.group()
def rbc() -> None:
    """Reliable broadcast (Bracha) nodes on a local network: init, run."""


@rbc.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--nodes", "count", type=click.IntRange(1, 100), default=4, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every node uses.")
@click.option(
    "--base-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_BASE_PORT,
    show_default=True,
    help="Node i listens on base-port + i.",
)
@click.option("--ports", default=None, help="Explicit comma-separated ports, one per node.")
@click.option(
    "--retransmit-ms", type=click.IntRange(1), default=DEFAULT_RETRANSMIT_MS, show_default=True
)
def init(  # noqa: PLR0917 - one parameter per click option
    directory: Path, count: int, host: str, base_port: int, ports: str | None, retransmit_ms: int
) -> None:
    """Write node keys and DIRECTORY/network.toml for a local network."""
    from synod.crypto import node_id_text

    port_list = parse_ports(ports, count, base_port)
    config_path = directory / CONFIG_NAME
    refuse_to_overwrite(config_path)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, port in enumerate(port_list):
        name = f"node-{index}"
        pair = write_new_key(directory / f"{name}.key")
        entries.append((name, node_id_text(pair.node_id), host, port, f"{name}.key"))
    config_path.write_text(render_config(entries, retransmit_ms), encoding="utf-8")
    for name, node_id, node_host, port, _ in entries:
        click.echo(f"{name}  {node_id}  {node_host}:{port}")
    click.echo(f"wrote {config_path}", err=True)


@rbc.command("run")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("node")
@log_level_option()
def run(directory: Path, node: str, log_level: str) -> None:
    """Run NODE of the network in DIRECTORY until SIGINT/SIGTERM.

    Each line on standard input is proposed; each delivery is printed as a JSON line.
    """
    config = load_config(directory)
    entry = config.find(node)
    keys = read_node_keys(
        entry.key_file,
        entry.node_id,
        f"holds the key of another node than {entry.name}'s id in {config.path}",
    )
    run_process(_run_node(config, entry, keys), log_level)


async def _run_node(config: NetworkConfig, entry: NodeEntry, keys: KeyPair) -> int:
    import asyncio
    import logging

    from synod.crypto import node_id_text
    from synod.rbc import CODEC, Delivered, RbcCore
    from synod.rbc.core import WINDOW
    from synod.runtime.host import NodeHost
    from synod.runtime.storage import SqliteStorage

    log = logging.getLogger("synod.cli.rbc")
    lock = lock_exclusively(config.path.parent / f"{entry.name}.lock")
    storage = SqliteStorage.open(config.path.parent / f"{entry.name}.sqlite")
    members = [node.node_id for node in config.nodes]
    core = RbcCore(keys, members, storage.load(), retransmit_ms=config.retransmit_ms)
    names = {node.node_id: node.name for node in config.nodes}
    flow = _ProposalFlow(keys.node_id, limit=WINDOW // 2)

    def on_event(event: object) -> None:
        if isinstance(event, Delivered):
            flow.delivered(event.origin)
        _print_event(event, names, log)

    host = NodeHost(
        core,
        keys=keys,
        codec=CODEC,
        storage=storage,
        peers={n.node_id: (n.host, n.port) for n in config.nodes if n.node_id != keys.node_id},
        on_event=on_event,
    )
    flow.host = host
    await host.start(listen=(entry.host, entry.port))
    ready = {
        "event": "ready",
        "node": entry.name,
        "id": node_id_text(keys.node_id),
        "address": f"{entry.host}:{entry.port}",
        "restored_deliveries": core.delivered_count,
    }
    proposals = asyncio.create_task(_propose_lines(flow, log))
    return await serve_until_stopped(host, ready, lock=lock, log=log, background=[proposals])


class _ProposalFlow:
    """Keeps at most `limit` of this node's own broadcasts undelivered at once.

    `RbcCore` refuses instances more than its window ahead of an origin's lowest
    undelivered one, so an unpaced burst of proposals larger than the window would stall;
    standard input is read only as fast as this node's own broadcasts complete.
    """

    def __init__(self, node_id: NodeId, *, limit: int) -> None:
        import asyncio

        self.node_id = node_id
        self.limit = limit
        self.host: Any = None
        self.in_flight = 0
        self._room = asyncio.Event()
        self._room.set()

    async def submit(self, payload: bytes) -> None:
        while self.in_flight >= self.limit:
            self._room.clear()
            await self._room.wait()
        self.in_flight += 1
        with contextlib.suppress(RuntimeError):  # the node is stopping
            self.host.propose(payload)

    def delivered(self, origin: bytes) -> None:
        if origin == self.node_id and self.in_flight > 0:
            self.in_flight -= 1
            self._room.set()


async def _propose_lines(flow: _ProposalFlow, log: Any) -> None:
    """Propose each line of standard input (without its newline); empty lines are skipped."""
    from synod.rbc.core import MAX_PAYLOAD_BYTES

    async def propose(line: bytes) -> None:
        await _propose_line(flow, log, line, MAX_PAYLOAD_BYTES)

    await read_stdin_lines(
        propose,
        max_bytes=MAX_PAYLOAD_BYTES,
        log=log,
        too_long="proposal longer than %d bytes ignored",
    )


async def _propose_line(flow: _ProposalFlow, log: Any, line: bytes, max_bytes: int) -> None:
    payload = line.rstrip(b"\r\n")
    if not payload:
        return
    if len(payload) > max_bytes:
        log.warning("proposal too large; ignored", extra={"bytes": len(payload)})
        return
    await flow.submit(payload)


def _print_event(event: Any, names: dict[Any, str], log: Any) -> None:
    from synod.crypto import node_id_text
    from synod.rbc import Delivered, Rejected

    if isinstance(event, Delivered):
        line: dict[str, Any] = {
            "event": "delivered",
            "origin": node_id_text(event.origin),
            "origin_name": names.get(event.origin),
            "sequence": event.sequence,
            "payload_hex": event.payload.hex(),
        }
        with contextlib.suppress(UnicodeDecodeError):
            line["payload"] = event.payload.decode("utf-8")
        print_json_line(line)
    elif isinstance(event, Rejected):
        log.warning(
            "message rejected", extra={"peer": names.get(event.sender), "reason": event.reason}
        )
