"""`synod fbas`: analyse federated networks (quorum intersection, blocking and splitting
sets, top tier) from stellarbeat or stellar-core quorum JSON.

Exit codes: 0 the analysis ran (for `check`: quorum intersection holds); 1 `check` found
two disjoint quorums (or no quorum at all); 2 the input or the options are wrong; 3
`--timeout` ended the analysis first (the best answer found and proven bounds are shown;
for `report` and `diff`: at least one of their answers is not proven); 130 Ctrl-C.
Tables go to stdout, progress to stderr (when it is a terminal, or with --progress).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from synod.cli.common import SECONDS, wrapped

if TYPE_CHECKING:
    from synod.fbas.analysis import MinimalSetResult
    from synod.fbas.load import LoadOptions
    from synod.fbas.network import Fbas


class InputProblem(click.ClickException):
    """A user error: message on stderr, exit code 2, no traceback."""

    exit_code = 2


@dataclass
class Settings:
    path: Path
    orgs: Path | None
    input_format: str
    missing_qset: str
    unknown_validators: str
    inactive: str
    insane: str
    check_keys: bool
    as_json: bool
    progress: bool
    timeout: float | None = None
    without: tuple[str, ...] = ()
    add_qset: Path | None = None
    started: float = 0.0


MAX_INPUT_BYTES = 256 * 1024 * 1024
"""Largest network file read: parsed JSON takes about ten times its size in memory, so
a file of gigabytes would exhaust the machine before any check.  Stellarbeat snapshots of
the public network are a few megabytes; 10,000 nodes of 10 KiB each fit."""


def _read_json(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as error:
        raise InputProblem(f"{path}: cannot read ({error.strerror or error})") from None
    if len(raw) > MAX_INPUT_BYTES:
        raise InputProblem(f"{path}: larger than {MAX_INPUT_BYTES // 2**20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputProblem(f"{path}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise InputProblem(
            f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except RecursionError:
        raise InputProblem(f"{path}: JSON nested too deeply to be a network file") from None


def _load(settings: Settings) -> Fbas:
    from synod.fbas.load import (
        FbasInputError,
        OrganisationsInputError,
        detect_format,
        load_python_fbas,
        load_stellar_core,
        load_stellarbeat,
    )

    if settings.input_format == "synod" or settings.path.suffix == ".toml":
        return _what_if(settings, _load_synod(settings, options_of(settings)))
    data = _read_json(settings.path)
    organizations = _read_json(settings.orgs) if settings.orgs else None
    options = options_of(settings)
    input_format = settings.input_format
    if input_format == "auto":
        input_format = detect_format(data)
    try:
        if input_format in ("stellar-core", "python-fbas"):
            if organizations is not None:
                raise InputProblem("--orgs applies to stellarbeat input only")
            loader = load_stellar_core if input_format == "stellar-core" else load_python_fbas
            fbas = loader(data, options)
        else:
            fbas = load_stellarbeat(data, options, organizations)
    except OrganisationsInputError as error:
        raise InputProblem(f"{settings.orgs}: {error}") from None
    except FbasInputError as error:
        raise InputProblem(f"{settings.path}: {error}") from None
    fbas = _what_if(settings, fbas)
    for note in fbas.notes:
        # a warning about the data, not progress: shown even when output is piped
        click.echo(f"note: {note}", err=True)
    return fbas


def _what_if(settings: Settings, fbas: Fbas) -> Fbas:
    """The network after the proposed quorum-set changes, then without the named nodes."""
    from synod.fbas.load import FbasInputError, apply_quorum_set_changes, select_nodes
    from synod.fbas.network import without

    if settings.add_qset is not None:
        document = _read_json(settings.add_qset)
        try:
            fbas = apply_quorum_set_changes(fbas, document, options_of(settings))
        except FbasInputError as error:
            raise InputProblem(f"{settings.add_qset}: {error}") from None
    if settings.without:
        try:
            removed = select_nodes(fbas, settings.without)
        except FbasInputError as error:
            raise InputProblem(f"--without: {error}") from None
        fbas = without(fbas, removed)
    return fbas


def _stop(settings: Settings) -> Callable[[], bool] | None:
    """The analyses' stop request: past the --timeout deadline (None without one)."""
    if settings.timeout is None:
        return None
    import time

    deadline = settings.started + settings.timeout
    return lambda: time.monotonic() >= deadline


