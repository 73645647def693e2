"""The "From Python" example of docs/scp-network.md runs: four real nodes on 127.0.0.1,
an entry submitted to one, the same log read back from every node's store."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from synod.scp.log import decode_batch

DOC = Path(__file__).resolve().parents[2] / "docs" / "scp-network.md"


def section_examples(text: str, heading: str) -> list[str]:
    """The Python blocks of the section `heading` (up to the next ``## `` heading)."""
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


@pytest.mark.timeout(60)
def test_the_python_example_runs_four_nodes_that_log_the_entries_alike(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (block,) = section_examples(DOC.read_text(encoding="utf-8"), "## From Python")
    namespace: dict[str, Any] = {"__name__": "scp_network_docs_example"}
    exec(compile(block, str(DOC), "exec"), namespace)
    logs: dict[str, dict[int, bytes]] = namespace["logs"]
    assert sorted(logs) == ["node-0", "node-1", "node-2", "node-3"]
    first = logs["node-0"]
    assert all(log == first for log in logs.values())
    logged = [entry for value in first.values() for entry in decode_batch(value) or []]
    assert sorted(logged) == sorted(namespace["ENTRIES"])
    printed = capsys.readouterr().out
    assert "node-2 stored 2 new entries" in printed
    assert "slot 1: ['pay" in printed
