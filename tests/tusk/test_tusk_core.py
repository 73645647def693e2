"""The passive Tusk core: what it stores, signs, refuses and persists, request by request."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from synod.core import (
    CallFailed,
    LocalError,
    Persist,
    Proposed,
    Received,
    Reply,
    RequestReceived,
    Response,
    Started,
    Step,
    TimerFired,
)
from synod.crypto import KeyPair
from synod.quorum.committee import Committee
from synod.sim.scenarios.tusk import tusk_world
from synod.tusk.core import (
    MAX_EVIDENCE_PER_CREATOR,
    CaughtUp,
    CertificateConflictDetected,
    Committed,
    EquivocationDetected,
    FellBehind,
    PendingTransactionsDropped,
    TuskConfig,
    TuskCore,
)
from synod.tusk.messages import (
    MAX_BATCH_BYTES,
    Certificate,
    CertifiedDigest,
    CoreAnswer,
    CoreRequest,
    Equivocation,
    Header,
    RefusalReason,
    SubmitAnswer,
    SubmitRefusal,
    SubmitRequest,
    WeakParent,
    committee_context,
    make_certificate,
    sign_vote,
)
from synod.tusk.messages import sign_header as sign_header_in
from synod.wire import canonical_bytes

KEYS = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(4)]
OUTSIDER = KeyPair.from_seed(b"\x99" * 32)
COMMITTEE = Committee.equal_weights(key.node_id for key in KEYS)


def context_of(gc_depth: int = TuskConfig().gc_depth) -> bytes:
    """The committee context of COMMITTEE's cores collecting at `gc_depth`."""
    return committee_context(b"", COMMITTEE.weights, gc_depth, kept_commits=None)


CONTEXT = context_of()


def sign_header(
    keys: KeyPair,
    round_number: int,
    transactions: tuple[bytes, ...],
    parents: tuple[bytes, ...],
    weak_parents: tuple[WeakParent, ...] = (),
    *,
    context: bytes = CONTEXT,
) -> Header:
    """A header signed in the context of this module's cores (default settings)."""
    return sign_header_in(keys, round_number, transactions, parents, weak_parents, context=context)


def certify(header: Header, voters: list[KeyPair] = KEYS[:3]) -> Certificate:
    votes = [sign_vote(key, header.digest(), header.round, header.creator) for key in voters]
    return make_certificate(header, votes)


def certified_round(
    round_number: int,
    parents: tuple[bytes, ...],
    creators: list[KeyPair] = KEYS,
    *,
    context: bytes = CONTEXT,
) -> list[Certificate]:
    transactions = (f"r{round_number}".encode(),)
    return [
        certify(sign_header(key, round_number, transactions, parents, context=context))
        for key in creators
    ]


def digests(certificates: list[Certificate]) -> tuple[bytes, ...]:
    return tuple(sorted(c.header.digest() for c in certificates))


class Harness:
    """One core, its storage, and requests answered one at a time."""

    def __init__(self, keys: KeyPair = KEYS[0], config: TuskConfig | None = None) -> None:
        self.keys = keys
        self.config = config
        self.storage: dict[bytes, bytes] = {}
        self.core = TuskCore(keys, COMMITTEE, config=config)
        self.request_id = 0

    def ask(self, body: Any) -> tuple[Step, Any]:
        self.request_id += 1
        step = self.core.handle(RequestReceived("driver", self.request_id, body), 0)
        for record in step.persist:
            if record.value is None:
                self.storage.pop(record.key, None)
            else:
                self.storage[record.key] = record.value
        assert not step.timers
        assert len(step.outgoing) == 1
        reply = step.outgoing[0]
        assert isinstance(reply, Reply)
        assert reply.request_id == self.request_id
        return step, reply.body

    def propose(self, *transactions: bytes) -> None:
        """The local application hands transactions to the core (no receipt)."""
        for transaction in transactions:
            step = self.core.handle(Proposed(transaction), 0)
            for record in step.persist:
                assert record.value is not None
                self.storage[record.key] = record.value

    def rebuilt(self) -> TuskCore:
        return TuskCore(self.keys, COMMITTEE, dict(self.storage), config=self.config)

    def snapshot(self) -> tuple[dict[bytes, bytes], int, frozenset[bytes]]:
        return dict(self.storage), self.core.round, self.core.certificate_digests()


def refusal_reasons(answer: CoreAnswer) -> list[RefusalReason]:
    return [refusal.reason for refusal in answer.refusals]


def persisted_keys(step: Step) -> set[bytes]:
    return {record.key for record in step.persist if record.value is not None}


# ---------------------------------------------------------------- passivity and proposals


def test_core_never_initiates_it_only_replies() -> None:
    core = TuskCore(KEYS[0], COMMITTEE)
    for event in (
        Started(),
        TimerFired("anything"),
        Received(KEYS[1].node_id, b"hello"),
        Response(KEYS[1].node_id, 1, b"x"),
        CallFailed(KEYS[1].node_id, 1, "down"),
    ):
        assert core.handle(event, 0).is_empty()
    step, _ = Harness().ask(CoreRequest())
    assert [type(out) for out in step.outgoing] == [Reply]


def test_first_request_proposes_a_signed_round_one_header_persisted_before_the_reply() -> None:
    harness = Harness()
    step, answer = harness.ask(CoreRequest())
    assert isinstance(answer, CoreAnswer) and answer.has_valid_signature()
    assert answer.round == 1
    assert answer.header is not None and answer.header.parents == ()
    assert answer.header.stub().has_valid_signature()
    own_votes = [vote for vote in answer.votes if vote.header_digest == answer.header.digest()]
    assert len(own_votes) == 1 and own_votes[0].voter == KEYS[0].node_id
    # The header and the vote for it are both in this step's records.
    assert any(msgspec.msgpack.encode(answer.header) in raw for raw in _raw(step))
    assert any(msgspec.msgpack.encode(own_votes[0]) in raw for raw in _raw(step))
    # A second request returns the same header: at most one own header per round.
    _, again = harness.ask(CoreRequest())
    assert again.header == answer.header


