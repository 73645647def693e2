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
from typing import TYPE_CHECKING, Any

import click

from synod.cli.common import SECONDS

if TYPE_CHECKING:
    from synod.runtime.supervisor import Service

PlanNetwork = Callable[[Path], "list[Service]"]
"""The processes of the network in a directory (raises `synod.config` errors)."""

RequestPorts = Callable[[Path], "dict[str, tuple[str, int]]"]
"""Process name -> the address where it answers requests, status among them
(`synod.runtime.node_status`), for the nodes of the network in a directory."""

FOLLOW_READ_BYTES = 1024 * 1024
"""What `logs --follow` reads of one file at a time: a burst of output is printed in
pieces of this size rather than held in memory whole."""

STATUS_TIMEOUT_S = 2.0
"""How long `status` waits for each node's answer (all nodes are asked at once)."""

_DIRECTORY = click.argument(
    "directory", type=click.Path(file_okay=False, exists=True, path_type=Path)
)


def add_supervision_commands(
    group: click.Group,
    plan: PlanNetwork,
    protocol: str,
    *,
    with_status: bool = True,
    request_ports: RequestPorts | None = None,
) -> None:
    """Add `up`, `status`, `logs` and `down` to a protocol's command group.

    A group that has a `status` of its own (SCP's compares the nodes' logs, the CRDT's
    asks its nodes' control sockets) keeps it (`with_status=False`).  With
    `request_ports`, `status` asks each node over the network how far it is
    (`live_rows`).
    """
    _add_up(group, plan, protocol)
    _add_status_and_logs(group, protocol, with_status=with_status, request_ports=request_ports)
    _add_down(group)


def live_rows(
    directory: Path, ports: dict[str, tuple[str, int]], *, timeout_s: float = STATUS_TIMEOUT_S
) -> list[dict[str, Any]]:
    """One row per process of DIRECTORY: those `up` recorded, then the nodes of `ports`
    it did not.  A node of `ports` is asked its status over the network (all at once):
    ``state`` is ``running`` when it answers, ``silent`` when its process runs but does
    not answer, ``down`` otherwise; any other process is ``running`` or ``down`` from
    its pid.  Nodes that count slots or rounds get ``lag``: how far behind the node
    that is furthest."""
    import asyncio

    from synod.runtime.supervisor import Supervisor, SupervisorError

    try:
        records = {entry.name: entry for entry in Supervisor(directory).status()}
    except SupervisorError as error:
        # the nodes can still be asked; say why the processes `up` started are not shown
        click.echo(f"{error}; the processes `up` started are not shown", err=True)
        records = {}
    names = [*records, *(name for name in ports if name not in records)]
    from synod.cli.common import notice_if_slow

    waiting = f"waiting for the nodes to answer (up to {timeout_s:g} s, --timeout)"
    with notice_if_slow(waiting):
        answers = asyncio.run(_ask_all(ports, timeout_s))
    rows = [_live_row(name, records.get(name), answers.get(name)) for name in names]
    counted = [
        row for row in rows if row.get("progress_name") in {"slot", "round", "delivered"}
    ]
    furthest = max((row["progress"] for row in counted), default=0)
    for row in counted:
        row["lag"] = furthest - row["progress"]
    return rows


async def _ask_all(ports: dict[str, tuple[str, int]], timeout_s: float) -> dict[str, Any]:
    import asyncio

    from synod.runtime.node_status import StatusUnanswered, ask_status

    async def ask(address: tuple[str, int]) -> Any:
        try:
            return await ask_status(address, timeout_s=timeout_s)
        except StatusUnanswered as error:
            return str(error)

    found = await asyncio.gather(*(ask(address) for address in ports.values()))
    return dict(zip(ports, found, strict=True))


def _live_row(name: str, record: Any, answer: Any) -> dict[str, Any]:
    from synod.runtime.node_status import StatusReply

    row: dict[str, Any] = {"name": name}
    if record is not None:
        row.update(pid=record.pid, running=record.running, last=record.last_line)
    if isinstance(answer, StatusReply):
        row.update(state="running", running=True)
        row.update({field: getattr(answer, field) for field in answer.__struct_fields__})
    elif answer is not None:
        row["state"] = "silent" if record is not None and record.running else "down"
        row.update(running=record is not None and record.running, reason=answer)
    else:
        row["state"] = "running" if record is not None and record.running else "down"
    return row


