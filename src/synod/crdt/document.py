"""The JSON document: maps, lists, text and counters, with validity from the causal past.

Theory of operation (Kleppmann and Beresford, *A Conflict-Free Replicated JSON
Datatype*, IEEE TPDS 2017; made Byzantine fault tolerant as in Kleppmann, *Making CRDTs
Byzantine Fault Tolerant*, PaPoC 2022, section 4):

* Every object (map, list, text, counter) and every list or text element is named by
  the operation that created it: a `Ref(update, counter)`.  Inside a replica these are
  *handles*, small integers allocated in application order; each update's handles form
  one contiguous range, so `handle = base(update) + counter`.
* Operations are totally ordered by the key (Lamport clock of their update, update id,
  counter).  An update's clock is one more than the largest clock among its
  predecessors (checked by the replica), so a key is greater than the key of anything in
  the update's causal past: the property both the RGA integration (`sequence.py`) and
  last-writer-wins rely on, and that a faulty author cannot break.
* Map entries are last-writer-wins registers: the operation with the greatest key wins,
  whether it writes a value, creates a nested object, or removes the key.
* Counters sum every addition.
* Validity depends only on the update and its causal past: every reference must name an
  object or element created earlier in the same update or by an ancestor (checked with
  `UpdateGraph.is_ancestor`), of the kind the operation needs.  A referenced element of
  a *concurrent* update would be accepted or refused depending on delivery order, so
  it is refused everywhere.  An update is applied atomically: the first invalid
  operation undoes the ones before it and the whole update is rejected.

Local edits go through the same validation and application code (`LocalTransaction`),
so an update built here is valid at every correct replica by construction.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Sequence as SequenceOf
from typing import Any

from synod.core import LocalError
from synod.crdt.causal import ROOT_ORDINAL, UpdateGraph
from synod.crdt.messages import (
    MAX_DELETE_SPANS,
    MAX_KEY_CHARS,
    MAX_LIST_VALUES,
    MAX_OPERATIONS,
    MAX_PREDECESSORS,
    MAX_STRING_CHARS,
    ROOT_UPDATE,
    CounterAdd,
    ListInsert,
    MapPut,
    MapRemove,
    NewCounter,
    NewList,
    NewMap,
    NewText,
    Operation,
    Ref,
    SequenceDelete,
    Span,
    TextInsert,
    Value,
    canonical_spans,
)
from synod.crdt.sequence import Sequence

KIND_NONE = 0
KIND_MAP = 1
KIND_LIST = 2
KIND_TEXT = 3
KIND_COUNTER = 4
_KIND_OF_VALUE: dict[type, int] = {
    NewMap: KIND_MAP,
    NewList: KIND_LIST,
    NewText: KIND_TEXT,
    NewCounter: KIND_COUNTER,
}
MAX_NESTING = 64
"""Deepest nesting of objects (keeps reading a document free of deep recursion)."""
_KIND_NAMES = {KIND_MAP: "map", KIND_LIST: "list", KIND_TEXT: "text", KIND_COUNTER: "counter"}

Path = tuple[str | int | Ref, ...]
"""Address of a nested object: map keys (str) and list positions (int) from the root, or
from the object a `Ref` names when the first step is one (it stays reachable however
the maps above it change)."""

JsonValue = Any
"""What `Document.value` returns: dict, list, str, int, float, bool or None."""


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_REMOVED = _Marker("REMOVED")
_CONTAINER = _Marker("CONTAINER")

_UNDO_MAP = 0
_UNDO_INSERT = 1
_UNDO_HIDE = 2
_UNDO_ADD = 3


class InvalidUpdate(Exception):
    """An update breaks a validity rule; every correct replica rejects it alike."""


class _Pending:
    """The update being applied: its handle range and what to undo if it is invalid.

    A remote update's deletions wait in `deferred` until every operation is known
    valid, so an update rejected at its last operation never made this replica hide
    (and then show again) the elements its spans name.  A local one (`local`) applies
    them at once, since later edits of the transaction see positions; its
    `predecessors` grow when an edit refers to an update outside their causal past.
    """

    __slots__ = ("base", "checked", "deferred", "local", "ordinal", "predecessors", "undo")

    def __init__(
        self, ordinal: int, base: int, predecessors: list[int], *, local: bool = False
    ) -> None:
        self.ordinal = ordinal
        self.base = base
        self.predecessors = predecessors
        self.local = local
        self.checked: set[int] = set()
        self.undo: list[tuple[Any, ...]] = []
        self.deferred: list[tuple[int, int, int]] = []


class Document:
    """The state of one replica's JSON document, driven by `UpdateGraph` ordinals."""

    def __init__(self, graph: UpdateGraph) -> None:
        self._graph = graph
        # Per update ordinal (0 is the root pseudo update that created the root map).
        self._ids: list[bytes] = [ROOT_UPDATE]
        self._clocks: list[int] = [0]
        self._bases: list[int] = [0]
        self._sizes: list[int] = [1]
        # Per handle.
        self._handle_update = array("q", [ROOT_ORDINAL])
        self._kind = bytearray([KIND_MAP])
        self._owner = array("q", [-1])
        self._payload: list[Any] = [_CONTAINER]
        self._chunk_of: list[Any] = [None]
        # 1 once an element is deleted: a deletion finds the next live element of a span
        # with one C-level search, so naming deleted elements again costs no Python work.
        self._hidden = bytearray(1)
        # Runs of consecutive handles with one owner (a run ends where the next starts):
        # a delete span is checked against the runs it crosses, not element by element.
        self._run_starts = array("q", [0])
        self._run_owners = array("q", [-1])
        # Per object.
        self._maps: dict[int, dict[str, int]] = {0: {}}
        self._sequences: dict[int, Sequence] = {}
        self._counters: dict[int, int] = {}
        self._depth: dict[int, int] = {0: 0}

    # ------------------------------------------------------------ remote updates

    def apply_update(
        self,
        ordinal: int,
        update_id: bytes,
        clock: int,
        operations: SequenceOf[Operation],
        predecessors: list[int],
    ) -> None:
        """Validate and apply all operations of an update, or none (`InvalidUpdate`)."""
        pending = self._open(ordinal, update_id, clock, predecessors)
        try:
            for operation in operations:
                self._apply_operation(pending, operation)
        except InvalidUpdate:
            self._rollback(pending)
            raise
        for target, first, end in pending.deferred:
            self._hide_range(pending, target, first, end)

    def _open(
        self,
        ordinal: int,
        update_id: bytes,
        clock: int,
        predecessors: list[int],
        *,
        local: bool = False,
    ) -> _Pending:
        if ordinal != len(self._ids):
            raise AssertionError(f"ordinal {ordinal} out of step with {len(self._ids)}")
        self._ids.append(update_id)
        self._clocks.append(clock)
        self._bases.append(len(self._kind))
        self._sizes.append(0)
        return _Pending(ordinal, len(self._kind), predecessors, local=local)

    def _rollback(self, pending: _Pending) -> None:
        for entry in reversed(pending.undo):
            self._undo(entry)
        base = pending.base
        for handle in range(base, len(self._kind)):
            self._maps.pop(handle, None)
            self._sequences.pop(handle, None)
            self._counters.pop(handle, None)
            self._depth.pop(handle, None)
        del self._handle_update[base:]
        del self._kind[base:]
        del self._owner[base:]
        del self._payload[base:]
        del self._chunk_of[base:]
        del self._hidden[base:]
        while self._run_starts[-1] >= base:
            self._run_starts.pop()
            self._run_owners.pop()
        for column in (self._ids, self._clocks, self._bases, self._sizes):
            column.pop()
        assert len(self._ids) == pending.ordinal

    def _undo(self, entry: tuple[Any, ...]) -> None:
        action = entry[0]
        if action == _UNDO_MAP:
            _, target, key, previous = entry
            if previous is None:
                del self._maps[target][key]
            else:
                self._maps[target][key] = previous
        elif action == _UNDO_INSERT:
            _, target, handles = entry
            sequence = self._sequences[target]
            for handle in reversed(handles):
                sequence.remove(handle)
        elif action == _UNDO_HIDE:
            _, target, handle = entry
            self._sequences[target].set_visible(handle, True)
            self._hidden[handle] = 0
        else:
            _, target, delta = entry
            self._counters[target] -= delta

    # ------------------------------------------------------------ keys and references

    def key(self, handle: int) -> tuple[int, bytes, int]:
        """The total order of operations: (clock, update id, counter)."""
        ordinal = self._handle_update[handle]
        return (self._clocks[ordinal], self._ids[ordinal], handle - self._bases[ordinal])

    def _resolve(self, pending: _Pending, ref: Ref | Span) -> int:
        if not ref.update:
            # Form checks guarantee the counter names an earlier operation of this update.
            return pending.base + ref.counter
        ordinal = self._graph.ordinal_of.get(ref.update)
        if ordinal is None or ordinal >= pending.ordinal:
            raise InvalidUpdate("reference to an update outside the causal past")
        end = ref.counter + (ref.count if isinstance(ref, Span) else 1)
        if end > self._sizes[ordinal]:
            raise InvalidUpdate("reference past the end of an update")
        if ordinal != ROOT_ORDINAL and ordinal not in pending.checked:
            if not any(self._graph.is_ancestor(ordinal, p) for p in pending.predecessors):
                self._extend_past(pending, ordinal)
            pending.checked.add(ordinal)
        return self._bases[ordinal] + ref.counter

    def _extend_past(self, pending: _Pending, ordinal: int) -> None:
        """A local edit refers to an update outside the chosen predecessors' past: name
        it too (its clock is at most the largest head's, which the author chose first,
        so the update's clock stays right); a remote update is invalid."""
        if not pending.local:
            raise InvalidUpdate("reference to an update outside the causal past")
        if len(pending.predecessors) >= MAX_PREDECESSORS:
            raise LocalError(
                f"this transaction refers to more than {MAX_PREDECESSORS} concurrent "
                "updates; make it smaller"
            )
        if self._clocks[ordinal] >= self._clocks[pending.ordinal]:
            raise AssertionError("a predecessor added late would change the clock")
        pending.predecessors.append(ordinal)

    def _resolve_object(self, pending: _Pending, ref: Ref, kinds: tuple[int, ...]) -> int:
        handle = self._resolve(pending, ref)
        if self._kind[handle] not in kinds:
            raise InvalidUpdate("the target is not an object of the right kind")
        return handle

    def _ref(self, pending: _Pending, handle: int) -> Ref:
        ordinal = self._handle_update[handle]
        if ordinal == pending.ordinal:
            return Ref(b"", handle - pending.base)
        return Ref(self._ids[ordinal], handle - self._bases[ordinal])

    # ------------------------------------------------------------ applying operations

    def _allocate(self, pending: _Pending, owner: int, payloads: SequenceOf[Any]) -> list[int]:
        start = len(self._kind)
        count = len(payloads)
        self._handle_update.extend([pending.ordinal] * count)
        self._kind.extend(bytes(count))
        self._owner.extend([owner] * count)
        self._payload.extend(payloads)
        self._chunk_of.extend([None] * count)
        self._hidden.extend(bytes(count))
        if count and self._run_owners[-1] != owner:
            self._run_starts.append(start)
            self._run_owners.append(owner)
        self._sizes[pending.ordinal] += count
        return list(range(start, start + count))

    def _create_object(self, handle: int, kind: int, parent: int) -> None:
        depth = self._depth[parent] + 1
        if depth > MAX_NESTING:
            raise InvalidUpdate(f"objects nest at most {MAX_NESTING} deep")
        self._depth[handle] = depth
        self._kind[handle] = kind
        if kind == KIND_MAP:
            self._maps[handle] = {}
        elif kind == KIND_COUNTER:
            self._counters[handle] = 0
        else:
            self._sequences[handle] = Sequence(handle, self._chunk_of)

    def _apply_operation(self, pending: _Pending, operation: Operation) -> None:
        if isinstance(operation, TextInsert):
            self._apply_text_insert(pending, operation)
        elif isinstance(operation, SequenceDelete):
            self._apply_delete(pending, operation)
        elif isinstance(operation, MapPut | MapRemove):
            self._apply_map(pending, operation)
        elif isinstance(operation, ListInsert):
            self._apply_list_insert(pending, operation)
        else:
            self._apply_counter(pending, operation)

    def _apply_text_insert(self, pending: _Pending, operation: TextInsert) -> None:
        target = self._resolve_object(pending, operation.target, (KIND_TEXT,))
        after = self._resolve_after(pending, operation.after, target)
        handles = self._allocate(pending, target, operation.text)
        self._sequences[target].insert_after(after, handles, self.key)
        pending.undo.append((_UNDO_INSERT, target, handles))

    def _apply_list_insert(self, pending: _Pending, operation: ListInsert) -> None:
        target = self._resolve_object(pending, operation.target, (KIND_LIST,))
        after = self._resolve_after(pending, operation.after, target)
        payloads = [_CONTAINER if type(v) in _KIND_OF_VALUE else v for v in operation.values]
        handles = self._allocate(pending, target, payloads)
        for handle, value in zip(handles, operation.values, strict=True):
            kind = _KIND_OF_VALUE.get(type(value))
            if kind is not None:
                self._create_object(handle, kind, target)
        self._sequences[target].insert_after(after, handles, self.key)
        pending.undo.append((_UNDO_INSERT, target, handles))

    def _resolve_after(self, pending: _Pending, ref: Ref, target: int) -> int:
        after = self._resolve(pending, ref)
        if after != target and self._owner[after] != target:
            raise InvalidUpdate("insertion after an element of another sequence")
        return after

    def _apply_delete(self, pending: _Pending, operation: SequenceDelete) -> None:
        # Cost: the checks are C-level scans of the named range (at most
        # MAX_DELETED_PER_UPDATE elements per update, by the form rule); Python work is
        # spent only on elements not deleted before, once per element ever.
        target = self._resolve_object(pending, operation.target, (KIND_TEXT, KIND_LIST))
        owner = self._owner
        for span in operation.spans:
            first = self._resolve(pending, span)
            end = first + span.count
            if end > len(owner):
                raise InvalidUpdate("deletion past the end of an update")
            if not self._owned_by(target, first, end):
                raise InvalidUpdate("deletion of an element of another sequence")
            if pending.local:
                self._hide_range(pending, target, first, end)
            else:
                pending.deferred.append((target, first, end))

    def _owned_by(self, target: int, first: int, end: int) -> bool:
        """Whether every handle in first..end-1 belongs to sequence `target`."""
        starts, owners = self._run_starts, self._run_owners
        index = bisect_right(starts, first) - 1
        while index < len(starts) and starts[index] < end:
            if owners[index] != target:
                return False
            index += 1
        return True

    def _hide_range(self, pending: _Pending, target: int, first: int, end: int) -> None:
        sequence = self._sequences[target]
        hidden = self._hidden
        handle = hidden.find(0, first, end)
        while handle >= 0:
            hidden[handle] = 1
            sequence.set_visible(handle, False)
            if pending.local:
                pending.undo.append((_UNDO_HIDE, target, handle))
            handle = hidden.find(0, handle + 1, end)

    def _apply_map(self, pending: _Pending, operation: MapPut | MapRemove) -> None:
        target = self._resolve_object(pending, operation.target, (KIND_MAP,))
        if isinstance(operation, MapRemove):
            payload: Any = _REMOVED
            kind = None
        else:
            kind = _KIND_OF_VALUE.get(type(operation.value))
            payload = _CONTAINER if kind is not None else operation.value
        (handle,) = self._allocate(pending, -1, [payload])
        if kind is not None:
            self._create_object(handle, kind, target)
        entries = self._maps[target]
        current = entries.get(operation.key)
        if current is None or self.key(handle) > self.key(current):
            entries[operation.key] = handle
            pending.undo.append((_UNDO_MAP, target, operation.key, current))

    def _apply_counter(self, pending: _Pending, operation: CounterAdd) -> None:
        target = self._resolve_object(pending, operation.target, (KIND_COUNTER,))
        self._counters[target] += operation.delta
        pending.undo.append((_UNDO_ADD, target, operation.delta))

    # ------------------------------------------------------------ snapshots

    def export_state(self) -> dict[str, Any]:
        """The document's state as plain values and bytes (see `synod.crdt.snapshot`)."""
        kinds = self._kind
        payloads = [None if kinds[h] else p for h, p in enumerate(self._payload)]
        removed = array("q", [h for h, p in enumerate(self._payload) if p is _REMOVED])
        for handle in removed:
            payloads[handle] = None
        return {
            "bases": array("q", self._bases).tobytes(),
            "sizes": array("q", self._sizes).tobytes(),
            "handle_updates": self._handle_update.tobytes(),
            "kinds": bytes(kinds),
            "owners": self._owner.tobytes(),
            "hidden": bytes(self._hidden),
            "run_starts": self._run_starts.tobytes(),
            "run_owners": self._run_owners.tobytes(),
            "payloads": payloads,
            "removed": removed.tobytes(),
            "maps": [
                (handle, list(entries), list(entries.values()))
                for handle, entries in self._maps.items()
            ],
            "sequences_order": [
                (handle, array("q", sequence.all_handles()).tobytes())
                for handle, sequence in self._sequences.items()
            ],
            "counters": list(self._counters.items()),
            "depths": list(self._depth.items()),
        }

    def load_state(self, snapshot: Any, ids: list[bytes], clocks: list[int]) -> None:
        """Take the state of `snapshot` (a fresh document only)."""
        assert len(self._ids) == 1, "a snapshot loads into a fresh document"
        self._ids = [ROOT_UPDATE, *ids]
        self._clocks = [0, *clocks]
        self._bases = array("q", snapshot.bases).tolist()
        self._sizes = array("q", snapshot.sizes).tolist()
        self._handle_update = array("q", snapshot.handle_updates)
        self._kind = bytearray(snapshot.kinds)
        self._owner = array("q", snapshot.owners)
        self._hidden = bytearray(snapshot.hidden)
        self._run_starts = array("q", snapshot.run_starts)
        self._run_owners = array("q", snapshot.run_owners)
        payload: list[Any] = list(snapshot.payloads)
        for handle, kind in enumerate(self._kind):
            if kind:
                payload[handle] = _CONTAINER
        for handle in array("q", snapshot.removed):
            payload[handle] = _REMOVED
        self._payload = payload
        self._chunk_of = [None] * len(payload)
        self._maps = {
            handle: dict(zip(keys, handles, strict=True))
            for handle, keys, handles in snapshot.maps
        }
        self._sequences = {
            handle: Sequence.loaded(
                handle, self._chunk_of, array("q", order).tolist(), self._hidden
            )
            for handle, order in snapshot.sequences_order
        }
        self._counters = dict(snapshot.counters)
        self._depth = dict(snapshot.depths)

    # ------------------------------------------------------------ local transactions

    def begin(self, ordinal: int, clock: int, predecessors: list[int]) -> LocalTransaction:
        """Start building the local update `ordinal`; finish it with `commit` or `abort`."""
        return LocalTransaction(self, self._open(ordinal, b"", clock, predecessors, local=True))

    def _set_update_id(self, ordinal: int, update_id: bytes) -> None:
        self._ids[ordinal] = update_id

    # ------------------------------------------------------------ reading

    def value(self, path: Path = ()) -> JsonValue:
        """The plain value at `path` (dict, list, str, int, ...); LocalError if absent."""
        return self._plain(self._at(path))

    def text(self, path: Path) -> str:
        """The string held by the text object at `path`."""
        handle = self._container(path, (KIND_TEXT,))
        payload = self._payload
        return "".join([payload[h] for h in self._sequences[handle].visible_handles()])

    def length(self, path: Path) -> int:
        """Number of visible elements of the text or list at `path`."""
        return len(self._sequences[self._container(path, (KIND_TEXT, KIND_LIST))])

    def kind_at(self, path: Path) -> str:
        """'map', 'list', 'text', 'counter' or 'value' (a plain JSON value)."""
        handle = self._at(path)
        return _KIND_NAMES.get(self._kind[handle], "value")

    def _plain(self, handle: int) -> JsonValue:
        kind = self._kind[handle]
        if kind == KIND_NONE:
            return self._payload[handle]
        if kind == KIND_MAP:
            return {
                key: self._plain(entry)
                for key, entry in sorted(self._maps[handle].items())
                if self._payload[entry] is not _REMOVED
            }
        if kind == KIND_COUNTER:
            return self._counters[handle]
        elements = self._sequences[handle].visible_handles()
        if kind == KIND_TEXT:
            return "".join([self._payload[h] for h in elements])
        return [self._plain(h) for h in elements]

    def _at(self, path: Path) -> int:
        handle = 0
        for index, step in enumerate(path):
            if isinstance(step, Ref):
                if index:
                    raise LocalError("only the first step of a path may be a Ref")
                handle = self._object_of(step)
            else:
                handle = self._child(handle, step, path)
        return handle

    def _object_of(self, ref: Ref) -> int:
        ordinal = self._graph.ordinal_of.get(ref.update)
        if ordinal is None or ref.counter >= self._sizes[ordinal]:
            raise LocalError(f"no object {ref!r} in this replica")
        handle = self._bases[ordinal] + ref.counter
        if self._kind[handle] == KIND_NONE:
            raise LocalError(f"{ref!r} is not an object")
        return handle

    def _child(self, handle: int, step: str | int, path: Path) -> int:
        kind = self._kind[handle]
        if kind == KIND_MAP and isinstance(step, str):
            entry = self._maps[handle].get(step)
            if entry is None or self._payload[entry] is _REMOVED:
                raise LocalError(f"no key {step!r} at {path!r}")
            return entry
        if kind == KIND_LIST and isinstance(step, int) and not isinstance(step, bool):
            try:
                return self._sequences[handle].element_at(step)
            except IndexError:
                raise LocalError(f"no position {step} at {path!r}") from None
        raise LocalError(f"cannot step {step!r} into a {_KIND_NAMES.get(kind, 'value')}")

    def _container(self, path: Path, kinds: tuple[int, ...]) -> int:
        handle = self._at(path)
        if self._kind[handle] not in kinds:
            wanted = " or ".join(_KIND_NAMES[kind] for kind in kinds)
            raise LocalError(f"{path!r} is not a {wanted}")
        return handle

    def structure(self) -> list[tuple[int, list[tuple[bytes, int]]]]:
        """Every sequence's full element order, tombstones included (for tests)."""
        result = []
        for handle in sorted(self._sequences, key=self.key):
            order = [self.key(h)[1:] for h in self._sequences[handle].all_handles()]
            result.append((self.key(handle)[0], order))
        return result


