"""The replicated log on SCP: the application that `synod scp run` nodes agree on.

Theory of operation.  Each slot of SCP decides one *batch*: the canonical JSON of a
non-empty, sorted list of distinct text entries (`encode_batch`).  `LogRules` is the
`Application` that gives SCP's hooks their meaning for batches (validity looks at the
value only, draft section 3.4; candidates combine by union, cut deterministically at
the batch limits).  `LogCore` wraps an `ScpCore` into a `synod.core.Core`: it takes
clients' entries (`SubmitRequest` on a node's request/response port), stores them
before it answers, relays them to its peers (`Forward`) the way Stellar floods
transactions, nominates what is pending, and appends each externalized slot to its log
(``app/log/<slot>``) in the same step as the SCP statements that decided it.

Like every core it does no I/O: `synod.runtime.scp_node` runs it on TCP and SQLite, and
`synod.sim` (or a test's own loop) drives it in-process.  `compare_logs` compares the
logs of several nodes slot by slot (agreement, gaps).  See docs/scp-network.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec

from synod.core import (
    Broadcast,
    Input,
    Persist,
    Received,
    Reply,
    RequestReceived,
    Started,
    Step,
)
from synod.scp.application import Application, CheckpointVerified, Externalized, Validity
from synod.scp.core import ScpConfig, ScpCore
from synod.scp.messages import (
    MAX_CHECKPOINT_STATE_BYTES,
    MAX_VALUE_BYTES,
    Envelope,
    ScpMessage,
    StateRequest,
)
from synod.wire import U32, U64, Codec, DecodeError, Message

if TYPE_CHECKING:
    from synod.crypto import NodeId


# ---------------------------------------------------------------- values and messages

MAX_ENTRY_BYTES: Final = 1024
"""Largest entry (UTF-8 bytes)."""
MAX_BATCH_BYTES: Final = 8 * 1024
"""Largest encoded batch; well inside SCP's 16 KiB value bound."""
MAX_BATCH_ENTRIES: Final = 256
MAX_SUBMIT_ENTRIES: Final = 64
"""Entries per submit request."""

LOG_KEY_PREFIX: Final = b"app/log/"
"""Prefix of the log records: the slot index follows as 8 bytes big-endian."""
PENDING_KEY: Final = b"app/pending"
"""The record of the pending entries as one list, as older versions wrote it (read and
migrated to `PENDING_KEY_PREFIX` records at start)."""
PENDING_KEY_PREFIX: Final = b"app/pending/"
"""Prefix of the records of the entries this node's clients submitted that no slot
holds yet, one record per entry: a sequence number (8 bytes big-endian) follows, the
value is the entry.  Each entry is written once and deleted once, so the disk writes
of the submit path stay proportional to what clients submit."""
MAX_PENDING_PER_CLIENT: Final = 1_000
"""Pending entries the clients of one host may hold together (at most about 1 MiB of
entries; `LogCore.client_key` names the host of a connection): one host opening many
connections cannot take the whole pending list (10,000 entries) from the others."""
CATCH_UP_INTERVAL_MS: Final = 1000

assert MAX_BATCH_BYTES <= MAX_VALUE_BYTES

Entry = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ENTRY_BYTES)]


class SubmitRequest(Message, frozen=True, tag="log_submit"):
    """A client's entries for the log (on the node's submit port only)."""

    entries: Annotated[tuple[Entry, ...], msgspec.Meta(max_length=MAX_SUBMIT_ENTRIES)]


class SubmitReply(Message, frozen=True, tag="log_submit_reply"):
    """Sent once the entries are durably queued: how many were new, how many wait."""

    queued: U32
    pending: U32
    error: Annotated[str, msgspec.Meta(max_length=200)] = ""


class Forward(Message, frozen=True, tag="log_forward"):
    """Entries a node's clients submitted, relayed to its peers so they nominate them."""

    entries: Annotated[tuple[Entry, ...], msgspec.Meta(max_length=MAX_SUBMIT_ENTRIES)]


LogMessage = ScpMessage | SubmitRequest | SubmitReply | Forward
LOG_CODEC: Final[Codec[Any]] = Codec(LogMessage)
"""What a log node decodes, from peers and from its submit port."""


