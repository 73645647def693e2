"""The committee's network id is in every FastPay signature domain: orders, votes,
certificates and cross-shard updates made for one network are refused by the
authorities of another, even with the same keys; the committee file names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from synod.core import Call, Reply, RequestReceived, Response, Step
from synod.crypto import KeyPair
from synod.fastpay.authority import AuthorityShard, StoreMismatch, check_certificate
from synod.fastpay.client import Client, TransferCertified
from synod.fastpay.config import AuthorityEntry, CommitteeFile, FastPayFileError
from synod.fastpay.messages import (
    ConfirmationOrder,
    CrossShardUpdate,
    ErrorKind,
    ErrorReply,
    SignedTransferOrder,
    Transfer,
    certify,
    make_transfer_order,
    make_vote,
    shard_of,
    transfer_order_is_valid,
    vote_is_valid,
)
from synod.quorum.committee import Committee

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
COMMITTEE = Committee.equal_weights(keys.node_id for keys in AUTHORITIES)
ALICE, BOB = KeyPair.from_seed(b"a" * 32), KeyPair.from_seed(b"b" * 32)
TRANSFER = Transfer(ALICE.node_id, BOB.node_id, 5, 0)
FUNDED = {ALICE.node_id: 9}


def answer(core: AuthorityShard, request: Any) -> Any:
    step = core.handle(RequestReceived("client", 1, request), 0)
    return next(output.body for output in step.outgoing if isinstance(output, Reply))


def refused(reply: Any, kind: ErrorKind) -> bool:
    return isinstance(reply, ErrorReply) and reply.kind is kind


def test_an_order_signed_for_one_network_is_refused_by_another() -> None:
    order = make_transfer_order(ALICE, TRANSFER, b"testnet")
    assert transfer_order_is_valid(order, b"testnet")
    assert not transfer_order_is_valid(order, b"mainnet") and not transfer_order_is_valid(order)
    mainnet = AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis=FUNDED, network=b"mainnet")
    assert refused(answer(mainnet, order), ErrorKind.BAD_SIGNATURE)
    testnet = AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis=FUNDED, network=b"testnet")
    vote = answer(testnet, order)
    assert isinstance(vote, SignedTransferOrder)
    assert vote_is_valid(vote, b"testnet") and not vote_is_valid(vote, b"mainnet")


def test_a_certificate_of_one_network_is_refused_by_another() -> None:
    order = make_transfer_order(ALICE, TRANSFER, b"testnet")
    certificate = certify(order, AUTHORITIES[:3], b"testnet")
    assert check_certificate(certificate, COMMITTEE, b"testnet") is None
    assert check_certificate(certificate, COMMITTEE, b"mainnet") is not None
    mainnet = AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis=FUNDED, network=b"mainnet")
    assert refused(answer(mainnet, ConfirmationOrder(certificate)), ErrorKind.BAD_CERTIFICATE)
    assert mainnet.account(BOB.node_id).balance == 0


def test_a_cross_shard_update_of_one_network_is_refused_by_another() -> None:
    recipient = next(
        keys
        for keys in (KeyPair.from_seed(bytes([n]) * 32) for n in range(100, 200))
        if shard_of(keys.node_id, 2) == 1 and shard_of(ALICE.node_id, 2) == 0
    )
    order = make_transfer_order(ALICE, Transfer(ALICE.node_id, recipient.node_id, 3, 0), b"t")
    sender_shard = AuthorityShard(
        AUTHORITIES[0], COMMITTEE, shard=0, shard_count=2, genesis=FUNDED, network=b"t"
    )
    step = sender_shard.handle(
        RequestReceived("c", 1, ConfirmationOrder(certify(order, AUTHORITIES[:3], b"t"))), 0
    )
    update = next(o.body for o in step.outgoing if isinstance(o, Call))
    assert isinstance(update, CrossShardUpdate)
    other = AuthorityShard(AUTHORITIES[0], COMMITTEE, shard=1, shard_count=2, network=b"u")
    assert refused(answer(other, update), ErrorKind.BAD_SIGNATURE)
    same = AuthorityShard(AUTHORITIES[0], COMMITTEE, shard=1, shard_count=2, network=b"t")
    assert not isinstance(answer(same, update), ErrorReply)


def votes_for(client: Client, step: Step, network: bytes) -> list[Any]:
    """Every called authority answers with its vote for the pending order in `network`."""
    order = client.pending
    assert order is not None
    events: list[Any] = []
    for call in (output for output in step.outgoing if isinstance(output, Call)):
        keys = next(keys for keys in AUTHORITIES if keys.node_id == call.to)
        vote = make_vote(keys, order, network)
        events += client.handle(Response(call.to, call.request_id, vote), 0).events
    return events


def test_a_client_signs_for_its_network_and_counts_only_its_votes() -> None:
    client = Client(ALICE, COMMITTEE, balance=9, network=b"testnet")
    step = client.transfer(BOB.node_id, 5)
    assert client.pending is not None and transfer_order_is_valid(client.pending, b"testnet")
    events = votes_for(client, step, b"mainnet")
    assert not any(isinstance(event, TransferCertified) for event in events)
    fresh = Client(ALICE, COMMITTEE, balance=9, network=b"testnet")
    events = votes_for(fresh, fresh.transfer(BOB.node_id, 5), b"testnet")
    assert any(isinstance(event, TransferCertified) for event in events)


def test_a_store_of_one_network_refuses_another() -> None:
    first = AuthorityShard(AUTHORITIES[0], COMMITTEE, network=b"testnet")
    storage: dict[bytes, bytes] = {}
    for record in first.identity_records():
        assert record.value is not None
        storage[record.key] = record.value
    with pytest.raises(StoreMismatch, match="network"):
        AuthorityShard(AUTHORITIES[0], COMMITTEE, network=b"mainnet", storage=storage)


def test_the_committee_file_names_one_network_id(tmp_path: Path) -> None:
    entries = [
        AuthorityEntry(keys.node_id, "127.0.0.1", 9000 + 10 * n, 1, network_id="testnet")
        for n, keys in enumerate(AUTHORITIES)
    ]
    path = tmp_path / "committee.json"
    path.write_text(CommitteeFile(tuple(entries)).encode())
    assert CommitteeFile.load(path).network == b"testnet"
    mixed = CommitteeFile((*entries[:3], AuthorityEntry(AUTHORITIES[3].node_id, "h", 1, 1)))
    path.write_text(mixed.encode())
    with pytest.raises(FastPayFileError, match="network_id: the lines name different networks"):
        CommitteeFile.load(path)
    bad = AuthorityEntry(ALICE.node_id, "h", 1, 1, network_id="a@b")
    path.write_text(CommitteeFile((bad,)).encode())
    with pytest.raises(FastPayFileError, match=r"committee\.json:1: network_id"):
        CommitteeFile.load(path)
    plain = CommitteeFile((AuthorityEntry(ALICE.node_id, "h", 1, 1),))
    assert "network_id" not in plain.encode() and plain.network == b""
