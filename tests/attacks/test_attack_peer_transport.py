"""A keyless outsider against the peer listener of real `synod rbc run` processes.

The attacker, at 127.0.0.2, knows every member's id (ids are public).  It tries to get
node-0's handshake signature by claiming to be node-1 (the old listener signed its proof
before checking the dialer's: 860 signatures a second on demand), and holds 300
connections open in their handshake.  node-0 must send it no proof, keep at most its
per-host share of handshake slots, and go on delivering broadcasts from its real peers.
"""

from __future__ import annotations

import asyncio
import signal
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synod.cli.cluster import WatchedProcess, free_ports, synod_command
from synod.rbc.network import load_network
from synod.runtime.transport import (
    _HANDSHAKE_CODEC,
    PROTOCOL_VERSION,
    Hello,
    Proof,
)
from synod.wire import encode_frame

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

NODES = 4
DEADLINE_S = 20.0
ATTACKER = "127.0.0.2"


class Node(WatchedProcess):
    def __init__(self, directory: Path, name: str) -> None:
        super().__init__(
            name, ["rbc", "run", str(directory), name], directory / f"{name}.stderr",
            deadline_s=DEADLINE_S,
        )  # fmt: skip

    def delivered(self, lines: list[dict[str, Any]]) -> set[str]:
        return {line["payload"] for line in lines if line["event"] == "delivered"}


@pytest.fixture
def network(tmp_path: Path) -> Iterator[tuple[Path, list[Node]]]:
    ports = ",".join(str(port) for port in free_ports(NODES))
    done = subprocess.run(
        synod_command("rbc", "init", str(tmp_path), "--nodes", str(NODES), "--ports", ports),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    nodes = [Node(tmp_path, f"node-{index}") for index in range(NODES)]
    try:
        yield tmp_path, nodes
    finally:
        for node in nodes:
            node.kill_if_running()


async def forged_handshake(port: int, claimed: bytes) -> list[object]:
    """Claim a member's id without its key; return every handshake frame node-0 sends."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
    writer.write(
        encode_frame(_HANDSHAKE_CODEC.encode(Hello(PROTOCOL_VERSION, b"", claimed, b"\x01" * 32)))
    )
    writer.write(encode_frame(_HANDSHAKE_CODEC.encode(Proof(b"\x00" * 64))))
    received = b""
    async with asyncio.timeout(DEADLINE_S):
        while chunk := await reader.read(65536):
            received += chunk
    writer.close()
    frames = []
    while len(received) >= 4:
        (length,) = struct.unpack(">I", received[:4])
        frames.append(_HANDSHAKE_CODEC.decode(received[4 : 4 + length]))
        received = received[4 + length :]
    return frames


async def hold_handshakes(port: int, count: int) -> list[asyncio.StreamWriter]:
    held = []
    for _ in range(count):
        try:
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(ATTACKER, 0)
            )
        except OSError:
            continue
        held.append(writer)
    return held


def test_an_outsider_gets_no_signature_and_no_peer_is_locked_out(
    network: tuple[Path, list[Node]],
) -> None:
    directory, nodes = network
    for node in nodes:
        node.wait_ready()
    config = load_network(directory)
    target = config.nodes[0]
    impersonated = bytes(config.nodes[1].node_id)

    async def attack() -> tuple[list[list[object]], list[asyncio.StreamWriter]]:
        frames = [await forged_handshake(target.port, impersonated) for _ in range(20)]
        held = await hold_handshakes(target.port, 300)
        return frames, held

    loop = asyncio.new_event_loop()
    try:
        frames, held = loop.run_until_complete(attack())
        assert all(
            [type(frame) for frame in session] in ([Hello], []) for session in frames
        ), "node-0 sent a handshake proof to a party that had not proven itself"
        # the real peers still reach node-0: a broadcast from node-3 is delivered there
        nodes[3].send_line("after the attack")
        nodes[0].wait_for(lambda lines: "after the attack" in nodes[0].delivered(lines),
                          "delivery at node-0")  # fmt: skip
        for writer in held:
            writer.transport.abort()
    finally:
        loop.close()
    for node in nodes:
        node.process.send_signal(signal.SIGTERM)
    for node in nodes:
        assert node.process.wait(timeout=DEADLINE_S) == 0

