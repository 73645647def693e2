"""`synod.runtime.tusk_node` from Python: real cores and a driver on 127.0.0.1.

Every wait is on an event the cores emit, under a deadline; nothing waits a fixed time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from synod.crypto import KeyPair
from synod.quorum.committee import Committee
from synod.runtime.lock import NodeAlreadyRunning
from synod.runtime.tusk_node import (
    CommitLogReader,
    CoreNode,
    DriverNode,
    SubmitFailed,
    submit_transactions,
)
from synod.tusk.core import Committed, TuskConfig
from synod.tusk.driver import Driver

pytestmark = pytest.mark.timeout(60)

KEYS = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(4)]
COMMITTEE = Committee.equal_weights(pair.node_id for pair in KEYS)
CONFIG = TuskConfig(min_header_delay_ms=20)


def open_core(
    directory: Path, index: int, on_event: Callable[[object], None] | None = None
) -> CoreNode:
    return CoreNode.open(
        KEYS[index], COMMITTEE, directory / f"core-{index}.sqlite", config=CONFIG, on_event=on_event
    )


async def commit_one_transaction(directory: Path) -> list[Committed]:
    """Run the committee until core-0 has committed b"pay alice 5"; core-0's commits."""
    commits: list[Committed] = []
    committed = asyncio.Event()

    def record(event: object) -> None:
        if isinstance(event, Committed):
            commits.append(event)
            if b"pay alice 5" in event.transactions:
                committed.set()

    cores = [open_core(directory, index, record if index == 0 else None) for index in range(4)]
    addresses = {core.node_id: await core.start(("127.0.0.1", 0)) for core in cores}
    driver = DriverNode(Driver("driver", COMMITTEE), addresses)
    await driver.start()
    try:
        first = KEYS[0].node_id
        receipt = await submit_transactions(addresses[first], first, [b"pay alice 5"])
        assert receipt.accepted == 1
        async with asyncio.timeout(30):
            await committed.wait()
    finally:
        await driver.stop()
        for core in cores:
            await core.stop()
    return commits


def test_a_core_reopened_on_its_file_resumes_and_its_log_reads_back(tmp_path: Path) -> None:
    commits = asyncio.run(commit_one_transaction(tmp_path))
    with CommitLogReader(tmp_path / "core-0.sqlite") as reader:
        assert reader.read_from(0) == commits
        assert reader.read_from(1) == commits[1:]
    reopened = open_core(tmp_path, 0)
    try:
        assert reopened.core.committed_count == len(commits)
    finally:
        asyncio.run(reopened.stop())


def test_a_second_core_on_one_file_is_refused_until_the_first_stops(tmp_path: Path) -> None:
    first = open_core(tmp_path, 0)
    with pytest.raises(NodeAlreadyRunning, match="core core-0 is already running"):
        open_core(tmp_path, 0)
    asyncio.run(first.stop())
    asyncio.run(open_core(tmp_path, 0).stop())


def test_a_receipt_must_be_signed_by_the_core_it_was_asked_of(tmp_path: Path) -> None:
    async def submit_to_core_0_as_if_core_1() -> None:
        core = open_core(tmp_path, 0)
        address = await core.start(("127.0.0.1", 0))
        try:
            await submit_transactions(address, KEYS[1].node_id, [b"pay alice 5"])
        finally:
            await core.stop()

    with pytest.raises(SubmitFailed, match="not a receipt signed by it"):
        asyncio.run(submit_to_core_0_as_if_core_1())


def test_a_submission_no_core_takes_is_refused_before_any_connection() -> None:
    with pytest.raises(ValueError, match="at most 4096 bytes"):
        asyncio.run(submit_transactions(("127.0.0.1", 1), KEYS[0].node_id, [b"x" * 4097]))
