"""The example core of docs/architecture.md runs as the page shows it."""

from __future__ import annotations

import pytest

from doc_programs import run_program


def test_the_counter_example_runs_and_every_node_counts_seven(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_program("architecture.md", "A short example core", blocks=2)
    assert capsys.readouterr().out.strip() == "[7, 7, 7]"
