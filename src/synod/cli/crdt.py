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
  untrusted; ``--tamper P`` makes it drop, reorder, replay and alter frames);
- ``synod crdt init-network DIR`` makes node directories ``DIR/node-I`` on one relayer,
  ``synod crdt up|status|logs|down DIR`` runs that network in the background (each node
  with a control socket, `synod.runtime.crdt_node.ControlServer`), and ``synod crdt
  submit DIR NODE LINE...`` appends through a running node's socket.

Console commands (a line that starts with ``/``): ``/digest`` prints the document's
digest, ``/history`` the whole log, ``/quit`` stops the node; ``//text`` appends
``/text``.  Logs are JSON lines on standard error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from synod.cli.common import (
    EXIT_FAILED,
    SECONDS,
    FiniteFloatRange,
    already_running,
    config_errors,
    log_level_option,
    notice_if_slow,
    print_json_line,
    read_node_keys,
    read_stdin_lines,
    refuse_to_overwrite,
    run_process,
    write_new_key,
)
from synod.cli.supervise import add_supervision_commands
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
    from synod.runtime.supervisor import Service

MAX_LINE_BYTES = 64 * 1024
MAX_NETWORK_NODES = 64
"""Nodes `init-network` makes: a local network, each node one process of this machine."""
CONTROL_NAME = "control.sock"
"""The control socket of a node started by `synod crdt up`, in its directory."""


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
    try:
        encoded = value.encode()
    except UnicodeEncodeError:  # undecodable bytes of the argument
        raise click.BadParameter("not valid UTF-8 text", param_hint="--network-id") from None
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
        raise click.BadParameter(
            "expected a ws:// or wss:// URL with a host (and a port 1..65535)", param_hint="--relay"
        )
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


