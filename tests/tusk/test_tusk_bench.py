"""`benchmarks/tusk_bench.py --quick` runs, Tusk and the pysyncobj (Raft) peer included,
and prints JSON lines with the expected keys (a smoke test: no timing is judged)."""

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
        "measures",
    },
    "tusk-peer": {
        "peer",
        "status",
        "config",
        "transactions",
        "tx_per_s",
        "latency_p50_ms",
        "latency_p95_ms",
        "measures",
    },
    "tusk-vs-raft": {
        "tusk_tx_per_s",
        "raft_config",
        "raft_tx_per_s",
        "throughput_ratio",
        "latency_p50_ratio",
    },
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
    assert {line["bench"] for line in lines} == set(EXPECTED_KEYS)
    for line in lines:
        keys = EXPECTED_KEYS[line["bench"]]
        assert keys <= set(line), f"{line['bench']} lacks {keys - set(line)}"
    by_bench = {line["bench"]: line for line in lines}
    assert by_bench["tusk-localnet"]["transactions"] == 200

    # The peer ran for real, in both configurations, on the same 200 transactions.
    peers = [line for line in lines if line["bench"] == "tusk-peer"]
    assert sorted(peer["config"] for peer in peers) == ["batched", "unbatched"]
    for peer in peers:
        assert peer["status"] == "run"
        assert peer["transactions"] == 200
        assert peer["tx_per_s"] > 0
        assert 0 < peer["latency_p50_ms"] <= peer["latency_p95_ms"]

    # The ratio is taken against the faster Raft run, as documented.
    versus = by_bench["tusk-vs-raft"]
    fastest = max(peers, key=lambda peer: peer["tx_per_s"])
    assert versus["raft_config"] == fastest["config"]
    assert versus["raft_tx_per_s"] == fastest["tx_per_s"]
    assert versus["tusk_tx_per_s"] == by_bench["tusk-processes"]["tx_per_s"]
    assert versus["throughput_ratio"] > 0
    assert versus["latency_p50_ratio"] > 0
    expected = by_bench["tusk-processes"]["tx_per_s"] / fastest["tx_per_s"]
    assert versus["throughput_ratio"] == pytest.approx(expected, abs=0.001)
