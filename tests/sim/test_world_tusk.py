"""Tusk in a plain world (`synod.sim.scenarios.tusk`): the helpers that tests, examples
and benchmarks use to run cores and drivers in-process."""

from __future__ import annotations

import pytest

from synod.core import Step
from synod.crypto import KeyPair
from synod.quorum.committee import Committee
from synod.sim.scenarios.tusk import (
    CLIENT_ID,
    PrefixViolated,
    RefusalTally,
    answers,
    check_prefix,
    committed,
    delivered_transactions,
    replace_core,
    restart_driver,
    submit,
    tally_refusals,
    tusk_world,
)
from synod.tusk.core import Committed, TuskCore
from synod.tusk.driver import Driver
from synod.tusk.messages import SubmitRequest, request_digest

KEYS = [KeyPair.from_seed(bytes([index + 71]) * 32) for index in range(4)]
CORES = [key.node_id for key in KEYS]
COMMITTEE = Committee.equal_weights(CORES)


def test_submitted_transactions_are_answered_and_delivered_in_one_order_by_every_core() -> None:
    world = tusk_world(KEYS, seed=2)
    submit(world, CORES[1], [b"pay alice 5", b"pay bob 3"])
    assert world.step_until(
        lambda: all(len(delivered_transactions(world, node)) == 2 for node in CORES)
    )
    orders = {tuple(delivered_transactions(world, node)) for node in CORES}
    assert len(orders) == 1 and sorted(orders.pop()) == [b"pay alice 5", b"pay bob 3"]
    [answer] = answers(world)
    assert answer.core == CORES[1] and answer.accepted == 2 and answer.has_valid_signature()
    assert answer.request_digest == request_digest(
        SubmitRequest(transactions=(b"pay alice 5", b"pay bob 3"))
    )
    assert world.events_of(CLIENT_ID, Committed) == []


def test_a_restarted_driver_starts_empty_and_the_cores_go_on() -> None:
    world = tusk_world(KEYS, seed=3, drivers=["driver-a"])
    driver_id = Driver("driver-a", COMMITTEE).node_id
    assert world.step_until(lambda: len(committed(world, CORES[0])) >= 5)
    old = world.core(driver_id, Driver)
    assert old.certificate_count() > 0
    restart_driver(world, "driver-a")
    fresh = world.core(driver_id, Driver)
    assert fresh is not old and fresh.certificate_count() == 0
    progress = len(committed(world, CORES[0])) + 5
    assert world.step_until(lambda: len(committed(world, CORES[0])) >= progress)
    with pytest.raises(LookupError, match="no running driver"):
        restart_driver(world, "driver-z")


def test_a_replaced_core_is_wrapped_and_rebuilt_from_what_it_persisted() -> None:
    world = tusk_world(KEYS, seed=4, byzantine_drivers=["driver-x"])
    assert world.step_until(lambda: len(committed(world, CORES[2])) >= 5)
    count = world.core(CORES[2], TuskCore).committed_count
    refusals = tally_refusals(world, [CORES[2]])
    wrapper = world.core(CORES[2], RefusalTally)
    assert wrapper.inner.committed_count == count and wrapper.tally is refusals
    assert world.step_until(lambda: len(committed(world, CORES[2])) >= count + 5)
    assert sum(refusals.values()) > 0, "refusals from now on are counted"
    with pytest.raises(TypeError, match="wraps a TuskCore"):
        replace_core(world, CLIENT_ID, lambda core: core)


def test_the_prefix_check_raises_at_the_step_that_breaks_it_and_counts_positions() -> None:
    world = tusk_world(KEYS, seed=5, drivers=[])
    lengths = check_prefix(world, CORES[:2]).lengths
    first, second = CORES[:2]
    world.apply(first, Step(events=[Committed(0, 2, 1, first, b"a" * 32, ())]))
    world.apply(second, Step(events=[Committed(0, 2, 1, first, b"a" * 32, ())]))
    assert lengths == {first.hex(): 1, second.hex(): 1}
    with pytest.raises(PrefixViolated, match="position 1"):
        world.apply(second, Step(events=[Committed(1, 2, 1, first, b"b" * 32, ())]))
        world.apply(first, Step(events=[Committed(1, 2, 1, first, b"c" * 32, ())]))
    with pytest.raises(PrefixViolated, match="twice"):
        world.apply(first, Step(events=[Committed(2, 2, 1, first, b"a" * 32, ())]))


def test_a_world_without_event_records_keeps_events_as_objects_only() -> None:
    world = tusk_world(KEYS, seed=6, record_events=False)
    submit(world, CORES[0], [b"pay carol 1"])
    assert world.step_until(
        lambda: all(delivered_transactions(world, node) == [b"pay carol 1"] for node in CORES)
    )
    assert [answer.accepted for answer in answers(world)] == [1]
    assert not any(record["kind"] == "event" for record in world.history)
    with pytest.raises(ValueError, match="no event records"):
        check_prefix(world, CORES)
