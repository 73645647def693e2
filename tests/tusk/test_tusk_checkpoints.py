"""Checkpoints: a core far behind the committee installs one signed by cores of weight
f + 1, carried by a driver, and continues the total order from it; nothing less gets in.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import synod.tusk.messages as tusk_messages
from synod.core import CallFailed, RequestReceived, Response, Started, Step, TimerFired
from synod.crypto import KeyPair
from synod.quorum.committee import Committee
from synod.sim.scenarios.tusk import committed, delivered_transactions, submit, tusk_world
from synod.sim.world import World
from synod.tusk.core import (
    COMMIT_LOG_PREFIX,
    CheckpointInstalled,
    Committed,
    GapGivenUp,
    TuskConfig,
    TuskCore,
)
from synod.tusk.driver import BLOCK_RETRY_POLLS, POLL_TIMER, Driver
from synod.tusk.messages import (
    Certificate,
    CheckpointCertificate,
    CheckpointVote,
    CoreAnswer,
    CoreRequest,
    SubmitAnswer,
    SubmitRefusal,
    SubmitRequest,
    VoteSignature,
    chain_next,
    genesis_chain,
    sign_checkpoint,
)

KEYS = [KeyPair.from_seed(bytes([index + 71]) * 32) for index in range(4)]
CORES = [key.node_id for key in KEYS]
COMMITTEE = Committee.equal_weights(CORES)
CONFIG = TuskConfig(gc_depth=4)


@pytest.fixture
def world() -> World:
    """A committee past its first checkpoints, stopped where cores 0 and 1 have just
    signed one statement (each core signs one at every leader with gc_depth 4)."""
    world = tusk_world(KEYS, seed=5, config=CONFIG)
    for number in range(12):
        submit(world, CORES[number % 4], [f"tx {number}".encode()])
        world.run_until(world.now_ms + 40)
    first, second = (world.core(core, TuskCore) for core in CORES[:2])

    def agreed() -> bool:
        return (
            first.checkpoint is not None
            and first.checkpoint.statement.leader_round >= 12
            and second.checkpoint is not None
            and first.checkpoint.statement == second.checkpoint.statement
        )

    assert world.step_until(agreed, max_ms=world.now_ms + 20_000)
    return world


def core(world: World, index: int) -> TuskCore:
    return world.core(CORES[index], TuskCore)


def certificate_of(votes: list[CheckpointVote]) -> CheckpointCertificate:
    signatures = [VoteSignature(voter=vote.signer, signature=vote.signature) for vote in votes]
    return CheckpointCertificate(statement=votes[0].statement, signatures=tuple(signatures))


def votes_of(world: World, indexes: list[int]) -> list[CheckpointVote]:
    votes = [core(world, index).checkpoint for index in indexes]
    assert all(vote is not None for vote in votes)
    return [vote for vote in votes if vote is not None]


def held_certificates(source: TuskCore) -> list[Certificate]:
    """What a driver would carry: every certificate `source` holds, lowest round first."""
    held = [source.certificate(digest) for digest in source.certificate_digests()]
    return sorted(
        (certificate for certificate in held if certificate is not None),
        key=lambda certificate: (certificate.header.round, certificate.header.creator),
    )


class Fresh:
    """Core 3's key with an empty store (new, or its disk lost), asked directly."""

    def __init__(self, storage: dict[bytes, bytes] | None = None) -> None:
        self.storage: dict[bytes, bytes] = dict(storage or {})
        self.core = TuskCore(KEYS[3], COMMITTEE, dict(self.storage), config=CONFIG)
        self.events: list[Any] = []
        self.request_id = 0

    def ask(self, request: CoreRequest) -> CoreAnswer:
        self.request_id += 1
        step = self.core.handle(RequestReceived("driver", self.request_id, request), 0)
        for record in step.persist:
            if record.value is None:
                self.storage.pop(record.key, None)
            else:
                self.storage[record.key] = record.value
        self.events.extend(step.events)
        body = step.outgoing[0].body
        assert isinstance(body, CoreAnswer)
        return body

    def carry(self, certificates: list[Certificate]) -> None:
        for start in range(0, len(certificates), 16):
            self.ask(CoreRequest(certificates=tuple(certificates[start : start + 16])))


