"""Quorum math that the protocols use: federated quorum sets and weighted committees.

- `synod.quorum.qset`: federated quorum sets (nested k-of-n slices) with stellar-core's
  sanity rules and normalisation; slices, quorums, v-blocking sets, transitive closure.
- `synod.quorum.committee`: weighted threshold committees (quorum above 2N/3, validity
  f + 1) for the protocols with a fixed committee (FastPay, Tusk).

Analysis of whole federated networks (quorum intersection, blocking and splitting sets,
the top tier) is a separate package, `synod.fbas`, built on this one.
"""

from synod.quorum.committee import Committee, CommitteeConfig, CommitteeError, WeightTally
from synod.quorum.qset import (
    InsaneQuorumSet,
    QuorumSet,
    check_sanity,
    is_quorum,
    is_sane,
    is_satisfied_by,
    is_v_blocking,
    largest_quorum_within,
    normalize,
    qset_hash,
    transitive_closure,
)

__all__ = [
    "Committee",
    "CommitteeConfig",
    "CommitteeError",
    "InsaneQuorumSet",
    "QuorumSet",
    "WeightTally",
    "check_sanity",
    "is_quorum",
    "is_sane",
    "is_satisfied_by",
    "is_v_blocking",
    "largest_quorum_within",
    "normalize",
    "qset_hash",
    "transitive_closure",
]
