"""Money is never created or destroyed by an authority's arithmetic, replays cost no
signature checks, and a shard's records belong to one identity.

Expected balances are hand computed: genesis plus every certified transfer, each once.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.core import Persist, Reply, RequestReceived, Started
from synod.crypto import KeyPair, node_id_text
from synod.fastpay import authority as authority_module
from synod.fastpay import messages as messages_module
from synod.fastpay.authority import AuthorityShard, StoreMismatch
from synod.fastpay.config import FastPayFileError, parse_initial_accounts
from synod.fastpay.messages import (
    MAX_SUPPLY,
    AccountInfoResponse,
    CertifiedTransferOrder,
    ConfirmationOrder,
    CrossShardAck,
    CrossShardUpdate,
    Transfer,
    certify,
    make_transfer_order,
)
from synod.quorum.committee import Committee
from synod.wire import canonical_bytes

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
COMMITTEE = Committee.equal_weights(keys.node_id for keys in AUTHORITIES)
ACCOUNTS = [KeyPair.from_seed(bytes([0x61 + index]) * 32) for index in range(3)]
ALICE, BOB, CAROL = ACCOUNTS


def certified(
    sender: KeyPair, recipient: bytes, amount: int, sequence_number: int
) -> CertifiedTransferOrder:
    transfer = Transfer(sender.node_id, recipient, amount, sequence_number)
    return certify(make_transfer_order(sender, transfer), AUTHORITIES[:3])


def reply_to(core: AuthorityShard, request: Any, storage: dict[bytes, bytes]) -> Any:
    step = core.handle(RequestReceived("client", 1, request), 0)
    apply_records(storage, step.persist)
    replies = [output for output in step.outgoing if isinstance(output, Reply)]
    return replies[0].body


def apply_records(storage: dict[bytes, bytes], records: list[Persist]) -> None:
    for record in records:
        if record.value is None:
            storage.pop(record.key, None)
        else:
            storage[record.key] = record.value


def held(core: AuthorityShard) -> int:
    return sum(account.balance for account in core.accounts.values())


# ---------------------------------------------------------------- supply and wide balances


def test_a_genesis_whose_total_exceeds_2_63_minus_1_is_refused_naming_the_line() -> None:
    # Each line is within range; the total is not (the three accounts at 2^63-1).
    text = "".join(f"{node_id_text(keys.node_id)}:{MAX_SUPPLY}\n" for keys in ACCOUNTS)
    with pytest.raises(FastPayFileError, match=r"genesis\.txt:2: balance: the total supply"):
        parse_initial_accounts(text, "genesis.txt")
    assert parse_initial_accounts(f"{node_id_text(ALICE.node_id)}:{MAX_SUPPLY}\n", "g") == {
        ALICE.node_id: MAX_SUPPLY
    }


def test_a_shard_refuses_a_genesis_above_the_supply_bound() -> None:
    genesis = {keys.node_id: MAX_SUPPLY for keys in ACCOUNTS}
    with pytest.raises(ValueError, match="supply"):
        AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis=genesis)


def test_a_lagging_authority_credits_beyond_2_63_in_full_and_ends_exact() -> None:
    # Alice pays Bob her 2^62 (seq 0), then Bob pays Alice all he has, 2^63-1.  This
    # authority sees Bob's certificate first: Alice's balance passes 2^63-1 for a while.
    genesis = {ALICE.node_id: 2**62, BOB.node_id: 2**62 - 1}
    alice_pays = certified(ALICE, BOB.node_id, 2**62, 0)
    bob_pays = certified(BOB, ALICE.node_id, MAX_SUPPLY, 0)
    storage: dict[bytes, bytes] = {}
    core = AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis=genesis)
    info = reply_to(core, ConfirmationOrder(bob_pays), storage)
    assert isinstance(info, AccountInfoResponse) and info.balance == -(2**62)
    assert core.account(ALICE.node_id).balance == 2**62 + MAX_SUPPLY
    rebuilt = AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis=genesis, storage=dict(storage))
    assert rebuilt.account(ALICE.node_id).balance == 2**62 + MAX_SUPPLY
    reply_to(rebuilt, ConfirmationOrder(alice_pays), storage)
    assert rebuilt.account(ALICE.node_id).balance == MAX_SUPPLY
    assert rebuilt.account(BOB.node_id).balance == 0
    assert held(rebuilt) == MAX_SUPPLY


def test_a_lagging_authority_applies_certified_debits_below_minus_2_63() -> None:
    # Alice and Bob pass the whole supply back and forth; this authority sees Alice's
    # three payments before either of Bob's, so Alice goes to -2 x (2^63-1) for a while.
    genesis = {ALICE.node_id: MAX_SUPPLY}
    alice = [certified(ALICE, BOB.node_id, MAX_SUPPLY, number) for number in range(3)]
    bob = [certified(BOB, ALICE.node_id, MAX_SUPPLY, number) for number in range(2)]
    core = AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis=genesis)
    storage: dict[bytes, bytes] = {}
    for certificate in alice:
        reply = reply_to(core, ConfirmationOrder(certificate), storage)
        assert isinstance(reply, AccountInfoResponse)  # applied, never out of range
    assert core.account(ALICE.node_id).balance == -2 * MAX_SUPPLY
    for certificate in bob:
        reply_to(core, ConfirmationOrder(certificate), storage)
    assert core.account(ALICE.node_id).balance == 0
    assert core.account(BOB.node_id).balance == MAX_SUPPLY
    assert held(core) == MAX_SUPPLY


EXTREMES = st.sampled_from([1, 2, 2**62 - 1, 2**62, 2**63 - 2, MAX_SUPPLY])


@st.composite
def genesis_and_payments(draw: Callable[..., Any]) -> tuple[dict[bytes, int], list[Transfer]]:
    """A genesis within the supply bound and payments each covered by the true balance."""
    shares = draw(st.lists(st.one_of(EXTREMES, st.integers(0, 100)), min_size=3, max_size=3))
    genesis: dict[bytes, int] = {}
    remaining = MAX_SUPPLY
    for keys, share in zip(ACCOUNTS, shares, strict=True):
        genesis[keys.node_id] = min(share, remaining)
        remaining -= genesis[keys.node_id]
    balances = dict(genesis)
    numbers = dict.fromkeys(genesis, 0)
    payments: list[Transfer] = []
    for _ in range(draw(st.integers(1, 6))):
        sender = draw(st.sampled_from(ACCOUNTS)).node_id
        recipient = draw(st.sampled_from(ACCOUNTS)).node_id
        if balances[sender] == 0:
            continue
        wanted = draw(st.one_of(EXTREMES, st.integers(1, 100)))
        amount = min(wanted, balances[sender])  # all of it at the extremes
        payments.append(Transfer(sender, recipient, amount, numbers[sender]))
        numbers[sender] += 1
        balances[sender] -= amount
        balances[recipient] += amount
    return genesis, payments


@settings(max_examples=40, deadline=None)
@given(genesis_and_payments(), st.randoms(use_true_random=False))
def test_any_delivery_order_conserves_the_supply_and_ends_at_the_true_balances(
    case: tuple[dict[bytes, int], list[Transfer]], rng: random.Random
) -> None:
    genesis, payments = case
    keys_of = {keys.node_id: keys for keys in ACCOUNTS}
    queues: dict[bytes, list[CertifiedTransferOrder]] = {}
    for payment in payments:
        order = make_transfer_order(keys_of[payment.sender], payment)
        queues.setdefault(payment.sender, []).append(certify(order, AUTHORITIES[:3]))
    supply = sum(genesis.values())
    core = AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis=genesis)
    storage: dict[bytes, bytes] = {}
    # A lagging authority sees each sender's certificates in order, senders interleaved
    # at random: credits may arrive long before the debits that fund them.
    while any(queues.values()):
        sender = rng.choice(sorted(account for account, queue in queues.items() if queue))
        reply = reply_to(core, ConfirmationOrder(queues[sender].pop(0)), storage)
        assert isinstance(reply, AccountInfoResponse)
        assert held(core) == supply
    expected = dict(genesis)
    for payment in payments:
        expected[payment.sender] -= payment.amount
        expected[payment.recipient] += payment.amount
    assert {account: core.account(account).balance for account in expected} == expected
    rebuilt = AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis=genesis, storage=storage)
    assert {account: rebuilt.account(account).balance for account in expected} == expected


# ---------------------------------------------------------------- replays are cheap


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every signature check the authority makes, counted by domain."""
    calls: list[bytes] = []
    real = messages_module.verify

    def counting(public_key: bytes, domain: bytes, message: bytes, signature: bytes) -> bool:
        calls.append(domain)
        return real(public_key, domain, message, signature)

    monkeypatch.setattr(messages_module, "verify", counting)
    monkeypatch.setattr(authority_module, "verify", counting)
    return calls


