"""Checkpoints: a node away for longer than peers keep decisions rejoins from a state
that nodes forming one of its own slices attested, then catches up by decisions.

Log nodes (`synod.scp.log`) on a perfect simulated network, four nodes, 3 of 4: peers
keep 8 decisions and attest their log's chain head every 4 slots; one node is down for
60 slots, far beyond what peers can serve as decisions.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from synod.core import Received, RequestReceived
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet
from synod.scp import RejectReason, ScpConfig
from synod.scp.application import CheckpointVerified
from synod.scp.log import (
    LOG_CODEC,
    SEGMENT_CODEC,
    LogCore,
    LogRules,
    LogSegment,
    SubmitRequest,
)
from synod.scp.messages import (
    Attestation,
    Checkpoint,
    CheckpointRequest,
    DecisionsUnavailable,
    sign_attestation,
)
from synod.sim.world import NodeFactory, World

KEYS = [KeyPair.from_seed(bytes([index + 21]) * 32) for index in range(4)]
IDS = [key.node_id for key in KEYS]
THREE_OF_FOUR = QuorumSet(threshold=3, validators=tuple(IDS))
ABSENT = IDS[3]


def log_factory(keys: KeyPair, **overrides: Any) -> NodeFactory:
    settings: dict[str, Any] = {
        "application": LogRules(),
        "retained_slots": 4,
        "max_slots_ahead": 4,
        "retained_decisions": 8,
        "checkpoint_interval": 4,
        "rebroadcast_interval_ms": 100,
        **overrides,
    }
    config = partial(ScpConfig, keys=keys, quorum_set=THREE_OF_FOUR, **settings)
    return lambda storage, rng: LogCore(config(), storage)


def build_network(**overrides: Any) -> World:
    world = World.perfect()
    world.add_nodes({key.node_id: log_factory(key, **overrides) for key in KEYS}, LOG_CODEC)
    return world


def core(world: World, node: NodeId) -> LogCore:
    return world.core(node, LogCore)


def submit(world: World, node: NodeId, entry: str) -> None:
    world.input(node, RequestReceived("client", len(world.replies) + 1, SubmitRequest((entry,))))


def decide_while_away(world: World, slots: int) -> None:
    world.crash(ABSENT)
    for number in range(slots):
        entry = f"while away {number:03d}"
        submit(world, IDS[0], entry)
        assert world.step_until(
            lambda entry=entry: entry in core(world, IDS[0]).logged,  # type: ignore[misc]
            max_ms=world.now_ms + 10_000,
        )


def test_a_node_away_beyond_retained_decisions_rejoins_with_every_slot_equal() -> None:
    """Before checkpoints the returning node got `SlotsUnavailable` and stayed behind
    for good: no peer held slot 1 any more."""
    world = build_network()
    decide_while_away(world, 60)
    decided = core(world, IDS[0]).log
    assert min(core(world, IDS[0]).scp.decisions._decisions) > 1  # slot 1 is gone
    world.restart(ABSENT)
    assert world.step_until(
        lambda: core(world, ABSENT).complete_through >= max(decided),
        max_ms=world.now_ms + 30_000,
    )
    assert core(world, ABSENT).log == core(world, IDS[0]).log
    assert core(world, ABSENT).head == core(world, IDS[0]).head
    # it came back through checkpoints, and now attests as the others do; peers send
    # back their attestations of the slots it attested late, so it can serve them too
    assert world.events_of(ABSENT, CheckpointVerified)
    store = core(world, ABSENT).scp.attestations
    assert store.own
    assert world.step_until(
        lambda: all(len(list(store.agreeing(slot))) == 4 for slot in sorted(store.own)[:-1]),
        max_ms=world.now_ms + 5_000,
    )


def test_without_checkpoints_the_same_node_is_told_and_stays_behind() -> None:
    """The code as it was: no attestations, so the node gets `SlotsUnavailable` (never
    a silent gap) and no slot."""
    from synod.scp import SlotsUnavailable

    world = build_network(checkpoint_interval=0)
    decide_while_away(world, 60)
    world.restart(ABSENT)
    world.step_until(lambda: False, max_ms=world.now_ms + 5_000)
    assert core(world, ABSENT).complete_through == 0
    assert world.events_of(ABSENT, SlotsUnavailable)


def test_a_restarted_node_keeps_serving_the_checkpoints_it_attested() -> None:
    world = build_network()
    decide_while_away(world, 20)
    world.crash(IDS[1])
    world.restart(IDS[1])
    restarted = core(world, IDS[1])
    # restored from its records, not made again (a node ends with slot 19 or 20)
    assert {4, 8, 12, 16} <= set(restarted.scp.attestations.own)
    step = restarted.handle(Received(ABSENT, CheckpointRequest(1)), world.now_ms)
    (answer,) = [send.message for send in step.outgoing]  # type: ignore[union-attr]
    assert isinstance(answer, Checkpoint) and answer.slot_index == 4
    assert len(answer.attestations) >= 3


# ---------------------------------------------------------------- forged checkpoints


def asking_core(network: bytes = b"", **overrides: Any) -> LogCore:
    """A fresh log node (nothing delivered) that has been told slot 1 is gone."""
    config = ScpConfig(
        keys=KEYS[3],
        quorum_set=THREE_OF_FOUR,
        application=LogRules(),
        checkpoint_interval=4,
        network=network,
        **overrides,
    )
    node = LogCore(config, {})
    node.handle(Received(IDS[0], DecisionsUnavailable(1, 50)), 0)
    return node


SEGMENT = tuple(b'["slot %d"]' % index for index in range(1, 5))


def head_of(values: tuple[bytes, ...]) -> bytes:
    from synod.scp.log import GENESIS_HEAD, chain_head

    head = GENESIS_HEAD
    for offset, value in enumerate(values):
        head = chain_head(head, 1 + offset, value)
    return head


def attested(
    digest: bytes, signers: list[KeyPair], network: bytes = b""
) -> tuple[Attestation, ...]:
    return tuple(sign_attestation(key, 4, digest, network) for key in signers)


def offer(node: LogCore, checkpoint: Checkpoint, now_ms: int = 0) -> list[object]:
    return node.handle(Received(IDS[0], checkpoint), now_ms).events


def state(values: tuple[bytes, ...], first: int = 1) -> bytes:
    return SEGMENT_CODEC.encode(LogSegment(first, values))


def test_a_checkpoint_attested_by_a_slice_is_installed_slot_by_slot() -> None:
    node = asking_core()
    digest = head_of(SEGMENT)
    events = offer(node, Checkpoint(4, digest, attested(digest, KEYS[:3]), state(SEGMENT)))
    assert [type(event).__name__ for event in events][:1] == ["CheckpointVerified"]
    assert node.log == dict(enumerate(SEGMENT, start=1))
    assert node.scp.delivered_through == 4 and node.head == digest


def test_forged_partial_and_other_network_checkpoints_are_refused() -> None:
    digest = head_of(SEGMENT)
    forged_state = (b'["slot 1"]', b'["slot 2"]', b'["forged"]', b'["slot 4"]')
    cases = {
        # honest attestations (they are public) with a state that is not theirs
        "forged state": Checkpoint(4, digest, attested(digest, KEYS[:3]), state(forged_state)),
        # a Byzantine member attests the forged state alone: 2 of 4 is no slice of 3 of 4
        "too few": Checkpoint(4, digest, attested(digest, KEYS[:2]), state(SEGMENT)),
        "partial state": Checkpoint(4, digest, attested(digest, KEYS[:3]), state(SEGMENT[:3])),
        "wrong first slot": Checkpoint(
            4, digest, attested(digest, KEYS[:3]), state(SEGMENT[1:], first=2)
        ),
        "forged signature": Checkpoint(
            4,
            digest,
            (*attested(digest, KEYS[:2]), Attestation(IDS[2], 4, digest, bytes(64))),
            state(SEGMENT),
        ),
        "other network": Checkpoint(
            4, digest, attested(digest, KEYS[:3], b"beta"), state(SEGMENT)
        ),
        "not a segment": Checkpoint(4, digest, attested(digest, KEYS[:3]), b"\x00junk"),
    }
    for name, checkpoint in cases.items():
        node = asking_core()
        assert offer(node, checkpoint) == [], name
        assert node.log == {} and node.scp.rejected[RejectReason.BAD_CHECKPOINT] == 1, name
    # the same checkpoint signed for the node's own network is accepted
    node = asking_core(b"beta")
    good = Checkpoint(4, digest, attested(digest, KEYS[:3], b"beta"), state(SEGMENT))
    assert offer(node, good) and node.log == dict(enumerate(SEGMENT, start=1))


def test_a_checkpoint_nobody_asked_for_is_refused_before_any_signature() -> None:
    config = ScpConfig(keys=KEYS[3], quorum_set=THREE_OF_FOUR, application=LogRules())
    node = LogCore(config, {})
    digest = head_of(SEGMENT)
    assert offer(node, Checkpoint(4, digest, attested(digest, KEYS[:3]), state(SEGMENT))) == []
    assert node.scp.rejected[RejectReason.UNNEEDED_CHECKPOINT] == 1
    assert node.log == {}


def test_checkpoint_checks_per_sender_are_budgeted() -> None:
    node = asking_core(checkpoint_check_burst=2, checkpoint_check_refill_ms=1_000)
    digest = head_of(SEGMENT)
    bad = Checkpoint(4, digest, attested(digest, KEYS[:2]), state(SEGMENT))
    for _ in range(6):
        offer(node, bad)
    assert node.scp.rejected[RejectReason.BAD_CHECKPOINT] == 2
    assert node.scp.rejected[RejectReason.CHECKPOINT_LIMITED] == 4


def test_attestations_of_several_answers_add_up() -> None:
    """A peer that missed an attestation (a lost message) sends fewer than a slice;
    two such answers for the same slot and digest together hold one.  Before, each
    answer was judged alone and both were refused."""
    node = asking_core()
    digest = head_of(SEGMENT)
    first = Checkpoint(4, digest, attested(digest, KEYS[:2]), state(SEGMENT))
    assert offer(node, first) == [] and node.log == {}
    second = Checkpoint(4, digest, attested(digest, KEYS[1:3]), state(SEGMENT))
    assert offer(node, second) and node.log == dict(enumerate(SEGMENT, start=1))


def test_gathered_attestations_never_vouch_for_another_digest() -> None:
    node = asking_core()
    digest = head_of(SEGMENT)
    offer(node, Checkpoint(4, digest, attested(digest, KEYS[:2]), state(SEGMENT)))
    forged_values = (*SEGMENT[:3], b'["forged"]')
    forged_digest = head_of(forged_values)
    # the forger's own attestation of its digest plus what was gathered for the true one
    forged = Checkpoint(
        4, forged_digest, attested(forged_digest, [KEYS[2]]), state(forged_values)
    )
    assert offer(node, forged) == [] and node.log == {}


# ---------------------------------------------------------------- attestations


def test_attestations_are_kept_when_they_agree_and_refused_cheaply_when_not() -> None:
    from synod.scp import ScpCore

    core = ScpCore(ScpConfig(keys=KEYS[3], quorum_set=THREE_OF_FOUR, checkpoint_interval=4))
    digest = head_of(SEGMENT)
    early = sign_attestation(KEYS[0], 4, digest)
    wrong_early = sign_attestation(KEYS[1], 4, bytes(32))
    for attestation in (early, wrong_early):
        core.handle(Received(IDS[0], attestation), 0)  # slot 4 is within the window
    core.handle(Received(IDS[0], early), 0)
    assert core.rejected[RejectReason.UNNEEDED_ATTESTATION] == 1  # the duplicate
    core.delivered_through = 4  # as if slots 1-4 were delivered
    step = core.attest(4, digest, 0)
    kept = {record.key[-32:] for record in step.persist if record.value}
    assert kept == {IDS[3], IDS[0]}  # its own and the early one that agrees
    assert [type(item.message).__name__ for item in step.outgoing] == ["Attestation"]
    # after attesting, another digest is refused before its signature is checked
    forged = Attestation(IDS[2], 4, bytes(32), bytes(64))
    core.handle(Received(IDS[2], forged), 0)
    assert core.rejected[RejectReason.BAD_ATTESTATION] == 1
    other_network = sign_attestation(KEYS[2], 4, digest, b"beta")
    core.handle(Received(IDS[2], other_network), 0)
    assert core.rejected[RejectReason.BAD_ATTESTATION] == 2
    for refused in (sign_attestation(KEYS[2], 5, digest), sign_attestation(KEYS[2], 400, digest)):
        core.handle(Received(IDS[2], refused), 0)  # no checkpoint slot; beyond the window
    assert core.rejected[RejectReason.UNNEEDED_ATTESTATION] == 3


def test_attestations_of_a_slot_the_node_delivered_but_never_attested_cost_no_signature() -> None:
    """An application that does not attest (checkpoints are on by default) would check
    the signature of every attestation of every delivered checkpoint slot a member
    sent, again after each prune; they can never agree with anything, so they are
    refused before the signature."""
    from synod.scp import ScpCore

    core = ScpCore(ScpConfig(keys=KEYS[3], quorum_set=THREE_OF_FOUR, checkpoint_interval=4))
    core.delivered_through = 8  # delivered slots 1-8, attested none
    forged = Attestation(IDS[0], 4, bytes(32), bytes(64))
    core.handle(Received(IDS[0], forged), 0)
    assert core.rejected == {RejectReason.UNNEEDED_ATTESTATION: 1}


def test_a_checkpoint_whose_attestations_were_lost_is_passed_over_for_a_provable_one() -> None:
    """If every peer lost the same attestation of a checkpoint slot, answering with
    that slot forever would leave the asker stuck; a later slot holding a slice is
    offered instead (its segment reaches further back)."""
    world = build_network()
    decide_while_away(world, 12)
    serving = core(world, IDS[0]).scp
    own = [found for found in serving.attestations.agreeing(4) if found.node_id == IDS[0]]
    serving.attestations._agreeing[4] = {IDS[0]: own[0]}  # the others' were lost
    step = serving.handle(Received(ABSENT, CheckpointRequest(1)), world.now_ms)
    (answer,) = [send.message for send in step.outgoing]  # type: ignore[union-attr]
    assert isinstance(answer, Checkpoint) and answer.slot_index == 8
    assert len(answer.attestations) >= 3
    assert SEGMENT_CODEC.decode(answer.state).first_slot_index == 1
