"""`synod sim crdt`: BFT-CRDT replicas in the deterministic simulator."""

from __future__ import annotations

from typing import Any

import click

from synod.cli.sim import common_options, run_many


@click.command("crdt")
@click.option("--nodes", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--byzantine",
    type=click.IntRange(0, 63),
    default=1,
    show_default=True,
    help="Replicas (the first ones) that equivocate, forge, withhold, replay or send garbage "
    "(any number short of all: a CRDT needs no honest majority).",
)
@click.option(
    "--edits",
    type=click.IntRange(0, 1000),
    default=4,
    show_default=True,
    help="Transactions each replica makes during the faulty phase.",
)
@click.option(
    "--arrival-order-merge",
    is_flag=True,
    help="Correct replicas order operations by local arrival (a deliberately wrong "
    "merge rule): the convergence checker must report replicas that hold the same "
    "updates but different documents.",
)
@common_options
def command(
    nodes: int, byzantine: int, edits: int, arrival_order_merge: bool, **common: Any
) -> None:
    """BFT-CRDT: signed hash-linked updates, reconciliation by heads, Byzantine replicas."""
    from synod.sim.scenarios.crdt import CrdtScenario

    if byzantine >= nodes:
        raise click.UsageError("--byzantine must leave at least one correct replica")

    def build() -> CrdtScenario:
        return CrdtScenario(
            nodes=nodes, byzantine=byzantine, edits=edits, arrival_order_merge=arrival_order_merge
        )

    run_many(build, **common)