def test_a_replayed_certificate_is_answered_without_any_signature_check(
    verify_calls: list[bytes],
) -> None:
    core = AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis={ALICE.node_id: 5})
    certificate = certified(ALICE, BOB.node_id, 5, 0)
    storage: dict[bytes, bytes] = {}
    reply_to(core, ConfirmationOrder(certificate), storage)
    assert len(verify_calls) == 4  # the sender's signature and three votes, once
    verify_calls.clear()
    for _ in range(100):
        reply = reply_to(core, ConfirmationOrder(certificate), storage)
        assert isinstance(reply, AccountInfoResponse) and reply.next_sequence_number == 1
    assert verify_calls == []
    assert core.account(BOB.node_id).balance == 5


def test_a_replayed_cross_shard_update_is_acknowledged_without_a_signature_check(
    verify_calls: list[bytes],
) -> None:
    recipient = next(
        keys
        for keys in (KeyPair.from_seed(bytes([n]) * 32) for n in range(100, 200))
        if messages_module.shard_of(keys.node_id, 2) == 1
    )
    certificate = certified(ALICE, recipient.node_id, 3, 0)
    update = CrossShardUpdate(
        certificate,
        AUTHORITIES[0].node_id,
        AUTHORITIES[0].sign(messages_module.CROSS_SHARD_DOMAIN, canonical_bytes(certificate)),
    )
    target = AuthorityShard(AUTHORITIES[0], COMMITTEE, shard=1, shard_count=2)
    storage: dict[bytes, bytes] = {}
    assert reply_to(target, update, storage) == CrossShardAck(ALICE.node_id, 0)
    assert len(verify_calls) == 1
    verify_calls.clear()
    for _ in range(50):
        assert reply_to(target, update, storage) == CrossShardAck(ALICE.node_id, 0)
    assert verify_calls == []
    assert target.account(recipient.node_id).balance == 3


