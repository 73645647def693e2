"""SCP benchmarks, JSON lines on stdout.

1. Envelope processing against the crypto bound.  For n validators (each trusting
   n - f of them), one slot is run in the simulator's perfect world and the stream of
   envelopes one node received is recorded.  The stream is then replayed twice in
   the same process: once only verifying each envelope's signature (the bound), and
   once through a fresh core (decoding, checks, signature, protocol).  The figure is
   the ratio of the two times (goal: at most 2.0 at n = 64).
2. Cost per externalized slot as n grows: messages delivered and simulated time, with
   one-way latencies drawn from 10-100 ms in the perfect world.

Both start the nodes and let their start-up state requests be delivered before slot 1
is proposed, so what is measured is the work of the slots alone.

3. With `--attacks`, what three attacks of issue 12 cost a node: the memory it keeps
   after 200 made-up node ids each send one maximal NOMINATE (64 + 64 values of
   16 KiB; tracemalloc); the memory it keeps after one member declares a quorum set
   naming 64 made-up ids (they join its transitive quorum) and each sends a maximal
   NOMINATE for one slot; and the bytes the log's submit path writes for 150
   one-entry submits against the bytes submitted.

    python benchmarks/scp_bench.py [--sizes 4,16,64] [--repeats 3] [--slots 3] [--attacks]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from synod.core import Input, Proposed, Received, Step, Storage
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet
from synod.scp import (
    CODEC,
    Envelope,
    Externalized,
    Nomination,
    ScpConfig,
    ScpCore,
    ScpMessage,
    Statement,
    sign_statement,
    verify_envelope,
)
from synod.sim.world import World

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/report.py
from report import add_json_option, configure, emit

LATENCY_MS = (10, 100)
"""One-way message latency range for the cost-per-slot runs."""

RECORDING_LATENCY_MS = (1, 10)
"""One-way message latency range for the run whose stream is replayed."""


class Tap:
    """An `ScpCore` that keeps every message it receives, with its sender."""

    def __init__(self, core: ScpCore) -> None:
        self.core = core
        self.received: list[tuple[NodeId, ScpMessage]] = []

    @property
    def node_id(self) -> NodeId:
        return self.core.node_id

    def factory(self, storage: Storage, rng: random.Random) -> Tap:
        """The world's node factory: this tap, on a node that is never restarted."""
        return self

    def handle(self, event: Input, now_ms: int) -> Step:
        if isinstance(event, Received):
            self.received.append((event.sender, event.message))
        return self.core.handle(event, now_ms)


def build(
    size: int, latency_ms: tuple[int, int], seed: int = 1
) -> tuple[World, list[KeyPair], QuorumSet, list[Tap]]:
    """n started nodes whose start-up state requests have all been delivered."""
    keys = [
        KeyPair.from_seed(size.to_bytes(2, "big") + bytes([index]) * 30) for index in range(size)
    ]
    faulty = (size - 1) // 3
    qset = QuorumSet(threshold=size - faulty, validators=tuple(key.node_id for key in keys))
    taps = [Tap(ScpCore(ScpConfig(keys=key, quorum_set=qset))) for key in keys]
    world = World.perfect(seed, latency_ms=latency_ms)
    world.add_nodes({tap.node_id: tap.factory for tap in taps}, CODEC)
    world.run_until(latency_ms[1])
    for tap in taps:
        tap.received.clear()
    return world, keys, qset, taps


def run_slot(world: World, taps: list[Tap], slot_index: int, values: list[bytes]) -> bool:
    """Propose `values` (one per node) and run until every node externalized the slot."""
    for tap, value in zip(taps, values, strict=True):
        world.input(tap.node_id, Proposed(value))
    return world.step_until(
        lambda: all(tap.core.delivered_through >= slot_index for tap in taps)
    )