def _stopped_early() -> None:
    """Exit 3: the answer printed is the best found before --timeout, not proven."""
    sys.exit(3)


def options_of(settings: Settings) -> LoadOptions:
    from synod.fbas.load import LoadOptions

    return LoadOptions(
        missing_qset=settings.missing_qset,  # type: ignore[arg-type]
        unknown_validators=settings.unknown_validators,  # type: ignore[arg-type]
        inactive=settings.inactive,  # type: ignore[arg-type]
        insane=settings.insane,  # type: ignore[arg-type]
        check_keys=settings.check_keys,
    )


def _load_synod(settings: Settings, options: LoadOptions) -> Fbas:
    """A synod SCP network file (``network.toml``, as `synod scp init` writes it)."""
    from synod.cli.common import config_errors
    from synod.fbas.load import FbasInputError, from_quorum_sets
    from synod.scp.network import load_network

    if settings.path.name != "network.toml":
        raise InputProblem(f"{settings.path}: a synod network file is named network.toml")
    if settings.orgs:
        raise InputProblem("--orgs applies to stellarbeat input only")
    try:
        with config_errors(f"synod scp init {settings.path.parent}"):
            config = load_network(settings.path.parent)
        qsets: dict[bytes, Any] = {node.node_id: node.quorum_set for node in config.nodes}
        names: dict[bytes, str] = {node.node_id: node.name for node in config.nodes}
        organizations: dict[bytes, str] = {
            node.node_id: node.organisation for node in config.nodes if node.organisation
        }
        return from_quorum_sets(qsets, names, organizations, options)
    except click.ClickException as error:
        raise InputProblem(error.format_message()) from None
    except FbasInputError as error:
        raise InputProblem(f"{settings.path}: {error}") from None


def _progress(settings: Settings, message: str) -> None:
    if settings.progress:
        import time

        now = time.monotonic()
        _HEARTBEAT.last = now
        click.echo(f"[{now - settings.started:6.1f} s] {message}", err=True)


class _Heartbeat:
    """With progress on, a line every `HEARTBEAT_S` seconds in which the analysis said
    nothing: one search step can take minutes, and a silent terminal looks hung."""

    HEARTBEAT_S = 5.0

    def __init__(self) -> None:
        import threading

        self.last = 0.0
        self.stopped = threading.Event()

    def start(self, settings: Settings) -> None:
        import threading
        import time

        self.last = time.monotonic()
        self.stopped.clear()
        threading.Thread(target=self._run, args=(settings,), daemon=True).start()

    def _run(self, settings: Settings) -> None:
        import time

        while not self.stopped.wait(1.0):
            now = time.monotonic()
            if now - self.last >= self.HEARTBEAT_S:
                self.last = now
                click.echo(
                    f"[{now - settings.started:6.1f} s] still searching (Ctrl-C stops; "
                    "--timeout S: the best answer by then)",
                    err=True,
                )


_HEARTBEAT = _Heartbeat()


def _reporter(settings: Settings) -> Callable[[str], None]:
    return lambda message: _progress(settings, message)


