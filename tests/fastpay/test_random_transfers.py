"""Random transfers among several clients and sharded authorities, with message loss and
duplication, crashes (rebuilt from persisted records), an equivocating client and a
Byzantine authority, driven by a seeded, in-test message loop (`LocalNetwork`).

Checkers (`synod.fastpay.checkers`), pure functions of what the run produced:

- no double spend: at most one transfer is certified per (sender, sequence number);
- no overspend: applying every certificate to the genesis leaves no balance negative;
- conservation at every honest authority, after every round: the balances it holds plus
  the amounts it debited but has not credited yet (cross-shard updates in flight) equal
  the initial supply, and it never credits a transfer it did not debit;
- at the end, after the network heals and every certificate is pushed everywhere, every
  honest authority holds exactly the balances that the certificates imply.

The checkers are shown to fail outside the protocol's assumptions: with two colluding
authorities out of four (more than f = 1) an equivocating client obtains two
certificates for one sequence number.
"""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from synod.core import Call, CallFailed, Response, Step
from synod.crypto import KeyPair, NodeId
from synod.fastpay.authority import AccountState, AuthorityShard, check_certificate
from synod.fastpay.checkers import (
    CreditWithoutDebit,
    conservation_gap,
    double_spends,
    final_balances,
)
from synod.fastpay.client import Client, Synchronized, TransferCertified
from synod.fastpay.localnet import LocalNetwork, client_name
from synod.fastpay.messages import (
    REPLY_CODEC,
    AuthoritySignature,
    CertifiedTransferOrder,
    ConfirmationOrder,
    ErrorKind,
    ErrorReply,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    certificate_key,
    make_transfer_order,
    make_vote,
    vote_is_valid,
)
from synod.quorum.committee import Committee
from synod.wire import DecodeError

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
NAMES = sorted(keys.node_id for keys in AUTHORITIES)
KEYS_BY_NAME = {keys.node_id: keys for keys in AUTHORITIES}
COMMITTEE = Committee.equal_weights(NAMES)


# ---------------------------------------------------------------- checkers


def certificates_held(net: LocalNetwork) -> list[CertifiedTransferOrder]:
    found = [c for client in net.clients.values() for c in client.sent]
    for shard in net.shards.values():
        for account in shard.accounts.values():
            found.extend(account.confirmed)
    found.extend(e.certificate for _, e in net.events if isinstance(e, TransferCertified))
    return found


# ---------------------------------------------------------------- a Byzantine authority


def byzantine_replies(rng: random.Random, liar: KeyPair) -> Any:
    """Answers that mix honest replies with garbage, forged and misleading ones."""

    def reply(shard: AuthorityShard, request: Any, honest: Any) -> Any:
        choice = rng.randrange(6)
        if choice == 0:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        if choice == 1 and isinstance(honest, SignedTransferOrder):
            return SignedTransferOrder(honest.order, honest.authority, b"\1" * 64)
        if choice == 2 and isinstance(request, TransferOrder):
            transfer = request.transfer
            other = Transfer(
                transfer.sender, liar.node_id, transfer.amount + 1, transfer.sequence_number
            )
            return make_vote(liar, TransferOrder(other, request.signature))
        if choice == 3:
            return ErrorReply(kind=ErrorKind.INSUFFICIENT_BALANCE)
        return honest

    return reply


# ---------------------------------------------------------------- a Byzantine client


