"""`synod sim`: run a protocol scenario in the deterministic simulator.

Every run prints `SEED=<n>` first; the same seed reproduces the run exactly.  Exit codes:
0 every run passed, 1 a checker found a violation (the failing seeds are printed), 2 usage.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

import click

from synod.cli.common import wrapped

SEED_BITS = 63


# Protocol scenarios living in their own modules: name -> module exposing `command`.
SCENARIO_MODULES = {
    "scp": "synod.cli.sim_scp",
    "fastpay": "synod.cli.sim_fastpay",
    "tusk": "synod.cli.sim_tusk",
    "crdt": "synod.cli.sim_crdt",
}


class _SimGroup(click.Group):
    """`rbc` is defined here; the other protocols' commands load on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from importlib.util import find_spec

        found = [name for name, module in SCENARIO_MODULES.items() if find_spec(module)]
        return sorted([*super().list_commands(ctx), *found])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        import importlib
        from importlib.util import find_spec

        module = SCENARIO_MODULES.get(cmd_name)
        if module is not None and find_spec(module):
            command = importlib.import_module(module).command
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=_SimGroup)
def sim() -> None:
    """Run protocols in the deterministic simulator (seed in, verdict out)."""


def _history_option(_: Any, __: Any, value: Path | None) -> Path | None:
    # checked before the runs, which may take minutes, rather than when writing after them
    if value is not None and not value.parent.is_dir():
        raise click.BadParameter(f"{value.parent} is not a directory", param_hint="--history")
    return value


def common_options(function: Any) -> Any:
    """The options every `synod sim` scenario command takes; pass them to `run_many`."""
    options = [
        click.option(
            "--seed", type=int, default=None, help="Reproduce this run (default: draw one)."
        ),
        click.option(
            "--seeds",
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Run this many consecutive seeds starting at --seed.",
        ),
        click.option(
            "--safety-ms",
            type=click.IntRange(min=0),
            default=3_000,
            show_default=True,
            help="Virtual time of the faulty phase.",
        ),
        click.option(
            "--liveness-ms",
            type=click.IntRange(min=0),
            default=20_000,
            show_default=True,
            help="Virtual time budget after healing.",
        ),
        click.option("--no-faults", is_flag=True, help="A perfect network (Byzantine nodes stay)."),
        click.option(
            "--history",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            callback=_history_option,
            help="Write the (last) run's history as JSON lines.",
        ),
        click.option("--json", "as_json", is_flag=True, help="One JSON object per run on stdout."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


@sim.command("rbc")
@click.option("--nodes", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--byzantine", type=click.IntRange(0, 64), default=1, show_default=True)
@click.option("--proposals", type=click.IntRange(0, 1000), default=3, show_default=True)
@click.option(
    "--split-brain",
    is_flag=True,
    help="Byzantine nodes collude to deliver different payloads (needs > f to work).",
)
@common_options
def rbc(nodes: int, byzantine: int, proposals: int, split_brain: bool, **common: Any) -> None:
    """Bracha reliable broadcast with Byzantine members."""
    from synod.sim.scenarios.rbc import RbcScenario

    if byzantine > nodes:
        raise click.UsageError("--byzantine cannot exceed --nodes")

    def build() -> RbcScenario:
        return RbcScenario(nodes, byzantine, proposals, split_brain=split_brain)

    run_many(build, **common)


def run_many(
    build: Any,
    *,
    seed: int | None,
    seeds: int,
    safety_ms: int,
    liveness_ms: int,
    no_faults: bool,
    history: Path | None,
    as_json: bool,
    describe: Any = None,
) -> None:
    """Run `build()`'s scenario for each seed, print verdicts, exit 1 on any failure.

    `describe(scenario, outcome) -> list[str]`, when given, tells what happened in a run
    (printed above the verdict, or as `happened` in the JSON object).
    """
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
        report: list[str] = describe(scenario, outcome) if describe is not None else []
        if as_json:
            verdict = {
                "seed": current,
                "scenario": outcome.scenario,
                "ok": outcome.ok,
                "phase": outcome.phase,
                "end_ms": outcome.end_ms,
                "steps": outcome.steps,
                "history_sha256": outcome.history_digest,
                "violations": [str(violation) for violation in outcome.named_violations()],
            }
            if describe is not None:
                verdict["happened"] = report
            click.echo(json.dumps(verdict))
        else:
            for line in report:
                click.echo(wrapped(line, indent="  "))
            click.echo(wrapped(outcome.summary(), at=" "))
            for violation in outcome.named_violations():
                click.echo(wrapped(str(violation), indent="  "))
        if not outcome.ok:
            failed.append(current)
        if history is not None:
            try:
                history.write_text("".join(outcome.world.history.lines()))
            except OSError as error:
                raise click.ClickException(
                    f"{history}: cannot write: {error.strerror or error}"
                ) from None
    passed = seeds - len(failed)
    click.echo(f"TALLY: {seeds} runs, {passed} passed, {len(failed)} failed", err=as_json)
    if failed:
        click.echo(f"FAILED SEEDS: {' '.join(map(str, failed))}", err=True)
        for failed_seed in failed:
            click.echo(f"reproduce: {reproduce_command(failed_seed)}", err=True)
        sys.exit(1)


_NOT_REPRODUCED = frozenset({"seed", "seeds", "history", "as_json"})


def reproduce_command(seed: int) -> str:
    """The `synod sim ...` command line that runs this scenario again with `seed` alone:
    every option that differs from its default, then `--seed`."""
    import shlex

    context = click.get_current_context()
    words = ["synod", *context.command_path.split()[1:]]
    for parameter in context.command.params:
        if not isinstance(parameter, click.Option) or parameter.name in _NOT_REPRODUCED:
            continue
        value = context.params.get(parameter.name or "")
        if value == parameter.default:
            continue
        if parameter.is_flag:
            if value:
                words.append(parameter.opts[0])
            continue
        words += [parameter.opts[0], str(value)]
    words += ["--seed", str(seed)]
    return shlex.join(words)