def record_one_slot(size: int) -> tuple[list[tuple[NodeId, bytes]], KeyPair, QuorumSet, bytes]:
    """Run slot 1 and return the (sender, bytes) stream node 0 received."""
    world, keys, qset, taps = build(size, RECORDING_LATENCY_MS)
    own_value = b"value from node 0"
    values = [own_value] + [b"value %d" % index for index in range(1, size)]
    assert run_slot(world, taps, 1, values), f"n={size}: slot 1 did not externalize"
    assert all(world.events_of(tap.node_id, Externalized) for tap in taps)
    stream = [(sender, CODEC.encode(message)) for sender, message in taps[0].received]
    return stream, keys[0], qset, own_value


def time_pair(
    first: Callable[[], None], second: Callable[[], None], repeats: int
) -> tuple[float, float]:
    """Best time of each, measured alternately so both see the same machine load."""
    best_first = best_second = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        first()
        middle = time.perf_counter()
        second()
        end = time.perf_counter()
        best_first = min(best_first, middle - start)
        best_second = min(best_second, end - middle)
    return best_first, best_second


def envelope_processing(size: int, repeats: int) -> dict[str, object]:
    stream, keys, qset, own_value = record_one_slot(size)
    envelopes = [CODEC.decode(payload) for _, payload in stream]
    signed = [envelope for envelope in envelopes if isinstance(envelope, Envelope)]

    def verify_only() -> None:
        for envelope in signed:
            assert verify_envelope(envelope)

    def full_protocol() -> None:
        core = ScpCore(ScpConfig(keys=keys, quorum_set=qset))
        core.handle(Proposed(own_value), 0)
        for sender, payload in stream:
            core.handle(Received(sender, payload), 0)
        assert core.externalized_value(1) is not None

    verify_seconds, protocol_seconds = time_pair(verify_only, full_protocol, repeats)
    return {
        "benchmark": "scp_envelope_processing",
        "validators": size,
        "envelopes": len(stream),
        "verify_seconds": round(verify_seconds, 6),
        "protocol_seconds": round(protocol_seconds, 6),
        "ratio_to_signature_checks": round(protocol_seconds / verify_seconds, 3),
        "goal_ratio_at_64": 2.0,
    }


def cost_per_slot(size: int, slots: int) -> dict[str, object]:
    world, _, _, taps = build(size, LATENCY_MS, seed=2)
    start_ms = world.now_ms
    for slot_index in range(1, slots + 1):
        values = [b"slot %d value %d" % (slot_index, index) for index in range(size)]
        assert run_slot(world, taps, slot_index, values), f"n={size}: slot {slot_index} stalled"
    delivered = sum(len(tap.received) for tap in taps)
    return {
        "benchmark": "scp_cost_per_slot",
        "validators": size,
        "slots": slots,
        "latency_ms": list(LATENCY_MS),
        "messages_per_slot": round(delivered / slots, 1),
        "simulated_ms_per_slot": round((world.now_ms - start_ms) / slots, 1),
    }


def made_up_ids_memory(count: int = 200) -> dict[str, object]:
    """Memory kept after `count` made-up ids each send one maximal NOMINATE."""
    import tracemalloc

    keys = [KeyPair.from_seed(b"scp-bench/member/" + bytes([index]) * 15) for index in range(4)]
    qset = QuorumSet(threshold=3, validators=tuple(key.node_id for key in keys))
    core = ScpCore(ScpConfig(keys=keys[0], quorum_set=qset))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for index in range(count):
        fresh = KeyPair.from_seed(b"scp-bench/made-up/" + index.to_bytes(14, "big"))
        values = tuple(
            sorted(index.to_bytes(4, "big") + bytes([byte]) * (16 * 1024 - 4) for byte in range(64))
        )
        statement = Statement(fresh.node_id, 1, Nomination(core.local_qset_hash, values, values))
        core.handle(Received(fresh.node_id, sign_statement(fresh, statement)), 0)
        del values, statement  # what the node keeps is measured, not the bench's last one
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return {
        "benchmark": "scp_made_up_ids_memory",
        "made_up_ids": count,
        "retained_mib": round(grown / 2**20, 1),
        "rejected": {str(reason): number for reason, number in core.rejected.items()},
    }


