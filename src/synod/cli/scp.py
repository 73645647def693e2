"""`synod scp`: a local network of SCP nodes over real TCP, agreeing on a replicated log.

- ``synod scp init DIR`` writes one key file per node and ``DIR/network.toml`` (4 nodes,
  each trusting any 3 of the 4, by default; ``--organisations K --per-organisation M``
  for a tiered network of organisations);
- ``synod scp run DIR NODE`` runs one node until SIGINT/SIGTERM: SCP over the peer
  transport, its state and the externalized log in ``DIR/<name>.sqlite``, a submit port
  for clients, one JSON line on stdout per externalized slot;
- ``synod scp submit DIR NODE VALUE...`` hands entries to a running node;
- ``synod scp status DIR`` reads every node's SQLite file (read-only) and shows the log
  slot by slot, node by node, and whether the nodes agree.

The commands parse options, print and choose exit statuses; the rest is the library:
the replicated log (`synod.scp.log`), the network file (`synod.scp.network`) and the
node runner, submit client and store reader (`synod.runtime.scp_node`).  See
docs/scp-network.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click

from synod.cli.common import (
    FiniteFloatRange,
    already_running,
    config_errors,
    log_level_option,
    notice_if_slow,
    parse_ports,
    print_json_line,
    printable,
    read_node_keys,
    refuse_to_overwrite,
    run_process,
    watch_peers,
)
from synod.cli.supervise import add_supervision_commands
from synod.scp.log import (
    MAX_ENTRY_BYTES,
    Comparison,
    LogAppended,
    SlotRow,
    compare_logs,
    decode_batch,
    entry_fits,
    value_digest,
)
from synod.scp.network import (
    CONFIG_NAME,
    DEFAULT_BASE_PORT,
    NetworkConfig,
    NetworkSettings,
    NodeEntry,
    load_network,
    plan_nodes,
)

if TYPE_CHECKING:
    from rich.text import Text

    from synod.crypto import KeyPair
    from synod.runtime.scp_node import LogNode
    from synod.runtime.scp_stellar_node import LedgerClosed, StellarLogNode

EXIT_FAILED: Final = 1
"""run: the node failed; submit: the node refused the entries; status: nodes disagree."""
EXIT_CONFIG: Final = 2
EXIT_UNREACHABLE: Final = 3
"""submit: the node's submit port did not answer."""


def load_config(directory: Path) -> NetworkConfig:
    """``DIRECTORY/network.toml`` for a command: its problems become user errors
    (exit status 2 for a wrong value, 1 for a missing or unreadable file)."""
    with config_errors(f"synod scp init {directory}"):
        return load_network(directory)


def find_node(config: NetworkConfig, selector: str) -> NodeEntry:
    """The node `selector` names (or indexes); a user error listing the nodes otherwise."""
    with config_errors():
        return config.find(selector)


# ---------------------------------------------------------------- commands


@click.group()
def scp() -> None:
    """Stellar Consensus Protocol nodes agreeing on a replicated log: init, run, submit,
    status."""


@scp.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--nodes", "count", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--threshold",
    type=click.IntRange(1),
    default=None,
    help="Nodes each node trusts (symmetric network); default n - (n-1)//3.",
)
@click.option(
    "--organisations",
    type=click.IntRange(1, 21),
    default=None,
    help="Tiered network: this many organisations (replaces --nodes).",
)
@click.option(
    "--per-organisation",
    type=click.IntRange(1, 7),
    default=3,
    show_default=True,
    help="Nodes per organisation (with --organisations).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every node uses.")
