"""The "From Python" example of docs/stellar-overlay.md runs: three nodes on 127.0.0.1 and
a crawl from one address that learns every node's quorum set."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "stellar-overlay.md"
HEADING = "## From Python: serve and crawl"


@pytest.mark.timeout(60)
def test_the_python_example_crawls_every_node(capsys: pytest.CaptureFixture[str]) -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"\n{HEADING}\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    namespace: dict[str, Any] = {"__name__": "stellar_docs_example"}
    exec(compile(block, str(DOC), "exec"), namespace)
    records = namespace["records"]
    assert len(records) == 3
    assert all(record["quorumSet"]["threshold"] == 2 for record in records)
    assert capsys.readouterr().out.strip() == "3 nodes; 3 quorum sets"
