"""A core away for far longer than the drivers remember rejoins: four `synod tusk core`
processes and a driver, `gc_depth` 6 and drivers keeping 20 rounds; core-3 is SIGKILLed
and stays down while the others order transactions for more than 10 x `gc_depth`
rounds; restarted, it installs a checkpoint signed by cores of weight f + 1 that the
driver carries, takes transactions again, and its sequence is the others' at every
position it holds.

Its log then has a gap (the positions the checkpoint skipped): the driver fetches those
records from the other cores and carries them to it, and once it says the gap is closed
its file holds every position up to its head, each equal to core-0's.

Before, the restarted core could never catch up (every round it needed was collected
by the others and forgotten by the drivers): it refused every transaction, for good;
then it rejoined with a gap in its file for good.
Waits are on lines the processes print and on receipts, under deadlines."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synod.cli.cluster import WatchedProcess, free_ports, synod_command
from synod.runtime.tusk_node import CommitLogReader, SubmitFailed, submit_transactions
from synod.tusk.config import load_network

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DEADLINE_S = 60.0
GC_DEPTH = 6
ROUNDS_DOWN = 10 * GC_DEPTH


class Process(WatchedProcess):
    def __init__(self, directory: Path, label: str, *arguments: str) -> None:
        super().__init__(
            label, arguments, directory / f"{label}.stderr", deadline_s=DEADLINE_S, stdin=False
        )

    def positions(self) -> dict[int, str]:
        """Sequence -> certificate digest of every commit printed so far."""
        return {line["sequence"]: line["digest"] for line in self.events("committed")}

    def highest_leader_round(self) -> int:
        return max((line["leader_round"] for line in self.events("committed")), default=0)

    def wait_transaction(self, transaction: str) -> None:
        self.wait_for(
            lambda lines: any(
                transaction in line["transactions"]
                for line in lines
                if line["event"] == "committed"
            ),
            f"commit of {transaction!r}",
        )


class Load:
    """Hands a transaction to core-0, core-1 or core-2 in turn, one after the other,
    on its own thread until stopped: the committee keeps making rounds."""

    def __init__(self, directory: Path) -> None:
        network = load_network(directory)
        self._targets = [(entry.node_id, (entry.host, entry.port)) for entry in network.cores[:3]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.accepted = 0

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(DEADLINE_S)

    async def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            core_id, address = self._targets[number % 3]
            try:
                receipt = await submit_transactions(address, core_id, [f"load {number}".encode()])
            except SubmitFailed:
                continue
            self.accepted += receipt.accepted
            number += 1


@pytest.fixture
def committee(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Process]]]:
    ports = free_ports(4)
    initialised = subprocess.run(
        synod_command(
            "tusk", "init", str(tmp_path), "--cores", "4", "--ports", ",".join(map(str, ports))
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    assert initialised.returncode == 0, initialised.stderr
    path = tmp_path / "tusk.toml"
    text = path.read_text()
    for old, new in (
        ("gc_depth = 100", f"gc_depth = {GC_DEPTH}"),
        ("window_rounds = 150", "window_rounds = 20"),
        ("min_header_delay_ms = 100", "min_header_delay_ms = 20"),
    ):
        assert text.count(old) == 1
        text = text.replace(old, new)
    path.write_text(text)
    processes: dict[str, Process] = {}

    def start(label: str, *arguments: str) -> Process:
        processes[label] = Process(tmp_path, label, "tusk", *arguments)
        return processes[label]

    for index in range(4):
        start(f"core-{index}", "core", str(tmp_path), f"core-{index}")
    start("driver", "driver", str(tmp_path), "--name", "driver")
    try:
        yield tmp_path, processes
    finally:
        for process in processes.values():
            process.kill_if_running()


def submit_until_accepted(directory: Path, core: str, transaction: str) -> None:
    """A restarted core refuses transactions until it is back within reach: retry."""
    entry = load_network(directory).find(core)
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            receipt = asyncio.run(
                submit_transactions((entry.host, entry.port), entry.node_id, [transaction.encode()])
            )
        except SubmitFailed:
            receipt = None
        if receipt is not None and receipt.accepted == 1:
            return
        time.sleep(0.1)  # a retry pace, not a synchronisation: the receipt is the signal
    raise AssertionError(f"{core} never took {transaction!r}")


def test_a_core_down_for_ten_times_gc_depth_rounds_rejoins_with_an_equal_prefix(
    committee: tuple[Path, dict[str, Process]],
) -> None:
    directory, processes = committee
    for process in processes.values():
        process.wait_ready()
    submit_until_accepted(directory, "core-3", "before the crash")
    processes["core-3"].wait_transaction("before the crash")
    processes["core-3"].stop(signal.SIGKILL)
    processes["core-3"].collect_after_exit()
    first_life = processes["core-3"].positions()
    core_0 = processes["core-0"]
    with Load(directory) as load:
        start = core_0.highest_leader_round()
        core_0.wait_for(
            lambda lines: core_0.highest_leader_round() >= start + ROUNDS_DOWN,
            f"{ROUNDS_DOWN} rounds without core-3",
        )
        restarted = Process(directory, "core-3-again", "tusk", "core", str(directory), "core-3")
        processes["core-3-again"] = restarted
        ready = restarted.wait_ready()
        # What it printed was durable first; it may have stored more before the kill.
        assert ready["restored_commits"] >= len(first_life)
        submit_until_accepted(directory, "core-3", "after rejoining")
        restarted.wait_transaction("after rejoining")
        core_0.wait_transaction("after rejoining")
    assert load.accepted > 0
    # Usually one checkpoint; a second when the drivers no longer held the first one's
    # floor by the time it was installed (the core then waits for the next).
    installs = restarted.events("checkpoint-installed")
    assert installs, "it rejoined by a checkpoint"
    assert installs[0]["first_skipped"] == ready["restored_commits"]
    assert installs[-1]["leader_round"] >= start + ROUNDS_DOWN - GC_DEPTH
    second_life = restarted.positions()
    expected: list[int] = []
    for current, following in zip(installs, [*installs[1:], None], strict=True):
        end = following["first_skipped"] if following else max(second_life) + 1
        expected.extend(range(current["sequence"], end))
    assert sorted(second_life) == expected, "consecutive from each checkpoint it installed"
    assert sorted(first_life) == list(range(len(first_life)))
    others = core_0.positions()
    mine: dict[int, Any] = {**first_life, **second_life}
    common = mine.keys() & others.keys()
    assert all(others[position] == mine[position] for position in common)
    assert len(common) > len(first_life), "it commits beside the others"
    restarted.wait_for(
        lambda lines: any(line["event"] == "gap-closed" for line in lines), "the gap closed"
    )
    [closed] = restarted.events("gap-closed")
    assert closed["consistent"] and closed["dropped_transactions"] == 0
    assert_whole_and_equal(directory, "core-3", "core-0")
    watched = subprocess.run(
        synod_command("tusk", "watch", str(directory), "--core", "core-3", "--no-follow"),
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE_S,
    )
    assert watched.returncode == 0, watched.stderr
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert not [line for line in lines if line["event"] == "gap"], "watch reads a whole log"
    assert [line["sequence"] for line in lines] == list(range(len(lines)))


def assert_whole_and_equal(directory: Path, core: str, reference: str) -> None:
    """`core`'s file holds every position from 0 to its head, each as `reference`'s."""
    network = load_network(directory)
    with CommitLogReader(network.store_path(network.find(core))) as reader:
        mine = {event.sequence: event.digest for event in reader.read_from(0)}
    with CommitLogReader(network.store_path(network.find(reference))) as reader:
        theirs = {event.sequence: event.digest for event in reader.read_from(0)}
    assert sorted(mine) == list(range(len(mine))), "no position missing"
    assert all(theirs[position] == digest for position, digest in mine.items())
