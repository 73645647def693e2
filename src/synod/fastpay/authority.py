"""One shard of a FastPay authority: a passive, sans-I/O server (FastPay paper, section 3.2;
reference `fastpay_core/src/authority.rs`).

Theory of operation.  An authority splits accounts over `shard_count` shards by a hash of
the account (`messages.shard_of`); each shard is an `AuthorityShard` that only answers
requests (`RequestReceived` -> `Reply`).  Per account a shard keeps the balance, the next
expected sequence number, the *pending* vote (its lock), the log of confirmed certificates
sent by the account and the log of certificates it received.

Transfer order (paper: "Transfer order"), checked in this order:
  the sender lives in this shard; the sender signed it; the amount is positive; the
  sequence number can still be incremented.  If a vote is pending for the account, the
  same transfer gets the same vote again and any other transfer is refused
  (`CONFLICTING_PENDING_ORDER`, naming the pending vote): this lock is what keeps an
  honest authority from voting for two orders with one sequence number.  Otherwise the
  sequence number must be the next expected one and the balance must cover the amount;
  the shard signs the vote, records it as pending, persists, and only then replies.

Confirmation order (paper: "Confirmation order"):
  the sender lives in this shard.  Cheap checks come before any signature check, so
  that replays of public certificates cost a dictionary lookup: a certificate behind the
  account's next sequence number was already applied, and nothing changes (the reply is
  the account's state, which is public); one ahead of it is refused with
  `MISSING_EARLIER_CONFIRMATIONS` naming the first missing sequence number.  Only the
  next one is checked (`check_certificate`: distinct committee members, quorum weight,
  the sender's signature of the order, valid votes) and applied: debit the sender
  (bounded below by `MIN_BALANCE`), advance the sequence number, clear the lock, log the
  certificate, and credit the recipient, directly when it lives in this shard, else
  through a `CrossShardUpdate` kept in an *outbox* record until the recipient's shard
  acknowledges it (it is sent again after a restart or a failed call).  Credits are
  idempotent per (sender, sequence number) and always applied in full: balances are
  128-bit (`messages.MAX_BALANCE`) and the genesis supply at most 2^63-1, so no credit can
  reach the bound (it would take more than 2^64 certified transfers).

Cross-shard update: signed by this authority's key (all shards of an authority share it)
over the certificate, so that the recipient's shard need not check the quorum again.

Durability: every change is emitted as `Persist` records in the same step as the reply,
so the driver makes it durable before anything leaves the node; `AuthorityShard(...,
storage=...)` rebuilds the shard from exactly those records plus the genesis balances.

Identity: the first `Started` persists an identity record (the authority's key, the
shard and shard count, digests of the committee and of the genesis).  Records made for
another identity refuse to rebuild a shard (`StoreMismatch`): new keys or a new genesis
never silently take over an old store's accounts.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from synod.core import (
    Call,
    CallFailed,
    Input,
    Persist,
    Reply,
    RequestReceived,
    Response,
    SetTimer,
    Started,
    Step,
    Storage,
    TimerFired,
)
from synod.crypto import KeyPair, NodeId, blake2b, in_network, node_id_text, verify
from synod.fastpay.messages import (
    CROSS_SHARD_DOMAIN,
    MAX_BALANCE,
    MAX_RECEIVED_PER_RESPONSE,
    MAX_SEQUENCE_NUMBER,
    MAX_SUPPLY,
    MIN_BALANCE,
    REPLY_CODEC,
    REQUEST_CODEC,
    VOTE_DOMAIN,
    AccountInfoRequest,
    AccountInfoResponse,
    CertifiedTransferOrder,
    ConfirmationOrder,
    CrossShardAck,
    CrossShardUpdate,
    ErrorKind,
    ErrorReply,
    FastPayReply,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    decode_balance,
    encode_balance,
    make_vote,
    shard_of,
    transfer_order_is_valid,
)
from synod.quorum.committee import Committee
from synod.wire import Codec as _Codec
from synod.wire import DecodeError, Message, canonical_bytes

CROSS_SHARD_RETRY_TIMER = "fastpay-cross-shard-retry"
DEFAULT_CROSS_SHARD_RETRY_MS = 1_000

_FASTPAY_PREFIX = b"fastpay/"
_ACCOUNT_PREFIX = b"fastpay/account/"
_SENT_PREFIX = b"fastpay/sent/"
_RECEIVED_PREFIX = b"fastpay/received/"
_OUTBOX_PREFIX = b"fastpay/outbox/"
_IDENTITY_KEY = b"fastpay/identity"
_INDEX = struct.Struct(">Q")


# ---------------------------------------------------------------- certificates


def check_certificate(
    certificate: CertifiedTransferOrder, committee: Committee, network: bytes = b""
) -> str | None:
    """Why `certificate` is not valid for `committee` in `network`, or None when it is.

    Cheap checks first (distinct signers, membership, weight), signatures last: the
    sender's signature of the order, then the votes.  A certificate is only as good as
    its weakest part: without the sender's signature, valid votes over a transfer would
    let anyone store and serve an order its owner never signed.
    """
    signers = [vote.authority for vote in certificate.signatures]
    if len(set(signers)) != len(signers):
        return "an authority signed twice"
    if any(committee.weight(signer) == 0 for signer in signers):
        return "a signer is not a committee member"
    if committee.weight_of(signers) < committee.quorum_threshold:
        return "the signers do not reach the quorum threshold"
    if not transfer_order_is_valid(certificate.order, network):
        return "the order is not signed by its sender"
    signed = certificate.transfer.signed_bytes()
    domain = in_network(VOTE_DOMAIN, network)
    for vote in certificate.signatures:
        if not verify(vote.authority, domain, signed, vote.signature):
            return "a vote signature does not verify"
    return None


# ---------------------------------------------------------------- persisted records


class AccountRecord(Message, frozen=True):
    """What a shard persists for one account besides its certificate logs.

    `balance` is `messages.encode_balance` bytes (stores written before balances were
    128-bit hold a plain integer, still read).
    """

    balance: int | bytes
    next_sequence_number: int
    pending: SignedTransferOrder | None = None

    def balance_value(self) -> int:
        """The balance as an integer, whichever way it was written."""
        return self.balance if isinstance(self.balance, int) else decode_balance(self.balance)


class IdentityRecord(Message, frozen=True):
    """What a shard's records were made for (persisted on the first start)."""

    authority: bytes
    shard: int
    shard_count: int
    committee_digest: bytes
    genesis_digest: bytes
    network: bytes = b""


