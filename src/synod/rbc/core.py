"""Bracha's reliable broadcast (Bracha 1987; Cachin, Guerraoui, Rodrigues, *Introduction
to Reliable and Secure Distributed Programming*, section 3.11, "authenticated double-echo
broadcast").

Theory of operation.  n = 3f + 1 members over authenticated links; at most f Byzantine.
Each broadcast instance is named by its origin and a per-origin sequence number.

- The origin sends `Initial(sequence, payload)` to all.
- On the origin's first `Initial` for an instance, a member sends `Echo(digest)`.
- On 2f + 1 echoes for one digest, or f + 1 readies for one digest (amplification), a
  member sends `Ready(digest)` (once per instance, for one digest only).
- On 2f + 1 readies for a digest whose payload it holds, it delivers that payload.

Guarantees within n >= 3f + 1: no two correct members deliver different payloads for one
instance (agreement), each delivers at most once (integrity), and if a correct origin
broadcasts, every correct member delivers (validity) once links are reliable.

A member persists its own echo and ready votes before sending them, so a restarted member
never votes for two digests in one instance.  Links in the simulator and after a crash
lose messages, so every member periodically retransmits its own messages for the most
recent instances it has not seen complete everywhere (a bounded window), which restores
reliable links as Bracha assumes.  A member further behind catches up: with every
retransmission each member broadcasts a `Status` (its lowest undelivered sequence per
origin), and members ahead answer with their `Ready` and the delivered payload
(`Forward`) for the missing instances.  A forwarded payload is kept only when f + 1
members are ready for its digest, so at least one correct member vouches for it.

Peer input is bounded: an instance more than `WINDOW` ahead of an origin's lowest
undelivered sequence is refused.  The node's own proposals are numbered and persisted
at once but broadcast only while they fit in that window, so a burst of proposals waits
instead of being refused by the other members.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

import msgspec

from synod.core import (
    Broadcast,
    Input,
    Persist,
    Proposed,
    Received,
    Send,
    SetTimer,
    Started,
    Step,
    Storage,
    TimerFired,
)
from synod.crypto import KeyPair, NodeId, blake2b, node_id_text
from synod.wire import U64, Bytes32, Codec, Message

MAX_PAYLOAD_BYTES = 64 * 1024
WINDOW = 64
"""How far ahead of an origin's lowest undelivered instance a message may be."""
RETRANSMIT_TIMER = "rbc.retransmit"
RETRANSMIT_TAIL = 8
"""Delivered instances per origin whose messages are still retransmitted, for members
that were down when they completed."""

MAX_MEMBERS = 256
CATCHUP_BATCH = WINDOW // 2
"""Instances per origin sent to a lagging member in answer to one `Status`."""
CATCHUP_HISTORY = 256
"""Delivered payloads per origin kept in memory to answer lagging members; a member
further behind than this must be brought up to date by the application."""

Payload = Annotated[bytes, msgspec.Meta(max_length=MAX_PAYLOAD_BYTES)]


class Initial(Message, frozen=True, tag="initial"):
    """The origin's payload for instance (sender, sequence)."""

    sequence: U64
    payload: Payload


class Echo(Message, frozen=True, tag="echo"):
    origin: Bytes32
    sequence: U64
    digest: Bytes32


class Ready(Message, frozen=True, tag="ready"):
    origin: Bytes32
    sequence: U64
    digest: Bytes32


class Status(Message, frozen=True, tag="status"):
    """The sender's lowest undelivered sequence per origin, in member order."""

    next_undelivered: Annotated[tuple[U64, ...], msgspec.Meta(max_length=MAX_MEMBERS)]


class Forward(Message, frozen=True, tag="forward"):
    """A delivered payload passed on to a member that is behind (catch-up)."""

    origin: Bytes32
    sequence: U64
    payload: Payload


RbcMessage = Initial | Echo | Ready | Status | Forward
CODEC: Codec[RbcMessage] = Codec(RbcMessage, max_message_bytes=MAX_PAYLOAD_BYTES + 256)


