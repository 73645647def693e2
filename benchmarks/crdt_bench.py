"""BFT-CRDT text editing speed on the automerge-paper trace, against bounds of the same run.

Replays the trace (259,778 single-character edits by one author; final length 104,852)
into a synod text, in one signed update per `--edits-per-update` edits (default: 100,
then 1), and prints JSON lines:

* `local`   the author applies the edits and signs the updates (what typing costs);
* `remote`  a second replica decodes, verifies and applies every update (what receiving
            costs), and checks that its text equals the trace's `endContent`;
* `bound`   measured in the same process: plain Python `str` splicing of the same edits
            (a lower bound for any text replay in Python), and Ed25519 signing and
            verification of as many update ids as the run signs (the crypto bound);
* `pycrdt`  the same trace through pycrdt (Yjs), with as many edits per transaction as
            each synod run has per update (one per edit is the issue's comparison),
            when pycrdt is installed (otherwise a line says it was skipped).

Ratios compare each synod phase with those bounds.  Peak resident memory is reported
after each phase (`ru_maxrss`, process-wide and monotonic: later phases include earlier
ones, and the first includes loading the trace); `author_and_messages_mib` and
`receiver_mib` are the growth of resident memory across a phase, an estimate of what a
replica (and the encoded updates) retain.

In the `pycrdt` line, `ratio_synod_<phase>_to_pycrdt` divides each synod phase's time by
pycrdt's (below 1: synod is faster).  pycrdt replays locally and signs nothing; the
synod `remote` phases also verify every signature.

Usage: `python benchmarks/crdt_bench.py [--quick] [--edits N] [--edits-per-update 100 1]`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from synod.core import Broadcast, Received, Step
from synod.crdt.messages import CODEC, UPDATE_DOMAIN, NewText
from synod.crdt.replica import Delete, Edit, InsertText, Put, Replica
from synod.crypto import KeyPair, verify

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/report.py
from report import add_json_option, configure, emit

TRACE_FILE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "traces"
) / "automerge-paper.json.gz"
PATH = ("text",)


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_rss_mib() -> float:
    """Resident memory now (Linux); the growth across a phase estimates what it retains."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return resident_pages * resource.getpagesize() / (1024 * 1024)


def load_trace(limit: int | None) -> tuple[str, list[tuple[int, int, str]], str | None]:
    with gzip.open(TRACE_FILE) as handle:
        trace = json.load(handle)
    patches = [
        (int(position), int(deleted), str(inserted))
        for txn in trace["txns"]
        for position, deleted, inserted in txn["patches"]
    ]
    complete = limit is None or limit >= len(patches)
    return (
        trace["startContent"],
        patches[:limit] if limit else patches,
        trace["endContent"] if complete else None,
    )


def splice(start: str, patches: list[tuple[int, int, str]]) -> tuple[str, float]:
    began = time.perf_counter()
    text = start
    for position, deleted, inserted in patches:
        text = text[:position] + inserted + text[position + deleted :]
    return text, time.perf_counter() - began


def edits_for(patches: list[tuple[int, int, str]]) -> list[Edit]:
    edits: list[Edit] = []
    for position, deleted, inserted in patches:
        if deleted:
            edits.append(Delete(PATH, position, deleted))
        if inserted:
            edits.append(InsertText(PATH, position, inserted))
    return edits


def broadcast_bytes(step: Step) -> bytes:
    (out,) = step.outgoing
    assert isinstance(out, Broadcast)
    return CODEC.encode(out.message)


def replay_local(
    start: str, patches: list[tuple[int, int, str]], per_update: int
) -> tuple[Replica, list[bytes], float]:
    author = Replica(KeyPair.from_seed(b"\x01" * 32))
    setup: list[Edit] = [Put((), "text", NewText())]
    if start:
        setup.append(InsertText(PATH, 0, start))
    messages = [broadcast_bytes(author.transact(setup))]
    batches = [edits_for(patches[i : i + per_update]) for i in range(0, len(patches), per_update)]
    began = time.perf_counter()
    steps = [author.transact(batch) for batch in batches]
    elapsed = time.perf_counter() - began
    messages.extend(broadcast_bytes(step) for step in steps)
    return author, messages, elapsed


