"""Round leaders as stellar-core chooses them (`ScpConfig(leader_rule="stellar")`).

Theory of operation.  stellar-core (`NominationProtocol::updateRoundLeaders`,
`getNodePriority`; `HerderSCPDriver::computeHashNode`, `computeValueHash`;
`LocalNode::getNodeWeight`; `normalizeQSet`) departs from the draft's formulas
(`synod.scp.nomination`) in five ways, all reproduced here:

* the hashes cover the *previous value* (what slot i - 1 externalized), so the
  leader schedule of a slot cannot be computed before the slot before it is decided:
  H(i, prev, extra) = the first 8 bytes, big-endian, of
  SHA-256(xdr uint64 i || xdr opaque prev || extra), a 64-bit number;
* neighbour and priority: with N = 1 and P = 2 (XDR uint32) and n the round (XDR
  int32), a node v with weight w(v) > 0 is a neighbour when
  H(i, prev, N || n || v) <= w(v), and its priority is H(i, prev, P || n || v)
  (0 when it is not a neighbour); the local node's weight is 2^64 - 1;
* weights are fractions of 2^64 - 1, rounded down at each level (k/m of the weight
  of the inner set holding the node), computed on the local quorum set *normalised
  without the local node* (removed at every level, each threshold lowered by one per
  removal, singleton inner sets merged into their parent, a lone inner set hoisted);
* ties: every node of the highest priority leads (the local node leads the round when
  nobody beats its own priority);
* rounds that add no new leader are skipped at once (the round number moves on until
  one does, or every node already leads);
* a value is echoed in the order of H(i, prev, K || n || XDR opaque value), K = 3.

Applications that want another rule implement `LeaderRule` and hand it to
`ScpConfig(leader_rule=...)`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final, Protocol

from synod.crypto import sha256
from synod.quorum.qset import QuorumSet

MAX_WEIGHT: Final = 2**64 - 1
_HASH_N: Final = 1
_HASH_P: Final = 2
_HASH_K: Final = 3
_ED25519_KEY_TYPE: Final = b"\x00\x00\x00\x00"


class LeaderRule(Protocol):
    """How nomination picks a round's leaders and orders a leader's values."""

    def round_leaders(
        self,
        slot_index: int,
        round_number: int,
        previous_value: bytes,
        *,
        local_node: bytes,
        qset: QuorumSet,
        known_leaders: frozenset[bytes],
    ) -> tuple[int, set[bytes]]:
        """The round actually run (a rule may skip rounds) and its leaders."""
        ...

    def value_order(
        self, slot_index: int, round_number: int, previous_value: bytes, value: bytes
    ) -> int:
        """A leader's value with the highest number is echoed first."""
        ...


def xdr_opaque(data: bytes) -> bytes:
    """XDR variable-length opaque: 4-byte length, the bytes, zero padding to 4."""
    return struct.pack(">I", len(data)) + data + b"\x00" * (-len(data) % 4)


def stellar_hash(slot_index: int, previous_value: bytes, extra: bytes) -> int:
    """stellar-core's `hashHelper`: 64 bits of SHA-256(uint64 i || opaque prev || extra)."""
    digest = sha256(struct.pack(">Q", slot_index) + xdr_opaque(previous_value) + extra)
    return int.from_bytes(digest[:8], "big")


def hash_node(
    slot_index: int, previous_value: bytes, priority: bool, round_number: int, node: bytes
) -> int:
    """`computeHashNode`: N (neighbour) or P (priority) hash of `node` in a round."""
    tag = _HASH_P if priority else _HASH_N
    extra = struct.pack(">Ii", tag, round_number) + _ED25519_KEY_TYPE + node
    return stellar_hash(slot_index, previous_value, extra)


def hash_value(slot_index: int, previous_value: bytes, round_number: int, value: bytes) -> int:
    """`computeValueHash`: the order in which a leader's values are echoed."""
    extra = struct.pack(">Ii", _HASH_K, round_number) + xdr_opaque(value)
    return stellar_hash(slot_index, previous_value, extra)


