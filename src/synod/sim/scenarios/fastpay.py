"""FastPay (`synod.fastpay`) in the simulator (FastPay paper, section 5: safety and
liveness under a Byzantine minority of authorities).

Nodes: `authorities` authorities, the first `byzantine` of them Byzantine, each one
node holding its `shards` shards (`ShardedAuthority` routes requests by `request_shard`;
cross-shard updates cross the simulated network back to the node); `clients` honest
account owners, each running a plan of transfers to the others one after the other
(`ClientNode` wraps `synod.fastpay.client.Client`: it resumes a pending order or
re-confirms its last certificate after a failure or a restart).  Clients are users in a
hurry: each plan ends with a *sweep* that spends the client's funding plus every payment
the other clients' plans make to it, payments it only learns of from the authorities
(no wallet file is shared: it recovers its account with `Client.recover` when its known
balance falls short, and pushes the payments it received to every authority when
authorities refuse for lack of funds); and a restarted client loses its wallet file
with probability `restore_probability`, then starts again from its key alone (its old
records deleted) and recovers its state from the authorities.  And one Byzantine
client that signs two different orders for its sequence number 0, each spending its
whole balance, and shows each to a different half of the honest authorities (plus every
Byzantine one).

Byzantine authorities draw one behaviour per run: `silent` (never answers), `garbage`
(answers random bytes), `liar` (forged votes over other transfers, made-up refusals),
or `promiscuous` (votes for every validly signed order, ignoring the lock and the
balance: what colluders do to help a double spend).  With `collude=True` every
Byzantine authority is promiscuous; when they exceed f the equivocating client obtains
two certificates and honest authorities apply different transfers for one sequence
number, which the checkers report.

Outside the scenario, tests and examples build FastPay worlds by hand: `add_authorities`
puts a committee's authorities (each a `ShardedAuthority`, or a `ScriptedAuthority` that
answers what a test says) into a world, `add_client` an account owner's `Client`;
`account_at` reads an account as one authority sees it, and `restart_shard` crashes and
restarts one shard of an authority alone.

Checkers (history only: the `TransferApplied` events of honest authorities and the
`TransferCertified` events of honest clients):

- no double spend: one transfer per (sender, sequence number), across every honest
  authority and client (`synod.fastpay.checkers.conflicting_transfers`);
- conservation of value: each honest authority applies each sender's sequence numbers
  once and in order, credits each applied transfer once and only after debiting it,
  and the distinct applied transfers leave every account non-negative with the
  initial supply unchanged (`balances_after`);
- liveness (after healing): every honest client confirmed its whole plan, and every
  honest authority credited every transfer it debited (its cross-shard outbox drained).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from synod.core import (
    Call,
    CallFailed,
    CancelTimer,
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
from synod.crypto import KeyPair, NodeId
from synod.fastpay.authority import AccountState, AuthorityShard
from synod.fastpay.checkers import balances_after, conflicting_transfers
from synod.fastpay.client import (
    AccountRecovered,
    Client,
    InsufficientFunds,
    TransferCertified,
    TransferConfirmed,
    TransferFailed,
)
from synod.fastpay.messages import (
    MESSAGE_CODEC,
    REPLY_CODEC,
    AccountInfoRequest,
    AccountInfoResponse,
    AuthoritySignature,
    CertifiedTransferOrder,
    ConfirmationOrder,
    ErrorKind,
    ErrorReply,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    make_transfer_order,
    make_vote,
    request_shard,
    shard_of,
    transfer_order_is_valid,
    vote_is_valid,
)
from synod.quorum.committee import Committee
from synod.sim.checkers import Checker, Violation, events_of
from synod.sim.history import Record
from synod.sim.world import NodeFactory, NodeRef, RawBytes, World

RETRY_TIMER = "sim-fastpay-retry"
BEHAVIOURS = ("silent", "garbage", "liar", "promiscuous")


def authority_keys(index: int) -> KeyPair:
    """Deterministic keys of simulated authority `index`."""
    return KeyPair.from_seed(b"A" + index.to_bytes(4, "big") * 7 + b"\x00" * 3)


def account_keys(index: int) -> KeyPair:
    """Deterministic keys of simulated account `index`."""
    return KeyPair.from_seed(b"C" + index.to_bytes(4, "big") * 7 + b"\x00" * 3)


# ---------------------------------------------------------------- honest clients


@dataclass(frozen=True, slots=True)
class WalletRestored:
    """A client started again from its key alone, its wallet file lost."""

    account: NodeId


class ClientNode:
    """An account owner's application around a `Client`: runs `plan` in order.

    After a failed operation it waits `retry_ms` and resumes; after a restart it resumes
    a pending order, or confirms its last certificate again, before going on.  When its
    known balance does not cover the next payment it recovers the account from the
    authorities (payments from wallets it shares no file with), and when authorities
    refuse for lack of funds it also pushes every payment it received to all of them.
    `forget`: the records of a lost wallet file, deleted at the first start (the client
    was restored from its key alone and recovers before anything else).
    """

    def __init__(
        self,
        client: Client,
        plan: list[tuple[bytes, int]],
        retry_ms: int,
        *,
        forget: Sequence[bytes] = (),
    ) -> None:
        self.client = client
        self.plan = plan
        self.retry_ms = retry_ms
        self.needs_confirmation = bool(client.sent)
        self.restored = bool(forget)
        self.needs_recover = self.restored
        self.to_synchronize: list[CertifiedTransferOrder] = []
        self._forget = sorted(forget)

    @property
    def node_id(self) -> NodeId:
        return self.client.node_id

    @property
    def done(self) -> bool:
        """The whole plan is certified and confirmed."""
        client = self.client
        return (
            not client.busy
            and client.pending is None
            and not self.needs_confirmation
            and client.next_sequence_number >= len(self.plan)
        )

    def handle(self, event: Input, now_ms: int) -> Step:
        if isinstance(event, Started):
            # A wallet restored from its key: the lost file's records are gone.
            step = Step(persist=[Persist(key, None) for key in self._forget])
            if self._forget:
                step.events.append(WalletRestored(self.node_id))
            self._forget = []
            return self._next(step)
        if isinstance(event, TimerFired) and event.name == RETRY_TIMER:
            return self._next(Step())
        step = self.client.handle(event, now_ms)
        failed = False
        for item in step.events:
            if isinstance(item, TransferCertified):
                self.needs_confirmation = True
            elif isinstance(item, TransferConfirmed):
                self.needs_confirmation = False
            elif isinstance(item, AccountRecovered):
                self.needs_recover = False
                # The last transfer may never have been confirmed by a quorum.
                self.needs_confirmation = self.needs_confirmation or bool(item.sent)
            elif isinstance(item, TransferFailed):
                failed = True
                self._after_failure(item)
        if failed:
            step.timers.append(SetTimer(RETRY_TIMER, self.retry_ms))
            return step
        return self._next(step)

    def _after_failure(self, failure: TransferFailed) -> None:
        if failure.error is not None and failure.error.kind is ErrorKind.INSUFFICIENT_BALANCE:
            # Some authorities lack credits that paid us: push them all, then recover.
            self.needs_recover = True
            self.to_synchronize = list(self.client.received_certificates())

    def _next(self, step: Step) -> Step:
        if self.client.busy:
            return step
        upkeep = self._upkeep()
        if upkeep is not None:
            return step.extend(upkeep)
        return self._pay_next(step)

    def _upkeep(self) -> Step | None:
        """What must happen before the next payment, if anything."""
        client = self.client
        if self.to_synchronize:
            return client.synchronize(self.to_synchronize.pop(0))
        if self.needs_recover:
            return client.recover()
        if client.pending is not None or self.needs_confirmation:
            return client.resume()
        return None

    def _pay_next(self, step: Step) -> Step:
        client = self.client
        number = client.next_sequence_number
        if number >= len(self.plan):
            return step
        recipient, amount = self.plan[number]
        try:
            return step.extend(client.transfer(recipient, amount))
        except InsufficientFunds:
            # Paid by others whose payments this wallet has not seen: ask the authorities.
            # A quorum may vouch for less than was paid when honest authorities outside
            # the payers' quorums lack the credits: push what we received to all first.
            self.needs_recover = True
            self.to_synchronize = list(self.client.received_certificates())
            step.timers.append(SetTimer(RETRY_TIMER, self.retry_ms))
            return step


# ---------------------------------------------------------------- sharded authorities


class ShardedAuthority:
    """All `AuthorityShard`s of one authority in one simulated node.

    Requests go to the shard `request_shard` names; a shard's cross-shard `Call` to its
    own authority travels through the simulated network back to this node like any
    call.  Each shard keeps its records under its own key prefix, numbers its calls and
    names its timers independently, so this node renumbers calls and prefixes timers.
    A crash takes every shard down together (one process per authority);
    `restart_shard` models the crash of one shard's process alone.
    """

    def __init__(
        self,
        keys: KeyPair,
        committee: Committee,
        shard_count: int,
        genesis: Mapping[bytes, int],
        storage: Storage,
    ) -> None:
        self.keys = keys
        self.committee = committee
        self.genesis = dict(genesis)
        self.shard_count = shard_count
        self.shards = [self._build_shard(index, storage) for index in range(shard_count)]
        self._calls: dict[int, tuple[int, int]] = {}
        self._timers: set[str] = set()
        self._next_request_id = 1

    def _build_shard(self, index: int, storage: Storage) -> AuthorityShard:
        return AuthorityShard(
            self.keys,
            self.committee,
            shard=index,
            shard_count=self.shard_count,
            genesis=self.genesis,
            storage=_unprefixed(storage, _shard_prefix(index)),
        )

    @property
    def node_id(self) -> NodeId:
        return self.keys.node_id

    def restart_shard(self, index: int, storage: Storage, now_ms: int) -> Step:
        """Rebuild shard `index` alone from this node's `storage` and start it again.

        The crash of one shard's process while the others run on: the shard keeps
        exactly what it persisted, answers to its calls in flight are dropped, its
        timers are cancelled, and `Started` makes it re-send its outbox.
        """
        self.shards[index] = self._build_shard(index, storage)
        self._calls = {key: call for key, call in self._calls.items() if call[0] != index}
        prefix = f"{index}:"
        lapsed = sorted(name for name in self._timers if name.startswith(prefix))
        self._timers.difference_update(lapsed)
        step = Step(timers=[CancelTimer(name) for name in lapsed])
        return step.extend(self._on_shard(index, Started(), now_ms))

    def handle(self, event: Input, now_ms: int) -> Step:
        if isinstance(event, RequestReceived):
            return self._on_shard(self._shard_for(event.body), event, now_ms)
        if isinstance(event, Response | CallFailed):
            entry = self._calls.pop(event.request_id, None)
            if entry is None:
                return Step()
            shard, request_id = entry
            if isinstance(event, Response):
                inner: Input = Response(event.server, request_id, event.body)
            else:
                inner = CallFailed(event.server, request_id, event.reason)
            return self._on_shard(shard, inner, now_ms)
        if isinstance(event, TimerFired):
            self._timers.discard(event.name)
            shard_text, _, name = event.name.partition(":")
            if shard_text.isdigit() and int(shard_text) < len(self.shards):
                return self._on_shard(int(shard_text), TimerFired(name), now_ms)
            return Step()
        step = Step()
        for index in range(len(self.shards)):
            step.extend(self._on_shard(index, event, now_ms))
        return step

    def _shard_for(self, body: Any) -> int:
        request = body
        if isinstance(body, bytes):
            return 0  # undecodable: any shard answers MALFORMED
        try:
            return request_shard(request, len(self.shards))
        except (AttributeError, TypeError):
            return 0  # a reply sent as a request: any shard refuses it

    def _on_shard(self, index: int, event: Input, now_ms: int) -> Step:
        inner = self.shards[index].handle(event, now_ms)
        prefix = _shard_prefix(index)
        step = Step(events=list(inner.events))
        step.persist = [Persist(prefix + record.key, record.value) for record in inner.persist]
        for outgoing in inner.outgoing:
            if isinstance(outgoing, Call):
                request_id = self._next_request_id
                self._next_request_id += 1
                self._calls[request_id] = (index, outgoing.request_id)
                step.outgoing.append(Call(outgoing.to, request_id, outgoing.body))
            else:
                step.outgoing.append(outgoing)
        for command in inner.timers:
            name = f"{index}:{command.name}"
            if isinstance(command, SetTimer):
                self._timers.add(name)
                step.timers.append(SetTimer(name, command.delay_ms))
            else:
                self._timers.discard(name)
                step.timers.append(CancelTimer(name))
        return step


def _shard_prefix(index: int) -> bytes:
    return b"shard-%d/" % index


def _unprefixed(storage: Storage, prefix: bytes) -> dict[bytes, bytes]:
    return {key[len(prefix) :]: value for key, value in storage.items() if key.startswith(prefix)}


# ---------------------------------------------------------------- Byzantine nodes


class ByzantineAuthority:
    """An authority that runs the honest shard and lies in its replies (see module)."""

    def __init__(
        self, inner: AuthorityShard | ShardedAuthority, behaviour: str, rng: random.Random
    ) -> None:
        self.inner = inner
        self.behaviour = behaviour
        self.rng = rng

    @property
    def node_id(self) -> NodeId:
        return self.inner.node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        honest = self.inner.handle(event, now_ms)
        if not isinstance(event, RequestReceived):
            return Step(outgoing=list(honest.outgoing), timers=list(honest.timers))
        reply = self._answer(event.body, honest)
        if reply is None:
            return Step()
        return Step(outgoing=[Reply(event.client, event.request_id, reply)])

    def _answer(self, request: Any, honest: Step) -> Any:
        honest_reply = next(item.body for item in honest.outgoing if isinstance(item, Reply))
        rng = self.rng
        if self.behaviour == "silent":
            return None
        if self.behaviour == "garbage":
            return RawBytes(rng.randbytes(rng.randint(0, 48)))
        if self.behaviour == "promiscuous":
            if isinstance(request, TransferOrder) and transfer_order_is_valid(request):
                return make_vote(self.inner.keys, request)
            return honest_reply
        # liar
        if isinstance(request, TransferOrder):
            transfer = request.transfer
            forged = Transfer(
                transfer.sender,
                transfer.recipient,
                max(1, transfer.amount - 1),
                transfer.sequence_number,
            )
            return make_vote(self.inner.keys, TransferOrder(forged, request.signature))
        kinds = list(ErrorKind)
        return ErrorReply(
            kind=kinds[rng.randrange(len(kinds))],
            expected_sequence_number=rng.randrange(4),
        )


class EquivocatingClient:
    """A Byzantine account owner: two orders for sequence number 0, one per honest half.

    It keeps asking (every `retry_ms`) until both orders are certified or it gave up,
    and sends each certificate it obtains to the half that voted for it.
    """

    def __init__(  # noqa: PLR0917 - the whole attack is configuration
        self,
        keys: KeyPair,
        committee: Committee,
        halves: tuple[list[NodeId], list[NodeId]],
        accomplices: list[NodeId],
        recipients: tuple[bytes, bytes],
        amount: int,
        retry_ms: int,
    ) -> None:
        self.keys = keys
        self.committee = committee
        self.targets = [halves[0] + accomplices, halves[1] + accomplices]
        self.orders = [
            make_transfer_order(keys, Transfer(keys.node_id, recipient, amount, 0))
            for recipient in recipients
        ]
        self.votes: list[dict[NodeId, SignedTransferOrder]] = [{}, {}]
        self.certified = [False, False]
        self.retry_ms = retry_ms
        self.rounds = 0
        self._next_request_id = 1

    @property
    def node_id(self) -> NodeId:
        return self.keys.node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        if isinstance(event, Started) or (
            isinstance(event, TimerFired) and event.name == RETRY_TIMER
        ):
            return self._ask()
        if isinstance(event, Response):
            return self._count(event)
        return Step()

    def _call(self, step: Step, to: NodeId, body: Any) -> None:
        step.outgoing.append(Call(to=to, request_id=self._next_request_id, body=body))
        self._next_request_id += 1

    def _ask(self) -> Step:
        step = Step()
        self.rounds += 1
        if all(self.certified) or self.rounds > 10:
            return step
        for side, order in enumerate(self.orders):
            if not self.certified[side]:
                for authority in self.targets[side]:
                    self._call(step, authority, order)
        step.timers.append(SetTimer(RETRY_TIMER, self.retry_ms))
        return step

    def _count(self, event: Response) -> Step:
        step = Step()
        vote = event.body
        if not isinstance(vote, SignedTransferOrder) or vote.authority != event.server:
            return step
        for side, order in enumerate(self.orders):
            if vote.order.transfer != order.transfer or not vote_is_valid(vote):
                continue
            self.votes[side][NodeId(vote.authority)] = vote
            if not self.certified[side] and self.committee.reaches_quorum(self.votes[side]):
                self.certified[side] = True
                certificate = CertifiedTransferOrder(
                    order=order,
                    signatures=[
                        AuthoritySignature(name, self.votes[side][name].signature)
                        for name in sorted(self.votes[side])
                    ],
                )
                for authority in self.targets[side]:
                    self._call(step, authority, ConfirmationOrder(certificate))
        return step


class ForgingClient:
    """A Byzantine client with no account of its own that works with public material.

    Every `interval_ms` it reads the honest clients' accounts at every authority.  When
    a quorum shows pending votes for one transfer, it builds a certificate from them
    around an order signature of its own making (64 random bytes: the sender never
    signed it) and sends it to every authority; and it replays every certificate the
    authorities hand out to all of them.  Honest authorities must never apply or keep a
    certificate whose sender did not sign it (`forged_certificates_kept`).
    """

    def __init__(
        self,
        keys: KeyPair,
        committee: Committee,
        victims: list[NodeId],
        rng: random.Random,
        interval_ms: int,
    ) -> None:
        self.keys = keys
        self.committee = committee
        self.victims = victims
        self.rng = rng
        self.interval_ms = interval_ms
        self.rounds = 0
        self.forged = 0
        self.replayed = 0
        self._votes: dict[Transfer, dict[NodeId, SignedTransferOrder]] = {}
        self._sent: set[Transfer] = set()
        self._next_request_id = 1

    @property
    def node_id(self) -> NodeId:
        return self.keys.node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        if isinstance(event, Started) or (
            isinstance(event, TimerFired) and event.name == RETRY_TIMER
        ):
            return self._look()
        if isinstance(event, Response) and isinstance(event.body, AccountInfoResponse):
            return self._use(NodeId(event.server), event.body)
        return Step()

    def _call(self, step: Step, to: NodeId, body: Any) -> None:
        step.outgoing.append(Call(to=to, request_id=self._next_request_id, body=body))
        self._next_request_id += 1

    def _look(self) -> Step:
        step = Step()
        self.rounds += 1
        if self.rounds > FORGER_ROUNDS:
            return step
        for victim in self.victims:
            for authority in self.committee.members:
                self._call(step, authority, AccountInfoRequest(account=victim, sequence_number=0))
        step.timers.append(SetTimer(RETRY_TIMER, self.interval_ms))
        return step

    def _use(self, authority: NodeId, info: AccountInfoResponse) -> Step:
        step = Step()
        if info.requested_certificate is not None and self.replayed < FORGER_REPLAYS:
            self.replayed += 1
            for member in self.committee.members:
                self._call(step, member, ConfirmationOrder(info.requested_certificate))
        vote = info.pending
        if vote is None or vote.authority != authority:
            return step
        transfer = vote.order.transfer
        votes = self._votes.setdefault(transfer, {})
        votes[authority] = vote
        if transfer in self._sent or not self.committee.reaches_quorum(votes):
            return step
        self._sent.add(transfer)
        self.forged += 1
        forged = CertifiedTransferOrder(
            order=TransferOrder(transfer, self.rng.randbytes(64)),
            signatures=[AuthoritySignature(name, votes[name].signature) for name in sorted(votes)],
        )
        for member in self.committee.members:
            self._call(step, member, ConfirmationOrder(forged))
        return step


FORGER_ROUNDS = 30
"""How many times the forging client reads the accounts (bounds its cost per run)."""
FORGER_REPLAYS = 50
"""How many public certificates it replays to every authority."""


def forged_certificates_kept(world: World, authorities: Sequence[NodeRef]) -> int:
    """Certificates that `authorities` applied or keep whose order its sender did not
    sign (0 when honest authorities check certificates completely)."""
    kept = 0
    for authority in authorities:
        for shard in authority_shards(world, authority):
            for account in shard.accounts.values():
                for certificate in [*account.confirmed, *account.received]:
                    if not transfer_order_is_valid(certificate.order, shard.network):
                        kept += 1
    return kept


# ---------------------------------------------------------------- worlds built by hand


Balances = Mapping[NodeId, int] | Mapping[bytes, int]
"""Account -> balance (a genesis)."""

ReplyRewrite = Callable[[Any, Any], Any]
"""(request, honest reply) -> what a scripted authority answers instead: a message,
`RawBytes` (sent as they are), or None (no answer at all)."""


class ScriptedAuthority:
    """An authority that keeps its state honestly but answers what a test says.

    Every request is handled by the honest `inner` authority, so its records, events and
    cross-shard traffic between its own shards stay as they are; only its answers to
    other nodes are replaced by `rewrite(request, honest reply)`.  `rewrite` may be
    changed at any time; None answers honestly.
    """

    def __init__(self, inner: ShardedAuthority, rewrite: ReplyRewrite | None) -> None:
        self.inner = inner
        self.rewrite = rewrite

    @property
    def node_id(self) -> NodeId:
        return self.inner.node_id

    def handle(self, event: Input, now_ms: int) -> Step:
        step = self.inner.handle(event, now_ms)
        rewrite = self.rewrite
        if (
            rewrite is None
            or not isinstance(event, RequestReceived)
            or event.client == self.node_id.hex()  # a sibling shard's cross-shard update
        ):
            return step
        outgoing = []
        for item in step.outgoing:
            if not isinstance(item, Reply) or item.request_id != event.request_id:
                outgoing.append(item)
                continue
            body = rewrite(event.body, item.body)
            if body is not None:
                outgoing.append(Reply(item.client, item.request_id, body))
        step.outgoing = outgoing
        return step


def add_authorities(
    world: World,
    authorities: Sequence[KeyPair],
    genesis: Balances,
    *,
    shards: int = 1,
    weights: Mapping[NodeId, int] | None = None,
    authority_genesis: Mapping[NodeId, Balances] | None = None,
    scripted: Mapping[NodeId, ReplyRewrite | None] | None = None,
) -> Committee:
    """Add and start one node per authority (a `ShardedAuthority` of `shards` shards);
    return their committee.

    Every authority starts from `genesis`, updated by its own `authority_genesis` entry
    (authorities that disagree).  Weights are equal unless `weights` says otherwise.  The
    authorities named in `scripted` are `ScriptedAuthority`s with that rewrite.
    """
    names = [keys.node_id for keys in authorities]
    committee = Committee(weights) if weights else Committee.equal_weights(names)
    overrides = authority_genesis or {}
    scripts = scripted or {}
    factories = {}
    for keys in authorities:
        balances = {bytes(account): balance for account, balance in genesis.items()}
        balances.update({bytes(a): b for a, b in overrides.get(keys.node_id, {}).items()})
        factories[keys.node_id] = _sharded_factory(keys, committee, shards, balances, scripts)
    world.add_nodes(factories, MESSAGE_CODEC)
    return committee


def _sharded_factory(
    keys: KeyPair,
    committee: Committee,
    shards: int,
    genesis: dict[bytes, int],
    scripts: Mapping[NodeId, ReplyRewrite | None],
) -> NodeFactory:
    def build(storage: Storage, rng: random.Random) -> ShardedAuthority | ScriptedAuthority:
        authority = ShardedAuthority(keys, committee, shards, genesis, storage)
        if keys.node_id in scripts:
            return ScriptedAuthority(authority, scripts[keys.node_id])
        return authority

    return build


def add_client(world: World, keys: KeyPair, committee: Committee, *, balance: int = 0) -> Client:
    """Add and start the `Client` of `keys`'s account, which knows of `balance` at first
    (a restart rebuilds it from its records); return it."""

    def build(storage: Storage, rng: random.Random) -> Client:
        return Client(keys, committee, balance=balance, storage=storage)

    world.add_nodes({keys.node_id: build}, REPLY_CODEC)
    return world.core(keys.node_id, Client)


def shards_of(core: object) -> list[AuthorityShard]:
    """The shards an authority's core runs, in shard order, through any wrapper (none
    for a core that is no authority)."""
    while isinstance(core, ScriptedAuthority | ByzantineAuthority):
        core = core.inner
    if isinstance(core, ShardedAuthority):
        return list(core.shards)
    if isinstance(core, AuthorityShard):
        return [core]
    return []


def authority_shards(world: World, authority: NodeRef) -> list[AuthorityShard]:
    """The running shards of an authority node, in shard order (through any wrapper)."""
    shards = shards_of(world.node(authority).core)
    if not shards:
        raise LookupError(f"node {world.node(authority).index} runs no authority (or is down)")
    return shards


def account_at(world: World, authority: NodeRef, account: bytes) -> AccountState:
    """`account` as an authority's shard that keeps it sees it."""
    shards = authority_shards(world, authority)
    return shards[shard_of(account, len(shards))].account(account)


