"""The control socket of a BFT-CRDT node (`synod.runtime.crdt_node.ControlServer`): what
`synod crdt submit` and `synod crdt status` use when a node runs without a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path

from runtime_helpers import asynchronous

from synod.crypto import KeyPair
from synod.runtime.crdt_node import (
    CONTROL_MAX_CONNECTIONS,
    CONTROL_MAX_LINE_BYTES,
    ControlServer,
    LogNode,
    ask_control,
)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[LogNode, Path]]:
    node = LogNode.open(KeyPair.from_seed(b"\x07" * 32), tmp_path / "node.sqlite", name="alice")
    control = ControlServer(node, tmp_path / "control.sock")
    await control.start()
    await node.start()
    try:
        yield node, tmp_path / "control.sock"
    finally:
        await control.close()
        await node.stop()


@asynchronous
async def test_a_line_is_appended_durably_and_status_counts_it(tmp_path: Path) -> None:
    async with serving(tmp_path) as (node, path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        answers = await ask_control(path, ["first", "//second", "/status", "/history"])
        assert answers[:2] == [{"event": "appended"}, {"event": "appended"}]
        assert answers[2]["entries"] == 2 and answers[2]["waiting"] == 0
        assert answers[2]["relay_connected"] is None  # no relayer configured
        assert [entry["text"] for entry in answers[3]["entries"]] == ["first", "/second"]
        assert [entry["text"] for entry in node.entries()] == ["first", "/second"]


@asynchronous
async def test_an_unknown_command_and_an_empty_line_are_answered_with_an_error(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as (node, path):
        unknown, empty = await ask_control(path, ["/drop-tables", ""])
        assert unknown == {"event": "error", "reason": "unknown command /drop-tables"}
        assert empty["event"] == "error"
        assert node.entries() == []


@asynchronous
async def test_an_overlong_line_is_refused_and_the_node_keeps_serving(tmp_path: Path) -> None:
    async with serving(tmp_path) as (node, path):
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"x" * (CONTROL_MAX_LINE_BYTES + 10) + b"\n")
        answer = json.loads(await reader.readline())
        assert answer["event"] == "error" and "longer than" in answer["reason"]
        assert await reader.read() == b""  # closed: the rest of that stream has no framing
        writer.close()
        assert await ask_control(path, ["after"]) == [{"event": "appended"}]
        assert [entry["text"] for entry in node.entries()] == ["after"]


@asynchronous
async def test_connections_beyond_the_cap_are_turned_away(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, path):
        held = [
            await asyncio.open_unix_connection(str(path)) for _ in range(CONTROL_MAX_CONNECTIONS)
        ]
        # each held connection is registered once it answered a request
        for reader, writer in held:
            writer.write(b"/status\n")
            assert json.loads(await reader.readline())["event"] == "status"
        reader, writer = await asyncio.open_unix_connection(str(path))
        assert json.loads(await reader.readline())["reason"] == "too many connections"
        writer.close()
        for _, held_writer in held:
            held_writer.close()
        # once they are gone, a new connection is served
        async with asyncio.timeout(10):
            while True:
                try:
                    answers = await ask_control(path, ["/status"])
                except ConnectionError:
                    answers = []
                if answers and answers[0]["event"] == "status":
                    break
                await asyncio.sleep(0.01)


@asynchronous
async def test_a_stale_socket_left_by_a_killed_node_is_replaced(tmp_path: Path) -> None:
    import socket

    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "control.sock"))
    stale.close()  # the file stays, as after SIGKILL
    node = LogNode.open(KeyPair.from_seed(b"\x08" * 32), tmp_path / "node.sqlite", name="bob")
    control = ControlServer(node, tmp_path / "control.sock")
    await control.start()
    await node.start()
    try:
        assert await ask_control(tmp_path / "control.sock", ["hi"]) == [{"event": "appended"}]
    finally:
        await control.close()
        await node.stop()
    assert not (tmp_path / "control.sock").exists()
