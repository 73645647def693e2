"""The Python example of docs/fastpay.md runs and its assertions hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "fastpay.md"


def test_fastpay_documentation_example_runs() -> None:
    if not DOC.exists():
        pytest.skip(f"{DOC} is absent")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "docs/fastpay.md has no Python example"
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})