def test_an_answer_leaves_out_the_own_header_only_when_the_driver_names_its_digest() -> None:
    harness = Harness()
    _, first = harness.ask(CoreRequest())
    assert first.header is not None
    # Named by its digest: the batch is not sent back, the own vote still is.
    _, held = harness.ask(CoreRequest(header_held=first.header.digest()))
    assert held.has_valid_signature() and held.header is None
    assert any(vote.header_digest == first.header.digest() for vote in held.votes)
    # Any other digest (another header, or an older one of this core): sent in full.
    other = sign_header(KEYS[1], 1, (b"tx",), ()).digest()
    _, not_held = harness.ask(CoreRequest(header_held=other))
    assert not_held.header == first.header


def by_digest(certificate: Certificate) -> CertifiedDigest:
    return CertifiedDigest(header_digest=certificate.header.digest(), votes=certificate.votes)


def test_a_certificate_named_by_digest_is_stored_like_the_full_one_after_a_vote() -> None:
    harness = Harness()
    header = sign_header(KEYS[1], 1, (b"tx",), ())
    harness.ask(CoreRequest(headers=(header,)))
    certificate = certify(header)
    step, answer = harness.ask(CoreRequest(certified=(by_digest(certificate),)))
    assert answer.refusals == ()
    assert header.digest() in harness.core.certificate_digests()
    # The record is the full certificate, as if it had been carried whole.
    assert msgspec.msgpack.encode(certificate) in _raw(step)


def test_a_certificate_named_by_digest_of_a_header_not_held_is_refused() -> None:
    harness = Harness()
    harness.ask(CoreRequest())  # its own round-1 header first
    header = sign_header(KEYS[1], 1, (b"tx",), ())
    certificate = certify(header)
    before = harness.snapshot()
    step, answer = harness.ask(CoreRequest(certified=(by_digest(certificate),)))
    assert refusal_reasons(answer) == [RefusalReason.HEADER_UNKNOWN]
    assert harness.snapshot() == before and step.persist == []
    # Voted for, then restarted: the header is forgotten (soft state), the full one works.
    harness.ask(CoreRequest(headers=(header,)))
    rebuilt = harness.rebuilt()
    named = _answer_at(rebuilt, CoreRequest(certified=(by_digest(certificate),)), 0)
    assert refusal_reasons(named) == [RefusalReason.HEADER_UNKNOWN]
    assert header.digest() not in rebuilt.certificate_digests()
    _answer_at(rebuilt, CoreRequest(certificates=(certificate,)), 0)
    assert header.digest() in rebuilt.certificate_digests()


def test_a_certificate_named_by_digest_still_needs_a_quorum_of_valid_votes() -> None:
    harness = Harness()
    header = sign_header(KEYS[1], 1, (b"tx",), ())
    other = sign_header(KEYS[2], 1, (b"tx",), ())
    harness.ask(CoreRequest(headers=(header, other)))
    certificate = certify(header)
    before = harness.snapshot()
    too_few = CertifiedDigest(header_digest=header.digest(), votes=certificate.votes[:1])
    moved = CertifiedDigest(header_digest=header.digest(), votes=certify(other).votes)
    _, answer = harness.ask(CoreRequest(certified=(too_few,)))
    assert refusal_reasons(answer) == [RefusalReason.NOT_ENOUGH_VOTES]
    _, answer = harness.ask(CoreRequest(certified=(moved,)))
    assert refusal_reasons(answer) == [RefusalReason.BAD_SIGNATURE]
    assert harness.snapshot() == before


def _raw(step: Step) -> list[bytes]:
    return [record.value for record in step.persist if record.value is not None]


def test_a_vote_is_persisted_in_the_step_that_returns_it() -> None:
    harness = Harness()
    header = sign_header(KEYS[1], 1, (b"tx",), ())
    step, answer = harness.ask(CoreRequest(headers=(header,)))
    vote = next(v for v in answer.votes if v.header_digest == header.digest())
    assert vote.has_valid_signature() and vote.voter == KEYS[0].node_id
    assert any(msgspec.msgpack.encode(vote) in raw for raw in _raw(step))
    # The same header again: the same vote, nothing new to persist.
    step, again = harness.ask(CoreRequest(headers=(header,)))
    assert vote in again.votes
    assert step.persist == []


def test_quorum_of_certificates_advances_the_round_and_names_them_as_parents() -> None:
    harness = Harness()
    round_one = certified_round(1, ())
    _, answer = harness.ask(CoreRequest(certificates=tuple(round_one[:2])))
    assert answer.round == 1, "two of four certificates are not a quorum"
    _, answer = harness.ask(CoreRequest(certificates=(round_one[2],)))
    assert answer.round == 2
    assert answer.header is not None and answer.header.round == 2
    assert tuple(sorted(answer.header.parents)) == digests(round_one[:3])


def test_future_certificates_are_accepted_only_with_their_checked_chain() -> None:
    harness = Harness()
    round_one = certified_round(1, ())
    round_two = certified_round(2, digests(round_one))
    round_three = certified_round(3, digests(round_two))
    before = harness.snapshot()
    _, answer = harness.ask(CoreRequest(certificates=(round_three[0],)))
    assert refusal_reasons(answer) == [RefusalReason.MISSING_PARENTS]
    assert set(answer.refusals[0].missing) == set(digests(round_two))
    assert harness.snapshot()[1:] == before[1:]
    # The whole chain, carried newest first: the core sorts by round and accepts it all.
    chain = tuple(reversed(round_one + round_two + round_three))
    _, answer = harness.ask(CoreRequest(certificates=chain))
    assert RefusalReason.MISSING_PARENTS not in refusal_reasons(answer)
    assert answer.round == 4


# ---------------------------------------------------------------- bad input from drivers


