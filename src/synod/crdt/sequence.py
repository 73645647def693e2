"""Replicated growable array (RGA) for lists and text, stored in chunks.

Theory of operation (Roh, Jeon, Kim, Lee, *Replicated abstract data types*, JPDC 2011,
section 5; as simplified in Kleppmann et al., *A Conflict-Free Replicated JSON
Datatype*, 2017, section 3.2): every element has a unique, totally ordered key, and an
element is always inserted after an existing element (or at the start).  To integrate an
insertion after `ref`, skip the elements that follow `ref` while their key is greater
than the new element's key, and insert there.  An element inserted after another is
causally later, so its key is greater than its reference's; hence a run of greater keys
is exactly the concurrent insertions (and their descendants) that win against the new
one, and every replica reaches the same order whatever the delivery order.  Deleted
elements stay as invisible tombstones because later insertions may refer to them.

Storage is a list of chunks (a flattened two-level B-tree): each chunk holds up to
`MAX_CHUNK_ELEMENTS` element handles in document order and a bytearray of visibility
flags; a Fenwick tree over the chunks' visible counts finds the chunk holding visible
position k in O(log n).  Handles are small integers owned by the document; `chunk_of`
maps a handle to its chunk, so a remote operation finds its reference element without
searching the document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

MAX_CHUNK_ELEMENTS = 512
_VISIBLE = 1


class _Chunk:
    __slots__ = ("elements", "flags", "index", "visible")

    def __init__(self, elements: list[int], flags: bytearray, index: int) -> None:
        self.elements = elements
        self.flags = flags
        self.visible = flags.count(_VISIBLE)
        self.index = index


class _Fenwick:
    """Prefix sums of the chunks' visible counts (binary indexed tree)."""

    __slots__ = ("size", "tree")

    def __init__(self, values: list[int]) -> None:
        self.size = len(values)
        tree = [0, *values]
        for position in range(1, self.size + 1):
            parent = position + (position & -position)
            if parent <= self.size:
                tree[parent] += tree[position]
        self.tree = tree

    def add(self, index: int, delta: int) -> None:
        position = index + 1
        tree = self.tree
        while position <= self.size:
            tree[position] += delta
            position += position & -position

    def find(self, rank: int) -> tuple[int, int]:
        """The chunk holding visible element `rank` (0-based) and the rank inside it."""
        position = 0
        step = 1 << self.size.bit_length()
        tree = self.tree
        while step:
            probe = position + step
            if probe <= self.size and tree[probe] <= rank:
                position = probe
                rank -= tree[probe]
            step >>= 1
        return position, rank


KeyOf = Callable[[int], Any]
"""Maps an element handle to its totally ordered key."""


