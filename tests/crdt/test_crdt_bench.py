"""The benchmark script runs (`--quick`) and prints JSON lines with the expected keys.

No timing is asserted: only that every phase ran, matched the reference text and
reported its figures and ratios."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "crdt_bench.py"
TRACE = ROOT / ".." / "shared" / "data" / "traces" / "automerge-paper.json.gz"


@pytest.mark.skipif(not TRACE.exists(), reason=f"trace not found at {TRACE}")
def test_quick_benchmark_prints_every_phase_as_json_lines() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    phases = [line["phase"] for line in lines]
    assert phases.count("local") == 2 and phases.count("remote") == 2
    for line in lines:
        if line["phase"] in ("local", "remote"):
            assert line["matches"] is True
            assert {"seconds", "microseconds_per_edit", "ratio_to_str_splicing"} <= set(line)
        if line["phase"] == "remote":
            assert "ratio_to_verify_bound" in line
    (deletion,) = [line for line in lines if line["phase"] == "deletion"]
    assert {"repeat_microseconds_per_byte", "repeat_ratio_to_verify_bound"} <= set(deletion)
    pycrdt_lines = [line for line in lines if line["phase"] == "pycrdt"]
    if importlib.util.find_spec("pycrdt") is None:
        assert all("skipped" in line for line in pycrdt_lines)
        return
    assert sorted(line["edits_per_transaction"] for line in pycrdt_lines) == [1, 100]
    for pycrdt_line in pycrdt_lines:
        assert pycrdt_line["matches"] is True
        assert {
            "ratio_synod_local_100_edits_per_update_to_pycrdt",
            "ratio_synod_remote_100_edits_per_update_to_pycrdt",
            "ratio_synod_remote_1_edits_per_update_to_pycrdt",
        } <= set(pycrdt_line)
