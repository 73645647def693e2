"""FastPay from Python on real sockets: authority shards (`FastPayShard`) and a wallet
(`WalletClient`) in one process, on 127.0.0.1 with ports the system picks.

A transfer moves the money at a quorum and survives the shards' restart from SQLite; one
shard is run by one runner at a time; with the authorities down a signed order stays in
the saved wallet and is resumed, not signed anew."""

from __future__ import annotations

import dataclasses
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from runtime_helpers import asynchronous

from synod.core import Call, Reply, RequestReceived, Response, Step
from synod.crypto import KeyPair
from synod.fastpay.client import Client
from synod.fastpay.config import AuthorityEntry, CommitteeFile
from synod.fastpay.messages import (
    REPLY_CODEC,
    REQUEST_CODEC,
    AccountInfoResponse,
    AuthoritySignature,
    CertifiedTransferOrder,
    ConfirmationOrder,
    ErrorKind,
    ErrorReply,
    SignedTransferOrder,
    Transfer,
    TransferOrder,
    certify,
    encode_balance,
    make_transfer_order,
    make_vote,
)
from synod.fastpay.wallet import Accounts, TransferError, UnknownAccount
from synod.runtime.fastpay_node import FastPayShard, ShardAlreadyRunning, ShardStoreMismatch
from synod.runtime.fastpay_wallet import AccountsFile, WalletClient
from synod.runtime.rpc import RpcClient, RpcReply

pytestmark = pytest.mark.timeout(30)

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
ALICE, BOB = KeyPair.from_seed(b"a" * 32), KeyPair.from_seed(b"b" * 32)
ANY_PORT = CommitteeFile(
    tuple(AuthorityEntry(keys.node_id, "127.0.0.1", 0, 1) for keys in AUTHORITIES)
)


async def start_shards(directory: Path, genesis: Mapping[bytes, int]) -> list[FastPayShard]:
    shards = [
        FastPayShard(keys, ANY_PORT, 0, genesis, directory / f"authority{index}.sqlite")
        for index, keys in enumerate(AUTHORITIES)
    ]
    for shard in shards:
        await shard.start()
    return shards


def listening(shards: list[FastPayShard]) -> CommitteeFile:
    return CommitteeFile(tuple(shard.authority for shard in shards))


def funded() -> Accounts:
    accounts = Accounts()
    accounts.add(ALICE, 100)
    accounts.add(BOB)
    return accounts


@asynchronous
async def test_a_transfer_moves_money_at_a_quorum_and_survives_a_restart(tmp_path: Path) -> None:
    accounts = funded()
    shards = await start_shards(tmp_path, accounts.genesis())
    try:
        async with WalletClient(listening(shards), accounts, timeout_ms=5000) as wallet:
            done = await wallet.transfer(ALICE.node_id, BOB.node_id, 30)
            assert done.certificate.transfer.amount == 30 and done.resumed is None
            assert done.balance == 70 and done.uncounted == ()
            assert wallet.known_balance(BOB.node_id) == 30  # Bob's wallet counted it
    finally:
        for shard in shards:
            await shard.stop()
    shards = await start_shards(tmp_path, accounts.genesis())
    try:
        async with WalletClient(listening(shards), accounts, timeout_ms=5000) as wallet:
            assert await wallet.query_balance(ALICE.node_id) == 70
            assert await wallet.query_balance(BOB.node_id) == 30
            with pytest.raises(TransferError, match="exceeds the known balance 70"):
                await wallet.transfer(ALICE.node_id, BOB.node_id, 71)
            with pytest.raises(UnknownAccount):
                await wallet.query_balance(KeyPair.from_seed(b"c" * 32).node_id)
    finally:
        for shard in shards:
            await shard.stop()


@asynchronous
async def test_one_shard_has_one_runner_at_a_time(tmp_path: Path) -> None:
    storage = tmp_path / "authority0.sqlite"
    first = FastPayShard(AUTHORITIES[0], ANY_PORT, 0, {}, storage)
    async with first:
        second = FastPayShard(AUTHORITIES[0], ANY_PORT, 0, {}, storage)
        with pytest.raises(ShardAlreadyRunning, match="already running"):
            await second.start()
    async with FastPayShard(AUTHORITIES[0], ANY_PORT, 0, {}, storage) as again:
        assert again.address[1] != 0


