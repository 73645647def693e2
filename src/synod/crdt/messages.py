"""Wire format of the Byzantine fault tolerant JSON CRDT.

Theory of operation (Kleppmann, *Making CRDTs Byzantine Fault Tolerant*, PaPoC 2022,
section 3 "Hash graphs"): every change is an `Update`, the signed unit that replicas
exchange.  Its `UpdateBody` carries the author's public key, the author's sequence
number, a Lamport clock, the hashes of its direct predecessors (the heads its author had
seen) and a list of operations (a transaction: many edits, one signature).  The update's
identity is the BLAKE2b hash of the canonical encoding of its body, so it cannot be
chosen, reused or collided by a faulty author, and naming a predecessor by its hash names
the whole causal past of that predecessor (the updates form a hash DAG, as in Git).

The signature is Ed25519 over a domain tag and the update id; it is *not* part of the id,
so a relay that replaces a signature produces a copy that fails verification without
changing which update it claims to be (the genuine copy is accepted when it arrives).

Elements and objects are named by `Ref(update, counter)`: the hash of the update that
created them (empty for the update being built, which cannot contain its own hash) and a
counter inside it.  Each operation consumes `operation_size(op)` counters, in order, so
identifiers follow from the update itself and cannot be picked by its author.

Reconciliation messages (`Heads`, `Want`, `Updates`) follow Kleppmann and Howard
(*Byzantine Eventual Consistency and the Fundamental Limits of Peer-to-Peer Databases*,
2020, section 4): a replica announces its heads, the peer sends what those heads do not
cover, and either side asks by hash for updates it is still missing.  Every container
and integer that a peer fills has a bound.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated

import msgspec

from synod.crypto import KeyPair, blake2b, in_network, verify
from synod.wire import U32, U64, Bytes32, Codec, Message, Signature, canonical_bytes

UPDATE_DOMAIN = b"synod/crdt/update/v1"
"""Domain tag of update signatures (see `synod.crypto`)."""
_ID_PERSON = b"synod-crdt-upd"

MAX_PREDECESSORS = 256
MAX_OPERATIONS = 4096
MAX_COUNTERS = 1 << 20
"""Most element identifiers one update may create (text characters, list items, keys)."""
MAX_KEY_CHARS = 1024
MAX_STRING_CHARS = 1 << 16
MAX_LIST_VALUES = 4096
MAX_DELETE_SPANS = 4096
MAX_IDS_PER_MESSAGE = 4096
MAX_UPDATES_PER_MESSAGE = 4096
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_UPDATE_BYTES = MAX_MESSAGE_BYTES - 1024
"""Largest encoded update: it must fit, with the envelope, in one `Updates` message."""
MAX_DELETED_PER_UPDATE = MAX_COUNTERS
"""Most elements the delete spans of one update may name in all (bounds the check)."""

ROOT_UPDATE = bytes(32)
"""The pseudo update that created the root map (no real update hashes to zero)."""

Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
Key = Annotated[str, msgspec.Meta(max_length=MAX_KEY_CHARS)]
String = Annotated[str, msgspec.Meta(max_length=MAX_STRING_CHARS)]
InsertedText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STRING_CHARS)]
UpdateRefBytes = Annotated[bytes, msgspec.Meta(max_length=32)]
"""32 bytes naming an earlier update, or empty for the update that contains the ref."""


class Ref(Message, frozen=True):
    """An element or object: created by `update` (empty: this update) at `counter`."""

    update: UpdateRefBytes
    counter: U32


ROOT = Ref(ROOT_UPDATE, 0)
"""The document's root map."""


class NewMap(Message, frozen=True):
    """Value that creates an empty map (JSON object) at this position."""


class NewList(Message, frozen=True):
    """Value that creates an empty list (JSON array) of values."""


class NewText(Message, frozen=True):
    """Value that creates an empty text (a list of characters, edited collaboratively)."""


class NewCounter(Message, frozen=True):
    """Value that creates a counter starting at zero (concurrent additions all count)."""


Container = NewMap | NewList | NewText | NewCounter
Scalar = None | bool | Int64 | float | String
Value = Scalar | NewMap | NewList | NewText | NewCounter


class MapPut(Message, frozen=True):
    """Set `key` of map `target` to `value` (last writer wins, by operation identifier)."""

    target: Ref
    key: Key
    value: Value