def restart_shard(world: World, authority: NodeRef, index: int) -> None:
    """Crash shard `index` of a running `ShardedAuthority` alone and restart it from
    what it persisted (`ShardedAuthority.restart_shard`)."""
    core = world.node(authority).core
    if isinstance(core, ScriptedAuthority):
        core = core.inner
    if not isinstance(core, ShardedAuthority):
        raise LookupError(f"node {world.node(authority).index} runs no sharded authority")
    world.apply(authority, core.restart_shard(index, world.node(authority).storage, world.now_ms))


# ---------------------------------------------------------------- the scenario


@dataclass(slots=True)
class FastPayScenario:
    """See the module docstring."""

    authorities: int = 4
    byzantine: int = 1
    clients: int = 4
    transfers: int = 3
    shards: int = 1
    funding: int = 100
    collude: bool = False
    retry_ms: int = 300
    restore_probability: float = 0.3
    forger: bool = True
    forger_interval_ms: int = 100
    name: str = "fastpay"
    genesis: dict[bytes, int] = field(default_factory=dict)
    _authority_keys: list[KeyPair] = field(default_factory=list)
    _client_keys: list[KeyPair] = field(default_factory=list)
    _equivocator: KeyPair | None = None
    _confirmed: dict[str, int] = field(default_factory=dict)
    _goal: dict[str, int] = field(default_factory=dict)
    _debited: set[tuple[str, str, int]] = field(default_factory=set)
    _credited: set[tuple[str, str, int]] = field(default_factory=set)
    _honest: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not 0 <= self.byzantine <= self.authorities:
            raise ValueError("byzantine count out of range")
        if self.clients < 2:
            raise ValueError("at least two clients pay each other")
        if self.shards < 1:
            raise ValueError("an authority has at least one shard")
        self._authority_keys = [authority_keys(i) for i in range(self.authorities)]
        self._client_keys = [account_keys(i) for i in range(self.clients)]
        self._equivocator = account_keys(self.clients)
        self.genesis = {keys.node_id: self.funding for keys in self._client_keys}
        self.genesis[self._equivocator.node_id] = self.funding
        self._honest = self.honest_authorities()

    @property
    def committee(self) -> Committee:
        return Committee.equal_weights(keys.node_id for keys in self._authority_keys)

    def honest_authorities(self) -> set[str]:
        return {keys.node_id.hex() for keys in self._authority_keys[self.byzantine :]}

    def honest_clients(self) -> set[str]:
        return {keys.node_id.hex() for keys in self._client_keys}

    def build(self, world: World) -> None:
        committee = self.committee
        for index, keys in enumerate(self._authority_keys):
            if index < self.byzantine:
                behaviour = "promiscuous" if self.collude else BEHAVIOURS[world.rng.randrange(4)]
                factory = self._byzantine_factory(keys, committee, behaviour)
                world.add_node(keys.node_id, factory, MESSAGE_CODEC, byzantine=True)
            else:
                world.add_node(
                    keys.node_id, self._authority_factory(keys, committee), MESSAGE_CODEC
                )
        plans = {keys.node_id: self._draw_plan(world.rng, keys) for keys in self._client_keys}
        self._add_sweeps(plans)
        for keys in self._client_keys:
            plan = plans[keys.node_id]
            self._goal[keys.node_id.hex()] = len(plan) - 1
            world.add_node(keys.node_id, self._client_factory(keys, committee, plan), REPLY_CODEC)
        world.add_node(
            self._equivocator_keys.node_id,
            self._equivocator_factory(committee),
            REPLY_CODEC,
            byzantine=True,
        )
        if self.forger:
            world.add_node(
                self.forger_keys.node_id,
                self._forger_factory(committee),
                REPLY_CODEC,
                byzantine=True,
            )
        world.observe(self._track)

    @property
    def forger_keys(self) -> KeyPair:
        """The forging client's keys (it owns no funded account)."""
        return account_keys(self.clients + 1)

    def _forger_factory(self, committee: Committee) -> Any:
        keys, interval_ms = self.forger_keys, self.forger_interval_ms
        victims = [keys.node_id for keys in self._client_keys]

        def build(storage: Storage, rng: random.Random) -> ForgingClient:
            return ForgingClient(keys, committee, victims, rng, interval_ms)

        return build

    @property
    def _equivocator_keys(self) -> KeyPair:
        assert self._equivocator is not None
        return self._equivocator

    def _draw_plan(self, rng: random.Random, keys: KeyPair) -> list[tuple[bytes, int]]:
        others = [other.node_id for other in self._client_keys if other is not keys]
        budget = self.funding // max(1, self.transfers)
        return [
            (others[rng.randrange(len(others))], rng.randint(1, max(1, budget)))
            for _ in range(self.transfers)
        ]

    def _add_sweeps(self, plans: dict[NodeId, list[tuple[bytes, int]]]) -> None:
        """End each plan with a payment of everything left: the funding, less the plan,
        plus what the other plans (not their sweeps, so no plan waits on another's
        sweep) pay this client.  The client only knows of those payments from the
        authorities."""
        incoming = dict.fromkeys(plans, 0)
        for plan in plans.values():
            for recipient, amount in plan:
                incoming[NodeId(recipient)] = incoming.get(NodeId(recipient), 0) + amount
        names = list(plans)
        for position, name in enumerate(names):
            plan = plans[name]
            left = self.funding - sum(amount for _, amount in plan) + incoming[name]
            if left > 0:
                plan.append((names[(position + 1) % len(names)], left))

    def _authority(
        self, keys: KeyPair, committee: Committee, storage: Storage
    ) -> AuthorityShard | ShardedAuthority:
        if self.shards == 1:
            return AuthorityShard(keys, committee, genesis=self.genesis, storage=storage)
        return ShardedAuthority(keys, committee, self.shards, self.genesis, storage)

    def _authority_factory(self, keys: KeyPair, committee: Committee) -> Any:
        def build(storage: Storage, rng: random.Random) -> AuthorityShard | ShardedAuthority:
            return self._authority(keys, committee, storage)

        return build

    def _byzantine_factory(self, keys: KeyPair, committee: Committee, behaviour: str) -> Any:
        def build(storage: Storage, rng: random.Random) -> ByzantineAuthority:
            return ByzantineAuthority(self._authority(keys, committee, storage), behaviour, rng)

        return build

    def _client_factory(
        self, keys: KeyPair, committee: Committee, plan: list[tuple[bytes, int]]
    ) -> Any:
        funding, retry_ms, restore = self.funding, self.retry_ms, self.restore_probability

        def build(storage: Storage, rng: random.Random) -> ClientNode:
            if storage and rng.random() < restore:
                # The wallet file is lost: the user has the key and nothing else.
                return ClientNode(Client(keys, committee), plan, retry_ms, forget=list(storage))
            client = Client(keys, committee, balance=funding, storage=storage)
            return ClientNode(client, plan, retry_ms)

        return build

    def _equivocator_factory(self, committee: Committee) -> Any:
        honest = [keys.node_id for keys in self._authority_keys[self.byzantine :]]
        accomplices = [keys.node_id for keys in self._authority_keys[: self.byzantine]]
        halves = (honest[: len(honest) // 2], honest[len(honest) // 2 :])
        recipients = (self._client_keys[0].node_id, self._client_keys[1].node_id)
        keys, funding, retry_ms = self._equivocator_keys, self.funding, self.retry_ms

        def build(storage: Storage, rng: random.Random) -> EquivocatingClient:
            return EquivocatingClient(
                keys, committee, halves, accomplices, recipients, funding, retry_ms
            )

        return build

    def _track(self, record: Record) -> None:
        if record["kind"] == "event" and record["node"] in self._honest:
            for kind, keys in (
                ("TransferApplied", self._debited),
                ("TransferCredited", self._credited),
            ):
                found = events_of(record, kind)
                if found is not None:
                    transfer = found["transfer"]
                    keys.add((record["node"], transfer["sender"], transfer["sequence_number"]))
        event = events_of(record, "TransferConfirmed")
        if event is not None and record["node"] in self._goal:
            number = event["certificate"]["order"]["transfer"]["sequence_number"]
            self._confirmed[record["node"]] = max(self._confirmed.get(record["node"], -1), number)

    def checkers(self) -> list[Checker]:
        return [
            NoDoubleSpendChecker(self.honest_authorities() | self.honest_clients()),
            ConservationChecker(self.honest_authorities(), dict(self.genesis)),
        ]

    def crashable(self, world: World) -> list[int]:
        return [node.index for node in world.correct_nodes()]

    def max_crashed(self) -> int:
        return max(1, (self.authorities - 1) // 3)

    def is_live(self, world: World) -> bool:
        confirmed = all(self._confirmed.get(node, -1) >= goal for node, goal in self._goal.items())
        return confirmed and self._debited <= self._credited


# ---------------------------------------------------------------- checkers


def transfer_of(plain: dict[str, Any]) -> Transfer:
    """Rebuild a `Transfer` from its history form (bytes as hex)."""
    user_data = plain.get("user_data")
    return Transfer(
        sender=bytes.fromhex(plain["sender"]),
        recipient=bytes.fromhex(plain["recipient"]),
        amount=plain["amount"],
        sequence_number=plain["sequence_number"],
        user_data=bytes.fromhex(user_data) if user_data is not None else None,
    )


def _observed_transfer(record: Record, nodes: set[str]) -> Transfer | None:
    if record["kind"] != "event" or record["node"] not in nodes:
        return None
    applied = events_of(record, "TransferApplied")
    if applied is not None:
        return transfer_of(applied["transfer"])
    certified = events_of(record, "TransferCertified")
    if certified is not None:
        return transfer_of(certified["certificate"]["order"]["transfer"])
    return None


@dataclass(slots=True)
class NoDoubleSpendChecker:
    """No two different transfers are applied or certified for one sender and number."""

    nodes: set[str]
    name: str = "double-spend"
    seen: dict[tuple[bytes, int], Transfer] = field(default_factory=dict)

    def observe(self, record: Record) -> list[Violation]:
        transfer = _observed_transfer(record, self.nodes)
        if transfer is None:
            return []
        key = (transfer.sender, transfer.sequence_number)
        first = self.seen.setdefault(key, transfer)
        if not conflicting_transfers([first, transfer]):
            return []
        detail = (
            f"sender {transfer.sender.hex()[:8]} sequence number {transfer.sequence_number}: "
            f"{first.amount} to {first.recipient.hex()[:8]} and {transfer.amount} to "
            f"{transfer.recipient.hex()[:8]} (node {record['node'][:8]})"
        )
        return [Violation(self.name, record["t"], detail)]

    def finish(self) -> list[Violation]:
        return []


@dataclass(slots=True)
class ConservationChecker:
    """Honest authorities apply each sequence number once, in order, and credit each
    applied transfer once, after its debit; no value is made."""

    authorities: set[str]
    genesis: dict[bytes, int]
    name: str = "conservation"
    next_number: dict[tuple[str, bytes], int] = field(default_factory=dict)
    applied: list[Transfer] = field(default_factory=list)
    debited: set[tuple[str, bytes, int]] = field(default_factory=set)
    credited: set[tuple[str, bytes, int]] = field(default_factory=set)

    def observe(self, record: Record) -> list[Violation]:
        if record["kind"] != "event" or record["node"] not in self.authorities:
            return []
        credited = events_of(record, "TransferCredited")
        if credited is not None:
            return self._observe_credit(record, transfer_of(credited["transfer"]))
        event = events_of(record, "TransferApplied")
        if event is None:
            return []
        transfer = transfer_of(event["transfer"])
        key = (record["node"], transfer.sender)
        expected = self.next_number.get(key, 0)
        self.next_number[key] = expected + 1
        self.applied.append(transfer)
        self.debited.add((record["node"], transfer.sender, transfer.sequence_number))
        if transfer.sequence_number != expected:
            detail = (
                f"authority {record['node'][:8]} applied sequence number "
                f"{transfer.sequence_number} of {transfer.sender.hex()[:8]}, expected {expected}"
            )
            return [Violation(self.name, record["t"], detail)]
        return self._check_balances(record["t"])

    def _observe_credit(self, record: Record, transfer: Transfer) -> list[Violation]:
        key = (record["node"], transfer.sender, transfer.sequence_number)
        where = f"authority {record['node'][:8]}, {transfer.sender.hex()[:8]}#"
        if key not in self.debited:
            detail = f"{where}{transfer.sequence_number} credited before it was debited"
            return [Violation(self.name, record["t"], detail)]
        if key in self.credited:
            detail = f"{where}{transfer.sequence_number} credited twice"
            return [Violation(self.name, record["t"], detail)]
        self.credited.add(key)
        return []

    def _check_balances(self, at_ms: int) -> list[Violation]:
        balances = balances_after(self.genesis, self.applied)
        supply = sum(self.genesis.values())
        if sum(balances.values()) != supply:
            return [Violation(self.name, at_ms, "the total of all balances changed")]
        overdrawn = sorted(account for account, balance in balances.items() if balance < 0)
        if overdrawn:
            detail = f"account {overdrawn[0].hex()[:8]} spent more than it ever had"
            return [Violation(self.name, at_ms, detail)]
        return []

    def finish(self) -> list[Violation]:
        return []
