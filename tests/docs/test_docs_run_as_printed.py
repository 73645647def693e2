"""Every shell command and Python program printed in README.md and docs/*.md runs as
printed and succeeds (the conventions are in markdown_commands.py and docs/architecture.md,
"Commands and programs in the docs").  One test per page, so that xdist spreads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from markdown_commands import REPOSITORY, Block, blocks_of, commands_not_run, run_blocks

pytestmark = pytest.mark.integration

PAGES = ["README.md", *sorted(f"docs/{path.name}" for path in (REPOSITORY / "docs").glob("*.md"))]


def page_blocks(page: str) -> list[Block]:
    return blocks_of((REPOSITORY / page).read_text(encoding="utf-8"), page)


def budget_s(page: str) -> float:
    return sum(block.settings.timeout_s for block in page_blocks(page) if block.runs)


@pytest.mark.parametrize(
    "page",
    [pytest.param(page, marks=pytest.mark.timeout(budget_s(page) + 60)) for page in PAGES],
)
def test_every_command_and_program_of_the_page_runs_as_printed(page: str, tmp_path: Path) -> None:
    blocks = page_blocks(page)
    if not any(block.runs for block in blocks):
        pytest.skip(f"{page} prints nothing to run")
    result = run_blocks(blocks, tmp_path)
    assert not result.timed_out, f"{page} ran past {budget_s(page)} s:\n{result.output[-6000:]}"
    assert result.status == 0, result.output[-6000:]


@pytest.mark.parametrize("page", PAGES)
def test_commands_are_in_blocks_tagged_to_run(page: str) -> None:
    """A command in an untagged block (or one tagged `shell`, `py`...) would never be run
    by the test above: tag it `sh` (or `console`, `bash`, `python`), or `text` when it is
    output or a signature."""
    assert commands_not_run(page_blocks(page)) == []
