"""`synod scp`: a local network of SCP nodes over real TCP, agreeing on a replicated log.

- ``synod scp init DIR`` writes one key file per node and ``DIR/network.toml`` (4 nodes,
  each trusting any 3 of the 4, by default; ``--organisations K --per-organisation M``
  for a tiered network of organisations);
- ``synod scp run DIR NODE`` runs one node until SIGINT/SIGTERM: SCP over the peer
  transport, its state and the externalized log in ``DIR/<name>.sqlite``, a submit port
  for clients, one JSON line on stdout per externalized slot;
- ``synod scp submit DIR NODE VALUE...`` hands entries to a running node;
- ``synod scp status DIR`` reads every node's SQLite file (read-only) and shows the log
  slot by slot, node by node, and whether the nodes agree.

The application on top of `synod.scp.ScpCore` is a replicated log (`LogCore`): each
slot's value is a batch of text entries (canonical JSON: a sorted list of distinct
strings).  A node nominates the entries submitted to it or relayed by its peers that
no slot holds yet;
SCP's candidates are combined by union (cut deterministically at the batch limits);
externalized batches are appended to the log in the same SQLite transaction as the SCP
statements that decided them.  See docs/scp-network.md.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import click
import msgspec

from synod.cli.common import (
    ConfigError,
    find_named,
    lock_exclusively,
    log_level_option,
    parse_ports,
    print_json_line,
    read_node_keys,
    refuse_to_overwrite,
    run_process,
    serve_until_stopped,
    write_new_key,
)
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
from synod.scp.application import Application, Externalized, Validity
from synod.scp.core import ScpConfig, ScpCore
from synod.scp.messages import MAX_VALUE_BYTES, Envelope, ScpMessage, StateRequest
from synod.wire import U32, Codec, Message

if TYPE_CHECKING:
    from synod.crypto import KeyPair, NodeId
    from synod.quorum.qset import QuorumSet

CONFIG_NAME: Final = "network.toml"
DEFAULT_BASE_PORT: Final = 7200

EXIT_FAILED: Final = 1
"""run: the node failed; submit: the node refused the entries; status: nodes disagree."""
EXIT_CONFIG: Final = 2
EXIT_UNREACHABLE: Final = 3
"""submit: the node's submit port did not answer."""

# ---------------------------------------------------------------- the log application

MAX_ENTRY_BYTES: Final = 1024
"""Largest entry (UTF-8 bytes)."""
MAX_BATCH_BYTES: Final = 8 * 1024
"""Largest encoded batch; well inside SCP's 16 KiB value bound."""
MAX_BATCH_ENTRIES: Final = 256
MAX_SUBMIT_ENTRIES: Final = 64
"""Entries per submit request."""

_LOG_KEY_PREFIX: Final = b"app/log/"
_PENDING_KEY: Final = b"app/pending"
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
"""What a `synod scp run` node decodes, from peers and from its submit port."""


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
    if not all(isinstance(entry, str) and _entry_fits(entry) for entry in entries):
        return None
    if encode_batch(entries) != value or len(value) > MAX_BATCH_BYTES:
        return None
    return entries


def _entry_fits(entry: str) -> bool:
    return 0 < len(entry.encode("utf-8", "surrogatepass")) <= MAX_ENTRY_BYTES


def cut_batch(entries: Iterable[str]) -> bytes | None:
    """The largest prefix of `entries` (in the given order, duplicates dropped) that
    fits the batch limits, encoded; None when not even one entry fits."""
    chosen: list[str] = []
    seen: set[str] = set()
    size = 2  # the brackets
    for entry in entries:
        if entry in seen or not _entry_fits(entry):
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
    return _LOG_KEY_PREFIX + struct.pack(">Q", slot_index)


def log_from_records(records: Mapping[bytes, bytes]) -> dict[int, bytes]:
    """slot index -> externalized value, from a node's stored records."""
    return {
        struct.unpack(">Q", key[len(_LOG_KEY_PREFIX) :])[0]: value
        for key, value in records.items()
        if key.startswith(_LOG_KEY_PREFIX) and len(key) == len(_LOG_KEY_PREFIX) + 8
    }


