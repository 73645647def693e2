"""Nomination (draft section 3.4): leaders, echoing, accept/confirm, rounds, validity.

Five nodes, quorum set 4 of {v0..v4} as seen by v0.  Round leaders are recomputed here
straight from the draft's formulas with hashlib, independently of the library.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from fractions import Fraction

from synod.core import Broadcast, Received, SetTimer, Step, TimerFired
from synod.crypto import KeyPair
from synod.quorum.qset import QuorumSet
from synod.scp import (
    Application,
    Ballot,
    Envelope,
    Nomination,
    Prepare,
    RejectReason,
    ScpConfig,
    ScpCore,
    Statement,
    Validity,
    sign_statement,
)
from synod.scp.messages import Pledges
from synod.scp.nomination import node_weight, round_leader

KEYS = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(5)]
V0, PEERS = KEYS[0], KEYS[1:]
QSET = QuorumSet(threshold=4, validators=tuple(key.node_id for key in KEYS))


def draft_g(slot_index: int, message: bytes) -> int:
    return int.from_bytes(hashlib.sha256(struct.pack(">Q", slot_index) + message).digest(), "big")


def draft_leader(slot_index: int, round_number: int, local: bytes) -> bytes:
    """The draft's round leader for `local` under QSET, computed from scratch."""
    best, best_priority = local, -1
    for key in KEYS:
        node = key.node_id
        xdr_node = b"\x00\x00\x00\x00" + node
        if node != local:
            weight_numerator, weight_denominator = 4, 5  # 4 of the 5 slices contain it
            neighbour_hash = draft_g(slot_index, struct.pack(">iI", 1, round_number) + xdr_node)
            if neighbour_hash * weight_denominator >= 2**256 * weight_numerator:
                continue
        priority = draft_g(slot_index, struct.pack(">iI", 2, round_number) + xdr_node)
        if priority > best_priority:
            best, best_priority = node, priority
    return best


def slot_led_by(leader: bytes, local: bytes = V0.node_id) -> int:
    """A slot index whose round-1 leader (seen from `local`) is `leader`."""
    for slot_index in range(1, 500):
        if draft_leader(slot_index, 1, local) == leader:
            return slot_index
    raise AssertionError("no such slot in range")


class RejectingApplication(Application):
    """Values starting with b'bad' are invalid; b'maybe' ones cannot be judged yet."""

    def validate_value(self, slot_index: int, value: bytes, nomination: bool) -> Validity:
        if value.startswith(b"bad"):
            return Validity.INVALID
        if value.startswith(b"maybe"):
            return Validity.MAYBE_VALID
        return Validity.FULLY_VALID

    def combine_candidates(self, slot_index: int, candidates: Sequence[bytes]) -> bytes:
        return b"+".join(candidates)


class Node:
    def __init__(self, slot_index: int, application: Application | None = None) -> None:
        self.slot_index = slot_index
        self.core = ScpCore(
            ScpConfig(
                keys=V0,
                quorum_set=QSET,
                application=application or RejectingApplication(),
                first_slot_index=1,
                max_slots_ahead=1000,
            )
        )
        self.qset_hash = self.core.local_qset_hash
        self.sent: list[Pledges] = []
        self.timers: list[SetTimer] = []

    def apply(self, step: Step) -> None:
        for outgoing in step.outgoing:
            if isinstance(outgoing, Broadcast) and isinstance(outgoing.message, Envelope):
                self.sent.append(outgoing.message.statement.pledges)
        self.timers.extend(
            t for t in step.timers if isinstance(t, SetTimer) and t.name.startswith("scp/nominate/")
        )

    def nominate(self, value: bytes) -> None:
        self.apply(self.core.nominate(self.slot_index, value, 0))

    def nomination(self, votes: Sequence[bytes], accepted: Sequence[bytes] = ()) -> Nomination:
        return Nomination(self.qset_hash, tuple(sorted(votes)), tuple(sorted(accepted)))

    def receive(self, key: KeyPair, pledges: Pledges) -> None:
        envelope = sign_statement(key, Statement(key.node_id, self.slot_index, pledges))
        self.apply(self.core.handle(Received(key.node_id, envelope), 0))

    def nominations(self) -> list[Nomination]:
        return [pledges for pledges in self.sent if isinstance(pledges, Nomination)]

    def ballots(self) -> list[Pledges]:
        return [pledges for pledges in self.sent if not isinstance(pledges, Nomination)]


