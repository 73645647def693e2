"""A FastPay wallet: account keys, their client records, and what an operation's events mean.

Theory of operation.  A wallet holds, per account, the owner's key pair, the account's
initial funding and the records its `synod.fastpay.client.Client` core persisted (the
pending order, sent and received certificates, the known balance).  The core is rebuilt
from exactly those records (`Wallet.client`), so a wallet saved after every step and
restored from its file resumes an interrupted transfer instead of signing a new order
for the same sequence number (FastPay paper, section 3.3: a client that signs twice for
one sequence number may lock its account).

This module is pure: `Accounts` keeps the wallets in memory and applies a core's
`Persist` records to them; `Accounts.encode` / `decode_accounts` turn them into the
``accounts.json`` format (JSON lines, docs/fastpay.md, *Files*) and back.  Writing the
file durably, locking it and talking to the authorities is `synod.runtime.fastpay_wallet`.

The helpers at the end read an operation's events: `transfer_certificate` (the
certificate of a confirmed transfer or the reason it did not complete),
`queried_balance` (the balance a quorum vouches for), and `percentile` for benchmark
summaries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from synod.core import LocalError, Persist
from synod.crypto import KeyPair, node_id_text
from synod.fastpay.client import (
    AccountQueried,
    Client,
    TransferConfirmed,
    TransferFailed,
)
from synod.fastpay.config import (
    FastPayFileError,
    hex_bytes,
    integer_in,
    json_lines,
    parse_account,
)
from synod.fastpay.messages import MAX_SUPPLY, CertifiedTransferOrder
from synod.quorum.committee import Committee
from synod.wire import DecodeError


class WalletError(Exception):
    """An operation could not do what was asked: an unknown account, a refused or
    unfinished transfer, authorities that do not answer."""


class UnknownAccount(WalletError):
    """The account is not one of the wallets."""


class TransferError(WalletError):
    """A transfer did not complete; `failure` is the client's event when there is one."""

    def __init__(self, message: str, failure: TransferFailed | None = None) -> None:
        super().__init__(message)
        self.failure = failure


class NoQuorum(WalletError):
    """Too few authorities answered a query for a quorum to vouch for a balance."""


class DamagedWallet(FastPayFileError):
    """A wallet's records do not rebuild a client (the accounts file was altered)."""


# ---------------------------------------------------------------- one account


@dataclass(slots=True)
class Wallet:
    """One account: its key, initial funding and its client core's records."""

    keys: KeyPair
    initial_balance: int
    records: dict[bytes, bytes] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The account's line of ``accounts.json`` (the secret seed in clear)."""
        return {
            "address": node_id_text(self.keys.node_id),
            "secret_key": self.keys.seed.hex(),
            "initial_balance": self.initial_balance,
            "records": {key.hex(): value.hex() for key, value in sorted(self.records.items())},
        }

    @classmethod
    def from_json(cls, raw: object, where: str) -> Wallet:
        """Check and read one line of ``accounts.json``; `where` names it in errors."""
        if not isinstance(raw, dict) or not {"address", "secret_key"} <= set(raw):
            raise FastPayFileError(f"{where}: expected an object with address and secret_key")
        seed = hex_bytes(raw["secret_key"], 32)
        if seed is None:
            raise FastPayFileError(f"{where}: secret_key: expected 64 hexadecimal digits")
        keys = KeyPair.from_seed(seed)
        address = raw["address"]
        if not isinstance(address, str) or parse_account(address, where) != keys.node_id:
            raise FastPayFileError(f"{where}: address: not the account of secret_key")
        initial = integer_in(raw.get("initial_balance", 0), 0, MAX_SUPPLY)
        if initial is None:
            raise FastPayFileError(f"{where}: initial_balance: expected an integer 0..2^63-1")
        return cls(keys, initial, _records_from_json(raw.get("records", {}), where))

    def client(
        self, committee: Committee, source: str = "the wallets", network: bytes = b""
    ) -> Client:
        """The account's client core for `network`, rebuilt from the records
        (`DamagedWallet` if not)."""
        try:
            return Client(
                self.keys,
                committee,
                balance=self.initial_balance,
                storage=dict(self.records),
                network=network,
            )
        except (DecodeError, AssertionError, ValueError) as error:
            raise DamagedWallet(
                f"{source}: the records of {node_id_text(self.keys.node_id)} are damaged "
                f"({error or type(error).__name__})"
            ) from None


def _records_from_json(raw: object, where: str) -> dict[bytes, bytes]:
    if not isinstance(raw, dict):
        raise FastPayFileError(f"{where}: records: expected an object")
    records: dict[bytes, bytes] = {}
    for key_hex, value_hex in raw.items():
        key, value = hex_bytes(key_hex), hex_bytes(value_hex)
        if key is None or value is None:
            raise FastPayFileError(f"{where}: records: expected hexadecimal keys and values")
        records[key] = value
    return records


