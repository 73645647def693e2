"""The *From Python* program of docs/crdt.md runs: a relayer and two real nodes on
127.0.0.1; the line one node appends is in the other's log."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "crdt.md"


def section(text: str, title: str) -> str:
    """The Markdown of the level-2 section `title`, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.DOTALL | re.MULTILINE)
    assert match is not None, f"docs/crdt.md has no section {title!r}"
    return match.group(1)


@pytest.mark.timeout(60)
def test_the_from_python_program_shows_alices_line_in_bobs_log(
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", section(DOC.read_text(), "From Python"), re.DOTALL)
    assert len(blocks) == 1, "the From Python section should hold exactly one program"
    namespace: dict[str, Any] = {"__name__": "crdt_docs_from_python"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    (entry,) = namespace["log"]
    assert (entry["name"], entry["text"]) == ("alice", "hello from alice")
    assert capsys.readouterr().out.splitlines() == ["[('alice', 'hello from alice')]"]
