"""FastPay wire messages (FastPay paper, section 3; reference `fastpay_core/src/messages.rs`).

Theory of operation.  An account is identified by its owner's Ed25519 public key.  To pay,
the owner signs a `Transfer` (sender, recipient, amount, sequence number, optional user
data) into a `TransferOrder` and sends it to every authority.  An authority that accepts
it answers with a `SignedTransferOrder`: its vote, a signature over the same transfer.
Votes from distinct committee members whose weights reach the quorum threshold form a
`CertifiedTransferOrder`; anyone may then send it inside a `ConfirmationOrder`, upon which
each authority debits the sender and credits the recipient, directly when the recipient
lives in the same shard and through a `CrossShardUpdate` to the recipient's shard
otherwise.  `AccountInfoRequest`/`AccountInfoResponse` let clients read an account and
fetch the certificates that lagging authorities miss.  Refusals travel as `ErrorReply`,
whose `kind` (and `expected_sequence_number`) are equal at every honest authority that
refuses for the same reason, so that a client can stop once a validity-threshold weight of
authorities agrees on an error.

Every signature is over a domain tag plus canonical bytes:

- the sender signs `canonical_bytes(transfer)` under `TRANSFER_ORDER_DOMAIN`;
- an authority votes by signing `canonical_bytes(transfer)` under `VOTE_DOMAIN`;
- an authority's shard vouches for a cross-shard update by signing
  `canonical_bytes(certificate)` under `CROSS_SHARD_DOMAIN`, so that the receiving shard
  of the same authority can apply it without checking the whole certificate again.

Each domain is taken for one network (`synod.crypto.in_network(domain, network)`, the
committee file's `network_id`): an order, vote or certificate made for one network is
refused by the authorities of another, even when keys are reused across them.  The
empty network id keeps the tags above unchanged.

Every integer and container that a peer fills is bounded.  Balances are signed 128-bit
integers, as in the reference (`i128`), carried as 16 big-endian bytes because MessagePack
integers stop at 64 bits.  The genesis supply is at most `MAX_SUPPLY` (2^63-1), so an
account's true balance always fits an amount; an authority that is behind may still hold
more or less than that for an account (credits applied before the debits they fund, or a
certified debit before the credits that funded it: the reference does the same).  Reaching
2^127 that way takes more than 2^64 certified transfers, so every credit is applied in
full and no money is ever clamped away.

Requests go to one shard of an authority: `request_shard` says which, so that drivers
(`synod.runtime`, the simulator, tests) route a `Call` addressed to an authority's node id.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from typing import Annotated

import msgspec

from synod.crypto import KeyPair, NodeId, blake2b, in_network, verify
from synod.wire import Bytes32, Codec, Message, Signature, canonical_bytes

TRANSFER_ORDER_DOMAIN = b"synod/fastpay/transfer-order"
VOTE_DOMAIN = b"synod/fastpay/vote"
CROSS_SHARD_DOMAIN = b"synod/fastpay/cross-shard-update"

MAX_AMOUNT = 2**63 - 1
"""Largest amount a transfer may carry."""
MAX_SUPPLY = 2**63 - 1
"""Largest total of the genesis balances: every true balance then fits one transfer."""
MAX_BALANCE = 2**127 - 1
"""Largest balance an authority keeps (the reference's i128): unreachable, see above."""
MIN_BALANCE = -(2**127)
"""Smallest balance an authority keeps; a certified debit that would go below is refused."""
BALANCE_BYTES = 16
"""A balance on the wire and on disk: two's complement, big-endian."""
MAX_SEQUENCE_NUMBER = 2**63 - 2
"""Largest sequence number an authority votes for (its successor must still fit)."""
MAX_USER_DATA_BYTES = 32
"""Opaque user data attached to a transfer (the reference allows 32 bytes)."""
MAX_COMMITTEE_SIZE = 256
"""Most signatures a certificate may carry."""
MAX_RECEIVED_PER_RESPONSE = 16
"""Most received certificates one `AccountInfoResponse` returns; clients page with
`received_from`."""
MAX_DETAIL_CHARS = 200
"""Length cap of the human-readable detail of an `ErrorReply`."""
MAX_SHARDS = 1024
"""Most shards one authority may run."""

Amount = Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT)]
WideBalance = Annotated[bytes, msgspec.Meta(min_length=BALANCE_BYTES, max_length=BALANCE_BYTES)]
SequenceNumber = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQUENCE_NUMBER + 1)]
UserData = Annotated[bytes, msgspec.Meta(max_length=MAX_USER_DATA_BYTES)]
Detail = Annotated[str, msgspec.Meta(max_length=MAX_DETAIL_CHARS)]


