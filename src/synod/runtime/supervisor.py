"""Run a whole local network in the background: start, inspect, follow and stop it.

Theory of operation.  A network directory written by `synod <protocol> init` names every
process the network needs (nodes, shards, cores and drivers).  `Supervisor.up` starts each
as ``python -m synod.cli.main ...`` in a session of its own (so it outlives the command
that started it and no terminal signal reaches it), with standard input closed (nodes
never wait on a terminal) and its standard output and error appended to
``DIR/logs/<name>.out`` / ``.err``; it then waits, with a deadline, for each process's
readiness line (``{"event": "ready", ...}`` on stdout).  What it started is recorded in
``DIR/processes.json`` (name, pid, command, log files), which `status`, `logs` and `down`
read: a process counts as running while its pid is alive *and* still runs that command
(a pid reused by another program is not mistaken for a node).  `down` sends SIGTERM
(clean shutdown: every synod node flushes and closes its store on it), waits, and
SIGKILLs what is still running after the deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType

STATE_NAME = "processes.json"
LOG_DIRECTORY = "logs"
STATUS_PORT_OPTION = "--status-port"
"""`synod rbc run`'s option: the port where a member answers status requests."""


@dataclass(frozen=True, slots=True)
class Service:
    """One process of a network: its name and its `synod` arguments (run in `cwd`)."""

    name: str
    arguments: tuple[str, ...]
    waits_for_ready: bool = True


