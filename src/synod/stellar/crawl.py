"""What a crawl of the Stellar overlay learns, and the stellarbeat JSON it writes.

Theory of operation (the crawl stellarbeat's crawler performs): connect to each known
address, complete the handshake (which proves the node id), ask GET_SCP_STATE(0), and
read what comes back: PEERS (addresses to visit next), SCP_MESSAGEs (each names the
quorum-set hash of the node that signed it) and, for every hash not yet known, the answer
to GET_SCP_QUORUMSET.  A node's quorum set is the set whose XDR hashes to the hash in that
node's latest envelope.

Nothing a peer says is believed without proof: an envelope counts only when its Stellar
signature verifies for this network (a relayed envelope proves its signer's quorum-set
hash wherever it came from); a quorum set is kept only when some verified envelope asked
for its hash, so a peer cannot fill the crawler with sets nobody uses.  Bounds:
`max_nodes` nodes, `max_addresses` addresses, one quorum set per wanted hash.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Final

from stellar_sdk import xdr

from synod.crypto import NodeId, sha256
from synod.quorum.qset import QuorumSet
from synod.scp.messages import Confirm, Externalize, Nomination, Prepare, Statement
from synod.scp.stellar import (
    StellarFormatError,
    StellarNetwork,
    envelope_from_xdr_object,
    node_id_to_strkey,
    qset_from_xdr_object,
)

MessageType = xdr.MessageType
_IPV4_BYTES: Final = 4


def statement_qset_hash(statement: Statement) -> bytes:
    """The quorum-set hash a statement carries (EXTERNALIZE: the commit's)."""
    pledges = statement.pledges
    if isinstance(pledges, Externalize):
        return bytes(pledges.commit_quorum_set_hash)
    assert isinstance(pledges, Nomination | Prepare | Confirm)
    return bytes(pledges.quorum_set_hash)


@dataclass(slots=True)
class CrawledNode:
    """What the crawl knows of one node."""

    node_id: NodeId
    address: str | None = None
    version_str: str | None = None
    overlay_version: int | None = None
    ledger_version: int | None = None
    connected: bool = False
    latest_slot: int = -1
    quorum_set_hash: bytes | None = None


@dataclass(slots=True)
class Crawl:
    """The crawl's knowledge: nodes, quorum sets and addresses (module docstring)."""

    network: StellarNetwork
    max_nodes: int = 5000
    max_addresses: int = 20000
    nodes: dict[bytes, CrawledNode] = field(default_factory=dict)
    quorum_sets: dict[bytes, QuorumSet] = field(default_factory=dict)
    addresses: list[str] = field(default_factory=list)
    rejected_envelopes: int = 0
    unsolicited_quorum_sets: int = 0
    _known_addresses: set[str] = field(default_factory=set)

    def add_address(self, address: str) -> bool:
        """Remember an address to visit; False when known or beyond the bound."""
        if address in self._known_addresses or len(self.addresses) >= self.max_addresses:
            return False
        self._known_addresses.add(address)
        self.addresses.append(address)
        return True

    def node(self, node_id: bytes) -> CrawledNode | None:
        """The record of `node_id`, created when there is room."""
        found = self.nodes.get(node_id)
        if found is None and len(self.nodes) < self.max_nodes:
            found = self.nodes[node_id] = CrawledNode(NodeId(node_id))
        return found

    def connected(self, address: str, node_id: bytes, hello: xdr.Hello) -> None:
        """The handshake with `address` proved it is `node_id`."""
        record = self.node(node_id)
        if record is None:
            return
        record.address = address
        record.connected = True
        record.version_str = bytes(hello.version_str).decode("utf-8", "replace")
        record.overlay_version = hello.overlay_version.uint32
        record.ledger_version = hello.ledger_version.uint32

    def wanted_hashes(self) -> set[bytes]:
        """Quorum-set hashes some node names and the crawl does not hold yet."""
        return {
            record.quorum_set_hash
            for record in self.nodes.values()
            if record.quorum_set_hash is not None
            and record.quorum_set_hash not in self.quorum_sets
        }

    def on_message(
        self, message: xdr.StellarMessage, asked: set[bytes]
    ) -> list[xdr.StellarMessage]:
        """Learn from one message; returns the requests to send back on its connection.

        `asked` holds the quorum-set hashes already requested on that connection (it is
        updated), so each connection asks for each hash at most once.
        """
        if message.type == MessageType.SCP_MESSAGE and message.envelope is not None:
            return self._on_envelope(message.envelope, asked)
        if message.type == MessageType.SCP_QUORUMSET and message.q_set is not None:
            self._on_quorum_set(message.q_set)
        elif message.type == MessageType.PEERS and message.peers is not None:
            for peer in message.peers:
                address = _peer_address(peer)
                if address is not None:
                    self.add_address(address)
        return []

    def _on_envelope(
        self, envelope_xdr: xdr.SCPEnvelope, asked: set[bytes]
    ) -> list[xdr.StellarMessage]:
        try:
            envelope = envelope_from_xdr_object(envelope_xdr)
        except StellarFormatError:
            self.rejected_envelopes += 1
            return []
        if not self.network.verify_envelope(envelope):
            self.rejected_envelopes += 1
            return []
        statement = envelope.statement
        record = self.node(statement.node_id)
        if record is None or statement.slot_index < record.latest_slot:
            return []
        digest = statement_qset_hash(statement)
        record.latest_slot = statement.slot_index
        record.quorum_set_hash = digest
        if digest in self.quorum_sets or digest in asked:
            return []
        asked.add(digest)
        return [xdr.StellarMessage(MessageType.GET_SCP_QUORUMSET, q_set_hash=xdr.Uint256(digest))]

    def _on_quorum_set(self, qset_xdr: xdr.SCPQuorumSet) -> None:
        digest = sha256(bytes(qset_xdr.to_xdr_bytes()))
        if digest not in self.wanted_hashes():
            self.unsolicited_quorum_sets += 1
            return
        try:
            self.quorum_sets[digest] = qset_from_xdr_object(qset_xdr)
        except StellarFormatError:
            self.unsolicited_quorum_sets += 1

    def quorum_set_of(self, node_id: bytes) -> QuorumSet | None:
        """The quorum set `node_id` declared in its latest verified envelope, if held."""
        record = self.nodes.get(node_id)
        if record is None or record.quorum_set_hash is None:
            return None
        return self.quorum_sets.get(record.quorum_set_hash)

    def to_stellarbeat(self) -> list[dict[str, Any]]:
        """The nodes as stellarbeat JSON records (what every `synod fbas` command reads)."""
        return [self._record(node_id) for node_id in sorted(self.nodes)]

    def _record(self, node_id: bytes) -> dict[str, Any]:
        record = self.nodes[node_id]
        qset = self.quorum_set_of(node_id)
        host, _, port = (record.address or "").rpartition(":")
        entry: dict[str, Any] = {
            "publicKey": node_id_to_strkey(node_id),
            "ip": host or None,
            "port": int(port) if port.isdigit() else None,
            "active": record.connected or record.latest_slot >= 0,
            "isValidating": record.latest_slot >= 0,
            "overlayVersion": record.overlay_version,
            "ledgerVersion": record.ledger_version,
            "versionStr": record.version_str,
            "quorumSetHashKey": (
                base64.b64encode(record.quorum_set_hash).decode()
                if record.quorum_set_hash is not None
                else None
            ),
            "quorumSet": _stellarbeat_qset(qset) if qset is not None else None,
        }
        return entry


def _stellarbeat_qset(qset: QuorumSet) -> dict[str, Any]:
    return {
        "threshold": qset.threshold,
        "validators": [node_id_to_strkey(validator) for validator in qset.validators],
        "innerQuorumSets": [_stellarbeat_qset(inner) for inner in qset.inner_sets],
    }


def _peer_address(peer: xdr.PeerAddress) -> str | None:
    """``a.b.c.d:port`` of an IPv4 peer address (IPv6 is ignored, as stellar-core does)."""
    raw = peer.ip.ipv4
    port = peer.port.uint32
    if raw is None or len(raw) != _IPV4_BYTES or not 0 < port <= 65535:
        return None
    return f"{'.'.join(str(byte) for byte in raw)}:{port}"


def peer_address_xdr(host: str, port: int) -> xdr.PeerAddress:
    """The ``PeerAddress`` of an IPv4 host and port (for PEERS)."""
    parts = [int(part) for part in host.split(".")]
    if len(parts) != _IPV4_BYTES or not all(0 <= part <= 255 for part in parts):
        raise ValueError(f"{host!r} is not an IPv4 address")
    return xdr.PeerAddress(
        xdr.PeerAddressIp(xdr.IPAddrType.IPv4, ipv4=bytes(parts)), xdr.Uint32(port), xdr.Uint32(0)
    )