class StoreMismatch(ValueError):
    """The records were made for another authority, shard, committee or genesis."""


_ACCOUNT_CODEC: _Codec[AccountRecord] = _Codec(AccountRecord)
_CERTIFICATE_CODEC: _Codec[CertifiedTransferOrder] = _Codec(CertifiedTransferOrder)
_UPDATE_CODEC: _Codec[CrossShardUpdate] = _Codec(CrossShardUpdate)
_IDENTITY_CODEC: _Codec[IdentityRecord] = _Codec(IdentityRecord)


def committee_digest(committee: Committee) -> bytes:
    """A digest of the members and their weights (independent of their order)."""
    members = sorted((bytes(name), committee.weight(name)) for name in committee.members)
    text = b"".join(name + weight.to_bytes(8, "big") for name, weight in members)
    return blake2b(text, person=b"fastpay-cmt")


def genesis_digest(genesis: Mapping[bytes, int]) -> bytes:
    """A digest of the genesis balances (independent of their order)."""
    lines = sorted((bytes(account), balance) for account, balance in genesis.items())
    text = b"".join(account + encode_balance(balance) for account, balance in lines)
    return blake2b(text, person=b"fastpay-gen")


def check_genesis(genesis: Mapping[bytes, int]) -> None:
    """Raise `ValueError` unless every balance is >= 0 and the total at most `MAX_SUPPLY`.

    The total bound keeps every account's true balance within one transfer's amount;
    checking lines one by one let three accounts of 2^63-1 exist next to each other.
    """
    total = 0
    for balance in genesis.values():
        if balance < 0:
            raise ValueError(f"genesis balance {balance} is negative")
        total += balance
    if total > MAX_SUPPLY:
        raise ValueError(f"the genesis supply {total} exceeds {MAX_SUPPLY} (2^63-1)")


