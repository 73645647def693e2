"""The process table of `synod <protocol> status`: a process without a status port (a Tusk
driver) is shown by its last output line, which for a node is a JSON event line: the
table gives its event and short fields, not the raw JSON cut at the column's end."""

from __future__ import annotations

import json

import pytest

from synod.cli.supervise import print_live_rows


def test_a_json_event_line_is_shown_as_its_event_and_short_fields(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ready = {"event": "ready", "driver": "driver-0", "cores": ["127.0.0.1:7300"] * 4}
    rows = [{"name": "driver-0", "state": "running", "last": json.dumps(ready)}]
    print_live_rows(rows)
    (_header, line) = capsys.readouterr().out.splitlines()
    assert "ready: driver=driver-0" in line
    assert "{" not in line and len(line) <= 80


def test_a_plain_last_line_is_shown_as_it_is(capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{"name": "relayer", "state": "running", "last": "listening on 127.0.0.1:7400"}]
    print_live_rows(rows)
    assert "listening on 127.0.0.1:7400" in capsys.readouterr().out