def test_a_shard_outside_its_authority_or_committee_is_refused(tmp_path: Path) -> None:
    storage = tmp_path / "shard.sqlite"
    with pytest.raises(ValueError, match=r"shards 0\.\.0"):
        FastPayShard(AUTHORITIES[0], ANY_PORT, 1, {}, storage)
    with pytest.raises(ValueError, match="not in the committee"):
        FastPayShard(ALICE, ANY_PORT, 0, {}, storage)
    two_shards = CommitteeFile((AuthorityEntry(AUTHORITIES[0].node_id, "127.0.0.1", 0, 2),))
    with pytest.raises(ValueError, match="port 0"):
        FastPayShard(AUTHORITIES[0], two_shards, 0, {}, storage)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynchronous
async def test_with_the_authorities_down_the_signed_order_is_saved_then_resumed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "accounts.json"
    accounts = AccountsFile.open(path, missing_ok=True)
    accounts.add(ALICE, 100)
    accounts.add(BOB)
    accounts.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    nobody = CommitteeFile(
        tuple(AuthorityEntry(k.node_id, "127.0.0.1", closed_port(), 1) for k in AUTHORITIES)
    )
    async with WalletClient(nobody, accounts, timeout_ms=200) as wallet:
        with pytest.raises(TransferError, match="stays pending") as raised:
            await wallet.transfer(ALICE.node_id, BOB.node_id, 5)
    assert raised.value.failure is not None and raised.value.failure.stage == "vote"
    accounts.unlock()

    reopened = AccountsFile.open(path)
    try:
        shards = await start_shards(tmp_path, reopened.genesis())
        try:
            async with WalletClient(listening(shards), reopened, timeout_ms=5000) as wallet:
                assert wallet.pending_sequence_number(ALICE.node_id) == 0
                done = await wallet.transfer(ALICE.node_id, BOB.node_id, 7)
                assert done.resumed is not None and done.resumed.transfer.amount == 5
                assert done.certificate.transfer.sequence_number == 1
                assert await wallet.query_balance(BOB.node_id) == 12
        finally:
            for shard in shards:
                await shard.stop()
    finally:
        reopened.unlock()


async def refused_once(accounts: Accounts, sender: KeyPair, recipient: bytes, amount: int) -> None:
    """A transfer attempted while every authority is down: it fails, its order pending."""
    nobody = CommitteeFile(
        tuple(AuthorityEntry(k.node_id, "127.0.0.1", closed_port(), 1) for k in AUTHORITIES)
    )
    async with WalletClient(nobody, accounts, timeout_ms=200) as wallet:
        with pytest.raises(TransferError, match="stays pending"):
            await wallet.transfer(sender.node_id, recipient, amount)


@asynchronous
async def test_the_same_transfer_retried_after_a_failure_is_paid_once(tmp_path: Path) -> None:
    accounts = funded()
    await refused_once(accounts, ALICE, BOB.node_id, 10)
    shards = await start_shards(tmp_path, accounts.genesis())
    try:
        async with WalletClient(listening(shards), accounts, timeout_ms=5000) as wallet:
            done = await wallet.transfer(ALICE.node_id, BOB.node_id, 10)
            assert done.retried and done.resumed is None
            assert done.certificate.transfer.sequence_number == 0
            assert await wallet.query_balance(BOB.node_id) == 10  # not 20
            assert await wallet.query_balance(ALICE.node_id) == 90
            assert await wallet.finish(ALICE.node_id) is None  # nothing left pending
    finally:
        for shard in shards:
            await shard.stop()


@asynchronous
async def test_finish_completes_a_pending_order_without_a_new_payment(tmp_path: Path) -> None:
    accounts = funded()
    await refused_once(accounts, ALICE, BOB.node_id, 4)
    shards = await start_shards(tmp_path, accounts.genesis())
    try:
        async with WalletClient(listening(shards), accounts, timeout_ms=5000) as wallet:
            certificate = await wallet.finish(ALICE.node_id)
            assert certificate is not None and certificate.transfer.amount == 4
            assert wallet.pending_order(ALICE.node_id) is None
            assert await wallet.query_balance(BOB.node_id) == 4
    finally:
        for shard in shards:
            await shard.stop()


