"""Ballot protocol transitions, one local node (v0) and four peers (v1..v4).

The quorum set is 4 of {v0..v4}: any 2 other nodes are v-blocking for v0 (they meet
every 4-subset) and v0 plus 3 peers form a quorum.  Each test feeds hand-made
statements from the peers and checks v0's next statement against the update rules of
draft-mazieres-dinrg-scp-05 (section numbers in comments); the scenario groups follow
stellar-core's SCPTests "ballot protocol core5".  `receive_v_blocking` feeds 2 peers,
`receive_quorum` 4 peers (the quorum forms with the third).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from synod.core import Broadcast, CancelTimer, Received, SetTimer, Step, TimerFired
from synod.crypto import KeyPair
from synod.quorum.qset import QuorumSet
from synod.scp import (
    Application,
    Ballot,
    Confirm,
    Envelope,
    Externalize,
    Externalized,
    Prepare,
    ScpConfig,
    ScpCore,
    Statement,
    sign_statement,
)
from synod.scp.ballot import COUNTER_HEADROOM
from synod.scp.messages import Pledges

SLOT = 1
KEYS = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(6)]
V0, PEERS, OUTSIDER = KEYS[0], KEYS[1:5], KEYS[5]
QSET = QuorumSet(threshold=4, validators=tuple(key.node_id for key in KEYS[:5]))
BALLOT_TIMER = f"scp/ballot/{SLOT}"
HOUR_MS = 3_600_000

X, Y, Z, ZZ = b"x", b"y", b"z", b"zz"  # x < y < z < zz as octet strings
INFINITE = 2**32 - 1


@dataclass
class Harness:
    """v0's core plus what it said, its timers and its externalized values."""

    validator: bool = True
    keys: KeyPair = V0
    now_ms: int = 0
    sent: list[Pledges] = field(default_factory=list)
    timers: dict[str, int] = field(default_factory=dict)
    externalized: list[Externalized] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.core = ScpCore(
            ScpConfig(
                keys=self.keys,
                quorum_set=QSET,
                application=Application(),
                validator=self.validator,
            )
        )
        self.qset_hash = self.core.local_qset_hash

    def apply(self, step: Step) -> None:
        for outgoing in step.outgoing:
            if isinstance(outgoing, Broadcast) and isinstance(outgoing.message, Envelope):
                self.sent.append(outgoing.message.statement.pledges)
        for timer in step.timers:
            if isinstance(timer, SetTimer):
                self.timers[timer.name] = self.now_ms + timer.delay_ms
            elif isinstance(timer, CancelTimer):
                self.timers.pop(timer.name, None)
        self.externalized.extend(e for e in step.events if isinstance(e, Externalized))

    def bump_state(self, value: bytes) -> None:
        self.apply(self.core.bump_state(SLOT, value, self.now_ms))

    def receive(self, key: KeyPair, pledges: Pledges) -> None:
        envelope = sign_statement(key, Statement(key.node_id, SLOT, pledges))
        self.apply(self.core.handle(Received(key.node_id, envelope), self.now_ms))

    def advance_time(self) -> None:
        """Move well past any timeout, so earlier timers are in the past."""
        self.now_ms += 5 * HOUR_MS

    def receive_v_blocking(self, pledges: Pledges) -> None:
        self.advance_time()
        before = len(self.sent)
        self.receive(PEERS[0], pledges)
        assert len(self.sent) == before, "one peer alone is not v-blocking"
        self.receive(PEERS[1], pledges)

    def receive_quorum(self, pledges: Pledges, *, without_us: bool = False) -> None:
        """Four peers say `pledges`.  With `without_us`, v0's own statement does not
        agree, so the quorum (4 nodes) only forms with the fourth peer."""
        self.advance_time()
        self.receive(PEERS[0], pledges)
        self.receive(PEERS[1], pledges)
        before = len(self.sent)
        self.receive(PEERS[2], pledges)
        if without_us:
            assert len(self.sent) == before, "3 peers without v0 are not a quorum"
            self.receive(PEERS[3], pledges)
            return
        before = len(self.sent)
        self.receive(PEERS[3], pledges)
        assert len(self.sent) == before, "a fourth vote adds nothing to a quorum"

    def has_ballot_timer(self) -> bool:
        return BALLOT_TIMER in self.timers

    def ballot_timer_upcoming(self) -> bool:
        return self.timers.get(BALLOT_TIMER, -1) > self.now_ms

    def prepare(
        self,
        ballot: Ballot,
        prepared: Ballot | None = None,
        n_c: int = 0,
        n_h: int = 0,
        prepared_prime: Ballot | None = None,
    ) -> Prepare:
        return Prepare(self.qset_hash, ballot, prepared, prepared_prime, n_c, n_h)

    def confirm(self, n_prepared: int, ballot: Ballot, n_commit: int, n_h: int) -> Confirm:
        return Confirm(ballot, n_prepared, n_commit, n_h, self.qset_hash)

    def externalize(self, commit: Ballot, n_h: int) -> Externalize:
        return Externalize(commit, n_h, self.qset_hash)


