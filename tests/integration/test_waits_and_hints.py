"""Every wait longer than a second says what it waits for, and every failure says what
to do: clients facing a node that accepts connections and never answers (a stopped or
overloaded process), a node that is not running, and a Tusk driver with no core."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.cli.cluster import free_ports, synod_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def synod(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        synod_command(*arguments),
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def silent_listener(family: int = socket.AF_INET, path: Path | None = None) -> Iterator[int]:
    """A listener that accepts every connection and never writes a byte; yields its
    TCP port (0 for a Unix socket at `path`)."""
    server = socket.socket(family, socket.SOCK_STREAM)
    server.bind(str(path) if path is not None else ("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1] if path is None else 0
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        server.close()


def ports(count: int) -> str:
    return ",".join(str(port) for port in free_ports(count))


def line_said_while_running(directory: Path, arguments: tuple[str, ...], text: str) -> str:
    """Run `synod ARGUMENTS` in `directory` until a line of its stderr holds `text`
    (within 30 s), stop it, and return that line (what it said while it waited)."""
    err = directory / "process.err"
    with err.open("wb") as stderr:
        process = subprocess.Popen(
            synod_command(*arguments),
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 30
        while text not in err.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, err.read_text()
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=30)
    lines = [line for line in err.read_text().splitlines() if text in line]
    assert lines, err.read_text()
    return lines[0]


def said_before(text: str, first: str, then: str) -> bool:
    """`first` is in `text`, before `then`."""
    return first in text and then in text and text.index(first) < text.index(then)


def test_scp_submit_to_a_silent_node_says_what_it_waits_for_and_what_to_do(
    tmp_path: Path,
) -> None:
    with silent_listener() as port:
        submit_ports = f"{port},{ports(3)}"
        init = synod(
            tmp_path, "scp", "init", "net", "--ports", ports(4), "--submit-ports", submit_ports
        )
        assert init.returncode == 0, init.stderr
        done = synod(tmp_path, "scp", "submit", "net", "node-0", "hello", "--timeout", "3")
    assert done.returncode == 3, done.stderr
    assert said_before(done.stderr, "waiting for node-0", "is it running?"), done.stderr
    assert "synod scp up net" in done.stderr and "--timeout" in done.stderr


def test_scp_submit_to_a_node_that_is_not_running_says_how_to_start_it(
    tmp_path: Path,
) -> None:
    init = synod(
        tmp_path, "scp", "init", "net", "--ports", ports(4), "--submit-ports", ports(4)
    )
    assert init.returncode == 0, init.stderr
    done = synod(tmp_path, "scp", "submit", "net", "node-1", "hello")
    assert done.returncode == 3, done.stderr
    assert "`synod scp up net`" in done.stderr
    assert "`synod scp run net node-1`" in done.stderr


def test_tusk_submit_to_a_silent_core_says_what_it_waits_for_and_what_to_do(
    tmp_path: Path,
) -> None:
    with silent_listener() as port:
        init = synod(tmp_path, "tusk", "init", "net", "--ports", f"{port},{ports(3)}")
        assert init.returncode == 0, init.stderr
        done = synod(
            tmp_path, "tusk", "submit", "net", "--core", "core-0", "pay", "--timeout-s", "3"
        )
    assert done.returncode == 1, done.stderr
    assert said_before(done.stderr, "waiting for core-0", "is it running?"), done.stderr
    assert "`synod tusk up net`" in done.stderr


def test_tusk_status_says_it_waits_for_a_silent_core(tmp_path: Path) -> None:
    with silent_listener() as port:
        init = synod(tmp_path, "tusk", "init", "net", "--ports", f"{port},{ports(3)}")
        assert init.returncode == 0, init.stderr
        done = synod(tmp_path, "tusk", "status", "net", "--timeout", "3")
    assert done.returncode == 1
    assert "waiting for the nodes to answer" in done.stderr, done.stderr


def test_crdt_submit_to_a_silent_node_says_what_it_waits_for(tmp_path: Path) -> None:
    init = synod(tmp_path, "crdt", "init-network", "net", "--nodes", "3", "--relay-port", ports(1))
    assert init.returncode == 0, init.stderr
    with silent_listener(socket.AF_UNIX, tmp_path / "net" / "node-0" / "control.sock"):
        done = synod(tmp_path, "crdt", "submit", "net", "node-0", "hello", "--timeout", "3")
    assert done.returncode == 1, done.stderr
    assert said_before(done.stderr, "waiting for node-0", "does not answer"), done.stderr


def test_fastpay_client_says_it_waits_for_authorities_that_do_not_answer(
    tmp_path: Path,
) -> None:
    with silent_listener() as port:
        committee = tmp_path / "committee.json"
        for index, shard_port in enumerate([port, *free_ports(3)]):
            generated = synod(
                tmp_path,
                *("fastpay", "server", "--server", f"server{index}.json", "generate"),
                *("--host", "127.0.0.1", "--port", str(shard_port)),
            )
            assert generated.returncode == 0, generated.stderr
            with committee.open("a") as handle:
                handle.write(generated.stdout)
        client = ("fastpay", "client", "--committee", "committee.json", "--accounts")
        created = synod(tmp_path, *client, "accounts.json", "create-accounts", "1")
        assert created.returncode == 0, created.stderr
        account = created.stdout.split(":")[0]
        done = synod(
            tmp_path, *client, "accounts.json", "--timeout-ms", "3000", "query-balance", account
        )
    assert done.returncode == 1, done.stderr
    assert "waiting for the authorities" in done.stderr, done.stderr
    assert "synod fastpay status" in done.stderr


def test_a_tusk_driver_without_cores_says_what_it_waits_for(tmp_path: Path) -> None:
    init = synod(tmp_path, "tusk", "init", "net", "--ports", ports(4))
    assert init.returncode == 0, init.stderr
    line = line_said_while_running(tmp_path, ("tusk", "driver", "net"), "waiting for the cores")
    assert "synod tusk up" in line


def test_a_second_copy_of_a_running_node_and_a_taken_port_say_what_to_do(
    tmp_path: Path,
) -> None:
    with silent_listener() as port:
        init = synod(tmp_path, "rbc", "init", "net", "--ports", f"{port},{ports(3)}")
        assert init.returncode == 0, init.stderr
        taken = synod(tmp_path, "rbc", "run", "net", "node-0")
    assert taken.returncode == 1
    assert "address already in use" in taken.stderr
    assert "stop it, or write the network again with free ports" in taken.stderr
    err = tmp_path / "first.err"
    with err.open("wb") as stderr:
        first = subprocess.Popen(
            synod_command("rbc", "run", "net", "node-1"),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert first.stdout is not None
        assert b'"event": "ready"' in first.stdout.readline()
        second = synod(tmp_path, "rbc", "run", "net", "node-1")
    finally:
        first.terminate()
        first.wait(timeout=30)
    assert second.returncode == 1
    assert "already running: stop that process first" in second.stderr
    again = synod(tmp_path, "rbc", "init", "net")
    assert again.returncode == 1 and "remove it first" in again.stderr


@pytest.mark.parametrize("mode", ["rbc", "scp", "scp-stellar"])
def test_a_lone_node_says_it_waits_for_its_peers(mode: str, tmp_path: Path) -> None:
    protocol = mode.split("-", maxsplit=1)[0]
    if protocol == "scp":
        stellar = ["--stellar"] if mode == "scp-stellar" else []
        init = synod(tmp_path, "scp", "init", "net", *stellar, "--ports", ports(4),
                     "--submit-ports", ports(4))  # fmt: skip
    else:
        init = synod(tmp_path, "rbc", "init", "net", "--ports", ports(4))
    assert init.returncode == 0, init.stderr
    line = line_said_while_running(
        tmp_path, (protocol, "run", "net", "node-0"), "waiting for peers"
    )
    assert '"connected": 0, "of": 3' in line
    assert f"synod {protocol} up net" in line


def test_a_tusk_core_without_a_driver_says_what_it_waits_for(tmp_path: Path) -> None:
    init = synod(tmp_path, "tusk", "init", "net", "--ports", ports(4))
    assert init.returncode == 0, init.stderr
    line = line_said_while_running(
        tmp_path, ("tusk", "core", "net", "core-0"), "waiting for a driver"
    )
    assert "synod tusk up" in line


def test_a_transfer_to_authorities_that_are_all_down_says_how_to_check_them(
    tmp_path: Path,
) -> None:
    committee = tmp_path / "committee.json"
    for index, shard_port in enumerate(free_ports(4)):  # nothing listens on them
        generated = synod(
            tmp_path,
            *("fastpay", "server", "--server", f"server{index}.json", "generate"),
            *("--host", "127.0.0.1", "--port", str(shard_port)),
        )
        assert generated.returncode == 0, generated.stderr
        with committee.open("a") as handle:
            handle.write(generated.stdout)
    client = ("fastpay", "client", "--committee", "committee.json", "--accounts", "accounts.json")
    created = synod(tmp_path, *client, "create-accounts", "2", "--initial-funding", "100")
    assert created.returncode == 0, created.stderr
    first, second = (line.split(":")[0] for line in created.stdout.splitlines())
    done = synod(tmp_path, *client, "--timeout-ms", "1500", "transfer", "5", "--from", first,
                 "--to", second)  # fmt: skip
    assert done.returncode == 1
    assert "not enough authorities accepted" in done.stderr
    # A quorum is three of four: two silent authorities end the wait, whatever the rest do.
    assert "(0 accepted, 0 refused, 2 gave no usable answer, 2 not waited for, of 4)" in (
        done.stderr
    )
    assert "are the authorities running? `synod fastpay status" in done.stderr


def test_crdt_status_says_it_waits_for_a_silent_node(tmp_path: Path) -> None:
    init = synod(tmp_path, "crdt", "init-network", "net", "--nodes", "2", "--relay-port", ports(1))
    assert init.returncode == 0, init.stderr
    with silent_listener(socket.AF_UNIX, tmp_path / "net" / "node-0" / "control.sock"):
        done = synod(tmp_path, "crdt", "status", "net", "--timeout", "3")
    assert done.returncode == 1
    assert "waiting for node-0 to answer" in done.stderr, done.stderr