class LogSegment(Message, frozen=True, tag="log_segment"):
    """The state a log node sends in a checkpoint: the values of slots
    `first_slot_index`, `first_slot_index + 1`, ... (the receiver's missing slots up
    to the checkpoint slot), at most `MAX_CHECKPOINT_STATE_BYTES` encoded."""

    first_slot_index: U64
    values: Annotated[
        tuple[Annotated[bytes, msgspec.Meta(max_length=MAX_BATCH_BYTES)], ...],
        msgspec.Meta(max_length=MAX_CHECKPOINT_STATE_BYTES // 8),
    ]


SEGMENT_CODEC: Final[Codec[LogSegment]] = Codec(
    LogSegment, max_message_bytes=MAX_CHECKPOINT_STATE_BYTES
)
CHAIN_DOMAIN: Final = b"synod/scp/log-chain/v1"
GENESIS_HEAD: Final = bytes(32)
"""The chain head before the first slot."""


def chain_head(previous: bytes, slot_index: int, value: bytes) -> bytes:
    """The digest of a log through `slot_index`: it commits to the previous head, the
    slot and its value, so equal heads mean equal logs slot by slot.  The log's
    attestations carry it."""
    return hashlib.sha256(
        CHAIN_DOMAIN + previous + struct.pack(">Q", slot_index) + hashlib.sha256(value).digest()
    ).digest()


def encode_batch(entries: Iterable[str]) -> bytes:
    """The canonical value of a batch: its distinct entries, sorted, as compact JSON."""
    return json.dumps(sorted(set(entries)), ensure_ascii=False, separators=(",", ":")).encode()


def decode_batch(value: bytes) -> list[str] | None:
    """The entries of a canonical batch value, or None if `value` is not one."""
    try:
        entries = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entries, list) or not entries:
        return None
    if not all(isinstance(entry, str) and entry_fits(entry) for entry in entries):
        return None
    if encode_batch(entries) != value or len(value) > MAX_BATCH_BYTES:
        return None
    return entries


def entry_fits(entry: str) -> bool:
    """Whether `entry` may be logged: 1 to `MAX_ENTRY_BYTES` bytes of UTF-8."""
    try:
        encoded = entry.encode()
    except UnicodeEncodeError:
        # a lone surrogate: JSON's "\ud800" escape decodes to one, from a peer's value
        # too, and no UTF-8 batch can hold it (encoding the batch raised out of the core)
        return False
    return 0 < len(encoded) <= MAX_ENTRY_BYTES


def cut_batch(entries: Iterable[str]) -> bytes | None:
    """The largest prefix of `entries` (in the given order, duplicates dropped) that
    fits the batch limits, encoded; None when not even one entry fits."""
    chosen: list[str] = []
    seen: set[str] = set()
    size = 2  # the brackets
    for entry in entries:
        if entry in seen or not entry_fits(entry):
            continue
        seen.add(entry)
        entry_size = len(json.dumps(entry, ensure_ascii=False).encode()) + 1
        if len(chosen) >= MAX_BATCH_ENTRIES or size + entry_size > MAX_BATCH_BYTES:
            break
        chosen.append(entry)
        size += entry_size
    return encode_batch(chosen) if chosen else None


@dataclass(frozen=True, slots=True)
class LogTimeouts:
    """The timeout policy: round n of nomination lasts (1 + n) * nomination_ms, ballot
    counter c waits (1 + c) * ballot_ms (the draft's policy with a shorter unit)."""

    nomination_ms: int = 200
    ballot_ms: int = 500