def introduced_ids_memory(count: int = 64) -> dict[str, object]:
    """Memory kept after a member introduces `count` made-up ids (a quorum set naming
    them) and each sends one maximal NOMINATE for slot 1."""
    import tracemalloc

    from synod.quorum.qset import qset_hash
    from synod.scp import Ballot, Prepare

    keys = [KeyPair.from_seed(b"scp-bench/member/" + bytes([index]) * 15) for index in range(4)]
    qset = QuorumSet(threshold=3, validators=tuple(key.node_id for key in keys))
    fresh = [
        KeyPair.from_seed(b"scp-bench/introduced/" + index.to_bytes(11, "big"))
        for index in range(count)
    ]
    crowd = QuorumSet(threshold=1, validators=tuple(key.node_id for key in fresh))
    core = ScpCore(ScpConfig(keys=keys[0], quorum_set=qset, known_quorum_sets=[crowd]))
    member = keys[1]
    declaring = Statement(
        member.node_id, 1, Prepare(qset_hash(crowd), Ballot(1, b"v"), None, None, 0, 0)
    )
    core.handle(Received(member.node_id, sign_statement(member, declaring)), 0)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for index, made_up in enumerate(fresh):
        values = tuple(
            sorted(index.to_bytes(4, "big") + bytes([byte]) * (16 * 1024 - 4) for byte in range(64))
        )
        statement = Statement(made_up.node_id, 1, Nomination(core.local_qset_hash, values, values))
        core.handle(Received(member.node_id, sign_statement(made_up, statement)), 0)
        del values, statement  # what the node keeps is measured, not the bench's last one
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return {
        "benchmark": "scp_introduced_ids_memory",
        "introduced_ids": count,
        "retained_mib": round(grown / 2**20, 1),
        "rejected": {str(reason): number for reason, number in core.rejected.items()},
    }


def submit_path_writes(submits: int = 150) -> dict[str, object]:
    """Bytes the log's submit path persists for `submits` one-entry submits."""
    from synod.core import RequestReceived
    from synod.scp.log import LogCore, LogRules, SubmitRequest

    keys = [KeyPair.from_seed(b"scp-bench/member/" + bytes([index]) * 15) for index in range(4)]
    qset = QuorumSet(threshold=3, validators=tuple(key.node_id for key in keys))
    node = LogCore(ScpConfig(keys=keys[0], quorum_set=qset, application=LogRules()), {})
    entries = [f"entry {index:04d} " + "x" * 200 for index in range(submits)]
    written = 0
    for number, entry in enumerate(entries):
        step = node.handle(RequestReceived("client", number, SubmitRequest((entry,))), 0)
        written += sum(len(record.value or b"") for record in step.persist)
    return {
        "benchmark": "scp_submit_path_writes",
        "submits": submits,
        "submitted_bytes": sum(len(entry.encode()) for entry in entries),
        "persisted_bytes": written,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,16,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="n = 4 and 7, one repeat, one slot")
    parser.add_argument("--attacks", action="store_true", help="also the attack-cost figures")
    add_json_option(parser)
    arguments = parser.parse_args()
    configure(arguments)
    if arguments.quick:
        arguments.sizes, arguments.repeats, arguments.slots = "4,7", 1, 1
    sizes = [int(text) for text in arguments.sizes.split(",")]
    for size in sizes:
        emit(envelope_processing(size, arguments.repeats))
    for size in sizes:
        emit(cost_per_slot(size, arguments.slots))
    if arguments.attacks:
        emit(made_up_ids_memory())
        emit(introduced_ids_memory())
        emit(submit_path_writes())


if __name__ == "__main__":
    main()
