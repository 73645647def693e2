"""What a node serves on the Stellar overlay: its recent SCP envelopes and quorum sets.

Theory of operation (stellar-core ``Herder::sendSCPStateToPeer``, ``Peer::recvGetSCPQuorumSet``):
a peer that connects asks GET_SCP_STATE(ledger) and receives, as SCP_MESSAGEs, the latest
envelope of every node this node has heard from for each slot from that ledger on (0:
every slot kept); it then asks GET_SCP_QUORUMSET for each quorum-set hash those envelopes
name and receives SCP_QUORUMSET, or DONT_HAVE when the hash is unknown.  GET_TX_SET is
answered DONT_HAVE: synod's values name transaction sets it does not hold.

Bounds, counted in what they protect: `max_slots` recent slots (stellar-core keeps 12),
one envelope per node per slot, at most `max_nodes_per_slot` nodes per slot, and
`max_quorum_sets` quorum sets (the node's own and those its envelopes name).  Only the
node itself adds to the store, so these bound its memory, and an answer to GET_SCP_STATE
is at most ``max_slots * max_nodes_per_slot`` envelopes (the connection's outbound queue
then bounds it in bytes).

`stellar_value` builds the ``StellarValue`` a synod node votes for in Stellar mode: a
transaction-set hash, a close time and no upgrades (``STELLAR_VALUE_BASIC``).
"""

from __future__ import annotations

from typing import Final

from stellar_sdk import xdr

from synod.crypto import KeyPair, sha256
from synod.quorum.qset import QuorumSet
from synod.scp.messages import Envelope, Nomination, Statement
from synod.scp.stellar import (
    StellarNetwork,
    envelope_to_xdr_object,
    qset_to_xdr_object,
    stellar_qset_hash,
)

MessageType = xdr.MessageType
EMPTY_TX_SET_HASH: Final = sha256(b"")
"""The hash a value names when its transaction set is empty (no set is held)."""


def stellar_value(close_time_s: int, tx_set_hash: bytes = EMPTY_TX_SET_HASH) -> bytes:
    """The XDR of a basic ``StellarValue``: transaction-set hash, close time, no upgrades."""
    value = xdr.StellarValue(
        tx_set_hash=xdr.Hash(tx_set_hash),
        close_time=xdr.TimePoint(xdr.Uint64(close_time_s)),
        upgrades=[],
        ext=xdr.StellarValueExt(xdr.StellarValueType.STELLAR_VALUE_BASIC),
    )
    return bytes(value.to_xdr_bytes())


class ScpStateStore:
    """Recent envelopes by slot and node, and quorum sets by Stellar hash (module doc)."""

    def __init__(
        self, *, max_slots: int = 12, max_nodes_per_slot: int = 1000, max_quorum_sets: int = 1000
    ) -> None:
        if min(max_slots, max_nodes_per_slot, max_quorum_sets) < 1:
            raise ValueError("store bounds must be positive")
        self.max_slots = max_slots
        self.max_nodes_per_slot = max_nodes_per_slot
        self.max_quorum_sets = max_quorum_sets
        self._slots: dict[int, dict[bytes, xdr.StellarMessage]] = {}
        self._quorum_sets: dict[bytes, xdr.StellarMessage] = {}

    def add_envelope(self, envelope: Envelope) -> bool:
        """Keep `envelope` as its node's latest for its slot; False when out of bounds."""
        slot = envelope.statement.slot_index
        if slot not in self._slots:
            if len(self._slots) >= self.max_slots:
                oldest = min(self._slots)
                if slot < oldest:
                    return False
                del self._slots[oldest]
            self._slots[slot] = {}
        by_node = self._slots[slot]
        node = bytes(envelope.statement.node_id)
        if node not in by_node and len(by_node) >= self.max_nodes_per_slot:
            return False
        by_node[node] = xdr.StellarMessage(
            MessageType.SCP_MESSAGE, envelope=envelope_to_xdr_object(envelope)
        )
        return True

    def add_quorum_set(self, qset: QuorumSet) -> bytes:
        """Serve `qset` by its Stellar hash, which is returned."""
        qset_xdr = qset_to_xdr_object(qset)
        digest = sha256(bytes(qset_xdr.to_xdr_bytes()))
        if digest not in self._quorum_sets and len(self._quorum_sets) >= self.max_quorum_sets:
            raise ValueError(f"more than {self.max_quorum_sets} quorum sets")
        self._quorum_sets[digest] = xdr.StellarMessage(MessageType.SCP_QUORUMSET, q_set=qset_xdr)
        return digest

    def nominate(
        self, keys: KeyPair, network: StellarNetwork, qset: QuorumSet, slot: int, value: bytes
    ) -> Envelope:
        """Sign and keep this node's NOMINATE of `value` for `slot`, naming `qset`.

        A vote to nominate is a statement one node may make alone; it is what a node that
        has not yet heard from its quorum serves to those who ask for its state.
        """
        self.add_quorum_set(qset)
        statement = Statement(
            node_id=keys.node_id,
            slot_index=slot,
            pledges=Nomination(
                quorum_set_hash=stellar_qset_hash(qset), votes=(value,), accepted=()
            ),
        )
        envelope = network.sign_statement(keys, statement)
        self.add_envelope(envelope)
        return envelope

    def envelopes_from(self, from_slot: int) -> list[xdr.StellarMessage]:
        """SCP_MESSAGEs for every kept slot at or after `from_slot`, oldest slot first."""
        return [
            message
            for slot in sorted(self._slots)
            if slot >= from_slot
            for _node, message in sorted(self._slots[slot].items())
        ]

    def answer(self, message: xdr.StellarMessage) -> list[xdr.StellarMessage]:
        """The messages that answer a peer's request (none for what is not a request)."""
        if message.type == MessageType.GET_SCP_STATE and message.get_scp_ledger_seq is not None:
            return self.envelopes_from(message.get_scp_ledger_seq.uint32)
        if message.type == MessageType.GET_SCP_QUORUMSET and message.q_set_hash is not None:
            digest = bytes(message.q_set_hash.uint256)
            found = self._quorum_sets.get(digest)
            if found is not None:
                return [found]
            return [_dont_have(MessageType.SCP_QUORUMSET, digest)]
        if message.type == MessageType.GET_TX_SET and message.tx_set_hash is not None:
            return [_dont_have(MessageType.TX_SET, bytes(message.tx_set_hash.uint256))]
        return []


def _dont_have(kind: xdr.MessageType, digest: bytes) -> xdr.StellarMessage:
    return xdr.StellarMessage(
        MessageType.DONT_HAVE, dont_have=xdr.DontHave(kind, xdr.Uint256(digest))
    )
