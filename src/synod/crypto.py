"""Keys, signatures and digests.

Every signature in synod is Ed25519 (libsodium through PyNaCl) over a *domain tag* plus
the message bytes, so that a signature made for one purpose (an SCP envelope, a FastPay
vote, a Tusk header) can never be replayed as another.  A node is identified by its
32-byte public key; `node_id_text` gives the readable form used in files and logs.

Key files hold the 32-byte Ed25519 seed, are written with mode 0600, and are refused
with a `KeyFileError` naming the file when they are corrupt, truncated or readable by
other users.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NewType

import nacl.bindings
import nacl.exceptions

NodeId = NewType("NodeId", bytes)
"""A node's identity: its 32-byte Ed25519 public key."""

PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32
SIGNATURE_BYTES = 64
DIGEST_BYTES = 32
MAX_DOMAIN_BYTES = 255

_NODE_ID_PREFIX = "N"
_KEY_FILE_HEADER = "synod-ed25519-seed"


class CryptoError(Exception):
    """Base class for errors raised by `synod.crypto`."""


class InvalidNodeId(CryptoError, ValueError):
    """A node id, in bytes or text, is not well formed."""


class BadSignature(CryptoError):
    """A signature does not verify for the stated signer, domain and message."""


class KeyFileError(CryptoError):
    """A key file is missing, corrupt, truncated or has unsafe permissions."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


MAX_NETWORK_ID_BYTES = 64
"""A network (instance) identifier: a name people choose, such as ``b"payments-prod"``."""


def in_network(domain: bytes, network: bytes) -> bytes:
    """The domain tag `domain` for one network: signatures made for one network are refused
    by another, even when the same key serves in both.

    The empty network leaves the tag as it is (the tags of networks made before network
    ids existed).  Otherwise the tag is ``domain || "@" || network``; a network id is
    1..64 bytes without ``@``, so no two (domain, network) pairs give the same tag.
    """
    if not network:
        return domain
    if len(network) > MAX_NETWORK_ID_BYTES or b"@" in network or b"@" in domain:
        raise ValueError(
            f"a network id is 1..{MAX_NETWORK_ID_BYTES} bytes without '@', and a domain has none"
        )
    return domain + b"@" + network


def _signed_bytes(domain: bytes, message: bytes) -> bytes:
    if not 0 < len(domain) <= MAX_DOMAIN_BYTES:
        raise ValueError(f"domain tag must be 1..{MAX_DOMAIN_BYTES} bytes, got {len(domain)}")
    return bytes([len(domain)]) + domain + message


@dataclass(frozen=True, slots=True, repr=False)
class KeyPair:
    """An Ed25519 signing key and the node id (public key) it belongs to."""

    seed: bytes
    node_id: NodeId
    _secret_key: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        """Derive a key pair from a 32-byte seed (deterministic: tests and simulators)."""
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
        public, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
        return cls(seed=bytes(seed), node_id=NodeId(public), _secret_key=secret)

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key pair from the operating system's randomness."""
        return cls.from_seed(os.urandom(SEED_BYTES))

    def sign(self, domain: bytes, message: bytes) -> bytes:
        """Sign `message` under `domain`; returns the 64-byte detached signature."""
        signed = nacl.bindings.crypto_sign(_signed_bytes(domain, message), self._secret_key)
        return bytes(signed[:SIGNATURE_BYTES])

    def __repr__(self) -> str:
        return f"KeyPair({node_id_text(self.node_id)})"


