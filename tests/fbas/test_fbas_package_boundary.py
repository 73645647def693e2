"""synod.fbas is built on synod.quorum, never the other way: the quorum math that every
SCP node imports must not drag in the network analyses or their SAT solver."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

QUORUM_SOURCES = Path(__file__).resolve().parents[2] / "src" / "synod" / "quorum"

LOADED_MODULES_SCRIPT = """
import json, sys
def loaded():
    names = [m for m in sys.modules if m.split(".")[0] == "pysat" or m.startswith("synod.fbas")]
    return sorted(names)
import synod.quorum, synod.quorum.qset, synod.quorum.committee
after_quorum = loaded()
import synod.fbas
print(json.dumps({"after_quorum": after_quorum, "after_fbas": loaded()}))
"""


def test_importing_synod_quorum_loads_neither_fbas_nor_a_sat_solver() -> None:
    # A fresh interpreter: in this process the other tests have imported everything.
    result = subprocess.run(
        [sys.executable, "-c", LOADED_MODULES_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = json.loads(result.stdout)
    assert loaded["after_quorum"] == []
    # The same probe sees both once synod.fbas is imported, so the empty list above
    # means they were absent, not that the probe was blind.
    assert "synod.fbas.analysis" in loaded["after_fbas"]
    assert "pysat" in loaded["after_fbas"]


def _imported_modules(path: Path) -> set[str]:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            imported.add(node.module)
    return imported


def test_no_quorum_module_imports_fbas_or_pysat_even_lazily() -> None:
    # The subprocess check only sees module-level imports; one inside a function
    # would still tie synod.quorum to the analysis package.
    sources = sorted(QUORUM_SOURCES.glob("*.py"))
    assert sources, f"no sources under {QUORUM_SOURCES}"
    offending = {
        f"{path.name}: {module}"
        for path in sources
        for module in _imported_modules(path)
        if module.split(".")[0] == "pysat" or module.startswith("synod.fbas")
    }
    assert not offending
