"""Filling the gap a checkpoint leaves in a core's delivery log, through drivers.

A core installing a checkpoint skips positions first_skipped..sequence - 1.  Drivers
fetch those records from other cores (`LogRequest`, served from what each core
persisted) and carry them to it; the core checks each, from the top down, against the
chain digest it trusts (the checkpoint's, then each record's `previous_chain`).  Until
the gap is filled far enough, an own batch whose delivery may lie in it is not queued
again: before, it was, and a transaction the committee had committed while the core was
away was committed a second time.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import msgspec
import pytest

from synod.core import (
    Call,
    Persist,
    Proposed,
    RequestReceived,
    Response,
    Started,
    Step,
    TimerFired,
)
from synod.crypto import KeyPair
from synod.quorum.committee import Committee
from synod.runtime.rpc import RequestRejected
from synod.runtime.storage import SqliteStorage
from synod.runtime.tusk_node import LOG_REQUEST_INTERVAL_MS, LogService
from synod.sim.scenarios.tusk import delivered_transactions, submit, tusk_world
from synod.sim.world import World
from synod.tusk.core import (
    COMMIT_LOG_PREFIX,
    CheckpointInstalled,
    GapClosed,
    GapGivenUp,
    LogFilled,
    TuskConfig,
    TuskCore,
    commit_log_key,
    log_positions,
    read_commit_record,
    serve_log,
)
from synod.tusk.driver import POLL_TIMER, Driver
from synod.tusk.messages import (
    CODEC,
    MAX_LOG_RECORDS,
    Certificate,
    CheckpointCertificate,
    CommitAck,
    CommitQuery,
    CoreAnswer,
    CoreRequest,
    LogAnswer,
    LogRecord,
    LogRequest,
    LogWanted,
    VoteSignature,
    request_digest,
    sign_answer,
    transaction_digest,
)
from synod.wire import DecodeError

KEYS = [KeyPair.from_seed(bytes([index + 11]) * 32) for index in range(4)]
CORES = [key.node_id for key in KEYS]
COMMITTEE = Committee.equal_weights(CORES)


def log_of(storage: dict[bytes, bytes]) -> dict[int, bytes]:
    """Position -> certificate digest of every delivery-log record in `storage`."""
    return {
        record.sequence: record.digest
        for record in (
            read_commit_record(value)
            for key, value in storage.items()
            if key.startswith(COMMIT_LOG_PREFIX)
        )
    }


def records_from(storage: dict[bytes, bytes], core: int, end: int) -> tuple[LogRecord, ...]:
    """What core `core` (with `storage`) serves for the positions below `end`."""
    request = LogRequest(end=end)
    stored = {
        position: storage[commit_log_key(position)]
        for position in log_positions(request)
        if commit_log_key(position) in storage
    }
    return serve_log(CORES[core], request, stored).records


# ---------------------------------------------------------------- one core, by hand


class Behind:
    """Core 3 rebuilt from what it had stored early, asked directly (its storage kept)."""

    def __init__(self, storage: dict[bytes, bytes], config: TuskConfig) -> None:
        self.storage = dict(storage)
        self.config = config
        self.core = TuskCore(KEYS[3], COMMITTEE, dict(self.storage), config=config)
        self.events: list[object] = []
        self.request_id = 0

    def ask(self, request: CoreRequest) -> CoreAnswer:
        self.request_id += 1
        step = self.core.handle(RequestReceived("driver", self.request_id, request), 0)
        self._apply(step)
        body = step.outgoing[0].body
        assert isinstance(body, CoreAnswer)
        return body

    def _apply(self, step: Step) -> None:
        for record in step.persist:
            if record.value is None:
                self.storage.pop(record.key, None)
            else:
                self.storage[record.key] = record.value
        self.events.extend(step.events)

    def propose(self, transaction: bytes) -> None:
        self._apply(self.core.handle(Proposed(transaction), 0))

    def restart(self) -> None:
        self.core = TuskCore(KEYS[3], COMMITTEE, dict(self.storage), config=self.config)


def _checkpoint(world: World) -> CheckpointCertificate:
    """A checkpoint signed by cores 0, 1 and 2 (f + 1 = 2 would do), once they agree."""
    cores = [world.core(core, TuskCore) for core in CORES[:3]]

    def agreed() -> bool:
        votes = [core.checkpoint for core in cores]
        return all(vote is not None for vote in votes) and (
            len({vote.statement for vote in votes if vote is not None}) == 1
        )

    assert world.step_until(agreed, max_ms=world.now_ms + 20_000)
    votes = [core.checkpoint for core in cores if core.checkpoint is not None]
    signatures = [VoteSignature(voter=vote.signer, signature=vote.signature) for vote in votes]
    return CheckpointCertificate(statement=votes[0].statement, signatures=tuple(signatures))


class History(NamedTuple):
    early: dict[bytes, bytes]
    """Core 3's store early on."""
    later: dict[bytes, bytes]
    """Core 0's store much later."""
    checkpoint: CheckpointCertificate
    """A checkpoint far ahead of core 3's early store."""
    soon: list[Certificate]
    """The certificates core 0 held soon after core 3's early store, lowest rounds
    first."""