@asynchronous
async def test_a_wallet_restored_from_its_key_spends_payments_from_other_wallets(
    tmp_path: Path,
) -> None:
    carol = KeyPair.from_seed(b"c" * 32)
    alice_wallet, carol_wallet = Accounts(), Accounts()
    alice_wallet.add(ALICE, 100)
    carol_wallet.add(carol, 50)
    genesis = {**alice_wallet.genesis(), **carol_wallet.genesis()}
    shards = await start_shards(tmp_path, genesis)
    try:
        committee = listening(shards)
        async with WalletClient(committee, alice_wallet, timeout_ms=5000) as wallet:
            await wallet.transfer(ALICE.node_id, BOB.node_id, 30)
        async with WalletClient(committee, carol_wallet, timeout_ms=5000) as wallet:
            await wallet.transfer(carol.node_id, ALICE.node_id, 50)
        # Alice's wallet file is lost: she has her key and nothing else.
        restored = Accounts()
        restored.add(ALICE)
        async with WalletClient(committee, restored, timeout_ms=5000) as wallet:
            done = await wallet.transfer(ALICE.node_id, BOB.node_id, 120)  # 100 - 30 + 50
            assert done.recovered and done.certificate.transfer.sequence_number == 1
            assert await wallet.query_balance(ALICE.node_id) == 0
    finally:
        for shard in shards:
            await shard.stop()


@asynchronous
async def test_a_shard_refuses_a_store_made_for_another_key_or_genesis(tmp_path: Path) -> None:
    storage = tmp_path / "shard.sqlite"
    async with FastPayShard(AUTHORITIES[0], ANY_PORT, 0, {ALICE.node_id: 5}, storage):
        pass
    new_keys = KeyPair.from_seed(b"n" * 32)
    other = CommitteeFile(
        (AuthorityEntry(new_keys.node_id, "127.0.0.1", 0, 1), *ANY_PORT.authorities[1:])
    )
    with pytest.raises(ShardStoreMismatch, match="belong to authority"):
        await FastPayShard(new_keys, other, 0, {ALICE.node_id: 5}, storage).start()
    with pytest.raises(ShardStoreMismatch, match="another genesis"):
        await FastPayShard(AUTHORITIES[0], ANY_PORT, 0, {BOB.node_id: 5}, storage).start()
    async with FastPayShard(AUTHORITIES[0], ANY_PORT, 0, {ALICE.node_id: 5}, storage) as same:
        assert same.core.account(ALICE.node_id).balance == 5


@asynchronous
async def test_shards_of_one_network_refuse_a_wallet_of_another(tmp_path: Path) -> None:
    testnet = CommitteeFile(
        tuple(dataclasses.replace(entry, network_id="testnet") for entry in ANY_PORT.authorities)
    )
    accounts = funded()
    shards = [
        FastPayShard(keys, testnet, 0, accounts.genesis(), tmp_path / f"authority{index}.sqlite")
        for index, keys in enumerate(AUTHORITIES)
    ]
    for shard in shards:
        await shard.start()
    try:
        listening_testnet = listening(shards)
        assert listening_testnet.network == b"testnet"
        mainnet = CommitteeFile(
            tuple(
                dataclasses.replace(entry, network_id="mainnet")
                for entry in listening_testnet.authorities
            )
        )
        async with WalletClient(mainnet, accounts, timeout_ms=5000) as wallet:
            with pytest.raises(TransferError, match="bad-signature"):
                await wallet.transfer(ALICE.node_id, BOB.node_id, 5)
        async with WalletClient(listening_testnet, funded(), timeout_ms=5000) as wallet:
            done = await wallet.transfer(ALICE.node_id, BOB.node_id, 5)
            assert done.certificate.transfer.amount == 5
            assert await wallet.query_balance(BOB.node_id) == 5
    finally:
        for shard in shards:
            await shard.stop()


