"""The simulator's verdict lines and `synod fbas check`'s verdict fit an 80-column
terminal, with the words tests and docs look for kept whole."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from synod.cli.cluster import synod_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fbas"


def synod(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        synod_command(*arguments),
        capture_output=True,
        text=True,
        check=False,
        timeout=100,
        env={**os.environ, "COLUMNS": "80"},
    )


def too_wide(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > 80]


def test_a_simulator_run_fits_80_columns() -> None:
    # Seed 2's fault list and every seed's verdict were 87-93 characters long.
    done = synod("sim", "scp", "--seed", "2")
    assert done.returncode == 0, done.stderr
    assert too_wide(done.stdout) == []
    lines = done.stdout.splitlines()
    assert any(line.startswith("SEED=2 scenario=scp-symmetric ok") for line in lines)
    assert any("history=" in line for line in lines)
    assert any(line.startswith("  network: ") and "drop" in line for line in lines)


def test_a_failing_simulator_verdict_fits_80_columns() -> None:
    done = synod("sim", "scp", "--nodes", "4", "--byzantine", "2", "--collude", "--seed", "3")
    assert done.returncode == 1
    verdicts = [line for line in done.stdout.splitlines() if not line.startswith("  [")]
    assert too_wide("\n".join(verdicts)) == []
    assert any(line.startswith("SEED=3 scenario=scp-symmetric FAILED") for line in verdicts)


@pytest.mark.parametrize(
    "snapshot", ["correct.json", "stellarbeat_nodes_2019-09-17.json"]
)
def test_the_quorum_intersection_verdict_fits_80_columns(snapshot: str) -> None:
    done = synod("fbas", "check", str(DATA / snapshot))
    assert done.returncode == 0, done.stderr
    assert "Quorum intersection holds" in done.stdout
    assert too_wide(done.stdout) == []
