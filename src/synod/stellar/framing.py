"""Record framing of the Stellar overlay: a 4-byte length whose high bit marks the record.

Theory of operation (stellar-core ``TCPPeer``, RFC 5531 record marking): every
``AuthenticatedMessage`` travels as one record, a big-endian 32-bit header then the body.
The header's high bit is the "last fragment" mark, which stellar-core always sets when it
sends and clears before it reads the length; the other 31 bits are the body's length.  A
length of zero, or above the cap (4096 bytes before the handshake completes, far more
after it), drops the connection before any of the body is read.

`RecordDecoder` is sans-I/O: bytes in, whole bodies out.  It holds at most one header and
one capped body beyond what it has returned, so a peer that announces a large record and
trickles it costs at most the cap.
"""

from __future__ import annotations

from typing import Final

HEADER_BYTES: Final = 4
LAST_FRAGMENT_BIT: Final = 0x8000_0000
MAX_RECORD_BYTES: Final = 0x7FFF_FFFF


class RecordError(ValueError):
    """A record header that announces no body or more than the cap."""


def encode_record(body: bytes) -> bytes:
    """One record: the body's length with the high bit set, then the body."""
    if not 0 < len(body) <= MAX_RECORD_BYTES:
        raise ValueError(f"a record body is 1 to {MAX_RECORD_BYTES} bytes, got {len(body)}")
    return (len(body) | LAST_FRAGMENT_BIT).to_bytes(HEADER_BYTES, "big") + body


def record_length(header: bytes, max_body_bytes: int) -> int:
    """The body length a header announces; `RecordError` when zero or above the cap."""
    length = int.from_bytes(header[:HEADER_BYTES], "big") & ~LAST_FRAGMENT_BIT
    if length == 0:
        raise RecordError("empty record")
    if length > max_body_bytes:
        raise RecordError(f"record of {length} bytes exceeds {max_body_bytes}")
    return length


class RecordDecoder:
    """Splits a byte stream into record bodies, checking each length before its body."""

    __slots__ = ("_buffer", "_length", "max_body_bytes")

    def __init__(self, max_body_bytes: int) -> None:
        if max_body_bytes < 1:
            raise ValueError("the record cap must be positive")
        self.max_body_bytes = max_body_bytes
        """Changeable between calls: the cap grows once the handshake completes."""
        self._buffer = bytearray()
        self._length: int | None = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for the record in progress."""
        return len(self._buffer)

    def next_body(self, data: bytes = b"") -> bytes | None:
        """Append `data`, then return the next whole body, or None until one is complete.

        Call again with no data to take further bodies already buffered.  Raises
        `RecordError` on a bad header; the decoder is then unusable.
        """
        self._buffer += data
        if self._length is None:
            if len(self._buffer) < HEADER_BYTES:
                return None
            try:
                header = bytes(self._buffer[:HEADER_BYTES])
                self._length = record_length(header, self.max_body_bytes)
            except RecordError:
                self._buffer.clear()  # nothing more is read from this stream
                raise
            del self._buffer[:HEADER_BYTES]
        if len(self._buffer) < self._length:
            return None
        body = bytes(self._buffer[: self._length])
        del self._buffer[: self._length]
        self._length = None
        return body
