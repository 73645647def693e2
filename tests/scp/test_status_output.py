"""`synod scp status` prints what peers and files supply as text, never as markup."""

from __future__ import annotations

import pytest

from synod.cli.scp import print_comparison
from synod.scp.log import compare_logs, encode_batch


def test_entries_and_node_names_with_markup_are_printed_verbatim(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A submitted entry `[/oops]` once made every later `synod scp status` crash."""
    hostile = encode_batch(["[/oops]", "[red]not red"])
    other = encode_batch(["[bold]"])
    logs = {"node-0": {1: hostile, 2: other}, "[/evil]": {1: hostile, 2: hostile}}
    print_comparison(compare_logs(logs), title="[/title]")
    printed = capsys.readouterr().out
    for text in ("[/oops]", "[/evil]", "[/title]", "NO"):
        assert text in printed


def test_many_nodes_fit_eighty_columns_and_name_who_differs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`synod demo --nodes 7` and `synod scp status` once wrapped every cell at 80 columns."""
    monkeypatch.setenv("COLUMNS", "80")
    agreed, other = encode_batch(["a", "b"]), encode_batch(["c"])
    logs = {f"node-{index}": {1: agreed, 2: agreed} for index in range(7)}
    logs["node-5"] = {1: other, 2: agreed}
    logs["node-6"] = {1: agreed}
    print_comparison(compare_logs(logs), title="seven nodes")
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    first = next(line for line in lines if line.startswith("│    1"))
    assert "6 of 7" in first and "node-5" in first and "NO" in first
    second = next(line for line in lines if line.startswith("│    2"))
    assert "6 of 7" in second and "none yet: node-6" in second
