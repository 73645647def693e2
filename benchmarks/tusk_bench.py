"""Tusk benchmarks, JSON lines on stdout.

Every figure is a ratio against a crypto bound measured in the same run: the cost, on
this machine, of the Ed25519 signatures the protocol requires per round, times the
rounds the run took.  Per round and per core the Narwhal design requires at least:
sign its header and one vote per header of the round (1 + n signatures), check the
other headers before voting on them (n - 1 verifications) and check each certificate
of the round (n x (1 + q) verifications, q = quorum size).  The passive-core split adds
one signed answer per request and its check by the driver; those are not in the bound,
so the ratio shows what they and everything else cost.

1. `in-process`: 4 cores and 2 drivers in a `synod.sim` world (one thread, no I/O,
   every request and answer through the codec): committed 512-byte transactions per
   second of CPU, against the bound for all four cores' crypto on that one CPU.
2. `processes`: `synod tusk core` x 4 and `synod tusk driver` x 2 as real processes on
   127.0.0.1 (SQLite with fsync, TCP): transactions per second from the first
   submission to the last commit seen on every core, commit latency at the core that
   took each transaction (p50, p95), against the bound divided over the cores (each
   core's own crypto per round, as if each core had a CPU of its own).
3. `peer`: pysyncobj (Raft, crash faults only) in 4 processes on 127.0.0.1
   (`benchmarks/raft_peer.py`, one replicated `append` per transaction, log journalled
   to a file), fed the same transactions the same way (below).  Measured like the
   Tusk processes: transactions per second from the first submission to the last apply
   on every node; latency from a batch's submission to the apply of each of its
   transactions at the node that took it (p50, p95).  Two runs: the library's default
   (entries batched every 100 ms) and `appendEntriesUseBatch=False`.  Then
   `tusk-vs-raft`: the Tusk process throughput divided by the faster Raft run's (above
   1: Tusk is faster).

Submission, the same for both systems: the transactions in batches of 64, batch k to
node k mod 4, over 4 concurrent streams (one per Tusk core, one per Raft node); each
stream sends its next batch once its node has acknowledged the last, so each node has
one batch in flight.  The acknowledgement is each system's own: Tusk, the core's signed
`SubmitAnswer` (sent after its SQLite fsync); Raft, the node has queued the 64
`append` commands (in memory).

    python benchmarks/tusk_bench.py [--quick] [--transactions 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from synod.core import Proposed
from synod.crypto import KeyPair, NodeId, verify
from synod.quorum.committee import Committee
from synod.sim.scenarios.tusk import add_drivers, committed, tusk_world
from synod.tusk.core import TuskConfig, TuskCore

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/report.py
from report import add_json_option, configure, emit

CORES = 4
TRANSACTION_BYTES = 512
QUORUM = 2 * ((CORES - 1) // 3) + 1
BATCH = 64
SUBMISSION = (
    "submission: batches of 64 transactions, batch k to node k mod 4, over 4 concurrent "
    "streams (one per node), each sending its next batch once its node acknowledged the "
    "last (one batch in flight per node); "
)


def transaction(number: int) -> bytes:
    """A printable 512-byte transaction (printable, so commit lines carry it as text)."""
    head = f"tx-{number:08d}-".encode()
    return head + b"x" * (TRANSACTION_BYTES - len(head))


# ---------------------------------------------------------------- the crypto bound


def crypto_costs(samples: int) -> tuple[float, float]:
    """CPU seconds per Ed25519 signature and per verification, measured now."""
    keys = KeyPair.from_seed(b"\x07" * 32)
    message = b"m" * 64
    start = time.process_time()
    signatures = [keys.sign(b"synod/tusk/vote", message + bytes([i % 256])) for i in range(samples)]
    signed = time.process_time()
    for index, signature in enumerate(signatures):
        verify(keys.node_id, b"synod/tusk/vote", message + bytes([index % 256]), signature)
    verified = time.process_time()
    return (signed - start) / samples, (verified - signed) / samples


def crypto_seconds_per_round_per_core(sign_s: float, verify_s: float) -> float:
    signs = 1 + CORES
    verifications = (CORES - 1) + CORES * (1 + QUORUM)
    return signs * sign_s + verifications * verify_s


# ---------------------------------------------------------------- 1. in-process


def bench_in_process(count: int, sign_s: float, verify_s: float) -> dict[str, Any]:
    keys = [KeyPair.from_seed(bytes([index + 41]) * 32) for index in range(CORES)]
    members = [key.node_id for key in keys]
    # Events kept as objects only: their JSON history would cost more than the cores.
    config = TuskConfig(gc_depth=50)
    world = tusk_world(keys, seed=3, drivers=(), config=config, record_events=False)
    # Handed to the cores by their local application: a core no driver has reached
    # yet signs no receipt (it cannot know where its committee is), and here no driver
    # runs until the clock starts.
    for start in range(0, count, 500):
        member = members[(start // 500) % CORES]
        for number in range(start, min(count, start + 500)):
            world.input(member, Proposed(transaction(number)))
    waiting = sum(world.core(member, TuskCore).pending_count for member in members)
    assert waiting == count, "a transaction was not taken"
    # The clock starts with the drivers, the transactions waiting at the cores.
    add_drivers(world, Committee.equal_weights(members), ["bench-a", "bench-b"])

    def delivered(member: NodeId) -> int:
        return sum(len(event.transactions) for event in committed(world, member))

    began = time.process_time()
    done = world.step_until(
        lambda: all(delivered(member) >= count for member in members), max_steps=10_000_000
    )
    cpu_s = time.process_time() - began
    assert done, "the cores did not commit every transaction"
    logs = [[event.digest for event in committed(world, member)] for member in members]
    shortest = min(len(log) for log in logs)
    assert all(log[:shortest] == logs[0][:shortest] for log in logs), "the orders diverged"
    rounds = max(event.round for event in committed(world, members[0]))
    bound_s = rounds * CORES * crypto_seconds_per_round_per_core(sign_s, verify_s)
    return {
        "bench": "tusk-in-process",
        "cores": CORES,
        "drivers": 2,
        "transactions": count,
        "transaction_bytes": TRANSACTION_BYTES,
        "rounds": rounds,
        "cpu_s": round(cpu_s, 3),
        "tx_per_cpu_s": round(count / cpu_s, 1),
        "bound_tx_per_cpu_s": round(count / bound_s, 1),
        "ratio_to_crypto_bound": round(bound_s / cpu_s, 3),
    }


# ---------------------------------------------------------------- 2. real processes


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def synod(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "synod.cli.main", *arguments]


class Watched:
    """A process whose stdout JSON lines are timestamped as they arrive."""

    def __init__(self, arguments: list[str], stderr_path: Path) -> None:
        with stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                arguments,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.lines: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put((time.monotonic(), json.loads(raw)))

    def next_line(self, deadline: float) -> tuple[float, dict[str, Any]] | None:
        try:
            return self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None


def bench_processes(count: int, sign_s: float, verify_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tusk-bench-") as name:
        directory = Path(name)
        ports = ",".join(map(str, free_ports(CORES)))
        subprocess.run(
            synod("tusk", "init", name, "--cores", str(CORES), "--ports", ports),
            check=True,
            capture_output=True,
        )
        cores: list[Watched] = []
        drivers: list[Watched] = []
        try:
            for i in range(CORES):
                arguments = synod("tusk", "core", name, f"core-{i}")
                cores.append(Watched(arguments, directory / f"core-{i}.err"))
            for driver in ("driver-a", "driver-b"):
                arguments = synod("tusk", "driver", name, "--name", driver)
                drivers.append(Watched(arguments, directory / f"{driver}.err"))
            return _measure(directory, cores, count, sign_s, verify_s)
        finally:
            stop_all([watched.process for watched in cores + drivers])


def _measure(
    directory: Path, cores: list[Watched], count: int, sign_s: float, verify_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    for watched in cores:
        while (line := watched.next_line(deadline)) is not None and line[1]["event"] != "ready":
            pass
        assert line is not None, "a core did not start"
    # The clock starts once every core takes transactions, as Raft's starts once it has
    # a leader: a core no driver has reached yet signs no receipt.
    asyncio.run(_until_every_core_takes_transactions(directory, deadline))
    submitted_at = asyncio.run(_submit_all(directory, count))
    first_submit = min(at for at, _ in submitted_at.values())
    committed_at: list[dict[str, float]] = [{} for _ in cores]
    rounds = 0
    deadline = time.monotonic() + 120
    for index, watched in enumerate(cores):
        while len(committed_at[index]) < count:
            line = watched.next_line(deadline)
            assert line is not None, f"core-{index} did not commit every transaction in time"
            at, entry = line
            if entry["event"] == "committed":
                rounds = max(rounds, entry["round"])
                for text in entry["transactions"]:
                    committed_at[index].setdefault(text, at)
    last_commit = max(max(times.values()) for times in committed_at)
    seconds = last_commit - first_submit
    latencies = sorted(committed_at[core][text] - at for text, (at, core) in submitted_at.items())
    bound_s = rounds * crypto_seconds_per_round_per_core(sign_s, verify_s)
    return {
        "bench": "tusk-processes",
        "cores": CORES,
        "drivers": 2,
        "measures": SUBMISSION + "acknowledgement: the core's signed SubmitAnswer, sent "
        "after its SQLite fsync; tx_per_s: transactions / (last commit seen on every core - "
        "first submission); latency: a batch's submission to each of its transactions' commit "
        "at the core that took it",
        "cpus": os.cpu_count(),
        "transactions": count,
        "transaction_bytes": TRANSACTION_BYTES,
        "rounds": rounds,
        "seconds": round(seconds, 3),
        "tx_per_s": round(count / seconds, 1),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
        "latency_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1),
        "bound_tx_per_s": round(count / bound_s, 1),
        "ratio_to_crypto_bound": round(bound_s / seconds, 4),
    }


async def _until_every_core_takes_transactions(directory: Path, deadline: float) -> None:
    """Return once every core's status says it signs receipts (a driver reached it)."""
    from synod.runtime.node_status import ask_status
    from synod.tusk.config import load_network

    waiting = [(core.host, core.port) for core in load_network(directory).cores]
    while waiting:
        assert time.monotonic() < deadline, "a core was never reached by a driver"
        replies = [await ask_status(address) for address in waiting]
        waiting = [
            address
            for address, reply in zip(waiting, replies, strict=True)
            if not reply.details.get("takes_transactions")
        ]
        if waiting:
            await asyncio.sleep(0.02)  # polling a condition under the deadline above


