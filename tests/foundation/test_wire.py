"""synod.wire: bounded messages, typed decode errors, framing with the cap checked first."""

from __future__ import annotations

from typing import Annotated

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.wire import (
    U32,
    U64,
    Bytes32,
    Codec,
    DecodeError,
    FrameDecoder,
    FrameTooLarge,
    Message,
    WireError,
    canonical_bytes,
    encode_frame,
)


class Ping(Message, frozen=True):
    nonce: U64
    sender: Bytes32


class Note(Message, frozen=True):
    round: U32
    text: Annotated[str, msgspec.Meta(max_length=16)]
    tags: Annotated[tuple[U32, ...], msgspec.Meta(max_length=4)] = ()


Sample = Ping | Note
CODEC: Codec[Sample] = Codec(Sample, max_message_bytes=256)


def test_round_trip_of_each_member_of_the_union() -> None:
    for message in (Ping(7, bytes(32)), Note(3, "hi", (1, 2))):
        assert CODEC.decode(CODEC.encode(message)) == message


def test_messages_are_tagged_arrays() -> None:
    # array_like + tag: the first element names the type, fields follow in order.
    decoded = msgspec.msgpack.decode(CODEC.encode(Ping(7, bytes(32))))
    assert decoded == ["Ping", 7, bytes(32)]


def test_unknown_tag_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        CODEC.decode(msgspec.msgpack.encode(["Pong", 1, bytes(32)]))


def test_extra_field_is_a_decode_error() -> None:
    with pytest.raises(DecodeError):
        CODEC.decode(msgspec.msgpack.encode(["Ping", 1, bytes(32), "extra"]))


@pytest.mark.parametrize(
    "raw",
    [
        ["Ping", -1, bytes(32)],  # below the bound
        ["Ping", 1, bytes(31)],  # key of the wrong length
        ["Note", 2**32, "x"],  # U32 overflow
        ["Note", 1, "x" * 17],  # string too long
        ["Note", 1, "x", [1, 2, 3, 4, 5]],  # too many entries
    ],
)
def test_out_of_bounds_fields_are_decode_errors(raw: list[object]) -> None:
    with pytest.raises(DecodeError):
        CODEC.decode(msgspec.msgpack.encode(raw))


def test_oversized_message_is_refused_before_decoding() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        CODEC.decode(bytes(257))


@given(st.binary(max_size=300))
@settings(max_examples=500)
def test_arbitrary_bytes_give_a_message_or_a_decode_error(data: bytes) -> None:
    try:
        message = CODEC.decode(data)
    except DecodeError:
        return
    assert isinstance(message, Ping | Note)


@given(st.integers(min_value=0, max_value=2**64 - 1), st.data())
@settings(max_examples=300)
def test_mutated_encodings_give_a_message_or_a_decode_error(
    nonce: int, data: st.DataObject
) -> None:
    encoded = bytearray(CODEC.encode(Ping(nonce, bytes(32))))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(encoded) - 1))
        encoded[position] = data.draw(st.integers(0, 255))
    try:
        message = CODEC.decode(bytes(encoded))
    except DecodeError:
        return
    assert isinstance(message, Ping | Note)


def test_canonical_bytes_do_not_depend_on_dict_insertion_order() -> None:
    assert canonical_bytes({"b": 1, "a": 2}) == canonical_bytes({"a": 2, "b": 1})


def test_frames_split_anywhere_reassemble() -> None:
    bodies = [b"", b"a", b"hello world", bytes(1000)]
    stream = b"".join(encode_frame(body) for body in bodies)
    for chunk_size in (1, 3, 7, len(stream)):
        decoder = FrameDecoder(max_frame_bytes=2000)
        received: list[bytes] = []
        for start in range(0, len(stream), chunk_size):
            received.extend(decoder.feed(stream[start : start + chunk_size]))
        assert received == bodies
        assert decoder.buffered_bytes == 0


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    header_only = (101).to_bytes(4, "big")
    with pytest.raises(FrameTooLarge) as caught:
        list(decoder.feed(header_only))
    assert caught.value.announced_bytes == 101
    with pytest.raises(WireError):
        list(decoder.feed(b"more"))


def test_a_huge_announced_length_allocates_nothing() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    with pytest.raises(FrameTooLarge):
        list(decoder.feed(b"\xff\xff\xff\xff" + b"x" * 10))
    assert decoder.buffered_bytes == 0


@given(st.binary(max_size=2000))
@settings(max_examples=300)
def test_arbitrary_streams_yield_frames_or_frame_too_large(data: bytes) -> None:
    decoder = FrameDecoder(max_frame_bytes=512)
    try:
        for body in decoder.feed(data):
            assert len(body) <= 512
    except FrameTooLarge:
        return
    assert decoder.buffered_bytes <= 4 + 512


def test_encoding_an_oversized_frame_is_a_local_error() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(bytes(11), max_frame_bytes=10)
