"""What one request can make a core spend: signature checks are bounded per request, and
cheap checks (duplicates, evidence already held) come before them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import synod.tusk.core as tusk_core
from synod.core import Reply, RequestReceived
from synod.crypto import KeyPair
from synod.quorum.committee import Committee
from synod.tusk.core import TuskCore
from synod.tusk.messages import CoreRequest, RefusalReason, sign_header

KEYS = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(4)]
COMMITTEE = Committee.equal_weights(key.node_id for key in KEYS)


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the header signature checks the core makes."""
    count = [0]
    original = tusk_core.header_signature_valid

    def counting(header: object, digest: bytes, network: bytes = b"") -> bool:
        count[0] += 1
        return original(header, digest, network)  # type: ignore[arg-type]

    monkeypatch.setattr(tusk_core, "header_signature_valid", counting)
    yield count


def ask(core: TuskCore, request: CoreRequest) -> list[RefusalReason]:
    step = core.handle(RequestReceived("driver", 1, request), 0)
    reply = step.outgoing[0]
    assert isinstance(reply, Reply)
    return [refusal.reason for refusal in reply.body.refusals]


def test_a_request_full_of_equivocations_costs_a_bounded_number_of_checks(
    signature_checks: list[int],
) -> None:
    """An insider signs 256 different round-1 headers of its own slot: the core votes for
    one, verifies at most two per committee member, and keeps the first as evidence."""
    core = TuskCore(KEYS[0], COMMITTEE)
    liar = KEYS[3]
    headers = tuple(
        sign_header(liar, 1, (number.to_bytes(2, "big"),), (), context=core.context)
        for number in range(256)
    )
    reasons = ask(core, CoreRequest(headers=headers))
    assert signature_checks[0] <= 2 * len(KEYS)
    assert reasons.count(RefusalReason.EQUIVOCATION) == 2 * len(KEYS) - 1
    assert reasons.count(RefusalReason.MALFORMED_REQUEST) == 256 - 2 * len(KEYS)
    assert len(core.evidence) == 1
    # the same flood again: the slot's evidence is held, nothing more is verified
    signature_checks[0] = 0
    ask(core, CoreRequest(headers=headers))
    assert signature_checks[0] == 0


def test_duplicate_headers_in_one_request_are_checked_once(signature_checks: list[int]) -> None:
    core = TuskCore(KEYS[0], COMMITTEE)
    header = sign_header(KEYS[2], 1, (b"batch",), (), context=core.context)
    reasons = ask(core, CoreRequest(headers=(header,) * 200))
    assert reasons == []
    assert signature_checks[0] == 1