class MapRemove(Message, frozen=True):
    """Remove `key` from map `target` (a tombstone that competes like a write)."""

    target: Ref
    key: Key


class TextInsert(Message, frozen=True):
    """Insert the characters of `text` into text `target` after element `after`.

    `after` equal to `target` means at the start.  Character k gets counter base + k.
    """

    target: Ref
    after: Ref
    text: InsertedText


class ListInsert(Message, frozen=True):
    """Insert `values` into list `target` after element `after` (like `TextInsert`)."""

    target: Ref
    after: Ref
    values: Annotated[list[Value], msgspec.Meta(min_length=1, max_length=MAX_LIST_VALUES)]


class Span(Message, frozen=True):
    """`count` consecutive elements created by `update` from `counter` on."""

    update: UpdateRefBytes
    counter: U32
    count: Annotated[int, msgspec.Meta(ge=1, le=MAX_COUNTERS)]


class SequenceDelete(Message, frozen=True):
    """Delete the elements in `spans` from text or list `target` (tombstones stay)."""

    target: Ref
    spans: Annotated[list[Span], msgspec.Meta(min_length=1, max_length=MAX_DELETE_SPANS)]


class CounterAdd(Message, frozen=True):
    """Add `delta` (possibly negative) to counter `target`."""

    target: Ref
    delta: Int64


Operation = MapPut | MapRemove | TextInsert | ListInsert | SequenceDelete | CounterAdd


class UpdateBody(Message, frozen=True):
    """What the author signs; its canonical encoding hashes to the update id."""

    author: Bytes32
    sequence: U64
    clock: U64
    predecessors: Annotated[list[Bytes32], msgspec.Meta(max_length=MAX_PREDECESSORS)]
    operations: Annotated[list[Operation], msgspec.Meta(max_length=MAX_OPERATIONS)]


class Update(Message, frozen=True):
    """A signed update: `signature` is the author's over `UPDATE_DOMAIN` and the id."""

    body: UpdateBody
    signature: Signature


class Heads(Message, frozen=True):
    """The sender's current heads: every update it holds is an ancestor of one of them."""

    heads: Annotated[list[Bytes32], msgspec.Meta(max_length=MAX_IDS_PER_MESSAGE)]


class Want(Message, frozen=True):
    """The sender asks for these updates by id."""

    ids: Annotated[list[Bytes32], msgspec.Meta(max_length=MAX_IDS_PER_MESSAGE)]


EncodedUpdate = Annotated[bytes, msgspec.Meta(max_length=MAX_MESSAGE_BYTES)]


class Updates(Message, frozen=True):
    """Encoded `Update`s, ancestors before descendants when the sender knows the order.

    Each update travels as its own bytes, decoded one by one by the receiver, so one
    malformed or tampered update costs only itself, never the rest of the message.
    """

    updates: Annotated[list[EncodedUpdate], msgspec.Meta(max_length=MAX_UPDATES_PER_MESSAGE)]


CrdtMessage = Heads | Want | Updates
CODEC: Codec[CrdtMessage] = Codec(CrdtMessage, max_message_bytes=MAX_MESSAGE_BYTES)
"""Encoder and decoder of the reconciliation protocol's messages."""
UPDATE_CODEC: Codec[Update] = Codec(Update, max_message_bytes=MAX_MESSAGE_BYTES)
"""Encoder and decoder of single updates (persisted records)."""


def operation_size(operation: Operation) -> int:
    """How many counters `operation` consumes (identifiers of what it creates)."""
    if isinstance(operation, TextInsert):
        return len(operation.text)
    if isinstance(operation, ListInsert):
        return len(operation.values)
    if isinstance(operation, MapPut | MapRemove):
        return 1
    return 0


def body_id(body: UpdateBody) -> bytes:
    """The update id: BLAKE2b-256 of the canonical encoding of the body."""
    return blake2b(canonical_bytes(body), person=_ID_PERSON)


def sign_update(keys: KeyPair, body: UpdateBody, network: bytes = b"") -> tuple[bytes, Update]:
    """Sign `body` with `keys` for `network` (caller misuse, such as a foreign author,
    raises)."""
    if body.author != keys.node_id:
        raise ValueError("an update can only be signed by its author")
    update_id = body_id(body)
    return update_id, Update(body, keys.sign(in_network(UPDATE_DOMAIN, network), update_id))


