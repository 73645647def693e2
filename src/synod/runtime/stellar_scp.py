"""An SCP node in Stellar mode: synod's `ScpCore` on the Stellar overlay.

Theory of operation.  The core is configured with Stellar's envelope signatures and
quorum-set hashes (`synod.scp.stellar.StellarNetwork`, `stellar_qset_hash`), so every
statement it signs is byte for byte what stellar-core signs, under the network id (the
SHA-256 of the passphrase), and it picks nomination leaders by stellar-core's rule
(`synod.scp.leaders.StellarLeaders`).  Its messages travel as the overlay's SCP arms: `Envelope`
as SCP_MESSAGE, `QuorumSetRequest`/`QuorumSetResponse` as GET_SCP_QUORUMSET /
SCP_QUORUMSET, `StateRequest` as GET_SCP_STATE.  Messages without a Stellar counterpart
(synod's decision proofs for nodes that were away) are not sent in this mode.

The driver is the runtime's usual one, reduced: one input at a time on the event loop,
each step applied in the contract's order (persist, send, timers, events).  A validator
keeps its records in a SQLite file (`SqliteStorage`, committed before the step's
messages leave) under an exclusive lock, so a restart cannot vote twice and a second
copy cannot run; without a file, records stay in memory (tests, watchers).
Connections are the overlay's (`OverlayNode`): a `Broadcast` goes to every authenticated
peer (validators and watchers alike), a `Send` to the connections of the named node.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from stellar_sdk import xdr

from synod.core import (
    Broadcast,
    CancelTimer,
    Input,
    Persist,
    Proposed,
    Received,
    Send,
    SetTimer,
    Started,
    Step,
    TimerFired,
)
from synod.crypto import KeyPair, NodeId, node_id_text, sha256
from synod.quorum.qset import QuorumSet
from synod.runtime.host import monotonic_ms
from synod.runtime.lock import hold_exclusive_lock
from synod.runtime.nodes import restore_core
from synod.runtime.stellar_overlay import (
    OverlayConnection,
    OverlayLimits,
    OverlayNode,
    speaks_scp,
)
from synod.runtime.storage import SqliteStorage, StorageError
from synod.runtime.store_identity import claim_records, identity_record, mark_store
from synod.scp.application import Application, Externalized, SlotProposal
from synod.scp.core import ScpConfig, ScpCore
from synod.scp.leaders import StellarLeaders
from synod.scp.log import log_record_key
from synod.scp.messages import Envelope, QuorumSetRequest
from synod.scp.stellar import (
    OverlayMessage,
    StellarFormatError,
    StellarNetwork,
    overlay_message_from_xdr,
    overlay_message_to_xdr,
    stellar_qset_hash,
)
from synod.stellar.peer import OverlaySettings

log = logging.getLogger("synod.stellar.scp")
_MAX_SEEN = 10_000
"""Envelopes remembered as seen (relayed or dropped as repeats): 12 slots of a few hundred
nodes' statements."""
_MAX_ASKED = 1024
"""Quorum-set hashes remembered as asked for: four times the core's parked envelopes."""

MessageType = xdr.MessageType
_SCP_TYPES = frozenset(
    (
        MessageType.SCP_MESSAGE,
        MessageType.GET_SCP_QUORUMSET,
        MessageType.SCP_QUORUMSET,
        MessageType.GET_SCP_STATE,
    )
)


@dataclass(frozen=True, slots=True)
class ScpTuning:
    """The core's windows and timings when a network file sets them (`ScpConfig`'s
    defaults otherwise); `known_quorum_sets` spares asking peers for them."""

    max_slots_ahead: int | None = None
    retained_slots: int | None = None
    retained_decisions: int | None = None
    rebroadcast_interval_ms: int | None = None
    known_quorum_sets: tuple[QuorumSet, ...] = ()

    def options(self) -> dict[str, Any]:
        """The `ScpConfig` keyword arguments this tuning sets."""
        chosen: dict[str, Any] = {
            name: getattr(self, name)
            for name in (
                "max_slots_ahead",
                "retained_slots",
                "retained_decisions",
                "rebroadcast_interval_ms",
            )
            if getattr(self, name) is not None
        }
        if self.known_quorum_sets:
            chosen["known_quorum_sets"] = self.known_quorum_sets
        return chosen


STORE_IDENTITY_KEY = b"scp/identity"
"""The record naming whose store a file is (`synod.runtime.store_identity`): the node
id and the network passphrase's hash."""