def _common(function: Callable[..., Any]) -> Callable[..., Any]:
    """The input and semantics options every subcommand takes."""
    decorators = [
        click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
        click.option(
            "--orgs",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="stellarbeat organisations JSON ([{id, name, validators}]).",
        ),
        click.option(
            "--format",
            "input_format",
            type=click.Choice(["auto", "stellarbeat", "stellar-core", "python-fbas", "synod"]),
            default="auto",
            show_default=True,
            help="Input format (auto: .toml is a synod network.toml, an object with "
            "'nodes' is stellar-core's quorum JSON, one with 'validators' and 'qsets' is "
            "python-fbas JSON, an array is stellarbeat).",
        ),
        click.option(
            "--missing-qset",
            type=click.Choice(["exclude", "unconstrained"]),
            default="exclude",
            show_default=True,
            help="A node without quorum set is never in a quorum, or satisfied by any set.",
        ),
        click.option(
            "--unknown-validators",
            type=click.Choice(["missing", "error"]),
            default="missing",
            show_default=True,
            help="Validators named in quorum sets but absent: nodes without quorum set, "
            "or an error.",
        ),
        click.option(
            "--inactive",
            type=click.Choice(["keep", "drop", "drop-non-validating"]),
            default="keep",
            show_default=True,
            help="Treat inactive (or also non-validating) nodes as having no quorum set.",
        ),
        click.option(
            "--insane",
            type=click.Choice(["error", "exclude"]),
            default="error",
            show_default=True,
            help="A quorum set failing stellar-core's sanity rules: an error, or ignored.",
        ),
        click.option(
            "--check-keys/--no-check-keys",
            default=True,
            show_default=True,
            help="Require Stellar strkeys (G..., checksum verified) as node ids.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout."),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Progress on stderr (default: when stderr is a terminal).",
        ),
        click.option(
            "--timeout",
            type=SECONDS,
            default=None,
            help="Seconds: then stop and report the best answer found with proven bounds "
            "(exit 3).",
        ),
        click.option(
            "--without",
            multiple=True,
            metavar="ORG|NODE",
            help="Analyse as if these failed or left: an organisation, home domain, node "
            "name or public key (repeatable).",
        ),
        click.option(
            "--add-qset",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="A proposed quorum-set change: JSON {publicKey, quorumSet} (or a list).",
        ),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _settings(**options: Any) -> Settings:
    import time

    progress = options.pop("progress")
    if progress is None:
        progress = sys.stderr.isatty()
    _exit_on_interrupt()
    settings = Settings(progress=progress, started=time.monotonic(), **options)
    if progress:
        _HEARTBEAT.start(settings)
    return settings


def _node_json(fbas: Fbas, nodes: int) -> list[dict[str, Any]]:
    from synod.fbas.network import iter_bits

    return [
        {"publicKey": fbas.nodes[v].public_key, "name": fbas.nodes[v].name}
        for v in iter_bits(nodes)
    ]


def _print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Names, domains and keys come from the data file: printed as text, never as markup.
    table = Table(title=Text(title), title_justify="left")
    for column in columns:
        table.add_column(Text(column))
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    Console(soft_wrap=False).print(table)


def _node_rows(fbas: Fbas, nodes: int, grouping: str | None = "org") -> list[list[str]]:
    from synod.fbas.network import abbreviate_key, iter_bits

    rows = []
    for v in iter_bits(nodes):
        info = fbas.nodes[v]
        group = fbas.group_label(v, grouping) or ""
        rows.append([info.name or "", abbreviate_key(info.public_key), group])
    return rows


class _InterruptibleGroup(click.Group):
    """Ctrl-C during a SAT solve reaches pysat's own SIGINT handler, which raises its
    ``pysolvers.error`` rather than KeyboardInterrupt: end with status 130, no
    traceback, and say how to get a bounded answer instead."""

    def invoke(self, ctx: click.Context) -> Any:
        import signal

        previous = signal.getsignal(signal.SIGINT)
        try:
            return _off_the_main_thread(lambda: super(_InterruptibleGroup, self).invoke(ctx))
        except Exception as error:
            if "keyboard interrupt" not in str(error).lower():
                raise
            _interrupted()
        except KeyboardInterrupt:
            _interrupted()
        finally:
            _HEARTBEAT.stopped.set()
            if _in_main_thread():
                signal.signal(signal.SIGINT, previous)  # callers in-process keep theirs


_INTERRUPTED_MESSAGE = (
    "interrupted: no answer yet\n"
    "(--timeout SECONDS ends a long search with the best answer found and bounds)"
)


def _interrupted() -> NoReturn:
    """End an analysis that Ctrl-C interrupted.  As its own process it ends without
    unwinding: pysat's SIGINT handler leaves the C solve by a long jump, and finalising
    that solver on the way out can hang (seen once in many runs, the process still there
    10 s after Ctrl-C); an analysis only reads its input, so nothing is lost."""
    import os

    from synod.cli import common

    click.echo(_INTERRUPTED_MESSAGE, err=True)
    if common.as_own_process:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    raise click.exceptions.Exit(130)


