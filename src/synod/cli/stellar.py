"""`synod stellar`: speak Stellar's peer protocol (the stellar-core overlay).

`serve` runs a node that Stellar tooling can connect to: it completes the handshake,
nominates a ``StellarValue`` for one slot, and answers GET_SCP_STATE, GET_SCP_QUORUMSET
and PEERS.  `crawl` visits a network over the overlay and writes stellarbeat JSON that
every `synod fbas` command reads.  Both need the `synod[stellar]` extra.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from synod.cli.common import (
    EXIT_FAILED,
    ConfigError,
    FiniteFloatRange,
    log_level_option,
    print_json_line,
)

if TYPE_CHECKING:
    from synod.quorum.qset import QuorumSet
    from synod.stellar.peer import OverlaySettings

Command = TypeVar("Command", bound=Callable[..., Any])

NETWORKS = {
    "public": "Public Global Stellar Network ; September 2015",
    "testnet": "Test SDF Network ; September 2015",
}


def _utf8_network(_: Any, __: Any, value: str) -> str:
    try:
        value.encode()
    except UnicodeEncodeError:  # undecodable bytes of the argument: no passphrase hashes them
        raise click.BadParameter("not valid UTF-8 text", param_hint="--network") from None
    return value


def _network_option(function: Any) -> Any:
    return click.option(
        "--network",
        default="testnet",
        show_default=True,
        callback=_utf8_network,
        help="'public', 'testnet', or the passphrase of a private network.",
    )(function)


def _version_options(function: Any) -> Any:
    for name, default in (
        ("--overlay-min-version", 35),
        ("--overlay-version", 38),
        ("--ledger-version", 25),
    ):
        function = click.option(name, type=click.IntRange(0, 2**32 - 1), default=default,
                                show_default=True)(function)
    return function


def _settings_of(options: dict[str, Any]) -> OverlaySettings:
    from synod.stellar.peer import OverlaySettings

    network = options["network"]
    try:
        return OverlaySettings(
            passphrase=NETWORKS.get(network, network),
            ledger_version=options["ledger_version"],
            overlay_version=options["overlay_version"],
            overlay_min_version=options["overlay_min_version"],
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@click.group()
def stellar() -> None:
    """Stellar's peer protocol: a node Stellar tooling can connect to, and a crawler."""
    try:
        import stellar_sdk  # noqa: F401  (checked here, used by every subcommand)
    except ImportError:
        raise click.ClickException(
            "Stellar's XDR comes from stellar-sdk: pip install 'synod[stellar]'"
        ) from None


def _node_options(peer_help: str) -> Callable[[Command], Command]:
    """The options every overlay node takes: its key, where it listens, its quorum set,
    its peers, the network and versions, the log level."""

    def decorate(function: Command) -> Command:
        for option in reversed(
            (
                click.option("--key", "key_file", type=click.Path(path_type=Path),
                             required=True, help="The node's key file (synod keys generate)."),
                click.option("--listen", default="127.0.0.1:11625", show_default=True,
                             help="HOST:PORT."),
                click.option("--quorum-set", "qset_file", type=click.Path(path_type=Path),
                             required=True,
                             help="JSON {threshold, validators: [G...], innerQuorumSets: [...]}."),
                click.option("--peer", "peers", multiple=True, help=peer_help),
                _network_option,
                _version_options,
                log_level_option(),
            )
        ):
            function = option(function)
        return function

    return decorate


def _node_of(options: dict[str, Any]) -> tuple[Any, QuorumSet, tuple[str, int], list[Any]]:
    """The key, quorum set, listen address and peers the options name (user errors
    otherwise)."""
    from synod.crypto import KeyFileError, read_key_file
    from synod.runtime.stellar_overlay import parse_address

    try:
        keys = read_key_file(options["key_file"])
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    qset = read_quorum_set(options["qset_file"])
    try:
        listen = parse_address(options["listen"], any_port=True)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--listen") from None
    peers = []
    for peer in options["peers"]:
        try:
            peers.append(parse_address(peer))
        except ValueError as error:
            raise click.BadParameter(f"{peer!r}: {error}", param_hint="--peer") from None
    return keys, qset, listen, peers


@stellar.command("serve")
@_node_options("HOST:PORT to advertise in PEERS.")
@click.option("--slot", type=click.IntRange(1, 2**32 - 1), default=1, show_default=True,
              help="The slot (ledger) this node nominates a value for.")
