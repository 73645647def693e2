"""The Stellar overlay's handshake cryptography: auth certificates and MAC keys.

Theory of operation (stellar-core ``src/overlay/PeerAuth``, ``src/crypto/Curve25519``
and ``SHA``; the XDR is ``Stellar-overlay.x``):

- Each node holds a Curve25519 key pair for the overlay, drawn at random when it starts.
  Its public half travels in every HELLO inside an ``AuthCert``: the key, an expiry (Unix
  seconds, one hour after issue; reissued once half of that is gone) and the node's
  Ed25519 signature of ``SHA-256(networkID || XDR(ENVELOPE_TYPE_AUTH) || XDR(expiration)
  || pubkey)``.  The network id is SHA-256 of the passphrase, so a certificate made for
  one network is refused by every other.
- Both sides of a connection derive one shared key: ``HKDF-extract(ECDH(local secret,
  remote public) || A || B)``, where A is the public key of the side that dialed and B the
  one that accepted.  HKDF-extract is HMAC-SHA256 keyed with 32 zero bytes.
- From it, each direction has its own MAC key: ``HKDF-expand(shared, tag || nonce ||
  nonce)`` (HKDF-expand is HMAC-SHA256 of the input followed by one byte 1).  The key the
  dialer sends with (and the acceptor receives with) has tag 0 and the dialer's nonce
  first; the other direction has tag 1 and the acceptor's nonce first.  Nonces are the
  32 random bytes each side puts in its HELLO, so every connection has fresh keys.

Every function here is pure: randomness (the Curve25519 secret, nonces) and the current
time arrive as arguments.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

import nacl.bindings
import nacl.exceptions
from stellar_sdk import xdr

from synod.crypto import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, KeyPair

ENVELOPE_TYPE_AUTH: Final = int(xdr.EnvelopeType.ENVELOPE_TYPE_AUTH.value)
"""The XDR ``EnvelopeType`` tag that separates auth certificate signatures (3)."""
CERT_LIFETIME_S: Final = 3600
"""A certificate is valid for one hour (stellar-core ``expirationLimit``)."""
CURVE25519_BYTES: Final = 32
NONCE_BYTES: Final = 32
MAC_BYTES: Final = 32
_ZERO_SALT: Final = bytes(32)
_MAX_UINT64: Final = 2**64 - 1


class HandshakeCryptoError(ValueError):
    """A remote public key with which no shared key can be derived (a low-order point)."""


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of `data` under `key`."""
    return hmac.new(key, data, hashlib.sha256).digest()


def hkdf_extract(data: bytes) -> bytes:
    """stellar-core's unsalted HKDF-extract: HMAC-SHA256 keyed with 32 zero bytes."""
    return hmac_sha256(_ZERO_SALT, data)


def hkdf_expand(key: bytes, data: bytes) -> bytes:
    """stellar-core's single-step HKDF-expand: HMAC-SHA256 of `data` then the byte 1."""
    return hmac_sha256(key, data + b"\x01")


def curve25519_public(secret: bytes) -> bytes:
    """The Curve25519 public key of a 32-byte secret."""
    if len(secret) != CURVE25519_BYTES:
        raise ValueError(f"a Curve25519 secret is {CURVE25519_BYTES} bytes, got {len(secret)}")
    return bytes(nacl.bindings.crypto_scalarmult_base(secret))


def shared_key(
    local_secret: bytes, local_public: bytes, remote_public: bytes, *, we_called_remote: bool
) -> bytes:
    """The connection's shared key: HKDF-extract(ECDH || dialer's key || acceptor's key).

    Raises `HandshakeCryptoError` when the remote key is not usable (libsodium refuses
    points whose product is all zeros).
    """
    if len(remote_public) != CURVE25519_BYTES:
        raise HandshakeCryptoError(f"a Curve25519 key is 32 bytes, got {len(remote_public)}")
    try:
        point = nacl.bindings.crypto_scalarmult(local_secret, remote_public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError) as error:
        raise HandshakeCryptoError(f"unusable Curve25519 key: {error}") from None
    first, second = (
        (local_public, remote_public) if we_called_remote else (remote_public, local_public)
    )
    return hkdf_extract(bytes(point) + first + second)


def sending_mac_key(
    shared: bytes, local_nonce: bytes, remote_nonce: bytes, *, we_called_remote: bool
) -> bytes:
    """The key this side MACs its messages with (K_AB when it dialed, else K_BA)."""
    tag = b"\x00" if we_called_remote else b"\x01"
    return hkdf_expand(shared, tag + local_nonce + remote_nonce)