def bad_headers(harness: Harness) -> list[tuple[Header, RefusalReason]]:
    """Headers a correct core must refuse, with the reason (after round 1 is certified)."""
    round_one = certified_round(1, (), KEYS[:3])  # KEYS[3] has no round-1 header yet
    harness.ask(CoreRequest(certificates=tuple(round_one)))
    parents = digests(round_one)
    good = sign_header(KEYS[2], 2, (b"tx",), parents)
    return [
        (msgspec.structs.replace(good, transactions=(b"changed",)), RefusalReason.BAD_SIGNATURE),
        (sign_header(OUTSIDER, 2, (), parents), RefusalReason.UNKNOWN_CREATOR),
        (sign_header(KEYS[2], 2, (), parents[:2]), RefusalReason.TOO_FEW_PARENTS),
        (sign_header(KEYS[2], 2, (), ()), RefusalReason.TOO_FEW_PARENTS),
        (sign_header(KEYS[2], 2, (), (*parents[:2], b"\x07" * 32)), RefusalReason.MISSING_PARENTS),
        (sign_header(KEYS[2], 2, (), (parents[0], *parents[:2])), RefusalReason.DUPLICATE_PARENT),
        (sign_header(KEYS[3], 1, (), parents), RefusalReason.PARENTS_IN_FIRST_ROUND),
        (sign_header(KEYS[2], 0, (), ()), RefusalReason.ROUND_ZERO),
        (sign_header(KEYS[2], 3, (), parents), RefusalReason.PARENT_WRONG_ROUND),
        (
            sign_header(KEYS[2], 2, (b"x" * 4000, b"y" * 4000), parents),
            RefusalReason.BATCH_TOO_LARGE,
        ),
    ]


def test_bad_headers_are_refused_with_a_typed_reason_and_change_nothing() -> None:
    harness = Harness(config=TuskConfig(max_batch_bytes=4096))
    for header, reason in bad_headers(harness):
        harness.ask(CoreRequest())  # own header of the current round already exists
        before = harness.snapshot()
        step, answer = harness.ask(CoreRequest(headers=(header,)))
        assert refusal_reasons(answer) == [reason], reason
        assert all(vote.header_digest != header.digest() for vote in answer.votes)
        assert step.persist == [] and step.events == []
        assert harness.snapshot() == before


def bad_certificates() -> list[tuple[Certificate, RefusalReason]]:
    header = sign_header(KEYS[1], 1, (b"tx",), ())
    good = certify(header)
    forged_vote = msgspec.structs.replace(good.votes[0], signature=good.votes[1].signature)
    other = sign_header(KEYS[1], 1, (b"other",), ())
    return [
        (certify(header, KEYS[:2]), RefusalReason.NOT_ENOUGH_VOTES),
        (
            msgspec.structs.replace(good, votes=(*good.votes[:2], good.votes[0])),
            RefusalReason.DUPLICATE_VOTER,
        ),
        (
            msgspec.structs.replace(good, votes=(forged_vote, *good.votes[1:])),
            RefusalReason.BAD_SIGNATURE,
        ),
        (msgspec.structs.replace(good, header=other), RefusalReason.BAD_SIGNATURE),
        (certify(header, [*KEYS[:2], OUTSIDER]), RefusalReason.UNKNOWN_VOTER),
        (certify(sign_header(OUTSIDER, 1, (), ())), RefusalReason.UNKNOWN_CREATOR),
        (
            certify(msgspec.structs.replace(header, signature=other.signature)),
            RefusalReason.BAD_SIGNATURE,
        ),
    ]


def test_bad_certificates_are_refused_with_a_typed_reason_and_change_nothing() -> None:
    harness = Harness()
    harness.ask(CoreRequest())
    for certificate, reason in bad_certificates():
        before = harness.snapshot()
        step, answer = harness.ask(CoreRequest(certificates=(certificate,)))
        assert refusal_reasons(answer) == [reason], reason
        assert step.persist == [] and step.events == []
        assert harness.snapshot() == before


def test_duplicate_certificates_and_replayed_requests_change_nothing() -> None:
    harness = Harness()
    round_one = certified_round(1, ())
    header = sign_header(KEYS[3], 2, (), digests(round_one))
    request = CoreRequest(certificates=tuple(round_one), headers=(header,))
    _, first = harness.ask(request)
    before = harness.snapshot()
    step, replayed = harness.ask(request)
    assert refusal_reasons(replayed) == [RefusalReason.ALREADY_KNOWN] * 4
    assert step.persist == [] and step.events == []
    assert harness.snapshot() == before
    assert set(replayed.votes) == set(first.votes)


def test_malformed_requests_are_answered_and_change_nothing() -> None:
    harness = Harness()
    harness.ask(CoreRequest())
    before = harness.snapshot()
    for body in (b"garbage", None, 42, sign_header(KEYS[1], 1, (), ())):
        step, answer = harness.ask(body)
        assert isinstance(answer, CoreAnswer) and answer.has_valid_signature()
        assert refusal_reasons(answer) == [RefusalReason.MALFORMED_REQUEST]
        assert step.persist == []
    assert harness.snapshot() == before


# ---------------------------------------------------------------- equivocation


def test_second_header_for_one_slot_is_refused_and_kept_as_evidence() -> None:
    harness = Harness()
    first = sign_header(KEYS[2], 1, (b"a",), ())
    second = sign_header(KEYS[2], 1, (b"b",), ())
    _, answer = harness.ask(CoreRequest(headers=(first,)))
    vote = next(v for v in answer.votes if v.header_digest == first.digest())
    step, answer = harness.ask(CoreRequest(headers=(second,)))
    assert refusal_reasons(answer) == [RefusalReason.EQUIVOCATION]
    assert all(v.header_digest != second.digest() for v in answer.votes)
    detected = [event for event in step.events if isinstance(event, EquivocationDetected)]
    assert len(detected) == 1 and detected[0].evidence.is_valid()
    assert {detected[0].evidence.first.digest(), detected[0].evidence.second.digest()} == {
        first.digest(),
        second.digest(),
    }
    assert step.persist, "the evidence is persisted"
    # After a restart the vote and the evidence are still there; nothing is signed twice.
    rebuilt = TuskCore(KEYS[0], COMMITTEE, dict(harness.storage))
    assert rebuilt.evidence == harness.core.evidence
    step = rebuilt.handle(RequestReceived("d", 1, CoreRequest(headers=(second, first))), 0)
    reply = step.outgoing[0]
    assert isinstance(reply, Reply)
    assert refusal_reasons(reply.body) == [RefusalReason.EQUIVOCATION]
    assert vote in reply.body.votes
    assert step.persist == [] and step.events == []