def ballots(value: bytes) -> dict[int, Ballot]:
    return {counter: Ballot(counter, value) for counter in range(1, 6)}


A = ballots(X)
B = ballots(Z)
MID = ballots(Y)
BIG = ballots(ZZ)


def started_on_a1() -> Harness:
    harness = Harness()
    harness.bump_state(X)
    assert harness.sent == [harness.prepare(A[1])]
    assert not harness.has_ballot_timer()
    return harness


def prepared_a1() -> Harness:
    harness = started_on_a1()
    harness.receive_quorum(harness.prepare(A[1]))
    return harness


def confirmed_prepared_a2() -> Harness:
    harness = prepared_a1()
    harness.advance_time()
    harness.bump_state(X)  # the ballot timer expired: counter 2
    harness.receive_quorum(harness.prepare(A[2]))
    harness.receive_quorum(harness.prepare(A[2], A[2]))
    assert harness.sent[-1] == harness.prepare(A[2], A[2], 2, 2)
    return harness


def accepted_commit_a2() -> Harness:
    harness = confirmed_prepared_a2()
    harness.receive_quorum(harness.prepare(A[2], A[2], 2, 2))
    assert harness.sent[-1] == harness.confirm(2, A[2], 2, 2)
    return harness


# ---------------------------------------------------------------- PREPARE


def test_bump_state_starts_with_counter_one_and_the_value() -> None:
    # draft 3.6: "upon entering the PREPARE phase, the counter field is initialized to 1"
    harness = Harness()
    harness.bump_state(X)
    assert harness.sent == [harness.prepare(A[1])]


def test_quorum_voting_prepare_accepts_it_and_arms_the_timer() -> None:
    harness = started_on_a1()
    harness.advance_time()
    for index, peer in enumerate(PEERS[:3]):
        harness.receive(peer, harness.prepare(A[1]))
        if index < 2:
            # v0 + 2 peers is 3 < 4: neither a quorum nor (votes only) acceptance
            assert len(harness.sent) == 1
    # v0 + 3 peers all vote prepare(A1): quorum threshold -> accept prepare(A1)
    assert harness.sent[-1] == harness.prepare(A[1], A[1])
    # the same quorum is at counter 1 >= ours: the ballot timer is armed
    assert harness.ballot_timer_upcoming()


def test_bumped_ballot_keeps_prepared_and_waits_for_a_quorum_at_the_new_counter() -> None:
    harness = prepared_a1()
    harness.advance_time()
    harness.bump_state(X)
    assert harness.sent[-1] == harness.prepare(A[2], A[1])
    # nobody else is at counter 2 yet: no timer
    assert not harness.has_ballot_timer()
    harness.receive_quorum(harness.prepare(A[2]))
    assert harness.sent[-1] == harness.prepare(A[2], A[2])
    assert harness.ballot_timer_upcoming()


def test_confirm_prepared_sets_h_and_c_to_the_ballot() -> None:
    harness = confirmed_prepared_a2()
    # draft 3.6: quorum accepts prepare(A2) -> h = A2; c = b = A2 since h == b
    assert harness.sent[-1] == harness.prepare(A[2], A[2], 2, 2)
    assert not harness.ballot_timer_upcoming()