class StellarScpNode:
    """One SCP validator (or watcher) speaking Stellar's overlay (see the module doc)."""

    def __init__(
        self,
        keys: KeyPair,
        quorum_set: QuorumSet,
        settings: OverlaySettings,
        *,
        application: Application | None = None,
        peers: Sequence[tuple[str, int]] = (),
        on_externalized: Callable[[Externalized], None] | None = None,
        limits: OverlayLimits | None = None,
        validator: bool = True,
        store_path: Path | None = None,
        keep_log: bool = False,
        tuning: ScpTuning | None = None,
        lock_path: Path | None = None,
    ) -> None:
        """With `store_path`, the core's records live in that SQLite file (committed before
        any message of their step leaves) and a lock file beside it keeps a second process
        of the same node out; without it they live in memory (tests, watchers).

        With `keep_log`, each decided value is also stored under the replicated log's key
        (`synod.scp.log.log_record_key`) in the same commit as the step that decided it,
        so `synod scp status` and `read_log` read a Stellar-mode node like any other.
        `tuning` sets the core's windows and timings (a network file's settings);
        `lock_path` names the lock file (default: the store's name + ``.lock``)."""
        self.network = StellarNetwork(settings.passphrase)
        config = ScpConfig(
            keys=keys,
            quorum_set=quorum_set,
            application=application or Application(),
            validator=validator,
            qset_hasher=stellar_qset_hash,
            leader_rule=StellarLeaders(),
            signer=self.network.sign_statement,
            verifier=self.network.verify_envelope,
            **(tuning or ScpTuning()).options(),
        )
        self.keep_log = keep_log
        self.storage: dict[bytes, bytes] = {}
        self._sqlite: SqliteStorage | None = None
        self._lock: IO[str] | None = None
        if store_path is None:
            self.core = ScpCore(config, self.storage)
        else:
            self._lock = hold_exclusive_lock(
                lock_path or store_path.with_name(store_path.name + ".lock")
            )
            try:
                self._sqlite, self.core = self._restore(store_path, config, keys, settings)
            except BaseException:
                self._lock.close()
                raise
        self.overlay = OverlayNode(
            keys,
            settings,
            limits=limits,
            peers=peers,
            handler=self._on_overlay_message,
            accept=self._wanted,
            on_peer=self._ask_state,
        )
        self.on_externalized = on_externalized
        self.externalized: list[Externalized] = []
        self.unsent = 0
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._started = False
        # Quorum-set hashes the core asked peers for: only those answers are decoded.
        self._asked: OrderedDict[bytes, None] = OrderedDict()
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self.relayed = 0
        """Envelopes of other nodes sent on (counted per connection)."""
        self.failure: StorageError | None = None
        self.failed = asyncio.Event()

    @staticmethod
    def _restore(
        store_path: Path, config: ScpConfig, keys: KeyPair, settings: OverlaySettings
    ) -> tuple[SqliteStorage, ScpCore]:
        """The core rebuilt from `store_path`, which must be this node's store of this
        network (`synod.runtime.store_identity`: its statements are not verified again)."""
        identity = identity_record(
            protocol="stellar-scp",
            node=node_id_text(keys.node_id),
            network=sha256(settings.passphrase.encode()).hex(),
        )
        unmarked: list[bool] = []

        def build(records: Mapping[bytes, bytes]) -> ScpCore:
            try:
                own, fresh = claim_records(
                    store_path, records, STORE_IDENTITY_KEY, identity, (b"scp/", b"app/")
                )
            except StorageError as error:
                raise ValueError(error.reason) from None  # restore_core names the file
            unmarked.append(fresh)
            return ScpCore(config, own)

        storage, core = restore_core(store_path, build)
        mark_store(storage, unmarked[0], STORE_IDENTITY_KEY, identity)
        return storage, core

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen, then feed the core `Started`; returns the bound address."""
        address = await self.overlay.start(host, port)
        self._started = True
        self._input(Started())
        return address

    def connect_to(self, addresses: Sequence[tuple[str, int]]) -> None:
        """Keep dialing these peers (the overlay retries lost connections)."""
        self.overlay.keep_connected(addresses)

    def propose(self, value: bytes, slot_index: int | None = None) -> None:
        """Nominate `value` (a ``StellarValue`` XDR) for `slot_index` or the next slot."""
        if not self._started:
            raise RuntimeError("start the node before proposing")
        proposal: bytes | SlotProposal = (
            value if slot_index is None else SlotProposal(slot_index, value)
        )
        self._input(Proposed(proposal))

    async def close(self) -> None:
        """Cancel timers and close the overlay."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        await self.overlay.close()
        if self._sqlite is not None:
            self._sqlite.close()
        if self._lock is not None:
            self._lock.close()

    # Inputs ---------------------------------------------------------------------------

    def _on_overlay_message(
        self, connection: OverlayConnection, message: xdr.StellarMessage
    ) -> None:
        sender = connection.peer.peer_id
        if sender is None or message.type not in _SCP_TYPES:
            return
        message_xdr = bytes(message.to_xdr_bytes())
        try:
            converted = overlay_message_from_xdr(message_xdr)
        except StellarFormatError:
            return  # beyond synod's bounds: dropped, like any malformed statement
        if isinstance(converted, Envelope):
            self._relay(connection, message, sha256(message_xdr), converted)
        # Repeats still reach the core: a peer's periodic re-send is how a statement the
        # core had to drop (its quorum set unknown, say) gets a second chance.
        self._input(Received(sender, converted))

    def _relay(
        self,
        source: OverlayConnection,
        message: xdr.StellarMessage,
        digest: bytes,
        envelope: Envelope,
    ) -> None:
        """Flood a new, validly signed envelope of a slot in the window, from a node of
        the transitive quorum, to every other peer, once, as stellar-core floods SCP
        messages.  Cheapest first: the hash, the slot, the node, then the signature.  The
        hash covers the whole message, so a corrupted copy that arrives first cannot
        shadow the genuine one.  Anyone may authenticate on Stellar's overlay, so an
        envelope of a node outside the transitive quorum (made-up keys) costs a set
        lookup and goes nowhere: stellar-core does not flood those either."""
        if not self._first_sight(digest):
            return
        slot = envelope.statement.slot_index
        core = self.core
        if not core.next_slot_index - core.config.retained_slots <= slot <= core.window_top:
            return  # not ours to spread: the core keeps or drops it
        if envelope.statement.node_id not in core.transitive_quorum:
            return
        if not self.network.verify_envelope(envelope):
            return
        for connection in list(self.overlay.connections):
            if connection is not source and connection.peer.authenticated:
                connection.send(message)
                self.relayed += 1

    def _first_sight(self, digest: bytes) -> bool:
        if digest in self._seen:
            return False
        self._seen[digest] = None
        while len(self._seen) > _MAX_SEEN:
            self._seen.popitem(last=False)
        return True

    def _ask_state(self, connection: OverlayConnection) -> None:
        """A new peer is asked for its statements from the first slot not yet decided, as
        stellar-core asks every peer it authenticates (GET_SCP_STATE)."""
        first = min(self.core.next_slot_index, 2**32 - 1)
        connection.send(
            xdr.StellarMessage(MessageType.GET_SCP_STATE, get_scp_ledger_seq=xdr.Uint32(first))
        )

    def _wanted(self, kind: int, message_xdr: bytes) -> bool:
        if kind == int(MessageType.SCP_QUORUMSET.value):
            return sha256(message_xdr[4:]) in self._asked
        return speaks_scp(kind, message_xdr)

    def _input(self, event: Input) -> None:
        if self.failure is not None:
            return  # a node that could not persist a step says nothing more
        try:
            self._apply(self.core.handle(event, monotonic_ms()))
        except StorageError as error:
            # The step's records are not durable, so none of its messages may leave and
            # the core's memory is ahead of its store: stop, as the node host does.
            self.failure = error
            self.failed.set()
            log.error("store failed; the node stops", extra={"reason": str(error)})

    def _fire(self, name: str) -> None:
        self._timers.pop(name, None)
        self._input(TimerFired(name))

    # Outputs, in the contract's order ---------------------------------------------------

    def _apply(self, step: Step) -> None:
        records = step.persist + self._log_records(step)
        if self._sqlite is not None:
            self._sqlite.apply(records)  # durable before any of the step's messages
        for record in records:
            self._persist(record)
        for effect in step.outgoing:
            if isinstance(effect, Broadcast):
                self._send_to(None, effect.message)
            elif isinstance(effect, Send):
                self._send_to(effect.to, effect.message)
        for command in step.timers:
            self._timer(command)
        for event in step.events:
            if isinstance(event, Externalized):
                self.externalized.append(event)
                if self.on_externalized is not None:
                    self.on_externalized(event)

    def _log_records(self, step: Step) -> list[Persist]:
        if not self.keep_log:
            return []
        return [
            Persist(log_record_key(event.slot_index), event.value)
            for event in step.events
            if isinstance(event, Externalized)
        ]

    def _persist(self, record: Persist) -> None:
        if record.value is None:
            self.storage.pop(record.key, None)
        else:
            self.storage[record.key] = record.value

    def _send_to(self, to: NodeId | None, message: object) -> None:
        if not isinstance(message, OverlayMessage):
            self.unsent += 1  # no Stellar counterpart (decision proofs)
            return
        if isinstance(message, QuorumSetRequest):
            self._asked[bytes(message.quorum_set_hash)] = None
            while len(self._asked) > _MAX_ASKED:
                self._asked.popitem(last=False)
        try:
            message_xdr = overlay_message_to_xdr(message)
        except ValueError:
            self.unsent += 1  # a state request beyond XDR's uint32 slot
            return
        if isinstance(message, Envelope):
            self._first_sight(sha256(message_xdr))  # ours are not relayed back to us
        encoded = xdr.StellarMessage.from_xdr_bytes(message_xdr)
        for connection in list(self.overlay.connections):
            peer = connection.peer
            if peer.authenticated and (to is None or peer.peer_id == to):
                connection.send(encoded)

    def _timer(self, command: SetTimer | CancelTimer) -> None:
        previous = self._timers.pop(command.name, None)
        if previous is not None:
            previous.cancel()
        if isinstance(command, SetTimer):
            loop = asyncio.get_running_loop()
            self._timers[command.name] = loop.call_later(
                command.delay_ms / 1000, self._fire, command.name
            )
