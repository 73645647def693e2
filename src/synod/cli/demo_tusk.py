"""`synod demo --protocol tusk`: four passive Tusk cores and a driver as real processes
order transactions, lose a core and the driver, get them back, and agree.

The committee is made with `synod tusk init` and started by `synod tusk up`'s supervisor.
Three rounds of transactions go to the cores in turn (`synod.runtime.tusk_node`); after
the first, core-3 and the driver are SIGKILLed (three cores of four still certify, but
nothing moves without a driver, so the driver comes back at once: it holds nothing needed
for safety); after the second, core-3 is restarted from its SQLite file.  The verdict
reads what each core printed: every core committed the same sequence of certificates
(one a prefix of the other while the last ones arrive), every transaction appears once,
and every process stopped cleanly.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

CORES = 4
ROUNDS = 3
PER_ROUND = 8
VICTIM = "core-3"


def run_tusk_demo(workdir: Path) -> bool:
    """Run the demonstration in `workdir`; True when every check holds."""
    from synod.runtime.supervisor import Supervisor, plan_tusk
    from synod.tusk.config import load_network

    _init(workdir)
    network = load_network(workdir)
    supervisor = Supervisor(workdir)
    supervisor.up(plan_tusk(workdir))
    click.echo(f"{CORES} cores and a driver up")
    sent: list[str] = []
    try:
        for round_number in range(1, ROUNDS + 1):
            texts = [f"round {round_number} tx {index}" for index in range(PER_ROUND)]
            live = [core for core in network.cores if round_number != 2 or core.name != VICTIM]
            asyncio.run(_submit(network, live, texts))
            sent += texts
            click.echo(f"round {round_number}: {len(texts)} transactions handed to the cores")
            if round_number == 1:
                for name in (VICTIM, "driver-0"):
                    supervisor.kill(name)
                supervisor.restart("driver-0")
                click.echo(f"  {VICTIM} and the driver SIGKILLed; the driver restarted empty")
            elif round_number == 2:
                supervisor.restart(VICTIM)
                click.echo(f"  {VICTIM} restarted from its SQLite file")
        orders = _wait_for_all(workdir, network, sent)
    finally:
        outcome = supervisor.down()
    clean = all(result == "stopped" for result in outcome.values())
    return _verdict(orders, sent, clean)


def _init(workdir: Path) -> None:
    from synod.runtime.nodes import free_ports

    ports = ",".join(str(port) for port in free_ports("127.0.0.1", CORES))
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "synod.cli.main", "tusk", "init", str(workdir), "--ports", ports],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        raise click.ClickException(f"synod tusk init: {done.stderr.strip()}")


async def _submit(network: Any, cores: list[Any], texts: list[str]) -> None:
    from synod.runtime.tusk_node import submit_transactions

    for index, text in enumerate(texts):
        core = cores[index % len(cores)]
        receipt = await submit_transactions(
            (core.host, core.port), core.node_id, [text.encode()], network=network.network
        )
        if receipt.accepted != 1:
            # a core restarted moments ago signs no receipt until it has caught up
            other = cores[(index + 1) % len(cores)]
            await submit_transactions(
                (other.host, other.port), other.node_id, [text.encode()], network=network.network
            )


def _committed(workdir: Path, name: str) -> list[dict[str, Any]]:
    """The certificates a core printed as committed, by sequence (a restarted core
    prints only what it commits after its restart, and restores the rest)."""
    lines = (workdir / "logs" / f"{name}.out").read_text(encoding="utf-8").splitlines()
    found: dict[int, dict[str, Any]] = {}
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "committed":
            found[event["sequence"]] = event
    return [found[sequence] for sequence in sorted(found)]


def _wait_for_all(workdir: Path, network: Any, sent: list[str]) -> dict[str, list[Any]]:
    deadline = time.monotonic() + 60
    while True:
        orders = {core.name: _committed(workdir, core.name) for core in network.cores}
        delivered = [
            {text for event in orders[name] for text in event["transactions"]} for name in orders
        ]
        everyone_ahead = [name for name in orders if name != VICTIM]
        if all(set(sent) <= held for name, held in zip(orders, delivered, strict=True)
               if name in everyone_ahead) or time.monotonic() > deadline:  # fmt: skip
            return orders
        time.sleep(0.1)


def _verdict(orders: dict[str, list[Any]], sent: list[str], clean: bool) -> bool:
    by_sequence: dict[int, set[str]] = {}
    for events in orders.values():
        for event in events:
            by_sequence.setdefault(event["sequence"], set()).add(event["digest"])
    agree = all(len(digests) == 1 for digests in by_sequence.values())
    full = max(orders.values(), key=len)
    transactions = [text for event in full for text in event["transactions"]]
    once = sorted(transactions) == sorted(sent)
    checks = {
        "every core's sequence agrees where they overlap": agree,
        f"each of the {len(sent)} transactions committed exactly once": once,
        "clean shutdown": clean,
    }
    counts = {name: len(events) for name, events in orders.items()}
    click.echo(
        "certificates printed: " + ", ".join(f"{name} {count}" for name, count in counts.items())
    )
    from synod.cli.demo import print_verdict

    print_verdict(checks)
    return all(checks.values())