class LogCore:
    """A replicated log on `ScpCore`: a sans-I/O `synod.core.Core` for `NodeHost`.

    Entries.  A client's `SubmitRequest` (on the submit port, `RequestReceived`) adds
    its entries to this node's own pending list, persisted before the `SubmitReply`
    leaves, and relays them to the peers (`Forward`) the way Stellar floods
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
        self, scp_config: ScpConfig, storage: Mapping[bytes, bytes], *, max_pending: int = 10_000
    ) -> None:
        self.scp = ScpCore(scp_config, storage)
        self.first_slot_index = scp_config.first_slot_index
        self.log: dict[int, bytes] = log_from_records(storage)
        self.logged: set[str] = {
            entry for value in self.log.values() for entry in decode_batch(value) or ()
        }
        self.complete_through = self.first_slot_index - 1
        """Every slot up to this one is in the log."""
        self._advance_complete_through()
        self.pending: list[str] = _pending_from(storage.get(_PENDING_KEY))
        self.relayed: dict[str, None] = {}
        self.max_pending = max_pending
        self.highest_seen_slot = 0
        self.nominated: tuple[int, bytes] | None = None
        self._last_state_request: tuple[int, int] | None = None
        self.refused_messages = 0

    @property
    def node_id(self) -> NodeId:
        return self.scp.node_id

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
                _forward(step, self.pending)
            self._append_decisions(step)
        self._nominate(step, now_ms)
        self._catch_up(step, now_ms)
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
            fresh = [entry for entry in fresh if entry not in self.pending]
            if not all(_entry_fits(entry) for entry in fresh):
                error = f"an entry is longer than {MAX_ENTRY_BYTES} bytes of UTF-8"
            elif len(self.pending) + len(fresh) > self.max_pending:
                error = f"the node already holds {len(self.pending)} pending entries"
        if error:
            step.outgoing.append(Reply(request.client, request.request_id, self._reply(0, error)))
            return step
        if fresh:
            self.pending.extend(fresh)
            step.persist.append(Persist(_PENDING_KEY, _encode_pending(self.pending)))
            _forward(step, fresh)
        # the host commits the records before the reply leaves: an answered entry survives
        step.outgoing.append(Reply(request.client, request.request_id, self._reply(len(fresh))))
        return step

    def _is_new(self, entry: str) -> bool:
        return entry not in self.logged and entry not in self.relayed

    def _relay(self, entries: Iterable[str]) -> None:
        for entry in entries:
            if len(self.relayed) >= self.max_pending:
                return  # the origin keeps it and nominates it itself
            if self._is_new(entry) and entry not in self.pending and _entry_fits(entry):
                self.relayed[entry] = None

    def _reply(self, queued: int, error: str = "") -> SubmitReply:
        return SubmitReply(queued, len(self.pending), error)

    # ------------------------------------------------------------ decisions

    def _append_decisions(self, step: Step) -> None:
        for event in [event for event in step.events if isinstance(event, Externalized)]:
            if event.slot_index in self.log:
                continue
            self.log[event.slot_index] = event.value
            self._advance_complete_through()
            step.persist.append(Persist(log_record_key(event.slot_index), event.value))
            step.events.append(LogAppended(event.slot_index, event.value))
            done = set(decode_batch(event.value) or ())
            self.logged |= done
            for entry in done & self.relayed.keys():
                del self.relayed[entry]
            if done & set(self.pending):
                self.pending = [entry for entry in self.pending if entry not in done]
                step.persist.append(Persist(_PENDING_KEY, _encode_pending(self.pending)))

    def _nominate(self, step: Step, now_ms: int) -> None:
        """Propose the pending entries for the next slot to decide (again when the
        proposal grew while that slot is still open)."""
        if not (self.pending or self.relayed) or not self.scp.config.validator:
            return
        slot_index = self.scp.next_slot_index
        if self.complete_through < slot_index - 1:
            return
        proposal = cut_batch([*self.pending, *self.relayed])
        if proposal is None or self.nominated == (slot_index, proposal):
            return
        self.nominated = (slot_index, proposal)
        _merge(step, self.scp.nominate(slot_index, proposal, now_ms))
        self._append_decisions(step)

    def _advance_complete_through(self) -> None:
        while self.complete_through + 1 in self.log:
            self.complete_through += 1

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


def _encode_pending(entries: list[str]) -> bytes:
    return json.dumps(entries, ensure_ascii=False).encode()


def _pending_from(record: bytes | None) -> list[str]:
    if record is None:
        return []
    entries = json.loads(record)
    if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
        raise ValueError("the pending-entries record is corrupt")
    return entries


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One node of the network file."""

    name: str
    node_id: NodeId
    host: str
    port: int
    submit_port: int
    key_file: Path
    quorum_set: QuorumSet
    organisation: str | None = None


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """The `[network]` table: timings and bounds shared by every node."""

    nomination_timeout_ms: int = 200
    ballot_timeout_ms: int = 500
    rebroadcast_ms: int = 1000
    max_slots_ahead: int = 8
    retained_slots: int = 64
    max_pending_entries: int = 10_000


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """A parsed and checked ``network.toml``."""

    path: Path
    settings: NetworkSettings
    nodes: tuple[NodeEntry, ...]

    def find(self, selector: str) -> NodeEntry:
        """The node named `selector` (or with that index); a user error otherwise."""
        return find_named(self.path, self.nodes, selector)

    def store_path(self, node: NodeEntry) -> Path:
        return self.path.parent / f"{node.name}.sqlite"


