"""Shared set-up for the single-core SCP tests: four keys, a 3-of-4 quorum set, and a
core whose application refuses values starting with b"bad"."""

from __future__ import annotations

from synod.crypto import KeyPair
from synod.quorum.qset import QuorumSet
from synod.scp import (
    Application,
    Envelope,
    ScpConfig,
    ScpCore,
    Statement,
    Validity,
    sign_statement,
)

KEYS = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(4)]
V0, PEER = KEYS[0], KEYS[1]
QSET = QuorumSet(threshold=3, validators=tuple(key.node_id for key in KEYS))


class NoBadValues(Application):
    def validate_value(self, slot_index: int, value: bytes, nomination: bool) -> Validity:
        return Validity.INVALID if value.startswith(b"bad") else Validity.FULLY_VALID


def make_core(**overrides: object) -> ScpCore:
    config = ScpConfig(keys=V0, quorum_set=QSET, application=NoBadValues())
    for name, value in overrides.items():
        setattr(config, name, value)
    return ScpCore(config)


def envelope_from(key: KeyPair, slot_index: int, pledges: object) -> Envelope:
    return sign_statement(key, Statement(key.node_id, slot_index, pledges))  # type: ignore[arg-type]