def test_v_blocking_prepared_of_other_value_becomes_p() -> None:
    harness = started_on_a1()
    harness.receive_v_blocking(harness.prepare(B[1], B[1]))
    # a blocking set accepts prepare(B1): v0 accepts it too; b keeps its value
    assert harness.sent[-1] == harness.prepare(A[1], B[1])
    assert not harness.has_ballot_timer()


def test_quorum_voting_other_value_prepares_it() -> None:
    harness = started_on_a1()
    harness.receive_quorum(harness.prepare(B[1]), without_us=True)
    # v0 votes prepare(<1,x>) only, so the vote-or-accept quorum for prepare(<1,z>)
    # is v1..v4 (4 of the 5): v0 accepts prepare(<1,z>) once all four spoke
    assert harness.sent[-1] == harness.prepare(A[1], B[1])


def test_switching_prepared_keeps_the_old_one_as_prepared_prime() -> None:
    harness = prepared_a1()
    harness.receive_v_blocking(harness.prepare(B[1], B[1]))
    # p = B1, p' = A1 (highest accepted prepared incompatible with p)
    assert harness.sent[-1] == harness.prepare(A[1], B[1], 0, 0, A[1])
    # a blocking set at counter 2: jump to counter 2 (value stays x: nothing confirmed)
    harness.receive_v_blocking(harness.prepare(B[2]))
    assert harness.sent[-1] == harness.prepare(A[2], B[1], 0, 0, A[1])
    harness.receive_v_blocking(harness.prepare(B[2], B[2]))
    assert harness.sent[-1] == harness.prepare(A[2], B[2], 0, 0, A[1])
    # the peers other than the two are still at counter 1: no quorum at 2, no timer
    assert not harness.has_ballot_timer()


def test_prepared_prime_moves_up_to_a_higher_incompatible_ballot() -> None:
    harness = prepared_a1()
    harness.receive_v_blocking(harness.prepare(B[1], B[1]))
    harness.receive_v_blocking(harness.prepare(B[2]))
    harness.receive_v_blocking(harness.prepare(B[2], B[2]))
    harness.receive_v_blocking(harness.prepare(B[2], B[2], 0, 0, MID[2]))
    # (p, p') = (B2, Mid2): Mid2 > A1 and incompatible with B2
    assert harness.sent[-1] == harness.prepare(A[2], B[2], 0, 0, MID[2])


def test_both_prepared_fields_move_when_a_higher_value_is_prepared() -> None:
    harness = prepared_a1()
    harness.receive_v_blocking(harness.prepare(B[1], B[1]))
    harness.receive_v_blocking(harness.prepare(B[2]))
    harness.receive_v_blocking(harness.prepare(B[2], B[2]))
    harness.receive_v_blocking(harness.prepare(B[2], BIG[2], 0, 0, B[2]))
    assert harness.sent[-1] == harness.prepare(A[2], BIG[2], 0, 0, B[2])


def test_lower_prepared_from_a_blocking_set_changes_nothing() -> None:
    harness = prepared_a1()
    harness.receive_v_blocking(harness.prepare(B[1], B[1]))
    harness.receive_v_blocking(harness.prepare(B[2]))
    harness.receive_v_blocking(harness.prepare(B[2], B[2]))
    harness.receive_v_blocking(harness.prepare(B[3]))
    assert harness.sent[-1] == harness.prepare(A[3], B[2], 0, 0, A[1])
    count = len(harness.sent)
    # B1 is below p = B2 with the same value: nothing new
    harness.advance_time()
    harness.receive(PEERS[0], harness.prepare(B[3], B[1]))
    harness.receive(PEERS[1], harness.prepare(B[3], B[1]))
    assert len(harness.sent) == count


def test_blocking_set_ahead_bumps_the_counter_repeatedly() -> None:
    harness = prepared_a1()
    harness.receive_v_blocking(harness.prepare(B[2]))
    assert harness.sent[-1] == harness.prepare(A[2], A[1])
    assert not harness.has_ballot_timer()
    harness.receive_v_blocking(harness.prepare(B[3]))
    assert harness.sent[-1] == harness.prepare(A[3], A[1])
    assert not harness.has_ballot_timer()


