"""The wallet: accounts.json reads back what it encodes, a client rebuilt from a wallet's
records resumes its pending order, and operation events read as results or typed errors."""

from __future__ import annotations

import json

import pytest

from synod.core import Persist, Proposed
from synod.crypto import KeyPair, node_id_text
from synod.fastpay.client import (
    AccountQueried,
    InsufficientFunds,
    Pay,
    TransferConfirmed,
    TransferFailed,
)
from synod.fastpay.config import FastPayFileError
from synod.fastpay.messages import (
    CertifiedTransferOrder,
    ErrorKind,
    ErrorReply,
    Transfer,
    make_transfer_order,
)
from synod.fastpay.wallet import (
    Accounts,
    DamagedWallet,
    NoQuorum,
    TransferError,
    UnknownAccount,
    Wallet,
    decode_accounts,
    percentile,
    queried_balance,
    transfer_certificate,
)
from synod.quorum.committee import Committee

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
COMMITTEE = Committee({keys.node_id: 1 for keys in AUTHORITIES})
ALICE, BOB = KeyPair.from_seed(b"a" * 32), KeyPair.from_seed(b"b" * 32)


def certificate() -> CertifiedTransferOrder:
    order = make_transfer_order(ALICE, Transfer(ALICE.node_id, BOB.node_id, 5, 0))
    return CertifiedTransferOrder(order=order, signatures=[])


def test_accounts_read_back_what_they_encode_records_included() -> None:
    accounts = Accounts(source="accounts.json")
    accounts.add(ALICE, 100)
    accounts.add(BOB)
    accounts.apply(ALICE.node_id, [Persist(b"k1", b"v1"), Persist(b"k2", b"v2")])
    accounts.apply(ALICE.node_id, [Persist(b"k1", None)])
    assert accounts.dirty
    wallets = decode_accounts(accounts.encode(), "accounts.json")
    assert [(w.keys.seed, w.initial_balance, w.records) for w in wallets] == [
        (ALICE.seed, 100, {b"k2": b"v2"}),
        (BOB.seed, 0, {}),
    ]
    assert accounts.genesis() == {ALICE.node_id: 100, BOB.node_id: 0}
    accounts.save()
    assert not accounts.dirty


def test_an_account_gets_one_wallet_and_unknown_accounts_are_named() -> None:
    accounts = Accounts([Wallet(ALICE, 1)], source="accounts.json")
    with pytest.raises(ValueError, match="already has a wallet"):
        accounts.add(ALICE)
    with pytest.raises(ValueError, match="initial balance"):
        accounts.add(BOB, -1)
    with pytest.raises(UnknownAccount, match=f"{node_id_text(BOB.node_id)}: not in accounts.json"):
        accounts.wallet(BOB.node_id)


def line_error(raw: object) -> str:
    lines = json.dumps(Wallet(ALICE, 1).to_json()) + "\n" + json.dumps(raw) + "\n"
    with pytest.raises(FastPayFileError) as raised:
        decode_accounts(lines, "accounts.json")
    return str(raised.value)


def test_malformed_wallet_lines_are_named() -> None:
    good = Wallet(BOB, 1).to_json()
    assert line_error({"address": "x"}).startswith("accounts.json:2: expected an object")
    assert line_error({**good, "secret_key": "zz"}).startswith("accounts.json:2: secret_key")
    other = node_id_text(ALICE.node_id)
    assert line_error({**good, "address": other}).startswith("accounts.json:2: address")
    assert line_error({**good, "initial_balance": -1}).startswith(
        "accounts.json:2: initial_balance"
    )
    assert line_error({**good, "records": {"zz": "00"}}).startswith("accounts.json:2: records")
    assert line_error(Wallet(ALICE, 1).to_json()) == "accounts.json:2: this account is listed twice"


def test_a_client_rebuilt_from_its_wallet_keeps_the_pending_order() -> None:
    accounts = Accounts([Wallet(ALICE, 50)])
    client = accounts.wallet(ALICE.node_id).client(COMMITTEE)
    step = client.handle(Proposed(Pay(BOB.node_id, 5)), now_ms=0)
    accounts.apply(ALICE.node_id, step.persist)
    rebuilt = decode_accounts(accounts.encode(), "accounts.json")[0].client(COMMITTEE)
    assert rebuilt.pending is not None and rebuilt.pending == client.pending


def test_damaged_records_are_a_file_error_naming_the_account() -> None:
    wallet = Wallet(ALICE, 1, {b"fastpay-client/state": b"\x00\xff"})
    expected = f"accounts.json: the records of {node_id_text(ALICE.node_id)} are damaged"
    with pytest.raises(DamagedWallet, match=expected):
        wallet.client(COMMITTEE, "accounts.json")


def test_transfer_events_read_as_a_certificate_or_a_typed_error() -> None:
    confirmed = certificate()
    assert transfer_certificate([TransferConfirmed(confirmed)]) is confirmed
    with pytest.raises(TransferError, match="exceeds"):
        transfer_certificate([InsufficientFunds("amount 9 exceeds the known balance 5")])
    refused = ErrorReply(ErrorKind.INSUFFICIENT_BALANCE, "short by 4")
    failed = TransferFailed(0, "vote", "refused by 2 of 4", refused)
    with pytest.raises(TransferError) as raised:
        transfer_certificate([failed])
    assert raised.value.failure is failed
    assert str(raised.value) == (
        "transfer #0 failed at the vote stage: refused by 2 of 4 (short by 4); "
        "the order stays pending: run the same transfer again, or `finish`, to complete "
        "it (it is paid once)"
    )
    with pytest.raises(TransferError, match=r"did not complete \(no events\)"):
        transfer_certificate([])


def test_a_query_needs_a_quorum_to_give_a_balance() -> None:
    vouched = AccountQueried(ALICE.node_id, 42, 1, {})
    assert queried_balance([vouched], 4) == 42
    with pytest.raises(NoQuorum, match=r"\(0 of 4\)"):
        queried_balance([AccountQueried(ALICE.node_id, None, None, {})], 4)
    with pytest.raises(NoQuorum):
        queried_balance([], 4)


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(value) for value in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 0.07) == 7.0
    assert percentile([3.0, 1.0, 2.0], 1.0) == 3.0
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0
    assert percentile([], 0.5) == 0.0
