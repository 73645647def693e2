"""How the supervisor tells a recorded process is still running: its pid runs its
command; a zombie is gone; an empty command line of a running process (the kernel could
not read its memory for a moment) is not taken for an exit, which made `up` report a
running node as "exited before it was ready", roll back, and leave it unsupervised."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from synod.runtime import supervisor
from synod.runtime.supervisor import Started


def started(process: subprocess.Popen[bytes], command: list[str]) -> Started:
    return Started("node-0", process.pid, command, "/dev/null", "/dev/null")


def test_a_running_process_of_the_recorded_command_is_alive() -> None:
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    with subprocess.Popen(command) as process:
        try:
            assert supervisor._alive(started(process, command))
            assert not supervisor._alive(started(process, [*command, "other"]))
        finally:
            process.kill()


def test_a_zombie_is_not_alive() -> None:
    command = [sys.executable, "-c", "pass"]
    with subprocess.Popen(command) as process:
        stat = Path(f"/proc/{process.pid}/stat")
        deadline = time.monotonic() + 30
        while stat.read_bytes().rpartition(b")")[2].split()[0] != b"Z":
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        assert supervisor._exited(process.pid)
        assert Path(f"/proc/{process.pid}/cmdline").read_bytes() == b""
        # _alive reaps the exited child of this process as it looks.
        assert not supervisor._alive(started(process, command))


def test_an_empty_command_line_of_a_running_process_is_not_an_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    with subprocess.Popen(command) as process:
        try:
            real_read = Path.read_bytes

            def unreadable_command_line(path: Path) -> bytes:
                return b"" if path.name == "cmdline" else real_read(path)

            monkeypatch.setattr(Path, "read_bytes", unreadable_command_line)
            assert supervisor._alive(started(process, command))
        finally:
            process.kill()
