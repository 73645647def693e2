"""One Byzantine member within the bound, sending well-formed, correctly signed
statements chosen to cost the most: values the application cannot judge yet, values
that become valid later, partly invalid nominations, counters run ahead, made-up node
ids.  None of it may mute or stall a slot, nor grow a node's memory past its bounds.

Four nodes, each with the quorum set 3 of 4 (`scp_fixtures`); KEYS[3] plays the
Byzantine member where a network is simulated.
"""

from __future__ import annotations

from scp_fixtures import KEYS, PEER, QSET, V0, envelope_from, make_core

from synod.core import Broadcast, Proposed, Received, Step
from synod.crypto import KeyPair
from synod.quorum.qset import QuorumSet, qset_hash
from synod.scp import (
    Application,
    Ballot,
    Envelope,
    Nomination,
    Prepare,
    RejectReason,
    ScpConfig,
    ScpCore,
    Validity,
)
from synod.scp.core import statement_size
from synod.sim.scenarios.scp import externalized, scp_world

QSET_HASH = qset_hash(QSET)
BYZANTINE = KEYS[3]
HONEST = KEYS[:3]


class MaybeLater(Application):
    """Values starting with b"maybe" cannot be judged (the previous slot is unknown,
    say); values in `later` are invalid until they are removed from it (a timestamp
    in the future); everything else is valid."""

    def __init__(self, later: set[bytes] | None = None) -> None:
        self.later = later if later is not None else set()

    def validate_value(self, slot_index: int, value: bytes, nomination: bool) -> Validity:
        if value.startswith(b"maybe"):
            return Validity.MAYBE_VALID
        if value in self.later:
            return Validity.INVALID
        return Validity.FULLY_VALID


def nomination(votes: tuple[bytes, ...], accepted: tuple[bytes, ...] = ()) -> Nomination:
    return Nomination(QSET_HASH, tuple(sorted(votes)), tuple(sorted(accepted)))


def ballot_counters(step: Step) -> list[int]:
    return [
        outgoing.message.statement.pledges.ballot.counter
        for outgoing in step.outgoing
        if isinstance(outgoing, Broadcast)
        and isinstance(outgoing.message, Envelope)
        and isinstance(outgoing.message.statement.pledges, Prepare)
    ]


def test_one_maybe_valid_nomination_from_a_member_does_not_mute_the_slot() -> None:
    """Finding 1: one NOMINATE carrying a MAYBE_VALID value, from one member, muted
    every honest node for the rest of the slot, which then never externalized."""
    configs = [ScpConfig(keys=keys, quorum_set=QSET, application=MaybeLater()) for keys in KEYS]
    world = scp_world(configs, seed=3)
    world.silence(BYZANTINE.node_id)
    lure = envelope_from(BYZANTINE, 1, nomination((b"maybe-1",), (b"maybe-1",)))
    for keys in HONEST:
        world.input(keys.node_id, Received(BYZANTINE.node_id, lure))
    for index, keys in enumerate(HONEST):
        world.input(keys.node_id, Proposed(b"value-%d" % index))
    assert world.step_until(
        lambda: all(1 in externalized(world, keys.node_id) for keys in HONEST), max_ms=60_000
    )
    values = {externalized(world, keys.node_id)[1] for keys in HONEST}
    assert len(values) == 1 and not values.pop().startswith(b"maybe")


def test_a_partly_invalid_nomination_is_recorded_and_only_its_invalid_values_ignored() -> None:
    """Finding 4: a NOMINATE with one invalid value was dropped whole."""
    core = make_core(application=MaybeLater(later={b"bad"}))
    envelope = envelope_from(PEER, 1, nomination((b"bad", b"ok")))
    core.handle(Received(PEER.node_id, envelope), 0)
    assert core.rejected[RejectReason.INVALID_VALUE] == 0
    slot = core.slots[1]
    assert slot.nomination.latest[PEER.node_id].pledges == nomination((b"bad", b"ok"))
    assert b"bad" not in slot.nomination.votes


def test_a_value_that_becomes_valid_later_is_accepted_from_the_same_peers() -> None:
    """Finding 4: an INVALID verdict was cached for the slot, so a value that becomes
    valid later (a timestamp in the future) was never accepted from the peers that
    had named it, and their later statements were dropped too."""
    later = {b"future"}
    core = make_core(application=MaybeLater(later=later))
    accepting = nomination((b"future",), (b"future",))
    for keys in (PEER, KEYS[2]):
        core.handle(Received(keys.node_id, envelope_from(keys, 1, accepting)), 0)
    assert b"future" not in core.slots[1].nomination.accepted
    later.clear()  # the clock reached the value's timestamp
    # a third peer now accepts it too: {PEER, KEYS[2], KEYS[3]} accepting is v-blocking
    core.handle(Received(KEYS[3].node_id, envelope_from(KEYS[3], 1, accepting)), 1_000)
    assert b"future" in core.slots[1].nomination.accepted
    assert core.rejected[RejectReason.INVALID_VALUE] == 0


def test_own_bump_jumps_to_the_counter_a_blocking_set_has_reached() -> None:
    """Finding 5: when a blocking set was already at a higher counter, the node's own
    bump stayed at counter 1 until a peer ahead sent something new."""
    core = make_core()
    for keys in (PEER, KEYS[2]):  # two of four: v-blocking for 3 of 4
        pledges = Prepare(QSET_HASH, Ballot(5, b"v"), None, None, 0, 0)
        core.handle(Received(keys.node_id, envelope_from(keys, 1, pledges)), 0)
    step = core.bump_state(1, b"w", 0)
    assert core.slots[1].ballot.current == Ballot(5, b"w")
    assert ballot_counters(step) == [5]
    assert V0.node_id == core.node_id


