"""FBAS analysis timings on the shared Stellar snapshots and synthetic networks (JSON lines).

Each line times one analysis (quorum intersection, top tier, minimum blocking and
splitting sets by node and by organisation) on one network, with the result size.

The bound, measured in the same run on the same machine, is the *naive SAT encoding*:
the same solver and the same per-node constraints over the whole candidate set, without
synod's reductions: no greatest-quorum or strongly-connected-core pruning, no symmetry
breaking (for intersection: one SAT instance over every node with a quorum set; for the
rest: one cascade over the greatest quorum).  This is synod's own encoding with the
reductions switched off, not an independent tool: no peer tool is installed here.
`ratio` = synod time / bound time (below 1: faster than the naive encoding).
The naive encoding runs in a child process with a time limit; when it hits the limit
the line says `bound_timed_out: true` and `ratio` is an upper bound.
The results of both must agree, or the script exits with status 1.

Usage: python benchmarks/fbas_bench.py [--quick] [--max-orgs N] [--bound-timeout S]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synod.fbas.analysis import (
    check_intersection,
    find_disjoint_quorums,
    minimal_blocking_sets,
    minimal_splitting_sets,
    top_tier,
)
from synod.fbas.load import load_stellarbeat
from synod.fbas.network import Fbas, bits_from
from synod.fbas.synthetic import symmetric_network

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fbas"
SNAPSHOTS = [
    "broken.json",
    "correct.json",
    "stellarbeat_top_tier_2024-09.json",
    "stellarbeat_nodes_2019-09-17.json",
]
ORGS_2019 = "stellarbeat_organizations_2019-09-17.json"


def intersection_size(fbas: Fbas) -> Any:
    result = check_intersection(fbas)
    return "intersects" if result.intersects else "disjoint"


def naive_intersection(fbas: Fbas) -> Any:
    candidates = bits_from(v for v, q in enumerate(fbas.qsets) if q is not None)
    return "intersects" if find_disjoint_quorums(fbas, candidates) is None else "disjoint"


ANALYSES: dict[str, tuple[Callable[[Fbas], Any], Callable[[Fbas], Any]]] = {
    "intersection": (intersection_size, naive_intersection),
    "top_tier": (
        lambda f: top_tier(f).nodes.bit_count(),
        lambda f: top_tier(f, symmetry=False, reduce=False).nodes.bit_count(),
    ),
    "blocking_node": (
        lambda f: minimal_blocking_sets(f).size,
        lambda f: minimal_blocking_sets(f, symmetry=False, reduce=False).size,
    ),
    "blocking_org": (
        lambda f: minimal_blocking_sets(f, "org").size,
        lambda f: minimal_blocking_sets(f, "org", symmetry=False, reduce=False).size,
    ),
    "splitting_node": (
        lambda f: minimal_splitting_sets(f).size,
        lambda f: minimal_splitting_sets(f, symmetry=False, reduce=False).size,
    ),
    "splitting_org": (
        lambda f: minimal_splitting_sets(f, "org").size,
        lambda f: minimal_splitting_sets(f, "org", symmetry=False, reduce=False).size,
    ),
}


def timed(function: Callable[[Fbas], Any], fbas: Fbas) -> tuple[Any, float]:
    """Result and best wall time of up to three runs (one when a run takes over 1 s)."""
    best = float("inf")
    result: Any = None
    for _ in range(3):
        start = time.perf_counter()
        result = function(fbas)
        best = min(best, time.perf_counter() - start)
        if best > 1.0:
            break
    return result, best


def _child(name: str, nodes: Any, orgs: Any, queue: Any) -> None:
    fbas = load_stellarbeat(nodes, organizations=orgs)
    queue.put(timed(ANALYSES[name][1], fbas))


def bounded(name: str, nodes: Any, orgs: Any, timeout_s: float) -> tuple[Any, float, bool]:
    """Run the naive encoding in a child process: (result, seconds, timed_out)."""
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_child, args=(name, nodes, orgs, queue))
    process.start()
    process.join(timeout_s)
    if process.is_alive():
        process.kill()
        process.join()
        return None, timeout_s, True
    result, seconds = queue.get()
    return result, seconds, False


def measure(
    label: str, nodes: Any, orgs: Any, bound_timeout_s: float, extra: dict[str, Any]
) -> bool:
    fbas = load_stellarbeat(nodes, organizations=orgs)
    agreed = True
    for name, (function, _) in ANALYSES.items():
        result, seconds = timed(function, fbas)
        bound_result, bound_seconds, timed_out = bounded(name, nodes, orgs, bound_timeout_s)
        if not timed_out and bound_result != result:
            agreed = False
        line = {
            "bench": "fbas",
            "network": label,
            "nodes": len(fbas),
            **extra,
            "analysis": name,
            "result": result,
            "seconds": round(seconds, 4),
            "bound": "naive-sat",
            "bound_seconds": round(bound_seconds, 4),
            "bound_timed_out": timed_out,
            "bound_result": bound_result,
            "ratio": round(seconds / bound_seconds, 4) if bound_seconds > 0 else None,
        }
        print(json.dumps(line), flush=True)
    return agreed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic sizes 5, 10, 20 only")
    parser.add_argument("--max-orgs", type=int, default=50)
    parser.add_argument("--bound-timeout", type=float, default=10.0, help="seconds per naive run")
    arguments = parser.parse_args()
    agreed = True
    if DATA.exists():
        orgs_2019 = json.loads((DATA / ORGS_2019).read_text())
        for name in SNAPSHOTS:
            nodes = json.loads((DATA / name).read_text())
            orgs = orgs_2019 if "2019" in name else None
            agreed &= measure(name, nodes, orgs, arguments.bound_timeout, {})
    else:
        print(f"shared data not found at {DATA}; synthetic networks only", file=sys.stderr)
    sizes = [5, 10, 20] if arguments.quick else [5, 10, 15, 20, 30, 40, 50]
    for count in (s for s in sizes if s <= arguments.max_orgs):
        nodes, orgs = symmetric_network(count)
        extra = {"organizations": count, "validators_per_org": 3, "thresholds": "2/3"}
        agreed &= measure(f"synthetic-{count}-orgs", nodes, orgs, arguments.bound_timeout, extra)
    if not agreed:
        print("synod and the naive encoding disagree", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
