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

Whole-process lines (`"bench": "fbas-process"`) time `synod fbas check|splitting|
blocking|top-tier FILE --json` from start to exit (best of 3, bytecode cached outside
the tree as an installed package would have it) on each snapshot and on a synthetic
network shaped like the 2025 public network (637 nodes, `public_like_network`).  The
reference measured in the same run is the same pipeline without synod's reductions: a
process that starts Python, imports, reads and loads the file with the same loader and
runs the naive encoding (`--naive-process`).  python-fbas, the tool the issue compares
with, is not installable here, so its figures are not reproduced by this script.

Asymmetric lines (`"bench": "fbas-asymmetric"`) run minimum blocking sets and splitting
sets (each by node and by organisation) on `asymmetric_network(50, seed)` for seeds
1..N under a 10 s stop, and say whether the answer was proven within it, the bounds
reached and how long the search ran on after the stop; a summary line per analysis
counts the seeds proven within the limit.

Usage: python benchmarks/fbas_bench.py [--quick] [--max-orgs N] [--bound-timeout S]
       [--skip-in-process] [--asymmetric-seeds N] [--process-runs N]
       [--quorum-growth LIMIT]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
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
from synod.fbas.cascade import organisation_quotient
from synod.fbas.load import load_stellarbeat
from synod.fbas.network import Fbas, bits_from
from synod.fbas.quorum_size import QuorumSizeSearch
from synod.fbas.synthetic import asymmetric_network, public_like_network, symmetric_network

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/report.py
from report import add_json_option, configure, emit

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
        emit(line)
    return agreed


PROCESS_ANALYSES = {
    "check": "intersection",
    "splitting": "splitting_node",
    "blocking": "blocking_node",
    "top-tier": "top_tier",
}


def naive_process(analysis: str, path: str) -> int:
    """Child mode: load `path` and print the naive encoding's answer (the reference)."""
    nodes = json.loads(Path(path).read_text(encoding="utf-8"))
    print(json.dumps(ANALYSES[analysis][1](load_stellarbeat(nodes))))
    return 0


def _process_environment(cache: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    environment["PYTHONPYCACHEPREFIX"] = cache
    return environment


def _best_process_time(command: list[str], environment: dict[str, str], runs: int) -> float:
    subprocess.run(command, env=environment, capture_output=True, check=False)  # warm caches
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=environment, capture_output=True, check=False)
        best = min(best, time.perf_counter() - start)
    return best


def measure_processes(label: str, path: Path, runs: int, cache: str) -> None:
    environment = _process_environment(cache)
    python = sys.executable
    for command, analysis in PROCESS_ANALYSES.items():
        synod = [python, "-m", "synod.cli.main", "fbas", command, str(path), "--json"]
        naive = [python, __file__, "--naive-process", analysis, str(path)]
        seconds = _best_process_time(synod, environment, runs)
        reference = _best_process_time(naive, environment, runs)
        line = {
            "bench": "fbas-process",
            "network": label,
            "analysis": command,
            "seconds": round(seconds, 4),
            "reference": "naive-sat-process",
            "reference_seconds": round(reference, 4),
            "ratio": round(seconds / reference, 4),
        }
        emit(line)


def measure_asymmetric(seeds: int, organizations: int = 50, limit_s: float = 10.0) -> None:
    """Each analysis under a `limit_s` stop, the whole time from the loaded network to
    the answer; `proven` says whether it was proven within the limit, and
    `seconds_after_stop` how long the search ran on after the stop was first asked.  A
    summary line per analysis counts the seeds proven within the limit.  The load
    average is reported because the machine may be shared."""
    proven: dict[str, int] = {}
    for seed in range(1, seeds + 1):
        nodes, orgs = asymmetric_network(organizations, seed)
        fbas = load_stellarbeat(nodes, organizations=orgs)
        for name, analysis, grouping in (
            ("blocking_node", minimal_blocking_sets, None),
            ("blocking_org", minimal_blocking_sets, "org"),
            ("splitting_node", minimal_splitting_sets, None),
            ("splitting_org", minimal_splitting_sets, "org"),
        ):
            start = time.perf_counter()
            deadline = start + limit_s
            first_stop: list[float] = []

            def stop(deadline: float = deadline, first_stop: list[float] = first_stop) -> bool:
                now = time.perf_counter()
                if now <= deadline:
                    return False
                first_stop.append(now)
                return True

            result = analysis(fbas, grouping, stop=stop)
            end = time.perf_counter()
            within = result.optimal and end - start <= limit_s
            proven[name] = proven.get(name, 0) + int(within)
            line = {
                "bench": "fbas-asymmetric",
                "network": f"asymmetric-{organizations}-orgs",
                "seed": seed,
                "nodes": len(fbas),
                "analysis": name,
                "seconds": round(end - start, 3),
                "limit_seconds": limit_s,
                "proven": within,
                "optimal": result.optimal,
                "lower_bound": result.lower_bound,
                "upper_bound": result.size,
                "seconds_after_stop": round(end - first_stop[0], 3) if first_stop else None,
                "load_average": round(os.getloadavg()[0], 2),
            }
            emit(line)
    for name, count in proven.items():
        emit(
            {
                "bench": "fbas-asymmetric-summary",
                "network": f"asymmetric-{organizations}-orgs",
                "analysis": name,
                "seeds": seeds,
                "proven_within_limit": count,
                "limit_seconds": limit_s,
            }
        )


