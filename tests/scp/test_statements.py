"""Statement rules: ballot order, sanity conditions, the newer-statement order, signing,
and federated voting checked against a brute-force search over all subsets."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.crypto import KeyPair
from synod.quorum.qset import QuorumSet, is_satisfied_by
from synod.scp import (
    CODEC,
    Ballot,
    Confirm,
    Externalize,
    Nomination,
    Prepare,
    Statement,
    sign_statement,
    verify_envelope,
)
from synod.scp.statements import (
    compare_ballots,
    is_newer_ballot_statement,
    is_newer_nomination,
    is_statement_sane,
)
from synod.scp.voting import federated_accept, federated_ratify, is_quorum_threshold

HASH = bytes(32)
KEY = KeyPair.from_seed(b"\x07" * 32)


def prepare(
    counter: int,
    value: bytes = b"x",
    prepared: Ballot | None = None,
    prepared_prime: Ballot | None = None,
    n_c: int = 0,
    n_h: int = 0,
) -> Prepare:
    return Prepare(HASH, Ballot(counter, value), prepared, prepared_prime, n_c, n_h)


def sane(pledges: Prepare | Confirm | Externalize | Nomination) -> bool:
    return is_statement_sane(Statement(KEY.node_id, 1, pledges))


# ---------------------------------------------------------------- order


def test_ballots_order_by_counter_then_value_and_none_is_lowest() -> None:
    assert compare_ballots(Ballot(1, b"z"), Ballot(2, b"a")) < 0
    assert compare_ballots(Ballot(2, b"a"), Ballot(2, b"b")) < 0
    assert compare_ballots(Ballot(2, b"b"), Ballot(2, b"b")) == 0
    assert compare_ballots(None, Ballot(0, b"")) < 0
    # values compare as unsigned octet strings
    assert compare_ballots(Ballot(1, b"\x7f"), Ballot(1, b"\x80")) < 0


# ---------------------------------------------------------------- sanity


def test_prepare_sanity_conditions() -> None:
    assert sane(prepare(1))
    assert not sane(prepare(0))  # only our own initial statement may have counter 0
    # prepared' must be below prepared and incompatible with it
    assert sane(prepare(2, prepared=Ballot(2, b"y"), prepared_prime=Ballot(1, b"x")))
    assert not sane(prepare(2, prepared=Ballot(2, b"y"), prepared_prime=Ballot(1, b"y")))
    assert not sane(prepare(3, prepared=Ballot(1, b"x"), prepared_prime=Ballot(2, b"y")))
    # n_h needs a prepared ballot at least that high
    assert not sane(prepare(2, n_h=1))
    assert sane(prepare(2, prepared=Ballot(2, b"x"), n_h=2))
    assert not sane(prepare(3, prepared=Ballot(1, b"x"), n_h=2))
    # c != 0 -> c <= h <= b
    assert sane(prepare(3, prepared=Ballot(3, b"x"), n_c=2, n_h=3))
    assert not sane(prepare(3, prepared=Ballot(3, b"x"), n_c=3, n_h=2))
    assert not sane(prepare(3, prepared=Ballot(3, b"x"), n_c=1, n_h=0))


def test_confirm_and_externalize_sanity_conditions() -> None:
    assert sane(Confirm(Ballot(3, b"x"), 3, 2, 3, HASH))
    assert not sane(Confirm(Ballot(0, b"x"), 0, 0, 0, HASH))
    assert not sane(Confirm(Ballot(3, b"x"), 3, 2, 4, HASH))  # n_h above ballot
    assert not sane(Confirm(Ballot(3, b"x"), 3, 3, 2, HASH))  # n_commit above n_h
    assert sane(Externalize(Ballot(2, b"x"), 2, HASH))
    assert not sane(Externalize(Ballot(0, b"x"), 2, HASH))
    assert not sane(Externalize(Ballot(3, b"x"), 2, HASH))


def test_nomination_sanity_needs_values_sorted_without_duplicates() -> None:
    assert sane(Nomination(HASH, (b"a", b"b"), ()))
    assert sane(Nomination(HASH, (), (b"a",)))
    assert not sane(Nomination(HASH, (), ()))
    assert not sane(Nomination(HASH, (b"b", b"a"), ()))
    assert not sane(Nomination(HASH, (b"a", b"a"), ()))


# ---------------------------------------------------------------- newer


def test_ballot_statement_kinds_only_move_forward() -> None:
    prepare_statement = prepare(5)
    confirm = Confirm(Ballot(1, b"x"), 1, 1, 1, HASH)
    externalize = Externalize(Ballot(1, b"x"), 1, HASH)
    assert is_newer_ballot_statement(prepare_statement, confirm)
    assert is_newer_ballot_statement(confirm, externalize)
    assert not is_newer_ballot_statement(confirm, prepare_statement)
    assert not is_newer_ballot_statement(externalize, externalize)
    assert not is_newer_ballot_statement(externalize, prepare_statement)


def test_prepare_newer_by_ballot_then_prepared_then_prepared_prime_then_h() -> None:
    base = prepare(2, prepared=Ballot(1, b"x"))
    assert is_newer_ballot_statement(base, prepare(3))
    assert is_newer_ballot_statement(base, prepare(2, b"y"))
    assert not is_newer_ballot_statement(base, prepare(2, prepared=None))
    assert is_newer_ballot_statement(base, prepare(2, prepared=Ballot(2, b"x")))
    assert is_newer_ballot_statement(
        base, prepare(2, prepared=Ballot(1, b"x"), prepared_prime=Ballot(0, b"w"))
    )
    assert is_newer_ballot_statement(base, prepare(2, prepared=Ballot(1, b"x"), n_h=1))
    assert not is_newer_ballot_statement(base, base)


def test_confirm_newer_by_ballot_then_prepared_counter_then_h() -> None:
    base = Confirm(Ballot(3, b"x"), 2, 1, 2, HASH)
    assert is_newer_ballot_statement(base, Confirm(Ballot(4, b"x"), 2, 1, 2, HASH))
    assert is_newer_ballot_statement(base, Confirm(Ballot(3, b"x"), 3, 1, 2, HASH))
    assert is_newer_ballot_statement(base, Confirm(Ballot(3, b"x"), 2, 1, 3, HASH))
    assert not is_newer_ballot_statement(base, Confirm(Ballot(3, b"x"), 2, 2, 2, HASH))


def test_nomination_newer_only_when_sets_grow() -> None:
    old = Nomination(HASH, (b"a",), ())
    assert is_newer_nomination(old, Nomination(HASH, (b"a", b"b"), ()))
    assert is_newer_nomination(old, Nomination(HASH, (b"a",), (b"a",)))
    assert not is_newer_nomination(old, old)
    assert not is_newer_nomination(old, Nomination(HASH, (b"b",), ()))


# ---------------------------------------------------------------- signatures


def test_envelope_signature_covers_the_statement() -> None:
    envelope = sign_statement(KEY, Statement(KEY.node_id, 9, prepare(1)))
    assert verify_envelope(envelope)
    decoded = CODEC.decode(CODEC.encode(envelope))
    assert decoded == envelope
    tampered = Statement(KEY.node_id, 10, prepare(1))
    assert not verify_envelope(type(envelope)(tampered, envelope.signature))


# ---------------------------------------------------------------- federated voting


NODES = [bytes([index]) * 32 for index in range(5)]
qsets_strategy = st.lists(
    st.tuples(
        st.integers(1, 4), st.lists(st.sampled_from(NODES), min_size=1, max_size=5, unique=True)
    ).map(lambda pair: QuorumSet(threshold=min(pair[0], len(pair[1])), validators=tuple(pair[1]))),
    min_size=5,
    max_size=5,
)


def brute_force_quorum_threshold(
    local: QuorumSet, qsets: dict[bytes, QuorumSet], agreeing: set[bytes]
) -> bool:
    """Some non-empty Q within `agreeing` where every member's set is satisfied by Q
    and Q contains a slice of the local node."""
    members = sorted(agreeing)
    for size in range(1, len(members) + 1):
        for subset in itertools.combinations(members, size):
            quorum = set(subset)
            if all(is_satisfied_by(qsets[node], quorum) for node in quorum) and (
                is_satisfied_by(local, quorum)
            ):
                return True
    return False


def brute_force_v_blocking(local: QuorumSet, nodes: set[bytes]) -> bool:
    """`nodes` meets every slice: no slice of the local set avoids them."""
    universe = sorted(set(local.validators))
    for size in range(len(universe) + 1):
        for slice_candidate in itertools.combinations(universe, size):
            if is_satisfied_by(local, set(slice_candidate)) and not (set(slice_candidate) & nodes):
                return False
    return True


@settings(max_examples=150, deadline=None)
@given(qsets_strategy, st.sets(st.sampled_from(NODES)), st.sets(st.sampled_from(NODES)))
def test_federated_voting_matches_brute_force(
    qset_list: list[QuorumSet], voting: set[bytes], accepting: set[bytes]
) -> None:
    qsets = dict(zip(NODES, qset_list, strict=True))
    local = qsets[NODES[0]]
    latest = {
        node: Statement(
            node,
            1,
            Nomination(
                node,
                (b"v",) if node in voting | accepting else (b"w",),
                (b"v",) if node in accepting else (),
            ),
        )
        for node in NODES
    }

    def qset_of(node: bytes) -> QuorumSet:
        return qsets[node]

    def votes(pledges: object) -> bool:
        return isinstance(pledges, Nomination) and b"v" in pledges.votes

    def accepts(pledges: object) -> bool:
        return isinstance(pledges, Nomination) and b"v" in pledges.accepted

    assert is_quorum_threshold(local, latest, qset_of, votes) == brute_force_quorum_threshold(
        local, qsets, voting | accepting
    )
    assert federated_ratify(local, latest, qset_of, accepts) == brute_force_quorum_threshold(
        local, qsets, accepting
    )
    expected_accept = brute_force_v_blocking(local, accepting) or brute_force_quorum_threshold(
        local, qsets, voting | accepting
    )
    assert federated_accept(local, latest, qset_of, votes, accepts) == expected_accept
