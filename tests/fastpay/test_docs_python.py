"""The *From Python* program of docs/fastpay.md runs: real shards on 127.0.0.1, a wallet
pays, and the balances a quorum vouches for are printed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "fastpay.md"


def section(text: str, title: str) -> str:
    """The Markdown of the level-2 section `title`, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.DOTALL | re.MULTILINE)
    assert match is not None, f"docs/fastpay.md has no section {title!r}"
    return match.group(1)


@pytest.mark.timeout(60)
def test_the_from_python_program_pays_and_prints_the_quorum_balances(
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", section(DOC.read_text(), "From Python"), re.DOTALL)
    assert len(blocks) == 1, "the From Python section should hold exactly one program"
    namespace: dict[str, Any] = {"__name__": "fastpay_docs_from_python"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    assert capsys.readouterr().out.splitlines() == ["transfer #0 confirmed", "alice 70", "bob 30"]