@dataclass(frozen=True, slots=True)
class Delivered:
    """Event: the payload of instance (origin, sequence) was reliably delivered."""

    origin: NodeId
    sequence: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Rejected:
    """Event: a peer message was refused (the reason names the rule)."""

    sender: NodeId
    reason: str


def payload_digest(payload: bytes) -> bytes:
    return blake2b(payload, person=b"synod-rbc")


class _VoteRecord(msgspec.Struct, frozen=True, array_like=True):
    """What this member said in one instance: persisted before it is sent."""

    echo: bytes | None = None
    ready: bytes | None = None
    echoed_payload: bytes | None = None


@dataclass(slots=True)
class _Instance:
    payloads: dict[bytes, bytes] = field(default_factory=dict)
    echoes: dict[bytes, set[NodeId]] = field(default_factory=dict)
    readies: dict[bytes, set[NodeId]] = field(default_factory=dict)
    echoed: set[NodeId] = field(default_factory=set)
    readied: set[NodeId] = field(default_factory=set)
    own_echo: bytes | None = None
    own_ready: bytes | None = None


_VOTE_PREFIX = b"vote/"
_DELIVERED_PREFIX = b"delivered/"
_SENT_PREFIX = b"sent/"
_INSTANCE_KEY = struct.Struct(">32sQ")
_VOTE_CODEC = msgspec.msgpack.Decoder(_VoteRecord)


def _instance_key(prefix: bytes, origin: bytes, sequence: int) -> bytes:
    return prefix + _INSTANCE_KEY.pack(origin, sequence)