def measure_quorum_growth(seeds: int, largest: int, organizations: int = 50) -> None:
    """How the certificate behind the splitting bound grows: the groups the exact search
    examines (and its seconds) to prove that the asymmetric network has no quorum of at
    most `limit` organisations, for each limit from 24 up to `largest`, or up to the
    first limit where such a quorum exists.  Proving that no split of fewer than L nodes
    exists needs at least "no quorum of (organisations + L) // 2" (the two quorums of a
    split with nothing faulty overlap in |P1| + |P2| - organisations), so `growth`, the
    ratio of work between consecutive limits, says what each further node of bound costs."""
    for seed in range(1, seeds + 1):
        nodes, orgs = asymmetric_network(organizations, seed)
        fbas = load_stellarbeat(nodes, organizations=orgs)
        quotient = organisation_quotient(fbas, (1 << len(fbas)) - 1, closed=True)
        assert quotient is not None
        previous = None
        for limit in range(24, largest + 1):
            search = QuorumSizeSearch(
                quotient.entries, quotient.threshold, (1 << quotient.size) - 1
            )
            start = time.perf_counter()
            found = search.exists(limit, 0)
            emit(
                {
                    "bench": "fbas-quorum-growth",
                    "network": f"asymmetric-{organizations}-orgs",
                    "seed": seed,
                    "limit": limit,
                    "quorum_exists": found is not None,
                    "groups_examined": search.work,
                    "seconds": round(time.perf_counter() - start, 3),
                    "growth": round(search.work / previous, 1) if previous else None,
                    "load_average": round(os.getloadavg()[0], 2),
                }
            )
            if found is not None:
                break
            previous = search.work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="synthetic sizes 5, 10, 20 only")
    parser.add_argument("--max-orgs", type=int, default=50)
    parser.add_argument("--bound-timeout", type=float, default=10.0, help="seconds per naive run")
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--asymmetric-seeds", type=int, default=10)
    parser.add_argument("--process-runs", type=int, default=3)
    parser.add_argument("--naive-process", nargs=2, metavar=("ANALYSIS", "FILE"))
    parser.add_argument(
        "--quorum-growth",
        type=int,
        metavar="LIMIT",
        help="only the cost of proving 'no quorum of at most 24..LIMIT organisations' on "
        "the asymmetric networks (seeds 1..--asymmetric-seeds)",
    )
    add_json_option(parser)
    arguments = parser.parse_args()
    configure(arguments)
    if arguments.naive_process:
        return naive_process(*arguments.naive_process)
    if arguments.quorum_growth:
        measure_quorum_growth(arguments.asymmetric_seeds, arguments.quorum_growth)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        public_like = Path(scratch) / "public-like-637.json"
        public_like.write_text(json.dumps(public_like_network(seed=1)[0]))
        files = [(name, DATA / name) for name in SNAPSHOTS if (DATA / name).exists()]
        for label, path in [*files, ("public-like-637", public_like)]:
            measure_processes(label, path, arguments.process_runs, str(Path(scratch) / "pyc"))
    measure_asymmetric(arguments.asymmetric_seeds)
    if arguments.skip_in_process:
        return 0
    return measure_in_process(arguments)


def measure_in_process(arguments: argparse.Namespace) -> int:
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
