"""Answering a peer's heads is rate limited per peer (a token bucket in the replica)."""

from __future__ import annotations

from collections.abc import Callable

from synod.core import Received, Send
from synod.crdt.messages import Heads, NewCounter, Updates
from synod.crdt.replica import Increment, MessageDropped, Put, Replica

PEER_A = b"\xaa" * 32
PEER_B = b"\xbb" * 32


def answers(replica: Replica, sender: bytes, now_ms: int) -> int:
    """How many update batches the replica sends `sender` for an empty-heads announcement."""
    step = replica.handle(Received(sender, Heads([])), now_ms)  # type: ignore[arg-type]
    sent = [out for out in step.outgoing if isinstance(out, Send) and out.to == sender]
    if not sent:
        assert any(isinstance(e, MessageDropped) and "too often" in e.reason for e in step.events)
    return int(any(isinstance(out.message, Updates) for out in sent))


def test_a_peer_repeating_empty_heads_gets_the_burst_then_one_answer_per_interval(
    make_replica: Callable[..., Replica],
) -> None:
    replica = make_replica(1, heads_answer_burst=3, heads_answer_interval_ms=100)
    replica.transact([Put((), "n", NewCounter())])
    replica.transact([Increment(("n",), 1)])
    # A burst of 3 at once, then nothing until a token comes back.
    assert [answers(replica, PEER_A, 0) for _ in range(6)] == [1, 1, 1, 0, 0, 0]
    assert answers(replica, PEER_A, 99) == 0
    assert answers(replica, PEER_A, 100) == 1
    assert answers(replica, PEER_A, 150) == 0
    # After a long quiet spell the bucket is full again, but holds no more than the burst.
    assert [answers(replica, PEER_A, 10_000) for _ in range(5)] == [1, 1, 1, 0, 0]


def test_each_peer_has_its_own_bucket(make_replica: Callable[..., Replica]) -> None:
    replica = make_replica(1, heads_answer_burst=1, heads_answer_interval_ms=1_000)
    replica.transact([Put((), "n", NewCounter())])
    assert answers(replica, PEER_A, 0) == 1
    assert answers(replica, PEER_A, 0) == 0
    assert answers(replica, PEER_B, 0) == 1


def test_a_zero_burst_means_no_limit(make_replica: Callable[..., Replica]) -> None:
    replica = make_replica(1, heads_answer_burst=0)
    replica.transact([Put((), "n", NewCounter())])
    assert all(answers(replica, PEER_A, 0) == 1 for _ in range(50))