async def _submit_all(directory: Path, count: int) -> dict[str, tuple[float, int]]:
    """Submit over 4 concurrent streams, one per core; text -> (time, core index).

    Batch k (64 transactions) belongs to core k mod 4; each core's stream sends its
    batches in order, the next once the core's signed `SubmitAnswer` for the last has
    arrived, so every core has at most (and, until its batches run out, exactly) one
    batch in flight.
    """
    from synod.runtime.rpc import RpcClient, RpcFailure
    from synod.runtime.tusk_node import NOT_IN_CONTACT_RETRY_S
    from synod.tusk.config import load_network
    from synod.tusk.messages import CODEC, SubmitAnswer, SubmitRefusal, SubmitRequest

    network = load_network(directory)
    clients = [RpcClient((core.host, core.port)) for core in network.cores]
    submitted: dict[str, tuple[float, int]] = {}

    async def stream(index: int) -> None:
        for numbers in batches_of(count, index):
            batch = tuple(transaction(n) for n in numbers)
            at = time.monotonic()
            while True:
                request = CODEC.encode(SubmitRequest(transactions=batch))
                result = await clients[index].call(request)
                assert not isinstance(result, RpcFailure), result.reason
                answer = CODEC.decode(result.body)
                assert isinstance(answer, SubmitAnswer)
                if answer.reason != SubmitRefusal.NOT_IN_CONTACT:
                    break
                # Not reached by a driver yet: ask again, as `submit_transactions` does
                # (the batch's time stays its first attempt's).
                await asyncio.sleep(NOT_IN_CONTACT_RETRY_S)
            assert answer.accepted == len(batch)
            for item in batch:
                submitted[item.decode()] = (at, index)

    try:
        await asyncio.gather(*(stream(index) for index in range(CORES)))
    finally:
        for client in clients:
            await client.close()
    return submitted