def node_weight(node: bytes, qset: QuorumSet) -> int:
    """`LocalNode::getNodeWeight`: (2^64 - 1) * k/m per level, rounded down each time."""
    entries = len(qset.validators) + len(qset.inner_sets)
    if node in qset.validators:
        return MAX_WEIGHT * qset.threshold // entries
    for inner in qset.inner_sets:
        inner_weight = node_weight(node, inner)
        if inner_weight:
            return inner_weight * qset.threshold // entries
    return 0


def normalized_without(qset: QuorumSet, node: bytes) -> QuorumSet:
    """`normalizeQSet(qset, &node)`: `node` removed at every level (each removal lowers
    that level's threshold), singleton inner sets merged into their parent, and a lone
    inner set under threshold 1 hoisted.  (stellar-core also sorts; order does not
    change weights.)"""
    validators = [validator for validator in qset.validators if validator != node]
    threshold = qset.threshold - (len(qset.validators) - len(validators))
    inner_sets: list[QuorumSet] = []
    for inner in qset.inner_sets:
        simplified = normalized_without(inner, node)
        if (
            simplified.threshold == 1
            and len(simplified.validators) == 1
            and not simplified.inner_sets
        ):
            validators.append(simplified.validators[0])
        else:
            inner_sets.append(simplified)
    if threshold == 1 and not validators and len(inner_sets) == 1:
        return inner_sets[0]
    return QuorumSet(
        threshold=threshold, validators=tuple(validators), inner_sets=tuple(inner_sets)
    )


def _all_nodes(qset: QuorumSet) -> Iterator[bytes]:
    yield from qset.validators
    for inner in qset.inner_sets:
        yield from _all_nodes(inner)


def node_priority(
    slot_index: int,
    round_number: int,
    previous_value: bytes,
    node: bytes,
    *,
    local_node: bytes,
    qset: QuorumSet,
) -> int:
    """`getNodePriority`: the priority hash when `node` is a neighbour, else 0."""
    weight = MAX_WEIGHT if node == local_node else node_weight(node, qset)
    neighbour = hash_node(slot_index, previous_value, False, round_number, node)
    if weight > 0 and neighbour <= weight:
        return hash_node(slot_index, previous_value, True, round_number, node)
    return 0


class StellarLeaders:
    """stellar-core's leader rule (see the module docstring)."""

    def round_leaders(
        self,
        slot_index: int,
        round_number: int,
        previous_value: bytes,
        *,
        local_node: bytes,
        qset: QuorumSet,
        known_leaders: frozenset[bytes],
    ) -> tuple[int, set[bytes]]:
        normalized = normalized_without(qset, local_node)
        nodes = sorted(set(_all_nodes(normalized)))
        most_leaders = 1 + len(nodes)
        leaders: set[bytes] = set()
        while True:
            leaders = self._leaders_of(
                (slot_index, round_number, previous_value), local_node, normalized, nodes
            )
            if not leaders <= known_leaders or len(known_leaders) >= most_leaders:
                return round_number, leaders
            round_number += 1  # no new leader: stellar-core skips the round at once

    @staticmethod
    def _leaders_of(
        round_key: tuple[int, int, bytes],
        local_node: bytes,
        normalized: QuorumSet,
        nodes: list[bytes],
    ) -> set[bytes]:
        """The round's leaders: the local node unless beaten, every node tied at the top."""
        leaders = {local_node}
        top = node_priority(*round_key, local_node, local_node=local_node, qset=normalized)
        for node in nodes:
            found = node_priority(*round_key, node, local_node=local_node, qset=normalized)
            if found > top:
                top = found
                leaders = set()
            if found == top and found > 0:
                leaders.add(node)
        return leaders

    def value_order(
        self, slot_index: int, round_number: int, previous_value: bytes, value: bytes
    ) -> int:
        return hash_value(slot_index, previous_value, round_number, value)