def replay_remote(author: Replica, messages: list[bytes]) -> tuple[Replica, float]:
    receiver = Replica(KeyPair.from_seed(b"\x02" * 32))
    began = time.perf_counter()
    for message in messages:
        receiver.handle(Received(author.node_id, CODEC.decode(message)), 0)
    return receiver, time.perf_counter() - began


def crypto_bound(count: int) -> tuple[float, float]:
    keys = KeyPair.from_seed(b"\x03" * 32)
    ids = [index.to_bytes(32, "big") for index in range(count)]
    began = time.perf_counter()
    signatures = [keys.sign(UPDATE_DOMAIN, update_id) for update_id in ids]
    signed = time.perf_counter() - began
    began = time.perf_counter()
    pairs = zip(ids, signatures, strict=True)
    ok = all(verify(keys.node_id, UPDATE_DOMAIN, i, s) for i, s in pairs)
    verified = time.perf_counter() - began
    assert ok
    return signed, verified


def deletion_cost(length: int, repeats: int = 20) -> None:
    """CPU per byte of delete updates naming a whole text of `length` characters.

    Issue 15, finding 2: a valid 261-byte update deleting a 983,040-character text took
    3.97 s to apply, at every replica and again for every such update.  The first
    deletion hides each element once (paid for by the insertion's bytes); the repeats
    name the same elements again and should cost about one signature check each.
    """
    from synod.crdt.messages import (
        UPDATE_CODEC,
        Ref,
        SequenceDelete,
        Span,
        UpdateBody,
        Updates,
        sign_update,
    )

    author = Replica(KeyPair.from_seed(b"\x05" * 32))
    author.transact([Put((), "text", NewText()), InsertText(PATH, 0, "x" * length)])
    (text_id,) = author.applied_ids()
    receiver = Replica(KeyPair.from_seed(b"\x06" * 32))
    receiver.handle(Received(author.node_id, Updates([author.encoded_update(text_id)])), 0)
    attacker = KeyPair.from_seed(b"\x07" * 32)
    frames = []
    for sequence in range(1, repeats + 2):
        operation = SequenceDelete(Ref(text_id, 0), [Span(text_id, 1, length)])
        body = UpdateBody(attacker.node_id, sequence, 1 + sequence, sorted(
            [text_id] if sequence == 1 else [text_id, frames[-1][0]]
        ), [operation])
        update_id, update = sign_update(attacker, body)
        frames.append((update_id, CODEC.encode(Updates([UPDATE_CODEC.encode(update)]))))
    timings = []
    for _, frame in frames:
        began = time.perf_counter()
        receiver.handle(Received(attacker.node_id, CODEC.decode(frame)), 0)
        timings.append(time.perf_counter() - began)
    assert len(receiver.graph) == repeats + 2 and receiver.document.text(PATH) == ""
    _, verify_seconds = crypto_bound(200)
    verify_one = verify_seconds / 200
    repeat_seconds = sum(timings[1:]) / repeats
    frame_bytes = len(frames[1][1])
    emit(
        {
            "phase": "deletion",
            "text_length": length,
            "update_bytes": frame_bytes,
            "first_seconds": round(timings[0], 4),
            "first_microseconds_per_deleted_element": round(1e6 * timings[0] / length, 3),
            "repeat_seconds": round(repeat_seconds, 6),
            "repeat_microseconds_per_byte": round(1e6 * repeat_seconds / frame_bytes, 3),
            "repeat_ratio_to_verify_bound": round(repeat_seconds / verify_one, 2),
        }
    )


