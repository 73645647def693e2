"""Properties of `StellarPeer` under arbitrary input: nothing a peer sends raises, a
refusal always ends the connection, and nothing is buffered beyond one capped record."""

from __future__ import annotations

import hashlib
import os

from hypothesis import given, settings
from hypothesis import strategies as st
from raw_overlay import TESTNET, RawNode, auth_message, split_records
from stellar_sdk import xdr

from synod.crypto import KeyPair
from synod.stellar.auth import OverlayIdentity
from synod.stellar.peer import Closed, OverlaySettings, Role, State, StellarPeer, Write

NOW = 1_800_000_000
SETTINGS = OverlaySettings(passphrase=TESTNET, max_message_bytes=64 * 1024)
KEYS = KeyPair.from_seed(hashlib.sha256(b"properties").digest())
IDENTITY = OverlayIdentity.create(KEYS, SETTINGS.network_id, bytes(range(32)))


def fresh() -> StellarPeer:
    return StellarPeer(IDENTITY, SETTINGS, Role.REMOTE_CALLED_US, os.urandom(32))


def authenticated() -> tuple[RawNode, StellarPeer]:
    raw, synod = RawNode(), fresh()
    outputs = synod.receive(raw.seal(raw.hello(NOW)), NOW)
    (body,) = split_records(b"".join(o.data for o in outputs if isinstance(o, Write)))
    raw.derive_keys(raw.open(body).hello)
    synod.receive(raw.seal(auth_message()), NOW)
    assert synod.authenticated
    return raw, synod


def feed(synod: StellarPeer, data: bytes, cuts: list[int]) -> list[object]:
    outputs: list[object] = []
    start = 0
    for cut in [*sorted(cut % (len(data) + 1) for cut in cuts), len(data)]:
        outputs += synod.receive(data[start:cut], NOW)
        start = cut
    return outputs


def check(synod: StellarPeer, outputs: list[object]) -> None:
    closes = [output for output in outputs if isinstance(output, Closed)]
    assert len(closes) <= 1
    assert (synod.state is State.CLOSED) == bool(closes)
    # What is left over is one record in progress: its header and at most the cap.
    assert synod.buffered_bytes <= 4 + SETTINGS.max_message_bytes


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0), max_size=5))
def test_arbitrary_bytes_before_the_handshake_never_raise(data: bytes, cuts: list[int]) -> None:
    synod = fresh()
    check(synod, feed(synod, data, cuts))


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=2000), st.lists(st.integers(min_value=0), max_size=5))
def test_arbitrary_records_after_the_handshake_never_raise(body: bytes, cuts: list[int]) -> None:
    _raw, synod = authenticated()
    framed = (0x80000000 | len(body)).to_bytes(4, "big") + body
    check(synod, feed(synod, framed, cuts))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_message_bodies_with_a_valid_mac_never_raise(message_xdr: bytes) -> None:
    """The MAC is right, so the bytes reach the type dispatch and the strict decoder."""
    raw, synod = authenticated()

    class Opaque:
        type = xdr.MessageType.GET_SCP_STATE  # any MAC'd type: sealing only needs bytes

        def to_xdr_bytes(self) -> bytes:
            return message_xdr

    outputs = synod.receive(raw.seal(Opaque()), NOW)  # type: ignore[arg-type]
    check(synod, outputs)
