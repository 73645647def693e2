"""A real committee with one core 100 ms (one way) from both drivers: four `synod tusk
core` processes, two `synod tusk driver` processes that reach core-3 through a delay
proxy, and every transaction handed to core-3 committed by every core.

Before, the far core proposed in almost no round and its few certificates were never
carried to the other cores, so none of its transactions was ever committed (0 of 400
in the first report).  Waits are on lines the processes print, under deadlines."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synod.cli.cluster import WatchedProcess, free_ports, synod_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

ONE_WAY_S = 0.1
DEADLINE_S = 60.0


class Process(WatchedProcess):
    """One synod process; its stdout JSON lines are collected by a thread."""

    def __init__(self, directory: Path, label: str, *arguments: str) -> None:
        super().__init__(
            label, arguments, directory / f"{label}.stderr", deadline_s=DEADLINE_S, stdin=False
        )

    def commits(self) -> list[dict[str, Any]]:
        return self.events("committed")

    def wait_transactions(self, wanted: set[str]) -> None:
        def done(lines: list[dict[str, Any]]) -> bool:
            committed = {
                tx for line in lines if line["event"] == "committed" for tx in line["transactions"]
            }
            return wanted <= committed

        self.wait_for(done, f"commit of {len(wanted)} transactions")


def submit(directory: Path, core: str, *transactions: str) -> None:
    result = subprocess.run(
        synod_command("tusk", "submit", str(directory), "--core", core, *transactions),
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["accepted"] == len(transactions), result.stdout


class DelayProxy:
    """Forwards TCP connections from a local port to `target`, each byte `delay_s` late
    in both directions (order kept), on its own event loop thread."""

    def __init__(self, port: int, target: int, delay_s: float) -> None:
        self.port, self.target, self.delay_s = port, target, delay_s
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        assert self._started.wait(10), "the proxy did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self._started.set()
        await self._stop.wait()
        server.close()
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, target_writer), self._pipe(target_reader, writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, due - loop.time()))  # the link's latency
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((loop.time() + self.delay_s, data))
        except OSError:
            pass
        queue.put_nowait((0.0, b""))
        await sender


@pytest.fixture
def far_committee(tmp_path: Path) -> Iterator[tuple[Path, dict[str, Process], int]]:
    ports = free_ports(6)
    listed = ",".join(str(port) for port in ports[:4])
    initialised = subprocess.run(
        synod_command("tusk", "init", str(tmp_path), "--cores", "4", "--ports", listed),
        capture_output=True,
        text=True,
        check=False,
    )
    assert initialised.returncode == 0, initialised.stderr
    # The drivers read a copy of tusk.toml in which core-3 is at the proxy's port.
    seen_by_drivers = tmp_path / "drivers"
    seen_by_drivers.mkdir()
    text = (tmp_path / "tusk.toml").read_text()
    assert text.count(f"port = {ports[3]}") == 1
    proxied = text.replace(f"port = {ports[3]}", f"port = {ports[4]}")
    (seen_by_drivers / "tusk.toml").write_text(proxied)
    for key_file in tmp_path.glob("*.key"):
        shutil.copy(key_file, seen_by_drivers / key_file.name)
    processes = {
        f"core-{i}": Process(tmp_path, f"core-{i}", "tusk", "core", str(tmp_path), f"core-{i}")
        for i in range(4)
    }
    with DelayProxy(ports[4], ports[3], ONE_WAY_S):
        for name in ("driver-a", "driver-b"):
            metrics = ("--metrics-port", str(ports[5])) if name == "driver-a" else ()
            processes[name] = Process(
                tmp_path, name, "tusk", "driver", str(seen_by_drivers), "--name", name, *metrics
            )
        try:
            yield tmp_path, processes, ports[5]
        finally:
            for process in processes.values():
                process.kill_if_running()


def test_a_core_100_ms_from_the_drivers_gets_every_transaction_committed(
    far_committee: tuple[Path, dict[str, Process], int],
) -> None:
    directory, processes, metrics_port = far_committee
    for process in processes.values():
        process.wait_ready()
    handed: set[str] = set()
    for batch in range(10):
        transactions = [f"far {batch} {number}" for number in range(5)]
        submit(directory, "core-3", *transactions)
        handed.update(transactions)
    for name in ("core-0", "core-1", "core-2", "core-3"):
        processes[name].wait_transactions(handed)
    creators = {line["creator"] for line in processes["core-0"].commits()}
    assert "core-3" in creators
    # `synod tusk submit --wait` returns once cores of weight f + 1 state the position,
    # which is where core-0 printed the transaction.
    result = subprocess.run(
        synod_command("tusk", "submit", str(directory), "--core", "core-1", "--wait", "last"),
        capture_output=True,
        text=True,
        check=False,
        timeout=DEADLINE_S,
    )
    assert result.returncode == 0, result.stderr
    receipt, proof = (json.loads(line) for line in result.stdout.splitlines())
    assert receipt["accepted"] == 1
    [position] = proof["transactions"]
    assert position["transaction"] == "last"
    processes["core-0"].wait_transactions({"last"})
    line = next(c for c in processes["core-0"].commits() if "last" in c["transactions"])
    assert (position["sequence"], position["certificate"]) == (line["sequence"], line["digest"])
    # driver-a serves Prometheus text metrics, a round and a lag for every core.
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as page:
        text = page.read().decode()
    for name in ("core-0", "core-3"):
        assert f'synod_tusk_driver_core_lag_rounds{{core="{name}",driver="driver-a"}}' in text
