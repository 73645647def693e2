"""Four passive cores (f = 1) and two drivers in a seeded, deterministic loop.

`LocalNet` checks after every delivered message that each core's `Committed` sequence
numbers are consecutive and that all cores' sequences are prefixes of the longest one
(it raises `SafetyViolation` otherwise).  The tests add faults within the protocol's
bound and require, beyond safety, progress: every correct core commits.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import msgspec
import pytest

from synod.core import Reply, Step
from synod.crypto import KeyPair, NodeId
from synod.tusk.core import Committed, EquivocationDetected, TuskCore
from synod.tusk.driver import ByzantineDriver, Driver
from synod.tusk.localnet import LocalNet, SafetyViolation
from synod.tusk.messages import (
    CoreAnswer,
    RefusalReason,
    sign_answer,
    sign_header,
    sign_vote,
)

KEYS = [KeyPair.from_seed(bytes([index + 11]) * 32) for index in range(4)]


def make_net(seed: int, drivers: str = "hh") -> LocalNet:
    """A world with drivers 'h' (honest) and 'b' (Byzantine, seeded from `seed`)."""
    net = LocalNet(KEYS, [], random.Random(seed))
    for index, kind in enumerate(drivers):
        name = f"driver-{index}"
        if kind == "h":
            net.drivers.append(Driver(name, net.committee))
        else:
            net.drivers.append(
                ByzantineDriver(name, net.committee, random.Random(seed * 7 + index))
            )
    return net


def each_committed(count: int, nodes: list[NodeId] | None = None) -> Any:
    def reached(net: LocalNet) -> bool:
        chosen = nodes if nodes is not None else list(net.committed)
        return all(len(net.committed[node]) >= count for node in chosen)

    return reached


def assert_same_prefix(net: LocalNet) -> None:
    """Independent of LocalNet's own check: compare every pair of cores directly."""
    logs = {node: [event.digest for event in log] for node, log in net.committed.items()}
    for first in logs.values():
        for second in logs.values():
            shorter = min(len(first), len(second))
            assert first[:shorter] == second[:shorter]


