"""The sans-I/O contract shared by every protocol core.

A core is a state machine.  It never opens a socket, reads the clock, sleeps, spawns a
task, touches a file or draws global randomness.  A driver (`synod.runtime` for real
networks, `synod.sim` for the simulator) feeds it *inputs* and applies the *outputs* it
returns, always in this order:

1. `Persist` records are made durable (one atomic batch per step);
2. messages go out: `Send`, `Broadcast` to peers, `Reply` to a request, `Call` to a
   passive server;
3. timers are set or cancelled (`SetTimer`, `CancelTimer`);
4. events are handed to the application.

A vote that was sent but not persisted would let a restarted node vote twice, so the
order is a safety rule, not a detail.  A core is rebuilt after a crash from exactly the
records it persisted (`Storage` is a key-value map; `Persist(key, None)` deletes).

Inputs (`Input`):
  `Started`          the driver started (or restarted) the core
  `Received`         a decoded message from a peer (its sender authenticated only as far
                     as the transport can: cores check signatures inside messages)
  `RequestReceived`  a client's request to a passive server, answered by `Reply`
  `Response`         the answer to an earlier `Call`; `CallFailed` when none came
  `TimerFired`       a timer set earlier by `SetTimer`
  `Proposed`         a value the local application wants agreed on

The current time arrives as `now_ms` with every input; randomness is a `random.Random`
given to the core when it is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from synod.crypto import NodeId

Storage = Mapping[bytes, bytes]
"""What a core persisted: the state it is rebuilt from after a restart."""


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Started:
    """The core runs (first start, or restart from its persisted records)."""


@dataclass(frozen=True, slots=True)
class Received:
    """A decoded message from peer `sender`."""

    sender: NodeId
    message: Any


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request from a client to a passive server; answer with `Reply(client, request_id)`."""

    client: str
    request_id: int
    body: Any


@dataclass(frozen=True, slots=True)
class Response:
    """The reply to an earlier `Call` with the same `request_id`."""

    server: NodeId
    request_id: int
    body: Any


@dataclass(frozen=True, slots=True)
class CallFailed:
    """An earlier `Call` got no answer (connection failed, timeout, undecodable reply)."""

    server: NodeId
    request_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class TimerFired:
    """The timer named `name` expired."""

    name: str


@dataclass(frozen=True, slots=True)
class Proposed:
    """The local application proposes a value."""

    value: Any


Input = Started | Received | RequestReceived | Response | CallFailed | TimerFired | Proposed


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True, slots=True)
class Persist:
    """Make `key` -> `value` durable before anything of this step leaves the node."""

    key: bytes
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Send:
    """Send `message` to peer `to`."""

    to: NodeId
    message: Any


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Send `message` to every peer (the core does not receive its own broadcast)."""

    message: Any


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer request `request_id` of `client`."""

    client: str
    request_id: int
    body: Any


@dataclass(frozen=True, slots=True)
class Call:
    """Send request `request_id` to passive server `to`; a `Response` or `CallFailed` follows."""

    to: NodeId
    request_id: int
    body: Any


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Fire `TimerFired(name)` after `delay_ms`; replaces a pending timer of that name."""

    name: str
    delay_ms: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Cancel the pending timer `name`, if any."""

    name: str


Outgoing = Send | Broadcast | Reply | Call
TimerCommand = SetTimer | CancelTimer


@dataclass(slots=True)
class Step:
    """Everything one input produced, grouped in the order a driver applies it."""

    persist: list[Persist] = field(default_factory=list)
    outgoing: list[Outgoing] = field(default_factory=list)
    timers: list[TimerCommand] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)

    def extend(self, other: Step) -> Step:
        """Append `other`'s outputs after this step's own (returns self)."""
        self.persist.extend(other.persist)
        self.outgoing.extend(other.outgoing)
        self.timers.extend(other.timers)
        self.events.extend(other.events)
        return self

    def is_empty(self) -> bool:
        return not (self.persist or self.outgoing or self.timers or self.events)


class Core(Protocol):
    """What a driver needs of a protocol core."""

    @property
    def node_id(self) -> NodeId:
        """This node's identity."""
        ...

    def handle(self, event: Input, now_ms: int) -> Step:
        """Process one input at time `now_ms` and return the outputs to apply.

        Must not raise on peer input: bad messages are dropped (and may be reported as
        events); exceptions are reserved for bugs and caller misuse.
        """
        ...


class LocalError(Exception):
    """The local caller misused a core's API (as opposed to a peer sending bad input)."""
