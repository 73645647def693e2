"""A shared log document on the BFT-CRDT: what `synod crdt run` edits.

Theory of operation.  The document is a map whose key "log" holds a list; each entry is
a map `{"author": <node id text>, "name": <author's chosen name>, "text": <line>}`
appended by one transaction (one signed update).  Concurrent appends are ordered by the
list's RGA rule (Roh et al. 2011; `synod.crdt.sequence`), so every replica that holds the
same updates shows the same log in the same order.

The list must be created once, not by every node (concurrent creations of one key would
hide all but one list, see docs/crdt.md).  So it is created by a *genesis* update that
every node can make by itself: it is signed by a key derived from the document's name,
and Ed25519 signatures are deterministic, so every node builds the same bytes and the
same id.  The genesis key is public by construction; it grants nothing, since anyone may
write to the document anyway (there is no access control), and its only update is the
one every node already holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from synod.core import LocalError, Received
from synod.crdt.messages import (
    ROOT,
    UPDATE_CODEC,
    MapPut,
    NewList,
    NewMap,
    Update,
    UpdateBody,
    Updates,
    sign_update,
)
from synod.crdt.replica import Edit, Insert, Put, Replica, UpdateApplied
from synod.crypto import KeyPair, NodeId, blake2b, node_id_text

LOG_KEY = "log"
_GENESIS_PERSON = b"synod-crdt-gen"


def genesis_keys(document: str) -> KeyPair:
    """The public, deterministic key of `document`'s genesis update."""
    return KeyPair.from_seed(blake2b(document.encode("utf-8"), person=_GENESIS_PERSON))


def genesis_update(document: str) -> tuple[bytes, Update]:
    """The update that creates the shared log list; the same bytes on every node."""
    keys = genesis_keys(document)
    body = UpdateBody(keys.node_id, 1, 1, [], [MapPut(ROOT, LOG_KEY, NewList())])
    return sign_update(keys, body)


def genesis_input(replica: Replica, document: str) -> Received | None:
    """The input that hands `replica` the genesis update of `document`, as if a peer
    had sent it (None when the replica holds it already)."""
    genesis_id, genesis = genesis_update(document)
    if genesis_id in replica.graph:
        return None
    return Received(NodeId(genesis.body.author), Updates([UPDATE_CODEC.encode(genesis)]))


def append_edits(replica: Replica, text: str, name: str) -> list[Edit]:
    """Edits that append one entry to the log (raises `LocalError` before the genesis)."""
    if replica.document.kind_at((LOG_KEY,)) != "list":
        raise LocalError("the log list does not exist yet (apply the genesis update)")
    index = replica.document.length((LOG_KEY,))
    entry = (LOG_KEY, index)
    return [
        Insert((LOG_KEY,), index, [NewMap()]),
        Put(entry, "author", node_id_text(replica.node_id)),
        Put(entry, "name", name),
        Put(entry, "text", text),
    ]


def entries(replica: Replica) -> list[dict[str, Any]]:
    """The log as plain JSON, in the order every replica shows it."""
    try:
        value = replica.value((LOG_KEY,))
    except LocalError:
        return []
    return value if isinstance(value, list) else []


def appended_entry(update: Update) -> dict[str, str] | None:
    """The entry an update appended, read from its operations (None if it is not one)."""
    fields: dict[str, str] = {}
    for operation in update.body.operations:
        if (
            isinstance(operation, MapPut)
            and isinstance(operation.value, str)
            and operation.key in ("author", "name", "text")
        ):
            fields[operation.key] = operation.value
    if "text" not in fields:
        return None
    return fields


@dataclass(frozen=True, slots=True)
class EntryAppended:
    """An update that appended an entry to the log was applied (`local`: made here)."""

    update_id: bytes
    author: NodeId
    local: bool
    name: str | None
    text: str


def entry_appended(replica: Replica, event: UpdateApplied) -> EntryAppended | None:
    """What the update of `event` appended to the log (None if it appended nothing)."""
    entry = appended_entry(UPDATE_CODEC.decode(replica.encoded_update(event.update_id)))
    if entry is None:
        return None
    return EntryAppended(
        event.update_id, NodeId(event.author), event.local, entry.get("name"), entry["text"]
    )


@dataclass(frozen=True, slots=True)
class LogDigest:
    """A replica's log at a glance: equal digests on two replicas, equal documents."""

    entries: int
    updates: int
    document: str
    updates_digest: str
    waiting: int


def log_digest(replica: Replica) -> LogDigest:
    """The `LogDigest` of `replica` now."""
    return LogDigest(
        entries=len(entries(replica)),
        updates=len(replica.graph),
        document=replica.document_digest(),
        updates_digest=replica.updates_digest(),
        waiting=len(replica.waiting_ids()),
    )
