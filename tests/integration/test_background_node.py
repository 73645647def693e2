"""A node started in the background of an interactive shell (`synod rbc run net node-0
&`, as docs/runtime.md shows) keeps running: it does not read the terminal, which would
stop it ("Stopped (tty input)") before it serves anyone."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synod.cli.cluster import free_ports, synod_command
from synod.runtime.node_status import ask_status

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


class Shell:
    """An interactive bash on a pseudo-terminal (job control on)."""

    def __init__(self, directory: Path) -> None:
        self.pid, self.master = pty.fork()
        if self.pid == 0:  # the child: nothing but exec
            os.chdir(directory)
            os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
        self.output = ""

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def wait_for(self, pattern: str, deadline_s: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + deadline_s
        while (found := re.search(pattern, self.output)) is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {pattern!r} in {self.output[-2000:]!r}"
            readable, _, _ = select.select([self.master], [], [], min(remaining, 0.2))
            if readable:
                self.output += os.read(self.master, 65536).decode(errors="replace")
        return found

    def close(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        os.close(self.master)


def test_a_node_run_in_the_background_of_a_shell_keeps_running(tmp_path: Path) -> None:
    ports = ",".join(str(port) for port in free_ports(4))
    init = subprocess.run(
        synod_command("rbc", "init", "net", "--ports", ports),
        cwd=tmp_path, capture_output=True, check=False, timeout=60,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    command = shlex.join([sys.executable, "-m", "synod.cli.main", "rbc", "run", "net", "node-0",
                          "--status-port", "0"])  # fmt: skip
    shell = Shell(tmp_path)
    node = 0
    try:
        shell.type(f"{command} 2>node-0.err &")
        node = int(shell.wait_for(r"\[1\] (\d+)").group(1))
        ready = json.loads(shell.wait_for(r'\{"event": "ready".*\}').group(0))
        host, port = ready["status_address"].rsplit(":", 1)
        # What the user types next reaches the terminal, which a node reading it from
        # the background would try to read too, and be stopped for.
        for number in range(3):
            shell.type(f"echo typed-{number}")
            shell.wait_for(f"[\r\n]typed-{number}\r\n")  # its output, not the echo
        shell.type("jobs")
        state = shell.wait_for(r"\[1\]\+\s+(Running|Stopped)").group(1)
        assert state == "Running", shell.output[-2000:]
        reply = asyncio.run(ask_status((host, int(port)), timeout_s=10))  # it serves
        assert reply.protocol == "rbc"
        assert "not read" in (tmp_path / "node-0.err").read_text()
    finally:
        if node:
            os.kill(node, signal.SIGKILL)  # the node the shell started for this test
        shell.close()
