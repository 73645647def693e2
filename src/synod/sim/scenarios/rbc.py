"""Reliable broadcast (`synod.rbc`) in the simulator.

Correct nodes each broadcast a few payloads at random times during the safety phase;
Byzantine nodes run the protocol with their output corrupted (withholding, replaying,
garbage, equivocation).  Checkers:

- agreement: no two correct nodes deliver different payloads for one instance, and none
  delivers an instance twice;
- validity: a payload delivered for a correct origin is one that origin proposed;
- liveness (after healing): every correct node delivers every correct node's payloads.

`RbcScenario(split_brain=True)` is the attack that breaks agreement once the Byzantine
nodes exceed f: a Byzantine origin sends payload A to one half of the correct nodes and
B to the other, and its accomplices echo and ready A to the first half and B to the
second.  With at most f Byzantine nodes the same attack must fail.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from synod.core import Core, Proposed, Storage
from synod.crypto import KeyPair, NodeId
from synod.rbc import CODEC, Echo, Initial, RbcCore, Ready
from synod.rbc.core import payload_digest
from synod.sim.adversary import Behaviour, ByzantineCore, Equivocate, Garbage, Replay, Withhold
from synod.sim.checkers import AgreementChecker, Checker, Violation, events_of
from synod.sim.history import Record
from synod.sim.world import World


def node_keys(index: int) -> KeyPair:
    """Deterministic keys for simulated node `index`."""
    return KeyPair.from_seed(index.to_bytes(4, "big") * 8)


@dataclass(slots=True)
class _Collusion:
    """What colluding Byzantine nodes share: the two faces of each equivocated payload."""

    first_half: frozenset[NodeId]
    faces: dict[bytes, tuple[bytes, bytes]] = field(default_factory=dict)

    def face(self, digest: bytes, recipient: NodeId) -> bytes:
        pair = self.faces.get(digest)
        if pair is None:
            return digest
        return pair[0] if recipient in self.first_half else pair[1]

    def split(self, message: Any, rng: random.Random, recipient: NodeId) -> Any:
        match message:
            case Initial(sequence=sequence, payload=payload):
                faces = (payload + b"/A", payload + b"/B")
                pair = (payload_digest(faces[0]), payload_digest(faces[1]))
                for digest in (payload_digest(payload), *pair):
                    self.faces[digest] = pair
                chosen = faces[0] if recipient in self.first_half else faces[1]
                return Initial(sequence, chosen)
            case Echo(origin=origin, sequence=sequence, digest=digest):
                return Echo(origin, sequence, self.face(digest, recipient))
            case Ready(origin=origin, sequence=sequence, digest=digest):
                return Ready(origin, sequence, self.face(digest, recipient))
        return message


def _random_mutation(message: Any, rng: random.Random, recipient: NodeId) -> Any:
    """Generic lies: other payloads, votes for unknown digests, forged origins."""
    match message:
        case Initial(sequence=sequence, payload=payload):
            return Initial(sequence, payload + bytes([rng.randrange(256)]))
        case Echo(origin=origin, sequence=sequence):
            return Echo(origin, sequence, rng.randbytes(32))
        case Ready(sequence=sequence, digest=digest):
            return Ready(rng.randbytes(32), sequence, digest)
    return message


@dataclass(slots=True)
class RbcScenario:
    """n members, `byzantine` of them Byzantine, `proposals` broadcasts per correct node."""

    nodes: int = 4
    byzantine: int = 1
    proposals: int = 3
    split_brain: bool = False
    retransmit_ms: int = 200
    name: str = "rbc"
    _keys: list[KeyPair] = field(default_factory=list)
    _delivered: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    _expected: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not 0 <= self.byzantine <= self.nodes:
            raise ValueError("byzantine count out of range")
        self._keys = [node_keys(index) for index in range(self.nodes)]

    @property
    def members(self) -> list[NodeId]:
        return [keys.node_id for keys in self._keys]

    def correct_hex(self) -> set[str]:
        return {keys.node_id.hex() for keys in self._keys[self.byzantine :]}

    def build(self, world: World) -> None:
        members = self.members
        correct = members[self.byzantine :]
        collusion = _Collusion(frozenset(correct[: len(correct) // 2]))
        for index, keys in enumerate(self._keys):
            if index < self.byzantine:
                behaviours = self._byzantine_behaviours(world.rng, collusion)
                factory = self._byzantine_factory(keys, behaviours)
                world.add_node(keys.node_id, factory, CODEC, byzantine=True)
            else:
                world.add_node(keys.node_id, self._correct_factory(keys), CODEC)
        world.observe(self._track)
        self._schedule_proposals(world)

    def _correct_factory(self, keys: KeyPair) -> Any:
        members, retransmit_ms = self.members, self.retransmit_ms

        def build(storage: Storage, rng: random.Random) -> Core:
            return RbcCore(keys, members, storage, retransmit_ms=retransmit_ms)

        return build

    def _byzantine_factory(self, keys: KeyPair, behaviours: list[Behaviour]) -> Any:
        members, retransmit_ms = self.members, self.retransmit_ms

        def build(storage: Storage, rng: random.Random) -> Core:
            inner = RbcCore(keys, members, storage, retransmit_ms=retransmit_ms)
            return ByzantineCore(inner, members, rng, CODEC, behaviours)

        return build

    def _byzantine_behaviours(self, rng: random.Random, collusion: _Collusion) -> list[Behaviour]:
        if self.split_brain:
            return [Equivocate(collusion.split)]
        pool: list[Behaviour] = [
            Withhold(rng.choice((0.3, 1.0))),
            Replay(),
            Garbage(),
            Equivocate(_random_mutation, probability=0.5),
        ]
        chosen = [behaviour for behaviour in pool if rng.random() < 0.5]
        return chosen or [pool[rng.randrange(len(pool))]]

    def _schedule_proposals(self, world: World) -> None:
        proposers = self._keys if self.split_brain else self._keys[self.byzantine :]
        for keys in proposers:
            for number in range(self.proposals):
                payload = f"{keys.node_id.hex()[:8]}-{number}".encode()
                world.input_at(world.rng.randint(0, 1_500), keys.node_id, Proposed(payload))
                if keys in self._keys[self.byzantine :]:
                    self._expected.add((keys.node_id.hex(), payload.hex()))

    def _track(self, record: Record) -> None:
        if record["kind"] == "input lost" and record["event"]["type"] == "Proposed":
            # The application's proposal reached a node that was down: nothing to expect.
            self._expected.discard((record["node"], record["event"]["value"]))
        event = events_of(record, "Delivered")
        if event is not None and record["node"] in self.correct_hex():
            key = (event["origin"], event["payload"])
            self._delivered.setdefault(record["node"], set()).add(key)

    def checkers(self) -> list[Checker]:
        correct = self.correct_hex()
        return [
            AgreementChecker(
                "Delivered",
                key_of=lambda event: f"{event['origin'][:8]}#{event['sequence']}",
                value_of=lambda event: event["payload"],
                correct_nodes=correct,
            ),
            RbcValidityChecker(correct),
        ]

    def crashable(self, world: World) -> list[int]:
        return [node.index for node in world.correct_nodes()]

    def max_crashed(self) -> int:
        return max(1, (self.nodes - 1) // 3)

    def is_live(self, world: World) -> bool:
        correct = self.correct_hex()
        return all(self._expected <= self._delivered.get(node, set()) for node in correct)


@dataclass(slots=True)
class RbcValidityChecker:
    """A payload delivered for a correct origin is one that origin proposed.

    Proposals are read from the history's `input` records, so the checker needs nothing
    but the history.
    """

    correct_nodes: set[str]
    name: str = "validity"
    proposed: dict[str, set[str]] = field(default_factory=dict)

    def observe(self, record: Record) -> list[Violation]:
        if record["kind"] == "input" and record["event"]["type"] == "Proposed":
            self.proposed.setdefault(record["node"], set()).add(record["event"]["value"])
            return []
        event = events_of(record, "Delivered")
        if event is None or record["node"] not in self.correct_nodes:
            return []
        origin = event["origin"]
        if origin not in self.correct_nodes or event["payload"] in self.proposed.get(origin, ()):
            return []
        detail = f"delivered a payload {origin[:8]} never sent"
        return [Violation(self.name, record["t"], detail)]

    def finish(self) -> list[Violation]:
        return []
