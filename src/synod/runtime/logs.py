"""Structured logs: one JSON object per line on stderr, through the standard `logging`.

Runtime modules log with ``extra={...}`` fields (``peer``, ``address``, ``reason``...);
`JsonFormatter` writes them next to the time, level, logger name and message, so that
a node's stderr can be read by people and filtered by programs (``jq``).
"""

from __future__ import annotations

import json
import logging
import sys
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


def configure_json_logging(level: int | str = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every `synod` log record to `stream` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("synod")
    for existing in list(logger.handlers):
        logger.removeHandler(existing)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
