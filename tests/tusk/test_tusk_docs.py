"""The programs of docs/tusk.md run.  *From Python*: four real cores and a driver on
127.0.0.1 commit the transaction submitted to one core, on every core, exactly once.
*Using it*: four cores and two drivers in a simulated world deliver the submitted
transactions in one order on every core."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "tusk.md"


def section(text: str, title: str) -> str:
    """The Markdown of the level-2 section `title`, up to the next level-2 heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.DOTALL | re.MULTILINE)
    assert match is not None, f"docs/tusk.md has no section {title!r}"
    return match.group(1)


@pytest.mark.timeout(60)
def test_the_from_python_program_commits_the_submission_on_every_core(
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", section(DOC.read_text(), "From Python"), re.DOTALL)
    assert len(blocks) == 1, "the From Python section should hold exactly one program"
    namespace: dict[str, Any] = {"__name__": "tusk_docs_from_python"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    delivered = namespace["delivered"]
    assert delivered == {f"core-{index}": [b"pay alice 5"] for index in range(4)}
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"core-{index} [b'pay alice 5']" for index in range(4)]


def test_the_in_process_example_delivers_both_transactions_in_one_order_everywhere(
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", section(DOC.read_text(), "Using it"), re.DOTALL)
    assert len(blocks) == 1, "the Using it section should hold exactly one program"
    namespace: dict[str, Any] = {"__name__": "tusk_docs_using_it"}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    world, keys = namespace["world"], namespace["keys"]
    delivered = namespace["delivered_transactions"]
    orders = {tuple(delivered(world, key.node_id)) for key in keys}
    assert len(orders) == 1, "every core delivers the same order"
    [order] = orders
    assert sorted(order) == [b"pay alice 5", b"pay bob 3"]
    assert capsys.readouterr().out.splitlines() == [repr(list(order))]
