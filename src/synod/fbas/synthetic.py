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
import random
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


def public_like_network(
    seed: int = 1, top_tier_orgs: int = 7, watchers: int = 616
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(nodes, organisations) shaped like the Stellar public network of 2025 (637 nodes):
    a symmetric top tier of `top_tier_orgs` organisations of 3 validators, and
    `watchers` nodes each trusting 2/3 of two or three top-tier organisations drawn
    with `random.Random(seed)`.  About eight key mentions per node, as in the real
    snapshot, so loading costs what it costs there."""
    rng = random.Random(seed)
    nodes, orgs = symmetric_network(top_tier_orgs)
    members = [org["validators"] for org in orgs]
    for index in range(watchers):
        trusted = rng.sample(range(top_tier_orgs), rng.choice((2, 2, 3)))
        nodes.append(
            {
                "publicKey": synthetic_key(f"watcher{index}"),
                "name": f"watcher {index}",
                "active": True,
                "isValidating": False,
                "quorumSet": {
                    "threshold": two_thirds(len(trusted)),
                    "validators": [],
                    "innerQuorumSets": [
                        {"threshold": 2, "validators": list(members[o]), "innerQuorumSets": []}
                        for o in sorted(trusted)
                    ],
                },
            }
        )
    return nodes, orgs


def asymmetric_network(
    organizations: int,
    seed: int,
    validators_per_org: int = 3,
    trusted_range: tuple[int, int] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(nodes, organisations) in stellarbeat JSON where each organisation trusts its own
    random subset of organisations (itself included): no two organisations share a
    quorum set, so no symmetry shortcut applies.

    Organisation o draws, with `random.Random(seed)`, how many organisations it trusts
    (uniform in `trusted_range`, by default a third to two thirds of all of them) and
    which; its validators all use the quorum set "2/3 of those organisations, each 2/3
    of its validators"."""
    if organizations < 2 or validators_per_org < 1:
        raise ValueError("need at least two organisations and one validator each")
    rng = random.Random(seed)
    low, high = trusted_range or (max(2, organizations // 3), max(2, 2 * organizations // 3))
    members = [
        [synthetic_key(f"asym{seed}-org{o}-v{v}") for v in range(validators_per_org)]
        for o in range(organizations)
    ]
    inner = two_thirds(validators_per_org)
    nodes: list[dict[str, Any]] = []
    for o, keys in enumerate(members):
        others = [p for p in range(organizations) if p != o]
        count = min(organizations, rng.randint(low, high))
        trusted = sorted([o, *rng.sample(others, count - 1)])
        for v, key in enumerate(keys):
            nodes.append(
                {
                    "publicKey": key,
                    "name": f"org{o} validator {v}",
                    "homeDomain": f"org{o}.example",
                    "organizationId": f"org{o}",
                    "isValidating": True,
                    "active": True,
                    "quorumSet": {
                        "threshold": two_thirds(len(trusted)),
                        "validators": [],
                        "innerQuorumSets": [_leaf(inner, members[p]) for p in trusted],
                    },
                }
            )
    orgs = [
        {"id": f"org{o}", "name": f"Org {o}", "validators": keys} for o, keys in enumerate(members)
    ]
    return nodes, orgs


def _leaf(threshold: int, keys: list[str]) -> dict[str, Any]:
    return {"threshold": threshold, "validators": list(keys), "innerQuorumSets": []}
