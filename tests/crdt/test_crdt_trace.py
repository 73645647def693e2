"""Replay a prefix of the automerge-paper editing trace (real typing by one author).

The reference is plain Python string splicing of the same edits; a second replica that
receives the signed updates must hold the same text.  The full trace is replayed by
`benchmarks/crdt_bench.py`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from synod.core import Received
from synod.crdt.messages import NewText
from synod.crdt.replica import Delete, Edit, InsertText, Put, Replica

TRACE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "traces"
TRACE_FILE = TRACE / "automerge-paper.json.gz"
PREFIX_EDITS = 20_000


@pytest.fixture(scope="module")
def trace() -> dict[str, Any]:
    if not TRACE_FILE.exists():
        pytest.skip(f"trace not found at {TRACE_FILE} (../shared/data is absent)")
    with gzip.open(TRACE_FILE) as handle:
        loaded: dict[str, Any] = json.load(handle)
    return loaded


def edits_of(transaction: dict[str, Any]) -> list[Edit]:
    edits: list[Edit] = []
    for position, deleted, inserted in transaction["patches"]:
        if deleted:
            edits.append(Delete(("text",), position, deleted))
        if inserted:
            edits.append(InsertText(("text",), position, inserted))
    return edits


def spliced(start: str, transactions: list[dict[str, Any]]) -> str:
    text = start
    for transaction in transactions:
        for position, deleted, inserted in transaction["patches"]:
            text = text[:position] + inserted + text[position + deleted :]
    return text


@pytest.mark.parametrize("edits_per_update", [100, 1])
def test_trace_prefix_replays_to_the_spliced_text_locally_and_remotely(
    make_replica: Callable[..., Replica], trace: dict[str, Any], edits_per_update: int
) -> None:
    count = PREFIX_EDITS if edits_per_update > 1 else PREFIX_EDITS // 10
    transactions = trace["txns"][:count]
    author, receiver = make_replica(1), make_replica(2)
    steps = [author.transact([Put((), "text", NewText())])]
    if trace["startContent"]:
        steps.append(author.transact([InsertText(("text",), 0, trace["startContent"])]))
    for start in range(0, len(transactions), edits_per_update):
        edits: list[Edit] = []
        for transaction in transactions[start : start + edits_per_update]:
            edits.extend(edits_of(transaction))
        steps.append(author.transact(edits))
    expected = spliced(trace["startContent"], transactions)
    assert author.document.text(("text",)) == expected
    for step in steps:
        for out in step.outgoing:
            receiver.handle(Received(author.node_id, out.message), 0)
    assert receiver.document.text(("text",)) == expected
    assert receiver.value() == author.value()