def made_up_keys(count: int) -> list[KeyPair]:
    return [KeyPair.from_seed(b"made-up/" + index.to_bytes(24, "big")) for index in range(count)]


def test_made_up_node_ids_cannot_fill_the_slot_before_it_starts() -> None:
    """Finding 2: statements were admitted from any node id, first come, until the
    per-slot node table was full; fresh keys nominating before the slot started left
    it undecided (`slot_full` for every honest statement)."""
    configs = [
        ScpConfig(keys=keys, quorum_set=QSET, application=MaybeLater(), max_nodes_per_slot=32)
        for keys in KEYS
    ]
    world = scp_world(configs, seed=5)
    world.silence(BYZANTINE.node_id)
    for fresh in made_up_keys(40):
        flood = envelope_from(fresh, 1, nomination((b"flood",)))
        for keys in HONEST:
            world.input(keys.node_id, Received(BYZANTINE.node_id, flood))
    for index, keys in enumerate(HONEST):
        world.input(keys.node_id, Proposed(b"value-%d" % index))
    assert world.step_until(
        lambda: all(1 in externalized(world, keys.node_id) for keys in HONEST), max_ms=60_000
    )
    for keys in HONEST:
        core = world.core(keys.node_id, ScpCore)
        assert core.rejected[RejectReason.NOT_IN_QUORUM] == 40
        assert core.rejected[RejectReason.SLOT_FULL] == 0


def test_a_member_naming_made_up_ids_in_its_quorum_set_adds_at_most_the_cap() -> None:
    """A member may name made-up ids in the quorum set it declares: they join the
    transitive quorum only up to `max_transitive_nodes`, the local set's first."""
    fresh = made_up_keys(300)
    wide = QuorumSet(threshold=1, validators=tuple(key.node_id for key in fresh))
    core = make_core(max_transitive_nodes=64, known_quorum_sets=[wide])
    pledges = Prepare(qset_hash(wide), Ballot(1, b"v"), None, None, 0, 0)
    core.handle(Received(PEER.node_id, envelope_from(PEER, 1, pledges)), 0)
    assert len(core.transitive_quorum) == 64
    assert all(keys.node_id in core.transitive_quorum for keys in KEYS)
    for keys in fresh[60:80]:
        core.handle(Received(keys.node_id, envelope_from(keys, 1, nomination((b"v",)))), 0)
    assert core.rejected[RejectReason.NOT_IN_QUORUM] == 20
    assert len(core.slots[1].nomination.latest) <= 64


def test_one_member_introduces_at_most_its_share_of_the_transitive_quorum() -> None:
    fresh = made_up_keys(300)
    crowd = QuorumSet(threshold=1, validators=tuple(key.node_id for key in fresh[:200]))
    honest = QuorumSet(threshold=1, validators=tuple(key.node_id for key in fresh[200:210]))
    core = make_core(max_introduced_per_member=32, known_quorum_sets=[crowd, honest])
    for keys, qset in ((PEER, crowd), (KEYS[2], honest)):
        pledges = Prepare(qset_hash(qset), Ballot(1, b"v"), None, None, 0, 0)
        core.handle(Received(keys.node_id, envelope_from(keys, 1, pledges)), 0)
    assert sum(key.node_id in core.transitive_quorum for key in fresh[:200]) == 32
    # another member's nodes still find room
    assert all(key.node_id in core.transitive_quorum for key in fresh[200:210])


def maximal_nomination(index: int) -> Nomination:
    """64 + 64 values of 16 KiB: the largest NOMINATE the wire admits (2 MiB)."""
    values = tuple(
        sorted(index.to_bytes(4, "big") + bytes([byte]) * (16 * 1024 - 4) for byte in range(64))
    )
    return Nomination(QSET_HASH, values, values)


def test_the_ids_one_member_introduces_share_one_budget_per_slot() -> None:
    """Finding 2, what was left: each id a member's quorum set introduced could hold a
    maximal NOMINATE per slot, 2 MiB each, so 64 made-up ids cost 128 MiB a slot and
    about 1.7 GiB over the window; now they share one member's budget per slot."""
    fresh = made_up_keys(64)
    crowd = QuorumSet(threshold=1, validators=tuple(key.node_id for key in fresh))
    core = make_core(known_quorum_sets=[crowd])
    declaring = Prepare(qset_hash(crowd), Ballot(1, b"v"), None, None, 0, 0)
    core.handle(Received(PEER.node_id, envelope_from(PEER, 1, declaring)), 0)
    assert all(key.node_id in core.transitive_quorum for key in fresh)
    for index, keys in enumerate(fresh):
        core.handle(Received(PEER.node_id, envelope_from(keys, 1, maximal_nomination(index))), 0)
    latest = core.slots[1].nomination.latest
    held = [statement_size(latest[key.node_id]) for key in fresh if key.node_id in latest]
    assert len(held) == 1 and sum(held) <= core.config.max_introduced_bytes_per_slot
    assert core.rejected[RejectReason.INTRODUCED_OVER_BUDGET] == 63
    # the budget is the member's, per slot: small statements of its ids still fit, and
    # the local quorum set's own members are never charged
    for keys in fresh[1:]:
        core.handle(Received(PEER.node_id, envelope_from(keys, 2, nomination((b"v",)))), 0)
    assert all(key.node_id in core.slots[2].nomination.latest for key in fresh[1:])
    core.handle(Received(PEER.node_id, envelope_from(KEYS[2], 1, maximal_nomination(99))), 0)
    assert KEYS[2].node_id in latest