def test_a_fresh_core_installs_a_checkpoint_of_f_plus_one_and_continues_the_order(
    world: World,
) -> None:
    checkpoint = certificate_of(votes_of(world, [0, 1]))
    statement = checkpoint.statement
    fresh = Fresh()
    fresh.ask(CoreRequest(checkpoint=checkpoint))
    assert fresh.events == [CheckpointInstalled(0, statement.sequence, statement.leader_round)]
    assert fresh.core.committed_count == statement.sequence
    assert fresh.core.chain == statement.chain
    assert fresh.core.round == statement.floor_round
    # The chain it installed is the digest of the sequence the others committed.
    chain = genesis_chain(fresh.core.context)
    for event in committed(world, CORES[0])[: statement.sequence]:
        chain = chain_next(
            chain,
            sequence=event.sequence,
            leader_round=event.leader_round,
            round_number=event.round,
            creator=event.creator,
            digest=event.digest,
        )
    assert chain == statement.chain
    # Carried the certificates from the checkpoint's floor up, it commits what the
    # others commit next, at the same positions.
    source = core(world, 0)
    fresh.carry(held_certificates(source))
    assert len(fresh.core.certificate_digests()) == len(source.certificate_digests())
    submit(world, CORES[0], [b"more"])
    assert world.step_until(lambda: source.committed_count > statement.sequence + 4)
    fresh.carry(held_certificates(source))
    mine = [event for event in fresh.events if isinstance(event, Committed)]
    theirs = {event.sequence: event for event in committed(world, CORES[0])}
    assert mine, "the installed core commits again"
    assert mine[0].sequence == statement.sequence
    assert all(theirs[event.sequence] == event for event in mine)
    rebuilt = TuskCore(KEYS[3], COMMITTEE, dict(fresh.storage), config=CONFIG)
    assert rebuilt.committed_count == fresh.core.committed_count
    assert (rebuilt.chain, rebuilt.round) == (fresh.core.chain, fresh.core.round)


def _submit_to(fresh: Fresh, transaction: bytes) -> SubmitAnswer:
    fresh.request_id += 1
    request = SubmitRequest(transactions=(transaction,))
    step = fresh.core.handle(RequestReceived("client", fresh.request_id, request), 0)
    body = step.outgoing[0].body
    assert isinstance(body, SubmitAnswer) and body.has_valid_signature()
    return body


def test_a_fresh_core_joining_late_signs_no_receipt_until_it_knows_where_the_committee_is(
    world: World,
) -> None:
    # Before, a core with an empty store signed receipts from the start: joining a
    # committee far ahead, it promised what it could not yet keep.
    fresh = Fresh()
    first = _submit_to(fresh, b"too early")
    assert (first.accepted, first.reason) == (0, SubmitRefusal.NOT_IN_CONTACT)
    # A driver of the committee states its round, far beyond this core's reach.
    fresh.ask(CoreRequest(committee_round=core(world, 0).round))
    behind = _submit_to(fresh, b"still early")
    assert (behind.accepted, behind.reason) == (0, SubmitRefusal.BEHIND)
    fresh.ask(CoreRequest(checkpoint=certificate_of(votes_of(world, [0, 1]))))
    fresh.carry(held_certificates(core(world, 0)))
    assert _submit_to(fresh, b"in time").accepted == 1


def test_a_core_of_a_brand_new_committee_takes_transactions_from_its_first_driver_call() -> None:
    fresh = Fresh()
    assert _submit_to(fresh, b"first").reason == SubmitRefusal.NOT_IN_CONTACT
    fresh.ask(CoreRequest(committee_round=0))  # the driver holds no certificate yet
    assert _submit_to(fresh, b"first").accepted == 1


