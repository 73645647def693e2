"""Encoding, framing and limits.

Messages are `msgspec.Struct`s derived from `Message`: frozen, tagged by class name,
encoded as MessagePack arrays, and unknown fields refused.  Every field that a peer fills
has a bound (the `Annotated` aliases below), so a decoded message is already checked for
shape and size.  A protocol declares one tagged union of its messages and builds a
`Codec` over it; `Codec.decode` raises only `DecodeError`.

On TCP every message travels in a frame: a 4-byte big-endian length, then the body.  The
length is checked against the cap *before* any of the body is read or buffered, so a peer
cannot make a node allocate more than the cap.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Annotated, Any, Generic, TypeVar

import msgspec

U8 = Annotated[int, msgspec.Meta(ge=0, le=2**8 - 1)]
U16 = Annotated[int, msgspec.Meta(ge=0, le=2**16 - 1)]
U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
U64 = Annotated[int, msgspec.Meta(ge=0)]
"""MessagePack integers stop at 2**64 - 1, which bounds U64 from above on decode."""
Bytes32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
"""Public keys and digests."""
Signature = Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]
"""Ed25519 detached signatures."""

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
FRAME_HEADER = struct.Struct(">I")


class WireError(Exception):
    """Base for errors in peer data; never a reason to stop serving other peers."""


class DecodeError(WireError):
    """Bytes that are not a valid message of the expected protocol."""


class FrameTooLarge(WireError):
    """A frame header announced a body larger than the cap."""

    def __init__(self, announced_bytes: int, max_frame_bytes: int) -> None:
        super().__init__(f"frame of {announced_bytes} bytes exceeds the cap {max_frame_bytes}")
        self.announced_bytes = announced_bytes
        self.max_frame_bytes = max_frame_bytes


class Message(msgspec.Struct, frozen=True, tag=True, array_like=True, forbid_unknown_fields=True):
    """Base class of every wire message. Subclasses inherit the wire configuration."""


M = TypeVar("M")

_CANONICAL_ENCODER = msgspec.msgpack.Encoder(order="deterministic")


def canonical_bytes(value: Any) -> bytes:
    """The canonical encoding of a value: what signatures and digests are computed over.

    Structs are encoded as arrays in declaration order and maps with sorted keys, so equal
    values always give equal bytes.
    """
    return _CANONICAL_ENCODER.encode(value)


class Codec(Generic[M]):
    """Encoder and decoder for one protocol's message type (usually a tagged union)."""

    def __init__(self, message_type: Any, *, max_message_bytes: int = DEFAULT_MAX_FRAME_BYTES):
        self.message_type = message_type
        self.max_message_bytes = max_message_bytes
        self._decoder: msgspec.msgpack.Decoder[M] = msgspec.msgpack.Decoder(message_type)

    def encode(self, message: M) -> bytes:
        """Encode a message (canonical form)."""
        return _CANONICAL_ENCODER.encode(message)

    def decode(self, data: bytes) -> M:
        """Decode peer bytes; raises `DecodeError` and nothing else."""
        if len(data) > self.max_message_bytes:
            raise DecodeError(f"message of {len(data)} bytes exceeds {self.max_message_bytes}")
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise DecodeError(str(error)) from None
        except (ValueError, TypeError, OverflowError, RecursionError) as error:
            raise DecodeError(f"malformed message: {error}") from None


def encode_frame(body: bytes, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Prefix `body` with its length. Refuses (locally, as a caller error) an oversized body."""
    if len(body) > max_frame_bytes:
        raise ValueError(f"frame of {len(body)} bytes exceeds the cap {max_frame_bytes}")
    return FRAME_HEADER.pack(len(body)) + body


def parse_frame_header(header: bytes, *, max_frame_bytes: int) -> int:
    """Body length announced by a 4-byte header, checked against the cap."""
    (length,) = FRAME_HEADER.unpack(header)
    if length > max_frame_bytes:
        raise FrameTooLarge(length, max_frame_bytes)
    return int(length)


class FrameDecoder:
    """Incremental frame parser for byte streams (sans-I/O; the runtime feeds it).

    Memory held is at most one header plus one body of at most `max_frame_bytes`.
    After a `FrameTooLarge` the stream is unusable and the connection must be closed.
    """

    def __init__(self, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._needed: int | None = None
        self._failed = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Add bytes; yield every complete frame body now available."""
        if self._failed:
            raise WireError("frame stream already failed")
        self._buffer += data
        while True:
            if self._needed is None:
                if len(self._buffer) < FRAME_HEADER.size:
                    return
                try:
                    self._needed = parse_frame_header(
                        bytes(self._buffer[: FRAME_HEADER.size]),
                        max_frame_bytes=self.max_frame_bytes,
                    )
                except FrameTooLarge:
                    self._failed = True
                    self._buffer.clear()
                    raise
                del self._buffer[: FRAME_HEADER.size]
            if len(self._buffer) < self._needed:
                return
            body = bytes(self._buffer[: self._needed])
            del self._buffer[: self._needed]
            self._needed = None
            yield body

    @property
    def buffered_bytes(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buffer)
