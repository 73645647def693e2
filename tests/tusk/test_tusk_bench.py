"""`benchmarks/tusk_bench.py --quick` runs, Tusk and the pysyncobj (Raft) peer included,
and prints JSON lines with the expected keys (a smoke test: no timing is judged)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tusk_bench.py"

EXPECTED_KEYS = {
    "tusk-crypto": {"sign_us", "verify_us", "crypto_ms_per_round_per_core"},
    "tusk-in-process": {"tx_per_cpu_s", "bound_tx_per_cpu_s", "ratio_to_crypto_bound", "rounds"},
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
    pytest.importorskip("pysyncobj", reason="the Raft peer tool comes with the dev extra")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json"],
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
    assert by_bench["tusk-in-process"]["transactions"] == 200
    tusk = by_bench["tusk-processes"]
    assert tusk["transactions"] == 200
    assert tusk["tx_per_s"] > 0
    assert 0 < tusk["latency_p50_ms"] <= tusk["latency_p95_ms"]

    # The peer ran for real, in both configurations, on the same 200 transactions.
    peers = [line for line in lines if line["bench"] == "tusk-peer"]
    assert sorted(peer["config"] for peer in peers) == ["batched", "unbatched"]
    for peer in peers:
        assert peer["status"] == "run"
        assert peer["transactions"] == 200
        assert peer["tx_per_s"] > 0
        assert 0 < peer["latency_p50_ms"] <= peer["latency_p95_ms"]

    # Both systems state the same submission model: one stream per node, one batch in
    # flight each, the stated part before the per-system acknowledgement identical.
    for line in [tusk, *peers]:
        assert "4 concurrent streams" in line["measures"]
        assert "one batch in flight per node" in line["measures"]
    submission = {line["measures"].split("acknowledgement:")[0] for line in [tusk, *peers]}
    assert len(submission) == 1

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


def load_benchmark() -> ModuleType:
    specification = importlib.util.spec_from_file_location("tusk_bench", SCRIPT)
    assert specification is not None and specification.loader is not None
    module = importlib.util.module_from_spec(specification)
    specification.loader.exec_module(module)
    return module


def test_submission_streams_split_batches_of_64_round_robin_over_the_nodes() -> None:
    # 520 transactions: batches 0..8 start at 0, 64, ..., 512 (the last holds 8);
    # batch k belongs to node k mod 4, so node 0 streams batches 0, 4 and 8.
    batches_of = load_benchmark().batches_of
    assert batches_of(520, 0) == [range(0, 64), range(256, 320), range(512, 520)]
    assert batches_of(520, 1) == [range(64, 128), range(320, 384)]
    assert batches_of(520, 3) == [range(192, 256), range(448, 512)]
    # Every transaction is in exactly one stream, for Tusk and Raft alike.
    numbers = [n for index in range(4) for batch in batches_of(200, index) for n in batch]
    assert sorted(numbers) == list(range(200))
    assert batches_of(200, 3) == [range(192, 200)]