class Transfer(Message, frozen=True):
    """Move `amount` from `sender` to `recipient`; the sender's `sequence_number`-th payment."""

    sender: Bytes32
    recipient: Bytes32
    amount: Amount
    sequence_number: SequenceNumber
    user_data: UserData | None = None

    def signed_bytes(self) -> bytes:
        """The bytes that the sender and the voting authorities sign."""
        return canonical_bytes(self)


class TransferOrder(Message, frozen=True):
    """A transfer signed by its sender (the account owner)."""

    transfer: Transfer
    signature: Signature


class SignedTransferOrder(Message, frozen=True):
    """An authority's vote for a transfer order."""

    order: TransferOrder
    authority: Bytes32
    signature: Signature


class AuthoritySignature(Message, frozen=True):
    """One vote inside a certificate."""

    authority: Bytes32
    signature: Signature


class CertifiedTransferOrder(Message, frozen=True):
    """A transfer order with votes of distinct authorities reaching the quorum threshold."""

    order: TransferOrder
    signatures: Annotated[list[AuthoritySignature], msgspec.Meta(max_length=MAX_COMMITTEE_SIZE)]

    @property
    def transfer(self) -> Transfer:
        """The certified transfer."""
        return self.order.transfer


class ConfirmationOrder(Message, frozen=True):
    """Ask an authority to apply a certified transfer."""

    certificate: CertifiedTransferOrder


class AccountInfoRequest(Message, frozen=True):
    """Read an account; optionally fetch one of its sent certificates and received ones.

    `sequence_number`: return the certificate of the account's transfer with that number.
    `received_from`: return received certificates from that index of the received log on
    (at most `MAX_RECEIVED_PER_RESPONSE`).
    """

    account: Bytes32
    sequence_number: SequenceNumber | None = None
    received_from: SequenceNumber | None = None


class CrossShardUpdate(Message, frozen=True):
    """Credit the recipient of `certificate` (from the sender's shard to the recipient's)."""

    certificate: CertifiedTransferOrder
    authority: Bytes32
    signature: Signature


class AccountInfoResponse(Message, frozen=True):
    """An authority's view of one account."""

    account: Bytes32
    wide_balance: WideBalance
    next_sequence_number: SequenceNumber
    pending: SignedTransferOrder | None = None
    requested_certificate: CertifiedTransferOrder | None = None
    received: Annotated[
        list[CertifiedTransferOrder], msgspec.Meta(max_length=MAX_RECEIVED_PER_RESPONSE)
    ] = msgspec.field(default_factory=list)
    received_count: SequenceNumber = 0

    @property
    def balance(self) -> int:
        """The account's balance at this authority."""
        return decode_balance(self.wide_balance)


def encode_balance(balance: int) -> bytes:
    """`balance` as `BALANCE_BYTES` bytes (caller misuse, raises: out of range)."""
    if not MIN_BALANCE <= balance <= MAX_BALANCE:
        raise ValueError(f"balance {balance} is outside {MIN_BALANCE}..{MAX_BALANCE}")
    return balance.to_bytes(BALANCE_BYTES, "big", signed=True)


def decode_balance(encoded: bytes) -> int:
    """The balance spelled by `encode_balance`'s bytes."""
    return int.from_bytes(encoded, "big", signed=True)


class CrossShardAck(Message, frozen=True):
    """The recipient's shard applied (or had already applied) a cross-shard update."""

    sender: Bytes32
    sequence_number: SequenceNumber


class ErrorKind(enum.Enum):
    """Why an authority refused a request (compared across authorities by clients)."""

    MALFORMED = "malformed"
    WRONG_SHARD = "wrong-shard"
    BAD_SIGNATURE = "bad-signature"
    ZERO_AMOUNT = "zero-amount"
    INVALID_SEQUENCE_NUMBER = "invalid-sequence-number"
    UNEXPECTED_SEQUENCE_NUMBER = "unexpected-sequence-number"
    INSUFFICIENT_BALANCE = "insufficient-balance"
    CONFLICTING_PENDING_ORDER = "conflicting-pending-order"
    BAD_CERTIFICATE = "bad-certificate"
    MISSING_EARLIER_CONFIRMATIONS = "missing-earlier-confirmations"
    BALANCE_OUT_OF_RANGE = "balance-out-of-range"
    CERTIFICATE_NOT_FOUND = "certificate-not-found"


class ErrorReply(Message, frozen=True):
    """A refusal.

    `expected_sequence_number` is the account's next sequence number at this authority
    for `UNEXPECTED_SEQUENCE_NUMBER` and `MISSING_EARLIER_CONFIRMATIONS` (the first
    confirmation it misses); `pending` is the vote that blocks a conflicting order.
    """

    kind: ErrorKind
    detail: Detail = ""
    expected_sequence_number: SequenceNumber | None = None
    pending: SignedTransferOrder | None = None

    def agreement_key(self) -> tuple[ErrorKind, int | None]:
        """What honest authorities refusing for the same reason have in common."""
        return (self.kind, self.expected_sequence_number)