@dataclass(frozen=True, slots=True)
class Started:
    """A process `up` started (as recorded in ``processes.json``)."""

    name: str
    pid: int
    command: list[str]
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What `status` knows of one process: running or not, and its last stdout line."""

    name: str
    pid: int
    running: bool
    last_line: str


class SupervisorError(Exception):
    """A network could not be started or stopped as asked (the message says why)."""


class Supervisor:
    """The background processes of one network directory (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.state_path = directory / STATE_NAME
        self.log_directory = directory / LOG_DIRECTORY

    # ------------------------------------------------------------ up

    def up(self, services: Sequence[Service], *, ready_timeout_s: float = 30.0) -> list[Started]:
        """Start every service and wait for each to announce readiness.

        Raises `SupervisorError` when the network is already up or a process exits or
        stays silent past the deadline (what was started is stopped again).
        """
        if any(status.running for status in self.status()):
            raise SupervisorError(f"{self.directory}: the network is already up (see `status`)")
        try:
            self.log_directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SupervisorError(f"{self.log_directory}: cannot create: {error}") from None
        offsets = {
            service.name: _size(self.log_directory / f"{service.name}.out") for service in services
        }
        started: list[Started] = []
        try:
            for service in services:
                with _interrupts_held():
                    started.append(self._start(service))
                    self._save(started)
            deadline = time.monotonic() + ready_timeout_s
            for service, process in zip(services, started, strict=True):
                if service.waits_for_ready:
                    self._wait_ready(process, deadline, offsets[service.name])
        except BaseException as error:
            self._stop(started, timeout_s=5.0)
            self.state_path.unlink(missing_ok=True)
            if isinstance(error, OSError):  # a log file that cannot be opened, mostly
                raise SupervisorError(f"cannot start the network: {error}") from None
            raise
        return started

    def restart(self, name: str, *, ready_timeout_s: float = 30.0) -> Started:
        """Start the recorded process `name` again (it must have stopped, as after a
        crash) with the same command, and wait for its new readiness line."""
        recorded = self.recorded()
        names = [process.name for process in recorded]
        if name not in names:
            raise SupervisorError(f"{self.directory}: no process named {name!r}")
        position = names.index(name)
        process = recorded[position]
        if _alive(process):
            raise SupervisorError(f"{name} is running (pid {process.pid})")
        offset = _size(Path(process.stdout))
        with _interrupts_held():
            started = self._launch(name, process.command)
            recorded[position] = started
            self._save(recorded)
        self._wait_ready(started, time.monotonic() + ready_timeout_s, offset)
        return started

    def kill(self, name: str, *, timeout_s: float = 10.0) -> None:
        """SIGKILL the recorded process `name` (a crash, for demonstrations and tests) and
        wait until it is gone; `restart` brings it back."""
        process = next((entry for entry in self.recorded() if entry.name == name), None)
        if process is None:
            raise SupervisorError(f"{self.directory}: no process named {name!r}")
        if not _alive(process):
            return  # already gone: its pid may run another program by now
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while _alive(process):
            if time.monotonic() > deadline:
                raise SupervisorError(f"{name} (pid {process.pid}) did not die")
            time.sleep(0.05)

    def _start(self, service: Service) -> Started:
        command = [sys.executable, "-m", "synod.cli.main", *service.arguments]
        return self._launch(service.name, command)

    def _launch(self, name: str, command: list[str]) -> Started:
        stdout_path = self.log_directory / f"{name}.out"
        stderr_path = self.log_directory / f"{name}.err"
        with stdout_path.open("ab") as stdout, stderr_path.open("ab") as stderr:
            stdout.write(b"")  # the file exists even before the process writes
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                command,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return Started(name, process.pid, command, str(stdout_path), str(stderr_path))

    def _wait_ready(self, process: Started, deadline: float, offset: int = 0) -> None:
        while True:
            if _ready_in(Path(process.stdout), offset):
                return
            if not _alive(process):
                raise SupervisorError(
                    f"{process.name} exited before it was ready; see {process.stderr}"
                )
            if time.monotonic() > deadline:
                raise SupervisorError(
                    f"{process.name} did not announce readiness in time; see {process.stderr}"
                )
            time.sleep(0.05)

    # ------------------------------------------------------------ status, logs

    def recorded(self) -> list[Started]:
        """The processes `up` recorded (empty when the network was never up).

        The file is checked entry by entry (`SupervisorError` naming it): a pid that is
        not a positive integer would make `down` signal every process of the user
        (``kill(-1)``) or its own process group (``kill(0)``).  The log files are those
        of ``DIR/logs`` whatever directory `up` ran from.
        """
        try:
            document = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError, RecursionError) as error:
            raise SupervisorError(f"{self.state_path}: unreadable ({error})") from None
        entries = document.get("processes") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise SupervisorError(f"{self.state_path}: expected an object with a processes list")
        return [self._entry(index, entry) for index, entry in enumerate(entries)]

    def _entry(self, index: int, entry: object) -> Started:
        """One checked entry of ``processes.json``, its logs placed in ``DIR/logs``."""
        where = f"{self.state_path}: processes[{index}]"
        if not isinstance(entry, dict) or set(entry) != set(Started.__dataclass_fields__):
            raise SupervisorError(f"{where}: expected name, pid, command, stdout, stderr")
        name, pid, command = entry["name"], entry["pid"], entry["command"]
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise SupervisorError(f"{where}: name: expected a process name, got {name!r}")
        if type(pid) is not int or pid <= 0:
            raise SupervisorError(f"{where}: pid: expected a positive integer, got {pid!r}")
        if not isinstance(command, list) or not all(isinstance(w, str) for w in command):
            raise SupervisorError(f"{where}: command: expected a list of strings")
        return Started(
            name,
            pid,
            command,
            str(self.log_directory / f"{name}.out"),
            str(self.log_directory / f"{name}.err"),
        )

    def status(self) -> list[ServiceStatus]:
        """Each recorded process: running or not, and the last line it printed."""
        return [
            ServiceStatus(process.name, process.pid, _alive(process), _last_line(process))
            for process in self.recorded()
        ]

    def log_files(self) -> list[Path]:
        """Every log file of the network, stdout and stderr of each process."""
        files: list[Path] = []
        for process in self.recorded():
            files += [Path(process.stdout), Path(process.stderr)]
        return files

    # ------------------------------------------------------------ down

    def down(self, *, timeout_s: float = 10.0) -> dict[str, str]:
        """Stop every recorded process: SIGTERM, then SIGKILL after `timeout_s`.

        Returns name -> "stopped" (ended on SIGTERM), "killed" or "not running".
        """
        outcome = self._stop(self.recorded(), timeout_s=timeout_s)
        self.state_path.unlink(missing_ok=True)
        return outcome

    def _stop(self, processes: Sequence[Started], *, timeout_s: float) -> dict[str, str]:
        outcome = {process.name: "not running" for process in processes}
        running = [process for process in processes if _alive(process)]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            outcome[process.name] = "stopped"
        deadline = time.monotonic() + timeout_s
        while any(_alive(process) for process in running) and time.monotonic() < deadline:
            time.sleep(0.05)
        for process in running:
            if _alive(process):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                outcome[process.name] = "killed"
        for process in running:
            _reap(process.pid)
        return outcome

    def _save(self, started: Sequence[Started]) -> None:
        document = {"processes": [asdict(process) for process in started]}
        temporary = self.state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        temporary.replace(self.state_path)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold Ctrl-C while a process is started and recorded, then deliver it: an interrupt
    between the two (inside `subprocess.Popen` after the fork, or before
    ``processes.json`` was written) left a running process that `down` did not know of.
    Only the main thread receives signals, so elsewhere this holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[tuple[int, FrameType | None]] = []

    def hold(number: int, frame: FrameType | None) -> None:
        held.append((number, frame))

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        # None: a handler not installed from Python, which cannot be put back.
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        if held and callable(previous):
            previous(*held[0])  # Python's default handler raises KeyboardInterrupt here
        elif held and previous in (signal.SIG_DFL, None):
            os.kill(os.getpid(), signal.SIGINT)