def verify(signer: bytes, domain: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is `signer`'s signature of `message` under `domain`.

    Never raises on malformed input from a peer: a wrong-length key or signature is
    simply not a valid signature.
    """
    if len(signer) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + _signed_bytes(domain, message), signer)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


def require_valid_signature(signer: bytes, domain: bytes, message: bytes, signature: bytes) -> None:
    """Raise `BadSignature` unless the signature verifies."""
    if not verify(signer, domain, message, signature):
        raise BadSignature(f"bad signature by {node_id_short(signer)} under {domain!r}")


def sha256(data: bytes) -> bytes:
    """SHA-256 digest (32 bytes): used where a peer protocol prescribes it (Stellar)."""
    return hashlib.sha256(data).digest()


def blake2b(data: bytes, *, person: bytes = b"") -> bytes:
    """BLAKE2b-256 digest, optionally personalised (up to 16 bytes) for domain separation."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES, person=person).digest()


def _checksum(key: bytes) -> bytes:
    return blake2b(key, person=b"synod-node-id")[:2]


def node_id_text(node_id: bytes) -> str:
    """Readable, checksummed text form of a node id: 'N' followed by 55 base32 letters."""
    if len(node_id) != PUBLIC_KEY_BYTES:
        raise InvalidNodeId(f"a node id is {PUBLIC_KEY_BYTES} bytes, got {len(node_id)}")
    body = base64.b32encode(node_id + _checksum(node_id)).decode("ascii").rstrip("=")
    return _NODE_ID_PREFIX + body


def node_id_short(node_id: bytes) -> str:
    """The first characters of the text form, for logs and tables."""
    if len(node_id) != PUBLIC_KEY_BYTES:
        return f"<bad id {node_id[:8].hex()}>"
    return node_id_text(node_id)[:9]


def parse_node_id(text: str) -> NodeId:
    """Parse `node_id_text` output back to bytes, checking the prefix and checksum."""
    if not text.startswith(_NODE_ID_PREFIX):
        raise InvalidNodeId(f"node id {text!r} must start with {_NODE_ID_PREFIX!r}")
    body = text[len(_NODE_ID_PREFIX) :]
    padded = body + "=" * (-len(body) % 8)
    try:
        raw = base64.b32decode(padded, casefold=False)
    except ValueError as error:
        raise InvalidNodeId(f"node id {text!r} is not base32: {error}") from None
    key, checksum = raw[:PUBLIC_KEY_BYTES], raw[PUBLIC_KEY_BYTES:]
    if len(key) != PUBLIC_KEY_BYTES or checksum != _checksum(key):
        raise InvalidNodeId(f"node id {text!r} has a wrong length or checksum")
    return NodeId(key)


def write_key_file(path: Path, keys: KeyPair) -> None:
    """Write the seed to `path` with mode 0600, refusing to overwrite an existing file."""
    text = f"{_KEY_FILE_HEADER} {keys.seed.hex()}\n"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(path, "already exists; refusing to overwrite a key") from None
    except OSError as error:
        raise KeyFileError(path, f"cannot create: {error.strerror}") from None
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


MAX_KEY_FILE_BYTES = 4096
"""A key file is one line of about 80 bytes; reading stops past this, so a device such
as /dev/zero or a large file named by mistake is refused instead of read without end."""


def read_key_file(path: Path) -> KeyPair:
    """Read a key file written by `write_key_file`."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise KeyFileError(path, "not a regular file")
        with path.open("rb") as handle:
            raw = handle.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyFileError(path, "no such key file") from None
    except OSError as error:
        raise KeyFileError(path, f"cannot read: {error.strerror}") from None
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(path, f"larger than {MAX_KEY_FILE_BYTES} bytes: not a synod key file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            path, f"permissions {stat.S_IMODE(mode):04o} let other users read it; chmod 600"
        )
    return KeyPair.from_seed(_parse_key_text(path, raw))


def _parse_key_text(path: Path, raw: bytes) -> bytes:
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise KeyFileError(path, "not a synod key file (not ASCII)") from None
    header, _, seed_hex = text.partition(" ")
    if header != _KEY_FILE_HEADER:
        raise KeyFileError(path, f"not a synod key file (expected {_KEY_FILE_HEADER!r})")
    if len(seed_hex) != 2 * SEED_BYTES:
        raise KeyFileError(path, f"truncated or corrupt seed ({len(seed_hex)} hex digits)")
    try:
        return bytes.fromhex(seed_hex)
    except ValueError:
        raise KeyFileError(path, "corrupt seed (not hexadecimal)") from None
