"""Symmetry breaking keeps the optimum: symmetric networks against brute force and against
the closed-form answers for organisations of equal shape.

For n organisations of m validators, each validator trusting "t of the organisations,
each k of its m validators":

- a blocking set must stop n - t + 1 organisations, each by failing m - k + 1 validators
  (then no organisation can be satisfied by the rest);
- two quorums of t organisations share at least 2t - n of them, and an organisation
  satisfies two disjoint sets of correct validators only when 2(k - f) <= m - f, that is
  with f >= 2k - m of its validators faulty (counted once per shared organisation).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.fbas import bruteforce as brute
from synod.fbas.analysis import (
    check_intersection,
    minimal_blocking_sets,
    minimal_splitting_sets,
    top_tier,
)
from synod.fbas.load import decode_public_key, load_stellarbeat
from synod.fbas.network import iter_bits
from synod.fbas.symmetry import find_symmetries
from synod.fbas.synthetic import symmetric_network, two_thirds
from synod.quorum.qset import QuorumSet


def reference(nodes: list[dict[str, Any]]) -> dict[bytes, QuorumSet | None]:
    def convert(raw: dict[str, Any]) -> QuorumSet:
        return QuorumSet(
            threshold=raw["threshold"],
            validators=tuple(decode_public_key(k) for k in raw["validators"]),
            inner_sets=tuple(convert(q) for q in raw["innerQuorumSets"]),
        )

    return {decode_public_key(n["publicKey"]): convert(n["quorumSet"]) for n in nodes}


def org_groups(nodes: list[dict[str, Any]]) -> list[frozenset[bytes]]:
    orgs: dict[str, set[bytes]] = {}
    for node in nodes:
        orgs.setdefault(node["organizationId"], set()).add(decode_public_key(node["publicKey"]))
    return [frozenset(members) for members in orgs.values()]


@st.composite
def perturbed_symmetric(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A small symmetric network, sometimes with one node's quorum set changed, so that
    some candidate swaps are no longer symmetries."""
    organizations = draw(st.integers(2, 3))
    size = draw(st.integers(1, 3 if organizations == 2 else 2))
    nodes, _ = symmetric_network(
        organizations,
        size,
        org_threshold=draw(st.integers(1, organizations)),
        inner_threshold=draw(st.integers(1, size)),
    )
    nodes = copy.deepcopy(nodes)
    if draw(st.booleans()):
        victim = draw(st.sampled_from(nodes))
        keys = [n["publicKey"] for n in nodes]
        chosen = draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
        victim["quorumSet"] = {
            "threshold": draw(st.integers(1, len(chosen))),
            "validators": chosen,
            "innerQuorumSets": [],
        }
    for node in nodes:
        # Random domains make groupings that some swaps do not preserve.
        node["homeDomain"] = draw(st.sampled_from([None, "a.example", "b.example"]))
    return nodes


def domain_groups(nodes: list[dict[str, Any]]) -> list[frozenset[bytes]]:
    domains: dict[str, set[bytes]] = {}
    groups = []
    for node in nodes:
        key = decode_public_key(node["publicKey"])
        if node["homeDomain"]:
            domains.setdefault(node["homeDomain"], set()).add(key)
        else:
            groups.append(frozenset([key]))
    return groups + [frozenset(members) for members in domains.values()]


@settings(max_examples=150, deadline=None)
@given(perturbed_symmetric(), st.sampled_from([None, "org", "domain"]))
def test_symmetry_breaking_keeps_the_minimum_of_brute_force(
    nodes: list[dict[str, Any]], grouping: str | None
) -> None:
    fbas = load_stellarbeat(nodes)
    qsets = reference(nodes)
    if grouping == "org":
        groups = org_groups(nodes)
    elif grouping == "domain":
        groups = domain_groups(nodes)
    else:
        groups = [frozenset([k]) for k in qsets]
    tier = brute.top_tier(qsets)
    found = top_tier(fbas).nodes
    assert {decode_public_key(fbas.nodes[v].public_key) for v in iter_bits(found)} == tier
    assert minimal_blocking_sets(fbas, grouping).size == brute.min_blocking_size(qsets, groups)
    assert minimal_splitting_sets(fbas, grouping, scope="all").size == brute.min_splitting_size(
        qsets, groups
    )
    assert minimal_splitting_sets(fbas, grouping).size == brute.min_splitting_size(
        qsets, groups, tier
    )


def test_swaps_found_in_a_symmetric_network_are_within_and_across_organisations() -> None:
    nodes, orgs = symmetric_network(4, 3)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    symmetries = find_symmetries(fbas, "org")
    assert len(symmetries.node_pairs) == 4 * 2  # adjacent validators inside each org
    assert len(symmetries.block_pairs) == 3  # adjacent organisations
    assert len(set(symmetries.orbits(len(fbas)))) == 1


def test_a_changed_quorum_set_removes_the_swaps_it_breaks() -> None:
    nodes, _ = symmetric_network(3, 3)
    nodes = copy.deepcopy(nodes)
    nodes[0]["quorumSet"] = {
        "threshold": 1,
        "validators": [nodes[1]["publicKey"]],
        "innerQuorumSets": [],
    }
    fbas = load_stellarbeat(nodes)
    symmetries = find_symmetries(fbas)
    first = fbas.index[nodes[0]["publicKey"]]
    assert all(first not in pair for pair in symmetries.node_pairs)
    assert all(first not in block for pair in symmetries.block_pairs for block in pair)


@pytest.mark.parametrize("organizations", [4, 7, 12, 20])
def test_symmetric_network_buffers_match_the_closed_form(organizations: int) -> None:
    size, inner = 3, 2
    nodes, orgs = symmetric_network(organizations, size)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    top = two_thirds(organizations)
    assert check_intersection(fbas).intersects
    assert top_tier(fbas).nodes == fbas.all_nodes
    blocking_orgs = organizations - top + 1
    assert minimal_blocking_sets(fbas, "org").size == blocking_orgs
    assert minimal_blocking_sets(fbas).size == blocking_orgs * (size - inner + 1)
    splitting_orgs = 2 * top - organizations
    assert minimal_splitting_sets(fbas, "org").size == splitting_orgs
    assert minimal_splitting_sets(fbas).size == splitting_orgs * (2 * inner - size)


def test_symmetric_network_with_a_simple_majority_has_no_quorum_intersection() -> None:
    # 4 organisations, threshold 2: two pairs of organisations are disjoint quorums.
    nodes, _ = symmetric_network(4, 3, org_threshold=2)
    fbas = load_stellarbeat(nodes)
    result = check_intersection(fbas)
    assert not result.intersects
    assert minimal_splitting_sets(fbas).size == 0
