"""python-fbas's JSON format: shared qset references read as the same network as the
stellarbeat form, and malformed or hostile references refused with one clear line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from synod.cli.main import cli
from synod.fbas.analysis import check_intersection, minimal_blocking_sets, top_tier
from synod.fbas.load import (
    MAX_EXPANDED_ENTRIES,
    FbasInputError,
    detect_and_load,
    load_python_fbas,
    load_stellarbeat,
)
from synod.fbas.synthetic import symmetric_network


def as_python_fbas(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """The python-fbas form of a stellarbeat network: one qset id per distinct quorum
    set, inner sets by reference (written here independently of the loader)."""
    qsets: dict[str, Any] = {}

    def reference(qset: dict[str, Any]) -> str:
        members = list(qset["validators"]) + [reference(q) for q in qset["innerQuorumSets"]]
        entry = {"threshold": qset["threshold"], "members": members}
        for qset_id, existing in qsets.items():
            if existing == entry:
                return qset_id
        qset_id = f"q{len(qsets)}"
        qsets[qset_id] = entry
        return qset_id

    validators = [
        {
            "id": node["publicKey"],
            "qset": reference(node["quorumSet"]) if node.get("quorumSet") else None,
            "attrs": {"name": node.get("name"), "homeDomain": node.get("homeDomain")},
        }
        for node in nodes
    ]
    return {"validators": validators, "qsets": qsets}


def test_python_fbas_form_gives_the_same_answers_as_stellarbeat() -> None:
    nodes, _ = symmetric_network(5)
    document = as_python_fbas(nodes)
    assert len(document["qsets"]) == 6  # one top-level set, five organisation sets
    ours, theirs = load_stellarbeat(nodes), detect_and_load(document)
    assert [n.public_key for n in theirs.nodes] == [n.public_key for n in ours.nodes]
    assert [n.name for n in theirs.nodes] == [n.name for n in ours.nodes]
    assert theirs.qsets == ours.qsets
    assert check_intersection(theirs).intersects
    assert top_tier(theirs).nodes == top_tier(ours).nodes
    assert minimal_blocking_sets(theirs).size == minimal_blocking_sets(ours).size


def test_a_qset_cycle_is_refused() -> None:
    nodes, _ = symmetric_network(2)
    key = nodes[0]["publicKey"]
    document = {
        "validators": [{"id": key, "qset": "a"}],
        "qsets": {"a": {"threshold": 1, "members": ["b"]}, "b": {"threshold": 1, "members": ["a"]}},
    }
    with pytest.raises(FbasInputError, match="refers to itself"):
        load_python_fbas(document)


def test_a_dangling_qset_id_is_refused() -> None:
    key = symmetric_network(1)[0][0]["publicKey"]
    document = {"validators": [{"id": key, "qset": "missing"}], "qsets": {}}
    with pytest.raises(FbasInputError, match="no qset 'missing'"):
        load_python_fbas(document)


def test_a_long_chain_of_qset_references_is_refused_not_a_recursion_error() -> None:
    # Each reference is one recursion: 5,000 in a row would exhaust Python's stack.
    key = symmetric_network(1)[0][0]["publicKey"]
    qsets: dict[str, Any] = {
        f"q{i}": {"threshold": 1, "members": [f"q{i + 1}"]} for i in range(5000)
    }
    qsets["q5000"] = {"threshold": 1, "members": [key]}
    document = {"validators": [{"id": key, "qset": "q0"}], "qsets": qsets}
    with pytest.raises(FbasInputError, match="nest deeper than 64"):
        load_python_fbas(document)
    # A chain within the bound loads (then stellar-core's nesting limit judges it).
    qsets = {f"q{i}": {"threshold": 1, "members": [f"q{i + 1}"]} for i in range(60)}
    qsets["q60"] = {"threshold": 1, "members": [key]}
    with pytest.raises(FbasInputError, match="nesting deeper than 4"):
        load_python_fbas({"validators": [{"id": key, "qset": "q0"}], "qsets": qsets})


def test_shared_references_cannot_expand_without_bound() -> None:
    # Five levels of 30 references to the level below: 30^5 entries if expanded.
    keys = [node["publicKey"] for node in symmetric_network(10)[0]]
    qsets: dict[str, Any] = {"l0": {"threshold": 1, "members": keys}}
    for level in range(1, 6):
        qsets[f"l{level}"] = {"threshold": 1, "members": [f"l{level - 1}"] * 30}
    document = {"validators": [{"id": keys[0], "qset": "l5"}], "qsets": qsets}
    with pytest.raises(FbasInputError, match=f"more than {MAX_EXPANDED_ENTRIES}"):
        load_python_fbas(document)


def test_cli_reads_python_fbas_and_names_a_bad_field(tmp_path: Path) -> None:
    nodes, _ = symmetric_network(4)
    document = as_python_fbas(nodes)
    path = tmp_path / "network.json"
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(cli, ["fbas", "check", str(path)], catch_exceptions=False)
    assert result.exit_code == 0 and "holds" in result.stdout
    document["qsets"]["q0"]["threshold"] = "many"
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(cli, ["fbas", "check", str(path)], catch_exceptions=False)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "qsets.q0.threshold" in lines[0]
