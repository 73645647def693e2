"""SCP nodes that sign, verify and hash the Stellar way reach agreement, and every
envelope they emit is one that stellar-sdk decodes and verifies on its own.

The cores get `StellarNetwork.sign_statement` / `verify_envelope` and
`stellar_qset_hash` through `ScpConfig`; the checks on what they sent use only
stellar-sdk (its XDR classes, network id and `Keypair.verify`).
"""

from __future__ import annotations

import hashlib

import pytest

pytest.importorskip("stellar_sdk", reason="needs the synod[stellar] extra (stellar-sdk)")
from stellar_sdk import Keypair, Network, xdr
from stellar_sdk.exceptions import BadSignatureError

from synod.core import Proposed
from synod.crypto import KeyPair
from synod.quorum.qset import QuorumSet
from synod.scp.core import RejectReason, ScpConfig, ScpCore
from synod.scp.messages import Envelope, Statement, companion_quorum_set_hash
from synod.scp.stellar import (
    PUBLIC_NETWORK_PASSPHRASE,
    TESTNET_NETWORK_PASSPHRASE,
    StellarNetwork,
    envelope_to_xdr,
    stellar_qset_hash,
)
from synod.sim.scenarios.scp import externalized, scp_world
from synod.sim.world import World

KEYS = [KeyPair.from_seed(bytes([index + 11]) * 32) for index in range(4)]
QSET = QuorumSet(threshold=3, validators=tuple(sorted(key.node_id for key in KEYS)))
SLOT = 1


def sdk_qset_hash() -> bytes:
    """SHA-256 of the quorum set's XDR, built with stellar-sdk's classes."""
    validators = [
        xdr.NodeID(xdr.PublicKey(xdr.PublicKeyType.PUBLIC_KEY_TYPE_ED25519, xdr.Uint256(v)))
        for v in QSET.validators
    ]
    sdk_qset = xdr.SCPQuorumSet(xdr.Uint32(QSET.threshold), validators, [])
    return hashlib.sha256(sdk_qset.to_xdr_bytes()).digest()


def build_network(passphrases: list[str], sent: list[Envelope], seed: int) -> World:
    configs = []
    for keys, passphrase in zip(KEYS, passphrases, strict=True):
        stellar = StellarNetwork(passphrase)

        def signer(
            signing_keys: KeyPair, statement: Statement, stellar: StellarNetwork = stellar
        ) -> Envelope:
            envelope = stellar.sign_statement(signing_keys, statement)
            sent.append(envelope)
            return envelope

        configs.append(
            ScpConfig(
                keys=keys,
                quorum_set=QSET,
                qset_hasher=stellar_qset_hash,
                signer=signer,
                verifier=stellar.verify_envelope,
            )
        )
    world = scp_world(configs, seed=seed)
    for index, keys in enumerate(KEYS):
        world.input(keys.node_id, Proposed(f"value {index}".encode()))
    return world


def verified_by_stellar_sdk(envelope: Envelope, passphrase: str) -> bool:
    sdk_envelope = xdr.SCPEnvelope.from_xdr_bytes(envelope_to_xdr(envelope))
    payload = (
        Network(passphrase).network_id()
        + xdr.EnvelopeType.ENVELOPE_TYPE_SCP.to_xdr_bytes()
        + sdk_envelope.statement.to_xdr_bytes()
    )
    signer = sdk_envelope.statement.node_id.node_id.ed25519.uint256
    try:
        Keypair.from_raw_ed25519_public_key(signer).verify(
            payload, sdk_envelope.signature.signature
        )
    except BadSignatureError:
        return False
    return True


def test_nodes_signing_the_stellar_way_agree_and_stellar_sdk_verifies_every_envelope() -> None:
    sent: list[Envelope] = []
    world = build_network([TESTNET_NETWORK_PASSPHRASE] * 4, sent, seed=5)
    nodes = [keys.node_id for keys in KEYS]
    assert world.step_until(lambda: all(SLOT in externalized(world, n) for n in nodes))
    decided = {externalized(world, n)[SLOT] for n in nodes}
    assert len(decided) == 1
    assert decided <= {f"value {index}".encode() for index in range(4)}
    assert sent
    expected_hash = sdk_qset_hash()
    for envelope in sent:
        assert verified_by_stellar_sdk(envelope, TESTNET_NETWORK_PASSPHRASE)
        assert not verified_by_stellar_sdk(envelope, PUBLIC_NETWORK_PASSPHRASE)
        assert companion_quorum_set_hash(envelope.statement.pledges) == expected_hash
    for node in nodes:
        assert world.core(node, ScpCore).rejected[RejectReason.BAD_SIGNATURE] == 0


def test_a_node_signing_for_another_network_is_refused_and_the_rest_still_agree() -> None:
    sent: list[Envelope] = []
    passphrases = [TESTNET_NETWORK_PASSPHRASE] * 3 + [PUBLIC_NETWORK_PASSPHRASE]
    world = build_network(passphrases, sent, seed=9)
    honest = [keys.node_id for keys in KEYS[:3]]
    assert world.step_until(lambda: all(SLOT in externalized(world, n) for n in honest))
    assert len({externalized(world, n)[SLOT] for n in honest}) == 1
    for node in honest:
        assert world.core(node, ScpCore).rejected[RejectReason.BAD_SIGNATURE] >= 1
    assert SLOT not in externalized(world, KEYS[3].node_id)
