"""Synthetic federated networks in stellarbeat JSON form, for benchmarks and tests.

Theory of operation
-------------------
`symmetric_network` builds the shape the Stellar top tier converges to: organisations
of equal size, each validator trusting "a threshold of organisations, each a threshold of
its validators".  Keys are derived from names (sha256), so the same arguments always
give the same network.  The output is plain stellarbeat JSON (a list of node objects), so
it goes through the same loader as real snapshots.
"""

from __future__ import annotations

import hashlib
from typing import Any

from synod.fbas.load import encode_public_key


def synthetic_key(name: str) -> str:
    """A deterministic, valid Stellar public key for `name`."""
    return encode_public_key(hashlib.sha256(b"synod-fbas-synthetic:" + name.encode()).digest())


def two_thirds(count: int) -> int:
    """The smallest threshold of at least 2/3 of `count` (ceil(2 * count / 3))."""
    return -(-2 * count // 3)


def symmetric_network(
    organizations: int,
    validators_per_org: int = 3,
    org_threshold: int | None = None,
    inner_threshold: int | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(nodes, organisations) in stellarbeat JSON for `organizations` organisations of
    `validators_per_org` validators each; thresholds default to 2/3 at both levels."""
    if organizations < 1 or validators_per_org < 1:
        raise ValueError("need at least one organisation and one validator")
    top = two_thirds(organizations) if org_threshold is None else org_threshold
    inner = two_thirds(validators_per_org) if inner_threshold is None else inner_threshold
    members = [
        [synthetic_key(f"org{o}-v{v}") for v in range(validators_per_org)]
        for o in range(organizations)
    ]

    def quorum_set() -> dict[str, Any]:
        # A fresh object per node, so that callers may edit one node's quorum set.
        return {
            "threshold": top,
            "validators": [],
            "innerQuorumSets": [
                {"threshold": inner, "validators": list(keys), "innerQuorumSets": []}
                for keys in members
            ],
        }

    nodes = [
        {
            "publicKey": key,
            "name": f"org{o} validator {v}",
            "homeDomain": f"org{o}.example",
            "organizationId": f"org{o}",
            "isValidating": True,
            "active": True,
            "quorumSet": quorum_set(),
        }
        for o, keys in enumerate(members)
        for v, key in enumerate(keys)
    ]
    orgs = [
        {"id": f"org{o}", "name": f"Org {o}", "validators": keys} for o, keys in enumerate(members)
    ]
    return nodes, orgs