_SETTING_BOUNDS: Final = {
    "nomination_timeout_ms": (1, 600_000),
    "ballot_timeout_ms": (1, 600_000),
    "rebroadcast_ms": (10, 600_000),
    "max_slots_ahead": (1, 1000),
    "retained_slots": (1, 100_000),
    "max_pending_entries": (1, 10_000_000),
}


def load_config(directory: Path) -> NetworkConfig:
    """Read and check ``DIR/network.toml``; raise `ConfigError` naming what is wrong."""
    import tomllib

    path = directory / CONFIG_NAME
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise click.ClickException(
            f"{path}: no such file (create one with `synod scp init {directory}`)"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "(document)", f"valid TOML ({error})") from None
    except OSError as error:
        raise click.ClickException(f"{path}: cannot read: {error.strerror}") from None
    settings = _settings(path, document.get("network", {}))
    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError(path, "nodes", "a non-empty array of tables [[nodes]]")
    names = _node_names(path, raw_nodes)
    nodes = tuple(_node_entry(path, index, raw, names) for index, raw in enumerate(raw_nodes))
    _check_distinct(path, nodes)
    return NetworkConfig(path, settings, nodes)


def _settings(path: Path, table: object) -> NetworkSettings:
    if not isinstance(table, dict):
        raise ConfigError(path, "network", "a table")
    unknown = sorted(set(table) - set(_SETTING_BOUNDS))
    if unknown:
        raise ConfigError(path, f"network.{unknown[0]}", f"one of {', '.join(_SETTING_BOUNDS)}")
    values: dict[str, int] = {}
    for key, (low, high) in _SETTING_BOUNDS.items():
        if key in table:
            values[key] = _integer(path, f"network.{key}", table[key], low, high)
    return NetworkSettings(**values)


