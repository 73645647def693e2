"""The "From Python" example of docs/fbas.md runs on a real snapshot and its answer holds.

Expected answers are the hand-derived ones for the September 2024 top tier (see
test_fbas_data.py): quorum intersection holds, and 7 - 5 + 1 = 3 organisations must
fail before no quorum remains.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from synod.fbas.network import is_blocking

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "fbas.md"
SNAPSHOT = ROOT / ".." / "shared" / "data" / "fbas" / "stellarbeat_top_tier_2024-09.json"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_from_python_example_reports_intersection_and_smallest_blocking_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if not SNAPSHOT.exists():
        pytest.skip(f"shared FBAS data not found at {SNAPSHOT} (expected ../shared/data/fbas)")
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 1, "docs/fbas.md should hold exactly one runnable example"
    # The example names the data relative to the repository root, as the docs are read.
    monkeypatch.chdir(ROOT)
    namespace: dict[str, Any] = {"__name__": "fbas_docs_example"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)

    network = namespace["network"]
    assert namespace["intersection"].intersects
    blocking = namespace["blocking"]
    assert blocking.size == 3
    smallest = namespace["smallest"]
    assert len(smallest.groups) == 3
    assert is_blocking(network, smallest.nodes)
    for group in smallest.groups:
        assert not is_blocking(network, smallest.nodes & ~group.nodes), "set is not minimal"

    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "quorum intersection: holds"
    assert printed[1] == "smallest blocking set: 3 organisations"
    assert [line.split(":")[0].strip() for line in printed[2:]] == [
        group.label for group in smallest.groups
    ]
