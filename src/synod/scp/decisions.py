"""Decided slots with their proofs: how a node that was away learns what it missed.

Theory of operation.  A slot is decided once a quorum accepts commit of one value (the
draft's confirm-commit, section 3.5); the statements that accept commit are CONFIRM
and EXTERNALIZE.  So the signed CONFIRM / EXTERNALIZE statements committing a value,
of nodes that form a quorum, prove the decision to anyone, exactly as they would have
decided that node had it heard them in time (stellar-core likewise trusts a quorum's
externalized values).  A `Decision` carries the value and these envelopes.

A receiver checks a decision against its *own* quorum set, never against the sender's
word: every envelope is for the slot, from a distinct node of its transitive quorum,
sane, and commits the value; the nodes form a quorum threshold for it (an EXTERNALIZE
stands alone, as in the ballot protocol: its node has decided; a CONFIRM needs its
node's quorum set, known locally); only then are the signatures of that quorum checked
(at most `MAX_PROOF_ENVELOPES`, cheapest checks first).  Within the Byzantine bound
every quorum of the receiver contains a correct node, and correct nodes never accept
commit of two values, so a proof that passes names the value the slot decided.

The local node's own statement is not in a proof it receives (it did not take part),
so its quorum set needs a slice without itself: true of every quorum set that
survives the node's own failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from synod.crypto import NodeId
from synod.quorum.qset import QuorumSet, largest_quorum_within
from synod.scp.messages import (
    MAX_PROOF_ENVELOPES,
    Confirm,
    Decision,
    Envelope,
    Externalize,
    Statement,
)
from synod.scp.statements import is_statement_sane
from synod.scp.voting import is_quorum_threshold_set

QuorumSetLookup = Callable[[bytes], QuorumSet | None]


def commits(statement: Statement, value: bytes) -> bool:
    """The statement accepts commit of a ballot of `value` (CONFIRM or EXTERNALIZE)."""
    pledges = statement.pledges
    if isinstance(pledges, Externalize):
        return pledges.commit.value == value
    if isinstance(pledges, Confirm):
        return pledges.ballot.value == value
    return False


def proof_quorum_set(statement: Statement, qset_by_hash: QuorumSetLookup) -> QuorumSet | None:
    """The quorum set a proof's statement counts with (EXTERNALIZE: the node alone)."""
    pledges = statement.pledges
    if isinstance(pledges, Externalize):
        return QuorumSet(threshold=1, validators=(statement.node_id,))
    if isinstance(pledges, Confirm):
        return qset_by_hash(pledges.quorum_set_hash)
    return None


def build_decision(slot_index: int, value: bytes, envelopes: Iterable[Envelope]) -> Decision:
    """The decision of a slot from the envelopes a node holds for it: those committing
    `value`, EXTERNALIZEs first (they stand alone), then by node id."""
    committing = [
        envelope
        for envelope in envelopes
        if envelope.statement.slot_index == slot_index and commits(envelope.statement, value)
    ]
    committing.sort(
        key=lambda envelope: (
            not isinstance(envelope.statement.pledges, Externalize),
            envelope.statement.node_id,
        )
    )
    return Decision(slot_index, value, tuple(committing[:MAX_PROOF_ENVELOPES]))


def check_decision(
    decision: Decision,
    *,
    local_qset: QuorumSet,
    qset_by_hash: QuorumSetLookup,
    admits: Callable[[bytes], bool],
    verifier: Callable[[Envelope], bool],
) -> bool:
    """True when `decision`'s proof holds for a node with quorum set `local_qset` (see
    the module docstring); signatures are checked last, for the quorum only."""
    by_node: dict[bytes, Envelope] = {}
    for envelope in decision.proof:
        statement = envelope.statement
        if (
            statement.slot_index != decision.slot_index
            or statement.node_id in by_node
            or not admits(statement.node_id)
            or not is_statement_sane(statement)
            or not commits(statement, decision.value)
        ):
            return False
        by_node[statement.node_id] = envelope
    qsets = {
        node: proof_quorum_set(envelope.statement, qset_by_hash)
        for node, envelope in by_node.items()
    }
    if not is_quorum_threshold_set(local_qset, qsets.get, by_node.keys()):
        return False
    quorum = largest_quorum_within(by_node.keys(), qsets.get)
    return all(verifier(by_node[NodeId(node)]) for node in sorted(quorum))


class DecisionStore:
    """The decisions a node keeps after their slots left its live window: for its own
    delivery in slot order (a later slot may be decided before an earlier one) and to
    answer peers that were away.  Keys are slot indexes; `prune` bounds them."""

    def __init__(self) -> None:
        self._decisions: dict[int, Decision] = {}

    def get(self, slot_index: int) -> Decision | None:
        return self._decisions.get(slot_index)

    def put(self, decision: Decision) -> None:
        self._decisions[decision.slot_index] = decision

    def prune(self, below: int) -> list[int]:
        """Forget the decisions of slots below `below`; returns their slot indexes."""
        gone = sorted(index for index in self._decisions if index < below)
        for index in gone:
            del self._decisions[index]
        return gone

    def oldest(self) -> int | None:
        return min(self._decisions, default=None)

    def __contains__(self, slot_index: object) -> bool:
        return slot_index in self._decisions

    def __len__(self) -> int:
        return len(self._decisions)
