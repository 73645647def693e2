"""Helpers shared by the runtime tests, which run real sockets on 127.0.0.1.

Imported by the test modules next to it (pytest puts this folder on the import path)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import msgspec

from synod.crypto import KeyPair
from synod.wire import Codec, Message

DEADLINE_S = 5.0


def asynchronous(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (no async pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class Note(Message, frozen=True, tag="note"):
    """A small message for the tests to send."""

    text: Annotated[str, msgspec.Meta(max_length=100)]


CODEC: Codec[Note] = Codec(Note)


def keys(index: int) -> KeyPair:
    """The fixed key pair of test node `index` (0, 1, ...)."""
    return KeyPair.from_seed(bytes([index + 1]) * 32)


async def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (EOF or reset)."""
    chunks = []
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(reader.read(65536), DEADLINE_S):
            chunks.append(chunk)
    return b"".join(chunks)
