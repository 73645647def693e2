"""One connection of the Stellar overlay as a sans-I/O state machine: bytes in, bytes out.

Theory of operation (stellar-core ``src/overlay``: ``Peer``, ``Hmac``, ``FlowControl``,
``FlowControlCapacity``, ``TCPPeer``; XDR ``Stellar-overlay.x``):

Handshake.  The side that dialed sends HELLO (versions, network id, listening port, its
node id, its auth certificate and a fresh nonce).  The side that accepted checks it and
answers with its own HELLO; the dialer checks that and sends AUTH; the acceptor answers
AUTH.  Once a side has received HELLO it knows both nonces and derives the two MAC keys
(`synod.stellar.auth`); from then on every message except ERROR_MSG carries the next
sequence number of its direction (from 0) and an HMAC-SHA256 over ``XDR(sequence) ||
XDR(message)``.  AUTH must carry the flag ``AUTH_MSG_FLAG_FLOW_CONTROL_BYTES_REQUESTED``
(200): stellar-core drops peers without byte flow control.

Checks on HELLO, cheap ones first: the network id (a wrong passphrase), the overlay
version ranges must overlap, the peer is not this node, a dialed peer is the node that
was expected (when the caller knows it), the listening port is a port, and last the
certificate: not expired and signed by the HELLO's node id for this network.

Flow control.  Flood messages (TRANSACTION, SCP_MESSAGE, FLOOD_ADVERT, FLOOD_DEMAND) may
be sent only within the capacity the receiver granted with SEND_MORE_EXTENDED: a number
of messages and a number of bytes (a message costs the size of its ``StellarMessage``
XDR).  After the handshake each side grants its whole reading capacity; each time it has
processed a batch it grants that batch again.  A flood message beyond the granted
capacity drops the connection (ERR_LOAD), as does a SEND_MORE_EXTENDED granting zero
bytes or a legacy SEND_MORE.  Outbound flood messages wait in a queue bounded in bytes
for capacity; when it overflows, the oldest are dropped (newer SCP state supersedes them).

Every violation (bad record, malformed XDR, wrong sequence, bad MAC, message before the
handshake, out-of-order HELLO or AUTH, flow-control breach) sends ERROR_MSG and then a
`Closed` output: the connection ends, the node carries on.  Nothing a peer sends raises.
Message types this node does not process are MAC-checked and counted, never decoded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from stellar_sdk import xdr
from stellar_sdk.xdr.constants import AUTH_MSG_FLAG_FLOW_CONTROL_BYTES_REQUESTED

from synod.crypto import NodeId, sha256
from synod.stellar.auth import (
    MAC_BYTES,
    NONCE_BYTES,
    HandshakeCryptoError,
    OverlayIdentity,
    cert_problem,
    mac_matches,
    message_mac,
    receiving_mac_key,
    sending_mac_key,
    shared_key,
)
from synod.stellar.framing import RecordDecoder, RecordError, encode_record

MessageType = xdr.MessageType
FLOOD_TYPES: Final = frozenset(
    int(kind.value)
    for kind in (
        MessageType.TRANSACTION,
        MessageType.SCP_MESSAGE,
        MessageType.FLOOD_ADVERT,
        MessageType.FLOOD_DEMAND,
    )
)
"""The message types that flow control meters (stellar-core ``isFloodMessage``)."""
DECODED_TYPES: Final = frozenset(
    int(kind.value)
    for kind in (
        MessageType.ERROR_MSG,
        MessageType.HELLO,
        MessageType.AUTH,
        MessageType.DONT_HAVE,
        MessageType.PEERS,
        MessageType.GET_TX_SET,
        MessageType.GET_SCP_QUORUMSET,
        MessageType.SCP_QUORUMSET,
        MessageType.SCP_MESSAGE,
        MessageType.GET_SCP_STATE,
        MessageType.SEND_MORE_EXTENDED,
    )
)
"""The types whose bodies this node reads; others are authenticated and counted only."""
MAX_ERROR_TEXT_BYTES: Final = 100
"""``Error.msg`` is ``string<100>``."""
_ENVELOPE_HEADER_BYTES: Final = 4 + 8
"""``AuthenticatedMessage``: the union arm (uint32 0) and the uint64 sequence."""
_MIN_BODY_BYTES: Final = _ENVELOPE_HEADER_BYTES + 4 + MAC_BYTES
_ZERO_MAC: Final = bytes(MAC_BYTES)
_GRANT_TYPES: Final = frozenset(
    (int(MessageType.SEND_MORE_EXTENDED.value), int(MessageType.SEND_MORE.value))
)
_MAX_UINT64: Final = 2**64 - 1


class Role(Enum):
    """Which side of the TCP connection this node is (stellar-core ``PeerRole``)."""

    WE_CALLED_REMOTE = "dialed"
    REMOTE_CALLED_US = "accepted"


class State(Enum):
    """Handshake progress (stellar-core ``PeerState``, without CONNECTING)."""

    CONNECTED = 1
    GOT_HELLO = 2
    GOT_AUTH = 3
    CLOSED = 4


class OverlayMisuse(RuntimeError):
    """The local caller used a connection wrongly (sending before the handshake...)."""


@dataclass(frozen=True, slots=True)
class OverlaySettings:
    """What one node says and accepts on the overlay (defaults: stellar-core's, see docs).

    `passphrase` picks the network (public, testnet or a private one).  The byte caps
    bound what one connection can make this node hold: `max_unauthenticated_bytes` for
    anyone who connects (stellar-core's 4096), `max_message_bytes` once authenticated.
    """

    passphrase: str
    ledger_version: int = 25
    overlay_version: int = 38
    overlay_min_version: int = 35
    version_str: str = "synod"
    listening_port: int = 11625
    max_unauthenticated_bytes: int = 4096
    max_message_bytes: int = 1024 * 1024
    flood_capacity_messages: int = 200
    flood_capacity_bytes: int = 300_000
    send_more_batch_messages: int = 40
    send_more_batch_bytes: int = 100_000
    max_outbound_queue_bytes: int = 2 * 1024 * 1024

    def __post_init__(self) -> None:
        if not 0 <= self.overlay_min_version <= self.overlay_version:
            raise ValueError("overlay_min_version must be at most overlay_version")
        if len(self.version_str.encode()) > 100:
            raise ValueError("version_str is at most 100 bytes")
        if not 0 < self.listening_port <= 65535:
            raise ValueError(f"listening_port {self.listening_port} is not a TCP port")
        if not 0 < self.send_more_batch_messages <= self.flood_capacity_messages:
            raise ValueError("the send-more batch must be positive and within the capacity")
        if not 0 < self.send_more_batch_bytes <= self.flood_capacity_bytes:
            raise ValueError("the send-more byte batch must be positive and within capacity")
        if self.max_unauthenticated_bytes < 1 or self.max_message_bytes < 1:
            raise ValueError("message caps must be positive")

    @property
    def network_id(self) -> bytes:
        """SHA-256 of the passphrase."""
        return sha256(self.passphrase.encode("utf-8"))


# Outputs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Write:
    """Bytes to write to the connection, in order."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The handshake completed: the remote is `peer_id`, with the HELLO it sent."""

    peer_id: NodeId
    hello: xdr.Hello


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """An authenticated message for the node to process."""

    message: xdr.StellarMessage


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is over: close the socket after writing what came before."""

    reason: str
    by_remote: bool = False


Output = Write | Authenticated | MessageReceived | Closed


@dataclass(slots=True)
class _FlowControl:
    """Capacities in messages and bytes: what we may still read, and still send."""

    read_messages: int
    read_bytes: int
    send_messages: int = 0
    send_bytes: int = 0
    processed_messages: int = 0
    processed_bytes: int = 0
    queue: deque[bytes] = field(default_factory=deque)
    queued_bytes: int = 0
    dropped_outbound: int = 0


class StellarPeer:
    """One overlay connection, from either side (see the module docstring)."""

    def __init__(
        self,
        identity: OverlayIdentity,
        settings: OverlaySettings,
        role: Role,
        nonce: bytes,
        *,
        expected_peer_id: bytes | None = None,
        accept: Callable[[int, bytes], bool] | None = None,
    ) -> None:
        """`accept(type, message_xdr)` says, before any decoding, whether the node wants a
        message of a decoded type (a quorum set it asked for...); others are counted in
        `ignored_messages`.  Decoding costs far more CPU per byte than a MAC check."""
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"a nonce is {NONCE_BYTES} random bytes, got {len(nonce)}")
        if identity.network_id != settings.network_id:
            raise ValueError("the identity was made for another network")
        self.identity = identity
        self.settings = settings
        self.role = role
        self.state = State.CONNECTED
        self.peer_id: NodeId | None = None
        self.remote_hello: xdr.Hello | None = None
        self.expected_peer_id = expected_peer_id
        self.accept = accept
        self.ignored_messages = 0
        self._local_nonce = bytes(nonce)
        self._decoder = RecordDecoder(settings.max_unauthenticated_bytes)
        self._send_key = b""
        self._receive_key = b""
        self._send_sequence = 0
        self._receive_sequence = 0
        # Nothing may be read until the first SEND_MORE_EXTENDED grants the capacity.
        self._flow = _FlowControl(read_messages=0, read_bytes=0)

    @property
    def we_called_remote(self) -> bool:
        """Whether this side dialed (it speaks first and derives K_AB to send)."""
        return self.role is Role.WE_CALLED_REMOTE

    @property
    def authenticated(self) -> bool:
        """Whether the handshake completed (application messages may flow)."""
        return self.state is State.GOT_AUTH

    @property
    def dropped_outbound(self) -> int:
        """Flood messages dropped from the outbound queue for lack of capacity."""
        return self._flow.dropped_outbound

    @property
    def queued_flood_bytes(self) -> int:
        """Bytes of flood messages waiting for the remote's capacity."""
        return self._flow.queued_bytes

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for a record not yet complete plus flood messages waiting to go."""
        return self._decoder.buffered_bytes + self._flow.queued_bytes

    # Inputs ---------------------------------------------------------------------------

    def start(self, now_s: int) -> list[Output]:
        """The connection is open: the dialer speaks first."""
        if self.state is not State.CONNECTED:
            raise OverlayMisuse("start() once, on a fresh connection")
        return [self._hello(now_s)] if self.we_called_remote else []

    def receive(self, data: bytes, now_s: int) -> list[Output]:
        """Bytes arrived from the remote; what to write and tell the node."""
        outputs: list[Output] = []
        chunk = data
        while self.state is not State.CLOSED:
            try:
                body = self._decoder.next_body(chunk)
            except RecordError as error:
                outputs += self._drop(xdr.ErrorCode.ERR_DATA, f"bad record: {error}")
                break
            chunk = b""
            if body is None:
                break
            outputs += self._on_body(body, now_s)
        return outputs

    def send(self, message: xdr.StellarMessage) -> list[Output]:
        """Send an application message; flood messages wait for the remote's capacity."""
        if self.state is State.CLOSED:
            return []
        if self.state is not State.GOT_AUTH:
            raise OverlayMisuse("messages are sent only after the handshake")
        kind = int(message.type.value)
        if kind in (int(MessageType.HELLO.value), int(MessageType.AUTH.value)):
            raise OverlayMisuse("the handshake messages belong to the connection")
        message_xdr = bytes(message.to_xdr_bytes())
        if kind not in FLOOD_TYPES:
            return [self._write(message_xdr)]
        self._enqueue(message_xdr)
        return self._flush()

    def close(self, reason: str) -> list[Output]:
        """Close locally, telling the remote why (ERR_MISC)."""
        if self.state is State.CLOSED:
            return []
        return self._drop(xdr.ErrorCode.ERR_MISC, reason)

    # Records --------------------------------------------------------------------------

    def _on_body(self, body: bytes, now_s: int) -> list[Output]:
        if len(body) < _MIN_BODY_BYTES or body[:4] != b"\x00\x00\x00\x00":
            return self._drop(xdr.ErrorCode.ERR_DATA, "malformed authenticated message")
        sequence = int.from_bytes(body[4:12], "big")
        message_xdr = body[_ENVELOPE_HEADER_BYTES:-MAC_BYTES]
        kind = int.from_bytes(message_xdr[:4], "big")
        if kind == int(MessageType.ERROR_MSG.value):
            return self._on_remote_error(message_xdr)
        if self.state is not State.CONNECTED:
            problem = self._authentication_problem(sequence, message_xdr, body[-MAC_BYTES:])
            if problem is not None:
                return self._drop(xdr.ErrorCode.ERR_AUTH, problem)
        return self._dispatch(kind, message_xdr, now_s)

    def _authentication_problem(self, sequence: int, message_xdr: bytes, mac: bytes) -> str | None:
        """Check (and consume) the next receive sequence number and the message's MAC."""
        if sequence != self._receive_sequence:
            return "unexpected auth sequence"
        if not mac_matches(self._receive_key, sequence, message_xdr, mac):
            return "unexpected MAC"
        self._receive_sequence += 1
        return None

    def _dispatch(self, kind: int, message_xdr: bytes, now_s: int) -> list[Output]:
        if kind == int(MessageType.HELLO.value):
            return self._on_hello(message_xdr, now_s)
        if kind == int(MessageType.AUTH.value):
            return self._on_auth(message_xdr)
        if self.state is not State.GOT_AUTH:
            return self._drop(xdr.ErrorCode.ERR_AUTH, "message before completed handshake")
        if kind in _GRANT_TYPES:
            return self._on_send_more(kind, message_xdr)
        if kind in FLOOD_TYPES:
            return self._on_flood(kind, message_xdr)
        return self._deliver(kind, message_xdr)

    def _on_remote_error(self, message_xdr: bytes) -> list[Output]:
        message = _decode_message(message_xdr)
        text = "malformed ERROR_MSG"
        if message is not None and message.error is not None:
            detail = bytes(message.error.msg).decode("utf-8", "replace")
            text = f"{message.error.code.name}: {detail}"
        self.state = State.CLOSED
        return [Closed(f"remote error {text}", by_remote=True)]

    def _deliver(self, kind: int, message_xdr: bytes) -> list[Output]:
        if kind not in DECODED_TYPES or (
            self.accept is not None and not self.accept(kind, message_xdr)
        ):
            self.ignored_messages += 1
            return []
        message = _decode_message(message_xdr)
        if message is None:
            return self._drop(xdr.ErrorCode.ERR_DATA, "malformed message")
        return [MessageReceived(message)]

    # Handshake ------------------------------------------------------------------------

    def _on_hello(self, message_xdr: bytes, now_s: int) -> list[Output]:
        if self.state is not State.CONNECTED:
            return self._drop(xdr.ErrorCode.ERR_MISC, "received unexpected HELLO")
        message = _decode_message(message_xdr)
        if message is None or message.hello is None:
            return self._drop(xdr.ErrorCode.ERR_DATA, "malformed HELLO")
        hello = message.hello
        problem = self._hello_problem(hello, now_s)
        if problem is not None:
            code, reason = problem
            return self._drop(code, reason)
        remote_public = bytes(hello.cert.pubkey.key)
        try:
            shared = shared_key(
                self.identity.curve_secret,
                self.identity.curve_public,
                remote_public,
                we_called_remote=self.we_called_remote,
            )
        except HandshakeCryptoError as error:
            return self._drop(xdr.ErrorCode.ERR_AUTH, str(error))
        remote_nonce = bytes(hello.nonce.uint256)
        called = self.we_called_remote
        local_nonce = self._local_nonce
        self._send_key = sending_mac_key(shared, local_nonce, remote_nonce, we_called_remote=called)
        self._receive_key = receiving_mac_key(
            shared, local_nonce, remote_nonce, we_called_remote=called
        )
        key = hello.peer_id.node_id.ed25519
        assert key is not None  # checked by _identity_problem
        self.peer_id = NodeId(bytes(key.uint256))
        self.remote_hello = hello
        self.state = State.GOT_HELLO
        if called:
            auth = xdr.StellarMessage(
                MessageType.AUTH, auth=xdr.Auth(AUTH_MSG_FLAG_FLOW_CONTROL_BYTES_REQUESTED)
            )
            return [self._write(bytes(auth.to_xdr_bytes()))]
        return [self._hello(now_s)]

    def _hello_problem(self, hello: xdr.Hello, now_s: int) -> tuple[xdr.ErrorCode, str] | None:
        """Why a HELLO is refused, cheap checks first; None when it is accepted."""
        settings = self.settings
        conf = xdr.ErrorCode.ERR_CONF
        if bytes(hello.network_id.hash) != settings.network_id:
            return conf, "wrong network passphrase"
        remote_min = hello.overlay_min_version.uint32
        remote_version = hello.overlay_version.uint32
        if remote_min > settings.overlay_version or remote_version < settings.overlay_min_version:
            return conf, "wrong protocol version"
        if not 0 < hello.listening_port <= 65535:
            return conf, "bad address"
        return self._identity_problem(hello, now_s)

    def _identity_problem(self, hello: xdr.Hello, now_s: int) -> tuple[xdr.ErrorCode, str] | None:
        key = hello.peer_id.node_id.ed25519
        if key is None:
            return xdr.ErrorCode.ERR_AUTH, "peer id is not an Ed25519 key"
        peer_id = bytes(key.uint256)
        if peer_id == self.identity.keys.node_id:
            return xdr.ErrorCode.ERR_CONF, "connecting to self"
        if self.expected_peer_id is not None and peer_id != self.expected_peer_id:
            return xdr.ErrorCode.ERR_AUTH, "not the node that was dialed"
        problem = cert_problem(peer_id, hello.cert, self.settings.network_id, now_s)
        if problem is not None:
            return xdr.ErrorCode.ERR_AUTH, f"bad auth cert: {problem}"
        return None

    def _on_auth(self, message_xdr: bytes) -> list[Output]:
        if self.state is not State.GOT_HELLO:
            return self._drop(xdr.ErrorCode.ERR_MISC, "out-of-order AUTH message")
        message = _decode_message(message_xdr)
        if message is None or message.auth is None:
            return self._drop(xdr.ErrorCode.ERR_DATA, "malformed AUTH")
        if message.auth.flags != AUTH_MSG_FLAG_FLOW_CONTROL_BYTES_REQUESTED:
            return self._drop(xdr.ErrorCode.ERR_CONF, "flow control bytes disabled")
        self.state = State.GOT_AUTH
        self._decoder.max_body_bytes = self.settings.max_message_bytes
        outputs: list[Output] = []
        if not self.we_called_remote:
            auth = xdr.StellarMessage(
                MessageType.AUTH, auth=xdr.Auth(AUTH_MSG_FLAG_FLOW_CONTROL_BYTES_REQUESTED)
            )
            outputs.append(self._write(bytes(auth.to_xdr_bytes())))
        settings = self.settings
        outputs.append(
            self._send_more(settings.flood_capacity_messages, settings.flood_capacity_bytes)
        )
        assert self.peer_id is not None and self.remote_hello is not None
        outputs.append(Authenticated(self.peer_id, self.remote_hello))
        return outputs

    def _hello(self, now_s: int) -> Write:
        settings = self.settings
        identity = self.identity
        hello = xdr.Hello(
            ledger_version=xdr.Uint32(settings.ledger_version),
            overlay_version=xdr.Uint32(settings.overlay_version),
            overlay_min_version=xdr.Uint32(settings.overlay_min_version),
            network_id=xdr.Hash(settings.network_id),
            version_str=settings.version_str.encode(),
            listening_port=settings.listening_port,
            peer_id=xdr.NodeID(
                xdr.PublicKey(
                    xdr.PublicKeyType.PUBLIC_KEY_TYPE_ED25519,
                    xdr.Uint256(bytes(identity.keys.node_id)),
                )
            ),
            cert=identity.cert_at(now_s),
            nonce=xdr.Uint256(self._local_nonce),
        )
        message = xdr.StellarMessage(MessageType.HELLO, hello=hello)
        return self._write(bytes(message.to_xdr_bytes()))

    # Flow control ---------------------------------------------------------------------

    def _on_send_more(self, kind: int, message_xdr: bytes) -> list[Output]:
        if kind == int(MessageType.SEND_MORE.value):
            # Flow control in messages only is gone: stellar-core refuses it the same way.
            return self._drop(xdr.ErrorCode.ERR_MISC, "unexpected message type SEND_MORE")
        message = _decode_message(message_xdr)
        if message is None or message.send_more_extended_message is None:
            return self._drop(xdr.ErrorCode.ERR_DATA, "malformed SEND_MORE_EXTENDED")
        grant = message.send_more_extended_message
        messages, size = grant.num_messages.uint32, grant.num_bytes.uint32
        if size == 0:
            return self._drop(xdr.ErrorCode.ERR_MISC, "invalid message SEND_MORE_EXTENDED")
        flow = self._flow
        if flow.send_messages + messages > _MAX_UINT64 or flow.send_bytes + size > _MAX_UINT64:
            return self._drop(xdr.ErrorCode.ERR_MISC, "Peer capacity overflow")
        flow.send_messages += messages
        flow.send_bytes += size
        return self._flush()

    def _on_flood(self, kind: int, message_xdr: bytes) -> list[Output]:
        flow = self._flow
        size = len(message_xdr)
        if flow.read_messages < 1 or flow.read_bytes < size:
            return self._drop(xdr.ErrorCode.ERR_LOAD, "unexpected flood message, peer at capacity")
        flow.read_messages -= 1
        flow.read_bytes -= size
        outputs: list[Output] = []
        if kind == int(MessageType.SCP_MESSAGE.value):
            outputs += self._deliver(kind, message_xdr)
            if self.state is State.CLOSED:
                return outputs
        else:
            self.ignored_messages += 1
        # The node processes a message before the next input, so its capacity is
        # released here; the grant goes back in batches, as stellar-core's does.
        flow.processed_messages += 1
        flow.processed_bytes += size
        settings = self.settings
        if (
            flow.processed_messages >= settings.send_more_batch_messages
            or flow.processed_bytes >= settings.send_more_batch_bytes
        ):
            outputs.append(self._send_more(flow.processed_messages, flow.processed_bytes))
            flow.processed_messages = flow.processed_bytes = 0
        return outputs

    def _send_more(self, messages: int, size: int) -> Write:
        self._flow.read_messages += messages
        self._flow.read_bytes += size
        grant = xdr.StellarMessage(
            MessageType.SEND_MORE_EXTENDED,
            send_more_extended_message=xdr.SendMoreExtended(xdr.Uint32(messages), xdr.Uint32(size)),
        )
        return self._write(bytes(grant.to_xdr_bytes()))

    def _enqueue(self, message_xdr: bytes) -> None:
        flow = self._flow
        flow.queue.append(message_xdr)
        flow.queued_bytes += len(message_xdr)
        while flow.queued_bytes > self.settings.max_outbound_queue_bytes and len(flow.queue) > 1:
            dropped = flow.queue.popleft()
            flow.queued_bytes -= len(dropped)
            flow.dropped_outbound += 1

    def _flush(self) -> list[Output]:
        flow = self._flow
        outputs: list[Output] = []
        while flow.queue and flow.send_messages >= 1 and flow.send_bytes >= len(flow.queue[0]):
            message_xdr = flow.queue.popleft()
            flow.queued_bytes -= len(message_xdr)
            flow.send_messages -= 1
            flow.send_bytes -= len(message_xdr)
            outputs.append(self._write(message_xdr))
        return outputs

    # Writing --------------------------------------------------------------------------

    def _write(self, message_xdr: bytes) -> Write:
        kind = int.from_bytes(message_xdr[:4], "big")
        sequence, mac = 0, _ZERO_MAC
        if kind not in (int(MessageType.HELLO.value), int(MessageType.ERROR_MSG.value)):
            sequence = self._send_sequence
            mac = message_mac(self._send_key, sequence, message_xdr)
            self._send_sequence += 1
        body = b"\x00\x00\x00\x00" + sequence.to_bytes(8, "big") + message_xdr + mac
        return Write(encode_record(body))

    def _drop(self, code: xdr.ErrorCode, reason: str) -> list[Output]:
        text = reason.encode("utf-8")[:MAX_ERROR_TEXT_BYTES]
        error = xdr.StellarMessage(MessageType.ERROR_MSG, error=xdr.Error(code, text))
        write = self._write(bytes(error.to_xdr_bytes()))
        self.state = State.CLOSED
        return [write, Closed(reason)]


def _decode_message(message_xdr: bytes) -> xdr.StellarMessage | None:
    """A strictly decoded ``StellarMessage`` (one byte form only), or None."""
    try:
        message = xdr.StellarMessage.from_xdr_bytes(message_xdr)
        canonical = message.to_xdr_bytes()
    except Exception:  # stellar-sdk and xdrlib3 raise many types on bad bytes
        return None
    return message if canonical == message_xdr else None
