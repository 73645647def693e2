"""A shared log document on the BFT-CRDT: what `synod crdt run` edits.

Theory of operation.  Each entry `{"author", "name", "text"}` is appended by one
transaction (one signed update), and the log *is* those signed updates: `entries` reads
every applied update that appended one, in the replica's canonical causal order
(`Replica.history`: by clock, then id), and names as its author the key that signed
it.  So no participant can remove another's entry (updates are never removed; a
`MapRemove` of the list only hides the document's view of it), nor attribute an entry to
someone else (the author field written in the operations is not trusted), and every
replica that holds the same updates shows the same log in the same order.

The entries are also inserted into a list of the document (key "log"), so that
applications reading the document see them; appends reach that list through the
`Ref` of the genesis operation that created it, not through the key, so they keep
working whatever another participant does to the key.

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
from functools import lru_cache
from typing import Any

from synod.core import LocalError, Received
from synod.crdt.messages import (
    ROOT,
    UPDATE_CODEC,
    MapPut,
    NewList,
    NewMap,
    Ref,
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


@lru_cache(maxsize=64)
def genesis_update(document: str, network: bytes = b"") -> tuple[bytes, Update]:
    """The update that creates the shared log list; the same bytes on every node of
    `network` (its signature is for that network)."""
    keys = genesis_keys(document)
    body = UpdateBody(keys.node_id, 1, 1, [], [MapPut(ROOT, LOG_KEY, NewList())])
    return sign_update(keys, body, network)


def genesis_input(replica: Replica, document: str) -> Received | None:
    """The input that hands `replica` the genesis update of `document`, as if a peer
    had sent it (None when the replica holds it already)."""
    genesis_id, genesis = genesis_update(document, replica.config.network)
    if genesis_id in replica.graph:
        return None
    return Received(NodeId(genesis.body.author), Updates([UPDATE_CODEC.encode(genesis)]))


def log_ref(replica: Replica, document: str = LOG_KEY) -> Ref:
    """The log list of `document`: the object its genesis operation created."""
    return Ref(genesis_update(document, replica.config.network)[0], 0)


def append_edits(replica: Replica, text: str, name: str, document: str = LOG_KEY) -> list[Edit]:
    """Edits that append one entry to the log (raises `LocalError` before the genesis)."""
    log = log_ref(replica, document)
    if log.update not in replica.graph:
        raise LocalError("the log list does not exist yet (apply the genesis update)")
    index = replica.document.length((log,))
    entry = (log, index)
    return [
        Insert((log,), index, [NewMap()]),
        Put(entry, "author", node_id_text(replica.node_id)),
        Put(entry, "name", name),
        Put(entry, "text", text),
    ]


def entries(replica: Replica) -> list[dict[str, Any]]:
    """The log, in the order every replica shows it: one entry per applied update that
    appended one, its author the update's signer (see the module's theory)."""
    found = []
    for update_id in replica.history():
        update = UPDATE_CODEC.decode(replica.encoded_update(update_id))
        entry = appended_entry(update)
        if entry is not None:
            found.append(
                {
                    "author": node_id_text(NodeId(update.body.author)),
                    "name": entry.get("name", ""),
                    "text": entry["text"],
                }
            )
    return found


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
