"""Rules the simulator (`synod.sim.scenarios.scp`) found broken, one test per rule.

Each test rebuilds the situation a failing seed showed, in the small in-process
`LocalNetwork`, and fails on the code as it was before the fix:

* Externalized events reach the application in slot order (the `Application`
  contract), also across a restart: a slot decided before an earlier one waits for it.
* A node that missed a slot while later ones were decided asks its peers for their
  state (stellar-core's GET_SCP_STATE), even once every peer has finished and fallen
  silent.
* A restarted node keeps asking for state until peers forming one of its slices have
  answered: its first request may be lost.
* An open slot that heard nothing since the last rebroadcast tick asks for state.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from synod.core import Proposed, TimerFired
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet
from synod.scp import Application, Externalized, ScpConfig, ScpCore, SlotProposal
from synod.scp.core import REBROADCAST_TIMER
from synod.scp.local import LocalNetwork
from synod.scp.nomination import round_leader

KEYS = [KeyPair.from_seed(bytes([0x51, index + 1]) * 16) for index in range(4)]
QSET = QuorumSet(threshold=3, validators=tuple(key.node_id for key in KEYS))
SLOW_ROUNDS_MS = 600_000


class SlowRounds(Application):
    """Nomination rounds far longer than any test runs: no node gets to lead a second
    round, so only the rule under test can unblock a stuck node."""

    def nomination_timeout_ms(self, round_number: int) -> int:
        return SLOW_ROUNDS_MS


def config(key: KeyPair) -> ScpConfig:
    return ScpConfig(
        keys=key, quorum_set=QSET, application=SlowRounds(), rebroadcast_interval_ms=500
    )


def network(seed: int = 3) -> LocalNetwork:
    return LocalNetwork({key.node_id: ScpCore(config(key)) for key in KEYS}, seed=seed)


def rebuild(key: KeyPair) -> object:
    def build(storage: dict[bytes, bytes]) -> ScpCore:
        return ScpCore(config(key), storage)

    return build


def propose(net: LocalNetwork, slot_index: int, nodes: Sequence[KeyPair]) -> None:
    for key in nodes:
        value = b"slot %d from %s" % (slot_index, key.node_id.hex()[:6].encode())
        net.handle(key.node_id, Proposed(SlotProposal(slot_index, value)))


def decided(net: LocalNetwork, node: NodeId, slot_index: int) -> bool:
    return slot_index in net.externalized(node)


def event_slots(net: LocalNetwork, node: NodeId) -> list[int]:
    return [
        event.slot_index
        for source, event in net.events
        if source == node and isinstance(event, Externalized)
    ]


def all_cores_decided(net: LocalNetwork, slot_index: int) -> bool:
    """Every core has decided the slot (whether or not it handed out the event yet)."""
    return all(core.externalized_value(slot_index) is not None for core in net.cores.values())


def everyone_decided(net: LocalNetwork, slot_index: int) -> bool:
    return all(decided(net, key.node_id, slot_index) for key in KEYS)


def test_externalized_events_are_handed_out_in_slot_order() -> None:
    net = network()
    propose(net, 2, KEYS)
    # slot 2 completes first: every node decides it, but must not announce it yet
    assert net.run_until(lambda: all_cores_decided(net, 2))
    assert all(event_slots(net, key.node_id) == [] for key in KEYS)
    propose(net, 1, KEYS)
    assert net.run_until(lambda: everyone_decided(net, 1) and everyone_decided(net, 2))
    assert all(event_slots(net, key.node_id) == [1, 2] for key in KEYS)


def test_event_held_back_before_a_restart_is_delivered_after_it_once() -> None:
    net = network()
    late = KEYS[3]
    propose(net, 2, KEYS)
    assert net.run_until(lambda: all_cores_decided(net, 2))
    net.crash_and_restart(late.node_id, rebuild(late))  # type: ignore[arg-type]
    propose(net, 1, KEYS)
    assert net.run_until(lambda: everyone_decided(net, 1) and everyone_decided(net, 2))
    assert event_slots(net, late.node_id) == [1, 2]


def test_node_that_missed_a_slot_asks_for_state_after_peers_fell_silent() -> None:
    net = network()
    late = KEYS[3]
    net.silent.add(late.node_id)
    propose(net, 1, KEYS[:3])
    assert net.run_until(lambda: all(decided(net, key.node_id, 1) for key in KEYS[:3]))
    net.silent.clear()
    propose(net, 2, KEYS)
    # the late node decides slot 2 with the others, then must fetch slot 1 by itself:
    # every peer has finished both slots and sends nothing unasked
    assert net.run_until(lambda: decided(net, late.node_id, 1), max_actions=5_000)
    assert event_slots(net, late.node_id) == [1, 2]
    assert net.externalized(late.node_id)[1] == net.externalized(KEYS[0].node_id)[1]


def test_restarted_node_asks_for_state_again_when_its_first_request_is_lost() -> None:
    net = network()
    late = KEYS[3]
    net.silent.add(late.node_id)
    propose(net, 1, KEYS[:3])
    assert net.run_until(lambda: all(decided(net, key.node_id, 1) for key in KEYS[:3]))
    drain(net)  # the peers re-send their last statements once more, and fall silent
    # restarted while still cut off: the state request of `Started` goes nowhere
    net.crash_and_restart(late.node_id, rebuild(late))  # type: ignore[arg-type]
    net.silent.clear()
    assert net.run_until(lambda: decided(net, late.node_id, 1), max_actions=5_000)


def test_open_slot_that_hears_nothing_asks_for_state() -> None:
    net = network()
    leader = round_leader(1, 1, KEYS[0].node_id, QSET)
    # a node that does not lead round 1 says nothing of its own in that round
    late = next(key for key in KEYS if key.node_id != leader and _leader_for(key) != key.node_id)
    others = [key for key in KEYS if key is not late]
    net.silent.add(late.node_id)
    propose(net, 1, KEYS)
    assert net.run_until(lambda: all(decided(net, key.node_id, 1) for key in others))
    assert not net.cores[late.node_id].slots[1].own_statements()
    drain(net)  # the peers re-send their last statements once more, and fall silent
    net.silent.clear()
    # the cut-off node's timers fired unheard; its rebroadcast tick runs again
    net.handle(late.node_id, TimerFired(REBROADCAST_TIMER))
    assert net.run_until(lambda: decided(net, late.node_id, 1), max_actions=5_000)


def drain(net: LocalNetwork) -> None:
    """Run until no message or timer is left."""
    net.run_until(lambda: False)


def _leader_for(key: KeyPair) -> bytes:
    return round_leader(1, 1, key.node_id, QSET)


def retaining_network(retained_slots: int) -> LocalNetwork:
    cores = {
        key.node_id: ScpCore(ScpConfig(keys=key, quorum_set=QSET, retained_slots=retained_slots))
        for key in KEYS
    }
    return LocalNetwork(cores, seed=4)


def test_purging_an_open_slot_hands_out_the_decided_slots_after_it() -> None:
    # slot 1 never gets a value; slots 2..5 are decided.  Deciding 5 moves the window
    # (2 slots retained: floor 4), so slot 1 is given up and 2, 3 must be handed out
    # before they are forgotten, then 4 and 5 in order.
    net = retaining_network(retained_slots=2)
    for slot_index in range(2, 6):
        propose(net, slot_index, KEYS)
        assert net.run_until(partial(all_cores_decided, net, slot_index))
    for key in KEYS:
        assert event_slots(net, key.node_id) == [2, 3, 4, 5]
        assert net.cores[key.node_id].delivered_through == 5


def test_advance_to_skips_the_events_of_the_slots_the_application_already_has() -> None:
    net = network()
    propose(net, 3, KEYS)
    assert net.run_until(lambda: all_cores_decided(net, 3))
    node = KEYS[0].node_id
    assert event_slots(net, node) == []
    # the application learnt slots 1 and 2 elsewhere: slot 3 is next, and it is decided
    net.apply(node, net.cores[node].advance_to(3, net.now_ms))
    assert event_slots(net, node) == [3]


def test_advance_to_far_ahead_hands_out_no_event_for_the_slots_it_passes() -> None:
    net = network()  # 4 slots retained: deciding slot 3 keeps slot 1 open
    for slot_index in (2, 3):  # decided, but held back behind the open slot 1
        propose(net, slot_index, KEYS)
        assert net.run_until(partial(all_cores_decided, net, slot_index))
    node = KEYS[0].node_id
    core = net.cores[node]
    assert event_slots(net, node) == []
    # the application jumped to slot 10 by other means: slots 1..9 are its business,
    # so the held-back 2 and 3 are not handed out, not even as the window moves
    step = core.advance_to(10, net.now_ms)
    assert [event for event in step.events if isinstance(event, Externalized)] == []
    assert core.delivered_through == 9
    assert core.floor == 6
