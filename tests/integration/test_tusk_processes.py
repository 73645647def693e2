"""Four `synod tusk core` processes and two `synod tusk driver` processes on 127.0.0.1:
transactions submitted with `synod tusk submit` are committed by every core in one
order; a driver and a core are killed with SIGKILL mid-run, progress goes on with the
rest, the core restarts from its SQLite file and catches up, `synod tusk watch` reads
a core's sequence back from its file, and every process stops with SIGTERM and exit 0.

Every wait is on a line the processes print (readiness, commits) or on their exit, each
with a deadline; nothing waits a fixed time."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from synod.cli.cluster import WatchedProcess, free_ports, synod_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CORES = 4
DEADLINE_S = 30.0


class Process(WatchedProcess):
    """One synod process; its stdout JSON lines are collected by a thread."""

    def __init__(self, directory: Path, label: str, *arguments: str) -> None:
        super().__init__(
            label, arguments, directory / f"{label}.stderr", deadline_s=DEADLINE_S, stdin=False
        )

    def commits(self) -> list[dict[str, Any]]:
        return self.events("committed")

    def wait_transactions(self, wanted: set[str]) -> None:
        self.wait_for(lambda lines: wanted <= committed_transactions(lines), f"commit of {wanted}")


def committed_transactions(lines: list[dict[str, Any]]) -> set[str]:
    return {tx for line in lines if line["event"] == "committed" for tx in line["transactions"]}


def submit(directory: Path, core: str, *transactions: str) -> None:
    result = subprocess.run(
        synod_command("tusk", "submit", str(directory), "--core", core, *transactions),
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr
    receipt = json.loads(result.stdout)
    assert receipt["accepted"] == len(transactions), receipt


def init_network(directory: Path) -> None:
    """`synod tusk init` of CORES cores on free ports in `directory`."""
    ports = ",".join(str(port) for port in free_ports(CORES))
    initialised = subprocess.run(
        synod_command("tusk", "init", str(directory), "--cores", str(CORES), "--ports", ports),
        capture_output=True,
        text=True,
        check=False,
    )
    assert initialised.returncode == 0, initialised.stderr


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Process]]]:
    init_network(tmp_path)
    processes = {
        f"core-{i}": Process(tmp_path, f"core-{i}", "tusk", "core", str(tmp_path), f"core-{i}")
        for i in range(CORES)
    }
    for name in ("driver-a", "driver-b"):
        processes[name] = Process(tmp_path, name, "tusk", "driver", str(tmp_path), "--name", name)
    try:
        yield tmp_path, processes
    finally:
        for process in processes.values():
            process.kill_if_running()


def test_cores_commit_one_order_across_a_driver_and_a_core_killed_and_restarted(
    network: tuple[Path, dict[str, Process]],
) -> None:
    directory, processes = network
    cores = {name: process for name, process in processes.items() if name.startswith("core")}
    for process in processes.values():
        process.wait_ready()

    submit(directory, "core-0", "pay alice 5", "pay bob 3")
    submit(directory, "core-2", "pay carol 1")
    first = {"pay alice 5", "pay bob 3", "pay carol 1"}
    for process in cores.values():
        process.wait_transactions(first)

    assert processes["driver-b"].stop(signal.SIGKILL) == -signal.SIGKILL
    victim = cores["core-3"]
    assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
    printed_before_kill = victim.commits()

    # Three cores (2f + 1) and one driver go on.
    submit(directory, "core-1", "pay dave 2")
    for name in ("core-0", "core-1", "core-2"):
        cores[name].wait_transactions({"pay dave 2"})

    restarted = Process(directory, "core-3.life1", "tusk", "core", str(directory), "core-3")
    ready = restarted.wait_ready()
    # Every commit it printed was persisted first, so its store holds at least those.
    assert ready["restored_commits"] >= len(printed_before_kill)
    cores["core-3"] = restarted
    # A restarted core signs receipts once a driver has brought it a certificate it
    # could store; the commits it prints show it is back in contact.
    restarted.wait_for(
        lambda lines: any(line["event"] == "committed" for line in lines),
        "a commit after the restart",
    )
    submit(directory, "core-3", "pay erin 4")
    for name, process in cores.items():
        wanted = {"pay erin 4"} if name == "core-3" else {"pay erin 4", "pay dave 2"}
        process.wait_transactions(wanted)

    # One order: every core's (sequence -> digest) agrees wherever two cores have one.
    logs = {name: process.commits() for name, process in cores.items()}
    logs["core-3"] = printed_before_kill + restarted.commits()
    agreed: dict[int, str] = {}
    for name, log in logs.items():
        sequences = [line["sequence"] for line in log]
        if name == "core-3":
            resumed = [line["sequence"] for line in restarted.commits()]
            assert resumed[0] == ready["restored_commits"], "resumes right after its store"
            assert resumed == list(range(resumed[0], resumed[0] + len(resumed)))
        else:
            assert sequences == list(range(len(sequences))), f"{name} skipped a position"
        for line in log:
            assert agreed.setdefault(line["sequence"], line["digest"]) == line["digest"], (
                f"{name} delivered another certificate at {line['sequence']}"
            )
    everything = first | {"pay dave 2", "pay erin 4"}
    for name in ("core-0", "core-1", "core-2"):
        transactions = [tx for line in logs[name] for tx in line["transactions"]]
        assert sorted(set(transactions) & everything) == sorted(everything)
        assert len([tx for tx in transactions if tx in everything]) == len(everything), (
            f"{name} committed a transaction twice"
        )

    # `synod tusk watch` reads the same sequence back from core-1's SQLite file.
    watched = subprocess.run(
        synod_command("tusk", "watch", str(directory), "--core", "core-1", "--no-follow"),
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE_S,
    )
    assert watched.returncode == 0, watched.stderr
    from_file = [json.loads(line) for line in watched.stdout.splitlines()]
    printed = logs["core-1"]
    assert [line["sequence"] for line in from_file] == list(range(len(from_file)))
    assert from_file[: len(printed)] == printed
    # With --proven, cores of weight f + 1 confirm each line rather than core-1's file
    # being trusted; a copy of that file with one commit changed is caught.
    proven = watch_proven(directory)
    assert proven.returncode == 0, proven.stderr
    lines = [json.loads(line) for line in proven.stdout.splitlines()]
    assert [line["sequence"] for line in lines] == [line["sequence"] for line in from_file]
    assert all(line["proven"] for line in lines if line["transactions"])
    lying = forged_copy(directory, directory.with_name(f"{directory.name}-lying"))
    refused = watch_proven(lying)
    assert refused.returncode == 1
    assert "cores of weight f + 1 state another order" in refused.stderr

    for name in ("core-0", "core-1", "core-2", "core-3", "driver-a"):
        process = cores.get(name) or processes[name]
        assert process.stop(signal.SIGTERM) == 0, f"{name} did not exit cleanly"


def watch_proven(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        synod_command(
            "tusk", "watch", str(directory), "--core", "core-1", "--no-follow", "--proven"
        ),
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE_S,
    )


def forged_copy(directory: Path, copy: Path) -> Path:
    """The committee's files with core-1's log changed: the first commit carrying a
    transaction claims another certificate digest."""
    from synod.tusk.core import COMMIT_LOG_PREFIX

    copy.mkdir()
    for path in directory.iterdir():
        if path.suffix in {".toml", ".key"}:
            shutil.copy(path, copy / path.name)  # the mode too: keys stay 0600
        elif path.suffix == ".sqlite":  # with what its write-ahead log holds
            with sqlite3.connect(path) as source, sqlite3.connect(copy / path.name) as target:
                source.backup(target)
    with sqlite3.connect(copy / "core-1.sqlite") as connection:
        rows = connection.execute(
            "SELECT key, value FROM records WHERE key >= ? ORDER BY key", (COMMIT_LOG_PREFIX,)
        ).fetchall()
        for key, value in rows:
            record = msgspec.msgpack.decode(value)
            if bytes(key).startswith(COMMIT_LOG_PREFIX) and record[6]:  # its transactions
                record[5] = bytes(32)  # the certificate digest (after the tag)
                connection.execute(
                    "UPDATE records SET value = ? WHERE key = ?",
                    (msgspec.msgpack.encode(record), key),
                )
                break
    return copy


def test_synod_tusk_up_runs_the_whole_committee_with_one_command(tmp_path: Path) -> None:
    init_network(tmp_path)

    def synod(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            synod_command(*arguments), capture_output=True, text=True, check=False,
            timeout=DEADLINE_S,
        )  # fmt: skip

    up = synod("tusk", "up", str(tmp_path))  # every core and the driver, in the background
    try:
        assert up.returncode == 0, up.stderr
        assert [line.split()[0] for line in up.stdout.splitlines()] == [
            *(f"core-{index}" for index in range(CORES)),
            "driver-0",
        ]
        result = synod("tusk", "submit", str(tmp_path), "--core", "core-2", "--wait", "hi")
        assert result.returncode == 0, result.stderr
        proof = json.loads(result.stdout.splitlines()[-1])
        assert [entry["transaction"] for entry in proof["transactions"]] == ["hi"]
        status = synod("tusk", "status", str(tmp_path), "--json")
        assert status.returncode == 0, status.stderr
        assert all(json.loads(line)["running"] for line in status.stdout.splitlines())
    finally:
        down = synod("tusk", "down", str(tmp_path))
    assert down.returncode == 0, down.stderr
    assert all(line.split()[1] == "stopped" for line in down.stdout.splitlines())
    committed = [
        json.loads(line)
        for index in range(CORES)
        for line in (tmp_path / "logs" / f"core-{index}.out").read_text().splitlines()
    ]
    assert sum("hi" in line.get("transactions", ()) for line in committed) == CORES


def test_a_new_core_no_driver_reached_refuses_and_says_to_start_a_driver(tmp_path: Path) -> None:
    """A core started with an empty store signs no receipt before a driver has told it
    where its committee is: `synod tusk submit` asks it again until its timeout, then
    prints the refusal with its reason and says what to start."""
    init_network(tmp_path)
    core = Process(tmp_path, "core-0", "tusk", "core", str(tmp_path), "core-0")
    try:
        core.wait_ready()
        result = subprocess.run(
            synod_command(
                "tusk", "submit", str(tmp_path), "--core", "core-0", "--timeout-s", "0.5", "pay"
            ),
            capture_output=True,
            text=True,
            check=False,
            timeout=DEADLINE_S,
        )
        assert result.returncode == 0, result.stderr
        receipt = json.loads(result.stdout)
        assert (receipt["accepted"], receipt["reason"]) == (0, "not_in_contact")
        assert "synod tusk driver" in result.stderr
    finally:
        core.kill_if_running()