def serve(**options: Any) -> None:
    """Run a node on the Stellar overlay; prints one JSON line when it listens."""
    from synod.cli.common import run_process

    settings = _settings_of(options)
    keys, qset, address, advertised = _node_of(options)
    run_process(
        _serve(keys, settings, qset, address=address, peers=advertised, slot=options["slot"]),
        options["log_level"],
        listen_failure=f"cannot listen on {options['listen']}",
    )


async def _serve(
    keys: Any,
    settings: OverlaySettings,
    qset: QuorumSet,
    *,
    address: tuple[str, int],
    peers: list[tuple[str, int]],
    slot: int,
) -> int:
    import asyncio
    import time

    from synod.runtime.stellar_overlay import OverlayNode
    from synod.scp.stellar import StellarNetwork, node_id_to_strkey, stellar_qset_hash
    from synod.stellar.state import ScpStateStore, stellar_value

    store = ScpStateStore()
    network = StellarNetwork(settings.passphrase)
    store.nominate(keys, network, qset, slot, stellar_value(int(time.time())))
    try:
        node = OverlayNode(keys, settings, store=store, peers=peers)
    except ValueError as error:  # a peer that is not an IPv4 address
        reason = f"expected an IPv4 HOST:PORT ({error})"
        raise click.BadParameter(reason, param_hint="--peer") from None
    bound_host, bound_port = await node.start(*address)
    print_json_line(
        {
            "event": "ready",
            "id": node_id_to_strkey(keys.node_id),
            "address": f"{bound_host}:{bound_port}",
            "quorum_set_hash": stellar_qset_hash(qset).hex(),
            "slot": slot,
        }
    )
    try:
        await asyncio.Event().wait()
    finally:
        await node.close()
    return 0


@stellar.command("run")
@_node_options("HOST:PORT of a validator to keep a connection to (and advertise).")
@click.option("--slots", type=click.IntRange(0, 1_000_000), default=1, show_default=True,
              help="Propose a StellarValue for slots 1..N, each once the previous is decided.")
@click.option("--store", "store_path", type=click.Path(path_type=Path), required=True,
              help="SQLite file of the node's votes (created; locked while it runs).")
def run(**options: Any) -> None:
    """Run an SCP validator in Stellar mode; prints a JSON line per externalized slot."""
    from synod.cli.common import run_process

    settings = _settings_of(options)
    keys, qset, listen, peers = _node_of(options)
    run_process(
        _run_validator(
            keys,
            settings,
            qset,
            listen=listen,
            peers=peers,
            slots=options["slots"],
            store_path=options["store_path"],
        ),
        options["log_level"],
        listen_failure=f"cannot listen on {options['listen']}",
    )


async def _run_validator(
    keys: Any,
    settings: OverlaySettings,
    qset: QuorumSet,
    *,
    listen: tuple[str, int],
    peers: list[tuple[str, int]],
    slots: int,
    store_path: Path,
) -> int:
    import time

    from synod.runtime.lock import NodeAlreadyRunning
    from synod.runtime.nodes import RestoreFailed
    from synod.runtime.stellar_scp import StellarScpNode
    from synod.scp.application import Externalized
    from synod.scp.stellar import node_id_to_strkey
    from synod.stellar.state import stellar_value

    node: StellarScpNode

    def decided(event: Externalized) -> None:
        print_json_line(
            {"event": "externalized", "slot": event.slot_index, "value": event.value.hex()}
        )
        if event.slot_index < slots:
            node.propose(stellar_value(int(time.time())), event.slot_index + 1)

    try:
        node = StellarScpNode(
            keys, qset, settings, peers=peers, on_externalized=decided, store_path=store_path
        )
    except ValueError as error:  # a peer that is not an IPv4 address
        reason = f"expected an IPv4 HOST:PORT ({error})"
        raise click.BadParameter(reason, param_hint="--peer") from None
    except (NodeAlreadyRunning, RestoreFailed) as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:  # its lock file beside it: not a failure to listen
        raise click.ClickException(
            f"{store_path}: cannot open the store: {error.strerror or error}"
        ) from None
    bound_host, bound_port = await node.start(*listen)
    node.connect_to(peers)
    print_json_line(
        {
            "event": "ready",
            "id": node_id_to_strkey(keys.node_id),
            "address": f"{bound_host}:{bound_port}",
        }
    )
    first = node.core.next_slot_index  # after a restart: the first slot not yet decided
    if first <= slots:
        node.propose(stellar_value(int(time.time())), first)
    try:
        await node.failed.wait()
    finally:
        await node.close()
    return EXIT_FAILED


