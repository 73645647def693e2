"""A node whose store holds a record its core cannot be rebuilt from stops with one clear
line naming the file, and a non-zero exit, in every protocol's command (it once printed a
47-49 line traceback for reliable broadcast, Tusk and the CRDT)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from synod.cli.cluster import free_ports, synod_command
from synod.core import Persist
from synod.runtime.storage import SqliteStorage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

GARBAGE = b"\xc1 not a record"


def synod(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        synod_command(*arguments),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def ports(count: int) -> str:
    return ",".join(str(port) for port in free_ports(count))


def rbc(directory: Path) -> tuple[Path, list[str]]:
    from synod.rbc.network import load_network

    synod("rbc", "init", "net", "--ports", ports(4), cwd=directory)
    config = load_network(directory / "net")
    return config.store_path(config.nodes[0]), ["rbc", "run", "net", "node-0"]


def scp(directory: Path) -> tuple[Path, list[str]]:
    from synod.scp.network import load_network

    synod("scp", "init", "net", cwd=directory)
    config = load_network(directory / "net")
    return config.store_path(config.nodes[0]), ["scp", "run", "net", config.nodes[0].name]


def tusk(directory: Path) -> tuple[Path, list[str]]:
    from synod.tusk.config import load_network

    synod("tusk", "init", "net", "--ports", ports(4), cwd=directory)
    network = load_network(directory / "net")
    return network.store_path(network.cores[0]), ["tusk", "core", "net", "core-0"]


def crdt(directory: Path) -> tuple[Path, list[str]]:
    from synod.crdt.config import load_config

    synod("crdt", "init", "alice", cwd=directory)
    return load_config(directory / "alice").database_path, ["crdt", "run", "alice"]


PROTOCOLS: dict[str, tuple[Callable[[Path], tuple[Path, list[str]]], list[bytes]]] = {
    "rbc": (rbc, [b"delivered/\x00\x01", b"sent/\x00\x01"]),
    "scp": (scp, [b"scp/slot/1/prepare", b"scp/floor", b"scp/delivered"]),
    "tusk": (tusk, [b"tusk/certificate/" + bytes(40), b"tusk/vote/" + bytes(40)]),
    "crdt": (crdt, [b"crdt/snapshot", b"crdt/update/" + bytes(32)]),
}


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
def test_a_corrupt_record_gives_one_line_naming_the_store(tmp_path: Path, protocol: str) -> None:
    prepare, keys = PROTOCOLS[protocol]
    store_path, command = prepare(tmp_path)
    store = SqliteStorage.open(store_path)
    store.apply([Persist(key, GARBAGE) for key in keys])
    store.close()
    done = synod(*command, cwd=tmp_path)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert store_path.name in errors[0] and "restore" in errors[0]
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) < 5
