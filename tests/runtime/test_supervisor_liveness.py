"""How the supervisor tells a recorded process is still running: its pid runs its
command; a zombie is gone; an empty command line of a running process (the kernel could
not read its memory for a moment) is not taken for an exit, which made `up` report a
running node as "exited before it was ready", roll back, and leave it unsupervised."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synod.runtime import supervisor
from synod.runtime.supervisor import Service, Started, Supervisor


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


def test_ctrl_c_while_a_process_is_restarted_leaves_none_that_down_does_not_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`synod demo --protocol tusk` restarts its driver; Ctrl-C after the new process was
    started but before ``processes.json`` named it left it running after `down`."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    launched: list[int] = []
    real_launch = Supervisor._launch

    def launch(self: Supervisor, name: str, command: list[str]) -> Started:
        process = real_launch(self, name, sleeper)
        launched.append(process.pid)
        return process

    monkeypatch.setattr(Supervisor, "_launch", launch)
    network = Supervisor(tmp_path)
    network.up([Service("driver-0", ("unused",), waits_for_ready=False)])
    network.kill("driver-0")

    real_save = Supervisor._save
    interrupted: list[bool] = []

    def save_after_ctrl_c(self: Supervisor, started: list[Started]) -> None:
        if not interrupted:
            interrupted.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs before the write
        real_save(self, started)

    monkeypatch.setattr(Supervisor, "_save", save_after_ctrl_c)
    try:
        with pytest.raises(KeyboardInterrupt):
            network.restart("driver-0")
        assert network.down(timeout_s=10) == {"driver-0": "stopped"}
        assert not supervisor._signal_zero(launched[-1])
    finally:
        for pid in launched:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
