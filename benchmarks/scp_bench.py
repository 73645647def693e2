"""SCP benchmarks, JSON lines on stdout.

1. Envelope processing against the crypto bound.  For n validators (each trusting
   n - f of them), one slot is run in the in-process network and the stream of
   envelopes one node received is recorded.  The stream is then replayed twice in
   the same process: once only verifying each envelope's signature (the bound), and
   once through a fresh core (decoding, checks, signature, protocol).  The figure is
   the ratio of the two times (goal: at most 2.0 at n = 64).
2. Cost per externalized slot as n grows: messages delivered and simulated time, with
   one-way latencies drawn from 10-100 ms in the in-process network.

    python benchmarks/scp_bench.py [--sizes 4,16,64] [--repeats 3] [--slots 3]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from synod.core import Proposed, Received
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet
from synod.scp import CODEC, Envelope, ScpConfig, ScpCore, verify_envelope
from synod.scp.local import LocalNetwork

LATENCY_MS = (10, 100)
"""One-way message latency range for the cost-per-slot runs."""


def build(size: int, seed: int = 1) -> tuple[LocalNetwork, list[KeyPair], QuorumSet]:
    keys = [
        KeyPair.from_seed(size.to_bytes(2, "big") + bytes([index]) * 30) for index in range(size)
    ]
    faulty = (size - 1) // 3
    qset = QuorumSet(threshold=size - faulty, validators=tuple(key.node_id for key in keys))
    cores = {key.node_id: ScpCore(ScpConfig(keys=key, quorum_set=qset)) for key in keys}
    return LocalNetwork(cores, seed=seed), keys, qset


def record_one_slot(size: int) -> tuple[list[tuple[NodeId, bytes]], KeyPair, QuorumSet, bytes]:
    """Run slot 1 and return the (sender, bytes) stream node 0 received."""
    network, keys, qset = build(size)
    observer = keys[0].node_id
    stream: list[tuple[NodeId, bytes]] = []
    original_handle = network.handle

    def recording_handle(node: NodeId, event: object) -> None:
        if node == observer and isinstance(event, Received):
            stream.append((event.sender, event.message))
        original_handle(node, event)

    network.handle = recording_handle  # type: ignore[method-assign]
    own_value = b"value from node 0"
    for index, key in enumerate(keys):
        network.handle(key.node_id, Proposed(own_value if index == 0 else b"value %d" % index))
    decided = network.run_until(lambda: all(1 in network.externalized(k.node_id) for k in keys))
    assert decided, f"n={size}: slot 1 did not externalize"
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
    network, keys, _ = build(size, seed=2)
    network.latency_ms = LATENCY_MS
    start_ms = 0
    for slot_index in range(1, slots + 1):
        for index, key in enumerate(keys):
            network.handle(key.node_id, Proposed(b"slot %d value %d" % (slot_index, index)))
        assert network.run_until(
            lambda index=slot_index: all(index in network.externalized(k.node_id) for k in keys)
        )
        start_ms = network.now_ms
    return {
        "benchmark": "scp_cost_per_slot",
        "validators": size,
        "slots": slots,
        "latency_ms": list(LATENCY_MS),
        "messages_per_slot": round(network.messages_delivered / slots, 1),
        "simulated_ms_per_slot": round(start_ms / slots, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4,16,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="n = 4 and 7, one repeat, one slot")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.sizes, arguments.repeats, arguments.slots = "4,7", 1, 1
    sizes = [int(text) for text in arguments.sizes.split(",")]
    for size in sizes:
        print(json.dumps(envelope_processing(size, arguments.repeats)), flush=True)
    for size in sizes:
        print(json.dumps(cost_per_slot(size, arguments.slots)), flush=True)


if __name__ == "__main__":
    main()