class Equivocator:
    """A client that signs two different orders for each sequence number and sends them
    to overlapping subsets of authorities, hoping to assemble two certificates."""

    def __init__(self, keys: KeyPair, balance: int) -> None:
        self.keys = keys
        self.balance = balance
        self.sequence_number = 0
        self.sent: list[CertifiedTransferOrder] = []
        self.pending = None
        self.busy = True  # the honest-client loop leaves it alone
        self._orders: list[TransferOrder] = []
        self._votes: dict[int, dict[NodeId, SignedTransferOrder]] = {}
        self._next_request_id = 1
        self._calls: dict[int, NodeId] = {}

    @property
    def node_id(self) -> NodeId:
        return self.keys.node_id

    def attack(self, rng: random.Random, recipients: list[NodeId]) -> Step:
        step = Step()
        if self.balance <= 0 or self._calls:  # one attack at a time
            return step
        first, second = rng.sample(recipients, 2)
        amount = rng.randrange(1, self.balance + 1)
        self._orders = [
            make_transfer_order(self.keys, Transfer(self.node_id, r, amount, self.sequence_number))
            for r in (first, second)
        ]
        self._votes = {0: {}, 1: {}}
        # Some attacks split the committee (which can lock the account for good);
        # the others let the first order win, so that the cheater moves on and tries again.
        splitting = rng.random() < 0.3
        favoured = rng.choice(NAMES)
        for name in NAMES:
            if splitting:
                choice = rng.choice(((0, 1), (1, 0), (0,), (1,)))
            else:
                choice = (1, 0) if name == favoured else (0, 1)
            for index in choice:
                self._call(step, name, self._orders[index])
        return step

    def _call(self, step: Step, name: NodeId, body: Any) -> None:
        self._calls[self._next_request_id] = name
        step.outgoing.append(Call(name, self._next_request_id, body))
        self._next_request_id += 1

    def handle(self, event: Any, now_ms: int) -> Step:
        step = Step()
        if not isinstance(event, Response | CallFailed):
            return step
        if self._calls.pop(event.request_id, None) is None or isinstance(event, CallFailed):
            return step
        try:
            vote = REPLY_CODEC.decode(event.body)
        except DecodeError:
            return step
        if not isinstance(vote, SignedTransferOrder) or not vote_is_valid(vote):
            return step
        for index, order in enumerate(self._orders):
            if vote.order.transfer == order.transfer:
                self._votes[index][NodeId(vote.authority)] = vote
                self._certify_if_possible(step, index)
        return step

    def _certify_if_possible(self, step: Step, index: int) -> None:
        votes = self._votes[index]
        order = self._orders[index]
        if (
            not COMMITTEE.reaches_quorum(votes)
            or order.transfer.sequence_number != self.sequence_number
        ):
            return
        signatures = [AuthoritySignature(v.authority, v.signature) for v in votes.values()]
        certificate = CertifiedTransferOrder(order, signatures)
        self.sent.append(certificate)  # kept even if it is the second one: the checker decides
        if len(self.sent) == self.sequence_number + 1:
            self.sequence_number += 1
            self.balance -= order.transfer.amount
            for name in NAMES:
                self._call(step, name, ConfirmationOrder(certificate))


# ---------------------------------------------------------------- the loop


def run_random_transfers(
    seed: int, *, shard_count: int, byzantine: bool, rounds: int = 120
) -> None:
    rng = random.Random(seed)
    owners = [KeyPair.from_seed(bytes([200 + index]) * 32) for index in range(5)]
    cheater = Equivocator(KeyPair.from_seed(b"x" * 32), 40)
    genesis = {keys.node_id: 50 + 10 * index for index, keys in enumerate(owners)}
    genesis[cheater.node_id] = 40
    supply = sum(genesis.values())
    net = LocalNetwork(AUTHORITIES, shard_count=shard_count, genesis=genesis, rng=rng)
    liar = NAMES[2] if byzantine else None
    if liar is not None:
        net.reply_filters[liar] = byzantine_replies(rng, KEYS_BY_NAME[liar])
    honest = [name for name in NAMES if name != liar]
    for keys in owners:
        net.add_client(keys)
    net.storage[client_name(cheater.node_id)] = {}
    net.clients[cheater.node_id] = cheater  # type: ignore[assignment]
    recipients = [keys.node_id for keys in owners]
    inbox: dict[NodeId, list[CertifiedTransferOrder]] = {keys.node_id: [] for keys in owners}
    seen_events = 0

    for _ in range(rounds):
        for account, client in list(net.clients.items()):
            if client.busy or rng.random() < 0.5:
                continue
            net.submit(account, next_command(rng, client, inbox[account], owners))
        if rng.random() < 0.2:
            net.submit(cheater.node_id, cheater.attack(rng, recipients))
        for _ in range(rng.randrange(1, 30)):
            faults = {"lose": rng.random() < 0.05, "duplicate": rng.random() < 0.05}
            if not net.deliver_one(**faults):
                break
        if rng.random() < 0.05:
            net.crash_shard(rng.choice(honest), rng.randrange(shard_count))
        if rng.random() < 0.05:
            net.crash_client(rng.choice(owners).node_id)
        for _, event in net.events[seen_events:]:
            if (
                isinstance(event, TransferCertified)
                and event.certificate.transfer.recipient in inbox
            ):
                inbox[NodeId(event.certificate.transfer.recipient)].append(event.certificate)
        seen_events = len(net.events)
        for name in honest:
            assert conservation_gap(net.authority_shards(name), supply) == 0
        assert double_spends(certificates_held(net)) == []
        assert_rebuildable(net, owners)

    heal(net, owners)
    certificates = certificates_held(net)
    assert double_spends(certificates) == []
    expected = final_balances(genesis, certificates)
    assert all(balance >= 0 for balance in expected.values()), "overspent"
    assert sum(expected.values()) == supply
    for name in honest:
        shards = net.authority_shards(name)
        assert all(not shard.outbox for shard in shards)
        assert conservation_gap(shards, supply) == 0
        for account, balance in expected.items():
            assert net.balance_at(name, account) == balance
    assert all(client.pending is None for client in net.clients.values())
    assert len({certificate_key(c) for c in certificates}) > 5, "the run made some progress"


