"""`synod.runtime.framing.connection_starter`: the servers' connection tasks end quietly
when shutdown cancels them, even before their first step, and an unexpected error in a
handler is logged once with its connection closed.  (With asyncio's own wrapper, a
cancelled handler task is reported through the loop's exception handler as "Exception
in callback", an error line on every clean stop.)"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from synod.runtime.framing import connection_starter


async def _connected_pair() -> tuple[asyncio.Server, asyncio.StreamReader, asyncio.StreamWriter]:
    accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
        asyncio.get_running_loop().create_future()
    )

    def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(keep, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _client_reader, client_writer = await asyncio.open_connection("127.0.0.1", port)
    reader, writer = await accepted
    client_writer.close()
    return server, reader, writer


def test_a_task_cancelled_before_its_first_step_is_not_reported_as_an_error() -> None:
    reported: list[dict[str, Any]] = []

    async def scenario() -> bool:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        server, reader, writer = await _connected_pair()
        started = False

        async def handler(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            nonlocal started
            started = True

        tasks: set[asyncio.Task[None]] = set()
        connection_starter(handler, tasks)(reader, writer)
        (task,) = tasks
        task.cancel()  # before the handler ran a single step
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)  # let done callbacks run
        server.close()
        await server.wait_closed()
        return started or bool(tasks) or not writer.transport.is_closing()

    assert asyncio.run(scenario()) is False
    assert reported == []


def test_an_unexpected_handler_error_is_logged_once_and_its_connection_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reported: list[dict[str, Any]] = []

    async def scenario() -> bool:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reported.append(ctx))
        server, reader, writer = await _connected_pair()

        async def handler(_reader: asyncio.StreamReader, _writer: asyncio.StreamWriter) -> None:
            raise RuntimeError("a bug in a handler")

        tasks: set[asyncio.Task[None]] = set()
        connection_starter(handler, tasks)(reader, writer)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)
        server.close()
        await server.wait_closed()
        return writer.transport.is_closing() and not tasks

    with caplog.at_level(logging.ERROR, logger="synod.runtime.framing"):
        assert asyncio.run(scenario())
    assert [record.message for record in caplog.records] == ["connection handler failed"]
    assert reported == []
