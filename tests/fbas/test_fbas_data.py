"""Analyses on the real Stellar snapshots in ../shared/data/fbas, each answer re-checked
with `synod.quorum.qset` (which shares no code with the analyses).

Hand-derived expectations for the September 2024 top tier (23 validators, 7
organisations; every validator trusts "5 of the 7 organisations", six of them 2-of-3
and LOBSTR 3-of-5):

- quorum intersection holds: two sets of 5 organisations share 3, and inside each
  shared organisation two majorities (2 of 3, 3 of 5) must overlap;
- blocking: 7 - 5 + 1 = 3 organisations must stop, cheapest by failing 2 of 3 in three
  2-of-3 organisations: 6 validators;
- splitting: the 3 shared organisations each need one faulty validator (2-of-3: one
  correct validator per side plus the faulty one; 3-of-5: two correct per side plus it):
  3 validators, or 3 organisations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from synod.fbas import bruteforce as brute
from synod.fbas.analysis import (
    check_intersection,
    minimal_blocking_sets,
    minimal_splitting_sets,
    top_tier,
)
from synod.fbas.load import decode_public_key, load_stellarbeat
from synod.fbas.network import Fbas, iter_bits
from synod.quorum.qset import QuorumSet, is_quorum, largest_quorum_within

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fbas"
ORGS_2019 = "stellarbeat_organizations_2019-09-17.json"
WITH_INTERSECTION = [
    "correct.json",
    "stellarbeat_top_tier_2024-09.json",
    "stellarbeat_nodes_2019-09-17.json",
]


def read(name: str) -> Any:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"shared FBAS data not found at {path} (expected ../shared/data/fbas)")
    return json.loads(path.read_text())


def load(name: str) -> Fbas:
    organizations = read(ORGS_2019) if "2019" in name else None
    return load_stellarbeat(read(name), organizations=organizations)


def reference(fbas: Fbas) -> dict[bytes, QuorumSet | None]:
    """The loaded network rebuilt as synod QuorumSets (raw 32-byte keys)."""

    def convert(qset: Any) -> QuorumSet:
        return QuorumSet(
            threshold=qset.threshold,
            validators=tuple(decode_public_key(fbas.nodes[v].public_key) for v in qset.validators),
            inner_sets=tuple(convert(inner) for inner in qset.inner),
        )

    return {
        decode_public_key(info.public_key): None if qset is None else convert(qset)
        for info, qset in zip(fbas.nodes, fbas.qsets, strict=True)
    }


def raw(fbas: Fbas, bits: int) -> frozenset[bytes]:
    return frozenset(decode_public_key(fbas.nodes[v].public_key) for v in iter_bits(bits))


def blocks(qsets: dict[bytes, QuorumSet | None], failed: frozenset[bytes]) -> bool:
    return not largest_quorum_within(set(qsets) - failed, qsets.get)


def test_broken_snapshot_has_two_disjoint_quorums() -> None:
    fbas = load("broken.json")
    qsets = reference(fbas)
    result = check_intersection(fbas)
    assert result.has_quorum and not result.intersects
    assert result.witness is not None
    first, second = (raw(fbas, w) for w in result.witness)
    assert is_quorum(first, qsets.get) and is_quorum(second, qsets.get)
    assert not first & second


@pytest.mark.parametrize("name", WITH_INTERSECTION)
def test_snapshot_enjoys_quorum_intersection(name: str) -> None:
    result = check_intersection(load(name))
    assert result.has_quorum and result.intersects and result.witness is None


@pytest.mark.parametrize("name", ["broken.json", *WITH_INTERSECTION])
@pytest.mark.parametrize("grouping", [None, "org", "domain", "isp", "country"])
def test_reported_blocking_sets_block_and_are_inclusion_minimal(
    name: str, grouping: str | None
) -> None:
    fbas = load(name)
    qsets = reference(fbas)
    result = minimal_blocking_sets(fbas, grouping)
    assert result.size is not None and result.examples
    chosen = result.examples[0]
    assert len(chosen.groups) == result.size
    assert blocks(qsets, raw(fbas, chosen.nodes))
    for dropped in chosen.groups:
        rest = chosen.nodes & ~dropped.nodes
        assert not blocks(qsets, raw(fbas, rest)), f"{dropped.label} was not needed"


@pytest.mark.parametrize("name", WITH_INTERSECTION)
@pytest.mark.parametrize("grouping", [None, "org", "country"])
def test_reported_splitting_sets_leave_two_disjoint_quorums(
    name: str, grouping: str | None
) -> None:
    fbas = load(name)
    qsets = reference(fbas)
    result = minimal_splitting_sets(fbas, grouping)
    if name == "correct.json" and grouping == "country":
        # Its top tier (three SDF validators) and every node they trust are in the
        # United States: deleting that country leaves no quorum to split.
        assert result.size is None
        return
    assert result.size is not None and result.size >= 1  # intersection holds, so not 0
    chosen = result.examples[0]
    assert chosen.quorums is not None
    faulty = raw(fbas, chosen.nodes)
    first, second = (raw(fbas, q) for q in chosen.quorums)
    assert brute.is_quorum_despite(qsets, first, faulty)
    assert brute.is_quorum_despite(qsets, second, faulty)
    assert not first & second


def test_top_tier_2024_buffers_match_the_hand_derivation() -> None:
    fbas = load("stellarbeat_top_tier_2024-09.json")
    assert top_tier(fbas).nodes == fbas.all_nodes
    assert minimal_blocking_sets(fbas).size == 6
    assert minimal_splitting_sets(fbas).size == 3
    # organisations as the stellarbeat snapshot names them (organizationId)
    assert minimal_blocking_sets(fbas, "org").size == 3
    assert minimal_splitting_sets(fbas, "org").size == 3


def test_top_tier_2024_no_two_organisations_block() -> None:
    """Brute force over organisations with qset.py: no pair blocks, some triple does."""
    fbas = load("stellarbeat_top_tier_2024-09.json")
    qsets = reference(fbas)
    groups = [raw(fbas, bits) for _, bits in fbas.groups("org")]
    assert len(groups) == 7
    assert brute.smallest_group_union(groups, lambda failed: blocks(qsets, failed)) == 3


def test_2019_top_tier_members_are_in_a_minimal_quorum() -> None:
    fbas = load("stellarbeat_nodes_2019-09-17.json")
    qsets = reference(fbas)
    result = top_tier(fbas, symmetry=False)
    assert result.nodes == top_tier(fbas).nodes
    covered = 0
    for quorum in result.minimal_quorums:
        members = raw(fbas, quorum)
        assert is_quorum(members, qsets.get)
        assert all(not largest_quorum_within(members - {m}, qsets.get) for m in members)
        covered |= quorum
    assert covered == result.nodes
