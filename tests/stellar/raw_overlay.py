"""An independent, minimal implementation of stellar-core's overlay handshake for tests.

Written from stellar-core's definitions (``PeerAuth.cpp``: the certificate hash and the
send/receive key derivation; ``Curve25519.cpp``: the shared key; ``SHA.cpp``: HKDF;
``Hmac.cpp``/``Peer.cpp``: the MAC over sequence and message; ``TCPPeer.cpp``: the record
mark) with raw PyNaCl, hashlib and hmac; only stellar-sdk's XDR classes are shared with
synod.  It imports nothing from synod, so it checks synod rather than repeating it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing
from stellar_sdk import xdr

ENVELOPE_TYPE_AUTH = 3  # Stellar-ledger-entries.x: ENVELOPE_TYPE_AUTH = 3
FLOW_CONTROL_BYTES_FLAG = 200  # Stellar-overlay.x: AUTH_MSG_FLAG_FLOW_CONTROL_BYTES_REQUESTED
TESTNET = "Test SDF Network ; September 2015"


def record(body: bytes) -> bytes:
    """RFC 5531 record marking as TCPPeer sends it: length with the top bit set."""
    return (0x80000000 | len(body)).to_bytes(4, "big") + body


def split_records(data: bytes) -> list[bytes]:
    bodies = []
    while data:
        header = int.from_bytes(data[:4], "big")
        assert header & 0x80000000, "stellar-core always sets the last-fragment bit"
        length = header & 0x7FFFFFFF
        bodies.append(data[4 : 4 + length])
        data = data[4 + length :]
    return bodies


def network_id(passphrase: str) -> bytes:
    return hashlib.sha256(passphrase.encode()).digest()


def cert_hash(network: bytes, expiration: int, curve_public: bytes) -> bytes:
    """sha256(xdr_to_opaque(networkID, ENVELOPE_TYPE_AUTH, expiration, pubkey))."""
    return hashlib.sha256(
        network + ENVELOPE_TYPE_AUTH.to_bytes(4, "big") + expiration.to_bytes(8, "big")
        + curve_public
    ).digest()


def hkdf_extract(data: bytes) -> bytes:
    return hmac.new(bytes(32), data, hashlib.sha256).digest()


def hkdf_expand(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data + b"\x01", hashlib.sha256).digest()


@dataclass
class RawNode:
    """One side of a connection, computed by hand."""

    passphrase: str = TESTNET
    we_called_remote: bool = True
    signing_key: nacl.signing.SigningKey = field(default_factory=nacl.signing.SigningKey.generate)
    curve_secret: bytes = field(default_factory=lambda: os.urandom(32))
    nonce: bytes = field(default_factory=lambda: os.urandom(32))
    send_key: bytes = b""
    receive_key: bytes = b""
    send_sequence: int = 0
    receive_sequence: int = 0

    @property
    def node_id(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def curve_public(self) -> bytes:
        return nacl.bindings.crypto_scalarmult_base(self.curve_secret)

    def cert(self, now_s: int, *, lifetime_s: int = 3600, network: str | None = None,
             signer: nacl.signing.SigningKey | None = None) -> xdr.AuthCert:
        expiration = now_s + lifetime_s
        digest = cert_hash(network_id(network or self.passphrase), expiration, self.curve_public)
        signature = (signer or self.signing_key).sign(digest).signature
        return xdr.AuthCert(
            xdr.Curve25519Public(self.curve_public), xdr.Uint64(expiration),
            xdr.Signature(signature),
        )

    def hello(self, now_s: int, *, cert: xdr.AuthCert | None = None, passphrase: str | None = None,
              overlay: tuple[int, int] = (38, 35), port: int = 11625) -> xdr.StellarMessage:
        hello = xdr.Hello(
            ledger_version=xdr.Uint32(25),
            overlay_version=xdr.Uint32(overlay[0]),
            overlay_min_version=xdr.Uint32(overlay[1]),
            network_id=xdr.Hash(network_id(passphrase or self.passphrase)),
            version_str=b"raw-test",
            listening_port=port,
            peer_id=xdr.NodeID(xdr.PublicKey(xdr.PublicKeyType.PUBLIC_KEY_TYPE_ED25519,
                                             xdr.Uint256(self.node_id))),
            cert=cert or self.cert(now_s),
            nonce=xdr.Uint256(self.nonce),
        )
        return xdr.StellarMessage(xdr.MessageType.HELLO, hello=hello)

    def derive_keys(self, remote_hello: xdr.Hello) -> None:
        """Curve25519DeriveSharedKey then PeerAuth::get{Sending,Receiving}MacKey."""
        remote_public = bytes(remote_hello.cert.pubkey.key)
        remote_nonce = bytes(remote_hello.nonce.uint256)
        point = nacl.bindings.crypto_scalarmult(self.curve_secret, remote_public)
        if self.we_called_remote:
            shared = hkdf_extract(point + self.curve_public + remote_public)
            self.send_key = hkdf_expand(shared, b"\x00" + self.nonce + remote_nonce)
            self.receive_key = hkdf_expand(shared, b"\x01" + remote_nonce + self.nonce)
        else:
            shared = hkdf_extract(point + remote_public + self.curve_public)
            self.send_key = hkdf_expand(shared, b"\x01" + self.nonce + remote_nonce)
            self.receive_key = hkdf_expand(shared, b"\x00" + remote_nonce + self.nonce)

    def seal(self, message: xdr.StellarMessage, *, sequence: int | None = None,
             mac_key: bytes | None = None) -> bytes:
        """One framed AuthenticatedMessage (v0), MAC'd unless HELLO or ERROR_MSG."""
        body = bytes(message.to_xdr_bytes())
        if message.type in (xdr.MessageType.HELLO, xdr.MessageType.ERROR_MSG):
            seq, mac = 0, bytes(32)
        else:
            seq = self.send_sequence if sequence is None else sequence
            mac = hmac.new(mac_key or self.send_key, seq.to_bytes(8, "big") + body,
                           hashlib.sha256).digest()
            self.send_sequence += 1
        return record(b"\x00\x00\x00\x00" + seq.to_bytes(8, "big") + body + mac)

    def open(self, body: bytes) -> xdr.StellarMessage:
        """Check an incoming record body's sequence and MAC by hand; return its message."""
        assert body[:4] == b"\x00\x00\x00\x00"
        seq = int.from_bytes(body[4:12], "big")
        message_xdr, mac = body[12:-32], body[-32:]
        message = xdr.StellarMessage.from_xdr_bytes(message_xdr)
        if message.type not in (xdr.MessageType.HELLO, xdr.MessageType.ERROR_MSG):
            assert seq == self.receive_sequence, (seq, self.receive_sequence)
            expected = hmac.new(self.receive_key, body[4:12] + message_xdr,
                                hashlib.sha256).digest()
            assert hmac.compare_digest(expected, mac), "MAC does not verify"
            self.receive_sequence += 1
        else:
            assert seq == 0 and mac == bytes(32)
        return message


def auth_message() -> xdr.StellarMessage:
    return xdr.StellarMessage(xdr.MessageType.AUTH, auth=xdr.Auth(FLOW_CONTROL_BYTES_FLAG))


def verify_cert(hello: xdr.Hello, passphrase: str, now_s: int) -> bool:
    """PeerAuth::verifyRemoteAuthCert, by hand."""
    cert = hello.cert
    if cert.expiration.uint64 < now_s:
        return False
    digest = cert_hash(network_id(passphrase), cert.expiration.uint64, bytes(cert.pubkey.key))
    key = nacl.signing.VerifyKey(bytes(hello.peer_id.node_id.ed25519.uint256))
    try:
        key.verify(digest, bytes(cert.sig.signature))
    except nacl.exceptions.BadSignatureError:
        return False
    return True
