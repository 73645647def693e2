"""`synod <protocol> up | status | logs | down DIR`: a whole local network in the background.

Each protocol's command group gets the four commands from `add_supervision_commands`,
with a function that lists the processes its network directory needs.  The work is
`synod.runtime.supervisor`; this module parses, prints and picks exit codes: 0 done,
1 a process failed to start or the network is not up, 2 usage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from synod.runtime.supervisor import Service

PlanNetwork = Callable[[Path], "list[Service]"]
"""The processes of the network in a directory (raises `synod.config` errors)."""

_DIRECTORY = click.argument(
    "directory", type=click.Path(file_okay=False, exists=True, path_type=Path)
)


def add_supervision_commands(
    group: click.Group, plan: PlanNetwork, protocol: str, *, with_status: bool = True
) -> None:
    """Add `up`, `status`, `logs` and `down` to a protocol's command group.

    A group that has a `status` of its own (SCP's compares the nodes' logs) keeps it
    (`with_status=False`) and prints `print_processes` in it.
    """
    _add_up(group, plan, protocol)
    _add_status_and_logs(group, protocol, with_status=with_status)
    _add_down(group)


def print_processes(directory: Path) -> None:
    """The background processes of DIRECTORY, one line each on stderr (none: nothing)."""
    from synod.cli.common import printable
    from synod.runtime.supervisor import Supervisor, SupervisorError

    try:
        statuses = Supervisor(directory).status()
    except SupervisorError as error:
        click.echo(str(error), err=True)
        return
    for entry in statuses:
        state = "running" if entry.running else "stopped"
        click.echo(f"{entry.name:<24} {state:<8} {printable(entry.last_line)[:44]}", err=True)


def _add_up(group: click.Group, plan: PlanNetwork, protocol: str) -> None:
    @group.command("up")
    @_DIRECTORY
    @click.option(
        "--timeout",
        "timeout_s",
        type=float,
        default=30.0,
        show_default=True,
        help="Seconds each process may take to announce readiness.",
    )
    def up(directory: Path, timeout_s: float) -> None:
        """Start every process of the network in DIRECTORY in the background."""
        from synod.cli.common import config_errors
        from synod.runtime.supervisor import Supervisor, SupervisorError

        try:
            with config_errors(f"synod {protocol} init {directory}"):
                services = plan(directory)
        except SupervisorError as error:
            raise click.ClickException(str(error)) from None
        click.echo(f"starting {len(services)} processes ...", err=True)
        try:
            started = Supervisor(directory).up(services, ready_timeout_s=timeout_s)
        except SupervisorError as error:
            raise click.ClickException(str(error)) from None
        for process in started:
            click.echo(f"{process.name:<24} pid {process.pid:<8} up")
        click.echo(
            f"logs in {directory / 'logs'}; `synod {protocol} status {directory}`, "
            f"`synod {protocol} down {directory}`",
            err=True,
        )


def _add_status_and_logs(group: click.Group, protocol: str, *, with_status: bool) -> None:
    if with_status:
        _add_status(group, protocol)
    _add_logs(group, protocol)


def _add_status(group: click.Group, protocol: str) -> None:
    @group.command("status")
    @_DIRECTORY
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per process.")
    def status(directory: Path, as_json: bool) -> None:
        """Show each process of the network: running or not, and its last output line."""
        from synod.cli.common import printable
        from synod.runtime.supervisor import Supervisor, SupervisorError

        try:
            statuses = Supervisor(directory).status()
        except SupervisorError as error:
            raise click.ClickException(str(error)) from None
        if not statuses:
            raise click.ClickException(
                f"{directory}: the network is not up (`synod {protocol} up {directory}`)"
            )
        for entry in statuses:
            if as_json:
                document = {"name": entry.name, "pid": entry.pid, "running": entry.running}
                click.echo(json.dumps({**document, "last": entry.last_line}))
            else:
                state = "running" if entry.running else "stopped"
                click.echo(f"{entry.name:<24} {state:<8} {printable(entry.last_line)[:44]}")
        if not all(entry.running for entry in statuses):
            raise SystemExit(1)


def _add_logs(group: click.Group, protocol: str) -> None:
    @group.command("logs")
    @_DIRECTORY
    @click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C ends).")
    @click.option("--lines", "-n", type=click.IntRange(0), default=10, show_default=True)
    def logs(directory: Path, follow: bool, lines: int) -> None:
        """Print the last lines of every process's output, prefixed by its file name."""
        from synod.runtime.supervisor import Supervisor, SupervisorError

        try:
            files = Supervisor(directory).log_files()
        except SupervisorError as error:
            raise click.ClickException(str(error)) from None
        if not files:
            raise click.ClickException(
                f"{directory}: the network is not up (`synod {protocol} up {directory}`)"
            )
        _print_tails(files, lines, follow)


def _add_down(group: click.Group) -> None:
    @group.command("down")
    @_DIRECTORY
    @click.option(
        "--timeout",
        "timeout_s",
        type=float,
        default=10.0,
        show_default=True,
        help="Seconds to wait after SIGTERM before SIGKILL.",
    )
    def down(directory: Path, timeout_s: float) -> None:
        """Stop every process of the network (SIGTERM, then SIGKILL after the timeout)."""
        from synod.runtime.supervisor import Supervisor, SupervisorError

        try:
            outcome = Supervisor(directory).down(timeout_s=timeout_s)
        except SupervisorError as error:
            raise click.ClickException(str(error)) from None
        if not outcome:
            click.echo(f"{directory}: nothing was running", err=True)
        for name, result in outcome.items():
            click.echo(f"{name:<24} {result}")


def _print_tails(files: list[Path], lines: int, follow: bool) -> None:
    from synod.cli.common import printable

    positions: dict[Path, int] = {}
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        for line in text.splitlines()[-lines:] if lines else []:
            click.echo(f"{path.name}: {printable(line)}")
        positions[path] = len(text.encode())
    try:
        while follow:
            time.sleep(0.2)
            for path in files:
                positions[path] = _print_new(path, positions[path])
    except KeyboardInterrupt:
        return


def _print_new(path: Path, position: int) -> int:
    from synod.cli.common import printable

    try:
        with path.open("rb") as handle:
            handle.seek(position)
            data = handle.read()
    except FileNotFoundError:
        return position
    complete = data[: data.rfind(b"\n") + 1]
    for line in complete.decode("utf-8", errors="replace").splitlines():
        click.echo(f"{path.name}: {printable(line)}")
    return position + len(complete)
