"""JSON log lines: one object per record with the standard and the extra fields."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from synod.runtime.logs import WarningThrottle, configure_json_logging


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_json_logging(logging.INFO, stream)
    try:
        yield stream
    finally:
        for name in ("synod", ""):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                    logger.removeHandler(handler)
        synod_logger = logging.getLogger("synod")
        synod_logger.propagate = True
        synod_logger.setLevel(logging.NOTSET)
        logging.captureWarnings(False)


def test_each_record_is_one_json_line_with_its_extra_fields(json_stream: io.StringIO) -> None:
    logger = logging.getLogger("synod.test")
    logger.info("connected to %s", "peer", extra={"peer": "NABC", "raw": b"\x01\x02"})
    logger.debug("not shown at INFO")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    lines = json_stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "connected to peer"
    assert (first["level"], first["logger"], first["peer"]) == ("info", "synod.test", "NABC")
    assert first["raw"] == "0102"
    assert isinstance(first["ts"], float)
    assert second["level"] == "error"
    assert "ValueError: boom" in second["exception"]


def test_asyncio_and_root_records_are_json_lines_too(json_stream: io.StringIO) -> None:
    async def fail() -> None:
        raise OSError(24, "Too many open files")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.call_exception_handler({"message": "socket.accept() out of system resource"})
        task = loop.create_task(fail())
        await asyncio.gather(task, return_exceptions=True)
        loop.call_exception_handler({"message": "Task failed", "exception": OSError(24, "x")})

    asyncio.run(main())
    logging.getLogger().error("from the root logger")
    lines = json_stream.getvalue().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    assert [record["logger"] for record in records] == ["asyncio", "asyncio", "root"]
    assert "OSError" in records[1]["exception"]


def test_repeated_warnings_are_throttled_and_counted(json_stream: io.StringIO) -> None:
    logger = logging.getLogger("synod.test.flood")
    for number in range(1_000):
        logger.warning("too many clients; connection refused", extra={"n": number})
    logger.warning("another kind of warning")
    records = [json.loads(line) for line in json_stream.getvalue().splitlines()]
    refused = [r for r in records if r["msg"].startswith("too many")]
    assert len(refused) == 5
    assert [r["msg"] for r in records].count("another kind of warning") == 1


def test_the_count_of_withheld_warnings_comes_with_the_next_window() -> None:
    now = [0.0]
    throttle = WarningThrottle(burst=2, interval_s=10.0, clock=lambda: now[0])

    def record(level: int = logging.WARNING) -> logging.LogRecord:
        return logging.LogRecord("synod.x", level, "f", 1, "refused", None, None)

    passed = [throttle.filter(record()) for _ in range(7)]
    assert passed == [True, True, False, False, False, False, False]
    assert throttle.filter(record(logging.INFO)), "information is never throttled"
    now[0] = 10.0
    later = record()
    assert throttle.filter(later)
    assert later.suppressed == 5  # type: ignore[attr-defined]
    again = record()
    assert throttle.filter(again)
    assert not hasattr(again, "suppressed")