@click.option(
    "--base-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_BASE_PORT,
    show_default=True,
    help="Node i listens on base-port + 2i (peers) and base-port + 2i + 1 (submit).",
)
@click.option("--ports", default=None, help="Explicit comma-separated peer ports, one per node.")
@click.option(
    "--submit-ports", default=None, help="Explicit comma-separated submit ports, one per node."
)
@click.option(
    "--network-id",
    default="",
    help="The network's id, in every signature and handshake (at most 64 bytes, no '@').",
)
@click.option(
    "--force",
    is_flag=True,
    help="Write the network even when its quorums need not intersect (unsafe: it can fork).",
)
@click.option(
    "--stellar",
    is_flag=True,
    help="Stellar mode: the nodes speak Stellar's overlay and decide StellarValues.",
)
@click.option(
    "--passphrase",
    default=None,
    help="Stellar mode's network passphrase [default: stellar-core's standalone one].",
)
def init(  # noqa: PLR0917 - one parameter per click option
    directory: Path,
    count: int,
    threshold: int | None,
    organisations: int | None,
    per_organisation: int,
    host: str,
    base_port: int,
    ports: str | None,
    submit_ports: str | None,
    network_id: str,
    force: bool,
    stellar: bool,
    passphrase: str | None,
) -> None:
    """Write node keys and DIRECTORY/network.toml for a local SCP network."""
    from synod.crypto import KeyFileError
    from synod.runtime.scp_node import NetworkExists, create_network
    from synod.scp.network import StellarMode

    count = len(plan_nodes(count, organisations, per_organisation))
    if base_port + 2 * count > 65536 and (ports is None or submit_ports is None):
        raise click.BadParameter("too high for that many nodes", param_hint="--base-port")
    peer_ports = parse_ports(ports, count, base_port, "--ports", stride=2)
    rpc_ports = parse_ports(submit_ports, count, base_port + 1, "--submit-ports", stride=2)
    if len(set(peer_ports + rpc_ports)) != 2 * count:
        raise click.BadParameter("every port must differ", param_hint="--ports/--submit-ports")
    if organisations is None and threshold is not None and threshold > count:
        raise click.BadParameter(f"at most {count} (the nodes)", param_hint="--threshold")
    if organisations is not None and threshold is not None:
        raise click.BadParameter("only for a symmetric network", param_hint="--threshold")
    if organisations is None and threshold is not None and 2 * threshold <= count and not force:
        # Any `threshold` nodes form a quorum: two disjoint ones exist once 2t <= n.
        raise click.BadParameter(
            f"with {count} nodes a threshold of {threshold} lets two disjoint quorums "
            f"decide differently (need more than {count // 2}); --force writes it anyway",
            param_hint="--threshold",
        )
    _require_unicode(network_id, "--network-id")
    _require_unicode(passphrase or "", "--passphrase")
    if len(network_id.encode()) > 64 or "@" in network_id:
        raise click.BadParameter("at most 64 bytes without '@'", param_hint="--network-id")
    if passphrase is not None and not stellar:
        raise click.BadParameter("only with --stellar", param_hint="--passphrase")
    if passphrase is not None and not 0 < len(passphrase.encode()) <= 256:
        raise click.BadParameter("1 to 256 bytes", param_hint="--passphrase")
    mode = None
    if stellar:
        mode = StellarMode(passphrase=passphrase) if passphrase else StellarMode()
    refuse_to_overwrite(directory / CONFIG_NAME)
    try:
        with config_errors():
            config = create_network(
                directory,
                nodes=count,
                threshold=threshold,
                organisations=organisations,
                per_organisation=per_organisation,
                host=host,
                ports=peer_ports,
                submit_ports=rpc_ports,
                settings=NetworkSettings(network_id=network_id.encode()),
                stellar=mode,
            )
    except (KeyFileError, NetworkExists) as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"{directory}: cannot create: {error.strerror}") from None
    except ValueError as error:  # a string no TOML file can hold
        raise click.UsageError(str(error)) from None
    print_network(config)