def assert_rebuildable(net: LocalNetwork, owners: list[KeyPair]) -> None:
    """Every core equals the one rebuilt from what it persisted (what a crash keeps)."""
    for (authority, index), shard in net.shards.items():
        rebuilt = net._build_shard(authority, index)
        live = {k: v for k, v in shard.accounts.items() if v != AccountState(balance=0)}
        assert {k: v for k, v in rebuilt.accounts.items() if v != AccountState(balance=0)} == live
        assert dict(rebuilt.outbox) == dict(shard.outbox)
    for keys in owners:
        client = net.clients[keys.node_id]
        rebuilt_client = Client(
            keys, net.committee, storage=dict(net.storage[client_name(keys.node_id)])
        )
        if net.storage[client_name(keys.node_id)]:
            assert (rebuilt_client.balance, rebuilt_client.next_sequence_number) == (
                client.balance,
                client.next_sequence_number,
            )
        assert rebuilt_client.pending == client.pending
        assert rebuilt_client.sent == client.sent and rebuilt_client.received == client.received


def next_command(
    rng: random.Random, client: Client, inbox: list[CertifiedTransferOrder], owners: list[KeyPair]
) -> Any:
    if client.pending is not None:
        return client.resume()
    if inbox and rng.random() < 0.5:
        return client.receive(inbox.pop(0))
    if client.balance <= 0:
        return client.query()
    recipient = rng.choice(owners).node_id
    return client.transfer(recipient, rng.randrange(1, client.balance + 1))


def heal(net: LocalNetwork, owners: list[KeyPair]) -> None:
    """No more faults: finish pending orders, then push every certificate everywhere."""
    net.run()
    for keys in owners:
        client = net.clients[keys.node_id]
        if client.pending is not None:
            net.submit(keys.node_id, client.resume())
            net.run()
    helper = net.clients[owners[0].node_id]
    latest: dict[NodeId, CertifiedTransferOrder] = {}
    for certificate in certificates_held(net):
        sender, number = certificate_key(certificate)
        if sender not in latest or latest[sender].transfer.sequence_number < number:
            latest[sender] = certificate
    for certificate in latest.values():
        net.submit(helper.node_id, helper.synchronize(certificate))
        net.run()
        assert isinstance(net.client_events(helper.node_id)[-1], Synchronized)


@pytest.mark.parametrize("seed", range(6))
def test_random_transfers_with_crashes_and_loss_conserve_value(seed: int) -> None:
    run_random_transfers(seed, shard_count=2, byzantine=False)


@pytest.mark.parametrize("seed", range(6))
def test_random_transfers_with_a_byzantine_authority_conserve_value(seed: int) -> None:
    run_random_transfers(1000 + seed, shard_count=3, byzantine=True)