def test_a_header_conflicting_with_a_certified_one_is_evidence_too() -> None:
    harness = Harness()
    certified = certify(sign_header(KEYS[3], 1, (b"a",), ()))
    twin = sign_header(KEYS[3], 1, (b"b",), ())
    step, answer = harness.ask(CoreRequest(certificates=(certified,), headers=(twin,)))
    assert refusal_reasons(answer) == [RefusalReason.EQUIVOCATION]
    assert any(isinstance(event, EquivocationDetected) for event in step.events)


def test_two_certificates_for_one_slot_are_refused_and_kept_as_proof_of_double_votes() -> None:
    harness = Harness()
    first = certify(sign_header(KEYS[3], 1, (b"a",), ()), KEYS[:3])
    second = certify(sign_header(KEYS[3], 1, (b"b",), ()), KEYS[1:])
    harness.ask(CoreRequest(certificates=(first,)))
    held = harness.core.certificate_digests()
    step, answer = harness.ask(CoreRequest(certificates=(second,)))
    assert refusal_reasons(answer) == [RefusalReason.CONFLICTING_CERTIFICATE]
    assert harness.core.certificate_digests() == held
    detected = [event for event in step.events if isinstance(event, CertificateConflictDetected)]
    assert len(detected) == 1 and detected[0].evidence.is_valid()
    # KEYS[1] and KEYS[2] voted in both: each signed votes for two headers of one slot.
    assert detected[0].evidence.double_voters() == tuple(sorted((KEYS[1].node_id, KEYS[2].node_id)))
    assert harness.rebuilt().conflicts == harness.core.conflicts
    step, answer = harness.ask(CoreRequest(certificates=(second,)))
    assert refusal_reasons(answer) == [RefusalReason.CONFLICTING_CERTIFICATE]
    assert step.events == [] and step.persist == [], "kept once"


def _certified_chain(rounds: int) -> list[list[Certificate]]:
    """Rounds 1..`rounds`, each certified by every member, each naming the previous."""
    chain: list[list[Certificate]] = []
    parents: tuple[bytes, ...] = ()
    for round_number in range(1, rounds + 1):
        chain.append(certified_round(round_number, parents))
        parents = digests(chain[-1])
    return chain


def test_evidence_is_kept_for_at_most_the_first_k_equivocations_per_creator() -> None:
    # One proof shows a creator faulty: an equivocation in every round must not grow the
    # core's memory and storage round after round.
    harness = Harness()
    rounds = MAX_EVIDENCE_PER_CREATOR + 3
    chain = _certified_chain(rounds)
    harness.ask(CoreRequest(certificates=tuple(c for layer in chain for c in layer)))
    detected: list[EquivocationDetected] = []
    for round_number in range(1, rounds + 1):
        twin = sign_header(KEYS[2], round_number, (b"twin",), ())
        step, answer = harness.ask(CoreRequest(headers=(twin,)))
        assert refusal_reasons(answer) == [RefusalReason.EQUIVOCATION], "still refused"
        detected += [event for event in step.events if isinstance(event, EquivocationDetected)]
    kept_rounds = list(range(1, MAX_EVIDENCE_PER_CREATOR + 1))
    assert [event.evidence.first.round for event in detected] == kept_rounds
    assert sorted(e.first.round for e in harness.core.evidence) == kept_rounds
    equivocations = [v for v in harness.storage.values() if _decodes_as_equivocation(v)]
    assert len(equivocations) == MAX_EVIDENCE_PER_CREATOR
    assert harness.rebuilt().evidence == harness.core.evidence


def _decodes_as_equivocation(value: bytes) -> bool:
    try:
        msgspec.msgpack.decode(value, type=Equivocation)
    except msgspec.DecodeError:
        return False
    return True


def test_evidence_over_the_cap_found_in_storage_is_deleted_by_the_next_step() -> None:
    # Storage written before the cap existed may hold a proof for every round.
    harness = Harness()
    first = sign_header(KEYS[2], 1, (b"a",), ())
    harness.ask(CoreRequest(headers=(first,)))
    step, _ = harness.ask(CoreRequest(headers=(sign_header(KEYS[2], 1, (b"b",), ()),)))
    (record,) = [r for r in step.persist if _decodes_as_equivocation(r.value or b"")]
    prefix = record.key[: -(8 + 32)]  # then the round (8 bytes) and the creator
    storage = dict(harness.storage)
    extra_keys = []
    for round_number in range(2, MAX_EVIDENCE_PER_CREATOR + 4):
        pair = Equivocation(
            first=sign_header(KEYS[2], round_number, (b"a",), ()).stub(),
            second=sign_header(KEYS[2], round_number, (b"b",), ()).stub(),
        )
        key = prefix + round_number.to_bytes(8, "big") + KEYS[2].node_id
        storage[key] = canonical_bytes(pair)
        extra_keys.append(key)
    rebuilt = TuskCore(KEYS[0], COMMITTEE, storage)
    kept_rounds = list(range(1, MAX_EVIDENCE_PER_CREATOR + 1))
    assert sorted(e.first.round for e in rebuilt.evidence) == kept_rounds
    step = rebuilt.handle(RequestReceived("d", 1, CoreRequest()), 0)
    deleted = {r.key for r in step.persist if r.value is None}
    assert deleted == set(extra_keys[MAX_EVIDENCE_PER_CREATOR - 1 :])


