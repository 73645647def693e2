"""`ScpCore` as a `synod.core.Core`: bad input, quorum-set fetching, persist-before-send,
the slot window, and restoring after a crash without contradicting earlier statements."""

from __future__ import annotations

from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scp_fixtures import KEYS, PEER, QSET, V0, envelope_from, make_core

from synod.core import (
    Broadcast,
    Input,
    LocalError,
    Persist,
    Proposed,
    Received,
    Send,
    Started,
    Step,
    Storage,
)
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet
from synod.scp import (
    CODEC,
    Ballot,
    Envelope,
    Externalize,
    Nomination,
    Prepare,
    QuorumSetRequest,
    QuorumSetResponse,
    RejectReason,
    ScpConfig,
    ScpCore,
    Statement,
    StateRequest,
    sign_statement,
)
from synod.scp.core import slot_record_key
from synod.scp.statements import is_newer_ballot_statement
from synod.sim.scenarios.scp import externalized, scp_world
from synod.sim.world import NodeFactory, World


def prepare(counter: int, value: bytes = b"x", qset_hash: bytes | None = None) -> Prepare:
    digest = qset_hash if qset_hash is not None else make_core().local_qset_hash
    return Prepare(digest, Ballot(counter, value), None, None, 0, 0)


def receive(core: ScpCore, message: object, sender: NodeId = PEER.node_id) -> Step:
    return core.handle(Received(sender, message), 0)


# ---------------------------------------------------------------- bad input


def test_each_kind_of_bad_input_is_dropped_with_its_reason() -> None:
    core = make_core()
    good = envelope_from(PEER, 1, prepare(1))
    forged = Envelope(good.statement, bytes(64))
    cases = [
        (b"\x00garbage", RejectReason.MALFORMED),
        ("not a message", RejectReason.MALFORMED),
        (forged, RejectReason.BAD_SIGNATURE),
        (envelope_from(PEER, 1, prepare(0)), RejectReason.INSANE_STATEMENT),
        (envelope_from(PEER, 10_000, prepare(1)), RejectReason.FAR_FUTURE),
        (envelope_from(PEER, 0, prepare(1)), RejectReason.TOO_OLD),
        (envelope_from(PEER, 1, prepare(1, b"bad")), RejectReason.INVALID_VALUE),
        (envelope_from(V0, 1, prepare(1)), RejectReason.OWN_STATEMENT),
        (QuorumSetResponse(QSET), RejectReason.UNSOLICITED_QUORUM_SET),
    ]
    for message, reason in cases:
        before = core.rejected[reason]
        step = receive(core, message)
        assert core.rejected[reason] == before + 1, reason
        assert step.outgoing == [] and step.persist == []
    assert core.slots == {} or all(not slot.ballot.latest for slot in core.slots.values())


def test_replayed_statement_is_stale() -> None:
    core = make_core()
    envelope = envelope_from(PEER, 1, prepare(2))
    receive(core, envelope)
    receive(core, envelope)
    receive(core, envelope_from(PEER, 1, prepare(1)))
    assert core.rejected[RejectReason.STALE_STATEMENT] == 2


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    core = make_core()
    receive(core, data)
    assert sum(core.rejected.values()) <= 1


def test_strangers_outside_the_transitive_quorum_never_enter_a_slot() -> None:
    core = make_core(max_nodes_per_slot=10)
    for index in range(40):
        stranger = KeyPair.from_seed(index.to_bytes(32, "big"))
        receive(core, envelope_from(stranger, 1, prepare(1)))
        receive(core, envelope_from(stranger, 5_000 + index, prepare(1)))
    assert core.rejected[RejectReason.NOT_IN_QUORUM] == 80
    assert core.slots == {}


def test_the_slot_table_holds_at_most_max_nodes_per_slot_members() -> None:
    strangers = [KeyPair.from_seed(index.to_bytes(32, "big")) for index in range(40)]
    wide = QuorumSet(threshold=1, validators=tuple(key.node_id for key in strangers))
    core = make_core(max_nodes_per_slot=10, known_quorum_sets=[wide])
    digest = core.quorum_sets.hash_of(wide)
    receive(core, envelope_from(PEER, 1, prepare(1, qset_hash=digest)))  # PEER trusts them
    for stranger in strangers:
        receive(core, envelope_from(stranger, 1, prepare(1)))
    assert len(core.slots[1].ballot.latest) == 10
    assert core.rejected[RejectReason.SLOT_FULL] == 31


# ---------------------------------------------------------------- quorum sets


def test_unknown_quorum_set_is_requested_and_parked_statement_processed_later() -> None:
    core = make_core()
    other_qset = QuorumSet(threshold=2, validators=tuple(key.node_id for key in KEYS[1:]))
    digest = core.quorum_sets.hash_of(other_qset)
    step = receive(core, envelope_from(PEER, 1, prepare(1, qset_hash=digest)))
    assert step.outgoing == [Send(PEER.node_id, QuorumSetRequest(digest))]
    assert core.rejected[RejectReason.UNKNOWN_QUORUM_SET] == 1
    assert 1 not in core.slots or PEER.node_id not in core.slots[1].ballot.latest
    receive(core, QuorumSetResponse(other_qset))
    assert PEER.node_id in core.slots[1].ballot.latest


