"""`synod rbc`: a local network of Bracha reliable-broadcast nodes over real TCP.

- ``synod rbc init DIR --nodes 4`` writes one key file per node and ``DIR/network.toml``;
- ``synod rbc run DIR NODE`` runs one node (NODE is its name, ``node-0``, or its index);
  every line read on its standard input is proposed as a payload (UTF-8 bytes of the
  line, without the newline), and every delivery is printed on standard output as one
  JSON object per line.  Logs are JSON lines on standard error.  SIGINT or SIGTERM stops
  the node cleanly (exit 0); the node's records are in ``DIR/<name>.sqlite`` and it
  resumes from them when started again.

The commands parse options, read standard input, print and choose exit statuses; the
network file is `synod.rbc.network` and the node runner `synod.runtime.rbc_node`.
"""

from __future__ import annotations

import contextlib
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from synod.cli.common import (
    EXIT_FAILED,
    already_running,
    check_host,
    config_errors,
    log_level_option,
    parse_ports,
    print_json_line,
    read_node_keys,
    read_stdin_lines,
    refuse_to_overwrite,
    run_process,
    watch_peers,
)
from synod.cli.supervise import add_supervision_commands
from synod.rbc.network import (
    CONFIG_NAME,
    DEFAULT_BASE_PORT,
    DEFAULT_RETRANSMIT_MS,
    NetworkConfig,
    load_network,
)

if TYPE_CHECKING:
    from synod.config import NodeEntry
    from synod.crypto import KeyPair
    from synod.rbc import Delivered, Rejected
    from synod.runtime.rbc_node import RbcNode


def load_config(directory: Path) -> NetworkConfig:
    """``DIRECTORY/network.toml`` for a command: its problems become user errors
    (exit status 2 for a wrong value, 1 for a missing file or one that is not TOML)."""
    with config_errors(f"synod rbc init {directory}"):
        return load_network(directory)


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
    "--retransmit-ms",
    type=click.IntRange(1, 3_600_000),  # synod.rbc.network.MAX_RETRANSMIT_MS
    default=DEFAULT_RETRANSMIT_MS,
    show_default=True,
)
@click.option(
    "--network",
    "network_name",
    default="",
    help="A name for the network; nodes of another network are refused at the handshake.",
)
def init(  # noqa: PLR0917 - one parameter per click option
    directory: Path,
    count: int,
    host: str,
    base_port: int,
    ports: str | None,
    retransmit_ms: int,
    network_name: str,
) -> None:
    """Write node keys and DIRECTORY/network.toml for a local network."""
    from synod.crypto import KeyFileError
    from synod.runtime.rbc_node import NetworkExists, create_network

    port_list = parse_ports(ports, count, base_port)
    check_host(host)
    _check_network_name(network_name)
    refuse_to_overwrite(directory / CONFIG_NAME)
    try:
        with config_errors():
            config = create_network(
                directory,
                nodes=count,
                host=host,
                ports=port_list,
                retransmit_ms=retransmit_ms,
                network=network_name,
            )
    except (KeyFileError, NetworkExists) as error:
        raise click.ClickException(str(error)) from None
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--ports") from None
    except OSError as error:
        raise click.ClickException(f"{directory}: cannot create: {error.strerror}") from None
    print_network(config)


def _check_network_name(name: str) -> None:
    """A usage error, before any file is written, for a name network.toml cannot hold
    (the loader's rule: at most 64 bytes of UTF-8, no '@'; undecodable bytes neither)."""
    from synod.config import MAX_NETWORK_ID_BYTES

    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        encoded = b"@"
    if len(encoded) > MAX_NETWORK_ID_BYTES or b"@" in encoded:
        raise click.BadParameter(
            f"expected at most {MAX_NETWORK_ID_BYTES} bytes of UTF-8 without '@'",
            param_hint="--network",
        )


def print_network(config: NetworkConfig) -> None:
    """One line per node (name, id, address) on stdout; the file written on stderr."""
    from synod.crypto import node_id_text

    for node in config.nodes:
        # one space each: a 56-character id and a 5-digit port still fit 80 columns
        click.echo(f"{node.name} {node_id_text(node.node_id)} {node.host}:{node.port}")
    click.echo(f"wrote {config.path}", err=True)


