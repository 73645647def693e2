"""One sender with a fresh key against a real `synod crdt relayer` process.

The flooder, at 127.0.0.2, broadcasts 60 frames of 4 MiB (240 MiB) to two members: one
that stops reading for a while (a slow or malicious reader), one that then sends a small
update.  The slow reader's update must arrive among the first frames it reads once it
reads again, and the relayer's resident memory must grow by less than 96 MiB: a sender
may have 8 MiB waiting for each of the two targets (neither reads during the flood), plus
per target the frame being written and the socket's buffer, plus the frame being
received, decoded and re-encoded (4 MiB each), plus allocator slack; 37-55 MiB measured.
(First in, first out with a 4,096-frame queue held every flood frame, once per target:
about 500 MiB here, 13.6 GB in the original finding.)
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from synod.crypto import KeyPair
from synod.runtime.relay import (
    HELLO_DOMAIN,
    RELAY_CODEC,
    Challenge,
    Envelope,
    Hello,
    hello_transcript,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RSS_GROWTH_BOUND_BYTES = 96 * 1024 * 1024
FLOOD_FRAMES = 60
DEADLINE_S = 30.0


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def relayer(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "synod.cli.main", "crdt", "relayer", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "relayer.stderr").open("wb"),
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready["event"] == "ready"
        yield process, ready["address"]
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


async def member(url: str, keys: KeyPair, local_host: str = "127.0.0.1") -> Any:
    from websockets.asyncio.client import connect

    websocket = await connect(
        url, compression=None, proxy=None, max_size=None, max_queue=1, local_addr=(local_host, 0)
    )
    challenge = RELAY_CODEC.decode(await websocket.recv(decode=False))
    assert isinstance(challenge, Challenge)
    signature = keys.sign(HELLO_DOMAIN, hello_transcript(challenge))
    await websocket.send(RELAY_CODEC.encode(Hello(keys.node_id, signature)))
    return websocket


def test_a_flooding_sender_with_a_fresh_key_costs_the_relayer_bounded_memory(
    relayer: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = relayer
    reader_keys, honest_keys, flooder_keys = (KeyPair.generate() for _ in range(3))
    idle_rss = resident_bytes(process.pid)

    async def scenario() -> tuple[int, int]:
        reader = await member(url, reader_keys)
        honest = await member(url, honest_keys)
        flooder = await member(url, flooder_keys, local_host="127.0.0.2")
        peak = 0
        frame = RELAY_CODEC.encode(Envelope(b"", b"\xab" * (4 * 1024 * 1024 - 64)))
        for _ in range(FLOOD_FRAMES):
            await flooder.send(frame)
            peak = max(peak, resident_bytes(process.pid))
        await honest.send(RELAY_CODEC.encode(Envelope(bytes(reader_keys.node_id), b"update")))
        peak = max(peak, resident_bytes(process.pid))
        before_update = 0
        async with asyncio.timeout(DEADLINE_S):
            while True:
                envelope = RELAY_CODEC.decode(await reader.recv())
                assert isinstance(envelope, Envelope)
                if envelope.payload == b"update":
                    break
                before_update += 1
        for websocket in (reader, honest, flooder):
            websocket.transport.abort()
        return peak, before_update

    peak, before_update = asyncio.run(scenario())
    assert process.poll() is None, "the relayer died"
    growth = peak - idle_rss
    assert growth < RSS_GROWTH_BOUND_BYTES, f"the relayer grew by {growth / 2**20:.0f} MiB"
    # frames already in the kernel's socket buffers come first whatever the relayer does
    assert before_update < 12, f"the update came after {before_update} flood frames"
