"""FBAS analysis: what a federated network of Stellar-style quorum sets can survive.

This package is network analysis, for operators and auditors of a federated network; the
quorum math that the protocols themselves run (`QuorumSet`, slices, v-blocking sets,
committees) lives in `synod.quorum`.  `synod.fbas` depends on `synod.quorum`, never the
other way, so a node running SCP never loads the SAT solver used here.

- `synod.fbas.network`: the analysable model (`Fbas`, node sets as integer bitsets) and
  the fixpoints on it (greatest quorum, blocking cascade, strongly connected cores);
- `synod.fbas.load`: loaders for stellarbeat JSON, stellar-core quorum JSON and synod
  quorum sets, with `LoadOptions` making the contested semantics explicit;
- `synod.fbas.analysis`: quorum intersection, minimal blocking and splitting sets, the top
  tier (SAT and MaxSAT through python-sat);
- `synod.fbas.cascade`: the organisation quotient of a network and the exact search
  for smallest blocking sets over the cascade of organisations;
- `synod.fbas.symmetry`: interchangeable nodes and organisations, symmetry breaking;
- `synod.fbas.graph`: trust-graph layout and SVG/HTML rendering;
- `synod.fbas.synthetic`: symmetric synthetic networks for benchmarks and tests;
- `synod.fbas.bruteforce`: the exhaustive reference the SAT analyses are tested against.
"""

from synod.fbas.analysis import (
    IntersectionResult,
    MinimalSet,
    MinimalSetResult,
    TopTierResult,
    check_intersection,
    minimal_blocking_sets,
    minimal_splitting_sets,
    top_tier,
)
from synod.fbas.load import (
    FbasInputError,
    LoadOptions,
    detect_and_load,
    from_quorum_sets,
    load_stellar_core,
    load_stellarbeat,
)
from synod.fbas.network import Fbas, NodeInfo, Threshold, bits_from, iter_bits

__all__ = [
    "Fbas",
    "FbasInputError",
    "IntersectionResult",
    "LoadOptions",
    "MinimalSet",
    "MinimalSetResult",
    "NodeInfo",
    "Threshold",
    "TopTierResult",
    "bits_from",
    "check_intersection",
    "detect_and_load",
    "from_quorum_sets",
    "iter_bits",
    "load_stellar_core",
    "load_stellarbeat",
    "minimal_blocking_sets",
    "minimal_splitting_sets",
    "top_tier",
]
