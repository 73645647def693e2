"""Programs printed in docs/*.md, taken as a reader would copy them and run.

Importable from every test folder (tests/ is on the import path beside its conftest.py).
A program runs as a module of its own in `sys.modules`, as a reader's file would be
(msgspec resolves a class's annotations through its module), and is removed after.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def section(doc: str, title: str) -> str:
    """The Markdown of the level-2 section `title` of docs/`doc`, up to the next one."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    assert match is not None, f"docs/{doc} has no section {title!r}"
    return match.group(1)


def python_blocks(doc: str, title: str) -> list[str]:
    """The ```python blocks of a section, in order."""
    return re.findall(r"```python\n(.*?)```", section(doc, title), re.DOTALL)


def run_program(doc: str, title: str, *, blocks: int = 1) -> dict[str, object]:
    """Run the `blocks` python blocks of a section, in order, in one fresh module; its
    globals afterwards."""
    found = python_blocks(doc, title)
    assert len(found) == blocks, f"docs/{doc} section {title!r}: {len(found)} python blocks"
    module = types.ModuleType(f"docs_{Path(doc).stem.replace('-', '_')}_program")
    sys.modules[module.__name__] = module
    try:
        for block in found:
            exec(compile(block, str(DOCS / doc), "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
    return module.__dict__
