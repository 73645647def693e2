"""Checkers: pure judgements over a recorded history (Jepsen's checkers).

A checker reads history records one at a time (`observe`) and says what it found at the
end (`finish`).  The same object checks a live run after every step (the world calls
`observe` as it records) and a finished history read back from its JSON lines
(`check_history`).  Checkers judge correct nodes only: the scenario tells them which
nodes are Byzantine.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from synod.sim.history import Record


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken property: which checker, when (virtual ms) and what."""

    checker: str
    t: int
    detail: str

    def __str__(self) -> str:
        return f"[{self.checker}] at t={self.t} ms: {self.detail}"


class Checker(Protocol):
    name: str

    def observe(self, record: Record) -> list[Violation]: ...

    def finish(self) -> list[Violation]: ...


def check_history(checkers: Iterable[Checker], records: Iterable[Record]) -> list[Violation]:
    """Run checkers over a whole history; every violation found, in order."""
    active = list(checkers)
    found: list[Violation] = []
    for record in records:
        for checker in active:
            found.extend(checker.observe(record))
    for checker in active:
        found.extend(checker.finish())
    return found


def events_of(record: Record, event_type: str) -> dict[str, Any] | None:
    """The event payload if `record` is an application event of `event_type`."""
    if record["kind"] != "event":
        return None
    event = record["event"]
    if isinstance(event, dict) and event.get("type") == event_type:
        return event
    return None


KeyOf = Callable[[dict[str, Any]], str]
ValueOf = Callable[[dict[str, Any]], Any]


@dataclass(slots=True)
class AgreementChecker:
    """No two correct nodes decide differently for one key; no node decides a key twice.

    Decisions are application events of `event_type`; `key_of` and `value_of` read them
    (SCP: slot and value; reliable broadcast: instance and payload).
    """

    event_type: str
    key_of: KeyOf
    value_of: ValueOf
    correct_nodes: Collection[str]
    name: str = "agreement"
    decided: dict[str, tuple[Any, str]] = field(default_factory=dict)
    per_node: set[tuple[str, str]] = field(default_factory=set)

    def observe(self, record: Record) -> list[Violation]:
        event = events_of(record, self.event_type)
        if event is None or record["node"] not in self.correct_nodes:
            return []
        node, key, value = record["node"], self.key_of(event), self.value_of(event)
        found = []
        if (node, key) in self.per_node:
            found.append(Violation(self.name, record["t"], f"node {node[:8]} decided {key} twice"))
        self.per_node.add((node, key))
        first = self.decided.setdefault(key, (value, node))
        if first[0] != value:
            found.append(
                Violation(
                    self.name,
                    record["t"],
                    f"{key}: node {first[1][:8]} decided {_short(first[0])} but node "
                    f"{node[:8]} decided {_short(value)}",
                )
            )
        return found

    def finish(self) -> list[Violation]:
        return []


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."
