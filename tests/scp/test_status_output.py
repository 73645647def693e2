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
