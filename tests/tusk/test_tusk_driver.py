"""The driver alone: what it calls, and that stray answers cannot wedge it."""

from __future__ import annotations

import msgspec

from synod.core import Call, CallFailed, RequestReceived, Response, Started, Step, TimerFired
from synod.crypto import KeyPair
from synod.quorum.committee import Committee
from synod.tusk.core import TuskCore
from synod.tusk.driver import BLOCK_RETRY_POLLS, POLL_TIMER, Driver
from synod.tusk.messages import (
    MAX_BATCH_BYTES,
    MAX_TRANSACTION_BYTES,
    ZERO_DIGEST,
    CoreAnswer,
    CoreRequest,
    Header,
    Refusal,
    RefusalReason,
    Vote,
    make_certificate,
    request_digest,
    sign_answer,
    sign_header,
    sign_vote,
)

KEYS = [KeyPair.from_seed(bytes([index + 61]) * 32) for index in range(4)]
COMMITTEE = Committee.equal_weights(key.node_id for key in KEYS)


def calls_of(step: Step) -> list[Call]:
    return [out for out in step.outgoing if isinstance(out, Call)]


def test_a_started_driver_polls_every_core_once() -> None:
    driver = Driver("d", COMMITTEE)
    calls = calls_of(driver.handle(Started(), 0))
    assert sorted(call.to for call in calls) == sorted(key.node_id for key in KEYS)


def test_a_stray_answer_naming_another_core_does_not_wedge_a_core_in_flight() -> None:
    # A restarted driver numbers its requests from 1 again; in the simulator (and on any
    # transport that reuses the driver's address) an answer to its earlier life may
    # arrive under a request id now used for another core.  That answer must not make
    # the driver forget the request, or the core would stay "in flight" forever.
    driver = Driver("d", COMMITTEE)
    calls = {call.to: call for call in calls_of(driver.handle(Started(), 0))}
    target, other = KEYS[0].node_id, KEYS[1].node_id
    request_id = calls[target].request_id
    assert not calls_of(driver.handle(Response(other, request_id, b"stray"), 5))
    driver.handle(CallFailed(target, request_id, "timeout"), 10)
    repolled = calls_of(driver.handle(TimerFired(POLL_TIMER), 60))
    assert target in [call.to for call in repolled]


def test_a_core_with_a_request_in_flight_is_not_called_again() -> None:
    driver = Driver("d", COMMITTEE)
    calls = {call.to: call for call in calls_of(driver.handle(Started(), 0))}
    target = KEYS[2].node_id
    others = [call for call in calls.values() if call.to != target]
    for call in others:
        driver.handle(CallFailed(call.to, call.request_id, "timeout"), 1)
    repolled = calls_of(driver.handle(TimerFired(POLL_TIMER), 60))
    assert target not in [call.to for call in repolled]
    assert sorted(call.to for call in repolled) == sorted(call.to for call in others)


def test_the_driver_names_a_core_header_it_holds_so_the_answer_omits_the_batch() -> None:
    driver = Driver("d", COMMITTEE)
    core = TuskCore(KEYS[0], COMMITTEE)
    target = KEYS[0].node_id
    call = next(c for c in calls_of(driver.handle(Started(), 0)) if c.to == target)
    assert isinstance(call.body, CoreRequest) and call.body.header_held == ZERO_DIGEST

    def answer(request_call: Call) -> Response:
        step = core.handle(RequestReceived("d", request_call.request_id, request_call.body), 0)
        return Response(target, request_call.request_id, step.outgoing[0].body)

    response = answer(call)
    header = core.own_header()
    assert header is not None and response.body.header == header
    driver.handle(response, 1)
    # The next call to that core (the poll) names the header: the answer leaves it out.
    again = next(c for c in calls_of(driver.handle(TimerFired(POLL_TIMER), 60)) if c.to == target)
    assert again.body.header_held == header.digest()
    assert answer(again).body.header is None


