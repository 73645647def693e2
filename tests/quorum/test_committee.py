"""Weighted threshold committees: the Byzantine quorum bounds, by brute force and by hand.

The properties checked are the reasons the thresholds exist (FastPay section 3.1;
Narwhal/Tusk section 2), with f the tolerated faulty weight, N >= 3f + 1:

- quorum intersection: any two sets reaching the quorum threshold share more than f
  weight, so they share an honest member whichever members are faulty;
- validity: a set reaching the validity threshold contains an honest member;
- liveness: the honest members alone reach the quorum threshold.
"""

from __future__ import annotations

import itertools
import tomllib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.crypto import KeyPair, NodeId, node_id_text
from synod.quorum.committee import (
    Committee,
    CommitteeConfig,
    CommitteeError,
    MemberConfig,
)


def member(index: int) -> NodeId:
    return NodeId(index.to_bytes(2, "big") + bytes(30))


def weighted(weights: list[int]) -> Committee:
    return Committee({member(i): weight for i, weight in enumerate(weights)})


def all_subsets(committee: Committee) -> list[frozenset[bytes]]:
    members = committee.members
    return [
        frozenset(chosen)
        for size in range(len(members) + 1)
        for chosen in itertools.combinations(members, size)
    ]


small_weight_lists = st.lists(st.integers(1, 6), min_size=1, max_size=7)


@pytest.mark.parametrize(
    ("size", "faulty", "quorum", "validity"),
    [(1, 0, 1, 1), (3, 0, 3, 1), (4, 1, 3, 2), (5, 1, 4, 2), (6, 1, 5, 2), (7, 2, 5, 3),
     (10, 3, 7, 4), (100, 33, 67, 34)],
)  # fmt: skip
def test_equal_weight_thresholds_match_the_counting_rule(
    size: int, faulty: int, quorum: int, validity: int
) -> None:
    # By hand: f = floor((n-1)/3); quorum = floor(2n/3)+1 = n-f; validity = f+1.
    committee = Committee.equal_weights(member(i) for i in range(size))
    assert committee.max_faulty_weight == faulty
    assert committee.quorum_threshold == quorum
    assert committee.validity_threshold == validity


def test_three_f_plus_one_gives_two_f_plus_one_and_f_plus_one() -> None:
    for f in range(6):
        committee = Committee.equal_weights(member(i) for i in range(3 * f + 1))
        assert committee.max_faulty_weight == f
        assert committee.quorum_threshold == 2 * f + 1
        assert committee.validity_threshold == f + 1


def test_weights_count_not_members() -> None:
    # Weights 5, 1, 1, 1: N = 8, f = 2, quorum 6, validity 3.  The heavy member and one
    # other reach quorum; the three light members together only reach validity.
    committee = weighted([5, 1, 1, 1])
    assert (committee.total_weight, committee.max_faulty_weight) == (8, 2)
    assert committee.reaches_quorum([member(0), member(1)])
    assert not committee.reaches_quorum([member(1), member(2), member(3)])
    assert committee.reaches_validity([member(1), member(2), member(3)])
    assert not committee.reaches_validity([member(1), member(2)])


def test_repeated_and_unknown_signers_add_nothing() -> None:
    committee = Committee.equal_weights(member(i) for i in range(4))
    stranger = member(99)
    assert committee.weight_of([member(0), member(0), member(0), stranger]) == 1
    assert not committee.reaches_quorum([member(0), member(1), member(1), stranger])
    assert committee.reaches_quorum([member(0), member(1), member(2)])


def test_tally_counts_each_member_once() -> None:
    committee = weighted([2, 1, 1, 1])  # N = 5: quorum 4, validity 2
    tally = committee.tally()
    assert tally.add(member(1))
    assert not tally.add(member(1))
    assert not tally.add(member(42))
    assert (tally.weight, tally.has_validity, tally.has_quorum) == (1, False, False)
    assert tally.add(member(0))
    assert (tally.weight, tally.has_validity, tally.has_quorum) == (3, True, False)
    assert tally.add(member(2))
    assert tally.has_quorum
    assert tally.voters == {member(0), member(1), member(2)}


@settings(max_examples=60, deadline=None)
@given(small_weight_lists)
def test_any_two_quorums_share_more_than_the_faulty_weight(weights: list[int]) -> None:
    committee = weighted(weights)
    quorums = [s for s in all_subsets(committee) if committee.reaches_quorum(s)]
    for first, second in itertools.combinations_with_replacement(quorums, 2):
        assert committee.weight_of(first & second) > committee.max_faulty_weight