def test_bump_goes_to_the_lowest_counter_no_blocking_set_exceeds() -> None:
    harness = started_on_a1()
    harness.advance_time()
    harness.receive(PEERS[0], harness.prepare(B[5]))
    harness.receive(PEERS[1], harness.prepare(B[3]))
    # {v1 (5), v2 (3)} is blocking above 1 and 2; above 3 only v1 remains: jump to 3
    assert harness.sent[-1].ballot == A[3]  # type: ignore[union-attr]


def test_confirmed_prepared_mixed_values_do_not_set_c_when_p_is_above_h() -> None:
    harness = prepared_a1()
    harness.advance_time()
    harness.bump_state(X)
    harness.receive_quorum(harness.prepare(A[2]))
    harness.receive_v_blocking(harness.prepare(B[2], B[2], 0, 0, A[2]))
    assert harness.sent[-1] == harness.prepare(A[2], B[2], 0, 0, A[2])
    harness.advance_time()
    harness.receive(PEERS[2], harness.prepare(A[2], A[2]))
    # quorum {v0, v1, v2, v3} accepts A2 prepared -> h = A2, but p = B2 > h is
    # incompatible (accepted abort of A2), so c stays 0 (draft 3.6 cCounter)
    assert harness.sent[-1] == harness.prepare(A[2], B[2], 0, 2, A[2])
    count = len(harness.sent)
    harness.receive(PEERS[3], harness.prepare(A[2], A[2]))
    assert len(harness.sent) == count


def test_confirmed_prepared_other_value_moves_b_h_and_c_to_it() -> None:
    harness = prepared_a1()
    harness.advance_time()
    harness.bump_state(X)
    harness.receive_quorum(harness.prepare(A[2]))
    harness.receive_v_blocking(harness.prepare(B[2], B[2], 0, 0, A[2]))
    harness.advance_time()
    harness.receive(PEERS[2], harness.prepare(B[2], B[2]))
    # quorum accepts B2 prepared: h = B2, b follows h, c = B2
    assert harness.sent[-1] == harness.prepare(B[2], B[2], 2, 2, A[2])


# ---------------------------------------------------------------- conflicting prepared


def test_conflicting_prepared_at_same_counter_clears_commit_vote() -> None:
    harness = confirmed_prepared_a2()
    harness.receive_v_blocking(harness.prepare(B[2], B[2]))
    # p = B2 > h = A2 with another value: abort A2 accepted, so c is reset (draft 3.6)
    assert harness.sent[-1] == harness.prepare(A[2], B[2], 0, 2, A[2])
    harness.receive_quorum(harness.prepare(B[2], B[2], 2, 2))
    # a quorum votes commit B2 (and confirms B2 prepared): accept commit, CONFIRM
    assert harness.sent[-1] == harness.confirm(2, B[2], 2, 2)


def test_conflicting_prepared_at_higher_counter() -> None:
    harness = confirmed_prepared_a2()
    harness.receive_v_blocking(harness.prepare(B[3], B[2], 2, 2))
    assert harness.sent[-1] == harness.prepare(A[3], B[2], 0, 2, A[2])
    assert not harness.has_ballot_timer()
    # v0 votes commit for nothing (c = 0), so the quorum voting commit B2 is v1..v4
    harness.receive_quorum(harness.prepare(B[3], B[2], 2, 2), without_us=True)
    assert harness.sent[-1] == harness.confirm(3, B[3], 2, 2)
    assert harness.ballot_timer_upcoming()


def test_mixed_prepared_then_quorum_confirms_the_higher_value() -> None:
    harness = confirmed_prepared_a2()
    harness.receive_v_blocking(harness.prepare(A[3], B[3], 0, 2, A[2]))
    # p = B3, p' = A2; counter 3 with b = A3 (h's value); c reset
    assert harness.sent[-1] == harness.prepare(A[3], B[3], 0, 2, A[2])
    harness.receive_quorum(harness.prepare(A[3], B[3], 0, 2, A[2]))
    # confirmed prepared B3: h = b = c = B3; A3 becomes p' (highest incompatible)
    assert harness.sent[-1] == harness.prepare(B[3], B[3], 3, 3, A[3])


