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
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from synod.crypto import KeyPair, NodeId

CONFIG_NAME = "network.toml"
DEFAULT_BASE_PORT = 7100
DEFAULT_RETRANSMIT_MS = 300

EXIT_FAILED = 1
EXIT_CONFIG = 2


class ConfigError(click.ClickException):
    """A configuration problem: the message names the file, the key and what was expected."""

    exit_code = EXIT_CONFIG

    def __init__(self, path: Path, key: str, expected: str) -> None:
        super().__init__(f"{path}: {key}: {expected}")


@dataclass(frozen=True, slots=True)
class NodeEntry:
    name: str
    node_id: NodeId
    host: str
    port: int
    key_file: Path


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    path: Path
    retransmit_ms: int
    nodes: tuple[NodeEntry, ...]

    def find(self, selector: str) -> NodeEntry:
        for index, node in enumerate(self.nodes):
            if selector in (node.name, str(index)):
                return node
        names = ", ".join(node.name for node in self.nodes)
        raise click.ClickException(f"{self.path}: no node {selector!r} (nodes: {names})")


# ---------------------------------------------------------------- configuration


def load_config(directory: Path) -> NetworkConfig:
    """Read and check ``DIR/network.toml``; raise `ConfigError` naming what is wrong."""
    import tomllib

    path = directory / CONFIG_NAME
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise click.ClickException(
            f"{path}: no such file (create one with `synod rbc init {directory}`)"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise click.ClickException(f"{path}: not valid TOML: {error}") from None
    network = document.get("network", {})
    if not isinstance(network, dict):
        raise ConfigError(path, "network", "expected a table")
    retransmit_ms = network.get("retransmit_ms", DEFAULT_RETRANSMIT_MS)
    if not isinstance(retransmit_ms, int) or isinstance(retransmit_ms, bool) or retransmit_ms < 1:
        raise ConfigError(path, "network.retransmit_ms", "expected a positive integer")
    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError(path, "nodes", "expected a non-empty array of tables [[nodes]]")
    nodes = tuple(_node_entry(path, index, raw) for index, raw in enumerate(raw_nodes))
    _check_distinct(path, nodes)
    return NetworkConfig(path, retransmit_ms, nodes)


def _node_entry(path: Path, index: int, raw: object) -> NodeEntry:
    from synod.crypto import InvalidNodeId, parse_node_id

    prefix = f"nodes[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(path, prefix, "expected a table")
    name = _string(path, raw, prefix, "name")
    text = _string(path, raw, prefix, "id")
    try:
        node_id = parse_node_id(text)
    except InvalidNodeId as error:
        raise ConfigError(path, f"{prefix}.id", f"expected a node id ({error})") from None
    host = _string(path, raw, prefix, "host")
    port = raw.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(path, f"{prefix}.port", f"expected an integer 1..65535, got {port!r}")
    key_file = Path(_string(path, raw, prefix, "key_file"))
    if not key_file.is_absolute():
        key_file = path.parent / key_file
    return NodeEntry(name, node_id, host, port, key_file)


def _string(path: Path, table: dict[str, Any], prefix: str, key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"{prefix}.{key}", f"expected a non-empty string, got {value!r}")
    return value


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
    for name, node_id, host, port, key_file in nodes:
        lines += [
            "",
            "[[nodes]]",
            f"name = {json.dumps(name)}",
            f"id = {json.dumps(node_id)}",
            f"host = {json.dumps(host)}",
            f"port = {port}",
            f"key_file = {json.dumps(key_file)}",
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- commands


@click.group()
def rbc() -> None:
    """Reliable broadcast (Bracha) nodes on a local network: init, run."""


def _parse_ports(text: str | None, count: int, base_port: int) -> list[int]:
    if text is None:
        return [base_port + index for index in range(count)]
    try:
        ports = [int(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter(
            "expected comma-separated integers", param_hint="--ports"
        ) from None
    if len(ports) != count or not all(1 <= port <= 65535 for port in ports):
        raise click.BadParameter(f"expected {count} ports in 1..65535", param_hint="--ports")
    return ports


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
    from synod.crypto import KeyFileError, KeyPair, node_id_text, write_key_file

    port_list = _parse_ports(ports, count, base_port)
    config_path = directory / CONFIG_NAME
    if config_path.exists():
        raise click.ClickException(f"{config_path}: already exists; refusing to overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, port in enumerate(port_list):
        name = f"node-{index}"
        pair = KeyPair.generate()
        try:
            write_key_file(directory / f"{name}.key", pair)
        except KeyFileError as error:
            raise click.ClickException(str(error)) from None
        entries.append((name, node_id_text(pair.node_id), host, port, f"{name}.key"))
    config_path.write_text(render_config(entries, retransmit_ms), encoding="utf-8")
    for name, node_id, node_host, port, _ in entries:
        click.echo(f"{name}  {node_id}  {node_host}:{port}")
    click.echo(f"wrote {config_path}", err=True)


@rbc.command("run")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("node")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def run(directory: Path, node: str, log_level: str) -> None:
    """Run NODE of the network in DIRECTORY until SIGINT/SIGTERM.

    Each line on standard input is proposed; each delivery is printed as a JSON line.
    """
    import asyncio

    from synod.crypto import KeyFileError, read_key_file
    from synod.runtime.logs import configure_json_logging
    from synod.runtime.storage import StorageError

    config = load_config(directory)
    entry = config.find(node)
    try:
        keys = read_key_file(entry.key_file)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    if keys.node_id != entry.node_id:
        raise click.ClickException(
            f"{entry.key_file}: holds the key of another node than {entry.name}'s id in "
            f"{config.path}"
        )
    configure_json_logging(log_level.upper())
    try:
        code = asyncio.run(_run_node(config, entry, keys))
    except StorageError as error:
        raise click.ClickException(str(error)) from None
    sys.exit(code)


async def _run_node(config: NetworkConfig, entry: NodeEntry, keys: KeyPair) -> int:
    import asyncio
    import logging

    from synod.crypto import node_id_text
    from synod.rbc import CODEC, Delivered, RbcCore
    from synod.rbc.core import WINDOW
    from synod.runtime.host import HostFailed, NodeHost
    from synod.runtime.storage import SqliteStorage

    log = logging.getLogger("synod.cli.rbc")
    lock = _lock_node(config.path.parent / f"{entry.name}.lock")
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
        "restored_deliveries": len(core.delivered_log),
    }
    proposals = asyncio.create_task(_propose_lines(flow, log))
    try:
        await host.serve(on_ready=lambda: _print_line(ready))
    except HostFailed as error:
        log.error("node failed", extra={"reason": str(error)})
        return EXIT_FAILED
    finally:
        proposals.cancel()
        await asyncio.gather(proposals, return_exceptions=True)
        lock.close()
    return 0


def _lock_node(path: Path) -> Any:
    """Hold an exclusive lock for the life of the process: one process per node."""
    import fcntl

    handle = path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise click.ClickException(f"{path}: this node is already running") from None
    return handle


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
    """Propose each line of standard input (without its newline); empty lines are skipped.

    Pipes, sockets and terminals are read by the event loop; anything else (a regular
    file, ``/dev/null``, which epoll refuses) is read on a thread, which cannot block at
    exit since such input always reaches its end.
    """
    import asyncio
    import os
    import stat

    from synod.rbc.core import MAX_PAYLOAD_BYTES

    mode = os.fstat(sys.stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
        for line in await asyncio.to_thread(sys.stdin.buffer.readlines):
            await _propose_line(flow, log, line, MAX_PAYLOAD_BYTES)
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MAX_PAYLOAD_BYTES + 2)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer
    )
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                log.warning("proposal longer than %d bytes ignored", MAX_PAYLOAD_BYTES)
                continue
            if not line:
                return
            await _propose_line(flow, log, line, MAX_PAYLOAD_BYTES)
    finally:
        transport.close()


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
        _print_line(line)
    elif isinstance(event, Rejected):
        log.warning(
            "message rejected", extra={"peer": names.get(event.sender), "reason": event.reason}
        )


def _print_line(entry: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(entry, ensure_ascii=False) + "\n")
    sys.stdout.flush()