def _integer(path: Path, key: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(path, key, f"an integer {low}..{high}, got {value!r}")
    return value


def _string(path: Path, table: dict[str, Any], prefix: str, key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"{prefix}.{key}", f"a non-empty string, got {value!r}")
    return value


def _node_names(path: Path, raw_nodes: list[Any]) -> dict[str, NodeId]:
    """name -> node id, for resolving the names in quorum sets."""
    from synod.crypto import InvalidNodeId, parse_node_id

    names: dict[str, NodeId] = {}
    for index, raw in enumerate(raw_nodes):
        prefix = f"nodes[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(path, prefix, "a table")
        name = _string(path, raw, prefix, "name")
        if name in names:
            raise ConfigError(path, f"{prefix}.name", "a name unique among nodes")
        try:
            names[name] = parse_node_id(_string(path, raw, prefix, "id"))
        except InvalidNodeId as error:
            raise ConfigError(path, f"{prefix}.id", f"a node id ({error})") from None
    return names


def _node_entry(path: Path, index: int, raw: dict[str, Any], names: dict[str, NodeId]) -> NodeEntry:
    prefix = f"nodes[{index}]"
    name = _string(path, raw, prefix, "name")
    host = _string(path, raw, prefix, "host")
    port = _integer(path, f"{prefix}.port", raw.get("port"), 1, 65535)
    submit_port = _integer(path, f"{prefix}.submit_port", raw.get("submit_port"), 1, 65535)
    key_file = Path(_string(path, raw, prefix, "key_file"))
    if not key_file.is_absolute():
        key_file = path.parent / key_file
    organisation = raw.get("organisation")
    if organisation is not None and (not isinstance(organisation, str) or not organisation):
        raise ConfigError(path, f"{prefix}.organisation", "a non-empty string when present")
    quorum_set = _quorum_set(path, f"{prefix}.quorum_set", raw.get("quorum_set"), names, 0)
    _check_quorum_set(path, f"{prefix}.quorum_set", quorum_set)
    return NodeEntry(name, names[name], host, port, submit_port, key_file, quorum_set, organisation)


def _quorum_set(
    path: Path, key: str, raw: object, names: Mapping[str, bytes], depth: int
) -> QuorumSet:
    from synod.quorum.qset import QuorumSet

    if not isinstance(raw, dict):
        raise ConfigError(path, key, "a table {threshold, validators, inner_sets}")
    if depth > 4:
        raise ConfigError(path, key, "inner sets nested at most 4 deep")
    unknown = sorted(set(raw) - {"threshold", "validators", "inner_sets"})
    if unknown:
        raise ConfigError(path, f"{key}.{unknown[0]}", "one of threshold, validators, inner_sets")
    validators = raw.get("validators", [])
    if not isinstance(validators, list):
        raise ConfigError(path, f"{key}.validators", "an array of node names")
    ids: list[bytes] = []
    for position, name in enumerate(validators):
        if not isinstance(name, str) or name not in names:
            raise ConfigError(
                path, f"{key}.validators[{position}]", f"the name of a node, got {name!r}"
            )
        ids.append(names[name])
    inner = raw.get("inner_sets", [])
    if not isinstance(inner, list):
        raise ConfigError(path, f"{key}.inner_sets", "an array of quorum-set tables")
    inner_sets = tuple(
        _quorum_set(path, f"{key}.inner_sets[{position}]", table, names, depth + 1)
        for position, table in enumerate(inner)
    )
    entries = len(ids) + len(inner_sets)
    threshold = _integer(path, f"{key}.threshold", raw.get("threshold"), 1, max(entries, 1))
    return QuorumSet(threshold=threshold, validators=tuple(ids), inner_sets=inner_sets)


def _check_quorum_set(path: Path, key: str, quorum_set: QuorumSet) -> None:
    from synod.quorum.qset import InsaneQuorumSet, check_sanity

    try:
        check_sanity(quorum_set)
    except InsaneQuorumSet as error:
        raise ConfigError(path, key, f"a sane quorum set ({error})") from None


def _check_distinct(path: Path, nodes: tuple[NodeEntry, ...]) -> None:
    names: set[str] = set()
    ids: set[bytes] = set()
    addresses: set[tuple[str, int]] = set()
    for index, node in enumerate(nodes):
        if node.name in names:
            raise ConfigError(path, f"nodes[{index}].name", "a name unique among nodes")
        if node.node_id in ids:
            raise ConfigError(path, f"nodes[{index}].id", "an id unique among nodes")
        for key, port in (("port", node.port), ("submit_port", node.submit_port)):
            if (node.host, port) in addresses:
                raise ConfigError(
                    path, f"nodes[{index}].{key}", "an address unique among all nodes' ports"
                )
            addresses.add((node.host, port))
        names.add(node.name)
        ids.add(node.node_id)


@dataclass
class _Planned:
    name: str
    organisation: str | None
    port: int
    submit_port: int
    id_text: str = ""


def symmetric_quorum_set(names: Sequence[str], threshold: int) -> dict[str, Any]:
    """Every node trusts `threshold` of all nodes."""
    return {"threshold": threshold, "validators": list(names)}


def tiered_quorum_set(organisations: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Trust a 2f+1 share of the organisations, each counted when a majority of its
    nodes agree (stellar-core's habit: 67% of organisations, 51% inside one)."""
    count = len(organisations)
    return {
        "threshold": count - (count - 1) // 3,
        "validators": [],
        "inner_sets": [
            {"threshold": len(members) // 2 + 1, "validators": list(members)}
            for members in organisations
        ],
    }


def render_config(
    settings: NetworkSettings, nodes: Sequence[_Planned], host: str, quorum_set: dict[str, Any]
) -> str:
    """The text of ``network.toml`` (every node gets `quorum_set`)."""
    lines = [
        "# A synod SCP network (written by `synod scp init`); see docs/scp-network.md.",
        "[network]",
        "# round n of nomination lasts (1 + n) * nomination_timeout_ms;",
        "# ballot counter c waits (1 + c) * ballot_timeout_ms",
    ]
    lines += [f"{key} = {getattr(settings, key)}" for key in _SETTING_BOUNDS]
    for node in nodes:
        lines += [
            "",
            "[[nodes]]",
            f"name = {json.dumps(node.name)}",
            f"id = {json.dumps(node.id_text)}",
        ]
        if node.organisation is not None:
            lines.append(f"organisation = {json.dumps(node.organisation)}")
        lines += [
            f"host = {json.dumps(host)}",
            f"port = {node.port}",
            f"submit_port = {node.submit_port}",
            f"key_file = {json.dumps(node.name + '.key')}",
            f"quorum_set = {_inline_table(quorum_set)}",
        ]
    return "\n".join(lines) + "\n"


def _inline_table(table: dict[str, Any]) -> str:
    parts = []
    for key, value in table.items():
        if key == "inner_sets":
            rendered = "[" + ", ".join(_inline_table(inner) for inner in value) + "]"
        else:
            rendered = json.dumps(value)
        parts.append(f"{key} = {rendered}")
    return "{ " + ", ".join(parts) + " }"


# ---------------------------------------------------------------- reading logs


class LogReadError(Exception):
    """A node's SQLite file cannot be read (the message names the file)."""


def read_log(path: Path) -> dict[int, bytes] | None:
    """The externalized log in a node's SQLite file, read-only; None if there is no file.

    Safe while the node runs: SQLite's write-ahead log lets a reader see the last
    committed state without blocking the writer.
    """
    import sqlite3

    if not path.exists():
        return None
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise LogReadError(f"{path}: cannot open: {error}") from None
    try:
        rows = connection.execute(
            "SELECT key, value FROM records WHERE key >= ? AND key < ?",
            (_LOG_KEY_PREFIX, _LOG_KEY_PREFIX[:-1] + b"0"),
        ).fetchall()
    except sqlite3.Error as error:
        raise LogReadError(f"{path}: not a synod node store ({error})") from None
    finally:
        connection.close()
    return log_from_records({bytes(key): bytes(value) for key, value in rows})


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


def value_label(value: bytes | None, *, brief: bool = False) -> str:
    """A short human label of a slot value: its entries (or, `brief`, their count and
    the value's digest); a digest alone for a value that is not a batch."""
    if value is None:
        return "-"
    entries = decode_batch(value)
    if entries is None:
        return "#" + value_digest(value)[:12]
    if brief:
        return f"{len(entries)} value{'s' if len(entries) != 1 else ''} #{value_digest(value)[:8]}"
    text = ", ".join(entries)
    return text if len(text) <= 40 else text[:37] + "..."


def value_digest(value: bytes) -> str:
    import hashlib

    return hashlib.sha256(value).hexdigest()[:16]


# ---------------------------------------------------------------- commands


@click.group()
def scp() -> None:
    """Stellar Consensus Protocol nodes agreeing on a replicated log: init, run, submit,
    status."""


@scp.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--nodes", "count", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option(
    "--threshold",
    type=click.IntRange(1),
    default=None,
    help="Nodes each node trusts (symmetric network); default n - (n-1)//3.",
)
@click.option(
    "--organisations",
    type=click.IntRange(1, 21),
    default=None,
    help="Tiered network: this many organisations (replaces --nodes).",
)
@click.option(
    "--per-organisation",
    type=click.IntRange(1, 7),
    default=3,
    show_default=True,
    help="Nodes per organisation (with --organisations).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every node uses.")
@click.option(
    "--base-port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_BASE_PORT,
    show_default=True,
    help="Node i listens on base-port + 2i (peers) and base-port + 2i + 1 (submit).",
)
@click.option("--ports", default=None, help="Explicit comma-separated peer ports, one per node.")
@click.option(
    "--submit-ports", default=None, help="Explicit comma-separated submit ports, one per node."
)
def init(  # noqa: PLR0917 - one parameter per click option
    directory: Path,
    count: int,
    threshold: int | None,
    organisations: int | None,
    per_organisation: int,
    host: str,
    base_port: int,
    ports: str | None,
    submit_ports: str | None,
) -> None:
    """Write node keys and DIRECTORY/network.toml for a local SCP network."""
    from synod.crypto import node_id_text

    planned = _plan_nodes(count, organisations, per_organisation)
    count = len(planned)
    if base_port + 2 * count > 65536 and (ports is None or submit_ports is None):
        raise click.BadParameter("too high for that many nodes", param_hint="--base-port")
    peer_ports = parse_ports(ports, count, base_port, "--ports", stride=2)
    rpc_ports = parse_ports(submit_ports, count, base_port + 1, "--submit-ports", stride=2)
    if len(set(peer_ports + rpc_ports)) != 2 * count:
        raise click.BadParameter("every port must differ", param_hint="--ports/--submit-ports")
    names = [node.name for node in planned]
    if organisations is None:
        chosen = threshold if threshold is not None else count - (count - 1) // 3
        if chosen > count:
            raise click.BadParameter(f"at most {count} (the nodes)", param_hint="--threshold")
        quorum_set = symmetric_quorum_set(names, chosen)
    else:
        if threshold is not None:
            raise click.BadParameter("only for a symmetric network", param_hint="--threshold")
        groups: dict[str | None, list[str]] = {}
        for node in planned:
            groups.setdefault(node.organisation, []).append(node.name)
        quorum_set = tiered_quorum_set(list(groups.values()))
    config_path = directory / CONFIG_NAME
    refuse_to_overwrite(config_path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise click.ClickException(f"{directory}: cannot create: {error.strerror}") from None
    for node, port, submit_port in zip(planned, peer_ports, rpc_ports, strict=True):
        pair = write_new_key(directory / f"{node.name}.key")
        node.port, node.submit_port, node.id_text = port, submit_port, node_id_text(pair.node_id)
    config_path.write_text(
        render_config(NetworkSettings(), planned, host, quorum_set), encoding="utf-8"
    )
    for node in planned:
        click.echo(
            f"{node.name}  {node.id_text}  {host}:{node.port}  submit {host}:{node.submit_port}"
        )
    click.echo(f"wrote {config_path}", err=True)


def _plan_nodes(count: int, organisations: int | None, per_organisation: int) -> list[_Planned]:
    if organisations is None:
        return [_Planned(f"node-{index}", None, 0, 0) for index in range(count)]
    return [
        _Planned(f"node-{org * per_organisation + member}", f"org-{org}", 0, 0)
        for org in range(organisations)
        for member in range(per_organisation)
    ]


@scp.command("run")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("node")
@log_level_option()
def run(directory: Path, node: str, log_level: str) -> None:
    """Run NODE of the network in DIRECTORY until SIGINT/SIGTERM.

    Prints one JSON line when ready and one per externalized slot.
    """
    config = load_config(directory)
    entry = config.find(node)
    keys = read_node_keys(
        entry.key_file,
        entry.node_id,
        f"holds the key of another node than {entry.name}'s id in {config.path}",
    )
    run_process(
        _run_node(config, entry, keys), log_level, listen_failure=f"{entry.name}: cannot listen"
    )


def build_core(
    config: NetworkConfig, entry: NodeEntry, keys: KeyPair, records: Mapping[bytes, bytes]
) -> LogCore:
    """The node's `LogCore`, rebuilt from its stored records."""
    settings = config.settings
    scp_config = ScpConfig(
        keys=keys,
        quorum_set=entry.quorum_set,
        application=LogRules(
            LogTimeouts(settings.nomination_timeout_ms, settings.ballot_timeout_ms)
        ),
        max_slots_ahead=settings.max_slots_ahead,
        retained_slots=settings.retained_slots,
        rebroadcast_interval_ms=settings.rebroadcast_ms,
        known_quorum_sets=[node.quorum_set for node in config.nodes],
    )
    return LogCore(scp_config, records, max_pending=settings.max_pending_entries)


async def _run_node(config: NetworkConfig, entry: NodeEntry, keys: KeyPair) -> int:
    import logging

    from synod.crypto import node_id_text
    from synod.runtime.host import NodeHost
    from synod.runtime.storage import SqliteStorage

    log = logging.getLogger("synod.cli.scp")
    lock = lock_exclusively(config.path.parent / f"{entry.name}.lock")
    storage = SqliteStorage.open(config.store_path(entry))
    try:
        core = build_core(config, entry, keys, storage.load())
    except Exception as error:
        storage.close()
        lock.close()
        raise click.ClickException(f"{config.store_path(entry)}: cannot restore: {error}") from None

    def on_event(event: object) -> None:
        if isinstance(event, LogAppended):
            print_json_line(
                {
                    "event": "externalized",
                    "node": entry.name,
                    "slot": event.slot_index,
                    "entries": event.entries,
                    "value_sha256": value_digest(event.value),
                }
            )

    host = NodeHost(
        core,
        keys=keys,
        codec=LOG_CODEC,
        storage=storage,
        peers={n.node_id: (n.host, n.port) for n in config.nodes if n.node_id != keys.node_id},
        on_event=on_event,
    )
    try:
        await host.start(
            listen=(entry.host, entry.port), rpc_listen=(entry.host, entry.submit_port)
        )
    except BaseException:
        storage.close()
        lock.close()
        raise
    ready = {
        "event": "ready",
        "node": entry.name,
        "id": node_id_text(keys.node_id),
        "address": f"{entry.host}:{entry.port}",
        "submit_address": f"{entry.host}:{entry.submit_port}",
        "restored_slots": len(core.log),
        "next_slot": core.scp.next_slot_index,
        "pending": len(core.pending),
    }
    return await serve_until_stopped(host, ready, lock=lock, log=log)


async def submit_entries(
    address: tuple[str, int], entries: Sequence[str], *, timeout_s: float = 5.0
) -> SubmitReply | str:
    """Send entries to a node's submit port; its reply, or why there was none."""
    from synod.runtime.rpc import RpcClient, RpcFailure
    from synod.wire import DecodeError

    client = RpcClient(address)
    try:
        queued = 0
        reply = SubmitReply(0, 0)
        for start in range(0, len(entries), MAX_SUBMIT_ENTRIES):
            chunk = tuple(entries[start : start + MAX_SUBMIT_ENTRIES])
            result = await client.call(LOG_CODEC.encode(SubmitRequest(chunk)), timeout_s=timeout_s)
            if isinstance(result, RpcFailure):
                return result.reason
            try:
                reply = LOG_CODEC.decode(result.body)
            except DecodeError as error:
                return f"unreadable reply: {error}"
            if not isinstance(reply, SubmitReply):
                return "unexpected reply"
            if reply.error:
                return reply
            queued += reply.queued
        return SubmitReply(queued, reply.pending)
    finally:
        await client.close()


@scp.command("submit")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("node")
@click.argument("values", nargs=-1)
@click.option("--timeout", "timeout_s", type=click.FloatRange(0.1), default=5.0, show_default=True)
def submit(directory: Path, node: str, values: tuple[str, ...], timeout_s: float) -> None:
    """Hand VALUES (or, with none given, each line of standard input) to a running NODE.

    Returns once the node has stored them; they are then proposed for the next slots.
    Exit 0: stored; 1: refused by the node; 2: configuration error; 3: no answer.
    """
    import asyncio

    config = load_config(directory)
    entry = config.find(node)
    entries = list(values) if values else [line.rstrip("\r\n") for line in sys.stdin]
    entries = [text for text in entries if text]
    if not entries:
        raise click.UsageError("no values given (arguments or lines on standard input)")
    too_long = [text for text in entries if not _entry_fits(text)]
    if too_long:
        raise click.BadParameter(f"each value must be 1..{MAX_ENTRY_BYTES} bytes of UTF-8")
    reply = asyncio.run(
        submit_entries((entry.host, entry.submit_port), entries, timeout_s=timeout_s)
    )
    if isinstance(reply, str):
        click.echo(f"{entry.name} ({entry.host}:{entry.submit_port}): {reply}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    if reply.error:
        click.echo(f"{entry.name} refused: {reply.error}", err=True)
        sys.exit(EXIT_FAILED)
    noun = "entry" if reply.queued == 1 else "entries"
    click.echo(f"{entry.name}: {reply.queued} new {noun} stored; {reply.pending} pending")


@scp.command("status")
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def status(directory: Path, as_json: bool) -> None:
    """Show each node's externalized log slot by slot, from the SQLite files (read-only).

    Exit 0 when no two nodes hold different values for a slot, 1 when some do.
    """
    config = load_config(directory)
    logs: dict[str, dict[int, bytes]] = {}
    missing: list[str] = []
    for node in config.nodes:
        try:
            found = read_log(config.store_path(node))
        except LogReadError as error:
            raise click.ClickException(str(error)) from None
        if found is None:
            missing.append(node.name)
        logs[node.name] = found or {}
    comparison = compare_logs(logs)
    if as_json:
        click.echo(json.dumps(comparison_document(comparison, missing), ensure_ascii=False))
    else:
        print_comparison(comparison, title=f"{config.path.parent}: externalized slots")
        if not comparison.rows:
            click.echo("no slot externalized yet")
        if missing:
            click.echo(f"no store yet (never ran): {', '.join(missing)}")
    sys.exit(0 if comparison.agree else EXIT_FAILED)


def comparison_document(comparison: Comparison, missing: Sequence[str] = ()) -> dict[str, Any]:
    """The comparison as plain JSON data."""
    return {
        "nodes": comparison.nodes,
        "never_ran": list(missing),
        "agree": comparison.agree,
        "disagreements": comparison.disagreements,
        "gaps": comparison.gaps,
        "slots": [
            {
                "slot": row.slot_index,
                "agree": row.agree,
                "values": {
                    node: None
                    if value is None
                    else {"entries": decode_batch(value), "value_sha256": value_digest(value)}
                    for node, value in row.values.items()
                },
            }
            for row in comparison.rows
        ],
    }


def print_comparison(comparison: Comparison, *, title: str, brief: bool = False) -> None:
    """A table: one row per slot, one column per node, and a verdict per slot."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("slot", justify="right")
    for node in comparison.nodes:
        table.add_column(node)
    table.add_column("agree")
    for row in comparison.rows:
        first = next(iter(row.distinct_values), None)
        cells = []
        for node in comparison.nodes:
            value = row.values[node]
            label = value_label(value, brief=brief)
            cells.append(label if value is None or value == first else f"[red]{label}[/red]")
        verdict = "yes" if row.agree else "[red]NO[/red]"
        table.add_row(str(row.slot_index), *cells, verdict)
    Console().print(table)
