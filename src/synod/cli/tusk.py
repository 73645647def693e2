"""`synod tusk`: Tusk consensus with passive cores and untrusted drivers on real TCP.

- ``synod tusk init DIR --cores 4`` writes one key file per core and ``DIR/tusk.toml``;
- ``synod tusk core DIR NODE`` runs one passive core: it only listens (request/response
  on its port), keeps its state in ``DIR/<name>.sqlite`` (committed before any answer
  leaves), and prints one JSON line per committed certificate on standard output;
- ``synod tusk driver DIR`` runs a driver: it connects to every core of the committee,
  carries headers, votes and certificates between them, and holds nothing needed for
  safety (no key, no file): kill it at any time, run several;
- ``synod tusk submit DIR TEXT...`` hands transactions to a core and prints its signed
  receipt;
- ``synod tusk watch DIR`` prints a core's committed sequence, then follows it as it
  grows (it reads the core's SQLite file; the core need not run).

Logs are JSON lines on standard error.  SIGINT or SIGTERM stops a core or a driver
cleanly (exit 0).  Exit codes: 0 success, 1 failure or user error, 2 configuration error.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from synod.cli.common import (
    EXIT_CONFIG,  # noqa: F401 - part of this command's interface (its exit statuses)
    EXIT_FAILED,
    ConfigError,
    NodeEntry,
    find_named,
    lock_exclusively,
    log_level_option,
    node_entry,
    parse_ports,
    print_json_line,
    read_node_keys,
    read_toml,
    refuse_to_overwrite,
    render_node_tables,
    run_process,
    serve_until_stopped,
    write_new_key,
)

if TYPE_CHECKING:
    from synod.crypto import KeyPair
    from synod.quorum.committee import Committee
    from synod.tusk.core import TuskConfig

CONFIG_NAME = "tusk.toml"
DEFAULT_BASE_PORT = 7300

# Settings of [tusk] in tusk.toml: name -> (default, smallest allowed value).
SETTINGS: dict[str, tuple[int, int]] = {
    "gc_depth": (100, 2),
    "min_header_delay_ms": (100, 0),
    "max_batch_transactions": (512, 1),
    "max_batch_bytes": (256 * 1024, 4096),
    "poll_interval_ms": (50, 1),
    "window_rounds": (150, 2),
    "call_timeout_ms": (2_000, 1),
}


CoreEntry = NodeEntry
"""A core of ``tusk.toml``: its name, id, listening address and key file."""


@dataclass(frozen=True, slots=True)
class TuskNetwork:
    path: Path
    settings: dict[str, int]
    cores: tuple[CoreEntry, ...]

    def find(self, selector: str) -> CoreEntry:
        return find_named(self.path, self.cores, selector, "core")

    def committee(self) -> Committee:
        from synod.quorum.committee import Committee

        return Committee.equal_weights(core.node_id for core in self.cores)

    def core_config(self) -> TuskConfig:
        from synod.tusk.core import TuskConfig

        return TuskConfig(
            gc_depth=self.settings["gc_depth"],
            min_header_delay_ms=self.settings["min_header_delay_ms"],
            max_batch_transactions=self.settings["max_batch_transactions"],
            max_batch_bytes=self.settings["max_batch_bytes"],
        )


# ---------------------------------------------------------------- configuration


def load_network(directory: Path) -> TuskNetwork:
    """Read and check ``DIR/tusk.toml``; raise `ConfigError` naming what is wrong."""
    path = directory / CONFIG_NAME
    document = read_toml(path, f"synod tusk init {directory}")
    table = document.get("tusk", {})
    if not isinstance(table, dict):
        raise ConfigError(path, "tusk", "expected a table")
    settings = {}
    for key, (default, smallest) in SETTINGS.items():
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < smallest:
            raise ConfigError(path, f"tusk.{key}", f"expected an integer >= {smallest}")
        settings[key] = value
    raw_cores = document.get("cores")
    if not isinstance(raw_cores, list) or not raw_cores:
        raise ConfigError(path, "cores", "expected a non-empty array of tables [[cores]]")
    cores = tuple(node_entry(path, f"cores[{index}]", raw) for index, raw in enumerate(raw_cores))
    _check_distinct(path, cores)
    return TuskNetwork(path, settings, cores)


def _check_distinct(path: Path, cores: tuple[CoreEntry, ...]) -> None:
    for key, value_of in (
        ("name", lambda core: core.name),
        ("id", lambda core: core.node_id),
        ("port", lambda core: (core.host, core.port)),
    ):
        seen: set[object] = set()
        for index, core in enumerate(cores):
            value = value_of(core)
            if value in seen:
                raise ConfigError(path, f"cores[{index}].{key}", "expected a unique value")
            seen.add(value)


def render_config(cores: list[tuple[str, str, str, int, str]]) -> str:
    lines = ["# A synod Tusk committee (written by `synod tusk init`).", "[tusk]"]
    lines += [f"{key} = {default}" for key, (default, _) in SETTINGS.items()]
    lines += render_node_tables("cores", cores)
    return "\n".join(lines) + "\n"


def _transaction_text(transaction: bytes) -> str:
    try:
        return transaction.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + transaction.hex()


# ---------------------------------------------------------------- commands


@click.group()
def tusk() -> None:
    """Tusk consensus: passive cores, untrusted drivers (init, core, driver, submit, watch)."""


@tusk.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--cores", "count", type=click.IntRange(1, 128), default=4, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every core uses.")
@click.option(
    "--base-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_BASE_PORT,
    show_default=True,
    help="Core i listens on base-port + i.",
)
@click.option("--ports", default=None, help="Explicit comma-separated ports, one per core.")
def init(directory: Path, count: int, host: str, base_port: int, ports: str | None) -> None:
    """Write core keys and DIRECTORY/tusk.toml for a committee."""
    from synod.crypto import node_id_text

    port_list = parse_ports(ports, count, base_port)
    config_path = directory / CONFIG_NAME
    refuse_to_overwrite(config_path)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, port in enumerate(port_list):
        name = f"core-{index}"
        pair = write_new_key(directory / f"{name}.key")
        entries.append((name, node_id_text(pair.node_id), host, port, f"{name}.key"))
    config_path.write_text(render_config(entries), encoding="utf-8")
    for name, node_id, core_host, port, _ in entries:
        click.echo(f"{name}  {node_id}  {core_host}:{port}")
    click.echo(f"wrote {config_path}", err=True)


_LOG_LEVEL = log_level_option()


@tusk.command("core")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("node")
@_LOG_LEVEL
def core(directory: Path, node: str, log_level: str) -> None:
    """Run core NODE (a name such as core-0, or an index) until SIGINT/SIGTERM.

    It only listens.  Each committed certificate is printed as a JSON line.
    """
    network = load_network(directory)
    entry = network.find(node)
    keys = read_node_keys(
        entry.key_file,
        entry.node_id,
        f"holds the key of another core than {entry.name}'s id in {network.path}",
    )
    run_process(_run_core(network, entry, keys), log_level)


async def _run_core(network: TuskNetwork, entry: CoreEntry, keys: KeyPair) -> int:
    import logging

    from synod.crypto import node_id_text
    from synod.runtime.host import NodeHost
    from synod.runtime.storage import SqliteStorage
    from synod.tusk.core import TuskCore
    from synod.tusk.messages import CODEC

    log = logging.getLogger("synod.cli.tusk")
    lock = lock_exclusively(network.path.parent / f"{entry.name}.lock", f"core {entry.name}")
    storage = SqliteStorage.open(network.path.parent / f"{entry.name}.sqlite")
    tusk_core = TuskCore(keys, network.committee(), storage.load(), config=network.core_config())
    names = {core.node_id: core.name for core in network.cores}
    host = NodeHost(
        tusk_core,
        keys=keys,
        codec=CODEC,
        storage=storage,
        on_event=lambda event: _print_core_event(event, names, log),
    )
    await host.start(rpc_listen=(entry.host, entry.port))
    ready = {
        "event": "ready",
        "core": entry.name,
        "id": node_id_text(keys.node_id),
        "address": f"{entry.host}:{entry.port}",
        "round": tusk_core.round,
        "restored_commits": tusk_core.committed_count,
    }
    return await serve_until_stopped(host, ready, lock=lock, log=log, failure="core failed")


def _print_core_event(event: object, names: dict[Any, str], log: Any) -> None:
    from synod.tusk.core import Committed, EquivocationDetected

    if isinstance(event, Committed):
        print_json_line(_committed_line(event, names))
    elif isinstance(event, EquivocationDetected):
        creator = event.evidence.first.creator
        log.warning(
            "equivocation detected",
            extra={"creator": names.get(creator), "round": event.evidence.first.round},
        )


def _committed_line(event: Any, names: dict[Any, str]) -> dict[str, Any]:
    from synod.crypto import node_id_text

    return {
        "event": "committed",
        "sequence": event.sequence,
        "leader_round": event.leader_round,
        "round": event.round,
        "creator": names.get(event.creator, node_id_text(event.creator)),
        "digest": event.digest.hex(),
        "transactions": [_transaction_text(tx) for tx in event.transactions],
    }


@tusk.command("driver")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--name", default="driver", show_default=True, help="A label for logs.")
@_LOG_LEVEL
def driver(directory: Path, name: str, log_level: str) -> None:
    """Run a driver for the committee in DIRECTORY until SIGINT/SIGTERM.

    It holds no key and no file; any number of drivers may run at once.
    """
    import asyncio

    from synod.runtime.logs import configure_json_logging

    network = load_network(directory)
    configure_json_logging(log_level.upper())
    sys.exit(asyncio.run(_run_driver(network, name)))


async def _run_driver(network: TuskNetwork, name: str) -> int:
    from synod.tusk.driver import Driver

    tusk_driver = Driver(
        name,
        network.committee(),
        poll_interval_ms=network.settings["poll_interval_ms"],
        window_rounds=network.settings["window_rounds"],
    )
    runner = _DriverRunner(network, tusk_driver)
    return await runner.run()


class _DriverRunner:
    """Drives a sans-I/O `Driver` with asyncio: `Call`s become RPC calls to the cores,
    answers and failures come back as `Response` / `CallFailed`, `SetTimer` becomes a
    loop timer.  One input at a time, in arrival order."""

    def __init__(self, network: TuskNetwork, tusk_driver: Any) -> None:
        import asyncio

        from synod.runtime.rpc import RpcClient

        self.network = network
        self.driver = tusk_driver
        self.clients = {core.node_id: RpcClient((core.host, core.port)) for core in network.cores}
        self.inputs: asyncio.Queue[Any] = asyncio.Queue()
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.reported_round = 0

    async def run(self) -> int:
        import asyncio
        import signal

        from synod.core import Started

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        print_json_line(
            {"event": "ready", "driver": self.driver.name, "cores": len(self.network.cores)}
        )
        self.inputs.put_nowait(Started())
        worker = asyncio.create_task(self._work())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({worker, stopped}, return_when=asyncio.FIRST_COMPLETED)
        worker.cancel()
        stopped.cancel()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(worker, stopped, *self.tasks, return_exceptions=True)
        for handle in self.timers.values():
            handle.cancel()
        for client in self.clients.values():
            await client.close()
        if worker.done() and not worker.cancelled() and worker.exception() is not None:
            return EXIT_FAILED
        return 0

    async def _work(self) -> None:
        from synod.runtime.host import monotonic_ms

        while True:
            event = await self.inputs.get()
            step = self.driver.handle(event, monotonic_ms())
            self._apply(step)
            if self.driver.highest_round >= self.reported_round + 10:
                self.reported_round = self.driver.highest_round
                print_json_line({"event": "progress", "highest_round": self.reported_round})

    def _apply(self, step: Any) -> None:
        import asyncio

        from synod.core import Call, SetTimer, TimerFired

        loop = asyncio.get_running_loop()
        for out in step.outgoing:
            assert isinstance(out, Call), "a driver only calls cores"
            task = loop.create_task(self._call(out))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        for command in step.timers:
            previous = self.timers.pop(command.name, None)
            if previous is not None:
                previous.cancel()
            if isinstance(command, SetTimer):
                fired = TimerFired(command.name)
                self.timers[command.name] = loop.call_later(
                    command.delay_ms / 1000, self.inputs.put_nowait, fired
                )

    async def _call(self, call: Any) -> None:
        from synod.core import CallFailed, Response
        from synod.runtime.rpc import RpcFailure
        from synod.tusk.messages import CODEC
        from synod.wire import DecodeError

        timeout_s = self.network.settings["call_timeout_ms"] / 1000
        try:
            result = await self.clients[call.to].call(CODEC.encode(call.body), timeout_s=timeout_s)
        except ValueError as error:  # a request larger than the frame cap
            self.inputs.put_nowait(CallFailed(call.to, call.request_id, str(error)))
            return
        if isinstance(result, RpcFailure):
            self.inputs.put_nowait(CallFailed(call.to, call.request_id, result.reason))
            return
        try:
            body = CODEC.decode(result.body)
        except DecodeError as error:
            self.inputs.put_nowait(CallFailed(call.to, call.request_id, f"undecodable: {error}"))
            return
        self.inputs.put_nowait(Response(call.to, call.request_id, body))


@tusk.command("submit")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("transactions", nargs=-1, required=True)
@click.option("--core", "node", default="0", show_default=True, help="The core to hand them to.")
@click.option("--timeout-s", type=click.FloatRange(0.1), default=5.0, show_default=True)
def submit(directory: Path, transactions: tuple[str, ...], node: str, timeout_s: float) -> None:
    """Hand TRANSACTIONS (UTF-8 texts) to a core; print its signed receipt as JSON."""
    import asyncio

    from synod.tusk.messages import MAX_SUBMIT_TRANSACTIONS, MAX_TRANSACTION_BYTES

    network = load_network(directory)
    entry = network.find(node)
    encoded = tuple(text.encode("utf-8") for text in transactions)
    if len(encoded) > MAX_SUBMIT_TRANSACTIONS:
        raise click.UsageError(f"at most {MAX_SUBMIT_TRANSACTIONS} transactions at once")
    if any(len(transaction) > MAX_TRANSACTION_BYTES for transaction in encoded):
        raise click.UsageError(f"a transaction is at most {MAX_TRANSACTION_BYTES} bytes")
    receipt = asyncio.run(_submit(entry, encoded, timeout_s))
    print_json_line({"event": "submitted", "core": entry.name, **receipt})


async def _submit(entry: CoreEntry, transactions: tuple[bytes, ...], timeout_s: float) -> Any:
    from synod.runtime.rpc import RpcClient, RpcFailure
    from synod.tusk.messages import CODEC, SubmitAnswer, SubmitRequest, request_digest
    from synod.wire import DecodeError

    request = SubmitRequest(transactions=transactions)
    client = RpcClient((entry.host, entry.port))
    try:
        result = await client.call(CODEC.encode(request), timeout_s=timeout_s)
    finally:
        await client.close()
    if isinstance(result, RpcFailure):
        raise click.ClickException(f"{entry.name}: {result.reason}")
    try:
        answer = CODEC.decode(result.body)
    except DecodeError as error:
        raise click.ClickException(f"{entry.name}: undecodable answer: {error}") from None
    if (
        not isinstance(answer, SubmitAnswer)
        or answer.core != entry.node_id
        or answer.request_digest != request_digest(request)
        or not answer.has_valid_signature()
    ):
        raise click.ClickException(f"{entry.name}: the answer is not a receipt signed by it")
    return {"accepted": answer.accepted, "refused": answer.refused, "pending": answer.pending}


@tusk.command("watch")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--core", "node", default="0", show_default=True, help="Whose log to read.")
@click.option("--from", "first", type=click.IntRange(0), default=0, show_default=True)
@click.option("--follow/--no-follow", default=True, show_default=True)
@click.option("--interval-ms", type=click.IntRange(10), default=200, show_default=True)
def watch(directory: Path, node: str, first: int, follow: bool, interval_ms: int) -> None:
    """Print a core's committed sequence from position --from as JSON lines, then (with
    --follow) each new commit as it lands, until SIGINT/SIGTERM.

    It reads DIRECTORY/<core>.sqlite, which the running core commits before it answers
    anything, so every line printed is durable.
    """
    import signal
    import sqlite3
    import time

    from synod.tusk.core import COMMIT_LOG_PREFIX, commit_log_key, read_commit_record

    network = load_network(directory)
    entry = network.find(node)
    path = network.path.parent / f"{entry.name}.sqlite"
    if not path.exists():
        raise click.ClickException(f"{path}: no such file (has {entry.name} ever run?)")
    names = {core.node_id: core.name for core in network.cores}
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
    end = COMMIT_LOG_PREFIX + b"\xff" * 8
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        while True:
            try:
                rows = connection.execute(
                    "SELECT key, value FROM records WHERE key >= ? AND key <= ? ORDER BY key",
                    (commit_log_key(first), end),
                ).fetchall()
            except sqlite3.Error as error:
                raise click.ClickException(f"{path}: cannot read: {error}") from None
            for _, value in rows:
                event = read_commit_record(bytes(value))
                if event.sequence != first:
                    break  # a gap would be a write in progress: read it next time
                print_json_line(_committed_line(event, names))
                first += 1
            if not follow:
                return
            time.sleep(interval_ms / 1000)
    except KeyboardInterrupt:
        return
    finally:
        connection.close()