class LogRules(Application):
    """What a value means to the replicated log: a canonical batch of entries."""

    def __init__(self, timeouts: LogTimeouts | None = None) -> None:
        self.timeouts = timeouts if timeouts is not None else LogTimeouts()
        self._log_core: LogCore | None = None

    def bound_to(self, log_core: LogCore) -> LogRules:
        """These rules for one log (checkpoints read and check that log)."""
        bound = LogRules(self.timeouts)
        bound._log_core = log_core
        return bound

    def checkpoint_state(self, first_slot_index: int, slot_index: int) -> bytes | None:
        # the values of the slots the asking node lacks, through the checkpoint slot
        if self._log_core is None:
            return None
        log = self._log_core.log
        values = [log.get(index) for index in range(first_slot_index, slot_index + 1)]
        if not values or any(value is None for value in values):
            return None
        present = tuple(value for value in values if value is not None)
        encoded = SEGMENT_CODEC.encode(LogSegment(first_slot_index, present))
        return encoded if len(encoded) <= MAX_CHECKPOINT_STATE_BYTES else None

    def checkpoint_matches(
        self, first_slot_index: int, slot_index: int, digest: bytes, state: bytes
    ) -> bool:
        # every value must be a batch, and the chain from our own head through the
        # segment must end at the attested head
        core = self._log_core
        if core is None or core.complete_through != first_slot_index - 1:
            return False
        try:
            segment = SEGMENT_CODEC.decode(state)
        except DecodeError:
            return False
        if (
            segment.first_slot_index != first_slot_index
            or len(segment.values) != slot_index - first_slot_index + 1
        ):
            return False
        head = core.head
        for offset, value in enumerate(segment.values):
            if decode_batch(value) is None:
                return False
            head = chain_head(head, first_slot_index + offset, value)
        return head == digest

    def validate_value(self, slot_index: int, value: bytes, nomination: bool) -> Validity:
        # Only the value's own form is checked: validity may not depend on anything that
        # can differ between honest nodes (draft section 3.4).
        return Validity.FULLY_VALID if decode_batch(value) is not None else Validity.INVALID

    def combine_candidates(self, slot_index: int, candidates: Sequence[bytes]) -> bytes:
        # The union of the batches, in sorted order so every node cuts it the same way.
        union: set[str] = set()
        for candidate in candidates:
            union.update(decode_batch(candidate) or ())
        combined = cut_batch(sorted(union))
        # candidates are confirmed nominated, hence valid and non-empty
        return combined if combined is not None else max(candidates)

    def extract_valid_value(self, slot_index: int, value: bytes) -> bytes | None:
        # A JSON list that is not canonical (order, duplicates, an oversized entry) still
        # names entries; vote for its canonical form instead.
        try:
            entries = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(entries, list):
            return None
        return cut_batch(sorted(entry for entry in entries if isinstance(entry, str)))

    def nomination_timeout_ms(self, round_number: int) -> int:
        return (1 + round_number) * self.timeouts.nomination_ms

    def ballot_timeout_ms(self, counter: int) -> int:
        return (1 + counter) * self.timeouts.ballot_ms


@dataclass(frozen=True, slots=True)
class LogAppended:
    """Slot `slot_index` decided `value`, now durably in this node's log."""

    slot_index: int
    value: bytes

    @property
    def entries(self) -> list[str] | None:
        return decode_batch(self.value)


def log_record_key(slot_index: int) -> bytes:
    """Storage key of the value externalized for `slot_index`."""
    return LOG_KEY_PREFIX + struct.pack(">Q", slot_index)


def log_from_records(records: Mapping[bytes, bytes]) -> dict[int, bytes]:
    """slot index -> externalized value, from a node's stored records."""
    return {
        struct.unpack(">Q", key[len(LOG_KEY_PREFIX) :])[0]: value
        for key, value in records.items()
        if key.startswith(LOG_KEY_PREFIX) and len(key) == len(LOG_KEY_PREFIX) + 8
    }


# ---------------------------------------------------------------- the log core


