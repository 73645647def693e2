"""FBAS analyses agree with brute force on small random networks.

The reference (`synod.fbas.bruteforce`) enumerates every subset of nodes and checks
slices with `synod.quorum.qset`; the analyses under test use SAT encodings over bitsets.
Networks are generated as stellarbeat JSON, so the loader is exercised too, and may name
validators absent from the input (then they have no quorum set), leave nodes without
a quorum set, nest one inner set, and put nodes into organisations.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.fbas import bruteforce as brute
from synod.fbas.analysis import (
    check_intersection,
    enumerate_minimal_quorums,
    minimal_blocking_sets,
    minimal_splitting_sets,
    top_tier,
)
from synod.fbas.load import LoadOptions, encode_public_key, load_stellarbeat
from synod.fbas.network import iter_bits, quorum_cores
from synod.quorum.qset import QuorumSet, all_validators, is_quorum

EXAMPLES = settings(max_examples=250, deadline=None)
RAW_KEYS = tuple(bytes([index + 1]) * 32 for index in range(9))
KEYS = tuple(encode_public_key(raw) for raw in RAW_KEYS)


@st.composite
def quorum_sets(draw: st.DrawFn, members: list[int], depth: int = 0) -> dict[str, Any]:
    """A sane stellarbeat quorum set over `members` (distinct), nesting up to depth 2."""
    split = draw(st.integers(0, len(members)))
    outer, nested = members[:split], members[split:]
    inner = []
    if nested:
        if depth < 2 and len(nested) >= 2 and draw(st.booleans()):
            cut = draw(st.integers(1, len(nested) - 1))
            inner.append(draw(quorum_sets(nested[:cut], depth + 1)))
            inner.append(draw(quorum_sets(nested[cut:], depth + 1)))
        else:
            inner.append(draw(quorum_sets(nested, depth + 1)) if depth < 2 else None)
            if inner[-1] is None:
                inner.pop()
                outer = members
    entries = len(outer) + len(inner)
    return {
        "threshold": draw(st.integers(1, entries)),
        "validators": [KEYS[v] for v in outer],
        "innerQuorumSets": inner,
    }


@st.composite
def networks(draw: st.DrawFn) -> dict[str, Any]:
    """A random network: nodes 0..n-1 listed, node n possibly referenced but absent."""
    count = draw(st.integers(1, 7))
    universe = list(range(count + 1))  # index `count` is never listed
    nodes = []
    for index in range(count):
        qset: dict[str, Any] | None = None
        if draw(st.integers(0, 5)) > 0:
            chosen = draw(st.lists(st.sampled_from(universe), min_size=1, max_size=5, unique=True))
            qset = draw(quorum_sets(chosen))
        record: dict[str, Any] = {"publicKey": KEYS[index], "quorumSet": qset}
        organization = draw(st.sampled_from([None, "a", "b"]))
        if organization:
            record["organizationId"] = organization
        nodes.append(record)
    return {"nodes": nodes, "count": count}


def reference_qset(raw: dict[str, Any] | None) -> QuorumSet | None:
    if raw is None:
        return None
    return QuorumSet(
        threshold=raw["threshold"],
        validators=tuple(RAW_KEYS[KEYS.index(k)] for k in raw["validators"]),
        inner_sets=tuple(q for q in map(reference_qset, raw["innerQuorumSets"]) if q),
    )


def reference_network(
    network: dict[str, Any], unconstrained: bool = False
) -> dict[bytes, QuorumSet | None]:
    """Node (raw key) -> quorum set; the absent node and qset-less nodes map to None
    (or to the always-satisfied threshold-0 set when `unconstrained`)."""
    result: dict[bytes, QuorumSet | None] = {}
    for index in range(network["count"] + 1):
        result[RAW_KEYS[index]] = None
    for index, record in enumerate(network["nodes"]):
        result[RAW_KEYS[index]] = reference_qset(record["quorumSet"])
    referenced = set()
    for qset in result.values():
        if qset is not None:
            referenced |= set(all_validators(qset))
    absent = RAW_KEYS[network["count"]]
    if absent not in referenced:
        del result[absent]
    if unconstrained:
        result = {k: QuorumSet(threshold=0) if v is None else v for k, v in result.items()}
    return result


def reference_groups(
    network: dict[str, Any], qsets: dict[bytes, QuorumSet | None], by_org: bool
) -> list[frozenset[bytes]]:
    orgs: dict[str, set[bytes]] = {}
    groups: list[frozenset[bytes]] = []
    organization = {RAW_KEYS[i]: r.get("organizationId") for i, r in enumerate(network["nodes"])}
    for key in sorted(qsets):
        label = organization.get(key) if by_org else None
        if label:
            orgs.setdefault(label, set()).add(key)
        else:
            groups.append(frozenset([key]))
    return groups + [frozenset(members) for members in orgs.values()]


def raw_keys(fbas_nodes: Any, bits: int) -> frozenset[bytes]:
    return frozenset(RAW_KEYS[KEYS.index(fbas_nodes[v].public_key)] for v in iter_bits(bits))


@EXAMPLES
@given(networks(), st.booleans())
def test_intersection_verdict_matches_enumeration_of_all_quorums(
    network: dict[str, Any], unconstrained: bool
) -> None:
    options = LoadOptions(missing_qset="unconstrained" if unconstrained else "exclude")
    fbas = load_stellarbeat(network["nodes"], options)
    qsets = reference_network(network, unconstrained)
    quorums = brute.all_quorums(qsets)
    result = check_intersection(fbas)
    assert result.has_quorum == bool(quorums)
    assert result.intersects == (not brute.has_disjoint_pair(quorums))
    if not result.intersects:
        assert result.witness is not None
        first, second = (raw_keys(fbas.nodes, w) for w in result.witness)
        assert is_quorum(first, qsets.get) and is_quorum(second, qsets.get)
        assert not first & second


@EXAMPLES
@given(networks())
def test_top_tier_is_the_union_of_all_minimal_quorums(network: dict[str, Any]) -> None:
    fbas = load_stellarbeat(network["nodes"])
    qsets = reference_network(network)
    expected = brute.minimal_quorums(qsets)
    assert raw_keys(fbas.nodes, top_tier(fbas).nodes) == brute.top_tier(qsets)
    found, complete = enumerate_minimal_quorums(fbas)
    assert complete
    assert {raw_keys(fbas.nodes, q) for q in found} == set(expected)
    assert len(found) == len(expected)


@EXAMPLES
@given(networks())
def test_every_minimal_quorum_lies_inside_one_core(network: dict[str, Any]) -> None:
    fbas = load_stellarbeat(network["nodes"])
    qsets = reference_network(network)
    cores = [raw_keys(fbas.nodes, core) for core in quorum_cores(fbas)]
    for core in cores:
        assert is_quorum(core, qsets.get)
    assert all(not a & b for i, a in enumerate(cores) for b in cores[i + 1 :])
    for quorum in brute.minimal_quorums(qsets):
        assert sum(1 for core in cores if quorum <= core) == 1


@EXAMPLES
@given(networks(), st.booleans(), st.booleans())
def test_minimum_blocking_set_size_matches_enumeration(
    network: dict[str, Any], by_org: bool, unconstrained: bool
) -> None:
    options = LoadOptions(missing_qset="unconstrained" if unconstrained else "exclude")
    fbas = load_stellarbeat(network["nodes"], options)
    qsets = reference_network(network, unconstrained)
    groups = reference_groups(network, qsets, by_org)
    result = minimal_blocking_sets(fbas, "org" if by_org else None, limit=3)
    assert result.size == brute.min_blocking_size(qsets, groups)
    quorums = brute.all_quorums(qsets)
    for example in result.examples:
        failed = raw_keys(fbas.nodes, example.nodes)
        assert all(q & failed for q in quorums)
        assert len(example.groups) == result.size


@EXAMPLES
@given(
    networks(),
    st.booleans(),
    st.sampled_from(["all", "top-tier"]),
    st.booleans(),
    st.sampled_from([1, 2]),
)
def test_minimum_splitting_set_size_matches_enumeration(
    network: dict[str, Any], by_org: bool, scope: Any, unconstrained: bool, limit: int
) -> None:
    options = LoadOptions(missing_qset="unconstrained" if unconstrained else "exclude")
    fbas = load_stellarbeat(network["nodes"], options)
    qsets = reference_network(network, unconstrained)
    groups = reference_groups(network, qsets, by_org)
    within = brute.top_tier(qsets) if scope == "top-tier" else None
    result = minimal_splitting_sets(fbas, "org" if by_org else None, limit, scope=scope)
    assert result.size == brute.min_splitting_size(qsets, groups, within)
    for example in result.examples:
        faulty = raw_keys(fbas.nodes, example.nodes)
        assert example.quorums is not None
        first, second = (raw_keys(fbas.nodes, q) for q in example.quorums)
        assert brute.is_quorum_despite(qsets, first, faulty)
        assert brute.is_quorum_despite(qsets, second, faulty)
        assert not first & second
        if within is not None:
            assert first <= within and second <= within
