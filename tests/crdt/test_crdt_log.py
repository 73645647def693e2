"""The shared log document of `synod crdt run`: genesis, appends, convergence of order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from synod.core import LocalError, Received
from synod.crdt.log import append_edits, appended_entry, entries, genesis_update
from synod.crdt.messages import UPDATE_CODEC, Updates
from synod.crdt.replica import Replica
from synod.crypto import KeyPair, node_id_text


def with_genesis(replica: Replica, document: str = "log") -> Replica:
    _, genesis = genesis_update(document)
    message = Updates([UPDATE_CODEC.encode(genesis)])
    replica.handle(Received(genesis.body.author, message), 0)  # type: ignore[arg-type]
    return replica


def test_every_node_builds_the_same_genesis_and_documents_differ_by_name() -> None:
    # Ed25519 signatures are deterministic, so the genesis is the same bytes everywhere.
    first_id, first = genesis_update("log")
    second_id, second = genesis_update("log")
    assert (first_id, UPDATE_CODEC.encode(first)) == (second_id, UPDATE_CODEC.encode(second))
    assert genesis_update("other")[0] != first_id


def test_appending_before_the_genesis_is_refused(
    make_replica: Callable[..., Replica],
) -> None:
    with pytest.raises(LocalError):
        append_edits(make_replica(1), "too early", "alice")


def test_concurrent_appends_end_in_one_order_everywhere(
    make_replica: Callable[..., Replica], network: Any
) -> None:
    replicas = [with_genesis(make_replica(seed)) for seed in (1, 2, 3)]
    network = network(replicas)
    for round_number in range(3):
        for index, replica in enumerate(replicas):  # each appends before hearing the others
            text = f"r{round_number} from {index}"
            network.absorb(replica.node_id, replica.transact(append_edits(replica, text, "n")))
        network.run()
    logs = [entries(replica) for replica in replicas]
    assert logs[0] == logs[1] == logs[2]
    assert sorted(entry["text"] for entry in logs[0]) == sorted(
        f"r{r} from {i}" for r in range(3) for i in range(3)
    )
    # Rounds stay in order: an append names the previous entries as its causal past.
    rounds = [entry["text"][:2] for entry in logs[0]]
    assert rounds == sorted(rounds)


def test_the_appended_entry_is_read_back_from_the_update() -> None:
    replica = with_genesis(Replica(KeyPair.from_seed(b"\x05" * 32)))
    replica.transact(append_edits(replica, "hello", "alice"))
    update = UPDATE_CODEC.decode(replica.encoded_update(replica.applied_ids()[-1]))
    assert appended_entry(update) == {
        "author": node_id_text(replica.node_id),
        "name": "alice",
        "text": "hello",
    }
    _, genesis = genesis_update("log")
    assert appended_entry(genesis) is None
