"""The example application in docs/scp.md runs and its replicas agree."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "scp.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_key_value_log_example_runs_and_replicas_agree(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 1, "docs/scp.md should hold exactly one runnable example"
    namespace: dict[str, Any] = {"__name__": "scp_docs_example"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    replicas = namespace["replicas"]
    states = [replica.state for replica in replicas.values()]
    assert all(state == states[0] for state in states)
    logs = [replica.log for replica in replicas.values()]
    assert all(log == logs[0] for log in logs) and logs[0]
    # every client write made it into the log exactly once, in some slot
    submitted = {write for batch in namespace["client_writes"] for write in batch}
    logged = [write for batch in logs[0] for write in batch]
    assert sorted(logged) == sorted(submitted)
    assert all(not replica.waiting for replica in replicas.values())
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4
    assert len({line.split(": ", 1)[1] for line in printed}) == 1
