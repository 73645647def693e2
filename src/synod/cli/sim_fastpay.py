"""`synod sim fastpay`: FastPay authorities and clients in the deterministic simulator."""

from __future__ import annotations

from typing import Any

import click

from synod.cli.sim import common_options, run_many


@click.command("fastpay")
@click.option("--authorities", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--byzantine", type=click.IntRange(0, 64), default=1, show_default=True)
@click.option("--clients", type=click.IntRange(2, 64), default=4, show_default=True)
@click.option(
    "--transfers",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    help="Transfers each honest client makes.",
)
@click.option("--shards", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option(
    "--collude",
    is_flag=True,
    help="Byzantine authorities vote for everything (breaks safety when above f).",
)
@common_options
def command(  # noqa: PLR0917 - one parameter per click option
    authorities: int,
    byzantine: int,
    clients: int,
    transfers: int,
    shards: int,
    collude: bool,
    **common: Any,
) -> None:
    """FastPay: honest clients, an equivocating client, Byzantine authorities."""
    from synod.sim.scenarios.fastpay import FastPayScenario

    if byzantine > authorities:
        raise click.UsageError("--byzantine cannot exceed --authorities")

    def build() -> FastPayScenario:
        return FastPayScenario(
            authorities=authorities,
            byzantine=byzantine,
            clients=clients,
            transfers=transfers,
            shards=shards,
            collude=collude,
        )

    run_many(build, **common)
