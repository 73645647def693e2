"""The "From Python" example of docs/runtime.md runs: four reliable-broadcast members on
127.0.0.1 in one program, a broadcast that every member delivers; and the host example
runs twice in one directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from doc_programs import run_program


@pytest.mark.timeout(60)
def test_the_python_example_broadcasts_to_every_member(
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace = run_program("runtime.md", "From Python: a reliable-broadcast network")
    delivered: Any = namespace["delivered"]
    assert sorted(name for name, _ in delivered) == ["node-0", "node-1", "node-2", "node-3"]
    assert {(event.sequence, event.payload) for _, event in delivered} == {(0, b"hello")}
    assert len({event.origin for _, event in delivered}) == 1
    assert capsys.readouterr().out.splitlines()[0] == "node-0 0 b'hello'"


@pytest.mark.timeout(60)
def test_the_host_example_runs_twice_in_one_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once raised KeyError on its second run: a new random key met the old store."""
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        run_program("runtime.md", "The host and the ordering contract")
    delivered = [line for line in capsys.readouterr().out.splitlines() if "Delivered" in line]
    assert len(delivered) == 2
    assert "sequence=0" in delivered[0] and "sequence=1" in delivered[1]