def _forgeries(world: World) -> dict[str, CheckpointCertificate]:
    good = certificate_of(votes_of(world, [0, 1]))
    statement = good.statement
    outsider = KeyPair.from_seed(b"\x98" * 32)
    other_network = [sign_checkpoint(KEYS[index], statement, b"beta") for index in (0, 1)]
    bad = msgspec.structs.replace(good.signatures[1], signature=bytes(64))
    lying = msgspec.structs.replace(statement, chain=bytes(32))
    return {
        "one core (weight f)": certificate_of(votes_of(world, [0])),
        "the same core twice": msgspec.structs.replace(
            good, signatures=(good.signatures[0], good.signatures[0])
        ),
        "a forged second signature": msgspec.structs.replace(
            good, signatures=(good.signatures[0], bad)
        ),
        "an outsider as second signer": certificate_of(
            [votes_of(world, [0])[0], sign_checkpoint(outsider, statement)]
        ),
        "signed for another network": certificate_of(other_network),
        "a changed statement": msgspec.structs.replace(good, statement=lying),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "one core (weight f)",
        "the same core twice",
        "a forged second signature",
        "an outsider as second signer",
        "signed for another network",
        "a changed statement",
    ],
)
def test_a_checkpoint_without_f_plus_one_valid_signatures_changes_nothing(
    world: World, kind: str
) -> None:
    control = Fresh()
    control.ask(CoreRequest(checkpoint=certificate_of(votes_of(world, [0, 1]))))
    assert [type(event) for event in control.events] == [CheckpointInstalled]
    fresh = Fresh()
    fresh.ask(CoreRequest(checkpoint=_forgeries(world)[kind]))
    assert not fresh.events
    assert fresh.core.committed_count == 0 and fresh.core.round == 1
    assert not any(key.startswith(b"tusk/installed") for key in fresh.storage)


