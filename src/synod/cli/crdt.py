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

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from synod.cli.common import (
    EXIT_FAILED,
    ConfigError,
    lock_exclusively,
    log_level_option,
    print_json_line,
    read_node_keys,
    read_stdin_lines,
    read_toml,
    refuse_to_overwrite,
    require_string,
    run_process,
    write_new_key,
)

if TYPE_CHECKING:
    from synod.core import Step
    from synod.crdt.replica import Replica
    from synod.crypto import KeyPair, NodeId
    from synod.runtime.relay import RelayClient
    from synod.runtime.storage import SqliteStorage
    from synod.runtime.transport import PeerTransport

CONFIG_NAME = "node.toml"
KEY_NAME = "node.key"
DATABASE_NAME = "node.sqlite"
LOCK_NAME = "node.lock"
DEFAULT_DOCUMENT = "log"
DEFAULT_ANNOUNCE_MS = 2_000
MAX_LINE_BYTES = 64 * 1024
INPUT_QUEUE_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """A peer reached directly: its id and its transport address."""

    name: str
    node_id: NodeId
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """What ``NAME/node.toml`` says."""

    path: Path
    name: str
    node_id: NodeId
    key_file: Path
    document: str
    announce_interval_ms: int
    listen: tuple[str, int] | None
    relay: str | None
    peers: tuple[PeerEntry, ...]


# ---------------------------------------------------------------- configuration


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ValueError with the reason otherwise."""
    host, separator, port_text = text.rpartition(":")
    if not separator or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port 1..65535, got {text!r}")
    return host, int(port_text)


def parse_peer(text: str) -> PeerEntry:
    """``[NAME=]ID@HOST:PORT`` -> `PeerEntry`; ValueError with the reason otherwise."""
    from synod.crypto import InvalidNodeId, parse_node_id

    name, _, rest = text.rpartition("=")
    identity, separator, address = rest.partition("@")
    if not separator:
        raise ValueError(f"expected [NAME=]ID@HOST:PORT, got {text!r}")
    try:
        node_id = parse_node_id(identity)
    except InvalidNodeId as error:
        raise ValueError(f"expected a node id before '@' ({error})") from None
    host, port = parse_address(address)
    return PeerEntry(name or identity[:8], node_id, host, port)


def load_config(directory: Path) -> NodeConfig:
    """Read and check ``DIR/node.toml``; raise `ConfigError` naming what is wrong."""
    path = directory / CONFIG_NAME
    document = read_toml(path, f"synod crdt init {directory}")
    node = document.get("node")
    if not isinstance(node, dict):
        raise ConfigError(path, "node", "expected a table [node]")
    return NodeConfig(
        path=path,
        name=require_string(path, node, "node", "name"),
        node_id=_node_id(path, "node.id", require_string(path, node, "node", "id")),
        key_file=_relative(path, require_string(path, node, "node", "key_file")),
        document=require_string(path, node, "node", "document", DEFAULT_DOCUMENT),
        announce_interval_ms=_announce(path, node),
        listen=_optional_address(path, node, "node.listen"),
        relay=_relay(path, node),
        peers=_peers(path, document.get("peers", [])),
    )


def _node_id(path: Path, key: str, text: str) -> NodeId:
    from synod.crypto import InvalidNodeId, parse_node_id

    try:
        return parse_node_id(text)
    except InvalidNodeId as error:
        raise ConfigError(path, key, f"expected a node id ({error})") from None


def _relative(path: Path, text: str) -> Path:
    file = Path(text)
    return file if file.is_absolute() else path.parent / file


def _announce(path: Path, node: dict[str, Any]) -> int:
    value = node.get("announce_interval_ms", DEFAULT_ANNOUNCE_MS)
    if not isinstance(value, int) or isinstance(value, bool) or not 10 <= value <= 3_600_000:
        raise ConfigError(
            path, "node.announce_interval_ms", f"expected an integer 10..3600000, got {value!r}"
        )
    return value


def _optional_address(path: Path, node: dict[str, Any], key: str) -> tuple[str, int] | None:
    value = node.get(key.rsplit(".", maxsplit=1)[-1])
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(path, key, f"expected a string HOST:PORT, got {value!r}")
    try:
        return parse_address(value)
    except ValueError as error:
        raise ConfigError(path, key, str(error)) from None


def _relay(path: Path, node: dict[str, Any]) -> str | None:
    value = node.get("relay")
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("ws://", "wss://")):
        raise ConfigError(path, "node.relay", f"expected a ws:// or wss:// URL, got {value!r}")
    return value


def _peers(path: Path, raw: object) -> tuple[PeerEntry, ...]:
    if not isinstance(raw, list):
        raise ConfigError(path, "peers", "expected an array of tables [[peers]]")
    peers = []
    for index, entry in enumerate(raw):
        prefix = f"peers[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(path, prefix, "expected a table")
        node_id = _node_id(path, f"{prefix}.id", require_string(path, entry, prefix, "id"))
        address = require_string(path, entry, prefix, "address")
        try:
            host, port = parse_address(address)
        except ValueError as error:
            raise ConfigError(path, f"{prefix}.address", str(error)) from None
        name = require_string(path, entry, prefix, "name", address)
        peers.append(PeerEntry(name, node_id, host, port))
    return tuple(peers)


def render_config(
    name: str,
    node_id: str,
    *,
    document: str,
    announce_interval_ms: int,
    listen: str | None,
    relay: str | None,
    peers: list[PeerEntry],
) -> str:
    """The TOML text of a node's configuration."""
    from synod.crypto import node_id_text

    lines = [
        "# A synod BFT-CRDT node (written by `synod crdt init`).",
        "[node]",
        f"name = {json.dumps(name)}",
        f"id = {json.dumps(node_id)}",
        f"key_file = {json.dumps(KEY_NAME)}",
        f"document = {json.dumps(document)}",
        f"announce_interval_ms = {announce_interval_ms}",
    ]
    lines.append(f"listen = {json.dumps(listen)}" if listen else '# listen = "127.0.0.1:7300"')
    lines.append(f"relay = {json.dumps(relay)}" if relay else '# relay = "ws://127.0.0.1:7400"')
    for peer in peers:
        lines += [
            "",
            "[[peers]]",
            f"name = {json.dumps(peer.name)}",
            f"id = {json.dumps(node_id_text(peer.node_id))}",
            f"address = {json.dumps(f'{peer.host}:{peer.port}')}",
        ]
    return "\n".join(lines) + "\n"