@settings(max_examples=60, deadline=None)
@given(small_weight_lists)
def test_two_quorums_always_share_an_honest_member(weights: list[int]) -> None:
    # Whatever faulty set weighs at most f, every two quorums meet outside it.
    committee = weighted(weights)
    subsets = all_subsets(committee)
    quorums = [s for s in subsets if committee.reaches_quorum(s)]
    faulty_sets = [s for s in subsets if committee.weight_of(s) <= committee.max_faulty_weight]
    for faulty in faulty_sets:
        for first, second in itertools.combinations_with_replacement(quorums, 2):
            assert (first & second) - faulty


@settings(max_examples=60, deadline=None)
@given(small_weight_lists)
def test_validity_sets_contain_an_honest_member(weights: list[int]) -> None:
    committee = weighted(weights)
    subsets = all_subsets(committee)
    faulty_sets = [s for s in subsets if committee.weight_of(s) <= committee.max_faulty_weight]
    for candidate in subsets:
        if committee.reaches_validity(candidate):
            assert all(candidate - faulty for faulty in faulty_sets)


@settings(max_examples=60, deadline=None)
@given(small_weight_lists)
def test_honest_members_alone_reach_quorum(weights: list[int]) -> None:
    committee = weighted(weights)
    everyone = frozenset(committee.members)
    for faulty in all_subsets(committee):
        if committee.weight_of(faulty) <= committee.max_faulty_weight:
            assert committee.reaches_quorum(everyone - faulty)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000))
def test_thresholds_are_the_smallest_that_guarantee_their_property(total: int) -> None:
    committee = weighted([total])
    quorum, validity, f = (
        committee.quorum_threshold,
        committee.validity_threshold,
        committee.max_faulty_weight,
    )
    assert 3 * quorum > 2 * total >= 3 * (quorum - 1)
    # Validity: the smallest weight exceeding the faulty bound f (so it holds an honest
    # member) and never more than a third of the total plus one.
    assert validity == f + 1
    assert 3 * (validity - 1) < total
    assert total >= 3 * f + 1 and total < 3 * (f + 1) + 1
    assert quorum == total - f


def test_config_round_trip_through_toml() -> None:
    keys = [KeyPair.from_seed(bytes([i]) * 32) for i in range(3)]
    text = "\n".join(
        f'[[members]]\nnode_id = "{node_id_text(k.node_id)}"\nweight = {i + 1}\n'
        for i, k in enumerate(keys)
    )
    committee = Committee.from_builtins(tomllib.loads(text))
    assert committee.weights == {k.node_id: i + 1 for i, k in enumerate(keys)}
    assert committee.total_weight == 6
    again = Committee.from_config(
        msgspec.json.decode(msgspec.json.encode(committee.to_config()), type=CommitteeConfig)
    )
    assert again == committee


def test_config_weight_defaults_to_one() -> None:
    node = node_id_text(KeyPair.from_seed(bytes(32)).node_id)
    committee = Committee.from_builtins({"members": [{"node_id": node}]})
    assert committee.total_weight == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"members": []}, "members"),
        ({"members": [{"node_id": "Nnot-an-id"}]}, r"members\[0\]\.node_id"),
        ({"members": [{"node_id": "x", "weight": 0}]}, r"members\[0\]\.weight"),
        ({"members": [{"node_id": "x", "color": "red"}]}, "color"),
        ({}, "members"),
    ],
)
def test_config_errors_name_the_key(data: object, message: str) -> None:
    with pytest.raises(CommitteeError, match=message):
        Committee.from_builtins(data)


def test_config_refuses_a_member_listed_twice() -> None:
    node = node_id_text(KeyPair.from_seed(bytes(32)).node_id)
    config = CommitteeConfig(members=(MemberConfig(node), MemberConfig(node)))
    with pytest.raises(CommitteeError, match=r"members\[1\].*listed twice"):
        Committee.from_config(config)


@pytest.mark.parametrize(
    "weights",
    [{}, {member(0): 0}, {member(0): -1}, {NodeId(b"short"): 1}, {member(0): True}],
)
def test_invalid_committees_are_refused(weights: dict[NodeId, int]) -> None:
    with pytest.raises(CommitteeError):
        Committee(weights)