def test_library_leader_matches_the_drafts_formula() -> None:
    for slot_index in range(1, 40):
        for round_number in (1, 2, 3):
            assert round_leader(slot_index, round_number, V0.node_id, QSET) == draft_leader(
                slot_index, round_number, V0.node_id
            )


def test_weight_is_the_fraction_of_slices_containing_the_node() -> None:
    # 2 of {a, (1 of {b, c})}: slices {a,b}, {a,c} (and the set itself); for a flat
    # k-of-n level the fraction is k/n; nested: (2/2) * (1/2) for b
    inner = QuorumSet(threshold=1, validators=(KEYS[1].node_id, KEYS[2].node_id))
    nested = QuorumSet(threshold=2, validators=(KEYS[0].node_id,), inner_sets=(inner,))
    assert node_weight(KEYS[0].node_id, nested) == 1
    assert node_weight(KEYS[1].node_id, nested) == Fraction(1, 2)
    assert node_weight(KEYS[3].node_id, nested) == 0
    assert node_weight(KEYS[1].node_id, QSET) == Fraction(4, 5)


def test_leader_nominates_its_own_value() -> None:
    node = Node(slot_led_by(V0.node_id))
    node.nominate(b"x")
    assert node.nominations() == [node.nomination([b"x"])]


def test_non_leader_waits_and_then_echoes_its_leader() -> None:
    leader = PEERS[0]
    node = Node(slot_led_by(leader.node_id))
    node.nominate(b"x")
    assert node.sent == []  # draft: nodes without top priority wait for the leader
    other = next(key for key in PEERS if key != leader)
    node.receive(other, node.nomination([b"z"]))
    assert node.sent == []  # not a leader: not echoed
    node.receive(leader, node.nomination([b"y"]))
    assert node.nominations() == [node.nomination([b"y"])]


def test_leader_values_that_are_invalid_are_never_echoed() -> None:
    leader = PEERS[0]
    node = Node(slot_led_by(leader.node_id))
    node.nominate(b"x")
    node.receive(leader, node.nomination([b"bad-value"]))
    assert node.sent == []
    # stellar-core records the statement and ignores only the value it cannot vote for
    assert node.core.rejected[RejectReason.INVALID_VALUE] == 0
    assert leader.node_id in node.core.slots[node.slot_index].nomination.latest


def test_quorum_voting_accepts_then_quorum_accepting_confirms_and_starts_ballot() -> None:
    node = Node(slot_led_by(V0.node_id))
    node.nominate(b"x")
    for peer in PEERS[:2]:
        node.receive(peer, node.nomination([b"x"]))
    assert node.nominations()[-1] == node.nomination([b"x"])
    node.receive(PEERS[2], node.nomination([b"x"]))
    # v0 + 3 peers vote x: quorum threshold -> accept x
    assert node.nominations()[-1] == node.nomination([b"x"], [b"x"])
    assert node.ballots() == []
    for peer in PEERS[:2]:
        node.receive(peer, node.nomination([b"x"], [b"x"]))
    assert node.ballots() == []
    node.receive(PEERS[2], node.nomination([b"x"], [b"x"]))
    # quorum accepts x: x is a candidate; the composite starts the ballot <1, x>
    assert node.ballots() == [Prepare(node.qset_hash, Ballot(1, b"x"), None, None, 0, 0)]


