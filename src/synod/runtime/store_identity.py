"""Whose store a SQLite file is: a record naming the node, network and protocol that
wrote it, checked before a node is rebuilt from the file.

A node trusts its own disk: the updates and statements it restores are not verified
again.  A file copied from another node's directory, kept across a change of network
id, or written by another protocol's node would be restored and served as the node's
own (statements signed for another network that its peers refuse, records another
core ignores while this one writes beside them).  So each node writes one identity
record into a new store and refuses a store whose record differs, or that holds
another protocol's records and no record of its own (a store from before the record
existed is adopted).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from synod.core import Persist
from synod.runtime.storage import SqliteStorage, StorageError


def identity_record(**fields: str) -> bytes:
    """The identity record of `fields` (compared byte for byte)."""
    import json

    return json.dumps(fields, sort_keys=True).encode()


def claim_records(
    path: Path,
    records: Mapping[bytes, bytes],
    key: bytes,
    identity: bytes,
    prefixes: tuple[bytes, ...],
) -> tuple[dict[bytes, bytes], bool]:
    """`records` without the identity record under `key`, and whether the store is
    unmarked (the caller writes `identity` there).

    Raises `StorageError` when the record differs from `identity`, or when an unmarked
    store holds a record whose key starts with none of `prefixes` (this protocol's).
    """
    own = dict(records)
    found = own.pop(key, None)
    if found is not None and found != identity:
        raise StorageError(
            path,
            f"the store of another node, network or document ({found.decode(errors='replace')};"
            f" this node is {identity.decode()}): give this node its own store",
        )
    if found is None and not all(record.startswith(prefixes) for record in own):
        raise StorageError(path, "holds records of another protocol, not this node's")
    return own, found is None



def mark_store(storage: SqliteStorage, unmarked: bool, key: bytes, identity: bytes) -> None:
    """Write `identity` under `key` into a store `claim_records` found unmarked; on
    failure close the store (it was handed over open) and raise."""
    if not unmarked:
        return
    try:
        storage.apply([Persist(key, identity)])
    except BaseException:
        storage.close()
        raise