def test_certificate_conflicts_are_kept_for_at_most_k_slots_per_creator() -> None:
    harness = Harness()
    rounds = MAX_EVIDENCE_PER_CREATOR + 2
    chain = _certified_chain(rounds)
    harness.ask(CoreRequest(certificates=tuple(c for layer in chain for c in layer)))
    detected: list[CertificateConflictDetected] = []
    for round_number in range(1, rounds + 1):
        parents = digests(chain[round_number - 2]) if round_number > 1 else ()
        twin = certify(sign_header(KEYS[3], round_number, (b"twin",), parents), KEYS[1:])
        step, answer = harness.ask(CoreRequest(certificates=(twin,)))
        assert refusal_reasons(answer) == [RefusalReason.CONFLICTING_CERTIFICATE]
        events = [event for event in step.events if isinstance(event, CertificateConflictDetected)]
        detected += events
    assert len(detected) == MAX_EVIDENCE_PER_CREATOR
    assert len(harness.core.conflicts) == MAX_EVIDENCE_PER_CREATOR
    assert harness.rebuilt().conflicts == harness.core.conflicts


# ---------------------------------------------------------------- restart and garbage collection


def test_rebuilt_core_answers_exactly_like_the_original() -> None:
    harness = Harness()
    harness.ask(SubmitRequest(transactions=(b"t1", b"t2", b"t3")))
    round_one = certified_round(1, ())
    harness.ask(CoreRequest(certificates=tuple(round_one[:3])))
    harness.ask(CoreRequest(headers=(sign_header(KEYS[1], 2, (), digests(round_one[:3])),)))
    rebuilt = harness.rebuilt()
    assert rebuilt.round == harness.core.round
    assert rebuilt.certificate_digests() == harness.core.certificate_digests()
    assert rebuilt.own_header() == harness.core.own_header()
    assert rebuilt.pending_count == harness.core.pending_count
    follow_up = CoreRequest(
        certificates=(round_one[3],),
        headers=(sign_header(KEYS[2], 2, (), digests(round_one[1:])),),
        since_round=1,
    )
    original = harness.core.handle(RequestReceived("d", 9, follow_up), 0)
    again = rebuilt.handle(RequestReceived("d", 9, follow_up), 0)
    assert original.outgoing == again.outgoing
    assert original.persist == again.persist


def test_client_transactions_are_persisted_then_batched_into_the_next_header() -> None:
    harness = Harness(config=TuskConfig(max_batch_transactions=2))
    _, first = harness.ask(CoreRequest())  # a driver's first call: the committee is new
    assert first.header is not None and first.header.transactions == ()
    step, answer = harness.ask(SubmitRequest(transactions=(b"t1", b"t2", b"t3")))
    assert isinstance(answer, SubmitAnswer) and answer.has_valid_signature()
    assert (answer.accepted, answer.refused, answer.pending) == (3, 0, 3)
    assert {record.value for record in step.persist} == {b"t1", b"t2", b"t3"}
    round_one = certified_round(1, (), KEYS[1:])
    _, answer = harness.ask(CoreRequest(certificates=tuple(round_one)))
    assert answer.header is not None and answer.header.transactions == (b"t1", b"t2")
    assert harness.rebuilt().pending_count == 1
    round_two = certified_round(2, digests(round_one), KEYS[1:])
    _, answer = harness.ask(CoreRequest(certificates=tuple(round_two)))
    assert answer.header is not None and answer.header.transactions == (b"t3",)


def test_batch_of_an_own_header_never_certified_is_proposed_again_after_collection() -> None:
    harness = Harness(config=TuskConfig(gc_depth=2))
    harness.propose(b"orphan")
    _, answer = harness.ask(CoreRequest())
    assert answer.header is not None and answer.header.transactions == (b"orphan",)
    # The other three cores certify rounds 1..8 without this core's round-1 header.
    chain: list[Certificate] = []
    parents: tuple[bytes, ...] = ()
    for round_number in range(1, 9):
        certificates = certified_round(round_number, parents, KEYS[1:], context=context_of(2))
        chain.extend(certificates)
        parents = digests(certificates)
    step, answer = harness.ask(CoreRequest(certificates=tuple(chain)))
    committed = [event for event in step.events if isinstance(event, Committed)]
    assert committed and harness.core.gc_round > 1
    assert b"orphan" not in [tx for event in committed for tx in event.transactions]
    assert answer.header is not None and answer.header.round == 9
    assert answer.header.transactions == (b"orphan",)
    rebuilt = harness.rebuilt()
    assert rebuilt.own_header() == answer.header and rebuilt.pending_count == 0


def test_a_requeued_batch_never_takes_the_pending_queue_over_its_cap() -> None:
    # The own round-1 batch is never certified; by the time collection gives it back,
    # clients have filled the queue: re-adding it would exceed max_pending_transactions,
    # so it is dropped (in batch order, what does not fit) and reported.
    config = TuskConfig(gc_depth=2, max_pending_transactions=2, max_batch_transactions=1)
    harness = Harness(config=config)
    harness.propose(b"orphan")
    _, answer = harness.ask(CoreRequest())
    assert answer.header is not None and answer.header.transactions == (b"orphan",)
    _, submitted = harness.ask(SubmitRequest(transactions=(b"n1", b"n2")))
    assert submitted.accepted == 2
    chain: list[Certificate] = []
    parents: tuple[bytes, ...] = ()
    for round_number in range(1, 9):
        certificates = certified_round(round_number, parents, KEYS[1:], context=context_of(2))
        chain.extend(certificates)
        parents = digests(certificates)
    step, answer = harness.ask(CoreRequest(certificates=tuple(chain)))
    assert harness.core.gc_round > 1
    dropped = [event for event in step.events if isinstance(event, PendingTransactionsDropped)]
    assert [(event.round, event.transactions) for event in dropped] == [(1, (b"orphan",))]
    assert answer.header is not None and answer.header.transactions == (b"n1",)
    assert harness.core.pending_count == 1
    assert harness.rebuilt().pending_count == 1


def test_full_pending_queue_refuses_the_excess() -> None:
    harness = Harness(config=TuskConfig(max_pending_transactions=2))
    harness.ask(CoreRequest())
    _, answer = harness.ask(SubmitRequest(transactions=(b"a", b"b", b"c")))
    assert (answer.accepted, answer.refused, answer.reason) == (2, 1, SubmitRefusal.FULL)


