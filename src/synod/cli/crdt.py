"""`synod crdt`: BFT-CRDT nodes sharing a log document, a websocket relayer, catch-up.

- ``synod crdt init NAME`` creates the directory NAME with the node's key (``node.key``,
  mode 0600) and its configuration (``node.toml``);
- ``synod crdt run NAME`` runs the node with a console: every line read on standard
  input is a transaction appending that line to the shared log document; every
  transaction applied (typed here or received) is printed on standard output as one
  JSON object per line.  Updates are persisted in ``NAME/node.sqlite`` and the node
  resumes from them; on every (re)connection it announces its heads and catches up
  (reconciliation by heads, `synod.crdt.replica`).  It talks to a relayer over a
  websocket, and/or directly to peers over synod's authenticated TCP transport;
- ``synod crdt relayer`` runs the websocket relayer, which only forwards (it is
  untrusted; ``--tamper P`` makes it drop, reorder, replay and alter frames).

Console commands (a line that starts with ``/``): ``/digest`` prints the document's
digest, ``/history`` the whole log, ``/quit`` stops the node; ``//text`` appends
``/text``.  Logs are JSON lines on standard error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from synod.cli.common import (
    EXIT_FAILED,
    config_errors,
    log_level_option,
    print_json_line,
    read_node_keys,
    read_stdin_lines,
    refuse_to_overwrite,
    run_process,
    write_new_key,
)
from synod.crdt.config import (
    CONFIG_NAME,
    DEFAULT_ANNOUNCE_MS,
    DEFAULT_DOCUMENT,
    KEY_NAME,
    MAX_ANNOUNCE_MS,
    MAX_NETWORK_ID_BYTES,
    MIN_ANNOUNCE_MS,
    NodeConfig,
    PeerEntry,
    is_relay_url,
    load_config,
    parse_address,
    parse_peer,
    render_config,
)

if TYPE_CHECKING:
    import asyncio

    from synod.crdt.replica import Replica
    from synod.crypto import KeyPair
    from synod.runtime.crdt_node import LogNode

MAX_LINE_BYTES = 64 * 1024


def _peer_option(_: Any, __: Any, values: tuple[str, ...]) -> list[PeerEntry]:
    try:
        return [parse_peer(value) for value in values]
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--peer") from None


def _member_option(_: Any, __: Any, values: tuple[str, ...]) -> tuple[str, ...]:
    from synod.crypto import InvalidNodeId, parse_node_id

    for value in values:
        try:
            parse_node_id(value)
        except InvalidNodeId as error:
            raise click.BadParameter(str(error), param_hint="--member") from None
    return values


def _network_option(_: Any, __: Any, value: str) -> str:
    encoded = value.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_NETWORK_ID_BYTES or b"@" in encoded:
        raise click.BadParameter(
            f"at most {MAX_NETWORK_ID_BYTES} bytes without '@'", param_hint="--network-id"
        )
    return value


def _address_option(_: Any, __: Any, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_address(value)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--listen") from None
    return value


def _relay_option(_: Any, __: Any, value: str | None) -> str | None:
    if value is not None and not is_relay_url(value):
        raise click.BadParameter("expected a ws:// or wss:// URL", param_hint="--relay")
    return value


# ---------------------------------------------------------------- commands


@click.group()
def crdt() -> None:
    """BFT-CRDT nodes sharing a log document: init, run, relayer."""


_RELAY = click.option(
    "--relay", default=None, callback=_relay_option, help="Relayer URL (ws://HOST:PORT)."
)
_LISTEN = click.option(
    "--listen",
    default=None,
    callback=_address_option,
    help="HOST:PORT where direct peers connect (synod TCP transport).",
)
_PEER = click.option(
    "--peer",
    "peers",
    multiple=True,
    callback=_peer_option,
    help="A direct peer, [NAME=]ID@HOST:PORT (repeatable).",
)
_LOG_LEVEL = log_level_option()
_NETWORK_ID = click.option(
    "--network-id",
    default="",
    callback=_network_option,
    help="The network's id: signatures made for another network are refused.",
)


@crdt.command("init")
@click.argument("name", type=click.Path(file_okay=False, path_type=Path))
@_RELAY
@_LISTEN
@_PEER
@click.option("--document", default=DEFAULT_DOCUMENT, show_default=True, help="Shared log name.")
@click.option(
    "--announce-ms",
    type=click.IntRange(MIN_ANNOUNCE_MS, MAX_ANNOUNCE_MS),
    default=DEFAULT_ANNOUNCE_MS,
    show_default=True,
    help="How often the node announces its heads (the repair period).",
)
@_NETWORK_ID
@click.option(
    "--member",
    "members",
    multiple=True,
    callback=_member_option,
    help="A node id of the group; with any, only members' updates count (repeatable).",
)
def init(  # noqa: PLR0917 - one parameter per click option
    name: Path,
    relay: str | None,
    listen: str | None,
    peers: list[PeerEntry],
    document: str,
    announce_ms: int,
    network_id: str,
    members: tuple[str, ...],
) -> None:
    """Create the node directory NAME: a new key and NAME/node.toml."""
    from synod.crypto import node_id_text

    config_path = name / CONFIG_NAME
    refuse_to_overwrite(config_path)
    name.mkdir(parents=True, exist_ok=True)
    keys = write_new_key(name / KEY_NAME)
    identity = node_id_text(keys.node_id)
    text = render_config(
        name.name,
        identity,
        document=document,
        announce_interval_ms=announce_ms,
        listen=listen,
        relay=relay,
        peers=peers,
        network_id=network_id,
        members=list(members),
    )
    config_path.write_text(text, encoding="utf-8")
    print_json_line(
        {"event": "initialised", "name": name.name, "id": identity, "config": str(config_path)}
    )


@crdt.command("run")
@click.argument("name", type=click.Path(file_okay=False, exists=True, path_type=Path))
@_RELAY
@_LISTEN
@_PEER
@_LOG_LEVEL
def run(
    name: Path, relay: str | None, listen: str | None, peers: list[PeerEntry], log_level: str
) -> None:
    """Run the node in directory NAME until SIGINT/SIGTERM or /quit.

    Each line on standard input is appended to the shared log; each transaction applied
    is printed as a JSON line.  Options override NAME/node.toml (--peer adds peers).
    """
    import dataclasses

    with config_errors(f"synod crdt init {name}"):
        config = load_config(name)
    config = dataclasses.replace(
        config,
        relay=relay or config.relay,
        listen=parse_address(listen) if listen else config.listen,
        peers=(*config.peers, *peers),
    )
    if config.peers and config.listen is None:
        raise click.UsageError("direct peers need a listen address (--listen or node.listen)")
    if not config.peers and config.relay is None:
        click.echo("warning: no relay and no peers: this node is alone", err=True)
    keys = read_node_keys(
        config.key_file, config.node_id, f"holds another key than node.id in {config.path}"
    )
    run_process(_run_node(config, keys), log_level)


@crdt.command("relayer")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=7400, show_default=True)
@click.option(
    "--tamper",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="For tests: probability of dropping, reordering, replaying and altering each frame.",
)
@click.option(
    "--tamper-seed", type=int, default=None, help="Seed of the tampering (default: random)."
)
@_NETWORK_ID
@click.option(
    "--member",
    "members",
    multiple=True,
    callback=_member_option,
    help="A node id allowed to connect; with any, only these (repeatable).",
)
@_LOG_LEVEL
def relayer(  # noqa: PLR0917 - one parameter per click option
    host: str,
    port: int,
    tamper: float,
    tamper_seed: int | None,
    network_id: str,
    members: tuple[str, ...],
    log_level: str,
) -> None:
    """Run a websocket relayer that forwards frames between nodes (it is not trusted)."""
    import asyncio

    from synod.crypto import parse_node_id
    from synod.runtime.logs import configure_json_logging

    configure_json_logging(log_level.upper())
    allowed = frozenset(bytes(parse_node_id(member)) for member in members) or None
    try:
        asyncio.run(
            _run_relayer(host, port, tamper, tamper_seed, network_id.encode(), allowed)
        )
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error}") from None


async def _run_relayer(  # noqa: PLR0917 - the relayer's options
    host: str,
    port: int,
    tamper: float,
    tamper_seed: int | None,
    network: bytes,
    members: frozenset[bytes] | None,
) -> None:
    import asyncio
    import random
    import signal

    from synod.runtime.relay import RelayConfig, Relayer, TamperPolicy

    policy = TamperPolicy(tamper, random.Random(tamper_seed)) if tamper > 0 else None
    server = Relayer(RelayConfig(network=network, members=members), tamper=policy)
    bound = await server.start(host, port)
    print_json_line({"event": "ready", "address": f"ws://{bound[0]}:{bound[1]}", "tamper": tamper})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    await stop.wait()
    await server.close()
    print_json_line(
        {
            "event": "stopped",
            "forwarded": server.forwarded,
            "tampered": policy.counts if policy is not None else {},
        }
    )


# ---------------------------------------------------------------- the node


async def _run_node(config: NodeConfig, keys: KeyPair) -> int:
    import asyncio
    import logging
    import signal

    from synod.crypto import node_id_text
    from synod.runtime.crdt_node import LogNode
    from synod.runtime.lock import NodeAlreadyRunning

    log = logging.getLogger("synod.cli.crdt")
    try:
        node = LogNode.from_config(config, keys, on_event=lambda event: _show(event, log))
    except NodeAlreadyRunning as error:
        raise click.ClickException(str(error)) from None
    await node.start()
    print_json_line(
        {
            "event": "ready",
            "name": config.name,
            "id": node_id_text(keys.node_id),
            "listen": f"{node.address[0]}:{node.address[1]}" if node.address else None,
            "relay": config.relay,
            "peers": len(config.peers),
            "restored_updates": node.restored_updates,
        }
    )
    quit_requested = asyncio.Event()
    console = asyncio.create_task(_read_console(node, quit_requested, log), name="console")
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, signalled.set)
    ended = asyncio.ensure_future(node.wait())
    waiters = [
        asyncio.ensure_future(signalled.wait()),
        asyncio.ensure_future(quit_requested.wait()),
        ended,
    ]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    failed = ended.done() and not ended.cancelled() and ended.exception() is not None
    if failed:
        log.error("node failed", extra={"reason": repr(ended.exception())})
    for task in (*waiters, console):
        task.cancel()
    await asyncio.gather(*waiters, console, return_exceptions=True)
    await node.stop()
    return EXIT_FAILED if failed else 0


def _show(event: object, log: Any) -> None:
    """Print what the node did: transactions, equivocations, refusals, connections."""
    from synod.crdt.log import EntryAppended
    from synod.crdt.replica import EquivocationDetected, UpdateRejected
    from synod.crypto import node_id_text
    from synod.runtime.crdt_node import AppendRefused, RelayConnected

    if isinstance(event, EntryAppended):
        print_json_line(
            {
                "event": "transaction",
                "local": event.local,
                "update": event.update_id.hex(),
                "author": node_id_text(event.author),
                "name": event.name,
                "text": event.text,
            }
        )
    elif isinstance(event, UpdateRejected):
        log.warning(
            "update rejected", extra={"update": event.update_id.hex()[:16], "reason": event.reason}
        )
    elif isinstance(event, EquivocationDetected):
        author = node_id_text(event.author)
        print_json_line({"event": "equivocation", "author": author, "sequence": event.sequence})
    elif isinstance(event, AppendRefused):
        print_json_line({"event": "error", "reason": event.reason})
    elif isinstance(event, RelayConnected):
        print_json_line({"event": "connected", "relay": event.url})


def _run_command(name: str, replica: Replica, quit_requested: asyncio.Event) -> None:
    """Run a console command, in order with the lines typed before it."""
    import dataclasses

    from synod.crdt.log import entries, log_digest

    if name == "quit":
        quit_requested.set()
    elif name == "digest":
        print_json_line({"event": "digest", **dataclasses.asdict(log_digest(replica))})
    elif name == "history":
        print_json_line({"event": "history", "entries": entries(replica)})
    else:
        print_json_line({"event": "error", "reason": f"unknown command /{name}"})


async def _read_console(node: LogNode, quit_requested: asyncio.Event, log: Any) -> None:
    """Turn each line of standard input into an append or a command."""

    async def console_line(line: bytes) -> None:
        _console_line(node, quit_requested, line)

    await read_stdin_lines(
        console_line,
        max_bytes=MAX_LINE_BYTES,
        log=log,
        too_long="line longer than %d bytes ignored",
    )


def _console_line(node: LogNode, quit_requested: asyncio.Event, raw: bytes) -> None:
    text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
    if not text:
        return
    if text.startswith("/") and not text.startswith("//"):
        name = text[1:].strip()
        node.inspect(lambda replica: _run_command(name, replica, quit_requested))
        return
    node.append(text[1:] if text.startswith("//") else text)