def batches_of(count: int, index: int) -> list[range]:
    """The transaction numbers of node `index`'s batches: batch k goes to node k mod 4."""
    starts = range(0, count, BATCH)
    return [
        range(start, min(count, start + BATCH))
        for batch_number, start in enumerate(starts)
        if batch_number % CORES == index
    ]


# ---------------------------------------------------------------- 3. pysyncobj (Raft)

RAFT_PEER = Path(__file__).resolve().parent / "raft_peer.py"


class RaftNode:
    """A `raft_peer.py` process; a thread files its stdout lines as they arrive."""

    def __init__(self, arguments: list[str], stderr_path: Path) -> None:
        self.stderr_path = stderr_path
        with stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                arguments,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.ready = threading.Event()
        self.accepted: queue.Queue[int] = queue.Queue()
        self.applied: dict[int, float] = {}
        self.committed: dict[int, float] = {}
        self.failed: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = json.loads(raw)
            event = line["event"]
            if event == "ready":
                self.ready.set()
            elif event == "accepted":
                self.accepted.put(line["count"])
            elif event in ("applied", "committed"):
                times = self.applied if event == "applied" else self.committed
                for number, at in zip(line["numbers"], line["at"], strict=True):
                    times.setdefault(number, at)
            elif event == "failed":
                self.failed.append(line)

    def submit(self, transactions: list[bytes]) -> None:
        assert self.process.stdin is not None
        texts = [item.decode() for item in transactions]
        self.process.stdin.write((json.dumps({"transactions": texts}) + "\n").encode())
        self.process.stdin.flush()

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            tail = self.stderr_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"a Raft node exited with {code}: {tail}")