def test_old_rounds_are_collected_and_requests_about_them_change_nothing() -> None:
    world = tusk_world(KEYS, seed=5, drivers=["d"], config=TuskConfig(gc_depth=2))
    early: list[Certificate] = []

    def collected() -> bool:
        return all(world.core(key.node_id, TuskCore).gc_round >= 6 for key in KEYS)

    assert world.step_until(collected, max_steps=4000)
    core = world.core(KEYS[0].node_id, TuskCore)
    storage = world.node(core.node_id).storage
    assert not any(key.startswith(b"tusk/certificate/" + (1).to_bytes(8, "big")) for key in storage)
    assert any(isinstance(event, Committed) for _, event in world.events)
    # A certificate and a header of round 1, valid in every other respect, change nothing.
    early.extend(certified_round(1, (), context=context_of(2)))
    header = sign_header(KEYS[1], 1, (b"late",), (), context=context_of(2))
    step = core.handle(RequestReceived("d", 1, CoreRequest()), 0)  # settle the own header
    before = dict(storage)
    step = core.handle(
        RequestReceived("d", 2, CoreRequest(certificates=(early[0],), headers=(header,))), 0
    )
    reply = step.outgoing[0]
    assert isinstance(reply, Reply)
    assert refusal_reasons(reply.body) == [RefusalReason.ROUND_TOO_OLD] * 2
    assert step.persist == [] and step.events == []
    assert dict(storage) == before


def test_caller_misuse_raises() -> None:
    with pytest.raises(LocalError):
        TuskCore(OUTSIDER, COMMITTEE)
    with pytest.raises(ValueError):
        TuskConfig(gc_depth=1)
    with pytest.raises(ValueError):
        TuskConfig(max_batch_bytes=MAX_BATCH_BYTES + 1)  # would not fit a 4 MiB frame
    with pytest.raises(LocalError):
        TuskCore(KEYS[0], COMMITTEE).handle(Proposed(7), 0)


def test_persist_records_are_plain_bytes() -> None:
    step, _ = Harness().ask(CoreRequest())
    assert all(
        isinstance(record, Persist) and isinstance(record.key, bytes) for record in step.persist
    )


# ---------------------------------------------------------------- pacing


def _answer_at(core: TuskCore, body: Any, now_ms: int) -> CoreAnswer:
    step = core.handle(RequestReceived("driver", 1, body), now_ms)
    reply = step.outgoing[0]
    assert isinstance(reply, Reply) and isinstance(reply.body, CoreAnswer)
    return reply.body


def test_min_header_delay_waits_for_late_parents_until_the_delay_has_passed() -> None:
    # The delay runs from the core's previous header: made at 1_000, the next waits
    # until 1_100 even though round 2's parents are in at 1_040.
    core = TuskCore(KEYS[0], COMMITTEE, config=TuskConfig(min_header_delay_ms=100))
    assert _answer_at(core, CoreRequest(), 1_000).header is not None, "round 1 never waits"
    round_one = certified_round(1, ())
    entered = _answer_at(core, CoreRequest(certificates=tuple(round_one[:3])), 1_040)
    assert entered.round == 2 and entered.header is None
    assert _answer_at(core, CoreRequest(), 1_099).header is None, "still within the delay"
    proposed = _answer_at(core, CoreRequest(), 1_100)
    assert proposed.header is not None and proposed.header.round == 2
    assert tuple(sorted(proposed.header.parents)) == digests(round_one[:3])


def test_a_core_that_learns_two_rounds_at_once_still_proposes() -> None:
    # A core far from the drivers learns round r's quorum and round r + 1's in one
    # answer, every time.  Its delay ran out long ago (it counts from its previous
    # header), so it proposes in the round it lands in instead of skipping it; with the
    # delay counted from entering the round it proposed in no round at all.
    core = TuskCore(KEYS[0], COMMITTEE, config=TuskConfig(min_header_delay_ms=100))
    _answer_at(core, CoreRequest(), 0)
    round_one = certified_round(1, ())
    round_two = certified_round(2, digests(round_one[:3]), KEYS[1:])
    now_ms = 1_000
    answer = _answer_at(core, CoreRequest(certificates=(*round_one[:3], *round_two)), now_ms)
    assert answer.round == 3
    assert answer.header is not None and answer.header.round == 3


def test_an_own_header_nobody_certified_is_shown_again_after_the_round_moved_on() -> None:
    # A core far from the drivers that crashed right after proposing had its round-1
    # header, with a client transaction, learnt by no driver; its round then moved on
    # with the others' certificates and only the current round's header was ever in
    # its answers, so the batch waited gc_depth rounds of its own commits to be queued
    # again (27 s after healing in the simulator run that found it).  The answer now
    # also carries the oldest such header until the driver says it holds it.
    core = TuskCore(KEYS[0], COMMITTEE)
    core.handle(Proposed(b"pay carol 1"), 0)
    first = _answer_at(core, CoreRequest(), 0)
    assert first.header is not None and first.header.transactions == (b"pay carol 1",)
    own = first.header
    round_one = certified_round(1, (), KEYS[1:])
    moved_on = _answer_at(core, CoreRequest(certificates=tuple(round_one)), 10)
    assert moved_on.round == 2
    assert moved_on.late_header == own
    held = _answer_at(core, CoreRequest(late_held=own.digest()), 20)
    assert held.late_header is None, "not sent again to a driver that holds it"
    certified = _answer_at(core, CoreRequest(certificates=(certify(own, KEYS[:3]),)), 30)
    assert certified.late_header is None, "certified: nothing late any more"


def test_min_header_delay_ends_early_once_every_members_parent_is_in() -> None:
    core = TuskCore(KEYS[0], COMMITTEE, config=TuskConfig(min_header_delay_ms=100))
    _answer_at(core, CoreRequest(), 1_000)
    round_one = certified_round(1, ())
    assert _answer_at(core, CoreRequest(certificates=tuple(round_one[:3])), 1_010).header is None
    late = _answer_at(core, CoreRequest(certificates=(round_one[3],)), 1_040)
    assert late.header is not None, "nobody left to wait for"
    assert tuple(sorted(late.header.parents)) == digests(round_one)