def _exit_on_interrupt() -> None:
    """Ctrl-C outside the solver ends the analysis at once.  A KeyboardInterrupt is not
    enough: one raised while pysat's ``Solver.__del__`` runs is printed as "Exception
    ignored" and swallowed, and the search goes on for minutes.  An analysis holds
    nothing to save (it only reads its input), so exiting here loses nothing."""
    import signal

    def on_interrupt(number: int, frame: object) -> None:
        _end_interrupted()

    if _in_main_thread():  # signal handlers can only be set there
        signal.signal(signal.SIGINT, on_interrupt)


def _off_the_main_thread(call: Callable[[], Any]) -> Any:
    """Run an analysis in a thread of its own, as its own process, with Ctrl-C left to
    the kernel's default action: the process ends at once, as killed by SIGINT (the
    shell shows status 130), printing nothing.

    Why not a Python handler: pysat's solvers hold the interpreter lock through a whole
    C solve (the MaxSAT search's calls are not conflict-limited), so no Python code, a
    handler or a thread waiting for the signal, runs until the call returns: the
    process went on for minutes after Ctrl-C.  And on the main thread pysat puts its own
    C handler in place around each solve, which leaves the solver by a long jump; a
    Ctrl-C landing then hung or aborted the process (about one run in six).  Off the
    main thread pysat installs nothing.  An analysis only reads its input, so ending
    without unwinding loses nothing."""
    import signal
    import threading

    from synod.cli import common

    if not (common.as_own_process and _in_main_thread()):
        return call()
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as error:  # re-raised on the main thread below
            failure.append(error)

    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        worker = threading.Thread(target=run, name="fbas analysis", daemon=True)
        worker.start()
        worker.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    if failure:
        raise failure[0]
    return outcome[0] if outcome else None


def _end_interrupted() -> NoReturn:
    """Say that Ctrl-C ended the analysis, and end the process without unwinding."""
    import os

    sys.stdout.flush()
    sys.stderr.write(_INTERRUPTED_MESSAGE + "\n")
    sys.stderr.flush()
    os._exit(130)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@click.group(cls=_InterruptibleGroup)
def fbas() -> None:
    """Analyse federated Byzantine agreement systems (Stellar-style quorum sets)."""


@fbas.command("check")
@_common
def check(**options: Any) -> None:
    """Quorum intersection: do every two quorums share a node? (exit 1 when not)"""
    from synod.fbas.analysis import check_intersection

    settings = _settings(**options)
    network = _load(settings)
    result = check_intersection(network, _reporter(settings), stop=_stop(settings))
    if settings.as_json:
        document: dict[str, Any] = {
            "nodes": len(network),
            "hasQuorum": result.has_quorum,
            "quorumIntersection": result.intersects,
            "greatestQuorumSize": result.greatest_quorum.bit_count(),
            "method": result.method,
            "notes": list(network.notes),
        }
        if result.witness:
            document["disjointQuorums"] = [_node_json(network, q) for q in result.witness]
        click.echo(json.dumps(document, indent=2))
    elif result.intersects is None:
        click.echo(f"Quorum intersection undecided after {settings.timeout} s (--timeout).")
    elif not result.has_quorum:
        click.echo("No quorum exists: no set of nodes satisfies all its members' quorum sets.")
    elif result.intersects:
        # Two lines: the verdict, then the figures, each well within 80 columns.
        click.echo("Quorum intersection holds: every two quorums intersect")
        click.echo(
            f"  ({len(network)} nodes, {result.greatest_quorum.bit_count()} can be in a quorum)."
        )
    else:
        click.echo("Quorum intersection FAILS: these two quorums are disjoint.")
        assert result.witness is not None
        for number, quorum in enumerate(result.witness, start=1):
            _print_table(
                f"quorum {number}",
                ["name", "public key", "organisation"],
                _node_rows(network, quorum),
            )
    if result.intersects is None:
        _stopped_early()
    if not (result.has_quorum and result.intersects):
        sys.exit(1)


