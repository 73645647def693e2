"""Stellar overlay costs against the crypto bound measured in the same run.

Prints JSON lines:

* `handshake`  a full HELLO/AUTH exchange between two `StellarPeer`s in one process
               (both sides' work), against the cryptography it needs: two certificate
               signature checks and two X25519 products (certificates are made once per
               hour, so signing is not counted);
* `mac`        checking one authenticated message's HMAC-SHA256, per KiB of message;
* `decode`     strictly decoding a quorum-set message (XDR in Python), per MiB: why a
               node decodes only the quorum sets whose hash it asked for.

Usage: `python benchmarks/stellar_overlay_bench.py [--rounds N]`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nacl.bindings
from stellar_sdk import xdr

from synod.crypto import KeyPair
from synod.stellar.auth import OverlayIdentity, mac_matches
from synod.stellar.peer import OverlaySettings, Role, StellarPeer, Write, _decode_message

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/report.py
from report import add_json_option, configure, emit

SETTINGS = OverlaySettings(passphrase="Test SDF Network ; September 2015")


def handshake(first: OverlayIdentity, second: OverlayIdentity) -> None:
    dialer = StellarPeer(first, SETTINGS, Role.WE_CALLED_REMOTE, os.urandom(32))
    acceptor = StellarPeer(second, SETTINGS, Role.REMOTE_CALLED_US, os.urandom(32))
    outputs, side = dialer.start(1000), acceptor
    while data := b"".join(o.data for o in outputs if isinstance(o, Write)):
        outputs = side.receive(data, 1000)
        side = dialer if side is acceptor else acceptor
    assert dialer.authenticated and acceptor.authenticated


def crypto_bound(identity: OverlayIdentity) -> None:
    keys = identity.keys
    _public, secret = nacl.bindings.crypto_sign_seed_keypair(keys.seed)
    signed = nacl.bindings.crypto_sign(os.urandom(32), secret)
    for _ in range(2):
        nacl.bindings.crypto_sign_open(signed, keys.node_id)
        nacl.bindings.crypto_scalarmult(os.urandom(32), identity.curve_public)


def per_call_s(function: object, rounds: int) -> float:
    assert callable(function)
    start = time.perf_counter()
    for _ in range(rounds):
        function()
    return (time.perf_counter() - start) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    add_json_option(parser)
    arguments = parser.parse_args()
    configure(arguments)
    rounds = arguments.rounds
    first, second = (
        OverlayIdentity.create(KeyPair.generate(), SETTINGS.network_id, os.urandom(32))
        for _ in range(2)
    )
    first.cert_at(1000), second.cert_at(1000)
    exchange = per_call_s(lambda: handshake(first, second), rounds)
    bound = per_call_s(lambda: crypto_bound(first), rounds)
    emit({"line": "handshake", "ms": round(exchange * 1e3, 3),
          "crypto_bound_ms": round(bound * 1e3, 3), "ratio": round(exchange / bound, 2)})
    message = os.urandom(1024 * 1024)
    key = os.urandom(32)
    mac = per_call_s(lambda: mac_matches(key, 1, message, bytes(32)), 20)
    emit({"line": "mac", "us_per_kib": round(mac * 1e6 / 1024, 3)})
    validators = [
        xdr.NodeID(xdr.PublicKey(xdr.PublicKeyType.PUBLIC_KEY_TYPE_ED25519,
                                 xdr.Uint256(os.urandom(32))))
        for _ in range(29_000)
    ]
    qset = xdr.StellarMessage(
        xdr.MessageType.SCP_QUORUMSET, q_set=xdr.SCPQuorumSet(xdr.Uint32(1), validators, [])
    )
    body = bytes(qset.to_xdr_bytes())
    decode = per_call_s(lambda: _decode_message(body), 3)
    emit({"line": "decode", "s_per_mib": round(decode / (len(body) / 2**20), 3),
          "ratio_to_mac": round(decode / (mac * len(body) / 2**20), 1)})


if __name__ == "__main__":
    main()