def test_insane_quorum_set_response_is_refused() -> None:
    core = make_core()
    insane = QuorumSet(threshold=5, validators=(PEER.node_id,))
    digest = core.quorum_sets.hash_of(insane)
    receive(core, envelope_from(PEER, 1, prepare(1, qset_hash=digest)))
    receive(core, QuorumSetResponse(insane))
    assert core.rejected[RejectReason.INSANE_QUORUM_SET] == 1
    assert core.quorum_sets.get(digest) is None


def test_quorum_set_requests_are_answered_for_known_sets() -> None:
    core = make_core()
    step = receive(core, QuorumSetRequest(core.local_qset_hash))
    assert step.outgoing == [Send(PEER.node_id, QuorumSetResponse(QSET))]
    assert receive(core, QuorumSetRequest(bytes(32))).outgoing == []


# ---------------------------------------------------------------- persistence


class PersistBeforeBroadcast:
    """An `ScpCore` whose every step is checked: each envelope it broadcasts is persisted
    by the same step (the driver makes that durable before it sends anything)."""

    def __init__(self, core: ScpCore, checked: list[Envelope]) -> None:
        self.core = core
        self.checked = checked

    @property
    def node_id(self) -> NodeId:
        return self.core.node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        step = self.core.handle(event, now_ms)
        persisted = {record.value for record in step.persist if isinstance(record, Persist)}
        for outgoing in step.outgoing:
            if isinstance(outgoing, Broadcast) and isinstance(outgoing.message, Envelope):
                assert CODEC.encode(outgoing.message) in persisted
                self.checked.append(outgoing.message)
        return step


def test_every_broadcast_envelope_was_persisted_in_the_same_step_first() -> None:
    checked: list[Envelope] = []

    def checking(key: KeyPair) -> NodeFactory:
        config = ScpConfig(keys=key, quorum_set=QSET)
        return lambda storage, rng: PersistBeforeBroadcast(ScpCore(config, storage), checked)

    world = World.perfect(seed=3, latency_ms=(1, 10))
    world.add_nodes({key.node_id: checking(key) for key in KEYS}, CODEC)
    propose_everywhere(world, b"v")
    assert world.step_until(lambda: all_externalized(world, 1))
    assert len(checked) > 10


def four_node_network(seed: int, *, retained_slots: int = 4) -> World:
    configs = [ScpConfig(keys=key, quorum_set=QSET, retained_slots=retained_slots) for key in KEYS]
    return scp_world(configs, seed=seed)


def propose_everywhere(world: World, prefix: bytes) -> None:
    for index, key in enumerate(KEYS):
        world.input(key.node_id, Proposed(prefix + bytes([48 + index])))


def all_externalized(world: World, slot_index: int) -> bool:
    return all(slot_index in externalized(world, key.node_id) for key in KEYS)


def test_old_slots_are_purged_from_memory_and_storage() -> None:
    world = four_node_network(seed=5, retained_slots=2)
    for slot_index in range(1, 7):
        propose_everywhere(world, b"slot%d-" % slot_index)
        assert world.step_until(partial(all_externalized, world, slot_index))
    for key in KEYS:
        core = world.core(key.node_id, ScpCore)
        assert set(core.slots) <= {5, 6, 7}
        stored_slots = {
            int.from_bytes(record[9:17], "big")
            for record in world.node(key.node_id).storage
            if record.startswith(b"scp/slot/")
        }
        assert stored_slots <= {5, 6, 7}
    # a purged slot's statements are refused as too old
    core = world.core(KEYS[0].node_id, ScpCore)
    too_old_before = core.rejected[RejectReason.TOO_OLD]  # late messages of the run itself
    receive(core, envelope_from(PEER, 2, prepare(1, qset_hash=core.local_qset_hash)))
    assert core.rejected[RejectReason.TOO_OLD] == too_old_before + 1


# ---------------------------------------------------------------- restore


def test_restore_adopts_the_persisted_ballot_state() -> None:
    core = make_core()
    digest = core.local_qset_hash
    statement = Statement(
        V0.node_id, 3, Prepare(digest, Ballot(2, b"x"), Ballot(2, b"x"), None, 1, 2)
    )
    storage = {slot_record_key(3, "ballot"): CODEC.encode(sign_statement(V0, statement))}
    restored = ScpCore(ScpConfig(keys=V0, quorum_set=QSET), storage)
    ballot = restored.slots[3].ballot
    assert (ballot.current, ballot.prepared, ballot.high, ballot.commit) == (
        Ballot(2, b"x"),
        Ballot(2, b"x"),
        Ballot(2, b"x"),
        Ballot(1, b"x"),
    )
    # its next statement, after a timeout, is newer and keeps the value it locked on
    step = restored.handle(Started(), 0)
    step.extend(restored.bump_state(3, b"other", 0))
    sent = [
        o.message.statement.pledges
        for o in step.outgoing
        if isinstance(o, Broadcast) and isinstance(o.message, Envelope)
    ]
    assert sent[0] == statement.pledges  # re-announced after the restart
    assert isinstance(sent[-1], Prepare) and sent[-1].ballot == Ballot(3, b"x")
    assert is_newer_ballot_statement(statement.pledges, sent[-1])  # type: ignore[arg-type]
    assert Broadcast(StateRequest(1)) in step.outgoing