_JSON = click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")


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
@_JSON
def init(  # noqa: PLR0917 - one parameter per click option
    name: Path,
    relay: str | None,
    listen: str | None,
    peers: list[PeerEntry],
    document: str,
    announce_ms: int,
    network_id: str,
    members: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create the node directory NAME: a new key and NAME/node.toml."""
    refuse_to_overwrite(name / CONFIG_NAME)
    settings = _NodeSettings(relay, listen, peers, document, announce_ms, network_id, members)
    _check_settings(name, settings)
    name.mkdir(parents=True, exist_ok=True)
    keys = write_new_key(name / KEY_NAME)
    _print_nodes([_write_config(name, keys, settings)], as_json=as_json)


def _check_settings(name: Path, settings: _NodeSettings) -> None:
    """Refuse, before any file is written, what `synod crdt run` would refuse to read
    back from NAME/node.toml."""
    if name.name in {"", ".."}:
        raise click.BadParameter("must end in a directory name", param_hint="'NAME'")
    if not settings.document:
        raise click.BadParameter("expected a non-empty name", param_hint="--document")
    try:
        _render(name, "N", settings)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


@dataclass(frozen=True, slots=True)
class _NodeSettings:
    relay: str | None
    listen: str | None
    peers: list[PeerEntry]
    document: str
    announce_ms: int
    network_id: str
    members: tuple[str, ...]


def _write_config(name: Path, keys: KeyPair, settings: _NodeSettings) -> dict[str, str]:
    """Write NAME/node.toml for `keys`; what `init` prints of it."""
    from synod.crypto import node_id_text

    identity = node_id_text(keys.node_id)
    config_path = name / CONFIG_NAME
    config_path.write_text(_render(name, identity, settings), encoding="utf-8")
    reaches = [f"relay {settings.relay}"] if settings.relay else []
    reaches += [f"listen {settings.listen}"] if settings.listen else []
    where = ", ".join(reaches) or "nothing: alone"
    return {"name": name.name, "id": identity, "config": str(config_path), "reaches": where}


def _render(name: Path, identity: str, settings: _NodeSettings) -> str:
    return render_config(
        name.name,
        identity,
        document=settings.document,
        announce_interval_ms=settings.announce_ms,
        listen=settings.listen,
        relay=settings.relay,
        peers=settings.peers,
        network_id=settings.network_id,
        members=list(settings.members),
    )


def _print_nodes(nodes: list[dict[str, str]], *, as_json: bool) -> None:
    """One line per node: a table (name and id: with the 56-character id, an address
    would not fit 80 columns), what each reaches on stderr; or JSON lines."""
    for node in nodes:
        if as_json:
            print_json_line({"event": "initialised", **node})
        else:
            click.echo(f"{node['name']}  {node['id']}")
    if not as_json:
        for node in nodes:
            click.echo(f"wrote {node['config']} (reaches: {node['reaches']})", err=True)


@crdt.command("init-network")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--nodes", "count", type=click.IntRange(1, MAX_NETWORK_NODES), default=3,
              show_default=True, help="How many nodes (node-0, node-1, ...).")
@click.option("--relay-port", type=click.IntRange(0, 65535), default=0,
              help="The relayer's port on 127.0.0.1 (default: a free one now).")
@click.option(
    "--announce-ms",
    type=click.IntRange(MIN_ANNOUNCE_MS, MAX_ANNOUNCE_MS),
    default=DEFAULT_ANNOUNCE_MS,
    show_default=True,
    help="How often each node announces its heads (the repair period).",
)
@_NETWORK_ID
@_JSON
def init_network(  # noqa: PLR0917 - one parameter per click option
    directory: Path,
    count: int,
    relay_port: int,
    announce_ms: int,
    network_id: str,
    as_json: bool,
) -> None:
    """Create a local network in DIRECTORY for `synod crdt up`: node directories
    DIRECTORY/node-I that talk through one relayer on 127.0.0.1, each node a member of
    the group (updates by other keys are refused)."""
    from synod.crypto import node_id_text
    from synod.runtime.nodes import free_ports

    names = [directory / f"node-{index}" for index in range(count)]
    for name in names:
        # every file checked before any is written: a refusal half way used to leave the
        # first nodes' keys, which refused the next try in turn
        refuse_to_overwrite(name / CONFIG_NAME)
        refuse_to_overwrite(name / KEY_NAME)
    port = relay_port or free_ports("127.0.0.1", 1)[0]
    written = []
    for name in names:
        name.mkdir(parents=True, exist_ok=True)
        written.append(write_new_key(name / KEY_NAME))
    members = tuple(node_id_text(keys.node_id) for keys in written)
    settings = _NodeSettings(
        f"ws://127.0.0.1:{port}", None, [], DEFAULT_DOCUMENT, announce_ms, network_id, members
    )
    _print_nodes(
        [_write_config(name, keys, settings) for name, keys in zip(names, written, strict=True)],
        as_json=as_json,
    )
    if not as_json:
        click.echo(f"`synod crdt up {directory}` starts the relayer and the nodes", err=True)


@crdt.command("run")
@click.argument("name", type=click.Path(file_okay=False, exists=True, path_type=Path))
@_RELAY
@_LISTEN
@_PEER
@click.option(
    "--control",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A Unix socket (mode 0600) where `synod crdt submit` and `status` reach the node.",
)
@_LOG_LEVEL
def run(  # noqa: PLR0917 - one parameter per click option
    name: Path,
    relay: str | None,
    listen: str | None,
    peers: list[PeerEntry],
    control: Path | None,
    log_level: str,
) -> None:
    """Run the node in directory NAME until SIGINT/SIGTERM or /quit.

    Each line on standard input is appended to the shared log; each transaction applied
    is printed as a JSON line.  Options override NAME/node.toml (--peer adds peers).
    With --control, lines and commands also arrive on that socket (see `submit`).
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
    run_process(
        _run_node(config, keys, control), log_level, listen_failure=f"{config.name}: cannot listen"
    )


@crdt.command("relayer")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=7400, show_default=True)
@click.option(
    "--tamper",
    type=FiniteFloatRange(0.0, 1.0),
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


async def _run_node(config: NodeConfig, keys: KeyPair, control_path: Path | None) -> int:
    import asyncio
    import logging
    import signal

    from synod.crypto import node_id_text
    from synod.runtime.crdt_node import ControlServer, LogNode
    from synod.runtime.lock import NodeAlreadyRunning

    log = logging.getLogger("synod.cli.crdt")
    try:
        node = LogNode.from_config(config, keys, on_event=lambda event: _show(event, log))
    except NodeAlreadyRunning as error:
        raise already_running(error) from None
    control = ControlServer(node, control_path) if control_path is not None else None
    try:
        if control is not None:
            await control.start()
        await node.start()
    except BaseException:
        if control is not None:
            await control.close()
        await node.stop()
        raise
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
    if control is not None:
        await control.close()
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


# ---------------------------------------------------------------- a whole local network


def _control_path(directory: Path, node: str) -> Path:
    from synod.crdt.config import load_config

    with config_errors(f"synod crdt init-network {directory}"):
        config = load_config(directory / node)
    return config.path.parent / CONTROL_NAME


async def _ask(path: Path, lines: list[str], timeout_s: float) -> list[Any]:
    from synod.runtime.crdt_node import ask_control

    return await ask_control(path, lines, timeout_s=timeout_s)


@crdt.command("submit")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("node")
@click.argument("lines", nargs=-1, required=True)
@click.option("--timeout", "timeout_s", type=SECONDS, default=10.0, show_default=True)
def submit(directory: Path, node: str, lines: tuple[str, ...], timeout_s: float) -> None:
    """Append LINES to the shared log through NODE of the network in DIRECTORY (started by
    `synod crdt up`); returns once each line's update is in NODE's store."""
    import asyncio

    for line in lines:
        if not line or "\n" in line or len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
            raise click.BadParameter(
                f"each line must be 1..{MAX_LINE_BYTES} bytes without a newline",
                param_hint="LINES",
            )
    path = _control_path(directory, node)
    escaped = ["/" + line if line.startswith("/") else line for line in lines]
    waiting = f"waiting for {node} to store the update (up to {timeout_s:g} s, --timeout)"
    try:
        with notice_if_slow(waiting):
            answers = asyncio.run(_ask(path, escaped, timeout_s))
    except (OSError, TimeoutError) as error:
        raise click.ClickException(
            f"{node} does not answer on {path} ({error or 'timeout'}); is the network up "
            f"(`synod crdt up {directory}`)?"
        ) from None
    for line, answer in zip(lines, answers, strict=True):
        if answer.get("event") != "appended":
            raise click.ClickException(f"{node} refused {line!r}: {answer.get('reason')}")
    click.echo(f"{node}: {len(lines)} appended", err=True)


def _plan(directory: Path) -> list[Service]:
    from synod.runtime.supervisor import plan_crdt

    return plan_crdt(directory)


@crdt.command("status")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per process.")
@click.option("--timeout", "timeout_s", type=SECONDS, default=5.0, show_default=True)
def status(directory: Path, as_json: bool, timeout_s: float) -> None:
    """Each process of the network in DIRECTORY, and what each running node holds (asked
    over its control socket): entries, updates, updates waiting for their causes, links.
    Without `up`'s record, the nodes of DIRECTORY/*/node.toml that answer on their
    control socket.  Exits 1 when a process is down or a node does not answer."""
    from synod.runtime.supervisor import Supervisor, SupervisorError

    try:
        statuses = Supervisor(directory).status()
    except SupervisorError as error:
        raise click.ClickException(str(error)) from None
    if statuses:
        rows = [_node_row(directory, entry.name, entry.running, timeout_s) for entry in statuses]
        for entry, row in zip(statuses, rows, strict=True):
            row["pid"] = entry.pid
    else:  # not started by `up`: nodes run by hand with --control may still answer
        names = sorted(path.parent.name for path in directory.glob(f"*/{CONFIG_NAME}"))
        rows = [_node_row(directory, name, None, timeout_s) for name in names]
        if not any(row["state"] == "answering" for row in rows):
            raise click.ClickException(
                f"{directory}: the network is not up (`synod crdt up {directory}`)"
            )
    _print_status(rows, as_json=as_json)
    if not all(row["state"] in {"running", "answering"} for row in rows):
        raise SystemExit(1)


def _node_row(
    directory: Path, name: str, running: bool | None, timeout_s: float
) -> dict[str, Any]:
    """One process's row; `running` None: no pid known, the socket alone tells."""
    import asyncio

    if running is False:
        return {"name": name, "state": "down"}
    path = directory / name / CONTROL_NAME
    if not path.parent.is_dir():
        return {"name": name, "state": "running"}  # the relayer: nothing to ask
    waiting = f"waiting for {name} to answer on {path} (up to {timeout_s:g} s, --timeout)"
    try:
        with notice_if_slow(waiting):
            (answer,) = asyncio.run(_ask(path, ["/status"], timeout_s))
    except (OSError, TimeoutError, ValueError) as error:
        state = "silent" if running else "down"
        return {"name": name, "state": state, "reason": str(error) or "timeout"}
    answer.pop("event", None)
    return {**answer, "name": name, "state": "answering"}


def _print_status(rows: list[dict[str, Any]], *, as_json: bool) -> None:
    import json

    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    most = max((row.get("entries", 0) for row in rows), default=0)
    click.echo(f"{'process':<16} {'state':<9} {'entries':>7} {'lag':>5} {'updates':>7} "
               f"{'waiting':>7}  links")  # fmt: skip
    for row in rows:
        if row["state"] != "answering":
            click.echo(f"{row['name']:<16} {row['state']:<9}")
            continue
        relay = {True: "relay up", False: "relay DOWN", None: ""}[row["relay_connected"]]
        peers = f"peers {row['peers_connected']}/{row['peers']}" if row["peers"] else ""
        click.echo(
            f"{row['name']:<16} {row['state']:<9} {row['entries']:>7} "
            f"{most - row['entries']:>5} {row['updates']:>7} {row['waiting']:>7}  "
            f"{' '.join(part for part in (relay, peers) if part)}"
        )


add_supervision_commands(crdt, _plan, "crdt", with_status=False)