RAFT_CONFIGS = {
    "batched": "library default: entries sent every appendEntriesPeriod (100 ms)",
    "unbatched": "appendEntriesUseBatch=False: entries sent as each command arrives",
}


def bench_raft(count: int, config: str) -> dict[str, Any]:
    """pysyncobj replicating the same transactions among 4 local processes."""
    with tempfile.TemporaryDirectory(prefix="raft-bench-") as name:
        directory = Path(name)
        addresses = [f"127.0.0.1:{port}" for port in free_ports(CORES)]
        nodes: list[RaftNode] = []
        try:
            for index, address in enumerate(addresses):
                partners = ",".join(other for other in addresses if other != address)
                arguments = [
                    sys.executable,
                    str(RAFT_PEER),
                    "--self",
                    address,
                    "--partners",
                    partners,
                    "--journal",
                    str(directory / f"node-{index}.journal"),
                    *(["--unbatched"] if config == "unbatched" else []),
                ]
                nodes.append(RaftNode(arguments, directory / f"node-{index}.err"))
            return {
                **_measure_raft(nodes, count),
                "config": config,
                "config_means": RAFT_CONFIGS[config],
            }
        finally:
            stop_all([node.process for node in nodes])


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process, then SIGKILL (by PID) any still running after 10 s."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for(condition: Any, nodes: list[RaftNode], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        for node in nodes:
            check_failures(node)
            node.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"Raft: {what} within {seconds} s")
        time.sleep(0.005)


def check_failures(node: RaftNode) -> None:
    if node.failed:
        raise RuntimeError(f"Raft refused transactions: {node.failed[:5]}")


