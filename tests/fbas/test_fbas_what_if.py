"""What-if analyses: nodes or organisations removed, proposed quorum-set changes, and
`--timeout` on the command line (best answer, proven bounds, exit 3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from synod.cli.main import cli
from synod.fbas import bruteforce as brute
from synod.fbas.analysis import check_intersection, minimal_blocking_sets
from synod.fbas.load import (
    FbasInputError,
    apply_quorum_set_changes,
    decode_public_key,
    load_stellarbeat,
    select_nodes,
)
from synod.fbas.network import is_quorum, iter_bits, without
from synod.fbas.synthetic import asymmetric_network, symmetric_network
from synod.quorum.qset import QuorumSet


def run(*arguments: str) -> Any:
    return CliRunner().invoke(cli, ["fbas", *arguments], catch_exceptions=False)


def write(tmp_path: Path, document: Any, name: str) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return str(path)


def test_without_an_organisation_its_nodes_are_in_no_quorum() -> None:
    nodes, orgs = symmetric_network(4)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    removed = select_nodes(fbas, ["Org 1"])
    assert removed.bit_count() == 3
    reduced = without(fbas, removed)
    assert all(reduced.qsets[v] is None for v in iter_bits(removed))
    # 4 organisations at threshold 3: with one gone, exactly 3 remain, so failing any
    # one more leaves no quorum.  The reference enumerates organisations by brute force.
    qsets = {_key(v): _reference(reduced, v) for v in range(len(reduced))}
    groups = [frozenset(_key(v) for v in iter_bits(bits)) for _, bits in reduced.groups("org")]
    assert brute.min_blocking_size(qsets, groups) == 1
    assert minimal_blocking_sets(reduced, "org").size == 1
    assert minimal_blocking_sets(fbas, "org").size == 2


def _key(node: int) -> bytes:
    return node.to_bytes(32, "big")


def _reference(fbas: Any, node: int) -> QuorumSet | None:
    def convert(qset: Any) -> QuorumSet:
        return QuorumSet(
            threshold=qset.threshold,
            validators=tuple(_key(v) for v in qset.validators),
            inner_sets=tuple(convert(inner) for inner in qset.inner),
        )

    qset = fbas.qsets[node]
    return None if qset is None else convert(qset)


def test_unknown_name_is_refused_with_the_name() -> None:
    nodes, orgs = symmetric_network(3)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    with pytest.raises(FbasInputError, match="'nobody'"):
        select_nodes(fbas, ["nobody"])


def test_a_proposed_quorum_set_can_break_intersection() -> None:
    nodes, orgs = symmetric_network(4)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    lone = nodes[0]["publicKey"]
    change = {
        "publicKey": lone,
        "quorumSet": {"threshold": 1, "validators": [lone], "innerQuorumSets": []},
    }
    changed = apply_quorum_set_changes(fbas, change)
    assert check_intersection(fbas).intersects
    result = check_intersection(changed)
    assert result.intersects is False
    assert result.witness is not None
    assert any(quorum == 1 << fbas.index[lone] for quorum in result.witness)
    assert is_quorum(changed, 1 << fbas.index[lone])


def test_a_proposed_node_with_new_validators_is_added() -> None:
    nodes, _ = symmetric_network(3)
    fbas = load_stellarbeat(nodes)
    newcomer, stranger = (
        asymmetric_network(2, seed=9)[0][0]["publicKey"],
        asymmetric_network(2, seed=9)[0][1]["publicKey"],
    )
    change = [{"node": newcomer, "qset": {"t": 2, "v": [stranger, nodes[0]["publicKey"]]}}]
    changed = apply_quorum_set_changes(fbas, change)
    assert len(changed) == len(fbas) + 2
    assert changed.qsets[changed.index[stranger]] is None
    assert decode_public_key(changed.nodes[changed.index[newcomer]].public_key)


def test_a_malformed_change_names_its_field() -> None:
    nodes, _ = symmetric_network(3)
    fbas = load_stellarbeat(nodes)
    key = nodes[0]["publicKey"]
    change = {"publicKey": key, "quorumSet": {"threshold": 5, "validators": [key]}}
    with pytest.raises(FbasInputError, match=r"change #0 .*quorumSet\.threshold"):
        apply_quorum_set_changes(fbas, change)


def test_cli_what_if_without_and_add_qset(tmp_path: Path) -> None:
    nodes, orgs = symmetric_network(4)
    path = write(tmp_path, nodes, "nodes.json")
    orgs_path = write(tmp_path, orgs, "orgs.json")
    by_org = ("--orgs", orgs_path, "--group-by", "org", "--json")
    before = json.loads(run("blocking", path, *by_org).stdout)
    after = run("blocking", path, *by_org, "--without", "Org 2")
    assert after.exit_code == 0
    assert before["minimumSize"] == 2 and json.loads(after.stdout)["minimumSize"] == 1
    lone = nodes[0]["publicKey"]
    change = write(
        tmp_path,
        {"publicKey": lone, "quorumSet": {"threshold": 1, "validators": [lone]}},
        "change.json",
    )
    broken = run("check", path, "--add-qset", change)
    assert broken.exit_code == 1 and "FAILS" in broken.stdout
    unknown = run("check", path, "--without", "nobody")
    assert unknown.exit_code == 2 and "'nobody'" in unknown.output


def test_cli_timeout_reports_bounds_and_exits_three(tmp_path: Path) -> None:
    # 30 organisations trusting random subsets: the exact smallest splitting set takes
    # minutes, so half a second ends the search whatever the machine's speed.
    nodes, _ = asymmetric_network(30, seed=1)
    path = write(tmp_path, nodes, "nodes.json")
    result = run("splitting", path, "--json", "--timeout", "0.5")
    assert result.exit_code == 3
    document = json.loads(result.stdout)
    assert document["optimal"] is False and document["minimumSize"] is None
    if document["upperBound"] is not None:
        assert document["upperBound"] == len(document["sets"][0]["nodes"])
        assert document["lowerBound"] <= document["upperBound"]