def test_a_part_left_by_a_killed_benchmark_is_merged_then_removed(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    accounts = AccountsFile.open(path, missing_ok=True)
    accounts.add(ALICE, 100)
    accounts.add(BOB)
    accounts.save()
    accounts.unlock()
    # What a killed multi-process run leaves: Alice's wallet, newer, in a part.
    part = AccountsFile(accounts.part_path(0))
    newer = Accounts()
    newer.add(ALICE, 100).records[b"fastpay-client/state"] = b"newer"
    part.wallets = dict(newer.wallets)
    part.save()
    reopened = AccountsFile.open(path)
    try:
        assert reopened.wallet(ALICE.node_id).records == {b"fastpay-client/state": b"newer"}
        assert reopened.wallet(BOB.node_id).records == {} and reopened.dirty
        assert part.path.exists()  # until the accounts file holds it durably
        reopened.save()
        assert not part.path.exists()
    finally:
        reopened.unlock()
    again = AccountsFile.open(path)
    try:
        assert again.wallet(ALICE.node_id).records == {b"fastpay-client/state": b"newer"}
    finally:
        again.unlock()


def certified_but_unconfirmed(amount: int) -> dict[bytes, bytes]:
    """Alice's wallet records when her client stopped right after its order was
    certified, before any authority applied the certificate."""
    committee = ANY_PORT.committee()
    core = Client(ALICE, committee, balance=100)
    records: dict[bytes, bytes] = {}

    def keep(step: Step) -> Step:
        for record in step.persist:
            assert record.value is not None
            records[record.key] = record.value
        return step

    step = keep(core.transfer(BOB.node_id, amount))
    order = core.pending
    assert order is not None
    for call in [output for output in step.outgoing if isinstance(output, Call)][:3]:
        keys = next(keys for keys in AUTHORITIES if keys.node_id == call.to)
        keep(core.handle(Response(call.to, call.request_id, make_vote(keys, order)), 0))
    assert core.unconfirmed is not None and core.pending is None
    return records


@asynchronous
async def test_a_transfer_certified_but_not_confirmed_is_finished_not_paid_again(
    tmp_path: Path,
) -> None:
    accounts = funded()
    accounts.wallet(ALICE.node_id).records = certified_but_unconfirmed(10)
    shards = await start_shards(tmp_path, accounts.genesis())
    try:
        async with WalletClient(listening(shards), accounts, timeout_ms=5000) as wallet:
            done = await wallet.transfer(ALICE.node_id, BOB.node_id, 10)
            assert done.retried and done.certificate.transfer.sequence_number == 0
            assert await wallet.query_balance(BOB.node_id) == 10  # not 20
            assert wallet.core(ALICE.node_id).unconfirmed is None
            # A new payment of the same amount now is a new payment.
            again = await wallet.transfer(ALICE.node_id, BOB.node_id, 10)
            assert not again.retried and again.certificate.transfer.sequence_number == 1
            assert await wallet.query_balance(BOB.node_id) == 20
    finally:
        for shard in shards:
            await shard.stop()


async def ask(shard: FastPayShard, request: object) -> object:
    """One request to a running shard over TCP, as anyone on the network can send it."""
    client = RpcClient(shard.address)
    try:
        result = await client.call(REQUEST_CODEC.encode(request), timeout_s=5)
    finally:
        await client.close()
    assert isinstance(result, RpcReply)
    return REPLY_CODEC.decode(result.body)


@asynchronous
async def test_a_certificate_whose_order_its_sender_never_signed_is_refused(
    tmp_path: Path,
) -> None:
    accounts = funded()
    shards = await start_shards(tmp_path, accounts.genesis())
    try:
        order = make_transfer_order(ALICE, Transfer(ALICE.node_id, BOB.node_id, 5, 0))
        forged = CertifiedTransferOrder(
            TransferOrder(order.transfer, bytes(range(64))),
            certify(order, AUTHORITIES[:3]).signatures,  # valid votes over the transfer
        )
        for shard in shards:
            reply = await ask(shard, ConfirmationOrder(forged))
            assert isinstance(reply, ErrorReply) and reply.kind is ErrorKind.BAD_CERTIFICATE
            assert shard.core.account(BOB.node_id).balance == 0
            assert not shard.core.account(ALICE.node_id).confirmed
    finally:
        for shard in shards:
            await shard.stop()


@asynchronous
async def test_a_pending_order_confirmed_by_someone_else_does_not_block_the_wallet(
    tmp_path: Path,
) -> None:
    accounts = funded()
    await refused_once(accounts, ALICE, BOB.node_id, 10)  # Alice's order stays pending
    pending = Client(ALICE, ANY_PORT.committee(), storage=accounts.wallet(ALICE.node_id).records)
    assert pending.pending is not None
    shards = await start_shards(tmp_path, accounts.genesis())
    try:
        # Anyone holding the (public) order collects votes and confirms it everywhere.
        votes = [await ask(shard, pending.pending) for shard in shards[:3]]
        signatures = [
            AuthoritySignature(vote.authority, vote.signature)
            for vote in votes
            if isinstance(vote, SignedTransferOrder)
        ]
        assert len(signatures) == 3
        certificate = CertifiedTransferOrder(pending.pending, signatures)
        for shard in shards:
            assert isinstance(await ask(shard, ConfirmationOrder(certificate)), AccountInfoResponse)
        async with WalletClient(listening(shards), accounts, timeout_ms=5000) as wallet:
            done = await wallet.transfer(ALICE.node_id, BOB.node_id, 10)  # the retry
            assert done.retried and done.certificate.transfer.sequence_number == 0
            later = await wallet.transfer(ALICE.node_id, BOB.node_id, 20)
            assert later.certificate.transfer.sequence_number == 1
            assert await wallet.query_balance(BOB.node_id) == 30
    finally:
        for shard in shards:
            await shard.stop()


class LazyAuthority:
    """A Byzantine authority: votes honestly, but acknowledges confirmations without
    applying them, so that a quorum it is part of leaves an honest authority behind."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def node_id(self) -> Any:
        return self.inner.node_id

    def handle(self, event: Any, now_ms: int) -> Step:
        if isinstance(event, RequestReceived) and isinstance(event.body, ConfirmationOrder):
            transfer = event.body.certificate.transfer
            fake = AccountInfoResponse(
                transfer.sender, encode_balance(0), transfer.sequence_number + 1
            )
            return Step(outgoing=[Reply(event.client, event.request_id, fake)])
        return cast(Step, self.inner.handle(event, now_ms))


@asynchronous
async def test_payments_an_honest_authority_lacks_are_pushed_before_spending(
    tmp_path: Path,
) -> None:
    carol = KeyPair.from_seed(b"c" * 32)
    alice_wallet, carol_wallet = Accounts(), Accounts()
    alice_wallet.add(ALICE, 100)
    carol_wallet.add(carol, 50)
    genesis = {**alice_wallet.genesis(), **carol_wallet.genesis()}
    shards = await start_shards(tmp_path, genesis)
    try:
        assert shards[0].host is not None
        shards[0].host.core = LazyAuthority(shards[0].host.core)  # type: ignore[assignment]
        await shards[3].stop()  # Carol pays while the fourth authority is down
        committee = listening(shards)
        async with WalletClient(committee, carol_wallet, timeout_ms=500) as wallet:
            await wallet.transfer(carol.node_id, ALICE.node_id, 50)
        shards[3] = FastPayShard(
            AUTHORITIES[3], ANY_PORT, 0, genesis, tmp_path / "authority3.sqlite"
        )
        await shards[3].start()
        assert shards[3].core.account(ALICE.node_id).balance == 100  # it lacks the credit
        # Two honest authorities hold 150; the lazy one and the late one hold 100.
        async with WalletClient(listening(shards), alice_wallet, timeout_ms=5000) as wallet:
            done = await wallet.transfer(ALICE.node_id, BOB.node_id, 150)
            assert done.recovered and done.certificate.transfer.amount == 150
        assert shards[3].core.account(ALICE.node_id).balance == 0
        assert shards[3].core.account(BOB.node_id).balance == 150
    finally:
        for shard in shards:
            await shard.stop()


def test_saves_from_two_threads_never_collide_and_the_last_state_stays(tmp_path: Path) -> None:
    # The wallet loop saves in a worker thread; a wallet cancelled meanwhile (Ctrl-C)
    # saves again on closing, in the event loop's thread.  Both wrote the same
    # temporary file: one rename then failed ("No such file or directory"), or an older
    # state could replace a newer one.
    import threading

    path = tmp_path / "accounts.json"
    accounts = AccountsFile.open(path, missing_ok=True)
    try:
        accounts.add(ALICE, 100)
        failures: list[BaseException] = []

        def save_often() -> None:
            for _ in range(200):
                try:
                    accounts.save()
                except Exception as error:  # collected for the assertion below
                    failures.append(error)

        workers = [threading.Thread(target=save_often) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert failures == []
        accounts.wallet(ALICE.node_id).records[b"fastpay-client/state"] = b"last"
        accounts.save()
    finally:
        accounts.unlock()
    again = AccountsFile.open(path)
    try:
        assert again.wallet(ALICE.node_id).records == {b"fastpay-client/state": b"last"}
    finally:
        again.unlock()