def _measure_raft(nodes: list[RaftNode], count: int) -> dict[str, Any]:
    _wait_for(lambda: all(node.ready.is_set() for node in nodes), nodes, 60, "no leader")
    submitted_at: dict[int, tuple[float, int]] = {}
    failures: list[BaseException] = []

    def stream(index: int) -> None:
        try:
            for numbers in batches_of(count, index):
                at = time.monotonic()
                nodes[index].submit([transaction(n) for n in numbers])
                accepted = nodes[index].accepted.get(timeout=30)
                assert accepted == len(numbers)
                for number in numbers:
                    submitted_at[number] = (at, index)
        except BaseException as failure:  # re-raised by the benchmark's thread below
            failures.append(failure)

    streams = [threading.Thread(target=stream, args=(index,)) for index in range(CORES)]
    for thread in streams:
        thread.start()
    for thread in streams:
        thread.join()
    if failures:
        raise failures[0]
    _wait_for(
        lambda: all(len(node.applied) >= count for node in nodes),
        nodes,
        120,
        "not every node applied every transaction",
    )
    _wait_for(
        lambda: sum(len(node.committed) for node in nodes) >= count,
        nodes,
        30,
        "not every submitting node saw its transactions committed",
    )
    first_submit = min(at for at, _ in submitted_at.values())
    last_apply = max(max(node.applied.values()) for node in nodes)
    seconds = last_apply - first_submit
    latencies = sorted(
        nodes[index].committed[number] - at for number, (at, index) in submitted_at.items()
    )
    return {
        "bench": "tusk-peer",
        "peer": "pysyncobj",
        "status": "run",
        "protocol": "Raft (crash faults only)",
        "measures": SUBMISSION + "acknowledgement: the node queued the 64 append commands "
        "(in memory); tx_per_s: transactions / (last apply on every node - first submission); "
        "latency: a batch's submission to each of its transactions' apply at the node "
        "that took it",
        "nodes": CORES,
        "cpus": os.cpu_count(),
        "transactions": count,
        "transaction_bytes": TRANSACTION_BYTES,
        "seconds": round(seconds, 3),
        "tx_per_s": round(count / seconds, 1),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
        "latency_p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1),
    }


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A small smoke run.")
    parser.add_argument("--transactions", type=int, default=4_000)
    add_json_option(parser)
    options = parser.parse_args()
    configure(options)
    count = 200 if options.quick else options.transactions
    sign_s, verify_s = crypto_costs(200 if options.quick else 2_000)
    emit(
        {
            "bench": "tusk-crypto",
            "sign_us": round(sign_s * 1e6, 2),
            "verify_us": round(verify_s * 1e6, 2),
            "crypto_ms_per_round_per_core": round(
                1000 * crypto_seconds_per_round_per_core(sign_s, verify_s), 3
            ),
        }
    )
    emit(bench_in_process(count, sign_s, verify_s))
    tusk = bench_processes(count, sign_s, verify_s)
    emit(tusk)
    runs = [bench_raft(count, config) for config in RAFT_CONFIGS]
    for run in runs:
        emit(run)
    raft = max(runs, key=lambda run: run["tx_per_s"])
    emit(
        {
            "bench": "tusk-vs-raft",
            "transactions": count,
            "tusk_tx_per_s": tusk["tx_per_s"],
            "raft_config": raft["config"],
            "raft_tx_per_s": raft["tx_per_s"],
            "throughput_ratio": round(tusk["tx_per_s"] / raft["tx_per_s"], 3),
            "latency_p50_ratio": round(tusk["latency_p50_ms"] / raft["latency_p50_ms"], 3),
            "means": "Tusk (4 cores, 2 drivers, Byzantine faults) over the faster pysyncobj "
            "Raft run (4 nodes, crash faults); throughput_ratio above 1: Tusk commits more "
            "per second; latency_p50_ratio above 1: Tusk's median commit takes longer",
        }
    )


if __name__ == "__main__":
    main()