def print_live_rows(rows: list[dict[str, Any]], *, err: bool = False) -> None:
    """`live_rows` as a table of at most 80 columns."""
    from synod.cli.common import printable

    unit = next((row["progress_name"] for row in rows if "progress_name" in row), "progress")
    width = max(8, len(unit))  # "delivered" (RBC) is one wider than the others
    click.echo(
        f"{'process':<20} {'state':<7} {unit:>{width}} {'lag':>5} {'pending':>8} {'links':>7}",
        err=err,
    )
    for row in rows:
        cells = f"{printable(row['name'])[:20]:<20} {row['state']:<7}"
        if "progress" in row:
            links = str(row["peers_connected"])
            if row["peers"]:
                links += f"/{row['peers']}"
            lag = row.get("lag", "")
            click.echo(
                f"{cells} {row['progress']:>{width}} {lag:>5} {row['pending']:>8} {links:>7}",
                err=err,
            )
        else:
            reason = row.get("reason")
            # an unanswered node's reason starts with its address: the rest says why
            note = f"no answer: {reason.split(': ', 1)[-1]}" if reason else _event_summary(
                row.get("last", "")
            )
            # no numbers to show: the note takes their columns (the line stays in 80)
            click.echo(f"{cells}  {printable(note)[:50]}", err=err)


def _event_summary(line: str) -> str:
    """A process's last output line for a table: a JSON event line as its event name and
    its short scalar fields (``ready: driver=driver-0``), anything else as it is."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line
    if not isinstance(entry, dict) or not isinstance(entry.get("event"), str):
        return line
    fields = [
        f"{key}={value}"
        for key, value in entry.items()
        if key != "event" and isinstance(value, str | int | float) and len(str(value)) <= 24
    ]
    return " ".join([f"{entry['event']}:", *fields]) if fields else entry["event"]


def _add_up(group: click.Group, plan: PlanNetwork, protocol: str) -> None:
    @group.command("up")
    @_DIRECTORY
    @click.option(
        "--timeout",
        "timeout_s",
        type=SECONDS,
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


def _add_status_and_logs(
    group: click.Group, protocol: str, *, with_status: bool, request_ports: RequestPorts | None
) -> None:
    if with_status and request_ports is not None:
        _add_live_status(group, protocol, request_ports)
    elif with_status:
        _add_status(group, protocol)
    _add_logs(group, protocol)


def _add_live_status(group: click.Group, protocol: str, request_ports: RequestPorts) -> None:
    @group.command("status")
    @_DIRECTORY
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per process.")
    @click.option(
        "--timeout",
        "timeout_s",
        type=SECONDS,
        default=STATUS_TIMEOUT_S,
        show_default=True,
        help="Seconds each node may take to answer.",
    )
    def status(directory: Path, as_json: bool, timeout_s: float) -> None:
        """Ask each node of the network over its port how far it is (progress, lag behind
        the furthest, pending work, links), and show the other processes `up` started.
        Exits 1 when one is down or does not answer."""
        from synod.cli.common import config_errors
        from synod.runtime.supervisor import SupervisorError

        try:
            with config_errors(f"synod {protocol} init {directory}"):
                ports = request_ports(directory)
        except SupervisorError as error:
            raise click.ClickException(str(error)) from None
        rows = live_rows(directory, ports, timeout_s=timeout_s)
        if as_json:
            for row in rows:
                click.echo(json.dumps(row))
        else:
            print_live_rows(rows)
        if not all(row["state"] == "running" for row in rows):
            raise SystemExit(1)


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
        type=SECONDS,
        default=10.0,
        show_default=True,
        help="Seconds to wait after SIGTERM before SIGKILL.",
    )
    def down(directory: Path, timeout_s: float) -> None:
        """Stop every process of the network (SIGTERM, then SIGKILL after the timeout)."""
        from synod.cli.common import notice_if_slow
        from synod.runtime.supervisor import Supervisor, SupervisorError

        waiting = (
            f"waiting for the processes to stop (SIGKILL after {timeout_s:g} s, --timeout)"
        )
        try:
            with notice_if_slow(waiting):
                outcome = Supervisor(directory).down(timeout_s=timeout_s)
        except SupervisorError as error:
            raise click.ClickException(str(error)) from None
        if not outcome:
            click.echo(f"{directory}: nothing was running", err=True)
        for name, result in outcome.items():
            click.echo(f"{name:<24} {result}")


def _print_tails(files: list[Path], lines: int, follow: bool) -> None:
    from synod.cli.common import printable
    from synod.runtime.supervisor import tail_lines

    positions: dict[Path, int] = {}
    for path in files:
        # the end of the file only: a long-running node's log may hold gigabytes
        tail, positions[path] = tail_lines(path, lines)
        for line in tail:
            click.echo(f"{path.name}: {printable(line)}")
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
            data = handle.read(FOLLOW_READ_BYTES)
    except OSError:
        return position
    complete = data[: data.rfind(b"\n") + 1]
    if not complete and len(data) == FOLLOW_READ_BYTES:
        complete = data  # a line longer than one read: printed in pieces, not waited on
    for line in complete.decode("utf-8", errors="replace").splitlines():
        click.echo(f"{path.name}: {printable(line)}")
    return position + len(complete)
