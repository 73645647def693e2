"""Entry point of the `synod` command.

Subcommands live one module per subsystem and are imported only when invoked, so that
`synod --help` starts fast: heavy imports happen inside the command that needs them.
"""

from __future__ import annotations

import importlib

import click

from synod import __version__

# name -> (module, attribute, one-line help). A module is imported only when its
# command runs (or its own --help is asked for).
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "demo": ("synod.cli.demo", "demo", "Run the demonstration: a local network agreeing."),
    "keys": ("synod.cli.keys", "keys", "Create and show node keys."),
    "rbc": ("synod.cli.rbc", "rbc", "Reliable broadcast nodes (the foundation's test protocol)."),
    "sim": ("synod.cli.sim", "sim", "Run protocols in the deterministic simulator."),
    "scp": ("synod.cli.scp", "scp", "Stellar Consensus Protocol nodes."),
    "fbas": ("synod.cli.fbas", "fbas", "Analyse federated networks (quorum intersection...)."),
    "fastpay": ("synod.cli.fastpay", "fastpay", "FastPay authorities, clients and benchmarks."),
    "tusk": ("synod.cli.tusk", "tusk", "Tusk passive cores and drivers."),
    "crdt": ("synod.cli.crdt", "crdt", "BFT-CRDT nodes and the websocket relayer."),
    "stellar": ("synod.cli.stellar", "stellar", "Stellar's peer protocol: serve and crawl."),
}


# The shell's status for a command ended by SIGINT (128 + 2).
INTERRUPTED = 130


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in SUBCOMMANDS if _available(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in SUBCOMMANDS or not _available(cmd_name):
            return None
        module_name, attribute, _ = SUBCOMMANDS[cmd_name]
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> object:
        """Run the subcommand; Ctrl-C ends it with status 130 and no traceback (click
        alone would print "Aborted!" and exit 1, which reads as a failure)."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise click.exceptions.Exit(INTERRUPTED) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, SUBCOMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _available(name: str) -> bool:
    """A subcommand is listed once its module exists (found without importing it)."""
    from importlib.util import find_spec

    return find_spec(SUBCOMMANDS[name][0]) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synod")
def cli() -> None:
    """synod: Byzantine fault tolerant agreement (SCP, FastPay, Tusk, BFT-CRDT)."""


def main() -> None:
    """The ``synod`` command as its own process (see `common.as_own_process`)."""
    from synod.cli import common

    common.as_own_process = True
    cli(prog_name="synod")


if __name__ == "__main__":
    main()