def _require_unicode(text: str, option: str) -> None:
    """Undecodable bytes of an argument arrive as lone surrogates, which neither UTF-8
    nor a TOML file can hold."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise click.BadParameter("not valid UTF-8 text", param_hint=option) from None


def print_network(config: NetworkConfig) -> None:
    """One line per node (name, id, addresses) on stdout; the file written on stderr."""
    from synod.crypto import node_id_text

    for node in config.nodes:
        # the submit address on a line of its own: with the 56-character id, one line
        # holding both addresses would not fit 80 columns
        click.echo(f"{node.name} {node_id_text(node.node_id)} {node.host}:{node.port}")
        click.echo(f"{'':<{len(node.name)}} submit {node.host}:{node.submit_port}")
    click.echo(f"wrote {config.path}", err=True)


@scp.command("run")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("node")
@log_level_option()
def run(directory: Path, node: str, log_level: str) -> None:
    """Run NODE of the network in DIRECTORY until SIGINT/SIGTERM.

    Prints one JSON line when ready and one per externalized slot.
    """
    config = load_config(directory)
    entry = find_node(config, node)
    keys = read_node_keys(
        entry.key_file,
        entry.node_id,
        f"holds the key of another node than {entry.name}'s id in {config.path}",
    )
    _warn_unless_quorums_intersect(config)
    main = _run_node(config, entry, keys) if config.stellar is None else _run_stellar(
        config, entry, keys
    )
    run_process(main, log_level, listen_failure=f"{entry.name}: cannot listen")


def _warn_unless_quorums_intersect(config: NetworkConfig) -> None:
    """A network whose quorums need not intersect can fork (`init` refuses to write one
    unless forced): say so, on stderr, before the node starts."""
    from synod.fbas import check_intersection, from_quorum_sets, iter_bits

    fbas = from_quorum_sets(
        {node.node_id: node.quorum_set for node in config.nodes},
        {node.node_id: node.name for node in config.nodes},
    )
    result = check_intersection(fbas)
    if result.intersects is False and result.witness is not None:
        first, second = (
            sorted(fbas.nodes[index].name or "?" for index in iter_bits(quorum))
            for quorum in result.witness
        )
        click.echo(
            f"warning: {config.path}: the quorums {{{', '.join(first)}}} and "
            f"{{{', '.join(second)}}} share no node: they can decide differently (fork)",
            err=True,
        )



async def _run_node(config: NetworkConfig, entry: NodeEntry, keys: KeyPair) -> int:
    import logging

    from synod.runtime.scp_node import HostFailed, NodeAlreadyRunning, RestoreFailed, run_log_node

    log = logging.getLogger("synod.cli.scp")
    try:
        await run_log_node(
            config,
            entry,
            keys,
            on_appended=partial(_print_appended, entry.name),
            on_ready=partial(_ready, log, config.path.parent),
        )
    except NodeAlreadyRunning as error:
        raise already_running(error) from None
    except RestoreFailed as error:
        raise click.ClickException(str(error)) from None
    except HostFailed as error:
        log.error("node failed", extra={"reason": str(error)})
        return EXIT_FAILED
    return 0


async def _run_stellar(config: NetworkConfig, entry: NodeEntry, keys: KeyPair) -> int:
    try:
        from synod.runtime.scp_stellar_node import run_stellar_log_node
    except ImportError:
        raise click.ClickException(
            "Stellar mode needs the stellar extra: pip install 'synod[stellar]'"
        ) from None
    from synod.runtime.scp_node import NodeAlreadyRunning, RestoreFailed

    try:
        return await run_stellar_log_node(
            config,
            entry,
            keys,
            on_closed=partial(_print_closed, entry.name),
            on_ready=partial(_stellar_ready, config.path.parent),
        )
    except NodeAlreadyRunning as error:
        raise already_running(error) from None
    except RestoreFailed as error:
        raise click.ClickException(str(error)) from None


def _stellar_ready(directory: Path, node: StellarLogNode) -> None:
    import logging

    _print_stellar_ready(node)

    def links() -> tuple[int, int]:
        status = node.status()
        return status.peers_connected, status.peers

    hint = f"are the other nodes running? `synod scp up {directory}` starts them all"
    watch_peers(links, logging.getLogger("synod.cli.scp"), hint)


def _print_stellar_ready(node: StellarLogNode) -> None:
    from synod.scp.stellar import node_id_to_strkey

    entry = node.entry
    print_json_line(
        {
            "event": "ready",
            "node": entry.name,
            "id": node_id_to_strkey(entry.node_id),
            "address": f"{entry.host}:{entry.port}",
            "overlay": "stellar",
            "restored_slots": node.restored_slots,
            "next_slot": node.next_slot,
        }
    )


def _print_closed(name: str, event: LedgerClosed) -> None:
    print_json_line(
        {
            "event": "externalized",
            "node": name,
            "slot": event.slot_index,
            "close_time": event.close_time,
            "value_sha256": value_digest(event.value),
        }
    )


def _ready(log: Any, directory: Path, node: LogNode) -> None:
    _print_ready(node)

    def links() -> tuple[int, int]:
        status = node.status()
        return status.peers_connected, status.peers

    hint = f"are the other nodes running? `synod scp up {directory}` starts them all"
    watch_peers(links, log, hint)


def _print_ready(node: LogNode) -> None:
    from synod.crypto import node_id_text

    entry = node.entry
    print_json_line(
        {
            "event": "ready",
            "node": entry.name,
            "id": node_id_text(entry.node_id),
            "address": f"{entry.host}:{entry.port}",
            "submit_address": f"{entry.host}:{entry.submit_port}",
            "restored_slots": node.restored_slots,
            "next_slot": node.core.scp.next_slot_index,
            "pending": len(node.core.pending),
        }
    )


def _print_appended(name: str, event: LogAppended) -> None:
    print_json_line(
        {
            "event": "externalized",
            "node": name,
            "slot": event.slot_index,
            "entries": event.entries,
            "value_sha256": value_digest(event.value),
        }
    )


@scp.command("submit")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("node")
@click.argument("values", nargs=-1)
@click.option("--timeout", "timeout_s", type=FiniteFloatRange(0.1), default=5.0, show_default=True)
def submit(directory: Path, node: str, values: tuple[str, ...], timeout_s: float) -> None:
    """Hand VALUES (or, with none given, each line of standard input) to a running NODE.

    Returns once the node has stored them; they are then proposed for the next slots.
    Exit 0: stored; 1: refused by the node; 2: configuration error; 3: no answer.
    """
    import asyncio

    from synod.runtime.scp_node import SubmitRefused, SubmitUnanswered, submit_entries

    config = load_config(directory)
    entry = find_node(config, node)
    if config.stellar is not None:
        raise click.UsageError(
            f"{config.path} is a Stellar-mode network: its slots decide StellarValues and "
            "take no entries (transaction sets are not carried yet)"
        )
    entries = list(values) if values else [line.rstrip("\r\n") for line in sys.stdin]
    entries = [text for text in entries if text]
    if not entries:
        raise click.UsageError("no values given (arguments or lines on standard input)")
    if not all(entry_fits(text) for text in entries):
        raise click.BadParameter(f"each value must be 1..{MAX_ENTRY_BYTES} bytes of UTF-8")
    waiting = (
        f"waiting for {entry.name} ({entry.host}:{entry.submit_port}) to store the values "
        f"(up to {timeout_s:g} s, --timeout)"
    )
    try:
        with notice_if_slow(waiting):
            reply = asyncio.run(
                submit_entries((entry.host, entry.submit_port), entries, timeout_s=timeout_s)
            )
    except SubmitUnanswered as error:
        where = f"{entry.name} ({entry.host}:{entry.submit_port})"
        click.echo(f"{where}: {printable(error.reason)}", err=True)
        click.echo(
            f"is it running? start the network with `synod scp up {directory}` or the node "
            f"with `synod scp run {directory} {entry.name}`; if it is busy, give it more "
            "--timeout",
            err=True,
        )
        sys.exit(EXIT_UNREACHABLE)
    except SubmitRefused as error:
        click.echo(f"{entry.name} refused: {printable(error.reason)}", err=True)
        sys.exit(EXIT_FAILED)
    noun = "entry" if reply.queued == 1 else "entries"
    click.echo(f"{entry.name}: {reply.queued} new {noun} stored; {reply.pending} pending")


@scp.command("status")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def status(directory: Path, as_json: bool) -> None:
    """Show each node's externalized log slot by slot, from the SQLite files (read-only),
    and on stderr each node as it answers over its submit port (slot, lag, pending,
    peers connected; down when it does not answer) beside the processes `synod scp up`
    started.

    Exit 0 when no two nodes hold different values for a slot, 1 when some do or a
    node's store cannot be read (the other nodes' logs are shown all the same).
    """
    from synod.cli.supervise import live_rows, print_live_rows
    from synod.runtime.scp_node import LogReadError, read_log

    config = load_config(directory)
    ports = {node.name: (node.host, node.submit_port) for node in config.nodes}
    live = live_rows(directory, ports)
    print_live_rows(live, err=True)  # asked over the network, not read from the stores
    found: dict[str, dict[int, bytes] | None] = {}
    unreadable: dict[str, str] = {}
    for node in config.nodes:
        # one broken store is reported beside the others' logs, not instead of them
        try:
            found[node.name] = read_log(config.store_path(node))
        except LogReadError as error:
            unreadable[node.name] = str(error)
    missing = [name for name, log in found.items() if log is None]
    comparison = compare_logs({name: log or {} for name, log in found.items()})
    if as_json:
        document = {**comparison_document(comparison, missing), "live": live}
        click.echo(json.dumps({**document, "unreadable": unreadable}, ensure_ascii=False))
    else:
        print_comparison(comparison, title=f"{config.path.parent}: externalized slots")
        if not comparison.rows:
            click.echo("no slot externalized yet")
        if missing:
            click.echo(f"no store yet (never ran): {', '.join(missing)}")
    for reason in unreadable.values():
        click.echo(f"unreadable store: {reason}", err=True)
    sys.exit(0 if comparison.agree and not unreadable else EXIT_FAILED)


# ---------------------------------------------------------------- printing logs


def comparison_document(comparison: Comparison, missing: Sequence[str] = ()) -> dict[str, Any]:
    """The comparison as plain JSON data."""
    return {
        "nodes": comparison.nodes,
        "never_ran": list(missing),
        "agree": comparison.agree,
        "disagreements": comparison.disagreements,
        "gaps": comparison.gaps,
        "slots": [
            {
                "slot": row.slot_index,
                "agree": row.agree,
                "values": {
                    node: None
                    if value is None
                    else {"entries": decode_batch(value), "value_sha256": value_digest(value)}
                    for node, value in row.values.items()
                },
            }
            for row in comparison.rows
        ],
    }


PER_NODE_COLUMNS_UP_TO = 4
"""Above this many nodes a row shows the slot's value once and which nodes hold it, so
the table fits 80 columns."""


def print_comparison(comparison: Comparison, *, title: str, brief: bool = False) -> None:
    """A table: one row per slot and a verdict per slot; one column per node for up to
    four nodes, else the value once and the nodes that hold another or none."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Entries and node names come from peers and files: printed as text, never as markup.
    table = Table(title=Text(title))
    table.add_column("slot", justify="right")
    per_node = len(comparison.nodes) <= PER_NODE_COLUMNS_UP_TO
    headers = comparison.nodes if per_node else ["value", "held by"]
    for header in headers:
        table.add_column(Text(header))
    table.add_column("agree")
    for row in comparison.rows:
        cells = _node_cells(comparison, row, brief) if per_node else _summary_cells(row, brief)
        verdict = Text("yes") if row.agree else Text("NO", style="red")
        table.add_row(str(row.slot_index), *cells, verdict)
    Console().print(table)


