"""Frames on asyncio streams: the 4-byte length is checked against the cap before the body.

Shared by the peer transport and the request/response layer.  `read_frame` reads the
header with ``readexactly(4)``, refuses an announced length above the cap
(`synod.wire.FrameTooLarge`) without reading or buffering any of the body, and only then
reads the body with ``readexactly(n)``.
"""

from __future__ import annotations

import asyncio

from synod.wire import FRAME_HEADER, encode_frame, parse_frame_header

__all__ = ["close_writer", "encode_frame", "read_frame"]


async def read_frame(reader: asyncio.StreamReader, *, max_frame_bytes: int) -> bytes:
    """Read one frame body.

    Raises `asyncio.IncompleteReadError` when the stream ends (cleanly between frames:
    ``error.partial == b""``), `synod.wire.FrameTooLarge` for an oversized header.
    """
    header = await reader.readexactly(FRAME_HEADER.size)
    length = parse_frame_header(header, max_frame_bytes=max_frame_bytes)
    return await reader.readexactly(length)


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