def test_blocking_set_accepting_a_value_makes_us_accept_it() -> None:
    node = Node(slot_led_by(V0.node_id))
    node.nominate(b"x")
    node.receive(PEERS[0], node.nomination([b"y"], [b"y"]))
    assert node.nominations()[-1] == node.nomination([b"x"])
    node.receive(PEERS[1], node.nomination([b"y"], [b"y"]))
    # {v1, v2} is v-blocking for 4-of-5 and both accept y
    assert node.nominations()[-1] == node.nomination([b"x", b"y"], [b"y"])


def test_candidates_are_combined_by_the_application() -> None:
    node = Node(slot_led_by(V0.node_id))
    node.nominate(b"x")
    both = node.nomination([b"x", b"y"], [b"x", b"y"])
    for peer in PEERS:
        node.receive(peer, both)
    prepares = [pledges for pledges in node.ballots() if isinstance(pledges, Prepare)]
    assert prepares[0].ballot == Ballot(1, b"x+y")


def test_no_new_votes_once_a_candidate_exists() -> None:
    leader = PEERS[0]
    node = Node(slot_led_by(leader.node_id))
    node.nominate(b"x")
    node.receive(leader, node.nomination([b"y"]))
    for peer in PEERS:
        node.receive(peer, node.nomination([b"y"], [b"y"]))
    assert node.ballots()  # y confirmed nominated
    count = len(node.nominations())
    node.receive(leader, node.nomination([b"w", b"y"], [b"y"]))
    # draft: stop adding new values to voted once a value is confirmed nominated
    assert all(b"w" not in nomination.votes for nomination in node.nominations()[count:])


def test_rounds_time_out_with_growing_timeouts_and_add_leaders() -> None:
    node = Node(slot_led_by(PEERS[0].node_id))
    node.nominate(b"x")
    name = f"scp/nominate/{node.slot_index}"
    assert node.timers[-1] == SetTimer(name, 2_000)  # round 1 lasts 1 + 1 seconds
    node.apply(node.core.handle(TimerFired(name), 2_000))
    assert node.timers[-1] == SetTimer(name, 3_000)  # round 2 lasts 1 + 2 seconds
    slot = node.core.slots[node.slot_index]
    expected_leaders = {draft_leader(node.slot_index, n, V0.node_id) for n in (1, 2)}
    assert slot.nomination.round_leaders == expected_leaders


def test_a_maybe_valid_value_in_peers_nominations_does_not_mute_the_node() -> None:
    node = Node(slot_led_by(V0.node_id))
    node.nominate(b"x")
    node.receive(PEERS[0], node.nomination([b"maybe-later"], [b"maybe-later"]))
    node.receive(PEERS[1], node.nomination([b"maybe-later"], [b"maybe-later"]))
    slot = node.core.slots[node.slot_index]
    assert slot.fully_validated
    assert b"maybe-later" not in slot.nomination.accepted  # never vouched for
    count = len(node.sent)
    node.receive(PEERS[0], node.nomination([b"maybe-later", b"x"], [b"maybe-later"]))
    node.receive(PEERS[1], node.nomination([b"maybe-later", b"x"], [b"maybe-later"]))
    node.receive(PEERS[2], node.nomination([b"x"]))
    # v0 and three peers vote x, a quorum threshold: x is accepted and announced
    assert len(node.sent) > count
    assert node.nominations()[-1].accepted == (b"x",)


def test_own_ballot_on_a_maybe_valid_value_stops_sending_until_it_is_valid() -> None:
    verdicts = {b"maybe-v": Validity.MAYBE_VALID}

    class Learning(RejectingApplication):
        def validate_value(self, slot_index: int, value: bytes, nomination: bool) -> Validity:
            return verdicts.get(value, Validity.FULLY_VALID)

    node = Node(slot_led_by(V0.node_id), Learning())
    node.apply(node.core.bump_state(node.slot_index, b"maybe-v", 0))
    assert node.ballots() == []  # it does not vouch for what it cannot check
    verdicts[b"maybe-v"] = Validity.FULLY_VALID
    node.receive(PEERS[0], node.nomination([b"y"]))
    assert [pledges.ballot.value for pledges in node.ballots()] == [b"maybe-v"]  # type: ignore[union-attr]
