"""Tusk wire messages: bounds, codec round trips, domain-separated signatures, evidence."""

from __future__ import annotations

import msgspec
import pytest

from synod.crypto import KeyPair, verify
from synod.tusk.messages import (
    CODEC,
    DOMAIN_HEADER,
    DOMAIN_VOTE,
    MAX_BATCH_TRANSACTIONS,
    MAX_TRANSACTION_BYTES,
    Certificate,
    CertificateConflict,
    CertificateRef,
    CoreAnswer,
    CoreRequest,
    Equivocation,
    Header,
    Refusal,
    RefusalReason,
    SubmitAnswer,
    SubmitRequest,
    WeakParent,
    make_certificate,
    sign_answer,
    sign_header,
    sign_submit_answer,
    sign_vote,
)
from synod.wire import DecodeError

KEYS = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(4)]


def test_every_message_survives_the_codec() -> None:
    header = sign_header(KEYS[0], 1, (b"tx-1", b"tx-2"), ())
    votes = [sign_vote(key, header.digest(), 1, header.creator) for key in KEYS[:3]]
    certificate = make_certificate(header, votes)
    request = CoreRequest(certificates=(certificate,), headers=(header,), wanted=(bytes(32),))
    answer = sign_answer(
        KEYS[1],
        CoreAnswer(
            core=KEYS[1].node_id,
            request_digest=bytes(32),
            round=2,
            header=header,
            votes=tuple(votes),
            known=(CertificateRef(round=1, creator=header.creator, digest=header.digest()),),
            certificates=(certificate,),
            refusals=(Refusal(digest=bytes(32), reason=RefusalReason.MISSING_PARENTS),),
        ),
    )
    submit = SubmitRequest(transactions=(b"a", b"b"))
    submit_answer = sign_submit_answer(
        KEYS[2],
        SubmitAnswer(
            core=KEYS[2].node_id, request_digest=bytes(32), accepted=2, refused=0, pending=2
        ),
    )
    other = sign_header(KEYS[0], 1, (b"other",), ())
    evidence = Equivocation(first=header.stub(), second=other.stub())
    for message in (
        header,
        votes[0],
        certificate,
        request,
        answer,
        submit,
        submit_answer,
        evidence,
    ):
        assert CODEC.decode(CODEC.encode(message)) == message
    assert CODEC.decode(CODEC.encode(answer)).has_valid_signature()  # type: ignore[union-attr]


def test_oversized_batches_and_transactions_are_refused_by_the_decoder() -> None:
    too_many = sign_header(KEYS[0], 1, tuple(b"x" for _ in range(MAX_BATCH_TRANSACTIONS + 1)), ())
    with pytest.raises(DecodeError):
        CODEC.decode(CODEC.encode(too_many))
    too_long = sign_header(KEYS[0], 1, (b"x" * (MAX_TRANSACTION_BYTES + 1),), ())
    with pytest.raises(DecodeError):
        CODEC.decode(CODEC.encode(too_long))


def test_malformed_bytes_and_unknown_reasons_raise_only_decode_error() -> None:
    answer = CoreAnswer(
        core=KEYS[0].node_id,
        request_digest=bytes(32),
        round=1,
        header=None,
        votes=(),
        known=(),
        certificates=(),
        refusals=(Refusal(digest=bytes(32), reason=RefusalReason.EQUIVOCATION),),
    )
    encoded = bytearray(CODEC.encode(answer))
    # The refusal is [tag, digest, reason, missing]: the reason byte precedes an empty array.
    position = encoded.index(b"\x0d\x90", encoded.index(b"tusk.Refusal"))
    encoded[position] = 99  # not a RefusalReason
    for garbage in (b"", b"\xc1", b"\x93\xa4nope\x01\x02", bytes(encoded)):
        with pytest.raises(DecodeError):
            CODEC.decode(garbage)
    encoded[position] = RefusalReason.EQUIVOCATION
    assert CODEC.decode(bytes(encoded)) == answer


def test_header_digest_covers_every_signed_field() -> None:
    base = sign_header(KEYS[0], 2, (b"tx",), (bytes(32),))
    variants = [
        sign_header(KEYS[1], 2, (b"tx",), (bytes(32),)),
        sign_header(KEYS[0], 3, (b"tx",), (bytes(32),)),
        sign_header(KEYS[0], 2, (b"ty",), (bytes(32),)),
        sign_header(KEYS[0], 2, (b"tx",), (b"\x01" * 32,)),
    ]
    assert len({base.digest()} | {variant.digest() for variant in variants}) == 5
    tampered = msgspec.structs.replace(base, transactions=(b"ty",))
    assert not tampered.stub().has_valid_signature()
    assert base.stub().has_valid_signature()