def test_an_idle_paced_committee_makes_no_round_until_there_is_work() -> None:
    # Before, an idle committee made a round per delay (about 28 empty certificates a
    # second per core in the report), every core's store growing for nothing.  Now a
    # paced core with nothing to order proposes nothing, until another core starts its
    # round (its header comes for a vote) or a transaction arrives.
    core = TuskCore(KEYS[0], COMMITTEE, config=TuskConfig(min_header_delay_ms=100))
    _answer_at(core, CoreRequest(), 1_000)
    empty_round = [certify(sign_header(key, 1, (), ())) for key in KEYS]
    assert _answer_at(core, CoreRequest(certificates=tuple(empty_round)), 1_010).header is None
    assert _answer_at(core, CoreRequest(), 1_099).header is None
    assert _answer_at(core, CoreRequest(), 1_100).header is None, "idle: no round"
    assert _answer_at(core, CoreRequest(), 60_000).header is None, "still idle"
    started = sign_header(KEYS[1], 2, (), digests(empty_round))
    answer = _answer_at(core, CoreRequest(headers=(started,)), 60_001)
    assert answer.header is not None and answer.header.round == 2, "completes the round"
    # Round 2 completes; round 3 is idle again until a transaction arrives.
    round_two = [certify(sign_header(key, 2, (), digests(empty_round))) for key in KEYS[1:]]
    assert _answer_at(core, CoreRequest(certificates=tuple(round_two)), 60_200).round == 3
    assert _answer_at(core, CoreRequest(), 61_000).header is None
    core.handle(Proposed(b"work"), 61_001)
    answer = _answer_at(core, CoreRequest(), 61_002)
    assert answer.header is not None and answer.header.transactions == (b"work",)


def test_min_header_delay_ends_early_while_held_transactions_wait_for_their_commit() -> None:
    # Round 1 carries transactions; round 2 is empty.  Nothing is delivered until a
    # round-3 quorum supports the round-2 leader, so round 3 is worth hurrying.
    core = TuskCore(KEYS[0], COMMITTEE, config=TuskConfig(min_header_delay_ms=100))
    _answer_at(core, CoreRequest(), 0)
    round_one = certified_round(1, ())
    empty_round_two = [certify(sign_header(key, 2, (), digests(round_one))) for key in KEYS]
    carried = CoreRequest(certificates=tuple(round_one + empty_round_two))
    answer = _answer_at(core, carried, 1_000)
    assert answer.round == 3 and core.committed_count == 0
    assert answer.header is not None and answer.header.round == 3


def test_a_restarted_core_waits_a_whole_delay_before_proposing() -> None:
    config = TuskConfig(min_header_delay_ms=100)
    harness = Harness(config=config)
    harness.ask(CoreRequest())
    harness.ask(CoreRequest(certificates=tuple(certified_round(1, ())[:3])))
    rebuilt = harness.rebuilt()
    assert rebuilt.round == 2 and rebuilt.own_header() is None
    assert _answer_at(rebuilt, CoreRequest(), 50_000).header is None
    assert _answer_at(rebuilt, CoreRequest(), 50_099).header is None
    assert _answer_at(rebuilt, CoreRequest(), 50_100).header is not None


# ---------------------------------------------------------------- weak parents


def test_an_orphaned_certificate_becomes_a_weak_parent_of_the_next_header() -> None:
    harness = Harness()
    round_one = certified_round(1, ())
    orphan = round_one[3]  # nobody in round 2 takes it as a parent
    round_two = certified_round(2, digests(round_one[:3]), KEYS[1:])
    _, answer = harness.ask(CoreRequest(certificates=(*round_one, *round_two)))
    assert answer.round == 3 and answer.header is not None
    assert tuple(sorted(answer.header.parents)) == digests(round_two)
    assert answer.header.weak_parents == (WeakParent(round=1, digest=orphan.header.digest()),)
    assert answer.header.stub().has_valid_signature(), "the signature covers weak parents"


def test_bad_weak_parents_are_refused_with_a_typed_reason_and_change_nothing() -> None:
    harness = Harness()
    round_one = certified_round(1, ())
    round_two = certified_round(2, digests(round_one[:3]), KEYS[1:])
    harness.ask(CoreRequest(certificates=(*round_one, *round_two)))
    parents = digests(round_two)
    orphan = round_one[3].header.digest()
    unknown = b"\x42" * 32
    cases = [
        # Not below round - 1: a weak parent is older than the parents.
        ((WeakParent(round=2, digest=orphan),), RefusalReason.PARENT_WRONG_ROUND),
        ((WeakParent(round=0, digest=orphan),), RefusalReason.PARENT_WRONG_ROUND),
        ((WeakParent(round=1, digest=unknown),), RefusalReason.MISSING_PARENTS),
        ((WeakParent(round=1, digest=orphan),) * 2, RefusalReason.DUPLICATE_PARENT),
        ((WeakParent(round=1, digest=parents[0]),), RefusalReason.DUPLICATE_PARENT),
    ]
    for weak_parents, reason in cases:
        header = sign_header(KEYS[2], 3, (b"x",), parents, weak_parents)
        before = harness.snapshot()
        _, answer = harness.ask(CoreRequest(headers=(header,)))
        assert refusal_reasons(answer) == [reason], weak_parents
        assert all(vote.header_digest != header.digest() for vote in answer.votes)
        assert harness.snapshot() == before
    good = sign_header(KEYS[2], 3, (b"x",), parents, (WeakParent(round=1, digest=orphan),))
    _, answer = harness.ask(CoreRequest(headers=(good,)))
    assert refusal_reasons(answer) == [], "a correct weak parent is voted for"
    assert any(vote.header_digest == good.digest() for vote in answer.votes)


