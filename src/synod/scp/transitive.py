"""Whose statements a node admits: its transitive quorum.

Theory of operation.  A node's quorums are built only from the nodes its own quorum set
names and, transitively, the nodes their quorum sets name (SCP paper section 3: a quorum
contains a slice of each of its members).  A statement from any other node can never
count towards anything the node accepts or confirms, so it is dropped before its
signature is checked, and made-up node ids cannot fill the per-slot node table
(stellar-core drops envelopes from nodes outside its transitive quorum for the same
reason).

The set starts as the local node and every validator of its quorum set.  When a member
declares a quorum set (the hash a statement of it carries, once that set is known), the
validators it names join, nearest first.  The set only grows, and holds at most
`max_nodes` nodes: the local quorum set's validators always (they are added first), and
beyond them whoever was declared first, at most `max_introduced` by any one member (so
a member that names made-up ids in its quorum set cannot take every place, and the
memory its ids can claim is bounded by the member, not by the set).  A member that
declares a new quorum set costs one walk over that set (at most 1000 entries, the
sanity bound), and declaring the same hash again costs nothing.
"""

from __future__ import annotations

from synod.crypto import NodeId
from synod.quorum.qset import QuorumSet, all_validators


class TransitiveQuorum:
    """The nodes whose statements the local node admits (see the module docstring)."""

    def __init__(
        self, local_node: NodeId, local_qset: QuorumSet, max_nodes: int, max_introduced: int = 64
    ) -> None:
        self._max_nodes = max_nodes
        self._max_introduced = max_introduced
        self._members: dict[bytes, None] = {local_node: None}
        self._declared: dict[bytes, bytes] = {}
        self._introduced: dict[bytes, int] = {}
        """How many members each member's declarations brought in."""
        self.introducer: dict[bytes, bytes] = {}
        """The member whose declaration brought each node in (none for the local
        quorum set's validators): what the node's statements are charged to."""
        for validator in all_validators(local_qset):
            self._members[validator] = None

    def __contains__(self, node: object) -> bool:
        return node in self._members

    def __len__(self) -> int:
        return len(self._members)

    @property
    def full(self) -> bool:
        """No further node can join."""
        return len(self._members) >= self._max_nodes

    def declare(self, node: bytes, qset_hash: bytes, qset: QuorumSet) -> int:
        """`node` (a member) declares `qset`: its validators join while there is room.
        Returns how many joined; a non-member's declaration is ignored."""
        if node not in self._members or self._declared.get(node) == qset_hash:
            return 0
        self._declared[node] = qset_hash
        introduced = self._introduced.get(node, 0)
        joined = 0
        for validator in all_validators(qset):
            if validator in self._members:
                continue
            if self.full or introduced + joined >= self._max_introduced:
                break
            self._members[validator] = None
            self.introducer[validator] = node
            joined += 1
        self._introduced[node] = introduced + joined
        return joined
