"""Four passive cores (f = 1) and two drivers in a seeded, deterministic world.

`tusk_world` checks after every step that each core's `Committed` sequence numbers are
consecutive and that all cores' sequences are prefixes of the longest one (it raises
`PrefixViolated` otherwise).  The tests add faults within the protocol's bound and
require, beyond safety, progress: every correct core commits.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from synod.core import Proposed, Reply, RequestReceived, Step
from synod.crypto import KeyPair, NodeId
from synod.quorum.committee import Committee
from synod.runtime.tusk_node import driver_series
from synod.sim.scenarios.tusk import (
    PrefixViolated,
    answers,
    committed,
    delivered_transactions,
    replace_core,
    restart_driver,
    slow_core,
    submit,
    tally_refusals,
    tusk_world,
)
from synod.sim.world import World
from synod.tusk.core import (
    CheckpointInstalled,
    Committed,
    EquivocationDetected,
    TuskConfig,
    TuskCore,
)
from synod.tusk.driver import Driver
from synod.tusk.messages import (
    CommitAck,
    CommitQuery,
    CommittedAt,
    CoreAnswer,
    CoreRequest,
    RefusalReason,
    SubmitRefusal,
    SubmitRequest,
    proven_commits,
    request_digest,
    sign_answer,
    sign_commit_ack,
    sign_header,
    sign_vote,
    transaction_digest,
)

KEYS = [KeyPair.from_seed(bytes([index + 11]) * 32) for index in range(4)]
CORES = [key.node_id for key in KEYS]


def make_world(seed: int, drivers: str = "hh") -> World:
    """Cores for KEYS and drivers `driver-0`, `driver-1`, ...: 'h' honest, 'b' Byzantine."""
    names = {f"driver-{index}": kind for index, kind in enumerate(drivers)}
    return tusk_world(
        KEYS,
        seed=seed,
        drivers=[name for name, kind in names.items() if kind == "h"],
        byzantine_drivers=[name for name, kind in names.items() if kind == "b"],
    )


def each_committed(world: World, count: int, nodes: list[NodeId] = CORES) -> Callable[[], bool]:
    return lambda: all(len(committed(world, node)) >= count for node in nodes)


def run(world: World, steps: int) -> None:
    """Take `steps` steps, whatever happens."""
    world.step_until(lambda: False, max_steps=steps)


def assert_same_prefix(world: World) -> None:
    """Independent of the world's own check: compare every pair of cores directly,
    position by position (a core that installed a checkpoint skipped some), and each
    core's positions are consecutive but for checkpoints it installed."""
    logs = [{event.sequence: event.digest for event in committed(world, node)} for node in CORES]
    for node, log in zip(CORES, logs, strict=True):
        skipped = {
            position
            for installed in world.events_of(node, CheckpointInstalled)
            for position in range(installed.first_skipped, installed.sequence)
        }
        assert set(log) | skipped == set(range(max(log, default=-1) + 1))
    for first in logs:
        for second in logs:
            assert all(first[position] == second[position] for position in first.keys() & second)