def _alive(process: Started) -> bool:
    """The pid runs, and runs this command (not a reused pid)."""
    _reap(process.pid)
    try:
        raw = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    except OSError:
        return _signal_zero(process.pid)
    if not raw:
        # A zombie (exited, not yet reaped by its parent) has no command line; so may a
        # running process for a moment when the kernel cannot read its memory: ask its
        # state rather than take it for dead, which would leave it running unsupervised.
        return not _exited(process.pid) and _signal_zero(process.pid)
    return raw.rstrip(b"\0").split(b"\0") == [word.encode() for word in process.command]


def _exited(pid: int) -> bool:
    """Whether `pid` is gone or a zombie (state Z or X in ``/proc/PID/stat``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    fields = stat.rpartition(b")")[2].split()
    return not fields or fields[0] in (b"Z", b"X")


def _signal_zero(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    """Collect the exit status of `pid` if it is an exited child of this process (started
    by `up` here), so it does not linger as a zombie; no other child is touched."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _ready_in(path: Path, offset: int = 0) -> bool:
    """A readiness line in `path` past byte `offset` (a restart appends to the log)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return False
    for line in lines:
        with contextlib.suppress(ValueError):
            document = json.loads(line)
            if isinstance(document, dict) and document.get("event") == "ready":
                return True
    return False


TAIL_BYTES = 1024 * 1024
"""What `status` and `logs` read at most from the end of one log file: a node's output
grows for as long as it runs (a Tusk core prints every commit), and reading all of it
would cost memory and time in proportion; a megabyte holds thousands of lines."""


def tail_lines(path: Path, count: int, max_bytes: int = TAIL_BYTES) -> tuple[list[str], int]:
    """The last `count` lines of `path` within its last `max_bytes`, and its size (no
    file, or not a readable file: none, 0)."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - max_bytes))
            data = handle.read(max_bytes)
    except OSError:
        return [], 0
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first one read is likely the end of a longer line
    return (lines[-count:] if count else []), size


def _last_line(process: Started) -> str:
    lines, _ = tail_lines(Path(process.stdout), 1)
    return lines[-1] if lines else ""


# ---------------------------------------------------------------- the networks of each protocol


def plan_rbc(directory: Path) -> list[Service]:
    """Every member of a reliable-broadcast network (`synod rbc init`), each answering
    status requests on a port free now (none of the network's own), which `up` records
    in its command line for `request_ports_rbc`."""
    from synod.rbc.network import load_network
    from synod.runtime.nodes import free_ports

    config = load_network(directory)
    taken = {node.port for node in config.nodes}
    services = []
    for node in config.nodes:
        port = next(port for port in free_ports(node.host, len(taken) + 1) if port not in taken)
        taken.add(port)
        arguments = ("rbc", "run", ".", node.name, STATUS_PORT_OPTION, str(port))
        services.append(Service(node.name, arguments))
    return services


def plan_scp(directory: Path) -> list[Service]:
    """Every node of an SCP log network (`synod scp init`)."""
    from synod.scp.network import load_network

    config = load_network(directory)
    return [Service(node.name, ("scp", "run", ".", node.name)) for node in config.nodes]


def plan_tusk(directory: Path) -> list[Service]:
    """Every core of a Tusk committee (`synod tusk init`) and one driver."""
    from synod.tusk.config import load_network

    network = load_network(directory)
    cores = [Service(core.name, ("tusk", "core", ".", core.name)) for core in network.cores]
    return [*cores, Service("driver-0", ("tusk", "driver", ".", "--name", "driver-0"))]