class Sequence:
    """The order of a list's or text's elements; values live in the document."""

    __slots__ = ("_chunk_of", "_chunks", "_hint_handle", "_hint_index", "_tree", "handle")

    def __init__(self, handle: int, chunk_of: list[Any]) -> None:
        self.handle = handle
        self._chunk_of = chunk_of
        self._chunks = [_Chunk([], bytearray(), 0)]
        self._tree = _Fenwick([0])
        # Where the last inserted element was: editing is local, so the next insertion
        # or deletion usually refers to it (saves a search of its chunk).
        self._hint_handle = -1
        self._hint_index = 0

    @classmethod
    def loaded(
        cls, handle: int, chunk_of: list[Any], handles: list[int], hidden: bytearray
    ) -> Sequence:
        """A sequence holding `handles` in this order, visible unless `hidden` (a
        snapshot being loaded: no integration, chunks half full)."""
        sequence = cls(handle, chunk_of)
        size = MAX_CHUNK_ELEMENTS // 2
        chunks: list[_Chunk] = []
        for start in range(0, len(handles), size):
            elements = handles[start : start + size]
            flags = bytearray(0 if hidden[h] else _VISIBLE for h in elements)
            chunk = _Chunk(elements, flags, len(chunks))
            for element in elements:
                chunk_of[element] = chunk
            chunks.append(chunk)
        if chunks:
            sequence._chunks = chunks
            sequence._tree = _Fenwick([chunk.visible for chunk in chunks])
        return sequence

    def __len__(self) -> int:
        """Number of visible (not deleted) elements."""
        return self._tree_total()

    # ------------------------------------------------------------ integration

    def insert_after(self, after: int, handles: list[int], key_of: KeyOf) -> None:
        """Integrate the run `handles` (consecutive, ascending keys) after `after`.

        `after` is this sequence's own handle for "at the start".  The caller has checked
        that `after` belongs here and that the new keys exceed `after`'s key.
        """
        chunk, index = self._position_after(after)
        chunk, index = self._skip_greater(chunk, index, key_of(handles[0]), key_of)
        chunk.elements[index:index] = handles
        chunk.flags[index:index] = bytes([_VISIBLE]) * len(handles)
        chunk.visible += len(handles)
        self._tree.add(chunk.index, len(handles))
        chunk_of = self._chunk_of
        for handle in handles:
            chunk_of[handle] = chunk
        self._hint_handle = handles[-1]
        self._hint_index = index + len(handles) - 1
        if len(chunk.elements) > MAX_CHUNK_ELEMENTS:
            self._split(chunk)

    def _position_after(self, after: int) -> tuple[_Chunk, int]:
        if after == self.handle:
            return self._chunks[0], 0
        chunk: _Chunk = self._chunk_of[after]
        return chunk, self._index_in(chunk, after) + 1

    def _index_in(self, chunk: _Chunk, handle: int) -> int:
        if handle == self._hint_handle:
            index = self._hint_index
            elements = chunk.elements
            if index < len(elements) and elements[index] == handle:
                return index
        return chunk.elements.index(handle)

    def _skip_greater(
        self, chunk: _Chunk, index: int, new_key: Any, key_of: KeyOf
    ) -> tuple[_Chunk, int]:
        while True:
            elements = chunk.elements
            while index < len(elements) and key_of(elements[index]) > new_key:
                index += 1
            if index < len(elements) or chunk.index + 1 == len(self._chunks):
                return chunk, index
            following = self._chunks[chunk.index + 1]
            if following.elements and key_of(following.elements[0]) < new_key:
                return chunk, index
            chunk, index = following, 0

    def _split(self, chunk: _Chunk) -> None:
        half = len(chunk.elements) // 2
        moved = _Chunk(chunk.elements[half:], chunk.flags[half:], chunk.index + 1)
        del chunk.elements[half:]
        del chunk.flags[half:]
        chunk.visible -= moved.visible
        chunk_of = self._chunk_of
        for handle in moved.elements:
            chunk_of[handle] = moved
        self._chunks.insert(moved.index, moved)
        for later in self._chunks[moved.index + 1 :]:
            later.index += 1
        self._tree = _Fenwick([each.visible for each in self._chunks])
        if len(moved.elements) > MAX_CHUNK_ELEMENTS:
            self._split(moved)
        if len(chunk.elements) > MAX_CHUNK_ELEMENTS:
            self._split(chunk)

    # ------------------------------------------------------------ deletion

    def set_visible(self, handle: int, visible: bool) -> bool:
        """Hide (delete) or show again (undo) an element; True when it changed."""
        chunk: _Chunk = self._chunk_of[handle]
        index = self._index_in(chunk, handle)
        if bool(chunk.flags[index]) == visible:
            return False
        chunk.flags[index] = _VISIBLE if visible else 0
        delta = 1 if visible else -1
        chunk.visible += delta
        self._tree.add(chunk.index, delta)
        return True

    def is_visible(self, handle: int) -> bool:
        """Whether the element is present (not deleted)."""
        chunk: _Chunk = self._chunk_of[handle]
        return bool(chunk.flags[chunk.elements.index(handle)])

    def remove(self, handle: int) -> None:
        """Take an element out entirely (only to undo its insertion in a rejected update)."""
        chunk: _Chunk = self._chunk_of[handle]
        index = chunk.elements.index(handle)
        if chunk.flags[index]:
            chunk.visible -= 1
            self._tree.add(chunk.index, -1)
        del chunk.elements[index]
        del chunk.flags[index]
        self._chunk_of[handle] = None

    # ------------------------------------------------------------ reading

    def element_at(self, position: int) -> int:
        """Handle of the visible element at `position` (0-based); IndexError if none."""
        if not 0 <= position < self._tree_total():
            raise IndexError(position)
        chunk_index, rank = self._tree.find(position)
        chunk = self._chunks[chunk_index]
        if chunk.visible == len(chunk.elements):
            return chunk.elements[rank]
        flags = chunk.flags
        low, high = 0, len(flags) - 1
        # The smallest index whose prefix (inclusive) holds rank + 1 visible elements.
        while low < high:
            middle = (low + high) // 2
            if flags.count(_VISIBLE, 0, middle + 1) > rank:
                high = middle
            else:
                low = middle + 1
        return chunk.elements[low]

    def _tree_total(self) -> int:
        total = 0
        position = self._tree.size
        tree = self._tree.tree
        while position > 0:
            total += tree[position]
            position -= position & -position
        return total

    def visible_handles(self) -> Iterator[int]:
        """Handles of the visible elements, in order."""
        for chunk in self._chunks:
            if chunk.visible == len(chunk.elements):
                yield from chunk.elements
            else:
                for handle, flag in zip(chunk.elements, chunk.flags, strict=True):
                    if flag:
                        yield handle

    def all_handles(self) -> Iterator[int]:
        """Every element, tombstones included, in order (for checks and tests)."""
        for chunk in self._chunks:
            yield from chunk.elements