# ---------------------------------------------------------------- CONFIRM


def test_quorum_voting_commit_accepts_commit() -> None:
    harness = accepted_commit_a2()
    assert harness.sent[-1] == harness.confirm(2, A[2], 2, 2)
    assert not harness.ballot_timer_upcoming()


def test_confirm_phase_follows_counter_and_accepts_more_commit() -> None:
    harness = accepted_commit_a2()
    harness.receive_v_blocking(harness.prepare(A[3], A[2], 2, 2))
    # blocking set at counter 3: ballot moves to 3; nothing else changes
    assert harness.sent[-1] == harness.confirm(2, A[3], 2, 2)
    assert not harness.has_ballot_timer()
    harness.receive_quorum(harness.prepare(A[3], A[2], 2, 2))
    # quorum votes prepare(A3): accepted prepared counter 3
    assert harness.sent[-1] == harness.confirm(3, A[3], 2, 2)
    harness.receive_quorum(harness.prepare(A[3], A[3], 2, 3))
    # quorum votes commit for counters 2..3: accepted commit interval [2, 3]
    assert harness.sent[-1] == harness.confirm(3, A[3], 2, 3)
    assert harness.externalized == []


def test_quorum_accepting_commit_externalizes() -> None:
    harness = accepted_commit_a2()
    harness.receive_v_blocking(harness.prepare(A[3], A[2], 2, 2))
    harness.receive_quorum(harness.prepare(A[3], A[2], 2, 2))
    harness.receive_quorum(harness.prepare(A[3], A[3], 2, 3))
    harness.receive_quorum(harness.confirm(3, A[3], 2, 3))
    # draft 3.8: confirm commit -> EXTERNALIZE with c = lowest, h = highest confirmed
    assert harness.sent[-1] == harness.externalize(A[2], 3)
    assert harness.externalized == [Externalized(SLOT, X)]
    assert not harness.has_ballot_timer()


def test_v_blocking_confirm_raises_accepted_commit_interval() -> None:
    harness = accepted_commit_a2()
    harness.receive_v_blocking(harness.confirm(4, A[4], 3, 4))
    assert harness.sent[-1] == harness.confirm(4, A[4], 3, 4)
    assert not harness.has_ballot_timer()


def test_v_blocking_confirm_of_other_value_is_accepted_from_prepare_phase() -> None:
    harness = confirmed_prepared_a2()
    harness.receive_v_blocking(harness.confirm(2, B[2], 2, 2))
    # a blocking set accepts commit B2: v0 accepts it too even though it voted A2
    assert harness.sent[-1] == harness.confirm(2, B[2], 2, 2)


def test_v_blocking_externalize_accepts_commit_up_to_infinity() -> None:
    harness = confirmed_prepared_a2()
    harness.receive_v_blocking(harness.externalize(A[2], 2))
    # EXTERNALIZE accepts commit for every n >= 2 and prepare(<inf, x>)
    assert harness.sent[-1] == harness.confirm(INFINITE, Ballot(INFINITE, X), 2, INFINITE)
    assert not harness.has_ballot_timer()


def test_confirm_phase_does_not_switch_value_when_network_externalizes_another() -> None:
    harness = accepted_commit_a2()
    harness.receive_v_blocking(harness.externalize(B[2], 3))
    # a blocking set is at the infinite counter: v0 jumps as high as the draft's
    # counter limit allows (1000 + seconds on the slot), keeping its value x
    last = harness.sent[-1]
    assert isinstance(last, Confirm)
    assert last.ballot.value == X
    assert last.ballot.counter == COUNTER_HEADROOM + harness.now_ms // 1000
    assert (last.n_prepared, last.n_commit, last.n_h) == (2, 2, 2)
    count = len(harness.sent)
    harness.advance_time()
    for peer in PEERS:
        harness.receive(peer, harness.externalize(B[2], 3))
    # stuck: v0 accepted commit x and can never confirm z
    assert harness.externalized == []
    assert all(isinstance(pledges, Confirm) for pledges in harness.sent[count:])