_GROUP_BY = click.option(
    "--group-by",
    type=click.Choice(["node", "org", "domain", "isp", "country"]),
    default="node",
    show_default=True,
    help="Count failures by node, or by whole organisation, home domain, ISP or country.",
)
_ALL = click.option(
    "--all",
    "limit",
    type=click.IntRange(1, 100000),
    default=1,
    help="List up to this many minimum sets (default: one example).",
)


def _grouping(group_by: str) -> str | None:
    return None if group_by == "node" else group_by


def _report_sets(network: Fbas, result: MinimalSetResult, settings: Settings, what: str) -> None:
    unit = "nodes" if result.grouping is None else f"{result.grouping} groups"
    if settings.as_json:
        document: dict[str, Any] = {
            "analysis": result.kind,
            "groupBy": result.grouping or "node",
            "minimumSize": result.size if result.optimal else None,
            "optimal": result.optimal,
            "lowerBound": result.lower_bound,
            "upperBound": result.size,
            "complete": result.complete,
            "sets": [
                {
                    **({"groups": [g.label for g in example.groups]} if result.grouping else {}),
                    "nodes": _node_json(network, example.nodes),
                    **(
                        {"quorums": [_node_json(network, q) for q in example.quorums]}
                        if example.quorums
                        else {}
                    ),
                }
                for example in result.examples
            ],
            "notes": list(network.notes) + list(result.notes),
        }
        click.echo(json.dumps(document, indent=2))
        return
    if not result.optimal:
        found = "none found" if result.size is None else f"best found {result.size}"
        click.echo(
            wrapped(
                f"Smallest {result.kind} set not proven within {settings.timeout} s: at "
                f"least {result.lower_bound} {unit}, {found} ({what}).",
                at=" ",
            )
        )
    elif result.size is None:
        click.echo(f"No {result.kind} set exists ({what}).")
        return
    else:
        click.echo(wrapped(f"Smallest {result.kind} set: {result.size} {unit} ({what}).", at=" "))
    for number, example in enumerate(result.examples, start=1):
        if result.grouping is None:
            rows = _node_rows(network, example.nodes)
            _print_table(f"set {number}", ["name", "public key", "organisation"], rows)
        else:
            from synod.fbas.analysis import labels

            rows = [[g.label, ", ".join(labels(network, g.nodes))] for g in example.groups]
            _print_table(f"set {number}", [result.grouping, "nodes"], rows)
        if example.quorums:
            from synod.fbas.analysis import labels

            first, second = (", ".join(labels(network, q)) for q in example.quorums)
            click.echo(f"  then these two quorums are disjoint:\n    {first}\n    {second}")
    if result.optimal and not result.complete:
        click.echo("(more minimum sets may exist: use --all N to list them)")


@fbas.command("blocking")
@_common
@_GROUP_BY
@_ALL
def blocking(group_by: str, limit: int, **options: Any) -> None:
    """Minimal blocking sets: the fewest failures that leave no quorum (liveness buffer)."""
    from synod.fbas.analysis import minimal_blocking_sets

    settings = _settings(**options)
    network = _load(settings)
    result = minimal_blocking_sets(
        network, _grouping(group_by), limit, progress=_reporter(settings), stop=_stop(settings)
    )
    _report_sets(network, result, settings, "if these fail, no quorum remains")
    if not result.optimal:
        _stopped_early()


@fbas.command("splitting")
@_common
@_GROUP_BY
@_ALL
@click.option(
    "--scope",
    type=click.Choice(["top-tier", "all"]),
    default="top-tier",
    show_default=True,
    help="Which nodes may form the two split quorums.",
)
def splitting(group_by: str, limit: int, scope: str, **options: Any) -> None:
    """Minimal splitting sets: the fewest Byzantine nodes that allow two disjoint quorums
    (safety buffer)."""
    from synod.fbas.analysis import minimal_splitting_sets

    settings = _settings(**options)
    network = _load(settings)
    result = minimal_splitting_sets(
        network,
        _grouping(group_by),
        limit,
        scope="all" if scope == "all" else "top-tier",
        progress=_reporter(settings),
        stop=_stop(settings),
    )
    _report_sets(network, result, settings, "if these lie, two quorums can disagree")
    if not result.optimal:
        _stopped_early()


