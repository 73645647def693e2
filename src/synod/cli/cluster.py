"""Local clusters of real node processes on 127.0.0.1, for the demo and its tests.

Each node is a child process (`python -m synod.cli.main ...`) whose stdout is read line by
line by a thread into a queue, so the caller waits on output lines with deadlines
rather than sleeping.  Every process is killed when the cluster closes, whatever
happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


class ClusterError(Exception):
    """A node failed to start, died, or the cluster stalled past its deadline."""


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now (another process could take one before use)."""
    sockets = []
    try:
        for _ in range(count):
            handle = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            handle.bind(("127.0.0.1", 0))
            sockets.append(handle)
        return [handle.getsockname()[1] for handle in sockets]
    finally:
        for handle in sockets:
            handle.close()


Line = tuple[str, dict[str, Any]]
"""(node name, parsed JSON stdout line); a node that exits sends {"event": "exited"}."""


@dataclass
class NodeProcess:
    """One node process whose JSON stdout lines go to a queue shared by the cluster."""

    name: str
    arguments: Sequence[str]
    log_path: Path
    inbox: queue.Queue[Line]
    process: subprocess.Popen[bytes] | None = None
    _log: TextIO | None = None

    def start(self) -> None:
        self._log = self.log_path.open("a", encoding="utf-8")
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "synod.cli.main", *self.arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=environment,
        )
        threading.Thread(target=self._read, args=(self.process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            with contextlib.suppress(ValueError):
                self.inbox.put((self.name, json.loads(raw)))
        self.inbox.put((self.name, {"event": "exited"}))

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send_line(self, text: str) -> None:
        if self.process is None or self.process.stdin is None or not self.alive:
            raise ClusterError(f"{self.name} is not running")
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.process is not None and self.alive:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit code."""
        if self.process is None:
            return None
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        if self._log is not None:
            self._log.close()
        return self.process.returncode


@contextlib.contextmanager
def running(nodes: Sequence[NodeProcess]) -> Iterator[Sequence[NodeProcess]]:
    """Start every node; on exit stop them all (SIGTERM, then SIGKILL)."""
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            with contextlib.suppress(Exception):
                node.terminate()


def drain(
    inbox: queue.Queue[Line],
    on_line: Callable[[str, dict[str, Any]], None],
    until: Callable[[], bool],
    timeout_s: float,
) -> bool:
    """Hand every line to `on_line` until `until()` holds (True) or time runs out (False)."""
    deadline = time.monotonic() + timeout_s
    while not until():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            name, line = inbox.get(timeout=remaining)
        except queue.Empty:
            return until()
        on_line(name, line)
    return True


def synod_command(*arguments: str) -> list[str]:
    """The command line of ``synod ARGUMENTS``, run by this interpreter."""
    return [sys.executable, "-m", "synod.cli.main", *arguments]


class WatchedProcess:
    """One synod process on its own, whose stdout JSON lines a thread collects.

    The caller (the integration tests) waits on what the process printed, each wait with
    a deadline, rather than sleeping; `seen` holds every line taken so far, in order.
    """

    def __init__(
        self,
        label: str,
        arguments: Sequence[str],
        stderr_path: Path,
        *,
        deadline_s: float,
        stdin: bool = True,
    ) -> None:
        self.label = label
        self.stderr_path = stderr_path
        self.deadline_s = deadline_s
        with stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                synod_command(*arguments),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(json.loads(raw))

    def _finished(self) -> bool:
        """The process has exited and the reader has queued all it printed."""
        return self.process.poll() is not None and not self.reader.is_alive()

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
        """Take lines until `predicate(all lines so far)` holds; AssertionError when the
        deadline passes or the process has exited first."""
        deadline = time.monotonic() + self.deadline_s
        while not predicate(self.seen):
            if self._finished():
                self.collect_after_exit()  # what it printed before it exited
                if predicate(self.seen):
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._finished():
                raise AssertionError(f"{self.label}: {what} did not happen; {self.stderr_tail()}")
            try:
                self.seen.append(self.lines.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                continue

    def collect_after_exit(self) -> None:
        """Take every line the exited process printed (its stdout is at its end)."""
        self.reader.join(timeout=self.deadline_s)
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())

    def events(self, event: str) -> list[dict[str, Any]]:
        """The lines seen so far whose "event" is `event`."""
        return [line for line in self.seen if line["event"] == event]

    def wait_event(self, event: str, count: int = 1) -> dict[str, Any]:
        """Wait for the `count`-th line of `event` and return it."""
        self.wait_for(
            lambda lines: sum(line["event"] == event for line in lines) >= count, f"{event!r}"
        )
        return self.events(event)[count - 1]

    def wait_ready(self) -> dict[str, Any]:
        """Wait for the readiness line and return it."""
        return self.wait_event("ready")

    def send_line(self, text: str) -> None:
        """Write `text` and a newline on the process's standard input."""
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def stop(self, number: signal.Signals = signal.SIGTERM) -> int:
        """Send signal `number` and wait (within the deadline) for the exit status."""
        self.process.send_signal(number)
        return self.process.wait(timeout=self.deadline_s)

    def kill_if_running(self) -> None:
        """SIGKILL the process unless it has exited already (clean-up after a test)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stderr_tail(self) -> str:
        return "stderr tail: " + self.stderr_path.read_text(errors="replace")[-2000:]
