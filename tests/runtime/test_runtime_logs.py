"""JSON log lines: one object per record with the standard and the extra fields."""

from __future__ import annotations

import io
import json
import logging

from synod.runtime.logs import configure_json_logging


def test_each_record_is_one_json_line_with_its_extra_fields() -> None:
    stream = io.StringIO()
    configure_json_logging(logging.INFO, stream)
    logger = logging.getLogger("synod.test")
    try:
        logger.info("connected to %s", "peer", extra={"peer": "NABC", "raw": b"\x01\x02"})
        logger.debug("not shown at INFO")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        root = logging.getLogger("synod")
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.propagate = True
        root.setLevel(logging.NOTSET)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "connected to peer"
    assert (first["level"], first["logger"], first["peer"]) == ("info", "synod.test", "NABC")
    assert first["raw"] == "0102"
    assert isinstance(first["ts"], float)
    assert second["level"] == "error"
    assert "ValueError: boom" in second["exception"]