class LogCore:
    """A replicated log on `ScpCore`: a sans-I/O `synod.core.Core` for `NodeHost`.

    Entries.  A client's `SubmitRequest` (on the submit port, `RequestReceived`) adds
    its entries to this node's own pending list, each persisted as its own record
    (appended, never rewritten) before the `SubmitReply` leaves, at most
    `max_pending_per_client` per client host (`client_key`) and `max_pending` in all,
    and relays them to
    the peers (`Forward`) the way Stellar floods
    transactions: every node then nominates every pending entry it knows, so a slot
    does not wait for the node holding an entry to become a round leader.  Relayed
    entries are held in memory only (their origin keeps them durably) and bounded.
    Entries are unique: one already in the log or pending is not queued again, so a
    client may safely retry a submit.

    Decisions.  Each `Externalized` slot is written to the log (``app/log/<slot>``) in
    the same step, hence the same SQLite transaction, as the SCP statements that
    decided it; its entries leave the pending lists.  A node nominates only when its
    log has every slot before the next one, so it never proposes an entry that an
    earlier slot it has not seen yet already holds.

    Catch-up.  When a peer's statement names a slot past the next one this node has
    to decide, the node asks its peers for their latest statements from that slot on
    (`StateRequest`; again once half of the slot window is decided, or after a
    second): a restarted node replays the slots it missed from the peers' EXTERNALIZE
    statements, a window at a time.  Nothing here trusts one peer: values enter the
    log only through SCP.
    """

    def __init__(
        self,
        scp_config: ScpConfig,
        storage: Mapping[bytes, bytes],
        *,
        max_pending: int = 10_000,
        max_pending_per_client: int = MAX_PENDING_PER_CLIENT,
        client_key: Callable[[str], str] | None = None,
    ) -> None:
        if isinstance(scp_config.application, LogRules):
            scp_config = dataclasses.replace(
                scp_config, application=scp_config.application.bound_to(self)
            )
        self.scp = ScpCore(scp_config, storage)
        self.first_slot_index = scp_config.first_slot_index
        self.log: dict[int, bytes] = log_from_records(storage)
        self.logged: set[str] = {
            entry for value in self.log.values() for entry in decode_batch(value) or ()
        }
        self.complete_through = self.first_slot_index - 1
        """Every slot up to this one is in the log."""
        self.head = GENESIS_HEAD
        """`chain_head` of the log through `complete_through`."""
        self._attest_due: list[tuple[int, bytes]] = []
        """Checkpoint slots the log reached, with their heads, not attested yet."""
        self._advance_complete_through()
        # a restarted node attested what it logged (same step); a store older than
        # checkpoints gets its latest retained ones attested once
        attested = max(self.scp.attestations.own, default=0)
        self._attest_due = [due for due in self._attest_due if due[0] > attested][
            -scp_config.retained_checkpoints :
        ]
        self._pending: dict[str, int] = {}
        """Pending entries, in submission order, with the sequence number of their record."""
        self._legacy_pending = PENDING_KEY in storage
        for entry in _pending_from(storage.get(PENDING_KEY)):
            self._pending.setdefault(entry, -1)  # migrated to their own records at start
        pending_keys = [key for key in storage if key.startswith(PENDING_KEY_PREFIX)]
        for key in sorted(key for key in pending_keys if len(key) == len(PENDING_KEY_PREFIX) + 8):
            sequence = struct.unpack(">Q", key[len(PENDING_KEY_PREFIX) :])[0]
            self._pending.setdefault(_pending_entry(key, storage[key]), sequence)
        self._next_sequence = max(self._pending.values(), default=-1) + 1
        self.client_key: Callable[[str], str] = client_key or (lambda client: client)
        """Whose budget a request's client spends: the driver maps a connection to its
        host (`synod.runtime.scp_node` does), so many connections share one budget."""
        self._client_of: dict[str, str] = {}
        """The client host that submitted each pending entry (since this process started)."""
        self._pending_per_client: dict[str, int] = {}
        self.relayed: dict[str, None] = {}
        self.max_pending = max_pending
        self.max_pending_per_client = max_pending_per_client
        self.highest_seen_slot = 0
        self.nominated: tuple[int, bytes] | None = None
        self._last_state_request: tuple[int, int] | None = None
        self.refused_messages = 0

    @property
    def node_id(self) -> NodeId:
        return self.scp.node_id

    @property
    def pending(self) -> list[str]:
        """The entries this node's clients submitted that no slot holds yet, in order."""
        return list(self._pending)

    def handle(self, event: Input, now_ms: int) -> Step:
        """Submissions and relays here; everything else through SCP, then apply its
        decisions, nominate what is pending and catch up if peers are ahead."""
        if isinstance(event, RequestReceived):
            step = self._submit(event)
        elif isinstance(event, Received) and isinstance(event.message, Forward):
            step = Step()
            self._relay(event.message.entries)
        elif isinstance(event, Received) and isinstance(event.message, SubmitRequest | SubmitReply):
            self.refused_messages += 1  # peers do not submit; clients use the submit port
            return Step()
        else:
            if isinstance(event, Received) and isinstance(event.message, Envelope):
                self.highest_seen_slot = max(
                    self.highest_seen_slot, event.message.statement.slot_index
                )
            step = self.scp.handle(event, now_ms)
            if isinstance(event, Started):
                self._migrate_legacy_pending(step)
                _forward(step, self.pending)
            self._install_checkpoints(step, now_ms)
            self._append_decisions(step)
        self._nominate(step, now_ms)
        self._catch_up(step, now_ms)
        self._attest(step, now_ms)
        return step

    # ------------------------------------------------------------ submissions

    def _submit(self, request: RequestReceived) -> Step:
        step = Step()
        body = request.body
        error = ""
        fresh: list[str] = []
        if not isinstance(body, SubmitRequest):
            error = "expected a submit request"
        else:
            fresh = [entry for entry in dict.fromkeys(body.entries) if self._is_new(entry)]
            fresh = [entry for entry in fresh if entry not in self._pending]
            error = self._refusal(self.client_key(request.client), fresh)
        if error:
            step.outgoing.append(Reply(request.client, request.request_id, self._reply(0, error)))
            return step
        owner = self.client_key(request.client)
        for entry in fresh:
            self._add_pending(entry, owner, step)
        if fresh:
            _forward(step, fresh)
        # the host commits the records before the reply leaves: an answered entry survives
        step.outgoing.append(Reply(request.client, request.request_id, self._reply(len(fresh))))
        return step

    def _refusal(self, client: str, fresh: list[str]) -> str:
        """Why `fresh` cannot be queued for `client` ("" when it can)."""
        if not all(entry_fits(entry) for entry in fresh):
            return f"an entry is longer than {MAX_ENTRY_BYTES} bytes of UTF-8"
        if len(self._pending) + len(fresh) > self.max_pending:
            return f"the node already holds {len(self._pending)} pending entries"
        held = self._pending_per_client.get(client, 0)
        if held + len(fresh) > self.max_pending_per_client:
            return f"this client's host already has {held} pending entries"
        return ""

    def _add_pending(self, entry: str, client: str, step: Step) -> None:
        sequence = self._next_sequence
        self._next_sequence += 1
        self._pending[entry] = sequence
        self._client_of[entry] = client
        self._pending_per_client[client] = self._pending_per_client.get(client, 0) + 1
        step.persist.append(Persist(pending_record_key(sequence), entry.encode()))

    def _remove_pending(self, entry: str, step: Step) -> None:
        sequence = self._pending.pop(entry)
        if sequence >= 0:
            step.persist.append(Persist(pending_record_key(sequence), None))
        client = self._client_of.pop(entry, None)
        if client is not None:
            remaining = self._pending_per_client[client] - 1
            if remaining:
                self._pending_per_client[client] = remaining
            else:
                del self._pending_per_client[client]

    def _migrate_legacy_pending(self, step: Step) -> None:
        """Move entries of the one-list record of older versions to their own records."""
        if not self._legacy_pending:
            return
        self._legacy_pending = False
        for entry in [entry for entry, sequence in self._pending.items() if sequence < 0]:
            sequence = self._next_sequence
            self._next_sequence += 1
            self._pending[entry] = sequence
            step.persist.append(Persist(pending_record_key(sequence), entry.encode()))
        step.persist.append(Persist(PENDING_KEY, None))

    def _is_new(self, entry: str) -> bool:
        return entry not in self.logged and entry not in self.relayed

    def _relay(self, entries: Iterable[str]) -> None:
        for entry in entries:
            if len(self.relayed) >= self.max_pending:
                return  # the origin keeps it and nominates it itself
            if self._is_new(entry) and entry not in self._pending and entry_fits(entry):
                self.relayed[entry] = None

    def _reply(self, queued: int, error: str = "") -> SubmitReply:
        return SubmitReply(queued, len(self._pending), error)

    # ------------------------------------------------------------ decisions

    def _append_decisions(self, step: Step) -> None:
        for event in [event for event in step.events if isinstance(event, Externalized)]:
            self._append(event.slot_index, event.value, step)

    def _append(self, slot_index: int, value: bytes, step: Step) -> None:
        if slot_index in self.log:
            return
        self.log[slot_index] = value
        self._advance_complete_through()
        step.persist.append(Persist(log_record_key(slot_index), value))
        step.events.append(LogAppended(slot_index, value))
        done = set(decode_batch(value) or ())
        self.logged |= done
        for entry in done & self.relayed.keys():
            del self.relayed[entry]
        for entry in sorted(done & self._pending.keys()):
            self._remove_pending(entry, step)

    def _install_checkpoints(self, step: Step, now_ms: int) -> None:
        """A verified checkpoint's slots go into the log in this step (the host makes
        them durable before anything leaves), then SCP moves past them."""
        for event in [event for event in step.events if isinstance(event, CheckpointVerified)]:
            segment = SEGMENT_CODEC.decode(event.state)  # checked by LogRules already
            for offset, value in enumerate(segment.values):
                self._append(event.first_slot_index + offset, value, step)
            _merge(step, self.scp.advance_to(event.slot_index + 1, now_ms))

    def _attest(self, step: Step, now_ms: int) -> None:
        """Attest the chain head of each checkpoint slot the log reached (once SCP has
        delivered it: a checkpoint's slots are delivered by `advance_to`)."""
        while self._attest_due and self._attest_due[0][0] <= self.scp.delivered_through:
            slot_index, head = self._attest_due.pop(0)
            _merge(step, self.scp.attest(slot_index, head, now_ms))

    def _nominate(self, step: Step, now_ms: int) -> None:
        """Propose the pending entries for the next slot to decide (again when the
        proposal grew while that slot is still open)."""
        if not (self._pending or self.relayed) or not self.scp.config.validator:
            return
        slot_index = self.scp.next_slot_index
        if self.complete_through < slot_index - 1:
            return
        proposal = cut_batch([*self._pending, *self.relayed])
        if proposal is None or self.nominated == (slot_index, proposal):
            return
        self.nominated = (slot_index, proposal)
        _merge(step, self.scp.nominate(slot_index, proposal, now_ms))
        self._append_decisions(step)

    def _advance_complete_through(self) -> None:
        interval = self.scp.config.checkpoint_interval
        while self.complete_through + 1 in self.log:
            self.complete_through += 1
            slot_index = self.complete_through
            self.head = chain_head(self.head, slot_index, self.log[slot_index])
            if interval > 0 and self.complete_through % interval == 0:
                self._attest_due.append((self.complete_through, self.head))

    def _catch_up(self, step: Step, now_ms: int) -> None:
        next_slot = self.scp.next_slot_index
        if self.highest_seen_slot <= next_slot:
            return
        last = self._last_state_request
        # the answers to one request fill the window from its slot on; ask again once
        # half of it is decided, or after a second in case answers were lost
        step_slots = max(1, self.scp.config.max_slots_ahead // 2)
        if (
            last is not None
            and next_slot - last[0] < step_slots
            and now_ms - last[1] < CATCH_UP_INTERVAL_MS
        ):
            return
        self._last_state_request = (next_slot, now_ms)
        step.outgoing.append(Broadcast(StateRequest(next_slot)))


def _forward(step: Step, entries: Sequence[str]) -> None:
    for start in range(0, len(entries), MAX_SUBMIT_ENTRIES):
        step.outgoing.append(Broadcast(Forward(tuple(entries[start : start + MAX_SUBMIT_ENTRIES]))))


def _merge(step: Step, other: Step) -> None:
    step.persist.extend(other.persist)
    step.outgoing.extend(other.outgoing)
    step.timers.extend(other.timers)
    step.events.extend(other.events)


def pending_record_key(sequence: int) -> bytes:
    """Storage key of one pending entry's record."""
    return PENDING_KEY_PREFIX + struct.pack(">Q", sequence)


def _pending_entry(key: bytes, record: bytes) -> str:
    try:
        return record.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"pending-entry record {key!r} is not UTF-8") from None