def _sequence_key(prefix: bytes, account: bytes, index: int) -> bytes:
    return prefix + account + _INDEX.pack(index)


@dataclass
class AccountState:
    """A shard's view of one account."""

    balance: int
    next_sequence_number: int = 0
    pending: SignedTransferOrder | None = None
    confirmed: list[CertifiedTransferOrder] = field(default_factory=list)
    received: list[CertifiedTransferOrder] = field(default_factory=list)

    def record(self) -> bytes:
        return _ACCOUNT_CODEC.encode(
            AccountRecord(encode_balance(self.balance), self.next_sequence_number, self.pending)
        )


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class TransferApplied:
    """This shard applied a certified transfer: the sender is debited (and the recipient
    credited here or through a cross-shard update).  Emitted once per (sender, sequence
    number) in the step that persists it; the simulator's checkers read it."""

    transfer: Transfer


@dataclass(frozen=True, slots=True)
class TransferCredited:
    """This shard credited the recipient of a certified transfer (once per sender and
    sequence number; in the debit's step, or when the cross-shard update arrives)."""

    transfer: Transfer


@dataclass(frozen=True, slots=True)
class CrossShardRefused:
    """The recipient's shard refused a cross-shard update (a configuration error); the
    update stays in the outbox and is retried."""

    sender: NodeId
    sequence_number: int
    reply: Any


# ---------------------------------------------------------------- the shard


