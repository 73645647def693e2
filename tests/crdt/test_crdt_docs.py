"""The *From Python* program of docs/crdt.md runs: a relayer and two real nodes on
127.0.0.1; the line one node appends is in the other's log."""

from __future__ import annotations

import pytest

from doc_programs import run_program


@pytest.mark.timeout(60)
def test_the_from_python_program_shows_alices_line_in_bobs_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = run_program("crdt.md", "From Python")
    (entry,) = namespace["log"]
    assert (entry["name"], entry["text"]) == ("alice", "hello from alice")
    assert capsys.readouterr().out.splitlines() == ["[('alice', 'hello from alice')]"]