def test_signatures_are_domain_separated() -> None:
    header = sign_header(KEYS[0], 1, (), ())
    vote = sign_vote(KEYS[0], header.digest(), 1, header.creator)
    assert vote.has_valid_signature()
    assert verify(KEYS[0].node_id, DOMAIN_HEADER, header.digest(), header.signature)
    # The header signature is not a vote, and a vote is not a header signature.
    assert not verify(KEYS[0].node_id, DOMAIN_VOTE, header.digest(), header.signature)
    forged = msgspec.structs.replace(vote, signature=header.signature)
    assert not forged.has_valid_signature()


def test_answer_signature_covers_the_whole_answer() -> None:
    answer = sign_answer(
        KEYS[0],
        CoreAnswer(
            core=KEYS[0].node_id,
            request_digest=bytes(32),
            round=3,
            header=None,
            votes=(),
            known=(),
            certificates=(),
            refusals=(),
        ),
    )
    assert answer.has_valid_signature()
    assert not msgspec.structs.replace(answer, round=4).has_valid_signature()
    with pytest.raises(ValueError):
        sign_answer(KEYS[1], answer)


def test_equivocation_evidence_needs_one_slot_two_digests_two_signatures() -> None:
    first = sign_header(KEYS[0], 5, (b"a",), ())
    second = sign_header(KEYS[0], 5, (b"b",), ())
    assert Equivocation(first=first.stub(), second=second.stub()).is_valid()
    assert not Equivocation(first=first.stub(), second=first.stub()).is_valid()
    other_round = sign_header(KEYS[0], 6, (b"b",), ())
    assert not Equivocation(first=first.stub(), second=other_round.stub()).is_valid()
    other_creator = sign_header(KEYS[1], 5, (b"b",), ())
    assert not Equivocation(first=first.stub(), second=other_creator.stub()).is_valid()
    unsigned = msgspec.structs.replace(second.stub(), signature=bytes(64))
    assert not Equivocation(first=first.stub(), second=unsigned).is_valid()


def test_certificate_votes_are_in_canonical_voter_order_without_repeats() -> None:
    header = sign_header(KEYS[0], 1, (), ())
    votes = [sign_vote(key, header.digest(), 1, header.creator) for key in reversed(KEYS)]
    certificate = make_certificate(header, votes + votes[:1])
    voters = [vote.voter for vote in certificate.votes]
    assert voters == sorted(key.node_id for key in KEYS)
    assert all(certificate.vote_valid(header.digest(), vote) for vote in certificate.votes)


def test_certificate_conflict_needs_one_slot_two_headers_and_valid_signatures() -> None:
    def certified(header: Header, voters: list[KeyPair]) -> Certificate:
        votes = [sign_vote(key, header.digest(), header.round, header.creator) for key in voters]
        return make_certificate(header, votes)

    first = certified(sign_header(KEYS[0], 3, (b"a",), ()), KEYS[:3])
    second = certified(sign_header(KEYS[0], 3, (b"b",), ()), KEYS[1:])
    conflict = CertificateConflict(first=first, second=second)
    assert conflict.is_valid()
    assert conflict.double_voters() == tuple(sorted((KEYS[1].node_id, KEYS[2].node_id)))
    assert not CertificateConflict(first=first, second=first).is_valid()
    other_round = certified(sign_header(KEYS[0], 4, (b"b",), ()), KEYS[1:])
    assert not CertificateConflict(first=first, second=other_round).is_valid()
    forged_vote = msgspec.structs.replace(second.votes[0], signature=second.votes[1].signature)
    forged = msgspec.structs.replace(second, votes=(forged_vote, *second.votes[1:]))
    assert not CertificateConflict(first=first, second=forged).is_valid()
    assert CODEC.decode(CODEC.encode(conflict)) == conflict


def test_header_signature_covers_weak_parents() -> None:
    weak = (WeakParent(round=1, digest=b"\x01" * 32),)
    header = sign_header(KEYS[0], 3, (b"a",), (b"\x02" * 32,), weak)
    assert header.stub().has_valid_signature()
    assert CODEC.decode(CODEC.encode(header)) == header
    moved = msgspec.structs.replace(
        header, weak_parents=(WeakParent(round=1, digest=b"\x03" * 32),)
    )
    assert moved.digest() != header.digest()
    assert not moved.stub().has_valid_signature()
    dropped = msgspec.structs.replace(header, weak_parents=())
    assert not dropped.stub().has_valid_signature()
