"""The example core of docs/architecture.md runs as the page shows it."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_the_counter_example_runs_and_every_node_counts_seven(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    section = DOC.read_text(encoding="utf-8").split("\n## A short example core\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    # a module of its own, as a reader's file would be (msgspec resolves annotations there)
    module = types.ModuleType("architecture_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), module.__dict__)
    assert capsys.readouterr().out.strip() == "[7, 7, 7]"
