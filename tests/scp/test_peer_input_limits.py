"""What peers can make an `ScpCore` spend: answers reuse the envelope signed when the
statement was made, stragglers are answered only for verified envelopes, `StateRequest`
answers are rate-limited per sender, learnt quorum sets and parked envelopes are capped
so that one peer cannot grow memory or crowd out honest peers."""

from __future__ import annotations

from scp_fixtures import KEYS, PEER, QSET, envelope_from, make_core

from synod.core import Received, Send, Step
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet
from synod.scp import (
    CODEC,
    Ballot,
    Confirm,
    Envelope,
    Externalize,
    Prepare,
    QuorumSetRequest,
    QuorumSetResponse,
    RejectReason,
    ScpCore,
    Statement,
    StateRequest,
    sign_statement,
)
from synod.scp.ballot import Phase
from synod.scp.core import slot_record_key


class CountingSigner:
    """The default signer, counting how many signatures the node makes."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, keys: KeyPair, statement: Statement) -> Envelope:
        self.count += 1
        return sign_statement(keys, statement)


def prepare(digest: bytes, value: bytes = b"x") -> Prepare:
    return Prepare(digest, Ballot(1, value), None, None, 0, 0)


def receive(core: ScpCore, message: object, sender: NodeId, now_ms: int = 0) -> Step:
    return core.handle(Received(sender, message), now_ms)


def sends(step: Step) -> list[Send]:
    return [output for output in step.outgoing if isinstance(output, Send)]


def decided_core(**overrides: object) -> tuple[ScpCore, dict[bytes, bytes | None]]:
    """A node that decided slot 1 on b"x": the three peers (a quorum with it, and
    v-blocking for it) sent EXTERNALIZE.  Returns the core and what it persisted."""
    core = make_core(**overrides)
    persisted = {record.key: record.value for record in core.bump_state(1, b"x", 0).persist}
    for key in KEYS[1:]:
        externalize = Externalize(Ballot(1, b"x"), 1, core.local_qset_hash)
        step = receive(core, envelope_from(key, 1, externalize), key.node_id)
        persisted.update((record.key, record.value) for record in step.persist)
    assert core.slots[1].phase == Phase.EXTERNALIZE
    return core, persisted


# ---------------------------------------------------------------- signing on demand


def test_a_straggler_is_answered_only_when_its_envelope_signature_verifies() -> None:
    core, _ = decided_core()
    stale = envelope_from(PEER, 1, prepare(core.local_qset_hash))
    forged = Envelope(stale.statement, bytes(64))
    assert sends(receive(core, forged, PEER.node_id)) == []
    assert core.rejected[RejectReason.BAD_SIGNATURE] == 1
    answered = sends(receive(core, stale, PEER.node_id))
    assert [send.to for send in answered] == [PEER.node_id]
    assert isinstance(answered[0].message, Envelope)
    assert isinstance(answered[0].message.statement.pledges, Externalize)


def test_answers_reuse_the_persisted_envelope_and_sign_nothing() -> None:
    signer = CountingSigner()
    core, persisted = decided_core(signer=signer)
    ballot_record = persisted[slot_record_key(1, "ballot")]
    assert ballot_record is not None
    signed_before = signer.count
    stale = envelope_from(PEER, 1, prepare(core.local_qset_hash))
    straggler_answer = sends(receive(core, stale, PEER.node_id))
    state_answer = sends(receive(core, StateRequest(1), KEYS[2].node_id))
    assert signer.count == signed_before
    assert straggler_answer and state_answer
    for send in straggler_answer + state_answer:
        assert isinstance(send.message, Envelope)
        if isinstance(send.message.statement.pledges, Externalize):
            assert CODEC.encode(send.message) == ballot_record


def test_the_peer_whose_statement_completes_the_decision_gets_the_one_signed_externalize() -> None:
    signer = CountingSigner()
    core = make_core(signer=signer)
    core.bump_state(1, b"x", 0)
    digest = core.local_qset_hash
    receive(
        core, envelope_from(KEYS[2], 1, Externalize(Ballot(1, b"x"), 1, digest)), KEYS[2].node_id
    )
    signed_before = signer.count
    # KEYS[3] only confirms: with KEYS[2]'s EXTERNALIZE and our own vote that is a
    # quorum confirming the commit, so we decide, and KEYS[3] is still behind
    confirm = Confirm(Ballot(1, b"x"), 1, 1, 1, digest)
    step = receive(core, envelope_from(KEYS[3], 1, confirm), KEYS[3].node_id)
    assert core.slots[1].phase == Phase.EXTERNALIZE
    answered = sends(step)
    assert [send.to for send in answered] == [KEYS[3].node_id]
    assert isinstance(answered[0].message, Envelope)
    assert isinstance(answered[0].message.statement.pledges, Externalize)
    assert signer.count == signed_before + 1  # the broadcast and the answer share one


def test_state_request_answers_follow_a_per_sender_token_bucket() -> None:
    core = make_core(state_request_burst=3, state_request_refill_ms=1000)
    core.bump_state(1, b"x", 0)
    answered_at_once = [
        bool(sends(receive(core, StateRequest(1), PEER.node_id))) for _ in range(10)
    ]
    # a full bucket holds 3 tokens: the first three are answered, the rest refused
    assert answered_at_once == [True] * 3 + [False] * 7
    assert core.rejected[RejectReason.STATE_REQUEST_LIMITED] == 7
    # another sender has its own bucket
    assert sends(receive(core, StateRequest(1), KEYS[2].node_id))
    # 999 ms refill less than one token, 1000 ms exactly one
    assert not sends(receive(core, StateRequest(1), PEER.node_id, now_ms=999))
    assert sends(receive(core, StateRequest(1), PEER.node_id, now_ms=1000))
    assert not sends(receive(core, StateRequest(1), PEER.node_id, now_ms=1000))


# ---------------------------------------------------------------- quorum-set store


def admit(core: ScpCore, keys: list[KeyPair]) -> None:
    """Make `keys` members of the core's transitive quorum: PEER declares a quorum set
    naming them (how nodes beyond the local quorum set become members)."""
    wide = QuorumSet(threshold=1, validators=tuple(key.node_id for key in keys))
    core.transitive_quorum.declare(PEER.node_id, core.quorum_sets.hash_of(wide), wide)


def own_qset(key: KeyPair) -> QuorumSet:
    return QuorumSet(threshold=1, validators=(key.node_id,))


def feed_quorum_set(core: ScpCore, key: KeyPair, qset: QuorumSet, value: bytes) -> None:
    """`key` parks a statement naming `qset`, then answers the request for it."""
    digest = core.quorum_sets.hash_of(qset)
    step = receive(core, envelope_from(key, 1, prepare(digest, value)), key.node_id)
    assert Send(key.node_id, QuorumSetRequest(digest)) in step.outgoing
    receive(core, QuorumSetResponse(qset), key.node_id)


def test_learnt_quorum_sets_are_capped_keeping_local_and_in_use_sets() -> None:
    core = make_core(max_learned_quorum_sets=2)
    local_extra = QuorumSet(threshold=2, validators=tuple(key.node_id for key in KEYS[:3]))
    core.add_quorum_set(local_extra)
    honest_qset = QuorumSet(threshold=2, validators=tuple(key.node_id for key in KEYS[1:]))
    feed_quorum_set(core, PEER, honest_qset, b"x")
    assert PEER.node_id in core.slots[1].ballot.latest  # its statement names honest_qset
    strangers = [KeyPair.from_seed(bytes([200 + index]) * 32) for index in range(10)]
    admit(core, strangers)
    for stranger in strangers:
        # an invalid value: parked, the set stored, then the statement refused
        feed_quorum_set(core, stranger, own_qset(stranger), b"bad")
    # local QSET and local_extra, the in-use honest set, and at most 2 learnt ones
    assert len(core.quorum_sets) <= 2 + 1 + 2
    for kept in (QSET, local_extra, honest_qset):
        assert core.quorum_sets.get(core.quorum_sets.hash_of(kept)) == kept
    newest = own_qset(strangers[-1])
    assert core.quorum_sets.get(core.quorum_sets.hash_of(newest)) == newest
    oldest = own_qset(strangers[0])
    assert core.quorum_sets.get(core.quorum_sets.hash_of(oldest)) is None


# ---------------------------------------------------------------- parked envelopes


def test_one_sender_cannot_fill_the_parking_for_honest_peers() -> None:
    core = make_core(max_pending_envelopes=8, max_pending_per_sender=2)
    flooder = KeyPair.from_seed(bytes([99]) * 32).node_id
    strangers = [KeyPair.from_seed(bytes([100 + index]) * 32) for index in range(30)]
    admit(core, strangers)
    for stranger in strangers:
        digest = core.quorum_sets.hash_of(own_qset(stranger))
        receive(core, envelope_from(stranger, 1, prepare(digest)), flooder)
    honest = KEYS[2]
    honest_qset = QuorumSet(threshold=2, validators=tuple(key.node_id for key in KEYS[1:]))
    digest = core.quorum_sets.hash_of(honest_qset)
    step = receive(core, envelope_from(honest, 1, prepare(digest)), honest.node_id)
    assert step.outgoing == [Send(honest.node_id, QuorumSetRequest(digest))]
    assert core.rejected[RejectReason.PENDING_FULL] == 0
    assert core.rejected[RejectReason.PENDING_EVICTED] == 30 - 2
    receive(core, QuorumSetResponse(honest_qset), honest.node_id)
    assert honest.node_id in core.slots[1].ballot.latest


def test_one_node_relayed_by_many_senders_keeps_only_its_newest_parked_envelopes() -> None:
    core = make_core(max_pending_per_sender=2)
    unknown_qset = QuorumSet(threshold=2, validators=tuple(key.node_id for key in KEYS[1:]))
    digest = core.quorum_sets.hash_of(unknown_qset)
    for slot_index in range(1, 6):
        relay = KeyPair.from_seed(bytes([150 + slot_index]) * 32).node_id
        receive(core, envelope_from(PEER, slot_index, prepare(digest)), relay)
    receive(core, QuorumSetResponse(unknown_qset), PEER.node_id)
    holding = [index for index, slot in core.slots.items() if PEER.node_id in slot.ballot.latest]
    assert sorted(holding) == [4, 5]
    assert core.rejected[RejectReason.PENDING_EVICTED] == 3
