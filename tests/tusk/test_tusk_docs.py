"""The programs of docs/tusk.md run.  *From Python*: four real cores and a driver on
127.0.0.1 commit the transaction submitted to one core, on every core, exactly once.
*Using it*: four cores and two drivers in a simulated world deliver the submitted
transactions in one order on every core."""

from __future__ import annotations

from typing import Any

import pytest

from doc_programs import run_program


@pytest.mark.timeout(60)
def test_the_from_python_program_commits_the_submission_on_every_core(
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace: dict[str, Any] = run_program("tusk.md", "From Python")
    delivered = namespace["delivered"]
    assert delivered == {f"core-{index}": [b"pay alice 5"] for index in range(4)}
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"core-{index} [b'pay alice 5']" for index in range(4)]


def test_the_in_process_example_delivers_both_transactions_in_one_order_everywhere(
    capsys: pytest.CaptureFixture[str],
) -> None:
    namespace: dict[str, Any] = run_program("tusk.md", "Using it")
    world, keys = namespace["world"], namespace["keys"]
    delivered = namespace["delivered_transactions"]
    orders = {tuple(delivered(world, key.node_id)) for key in keys}
    assert len(orders) == 1, "every core delivers the same order"
    [order] = orders
    assert sorted(order) == [b"pay alice 5", b"pay bob 3"]
    assert capsys.readouterr().out.splitlines() == [repr(list(order))]
