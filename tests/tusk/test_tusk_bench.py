"""`benchmarks/tusk_bench.py --quick` runs and prints JSON lines with the expected keys
(a smoke test: no timing is judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tusk_bench.py"

EXPECTED_KEYS = {
    "tusk-crypto": {"sign_us", "verify_us", "crypto_ms_per_round_per_core"},
    "tusk-localnet": {"tx_per_cpu_s", "bound_tx_per_cpu_s", "ratio_to_crypto_bound", "rounds"},
    "tusk-processes": {
        "tx_per_s",
        "latency_p50_ms",
        "latency_p95_ms",
        "bound_tx_per_s",
        "ratio_to_crypto_bound",
    },
    "tusk-peer": {"peer", "status"},
}


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_quick_benchmark_prints_json_lines_with_the_expected_keys() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick"],
        capture_output=True,
        text=True,
        check=False,
        timeout=80,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_bench = {line["bench"]: line for line in lines}
    assert set(by_bench) == set(EXPECTED_KEYS)
    for bench, keys in EXPECTED_KEYS.items():
        assert keys <= set(by_bench[bench]), f"{bench} lacks {keys - set(by_bench[bench])}"
    assert by_bench["tusk-localnet"]["transactions"] == 200