@pytest.fixture(scope="module")
def history() -> History:
    return _history(TuskConfig(gc_depth=4))


@pytest.fixture(scope="module")
def unkept_history() -> History:
    """The same history in a committee that keeps no record below its checkpoints."""
    return _history(TuskConfig(gc_depth=4, kept_commits=0))


def _history(config: TuskConfig) -> History:
    world = tusk_world(KEYS, seed=13, config=config)
    submit(world, CORES[3], [b"early"])
    assert world.step_until(lambda: b"early" in delivered_transactions(world, CORES[3]))
    early = dict(world.node(CORES[3]).storage)
    soon: list[Certificate] = []
    for number in range(40):
        submit(world, CORES[number % 3], [f"later {number}".encode()])
        world.run_until(world.now_ms + 30)
        if number == 3:
            soon = _held_certificates(world.node(CORES[0]).storage)
    assert world.step_until(
        lambda: all(b"later 39" in delivered_transactions(world, c) for c in CORES[:3])
    )
    checkpoint = _checkpoint(world)
    return History(early, dict(world.node(CORES[0]).storage), checkpoint, soon)


def _held_certificates(storage: dict[bytes, bytes]) -> list[Certificate]:
    held = [
        msgspec.msgpack.decode(value, type=Certificate)
        for key, value in storage.items()
        if key.startswith(b"tusk/certificate/")
    ]
    return sorted(held, key=lambda certificate: certificate.header.round)


def _installed(
    history: History,
) -> tuple[Behind, dict[bytes, bytes], int, int]:
    early, source, checkpoint, _ = history
    behind = Behind(early, TuskConfig(gc_depth=4))
    first = behind.core.committed_count
    answer = behind.ask(CoreRequest(checkpoint=checkpoint))
    assert answer.log_wanted is not None, "a core with a gap says which positions it lacks"
    assert (answer.log_wanted.first, answer.log_wanted.end) == (
        first,
        checkpoint.statement.sequence,
    )
    return behind, source, first, checkpoint.statement.sequence


def test_a_core_fills_the_gap_of_a_checkpoint_from_checked_records_and_says_when_whole(
    history: History,
) -> None:
    behind, source, first, end = _installed(history)
    assert end - first > 8, "a gap worth filling"
    while behind.core.log_gap is not None:
        _, top = behind.core.log_gap
        answer = behind.ask(CoreRequest(log_records=records_from(source, 0, top)[:8]))
        assert answer.log_wanted is None or answer.log_wanted.end == top - 8
        if behind.core.log_gap is not None:  # a restart in the middle resumes the gap
            behind.restart()
            assert behind.core.log_gap == (first, top - 8)
    expected = log_of(source)
    mine = log_of(behind.storage)
    assert sorted(mine) == list(range(behind.core.committed_count)), "no position missing"
    assert all(mine[position] == expected[position] for position in mine)
    filled = [event for event in behind.events if isinstance(event, LogFilled)]
    assert sum(len(event.digests) for event in filled) == end - first
    closed = [event for event in behind.events if isinstance(event, GapClosed)]
    assert closed == [GapClosed(first, end, consistent=True, dropped=())]
    # It acknowledges the transactions of filled positions too (`CommitQuery`).
    filled_transactions = [
        (position, transaction)
        for position in range(first, end)
        for transaction in read_commit_record(source[commit_log_key(position)]).transactions
    ]
    assert filled_transactions, "the gap held transactions"
    position, transaction = filled_transactions[0]
    step = behind.core.handle(
        RequestReceived("client", 99, CommitQuery(transactions=(transaction_digest(transaction),))),
        0,
    )
    ack = step.outgoing[0].body
    assert isinstance(ack, CommitAck) and [entry.sequence for entry in ack.entries] == [position]


