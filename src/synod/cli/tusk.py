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
  grows (it reads the core's SQLite file; the core need not run), and positions a
  checkpoint's gap held once the core has filled them (``"filled": true``).

Logs are JSON lines on standard error.  SIGINT or SIGTERM stops a core or a driver
cleanly (exit 0).  Exit codes: 0 success, 1 failure or user error, 2 configuration error.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from synod.cli.common import (
    EXIT_CONFIG,  # noqa: F401 - part of this command's interface (its exit statuses)
    EXIT_FAILED,
    FiniteFloatRange,
    already_running,
    check_host,
    config_errors,
    log_level_option,
    notice_if_slow,
    parse_ports,
    print_json_line,
    read_node_keys,
    refuse_to_overwrite,
    run_process,
    watch_peers,
    write_new_key,
)
from synod.cli.supervise import add_supervision_commands

if TYPE_CHECKING:
    from synod.crypto import KeyPair, NodeId
    from synod.runtime.tusk_node import MetricsServer
    from synod.tusk.config import CoreEntry, TuskNetwork
    from synod.tusk.core import Committed

DEFAULT_BASE_PORT = 7300


def _load_network(directory: Path) -> TuskNetwork:
    from synod.tusk.config import load_network

    with config_errors(f"synod tusk init {directory}"):
        return load_network(directory)


def _find(network: TuskNetwork, selector: str) -> CoreEntry:
    with config_errors():
        return network.find(selector)


def _transaction_text(transaction: bytes) -> str:
    try:
        return transaction.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + transaction.hex()


def _committed_line(event: Committed, names: dict[NodeId, str]) -> dict[str, Any]:
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


# ---------------------------------------------------------------- commands


@click.group()
def tusk() -> None:
    """Tusk consensus: passive cores, untrusted drivers (init, core, driver, submit, watch)."""


MIN_FAULT_TOLERANT_CORES = 4
"""The smallest committee that tolerates one faulty core (n >= 3f + 1 with f = 1)."""


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
@click.option(
    "--force",
    is_flag=True,
    help="Write a committee of fewer than 4 cores (it tolerates no faulty core).",
)
def init(  # noqa: PLR0917 - one parameter per click option
    directory: Path, count: int, host: str, base_port: int, ports: str | None, force: bool
) -> None:
    """Write core keys and DIRECTORY/tusk.toml for a committee."""
    from synod.crypto import node_id_text
    from synod.tusk.config import CONFIG_NAME, render_config

    if count < MIN_FAULT_TOLERANT_CORES and not force:
        # n >= 3f + 1: below 4 cores f = 0, and one Byzantine or crashed core can stall
        # (or, with a lying core, mislead) the whole committee.
        raise click.BadParameter(
            f"a committee of {count} cores tolerates no faulty core (Tusk needs "
            f"n >= 3f + 1, so {MIN_FAULT_TOLERANT_CORES} cores for f = 1); "
            "--force writes it anyway",
            param_hint="--cores",
        )
    port_list = parse_ports(ports, count, base_port)
    check_host(host)
    config_path = directory / CONFIG_NAME
    refuse_to_overwrite(config_path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise click.ClickException(f"{directory}: cannot create: {error.strerror}") from None
    existing = [
        directory / f"core-{index}.key"
        for index in range(count)
        if (directory / f"core-{index}.key").exists()
    ]
    if existing:
        # checked before writing any: a refusal half way left keys that refused the next try
        raise click.ClickException(
            f"{existing[0]}: already exists; refusing to overwrite a key (remove it first, "
            "or choose another directory)"
        )
    entries = []
    for index, port in enumerate(port_list):
        name = f"core-{index}"
        pair = write_new_key(directory / f"{name}.key")
        entries.append((name, node_id_text(pair.node_id), host, port, f"{name}.key"))
    config_path.write_text(render_config(entries), encoding="utf-8")
    for name, node_id, core_host, port, _ in entries:
        # one space each: a 56-character id and a 5-digit port still fit 80 columns
        click.echo(f"{name} {node_id} {core_host}:{port}")
    click.echo(f"wrote {config_path}", err=True)


_LOG_LEVEL = log_level_option()


_METRICS_PORT = click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus text metrics on 127.0.0.1:PORT (0 picks one; logged).",
)


@tusk.command("core")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("node")
@_LOG_LEVEL
@_METRICS_PORT
def core(directory: Path, node: str, log_level: str, metrics_port: int | None) -> None:
    """Run core NODE (a name such as core-0, or an index) until SIGINT/SIGTERM.

    It only listens.  Each committed certificate is printed as a JSON line.
    """
    network = _load_network(directory)
    entry = _find(network, node)
    keys = read_node_keys(
        entry.key_file,
        entry.node_id,
        f"holds the key of another core than {entry.name}'s id in {network.path}",
    )
    run_process(
        _run_core(network, entry, keys, metrics_port),
        log_level,
        listen_failure=f"cannot listen on {entry.host}:{entry.port}",
    )


async def _run_core(
    network: TuskNetwork, entry: CoreEntry, keys: KeyPair, metrics_port: int | None
) -> int:
    import logging

    from synod.crypto import node_id_text
    from synod.runtime.host import HostFailed
    from synod.runtime.lock import NodeAlreadyRunning
    from synod.runtime.tusk_node import CoreNode, MetricsServer, core_series

    log = logging.getLogger("synod.cli.tusk")
    names = {core.node_id: core.name for core in network.cores}
    try:
        node = CoreNode.open(
            keys,
            network.committee(),
            network.store_path(entry),
            config=network.core_config(),
            on_event=lambda event: _print_core_event(event, names, log),
        )
    except NodeAlreadyRunning as error:
        raise already_running(error) from None
    metrics = MetricsServer(lambda: core_series(node.core, entry.name))
    try:
        await _start_metrics(metrics, metrics_port, log)
        await node.start((entry.host, entry.port))
    except BaseException:
        # a port in use or a host that does not resolve: release the store and its lock
        await metrics.stop()
        await node.stop()
        raise
    ready = {
        "event": "ready",
        "core": entry.name,
        "id": node_id_text(keys.node_id),
        "address": f"{entry.host}:{entry.port}",
        "round": node.core.round,
        "restored_commits": node.core.committed_count,
    }
    def on_ready() -> None:
        print_json_line(ready)
        server = node.host.rpc_server

        def drivers() -> tuple[int, int]:
            return min(server.client_count if server is not None else 0, 1), 1

        hint = "a core orders only while a driver runs: `synod tusk up DIR` starts one"
        watch_peers(drivers, log, hint, what="a driver")

    try:
        await node.serve(on_ready=on_ready)
    except HostFailed as error:
        log.error("core failed", extra={"reason": str(error)})
        return EXIT_FAILED
    finally:
        await metrics.stop()
    return 0


async def _start_metrics(metrics: MetricsServer, port: int | None, log: Any) -> None:
    """Serve `metrics` on 127.0.0.1:`port` (none: nothing); a port in use is a one-line
    user error, not a traceback."""
    if port is None:
        return
    try:
        bound = await metrics.start(("127.0.0.1", port))
    except OSError as error:
        raise click.ClickException(
            f"cannot serve metrics on 127.0.0.1:{port}: {error.strerror or error}"
        ) from None
    log.info("metrics", extra={"address": f"{bound[0]}:{bound[1]}"})


def _print_core_event(event: object, names: dict[NodeId, str], log: Any) -> None:
    from synod.crypto import NodeId
    from synod.tusk.core import (
        CaughtUp,
        CheckpointInstalled,
        Committed,
        EquivocationDetected,
        FellBehind,
        GapClosed,
        GapGivenUp,
    )

    if isinstance(event, Committed):
        print_json_line(_committed_line(event, names))
    elif isinstance(event, CheckpointInstalled):
        # The live view of the sequence jumps: say where, for a reader of these lines.
        print_json_line(
            {
                "event": "checkpoint-installed",
                "first_skipped": event.first_skipped,
                "sequence": event.sequence,
                "leader_round": event.leader_round,
            }
        )
        log.warning(
            "far behind: installed a checkpoint of the committee",
            extra={"skipped_from": event.first_skipped, "resumes_at": event.sequence},
        )
    elif isinstance(event, GapGivenUp):
        print_json_line({"event": "gap-given-up", "first": event.first, "end": event.end})
        log.warning(
            "positions of the log below what it keeps will not be filled; own batches"
            " that may have been committed there are not proposed again",
            extra={"first": event.first, "end": event.end},
        )
    elif isinstance(event, GapClosed):
        _print_gap_closed(event, log)
    elif isinstance(event, FellBehind):
        log.warning(
            "fell behind: refusing client transactions until caught up",
            extra={"round": event.round, "committee_round": event.seen_round},
        )
    elif isinstance(event, CaughtUp):
        log.warning("caught up: accepting client transactions again", extra={"round": event.round})
    elif isinstance(event, EquivocationDetected):
        creator = NodeId(event.evidence.first.creator)
        log.warning(
            "equivocation detected",
            extra={"creator": names.get(creator), "round": event.evidence.first.round},
        )


def _print_gap_closed(event: Any, log: Any) -> None:
    print_json_line(
        {
            "event": "gap-closed",
            "first": event.first,
            "end": event.end,
            "consistent": event.consistent,
            "dropped_transactions": len(event.dropped),
        }
    )
    if not event.consistent:
        log.error(
            "the filled log does not continue this core's own: more than f cores signed"
            " a false checkpoint",
            extra={"first": event.first},
        )
    if event.dropped:
        log.warning(
            "transactions whose commit cannot be checked any more were not proposed"
            " again (check them with submit --wait)",
            extra={"dropped": len(event.dropped)},
        )


@tusk.command("driver")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--name", default="driver", show_default=True, help="A label for logs.")
@_LOG_LEVEL
@_METRICS_PORT
def driver(directory: Path, name: str, log_level: str, metrics_port: int | None) -> None:
    """Run a driver for the committee in DIRECTORY until SIGINT/SIGTERM.

    It holds no key and no file; any number of drivers may run at once.
    """
    import asyncio

    from synod.runtime.logs import configure_json_logging

    network = _load_network(directory)
    configure_json_logging(log_level.upper())
    sys.exit(asyncio.run(_run_driver(network, name, metrics_port)))


LAG_WARNING_ROUNDS = 10
"""A core this many rounds behind the driver's highest certificate is reported lagging
(a stuck or unreachable core falls behind too), and one whose last certified header is
this many rounds old is reported starved; back within it, caught up."""


async def _run_driver(network: TuskNetwork, name: str, metrics_port: int | None) -> int:
    import asyncio
    import logging

    from synod.runtime.tusk_node import DriverFailed, DriverNode, MetricsServer, driver_series

    log = logging.getLogger("synod.cli.tusk")
    names: dict[bytes, str] = {core.node_id: core.name for core in network.cores}
    reported = 0
    lagging: set[bytes] = set()
    starved: set[bytes] = set()  # no header of theirs certified for many rounds
    unserved: set[bytes] = set()  # a log gap no other core serves
    mismatched: dict[bytes, frozenset[bytes]] = {}  # refuses members' headers: whose

    heard = asyncio.Event()

    def report_progress(highest_round: int) -> None:
        nonlocal reported
        heard.set()
        if highest_round >= reported + 10:
            reported = highest_round
            print_json_line({"event": "progress", "highest_round": highest_round})
        for core, round_number in node.driver.core_rounds().items():
            lag = highest_round - round_number
            if lag > LAG_WARNING_ROUNDS and core not in lagging:
                lagging.add(core)
                log.warning("core lagging", extra={"core": names.get(core), "rounds": lag})
            elif lag <= LAG_WARNING_ROUNDS and core in lagging:
                lagging.discard(core)
                log.warning("core caught up", extra={"core": names.get(core)})
        certified = node.driver.certified_rounds()
        for core, last_certified in certified.items():
            gap = highest_round - last_certified
            if gap > LAG_WARNING_ROUNDS and core not in starved:
                starved.add(core)
                log.warning("core starved", extra={"core": names.get(core), "rounds": gap})
            elif gap <= LAG_WARNING_ROUNDS and core in starved:
                starved.discard(core)
                log.warning("core certified again", extra={"core": names.get(core)})
        _warn_unserved(node.driver.unserved_gaps(), unserved, names, log)
        _warn_other_context(node.driver.context_refusals(), mismatched, names, log)

    node = DriverNode(
        network.new_driver(name),
        network.addresses(),
        call_timeout_ms=network.settings["call_timeout_ms"],
        on_round=report_progress,
    )
    metrics = MetricsServer(lambda: driver_series(node.driver, names))
    await _start_metrics(metrics, metrics_port, log)
    ready = {"event": "ready", "driver": name, "cores": len(network.cores)}
    waiting = asyncio.create_task(_say_why_idle(heard, network, log))
    try:
        await node.serve(on_ready=lambda: print_json_line(ready))
    except DriverFailed as error:
        log.error("driver failed", extra={"reason": str(error)})
        return EXIT_FAILED
    finally:
        waiting.cancel()
        await metrics.stop()
    return 0


def _warn_unserved(
    gaps: dict[bytes, tuple[int, int]], warned: set[bytes], names: dict[bytes, str], log: Any
) -> None:
    """Say once when no core serves a core's log gap (pruned at a checkpoint that core
    has not reached yet, or the others unreachable), and when records come again."""
    for core, (first, end) in gaps.items():
        if core not in warned:
            warned.add(core)
            log.warning(
                "no core serves the records of this core's log gap: pruned everywhere?"
                " its own batches whose fate lies there wait, neither re-proposed nor lost",
                extra={"core": names.get(core), "first": first, "end": end},
            )
    for core in warned - gaps.keys():
        warned.discard(core)
        log.warning("log gap served again, or closed", extra={"core": names.get(core)})


def _warn_other_context(
    refusals: dict[bytes, frozenset[bytes]],
    warned: dict[bytes, frozenset[bytes]],
    names: dict[bytes, str],
    log: Any,
) -> None:
    """Say once per core, and again each time the list grows (at most once per
    member), that it refuses members' headers as of another committee context: its
    `tusk.toml` differs from theirs (`network_id`, cores, `gc_depth` or
    `kept_commits`), and they will never order together until it is the same."""
    for core, creators in refusals.items():
        if warned.get(core) != creators:
            warned[core] = creators
            log.warning(
                "core refuses these cores' headers: their settings differ (network_id,"
                " cores, gc_depth or kept_commits must be the same in every tusk.toml)",
                extra={
                    "core": names.get(core),
                    "refused": sorted(names.get(c, bytes(c).hex()[:12]) for c in creators),
                },
            )


async def _say_why_idle(heard: Any, network: TuskNetwork, log: Any) -> None:
    """A driver alone prints `ready` and nothing more: after a second without a round,
    say once what it waits for and how to start it."""
    import asyncio

    from synod.cli.common import SLOW_NOTICE_S

    try:
        await asyncio.wait_for(heard.wait(), SLOW_NOTICE_S)
    except TimeoutError:
        addresses = ", ".join(f"{host}:{port}" for host, port in network.addresses().values())
        log.warning(
            "waiting for the cores: no round certified yet; are they running? "
            "(`synod tusk up DIR` starts the committee, `synod tusk status DIR` asks it)",
            extra={"cores": addresses},
        )


@tusk.command("submit")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("transactions", nargs=-1, required=True)
@click.option("--core", "node", default="0", show_default=True, help="The core to hand them to.")
@click.option("--timeout-s", type=FiniteFloatRange(0.1), default=5.0, show_default=True)
@click.option(
    "--wait/--no-wait",
    default=False,
    help="After the receipt, wait until cores of weight f + 1 state where every "
    "transaction was committed, and print that.",
)
@click.option("--wait-timeout-s", type=FiniteFloatRange(0.1), default=60.0, show_default=True)
def submit(
    directory: Path,
    transactions: tuple[str, ...],
    *,
    node: str,
    timeout_s: float,
    wait: bool,
    wait_timeout_s: float,
) -> None:
    """Hand TRANSACTIONS (UTF-8 texts) to a core; print its signed receipt as JSON.

    With --wait, then print `{"event": "committed", "transactions": [{"transaction",
    "sequence", "certificate"}]}` once cores of weight f + 1 agree on each position
    (exit 1 if that does not happen within --wait-timeout-s).
    """
    import asyncio

    from synod.runtime.tusk_node import SubmitFailed, check_submission, submit_transactions
    from synod.tusk.messages import SubmitRefusal

    network = _load_network(directory)
    entry = _find(network, node)
    names = {core.name for core in network.cores}
    if len(transactions) > 1 and transactions[0] in names:
        # `synod scp submit DIR NODE VALUE` names the node first; here a core is --core.
        raise click.UsageError(
            f"{transactions[0]!r} is a core of {directory}, not a transaction: "
            f"to hand the transactions to it, use --core {transactions[0]}"
        )
    try:
        batch = check_submission(text.encode("utf-8") for text in transactions)
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    waiting = (
        f"waiting for {entry.name} ({entry.host}:{entry.port}) to store the transactions "
        f"(up to {timeout_s:g} s, --timeout-s); a new core takes them once a driver has "
        f"reached it (`synod tusk driver {directory}`)"
    )
    try:
        with notice_if_slow(waiting):
            receipt = asyncio.run(
                submit_transactions(
                    (entry.host, entry.port),
                    entry.node_id,
                    batch,
                    timeout_s=timeout_s,
                    network=network.network,
                )
            )
    except SubmitFailed as error:
        raise click.ClickException(
            f"{entry.name}: {error}\nis it running? start the committee with `synod tusk up "
            f"{directory}` or the core with `synod tusk core {directory} {entry.name}`"
        ) from None
    print_json_line(
        {
            "event": "submitted",
            "core": entry.name,
            "accepted": receipt.accepted,
            "refused": receipt.refused,
            "pending": receipt.pending,
            **({"reason": receipt.reason.name.lower()} if receipt.refused else {}),
        }
    )
    if receipt.reason == SubmitRefusal.NOT_IN_CONTACT:
        click.echo(
            f"{entry.name} has not been reached by a driver yet, so it cannot know where its "
            f"committee is: start one with `synod tusk driver {directory}` (or the whole "
            f"committee with `synod tusk up {directory}`)",
            err=True,
        )
    if wait:
        if receipt.accepted != len(batch):
            why = receipt.reason.name.lower().replace("_", " ")
            raise click.ClickException(
                f"{entry.name} refused {receipt.refused} ({why}): not waiting"
            )
        _wait_for_commit(network, batch, wait_timeout_s)


def _wait_for_commit(network: TuskNetwork, batch: tuple[bytes, ...], timeout_s: float) -> None:
    import asyncio

    from synod.runtime.tusk_node import CommitUnproven, wait_for_commit

    waiting = (
        f"waiting for cores of weight f + 1 to commit them (up to {timeout_s:g} s, "
        "--wait-timeout-s); a committee orders only while a driver runs"
    )
    try:
        with notice_if_slow(waiting):
            positions = asyncio.run(
                wait_for_commit(
                    network.committee(),
                    network.addresses(),
                    batch,
                    timeout_s=timeout_s,
                    network=network.network,
                )
            )
    except CommitUnproven as error:
        raise click.ClickException(
            f"{error}\nis a driver running (`synod tusk status` lists the processes)? "
            "raise --wait-timeout-s if the committee is slow"
        ) from None
    lines = [
        {
            "transaction": _transaction_text(transaction),
            "sequence": position.sequence,
            "certificate": position.certificate.hex(),
        }
        for transaction, position in positions.items()
    ]
    print_json_line({"event": "committed", "transactions": lines})


@tusk.command("watch")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--core", "node", default="0", show_default=True, help="Whose log to read.")
# Bounded above: SQLite binds a position as a signed 64-bit integer, and the event loop
# refuses to sleep past the platform's time_t (both were tracebacks).
@click.option(
    "--from", "first", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True
)
@click.option("--follow/--no-follow", default=True, show_default=True)
@click.option(
    "--interval-ms", type=click.IntRange(10, 3_600_000), default=200, show_default=True
)
@click.option(
    "--proven",
    is_flag=True,
    help="Print each line only once cores of weight f + 1 acknowledge its position "
    "(CommitQuery): the core whose file is read is not trusted.",
)
@click.option("--proof-timeout-s", type=FiniteFloatRange(0.1), default=10.0, show_default=True)
def watch(  # noqa: PLR0917 - one parameter per click option
    directory: Path,
    node: str,
    first: int,
    follow: bool,
    interval_ms: int,
    proven: bool,
    proof_timeout_s: float,
) -> None:
    """Print a core's committed sequence from position --from as JSON lines, then (with
    --follow) each new commit as it lands, until SIGINT/SIGTERM.

    It reads DIRECTORY/<core>.sqlite, which the running core commits before it answers
    anything, so every line printed is durable.  With --proven, each line is printed
    only once cores of weight f + 1 state its position (exit 1 if they contradict it).
    Positions of a gap that the core fills later (after installing a checkpoint) are
    printed once it has, after a gap-filled line, each marked "filled": true.
    """
    import signal
    import time

    from synod.runtime.storage import StorageError
    from synod.runtime.tusk_node import CommitLogReader

    network = _load_network(directory)
    entry = _find(network, node)
    path = network.store_path(entry)
    if not path.exists():
        raise click.ClickException(f"{path}: no such file (has {entry.name} ever run?)")
    names = {core.node_id: core.name for core in network.cores}
    signal.signal(signal.SIGTERM, lambda number, frame: sys.exit(0))
    try:
        with CommitLogReader(path) as reader:
            printer = _LogPrinter(network, names, proof_timeout_s if proven else None)
            while True:
                first = printer.print_from(reader, first)
                if not follow:
                    return
                printer.print_filled(reader)
                time.sleep(interval_ms / 1000)
    except StorageError as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        return


_FILLED_CHUNK = 256
"""Filled positions read and printed at a time (each record holds at most one batch)."""


class _LogPrinter:
    """Prints a core's delivery log as `watch` does, and remembers the ranges it
    printed as `gap` lines: positions a core skipped by installing a checkpoint are
    filled later (from the top down), and once the core's gap no longer covers a range
    (`CommitLogReader.log_gap`), what it holds there is final and is printed, in
    position order, after a `gap-filled` line, each marked `"filled": true`.  Positions
    still absent then were pruned or given up: they never come."""

    def __init__(
        self, network: TuskNetwork, names: dict[NodeId, str], proof_timeout_s: float | None
    ) -> None:
        self._network = network
        self._names = names
        self._proof_timeout_s = proof_timeout_s
        self._skipped: list[tuple[int, int]] = []

    def print_from(self, reader: Any, first: int) -> int:
        """Print what the log holds from `first` on; the next position to read."""
        events = reader.read_from(first)
        proven = self._proven(events)
        for index, event in enumerate(events):
            if event.sequence > first:  # pruned, or skipped by a checkpoint
                print_json_line({"event": "gap", "first": first, "end": event.sequence})
                self._skipped.append((first, event.sequence))
            self._print(event, None if proven is None else proven[index], filled=False)
            first = event.sequence + 1
        return first

    def print_filled(self, reader: Any) -> None:
        """Print the ranges printed as gaps that the core no longer fills.  The gap is
        read before the records, and the core writes both in one transaction, so a range
        found uncovered holds all it ever will."""
        if not self._skipped:
            return
        wanted = reader.log_gap()
        settled = [
            (first, end)
            for first, end in self._skipped
            if wanted is None or end <= wanted[0] or first >= wanted[1]
        ]
        for first, end in settled:
            self._skipped.remove((first, end))
            self._print_range(reader, first, end)

    def _print_range(self, reader: Any, first: int, end: int) -> None:
        announced = False
        while events := reader.read_range(first, end, _FILLED_CHUNK):
            if not announced:
                print_json_line({"event": "gap-filled", "first": first, "end": end})
                announced = True
            proven = self._proven(events)
            for index, event in enumerate(events):
                self._print(event, None if proven is None else proven[index], filled=True)
            first = events[-1].sequence + 1

    def _proven(self, events: list[Any]) -> list[bool] | None:
        if self._proof_timeout_s is None:
            return None
        return _proven_lines(self._network, events, self._proof_timeout_s)

    def _print(self, event: Any, proven: bool | None, *, filled: bool) -> None:
        line = _committed_line(event, self._names)
        if proven is not None:
            line["proven"] = proven
        if filled:
            line["filled"] = True
        print_json_line(line)


def _proven_lines(network: TuskNetwork, events: list[Any], timeout_s: float) -> list[bool]:
    """For each commit read from one core's file, whether cores of weight f + 1 state
    it: one of its transactions acknowledged at its position and certificate.  A commit
    with no transaction has nothing to prove (True); one whose transactions are all
    acknowledged at an earlier position (submitted twice) cannot be (False).  A
    contradiction, or no proof in time, is an error: the file is not the committee's
    order (or the committee is unreachable, or the commits are older than what cores
    acknowledge).  One query per group of commits within a query's bound."""
    verdicts: list[bool] = []
    for batch in _query_batches(events):
        verdicts.extend(_prove_batch(network, batch, timeout_s))
    return verdicts


def _query_batches(events: list[Any]) -> Iterator[list[Any]]:
    from synod.tusk.messages import MAX_QUERIED_TRANSACTIONS

    batch: list[Any] = []
    count = 0
    for event in events:  # a commit holds at most 512 transactions: it fits one query
        if batch and count + len(event.transactions) > MAX_QUERIED_TRANSACTIONS:
            yield batch
            batch, count = [], 0
        batch.append(event)
        count += len(event.transactions)
    if batch:
        yield batch


def _prove_batch(network: TuskNetwork, events: list[Any], timeout_s: float) -> list[bool]:
    import asyncio

    from synod.runtime.tusk_node import CommitUnproven, wait_for_commit

    transactions = [transaction for event in events for transaction in event.transactions]
    if not transactions:
        return [True] * len(events)
    try:
        positions = asyncio.run(
            wait_for_commit(
                network.committee(),
                network.addresses(),
                transactions,
                timeout_s=timeout_s,
                network=network.network,
            )
        )
    except CommitUnproven as error:
        raise click.ClickException(str(error)) from None
    verdicts = []
    for event in events:
        stated = [positions[transaction] for transaction in event.transactions]
        if any(_contradicts(event, position) for position in stated):
            raise click.ClickException(
                f"position {event.sequence}: cores of weight f + 1 state another order"
            )
        verdicts.append(not stated or any(_states(event, position) for position in stated))
    return verdicts


def _states(event: Any, position: Any) -> bool:
    """`position` (a `CommittedAt`) is the commit `event` read from the file."""
    return bool(position.sequence == event.sequence and position.certificate == event.digest)


def _contradicts(event: Any, position: Any) -> bool:
    """The committee puts a transaction of `event` later, or another certificate at its
    position: an earlier position is a transaction committed twice, not a conflict."""
    if position.sequence == event.sequence:
        return not _states(event, position)
    return bool(position.sequence > event.sequence)


def _plan(directory: Path) -> Any:
    from synod.runtime.supervisor import plan_tusk

    return plan_tusk(directory)


def _request_ports(directory: Path) -> dict[str, tuple[str, int]]:
    from synod.runtime.supervisor import request_ports_tusk

    return request_ports_tusk(directory)


add_supervision_commands(tusk, _plan, "tusk", request_ports=_request_ports)
