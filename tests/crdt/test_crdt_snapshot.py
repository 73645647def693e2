"""Snapshots: a restarted replica loads its state and applies only the updates after the
latest snapshot, and then behaves exactly like one that replayed everything."""

from __future__ import annotations

import random
from typing import Any

import pytest

from synod.core import Received, Step
from synod.crdt.document import Document
from synod.crdt.messages import CODEC, UPDATE_CODEC, Updates
from synod.crdt.replica import LocalChange, Replica, ReplicaConfig
from synod.crdt.snapshot import SNAPSHOT_KEY, decode_snapshot
from synod.crypto import KeyPair
from synod.sim.scenarios.crdt import draw_edits


def keys_for(seed: int) -> KeyPair:
    return KeyPair.from_seed(seed.to_bytes(32, "big"))


class Session:
    """Two replicas editing at random and exchanging what they made; `storage` keeps the
    first one's persisted records."""

    def __init__(self, seed: int, interval: int) -> None:
        self.rng = random.Random(seed)
        config = ReplicaConfig(snapshot_interval=interval)
        self.config = config
        self.first = Replica(keys_for(1), config=config)
        self.second = Replica(keys_for(2), config=config)
        self.storage: dict[bytes, bytes] = {}

    def absorb(self, step: Step) -> None:
        for record in step.persist:
            assert record.value is not None
            self.storage[record.key] = record.value

    def edit(self, rounds: int, first: Replica | None = None) -> None:
        first = first or self.first
        for _ in range(rounds):
            for replica in (first, self.second):
                edits = draw_edits(replica, self.rng)
                if edits:
                    step = replica.handle(_propose(edits), 0)
                    if replica is first:
                        self.absorb(step)
            self.exchange(first)

    def exchange(self, first: Replica) -> None:
        for source, target in ((first, self.second), (self.second, first)):
            missing = [i for i in source.applied_ids() if i not in target.graph]
            if missing:
                message = Updates([source.encoded_update(i) for i in missing])
                decoded = CODEC.decode(CODEC.encode(message))
                step = target.handle(Received(source.node_id, decoded), 0)  # type: ignore[arg-type]
                if target is first:
                    self.absorb(step)


def _propose(edits: list[Any]) -> Any:
    from synod.core import Proposed

    return Proposed(LocalChange(tuple(edits)))


def same_state(one: Replica, other: Replica) -> None:
    assert one.value() == other.value()
    assert one.document.structure() == other.document.structure()
    assert one.heads() == other.heads()
    assert one.history() == other.history()
    assert one.applied_ids() == other.applied_ids()
    assert [one.encoded_update(i) for i in one.applied_ids()] == [
        other.encoded_update(i) for i in other.applied_ids()
    ]


@pytest.mark.parametrize("seed", range(6))
def test_a_restart_from_a_snapshot_equals_a_replay_and_goes_on_alike(seed: int) -> None:
    session = Session(seed, interval=7)
    session.edit(40)
    assert SNAPSHOT_KEY in session.storage
    loaded = Replica(keys_for(1), dict(session.storage), session.config)
    replayed = Replica(keys_for(1), dict(session.storage), ReplicaConfig(snapshot_interval=0))
    same_state(loaded, session.first)
    same_state(replayed, session.first)
    # Both go on editing: the same edits (drawn by the same seed) give the same state,
    # and the second replica accepts what the loaded one makes.
    peers = {id(loaded): session.second, id(replayed): _copy(session.second)}
    for replica in (loaded, replayed):
        going_on = Session(seed + 100, interval=7)
        going_on.second = peers[id(replica)]
        going_on.edit(15, first=replica)
    assert loaded.document.structure() == replayed.document.structure()
    assert loaded.value() == replayed.value()
    assert session.second.updates_digest() == loaded.updates_digest()


def _copy(replica: Replica) -> Replica:
    copy = Replica(keys_for(2))
    for update_id in replica.applied_ids():
        copy.receive(UPDATE_CODEC.decode(replica.encoded_update(update_id)), Step())
    return copy


def test_a_restart_applies_only_the_updates_after_the_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = Session(7, interval=50)
    session.edit(60)
    applied = len(session.first.graph)
    calls = [0]
    original = Document.apply_update

    def counting(self: Document, *arguments: Any) -> None:
        calls[0] += 1
        original(self, *arguments)

    monkeypatch.setattr(Document, "apply_update", counting)
    loaded = Replica(keys_for(1), dict(session.storage), session.config)
    snapshot = decode_snapshot(session.storage[SNAPSHOT_KEY])
    assert snapshot is not None
    # Snapshots at 50, 100, 150 ... (the interval while it exceeds a quarter).
    assert applied > 100
    assert snapshot.updates == applied - applied % 50
    assert calls[0] == applied - snapshot.updates
    same_state(loaded, session.first)


def test_a_snapshot_of_another_format_is_ignored_and_everything_replayed() -> None:
    session = Session(3, interval=5)
    session.edit(20)
    storage = dict(session.storage)
    storage[SNAPSHOT_KEY] = b"\x93\x63\x01\x02"  # version 99: not ours
    same_state(Replica(keys_for(1), storage, session.config), session.first)
