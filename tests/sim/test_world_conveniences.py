"""The simulator's conveniences for tests and examples: a perfect network in one line,
feeding inputs now, stepping until a predicate holds, silencing a node, typed access to
cores and events, restarting with another factory."""

from __future__ import annotations

import pytest

from synod.core import (
    Broadcast,
    Input,
    Persist,
    Proposed,
    Received,
    Reply,
    RequestReceived,
    Started,
    Step,
    Storage,
)
from synod.crypto import NodeId
from synod.sim.world import World
from synod.wire import Codec, Message


class Note(Message, frozen=True):
    text: str


class Heard(Message, frozen=True):
    """Event: a note arrived (in the history as a plain record, here as the object)."""

    sender: bytes
    text: str
    at_ms: int


class GossipCore:
    """Broadcasts each proposal; records each note heard as an event and persists a count."""

    def __init__(self, node_id: NodeId, storage: Storage) -> None:
        self._node_id = node_id
        self.heard = int(storage.get(b"heard", b"0"))

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        match event:
            case Started():
                return Step()
            case Proposed(value=value):
                return Step(outgoing=[Broadcast(Note(value.decode()))])
            case Received(sender=sender, message=Note(text=text)):
                self.heard += 1
                return Step(
                    persist=[Persist(b"heard", str(self.heard).encode())],
                    events=[Heard(bytes(sender), text, now_ms)],
                )
        return Step()


class LoudCore(GossipCore):
    """Another core type, for restarts with a new factory."""


CODEC: Codec[Note] = Codec(Note)
IDS = [NodeId(bytes([index]) * 32) for index in range(4)]


def gossip_world(seed: int = 0, latency_ms: tuple[int, int] = (1, 1)) -> World:
    world = World.perfect(seed, latency_ms=latency_ms)
    world.add_nodes(
        {
            node_id: (lambda storage, rng, node_id=node_id: GossipCore(node_id, storage))
            for node_id in IDS
        },
        CODEC,
    )
    return world


def everyone_heard(world: World, text: str) -> bool:
    return all(
        any(event.text == text for event in world.events_of(node_id, Heard))
        for node_id in IDS[1:]
    )


def test_a_perfect_world_delivers_every_broadcast_and_steps_until_done() -> None:
    world = gossip_world()
    world.input(IDS[0], Proposed(b"hello"))
    assert world.step_until(lambda: everyone_heard(world, "hello"))
    assert world.events_of(IDS[0], Heard) == []
    assert world.core(IDS[1], GossipCore).heard == 1


def test_latency_is_drawn_from_the_range_and_reorders_by_seed() -> None:
    world = gossip_world(seed=3, latency_ms=(20, 80))
    for number in range(10):
        world.input(IDS[0], Proposed(str(number).encode()))
    assert world.step_until(lambda: all(len(world.events_of(n, Heard)) == 10 for n in IDS[1:]))
    arrivals = [event.at_ms for node_id in IDS[1:] for event in world.events_of(node_id, Heard)]
    assert min(arrivals) >= 20 and max(arrivals) <= 80
    orders = {tuple(event.text for event in world.events_of(n, Heard)) for n in IDS[1:]}
    assert orders != {tuple(str(number) for number in range(10))}, "no message overtook another"


def test_the_same_seed_gives_the_same_history() -> None:
    digests = set()
    for _ in range(2):
        world = gossip_world(seed=9, latency_ms=(1, 50))
        for number in range(5):
            world.input(IDS[number % 4], Proposed(str(number).encode()))
        world.step_until(lambda: False, max_steps=1_000)
        digests.add(world.history.digest())
    assert len(digests) == 1


def test_step_until_stops_at_the_step_and_time_budgets() -> None:
    world = gossip_world(latency_ms=(10, 10))
    world.input(IDS[0], Proposed(b"x"))
    assert not world.step_until(lambda: everyone_heard(world, "x"), max_ms=5)
    assert world.now_ms == 0 and world.events == []
    assert not world.step_until(lambda: everyone_heard(world, "x"), max_steps=2)
    assert len(world.events) == 2
    assert world.step_until(lambda: everyone_heard(world, "x"))


def test_a_silenced_node_neither_sends_nor_receives_until_unsilenced() -> None:
    world = gossip_world()
    world.silence(IDS[1])
    world.input(IDS[0], Proposed(b"to all"))
    world.input(IDS[1], Proposed(b"from the silent"))
    world.step_until(lambda: False)
    assert world.events_of(IDS[1], Heard) == []
    assert all(
        [event.text for event in world.events_of(node_id, Heard)] == ["to all"]
        for node_id in IDS[2:]
    )
    world.unsilence(IDS[1])
    world.input(IDS[0], Proposed(b"again"))
    assert world.step_until(lambda: everyone_heard(world, "again"))


def test_restart_with_another_factory_rebuilds_from_what_was_persisted() -> None:
    world = gossip_world()
    world.input(IDS[0], Proposed(b"one"))
    world.step_until(lambda: everyone_heard(world, "one"))
    world.crash(IDS[2])
    with pytest.raises(LookupError):
        world.input(IDS[2], Proposed(b"down"))
    with pytest.raises(LookupError):
        world.core(IDS[2], GossipCore)
    world.restart(IDS[2], lambda storage, rng: LoudCore(IDS[2], storage))
    rebuilt = world.core(IDS[2], LoudCore)
    assert rebuilt.heard == 1
    with pytest.raises(TypeError):
        world.core(IDS[1], LoudCore)


def test_bad_latency_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="latency range"):
        World.perfect(latency_ms=(5, 1))
    with pytest.raises(ValueError, match="loss probability"):
        World.perfect(loss_probability=1.0)


class EchoCore(GossipCore):
    def handle(self, event: Input, now_ms: int) -> Step:
        if isinstance(event, RequestReceived):
            return Step(outgoing=[Reply(event.client, event.request_id, event.body)])
        return super().handle(event, now_ms)


def test_answers_to_a_client_outside_the_world_are_kept_in_order() -> None:
    world = World.perfect()
    world.add_nodes({IDS[0]: lambda storage, rng: EchoCore(IDS[0], storage)}, CODEC)
    world.silence(IDS[0])  # answers to outside clients never cross the network
    world.input(IDS[0], RequestReceived("client", 1, Note("first")))
    world.input(IDS[0], RequestReceived("client", 2, Note("second")))
    assert world.replies == [
        (IDS[0], Reply("client", 1, Note("first"))),
        (IDS[0], Reply("client", 2, Note("second"))),
    ]
