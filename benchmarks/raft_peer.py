"""One pysyncobj (Raft) node replicating a log of transactions, for `tusk_bench.py`.

The peer in the Tusk benchmark: a `SyncObj` whose one replicated method appends a
transaction to a list.  Raft tolerates crash faults only; the log is journalled to a
file (pysyncobj's `journalFile`, written through mmap, not fsynced per entry), so a
killed node restarts with its log, as Raft's crash model needs.

Protocol with the benchmark (JSON lines):

- stdout `{"event": "ready"}` once this node knows a leader and has caught up with it;
- stdin `{"transactions": [text, ...]}`: each text becomes one replicated `append`
  submitted at this node (a follower forwards it to the leader, as pysyncobj does);
  stdout `{"event": "accepted", "count": n}` once all n are queued;
- stdout `{"event": "applied", "numbers": [...], "at": [...]}`: transactions applied
  here in log order (Raft committed them: a majority stored them), with the
  `time.monotonic()` of each apply (CLOCK_MONOTONIC is one clock for all processes on
  Linux, so the benchmark can compare it with its own submission times);
- stdout `{"event": "committed", ...}` likewise for transactions submitted at this node,
  when the callback reports success here (the apply of the entry at this node);
- stdout `{"event": "failed", "number": n, "reason": code}` for a callback with an error.

Lines are gathered and written every 10 ms, so the output costs little; the times in
them are taken at the apply itself.  Stdin closed or SIGTERM ends the process.

    python benchmarks/raft_peer.py --self 127.0.0.1:PORT --partners HOST:PORT,... \
        --journal FILE [--unbatched]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import threading
import time
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated


def number_of(transaction: bytes) -> int:
    """The benchmark's transactions start `tx-NNNNNNNN-`."""
    return int(transaction[3:11])


class ReplicatedLog(SyncObj):  # type: ignore[misc]
    """A list of transactions that Raft keeps identical on every node."""

    def __init__(self, self_address: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_address, partners, conf=conf)
        self.transactions: list[bytes] = []
        self.applied: collections.deque[tuple[int, float]] = collections.deque()

    @replicated  # type: ignore[untyped-decorator]
    def append(self, transaction: bytes) -> int:
        self.transactions.append(transaction)
        self.applied.append((number_of(transaction), time.monotonic()))
        return len(self.transactions)


class Reporter:
    """Gathers what the Raft thread records and writes it as JSON lines."""

    def __init__(self, log: ReplicatedLog) -> None:
        self.log = log
        self.committed: collections.deque[tuple[int, float]] = collections.deque()
        self.failed: collections.deque[tuple[int, int]] = collections.deque()
        self.lock = threading.Lock()

    def write(self, line: dict[str, Any]) -> None:
        with self.lock:
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()

    def callback(self, number: int) -> Any:
        def done(result: object, error: int) -> None:
            if error == FAIL_REASON.SUCCESS:
                self.committed.append((number, time.monotonic()))
            else:
                self.failed.append((number, error))

        return done

    def flush_forever(self) -> None:
        while True:
            time.sleep(0.01)
            self.flush()

    def flush(self) -> None:
        for kind, queue in (("applied", self.log.applied), ("committed", self.committed)):
            pairs = drain(queue)
            if pairs:
                self.write(
                    {"event": kind, "numbers": [n for n, _ in pairs], "at": [a for _, a in pairs]}
                )
        for number, reason in drain(self.failed):
            self.write({"event": "failed", "number": number, "reason": reason})


def drain(queue: collections.deque[Any]) -> list[Any]:
    items = []
    while queue:
        items.append(queue.popleft())
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--self", dest="self_address", required=True)
    parser.add_argument("--partners", required=True, help="Comma-separated HOST:PORT.")
    parser.add_argument("--journal", required=True, help="The Raft log file.")
    parser.add_argument(
        "--unbatched",
        action="store_true",
        help="Send entries as each command arrives (appendEntriesUseBatch=False) instead "
        "of the library's default: batches every appendEntriesPeriod (100 ms).",
    )
    options = parser.parse_args()
    conf = SyncObjConf(
        journalFile=options.journal,
        appendEntriesUseBatch=not options.unbatched,
        # A node started before its partners listen retries after this long; the
        # library's 5 s default only slows the start, not the measured run.
        connectionRetryTime=0.5,
    )
    log = ReplicatedLog(options.self_address, options.partners.split(","), conf)
    reporter = Reporter(log)
    while not (log.isReady() and log._getLeader() is not None):
        time.sleep(0.01)
    threading.Thread(target=reporter.flush_forever, daemon=True).start()
    reporter.write({"event": "ready"})
    try:
        for raw in sys.stdin:
            request = json.loads(raw)
            transactions = [text.encode() for text in request["transactions"]]
            for transaction in transactions:
                log.append(transaction, callback=reporter.callback(number_of(transaction)))
            reporter.write({"event": "accepted", "count": len(transactions)})
    finally:
        log.destroy()


if __name__ == "__main__":
    main()