def _check_value(value: Any) -> None:
    if type(value) in _KIND_OF_VALUE or value is None or isinstance(value, bool | float):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise LocalError("integers are limited to 64 bits")
        return
    if isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise LocalError(f"strings are limited to {MAX_STRING_CHARS} characters")
        return
    raise LocalError(f"not a JSON scalar or NewMap/NewList/NewText/NewCounter: {value!r}")


class LocalTransaction:
    """Edits by path that become the operations of one local update.

    Each edit takes effect in the document at once (later edits see earlier ones) and is
    recorded as wire operations; consecutive typing and deleting merge into runs.  An
    edit that the caller gets wrong raises `LocalError` and changes nothing.
    """

    def __init__(self, document: Document, pending: _Pending) -> None:
        self._document = document
        self._pending = pending
        self._operations: list[Operation] = []
        # Characters typed onto the last operation (a TextInsert) not yet folded into it.
        self._run: list[str] | None = None
        self._run_length = 0
        # Text edits never change what a path leads to, so paths resolve once per run.
        self._paths: dict[Path, tuple[int, Ref]] = {}
        self._forget_cursor()

    @property
    def operations(self) -> list[Operation]:
        """The wire operations recorded so far."""
        self._fold_run()
        return self._operations

    def _fold_run(self) -> None:
        if self._run:
            last = self._operations[-1]
            assert isinstance(last, TextInsert)
            text = last.text + "".join(self._run)
            self._operations[-1] = TextInsert(last.target, last.after, text)
        self._run = None

    def _forget_cursor(self) -> None:
        self._last_insert_end = -1
        self._last_insert_position = -2
        self._last_insert_target = -1

    @property
    def ordinal(self) -> int:
        """The update's ordinal in the replica's graph."""
        return self._pending.ordinal

    def commit(self, update_id: bytes) -> None:
        """The update was signed as `update_id`: its operations now carry that name."""
        self._document._set_update_id(self._pending.ordinal, update_id)

    def abort(self) -> None:
        """Undo every edit of this transaction."""
        self._document._rollback(self._pending)

    def _add(self, operation: Operation, merged: Operation | None = None) -> None:
        if merged is None and len(self._operations) >= MAX_OPERATIONS:
            raise LocalError(f"a transaction holds at most {MAX_OPERATIONS} operations")
        self._fold_run()
        try:
            self._document._apply_operation(self._pending, operation)
        except InvalidUpdate as error:  # pragma: no cover - a local bug, not misuse
            raise AssertionError(f"local edit produced an invalid operation: {error}") from None
        if merged is None:
            self._operations.append(operation)
        else:
            self._operations[-1] = merged

    def _object(self, path: Path, kinds: tuple[int, ...]) -> tuple[int, Ref]:
        found = self._paths.get(path)
        if found is None:
            handle = self._document._container(path, kinds)
            found = (handle, self._document._ref(self._pending, handle))
            if self._document._kind[handle] == KIND_TEXT:
                self._paths[path] = found
        elif self._document._kind[found[0]] not in kinds:
            self._document._container(path, kinds)  # raises the usual LocalError
        return found

    def put(self, path: Path, key: str, value: Value) -> None:
        """Set `key` of the map at `path` (a scalar, or NewMap() etc. for a new object)."""
        if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
            raise LocalError(f"map keys are strings of at most {MAX_KEY_CHARS} characters")
        _check_value(value)
        handle, target = self._object(path, (KIND_MAP,))
        self._check_nesting(handle, [value])
        self._add(MapPut(target, key, value))
        self._forget_cursor()
        self._paths.clear()

    def remove(self, path: Path, key: str) -> None:
        """Remove `key` from the map at `path` (no error if it is absent)."""
        if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
            raise LocalError(f"map keys are strings of at most {MAX_KEY_CHARS} characters")
        _, target = self._object(path, (KIND_MAP,))
        self._add(MapRemove(target, key))
        self._forget_cursor()
        self._paths.clear()

    def increment(self, path: Path, delta: int) -> None:
        """Add `delta` to the counter at `path`."""
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise LocalError("a counter is incremented by an integer")
        if not -(2**63) <= delta < 2**63:
            raise LocalError("increments are limited to 64 bits")
        _, target = self._object(path, (KIND_COUNTER,))
        self._add(CounterAdd(target, delta))

    def insert_text(self, path: Path, index: int, text: str) -> None:
        """Insert `text` at character `index` of the text at `path`."""
        if not isinstance(text, str) or not text:
            raise LocalError("insert a non-empty string")
        for start in range(0, len(text), MAX_STRING_CHARS):
            self._insert_text_chunk(path, index + start, text[start : start + MAX_STRING_CHARS])

    def _insert_text_chunk(self, path: Path, index: int, text: str) -> None:
        handle, target = self._object(path, (KIND_TEXT,))
        document = self._document
        if (
            index > 0
            and index - 1 == self._last_insert_position
            and handle == self._last_insert_target
            and self._run is not None
            and self._run_length + len(text) <= MAX_STRING_CHARS
        ):
            # Typing on: the new characters extend the last TextInsert, whose last
            # character is right before the cursor.  Same effect as applying the merged
            # operation, without building it for every keystroke.
            handles = document._allocate(self._pending, handle, text)
            sequence = document._sequences[handle]
            sequence.insert_after(self._last_insert_end, handles, document.key)
            self._pending.undo.append((_UNDO_INSERT, handle, handles))
            self._run.append(text)
            self._run_length += len(text)
        else:
            after = self._after(handle, index)
            self._add(TextInsert(target, document._ref(self._pending, after), text))
            self._run = []
            self._run_length = len(text)
        self._last_insert_end = len(document._kind) - 1
        self._last_insert_position = index + len(text) - 1
        self._last_insert_target = handle

    def insert(self, path: Path, index: int, values: list[Value]) -> None:
        """Insert `values` at position `index` of the list at `path`."""
        if not isinstance(values, list) or not values or len(values) > MAX_LIST_VALUES:
            raise LocalError(f"insert a list of 1 to {MAX_LIST_VALUES} values")
        for value in values:
            _check_value(value)
        handle, target = self._object(path, (KIND_LIST,))
        after = self._after(handle, index)
        self._check_nesting(handle, values)
        self._add(ListInsert(target, self._document._ref(self._pending, after), values))
        self._forget_cursor()
        self._paths.clear()

    def _check_nesting(self, parent: int, values: list[Value]) -> None:
        if self._document._depth[parent] >= MAX_NESTING and any(
            type(value) in _KIND_OF_VALUE for value in values
        ):
            raise LocalError(f"objects nest at most {MAX_NESTING} deep")

    def _after(self, sequence_handle: int, index: int) -> int:
        sequence = self._document._sequences[sequence_handle]
        if isinstance(index, bool) or not isinstance(index, int):
            raise LocalError("positions are integers")
        if not 0 <= index <= len(sequence):
            raise LocalError(f"position {index} outside 0..{len(sequence)}")
        return sequence_handle if index == 0 else sequence.element_at(index - 1)

    def delete(self, path: Path, index: int, count: int = 1) -> None:
        """Delete `count` elements from position `index` of the text or list at `path`."""
        handle, target = self._object(path, (KIND_TEXT, KIND_LIST))
        sequence = self._document._sequences[handle]
        if isinstance(index, bool) or not isinstance(index, int) or not isinstance(count, int):
            raise LocalError("positions and counts are integers")
        if count < 1 or index < 0 or index + count > len(sequence):
            raise LocalError(f"cannot delete {count} from {index} of {len(sequence)}")
        typed_last = handle == self._last_insert_target and index == self._last_insert_position
        if count == 1 and typed_last:
            handles = [self._last_insert_end]  # backspace over the character just typed
        else:
            handles = [sequence.element_at(index + offset) for offset in range(count)]
        spans = canonical_spans(self._spans(handles))
        for start in range(0, len(spans), MAX_DELETE_SPANS):
            self._delete_spans(target, spans[start : start + MAX_DELETE_SPANS])
        self._forget_cursor()
        if self._document._kind[handle] == KIND_LIST:
            self._paths.clear()

    def _delete_spans(self, target: Ref, spans: list[Span]) -> None:
        operation = SequenceDelete(target, spans)
        last = self._operations[-1] if self._operations else None
        merged = None
        if isinstance(last, SequenceDelete) and last.target == target:
            combined = canonical_spans([*last.spans, *spans])
            if len(combined) <= MAX_DELETE_SPANS:
                merged = SequenceDelete(target, combined)
        self._add(operation, merged)

    def _spans(self, handles: list[int]) -> list[Span]:
        spans: list[Span] = []
        for handle in handles:
            ref = self._document._ref(self._pending, handle)
            if spans and spans[-1].update == ref.update:
                previous = spans[-1]
                if previous.counter + previous.count == ref.counter:
                    spans[-1] = Span(ref.update, previous.counter, previous.count + 1)
                    continue
            spans.append(Span(ref.update, ref.counter, 1))
        return spans

