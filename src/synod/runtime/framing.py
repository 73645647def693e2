"""Frames on asyncio streams: the 4-byte length is checked against the cap before the body.

Shared by the peer transport and the request/response layer.  `read_frame` reads the
header with ``readexactly(4)``, refuses an announced length above the cap
(`synod.wire.FrameTooLarge`) without reading or buffering any of the body, and only then
reads the body with ``readexactly(n)``.

`read_frame_guarded` is what listeners use on connections from parties they do not
trust: the header must arrive within an idle deadline, the body's bytes are reserved
from a `ByteBudget` (per source host and per process) before any of it is read, and the
body must arrive within a deadline that grows with its length (`FrameDeadlines`), so a
peer that sends one byte now and then, or announces a large frame and stalls, holds
neither memory nor the connection for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from synod.runtime.admission import ByteBudget
from synod.wire import FRAME_HEADER, WireError, encode_frame, parse_frame_header

__all__ = [
    "FrameBudgetExceeded",
    "FrameDeadlines",
    "close_writer",
    "encode_frame",
    "read_frame",
    "read_frame_guarded",
]


class FrameBudgetExceeded(WireError):
    """A frame's bytes could not be reserved: its host (or the process) holds too many."""


@dataclass(frozen=True, slots=True)
class FrameDeadlines:
    """How long a remote party may take: to start a frame, and to finish one.

    A frame of n bytes must be complete `frame_s + n / min_bytes_per_s` seconds after its
    header: 10 s plus 4 s per MiB by default (256 KiB/s, far below any real link between
    nodes, far above a trickle).
    """

    idle_s: float = 300.0
    frame_s: float = 10.0
    min_bytes_per_s: int = 256 * 1024

    def body_s(self, length: int) -> float:
        return self.frame_s + length / self.min_bytes_per_s


async def read_frame(reader: asyncio.StreamReader, *, max_frame_bytes: int) -> bytes:
    """Read one frame body.

    Raises `asyncio.IncompleteReadError` when the stream ends (cleanly between frames:
    ``error.partial == b""``), `synod.wire.FrameTooLarge` for an oversized header.
    """
    header = await reader.readexactly(FRAME_HEADER.size)
    length = parse_frame_header(header, max_frame_bytes=max_frame_bytes)
    return await reader.readexactly(length)


ConnectionHandler = Callable[
    [asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]
]

_log = logging.getLogger("synod.runtime.framing")


def connection_starter(
    handler: ConnectionHandler, tasks: set[asyncio.Task[None]]
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], None]:
    """The callback to give `asyncio.start_server`: it runs `handler` in a task of our
    own, kept in `tasks` until it ends, instead of letting asyncio wrap the coroutine.

    asyncio's own wrapper asks a finished handler task for its exception, which raises
    for a task cancelled at shutdown (even one cancelled before its first step, which
    no ``except`` inside the handler can see) and is logged as "Exception in callback":
    an error line on every clean stop.  Here a cancelled connection just closes its
    socket, and an unexpected exception is logged once, with the connection closed.
    """

    def start(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(handler(reader, writer))
        tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            tasks.discard(done)
            if done.cancelled():
                writer.transport.abort()
                return
            error = done.exception()
            if error is not None:
                _log.error("connection handler failed", exc_info=error)
                writer.transport.abort()

        task.add_done_callback(finished)

    return start


async def close_writer(writer: asyncio.StreamWriter, *, timeout_s: float = 1.0) -> None:
    """Close a stream, flushing what is buffered for at most `timeout_s`, then abort it.

    Errors of an already broken connection are ignored: closing is always safe.
    """
    writer.close()
    try:
        async with asyncio.timeout(timeout_s):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except (OSError, RuntimeError):
        pass


async def read_frame_guarded(
    reader: asyncio.StreamReader,
    *,
    max_frame_bytes: int,
    deadlines: FrameDeadlines,
    budget: ByteBudget,
    host: str,
) -> bytes:
    """Read one frame from an untrusted party (see the module docstring).

    Raises what `read_frame` raises, `TimeoutError` when a deadline passes and
    `FrameBudgetExceeded` when the body's bytes cannot be reserved.
    """
    async with asyncio.timeout(deadlines.idle_s):
        header = await reader.readexactly(FRAME_HEADER.size)
    length = parse_frame_header(header, max_frame_bytes=max_frame_bytes)
    if not budget.reserve(host, length):
        raise FrameBudgetExceeded(
            f"{length}-byte frame refused: {budget.used_by(host)} bytes already held for "
            f"this host, {budget.used} for all"
        )
    try:
        async with asyncio.timeout(deadlines.body_s(length)):
            return await reader.readexactly(length)
    finally:
        budget.release(host, length)