def _pending_from(record: bytes | None) -> list[str]:
    if record is None:
        return []
    entries = json.loads(record)
    if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
        raise ValueError("the pending-entries record is corrupt")
    return entries


# ---------------------------------------------------------------- comparing logs


@dataclass(frozen=True, slots=True)
class SlotRow:
    """One slot across nodes: each node's value (None: the node has no value for it)."""

    slot_index: int
    values: dict[str, bytes | None]

    @property
    def distinct_values(self) -> set[bytes]:
        return {value for value in self.values.values() if value is not None}

    @property
    def agree(self) -> bool:
        """No two nodes hold different values for this slot."""
        return len(self.distinct_values) <= 1

    @property
    def complete(self) -> bool:
        return all(value is not None for value in self.values.values())


@dataclass(frozen=True, slots=True)
class Comparison:
    """Every node's log compared slot by slot."""

    rows: list[SlotRow]
    nodes: list[str]
    disagreements: list[int] = field(default_factory=list)
    gaps: dict[str, list[int]] = field(default_factory=dict)

    @property
    def agree(self) -> bool:
        return not self.disagreements

    @property
    def complete(self) -> bool:
        return not any(self.gaps.values())


def compare_logs(logs: Mapping[str, Mapping[int, bytes]]) -> Comparison:
    """Compare the logs: a slot where two nodes hold different values is a disagreement
    (SCP's safety broken); a slot up to the highest anyone decided that a node lacks is
    a gap (that node is behind)."""
    nodes = sorted(logs)
    slots = sorted({slot for log in logs.values() for slot in log})
    rows = [SlotRow(slot, {node: logs[node].get(slot) for node in nodes}) for slot in slots]
    disagreements = [row.slot_index for row in rows if not row.agree]
    gaps = {node: [row.slot_index for row in rows if row.values[node] is None] for node in nodes}
    return Comparison(rows, nodes, disagreements, gaps)


def value_digest(value: bytes) -> str:
    """The first 16 hex digits of the SHA-256 of a slot value (how logs name values)."""
    return hashlib.sha256(value).hexdigest()[:16]