def _peer_option(_: Any, __: Any, values: tuple[str, ...]) -> list[PeerEntry]:
    try:
        return [parse_peer(value) for value in values]
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--peer") from None


def _address_option(_: Any, __: Any, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_address(value)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--listen") from None
    return value


def _relay_option(_: Any, __: Any, value: str | None) -> str | None:
    if value is not None and not value.startswith(("ws://", "wss://")):
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


@crdt.command("init")
@click.argument("name", type=click.Path(file_okay=False, path_type=Path))
@_RELAY
@_LISTEN
@_PEER
@click.option("--document", default=DEFAULT_DOCUMENT, show_default=True, help="Shared log name.")
@click.option(
    "--announce-ms",
    type=click.IntRange(10, 3_600_000),
    default=DEFAULT_ANNOUNCE_MS,
    show_default=True,
    help="How often the node announces its heads (the repair period).",
)
def init(  # noqa: PLR0917 - one parameter per click option
    name: Path,
    relay: str | None,
    listen: str | None,
    peers: list[PeerEntry],
    document: str,
    announce_ms: int,
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
@_LOG_LEVEL
def relayer(host: str, port: int, tamper: float, tamper_seed: int | None, log_level: str) -> None:
    """Run a websocket relayer that forwards frames between nodes (it is not trusted)."""
    import asyncio

    from synod.runtime.logs import configure_json_logging

    configure_json_logging(log_level.upper())
    try:
        asyncio.run(_run_relayer(host, port, tamper, tamper_seed))
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error}") from None


async def _run_relayer(host: str, port: int, tamper: float, tamper_seed: int | None) -> None:
    import asyncio
    import random
    import signal

    from synod.runtime.relay import Relayer, TamperPolicy

    policy = TamperPolicy(tamper, random.Random(tamper_seed)) if tamper > 0 else None
    server = Relayer(tamper=policy)
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


@dataclass(frozen=True, slots=True)
class _Append:
    text: str


@dataclass(frozen=True, slots=True)
class _Command:
    name: str


@dataclass(frozen=True, slots=True)
class _Announce:
    pass


class _CrdtNode:
    """Drives one `Replica`: one input at a time, persist, then send, then show.

    Inputs (peer messages from the relayer and the direct transport, typed lines,
    timers, reconnections) go through one queue into one task.  Each step's records are
    committed to SQLite before any of its messages leaves (`synod.core`'s contract).
    """

    def __init__(
        self, config: NodeConfig, keys: KeyPair, replica: Replica, storage: SqliteStorage
    ) -> None:
        import asyncio

        self.config = config
        self.keys = keys
        self.replica = replica
        self.storage = storage
        self.inputs: asyncio.Queue[Any] = asyncio.Queue()
        self.room = asyncio.Event()
        self.room.set()
        self.stopped = asyncio.Event()
        self.transport: PeerTransport | None = None
        self.relay: RelayClient | None = None
        self.names = {peer.node_id: peer.name for peer in config.peers}
        self._timers: dict[str, Any] = {}

    # ------------------------------------------------------------ inputs

    async def wait_for_room(self) -> None:
        while self.inputs.qsize() >= INPUT_QUEUE_LIMIT:
            self.room.clear()
            await self.room.wait()

    async def from_peer(self, sender: NodeId, message: Any) -> None:
        from synod.core import Received

        await self.wait_for_room()
        self.inputs.put_nowait(Received(sender, message))

    async def from_relay(self, sender: NodeId, payload: bytes) -> None:
        import logging

        from synod.crdt.messages import CODEC
        from synod.wire import DecodeError

        try:
            message = CODEC.decode(payload)
        except DecodeError as error:
            logging.getLogger("synod.cli.crdt").debug(
                "undecodable relayed frame dropped", extra={"reason": str(error)[:120]}
            )
            return
        await self.from_peer(sender, message)

    def reconnected(self) -> None:
        print_json_line({"event": "connected", "relay": self.config.relay})
        self.inputs.put_nowait(_Announce())

    # ------------------------------------------------------------ the step loop

    async def process(self) -> None:
        import asyncio

        while True:
            item = await self.inputs.get()
            if self.inputs.qsize() < INPUT_QUEUE_LIMIT:
                self.room.set()
            if isinstance(item, _Command):
                if self.command(item.name):
                    continue
                self.stopped.set()
                return
            step = self.handle(item)
            if step is None:
                continue
            if step.persist:
                await asyncio.to_thread(self.storage.apply, step.persist)
            self.send(step)
            self.apply_timers(step)
            self.show(step)

    def handle(self, item: Any) -> Step | None:
        from synod.core import LocalError, Proposed, TimerFired
        from synod.crdt.log import append_edits
        from synod.crdt.replica import ANNOUNCE_TIMER, LocalChange
        from synod.runtime.host import monotonic_ms

        if isinstance(item, _Announce):
            item = TimerFired(ANNOUNCE_TIMER)
        elif isinstance(item, _Append):
            try:
                edits = append_edits(self.replica, item.text, self.config.name)
                return self.replica.handle(Proposed(LocalChange(tuple(edits))), monotonic_ms())
            except LocalError as error:
                print_json_line({"event": "error", "reason": str(error)})
                return None
        return self.replica.handle(item, monotonic_ms())

    def send(self, step: Step) -> None:
        from synod.core import Broadcast, Send
        from synod.crdt.messages import CODEC

        for effect in step.outgoing:
            if isinstance(effect, Broadcast):
                if self.transport is not None:
                    self.transport.broadcast(effect.message)
                if self.relay is not None:
                    self.relay.send(None, CODEC.encode(effect.message))
            elif isinstance(effect, Send):
                if self.transport is not None and effect.to in self.names:
                    self.transport.send(effect.to, effect.message)
                elif self.relay is not None:
                    self.relay.send(effect.to, CODEC.encode(effect.message))

    def apply_timers(self, step: Step) -> None:
        import asyncio

        from synod.core import SetTimer, TimerFired

        loop = asyncio.get_running_loop()
        for command in step.timers:
            pending = self._timers.pop(command.name, None)
            if pending is not None:
                pending.cancel()
            if isinstance(command, SetTimer):
                self._timers[command.name] = loop.call_later(
                    max(0, command.delay_ms) / 1000,
                    self.inputs.put_nowait,
                    TimerFired(command.name),
                )

    def cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    # ------------------------------------------------------------ output

    def show(self, step: Step) -> None:
        import logging

        from synod.crdt.log import appended_entry
        from synod.crdt.messages import UPDATE_CODEC
        from synod.crdt.replica import EquivocationDetected, UpdateApplied, UpdateRejected
        from synod.crypto import node_id_text

        log = logging.getLogger("synod.cli.crdt")
        for event in step.events:
            if isinstance(event, UpdateApplied):
                update = UPDATE_CODEC.decode(self.replica.encoded_update(event.update_id))
                entry = appended_entry(update)
                if entry is None:
                    continue
                print_json_line(
                    {
                        "event": "transaction",
                        "local": event.local,
                        "update": event.update_id.hex(),
                        "author": node_id_text(event.author),
                        "name": entry.get("name"),
                        "text": entry["text"],
                    }
                )
            elif isinstance(event, UpdateRejected):
                log.warning(
                    "update rejected",
                    extra={"update": event.update_id.hex()[:16], "reason": event.reason},
                )
            elif isinstance(event, EquivocationDetected):
                print_json_line(
                    {
                        "event": "equivocation",
                        "author": node_id_text(event.author),
                        "sequence": event.sequence,
                    }
                )

    def command(self, name: str) -> bool:
        """Run a console command; False when the node should stop."""
        from synod.crdt.log import entries

        if name == "quit":
            return False
        if name == "digest":
            print_json_line(
                {
                    "event": "digest",
                    "entries": len(entries(self.replica)),
                    "updates": len(self.replica.graph),
                    "document": self.replica.document_digest(),
                    "updates_digest": self.replica.updates_digest(),
                    "waiting": len(self.replica.waiting_ids()),
                }
            )
        elif name == "history":
            print_json_line({"event": "history", "entries": entries(self.replica)})
        else:
            print_json_line({"event": "error", "reason": f"unknown command /{name}"})
        return True


async def _run_node(config: NodeConfig, keys: KeyPair) -> int:
    import asyncio
    import logging
    import signal

    from synod.core import Received, Started
    from synod.crdt.log import genesis_update
    from synod.crdt.messages import UPDATE_CODEC, Updates
    from synod.crdt.replica import Replica, ReplicaConfig
    from synod.crypto import NodeId, node_id_text
    from synod.runtime.storage import SqliteStorage

    log = logging.getLogger("synod.cli.crdt")
    directory = config.path.parent
    lock = lock_exclusively(directory / LOCK_NAME)
    storage = SqliteStorage.open(directory / DATABASE_NAME)
    replica = Replica(
        keys, storage.load(), ReplicaConfig(announce_interval_ms=config.announce_interval_ms)
    )
    node = _CrdtNode(config, keys, replica, storage)
    restored = len(replica.graph)
    node.inputs.put_nowait(Started())
    genesis_id, genesis = genesis_update(config.document)
    if genesis_id not in replica.graph:
        node.inputs.put_nowait(
            Received(NodeId(genesis.body.author), Updates([UPDATE_CODEC.encode(genesis)]))
        )
    listen_text = await _open_links(node, config, keys)
    print_json_line(
        {
            "event": "ready",
            "name": config.name,
            "id": node_id_text(keys.node_id),
            "listen": listen_text,
            "relay": config.relay,
            "peers": len(config.peers),
            "restored_updates": restored,
        }
    )
    worker = asyncio.create_task(node.process(), name="crdt node")
    console = asyncio.create_task(_read_console(node, log), name="console")
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, signalled.set)
    waiters = [
        asyncio.ensure_future(signalled.wait()),
        asyncio.ensure_future(node.stopped.wait()),
        worker,
    ]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    failed = worker.done() and not worker.cancelled() and worker.exception() is not None
    if failed:
        log.error("node failed", extra={"reason": repr(worker.exception())})
    for task in (*waiters, console):
        task.cancel()
    await asyncio.gather(*waiters, console, return_exceptions=True)
    node.cancel_timers()
    if node.relay is not None:
        await node.relay.close()
    if node.transport is not None:
        await node.transport.close(flush_timeout_s=1.0)
    storage.close()
    lock.close()
    return EXIT_FAILED if failed else 0