def _forgeries(records: tuple[LogRecord, ...]) -> dict[str, tuple[LogRecord, ...]]:
    top, below = records[0], records[1]
    return {
        "a batch changed": (msgspec.structs.replace(top, transactions=(b"forged",)),),
        "a chain changed": (msgspec.structs.replace(top, previous_chain=bytes(32)),),
        "the leader round changed": (
            msgspec.structs.replace(top, leader_round=top.leader_round + 2),
        ),
        "the record of another position": (below,),
        "a record renumbered": (msgspec.structs.replace(below, sequence=top.sequence),),
        "positions out of order": (below, top),
        "too many records": (top,) * (MAX_LOG_RECORDS + 1),
    }


def test_forged_gap_records_are_refused_and_the_core_still_serves_and_fills(
    history: History,
) -> None:
    behind, source, _, end = _installed(history)
    records = records_from(source, 0, end)
    for name, forged in _forgeries(records).items():
        refused_before = behind.core.metrics()["log_records_refused"]
        answer = behind.ask(CoreRequest(log_records=forged))
        assert answer.log_wanted is not None and answer.log_wanted.end == end, name
        assert behind.core.metrics()["log_records_refused"] == refused_before + len(forged), name
        assert not any(isinstance(event, LogFilled) for event in behind.events), name
        assert end - 1 not in log_of(behind.storage), name
    # A good record after a forged one: only the part that hashes to the chain counts.
    spliced = (records[0], msgspec.structs.replace(records[1], transactions=(b"forged",)))
    answer = behind.ask(CoreRequest(log_records=spliced))
    assert answer.log_wanted is not None and answer.log_wanted.end == end - 1
    answer = behind.ask(CoreRequest(log_records=records_from(source, 0, end - 1)))
    assert answer.log_wanted is None or answer.log_wanted.end < end - 1


def empty_record(sequence: int) -> LogRecord:
    """A record of core 0's empty round-1 header at `sequence` (its chain unchecked)."""
    return LogRecord(
        sequence=sequence,
        leader_round=2,
        round=1,
        creator=CORES[0],
        parents=(),
        weak_parents=(),
        transactions=(),
        previous_chain=bytes(32),
    )


def test_a_request_with_more_log_records_than_the_bound_does_not_decode() -> None:
    record = empty_record(0)
    fits = CODEC.encode(CoreRequest(log_records=(record,) * MAX_LOG_RECORDS))
    assert isinstance(CODEC.decode(fits), CoreRequest)
    over = CODEC.encode(CoreRequest(log_records=(record,) * (MAX_LOG_RECORDS + 1)))
    with pytest.raises(DecodeError):
        CODEC.decode(over)


def test_serving_stops_at_the_first_position_missing_and_keeps_within_the_bound(
    history: History,
) -> None:
    source, end = history.later, history.checkpoint.statement.sequence
    positions = sorted(log_of(source))
    assert positions == list(range(len(positions)))
    holed = {key: value for key, value in source.items() if key != commit_log_key(end - 5)}
    served = records_from(holed, 0, end)
    assert [record.sequence for record in served] == [end - 1, end - 2, end - 3, end - 4]
    stored = {position: source[commit_log_key(position)] for position in range(end)}
    three = serve_log(CORES[0], LogRequest(end=end, count=3), stored)
    assert [record.sequence for record in three.records] == [end - 1, end - 2, end - 3]
    assert len(serve_log(CORES[0], LogRequest(end=end), stored).records) == min(
        end, MAX_LOG_RECORDS
    )