def test_restore_of_externalized_slot_reports_its_value_and_moves_on() -> None:
    core = make_core()
    statement = Statement(V0.node_id, 4, Externalize(Ballot(1, b"v"), 2, core.local_qset_hash))
    storage = {slot_record_key(4, "ballot"): CODEC.encode(sign_statement(V0, statement))}
    restored = ScpCore(ScpConfig(keys=V0, quorum_set=QSET), storage)
    assert restored.externalized_value(4) == b"v"
    assert restored.next_slot_index == 5


def test_restored_nomination_never_drops_votes() -> None:
    core = make_core()
    nomination = Nomination(core.local_qset_hash, (b"a", b"b"), (b"a",))
    statement = Statement(V0.node_id, 1, nomination)
    storage = {slot_record_key(1, "nomination"): CODEC.encode(sign_statement(V0, statement))}
    restored = ScpCore(ScpConfig(keys=V0, quorum_set=QSET), storage)
    slot = restored.slots[1]
    assert slot.nomination.votes == {b"a", b"b"}
    assert slot.nomination.accepted == {b"a"}


def test_crashed_node_restarts_and_the_network_agrees() -> None:
    world = four_node_network(seed=11)
    propose_everywhere(world, b"one-")
    victim = KEYS[2].node_id
    # let messages flow until the victim has a ballot statement, then crash it mid-slot
    assert world.step_until(lambda: slot_record_key(1, "ballot") in world.node(victim).storage)
    assert not externalized(world, victim)
    before = dict(world.node(victim).storage)
    world.crash(victim)
    world.restart(victim)
    assert world.step_until(lambda: all_externalized_or_restored(world, 1))
    values = {decided_value(world, key.node_id, 1) for key in KEYS}
    assert len(values) == 1
    # what the victim persisted after the restart never contradicts what it had said
    after: Storage = world.node(victim).storage
    for record_key, value in before.items():
        if record_key.endswith(b"/ballot") and record_key in after:
            old = CODEC.decode(value)
            new = CODEC.decode(after[record_key])
            assert isinstance(old, Envelope) and isinstance(new, Envelope)
            assert old == new or is_newer_ballot_statement(
                old.statement.pledges,  # type: ignore[arg-type]
                new.statement.pledges,  # type: ignore[arg-type]
            )


def decided_value(world: World, node: NodeId, slot_index: int) -> bytes | None:
    value = externalized(world, node).get(slot_index)
    if value is None:
        value = world.core(node, ScpCore).externalized_value(slot_index)
    return value


def all_externalized_or_restored(world: World, slot_index: int) -> bool:
    return all(decided_value(world, key.node_id, slot_index) is not None for key in KEYS)


def test_watcher_refuses_to_nominate() -> None:
    core = make_core(validator=False)
    with pytest.raises(LocalError):
        core.handle(Proposed(b"x"), 0)


def test_forged_envelope_with_unknown_quorum_set_is_not_parked() -> None:
    core = make_core()
    unknown = bytes([9]) * 32
    genuine = envelope_from(PEER, 1, prepare(1, qset_hash=unknown))
    forged = Envelope(genuine.statement, bytes(64))
    step = receive(core, forged)
    assert step.outgoing == []  # nothing requested for a forgery
    assert core.rejected[RejectReason.BAD_SIGNATURE] == 1
    assert core.rejected[RejectReason.UNKNOWN_QUORUM_SET] == 0


def test_state_request_is_answered_with_our_latest_statements() -> None:
    core = make_core()
    core.bump_state(1, b"x", 0)
    step = receive(core, StateRequest(1))
    answered = [o for o in step.outgoing if isinstance(o, Send)]
    assert [o.to for o in answered] == [PEER.node_id]
    assert isinstance(answered[0].message, Envelope)
    assert answered[0].message.statement.pledges == Prepare(
        core.local_qset_hash, Ballot(1, b"x"), None, None, 0, 0
    )
    assert receive(core, StateRequest(2)).outgoing == []


def test_a_fresh_start_asks_peers_for_their_state() -> None:
    core = make_core()
    assert core.handle(Started(), 0).outgoing == [Broadcast(StateRequest(1))]


def test_advance_to_moves_the_window_forward_only() -> None:
    core = make_core(retained_slots=2)
    core.bump_state(1, b"x", 0)
    core.advance_to(50, 0)
    assert core.next_slot_index == 50
    assert core.floor == 48
    assert 1 not in core.slots
    receive(core, envelope_from(PEER, 55, prepare(1)))
    assert core.rejected[RejectReason.FAR_FUTURE] == 0
    core.advance_to(10, 0)
    assert core.next_slot_index == 50
