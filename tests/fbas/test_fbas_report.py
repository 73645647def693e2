"""The HTML report is self-contained and well-formed; `synod fbas diff` says what changed."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from synod.cli.main import cli
from synod.fbas.load import load_stellarbeat
from synod.fbas.report import render_report, summarize, what_ifs
from synod.fbas.synthetic import symmetric_network

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fbas"
SECTIONS = ("overview", "intersection", "top-tier", "sets", "what-if", "graph")
VOID = {"meta", "br", "img", "input", "link", "hr", "col", "source", "wbr"}


def data_file(name: str) -> str:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"shared FBAS data not found at {path} (expected ../shared/data/fbas)")
    return str(path)


def run(*arguments: str) -> Any:
    return CliRunner().invoke(cli, ["fbas", *arguments], catch_exceptions=False)


class Structure(HTMLParser):
    """Checks that every element is closed in order, and records ids and tags."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.ids: set[str] = set()
        self.tags: set[str] = set()
        self.errors: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.extend(attrs)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()


def parse(page: str) -> Structure:
    structure = Structure()
    structure.feed(page)
    structure.close()
    return structure


def assert_self_contained(page: str) -> None:
    # No scheme or protocol-relative URL anywhere, and no attribute or CSS construct
    # that could fetch something.
    assert not re.search(r"[a-z]+://|//[a-z0-9.-]+\.[a-z]", page, re.IGNORECASE)
    assert not re.search(r"@import|url\(", page, re.IGNORECASE)
    structure = parse(page)
    fetching = {"src", "href", "srcset", "action", "data", "poster", "formaction"}
    assert not [name for name, _ in structure.attributes if name in fetching]
    assert not structure.tags & {"script", "link", "img", "iframe", "object", "embed"}


def test_report_of_the_2019_snapshot_is_self_contained_and_well_formed(tmp_path: Path) -> None:
    output = tmp_path / "report.html"
    nodes = data_file("stellarbeat_nodes_2019-09-17.json")
    orgs = data_file("stellarbeat_organizations_2019-09-17.json")
    result = run("report", nodes, "--orgs", orgs, "-o", str(output))
    assert result.exit_code == 0, result.output
    page = output.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert_self_contained(page)
    structure = parse(page)
    assert not structure.errors and not structure.stack
    assert set(SECTIONS) <= structure.ids
    assert "svg" in structure.tags and "circle" in structure.tags


def test_report_escapes_names_from_the_input() -> None:
    nodes, orgs = symmetric_network(4)
    nodes[0]["name"] = "<script>alert(1)</script>"
    orgs[1]["name"] = "<img src=x onerror=alert(1)>"
    fbas = load_stellarbeat(nodes, organizations=orgs)
    summary = summarize(fbas)
    page = render_report(fbas, summary, what_ifs(fbas, summary))
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;" in page
    assert_self_contained(page)
    assert not parse(page).errors


def test_what_if_covers_each_top_tier_organisation() -> None:
    nodes, orgs = symmetric_network(4)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    summary = summarize(fbas)
    scenarios = what_ifs(fbas, summary)
    assert sorted(s.organisation for s in scenarios) == ["Org 0", "Org 1", "Org 2", "Org 3"]
    # Threshold 3 of 4 organisations: without one, any other one blocks.
    assert all(s.summary.blocking_by_org.size == 1 for s in scenarios)
    assert summary.blocking_by_org.size == 2


def test_diff_of_the_correct_and_broken_snapshots() -> None:
    result = run("diff", data_file("correct.json"), data_file("broken.json"), "--json")
    assert result.exit_code == 0
    lines = {line["what"]: line for line in json.loads(result.stdout)}
    assert lines["quorum intersection"]["old"] == "holds"
    assert lines["quorum intersection"]["new"] == "fails"
    assert lines["quorum intersection"]["changed"] is True
    # With disjoint quorums no node needs to lie: the smallest splitting set is empty.
    assert lines["smallest splitting set (nodes)"]["new"] == "0"


def test_diff_of_a_snapshot_with_itself_changes_nothing(tmp_path: Path) -> None:
    nodes, _ = symmetric_network(4)
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps(nodes))
    result = run("diff", str(path), str(path), "--json")
    assert result.exit_code == 0
    assert not [line for line in json.loads(result.stdout) if line["changed"]]


def _asymmetric_file(tmp_path: Path, organisations: int) -> str:
    from synod.fbas.synthetic import asymmetric_network

    nodes, _ = asymmetric_network(organisations, seed=1)
    path = tmp_path / f"asymmetric{organisations}.json"
    path.write_text(json.dumps(nodes))
    return str(path)


def test_diff_left_unproven_by_its_timeout_exits_three(tmp_path: Path) -> None:
    # 30 organisations trusting random subsets: the smallest splitting set takes minutes
    # to prove, so a tenth of a second leaves it as bounds whatever the machine's speed.
    path = _asymmetric_file(tmp_path, 30)
    result = run("diff", path, path, "--json", "--timeout", "0.1")
    assert result.exit_code == 3
    lines = {line["what"]: line for line in json.loads(result.stdout)}
    assert ".." in lines["smallest splitting set (nodes)"]["new"]


def test_report_left_unproven_by_its_timeout_exits_three_after_writing(tmp_path: Path) -> None:
    path = _asymmetric_file(tmp_path, 30)
    output = tmp_path / "report.html"
    result = run("report", path, "-o", str(output), "--timeout", "0.1")
    assert result.exit_code == 3
    assert output.exists() and "</html>" in output.read_text(encoding="utf-8")


def test_report_with_every_answer_proven_exits_zero(tmp_path: Path) -> None:
    nodes, _ = symmetric_network(4)
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps(nodes))
    result = run("report", str(path), "-o", str(tmp_path / "report.html"), "--timeout", "60")
    assert result.exit_code == 0
