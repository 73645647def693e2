"""`synod demo`: a local network of real node processes agreeing, with a crash in the middle.

By default (``--protocol scp``) the Stellar Consensus Protocol demonstration: four
`synod scp run` processes on 127.0.0.1 with the built-in default configuration (each
trusting any 3 of the 4) agree on a replicated log.  Values are submitted to every node
in rounds and each slot is shown as it externalizes; in the second round one node is
killed with SIGKILL while slots are in flight, the others go on without it, and it is
restarted from its SQLite file and catches up.  The demo ends with every node's log,
read from its SQLite file, compared slot by slot, and exits non-zero if any two nodes
hold different values for a slot, a node lacks a slot, a submitted value is missing or
duplicated, a node did not stop cleanly, or progress stalls.

``--protocol rbc`` runs the reliable-broadcast demonstration instead: four `synod rbc
run` processes broadcasting, the same crash and restart, deliveries compared instance
by instance.

Either way the demo removes its processes and files when it ends, however it ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import queue
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from synod.cli.cluster import ClusterError, Line, NodeProcess, drain, running

if TYPE_CHECKING:
    from synod.scp.network import NetworkConfig

STEP_TIMEOUT_S = 60.0


@dataclass
class _Tally:
    """What each node delivered: (origin name, sequence) -> payload."""

    names: list[str]
    delivered: dict[str, dict[tuple[str, int], str]] = field(default_factory=dict)
    ready: set[str] = field(default_factory=set)
    exited: set[str] = field(default_factory=set)
    echo: bool = True

    def on_line(self, name: str, line: dict[str, Any]) -> None:
        event = line.get("event")
        if event == "ready":
            self.ready.add(name)
        elif event == "exited":
            self.exited.add(name)
        elif event == "delivered":
            key = (str(line["origin_name"]), int(line["sequence"]))
            payload = str(line.get("payload", line.get("payload_hex")))
            self.delivered.setdefault(name, {})[key] = payload
            if self.echo:
                holders = [n for n in self.names if key in self.delivered.get(n, {})]
                click.echo(
                    f"  {name:>7} delivered {key[0]}#{key[1]:<3} {payload!r:<22} "
                    f"({len(holders)}/{len(self.names)} nodes have it)"
                )

    def everyone_has(self, nodes: list[str], count: int) -> bool:
        return all(len(self.delivered.get(node, {})) >= count for node in nodes)


@click.command()
@click.option(
    "--protocol",
    type=click.Choice(["scp", "rbc", "fastpay", "tusk", "crdt"]),
    default="scp",
    show_default=True,
    help="scp: nodes agree on a replicated log; rbc: reliable broadcast; "
    "fastpay: a committee pays through a shard crash; tusk: cores order through a crash; "
    "crdt: nodes type into one log, one goes offline and catches up.",
)
@click.option("--nodes", "node_count", type=click.IntRange(4, 10), default=4, show_default=True)
@click.option(
    "--values",
    "per_node",
    type=click.IntRange(1, 50),
    default=3,
    show_default=True,
    help="Values submitted to (scp) or broadcast by (rbc) each node in each round.",
)
@click.option("--keep", is_flag=True, help="Keep the working directory (logs, SQLite files).")
def demo(protocol: str, node_count: int, per_node: int, keep: bool) -> None:
    """Run a local network of real node processes, crash one, check they all agree."""
    workdir = Path(tempfile.mkdtemp(prefix="synod-demo-"))
    if protocol in COMMITTEE_DEMOS:
        click.echo(f"synod demo: {COMMITTEE_DEMOS[protocol]} on 127.0.0.1 ({workdir})")
    else:
        kind = "SCP" if protocol == "scp" else "reliable-broadcast"
        click.echo(f"synod demo: {node_count} {kind} nodes on 127.0.0.1 ({workdir})")
    previous_handler = signal.getsignal(signal.SIGINT)
    interrupted = _record_interrupts()
    try:
        ok = _run_protocol(protocol, workdir, node_count, per_node)
    except ClusterError as error:
        if interrupted.is_set():
            raise KeyboardInterrupt from None
        click.echo(f"demo failed: {error}", err=True)
        ok = False
    except Exception:
        if not interrupted.is_set():
            raise
        # What fails after Ctrl-C (a wallet saving into the directory being removed, a
        # node refusing a request while it stops) is the interrupt's doing, not a bug.
        raise KeyboardInterrupt from None
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous_handler)
        if keep:
            click.echo(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if interrupted.is_set():
        raise KeyboardInterrupt  # a verdict reached after Ctrl-C judges a cut-short run
    sys.exit(0 if ok else 1)


def _record_interrupts() -> threading.Event:
    """An event set by Ctrl-C, which still raises KeyboardInterrupt as Python's own
    handler does (the group turns it into status 130)."""
    interrupted = threading.Event()

    def on_interrupt(number: int, frame: object) -> None:
        interrupted.set()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise KeyboardInterrupt from None
        # Raised inside whatever task step was running, the interrupt would end that
        # task with it, and asyncio prints "Task exception was never retrieved" with a
        # traceback; raised from a callback of its own, it leaves the loop cleanly and
        # `asyncio.run` cancels the tasks before passing it on.
        loop.call_soon_threadsafe(_interrupt_the_loop)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_interrupt)
    return interrupted


def _interrupt_the_loop() -> None:
    raise KeyboardInterrupt


COMMITTEE_DEMOS = {
    "fastpay": "a FastPay committee",
    "tusk": "a Tusk committee",
    "crdt": "BFT-CRDT nodes and a relayer",
}
"""The demonstrations of their own modules (`synod.cli.demo_<protocol>`), and what runs."""


def _run_protocol(protocol: str, workdir: Path, node_count: int, per_node: int) -> bool:
    if protocol == "scp":
        return _run_scp(workdir, node_count, per_node)
    if protocol == "rbc":
        return _run(workdir, node_count, per_node)
    import importlib

    from synod.runtime.supervisor import SupervisorError

    module = importlib.import_module(f"synod.cli.demo_{protocol}")
    try:
        return bool(getattr(module, f"run_{protocol}_demo")(workdir))
    except SupervisorError as error:
        raise ClusterError(str(error)) from None


def _run(workdir: Path, node_count: int, per_node: int) -> bool:
    from synod.cli.rbc import print_network
    from synod.runtime.rbc_node import create_network

    print_network(create_network(workdir, nodes=node_count))  # ports picked by the kernel
    inbox: queue.Queue[Line] = queue.Queue()
    names = [f"node-{index}" for index in range(node_count)]
    nodes = [
        NodeProcess(name, ["rbc", "run", str(workdir), name], workdir / f"{name}.log", inbox)
        for name in names
    ]
    tally = _Tally(names)
    with running(nodes):
        _expect(
            drain(inbox, tally.on_line, lambda: tally.ready >= set(names), STEP_TIMEOUT_S),
            "nodes did not all start",
        )
        click.echo("all nodes listening; round 1: every node broadcasts")
        expected = _broadcast_round(nodes, 1, per_node)
        _wait_all(inbox, tally, names, expected, "round 1")

        victim = nodes[-1]
        click.echo(f"SIGKILL {victim.name}; round 2 goes on without it")
        victim.kill()
        survivors = names[:-1]
        expected += _broadcast_round(nodes[:-1], 2, per_node)
        _wait_all(inbox, tally, survivors, expected, "round 2")

        click.echo(f"restarting {victim.name} from its SQLite file")
        tally.ready.discard(victim.name)
        victim.start()
        _expect(
            drain(inbox, tally.on_line, lambda: victim.name in tally.ready, STEP_TIMEOUT_S),
            f"{victim.name} did not restart",
        )
        expected += _broadcast_round(nodes, 3, 1)
        _wait_all(inbox, tally, names, expected, "round 3 (catch-up)")
        exit_codes = {node.name: node.terminate() for node in nodes}
    return _summary(tally, names, expected, exit_codes)


def _broadcast_round(nodes: list[NodeProcess], round_number: int, per_node: int) -> int:
    for node in nodes:
        for index in range(per_node):
            node.send_line(f"r{round_number}-{node.name}-{index}")
    return len(nodes) * per_node


def _wait_all(
    inbox: queue.Queue[Line], tally: _Tally, nodes: list[str], expected: int, label: str
) -> None:
    _expect(
        drain(inbox, tally.on_line, lambda: tally.everyone_has(nodes, expected), STEP_TIMEOUT_S),
        f"{label}: progress stalled ({expected} deliveries expected on {', '.join(nodes)})",
    )


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ClusterError(message)


def _summary(
    tally: _Tally, names: list[str], expected: int, exit_codes: dict[str, int | None]
) -> bool:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="deliveries per node")
    for column in ("node", "delivered", "digest of the delivery log", "exit code"):
        table.add_column(column)
    digests = {}
    for name in names:
        log = sorted(tally.delivered.get(name, {}).items())
        digests[name] = hashlib.sha256(repr(log).encode()).hexdigest()[:16]
        table.add_row(Text(name), str(len(log)), digests[name], str(exit_codes.get(name)))
    Console().print(table)
    agree = len(set(digests.values())) == 1
    complete = tally.everyone_has(names, expected)
    clean = all(code == 0 for code in exit_codes.values())
    verdict = agree and complete and clean
    print_verdict(
        {
            "agreement": agree,
            f"every node has all {expected} values": complete,
            "clean shutdown": clean,
        }
    )
    return verdict


# ---------------------------------------------------------------- the SCP demonstration


@dataclass
class _ScpTally:
    """What each node printed: slot -> value digest, and the entries of each slot."""

    names: list[str]
    slots: dict[str, dict[int, str]] = field(default_factory=dict)
    entries: dict[str, set[str]] = field(default_factory=dict)
    ready: dict[str, dict[str, Any]] = field(default_factory=dict)
    exited: set[str] = field(default_factory=set)

    def on_line(self, name: str, line: dict[str, Any]) -> None:
        event = line.get("event")
        if event == "ready":
            self.ready[name] = line
        elif event == "exited":
            self.exited.add(name)
        elif event == "externalized":
            slot = int(line["slot"])
            self.slots.setdefault(name, {})[slot] = str(line["value_sha256"])
            entries = [str(entry) for entry in line.get("entries") or []]
            self.entries.setdefault(name, set()).update(entries)
            holders = sum(slot in self.slots.get(node, {}) for node in self.names)
            shown = ", ".join(entries)
            if len(shown) > 48:
                shown = shown[:45] + "..."
            click.echo(
                f"  slot {slot:>3} externalized on {name:<7} [{shown}] "
                f"({holders}/{len(self.names)} nodes)"
            )

    def have_all(self, nodes: list[str], expected: set[str]) -> bool:
        return all(expected <= self.entries.get(node, set()) for node in nodes)

    def add_restored(self, name: str, log: Mapping[int, bytes]) -> None:
        """Count what a restarted node holds from before its crash: it does not print
        restored slots again, and a SIGKILL can fall between its commit and its print."""
        from synod.scp.log import decode_batch, value_digest

        for slot, value in log.items():
            self.slots.setdefault(name, {})[slot] = value_digest(value)
            self.entries.setdefault(name, set()).update(decode_batch(value) or [])


@dataclass(frozen=True, slots=True)
class ScpVerdict:
    """The demo's conclusion from every node's stored log."""

    agree: bool
    """No slot where two nodes hold different values (SCP's safety)."""
    complete: bool
    """Every node holds every slot that any node decided."""
    exactly_once: bool
    """Every submitted value is in the log exactly once, and nothing else is."""
    clean: bool
    """Every node stopped with exit code 0 on SIGTERM."""

    @property
    def ok(self) -> bool:
        return self.agree and self.complete and self.exactly_once and self.clean


def judge_scp_logs(
    logs: Mapping[str, Mapping[int, bytes]],
    submitted: Set[str],
    exit_codes: Mapping[str, int | None],
) -> ScpVerdict:
    """Compare the nodes' logs slot by slot and check them against what was submitted."""
    from synod.scp.log import compare_logs, decode_batch

    comparison = compare_logs(logs)
    exactly_once = bool(comparison.rows) and comparison.agree
    if exactly_once:
        logged: list[str] = []
        for row in comparison.rows:
            value = next(iter(row.distinct_values))
            entries = decode_batch(value)
            if entries is None:
                exactly_once = False
                break
            logged.extend(entries)
        exactly_once = exactly_once and sorted(logged) == sorted(submitted)
    return ScpVerdict(
        agree=comparison.agree,
        complete=comparison.complete,
        exactly_once=exactly_once,
        clean=bool(exit_codes) and all(code == 0 for code in exit_codes.values()),
    )


def _run_scp(workdir: Path, node_count: int, per_node: int) -> bool:
    from synod.cli.scp import print_network
    from synod.runtime.scp_node import create_network

    config = create_network(workdir, nodes=node_count)  # ports picked by the kernel
    print_network(config)
    threshold = config.nodes[0].quorum_set.threshold
    click.echo(f"each node trusts any {threshold} of the {node_count} (network.toml)")
    inbox: queue.Queue[Line] = queue.Queue()
    names = [node.name for node in config.nodes]
    nodes = [
        NodeProcess(name, ["scp", "run", str(workdir), name], workdir / f"{name}.log", inbox)
        for name in names
    ]
    submit_addresses = {node.name: (node.host, node.submit_port) for node in config.nodes}
    tally = _ScpTally(names)
    submitted: set[str] = set()
    with running(nodes):
        _expect(
            drain(inbox, tally.on_line, lambda: set(tally.ready) >= set(names), STEP_TIMEOUT_S),
            "nodes did not all start",
        )
        click.echo(f"all nodes listening; round 1: {per_node} values submitted to every node")
        submitted |= _submit_round(submit_addresses, names, 1, per_node)
        _wait_entries(inbox, tally, names, submitted, "round 1")

        victim = nodes[-1]
        survivors = names[:-1]
        click.echo(
            f"round 2: values submitted to every node; SIGKILL {victim.name} while the "
            "slots are being decided"
        )
        round_two = _submit_round(submit_addresses, names, 2, per_node)
        victim.kill()
        _expect(
            drain(inbox, tally.on_line, lambda: victim.name in tally.exited, STEP_TIMEOUT_S),
            f"{victim.name} did not go away",
        )
        submitted |= round_two
        # what the victim's clients submitted waits, durably, in its store until it is back
        from_survivors = {entry for entry in submitted if entry.split("-", 2)[2] != victim.name}
        _wait_entries(inbox, tally, survivors, from_survivors, "round 2 (one node down)")

        click.echo(f"restarting {victim.name} from its SQLite file")
        tally.ready.pop(victim.name, None)
        tally.exited.discard(victim.name)
        victim.start()
        _expect(
            drain(inbox, tally.on_line, lambda: victim.name in tally.ready, STEP_TIMEOUT_S),
            f"{victim.name} did not restart",
        )
        ready = tally.ready[victim.name]
        from synod.runtime.scp_node import read_log

        victim_entry = config.nodes[-1]
        tally.add_restored(victim.name, read_log(config.store_path(victim_entry)) or {})
        click.echo(
            f"{victim.name} restored {ready.get('restored_slots')} slots and "
            f"{ready.get('pending')} pending values; round 3: one value per node"
        )
        submitted |= _submit_round(submit_addresses, names, 3, 1)
        _wait_entries(inbox, tally, names, submitted, "round 3 (catch-up)")
        exit_codes = {node.name: node.terminate() for node in nodes}
    return _scp_summary(config, tally, submitted, exit_codes)


def _submit_round(
    addresses: dict[str, tuple[str, int]], names: list[str], round_number: int, per_node: int
) -> set[str]:
    import asyncio

    from synod.runtime.scp_node import SubmitFailed, submit_entries

    entries: set[str] = set()
    for name in names:
        values = [f"r{round_number}-{index}-{name}" for index in range(per_node)]
        try:
            asyncio.run(submit_entries(addresses[name], values))
        except SubmitFailed as error:
            raise ClusterError(f"{name} did not take values: {error}") from None
        entries.update(values)
    return entries


def _wait_entries(
    inbox: queue.Queue[Line], tally: _ScpTally, nodes: list[str], expected: set[str], label: str
) -> None:
    """Wait until every one of `nodes` logged every expected entry; fail at once if one
    of them exits, and after the step timeout if progress stalls."""
    done = drain(
        inbox,
        tally.on_line,
        lambda: tally.have_all(nodes, expected) or bool(tally.exited & set(nodes)),
        STEP_TIMEOUT_S,
    )
    _expect(not tally.exited & set(nodes), f"{label}: {sorted(tally.exited)} stopped unexpectedly")
    _expect(
        done,
        f"{label}: progress stalled ({len(expected)} values expected on {', '.join(nodes)})",
    )


def _scp_summary(
    config: NetworkConfig,
    tally: _ScpTally,
    submitted: set[str],
    exit_codes: dict[str, int | None],
) -> bool:
    from synod.cli.scp import print_comparison
    from synod.runtime.scp_node import read_network_logs
    from synod.scp.log import compare_logs, value_digest

    logs = {name: log or {} for name, log in read_network_logs(config).items()}
    print_comparison(compare_logs(logs), title="every node's log, from its SQLite file", brief=True)
    verdict = judge_scp_logs(logs, submitted, exit_codes)
    printed_match = all(
        value_digest(logs[name][slot]) == digest
        for name, slots in tally.slots.items()
        for slot, digest in slots.items()
        if slot in logs[name]
    )
    slots = max((len(log) for log in logs.values()), default=0)
    print_verdict(
        {
            "agreement": verdict.agree,
            f"every node has all {slots} slots": verdict.complete,
            f"each of the {len(submitted)} values exactly once": verdict.exactly_once,
            "clean shutdown": verdict.clean,
        }
    )
    if not printed_match:
        click.echo("a node's store differs from what it printed live", err=True)
    return verdict.ok and printed_match


def print_verdict(checks: Mapping[str, bool]) -> None:
    """The verdict of a demonstration, one check a line (``  yes  what was checked``), so
    that it fits 80 columns however long the checks' names."""
    click.echo("verdict:")
    for name, ok in checks.items():
        click.echo(f"  {'yes' if ok else 'NO ':<4} {name}")
