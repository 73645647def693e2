"""FastPay benchmark, JSON lines on stdout.

One authority of a four-authority committee runs 1, 2 and 4 shards as real
`synod fastpay server run` processes (SQLite, durable before each reply).  Every
account pays once: the benchmark sends each pre-signed transfer order to the
authority's shard, then the certificate (votes of the three other authorities, made
beforehand) as a confirmation order.  It reports transfers voted and confirmed per
second and the latency p50/p99 of the two round trips, and, in the same run, the crypto
bound: the measured CPU cost of the signatures the authority must check and make per
transfer (order check, vote, quorum of certificate checks, and a cross-shard update's
signature and check when the recipient is in another shard), divided over the cores;
and the shards' own CPU time per transfer, of which that cost is a share.

    python benchmarks/fastpay_bench.py [--quick] [--transfers N] [--max-in-flight M]
"""

from __future__ import annotations

import argparse
import json

from synod.cli.fastpay import run_local_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--transfers", type=int, default=3000)
    parser.add_argument("--max-in-flight", type=int, default=500)
    parser.add_argument("--shards", default="1,2,4", help="comma-separated shard counts")
    arguments = parser.parse_args()
    shard_counts = [int(part) for part in arguments.shards.split(",")]
    transfers = arguments.transfers
    if arguments.quick:
        shard_counts, transfers = [1, 2], 100
    for shards in shard_counts:
        print(json.dumps(run_local_bench(shards, transfers, arguments.max_in_flight)), flush=True)


if __name__ == "__main__":
    main()
