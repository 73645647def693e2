"""The per-value indexes behind federated voting agree with the draft's definitions.

The ballot and nomination protocols keep, per value, what each node's latest statement
votes for and accepts, updated as statements are recorded and replaced, so that each
federated check reads a few small dictionaries instead of testing every node's
statement.  These tests record random sequences of statements (nodes replacing their
own statements included) and check every decision against `federated_accept` /
`federated_ratify` run over the latest statements with predicates written here from
draft-mazieres-dinrg-scp-05 section 3.5 (what PREPARE, CONFIRM and EXTERNALIZE vote for
and accept) and section 3.4 (nomination).
"""

from __future__ import annotations

from functools import partial

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.crypto import KeyPair
from synod.quorum.qset import QuorumSet, qset_hash
from synod.scp import Application, Ballot, Confirm, Externalize, Nomination, Prepare, Statement
from synod.scp.ballot import BallotProtocol
from synod.scp.messages import Pledges
from synod.scp.slot import Slot
from synod.scp.voting import (
    accepts_with,
    federated_accept,
    federated_ratify,
    is_quorum_threshold_set,
)

INFINITE = 2**32 - 1
NODES = [KeyPair.from_seed(bytes([index + 1]) * 32).node_id for index in range(5)]
LOCAL_QSET = QuorumSet(threshold=3, validators=tuple(NODES))
KNOWN_HASH = qset_hash(LOCAL_QSET)
UNKNOWN_HASH = bytes(32)
VALUES = [b"x", b"y"]
COUNTERS = [0, 1, 2, 3, 4, INFINITE]


def new_slot() -> Slot:
    return Slot(
        slot_index=1,
        node_id=NODES[0],
        local_qset=LOCAL_QSET,
        local_qset_hash=KNOWN_HASH,
        application=Application(),
        qset_by_hash={KNOWN_HASH: LOCAL_QSET}.get,
        started_ms=0,
        validator=True,
    )


counters = st.integers(1, 4)
values = st.sampled_from(VALUES)
ballots = st.builds(Ballot, counters, values)
qset_hashes = st.sampled_from([KNOWN_HASH, KNOWN_HASH, UNKNOWN_HASH])
prepares = st.builds(
    lambda qset_hash_value, ballot, prepared, prime, n_c, n_h: Prepare(
        quorum_set_hash=qset_hash_value,
        ballot=ballot,
        prepared=prepared,
        prepared_prime=prime,
        n_c=n_c,
        n_h=n_h,
    ),
    qset_hashes,
    ballots,
    st.none() | ballots,
    st.none() | ballots,
    st.integers(0, 4),
    st.integers(0, 4),
)
confirms = st.builds(
    lambda qset_hash_value, ballot, n_prepared, n_commit, n_h: Confirm(
        ballot=ballot,
        n_prepared=n_prepared,
        n_commit=n_commit,
        n_h=n_h,
        quorum_set_hash=qset_hash_value,
    ),
    qset_hashes,
    ballots,
    counters,
    counters,
    counters,
)
externalizes = st.builds(
    lambda commit, n_h: Externalize(commit=commit, n_h=n_h, commit_quorum_set_hash=KNOWN_HASH),
    ballots,
    counters,
)
ballot_histories = st.lists(
    st.tuples(st.sampled_from(NODES), st.one_of(prepares, confirms, externalizes)),
    min_size=1,
    max_size=14,
)


# ---------------------------------------------------------------- the draft's rules


def votes_prepare(ballot: Ballot, pledges: Pledges) -> bool:
    """PREPARE <b, ...> votes prepare(b') for every b' <= b with b's value; CONFIRM and
    EXTERNALIZE vote prepare for every counter of their value."""
    if isinstance(pledges, Prepare):
        return pledges.ballot.value == ballot.value and ballot.counter <= pledges.ballot.counter
    if isinstance(pledges, Confirm):
        return pledges.ballot.value == ballot.value
    return isinstance(pledges, Externalize) and pledges.commit.value == ballot.value


def accepts_prepare(ballot: Ballot, pledges: Pledges) -> bool:
    """PREPARE accepts prepare up to p and up to p'; CONFIRM up to <n_prepared, x>;
    EXTERNALIZE up to infinity."""
    if isinstance(pledges, Prepare):
        return any(
            accepted is not None
            and accepted.value == ballot.value
            and ballot.counter <= accepted.counter
            for accepted in (pledges.prepared, pledges.prepared_prime)
        )
    if isinstance(pledges, Confirm):
        return pledges.ballot.value == ballot.value and ballot.counter <= pledges.n_prepared
    return isinstance(pledges, Externalize) and pledges.commit.value == ballot.value


def votes_commit(value: bytes, low: int, high: int, pledges: Pledges) -> bool:
    """PREPARE with c != 0 votes commit for c..h; CONFIRM for n_commit..infinity;
    EXTERNALIZE for c..infinity."""
    if isinstance(pledges, Prepare):
        return (
            pledges.ballot.value == value
            and pledges.n_c != 0
            and pledges.n_c <= low
            and high <= pledges.n_h
        )
    if isinstance(pledges, Confirm):
        return pledges.ballot.value == value and pledges.n_commit <= low
    return (
        isinstance(pledges, Externalize)
        and pledges.commit.value == value
        and pledges.commit.counter <= low
    )


