"""Nodes that were away for longer than the slot window: they fetch the decisions they
missed, each with a proof (a quorum's signed CONFIRM / EXTERNALIZE statements) checked
against their own quorum set, and deliver every slot in order; when no peer holds a
missed slot any more, the application is told (`SlotsUnavailable`), never left to
find a hole in its log.

Four nodes, quorum set 3 of 4, a small window (2 slots retained, 2 ahead) so that a
node away for a few slots is already beyond it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from scp_fixtures import KEYS, QSET, envelope_from, make_core

from synod.core import Proposed, Received, Started
from synod.crypto import KeyPair
from synod.scp import (
    Ballot,
    Confirm,
    Decision,
    DecisionRequest,
    Externalize,
    Externalized,
    Prepare,
    RejectReason,
    ScpConfig,
    ScpCore,
    SlotProposal,
    SlotsUnavailable,
)
from synod.scp.decisions import check_decision
from synod.sim.scenarios.scp import externalized, scp_world
from synod.sim.world import World

LATE = KEYS[3]
PEERS = KEYS[:3]


def small_window_network(*, retained_decisions: int = 1024, seed: int = 11) -> World:
    configs = [
        ScpConfig(
            keys=key,
            quorum_set=QSET,
            retained_slots=2,
            max_slots_ahead=2,
            retained_decisions=retained_decisions,
            rebroadcast_interval_ms=500,
        )
        for key in KEYS
    ]
    return scp_world(configs, seed=seed)


def decide(world: World, slot_index: int, nodes: Sequence[KeyPair]) -> None:
    for key in nodes:
        value = b"slot %d by %s" % (slot_index, key.node_id.hex()[:6].encode())
        world.input(key.node_id, Proposed(SlotProposal(slot_index, value)))
    assert world.step_until(
        lambda: all(slot_index in externalized(world, key.node_id) for key in nodes),
        max_ms=world.now_ms + 60_000,
    )


def run_until(world: World, done: Callable[[], bool], budget_ms: int = 30_000) -> bool:
    return world.step_until(done, max_ms=world.now_ms + budget_ms)


def delivered(world: World, key: KeyPair) -> list[int]:
    return [event.slot_index for event in world.events_of(key.node_id, Externalized)]


def test_a_node_away_for_longer_than_the_window_delivers_every_slot_in_order() -> None:
    """Finding 3: a node silent for slots 1-6 got `Externalized` for 4-7 only; the
    slots it missed were skipped without a word."""
    world = small_window_network()
    world.silence(LATE.node_id)
    for slot_index in range(1, 7):
        decide(world, slot_index, PEERS)
    world.unsilence(LATE.node_id)
    decide(world, 7, PEERS)
    assert run_until(world, lambda: delivered(world, LATE) == list(range(1, 8)))
    assert externalized(world, LATE.node_id) == externalized(world, PEERS[0].node_id)


def test_a_node_away_for_a_hundred_slots_catches_up_from_proofs() -> None:
    world = small_window_network()
    world.silence(LATE.node_id)
    for slot_index in range(1, 101):
        decide(world, slot_index, PEERS)
    world.unsilence(LATE.node_id)
    assert run_until(world, lambda: len(delivered(world, LATE)) == 100, 60_000)
    assert delivered(world, LATE) == list(range(1, 101))
    assert externalized(world, LATE.node_id) == externalized(world, PEERS[0].node_id)


def test_beyond_what_peers_retain_the_application_is_told_and_installs_a_checkpoint() -> None:
    world = small_window_network(retained_decisions=4)
    world.silence(LATE.node_id)
    for slot_index in range(1, 11):
        decide(world, slot_index, PEERS)
    world.unsilence(LATE.node_id)
    assert run_until(world, lambda: bool(world.events_of(LATE.node_id, SlotsUnavailable)))
    assert delivered(world, LATE) == []  # nothing skipped silently, nothing out of order
    notice = world.events_of(LATE.node_id, SlotsUnavailable)[0]
    assert notice.first_slot_index == 1
    # the application installs its state through the slot before the oldest decision
    # a peer holds, obtained by its own means, then the node delivers from there
    core = world.core(LATE.node_id, ScpCore)
    world.apply(LATE.node_id, core.advance_to(notice.available_from_slot_index, world.now_ms))
    assert run_until(world, lambda: 10 in externalized(world, LATE.node_id))
    first = notice.available_from_slot_index
    assert delivered(world, LATE) == list(range(first, 11))


# ---------------------------------------------------------------- proofs


def confirm(value: bytes, qset_hash: bytes) -> Confirm:
    return Confirm(Ballot(1, value), 1, 1, 1, qset_hash)


def externalize(value: bytes, qset_hash: bytes) -> Externalize:
    return Externalize(Ballot(1, value), 1, qset_hash)


def checks(core: ScpCore, decision: Decision) -> bool:
    return check_decision(
        decision,
        local_qset=core.config.quorum_set,
        qset_by_hash=core.quorum_sets.get,
        admits=core.transitive_quorum.__contains__,
        verifier=core.config.verifier,
    )


def test_a_proof_needs_a_quorum_of_the_receivers_own_quorum_set() -> None:
    core = make_core()
    digest = core.local_qset_hash
    three = tuple(envelope_from(key, 5, externalize(b"v", digest)) for key in KEYS[1:])
    assert checks(core, Decision(5, b"v", three))
    assert not checks(core, Decision(5, b"v", three[:2]))  # 2 of 4: no slice of 3 of 4
    mixed = (*three[:2], envelope_from(KEYS[3], 5, confirm(b"v", digest)))
    assert checks(core, Decision(5, b"v", mixed))  # a CONFIRM counts with its quorum set


def test_a_proof_with_another_value_slot_forged_signature_or_prepare_fails() -> None:
    core = make_core()
    digest = core.local_qset_hash
    good = [envelope_from(key, 5, externalize(b"v", digest)) for key in KEYS[1:]]
    other_value = [*good[:2], envelope_from(KEYS[3], 5, externalize(b"w", digest))]
    assert not checks(core, Decision(5, b"v", tuple(other_value)))
    other_slot = [*good[:2], envelope_from(KEYS[3], 6, externalize(b"v", digest))]
    assert not checks(core, Decision(5, b"v", tuple(other_slot)))
    forged = good[2].__class__(good[2].statement, bytes(64))
    assert not checks(core, Decision(5, b"v", (*good[:2], forged)))
    prepare = Prepare(digest, Ballot(1, b"v"), Ballot(1, b"v"), None, 1, 1)
    only_votes = [*good[:2], envelope_from(KEYS[3], 5, prepare)]
    assert not checks(core, Decision(5, b"v", tuple(only_votes)))
    duplicated = [good[0], good[0], good[1]]
    assert not checks(core, Decision(5, b"v", tuple(duplicated)))


def test_a_core_delivers_a_checked_decision_and_refuses_a_bad_one() -> None:
    core = make_core()
    digest = core.local_qset_hash
    good = tuple(envelope_from(key, 1, externalize(b"v", digest)) for key in KEYS[1:])
    step = core.handle(Received(KEYS[1].node_id, Decision(1, b"v", good[:2])), 0)
    assert core.rejected[RejectReason.BAD_DECISION] == 1 and step.events == []
    step = core.handle(Received(KEYS[1].node_id, Decision(1, b"v", good)), 0)
    assert step.events == [Externalized(1, b"v")]
    core.handle(Received(KEYS[2].node_id, Decision(1, b"v", good)), 0)
    assert core.rejected[RejectReason.UNNEEDED_DECISION] == 1


def test_proof_checks_per_sender_are_budgeted() -> None:
    core = make_core(decision_check_burst=3, decision_check_refill_ms=1_000)
    digest = core.local_qset_hash
    bad = tuple(envelope_from(key, 1, externalize(b"v", digest)) for key in KEYS[1:3])
    for _ in range(10):
        core.handle(Received(KEYS[1].node_id, Decision(1, b"v", bad)), 0)
    assert core.rejected[RejectReason.BAD_DECISION] == 3
    assert core.rejected[RejectReason.DECISION_LIMITED] == 7


def test_decisions_are_served_from_what_the_node_decided() -> None:
    world = small_window_network()
    for slot_index in range(1, 4):
        decide(world, slot_index, KEYS)
    core = world.core(KEYS[0].node_id, ScpCore)
    step = core.handle(Received(KEYS[1].node_id, DecisionRequest(1)), world.now_ms)
    answers = [outgoing.message for outgoing in step.outgoing]  # type: ignore[union-attr]
    assert [decision.slot_index for decision in answers] == [1, 2, 3]
    other = world.core(KEYS[1].node_id, ScpCore)
    assert all(checks(other, decision) for decision in answers)


def test_a_decision_held_back_survives_a_restart_and_leaves_in_order() -> None:
    core = make_core()
    digest = core.local_qset_hash
    storage: dict[bytes, bytes] = {}

    def decision(slot_index: int) -> Decision:
        proof = tuple(
            envelope_from(key, slot_index, externalize(b"v%d" % slot_index, digest))
            for key in KEYS[1:]
        )
        return Decision(slot_index, b"v%d" % slot_index, proof)

    step = core.handle(Received(KEYS[1].node_id, decision(2)), 0)
    assert step.events == []  # slot 1 is missing: slot 2 waits
    storage.update((record.key, record.value) for record in step.persist if record.value)
    restarted = ScpCore(core.config, storage)
    assert restarted.handle(Started(), 0).events == []
    step = restarted.handle(Received(KEYS[2].node_id, decision(1)), 0)
    assert step.events == [Externalized(1, b"v1"), Externalized(2, b"v2")]


def test_a_log_node_says_when_peers_no_longer_hold_its_missing_slots(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from synod.crypto import read_key_file
    from synod.runtime.scp_node import LogNode, create_network
    from synod.scp import SlotsUnavailable

    config = create_network(tmp_path, nodes=4)
    entry = config.nodes[0]
    node = LogNode(config, entry, read_key_file(entry.key_file))
    with caplog.at_level("WARNING", logger="synod.runtime.scp_node"):
        node._on_event(SlotsUnavailable(3, 1_200))
    (record,) = caplog.records
    assert record.first_slot == 3 and record.available_from_slot == 1_200  # type: ignore[attr-defined]