# ---------------------------------------------------------------- identity of the records


def started_records(core: AuthorityShard) -> dict[bytes, bytes]:
    storage: dict[bytes, bytes] = {}
    apply_records(storage, core.handle(Started(), 0).persist)
    return storage


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"keys": AUTHORITIES[1]}, "belong to authority"),
        ({"genesis": {ALICE.node_id: 6}}, "another genesis"),
        ({"committee": Committee.equal_weights(k.node_id for k in AUTHORITIES[:3])}, "committee"),
        ({"shard_count": 2}, "belong to shard 0 of 1"),
    ],
)
def test_records_refuse_to_rebuild_a_shard_of_another_identity(
    change: dict[str, Any], message: str
) -> None:
    first = AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis={ALICE.node_id: 5})
    storage = started_records(first)
    arguments: dict[str, Any] = {
        "keys": AUTHORITIES[0],
        "committee": COMMITTEE,
        "genesis": {ALICE.node_id: 5},
        **change,
    }
    keys, committee = arguments.pop("keys"), arguments.pop("committee")
    with pytest.raises(StoreMismatch, match=message):
        AuthorityShard(keys, committee, storage=storage, **arguments)
    same = AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis={ALICE.node_id: 5}, storage=storage)
    assert same.handle(Started(), 0).persist == []  # the identity is written once