def _node_cells(comparison: Comparison, row: SlotRow, brief: bool) -> list[Text]:
    from rich.text import Text

    first = next(iter(row.distinct_values), None)
    cells = []
    for node in comparison.nodes:
        value = row.values[node]
        differs = value is not None and value != first
        cells.append(Text(value_label(value, brief=brief), style="red" if differs else ""))
    return cells


def _summary_cells(row: SlotRow, brief: bool) -> list[Text]:
    """The value most nodes hold, and who holds it, another value, or none."""
    from collections import Counter

    from rich.text import Text

    counts = Counter(value for value in row.values.values() if value is not None)
    if not counts:
        return [Text("-"), Text(f"none of {len(row.values)}")]
    common, holders = counts.most_common(1)[0]
    others = sorted(name for name, value in row.values.items() if value not in (common, None))
    missing = sorted(name for name, value in row.values.items() if value is None)
    held = f"{holders} of {len(row.values)}"
    if others:
        held += "; other value: " + ", ".join(others)
    if missing:
        held += "; none yet: " + ", ".join(missing)
    return [Text(value_label(common, brief=True)), Text(held, style="red" if others else "")]


def value_label(value: bytes | None, *, brief: bool = False) -> str:
    """A short human label of a slot value: its entries (or, `brief`, their count and
    the value's digest); a digest alone for a value that is not a batch."""
    if value is None:
        return "-"
    entries = decode_batch(value)
    if entries is None:
        return "#" + value_digest(value)[:12]
    if brief:
        return f"{len(entries)} value{'s' if len(entries) != 1 else ''} #{value_digest(value)[:8]}"
    text = ", ".join(entries)
    return text if len(text) <= 40 else text[:37] + "..."



def _plan(directory: Path) -> Any:
    from synod.runtime.supervisor import plan_scp

    return plan_scp(directory)


add_supervision_commands(scp, _plan, "scp", with_status=False)
