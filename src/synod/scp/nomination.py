"""Nomination: turning proposed values into candidates (draft section 3.4; SCP paper 6.1).

Theory of operation.  Nomination is federated voting on "x is nominated" for many x at
once.  Each node sends NOMINATE statements whose `votes` (X) and `accepted` (Y) sets
only grow; as in stellar-core, `votes` also lists the accepted values.

Round leaders.  With Gi(m) = SHA-256(i || m) read as a 256-bit big-endian number,
i the slot index as an XDR uint64 and node ids as XDR PublicKeys:

* weight(v) is the fraction of the local node's quorum slices that contain v (for a
  k-of-n level, k/n times the weight inside the inner set holding v; 1 for ourselves);
* v is a neighbour in round n when Gi(1 || n || v) < 2^256 * weight(v);
* priority(n, v) = Gi(2 || n || v); the round's leader is the neighbour of highest
  priority.  Leaders accumulate: a node echoes the leaders of every round so far.

Echoing.  A node that leads puts the application's value in `votes`; otherwise it takes
values from its leaders' statements, one per statement: the not-yet-voted valid value
(accepted values first, then votes) with the highest Gi(3 || n || value).  This answers
the draft's open note on message size the way stellar-core does.  Invalid values are
never voted for; `extract_valid_value` may offer a valid variation instead.

Federated voting.  A value moves into `accepted` when a blocking threshold accepts it
or a quorum threshold votes for or accepts it; it becomes a *candidate* (confirmed
nominated) when a quorum threshold accepts it (the nodes voting for and accepting each
value are indexed as statements are recorded, so a check does not rescan every node's
statement).  Once there is a candidate no new
values are voted for, but accepting continues.  Each time the candidate set grows, the
application combines the candidates into a composite value that starts (or feeds) the
ballot protocol.

Rounds.  Round n lasts `nomination_timeout_ms(n)` (draft: 1 + n seconds); when it
expires without a candidate, round n + 1 starts.  Nomination stops once a ballot is
confirmed prepared (the ballot's value supersedes nomination) or the slot externalizes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from fractions import Fraction
from typing import Final

from synod.crypto import sha256
from synod.quorum.qset import QuorumSet, all_validators
from synod.scp.application import Validity
from synod.scp.messages import MAX_NOMINATION_VALUES, Nomination, Statement
from synod.scp.slot_view import NominationSlot
from synod.scp.statements import is_newer_nomination, is_nomination_sane
from synod.scp.voting import accepts_with, is_quorum_threshold_set

_NEIGHBOUR_TAG: Final = 1
_PRIORITY_TAG: Final = 2
_VALUE_TAG: Final = 3
_FULL_RANGE: Final = 2**256
_ED25519_KEY_TYPE: Final = b"\x00\x00\x00\x00"


def slot_hash(slot_index: int, *parts: bytes) -> int:
    """Gi(parts) = SHA-256(xdr uint64 i || parts) as a big-endian 256-bit number."""
    digest = sha256(struct.pack(">Q", slot_index) + b"".join(parts))
    return int.from_bytes(digest, "big")


def _round_bytes(tag: int, round_number: int) -> bytes:
    return struct.pack(">iI", tag, round_number)


def _node_xdr(node: bytes) -> bytes:
    return _ED25519_KEY_TYPE + node


def node_weight(node: bytes, qset: QuorumSet) -> Fraction:
    """Fraction of `qset`'s slices that contain `node` (0 when it is not in the set)."""
    entries = qset.entry_count
    if entries == 0:
        return Fraction(0)
    level = Fraction(qset.threshold, entries)
    if node in qset.validators:
        return level
    for inner in qset.inner_sets:
        inner_weight = node_weight(node, inner)
        if inner_weight:
            return level * inner_weight
    return Fraction(0)


def is_neighbour(
    slot_index: int, round_number: int, node: bytes, local_node: bytes, qset: QuorumSet
) -> bool:
    """Draft: Gi(1 || n || v) < 2^256 * weight(v); a node is always its own neighbour."""
    if node == local_node:
        return True
    weight = node_weight(node, qset)
    if weight == 0:
        return False
    hashed = slot_hash(slot_index, _round_bytes(_NEIGHBOUR_TAG, round_number), _node_xdr(node))
    return hashed * weight.denominator < _FULL_RANGE * weight.numerator


def priority(slot_index: int, round_number: int, node: bytes) -> int:
    """Draft: priority(n, v) = Gi(2 || n || v)."""
    return slot_hash(slot_index, _round_bytes(_PRIORITY_TAG, round_number), _node_xdr(node))


def round_leader(slot_index: int, round_number: int, local_node: bytes, qset: QuorumSet) -> bytes:
    """The neighbour with the highest priority in round `round_number`."""
    nodes = {local_node, *all_validators(qset)}
    neighbours = [
        node for node in nodes if is_neighbour(slot_index, round_number, node, local_node, qset)
    ]
    return max(neighbours, key=lambda node: priority(slot_index, round_number, node))