# ---------------------------------------------------------------- all accounts


class Accounts:
    """The wallets, by account, in memory; `source` names them in messages.

    `dirty` says that records changed since the last `save`.  Here `save` only clears
    it: `synod.runtime.fastpay_wallet.AccountsFile` writes the file durably instead.
    """

    def __init__(self, wallets: Iterable[Wallet] = (), *, source: str = "the wallets") -> None:
        self.source = source
        self.wallets: dict[bytes, Wallet] = {}
        self.dirty = False
        for wallet in wallets:
            self.wallets[bytes(wallet.keys.node_id)] = wallet

    def add(self, keys: KeyPair, initial_balance: int = 0) -> Wallet:
        """A new wallet for `keys`, funded with `initial_balance` at genesis."""
        account = bytes(keys.node_id)
        if account in self.wallets:
            raise ValueError(f"{node_id_text(account)} already has a wallet")
        if not 0 <= initial_balance <= MAX_SUPPLY:
            raise ValueError(f"initial balance must be 0..{MAX_SUPPLY}")
        wallet = self.wallets[account] = Wallet(keys, initial_balance)
        self.dirty = True
        return wallet

    def wallet(self, account: bytes) -> Wallet:
        """The wallet of `account`; `UnknownAccount` when there is none."""
        wallet = self.wallets.get(bytes(account))
        if wallet is None:
            raise UnknownAccount(f"unknown account {node_id_text(account)}: not in {self.source}")
        return wallet

    def apply(self, account: bytes, records: Iterable[Persist]) -> None:
        """Apply a client's `Persist` records to its wallet (in memory until `save`)."""
        wallet = self.wallets[bytes(account)]
        for record in records:
            self.dirty = True
            if record.value is None:
                wallet.records.pop(record.key, None)
            else:
                wallet.records[record.key] = record.value

    def genesis(self) -> dict[bytes, int]:
        """Each account's initial funding: the authorities' genesis for these wallets."""
        return {account: wallet.initial_balance for account, wallet in self.wallets.items()}

    def encode(self) -> str:
        """The ``accounts.json`` text: one JSON line per wallet."""
        return "".join(json.dumps(wallet.to_json()) + "\n" for wallet in self.wallets.values())

    def save(self) -> None:
        """Make the records durable: nothing to write in memory, so only mark them saved."""
        self.dirty = False


def decode_accounts(text: str, source: str) -> list[Wallet]:
    """The wallets of the ``accounts.json`` text `text` (read from `source`)."""
    wallets: list[Wallet] = []
    seen: set[bytes] = set()
    for where, raw in json_lines(text, source):
        wallet = Wallet.from_json(raw, where)
        if wallet.keys.node_id in seen:
            raise FastPayFileError(f"{where}: this account is listed twice")
        seen.add(wallet.keys.node_id)
        wallets.append(wallet)
    return wallets


# ---------------------------------------------------------------- reading events


def transfer_certificate(events: Sequence[object]) -> CertifiedTransferOrder:
    """The certificate of the transfer that `events` confirm; `TransferError` if none.

    A local refusal (an amount above the known balance, say) arrives as the
    `LocalError` itself among the events.
    """
    for event in events:
        if isinstance(event, LocalError):
            raise TransferError(str(event)) from event
        if isinstance(event, TransferFailed):
            raise TransferError(failure_text(event), event)
        if isinstance(event, TransferConfirmed):
            return event.certificate
    names = ", ".join(type(event).__name__ for event in events) or "no events"
    raise TransferError(f"the transfer did not complete ({names})")


def failure_text(event: TransferFailed) -> str:
    """What a failed transfer means for its owner, in one line."""
    text = f"transfer #{event.sequence_number} failed at the {event.stage} stage: {event.reason}"
    if event.error is not None and event.error.detail:
        text += f" ({event.error.detail})"
    if event.stage == "vote" and "another order" not in event.reason:
        text += (
            "; the order stays pending: run the same transfer again, or `finish`, to "
            "complete it (it is paid once)"
        )
    return text


def queried_balance(events: Sequence[object], committee_size: int) -> int:
    """The balance a quorum vouches for in a query's `events`; `NoQuorum` without one."""
    queried = next((event for event in events if isinstance(event, AccountQueried)), None)
    if queried is None or queried.balance is None:
        answered = len(queried.responses) if queried is not None else 0
        raise NoQuorum(
            f"no quorum of authorities answered ({answered} of {committee_size}); "
            "are they running?"
        )
    return queried.balance


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of `values`: the smallest value with at least `fraction`
    of them at or below it (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    # The tolerance keeps float error (0.07 * 100 = 7.000000000000001) from adding a rank.
    rank = math.ceil(fraction * len(ordered) - 1e-9)
    return ordered[max(1, min(len(ordered), rank)) - 1]