class RbcCore:
    """One member of a Bracha reliable broadcast group (a `synod.core.Core`)."""

    def __init__(
        self,
        keys: KeyPair,
        members: Sequence[NodeId],
        storage: Storage,
        *,
        retransmit_ms: int = 300,
    ) -> None:
        if keys.node_id not in members:
            raise ValueError("this node is not a member of the group")
        if len(set(members)) != len(members):
            raise ValueError("members must be distinct")
        if len(members) > MAX_MEMBERS:
            raise ValueError(f"at most {MAX_MEMBERS} members")
        self._keys = keys
        self.members = tuple(members)
        self.faulty = (len(members) - 1) // 3
        self.retransmit_ms = retransmit_ms
        self._instances: dict[tuple[NodeId, int], _Instance] = {}
        self._delivered: dict[NodeId, set[int]] = {member: set() for member in members}
        self._next_undelivered: dict[NodeId, int] = dict.fromkeys(members, 0)
        self._own_sent: dict[int, bytes] = {}
        self._next_sequence = 0
        self._delivered_payloads: dict[tuple[NodeId, int], bytes] = {}
        self._history_floor: dict[NodeId, int] = dict.fromkeys(members, 0)
        self._status_answered_ms: dict[NodeId, int] = {}
        self.delivered_count = 0
        self._restore(storage)
        for member in self.members:
            self._trim_history(member)
        self._forget_old_instances()
        self._released_up_to = self._next_undelivered[self.node_id]

    @property
    def delivered_log(self) -> list[Delivered]:
        """The deliveries held in memory (restored ones included; the last
        `CATCHUP_HISTORY` per origin), in (origin, sequence) order."""
        return [
            Delivered(origin, sequence, payload)
            for (origin, sequence), payload in sorted(self._delivered_payloads.items())
        ]

    @property
    def node_id(self) -> NodeId:
        return self._keys.node_id

    # ------------------------------------------------------------ restore

    def _restore(self, storage: Storage) -> None:
        for key, value in sorted(storage.items()):
            if key.startswith(_SENT_PREFIX):
                origin, sequence = _INSTANCE_KEY.unpack(key[len(_SENT_PREFIX) :])
                if origin != self.node_id:
                    # another member's file: its broadcasts would be sent again as ours
                    raise ValueError(
                        f"a broadcast of {node_id_text(NodeId(origin))}, not of this node: "
                        "another node's store"
                    )
                self._own_sent[sequence] = value
                self._next_sequence = max(self._next_sequence, sequence + 1)
            elif key.startswith(_VOTE_PREFIX):
                origin, sequence = _INSTANCE_KEY.unpack(key[len(_VOTE_PREFIX) :])
                record = _VOTE_CODEC.decode(value)
                self._restore_votes(NodeId(origin), sequence, record)
            elif key.startswith(_DELIVERED_PREFIX):
                origin, sequence = _INSTANCE_KEY.unpack(key[len(_DELIVERED_PREFIX) :])
                self._mark_delivered(NodeId(origin), sequence)
                self._delivered_payloads[(NodeId(origin), sequence)] = value
                self.delivered_count += 1
            else:
                # another protocol's file (a Tusk or FastPay store) given as this node's
                kind = key.split(b"/", 1)[0][:20].decode("ascii", "replace")
                raise ValueError(f"records of another kind ({kind}/...): not a broadcast store")

    def _restore_votes(self, origin: NodeId, sequence: int, record: _VoteRecord) -> None:
        instance = self._instance(origin, sequence)
        instance.own_echo, instance.own_ready = record.echo, record.ready
        if record.echoed_payload is not None and record.echo is not None:
            instance.payloads[record.echo] = record.echoed_payload
        if record.echo is not None:
            instance.echoed.add(self.node_id)
            instance.echoes.setdefault(record.echo, set()).add(self.node_id)
        if record.ready is not None:
            instance.readied.add(self.node_id)
            instance.readies.setdefault(record.ready, set()).add(self.node_id)

    # ------------------------------------------------------------ inputs

    def handle(self, event: Input, now_ms: int) -> Step:
        match event:
            case Started():
                return self._on_started()
            case Proposed(value=value):
                return self._broadcast_new(value)
            case Received(sender=sender, message=message):
                return self._on_message(sender, message, now_ms)
            case TimerFired(name=name) if name == RETRANSMIT_TIMER:
                return self._retransmit()
            case _:
                return Step()

    def _on_started(self) -> Step:
        return self._retransmit().extend(self._release_own())

    def _broadcast_new(self, payload: object) -> Step:
        if not isinstance(payload, bytes) or len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"a proposal is at most {MAX_PAYLOAD_BYTES} bytes")
        sequence = self._next_sequence
        self._next_sequence += 1
        self._own_sent[sequence] = payload
        step = Step(persist=[Persist(_instance_key(_SENT_PREFIX, self.node_id, sequence), payload)])
        return step.extend(self._release_own())

    def _release_own(self) -> Step:
        """Broadcast own proposals that now fit in the window, in sequence order."""
        step = Step()
        limit = self._next_undelivered[self.node_id] + WINDOW
        while self._released_up_to < min(limit, self._next_sequence):
            sequence = self._released_up_to
            self._released_up_to += 1
            initial = Initial(sequence, self._own_sent[sequence])
            step.outgoing.append(Broadcast(initial))
            step.extend(self._on_initial(self.node_id, initial))
        return step

    def _on_message(self, sender: NodeId, message: object, now_ms: int) -> Step:
        if sender not in self._delivered:
            return Step(events=[Rejected(sender, "sender is not a member")])
        match message:
            case Initial():
                return self._on_initial(sender, message)
            case Echo() | Ready():
                return self._on_vote(sender, message)
            case Status():
                return self._on_status(sender, message, now_ms)
            case Forward():
                return self._on_forward(sender, message)
            case _:
                return Step(events=[Rejected(sender, "unknown message type")])

    def _admissible(self, origin: NodeId, sequence: int) -> str | None:
        if origin not in self._delivered:
            return "origin is not a member"
        if self._is_delivered(origin, sequence):
            return "instance already delivered"
        if sequence >= self._next_undelivered[origin] + WINDOW:
            return "instance too far ahead"
        return None

    def _on_initial(self, origin: NodeId, message: Initial) -> Step:
        reason = self._admissible(origin, message.sequence)
        if reason is not None:
            return Step(events=[Rejected(origin, reason)] if "ahead" in reason else [])
        instance = self._instance(origin, message.sequence)
        digest = payload_digest(message.payload)
        if not self._worth_keeping(instance, digest):
            return Step()
        instance.payloads[digest] = message.payload
        step = Step()
        if instance.own_echo is None:
            instance.own_echo = digest
            step.extend(self._vote_step(origin, message.sequence, instance))
            step.outgoing.append(Broadcast(Echo(origin, message.sequence, digest)))
            step.extend(self._count_echo(self.node_id, origin, message.sequence, digest))
        return step.extend(self._try_deliver(origin, message.sequence))

    def _on_vote(self, sender: NodeId, message: Echo | Ready) -> Step:
        origin = NodeId(message.origin)
        reason = self._admissible(origin, message.sequence)
        if reason is not None:
            return Step(events=[Rejected(sender, reason)] if "ahead" in reason else [])
        if isinstance(message, Echo):
            return self._count_echo(sender, origin, message.sequence, message.digest)
        return self._count_ready(sender, origin, message.sequence, message.digest)

    def _worth_keeping(self, instance: _Instance, digest: bytes) -> bool:
        """Keep at most the first payload and those some correct member is ready for.

        An equivocating origin could otherwise fill memory with payloads for one instance.
        A payload dropped here comes back with the origin's retransmissions.
        """
        if digest in instance.payloads:
            return False
        if instance.own_echo is None or instance.own_echo == digest:
            return True
        return len(instance.readies.get(digest, ())) >= self.faulty + 1

    def _on_status(self, sender: NodeId, status: Status, now_ms: int) -> Step:
        """Send a lagging member the readies and payloads of instances it misses.

        At most one `Status` per member is answered per retransmission interval: an answer
        can be many payloads, so a member repeating `Status` must not multiply them.
        """
        if len(status.next_undelivered) != len(self.members):
            return Step(events=[Rejected(sender, "status of the wrong length")])
        last_ms = self._status_answered_ms.get(sender)
        if last_ms is not None and now_ms - last_ms < self.retransmit_ms:
            return Step()
        self._status_answered_ms[sender] = now_ms
        step = Step()
        for origin, theirs in zip(self.members, status.next_undelivered, strict=True):
            mine = self._next_undelivered[origin]
            for sequence in range(theirs, min(mine, theirs + CATCHUP_BATCH)):
                payload = self._delivered_payloads.get((origin, sequence))
                if payload is None:
                    continue
                digest = payload_digest(payload)
                step.outgoing.append(Send(sender, Ready(origin, sequence, digest)))
                step.outgoing.append(Send(sender, Forward(origin, sequence, payload)))
        return step

    def _on_forward(self, sender: NodeId, forward: Forward) -> Step:
        origin = NodeId(forward.origin)
        if self._admissible(origin, forward.sequence) is not None:
            return Step()
        instance = self._instance(origin, forward.sequence)
        digest = payload_digest(forward.payload)
        if len(instance.readies.get(digest, ())) < self.faulty + 1:
            return Step()
        instance.payloads.setdefault(digest, forward.payload)
        return self._try_deliver(origin, forward.sequence)

    # ------------------------------------------------------------ the rules

    def _count_echo(self, voter: NodeId, origin: NodeId, sequence: int, digest: bytes) -> Step:
        instance = self._instance(origin, sequence)
        if voter in instance.echoed:
            return Step()
        instance.echoed.add(voter)
        instance.echoes.setdefault(digest, set()).add(voter)
        if len(instance.echoes[digest]) >= 2 * self.faulty + 1:
            return self._send_ready(origin, sequence, digest)
        return Step()

    def _count_ready(self, voter: NodeId, origin: NodeId, sequence: int, digest: bytes) -> Step:
        instance = self._instance(origin, sequence)
        if voter in instance.readied:
            return Step()
        instance.readied.add(voter)
        instance.readies.setdefault(digest, set()).add(voter)
        step = Step()
        if len(instance.readies[digest]) >= self.faulty + 1:
            step.extend(self._send_ready(origin, sequence, digest))
        return step.extend(self._try_deliver(origin, sequence))

    def _send_ready(self, origin: NodeId, sequence: int, digest: bytes) -> Step:
        instance = self._instance(origin, sequence)
        if instance.own_ready is not None:
            return Step()
        instance.own_ready = digest
        step = self._vote_step(origin, sequence, instance)
        step.outgoing.append(Broadcast(Ready(origin, sequence, digest)))
        return step.extend(self._count_ready(self.node_id, origin, sequence, digest))

    def _is_delivered(self, origin: NodeId, sequence: int) -> bool:
        return sequence < self._next_undelivered[origin] or sequence in self._delivered[origin]

    def _try_deliver(self, origin: NodeId, sequence: int) -> Step:
        if self._is_delivered(origin, sequence):
            return Step()
        instance = self._instance(origin, sequence)
        for digest, voters in instance.readies.items():
            if len(voters) >= 2 * self.faulty + 1 and digest in instance.payloads:
                return self._deliver(origin, sequence, instance.payloads[digest])
        return Step()

    def _deliver(self, origin: NodeId, sequence: int, payload: bytes) -> Step:
        self._mark_delivered(origin, sequence)
        self._delivered_payloads[(origin, sequence)] = payload
        self.delivered_count += 1
        self._trim_history(origin)
        step = Step(
            persist=[Persist(_instance_key(_DELIVERED_PREFIX, origin, sequence), payload)],
            events=[Delivered(origin, sequence, payload)],
        )
        if origin == self.node_id:
            step.extend(self._release_own())
        return step

    def _mark_delivered(self, origin: NodeId, sequence: int) -> None:
        delivered = self._delivered[origin]
        delivered.add(sequence)
        while self._next_undelivered[origin] in delivered:
            self._next_undelivered[origin] += 1
        stale = [seq for seq in delivered if seq < self._next_undelivered[origin]]
        delivered.difference_update(stale)

    # ------------------------------------------------------------ state helpers

    def _instance(self, origin: NodeId, sequence: int) -> _Instance:
        key = (origin, sequence)
        instance = self._instances.get(key)
        if instance is None:
            instance = self._instances[key] = _Instance()
        return instance

    def _vote_step(self, origin: NodeId, sequence: int, instance: _Instance) -> Step:
        echoed = instance.payloads.get(instance.own_echo) if instance.own_echo else None
        record = _VoteRecord(instance.own_echo, instance.own_ready, echoed)
        key = _instance_key(_VOTE_PREFIX, origin, sequence)
        return Step(persist=[Persist(key, msgspec.msgpack.encode(record))])

    def _retransmit(self) -> Step:
        """Resend this member's own messages for recent instances (bounded by WINDOW)."""
        step = Step(timers=[SetTimer(RETRANSMIT_TIMER, self.retransmit_ms)])
        status = tuple(self._next_undelivered[member] for member in self.members)
        step.outgoing.append(Broadcast(Status(status)))
        for sequence, payload in sorted(self._own_sent.items()):
            if sequence >= self._released_up_to:
                break
            if self._still_retransmitted(self.node_id, sequence):
                step.outgoing.append(Broadcast(Initial(sequence, payload)))
        for (origin, sequence), instance in sorted(self._instances.items()):
            if not self._still_retransmitted(origin, sequence):
                continue
            if instance.own_echo is not None:
                step.outgoing.append(Broadcast(Echo(origin, sequence, instance.own_echo)))
            if instance.own_ready is not None:
                step.outgoing.append(Broadcast(Ready(origin, sequence, instance.own_ready)))
        self._forget_old_instances()
        return step

    def _still_retransmitted(self, origin: NodeId, sequence: int) -> bool:
        return sequence + RETRANSMIT_TAIL >= self._next_undelivered[origin]

    def _trim_history(self, origin: NodeId) -> None:
        """Keep the last `CATCHUP_HISTORY` delivered payloads of `origin` in memory."""
        keep_from = self._next_undelivered[origin] - CATCHUP_HISTORY
        while self._history_floor[origin] < keep_from:
            self._delivered_payloads.pop((origin, self._history_floor[origin]), None)
            self._history_floor[origin] += 1

    def _forget_old_instances(self) -> None:
        for origin, sequence in list(self._instances):
            if sequence + WINDOW < self._next_undelivered[origin]:
                del self._instances[(origin, sequence)]
        for sequence in [
            seq for seq in self._own_sent if not self._still_retransmitted(self.node_id, seq)
        ]:
            del self._own_sent[sequence]
