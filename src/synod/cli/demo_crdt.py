"""`synod demo --protocol crdt`: a relayer and three BFT-CRDT nodes as real processes type
into one shared log; one node goes offline, comes back and catches up.

`synod crdt relayer` forwards frames it cannot read; `synod crdt init` makes three nodes
that talk only through it and `synod crdt run` runs each, every line typed on its
standard input a transaction of the shared log.  Each node types three lines; node-2 is
SIGKILLed; the two others type three more each; node-2 is restarted from its SQLite file
and catches up from the others through the relayer.  The verdict asks each node its
`/digest`: the same 15 entries, the same document, the same updates, nothing waiting,
and a clean shutdown.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

NAMES = ("node-0", "node-1", "node-2")
PER_ROUND = 3
DEADLINE_S = 30.0


def run_crdt_demo(workdir: Path) -> bool:
    """Run the demonstration in `workdir`; True when every check holds."""
    from synod.cli.cluster import WatchedProcess

    relayer = WatchedProcess(
        "relayer", ["crdt", "relayer", "--port", "0"], workdir / "relayer.err",
        deadline_s=DEADLINE_S, stdin=False,
    )  # fmt: skip
    nodes: dict[str, WatchedProcess] = {}
    try:
        url = relayer.wait_ready()["address"]
        for name in NAMES:
            _init(workdir, name, url)
            nodes[name] = _start(workdir, name)
        click.echo(f"a relayer at {url} and {len(NAMES)} nodes up")
        _type_round(nodes, NAMES, 1)
        _wait_entries(nodes, NAMES, PER_ROUND * len(NAMES))
        nodes["node-2"].process.send_signal(signal.SIGKILL)
        nodes["node-2"].process.wait(timeout=DEADLINE_S)
        click.echo("round 1 typed everywhere; node-2 SIGKILLed")
        _type_round(nodes, NAMES[:2], 2)
        click.echo("round 2 typed on node-0 and node-1 while node-2 is away")
        nodes["node-2"] = _start(workdir, "node-2", life=2)
        click.echo("node-2 restarted from its SQLite file")
        total = PER_ROUND * (len(NAMES) + 2)
        digests = _wait_entries(nodes, NAMES, total)
        codes = [node.stop() for node in nodes.values()] + [relayer.stop()]
    finally:
        for process in (*nodes.values(), relayer):
            process.kill_if_running()
    return _verdict(digests, total, all(code == 0 for code in codes))


def _init(workdir: Path, name: str, url: str) -> None:
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "synod.cli.main", "crdt", "init", str(workdir / name),
         "--relay", url],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise click.ClickException(f"synod crdt init {name}: {done.stderr.strip()}")


def _start(workdir: Path, name: str, life: int = 1) -> Any:
    from synod.cli.cluster import WatchedProcess

    node = WatchedProcess(
        name, ["crdt", "run", str(workdir / name)], workdir / f"{name}.life{life}.err",
        deadline_s=DEADLINE_S,
    )  # fmt: skip
    node.wait_ready()
    node.wait_event("connected")
    return node


def _type_round(nodes: dict[str, Any], names: tuple[str, ...], round_number: int) -> None:
    for index in range(PER_ROUND):
        for name in names:
            nodes[name].send_line(f"{name} round {round_number} line {index}")


def _wait_entries(nodes: dict[str, Any], names: tuple[str, ...], total: int) -> dict[str, Any]:
    """Ask each node for its digest until it holds `total` entries; the last digests."""
    digests: dict[str, Any] = {}
    deadline = time.monotonic() + DEADLINE_S
    for name in names:
        while True:
            node = nodes[name]
            asked = len(node.events("digest"))
            node.send_line("/digest")
            digest = node.wait_event("digest", asked + 1)
            if digest["entries"] >= total or time.monotonic() > deadline:
                digests[name] = digest
                break
            time.sleep(0.1)
    return digests


def _verdict(digests: dict[str, Any], total: int, clean: bool) -> bool:
    fields = ("entries", "updates", "document", "updates_digest")
    same = len({tuple(digest[field] for field in fields) for digest in digests.values()}) == 1
    checks = {
        f"every node holds all {total} entries": all(
            digest["entries"] == total for digest in digests.values()
        ),
        "the same log, document and updates everywhere": same,
        "nothing left waiting": all(digest["waiting"] == 0 for digest in digests.values()),
        "clean shutdown": clean,
    }
    from synod.cli.demo import print_verdict

    print_verdict(checks)
    return all(checks.values())
