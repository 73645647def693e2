"""`synod sim scp`: SCP nodes in the deterministic simulator.

Prints `SEED=<n>` first, then what happened (topology, Byzantine behaviours, faults,
the values each slot externalized and by how many intact nodes) and the checkers'
verdict.  Exit codes as for every `synod sim` command: 0 every run passed, 1 a checker
found a violation (the failing seeds are printed), 2 usage.
"""

from __future__ import annotations

import collections
import json
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from synod.cli.sim import SEED_BITS, common_options

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
@common_options
def command(
    nodes: int,
    byzantine: int | None,
    topology: str,
    slots: int,
    collude: bool,
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

    def build() -> ScpScenario:
        return ScpScenario(shape, slots=slots, collude=collude)

    _run_many(build, **common)


def _run_many(
    build: Any,
    *,
    seed: int | None,
    seeds: int,
    safety_ms: int,
    liveness_ms: int,
    no_faults: bool,
    history: Path | None,
    as_json: bool,
) -> None:
    """`synod.cli.sim.run_many` with a report of what happened in each run."""
    from synod.sim.runner import RunSettings, run_scenario

    first = seed if seed is not None else secrets.randbits(SEED_BITS)
    settings = RunSettings(
        safety_ms=safety_ms, liveness_budget_ms=liveness_ms, faults=not no_faults
    )
    failed: list[int] = []
    for current in range(first, first + seeds):
        click.echo(f"SEED={current}", err=as_json)
        scenario = build()
        outcome = run_scenario(scenario, current, settings)
        report = describe(scenario, outcome)
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "seed": current,
                        "scenario": outcome.scenario,
                        "ok": outcome.ok,
                        "phase": outcome.phase,
                        "end_ms": outcome.end_ms,
                        "steps": outcome.steps,
                        "history_sha256": outcome.history_digest,
                        "happened": report,
                        "violations": [str(violation) for violation in outcome.violations],
                    }
                )
            )
        else:
            for line in report:
                click.echo(f"  {line}")
            click.echo(outcome.summary())
            for violation in outcome.violations:
                click.echo(f"  {violation}")
        if not outcome.ok:
            failed.append(current)
        if history is not None:
            history.write_text("".join(outcome.world.history.lines()))
    if failed:
        click.echo(f"FAILED SEEDS: {' '.join(map(str, failed))}", err=True)
        sys.exit(1)


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
