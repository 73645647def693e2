"""No import cycle inside `synod.scp`: the package's modules, with every import they
make (those under `if TYPE_CHECKING:` included, since a cycle there is still a cycle
in the design), form an acyclic graph.  A slot owns its two protocols; the protocols
see it only through `synod.scp.slot_view`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "synod.scp"
PACKAGE_DIR = Path(__file__).resolve().parents[2] / "src" / "synod" / "scp"


def module_name(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def imported_names(path: Path) -> set[str]:
    """Every module name an import statement anywhere in the file refers to, with
    `from package import name` counted as both the package and `package.name`."""
    names: set[str] = set()
    is_package = path.stem == "__init__"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = absolute_module(node, module_name(path), is_package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def absolute_module(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    parts = importer.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    paths = sorted(package_dir.glob("*.py"))
    modules = {module_name(path) for path in paths}
    return {
        module_name(path): (imported_names(path) & modules) - {module_name(path)}
        for path in paths
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first repeated last), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        path.append(module)
        for target in sorted(graph.get(module, ())):
            cycle = visit(target)
            if cycle is not None:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module)
        if cycle is not None:
            return cycle
    return None


def test_the_scp_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE_DIR)
    assert f"{PACKAGE}.slot" in graph and f"{PACKAGE}.ballot" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_protocols_see_the_slot_only_through_its_view() -> None:
    graph = import_graph(PACKAGE_DIR)
    for protocol in ("ballot", "nomination"):
        imports = graph[f"{PACKAGE}.{protocol}"]
        assert f"{PACKAGE}.slot" not in imports
        assert f"{PACKAGE}.slot_view" in imports


def test_the_cycle_finder_finds_type_checking_imports(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "slot.py").write_text("from synod.scp.ballot import BallotProtocol\n")
    (tmp_path / "ballot.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .slot import Slot\n"
    )
    (tmp_path / "voting.py").write_text("from synod.scp import messages\n")
    (tmp_path / "messages.py").write_text("import synod.crypto\n")
    graph = import_graph(tmp_path)
    assert graph[f"{PACKAGE}.voting"] == {PACKAGE, f"{PACKAGE}.messages"}
    assert find_cycle(graph) == [f"{PACKAGE}.ballot", f"{PACKAGE}.slot", f"{PACKAGE}.ballot"]