class AuthorityShard:
    """One shard of one authority, as a passive `synod.core.Core`.

    `genesis` maps accounts to initial balances (accounts of other shards are ignored);
    it must be the same at every restart.  `storage` is what the shard persisted before.
    """

    def __init__(
        self,
        keys: KeyPair,
        committee: Committee,
        *,
        shard: int = 0,
        shard_count: int = 1,
        genesis: Mapping[NodeId, int] | Mapping[bytes, int] | None = None,
        storage: Storage | None = None,
        cross_shard_retry_ms: int = DEFAULT_CROSS_SHARD_RETRY_MS,
        network: bytes = b"",
    ) -> None:
        in_network(VOTE_DOMAIN, network)  # caller misuse raises: not a network id
        if not 0 <= shard < shard_count:
            raise ValueError(f"shard {shard} is not within 0..{shard_count - 1}")
        if committee.weight(keys.node_id) == 0:
            raise ValueError("this authority is not a member of the committee")
        self.keys = keys
        self.committee = committee
        self.shard = shard
        self.shard_count = shard_count
        self.cross_shard_retry_ms = cross_shard_retry_ms
        self.network = network
        self.accounts: dict[bytes, AccountState] = {}
        self._credited: set[tuple[bytes, int]] = set()
        self._outbox: dict[bytes, CrossShardUpdate] = {}
        self._in_flight: dict[int, bytes] = {}
        self._next_request_id = 1
        self._retry_armed = False
        genesis_balances = {bytes(account): balance for account, balance in (genesis or {}).items()}
        check_genesis(genesis_balances)
        for account, balance in genesis_balances.items():
            if self.owns(account):
                self.accounts[account] = AccountState(balance=balance)
        self.identity = IdentityRecord(
            bytes(keys.node_id),
            shard,
            shard_count,
            committee_digest(committee),
            genesis_digest(genesis_balances),
            network,
        )
        self._identity_persisted = False
        self._restore(storage or {})

    # -- identity and sharding

    @property
    def node_id(self) -> NodeId:
        """The authority's name (shared by all its shards)."""
        return self.keys.node_id

    def owns(self, account: bytes) -> bool:
        """True when `account` lives in this shard."""
        return shard_of(account, self.shard_count) == self.shard

    def account(self, account: bytes) -> AccountState:
        """The state of `account` (an unknown account has a zero balance)."""
        return self.accounts.get(bytes(account)) or AccountState(balance=0)

    @property
    def outbox(self) -> Mapping[bytes, CrossShardUpdate]:
        """Cross-shard updates not yet acknowledged by the recipient's shard."""
        return self._outbox

    # -- rebuilding

    def identity_records(self) -> list[Persist]:
        """The identity record, the first time it is asked for on a store that lacks it
        (a driver may write it before serving; `Started` emits it otherwise)."""
        if self._identity_persisted:
            return []
        self._identity_persisted = True
        return [Persist(_IDENTITY_KEY, _IDENTITY_CODEC.encode(self.identity))]

    def _check_identity(self, storage: Storage) -> None:
        raw = storage.get(_IDENTITY_KEY)
        if raw is None:
            return  # a new store (or one written before identities were recorded)
        found = _IDENTITY_CODEC.decode(raw)
        self._identity_persisted = found == self.identity
        if found.authority != self.identity.authority:
            raise StoreMismatch(
                f"these records belong to authority {node_id_text(found.authority)}, "
                f"not {node_id_text(self.identity.authority)}"
            )
        if (found.shard, found.shard_count) != (self.identity.shard, self.identity.shard_count):
            raise StoreMismatch(
                f"these records belong to shard {found.shard} of {found.shard_count}, "
                f"not {self.identity.shard} of {self.identity.shard_count}"
            )
        if found.committee_digest != self.identity.committee_digest:
            raise StoreMismatch("these records were made for another committee")
        if found.genesis_digest != self.identity.genesis_digest:
            raise StoreMismatch("these records were made for another genesis")
        if found.network != self.identity.network:
            raise StoreMismatch("these records were made for another network id")

    def _restore(self, storage: Storage) -> None:
        self._check_identity(storage)
        sent: list[tuple[bytes, int, CertifiedTransferOrder]] = []
        received: list[tuple[bytes, int, CertifiedTransferOrder]] = []
        for key, value in storage.items():
            if key.startswith(_ACCOUNT_PREFIX):
                record = _ACCOUNT_CODEC.decode(value)
                state = self._account_for_update(key[len(_ACCOUNT_PREFIX) :])
                state.balance = record.balance_value()
                state.next_sequence_number = record.next_sequence_number
                state.pending = record.pending
            elif key.startswith(_SENT_PREFIX):
                account, index = _split_sequence_key(key, _SENT_PREFIX)
                sent.append((account, index, _CERTIFICATE_CODEC.decode(value)))
            elif key.startswith(_RECEIVED_PREFIX):
                account, index = _split_sequence_key(key, _RECEIVED_PREFIX)
                received.append((account, index, _CERTIFICATE_CODEC.decode(value)))
            elif key.startswith(_OUTBOX_PREFIX):
                self._outbox[bytes(key)] = _UPDATE_CODEC.decode(value)
            elif not key.startswith(_FASTPAY_PREFIX):
                # another protocol's file given as --storage: serving it would mix the two
                kind = key.split(b"/", 1)[0][:20].decode("ascii", "replace")
                raise StoreMismatch(f"records of another kind ({kind}/...): not a FastPay store")
        for account, index, certificate in sorted(sent, key=lambda item: item[:2]):
            log = self._account_for_update(account).confirmed
            assert index == len(log), "sent certificates are persisted without gaps"
            log.append(certificate)
        for account, index, certificate in sorted(received, key=lambda item: item[:2]):
            log = self._account_for_update(account).received
            assert index == len(log), "received certificates are persisted without gaps"
            log.append(certificate)
            transfer = certificate.transfer
            self._credited.add((transfer.sender, transfer.sequence_number))

    def _account_for_update(self, account: bytes) -> AccountState:
        key = bytes(account)
        state = self.accounts.get(key)
        if state is None:
            state = self.accounts[key] = AccountState(balance=0)
        return state

    # -- the Core interface

    def handle(self, event: Input, now_ms: int) -> Step:
        """Process one input (see `synod.core`)."""
        if isinstance(event, RequestReceived):
            step = Step()
            reply = self.handle_request(event.body, step)
            step.outgoing.append(Reply(event.client, event.request_id, reply))
            return step
        if isinstance(event, Started):
            step = self._send_outbox(all_entries=True)
            step.persist.extend(self.identity_records())
            return step
        if isinstance(event, Response):
            return self._handle_cross_shard_response(event)
        if isinstance(event, CallFailed):
            return self._handle_cross_shard_failure(event)
        if isinstance(event, TimerFired) and event.name == CROSS_SHARD_RETRY_TIMER:
            self._retry_armed = False
            return self._send_outbox(all_entries=False)
        return Step()

    def handle_request(self, body: Any, step: Step) -> FastPayReply:
        """Answer one request, adding its persisted changes and calls to `step`."""
        request = body
        if isinstance(body, bytes | bytearray | memoryview):
            try:
                request = REQUEST_CODEC.decode(bytes(body))
            except DecodeError as error:
                return _error(ErrorKind.MALFORMED, str(error))
        if isinstance(request, TransferOrder):
            return self._handle_transfer_order(request, step)
        if isinstance(request, ConfirmationOrder):
            return self._handle_confirmation_order(request, step)
        if isinstance(request, AccountInfoRequest):
            return self._handle_account_info(request)
        if isinstance(request, CrossShardUpdate):
            return self._handle_cross_shard_update(request, step)
        return _error(ErrorKind.MALFORMED, f"not a FastPay request: {type(request).__name__}")

    # -- transfer orders

    def _handle_transfer_order(self, order: TransferOrder, step: Step) -> FastPayReply:
        refusal = _refuse_malformed_order(order, self.owns(order.transfer.sender), self.network)
        if refusal is not None:
            return refusal
        transfer = order.transfer
        account = self.account(transfer.sender)
        if account.pending is not None:
            return _answer_while_locked(account, account.pending, order)
        refusal = _refuse_unaffordable_order(account, order)
        if refusal is not None:
            return refusal
        vote = make_vote(self.keys, order, self.network)
        account = self._account_for_update(transfer.sender)
        account.pending = vote
        step.persist.append(Persist(_ACCOUNT_PREFIX + transfer.sender, account.record()))
        return vote

    # -- confirmation orders

    def _handle_confirmation_order(self, order: ConfirmationOrder, step: Step) -> FastPayReply:
        certificate = order.certificate
        transfer = certificate.transfer
        if not self.owns(transfer.sender):
            return _error(ErrorKind.WRONG_SHARD, "the sender lives in another shard")
        account = self.account(transfer.sender)
        # Sequence checks before signature checks: a replayed public certificate costs a
        # lookup, not 1 + quorum signature checks, and learns only public state.
        if transfer.sequence_number < account.next_sequence_number:
            return self._account_info(transfer.sender)  # already applied: a replay
        if transfer.sequence_number > account.next_sequence_number:
            return ErrorReply(
                kind=ErrorKind.MISSING_EARLIER_CONFIRMATIONS,
                detail="earlier certificates of this account must be confirmed first",
                expected_sequence_number=account.next_sequence_number,
            )
        problem = check_certificate(certificate, self.committee, self.network)
        if problem is not None:
            return _error(ErrorKind.BAD_CERTIFICATE, problem)
        new_balance = account.balance - transfer.amount
        if new_balance < MIN_BALANCE:
            return _error(ErrorKind.BALANCE_OUT_OF_RANGE, "the debit would underflow")
        account = self._account_for_update(transfer.sender)
        account.balance = new_balance
        account.next_sequence_number += 1
        account.pending = None
        account.confirmed.append(certificate)
        step.persist.append(
            Persist(
                _sequence_key(_SENT_PREFIX, transfer.sender, transfer.sequence_number),
                _CERTIFICATE_CODEC.encode(certificate),
            )
        )
        step.persist.append(Persist(_ACCOUNT_PREFIX + transfer.sender, account.record()))
        step.events.append(TransferApplied(transfer))
        if self.owns(transfer.recipient):
            self._credit(certificate, step)
        else:
            self._queue_cross_shard_update(certificate, step)
        return self._account_info(transfer.sender)

    def _credit(self, certificate: CertifiedTransferOrder, step: Step) -> None:
        """Credit the recipient once per (sender, sequence number)."""
        transfer = certificate.transfer
        key = (transfer.sender, transfer.sequence_number)
        if key in self._credited:
            return
        self._credited.add(key)
        account = self._account_for_update(transfer.recipient)
        # Applied in full: reaching MAX_BALANCE takes more than 2^64 certified credits of
        # at most 2^63-1 each (see the module docstring), so this is our invariant.
        assert account.balance + transfer.amount <= MAX_BALANCE, "128-bit balances exhausted"
        account.balance += transfer.amount
        step.persist.append(
            Persist(
                _sequence_key(_RECEIVED_PREFIX, transfer.recipient, len(account.received)),
                _CERTIFICATE_CODEC.encode(certificate),
            )
        )
        account.received.append(certificate)
        step.persist.append(Persist(_ACCOUNT_PREFIX + transfer.recipient, account.record()))
        step.events.append(TransferCredited(transfer))

    # -- cross-shard updates

    def _queue_cross_shard_update(self, certificate: CertifiedTransferOrder, step: Step) -> None:
        transfer = certificate.transfer
        update = CrossShardUpdate(
            certificate=certificate,
            authority=self.node_id,
            signature=self.keys.sign(
                in_network(CROSS_SHARD_DOMAIN, self.network), canonical_bytes(certificate)
            ),
        )
        key = _sequence_key(_OUTBOX_PREFIX, transfer.sender, transfer.sequence_number)
        self._outbox[key] = update
        step.persist.append(Persist(key, _UPDATE_CODEC.encode(update)))
        step.outgoing.append(self._call_for(key, update))

    def _call_for(self, key: bytes, update: CrossShardUpdate) -> Call:
        request_id = self._next_request_id
        self._next_request_id += 1
        self._in_flight[request_id] = key
        return Call(to=self.node_id, request_id=request_id, body=update)

    def _handle_cross_shard_update(self, update: CrossShardUpdate, step: Step) -> FastPayReply:
        certificate = update.certificate
        transfer = certificate.transfer
        if not self.owns(transfer.recipient):
            return _error(ErrorKind.WRONG_SHARD, "the recipient lives in another shard")
        if (transfer.sender, transfer.sequence_number) in self._credited:
            # Already credited: acknowledging costs nothing and changes nothing, so a
            # replayed update is answered before its signature is checked.
            return CrossShardAck(sender=transfer.sender, sequence_number=transfer.sequence_number)
        domain = in_network(CROSS_SHARD_DOMAIN, self.network)
        if update.authority != self.node_id or not verify(
            update.authority, domain, canonical_bytes(certificate), update.signature
        ):
            return _error(ErrorKind.BAD_SIGNATURE, "not signed by this authority")
        self._credit(certificate, step)
        return CrossShardAck(sender=transfer.sender, sequence_number=transfer.sequence_number)

    def _handle_cross_shard_response(self, event: Response) -> Step:
        step = Step()
        key = self._in_flight.pop(event.request_id, None)
        if key is None or key not in self._outbox:
            return step
        update = self._outbox[key]
        transfer = update.certificate.transfer
        body = _decode_reply(event.body)
        if isinstance(body, CrossShardAck) and (body.sender, body.sequence_number) == (
            transfer.sender,
            transfer.sequence_number,
        ):
            del self._outbox[key]
            step.persist.append(Persist(key, None))
            return step
        step.events.append(
            CrossShardRefused(NodeId(transfer.sender), transfer.sequence_number, body)
        )
        return self._arm_retry(step)

    def _handle_cross_shard_failure(self, event: CallFailed) -> Step:
        if self._in_flight.pop(event.request_id, None) is None:
            return Step()
        return self._arm_retry(Step())

    def _arm_retry(self, step: Step) -> Step:
        if not self._retry_armed:
            self._retry_armed = True
            step.timers.append(SetTimer(CROSS_SHARD_RETRY_TIMER, self.cross_shard_retry_ms))
        return step

    def _send_outbox(self, *, all_entries: bool) -> Step:
        step = Step()
        if all_entries:
            self._in_flight.clear()
        waiting = set(self._in_flight.values())
        for key in sorted(self._outbox):
            if key not in waiting:
                step.outgoing.append(self._call_for(key, self._outbox[key]))
        return step

    # -- account information

    def _handle_account_info(self, request: AccountInfoRequest) -> FastPayReply:
        if not self.owns(request.account):
            return _error(ErrorKind.WRONG_SHARD, "the account lives in another shard")
        account = self.account(request.account)
        requested = None
        if request.sequence_number is not None:
            if request.sequence_number >= len(account.confirmed):
                return _error(ErrorKind.CERTIFICATE_NOT_FOUND, "no such confirmed transfer")
            requested = account.confirmed[request.sequence_number]
        received: list[CertifiedTransferOrder] = []
        if request.received_from is not None:
            start = request.received_from
            received = account.received[start : start + MAX_RECEIVED_PER_RESPONSE]
        return self._account_info(request.account, requested, received)

    def _account_info(
        self,
        account_id: bytes,
        requested: CertifiedTransferOrder | None = None,
        received: Iterable[CertifiedTransferOrder] = (),
    ) -> AccountInfoResponse:
        account = self.account(account_id)
        return AccountInfoResponse(
            account=account_id,
            wide_balance=encode_balance(account.balance),
            next_sequence_number=account.next_sequence_number,
            pending=account.pending,
            requested_certificate=requested,
            received=list(received),
            received_count=len(account.received),
        )