def _core_with_a_floor() -> tuple[Harness, list[list[Certificate]]]:
    """Core 1 after rounds 1..12 certified by cores 1-3 (core 0 silent), gc_depth 4:
    it has committed and collected, so its floor is well above round 1."""
    harness = Harness(keys=KEYS[1], config=TuskConfig(gc_depth=4))
    rounds: list[list[Certificate]] = []
    parents: tuple[bytes, ...] = ()
    for round_number in range(1, 13):
        rounds.append(certified_round(round_number, parents, KEYS[1:], context=context_of(4)))
        parents = digests(rounds[-1])
    harness.ask(CoreRequest(certificates=tuple(c for r in rounds for c in r)))
    assert harness.core.gc_round >= 4
    return harness, rounds


def test_a_made_up_weak_parent_just_under_the_voters_floor_gets_no_vote() -> None:
    # The weak-parent attack: a Byzantine creator states a digest that names nothing at
    # one round below the voter's collection floor.  Skipping weak parents below the
    # own floor, this voter voted, while a correct core with a lower floor refused it
    # for the missing parent and could then never store the certificate.  A voter now
    # checks every weak parent; one it has collected cannot be checked: no vote.
    harness, rounds = _core_with_a_floor()
    floor = harness.core.gc_round
    round_number = floor + 2  # above the floor: votable in every other respect
    made_up = WeakParent(round=floor - 1, digest=b"\x66" * 32)
    parents = digests(rounds[round_number - 2])
    header = sign_header(KEYS[0], round_number, (b"x",), parents, (made_up,), context=context_of(4))
    before = harness.snapshot()
    _, answer = harness.ask(CoreRequest(headers=(header,)))
    assert refusal_reasons(answer) == [RefusalReason.ROUND_TOO_OLD]
    assert all(vote.header_digest != header.digest() for vote in answer.votes)
    assert harness.snapshot() == before
    # The same header without the made-up weak parent is voted for.
    plain = sign_header(KEYS[0], round_number, (b"x",), parents, context=context_of(4))
    _, answer = harness.ask(CoreRequest(headers=(plain,)))
    assert refusal_reasons(answer) == []
    assert any(vote.header_digest == plain.digest() for vote in answer.votes)


def test_a_weak_parent_more_than_gc_depth_below_its_header_is_refused_by_every_core() -> None:
    # No leader that delivers a header of round r reaches below r - gc_depth, so such a
    # weak parent is refused from the header alone, the same way by every core, whatever
    # its floor: a fresh core (floor 0) and one that has collected.
    harness, rounds = _core_with_a_floor()
    round_number = harness.core.gc_round + 6
    stated = round_number - 4 - 1  # gc_depth is 4
    weak = WeakParent(round=stated, digest=rounds[stated - 1][0].header.digest())
    parents = digests(rounds[round_number - 2])
    header = sign_header(KEYS[0], round_number, (b"x",), parents, (weak,), context=context_of(4))
    _, answer = harness.ask(CoreRequest(headers=(header,)))
    assert refusal_reasons(answer) == [RefusalReason.PARENT_WRONG_ROUND]
    fresh = Harness(keys=KEYS[1], config=TuskConfig(gc_depth=4))
    _, answer = fresh.ask(CoreRequest(certificates=tuple(c for r in rounds for c in r)[:12]))
    _, answer = fresh.ask(CoreRequest(certificates=(certify(header),)))
    assert refusal_reasons(answer) == [RefusalReason.PARENT_WRONG_ROUND]


def test_weak_parents_named_by_a_core_reach_back_half_of_gc_depth_at_most() -> None:
    # Voters must hold every weak parent; naming only recent orphans keeps a header
    # votable by cores that have committed further (a higher floor).
    harness = Harness(keys=KEYS[0], config=TuskConfig(gc_depth=8))
    round_one = certified_round(1, (), context=context_of(8))
    old_orphan = round_one[0]  # core 0's own round-1 block: nobody builds on it
    chain: list[Certificate] = [*round_one]
    parents = digests(round_one[1:])
    for round_number in range(2, 8):
        certificates = certified_round(round_number, parents, KEYS[1:], context=context_of(8))
        chain.extend(certificates)
        parents = digests(certificates)
    _, answer = harness.ask(CoreRequest(certificates=tuple(chain)))
    assert answer.header is not None and answer.header.round == 8
    named = {weak.digest for weak in answer.header.weak_parents}
    assert all(weak.round >= 8 - 4 for weak in answer.header.weak_parents)
    assert old_orphan.header.digest() not in named


def _chain(rounds: int, context: bytes) -> list[list[Certificate]]:
    chain: list[list[Certificate]] = []
    parents: tuple[bytes, ...] = ()
    for round_number in range(1, rounds + 1):
        chain.append(certified_round(round_number, parents, KEYS[1:], context=context))
        parents = digests(chain[-1])
    return chain


def test_a_core_shown_the_committee_far_ahead_says_so_and_signs_no_receipts() -> None:
    # Before, a core that had lost touch for longer than gc_depth rounds kept signing
    # receipts for transactions it could never get committed, and said nothing.  A
    # checked certificate more than gc_depth rounds above its round now makes it
    # report FellBehind and refuse client transactions until it is back within reach.
    harness = Harness(keys=KEYS[0], config=TuskConfig(gc_depth=4))
    chain = _chain(8, context_of(4))
    far = chain[-1][0]
    unsigned = tuple(msgspec.structs.replace(vote, signature=bytes(64)) for vote in far.votes)
    forged = msgspec.structs.replace(far, votes=unsigned)
    step, _ = harness.ask(CoreRequest(certificates=(forged,)))
    assert not harness.core.behind and not step.events, "forged votes prove nothing"
    step, _ = harness.ask(CoreRequest(certificates=(far,)))
    assert harness.core.behind
    assert [type(event) for event in step.events] == [FellBehind]
    _, receipt = harness.ask(SubmitRequest(transactions=(b"t1",)))
    assert (receipt.accepted, receipt.refused) == (0, 1)
    assert harness.core.pending_count == 0
    # The drivers still hold the chain: the core stores it and is back within reach.
    step, _ = harness.ask(CoreRequest(certificates=tuple(c for r in chain[:7] for c in r)))
    assert not harness.core.behind
    assert CaughtUp in [type(event) for event in step.events]
    _, receipt = harness.ask(SubmitRequest(transactions=(b"t2",)))
    assert receipt.accepted == 1