@rbc.command("run")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("node")
@click.option(
    "--status-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also answer status requests (`synod rbc status`) on this port of the node's "
    "host (0: any free port, shown in the ready line).",
)
@log_level_option()
def run(directory: Path, node: str, status_port: int | None, log_level: str) -> None:
    """Run NODE of the network in DIRECTORY until SIGINT/SIGTERM.

    Each line on standard input is proposed; each delivery is printed as a JSON line.
    """
    config = load_config(directory)
    with config_errors():
        entry = config.find(node)
    keys = read_node_keys(
        entry.key_file,
        entry.node_id,
        f"holds the key of another node than {entry.name}'s id in {config.path}",
    )
    status_address = (entry.host, status_port) if status_port is not None else None
    run_process(
        _run_node(config, entry, keys, status_address),
        log_level,
        listen_failure=f"{entry.name}: cannot listen",
    )


async def _run_node(
    config: NetworkConfig,
    entry: NodeEntry,
    keys: KeyPair,
    status_address: tuple[str, int] | None = None,
) -> int:
    import asyncio
    import logging

    from synod.runtime.rbc_node import HostFailed, NodeAlreadyRunning, RbcNode, RestoreFailed

    log = logging.getLogger("synod.cli.rbc")
    names = {node.node_id: node.name for node in config.nodes}
    node = RbcNode(
        config,
        entry,
        keys,
        on_delivered=partial(_print_delivered, names),
        on_rejected=partial(_log_rejected, names, log),
        status_address=status_address,
    )
    try:
        await node.start()
    except NodeAlreadyRunning as error:
        raise already_running(error) from None
    except RestoreFailed as error:
        raise click.ClickException(str(error)) from None
    proposals = asyncio.create_task(_propose_lines(node, log))
    try:
        await node.serve(on_ready=partial(_ready, log))
    except HostFailed as error:
        log.error("node failed", extra={"reason": str(error)})
        return EXIT_FAILED
    finally:
        proposals.cancel()
        await asyncio.gather(proposals, return_exceptions=True)
    return 0


def _ready(log: Any, node: RbcNode) -> None:
    _print_ready(node)

    def links() -> tuple[int, int]:
        status = node.status()
        return status.peers_connected, status.peers

    directory = node.config.path.parent
    hint = f"are the other nodes running? `synod rbc up {directory}` starts them all"
    watch_peers(links, log, hint)


def _print_ready(node: RbcNode) -> None:
    from synod.crypto import node_id_text

    ready: dict[str, Any] = {
        "event": "ready",
        "node": node.entry.name,
        "id": node_id_text(node.keys.node_id),
        "address": f"{node.entry.host}:{node.entry.port}",
        "restored_deliveries": node.restored_deliveries,
    }
    if node.bound_status_address is not None:
        host, port = node.bound_status_address
        ready["status_address"] = f"{host}:{port}"
    print_json_line(ready)


async def _propose_lines(node: RbcNode, log: Any) -> None:
    """Propose each line of standard input (without its newline); empty lines are skipped."""
    from synod.rbc.core import MAX_PAYLOAD_BYTES

    async def propose(line: bytes) -> None:
        await _propose_line(node, log, line, MAX_PAYLOAD_BYTES)

    await read_stdin_lines(
        propose,
        max_bytes=MAX_PAYLOAD_BYTES,
        log=log,
        too_long="proposal longer than %d bytes ignored",
    )


async def _propose_line(node: RbcNode, log: Any, line: bytes, max_bytes: int) -> None:
    from synod.runtime.rbc_node import NodeStopped

    payload = line.rstrip(b"\r\n")
    if not payload:
        return
    if len(payload) > max_bytes:
        log.warning("proposal too large; ignored", extra={"bytes": len(payload)})
        return
    with contextlib.suppress(NodeStopped):  # the node is stopping
        await node.broadcast(payload)


def _print_delivered(names: dict[Any, str], event: Delivered) -> None:
    from synod.crypto import node_id_text

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


def _log_rejected(names: dict[Any, str], log: Any, event: Rejected) -> None:
    log.warning("message rejected", extra={"peer": names.get(event.sender), "reason": event.reason})


def _plan(directory: Path) -> Any:
    from synod.runtime.supervisor import plan_rbc

    return plan_rbc(directory)


def _request_ports(directory: Path) -> dict[str, tuple[str, int]]:
    from synod.runtime.supervisor import request_ports_rbc

    return request_ports_rbc(directory)


add_supervision_commands(rbc, _plan, "rbc", request_ports=_request_ports)