def _split_sequence_key(key: bytes, prefix: bytes) -> tuple[bytes, int]:
    rest = key[len(prefix) :]
    (index,) = _INDEX.unpack(rest[-_INDEX.size :])
    return rest[: -_INDEX.size], int(index)


def _decode_reply(body: Any) -> Any:
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            return REPLY_CODEC.decode(bytes(body))
        except DecodeError:
            return None
    return body


def _error(kind: ErrorKind, detail: str) -> ErrorReply:
    return ErrorReply(kind=kind, detail=detail)


def _refuse_malformed_order(
    order: TransferOrder, in_shard: bool, network: bytes
) -> ErrorReply | None:
    """The checks that need no account state (reference order: shard, signature, amount)."""
    transfer = order.transfer
    if not in_shard:
        return _error(ErrorKind.WRONG_SHARD, "the sender lives in another shard")
    if not transfer_order_is_valid(order, network):
        return _error(ErrorKind.BAD_SIGNATURE, "not signed by the sender")
    if transfer.amount <= 0:
        return _error(ErrorKind.ZERO_AMOUNT, "the amount must be positive")
    if transfer.sequence_number > MAX_SEQUENCE_NUMBER:
        return _error(ErrorKind.INVALID_SEQUENCE_NUMBER, "sequence numbers are exhausted")
    return None


def _answer_while_locked(
    account: AccountState, pending: SignedTransferOrder, order: TransferOrder
) -> FastPayReply:
    """The lock: the pending order gets its vote again, any other order is refused."""
    assert pending.order.transfer.sequence_number == account.next_sequence_number
    if pending.order.transfer == order.transfer:
        return pending
    return ErrorReply(
        kind=ErrorKind.CONFLICTING_PENDING_ORDER,
        detail="another order is pending for this account",
        expected_sequence_number=account.next_sequence_number,
        pending=pending,
    )


def _refuse_unaffordable_order(account: AccountState, order: TransferOrder) -> ErrorReply | None:
    transfer = order.transfer
    if transfer.sequence_number != account.next_sequence_number:
        return ErrorReply(
            kind=ErrorKind.UNEXPECTED_SEQUENCE_NUMBER,
            detail="not the account's next sequence number",
            expected_sequence_number=account.next_sequence_number,
        )
    if account.balance < transfer.amount:
        return _error(ErrorKind.INSUFFICIENT_BALANCE, "the balance does not cover it")
    return None