FastPayRequest = TransferOrder | ConfirmationOrder | AccountInfoRequest | CrossShardUpdate
"""Everything a client (or another shard) may ask an authority shard."""
FastPayReply = SignedTransferOrder | AccountInfoResponse | CrossShardAck | ErrorReply
"""Everything an authority shard answers."""

FastPayMessage = FastPayRequest | FastPayReply
"""Every FastPay message (the union an authority shard's host decodes: requests from
clients, and the replies to its own cross-shard calls)."""

REQUEST_CODEC: Codec[FastPayRequest] = Codec(FastPayRequest)
REPLY_CODEC: Codec[FastPayReply] = Codec(FastPayReply)
MESSAGE_CODEC: Codec[FastPayMessage] = Codec(FastPayMessage)
"""Use with `synod.runtime.host.NodeHost` for shards (clients can use `REPLY_CODEC`)."""


# ---------------------------------------------------------------- signing helpers


def make_transfer_order(
    sender_keys: KeyPair, transfer: Transfer, network: bytes = b""
) -> TransferOrder:
    """Sign `transfer` as its sender for `network` (caller misuse, raises: keys of
    another account)."""
    if sender_keys.node_id != transfer.sender:
        raise ValueError("a transfer order must be signed with the sender's own key")
    return TransferOrder(
        transfer=transfer,
        signature=sender_keys.sign(
            in_network(TRANSFER_ORDER_DOMAIN, network), transfer.signed_bytes()
        ),
    )


def make_vote(
    authority_keys: KeyPair, order: TransferOrder, network: bytes = b""
) -> SignedTransferOrder:
    """The vote of the authority holding `authority_keys` for `order` in `network`."""
    return SignedTransferOrder(
        order=order,
        authority=authority_keys.node_id,
        signature=authority_keys.sign(
            in_network(VOTE_DOMAIN, network), order.transfer.signed_bytes()
        ),
    )


def certify(
    order: TransferOrder, authorities: Iterable[KeyPair], network: bytes = b""
) -> CertifiedTransferOrder:
    """A certificate for `order` carrying the votes of `authorities`, in that order.

    What a client assembles from the votes it collects; made directly from the
    authorities' keys here for tests, examples and tools that hold those keys.  Nothing
    is checked: too few or foreign signers give a certificate that authorities refuse.
    """
    votes = [make_vote(keys, order, network) for keys in authorities]
    return CertifiedTransferOrder(
        order=order,
        signatures=[AuthoritySignature(vote.authority, vote.signature) for vote in votes],
    )


def transfer_order_is_valid(order: TransferOrder, network: bytes = b"") -> bool:
    """True when the order carries its sender's signature of the transfer for `network`."""
    transfer = order.transfer
    domain = in_network(TRANSFER_ORDER_DOMAIN, network)
    return verify(transfer.sender, domain, transfer.signed_bytes(), order.signature)


def vote_is_valid(vote: SignedTransferOrder, network: bytes = b"") -> bool:
    """True when `vote.signature` is `vote.authority`'s vote for the order's transfer in
    `network`."""
    domain = in_network(VOTE_DOMAIN, network)
    return verify(vote.authority, domain, vote.order.transfer.signed_bytes(), vote.signature)


# ---------------------------------------------------------------- sharding


@functools.lru_cache(maxsize=1 << 16)
def shard_of(account: bytes, shard_count: int) -> int:
    """The shard (of every authority) that keeps `account`.

    Memoised (bounded): a shard asks this several times per request, and the hash of a
    key is a fixed cost worth paying once per account.
    """
    if not 1 <= shard_count <= MAX_SHARDS:
        raise ValueError(f"shard count must be 1..{MAX_SHARDS}, got {shard_count}")
    digest = blake2b(account, person=b"fastpay-shard")
    return int.from_bytes(digest[:8], "big") % shard_count


def request_account(request: FastPayRequest) -> bytes:
    """The account whose shard must handle `request`."""
    if isinstance(request, TransferOrder):
        return request.transfer.sender
    if isinstance(request, ConfirmationOrder):
        return request.certificate.transfer.sender
    if isinstance(request, AccountInfoRequest):
        return request.account
    return request.certificate.transfer.recipient


def request_shard(request: FastPayRequest, shard_count: int) -> int:
    """Which of an authority's `shard_count` shards must receive `request`."""
    return shard_of(request_account(request), shard_count)


def certificate_key(certificate: CertifiedTransferOrder) -> tuple[NodeId, int]:
    """(sender, sequence number): at most one transfer is ever certified per key."""
    transfer = certificate.transfer
    return NodeId(transfer.sender), transfer.sequence_number
