"""`synod sim scp`: SCP nodes in the deterministic simulator.

Prints `SEED=<n>` first, then what happened (topology, Byzantine behaviours, faults,
the values each slot externalized and by how many intact nodes) and the checkers'
verdict.  Exit codes as for every `synod sim` command: 0 every run passed, 1 a checker
found a violation (the failing seeds are printed), 2 usage.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import click

from synod.cli.sim import common_options, run_many

if TYPE_CHECKING:
    from synod.sim.runner import Outcome
    from synod.sim.scenarios.scp import ScpScenario


@click.command("scp")
@click.option("--nodes", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--byzantine",
    type=click.IntRange(0, 64),
    default=None,
    help="Byzantine nodes (tiered: at most one per organisation).  [default: 1; 0 for "
    "the disjoint topology]",
)
@click.option(
    "--topology",
    type=click.Choice(["symmetric", "tiered", "disjoint"]),
    default="symmetric",
    show_default=True,
    help="symmetric: threshold n - f; tiered: organisations of 3 (--nodes a multiple of "
    "3); disjoint: two halves that each form a quorum (outside the assumptions).",
)
@click.option(
    "--slots",
    type=click.IntRange(1, 8),
    default=2,
    show_default=True,
    help="Slots the workload proposes values for.",
)
@click.option(
    "--collude",
    is_flag=True,
    help="Byzantine nodes show each half of the correct nodes its own face (forks only "
    "with more Byzantine nodes than the topology tolerates).",
)
@click.option(
    "--insider",
    is_flag=True,
    help="Byzantine members also send MAYBE_VALID lures, partly invalid nominations and "
    "statements of made-up ids; some values are valid only after a while.",
)
@click.option(
    "--away",
    type=click.IntRange(0, 64),
    default=0,
    show_default=True,
    help="Correct nodes cut off for the whole safety phase (they must deliver every "
    "slot in order after healing).",
)
@click.option(
    "--window",
    type=click.IntRange(1, 64),
    default=None,
    help="Slots each node retains and takes part in ahead (default: the whole workload).",
)
@click.option(
    "--retention",
    type=click.IntRange(1, 64),
    default=None,
    help="Decisions each node keeps for peers, and slots between checkpoints (default: "
    "beyond the workload); below an outage, nodes away rejoin from checkpoints.",
)
@common_options
def command(  # noqa: PLR0917 (click passes every option by keyword)
    nodes: int,
    byzantine: int | None,
    topology: str,
    slots: int,
    collude: bool,
    insider: bool,
    away: int,
    window: int | None,
    retention: int | None,
    **common: Any,
) -> None:
    """The Stellar Consensus Protocol with Byzantine nodes and network faults."""
    from synod.sim.scenarios.scp import ScpScenario, build_topology

    if byzantine is None:
        byzantine = 0 if topology == "disjoint" else 1
    try:
        shape = build_topology(topology, nodes, byzantine)  # type: ignore[arg-type]
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    if away > len(shape.correct()):
        raise click.UsageError(f"--away {away}: only {len(shape.correct())} correct nodes")

    def build() -> ScpScenario:
        return ScpScenario(
            shape,
            slots=slots,
            collude=collude,
            insider=insider,
            away=away,
            window=window,
            retention=retention,
        )

    run_many(build, describe=describe, **common)


def describe(scenario: ScpScenario, outcome: Outcome) -> list[str]:
    """Human lines: the set-up, the faults that happened and the decisions."""
    topology = scenario.topology
    lines = list(scenario.story)
    if not topology.within_assumptions:
        lines.append("outside the assumptions: agreement is not guaranteed")
    kinds = collections.Counter(record["kind"] for record in outcome.world.history)
    faults = ", ".join(
        f"{kinds[kind]} {kind}"
        for kind in ("drop", "duplicate", "reorder", "partition", "crash", "restart", "undecodable")
        if kinds[kind]
    )
    lines.append(f"network: {faults or 'no faults'}")
    intact = scenario.intact_hex()
    decided = scenario.externalized()
    for slot_index in scenario.target_slots():
        values = collections.Counter(
            decided[node][slot_index] for node in sorted(decided) if slot_index in decided[node]
        )
        shown = "; ".join(
            f"{bytes.fromhex(value).decode('ascii', 'replace')} by {count}"
            for value, count in sorted(values.items())
        )
        lines.append(f"slot {slot_index}: {shown or 'nothing'} (of {len(intact)} intact nodes)")
    return lines