def test_a_gap_below_what_the_core_keeps_is_given_up_and_its_own_batches_are_not_requeued(
    unkept_history: History,
) -> None:
    history = unkept_history
    behind = Behind(history.early, TuskConfig(gc_depth=4, kept_commits=0))
    # An own header of core 3 that nobody certified as far as it knows: proposed once
    # the certificates carried moved it to a round it had no header for.
    behind.propose(b"unsure")
    for start in range(0, len(history.soon), 16):
        behind.ask(CoreRequest(certificates=tuple(history.soon[start : start + 16])))
    assert behind.core.pending_count == 0, "in a header"
    checkpoint = history.checkpoint
    pending_before = behind.core.pending_count
    behind.ask(CoreRequest(checkpoint=checkpoint))
    kinds = [type(event) for event in behind.events]
    assert kinds[-3:] == [CheckpointInstalled, GapGivenUp, GapClosed]
    closed = behind.events[-1]
    assert isinstance(closed, GapClosed)
    assert b"unsure" in closed.dropped, "reported, not proposed again"
    assert behind.core.pending_count == pending_before
    assert behind.core.log_gap is None


# ---------------------------------------------------------------- drivers and nodes


def _answer_with_gap(call_body: CoreRequest, wanted: LogWanted) -> CoreAnswer:
    return sign_answer(
        KEYS[3],
        CoreAnswer(
            core=CORES[3],
            request_digest=request_digest(call_body),
            round=1,
            header=None,
            votes=(),
            known=(),
            certificates=(),
            refusals=(),
            log_wanted=wanted,
        ),
    )


def _calls(step: Step) -> list[Call]:
    return [call for call in step.outgoing if isinstance(call, Call)]


def _then_poll(driver: Driver, response: Response, now_ms: int) -> Step:
    """The driver's step for `response`, then for its next poll (fetches for gaps go out
    at polls, one per core and poll period), merged."""
    step = driver.handle(response, now_ms)
    polled = driver.handle(TimerFired(POLL_TIMER), now_ms)
    return Step(outgoing=[*step.outgoing, *polled.outgoing])


def test_a_driver_fetches_a_gap_from_the_other_cores_in_turn_and_carries_the_records(
    history: History,
) -> None:
    end = history.checkpoint.statement.sequence
    wanted = LogWanted(first=end - 40, end=end)
    driver = Driver("d", COMMITTEE)
    calls = {call.to: call for call in _calls(driver.handle(Started(), 0))}
    request = calls[CORES[3]].body
    assert isinstance(request, CoreRequest)
    answer = _answer_with_gap(request, wanted)
    step = _then_poll(driver, Response(CORES[3], calls[CORES[3]].request_id, answer), 1)
    [in_flight] = [call for call in _calls(step) if call.to == CORES[3]]  # polled again
    [fetch] = [call for call in _calls(step) if isinstance(call.body, LogRequest)]
    assert fetch.to != CORES[3] and fetch.body == LogRequest(end=end)
    # That core holds none of them: the next fetch asks another one.
    step = _then_poll(driver, Response(fetch.to, fetch.request_id, LogAnswer(fetch.to, end)), 2)
    [second] = [call for call in _calls(step) if isinstance(call.body, LogRequest)]
    assert second.to not in (fetch.to, CORES[3])
    records = records_from(history.later, 0, end)
    # Records not starting at the gap's end are of no use: dropped, another core asked.
    shifted = LogAnswer(second.to, end, records[1:])
    step = _then_poll(driver, Response(second.to, second.request_id, shifted), 3)
    [third] = [call for call in _calls(step) if isinstance(call.body, LogRequest)]
    assert third.to not in (second.to, CORES[3])
    driver.handle(Response(third.to, third.request_id, LogAnswer(third.to, end, records)), 4)
    # Carried in the next request to the core, once its request in flight is answered.
    assert isinstance(in_flight.body, CoreRequest)
    answer = _answer_with_gap(in_flight.body, wanted)
    step = driver.handle(Response(CORES[3], in_flight.request_id, answer), 5)
    [carried] = [call for call in _calls(step) if call.to == CORES[3]]
    assert isinstance(carried.body, CoreRequest)
    assert carried.body.log_records == records[:40], "only positions of the gap"
    # Its answer shows the end did not move (it refused them): the next fetch goes on.
    refused = _answer_with_gap(carried.body, wanted)
    step = _then_poll(driver, Response(CORES[3], carried.request_id, refused), 6)
    [fourth] = [call for call in _calls(step) if isinstance(call.body, LogRequest)]
    assert fourth.to not in (third.to, CORES[3])


