"""The recorded history of a simulation: one JSON object per line.

Every record has `t` (virtual time in ms), `kind`, and kind-specific fields; bytes are
written as hex.  Checkers (`synod.sim.checkers`) read nothing but this history, so a run
can be checked again from its file, and two runs of one seed are compared by `digest()`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import msgspec

Record = dict[str, Any]


def to_plain(value: Any) -> Any:  # noqa: PLR0911 (one return per kind of value)
    """Convert events and messages to JSON-compatible values (bytes as hex, enum members
    as their values)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, enum.Enum):
        return to_plain(value.value)  # as the wire has it (msgspec encodes the value)
    if isinstance(value, msgspec.Struct):
        plain = {"type": type(value).__name__}
        for name in value.__struct_fields__:
            plain[name] = to_plain(getattr(value, name))
        return plain
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        plain = {"type": type(value).__name__}
        for item in dataclasses.fields(value):
            plain[item.name] = to_plain(getattr(value, item.name))
        return plain
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(to_plain(key)): to_plain(item) for key, item in value.items()}
    if isinstance(value, (frozenset, set)):
        return sorted(to_plain(item) for item in value)
    return value


class History:
    """Append-only list of records, hashed incrementally."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._hash = hashlib.sha256()

    def append(self, record: Record) -> None:
        self.records.append(record)
        self._hash.update(_line(record).encode())

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def digest(self) -> str:
        """SHA-256 (hex) of the JSON lines: equal for byte-identical histories."""
        return self._hash.hexdigest()

    def lines(self) -> Iterator[str]:
        for record in self.records:
            yield _line(record)

    def of_kind(self, kind: str) -> Iterator[Record]:
        return (record for record in self.records if record["kind"] == kind)


def _line(record: Record) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"


def read_lines(lines: Iterator[str]) -> list[Record]:
    """Parse JSON lines (for checking a history written by another run)."""
    return [json.loads(line) for line in lines if line.strip()]
