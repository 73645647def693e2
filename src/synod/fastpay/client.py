"""A FastPay account owner's client: an active, sans-I/O state machine (FastPay paper,
sections 3.2 and 4; reference `fastpay_core/src/client.rs`).

Theory of operation.  The client owns one account (its key is the account id).  It talks
to every authority of the committee with `Call`s and reads their `Response`s; a call that
gets no answer must come back as `CallFailed` (the driver's timeout).  One operation runs
at a time:

transfer
  1. Sign a `TransferOrder` for the next sequence number and persist it as *pending* in
     the same step that sends it: a client rebuilt after a crash finds it and can only
     send that same order again (`resume`), never sign a different one for the sequence
     number.  `transfer` refuses while an order is pending.
  2. Collect votes.  A vote counts when it is signed by the authority that was called and
     is for this very transfer.  When the voters' weight reaches the quorum threshold the
     votes form a certificate: it is persisted (sent log, sequence number, balance, no
     pending order) and reported as `TransferCertified`.  When authorities whose weight
     reaches the validity threshold refuse for the same reason (one of them is honest)
     the client stops early with `TransferFailed`, keeping the order pending.
  3. Push the certificate in a `ConfirmationOrder` to every authority until a quorum has
     applied it (`TransferConfirmed`).

Lagging authorities.  An authority that refuses an order or a confirmation because it
has not applied earlier transfers of the account (`UNEXPECTED_SEQUENCE_NUMBER`,
`CONFLICTING_PENDING_ORDER` for an older sequence number, `MISSING_EARLIER_CONFIRMATIONS`)
is brought up to date with the certificates it misses, one after the other, taken from
the client's sent log or fetched from the other authorities (`AccountInfoRequest` with a
sequence number), and then asked again, once.

receive
  A certificate that pays this account is checked, pushed to a quorum as a confirmation
  order (the recipient may confirm in the sender's place), then tracked in the received
  log and added to the known balance (`TransferReceived`).

Certified elsewhere.  Votes are public (authorities show the pending vote), so anyone
may assemble our order's certificate and confirm it.  An authority that answers our
order with `UNEXPECTED_SEQUENCE_NUMBER` beyond it has applied a certificate for our
sequence number: the client fetches that certificate from it and adopts it.  When it is
our order, the transfer is certified; when it is another order of this account (another
copy of the wallet), it is recorded, the pending order is dropped (it can never be
certified: a quorum voted for the other) and the transfer fails with that reason.

synchronize
  Push any certificate (and, through the catch-up above, the ones before it) to every
  authority, waiting for all answers rather than a quorum.

recover
  Rebuild the account's state from the authorities (the reference's received-certificate
  download): every authority is asked for the account, with its received certificates
  page by page (a page that brings no new valid certificate ends that authority's
  paging); then the certificates of our sequence numbers that some authority has
  applied and we lack are fetched one by one, each checked, from the authorities that
  claim them; a pending order of ours that authorities hold is adopted, so that `resume`
  can finish it; and the known balance becomes the one a quorum vouches for.  A wallet
  restored from its key alone is usable after this (`AccountRecovered`).

query
  Ask every authority about an account; report, as soon as a quorum answered, the
  highest balance and sequence number that a quorum vouches for (`AccountQueried`).

The known balance (`balance`) is the initial funding plus received minus sent transfers;
`transfer` refuses amounts above it unless told otherwise, so that an overspend cannot
leave the account locked by a pending order that will never be certified.
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
    LocalError,
    Persist,
    Proposed,
    Response,
    Step,
    Storage,
)
from synod.crypto import KeyPair, NodeId
from synod.fastpay.authority import check_certificate
from synod.fastpay.messages import (
    MAX_AMOUNT,
    MAX_RECEIVED_PER_RESPONSE,
    REPLY_CODEC,
    AccountInfoRequest,
    AccountInfoResponse,
    AuthoritySignature,
    CertifiedTransferOrder,
    ConfirmationOrder,
    ErrorKind,
    ErrorReply,
    FastPayRequest,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    certificate_key,
    make_transfer_order,
    transfer_order_is_valid,
    vote_is_valid,
)
from synod.quorum.committee import Committee
from synod.wire import Codec, DecodeError, Message

_STATE_KEY = b"fastpay-client/state"
_SENT_PREFIX = b"fastpay-client/sent/"
_RECEIVED_PREFIX = b"fastpay-client/received/"
_INDEX = struct.Struct(">Q")

_UNTIL_ALL_ANSWER = ("sync", "recover")
_BEHIND_ON_ORDER = (ErrorKind.UNEXPECTED_SEQUENCE_NUMBER, ErrorKind.CONFLICTING_PENDING_ORDER)


class InsufficientFunds(LocalError):
    """The amount exceeds the balance this client knows of."""


class Busy(LocalError):
    """Another operation of this client is still running."""


class PendingOrder(LocalError):
    """An order is pending: finish it with `resume` before signing another."""


# ---------------------------------------------------------------- commands and events


@dataclass(frozen=True, slots=True)
class Pay:
    """Command (as `Proposed(Pay(...))`): transfer `amount` to `recipient`."""

    recipient: bytes
    amount: int
    user_data: bytes | None = None
    check_balance: bool = True
    confirm: bool = True


@dataclass(frozen=True, slots=True)
class Resume:
    """Command: finish the pending order, or confirm the last certificate again."""


@dataclass(frozen=True, slots=True)
class Receive:
    """Command: confirm and track a certificate that pays this account."""

    certificate: CertifiedTransferOrder


@dataclass(frozen=True, slots=True)
class Query:
    """Command: ask every authority about `account` (this client's when None)."""

    account: bytes | None = None


@dataclass(frozen=True, slots=True)
class Recover:
    """Command: rebuild this account's state from the authorities (see `Client.recover`)."""


@dataclass(frozen=True, slots=True)
class Synchronize:
    """Command: confirm `certificate` (anyone's) at every authority that answers."""

    certificate: CertifiedTransferOrder


@dataclass(frozen=True, slots=True)
class Synchronized:
    """`certificate` is applied at the authorities in `authorities` (all that answered)."""

    certificate: CertifiedTransferOrder
    authorities: frozenset[NodeId]


@dataclass(frozen=True, slots=True)
class TransferCertified:
    """A quorum voted for our transfer; the certificate is persisted."""

    certificate: CertifiedTransferOrder


@dataclass(frozen=True, slots=True)
class TransferConfirmed:
    """A quorum of authorities applied the certificate."""

    certificate: CertifiedTransferOrder


@dataclass(frozen=True, slots=True)
class TransferFailed:
    """The operation on `sequence_number` stopped: `stage` is 'vote' or 'confirm'.

    After a failed vote the order stays pending (retry with `Resume`); `error` is the
    refusal that a validity-threshold weight of authorities agreed on, if any.
    """

    sequence_number: int
    stage: str
    reason: str
    error: ErrorReply | None = None


@dataclass(frozen=True, slots=True)
class TransferReceived:
    """A certificate paying us was applied by a quorum and counted in our balance."""

    certificate: CertifiedTransferOrder


@dataclass(frozen=True, slots=True)
class ReceiveFailed:
    """A received certificate could not be confirmed at a quorum."""

    certificate: CertifiedTransferOrder
    reason: str
    error: ErrorReply | None = None


@dataclass(frozen=True, slots=True)
class AccountRecovered:
    """What `recover` learnt: certificates of ours and payments to us that the wallet
    lacked, the pending order it adopted, and the resulting state."""

    sent: tuple[CertifiedTransferOrder, ...]
    received: tuple[CertifiedTransferOrder, ...]
    adopted_pending: TransferOrder | None
    next_sequence_number: int
    balance: int
    answered: frozenset[NodeId]


@dataclass(frozen=True, slots=True)
class AccountQueried:
    """Answers about `account`: the highest balance and sequence number vouched for by a
    quorum (None without a quorum of answers), and every answer by authority."""

    account: NodeId
    balance: int | None
    next_sequence_number: int | None
    responses: Mapping[NodeId, AccountInfoResponse]


# ---------------------------------------------------------------- persisted state


class ClientRecord(Message, frozen=True):
    """The client's persisted summary; certificates are separate records.

    `confirmed`: how many of our certificates a quorum is known to have applied (None in
    records written before it was kept: all of them).
    """

    next_sequence_number: int
    balance: int
    pending: TransferOrder | None = None
    confirmed: int | None = None


_RECORD_CODEC: Codec[ClientRecord] = Codec(ClientRecord)
_CERTIFICATE_CODEC: Codec[CertifiedTransferOrder] = Codec(CertifiedTransferOrder)


def strong_majority_lower_bound(values: Mapping[NodeId, int], committee: Committee) -> int | None:
    """The highest v such that authorities reporting at least v reach the quorum weight."""
    weight = 0
    for name, value in sorted(values.items(), key=lambda item: -item[1]):
        weight += committee.weight(name)
        if weight >= committee.quorum_threshold:
            return value
    return None


# ---------------------------------------------------------------- operations


@dataclass
class _Lane:
    """The conversation with one authority within an operation."""

    authority: NodeId
    done: bool = False
    caught_up: bool = False
    fetch_candidates: list[NodeId] = field(default_factory=list)
    received_from: int = 0  # recover: the next page of received certificates to ask


@dataclass
class _Operation:
    kind: str  # "vote", "confirm", "receive", "sync" or "query"
    account: NodeId  # the account whose certificates the lanes push
    main: FastPayRequest  # what each lane is finally meant to get answered
    target: int  # the sequence number of `main` (unused for queries)
    lanes: dict[NodeId, _Lane]
    succeeded: dict[NodeId, Any] = field(default_factory=dict)
    refusals: dict[tuple[ErrorKind, int | None], dict[NodeId, ErrorReply]] = field(
        default_factory=dict
    )
    unanswered: set[NodeId] = field(default_factory=set)
    """Authorities whose lane ended without a usable answer (unreachable, timed out,
    or an answer that did not check out)."""
    # recover: valid certificates paying us, then ours fetched in the second phase.
    received: dict[tuple[NodeId, int], CertifiedTransferOrder] = field(default_factory=dict)
    fetched: list[CertifiedTransferOrder] = field(default_factory=list)
    candidates: list[NodeId] = field(default_factory=list)


def _not_enough(operation: _Operation) -> str:
    """Why a quorum can no longer accept, counted by what each authority did, so that a
    user can tell a committee that refused from one that is down."""
    refused = sum(len(agreeing) for agreeing in operation.refusals.values())
    waiting = sum(not lane.done for lane in operation.lanes.values())
    return (
        f"not enough authorities accepted ({len(operation.succeeded)} accepted, {refused} "
        f"refused, {len(operation.unanswered)} gave no usable answer, {waiting} not "
        f"waited for, of {len(operation.lanes)})"
    )


class Client:
    """The sans-I/O client of one FastPay account (a `synod.core.Core`).

    `balance` is the initial funding the owner knows of; it is used only when `storage`
    is empty (a new wallet).  `network` is the committee's network id: the signature
    domains of orders, votes and certificates (`synod.crypto.in_network`).
    """

    def __init__(
        self,
        keys: KeyPair,
        committee: Committee,
        *,
        balance: int = 0,
        storage: Storage | None = None,
        network: bytes = b"",
    ) -> None:
        self.keys = keys
        self.committee = committee
        self.network = network
        self.next_sequence_number = 0
        self.balance = balance
        self.pending: TransferOrder | None = None
        self.confirmed: int | None = None
        self.sent: list[CertifiedTransferOrder] = []
        self.received: dict[tuple[NodeId, int], CertifiedTransferOrder] = {}
        self._known: dict[tuple[NodeId, int], CertifiedTransferOrder] = {}
        self._operation: _Operation | None = None
        self._requests: dict[int, tuple[NodeId, str, int]] = {}
        self._next_request_id = 1
        self._confirm_after_vote = True
        self._restore(storage or {})

    # -- identity and state

    @property
    def node_id(self) -> NodeId:
        """The account id (the owner's public key)."""
        return self.keys.node_id

    @property
    def busy(self) -> bool:
        """True while an operation is running."""
        return self._operation is not None

    def _restore(self, storage: Storage) -> None:
        raw = storage.get(_STATE_KEY)
        if raw is None:
            self.confirmed = 0  # a new wallet: confirmations are counted from the start
        else:
            record = _RECORD_CODEC.decode(raw)
            self.next_sequence_number = record.next_sequence_number
            self.balance = record.balance
            self.pending = record.pending
            self.confirmed = record.confirmed
        sent: list[tuple[int, CertifiedTransferOrder]] = []
        for key, value in storage.items():
            if key.startswith(_SENT_PREFIX):
                suffix = key[len(_SENT_PREFIX) :]
                if len(suffix) != _INDEX.size:
                    # records come from a file a person may edit: a typed error, not struct's
                    raise ValueError(f"a sent record's index has {len(suffix)} bytes, not 8")
                (index,) = _INDEX.unpack(suffix)
                sent.append((int(index), _CERTIFICATE_CODEC.decode(value)))
            elif key.startswith(_RECEIVED_PREFIX):
                certificate = _CERTIFICATE_CODEC.decode(value)
                self.received[certificate_key(certificate)] = certificate
        sent.sort(key=lambda item: item[0])
        self.sent = [certificate for _, certificate in sent]
        assert [index for index, _ in sent] == list(range(len(sent)))
        assert len(self.sent) == self.next_sequence_number, "one certificate per sequence number"
        for certificate in self.sent:
            self._known[certificate_key(certificate)] = certificate

    def _record(self) -> Persist:
        record = ClientRecord(
            self.next_sequence_number, self.balance, self.pending, self.confirmed
        )
        return Persist(_STATE_KEY, _RECORD_CODEC.encode(record))

    # -- commands

    def transfer(
        self,
        recipient: bytes,
        amount: int,
        user_data: bytes | None = None,
        *,
        check_balance: bool = True,
        confirm: bool = True,
    ) -> Step:
        """Sign and send a transfer of `amount` to `recipient` (see the module docstring)."""
        self._require_idle()
        if self.pending is not None:
            raise PendingOrder("an order is pending; resume it before signing another")
        if not 0 < amount <= MAX_AMOUNT:
            raise LocalError(f"the amount must be within 1..{MAX_AMOUNT}, got {amount}")
        if check_balance and amount > self.balance:
            raise InsufficientFunds(f"amount {amount} exceeds the known balance {self.balance}")
        transfer = Transfer(
            sender=self.node_id,
            recipient=bytes(recipient),
            amount=amount,
            sequence_number=self.next_sequence_number,
            user_data=user_data,
        )
        self.pending = make_transfer_order(self.keys, transfer, self.network)
        self._confirm_after_vote = confirm
        step = Step()
        step.persist.append(self._record())
        return self._start(step, "vote", self.node_id, self.pending, transfer.sequence_number)

    def resume(self, *, confirm: bool = True) -> Step:
        """Send the pending order again, or else confirm the last certificate again."""
        self._require_idle()
        if self.pending is not None:
            self._confirm_after_vote = confirm
            order = self.pending
            return self._start(Step(), "vote", self.node_id, order, order.transfer.sequence_number)
        if not self.sent:
            return Step()
        return self._start_confirmation(Step(), "confirm", self.sent[-1])

    def receive(self, certificate: CertifiedTransferOrder) -> Step:
        """Confirm `certificate` (which must pay this account) at a quorum and track it."""
        self._require_idle()
        problem = check_certificate(certificate, self.committee, self.network)
        if problem is not None:
            raise LocalError(f"not a valid certificate: {problem}")
        if certificate.transfer.recipient != self.node_id:
            raise LocalError("this certificate pays another account")
        self._known[certificate_key(certificate)] = certificate
        return self._start_confirmation(Step(), "receive", certificate)

    def synchronize(self, certificate: CertifiedTransferOrder) -> Step:
        """Bring every authority up to date with `certificate` and the ones before it.

        Unlike a transfer, this does not stop at a quorum: it is how a recipient (or a
        helpful third party) makes sure that lagging authorities apply a payment.
        """
        self._require_idle()
        problem = check_certificate(certificate, self.committee, self.network)
        if problem is not None:
            raise LocalError(f"not a valid certificate: {problem}")
        self._known[certificate_key(certificate)] = certificate
        return self._start_confirmation(Step(), "sync", certificate)

    def recover(self) -> Step:
        """Rebuild this account's state from the authorities (see the module docstring)."""
        self._require_idle()
        request = AccountInfoRequest(account=self.node_id, received_from=0)
        return self._start(Step(), "recover", self.node_id, request, 0)

    def query(self, account: bytes | None = None) -> Step:
        """Ask every authority about `account` (default: this client's account)."""
        self._require_idle()
        target = NodeId(bytes(account)) if account is not None else self.node_id
        return self._start(Step(), "query", target, AccountInfoRequest(account=target), 0)

    def _require_idle(self) -> None:
        if self._operation is not None:
            raise Busy(f"a {self._operation.kind} operation is still running")

    # -- the Core interface

    def handle(self, event: Input, now_ms: int) -> Step:
        """Process one input (see `synod.core`)."""
        if isinstance(event, Response):
            return self._on_reply(event.request_id, event.body)
        if isinstance(event, CallFailed):
            return self._on_reply(event.request_id, None)
        if isinstance(event, Proposed):
            return self._on_command(event.value)
        return Step()

    def _on_command(self, command: Any) -> Step:
        if isinstance(command, Pay):
            return self.transfer(
                command.recipient,
                command.amount,
                command.user_data,
                check_balance=command.check_balance,
                confirm=command.confirm,
            )
        if isinstance(command, Resume):
            return self.resume()
        if isinstance(command, Receive):
            return self.receive(command.certificate)
        if isinstance(command, Query):
            return self.query(command.account)
        if isinstance(command, Synchronize):
            return self.synchronize(command.certificate)
        if isinstance(command, Recover):
            return self.recover()
        raise LocalError(f"unknown FastPay client command {command!r}")

    # -- running an operation

    def _start(
        self, step: Step, kind: str, account: NodeId, main: FastPayRequest, target: int
    ) -> Step:
        members = self.committee.members
        lanes = {}
        for position, name in enumerate(members):
            others = members[position + 1 :] + members[:position]
            lanes[name] = _Lane(authority=name, fetch_candidates=others)
        self._operation = _Operation(kind, account, main, target, lanes)
        for lane in lanes.values():
            self._call(step, lane.authority, "main", target, main)
        return step

    def _start_confirmation(
        self, step: Step, kind: str, certificate: CertifiedTransferOrder
    ) -> Step:
        sender, sequence_number = certificate_key(certificate)
        return self._start(step, kind, sender, ConfirmationOrder(certificate), sequence_number)

    def _call(
        self,
        step: Step,
        lane: NodeId,
        purpose: str,
        sequence_number: int,
        body: Any,
        *,
        to: NodeId | None = None,
    ) -> None:
        request_id = self._next_request_id
        self._next_request_id += 1
        self._requests[request_id] = (lane, purpose, sequence_number)
        step.outgoing.append(Call(to=to or lane, request_id=request_id, body=body))

    def _on_reply(self, request_id: int, body: Any) -> Step:
        step = Step()
        entry = self._requests.pop(request_id, None)
        operation = self._operation
        if entry is None or operation is None:
            return step  # a late answer to a finished operation
        lane_name, purpose, sequence_number = entry
        if purpose == "history":  # recover's second phase, after every lane is done
            self._on_history_reply(step, operation, sequence_number, _decode_reply(body))
            return step
        lane = operation.lanes[lane_name]
        if lane.done:
            return step
        reply = _decode_reply(body)
        if purpose == "main" and operation.kind == "recover":
            self._on_recover_reply(step, operation, lane, reply)
        elif purpose == "main":
            self._on_main_reply(step, operation, lane, reply)
        elif purpose == "adopt":
            self._on_adopt_reply(step, operation, lane, reply)
        elif purpose == "push":
            self._on_push_reply(step, operation, lane, sequence_number, reply)
        else:
            self._on_fetch_reply(step, operation, lane, sequence_number, reply)
        return step

    def _on_main_reply(self, step: Step, operation: _Operation, lane: _Lane, reply: Any) -> None:
        if self._is_success(operation, lane, reply):
            self._lane_succeeded(step, operation, lane, reply)
            return
        behind = self._behind_at(operation, reply)
        if behind is not None and not lane.caught_up:
            lane.caught_up = True
            self._catch_up(step, operation, lane, behind)
            return
        if self._applied_beyond(operation, reply) and not lane.caught_up:
            # This authority applied a certificate for our sequence number: fetch it.
            lane.caught_up = True
            request = AccountInfoRequest(account=self.node_id, sequence_number=operation.target)
            self._call(step, lane.authority, "adopt", operation.target, request)
            return
        self._lane_failed(step, operation, lane, reply)

    @staticmethod
    def _applied_beyond(operation: _Operation, reply: Any) -> bool:
        return (
            operation.kind == "vote"
            and isinstance(reply, ErrorReply)
            and reply.kind is ErrorKind.UNEXPECTED_SEQUENCE_NUMBER
            and reply.expected_sequence_number is not None
            and reply.expected_sequence_number > operation.target
        )

    def _on_adopt_reply(self, step: Step, operation: _Operation, lane: _Lane, reply: Any) -> None:
        certificate = self._our_certificate(reply, operation.target)
        if certificate is None:
            self._lane_failed(step, operation, lane, None)
            return
        assert isinstance(operation.main, TransferOrder)
        self._end()
        self._record_certificate(step, certificate)
        if certificate.transfer == operation.main.transfer:
            step.events.append(TransferCertified(certificate))
            if self._confirm_after_vote:
                self._start_confirmation(step, "confirm", certificate)
            return
        step.events.append(
            TransferFailed(
                operation.target,
                "vote",
                "this sequence number was used by another order of this account "
                "(another copy of the wallet?); that order is recorded and this one dropped",
            )
        )

    def _our_certificate(self, reply: Any, sequence_number: int) -> CertifiedTransferOrder | None:
        """The valid certificate of our `sequence_number` that `reply` carries, if any."""
        certificate = (
            reply.requested_certificate if isinstance(reply, AccountInfoResponse) else None
        )
        if certificate is None or certificate_key(certificate) != (self.node_id, sequence_number):
            return None
        if check_certificate(certificate, self.committee, self.network) is not None:
            return None
        return certificate

    # -- recover

    def _on_recover_reply(
        self, step: Step, operation: _Operation, lane: _Lane, reply: Any
    ) -> None:
        if not isinstance(reply, AccountInfoResponse) or reply.account != self.node_id:
            self._lane_failed(step, operation, lane, reply)
            return
        new = 0
        for certificate in reply.received[:MAX_RECEIVED_PER_RESPONSE]:
            key = certificate_key(certificate)
            if key in operation.received or key in self.received:
                continue
            if certificate.transfer.recipient != self.node_id:
                continue
            if check_certificate(certificate, self.committee, self.network) is None:
                operation.received[key] = certificate
                new += 1
        lane.received_from += len(reply.received)
        # A page that brings nothing new ends the paging: an authority cannot keep us
        # fetching with made-up counts or replayed pages.
        if reply.received and new and lane.received_from < reply.received_count:
            request = AccountInfoRequest(account=self.node_id, received_from=lane.received_from)
            self._call(step, lane.authority, "main", 0, request)
            return
        self._lane_succeeded(step, operation, lane, reply)

    def _recover_history(self, step: Step, operation: _Operation) -> None:
        """Phase two: fetch our certificates that authorities applied and we lack."""
        wanted = self.next_sequence_number + len(operation.fetched)
        operation.candidates = [
            name
            for name, info in sorted(operation.succeeded.items())
            if info.next_sequence_number > wanted
        ]
        self._fetch_history(step, operation, wanted)

    def _fetch_history(self, step: Step, operation: _Operation, sequence_number: int) -> None:
        if not operation.candidates:
            self._finish_recover(step, operation)
            return
        source = operation.candidates.pop(0)
        request = AccountInfoRequest(account=self.node_id, sequence_number=sequence_number)
        self._call(step, source, "history", sequence_number, request)

    def _on_history_reply(
        self, step: Step, operation: _Operation, sequence_number: int, reply: Any
    ) -> None:
        certificate = self._our_certificate(reply, sequence_number)
        if certificate is None:
            self._fetch_history(step, operation, sequence_number)  # the next candidate
            return
        operation.fetched.append(certificate)
        self._recover_history(step, operation)

    def _finish_recover(self, step: Step, operation: _Operation) -> None:
        self._end()
        for certificate in operation.fetched:
            self._record_certificate(step, certificate)
        if operation.fetched:
            # Applied by an authority, made by a wallet we no longer have: not ours to
            # mistake for a payment retried (`unconfirmed`).
            self.confirmed = len(self.sent)
        for key, certificate in sorted(operation.received.items()):
            if key not in self.received:
                self.received[key] = certificate
                self.balance += certificate.transfer.amount
                step.persist.append(_received_record(certificate))
        responses: dict[NodeId, AccountInfoResponse] = dict(operation.succeeded)
        adopted = self._adopt_pending(responses)
        balances = {name: info.balance for name, info in responses.items()}
        vouched = strong_majority_lower_bound(balances, self.committee)
        if vouched is not None:
            # What a quorum holds beats our sum: it includes the genesis funding that a
            # wallet restored from its key alone does not know.
            self.balance = vouched
        step.persist.append(self._record())
        step.events.append(
            AccountRecovered(
                tuple(operation.fetched),
                tuple(certificate for _, certificate in sorted(operation.received.items())),
                adopted,
                self.next_sequence_number,
                self.balance,
                frozenset(responses),
            )
        )

    def _adopt_pending(
        self, responses: Mapping[NodeId, AccountInfoResponse]
    ) -> TransferOrder | None:
        """Our order that authorities hold a vote for at our next sequence number (the
        one with the most weight), when we have none pending: `resume` can finish it."""
        if self.pending is not None:
            return None
        weights: dict[TransferOrder, int] = {}
        for name, info in responses.items():
            vote = info.pending
            if vote is None or vote.order.transfer.sender != self.node_id:
                continue
            if vote.order.transfer.sequence_number != self.next_sequence_number:
                continue
            weights[vote.order] = weights.get(vote.order, 0) + self.committee.weight(name)
        for order, _ in sorted(weights.items(), key=lambda item: -item[1]):
            if transfer_order_is_valid(order, self.network):
                self.pending = order
                return order
        return None

    def _is_success(self, operation: _Operation, lane: _Lane, reply: Any) -> bool:
        if operation.kind == "vote":
            assert isinstance(operation.main, TransferOrder)
            return (
                isinstance(reply, SignedTransferOrder)
                and reply.authority == lane.authority
                and reply.order.transfer == operation.main.transfer
                and vote_is_valid(reply, self.network)
            )
        if not isinstance(reply, AccountInfoResponse) or reply.account != operation.account:
            return False
        if operation.kind == "query":
            return True
        return reply.next_sequence_number > operation.target

    def _behind_at(self, operation: _Operation, reply: Any) -> int | None:
        """The first sequence number the authority misses, when that blocks `main`."""
        if not isinstance(reply, ErrorReply) or reply.expected_sequence_number is None:
            return None
        expected = reply.expected_sequence_number
        if expected >= operation.target:
            return None
        if operation.kind == "vote" and reply.kind in _BEHIND_ON_ORDER:
            return expected
        if operation.kind != "vote" and reply.kind is ErrorKind.MISSING_EARLIER_CONFIRMATIONS:
            return expected
        return None

    def _catch_up(self, step: Step, operation: _Operation, lane: _Lane, first: int) -> None:
        """Give the authority certificate `first` (then the next ones), then `main`."""
        if first >= operation.target:
            self._call(step, lane.authority, "main", operation.target, operation.main)
            return
        certificate = self._known.get((operation.account, first))
        if certificate is not None:
            order = ConfirmationOrder(certificate)
            self._call(step, lane.authority, "push", first, order)
        else:
            self._fetch(step, operation, lane, first)

    def _on_push_reply(
        self, step: Step, operation: _Operation, lane: _Lane, sequence_number: int, reply: Any
    ) -> None:
        if (
            isinstance(reply, AccountInfoResponse)
            and reply.account == operation.account
            and reply.next_sequence_number > sequence_number
        ):
            self._catch_up(step, operation, lane, reply.next_sequence_number)
        else:
            self._lane_failed(step, operation, lane, reply)

    def _fetch(self, step: Step, operation: _Operation, lane: _Lane, sequence_number: int) -> None:
        if not lane.fetch_candidates:
            self._lane_failed(step, operation, lane, None)
            return
        source = lane.fetch_candidates.pop(0)
        request = AccountInfoRequest(account=operation.account, sequence_number=sequence_number)
        self._call(step, lane.authority, "fetch", sequence_number, request, to=source)

    def _on_fetch_reply(
        self, step: Step, operation: _Operation, lane: _Lane, sequence_number: int, reply: Any
    ) -> None:
        certificate = (
            reply.requested_certificate if isinstance(reply, AccountInfoResponse) else None
        )
        if (
            certificate is not None
            and certificate_key(certificate) == (operation.account, sequence_number)
            and check_certificate(certificate, self.committee, self.network) is None
        ):
            self._known[(operation.account, sequence_number)] = certificate
            self._call(
                step, lane.authority, "push", sequence_number, ConfirmationOrder(certificate)
            )
        else:
            self._fetch(step, operation, lane, sequence_number)

    def _lane_succeeded(self, step: Step, operation: _Operation, lane: _Lane, reply: Any) -> None:
        lane.done = True
        operation.succeeded[lane.authority] = reply
        if operation.kind in _UNTIL_ALL_ANSWER:
            self._finish_when_all_answered(step, operation)
        elif operation.kind == "query":
            if self._query_settled(operation):
                self._finish_query(step, operation)
        elif self.committee.reaches_quorum(operation.succeeded):
            self._succeed(step, operation)

    def _lane_failed(self, step: Step, operation: _Operation, lane: _Lane, reply: Any) -> None:
        lane.done = True
        if not isinstance(reply, ErrorReply):
            operation.unanswered.add(lane.authority)
        if isinstance(reply, ErrorReply):
            agreeing = operation.refusals.setdefault(reply.agreement_key(), {})
            agreeing[lane.authority] = reply
            if operation.kind not in (
                *_UNTIL_ALL_ANSWER,
                "query",
            ) and self.committee.reaches_validity(
                agreeing
            ):
                self._fail(step, operation, f"authorities refused: {reply.kind.value}", reply)
                return
        if operation.kind in _UNTIL_ALL_ANSWER:
            self._finish_when_all_answered(step, operation)
            return
        open_lanes = [name for name, other in operation.lanes.items() if not other.done]
        if operation.kind == "query":
            if not open_lanes or self._query_settled(operation):
                self._finish_query(step, operation)
        elif not self.committee.reaches_quorum([*operation.succeeded, *open_lanes]):
            self._fail(step, operation, _not_enough(operation), None)

    # -- outcomes

    def _end(self) -> None:
        self._operation = None
        self._requests.clear()

    def _succeed(self, step: Step, operation: _Operation) -> None:
        self._end()
        if operation.kind == "vote":
            certificate = self._make_certificate(operation)
            self._record_certificate(step, certificate)
            step.events.append(TransferCertified(certificate))
            if self._confirm_after_vote:
                self._start_confirmation(step, "confirm", certificate)
        elif operation.kind == "confirm":
            assert isinstance(operation.main, ConfirmationOrder)
            self._mark_confirmed(step, operation.target)
            step.events.append(TransferConfirmed(operation.main.certificate))
        elif operation.kind == "receive":
            assert isinstance(operation.main, ConfirmationOrder)
            self._record_received(step, operation.main.certificate)

    def _fail(
        self, step: Step, operation: _Operation, reason: str, error: ErrorReply | None
    ) -> None:
        self._end()
        if operation.kind == "receive":
            assert isinstance(operation.main, ConfirmationOrder)
            step.events.append(ReceiveFailed(operation.main.certificate, reason, error))
        else:
            stage = "vote" if operation.kind == "vote" else "confirm"
            step.events.append(TransferFailed(operation.target, stage, reason, error))

    def _finish_when_all_answered(self, step: Step, operation: _Operation) -> None:
        if operation.kind == "recover" and self._recover_settled(operation):
            for lane in operation.lanes.values():
                lane.done = True  # late answers are ignored from here on
            self._recover_history(step, operation)
            return
        if not all(lane.done for lane in operation.lanes.values()):
            return
        self._end()
        assert isinstance(operation.main, ConfirmationOrder)
        applied = frozenset(operation.succeeded)
        step.events.append(Synchronized(operation.main.certificate, applied))

    def _recover_settled(self, operation: _Operation) -> bool:
        """Every authority answered, or a quorum did and they all tell the same story
        (sequence number, pending vote, received count, balance): an authority that is
        down then has nothing to add that the next recovery would not find."""
        if all(lane.done for lane in operation.lanes.values()):
            return True
        responses: dict[NodeId, AccountInfoResponse] = operation.succeeded
        if not self.committee.reaches_quorum(responses):
            return False
        stories = {
            (info.next_sequence_number, info.pending, info.received_count, info.wide_balance)
            for info in responses.values()
        }
        return len(stories) == 1

    def _query_settled(self, operation: _Operation) -> bool:
        """True when no answer still to come can change the query's result.

        More answers can only raise what a quorum vouches for; if the open authorities
        answering "more than anyone" would not raise it either, the result is final, so
        a query does not wait for an authority that is down once the others agree.
        """
        open_lanes = [name for name, lane in operation.lanes.items() if not lane.done]
        if not open_lanes:
            return True
        responses: dict[NodeId, AccountInfoResponse] = operation.succeeded
        for field_of in (_balance_of, _sequence_number_of):
            values = {name: field_of(info) for name, info in responses.items()}
            now = strong_majority_lower_bound(values, self.committee)
            if now is None:
                return False
            ceiling = max(values.values()) + 1
            optimistic = {**values, **dict.fromkeys(open_lanes, ceiling)}
            if strong_majority_lower_bound(optimistic, self.committee) != now:
                return False
        return True

    def _finish_query(self, step: Step, operation: _Operation) -> None:
        self._end()
        responses: dict[NodeId, AccountInfoResponse] = dict(operation.succeeded)
        balances = {name: info.balance for name, info in responses.items()}
        numbers = {name: info.next_sequence_number for name, info in responses.items()}
        step.events.append(
            AccountQueried(
                operation.account,
                strong_majority_lower_bound(balances, self.committee),
                strong_majority_lower_bound(numbers, self.committee),
                responses,
            )
        )

    def _make_certificate(self, operation: _Operation) -> CertifiedTransferOrder:
        assert isinstance(operation.main, TransferOrder)
        signatures = [
            AuthoritySignature(authority=name, signature=vote.signature)
            for name, vote in sorted(operation.succeeded.items())
        ]
        certificate = CertifiedTransferOrder(order=operation.main, signatures=signatures)
        # Each vote was verified when it arrived (`_is_success`); checking the signatures
        # again here would double the client's crypto work per transfer.
        assert self.committee.reaches_quorum(operation.succeeded)
        return certificate

    def _record_certificate(self, step: Step, certificate: CertifiedTransferOrder) -> None:
        """Record our certificate for the next sequence number (the pending order, or
        one adopted from the authorities: either way the sequence number is used)."""
        transfer = certificate.transfer
        assert transfer.sequence_number == self.next_sequence_number == len(self.sent)
        self.sent.append(certificate)
        self._known[certificate_key(certificate)] = certificate
        self.next_sequence_number += 1
        self.pending = None
        if transfer.recipient == self.node_id:
            self.received[certificate_key(certificate)] = certificate
            step.persist.append(_received_record(certificate))
        else:
            self.balance -= transfer.amount
        step.persist.append(
            Persist(
                _SENT_PREFIX + _INDEX.pack(transfer.sequence_number),
                _CERTIFICATE_CODEC.encode(certificate),
            )
        )
        step.persist.append(self._record())

    def _record_received(self, step: Step, certificate: CertifiedTransferOrder) -> None:
        key = certificate_key(certificate)
        if key not in self.received:
            self.received[key] = certificate
            self.balance += certificate.transfer.amount
            step.persist.append(_received_record(certificate))
            step.persist.append(self._record())
        step.events.append(TransferReceived(certificate))

    def _mark_confirmed(self, step: Step, sequence_number: int) -> None:
        # Sequence numbers are confirmed in order: a quorum applied this one, so also
        # every one before it.
        if self.confirmed is not None and self.confirmed > sequence_number:
            return
        self.confirmed = sequence_number + 1
        step.persist.append(self._record())

    # -- inspection

    @property
    def unconfirmed(self) -> CertifiedTransferOrder | None:
        """Our last certificate when no quorum is known to have applied it (the client
        stopped between certifying and confirming); `resume` confirms it."""
        if self.confirmed is None or self.confirmed >= len(self.sent) or not self.sent:
            return None
        return self.sent[-1]

    def sent_certificates(self) -> list[CertifiedTransferOrder]:
        """Our certificates, one per sequence number from 0."""
        return list(self.sent)

    def received_certificates(self) -> Iterable[CertifiedTransferOrder]:
        """Certificates paying us that we confirmed and counted."""
        return list(self.received.values())


def _balance_of(info: AccountInfoResponse) -> int:
    return info.balance


def _sequence_number_of(info: AccountInfoResponse) -> int:
    return info.next_sequence_number


def _received_record(certificate: CertifiedTransferOrder) -> Persist:
    sender, sequence_number = certificate_key(certificate)
    key = _RECEIVED_PREFIX + sender + _INDEX.pack(sequence_number)
    return Persist(key, _CERTIFICATE_CODEC.encode(certificate))


def _decode_reply(body: Any) -> Any:
    """Decode a reply that arrives as bytes; garbage becomes None (no answer)."""
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            return REPLY_CODEC.decode(bytes(body))
        except DecodeError:
            return None
    return body
