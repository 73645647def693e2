"""`synod demo`: a local network of real node processes agreeing, with a crash in the middle.

The reliable-broadcast demonstration: four `synod rbc run` processes on 127.0.0.1, each
broadcasting values; one node is killed with SIGKILL while the others go on, then
restarted from its SQLite file; the demo ends with every node's deliveries compared
instance by instance and exits non-zero if any two nodes disagree or progress stalls.
It removes its processes and files when it ends, however it ends.
"""

from __future__ import annotations

import hashlib
import queue
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from synod.cli.cluster import ClusterError, Line, NodeProcess, drain, free_ports, running

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
@click.option("--nodes", "node_count", type=click.IntRange(4, 16), default=4, show_default=True)
@click.option(
    "--values",
    "per_node",
    type=click.IntRange(1, 50),
    default=3,
    show_default=True,
    help="Values each node broadcasts in each round.",
)
@click.option("--keep", is_flag=True, help="Keep the working directory (logs, SQLite files).")
def demo(node_count: int, per_node: int, keep: bool) -> None:
    """Run a local network of real node processes, crash one, check they all agree."""
    workdir = Path(tempfile.mkdtemp(prefix="synod-demo-"))
    click.echo(f"synod demo: {node_count} reliable-broadcast nodes on 127.0.0.1 ({workdir})")
    try:
        ok = _run(workdir, node_count, per_node)
    except ClusterError as error:
        click.echo(f"demo failed: {error}", err=True)
        ok = False
    finally:
        if keep:
            click.echo(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if ok else 1)


def _run(workdir: Path, node_count: int, per_node: int) -> bool:
    from synod.cli.rbc import init as rbc_init

    ports = ",".join(str(port) for port in free_ports(node_count))
    rbc_init.main(
        [str(workdir), "--nodes", str(node_count), "--ports", ports], standalone_mode=False
    )
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

    table = Table(title="deliveries per node")
    for column in ("node", "delivered", "digest of the delivery log", "exit code"):
        table.add_column(column)
    digests = {}
    for name in names:
        log = sorted(tally.delivered.get(name, {}).items())
        digests[name] = hashlib.sha256(repr(log).encode()).hexdigest()[:16]
        table.add_row(name, str(len(log)), digests[name], str(exit_codes.get(name)))
    Console().print(table)
    agree = len(set(digests.values())) == 1
    complete = tally.everyone_has(names, expected)
    clean = all(code == 0 for code in exit_codes.values())
    verdict = agree and complete and clean
    click.echo(
        f"agreement: {'yes' if agree else 'NO'}; every node has all {expected} values: "
        f"{'yes' if complete else 'NO'}; clean shutdown: {'yes' if clean else 'NO'}"
    )
    return verdict