def test_a_driver_says_when_no_core_serves_a_gap_and_busy_answers_do_not_count() -> None:
    wanted = LogWanted(first=10, end=50)
    driver = Driver("d", COMMITTEE)
    calls = {call.to: call for call in _calls(driver.handle(Started(), 0))}
    request = calls[CORES[3]].body
    assert isinstance(request, CoreRequest)
    answer_with_gap = _answer_with_gap(request, wanted)
    step = _then_poll(driver, Response(CORES[3], calls[CORES[3]].request_id, answer_with_gap), 1)
    asked: list[bytes] = []
    for now_ms in range(2, 12):
        [fetch] = [call for call in _calls(step) if isinstance(call.body, LogRequest)]
        asked.append(fetch.to)
        busy = now_ms % 2 == 0  # every other answer: rate-limited, says nothing
        answer = LogAnswer(fetch.to, wanted.end, busy=busy)
        if len(asked) < 6:
            assert driver.unserved_gaps() == {}, "not before each other core said no"
        step = _then_poll(driver, Response(fetch.to, fetch.request_id, answer), now_ms)
    assert set(asked) == set(CORES[:3]), "each other core in turn"
    assert driver.unserved_gaps() == {CORES[3]: (10, 50)}
    [fetch] = [call for call in _calls(step) if isinstance(call.body, LogRequest)]
    records = (
        empty_record(49),
    )
    driver.handle(Response(fetch.to, fetch.request_id, LogAnswer(fetch.to, 50, records)), 20)
    assert driver.unserved_gaps() == {}, "served again"


def core_file_of(history: History, tmp_path: Path) -> Path:
    """A SQLite file holding what core 0 had stored later in `history`."""
    path = tmp_path / "core-0.sqlite"
    storage = SqliteStorage.open(path)
    try:
        storage.apply(Persist(key, value) for key, value in history.later.items())
    finally:
        storage.close()
    return path


def test_a_node_serves_its_log_from_its_file_at_a_bounded_rate(
    tmp_path: Path, history: History
) -> None:
    end = history.checkpoint.statement.sequence
    service = LogService(CORES[0], core_file_of(history, tmp_path))
    try:
        body = CODEC.encode(LogRequest(end=end, count=5))
        answer = CODEC.decode(service.answer("a", body, now_ms=1_000))
        assert isinstance(answer, LogAnswer)
        assert answer.records == records_from(history.later, 0, end)[:5]
        early = CODEC.decode(service.answer("a", body, now_ms=1_000 + LOG_REQUEST_INTERVAL_MS - 1))
        assert isinstance(early, LogAnswer) and early.records == (), "too soon: nothing read"
        assert early.busy and not answer.busy, "and it says so: it holds them all the same"
        other = CODEC.decode(service.answer("b", body, now_ms=1_001))
        assert isinstance(other, LogAnswer) and len(other.records) == 5
        later = CODEC.decode(service.answer("a", body, now_ms=1_000 + LOG_REQUEST_INTERVAL_MS))
        assert isinstance(later, LogAnswer) and len(later.records) == 5
        with pytest.raises(RequestRejected):
            service.answer("c", body[:-1], now_ms=2_000)
    finally:
        service.close()


