"""`synod sim tusk`: Tusk cores and drivers in the deterministic simulator."""

from __future__ import annotations

from typing import Any

import click

from synod.cli.sim import common_options, run_many


@click.command("tusk")
@click.option("--cores", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--byzantine-cores",
    type=click.IntRange(0, 64),
    default=1,
    show_default=True,
    help="Cores (the first ones) that equivocate, withhold, replay or send garbage.",
)
@click.option("--honest-drivers", type=click.IntRange(0, 16), default=2, show_default=True)
@click.option("--byzantine-drivers", type=click.IntRange(0, 16), default=1, show_default=True)
@click.option(
    "--transactions",
    type=click.IntRange(0, 1000),
    default=2,
    show_default=True,
    help="Client transactions submitted to each correct core.",
)
@click.option(
    "--collude",
    is_flag=True,
    help="The Byzantine cores and a split-brain driver show each half of the honest cores "
    "its own DAG (breaks the prefix property only with more than f colluders).",
)
@click.option(
    "--weak-parent-attack",
    is_flag=True,
    help="The Byzantine cores do nothing but name made-up weak parents just under their "
    "collection floor.",
)
@click.option(
    "--slow-core/--no-slow-core",
    default=True,
    show_default=True,
    help="In half the runs one correct core is 150-400 ms from every driver (off with "
    "--no-faults too).",
)
@click.option(
    "--long-outage",
    is_flag=True,
    help="In half the runs one correct core is down from early on until 6 s after "
    "healing while the others order transactions, beyond what the drivers remember: it "
    "rejoins by installing a checkpoint.",
)
@click.option(
    "--gc-depth",
    type=click.IntRange(2, 100),
    default=10,
    show_default=True,
    help="Rounds kept below the last committed leader (small: collection floors of the "
    "cores move apart sooner, what the weak-parent attack feeds on).",
)
@click.option(
    "--min-header-delay-ms",
    type=click.IntRange(0, 10_000),
    default=150,
    show_default=True,
    help="The cores' pacing between two headers of their own.",
)
@common_options
def command(  # noqa: PLR0917 - one parameter per click option
    cores: int,
    byzantine_cores: int,
    honest_drivers: int,
    byzantine_drivers: int,
    transactions: int,
    collude: bool,
    weak_parent_attack: bool,
    slow_core: bool,
    long_outage: bool,
    gc_depth: int,
    min_header_delay_ms: int,
    **common: Any,
) -> None:
    """Tusk consensus: passive cores, untrusted drivers, Byzantine cores and drivers."""
    from synod.sim.scenarios.tusk import TuskScenario

    if byzantine_cores > cores:
        raise click.UsageError("--byzantine-cores cannot exceed --cores")

    def build() -> TuskScenario:
        return TuskScenario(
            cores=cores,
            byzantine_cores=byzantine_cores,
            honest_drivers=honest_drivers,
            byzantine_drivers=byzantine_drivers,
            transactions=transactions,
            collude=collude,
            weak_parent_attack_only=weak_parent_attack,
            slow_core_ms=(150, 400) if slow_core and not common.get("no_faults") else (0, 0),
            long_outage=long_outage,
            long_outage_ms=6_000,
            gc_depth=gc_depth,
            min_header_delay_ms=min_header_delay_ms,
        )

    run_many(build, **common)
