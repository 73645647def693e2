"""Loading networks: shapes, faults named by node and field, and the semantics switches."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from stellar_sdk import StrKey

from synod.crypto import node_id_text
from synod.fbas.analysis import check_intersection
from synod.fbas.load import (
    FbasInputError,
    LoadOptions,
    decode_public_key,
    encode_public_key,
    from_quorum_sets,
    load_stellar_core,
    load_stellarbeat,
)
from synod.fbas.network import ALWAYS_SATISFIED, iter_bits
from synod.quorum.qset import QuorumSet

KEYS = [encode_public_key(bytes([i + 1]) * 32) for i in range(6)]
A, B, C, D, E, F = KEYS


def node(
    key: str,
    threshold: int | None,
    validators: list[str],
    inner: list[Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    record: dict[str, Any] = {"publicKey": key, **extra}
    if threshold is not None:
        record["quorumSet"] = {
            "threshold": threshold,
            "validators": validators,
            "innerQuorumSets": inner or [],
        }
    return record


def triangle() -> list[dict[str, Any]]:
    """Three nodes trusting each other 2-of-3: a cycle of trust, one quorum system."""
    return [node(k, 2, [A, B, C]) for k in (A, B, C)]


def test_strkey_decoding_agrees_with_the_stellar_sdk() -> None:
    for raw in (bytes(32), bytes(range(32)), b"\xff" * 32):
        key = encode_public_key(raw)
        assert key == StrKey.encode_ed25519_public_key(raw)
        assert decode_public_key(key) == raw


@pytest.mark.parametrize(
    "text",
    [
        "GCGB2S2KGYARPVIA37HYZXVRM2YZUEXA6S33ZU5BUDC6THSB62LZSTYA",  # checksum broken
        "SCGB2S2KGYARPVIA37HYZXVRM2YZUEXA6S33ZU5BUDC6THSB62LZSTYH",  # wrong version byte
        "GCGB2",
        "gcgb2s2kgyarpvia37hyzxvrm2yzuexa6s33zu5budc6thsb62lzstyh",
    ],
)
def test_malformed_strkeys_are_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        decode_public_key(text)


def test_trust_cycle_loads_and_has_quorum_intersection() -> None:
    fbas = load_stellarbeat(triangle())
    assert len(fbas) == 3
    assert fbas.qsets[0] is fbas.qsets[1]  # equal quorum sets are shared
    assert check_intersection(fbas).intersects


def test_duplicate_public_key_names_the_node_and_field() -> None:
    nodes = [*triangle(), node(A, 1, [B])]
    with pytest.raises(FbasInputError) as caught:
        load_stellarbeat(nodes)
    assert caught.value.node is not None and "#3" in caught.value.node and A in caught.value.node
    assert caught.value.field == "publicKey"
    assert "duplicate" in str(caught.value)


def test_threshold_above_entries_names_the_inner_set() -> None:
    nodes = triangle()
    nodes[1]["quorumSet"]["innerQuorumSets"] = [
        {"threshold": 3, "validators": [D, E], "innerQuorumSets": []}
    ]
    nodes += [node(D, 1, [D]), node(E, 1, [E])]
    with pytest.raises(FbasInputError) as caught:
        load_stellarbeat(nodes)
    assert caught.value.field == "quorumSet.innerQuorumSets[0].threshold"
    assert caught.value.node is not None and B in caught.value.node


def test_threshold_zero_and_negative_are_insane() -> None:
    for threshold in (0, -1):
        nodes = triangle()
        nodes[2]["quorumSet"]["threshold"] = threshold
        with pytest.raises(FbasInputError, match="threshold"):
            load_stellarbeat(nodes)


def test_empty_inner_set_is_insane_but_empty_top_level_means_no_quorum_set() -> None:
    nodes = triangle()
    nodes[0]["quorumSet"]["innerQuorumSets"] = [
        {"threshold": 1, "validators": [], "innerQuorumSets": []}
    ]
    with pytest.raises(FbasInputError) as caught:
        load_stellarbeat(nodes)
    assert caught.value.field == "quorumSet.innerQuorumSets[0].threshold"
    # stellarbeat's marker for an unknown quorum set
    nodes = triangle()
    nodes[0]["quorumSet"] = {"threshold": 9007199254740991, "validators": [], "innerQuorumSets": []}
    fbas = load_stellarbeat(nodes)
    assert fbas.qsets[0] is None


def test_validator_named_twice_is_insane() -> None:
    nodes = triangle()
    nodes[0]["quorumSet"]["innerQuorumSets"] = [
        {"threshold": 1, "validators": [B], "innerQuorumSets": []}
    ]
    with pytest.raises(FbasInputError, match="twice"):
        load_stellarbeat(nodes)


def test_insane_exclude_switch_drops_only_that_quorum_set() -> None:
    nodes = triangle()
    nodes[2]["quorumSet"]["threshold"] = 4
    fbas = load_stellarbeat(nodes, LoadOptions(insane="exclude"))
    assert fbas.qsets[2] is None and fbas.qsets[0] is not None
    assert any("insane" in note for note in fbas.notes)


def test_missing_validator_becomes_a_node_without_quorum_set_or_an_error() -> None:
    nodes = triangle()
    nodes[0]["quorumSet"]["validators"].append(D)
    fbas = load_stellarbeat(nodes)
    missing = fbas.index[D]
    assert not fbas.nodes[missing].listed and fbas.qsets[missing] is None
    with pytest.raises(FbasInputError) as caught:
        load_stellarbeat(nodes, LoadOptions(unknown_validators="error"))
    assert D in str(caught.value) and caught.value.field == "quorumSet"


def test_missing_qset_switch_decides_whether_a_lone_node_is_a_quorum() -> None:
    nodes = [*triangle(), node(D, None, [])]
    excluded = load_stellarbeat(nodes)
    assert excluded.qsets[3] is None
    assert check_intersection(excluded).intersects
    unconstrained = load_stellarbeat(nodes, LoadOptions(missing_qset="unconstrained"))
    assert unconstrained.qsets[3] is ALWAYS_SATISFIED
    result = check_intersection(unconstrained)
    assert not result.intersects  # {D} alone is a quorum, disjoint from {A, B}
    assert result.witness is not None
    assert any(list(iter_bits(w)) == [3] for w in result.witness)


def test_inactive_switch_removes_inactive_and_non_validating_nodes() -> None:
    nodes = triangle()
    nodes[0]["active"] = False
    nodes[1]["isValidating"] = False
    kept = load_stellarbeat(nodes)
    assert all(q is not None for q in kept.qsets)
    dropped = load_stellarbeat(nodes, LoadOptions(inactive="drop"))
    assert dropped.qsets[0] is None and dropped.qsets[1] is not None
    strict = load_stellarbeat(nodes, LoadOptions(inactive="drop-non-validating"))
    assert strict.qsets[0] is None and strict.qsets[1] is None and strict.qsets[2] is not None


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda n: n[0].pop("publicKey"), "publicKey"),
        (lambda n: n[0].update(publicKey=42), "publicKey"),
        (lambda n: n[1]["quorumSet"].pop("threshold"), "quorumSet.threshold"),
        (lambda n: n[1]["quorumSet"].update(threshold="two"), "quorumSet.threshold"),
        (lambda n: n[1]["quorumSet"].update(validators="A"), "quorumSet.validators"),
        (
            lambda n: n[2]["quorumSet"]["validators"].__setitem__(1, "not-a-key"),
            "quorumSet.validators[1]",
        ),
        (lambda n: n[2].update(quorumSet=[1, 2]), "quorumSet"),
    ],
)
def test_malformed_fields_are_named(mutate: Any, field: str) -> None:
    nodes = copy.deepcopy(triangle())
    mutate(nodes)
    with pytest.raises(FbasInputError) as caught:
        load_stellarbeat(nodes)
    assert caught.value.field == field
    assert caught.value.node is not None and caught.value.node.startswith("node #")


def test_top_level_must_be_an_array() -> None:
    with pytest.raises(FbasInputError, match="array"):
        load_stellarbeat({"publicKey": A})


def test_keys_need_not_be_strkeys_when_checking_is_off() -> None:
    nodes = [
        {
            "publicKey": "alpha",
            "quorumSet": {"threshold": 1, "validators": ["beta"], "innerQuorumSets": []},
        },
        {
            "publicKey": "beta",
            "quorumSet": {"threshold": 1, "validators": ["alpha"], "innerQuorumSets": []},
        },
    ]
    with pytest.raises(FbasInputError):
        load_stellarbeat(nodes)
    fbas = load_stellarbeat(nodes, LoadOptions(check_keys=False))
    assert fbas.index == {"alpha": 0, "beta": 1}


def test_organisations_file_names_groups() -> None:
    nodes = [*triangle(), node(D, 1, [A])]
    orgs = [
        {"id": "x1", "name": "Alpha Org", "validators": [A, B]},
        {"id": "x2", "name": "Charlie", "validators": [C]},
    ]
    fbas = load_stellarbeat(nodes, organizations=orgs)
    groups = dict(fbas.groups("org"))
    assert groups["Alpha Org"] == 0b0011 and groups["Charlie"] == 0b0100
    assert len(groups) == 3  # D stands alone


def test_stellar_core_quorum_json_matches_the_stellarbeat_reading() -> None:
    core = {
        "nodes": [
            {"node": A, "qset": {"t": 2, "v": [A, B, {"t": 1, "v": [C, D]}]}},
            {"node": B, "qset": {"t": 2, "v": [A, B, {"t": 1, "v": [C, D]}]}},
            {"node": C, "qset": {"t": 1, "v": [A]}},
            {"node": D, "qset": None},
        ]
    }
    inner = [{"threshold": 1, "validators": [C, D], "innerQuorumSets": []}]
    beat = [
        node(A, 2, [A, B], inner),
        node(B, 2, [A, B], inner),
        node(C, 1, [A]),
        node(D, None, []),
    ]
    from_core = load_stellar_core(core)
    from_beat = load_stellarbeat(beat)
    assert from_core.qsets == from_beat.qsets
    bad = copy.deepcopy(core)
    bad["nodes"][0]["qset"]["v"][2]["t"] = 5
    with pytest.raises(FbasInputError) as caught:
        load_stellar_core(bad)
    assert caught.value.field == "qset.v[2].t"


def test_synod_quorum_sets_load_with_synod_node_ids() -> None:
    raw = [bytes([i + 1]) * 32 for i in range(3)]
    qset = QuorumSet(threshold=2, validators=tuple(raw))
    fbas = from_quorum_sets(dict.fromkeys(raw, qset), names={raw[0]: "zero"})
    assert sorted(fbas.index) == sorted(node_id_text(k) for k in raw)
    assert fbas.nodes[0].name == "zero"
    assert check_intersection(fbas).intersects
    stellar = from_quorum_sets(dict.fromkeys(raw, qset), key_text=encode_public_key)
    assert sorted(stellar.index) == sorted(encode_public_key(k) for k in raw)


def test_a_validator_listed_by_two_organisations_keeps_the_first_and_a_note_says_so() -> None:
    from synod.fbas.synthetic import symmetric_network

    nodes, _ = symmetric_network(2)
    for node in nodes:
        node.pop("organizationId")  # the labels come from the organisations file only
    shared = nodes[0]["publicKey"]
    organisations = [
        {"id": "a", "name": "Alpha", "validators": [shared]},
        {"id": "b", "name": "Beta", "validators": [shared, nodes[3]["publicKey"]]},
    ]
    fbas = load_stellarbeat(nodes, organizations=organisations)
    assert fbas.nodes[fbas.index[shared]].organization == "Alpha"
    assert fbas.nodes[fbas.index[nodes[3]["publicKey"]]].organization == "Beta"
    assert fbas.notes == (
        f"validator {shared} is listed by organisations 'Alpha' and 'Beta': labelled 'Alpha'",
    )