def run_pycrdt(
    start: str,
    patches: list[tuple[int, int, str]],
    expected: str,
    synod_seconds: dict[str, float],
    edits_per_transaction: int,
) -> None:
    """Replay the trace in pycrdt, `edits_per_transaction` edits per transaction.

    Ratios divide each synod phase's time by pycrdt's (below 1: synod is faster).
    """
    try:
        import pycrdt
    except ImportError:
        emit({"phase": "pycrdt", "skipped": "pycrdt is not installed in this environment"})
        return
    document: Any = pycrdt.Doc()
    text = document.get("text", type=pycrdt.Text)
    text += start
    began = time.perf_counter()
    for first in range(0, len(patches), edits_per_transaction):
        with document.transaction():
            for position, deleted, inserted in patches[first : first + edits_per_transaction]:
                if deleted:
                    del text[position : position + deleted]
                if inserted:
                    text.insert(position, inserted)
    elapsed = time.perf_counter() - began
    emit(
        {
            "phase": "pycrdt",
            "what": "pycrdt (Yjs) local replay",
            "version": getattr(pycrdt, "__version__", None),
            "edits_per_transaction": edits_per_transaction,
            "edits": len(patches),
            "seconds": round(elapsed, 3),
            "microseconds_per_edit": round(1e6 * elapsed / len(patches), 2),
            "matches": str(text) == expected,
            "peak_rss_mib": peak_rss_mib(),
            **{
                f"ratio_synod_{phase}_to_pycrdt": round(seconds / elapsed, 3)
                for phase, seconds in synod_seconds.items()
            },
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=None, help="replay only the first N edits")
    parser.add_argument("--edits-per-update", type=int, nargs="+", default=[100, 1])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: the first 3,000 edits (unless --edits is given)",
    )
    parser.add_argument(
        "--deletion-length",
        type=int,
        default=983_040,
        help="text length of the deletion-cost phase (0: skip it)",
    )
    add_json_option(parser)
    arguments = parser.parse_args()
    configure(arguments)
    if arguments.quick and arguments.edits is None:
        arguments.edits = 3_000
        arguments.deletion_length = min(arguments.deletion_length, 50_000)
    if not TRACE_FILE.exists():
        print(f"trace not found: {TRACE_FILE}", file=sys.stderr)
        return 2
    start, patches, end_content = load_trace(arguments.edits)
    expected, splice_seconds = splice(start, patches)
    if end_content is not None and expected != end_content:
        print("str splicing does not reproduce endContent", file=sys.stderr)
        return 1
    emit(
        {
            "phase": "bound",
            "what": "python str splicing",
            "edits": len(patches),
            "seconds": round(splice_seconds, 3),
            "final_length": len(expected),
        }
    )
    failed = False
    synod_seconds: dict[str, float] = {}
    for per_update in arguments.edits_per_update:
        rss_before = current_rss_mib()
        author, messages, local_seconds = replay_local(start, patches, per_update)
        author_mib = current_rss_mib() - rss_before
        updates = len(messages) - 1
        local_ok = author.document.text(PATH) == expected
        emit(
            {
                "phase": "local",
                "edits_per_update": per_update,
                "edits": len(patches),
                "updates": updates,
                "seconds": round(local_seconds, 3),
                "microseconds_per_edit": round(1e6 * local_seconds / len(patches), 2),
                "matches": local_ok,
                "ratio_to_str_splicing": round(local_seconds / splice_seconds, 2),
                "author_and_messages_mib": round(author_mib, 1),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
        rss_before = current_rss_mib()
        receiver, remote_seconds = replay_remote(author, messages)
        receiver_mib = current_rss_mib() - rss_before
        remote_ok = receiver.document.text(PATH) == expected
        wire_bytes = sum(len(message) for message in messages)
        del author
        sign_seconds, verify_seconds = crypto_bound(updates)
        emit(
            {
                "phase": "remote",
                "edits_per_update": per_update,
                "edits": len(patches),
                "updates": updates,
                "wire_bytes": wire_bytes,
                "seconds": round(remote_seconds, 3),
                "microseconds_per_edit": round(1e6 * remote_seconds / len(patches), 2),
                "matches": remote_ok,
                "matches_end_content": (
                    None if end_content is None else receiver.document.text(PATH) == end_content
                ),
                "ratio_to_str_splicing": round(remote_seconds / splice_seconds, 2),
                "ratio_to_verify_bound": round(remote_seconds / verify_seconds, 2),
                "receiver_mib": round(receiver_mib, 1),
                "peak_rss_mib": peak_rss_mib(),
            }
        )
        emit(
            {
                "phase": "bound",
                "what": "ed25519",
                "signatures": updates,
                "sign_seconds": round(sign_seconds, 3),
                "verify_seconds": round(verify_seconds, 3),
                "local_ratio_to_sign_bound": round(local_seconds / sign_seconds, 2),
            }
        )
        del receiver
        failed = failed or not (local_ok and remote_ok)
        synod_seconds[f"local_{per_update}_edits_per_update"] = local_seconds
        synod_seconds[f"remote_{per_update}_edits_per_update"] = remote_seconds
    for per_transaction in arguments.edits_per_update:
        run_pycrdt(start, patches, expected, synod_seconds, per_transaction)
    if arguments.deletion_length > 0:
        deletion_cost(arguments.deletion_length)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
