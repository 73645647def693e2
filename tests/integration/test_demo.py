"""`synod demo` (what `make demo` runs) as a user runs it: real processes, a crash, a verdict."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest


@pytest.mark.integration
def test_demo_agrees_after_a_crash_and_cleans_up() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "synod.cli.main", "demo"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "SIGKILL node-3" in result.stdout
    assert "agreement: yes; every node has all 25 values: yes; clean shutdown: yes" in result.stdout
    workdir = result.stdout.split("(", 1)[1].split(")", 1)[0]
    assert workdir.startswith("/")
    assert not pathlib.Path(workdir).exists(), "the demo must remove its working directory"