def value_hash(slot_index: int, round_number: int, value: bytes) -> int:
    """Gi(3 || n || value): the order in which a leader's values are echoed."""
    return slot_hash(slot_index, _round_bytes(_VALUE_TAG, round_number), value)


class NominationProtocol:
    """Nomination state of one slot (see the module docstring)."""

    def __init__(self, slot: NominationSlot) -> None:
        self.slot = slot
        self.round_number = 0
        self.started = False
        self.stopped = False
        self.own_value: bytes | None = None
        self.votes: set[bytes] = set()
        self.accepted: set[bytes] = set()
        self.candidates: set[bytes] = set()
        self.round_leaders: set[bytes] = set()
        self.latest: dict[bytes, Statement] = {}
        self.node_qsets: dict[bytes, QuorumSet | None] = {}
        self._voters: dict[bytes, set[bytes]] = {}
        """Per value, the nodes whose latest nomination votes for or accepts it."""
        self._acceptors: dict[bytes, set[bytes]] = {}
        """Per value, the nodes whose latest nomination accepts it."""
        self.latest_composite: bytes | None = None
        self.last_statement: Statement | None = None

    # ------------------------------------------------------------ input

    def process(self, statement: Statement, *, from_self: bool = False) -> str | None:
        """Record a nomination and run the voting rules; returns a rejection or None."""
        nomination = statement.pledges
        assert isinstance(nomination, Nomination)
        if not is_nomination_sane(nomination):
            return "insane_statement"
        previous = self.latest.get(statement.node_id)
        if previous is not None:
            assert isinstance(previous.pledges, Nomination)
            if not is_newer_nomination(previous.pledges, nomination):
                return "stale_statement"
        self._record(statement)
        if self.started and not self.stopped:
            self._run_voting_rules(statement.node_id, nomination)
        return None

    def nominate(self, value: bytes | None, *, timed_out: bool) -> bool:
        """Start nomination (or, on a timeout, the next round) with `value` as ours."""
        if self.candidates or self.stopped:
            return False
        if timed_out and not self.started:
            return False
        if value is not None:
            self.own_value = value
        if self.started and not timed_out:
            # a new value mid-nomination: vote for it only where we lead
            adopted = self._adopt_own_value_if_leader()
            if adopted:
                self._emit()
            return adopted
        self.started = True
        self.round_number += 1
        self._update_round_leaders()
        updated = self._adopt_own_value_if_leader()
        for leader in sorted(self.round_leaders):
            updated = self._echo_leader(leader) or updated
        self.slot.set_nomination_timer(
            self.slot.application.nomination_timeout_ms(self.round_number)
        )
        if updated:
            self._emit()
        if timed_out:
            # values judged not yet valid earlier may be valid now (verdicts other than
            # FULLY_VALID are asked again): look at what peers said once more
            updated = self._accept_recorded_values() or updated
        return updated

    def stop(self) -> None:
        """Nomination is over for this slot (ballot confirmed prepared or externalized)."""
        if not self.stopped:
            self.stopped = True
            self.slot.cancel_nomination_timer()

    def restore(self, statement: Statement) -> None:
        """Adopt our own persisted nomination (restart): votes never shrink."""
        nomination = statement.pledges
        assert isinstance(nomination, Nomination)
        self.votes = set(nomination.votes)
        self.accepted = set(nomination.accepted)
        self._record(statement)
        self.last_statement = statement
        self.started = True

    def _record(self, statement: Statement) -> None:
        node = statement.node_id
        previous = self.latest.get(node)
        if previous is not None:
            previous_nomination = _nomination(previous)
            _unindex(self._voters, node, previous_nomination.votes)
            _unindex(self._voters, node, previous_nomination.accepted)
            _unindex(self._acceptors, node, previous_nomination.accepted)
        nomination = _nomination(statement)
        _index(self._voters, node, nomination.votes)
        _index(self._voters, node, nomination.accepted)
        _index(self._acceptors, node, nomination.accepted)
        self.latest[node] = statement
        self.node_qsets[node] = self.slot.qset_of(statement)

    # ------------------------------------------------------------ rules

    def _run_voting_rules(self, sender: bytes, nomination: Nomination) -> None:
        modified = self._accept_values(nomination)
        new_candidates = self._confirm_values()
        if not self.candidates and sender in self.round_leaders:
            modified = self._echo_leader(sender) or modified
        if modified:
            self._emit()
        if new_candidates:
            self._bump_composite()

    def _bump_composite(self) -> None:
        composite = self.slot.application.combine_candidates(
            self.slot.slot_index, sorted(self.candidates)
        )
        self.latest_composite = composite
        self.slot.bump_state(composite, force=False)

    def _accept_recorded_values(self) -> bool:
        """Run the accept and confirm rules over every recorded nomination; a grown
        candidate set starts (or feeds) the ballot protocol."""
        modified = False
        for node in sorted(self.latest):
            if node != self.slot.node_id:
                modified = self._accept_values(_nomination(self.latest[node])) or modified
        if modified:
            self._emit()
        if self._confirm_values():
            self._bump_composite()
        return modified

    def _accept_values(self, nomination: Nomination) -> bool:
        modified = False
        for value in dict.fromkeys(nomination.votes + nomination.accepted):
            if value in self.accepted:
                continue
            if not accepts_with(
                self.slot.local_qset,
                self.node_qsets.get,
                self._acceptors.get(value, _NOBODY),
                self._voters.get(value, _NOBODY),
            ):
                continue
            if self.slot.validate(value, nomination=True) == Validity.FULLY_VALID:
                if self._has_room_for(value):
                    self.accepted.add(value)
                    self.votes.add(value)
                    modified = True
            else:
                extracted = self.slot.application.extract_valid_value(self.slot.slot_index, value)
                modified = self._add_vote(extracted) or modified
        return modified

    def _confirm_values(self) -> bool:
        grew = False
        for value in sorted(self.accepted - self.candidates):
            if is_quorum_threshold_set(
                self.slot.local_qset, self.node_qsets.get, self._acceptors.get(value, _NOBODY)
            ):
                self.candidates.add(value)
                grew = True
        return grew

    def _adopt_own_value_if_leader(self) -> bool:
        if self.slot.node_id not in self.round_leaders or self.own_value is None:
            return False
        if self.candidates:
            return False
        if self.slot.validate(self.own_value, nomination=True) != Validity.FULLY_VALID:
            return self._add_vote(
                self.slot.application.extract_valid_value(self.slot.slot_index, self.own_value)
            )
        return self._add_vote(self.own_value)

    def _echo_leader(self, leader: bytes) -> bool:
        statement = self.latest.get(leader)
        if statement is None or leader == self.slot.node_id:
            return False
        nomination = statement.pledges
        assert isinstance(nomination, Nomination)
        chosen = self._pick_value(nomination.accepted)
        if chosen is None:
            chosen = self._pick_value(nomination.votes)
        return self._add_vote(chosen)

    def _pick_value(self, values: Iterable[bytes]) -> bytes | None:
        best: bytes | None = None
        best_hash = -1
        for value in values:
            candidate: bytes | None = value
            if self.slot.validate(value, nomination=True) != Validity.FULLY_VALID:
                candidate = self.slot.application.extract_valid_value(self.slot.slot_index, value)
            if candidate is None or candidate in self.votes:
                continue
            hashed = self._value_order(candidate)
            if hashed > best_hash:
                best, best_hash = candidate, hashed
        return best

    def _update_round_leaders(self) -> None:
        rule = self.slot.leader_rule
        if rule is None:
            self.round_leaders.add(
                round_leader(
                    self.slot.slot_index, self.round_number, self.slot.node_id, self.slot.local_qset
                )
            )
            return
        self.round_number, leaders = rule.round_leaders(
            self.slot.slot_index,
            self.round_number,
            self.slot.previous_value(),
            local_node=self.slot.node_id,
            qset=self.slot.local_qset,
            known_leaders=frozenset(self.round_leaders),
        )
        self.round_leaders |= leaders

    def _value_order(self, value: bytes) -> int:
        rule = self.slot.leader_rule
        if rule is None:
            return value_hash(self.slot.slot_index, self.round_number, value)
        return rule.value_order(
            self.slot.slot_index, self.round_number, self.slot.previous_value(), value
        )

    def _add_vote(self, value: bytes | None) -> bool:
        if value is None or value in self.votes or not self._has_room_for(value):
            return False
        self.votes.add(value)
        return True

    def _has_room_for(self, value: bytes) -> bool:
        return value in self.votes or len(self.votes) < MAX_NOMINATION_VALUES

    def _emit(self) -> None:
        if not self.votes and not self.accepted:
            return
        nomination = Nomination(
            quorum_set_hash=self.slot.local_qset_hash,
            votes=tuple(sorted(self.votes)),
            accepted=tuple(sorted(self.accepted)),
        )
        statement = Statement(self.slot.node_id, self.slot.slot_index, nomination)
        previous = self.latest.get(self.slot.node_id)
        if previous is not None and previous == statement:
            return
        reason = self.process(statement, from_self=True)
        assert reason is None, f"own nomination rejected: {reason}"
        if self.last_statement is None or is_newer_nomination(
            _nomination(self.last_statement), nomination
        ):
            self.last_statement = statement


def _nomination(statement: Statement) -> Nomination:
    assert isinstance(statement.pledges, Nomination)
    return statement.pledges


_NOBODY: Final[frozenset[bytes]] = frozenset()


def _index(nodes_by_value: dict[bytes, set[bytes]], node: bytes, values: Iterable[bytes]) -> None:
    """Note that `node`'s latest nomination names each of `values`."""
    for value in values:
        nodes_by_value.setdefault(value, set()).add(node)


def _unindex(nodes_by_value: dict[bytes, set[bytes]], node: bytes, values: Iterable[bytes]) -> None:
    """Forget `node` under each of `values` (its nomination was replaced)."""
    for value in values:
        nodes = nodes_by_value.get(value)
        if nodes is not None:
            nodes.discard(node)
            if not nodes:
                del nodes_by_value[value]
