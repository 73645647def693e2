"""Metrics of cores and drivers, and the Prometheus text endpoint that serves them."""

from __future__ import annotations

import asyncio

from synod.core import RequestReceived
from synod.crypto import KeyPair
from synod.quorum.committee import Committee
from synod.runtime.tusk_node import (
    MAX_METRICS_CONNECTIONS,
    MetricsServer,
    core_series,
    driver_series,
    render_metrics,
)
from synod.sim.scenarios.tusk import MadeUpWeakParents, committed, replace_core, tusk_world
from synod.tusk.core import TuskCore
from synod.tusk.driver import Driver
from synod.tusk.messages import CoreRequest, SubmitRequest, sign_header

KEYS = [KeyPair.from_seed(bytes([index + 81]) * 32) for index in range(4)]
COMMITTEE = Committee.equal_weights(key.node_id for key in KEYS)


def test_a_core_counts_its_refusals_by_reason_and_reports_its_state() -> None:
    core = TuskCore(KEYS[0], COMMITTEE)
    core.handle(RequestReceived("client", 1, SubmitRequest(transactions=(b"a", b"b"))), 0)
    foreign = sign_header(KEYS[1], 1, (b"x",), ())  # no committee context: refused
    core.handle(RequestReceived("driver", 2, CoreRequest(headers=(foreign,))), 0)
    metrics = core.metrics()
    assert metrics["round"] == 1 and metrics["committed"] == 0
    assert metrics["refusals_other_committee"] == 1
    assert metrics["behind"] == 0
    # the pending pair went into the core's round-1 header
    assert metrics["pending_transactions"] == 0


def test_series_render_as_prometheus_text_with_labels_escaped() -> None:
    core = TuskCore(KEYS[0], COMMITTEE)
    text = render_metrics(core_series(core, 'core "0"'))
    assert 'synod_tusk_core_round{core="core \\"0\\""} 1\n' in text
    driver = Driver("d", COMMITTEE)
    names = {KEYS[2].node_id: "core-2"}
    text = render_metrics(driver_series(driver, names))
    assert 'synod_tusk_driver_core_lag_rounds{core="core-2",driver="d"} 0' in text
    assert 'synod_tusk_driver_highest_round{driver="d"} 0' in text


def test_the_endpoint_answers_a_scrape_and_holds_at_most_a_few_connections() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        server = MetricsServer(lambda: [("synod_test_value", {}, 7)])
        host, port = await server.start(("127.0.0.1", 0))
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await reader.read()
            writer.close()
            # Connections that never send a request fill every slot; one more is closed
            # unanswered, even with a complete request.
            slots = range(MAX_METRICS_CONNECTIONS)
            idle = [await asyncio.open_connection(host, port) for _ in slots]
            extra_reader, extra_writer = await asyncio.open_connection(host, port)
            extra_writer.write(b"GET /metrics HTTP/1.1\r\n\r\n")
            try:
                refused = await asyncio.wait_for(extra_reader.read(), 5)
            except ConnectionResetError:  # closed with the request unread
                refused = b""
            extra_writer.close()
            for _, idle_writer in idle:
                idle_writer.close()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while server.open_connections and loop.time() < deadline:
                await asyncio.sleep(0.01)  # polling a condition under a deadline
            return answer, refused
        finally:
            await server.stop()

    answer, refused = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.0 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\nsynod_test_value 7\n")
    assert refused == b""


def test_a_driver_shows_a_core_whose_headers_stop_being_certified_as_starved() -> None:
    # Core 0 names a made-up weak parent in each header from round 3: nobody votes for
    # them, its round keeps up with the others, and its last certified round does not.
    keys = [KeyPair.from_seed(bytes([index + 91]) * 32) for index in range(4)]
    cores = [key.node_id for key in keys]
    world = tusk_world(keys, seed=4, drivers=["d"])
    replace_core(world, cores[0], lambda core: MadeUpWeakParents(core, keys[0]))
    assert world.step_until(
        lambda: all(len(committed(world, core)) >= 60 for core in cores[1:]), max_steps=20_000
    )
    driver = world.core(Driver("d", COMMITTEE).node_id, Driver)
    highest = driver.highest_round
    assert highest - driver.core_rounds()[cores[0]] <= 2, "its round keeps up"
    assert highest - driver.certified_rounds()[cores[0]] > 10, "its headers are not certified"
    assert all(highest - driver.certified_rounds()[core] <= 2 for core in cores[1:])
    text = render_metrics(driver_series(driver, {cores[0]: "attacker"}))
    gap = highest - driver.certified_rounds()[cores[0]]
    labels = '{core="attacker",driver="d"}'
    assert f"synod_tusk_driver_core_uncertified_rounds{labels} {gap}\n" in text


def test_a_fresh_core_reports_whether_it_signs_receipts() -> None:
    # A core with an empty store signs no receipt before a driver has said where the
    # committee is (round 0 here: a brand-new committee); the metric shows which.
    core = TuskCore(KEYS[0], COMMITTEE)
    assert core.metrics()["takes_transactions"] == 0
    core.handle(RequestReceived("driver", 1, CoreRequest(committee_round=0)), 0)
    assert core.metrics()["takes_transactions"] == 1