def _answer_carrying(header: Header, call: Call, votes: tuple[Vote, ...] = ()) -> Response:
    """A core-0 answer to `call` (signed, echoing the request) that returns `header`."""
    assert isinstance(call.body, CoreRequest)
    answer = CoreAnswer(
        core=KEYS[0].node_id,
        request_digest=request_digest(call.body),
        round=1,
        header=header,
        votes=votes,
        known=(),
        certificates=(),
        refusals=(),
    )
    return Response(call.to, call.request_id, sign_answer(KEYS[0], answer))


def _headers_carried_after(header: Header) -> list[Header]:
    driver = Driver("d", COMMITTEE)
    calls = {call.to: call for call in calls_of(driver.handle(Started(), 0))}
    driver.handle(_answer_carrying(header, calls[KEYS[0].node_id]), 1)
    for key in KEYS[1:]:
        driver.handle(CallFailed(key.node_id, calls[key.node_id].request_id, "timeout"), 2)
    repolled = calls_of(driver.handle(TimerFired(POLL_TIMER), 60))
    return [h for call in repolled if isinstance(call.body, CoreRequest) for h in call.body.headers]


def test_a_header_whose_batch_no_core_accepts_is_not_carried() -> None:
    # A batch over MAX_BATCH_BYTES is refused by every core's config, and carried
    # beside a request's certificates it could exceed the frame cap.
    transaction = b"x" * MAX_TRANSACTION_BYTES
    count = MAX_BATCH_BYTES // MAX_TRANSACTION_BYTES + 1
    too_large = sign_header(KEYS[0], 1, (transaction,) * count, ())
    assert not _headers_carried_after(too_large)
    within = sign_header(KEYS[0], 1, (transaction,) * (count - 1), ())
    assert _headers_carried_after(within) == [within] * 3


def test_a_certificate_goes_by_digest_to_the_cores_that_voted_for_its_header() -> None:
    driver = Driver("d", COMMITTEE)
    calls = {call.to: call for call in calls_of(driver.handle(Started(), 0))}
    header = sign_header(KEYS[0], 1, (b"tx",), ())
    digest = header.digest()
    votes = tuple(sign_vote(key, digest, 1, KEYS[0].node_id) for key in KEYS[:3])
    driver.handle(_answer_carrying(header, calls[KEYS[0].node_id], votes), 1)
    assert driver.certificate_count() == 1  # three votes of four: a quorum
    for key in KEYS[1:]:
        driver.handle(CallFailed(key.node_id, calls[key.node_id].request_id, "timeout"), 2)
    requests = {
        call.to: call.body
        for call in calls_of(driver.handle(TimerFired(POLL_TIMER), 60))
        if isinstance(call.body, CoreRequest)
    }
    for voter in KEYS[:3]:  # the creator and the two other voters hold the header
        request = requests[voter.node_id]
        assert not request.certificates
        assert [item.header_digest for item in request.certified] == [digest]
    stranger = requests[KEYS[3].node_id]  # never voted: gets the batch
    assert [c.header for c in stranger.certificates] == [header] and not stranger.certified


def _driver_fed(headers: list[Header], *, window_rounds: int = 40) -> Driver:
    """A driver whose core 0 returns one of `headers` in each answer, in order."""
    driver = Driver("d", COMMITTEE, window_rounds=window_rounds)
    step = driver.handle(Started(), 0)
    for now_ms, header in enumerate(headers, start=1):
        call = next((c for c in calls_of(step) if c.to == KEYS[0].node_id), None)
        if call is None:
            call = next(
                c
                for c in calls_of(driver.handle(TimerFired(POLL_TIMER), now_ms))
                if c.to == KEYS[0].node_id
            )
        step = driver.handle(_answer_carrying(header, call), now_ms)
    return driver


def test_headers_more_than_a_window_above_the_highest_certificate_are_not_kept() -> None:
    # No certificate held (highest round 0), window 40: a round-41 header cannot be voted
    # for by any honest core before 40 more rounds are certified; round 40 still may.
    far = sign_header(KEYS[0], 41, (b"far",), ())
    near = sign_header(KEYS[0], 40, (b"near",), ())
    assert _driver_fed([far]).pending_headers() == ()
    assert _driver_fed([near]).pending_headers() == (near,)