def assert_one_certificate_per_slot(world: World) -> None:
    slots: dict[tuple[int, bytes], set[bytes]] = defaultdict(set)
    for node in CORES:
        for event in committed(world, node):
            slots[(event.round, event.creator)].add(event.digest)
    assert all(len(found) == 1 for found in slots.values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_two_honest_drivers_all_cores_commit_the_same_sequence(seed: int) -> None:
    world = make_world(seed)
    assert world.step_until(each_committed(world, 60), max_steps=6000)
    assert_same_prefix(world)
    assert_one_certificate_per_slot(world)
    rounds = {event.round for node in CORES for event in committed(world, node)}
    assert max(rounds) >= 10


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_byzantine_driver_beside_an_honest_one_cannot_break_the_prefix(seed: int) -> None:
    world = make_world(seed, "hb")
    refusals = tally_refusals(world, CORES)
    assert world.step_until(each_committed(world, 60), max_steps=8000)
    assert_same_prefix(world)
    assert_one_certificate_per_slot(world)
    # The Byzantine driver did carry forged, sub-quorum and out-of-order items.
    assert refusals[RefusalReason.BAD_SIGNATURE] + refusals[RefusalReason.NOT_ENOUGH_VOTES]
    assert refusals[RefusalReason.ALREADY_KNOWN]


def test_byzantine_driver_alone_cannot_break_safety() -> None:
    world = make_world(8, "b")
    run(world, 3000)
    assert_same_prefix(world)  # progress is not promised without an honest driver


@pytest.mark.parametrize("seed", [10, 11])
def test_crashed_core_is_rebuilt_from_its_records_and_catches_up(seed: int) -> None:
    world = make_world(seed, "hb")
    assert world.step_until(each_committed(world, 20), max_steps=4000)
    victim = CORES[seed % 4]
    world.crash(victim)
    others = [node for node in CORES if node != victim]
    before = len(committed(world, victim))
    assert world.step_until(each_committed(world, before + 40, others), max_steps=6000)
    world.restart(victim)
    assert world.core(victim, TuskCore).committed_count == before
    target = max(len(committed(world, node)) for node in CORES) + 20
    assert world.step_until(each_committed(world, target), max_steps=8000)
    assert_same_prefix(world)


def test_a_driver_restarted_empty_changes_nothing_but_its_own_memory() -> None:
    world = make_world(12)
    assert world.step_until(each_committed(world, 20), max_steps=4000)
    restart_driver(world, "driver-0")
    restart_driver(world, "driver-1")
    assert world.step_until(each_committed(world, 60), max_steps=6000)
    assert_same_prefix(world)


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
        twin = sign_header(self.keys, real.round, (b"twin",), real.parents, context=real.context)
        vote = sign_vote(self.keys, twin.digest(), twin.round, twin.creator)
        votes = (*[v for v in answer.votes if v.header_digest != real.digest()], vote)
        twisted = msgspec.structs.replace(answer, header=twin, votes=votes)
        return Reply(out.client, out.request_id, sign_answer(self.keys, twisted))


@pytest.mark.parametrize("seed", [20, 21])
def test_equivocating_core_is_refused_kept_as_evidence_and_cannot_split_the_order(
    seed: int,
) -> None:
    world = make_world(seed)
    liar = KEYS[1]
    replace_core(world, liar.node_id, lambda core: EquivocatingCore(core, liar))
    honest = [node for node in CORES if node != liar.node_id]
    assert world.step_until(each_committed(world, 60, honest), max_steps=8000)
    assert_same_prefix(world)
    assert_one_certificate_per_slot(world)
    evidence = [
        (node, event.evidence)
        for node, event in world.events
        if isinstance(event, EquivocationDetected)
    ]
    accusers = {node for node, proof in evidence if proof.first.creator == liar.node_id}
    assert accusers & set(honest), "an honest core kept evidence against the equivocator"
    assert all(proof.is_valid() for _, proof in evidence)
    assert all(proof.first.creator == liar.node_id for _, proof in evidence)


@pytest.mark.parametrize("seed", [30, 31])
def test_client_transactions_are_committed_once_in_the_same_order_everywhere(seed: int) -> None:
    world = make_world(seed, "hb")
    rng = random.Random(seed)
    batches: list[tuple[bytes, ...]] = []
    for batch in range(12):
        node = CORES[rng.randrange(4)]
        transactions = tuple(f"tx-{batch}-{index}".encode() for index in range(rng.randint(1, 9)))
        submit(world, node, transactions)
        batches.append(transactions)
        run(world, rng.randint(20, 80))
    submitted = [transaction for batch in batches for transaction in batch]

    def all_delivered() -> bool:
        return all(len(delivered_transactions(world, node)) >= len(submitted) for node in CORES)

    assert world.step_until(all_delivered, max_steps=8000)
    # Every batch was answered, and accepted whole, by the core it went to.
    accepted = {answer.request_digest: answer.accepted for answer in answers(world)}
    assert accepted == {
        request_digest(SubmitRequest(transactions=batch)): len(batch) for batch in batches
    }
    orders = [delivered_transactions(world, node) for node in CORES]
    assert all(order == orders[0] for order in orders)
    assert sorted(orders[0]) == sorted(submitted), "each transaction committed exactly once"


def test_the_prefix_checker_reports_a_divergence() -> None:
    world = make_world(40)
    first, second = CORES[:2]
    world.apply(first, Step(events=[Committed(0, 2, 1, first, b"a" * 32, ())]))
    with pytest.raises(PrefixViolated):
        world.apply(second, Step(events=[Committed(0, 2, 1, first, b"b" * 32, ())]))
    with pytest.raises(PrefixViolated):
        world.apply(first, Step(events=[Committed(5, 2, 1, first, b"a" * 32, ())]))


@pytest.mark.parametrize("seed", range(50, 60))
def test_random_crashes_and_driver_restarts_keep_the_prefix_and_progress(seed: int) -> None:
    """Seeded fault mix within the bound: at most one core down at a time (each time for
    fewer rounds than the collection depth), drivers restarted empty, a Byzantine driver
    throughout; afterwards every core commits again."""
    rng = random.Random(seed)
    world = make_world(seed, "hb")
    down: NodeId | None = None
    for _ in range(6):
        choice = rng.randrange(3)
        if choice == 0 and down is None:
            down = CORES[rng.randrange(4)]
            world.crash(down)
        elif choice == 1 and down is not None:
            world.restart(down)
            down = None
        elif choice == 2:
            restart_driver(world, "driver-0")
        run(world, rng.randint(100, 400))
    if down is not None:
        world.restart(down)
    target = max(len(committed(world, node)) for node in CORES) + 30
    assert world.step_until(each_committed(world, target), max_steps=10000)
    assert_same_prefix(world)
    assert_one_certificate_per_slot(world)


@pytest.mark.parametrize("one_way_ms", [100, 200])
def test_a_core_far_from_every_driver_gets_all_its_transactions_committed(
    one_way_ms: int,
) -> None:
    # Core 3 is `one_way_ms` from both drivers, the others a few milliseconds, under a
    # steady load on core 3.  Before, it learnt two rounds' quorums per answer and, its
    # delay restarting on each round entry, proposed in almost no round; and its few
    # certificates, late, stayed with the drivers (never carried below a core's round
    # - 1), so no core named them as weak parents: none of its transactions committed.
    world = tusk_world(
        KEYS,
        seed=one_way_ms,
        config=TuskConfig(min_header_delay_ms=100, gc_depth=50),
        latency_ms=(1, 5),
        call_timeout_ms=2_000,
    )
    far = CORES[3]
    slow_core(world, far, one_way_ms)
    transactions = [f"far {number}".encode() for number in range(40)]
    for number, transaction in enumerate(transactions):
        world.input_at(number * 50, far, Proposed(transaction))

    def all_committed() -> bool:
        return all(
            set(transactions) <= set(delivered_transactions(world, node)) for node in CORES[:3]
        )

    assert world.step_until(all_committed, max_ms=20_000)
    assert_same_prefix(world)
    creators = {event.creator for event in committed(world, CORES[0])}
    assert far in creators


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_core_with_another_gc_depth_is_refused_and_cannot_fork_the_order(seed: int) -> None:
    # Core 3 collects at depth 2, the others at 10.  Before, nothing compared settings
    # between cores and core 3 delivered a different sequence (4 of 4 seeds).  Now its
    # headers name another committee context: the others refuse them, it refuses
    # theirs, and the three that agree carry on without it.
    odd = CORES[3]
    world = tusk_world(
        KEYS, seed=seed, config=TuskConfig(gc_depth=10), core_configs={odd: TuskConfig(gc_depth=2)}
    )
    refusals = tally_refusals(world, CORES)
    assert world.step_until(each_committed(world, 60, CORES[:3]), max_steps=20_000)
    assert_same_prefix(world)
    assert committed(world, odd) == []
    assert refusals[RefusalReason.OTHER_COMMITTEE] > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_a_core_keeping_another_length_of_log_is_refused_at_once(seed: int) -> None:
    # Cores 0-2 keep 8 delivery-log records below each checkpoint, core 3 all of them.
    # Before, nothing compared the setting: core 3 ordered with the others, and once it
    # rejoined by a checkpoint, the part of its gap below what they keep was never
    # served nor given up (it waited on it for good).  Now `kept_commits` is part of the
    # committee context: core 3 and the others refuse each other from the start, and a
    # driver names the cores that refuse and whose headers.
    odd = CORES[3]
    world = tusk_world(
        KEYS,
        seed=seed,
        config=TuskConfig(kept_commits=8),
        core_configs={odd: TuskConfig(kept_commits=None)},
    )
    refusals = tally_refusals(world, CORES)
    assert world.step_until(each_committed(world, 30, CORES[:3]), max_steps=20_000)
    assert_same_prefix(world)
    assert committed(world, odd) == []
    assert refusals[RefusalReason.OTHER_COMMITTEE] > 0
    committee = Committee.equal_weights(CORES)
    driver = world.core(Driver("driver-a", committee).node_id, Driver)
    said = driver.context_refusals()
    assert said[odd] == frozenset(CORES[:3])
    assert all(said[core] == frozenset({odd}) for core in CORES[:3])
    names = {core: f"core-{index}" for index, core in enumerate(CORES)}
    series = {
        labels["core"]: value
        for name, labels, value in driver_series(driver, names)
        if name == "synod_tusk_driver_core_other_context_members"
    }
    assert series == {"core-0": 1, "core-1": 1, "core-2": 1, "core-3": 3}


def test_a_core_of_another_network_is_refused_even_with_the_same_keys() -> None:
    # The same four keys serve in networks "alpha" and "beta".  A beta core shown alpha
    # headers and certificates votes for none and stores none (another committee
    # context); an alpha header re-labelled with beta's context fails its signature.
    alpha = tusk_world(KEYS, seed=30, config=TuskConfig(network=b"alpha"))
    assert alpha.step_until(each_committed(alpha, 8), max_steps=4_000)
    alpha_core = alpha.core(CORES[1], TuskCore)
    beta = TuskCore(KEYS[0], alpha_core.committee, config=TuskConfig(network=b"beta"))
    header = alpha_core.own_header()
    assert header is not None
    held = [alpha_core.certificate(digest) for digest in sorted(alpha_core.certificate_digests())]
    certificates = tuple(c for c in held if c is not None and c.header.round <= 2)
    answer = ask_core(beta, CoreRequest(headers=(header,), certificates=certificates))
    assert {refusal.reason for refusal in answer.refusals} == {RefusalReason.OTHER_COMMITTEE}
    assert all(vote.header_digest != header.digest() for vote in answer.votes)
    assert beta.certificate_digests() == frozenset()
    first = next(c.header for c in certificates if c.round == 1 and c.creator != CORES[0])
    relabelled = msgspec.structs.replace(first, context=beta.context)
    answer = ask_core(beta, CoreRequest(headers=(relabelled,)))
    assert [refusal.reason for refusal in answer.refusals] == [RefusalReason.BAD_SIGNATURE]
    # And an alpha driver refuses a beta core's answers: signed for another network.
    assert answer.has_valid_signature(b"beta") and not answer.has_valid_signature(b"alpha")


def ask_core(core: TuskCore, request: CoreRequest) -> CoreAnswer:
    step = core.handle(RequestReceived("driver", 1, request), 0)
    reply = step.outgoing[0]
    assert isinstance(reply, Reply) and isinstance(reply.body, CoreAnswer)
    return reply.body


def test_cores_of_weight_f_plus_one_prove_where_a_transaction_was_committed() -> None:
    # Before, a client had only one core's receipt that its transaction was accepted.
    # Now each core signs where the transactions it committed are (CommitAck), and
    # f + 1 cores stating the same position prove it: one of them is correct.
    world = make_world(40)
    submit(world, CORES[0], [b"pay alice 5", b"pay bob 3"])
    assert world.step_until(
        lambda: all(b"pay alice 5" in delivered_transactions(world, core) for core in CORES),
        max_steps=6_000,
    )
    where = next(e for e in committed(world, CORES[2]) if b"pay alice 5" in e.transactions)
    alice, unknown = transaction_digest(b"pay alice 5"), transaction_digest(b"never sent")
    acks = [query_commits(world.core(core, TuskCore), (alice, unknown)) for core in CORES]
    for ack in acks:
        assert [(e.transaction, e.sequence, e.certificate) for e in ack.entries] == [
            (alice, where.sequence, where.digest)
        ]
    committee = world.core(CORES[0], TuskCore).committee
    weights, threshold = committee.weights, committee.validity_threshold
    assert proven_commits(acks[:2], weights, threshold)[alice].sequence == where.sequence
    assert unknown not in proven_commits(acks, weights, threshold)
    # One core alone proves nothing, nor twice; a lie beside a true statement neither.
    assert proven_commits([acks[0], acks[0]], weights, threshold) == {}
    lie = CommitAck(CORES[3], (CommittedAt(alice, where.sequence + 1, where.digest),))
    lie = sign_commit_ack(KEYS[3], lie)
    assert proven_commits([acks[0], lie], weights, threshold) == {}
    # A core rebuilt from its records acknowledges the same.
    rebuilt = TuskCore(KEYS[2], committee, dict(world.node(CORES[2]).storage))
    assert query_commits(rebuilt, (alice,)).entries == acks[2].entries
    # An acknowledgement signed for another network counts for nothing here.
    other = sign_commit_ack(KEYS[1], msgspec.structs.replace(acks[1], signature=bytes(64)), b"x")
    assert proven_commits([acks[0], other], weights, threshold) == {}


def query_commits(core: TuskCore, digests: tuple[bytes, ...]) -> CommitAck:
    step = core.handle(RequestReceived("client", 1, CommitQuery(transactions=digests)), 0)
    reply = step.outgoing[0]
    assert isinstance(reply, Reply) and isinstance(reply.body, CommitAck)
    assert step.persist == [], "a query changes nothing"
    return reply.body


def test_an_idle_paced_committee_stays_quiet_and_wakes_for_a_transaction() -> None:
    # Before, a paced committee with nothing to order made a round per delay: about
    # 400 rounds and 2,000 stored records per core in an idle minute.  Now it stops
    # once what it had is delivered, and the next transaction wakes it.
    world = tusk_world(KEYS, seed=3, config=TuskConfig(min_header_delay_ms=100))
    submit(world, CORES[0], [b"one"])
    world.run_until(60_000)
    assert all(b"one" in delivered_transactions(world, core) for core in CORES)
    rounds = [world.core(core, TuskCore).round for core in CORES]
    assert max(rounds) <= 6, rounds
    assert all(len(world.node(core).storage) < 60 for core in CORES)
    submit(world, CORES[2], [b"two"])
    assert world.step_until(
        lambda: all(b"two" in delivered_transactions(world, core) for core in CORES),
        max_ms=world.now_ms + 5_000,
    )


def _down_for(rounds: int) -> World:
    """Core 3 crashed while the others order a transaction every 100 ms for `rounds`
    rounds (gc_depth 10, drivers keep 40 rounds), then restarted."""
    world = tusk_world(KEYS, seed=1, config=TuskConfig(gc_depth=10, min_header_delay_ms=50))
    submit(world, CORES[3], [b"before the crash"])
    assert world.step_until(lambda: b"before the crash" in delivered_transactions(world, CORES[3]))
    world.crash(CORES[3])
    first_round = world.core(CORES[0], TuskCore).round
    number = 0
    while world.core(CORES[0], TuskCore).round < first_round + rounds:
        submit(world, CORES[number % 3], [f"while down {number}".encode()])
        number += 1
        world.run_until(world.now_ms + 100)
    world.restart(CORES[3])
    return world


def test_a_core_down_for_more_than_gc_depth_rounds_rejoins_from_what_drivers_hold() -> None:
    world = _down_for(25)
    restarted = world.core(CORES[3], TuskCore)
    assert not restarted.takes_transactions, "no receipt before a driver brings news"
    assert world.step_until(lambda: restarted.takes_transactions, max_ms=world.now_ms + 5_000)
    submit(world, CORES[3], [b"after restart"])
    assert world.step_until(
        lambda: all(b"after restart" in delivered_transactions(world, core) for core in CORES),
        max_ms=world.now_ms + 20_000,
    )
    assert_same_prefix(world)
    assert answers(world)[-1].accepted == 1


def test_a_core_down_beyond_the_drivers_reach_installs_a_checkpoint_and_rejoins() -> None:
    # Before, such a core printed `ready`, said nothing and signed receipts for
    # transactions it could never get committed; then it said so (FellBehind) and
    # refused receipts, but could never rejoin: the rounds it needed were collected
    # everywhere.  A driver now carries it a checkpoint signed by cores of weight f + 1;
    # it installs it and continues the order from there.
    world = _down_for(80)
    restarted = world.core(CORES[3], TuskCore)
    before = restarted.committed_count
    submit(world, CORES[3], [b"right after the restart"])
    assert world.step_until(lambda: restarted.takes_transactions, max_ms=world.now_ms + 10_000)
    [installed] = world.events_of(CORES[3], CheckpointInstalled)
    assert installed.first_skipped == before
    assert installed.sequence > before + 80, "it skipped what was collected while it was down"
    submit(world, CORES[3], [b"after rejoining"])
    assert world.step_until(
        lambda: all(b"after rejoining" in delivered_transactions(world, core) for core in CORES),
        max_ms=world.now_ms + 10_000,
    )
    receipts = [answer for answer in answers(world) if answer.core == CORES[3]][-2:]
    assert [answer.accepted for answer in receipts] == [0, 1]
    assert receipts[0].reason == SubmitRefusal.BEHIND
    assert_same_prefix(world)
    first = world.core(CORES[0], TuskCore)
    assert world.step_until(lambda: first.committed_count == restarted.committed_count)
    assert first.chain == restarted.chain, "one digest for the whole sequence"


def test_a_whole_committee_restarted_while_idle_takes_transactions_again() -> None:
    """Every core rebuilt from its records waits for proof that it is within reach before
    it signs a receipt; an idle committee made no round to prove it, so every submission
    was refused for good.  A restored core now proposes its round's header: a quorum
    certifying it is the proof (a core far behind proposes in a collected round and is
    refused, so it stays silent, as it must)."""
    world = tusk_world(KEYS, seed=3, config=TuskConfig(gc_depth=10, min_header_delay_ms=50))
    submit(world, CORES[0], [b"before"])
    assert world.step_until(
        lambda: all(b"before" in delivered_transactions(world, core) for core in CORES)
    )
    world.run_until(world.now_ms + 5_000)  # idle: the committee stops making rounds
    for core in CORES:
        world.crash(core)
    for core in CORES:
        world.restart(core)
    assert world.step_until(
        lambda: all(world.core(core, TuskCore).takes_transactions for core in CORES),
        max_ms=world.now_ms + 10_000,
    )
    submit(world, CORES[1], [b"after"])
    assert world.step_until(
        lambda: all(b"after" in delivered_transactions(world, core) for core in CORES),
        max_ms=world.now_ms + 10_000,
    )
    assert answers(world)[-1].accepted == 1


@pytest.mark.parametrize("seed", range(3))
def test_a_far_core_crashed_right_after_proposing_gets_that_batch_committed_soon(
    seed: int,
) -> None:
    """Core 3, 300 ms from every driver, proposes a header carrying a transaction and
    crashes before any driver learnt it; back a second later, its round moves on with
    the others' certificates.  Before, only the current round's header was ever in its
    answers: the batch waited for collection (gc_depth rounds of its own commits in an
    otherwise idle committee), 17.6 s of virtual time after the restart in these seeds.
    Its answers now carry the late header until a driver holds it: about 2.8 s."""
    config = TuskConfig(gc_depth=10, min_header_delay_ms=50)
    world = tusk_world(KEYS, seed=seed, config=config, call_timeout_ms=2_000)
    slow_core(world, CORES[3], 300)
    world.input(CORES[3], Proposed(b"far"))

    def proposed() -> bool:  # its own header with the transaction is persisted
        return any(
            key.startswith(b"tusk/own-header/") and b"far" in value
            for key, value in world.node(CORES[3]).storage.items()
        )

    assert world.step_until(proposed)
    world.crash(CORES[3])
    world.run_until(world.now_ms + 1_000)
    world.restart(CORES[3])
    restarted_ms = world.now_ms
    assert world.step_until(
        lambda: all(b"far" in delivered_transactions(world, core) for core in CORES),
        max_ms=restarted_ms + 8_000,
    ), "committed everywhere within 8 s of virtual time after the restart"
    assert_same_prefix(world)
