"""Random transfers among several clients and sharded authorities, with message loss and
duplication, crashes (rebuilt from persisted records), an equivocating client and a
Byzantine authority, run in the simulator (`synod.sim.World`) from one seed.

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
from functools import partial
from typing import Any

import pytest

from synod.core import Call, CallFailed, Input, Response, Step
from synod.crypto import KeyPair, NodeId
from synod.fastpay.authority import AccountState, AuthorityShard, check_certificate
from synod.fastpay.checkers import (
    CreditWithoutDebit,
    conservation_gap,
    double_spends,
    final_balances,
)
from synod.fastpay.client import Client, Synchronized, TransferCertified
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
from synod.sim.network import FaultPlan, LatencyModel
from synod.sim.scenarios.fastpay import (
    ReplyRewrite,
    account_at,
    add_authorities,
    add_client,
    authority_shards,
    restart_shard,
    shards_of,
)
from synod.sim.world import RawBytes, World

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
NAMES = sorted(keys.node_id for keys in AUTHORITIES)
KEYS_BY_NAME = {keys.node_id: keys for keys in AUTHORITIES}
COMMITTEE = Committee.equal_weights(NAMES)
CALL_TIMEOUT_MS = 100
"""Longer than any call and its answer take (two deliveries of at most 20 ms each)."""


# ---------------------------------------------------------------- checkers


def certificates_held(world: World) -> list[CertifiedTransferOrder]:
    """Certificates that running clients hold, that authorities applied, and that
    clients reported (crashed clients reported theirs)."""
    found: list[CertifiedTransferOrder] = []
    for node in world.nodes:
        if isinstance(node.core, Client | Equivocator):
            found.extend(node.core.sent)
        for shard in shards_of(node.core):
            for account in shard.accounts.values():
                found.extend(account.confirmed)
    found.extend(e.certificate for _, e in world.events if isinstance(e, TransferCertified))
    return found


# ---------------------------------------------------------------- a Byzantine authority


def byzantine_replies(rng: random.Random, liar: KeyPair) -> ReplyRewrite:
    """Answers that mix honest replies with garbage, forged and misleading ones."""

    def reply(request: Any, honest: Any) -> Any:
        choice = rng.randrange(6)
        if choice == 0:
            return RawBytes(bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
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

    def handle(self, event: Input, now_ms: int) -> Step:
        step = Step()
        if not isinstance(event, Response | CallFailed):
            return step
        if self._calls.pop(event.request_id, None) is None or isinstance(event, CallFailed):
            return step
        vote = event.body
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


# ---------------------------------------------------------------- the run


def faulty_world(seed: int) -> World:
    """Messages take 1 to 20 ms (so they overtake each other); 5% are lost, 5% arrive twice."""
    world = World(seed, call_timeout_ms=CALL_TIMEOUT_MS)
    latency = LatencyModel("uniform", base_ms=1, spread_ms=19)
    world.use_fault_plan(
        FaultPlan(latency=latency, loss_probability=0.05, duplicate_probability=0.05)
    )
    return world


def crash_client(world: World, keys: KeyPair) -> None:
    """Crash a client; it restarts from its records once every answer to its earlier calls
    has arrived or timed out (a restarted process never gets them)."""
    world.crash(keys.node_id)
    restart = partial(world.restart, keys.node_id)
    world.schedule(world.now_ms + CALL_TIMEOUT_MS, restart, "restart")


def running_client(world: World, keys: KeyPair) -> Client | None:
    """The client of `keys` when it is up and idle."""
    if not world.node(keys.node_id).up:
        return None
    client = world.core(keys.node_id, Client)
    return None if client.busy else client


def run_random_transfers(
    seed: int, *, shard_count: int, byzantine: bool, rounds: int = 120
) -> None:
    rng = random.Random(seed)
    owners = [KeyPair.from_seed(bytes([200 + index]) * 32) for index in range(5)]
    cheater = Equivocator(KeyPair.from_seed(b"x" * 32), 40)
    genesis = {keys.node_id: 50 + 10 * index for index, keys in enumerate(owners)}
    genesis[cheater.node_id] = 40
    supply = sum(genesis.values())
    world = faulty_world(seed)
    liar = NAMES[2] if byzantine else None
    scripted = {}
    if liar is not None:
        scripted[liar] = byzantine_replies(random.Random(seed), KEYS_BY_NAME[liar])
    add_authorities(world, AUTHORITIES, genesis, shards=shard_count, scripted=scripted)
    honest = [name for name in NAMES if name != liar]
    for keys in owners:
        add_client(world, keys, COMMITTEE, balance=genesis[keys.node_id])
    world.add_nodes({cheater.node_id: lambda storage, rng: cheater}, REPLY_CODEC)
    recipients = [keys.node_id for keys in owners]
    inbox: dict[NodeId, list[CertifiedTransferOrder]] = {keys.node_id: [] for keys in owners}
    seen_events = 0

    for _ in range(rounds):
        for keys in owners:
            client = running_client(world, keys)
            if client is None or rng.random() < 0.5:
                continue
            world.apply(keys.node_id, next_command(rng, client, inbox[keys.node_id], owners))
        if rng.random() < 0.2:
            world.apply(cheater.node_id, cheater.attack(rng, recipients))
        for _ in range(rng.randrange(1, 30)):
            if not world.step():
                break
        if rng.random() < 0.05:
            restart_shard(world, rng.choice(honest), rng.randrange(shard_count))
        if rng.random() < 0.05:
            keys = rng.choice(owners)
            if world.node(keys.node_id).up:
                crash_client(world, keys)
        for _, event in world.events[seen_events:]:
            if (
                isinstance(event, TransferCertified)
                and event.certificate.transfer.recipient in inbox
            ):
                inbox[NodeId(event.certificate.transfer.recipient)].append(event.certificate)
        seen_events = len(world.events)
        for name in honest:
            assert conservation_gap(authority_shards(world, name), supply) == 0
        assert double_spends(certificates_held(world)) == []
        assert_rebuildable(world)

    heal(world, owners)
    certificates = certificates_held(world)
    assert double_spends(certificates) == []
    expected = final_balances(genesis, certificates)
    assert all(balance >= 0 for balance in expected.values()), "overspent"
    assert sum(expected.values()) == supply
    for name in honest:
        shards = authority_shards(world, name)
        assert all(not shard.outbox for shard in shards)
        assert conservation_gap(shards, supply) == 0
        for account, balance in expected.items():
            assert account_at(world, name, account).balance == balance
    assert all(world.core(keys.node_id, Client).pending is None for keys in owners)
    assert len({certificate_key(c) for c in certificates}) > 5, "the run made some progress"


def assert_rebuildable(world: World) -> None:
    """Every running core equals the one rebuilt from what it persisted (what a crash keeps)."""
    for node in world.nodes:
        if node.core is None:
            continue
        rebuilt = node.factory(dict(node.storage), random.Random(0))
        for shard, again in zip(shards_of(node.core), shards_of(rebuilt), strict=True):
            assert accounts_in_use(again) == accounts_in_use(shard)
            assert dict(again.outbox) == dict(shard.outbox)
        if isinstance(node.core, Client):
            assert isinstance(rebuilt, Client)
            client = node.core
            assert (rebuilt.balance, rebuilt.next_sequence_number) == (
                client.balance,
                client.next_sequence_number,
            )
            assert rebuilt.pending == client.pending
            assert rebuilt.sent == client.sent and rebuilt.received == client.received


def accounts_in_use(shard: AuthorityShard) -> dict[bytes, AccountState]:
    return {key: state for key, state in shard.accounts.items() if state != AccountState(0)}


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


def settle(world: World) -> None:
    assert world.step_until(lambda: world.idle)


def heal(world: World, owners: list[KeyPair]) -> None:
    """No more faults: finish pending orders, then push every certificate everywhere."""
    world.heal()
    settle(world)
    for keys in owners:
        client = world.core(keys.node_id, Client)
        if client.pending is not None:
            world.apply(keys.node_id, client.resume())
            settle(world)
    helper = world.core(owners[0].node_id, Client)
    latest: dict[NodeId, CertifiedTransferOrder] = {}
    for certificate in certificates_held(world):
        sender, number = certificate_key(certificate)
        if sender not in latest or latest[sender].transfer.sequence_number < number:
            latest[sender] = certificate
    for certificate in latest.values():
        world.apply(helper.node_id, helper.synchronize(certificate))
        settle(world)
        assert isinstance(world.events_of(helper.node_id, object)[-1], Synchronized)


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
    world = World.perfect()
    add_authorities(world, AUTHORITIES, {owner.node_id: 10}, shards=2)
    client = add_client(world, owner, COMMITTEE, balance=10)
    world.apply(owner.node_id, client.transfer(NAMES[0], 4))
    settle(world)
    shards = authority_shards(world, NAMES[1])
    assert conservation_gap(shards, 10) == 0
    holder = next(shard for shard in shards if shard.owns(NAMES[0]))
    holder.accounts[NAMES[0]].balance += 1
    assert conservation_gap(shards, 10) == 1
    sender_shard = next(shard for shard in shards if shard.owns(owner.node_id))
    sender_shard.accounts[owner.node_id].confirmed.clear()
    with pytest.raises(CreditWithoutDebit):
        conservation_gap(shards, 10)
