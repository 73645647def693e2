"""Structured logs: one JSON object per line on stderr, through the standard `logging`.

Runtime modules log with ``extra={...}`` fields (``peer``, ``address``, ``reason``...);
`JsonFormatter` writes them next to the time, level, logger name and message, so that
a node's stderr can be read by people and filtered by programs (``jq``).  Every record
of the process goes through it, asyncio's own (tracebacks of callbacks, "out of file
descriptors" while accepting) and the root logger's included: nothing reaches stderr in
another format.

Warnings are what an attacker can make a process write at will (one per refused
connection, per bad frame), so `WarningThrottle` bounds them: per logger and message,
at most `burst` records of WARNING or above pass in each `interval_s`; the rest are
counted, and the next record of that kind to pass carries ``suppressed``, the number
withheld since the last one that passed.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

# Attributes every LogRecord has; anything else came from `extra=` and is a field.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: ts, level, logger, msg, then extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=_fallback, ensure_ascii=False)


def _fallback(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)


class WarningThrottle(logging.Filter):
    """Let at most `burst` warnings of one kind through per `interval_s` (see module doc)."""

    def __init__(
        self,
        *,
        burst: int = 5,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        max_kinds: int = 1_024,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self.clock = clock
        self.max_kinds = max_kinds
        # kind -> [window start, passed in this window, withheld since the last pass]
        self._kinds: dict[tuple[str, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        kind = (record.name, str(record.msg))
        now = self.clock()
        state = self._kinds.get(kind)
        if state is None:
            if len(self._kinds) >= self.max_kinds:
                self._kinds.clear()  # kinds are few in practice; never grow without bound
            state = self._kinds[kind] = [now, 0, 0]
        if now - state[0] >= self.interval_s:
            state[0], state[1] = now, 0
        if state[1] >= self.burst:
            state[2] += 1
            return False
        state[1] += 1
        if state[2]:
            record.suppressed = int(state[2])
            state[2] = 0
        return True


def configure_json_logging(level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every log record of the process to `stream` (stderr) as JSON lines.

    `synod` loggers log at `level`; other libraries' (asyncio's) at WARNING and above.
    Repeated warnings are throttled (`WarningThrottle`).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(WarningThrottle())
    for name in ("synod", ""):
        logger = logging.getLogger(name)
        for existing in list(logger.handlers):
            logger.removeHandler(existing)
        logger.addHandler(handler)
    synod_logger = logging.getLogger("synod")
    synod_logger.setLevel(level)
    synod_logger.propagate = False
    logging.getLogger().setLevel(logging.WARNING)
    logging.captureWarnings(True)
