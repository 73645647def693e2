"""Snapshots of a replica's state, so that a restart loads state instead of replaying.

Theory of operation: a replica persists every applied update (`replica.py`), and a
restart used to apply all of them again: decoding, validating and integrating each one,
the whole history's work at every start.  Every `snapshot_interval` applied updates the
replica also persists one `Snapshot` record: the update graph (ids, authors, sequences,
clocks, predecessors) and the document (every handle's creating update, kind, owner,
payload and deletion flag, the maps, the order of every list and text, the counters).
A restart loads the latest snapshot, rebuilds the causal index from the predecessor
lists (no document work), keeps the persisted updates up to the snapshot as bytes (to
answer peers), and applies only the updates after it.

A snapshot is this replica's own record, read only from its own disk, which is trusted
like the update records (`docs/crdt.md`, "Persistence and restart"); a snapshot of
another format version is ignored and the updates are replayed.
"""

from __future__ import annotations

from typing import Any

import msgspec

FORMAT_VERSION = 1
"""Bumped whenever `Snapshot` changes: an older snapshot is ignored (replayed)."""
SNAPSHOT_KEY = b"crdt/snapshot"


class Snapshot(msgspec.Struct, array_like=True, frozen=True):
    """What a replica holds after applying its first `updates` updates."""

    version: int
    updates: int
    own_last: int
    # The update graph, per ordinal 1..updates.
    ids: list[bytes]
    authors: list[bytes]
    sequences: bytes
    clocks: bytes
    predecessor_ends: bytes
    predecessors: bytes
    # The document, per ordinal 0..updates, then per handle.
    bases: bytes
    sizes: bytes
    handle_updates: bytes
    kinds: bytes
    owners: bytes
    hidden: bytes
    run_starts: bytes
    run_owners: bytes
    payloads: list[Any]
    removed: bytes
    maps: list[tuple[int, list[str], list[int]]]
    sequences_order: list[tuple[int, bytes]]
    counters: list[tuple[int, int]]
    depths: list[tuple[int, int]]


ENCODER = msgspec.msgpack.Encoder()
DECODER = msgspec.msgpack.Decoder(Snapshot)


def decode_snapshot(data: bytes) -> Snapshot | None:
    """The snapshot in `data`, or None when it is of another format (replay instead)."""
    try:
        snapshot = DECODER.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return snapshot if snapshot.version == FORMAT_VERSION else None