@fbas.command("top-tier")
@_common
@_GROUP_BY
@click.option(
    "--minimal-quorums",
    "quorum_limit",
    type=click.IntRange(0, 1000000),
    default=0,
    help="Also enumerate up to this many minimal quorums.",
)
def top_tier_command(group_by: str, quorum_limit: int, **options: Any) -> None:
    """The top tier: the union of all minimal quorums."""
    from synod.fbas.analysis import (
        enumerate_minimal_quorums,
        group_summary,
        labels,
        top_tier,
    )

    settings = _settings(**options)
    network = _load(settings)
    result = top_tier(network, _reporter(settings), stop=_stop(settings))
    grouping = _grouping(group_by)
    quorums: list[int] = []
    complete = True
    if quorum_limit:
        quorums, complete = enumerate_minimal_quorums(network, quorum_limit, _reporter(settings))
    if settings.as_json:
        document: dict[str, Any] = {
            "topTier": _node_json(network, result.nodes),
            "size": result.nodes.bit_count(),
            "groups": [
                {"group": label, "nodes": count}
                for label, count in group_summary(network, result.nodes, grouping)
            ],
        }
        if quorum_limit:
            document["minimalQuorums"] = [_node_json(network, q) for q in quorums]
            document["minimalQuorumsComplete"] = complete
        document["undecided"] = _node_json(network, result.undecided)
        click.echo(json.dumps(document, indent=2))
        if result.undecided:
            _stopped_early()
        return
    if not result.nodes and not result.undecided:
        click.echo("No quorum exists, so there is no top tier.")
        return
    if result.undecided:
        click.echo(
            wrapped(
                f"Top tier not decided within {settings.timeout} s: "
                f"{result.nodes.bit_count()} nodes are in it, "
                f"{result.undecided.bit_count()} more are undecided.",
                at=" ",
            )
        )
    else:
        click.echo(f"Top tier: {result.nodes.bit_count()} nodes.")
    if grouping is None:
        _print_table(
            "top tier", ["name", "public key", "organisation"], _node_rows(network, result.nodes)
        )
    else:
        rows = [
            [label, str(count)] for label, count in group_summary(network, result.nodes, grouping)
        ]
        _print_table("top tier", [grouping, "nodes"], rows)
    if quorum_limit:
        state = "all" if complete else f"first {len(quorums)}"
        click.echo(f"Minimal quorums ({state}):")
        for quorum in quorums:
            click.echo("  " + ", ".join(labels(network, quorum)))
    if result.undecided:
        _stopped_early()


@fbas.command("graph")
@_common
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Output file: .png (matplotlib) or .html (self-contained SVG).",
)
@_GROUP_BY
def graph(output: Path, group_by: str, **options: Any) -> None:
    """Draw the trust graph: groups (organisations by default) clustered, the top tier
    highlighted."""
    from synod.fbas.analysis import top_tier
    from synod.fbas.graph import layout, render_html

    suffix = output.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise InputProblem(f"{output}: the output must end in .png or .html")
    settings = _settings(**options)
    network = _load(settings)
    tier = top_tier(network, _reporter(settings), stop=_stop(settings)).nodes
    drawing = layout(network, tier, "org" if group_by == "node" else group_by)
    try:
        if suffix == ".png":
            _draw_png(network, drawing, output)
        else:
            output.write_text(render_html(network, drawing, f"Trust graph of {settings.path.name}"))
    except OSError as error:
        raise InputProblem(f"{output}: cannot write ({error.strerror or error})") from None
    click.echo(f"wrote {output}")