def receiving_mac_key(
    shared: bytes, local_nonce: bytes, remote_nonce: bytes, *, we_called_remote: bool
) -> bytes:
    """The key the remote side MACs its messages with, as this side derives it."""
    tag = b"\x01" if we_called_remote else b"\x00"
    return hkdf_expand(shared, tag + remote_nonce + local_nonce)


def message_mac(key: bytes, sequence: int, message_xdr: bytes) -> bytes:
    """The MAC of one authenticated message: HMAC(key, XDR(uint64 sequence) || message)."""
    return hmac_sha256(key, sequence.to_bytes(8, "big") + message_xdr)


def mac_matches(key: bytes, sequence: int, message_xdr: bytes, mac: bytes) -> bool:
    """Whether `mac` is the MAC of the message (compared in constant time)."""
    return hmac.compare_digest(message_mac(key, sequence, message_xdr), mac)


def cert_signed_hash(network_id: bytes, expiration: int, curve_public: bytes) -> bytes:
    """What a certificate's signature covers: the SHA-256 of its XDR fields in order."""
    if len(network_id) != 32:
        raise ValueError(f"a network id is 32 bytes, got {len(network_id)}")
    payload = (
        network_id
        + ENVELOPE_TYPE_AUTH.to_bytes(4, "big")
        + expiration.to_bytes(8, "big")
        + curve_public
    )
    return hashlib.sha256(payload).digest()


def make_auth_cert(
    keys: KeyPair, network_id: bytes, curve_public: bytes, now_s: int
) -> xdr.AuthCert:
    """A certificate for `curve_public`, valid for `CERT_LIFETIME_S` from `now_s`."""
    expiration = now_s + CERT_LIFETIME_S
    digest = cert_signed_hash(network_id, expiration, curve_public)
    _public, secret = nacl.bindings.crypto_sign_seed_keypair(keys.seed)
    signature = bytes(nacl.bindings.crypto_sign(digest, secret)[:SIGNATURE_BYTES])
    return xdr.AuthCert(
        xdr.Curve25519Public(curve_public), xdr.Uint64(expiration), xdr.Signature(signature)
    )


def cert_problem(node_id: bytes, cert: xdr.AuthCert, network_id: bytes, now_s: int) -> str | None:
    """Why `cert` does not authenticate `node_id` on this network now, or None when it does.

    Cheap checks first: expiry and sizes before the signature.
    """
    expiration = cert.expiration.uint64
    if not 0 <= expiration <= _MAX_UINT64:
        return "certificate expiry out of range"
    if expiration < now_s:
        return "certificate expired"
    curve_public = bytes(cert.pubkey.key)
    signature = bytes(cert.sig.signature)
    if len(curve_public) != CURVE25519_BYTES or len(signature) != SIGNATURE_BYTES:
        return "certificate of the wrong shape"
    if len(node_id) != PUBLIC_KEY_BYTES:
        return "node id of the wrong size"
    digest = cert_signed_hash(network_id, expiration, curve_public)
    try:
        nacl.bindings.crypto_sign_open(signature + digest, bytes(node_id))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return "certificate not signed by the node (or for another network)"
    return None


@dataclass(slots=True)
class OverlayIdentity:
    """One node's overlay keys: its Ed25519 keys, a Curve25519 pair and the current cert.

    Built once per process (stellar-core's ``PeerAuth``) from a random Curve25519 secret
    that the caller draws; `cert_at` reissues the certificate when half its life is gone.
    """

    keys: KeyPair
    network_id: bytes
    curve_secret: bytes
    curve_public: bytes
    _cert: xdr.AuthCert | None = None

    @classmethod
    def create(cls, keys: KeyPair, network_id: bytes, curve_secret: bytes) -> OverlayIdentity:
        """An identity from a node's keys, the network id and 32 random bytes."""
        return cls(keys, network_id, curve_secret, curve25519_public(curve_secret))

    def cert_at(self, now_s: int) -> xdr.AuthCert:
        """The certificate to send in a HELLO at `now_s`."""
        cert = self._cert
        if cert is None or cert.expiration.uint64 < now_s + CERT_LIFETIME_S // 2:
            cert = make_auth_cert(self.keys, self.network_id, self.curve_public, now_s)
            self._cert = cert
        return cert