def assert_one_certificate_per_slot(net: LocalNet) -> None:
    slots: dict[tuple[int, bytes], set[bytes]] = defaultdict(set)
    for log in net.committed.values():
        for event in log:
            slots[(event.round, event.creator)].add(event.digest)
    assert all(len(found) == 1 for found in slots.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_honest_drivers_all_cores_commit_the_same_sequence(seed: int) -> None:
    net = make_net(seed)
    net.start()
    assert net.run(6000, until=each_committed(60))
    assert_same_prefix(net)
    assert_one_certificate_per_slot(net)
    rounds = {event.round for log in net.committed.values() for event in log}
    assert max(rounds) >= 10


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_byzantine_driver_beside_an_honest_one_cannot_break_the_prefix(seed: int) -> None:
    net = make_net(seed, "hb")
    net.start()
    assert net.run(8000, until=each_committed(60))
    assert_same_prefix(net)
    assert_one_certificate_per_slot(net)
    # The Byzantine driver did carry forged, sub-quorum and out-of-order items.
    assert net.refusals[RefusalReason.BAD_SIGNATURE] + net.refusals[RefusalReason.NOT_ENOUGH_VOTES]
    assert net.refusals[RefusalReason.ALREADY_KNOWN]


def test_byzantine_driver_alone_cannot_break_safety() -> None:
    net = make_net(8, "b")
    net.start()
    net.run(3000)
    assert_same_prefix(net)  # progress is not promised without an honest driver


@pytest.mark.parametrize("seed", [10, 11])
def test_crashed_core_is_rebuilt_from_its_records_and_catches_up(seed: int) -> None:
    net = make_net(seed, "hb")
    net.start()
    assert net.run(4000, until=each_committed(20))
    victim = KEYS[seed % 4].node_id
    net.crash(victim)
    others = [node for node in net.committed if node != victim]
    assert net.run(6000, until=each_committed(len(net.committed[victim]) + 40, others))
    rebuilt = net.restart(victim)
    assert rebuilt.committed_count == len(net.committed[victim])
    target = max(len(log) for log in net.committed.values()) + 20
    assert net.run(8000, until=each_committed(target))
    assert_same_prefix(net)


def test_a_driver_restarted_empty_changes_nothing_but_its_own_memory() -> None:
    net = make_net(12)
    net.start()
    assert net.run(4000, until=each_committed(20))
    net.restart_driver(0, Driver("driver-0", net.committee))
    net.restart_driver(1, Driver("driver-1", net.committee))
    assert net.run(6000, until=each_committed(60))
    assert_same_prefix(net)


class EquivocatingCore:
    """A Byzantine core: for every other request it shows a twin of its own header (same
    round and parents, another batch) with its vote for the twin, re-signing the answer."""

    def __init__(self, inner: TuskCore, keys: KeyPair) -> None:
        self.inner = inner
        self.keys = keys
        self.calls = 0

    @property
    def node_id(self) -> NodeId:
        return self.inner.node_id

    def handle(self, event: Any, now_ms: int) -> Step:
        step = self.inner.handle(event, now_ms)
        self.calls += 1
        if self.calls % 2 == 0:
            step.outgoing = [self._twin(out) for out in step.outgoing]
        return step

    def _twin(self, out: Any) -> Any:
        if not isinstance(out, Reply) or not isinstance(out.body, CoreAnswer):
            return out
        answer = out.body
        if answer.header is None:
            return out
        real = answer.header
        twin = sign_header(self.keys, real.round, (b"twin",), real.parents)
        vote = sign_vote(self.keys, twin.digest(), twin.round, twin.creator)
        votes = (*[v for v in answer.votes if v.header_digest != real.digest()], vote)
        twisted = msgspec.structs.replace(answer, header=twin, votes=votes)
        return Reply(out.client, out.request_id, sign_answer(self.keys, twisted))


@pytest.mark.parametrize("seed", [20, 21])
def test_equivocating_core_is_refused_kept_as_evidence_and_cannot_split_the_order(
    seed: int,
) -> None:
    net = make_net(seed)
    liar = KEYS[1]
    core = net.cores[liar.node_id]
    assert isinstance(core, TuskCore)
    net.replace_core(liar.node_id, EquivocatingCore(core, liar))
    evidence: list[tuple[NodeId, Any]] = []

    def watch(node: NodeId, event: Any) -> None:
        if isinstance(event, EquivocationDetected):
            evidence.append((node, event.evidence))

    net.on_event = watch
    net.start()
    honest = [key.node_id for key in KEYS if key is not liar]
    assert net.run(8000, until=each_committed(60, honest))
    assert_same_prefix(net)
    assert_one_certificate_per_slot(net)
    accusers = {node for node, proof in evidence if proof.first.creator == liar.node_id}
    assert accusers & set(honest), "an honest core kept evidence against the equivocator"
    assert all(proof.is_valid() for _, proof in evidence)
    assert all(proof.first.creator == liar.node_id for _, proof in evidence)


@pytest.mark.parametrize("seed", [30, 31])
def test_client_transactions_are_committed_once_in_the_same_order_everywhere(seed: int) -> None:
    net = make_net(seed, "hb")
    rng = random.Random(seed)
    net.start()
    submitted: list[bytes] = []
    for batch in range(12):
        node = KEYS[rng.randrange(4)].node_id
        transactions = [f"tx-{batch}-{index}".encode() for index in range(rng.randint(1, 9))]
        answer = net.submit(node, transactions)
        assert answer.accepted == len(transactions)
        submitted.extend(transactions)
        net.run(rng.randint(20, 80))

    def all_delivered(net: LocalNet) -> bool:
        return all(len(net.delivered_transactions(node)) >= len(submitted) for node in net.cores)

    assert net.run(8000, until=all_delivered)
    orders = [net.delivered_transactions(node) for node in net.cores]
    assert all(order == orders[0] for order in orders)
    assert sorted(orders[0]) == sorted(submitted), "each transaction committed exactly once"


def test_the_prefix_checker_reports_a_divergence() -> None:
    net = make_net(40)
    first, second = list(net.committed)[:2]
    event = Committed(0, 2, 1, first, b"a" * 32, ())
    net._check_committed(first, event)
    with pytest.raises(SafetyViolation):
        net._check_committed(second, Committed(0, 2, 1, first, b"b" * 32, ()))
    with pytest.raises(SafetyViolation):
        net._check_committed(first, Committed(5, 2, 1, first, b"a" * 32, ()))


@pytest.mark.parametrize("seed", range(50, 60))
def test_random_crashes_and_driver_restarts_keep_the_prefix_and_progress(seed: int) -> None:
    """Seeded fault mix within the bound: at most one core down at a time (each time for
    fewer rounds than the collection depth), drivers restarted empty, a Byzantine driver
    throughout; afterwards every core commits again."""
    rng = random.Random(seed)
    net = make_net(seed, "hb")
    net.start()
    down: NodeId | None = None
    for _ in range(6):
        choice = rng.randrange(3)
        if choice == 0 and down is None:
            down = KEYS[rng.randrange(4)].node_id
            net.crash(down)
        elif choice == 1 and down is not None:
            net.restart(down)
            down = None
        elif choice == 2:
            net.restart_driver(0, Driver("driver-0", net.committee))
        net.run(rng.randint(100, 400))
    if down is not None:
        net.restart(down)
    target = max(len(log) for log in net.committed.values()) + 30
    assert net.run(10000, until=each_committed(target))
    assert_same_prefix(net)
    assert_one_certificate_per_slot(net)
