"""The FastPay benchmark's smoke run prints JSON lines with the expected keys."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fastpay_bench.py"
KEYS = {
    "benchmark",
    "shards",
    "transfers",
    "transfers_per_s",
    "latency_p50_ms",
    "latency_p99_ms",
    "crypto_us_per_transfer",
    "crypto_bound_per_s",
    "ratio_to_crypto_bound",
    "shard_cpu_us_per_transfer",
    "client_cpu_us_per_transfer",
    "crypto_share_of_cpu",
}


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_quick_benchmark_prints_json_lines_with_the_expected_keys() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["shards"] for line in lines] == [1, 2]
    for line in lines:
        assert set(line) >= KEYS
        assert line["authorities"] == 4
        assert line["processes"] == 4 * line["shards"] + 1
        assert line["transfers"] == 100  # every transfer was certified and confirmed
