"""`benchmarks/scp_bench.py --quick` prints JSON lines with the expected keys (no timing
is judged: a smoke test that the headline figures can be produced)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scp_bench.py"


def test_quick_benchmark_prints_ratio_and_cost_lines() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [line["benchmark"] for line in lines]
    assert kinds.count("scp_cost_per_slot") == 2
    ratios = [line for line in lines if "ratio_to_signature_checks" in line]
    assert [line["validators"] for line in ratios] == [4, 7]
    assert all(line["ratio_to_signature_checks"] > 0 for line in ratios)
    assert all(line["messages_per_slot"] > 0 for line in lines if "messages_per_slot" in line)