def test_a_core_sending_a_fresh_far_future_header_in_every_answer_grows_nothing() -> None:
    fresh = [sign_header(KEYS[0], 1_000 + index, (b"x",), ()) for index in range(30)]
    driver = _driver_fed(fresh)
    assert driver.pending_headers() == ()
    assert not _headers_carried_after(fresh[0])


def test_pending_headers_per_creator_are_capped_keeping_the_lowest_rounds() -> None:
    # Window 2 allows rounds 1..2 with no certificate; the cap is window + 2 = 4 headers
    # per creator, which only an equivocating creator (several headers a round) reaches.
    round_two = [sign_header(KEYS[0], 2, (bytes([index]),), ()) for index in range(6)]
    round_one = sign_header(KEYS[0], 1, (b"low",), ())
    driver = _driver_fed([*round_two, round_one], window_rounds=2)
    kept = driver.pending_headers()
    assert len(kept) == 4
    assert round_one in kept, "a lower round displaces a higher one"
    assert set(kept) - {round_one} <= set(round_two[:4]), "later ones of round 2 refused"


def _answer(core: KeyPair, call: Call, **fields: object) -> Response:
    """A signed answer of `core` to `call`, round 1, with `fields` replaced."""
    assert isinstance(call.body, CoreRequest)
    answer = CoreAnswer(
        core=core.node_id,
        request_digest=request_digest(call.body),
        round=1,
        header=None,
        votes=(),
        known=(),
        certificates=(),
        refusals=(),
    )
    answer = msgspec.structs.replace(answer, **fields)
    return Response(call.to, call.request_id, sign_answer(core, answer))


def test_a_certificate_blocked_on_a_parent_nobody_supplies_is_carried_again_later() -> None:
    # A core refused a certificate naming a missing parent that no core ever lists (a
    # made-up weak parent, or one collected since).  Waiting for it blocked the
    # certificate, and everything built on it, at that core for good; now the driver
    # holds it back for BLOCK_RETRY_POLLS poll periods, then carries it again.
    driver = Driver("d", COMMITTEE)
    calls = {call.to: call for call in calls_of(driver.handle(Started(), 0))}
    header = sign_header(KEYS[0], 1, (b"tx",), ())
    votes = [sign_vote(key, header.digest(), 1, KEYS[0].node_id) for key in KEYS[:3]]
    certificate = make_certificate(header, votes)
    driver.handle(_answer(KEYS[0], calls[KEYS[0].node_id], certificates=(certificate,)), 1)
    target = KEYS[3]
    step = driver.handle(_answer(target, calls[target.node_id]), 2)
    carrying = next(call for call in calls_of(step) if call.to == target.node_id)
    assert [c.header for c in carrying.body.certificates] == [header]
    refusal = Refusal(
        digest=header.digest(), reason=RefusalReason.MISSING_PARENTS, missing=(b"\x66" * 32,)
    )
    step = driver.handle(_answer(target, carrying, refusals=(refusal,)), 3)

    def carried_until_idle(step: Step, now_ms: int) -> bool:
        """Answer the driver's calls to the target (empty answers) until it makes none;
        whether one of them carried the certificate."""
        carried = False
        for _ in range(10):
            call = next((c for c in calls_of(step) if c.to == target.node_id), None)
            if call is None:
                return carried
            carried = carried or any(c.header == header for c in call.body.certificates)
            step = driver.handle(_answer(target, call), now_ms)
        raise AssertionError("the driver keeps calling a core that answers nothing new")

    assert not carried_until_idle(step, 4)
    carried = [
        carried_until_idle(driver.handle(TimerFired(POLL_TIMER), 100 * poll), 100 * poll)
        for poll in range(1, BLOCK_RETRY_POLLS + 1)
    ]
    assert carried == [False] * (BLOCK_RETRY_POLLS - 1) + [True]