# ---------------------------------------------------------------- equivocating clients


def honest_shard(keys: KeyPair, genesis: dict[bytes, int]) -> AuthorityShard:
    return AuthorityShard(keys, COMMITTEE, genesis=genesis)


def vote_of(shard: AuthorityShard, order: TransferOrder) -> SignedTransferOrder | None:
    from synod.core import RequestReceived

    reply = shard.handle(RequestReceived("byzantine-client", 1, order), 0).outgoing[0].body
    return reply if isinstance(reply, SignedTransferOrder) else None


def test_equivocating_client_never_obtains_two_certificates_from_honest_authorities() -> None:
    """Brute force: every way the two orders can reach the four authorities first."""
    cheat = KeyPair.from_seed(b"x" * 32)
    genesis = {cheat.node_id: 10}
    first = make_transfer_order(cheat, Transfer(cheat.node_id, NAMES[0], 10, 0))
    second = make_transfer_order(cheat, Transfer(cheat.node_id, NAMES[1], 10, 0))
    for arrival in itertools.product((0, 1), repeat=len(AUTHORITIES)):
        votes: dict[int, list[SignedTransferOrder]] = {0: [], 1: []}
        for keys, earlier in zip(AUTHORITIES, arrival, strict=True):
            shard = honest_shard(keys, genesis)
            orders = (first, second) if earlier == 0 else (second, first)
            for index, order in enumerate(orders):
                vote = vote_of(shard, order)
                if vote is not None:
                    votes[(earlier + index) % 2].append(vote)
        certificates = [
            CertifiedTransferOrder(
                order, [AuthoritySignature(v.authority, v.signature) for v in votes[i]]
            )
            for i, order in enumerate((first, second))
        ]
        valid = [c for c in certificates if check_certificate(c, COMMITTEE) is None]
        assert len(valid) <= 1 and double_spends(valid) == []


def test_checker_reports_a_double_spend_when_more_than_f_authorities_collude() -> None:
    """Outside the assumptions (2 of 4 Byzantine): two certificates for one number."""
    cheat = KeyPair.from_seed(b"x" * 32)
    genesis = {cheat.node_id: 10}
    first = make_transfer_order(cheat, Transfer(cheat.node_id, NAMES[0], 10, 0))
    second = make_transfer_order(cheat, Transfer(cheat.node_id, NAMES[1], 10, 0))
    honest_first, honest_second, *colluders = (KEYS_BY_NAME[name] for name in NAMES)

    def certificate_for(order: TransferOrder, honest_keys: KeyPair) -> CertifiedTransferOrder:
        vote = vote_of(honest_shard(honest_keys, genesis), order)
        assert vote is not None
        # Colluders sign anything: they ignore their lock.
        votes = [vote, *(make_vote(keys, order) for keys in colluders)]
        return CertifiedTransferOrder(
            order, [AuthoritySignature(v.authority, v.signature) for v in votes]
        )

    certificates = [certificate_for(first, honest_first), certificate_for(second, honest_second)]
    assert all(check_certificate(c, COMMITTEE) is None for c in certificates)
    assert double_spends(certificates) == [(cheat.node_id, 0)]


def test_conservation_checker_detects_created_value_and_phantom_credits() -> None:
    owner = KeyPair.from_seed(b"o" * 32)
    net = LocalNetwork(AUTHORITIES, shard_count=2, genesis={owner.node_id: 10})
    client = net.add_client(owner)
    net.submit(owner.node_id, client.transfer(NAMES[0], 4))
    net.run()
    shards = net.authority_shards(NAMES[1])
    assert conservation_gap(shards, 10) == 0
    holder = next(shard for shard in shards if shard.owns(NAMES[0]))
    holder.accounts[NAMES[0]].balance += 1
    assert conservation_gap(shards, 10) == 1
    sender_shard = next(shard for shard in shards if shard.owns(owner.node_id))
    sender_shard.accounts[owner.node_id].confirmed.clear()
    with pytest.raises(CreditWithoutDebit):
        conservation_gap(shards, 10)
