"""The driver alone: what it calls, and that stray answers cannot wedge it."""

from __future__ import annotations

from synod.core import Call, CallFailed, Response, Started, Step, TimerFired
from synod.crypto import KeyPair
from synod.quorum.committee import Committee
from synod.tusk.driver import POLL_TIMER, Driver

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