def test_a_core_within_reach_ignores_a_checkpoint_before_checking_a_signature(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = certificate_of(votes_of(world, [0, 1]))
    within = Fresh(world.node(CORES[3]).storage)  # core 3 as it is: within reach
    assert within.core.round >= checkpoint.statement.floor_round
    checks: list[bytes] = []
    real_verify = tusk_messages.verify

    def counting(signer: bytes, domain: bytes, message: bytes, signature: bytes) -> bool:
        checks.append(domain)
        return real_verify(signer, domain, message, signature)

    monkeypatch.setattr(tusk_messages, "verify", counting)
    within.ask(CoreRequest(checkpoint=checkpoint))
    assert not within.events
    assert not any(domain.startswith(b"synod/tusk/checkpoint") for domain in checks)


def _driver_with_votes(votes: list[CheckpointVote], rounds: list[int]) -> tuple[Driver, Step]:
    """A driver that got one answer from each core: its round and checkpoint vote."""
    driver = Driver("d", COMMITTEE)
    started = driver.handle(Started(), 0)
    calls = {call.to: call for call in started.outgoing}
    for index, keys in enumerate(KEYS):
        call = calls[keys.node_id]
        vote = votes[index] if index < len(votes) else None
        answer = tusk_messages.sign_answer(
            keys,
            CoreAnswer(
                core=keys.node_id,
                request_digest=tusk_messages.request_digest(call.body),
                round=rounds[index],
                header=None,
                votes=(),
                known=(),
                certificates=(),
                refusals=(),
                checkpoint=vote,
            ),
        )
        driver.handle(Response(keys.node_id, call.request_id, answer), 1)
    return driver, started


def test_a_driver_carries_a_checkpoint_of_f_plus_one_to_a_core_below_its_floor_only(
    world: World,
) -> None:
    statement_votes = votes_of(world, [0, 1])
    floor = statement_votes[0].statement.floor_round
    lone, _ = _driver_with_votes(statement_votes[:1], [floor + 5, floor + 5, floor + 5, 1])
    assert lone.checkpoint is None, "one core's vote is not a checkpoint"
    driver, _ = _driver_with_votes(statement_votes, [floor + 5, floor + 5, floor + 5, 1])
    assert driver.checkpoint is not None
    assert driver.checkpoint.statement == statement_votes[0].statement
    carried: list[tuple[int, bytes]] = []
    for poll in range(1, 2 * BLOCK_RETRY_POLLS + 1):
        for call in driver.handle(TimerFired(POLL_TIMER), poll * 50).outgoing:
            request = call.body
            if request.checkpoint is not None:
                carried.append((poll, call.to))
            driver.handle(CallFailed(call.to, call.request_id, "timeout"), poll * 50)
    assert {core_id for _, core_id in carried} == {CORES[3]}, "only to the core behind"
    assert len(carried) == 2, "again after BLOCK_RETRY_POLLS polls, not with every request"


def _commit_positions(storage: dict[bytes, bytes]) -> list[int]:
    return sorted(
        int.from_bytes(key[len(COMMIT_LOG_PREFIX) :], "big")
        for key in storage
        if key.startswith(COMMIT_LOG_PREFIX)
    )


def test_a_pruned_delivery_log_stays_bounded_and_a_core_resumes_from_it() -> None:
    kept = 8
    world = tusk_world(KEYS, seed=9, config=TuskConfig(gc_depth=4, kept_commits=kept))
    records: list[int] = []
    for phase in range(2):
        for number in range(40):
            submit(world, CORES[number % 4], [f"tx {phase} {number}".encode()])
            world.run_until(world.now_ms + 30)
        last = f"tx {phase} 39".encode()
        assert world.step_until(
            lambda last=last: all(last in delivered_transactions(world, c) for c in CORES)
        )
        records.append(len(world.node(CORES[1]).storage))
    pruned = core(world, 1)
    assert pruned.checkpoint is not None
    checkpoint = pruned.checkpoint.statement.sequence
    positions = _commit_positions(world.node(CORES[1]).storage)
    assert positions == list(range(checkpoint - kept, pruned.committed_count))
    assert pruned.committed_count > 3 * len(positions), "most of the log is gone"
    assert records[1] <= records[0] + kept, "a second phase of as much work grows nothing"
    before = (pruned.committed_count, pruned.chain, pruned.round)
    world.crash(CORES[1])
    world.restart(CORES[1])
    rebuilt = core(world, 1)
    assert (rebuilt.committed_count, rebuilt.chain, rebuilt.round) == before
    assert world.step_until(lambda: rebuilt.takes_transactions, max_ms=world.now_ms + 5_000)
    submit(world, CORES[1], [b"after the restart"])
    assert world.step_until(
        lambda: all(b"after the restart" in delivered_transactions(world, c) for c in CORES),
        max_ms=world.now_ms + 10_000,
    )


def test_installing_deletes_the_old_records_a_pruned_log_keeps_without_walking_the_gap() -> None:
    kept = 4
    config = TuskConfig(gc_depth=4, kept_commits=kept)
    world = tusk_world(KEYS, seed=13, config=config)
    submit(world, CORES[3], [b"early"])
    assert world.step_until(lambda: b"early" in delivered_transactions(world, CORES[3]))
    early = dict(world.node(CORES[3]).storage)
    own_records = _commit_positions(early)
    assert own_records
    for number in range(40):
        submit(world, CORES[number % 3], [f"later {number}".encode()])
        world.run_until(world.now_ms + 30)
    assert world.step_until(
        lambda: all(b"later 39" in delivered_transactions(world, c) for c in CORES[:3])
    )
    checkpoint = certificate_of(votes_of(world, [0, 1, 2]))
    assert checkpoint.statement.sequence - kept > max(own_records) + 1, "a gap longer than kept"
    behind = TuskCore(KEYS[3], COMMITTEE, dict(early), config=config)
    step = behind.handle(RequestReceived("driver", 1, CoreRequest(checkpoint=checkpoint)), 0)
    assert [type(event) for event in step.events] == [CheckpointInstalled, GapGivenUp]
    sequence = checkpoint.statement.sequence
    assert step.events[1] == GapGivenUp(max(own_records) + 1, sequence - kept)
    assert behind.log_gap == (sequence - kept, sequence), "only what it keeps is wanted"
    deleted = [
        record.key
        for record in step.persist
        if record.value is None and record.key.startswith(COMMIT_LOG_PREFIX)
    ]
    storage = {**early}
    for record in step.persist:
        if record.value is None:
            storage.pop(record.key, None)
        else:
            storage[record.key] = record.value
    assert not _commit_positions(storage), "the records below the gap are all gone"
    assert len(deleted) <= len(own_records), "one delete per record held, none for the gap"