def plan_fastpay(directory: Path) -> list[Service]:
    """Every shard of every authority whose server file is in the directory, laid out as
    the quickstart does (``server<I>.json``, ``committee.json``, ``initial_accounts.txt``)."""
    from synod.fastpay.config import FastPayFileError, ServerFile

    servers = sorted(directory.glob("server*.json"))
    if not servers:
        raise SupervisorError(f"{directory}: no server*.json (see `synod fastpay server generate`)")
    services = []
    for path in servers:
        try:
            server = ServerFile.load(path)
        except FastPayFileError as error:
            raise SupervisorError(str(error)) from None
        for shard in range(server.authority.shards):
            arguments = (
                "fastpay", "server", "--server", path.name, "run", "--shard", str(shard),
                "--initial-accounts", "initial_accounts.txt", "--committee", "committee.json",
            )  # fmt: skip
            services.append(Service(f"{path.stem}.shard-{shard}", arguments))
    return services


def plan_crdt(directory: Path) -> list[Service]:
    """The relayer and every node of a BFT-CRDT network (`synod crdt init-network`): each
    subdirectory holding a ``node.toml``, all on one relayer at ``ws://127.0.0.1:PORT``,
    which is started first with the nodes' network id and group.  Each node gets a
    control socket (``<node>/control.sock``) for `synod crdt submit` and `status`."""
    from urllib.parse import urlsplit

    from synod.crdt.config import CONFIG_NAME, load_config
    from synod.crypto import node_id_text

    configs = [load_config(path.parent) for path in sorted(directory.glob(f"*/{CONFIG_NAME}"))]
    if not configs:
        raise SupervisorError(f"{directory}: no */{CONFIG_NAME} (see `synod crdt init-network`)")
    relays = {config.relay for config in configs}
    networks = {config.network for config in configs}
    if len(relays) != 1 or None in relays or len(networks) != 1:
        raise SupervisorError(
            f"{directory}: the nodes must share one relayer and one network id "
            "(as `synod crdt init-network` writes them)"
        )
    url = urlsplit(str(configs[0].relay))
    if url.scheme != "ws" or url.hostname is None or url.port is None:
        raise SupervisorError(f"{directory}: the relayer {configs[0].relay} is not ws://HOST:PORT")
    members = sorted(
        {node_id_text(member) for config in configs for member in config.members or ()}
    )
    relayer = (
        "crdt", "relayer", "--host", url.hostname, "--port", str(url.port),
        "--network-id", configs[0].network.decode(),
        *(word for member in members for word in ("--member", member)),
    )  # fmt: skip
    names = [config.path.parent.name for config in configs]
    nodes = [
        Service(name, ("crdt", "run", name, "--control", f"{name}/control.sock"))
        for name in names
    ]
    return [Service("relayer", relayer), *nodes]


# ---------------------------------------------------------------- where each node answers status

Ports = dict[str, tuple[str, int]]


def request_ports_scp(directory: Path) -> Ports:
    """Each SCP node's submit port, where it answers status (`synod.runtime.node_status`)."""
    from synod.scp.network import load_network

    config = load_network(directory)
    return {node.name: (node.host, node.submit_port) for node in config.nodes}


def request_ports_rbc(directory: Path) -> Ports:
    """Each running RBC member's status port, read from the command `up` recorded
    (members started by hand with ``--status-port`` are not known here)."""
    from synod.rbc.network import load_network

    hosts = {node.name: node.host for node in load_network(directory).nodes}
    recorded = Supervisor(directory).recorded()
    if not recorded:
        raise SupervisorError(f"{directory}: the network is not up (`synod rbc up {directory}`)")
    ports: Ports = {}
    for process in recorded:
        command = process.command
        if STATUS_PORT_OPTION in command[:-1] and process.name in hosts:
            port = command[command.index(STATUS_PORT_OPTION) + 1]
            if port.isdigit():
                ports[process.name] = (hosts[process.name], int(port))
    return ports


def request_ports_tusk(directory: Path) -> Ports:
    """Each Tusk core's port (drivers have none: `status` shows their process)."""
    from synod.tusk.config import load_network

    network = load_network(directory)
    return {core.name: (core.host, core.port) for core in network.cores}


def request_ports_fastpay(directory: Path) -> Ports:
    """Each shard's port, named as `plan_fastpay` names its process."""
    from synod.fastpay.config import FastPayFileError, ServerFile

    ports: Ports = {}
    for path in sorted(directory.glob("server*.json")):
        try:
            authority = ServerFile.load(path).authority
        except FastPayFileError as error:
            raise SupervisorError(str(error)) from None
        for shard in range(authority.shards):
            ports[f"{path.stem}.shard-{shard}"] = authority.address(shard)
    if not ports:
        raise SupervisorError(f"{directory}: no server*.json (see `synod fastpay server generate`)")
    return ports