def accepts_commit(value: bytes, low: int, high: int, pledges: Pledges) -> bool:
    """CONFIRM accepts commit for n_commit..n_h; EXTERNALIZE for c..infinity."""
    if isinstance(pledges, Confirm):
        return pledges.ballot.value == value and pledges.n_commit <= low and high <= pledges.n_h
    return (
        isinstance(pledges, Externalize)
        and pledges.commit.value == value
        and pledges.commit.counter <= low
    )


def record_all(protocol: BallotProtocol, history: list[tuple[bytes, Pledges]]) -> None:
    for node, pledges in history:
        protocol._record(Statement(node, 1, pledges))


# ---------------------------------------------------------------- ballot protocol


@settings(max_examples=150, deadline=None)
@given(ballot_histories)
def test_prepare_decisions_match_the_draft_rules_over_latest_statements(
    history: list[tuple[bytes, Pledges]],
) -> None:
    protocol = new_slot().ballot
    record_all(protocol, history)
    qset_of = protocol.node_qsets.get
    for value in VALUES:
        for counter in COUNTERS:
            ballot = Ballot(counter, value)
            expected_accept = federated_accept(
                LOCAL_QSET,
                protocol.latest,
                qset_of,
                partial(votes_prepare, ballot),
                partial(accepts_prepare, ballot),
            )
            expected_confirm = federated_ratify(
                LOCAL_QSET,
                protocol.latest,
                qset_of,
                partial(accepts_prepare, ballot),
            )
            assert protocol._accepts_prepared(ballot) == expected_accept
            assert protocol._confirms_prepared(ballot) == expected_confirm


@settings(max_examples=150, deadline=None)
@given(ballot_histories)
def test_commit_ranges_match_the_draft_rules_over_latest_statements(
    history: list[tuple[bytes, Pledges]],
) -> None:
    protocol = new_slot().ballot
    record_all(protocol, history)
    for value in VALUES:
        ranges = protocol._commit_ranges(value)
        for low in COUNTERS[1:]:
            for high in COUNTERS[1:]:
                if high < low:
                    continue
                voting = {
                    node
                    for node, statement in protocol.latest.items()
                    if votes_commit(value, low, high, statement.pledges)
                }
                accepting = {
                    node
                    for node, statement in protocol.latest.items()
                    if accepts_commit(value, low, high, statement.pledges)
                }
                assert {
                    node
                    for node, (first, last) in ranges.accepting.items()
                    if first <= low and high <= last
                } == accepting
                assert {
                    node
                    for node, (first, last) in ranges.supporting.items()
                    if first <= low and high <= last
                } == voting
        # boundaries: c and h of every statement voting commit of the value, plus
        # infinity for an EXTERNALIZE
        expected_boundaries: set[int] = set()
        for statement in protocol.latest.values():
            pledges = statement.pledges
            if isinstance(pledges, Prepare) and pledges.ballot.value == value and pledges.n_c:
                expected_boundaries |= {pledges.n_c, pledges.n_h}
            elif isinstance(pledges, Confirm) and pledges.ballot.value == value:
                expected_boundaries |= {pledges.n_commit, pledges.n_h}
            elif isinstance(pledges, Externalize) and pledges.commit.value == value:
                expected_boundaries |= {pledges.commit.counter, pledges.n_h, INFINITE}
        assert ranges.boundaries == sorted(expected_boundaries)


@settings(max_examples=100, deadline=None)
@given(ballot_histories)
def test_reported_counters_follow_each_nodes_latest_statement(
    history: list[tuple[bytes, Pledges]],
) -> None:
    protocol = new_slot().ballot
    record_all(protocol, history)
    expected = {
        node: INFINITE
        if isinstance(statement.pledges, Externalize)
        else statement.pledges.ballot.counter  # type: ignore[union-attr]
        for node, statement in protocol.latest.items()
    }
    assert protocol._counters == expected


# ---------------------------------------------------------------- nomination

nominations = st.builds(
    lambda qset_hash_value, votes, accepted: Nomination(
        qset_hash_value, tuple(sorted(votes)), tuple(sorted(accepted))
    ),
    qset_hashes,
    st.sets(st.sampled_from([b"a", b"b", b"c"])),
    st.sets(st.sampled_from([b"a", b"b", b"c"])),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NODES), nominations), min_size=1, max_size=14))
def test_nomination_decisions_match_the_draft_rules_over_latest_statements(
    history: list[tuple[bytes, Nomination]],
) -> None:
    protocol = new_slot().nomination
    for node, nomination in history:
        protocol._record(Statement(node, 1, nomination))
    qset_of = protocol.node_qsets.get
    for value in (b"a", b"b", b"c"):

        def votes(pledges: object, value: bytes = value) -> bool:
            return isinstance(pledges, Nomination) and (
                value in pledges.votes or value in pledges.accepted
            )

        def accepts(pledges: object, value: bytes = value) -> bool:
            return isinstance(pledges, Nomination) and value in pledges.accepted

        acceptors = protocol._acceptors.get(value, set())
        voters = protocol._voters.get(value, set())
        latest = protocol.latest.items()
        assert acceptors == {node for node, statement in latest if accepts(statement.pledges)}
        assert voters == {node for node, statement in latest if votes(statement.pledges)}
        assert accepts_with(LOCAL_QSET, qset_of, acceptors, voters) == federated_accept(
            LOCAL_QSET, protocol.latest, qset_of, votes, accepts
        )
        assert is_quorum_threshold_set(LOCAL_QSET, qset_of, acceptors) == federated_ratify(
            LOCAL_QSET, protocol.latest, qset_of, accepts
        )