def test_confirm_phase_ignores_confirms_of_other_value_at_same_counter() -> None:
    harness = accepted_commit_a2()
    count = len(harness.sent)
    harness.advance_time()
    for peer in PEERS:
        harness.receive(peer, harness.confirm(3, B[2], 2, 3))
    assert len(harness.sent) == count
    assert harness.externalized == []


def test_v_blocking_confirm_from_start_moves_to_confirm() -> None:
    harness = started_on_a1()
    harness.advance_time()
    harness.receive(PEERS[0], harness.confirm(3, A[3], 3, 3))
    harness.receive(PEERS[1], harness.confirm(4, A[4], 2, 4))
    # blocking set accepts commit A3 (intersection of [3,3] and [2,4]) and prepare A3
    assert harness.sent[-1] == harness.confirm(3, A[3], 3, 3)
    assert not harness.has_ballot_timer()


def test_v_blocking_externalize_from_start_moves_to_confirm() -> None:
    harness = started_on_a1()
    harness.receive(PEERS[0], harness.externalize(A[2], 4))
    harness.receive(PEERS[1], harness.externalize(A[3], 5))
    # both accept commit for every n >= 3
    assert harness.sent[-1] == harness.confirm(INFINITE, Ballot(INFINITE, X), 3, INFINITE)


# ---------------------------------------------------------------- timers


def test_ballot_timer_expiry_moves_to_next_counter() -> None:
    harness = prepared_a1()
    assert harness.ballot_timer_upcoming()
    harness.now_ms = harness.timers[BALLOT_TIMER]
    harness.apply(harness.core.handle(TimerFired(BALLOT_TIMER), harness.now_ms))
    # draft 3.6: "if the timer fires, a node increments the ballot counter by 1"
    assert harness.sent[-1] == harness.prepare(A[2], A[1])


def test_ballot_timeout_grows_with_the_counter() -> None:
    harness = prepared_a1()
    # default timeout policy (draft): counter + 1 seconds
    assert harness.timers[BALLOT_TIMER] - harness.now_ms == 2_000
    harness.advance_time()
    harness.bump_state(X)
    harness.receive_quorum(harness.prepare(A[2]))
    assert harness.timers[BALLOT_TIMER] - harness.now_ms == 3_000


def test_timeouts_then_network_moves_on_with_a_higher_prepared() -> None:
    harness = Harness()
    harness.bump_state(X)
    harness.receive_quorum(harness.prepare(A[1]))
    assert harness.sent[-1] == harness.prepare(A[1], A[1])
    harness.bump_state(X)
    harness.bump_state(X)
    assert harness.sent[-1] == harness.prepare(A[3], A[1])
    harness.receive(PEERS[0], harness.prepare(A[2], A[2], 1, 2))
    harness.receive(PEERS[1], harness.prepare(A[2], A[2], 1, 2))
    # blocking set accepts prepared A2
    assert harness.sent[-1] == harness.prepare(A[3], A[2])
    harness.receive(PEERS[2], harness.prepare(A[2], A[2], 1, 2))
    # quorum accepts A2 prepared: h = 2; c stays 0 since b = A3 > h
    assert harness.sent[-1] == harness.prepare(A[3], A[2], 0, 2)


# ---------------------------------------------------------------- watcher


def test_non_validator_follows_and_externalizes_without_sending() -> None:
    harness = Harness(validator=False, keys=OUTSIDER)
    harness.bump_state(X)
    assert harness.sent == []
    slot = harness.core.slots[SLOT]
    assert slot.ballot.current == A[1]
    for peer in PEERS[:3]:
        harness.receive(peer, harness.externalize(A[1], 1))
    # 3 of the 4 needed: a blocking set, not a quorum -> accepted commit only
    assert slot.ballot.current_pledges() == harness.confirm(
        INFINITE, Ballot(INFINITE, X), 1, INFINITE
    )
    assert harness.externalized == []
    harness.receive(PEERS[3], harness.externalize(A[1], 1))
    assert harness.externalized == [Externalized(SLOT, X)]
    assert slot.ballot.current_pledges() == harness.externalize(A[1], INFINITE)
    assert harness.sent == []