def signature_is_valid(update_id: bytes, update: Update, network: bytes = b"") -> bool:
    """True when the update's signature is its stated author's over its id, for
    `network` (an update signed for another network is refused)."""
    domain = in_network(UPDATE_DOMAIN, network)
    return verify(update.body.author, domain, update_id, update.signature)


def standalone_error(
    body: UpdateBody, encoded_bytes: int, members: frozenset[bytes] | None = None
) -> str | None:
    """Why an update is invalid whatever else exists, or None: the one rule for both sides.

    A receiver applies it to every update before checking the signature; an author
    applies it to its own update before the update takes effect, so an update that a
    correct replica makes is never refused by another one.  `encoded_bytes` is the size
    of the encoded update (at most `MAX_UPDATE_BYTES`, so it fits in one message);
    `members`, when given, are the only authors accepted (the group's keys).
    """
    if encoded_bytes > MAX_UPDATE_BYTES:
        return f"an update is at most {MAX_UPDATE_BYTES} bytes encoded"
    if members is not None and body.author not in members:
        return "the author is not a member"
    return form_error(body)


def form_error(body: UpdateBody) -> str | None:
    """Why `body` is malformed regardless of any other update, or None.

    These checks look at the update alone, so every replica reaches the same verdict
    without knowing anything else: sequence and clock start at 1, predecessors are
    strictly ascending (canonical, no duplicates), the root appears only as a target,
    references to the update itself point to earlier operations, the counters used
    stay within `MAX_COUNTERS`, delete spans are canonical (ascending, neither
    overlapping nor touching) and name at most `MAX_DELETED_PER_UPDATE` elements.
    """
    problem = _header_form_error(body)
    if problem is not None:
        return problem
    counter = 0
    deleted = 0
    for operation in body.operations:
        problem = _operation_form_error(operation, counter)
        if problem is not None:
            return problem
        counter += operation_size(operation)
        if counter > MAX_COUNTERS:
            return "too many counters in one update"
        if isinstance(operation, SequenceDelete):
            deleted += sum(span.count for span in operation.spans)
            if deleted > MAX_DELETED_PER_UPDATE:
                return "too many deleted elements in one update"
    return None


def canonical_spans(spans: list[Span]) -> list[Span]:
    """`spans` sorted by (update, counter), with overlapping or touching spans merged."""
    merged: list[Span] = []
    for span in sorted(spans, key=lambda each: (each.update, each.counter)):
        if merged and merged[-1].update == span.update:
            last = merged[-1]
            last_end = last.counter + last.count
            if span.counter <= last_end:
                end = max(last_end, span.counter + span.count)
                merged[-1] = Span(last.update, last.counter, end - last.counter)
                continue
        merged.append(span)
    return merged


def _spans_form_error(spans: list[Span]) -> str | None:
    for earlier, later in pairwise(spans):
        if (later.update, later.counter) <= (earlier.update, earlier.counter):
            return "delete spans are not in ascending order"
        if later.update == earlier.update and later.counter <= earlier.counter + earlier.count:
            return "delete spans overlap or touch"
    return None


def _header_form_error(body: UpdateBody) -> str | None:
    if body.sequence < 1 or body.clock < 1:
        return "sequence and clock start at 1"
    predecessors = body.predecessors
    if any(earlier >= later for earlier, later in pairwise(predecessors)):
        return "predecessors are not strictly ascending"
    if ROOT_UPDATE in predecessors:
        return "the root is not an update"
    if not predecessors and body.clock != 1:
        return "an update without predecessors has clock 1"
    return None


def _ref_form_error(ref: Ref | Span, counter: int) -> str | None:
    if len(ref.update) == 32:
        return None
    if len(ref.update) != 0:
        return "a reference names a 32-byte update or none"
    end = ref.counter + (ref.count if isinstance(ref, Span) else 1)
    if end > counter:
        return "a reference to this update points at a later operation"
    return None


def _operation_form_error(operation: Operation, counter: int) -> str | None:
    refs: list[Ref | Span] = [operation.target]
    if isinstance(operation, TextInsert | ListInsert):
        refs.append(operation.after)
    if isinstance(operation, SequenceDelete):
        problem = _spans_form_error(operation.spans)
        if problem is not None:
            return problem
        refs.extend(operation.spans)
    for ref in refs:
        problem = _ref_form_error(ref, counter)
        if problem is not None:
            return problem
    return None
