"""`synod stellar run`, `serve` and `crawl` as real processes on 127.0.0.1: four validators
in Stellar mode agree, a crawl from one address rebuilds their quorum sets, and `synod
fbas check` reads the file it writes (the same crawl of `serve` nodes runs in process in
test_stellar_overlay_runtime.py)."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from synod.crypto import KeyPair, write_key_file
from synod.scp.stellar import node_id_to_strkey

pytestmark = pytest.mark.integration

SYNOD = [sys.executable, "-m", "synod.cli.main"]


def read_ready_line(process: subprocess.Popen[str], timeout_s: float = 30.0) -> dict[str, Any]:
    """The first JSON line a node prints, waiting at most `timeout_s`."""
    return read_json_lines_until(process, lambda _entry: True, timeout_s)[-1]


def test_crawl_of_nothing_reachable_fails_with_a_message(tmp_path: Path) -> None:
    crawl = subprocess.run(
        [*SYNOD, "stellar", "crawl", "127.0.0.1:1", "--timeout-s", "5"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert crawl.returncode == 1
    assert "0 nodes" in crawl.stderr
    assert "Traceback" not in crawl.stderr


def test_bad_quorum_set_file_names_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "node.key"
    write_key_file(key_file, KeyPair.generate())
    qset_file = tmp_path / "qset.json"
    qset_file.write_text(json.dumps({"threshold": 1, "validators": ["GNOTAKEY"]}))
    serve = subprocess.run(
        [*SYNOD, "stellar", "serve", "--key", str(key_file), "--quorum-set", str(qset_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert serve.returncode == 2
    assert "quorumSet.validators" in serve.stderr and "Traceback" not in serve.stderr


def free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that were free a moment ago (the nodes must know each other's)."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def read_json_lines_until(
    process: subprocess.Popen[str], done: Callable[[dict[str, Any]], bool], timeout_s: float
) -> list[dict[str, Any]]:
    """JSON lines a process prints, until one satisfies `done` (or the time runs out).

    Reads the pipe's descriptor directly: a buffered reader could hold lines that the
    descriptor no longer reports as readable.
    """
    assert process.stdout is not None
    descriptor = process.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(descriptor, selectors.EVENT_READ)
    pending = b""
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not selector.select(timeout=deadline - time.monotonic()):
            break
        chunk = os.read(descriptor, 65536)
        if not chunk:
            break
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            lines.append(json.loads(line))
            if done(lines[-1]):
                return lines
    raise AssertionError(f"gave up after {lines}; exit {process.poll()}")


def test_four_validators_in_stellar_mode_agree_and_are_crawled(tmp_path: Path) -> None:
    keys = [KeyPair.generate() for _ in range(4)]
    configured = {
        "threshold": 3,
        "validators": [node_id_to_strkey(k.node_id) for k in keys],
        "innerQuorumSets": [],
    }
    qset_file = tmp_path / "qset.json"
    qset_file.write_text(json.dumps(configured))
    ports = free_ports(4)
    processes = []
    try:
        for index, key in enumerate(keys):
            key_file = tmp_path / f"v{index}.key"
            write_key_file(key_file, key)
            peers = [
                option
                for other, port in enumerate(ports)
                if other != index
                for option in ("--peer", f"127.0.0.1:{port}")
            ]
            processes.append(
                subprocess.Popen(
                    [*SYNOD, "stellar", "run", "--key", str(key_file), "--listen",
                     f"127.0.0.1:{ports[index]}", "--quorum-set", str(qset_file), "--slots", "2",
                     "--store", str(tmp_path / f"v{index}.sqlite"), *peers],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )
        decided = []
        for process in processes:
            lines = read_json_lines_until(process, lambda e: e.get("slot") == 2, 90)
            decided.append({e["slot"]: e["value"] for e in lines if e["event"] == "externalized"})
        assert all(d == decided[0] for d in decided) and set(decided[0]) == {1, 2}
        output = tmp_path / "crawl.json"
        crawl = subprocess.run(
            [*SYNOD, "fbas", "crawl", f"127.0.0.1:{ports[0]}", "-o", str(output),
             "--listen-s", "10", "--timeout-s", "60"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert crawl.returncode == 0, crawl.stderr
        records = json.loads(output.read_text())
        assert len(records) == 4 and all(r["quorumSet"] == configured for r in records)
        check = subprocess.run(
            [*SYNOD, "fbas", "check", str(output)], capture_output=True, text=True, timeout=60,
            check=False,
        )
        assert check.returncode == 0 and "Quorum intersection holds" in check.stdout
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_without_the_stellar_extra_the_command_says_what_to_install(tmp_path: Path) -> None:
    # stellar-sdk made unimportable in the child process, as on a machine without it.
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'stellar_sdk' or name.startswith('stellar_sdk.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Hide())\n"
    )
    result = subprocess.run(
        [*SYNOD, "stellar", "crawl", "127.0.0.1:1"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "pip install 'synod[stellar]'" in result.stderr
    assert "Traceback" not in result.stderr
