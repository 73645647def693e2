"""Rules the simulator (`synod.sim.scenarios.scp`) found broken, one test per rule.

Each test rebuilds the situation a failing seed showed, in a small perfect world
(`scp_world`), and fails on the code as it was before the fix:

* Externalized events reach the application in slot order (the `Application`
  contract), also across a restart: a slot decided before an earlier one waits for it.
* A node that missed a slot while later ones were decided asks its peers for their
  state (stellar-core's GET_SCP_STATE), even once every peer has finished and fallen
  silent.
* A restarted node keeps asking for state until peers forming one of its slices have
  answered: its first request may be lost.
* An open slot that heard nothing since the last rebroadcast tick asks for state.

Nomination rounds last far longer than any wait here (`CATCH_UP_BUDGET_MS`), so a stuck
node is unblocked only by the rule under test, never by a new round.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from synod.core import Proposed
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet
from synod.scp import (
    Application,
    Externalized,
    ScpConfig,
    ScpCore,
    SlotProposal,
    SlotsUnavailable,
)
from synod.scp.nomination import round_leader
from synod.sim.scenarios.scp import externalized, scp_world
from synod.sim.world import World

KEYS = [KeyPair.from_seed(bytes([0x51, index + 1]) * 16) for index in range(4)]
QSET = QuorumSet(threshold=3, validators=tuple(key.node_id for key in KEYS))
SLOW_ROUNDS_MS = 600_000
REBROADCAST_INTERVAL_MS = 500
CATCH_UP_BUDGET_MS = 10_000
"""How long a cut-off node gets to catch up: many rebroadcast ticks, no new round."""


class SlowRounds(Application):
    """Nomination rounds far longer than any test runs: no node gets to lead a second
    round, so only the rule under test can unblock a stuck node."""

    def nomination_timeout_ms(self, round_number: int) -> int:
        return SLOW_ROUNDS_MS


def config(key: KeyPair) -> ScpConfig:
    return ScpConfig(
        keys=key,
        quorum_set=QSET,
        application=SlowRounds(),
        rebroadcast_interval_ms=REBROADCAST_INTERVAL_MS,
    )


def network(seed: int = 3) -> World:
    return scp_world([config(key) for key in KEYS], seed=seed)


def network_past_start_up() -> World:
    """A network that decided slot 1 with every node: each node has heard from one of
    its slices since it started, so none asks for state on that account any more."""
    world = network()
    propose(world, 1, KEYS)
    assert world.step_until(lambda: everyone_decided(world, 1))
    return world


def propose(world: World, slot_index: int, nodes: Sequence[KeyPair]) -> None:
    for key in nodes:
        value = b"slot %d from %s" % (slot_index, key.node_id.hex()[:6].encode())
        world.input(key.node_id, Proposed(SlotProposal(slot_index, value)))


def decided(world: World, node: NodeId, slot_index: int) -> bool:
    return slot_index in externalized(world, node)


def event_slots(world: World, node: NodeId) -> list[int]:
    return [event.slot_index for event in world.events_of(node, Externalized)]


def all_cores_decided(world: World, slot_index: int) -> bool:
    """Every core has decided the slot (whether or not it handed out the event yet)."""
    return all(
        world.core(key.node_id, ScpCore).externalized_value(slot_index) is not None
        for key in KEYS
    )


def everyone_decided(world: World, slot_index: int) -> bool:
    return all(decided(world, key.node_id, slot_index) for key in KEYS)


def catches_up(world: World, node: NodeId, slot_index: int) -> bool:
    """Whether `node` decides `slot_index` within the catch-up budget."""
    deadline_ms = world.now_ms + CATCH_UP_BUDGET_MS
    return world.step_until(partial(decided, world, node, slot_index), max_ms=deadline_ms)


def fall_silent(world: World, peers: Sequence[KeyPair]) -> None:
    """Run until the peers have re-sent their last statements once more and stopped:
    none of them has a timer left, so none sends anything unasked."""
    world.run_until(world.now_ms + 2 * REBROADCAST_INTERVAL_MS)
    assert all(not world.node(key.node_id).timers for key in peers)


def test_externalized_events_are_handed_out_in_slot_order() -> None:
    world = network()
    propose(world, 2, KEYS)
    # slot 2 completes first: every node decides it, but must not announce it yet
    assert world.step_until(lambda: all_cores_decided(world, 2))
    assert all(event_slots(world, key.node_id) == [] for key in KEYS)
    propose(world, 1, KEYS)
    assert world.step_until(lambda: everyone_decided(world, 1) and everyone_decided(world, 2))
    assert all(event_slots(world, key.node_id) == [1, 2] for key in KEYS)


def test_event_held_back_before_a_restart_is_delivered_after_it_once() -> None:
    world = network()
    late = KEYS[3].node_id
    propose(world, 2, KEYS)
    assert world.step_until(lambda: all_cores_decided(world, 2))
    world.crash(late)
    world.restart(late)
    propose(world, 1, KEYS)
    assert world.step_until(lambda: everyone_decided(world, 1) and everyone_decided(world, 2))
    assert event_slots(world, late) == [1, 2]


def test_node_that_missed_a_slot_asks_for_state_after_peers_fell_silent() -> None:
    world = network_past_start_up()
    late, peers = KEYS[3], KEYS[:3]
    world.silence(late.node_id)
    propose(world, 2, peers)
    assert world.step_until(lambda: all(decided(world, key.node_id, 2) for key in peers))
    fall_silent(world, peers)
    world.unsilence(late.node_id)
    propose(world, 3, KEYS)
    # the late node decides slot 3 with the others, then must fetch slot 2 by itself:
    # every peer has finished both slots and sends nothing unasked
    assert catches_up(world, late.node_id, 2)
    assert event_slots(world, late.node_id) == [1, 2, 3]
    assert externalized(world, late.node_id)[2] == externalized(world, KEYS[0].node_id)[2]


def test_restarted_node_asks_for_state_again_when_its_first_request_is_lost() -> None:
    world = network()
    late, peers = KEYS[3], KEYS[:3]
    world.silence(late.node_id)
    propose(world, 1, peers)
    assert world.step_until(lambda: all(decided(world, key.node_id, 1) for key in peers))
    fall_silent(world, peers)
    # restarted while still cut off: the state request of `Started` goes nowhere
    world.crash(late.node_id)
    world.restart(late.node_id)
    world.unsilence(late.node_id)
    assert catches_up(world, late.node_id, 1)


def test_open_slot_that_hears_nothing_asks_for_state() -> None:
    world = network_past_start_up()
    leader = round_leader(2, 1, KEYS[0].node_id, QSET)
    # a node that does not lead round 1 says nothing of its own in that round
    late = next(key for key in KEYS if key.node_id != leader and _leader_for(key) != key.node_id)
    peers = [key for key in KEYS if key is not late]
    world.silence(late.node_id)
    propose(world, 2, KEYS)
    assert world.step_until(lambda: all(decided(world, key.node_id, 2) for key in peers))
    assert not world.core(late.node_id, ScpCore).slots[2].own_statements()
    fall_silent(world, peers)
    world.unsilence(late.node_id)
    # the late node's rebroadcast ticks went on while it was cut off; the next one asks
    assert catches_up(world, late.node_id, 2)


def _leader_for(key: KeyPair) -> bytes:
    return round_leader(2, 1, key.node_id, QSET)


def retaining_network(retained_slots: int) -> World:
    configs = [ScpConfig(keys=key, quorum_set=QSET, retained_slots=retained_slots) for key in KEYS]
    return scp_world(configs, seed=4)


def test_a_slot_no_node_decided_is_never_skipped_silently() -> None:
    # slot 1 never gets a value; slots 2..5 are decided.  Deciding 5 moves the window
    # (2 slots retained: floor 4) past slot 1, which used to be skipped silently: 2..5
    # were handed out as if slot 1 did not exist.  Now 2..5 wait for slot 1, peers
    # say that they hold no decision for it, the application hears so explicitly
    # (`SlotsUnavailable`), installs its state by other means and moves on.
    world = retaining_network(retained_slots=2)
    for slot_index in range(2, 6):
        propose(world, slot_index, KEYS)
        assert world.step_until(partial(all_cores_decided, world, slot_index))
    for key in KEYS:
        assert event_slots(world, key.node_id) == []
    node = KEYS[0].node_id
    assert world.step_until(lambda: bool(world.events_of(node, SlotsUnavailable)), max_ms=60_000)
    assert world.events_of(node, SlotsUnavailable) == [SlotsUnavailable(1, 2)]
    world.apply(node, world.core(node, ScpCore).advance_to(2, world.now_ms))
    assert event_slots(world, node) == [2, 3, 4, 5]
    assert world.core(node, ScpCore).delivered_through == 5


def test_advance_to_skips_the_events_of_the_slots_the_application_already_has() -> None:
    world = network()
    propose(world, 3, KEYS)
    assert world.step_until(lambda: all_cores_decided(world, 3))
    node = KEYS[0].node_id
    assert event_slots(world, node) == []
    # the application learnt slots 1 and 2 elsewhere: slot 3 is next, and it is decided
    world.apply(node, world.core(node, ScpCore).advance_to(3, world.now_ms))
    assert event_slots(world, node) == [3]


def test_advance_to_far_ahead_hands_out_no_event_for_the_slots_it_passes() -> None:
    world = network()  # 4 slots retained: deciding slot 3 keeps slot 1 open
    for slot_index in (2, 3):  # decided, but held back behind the open slot 1
        propose(world, slot_index, KEYS)
        assert world.step_until(partial(all_cores_decided, world, slot_index))
    node = KEYS[0].node_id
    core = world.core(node, ScpCore)
    assert event_slots(world, node) == []
    # the application jumped to slot 10 by other means: slots 1..9 are its business,
    # so the held-back 2 and 3 are not handed out, not even as the window moves
    step = core.advance_to(10, world.now_ms)
    assert [event for event in step.events if isinstance(event, Externalized)] == []
    assert core.delivered_through == 9
    assert core.floor == 6