async def _open_links(node: _CrdtNode, config: NodeConfig, keys: KeyPair) -> str | None:
    """Start the direct transport and the relay client; returns the bound address."""
    from synod.crdt.messages import CODEC
    from synod.runtime.relay import RelayClient
    from synod.runtime.transport import PeerTransport

    listen_text = None
    if config.listen is not None:
        peers = {peer.node_id: (peer.host, peer.port) for peer in config.peers}
        node.transport = PeerTransport(keys, peers, CODEC, node.from_peer)
        bound = await node.transport.start(*config.listen)
        listen_text = f"{bound[0]}:{bound[1]}"
    if config.relay is not None:
        node.relay = RelayClient(config.relay, keys, node.from_relay, on_connected=node.reconnected)
        node.relay.start()
    return listen_text


async def _read_console(node: _CrdtNode, log: Any) -> None:
    """Turn each line of standard input into an append or a command."""

    async def console_line(line: bytes) -> None:
        _console_line(node, log, line)

    await read_stdin_lines(
        console_line,
        max_bytes=MAX_LINE_BYTES,
        log=log,
        too_long="line longer than %d bytes ignored",
    )


def _console_line(node: _CrdtNode, log: Any, raw: bytes) -> None:
    text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
    if not text:
        return
    if text.startswith("/") and not text.startswith("//"):
        node.inputs.put_nowait(_Command(text[1:].strip()))
        return
    node.inputs.put_nowait(_Append(text[1:] if text.startswith("//") else text))