def _draw_png(network: Fbas, drawing: Any, output: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.collections import LineCollection
        from matplotlib.patches import Circle
    except ImportError:
        raise InputProblem(
            "PNG output needs matplotlib (pip install 'synod[plot]'); try .html"
        ) from None
    figure, axes = plt.subplots(figsize=(10, 10))
    segments = [(drawing.positions[v], drawing.positions[w]) for v, w in drawing.edges]
    axes.add_collection(LineCollection(segments, colors="#999999", alpha=0.12, linewidths=0.5))
    for place in drawing.groups:
        colour = "#f5a623" if place.in_top_tier else "#bbbbbb"
        axes.add_patch(Circle((place.x, place.y), place.radius, fill=False, ls="--", ec=colour))
        axes.text(place.x, place.y + place.radius + 0.01, place.label[:28], fontsize=6, ha="center")
    for node, (x, y) in drawing.positions.items():
        in_tier = drawing.top_tier >> node & 1
        colour = (
            "#e8590c" if in_tier else ("#4c6ef5" if network.qsets[node] is not None else "#adb5bd")
        )
        axes.scatter([x], [y], s=30 if in_tier else 12, c=colour, zorder=3)
    axes.set_xlim(-1.05, 1.05)
    axes.set_ylim(-1.05, 1.05)
    axes.set_aspect("equal")
    axes.axis("off")
    axes.set_title("trust graph: top tier in orange")
    figure.savefig(output, dpi=150, bbox_inches="tight")
    plt.close(figure)


@fbas.command("report")
@_common
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The HTML file to write (self-contained: it loads nothing from elsewhere).",
)
def report(output: Path, **options: Any) -> None:
    """One self-contained HTML page: every analysis, the trust graph, the what-if of
    losing each top-tier organisation, and the witnesses."""
    from synod.fbas.report import render_report, summarize, what_ifs

    if output.suffix.lower() not in (".html", ".htm"):
        raise InputProblem(f"{output}: the report is HTML; name it .html")
    settings = _settings(**options)
    network = _load(settings)
    stop = _stop(settings)
    _progress(settings, "analysing the network")
    summary = summarize(network, stop)
    _progress(settings, "what-if: each top-tier organisation removed")
    scenarios = what_ifs(network, summary, stop)
    page = render_report(network, summary, scenarios, f"FBAS report: {settings.path.name}")
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as error:
        raise InputProblem(f"{output}: cannot write ({error.strerror or error})") from None
    click.echo(f"wrote {output}")
    if not all(s.proven for s in (summary, *(scenario.summary for scenario in scenarios))):
        _stopped_early()  # the page shows bounds where a stop left an answer unproven


@fbas.command("diff")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON on stdout.")
@click.option("--progress/--no-progress", default=None, help="Progress on stderr.")
@click.option(
    "--timeout",
    type=SECONDS,
    default=None,
    help="Seconds for all analyses of both files; unproven sizes show as LOW..HIGH.",
)
def diff(old: Path, new: Path, as_json: bool, progress: bool | None, timeout: float | None) -> None:
    """What changed between two snapshots: top tier, smallest sets, intersection."""
    from synod.fbas.report import compare, summarize

    networks = []
    for path in (old, new):
        settings = _settings(
            path=path,
            orgs=None,
            input_format="auto",
            missing_qset="exclude",
            unknown_validators="missing",
            inactive="keep",
            insane="error",
            check_keys=True,
            as_json=as_json,
            progress=progress,
            timeout=timeout,
        )
        network = _load(settings)
        networks.append((network, summarize(network, _stop(settings))))
    (old_network, old_summary), (new_network, new_summary) = networks
    changes = compare(old_network, old_summary, new_network, new_summary)
    if as_json:
        document = [
            {"what": c.what, "old": c.before, "new": c.after, "changed": c.before != c.after}
            for c in changes
        ]
        click.echo(json.dumps(document, indent=2))
    else:
        rows = [
            [c.what, c.before, c.after, "" if c.before == c.after else "changed"]
            for c in changes
        ]
        _print_table(f"{old.name} -> {new.name}", ["", "old", "new", ""], rows)
    if not (old_summary.proven and new_summary.proven):
        _stopped_early()  # some answers are LOW..HIGH bounds, not proven


def _register_crawl() -> None:
    """`synod fbas crawl`: the crawl of `synod stellar crawl`, where FBAS users look for it
    (its output is the stellarbeat JSON every `synod fbas` command reads)."""
    from synod.cli.stellar import crawl

    fbas.add_command(crawl, "crawl")


_register_crawl()