def test_log_serving_shares_one_byte_budget_across_connections(
    tmp_path: Path, history: History
) -> None:
    # The interval is per connection, and a driver holds no key: it can open
    # connections anew.  Before, every new connection was answered in full, so one host
    # could keep the node reading its file without end; now all of them share one
    # byte budget a second, and past it answers are busy and read nothing.
    end = history.checkpoint.statement.sequence
    budget = 4_096
    service = LogService(CORES[0], core_file_of(history, tmp_path), bytes_per_second=budget)
    try:
        body = CODEC.encode(LogRequest(end=end, count=5))
        answers = [service.answer(f"connection-{n}", body, now_ms=1_000) for n in range(100)]
        full = [raw for raw in answers if CODEC.decode(raw).records]
        busy = [raw for raw in answers if CODEC.decode(raw).busy]
        assert len(full) + len(busy) == 100
        largest = max(len(raw) for raw in full)
        assert sum(len(raw) for raw in full) <= budget + largest, "one answer's overdraft"
        assert busy and all(CODEC.decode(raw).records == () for raw in busy)
        assert service.refused_over_budget == len(busy)
        later = CODEC.decode(service.answer("connection-new", body, now_ms=2_000))
        assert isinstance(later, LogAnswer) and len(later.records) == 5, "refilled"
    finally:
        service.close()


# ---------------------------------------------------------------- watch --follow


def _write_changes(path: Path, before: dict[bytes, bytes], after: dict[bytes, bytes]) -> None:
    """Apply to the SQLite file at `path` what changed from `before` to `after` (the core
    commits each step's records in one transaction; so does this)."""
    changes = [Persist(key, value) for key, value in after.items() if before.get(key) != value]
    changes += [Persist(key, None) for key in before.keys() - after.keys()]
    with SqliteStorage.open(path) as storage:
        storage.apply(changes)


def test_watch_follow_prints_the_positions_of_a_gap_once_the_core_filled_them(
    history: History, tmp_path: Path
) -> None:
    # A core installed a checkpoint and filled the top of its gap; `watch --follow`
    # started then prints its log up to the gap, a gap line and the filled top.  Before,
    # the positions filled later were never printed (the watch had passed them).  Now,
    # once the core's gap no longer covers them, they come in position order after a
    # gap-filled line, each marked filled.
    from click.testing import CliRunner

    from synod.cli.cluster import WatchedProcess
    from synod.cli.tusk import tusk

    result = CliRunner().invoke(tusk, ["init", str(tmp_path), "--cores", "4"])
    assert result.exit_code == 0, result.output
    behind, source, first, end = _installed(history)
    behind.ask(CoreRequest(log_records=records_from(source, 0, end)[:8]))
    assert behind.core.log_gap == (first, end - 8)
    store = tmp_path / "core-0.sqlite"
    written = dict(behind.storage)
    _write_changes(store, {}, written)
    watch = WatchedProcess(
        "watch",
        ["tusk", "watch", str(tmp_path), "--follow", "--interval-ms", "20"],
        tmp_path / "watch.stderr",
        deadline_s=30,
        stdin=False,
    )
    try:
        watch.wait_for(
            lambda lines: any(line.get("sequence") == end - 1 for line in lines), "the log"
        )
        assert watch.events("gap") == [{"event": "gap", "first": first, "end": end - 8}]
        while behind.core.log_gap is not None:
            _, top = behind.core.log_gap
            behind.ask(CoreRequest(log_records=records_from(source, 0, top)[:8]))
            _write_changes(store, written, behind.storage)
            written = dict(behind.storage)
        watch.wait_for(
            lambda lines: sum(bool(line.get("filled")) for line in lines) == end - 8 - first,
            "every filled position",
        )
    finally:
        watch.kill_if_running()
    tail = watch.seen[watch.seen.index(watch.events("gap-filled")[0]) :]
    assert tail[0] == {"event": "gap-filled", "first": first, "end": end - 8}
    filled = tail[1:]
    assert [line["sequence"] for line in filled] == list(range(first, end - 8)), "in order"
    assert all(line["filled"] is True for line in filled)
    expected = log_of(source)
    assert [line["digest"] for line in filled] == [
        expected[position].hex() for position in range(first, end - 8)
    ]
    assert all("filled" not in line for line in watch.seen[: len(watch.seen) - len(tail)])