def _output_option(_: Any, __: Any, value: Path | None) -> Path | None:
    # checked before the crawl, which may take minutes, rather than when writing after it
    if value is not None and not value.parent.is_dir():
        raise click.BadParameter(f"{value.parent} is not a directory", param_hint="--output")
    return value


@stellar.command("crawl")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              callback=_output_option,
              help="Write the stellarbeat JSON here (default: standard output).")
@click.option("--listen-s", type=FiniteFloatRange(0.1, 600), default=5.0, show_default=True,
              help="How long to wait for one node's state.")
@click.option("--timeout-s", type=FiniteFloatRange(1, 86_400), default=300.0, show_default=True,
              help="Bound on the whole crawl.")
@click.option("--max-nodes", type=click.IntRange(1, 100_000), default=5000, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True)
@_network_option
@_version_options
@log_level_option("warning")
def crawl(**options: Any) -> None:
    """Crawl a network from HOST:PORT... and write stellarbeat JSON (read by `synod fbas`)."""
    import asyncio

    from synod.runtime.logs import configure_json_logging
    from synod.runtime.stellar_overlay import CrawlLimits, parse_address
    from synod.runtime.stellar_overlay import crawl as run_crawl

    settings = _settings_of(options)
    addresses: tuple[str, ...] = options["addresses"]
    output: Path | None = options["output"]
    for address in addresses:
        try:
            parse_address(address)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="ADDRESSES") from None
    configure_json_logging(options["log_level"].upper())
    limits = CrawlLimits(
        listen_s=options["listen_s"],
        concurrency=options["concurrency"],
        max_nodes=options["max_nodes"],
        total_s=options["timeout_s"],
    )
    with _ProgressBar() as report:
        book = asyncio.run(run_crawl(addresses, settings, limits=limits, on_progress=report))
    records = book.to_stellarbeat()
    text = json.dumps(records, indent=1) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as error:  # the crawl is not lost: it goes to standard output
            click.echo(text, nl=False)
            click.echo(f"{output}: cannot write ({error.strerror or error}); "
                       "the JSON went to standard output", err=True)
            raise SystemExit(EXIT_FAILED) from None
    with_qset = sum(record["quorumSet"] is not None for record in records)
    click.echo(
        f"{len(records)} nodes, {with_qset} with a quorum set, "
        f"{book.rejected_envelopes} envelopes refused",
        err=True,
    )
    if with_qset == 0:
        raise SystemExit(EXIT_FAILED)


class _ProgressBar:
    """A progress bar on standard error while the crawl runs."""

    def __enter__(self) -> Any:
        from rich.console import Console
        from rich.progress import Progress

        self._progress = Progress(console=Console(stderr=True), transient=True)
        self._progress.start()
        self._task = self._progress.add_task("crawling", total=None)
        return self.report

    def report(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def read_quorum_set(path: Path) -> QuorumSet:
    """A quorum set from a stellarbeat-style JSON file; errors name the file and the key."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise click.ClickException(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise click.ClickException(f"{path}: not a JSON file: {error}") from None
    except RecursionError:
        raise click.ClickException(f"{path}: JSON nested too deeply for a quorum set") from None
    qset = _quorum_set(path, data, "quorumSet", depth=0)
    from synod.quorum.qset import InsaneQuorumSet, check_sanity

    try:
        check_sanity(qset)
    except InsaneQuorumSet as error:
        raise ConfigError(path, "quorumSet", str(error)) from None
    return qset


def _quorum_set(path: Path, data: Any, key: str, depth: int) -> QuorumSet:
    from synod.crypto import InvalidNodeId
    from synod.quorum.qset import QuorumSet
    from synod.scp.stellar import node_id_from_strkey

    if depth > 4 or not isinstance(data, dict):
        raise ConfigError(path, key, "an object {threshold, validators, innerQuorumSets}")
    threshold = data.get("threshold")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise ConfigError(path, f"{key}.threshold", "a positive integer")
    validators = data.get("validators", [])
    inner = data.get("innerQuorumSets", [])
    if not isinstance(validators, list) or not isinstance(inner, list):
        raise ConfigError(path, key, "validators and innerQuorumSets are lists")
    try:
        ids = tuple(node_id_from_strkey(str(text)) for text in validators)
    except InvalidNodeId as error:
        expected = f"Stellar public keys (G...): {error}"
        raise ConfigError(path, f"{key}.validators", expected) from None
    return QuorumSet(
        threshold=threshold,
        validators=ids,
        inner_sets=tuple(
            _quorum_set(path, value, f"{key}.innerQuorumSets[{index}]", depth + 1)
            for index, value in enumerate(inner)
        ),
    )
