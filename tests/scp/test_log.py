"""The replicated-log application (`synod.scp.log`), without processes or sockets.

`LogCore`s are driven here by a small deterministic loop (messages through the real
codec, a virtual clock for timers, crash = rebuild from what was persisted), so the
rules of the application are checked exactly: canonical batches, union of candidates,
durable submissions answered after their records, relaying, idempotent resubmission,
and catch-up of a node that was away for longer than its slot window.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from synod.core import (
    Broadcast,
    Persist,
    Received,
    Reply,
    RequestReceived,
    Send,
    SetTimer,
    Started,
    Step,
    TimerFired,
)
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet
from synod.scp import ScpConfig, Validity
from synod.scp.log import (
    LOG_CODEC,
    MAX_BATCH_ENTRIES,
    MAX_ENTRY_BYTES,
    Forward,
    LogAppended,
    LogCore,
    LogRules,
    LogTimeouts,
    SubmitReply,
    SubmitRequest,
    compare_logs,
    cut_batch,
    decode_batch,
    encode_batch,
    log_record_key,
)

KEYS = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(4)]
IDS = [key.node_id for key in KEYS]
THREE_OF_FOUR = QuorumSet(threshold=3, validators=tuple(IDS))


def scp_config(keys: KeyPair, **overrides: Any) -> ScpConfig:
    settings: dict[str, Any] = {"application": LogRules(), "retained_slots": 64, **overrides}
    return ScpConfig(keys=keys, quorum_set=THREE_OF_FOUR, **settings)


# ---------------------------------------------------------------- values


def test_a_batch_value_is_the_sorted_distinct_entries_as_compact_json() -> None:
    assert encode_batch(["b", "a", "b"]) == b'["a","b"]'
    assert decode_batch(b'["a","b"]') == ["a", "b"]


def test_only_canonical_non_empty_batches_of_strings_are_values() -> None:
    for value in (
        b'["b","a"]',  # unsorted
        b'["a","a"]',  # duplicate
        b"[]",  # empty
        b'["a", "b"]',  # not compact
        b'{"a":1}',
        b'["a",1]',
        b"not json",
        b"\xff\xfe",
        json.dumps(["x" * (MAX_ENTRY_BYTES + 1)]).encode(),
    ):
        assert decode_batch(value) is None, value
        assert LogRules().validate_value(1, value, True) == Validity.INVALID
    assert LogRules().validate_value(1, b'["a"]', True) == Validity.FULLY_VALID


def test_combining_candidates_takes_their_union_whatever_their_order() -> None:
    rules = LogRules()
    candidates = [b'["a","c"]', b'["b","c"]', b'["d"]']
    assert rules.combine_candidates(1, candidates) == b'["a","b","c","d"]'
    assert rules.combine_candidates(1, candidates[::-1]) == b'["a","b","c","d"]'


def test_a_union_larger_than_a_batch_keeps_the_smallest_entries_in_sorted_order() -> None:
    entries = [f"entry-{number:04d}" for number in range(MAX_BATCH_ENTRIES + 40)]
    halves = [encode_batch(entries[::2]), encode_batch(entries[1::2])]
    combined = decode_batch(LogRules().combine_candidates(1, halves))
    assert combined == sorted(entries)[:MAX_BATCH_ENTRIES]


def test_a_non_canonical_list_yields_its_canonical_form_as_the_valid_value() -> None:
    rules = LogRules()
    assert rules.extract_valid_value(1, b'["b","a","a"]') == b'["a","b"]'
    assert rules.extract_valid_value(1, b'{"a":1}') is None
    assert rules.extract_valid_value(1, b"[]") is None


def test_cut_batch_drops_duplicates_and_entries_that_cannot_fit() -> None:
    assert cut_batch(["b", "a", "b", "x" * (MAX_ENTRY_BYTES + 1)]) == b'["a","b"]'
    assert cut_batch([]) is None


def test_the_draft_timeout_policy_is_scaled_by_the_configured_unit() -> None:
    rules = LogRules(LogTimeouts(nomination_ms=100, ballot_ms=300))
    assert [rules.nomination_timeout_ms(round_number) for round_number in (1, 2, 3)] == [
        200,
        300,
        400,
    ]
    assert rules.ballot_timeout_ms(1) == 600


# ---------------------------------------------------------------- a deterministic network


@dataclass(order=True)
class _Timer:
    due_ms: int
    order: int
    node: NodeId = field(compare=False)
    name: str = field(compare=False)


@dataclass
class Network:
    """LogCores exchanging encoded messages in FIFO order; timers on a virtual clock."""

    cores: dict[NodeId, LogCore]
    storage: dict[NodeId, dict[bytes, bytes]] = field(default_factory=dict)
    events: dict[NodeId, list[Any]] = field(default_factory=dict)
    replies: list[tuple[NodeId, Reply, int]] = field(default_factory=list)
    silent: set[NodeId] = field(default_factory=set)
    now_ms: int = 0

    def __post_init__(self) -> None:
        self.queue: list[tuple[NodeId, NodeId, bytes]] = []
        self.timers: dict[tuple[NodeId, str], _Timer] = {}
        self.counter = 0
        for node in self.cores:
            self.storage.setdefault(node, {})
            self.events.setdefault(node, [])

    def handle(self, node: NodeId, event: Any) -> Step:
        step = self.cores[node].handle(event, self.now_ms)
        store = self.storage[node]
        for record in step.persist:
            if record.value is None:
                store.pop(record.key, None)
            else:
                store[record.key] = record.value
        for output in step.outgoing:
            if node in self.silent:
                break
            if isinstance(output, Broadcast):
                for peer in self.cores:
                    if peer != node:
                        self.queue.append((node, peer, LOG_CODEC.encode(output.message)))
            elif isinstance(output, Send):
                self.queue.append((node, output.to, LOG_CODEC.encode(output.message)))
            elif isinstance(output, Reply):
                self.replies.append((node, output, len(store)))
        for timer in step.timers:
            self.timers.pop((node, timer.name), None)
            if isinstance(timer, SetTimer):
                self.counter += 1
                self.timers[(node, timer.name)] = _Timer(
                    self.now_ms + timer.delay_ms, self.counter, node, timer.name
                )
        self.events[node].extend(step.events)
        return step

    def run_until(self, done: Callable[[], bool], max_actions: int = 100_000) -> bool:
        for _ in range(max_actions):
            if done():
                return True
            if self.queue:
                sender, receiver, payload = self.queue.pop(0)
                if receiver not in self.silent and sender not in self.silent:
                    self.handle(receiver, Received(sender, LOG_CODEC.decode(payload)))
                continue
            if not self.timers:
                return done()
            timer = min(self.timers.values())
            del self.timers[(timer.node, timer.name)]
            self.now_ms = max(self.now_ms, timer.due_ms)
            if timer.node not in self.silent:
                self.handle(timer.node, TimerFired(timer.name))
        return done()

    def restart(self, node: NodeId, build: Callable[[dict[bytes, bytes]], LogCore]) -> None:
        self.timers = {key: timer for key, timer in self.timers.items() if key[0] != node}
        self.queue = [message for message in self.queue if message[1] != node]
        self.cores[node] = build(dict(self.storage[node]))
        self.handle(node, Started())

    def logged_entries(self, node: NodeId) -> set[str]:
        return self.cores[node].logged


def logged_everywhere(network: Network, nodes: list[NodeId], entry: str) -> bool:
    return all(entry in network.logged_entries(node) for node in nodes)


def build_network(**overrides: Any) -> Network:
    cores = {key.node_id: LogCore(scp_config(key, **overrides), {}) for key in KEYS}
    network = Network(cores)
    for node in cores:
        network.handle(node, Started())
    return network


def submit(network: Network, node: NodeId, *entries: str) -> SubmitReply:
    network.handle(
        node, RequestReceived("client", len(network.replies) + 1, SubmitRequest(entries))
    )
    _, reply, _ = network.replies[-1]
    assert isinstance(reply.body, SubmitReply)
    return reply.body


# ---------------------------------------------------------------- the log core


def test_a_submission_is_persisted_in_the_step_that_answers_it_and_relayed() -> None:
    core = LogCore(scp_config(KEYS[0]), {})
    step = core.handle(RequestReceived("client", 7, SubmitRequest(("a", "b"))), 0)
    pending = [record for record in step.persist if record.key == b"app/pending"]
    assert pending == [Persist(b"app/pending", b'["a", "b"]')]
    replies = [output for output in step.outgoing if isinstance(output, Reply)]
    assert replies == [Reply("client", 7, SubmitReply(queued=2, pending=2))]
    forwards = [
        output.message
        for output in step.outgoing
        if isinstance(output, Broadcast) and isinstance(output.message, Forward)
    ]
    assert forwards == [Forward(("a", "b"))]


def test_four_nodes_log_every_submitted_entry_once_in_the_same_slots() -> None:
    network = build_network()
    submitted = {"alpha", "beta", "gamma", "delta", "epsilon"}
    submit(network, IDS[0], "alpha", "beta")
    submit(network, IDS[2], "gamma")
    submit(network, IDS[3], "delta", "epsilon")
    assert network.run_until(lambda: all(network.logged_entries(n) >= submitted for n in IDS))
    logs = {node.hex(): network.cores[node].log for node in IDS}
    comparison = compare_logs(logs)
    assert comparison.agree and comparison.complete
    entries = [e for value in logs[IDS[0].hex()].values() for e in decode_batch(value) or []]
    assert sorted(entries) == sorted(submitted)
    assert all(not network.cores[node].pending for node in IDS)
    assert all(not network.cores[node].relayed for node in IDS)
    # every logged slot was also stored under its key
    for node in IDS:
        for slot, value in network.cores[node].log.items():
            assert network.storage[node][log_record_key(slot)] == value


def test_a_restarted_node_keeps_its_log_and_answered_entries_and_ignores_resubmission() -> None:
    network = build_network()
    submit(network, IDS[1], "first")
    assert network.run_until(lambda: all("first" in network.logged_entries(n) for n in IDS))
    # node 1 takes an entry, answers, and crashes before anything leaves it
    network.silent.add(IDS[1])
    reply = submit(network, IDS[1], "second")
    assert reply == SubmitReply(queued=1, pending=1)
    network.silent.discard(IDS[1])
    network.restart(IDS[1], lambda records: LogCore(scp_config(KEYS[1]), records))
    restored = network.cores[IDS[1]]
    assert restored.pending == ["second"]
    assert "first" in restored.logged
    assert network.run_until(lambda: all("second" in network.logged_entries(n) for n in IDS))
    # an entry already in the log is not queued again: submitting is idempotent
    assert submit(network, IDS[1], "first", "second") == SubmitReply(queued=0, pending=0)


def test_a_peer_cannot_submit_through_the_peer_link() -> None:
    core = LogCore(scp_config(KEYS[0]), {})
    step = core.handle(Received(IDS[1], SubmitRequest(("sneaky",))), 0)
    assert step == Step()
    assert core.pending == [] and core.refused_messages == 1


def test_a_non_submit_request_on_the_submit_port_is_answered_with_an_error() -> None:
    core = LogCore(scp_config(KEYS[0]), {})
    step = core.handle(RequestReceived("client", 1, Forward(("x",))), 0)
    assert step.persist == []
    (reply,) = step.outgoing
    assert isinstance(reply, Reply) and isinstance(reply.body, SubmitReply)
    assert reply.body.error and reply.body.queued == 0


def test_a_full_pending_list_refuses_new_entries_without_storing_them() -> None:
    core = LogCore(scp_config(KEYS[0]), {}, max_pending=2)
    core.handle(RequestReceived("client", 1, SubmitRequest(("a", "b"))), 0)
    step = core.handle(RequestReceived("client", 2, SubmitRequest(("c",))), 0)
    assert step.persist == []
    (reply,) = step.outgoing
    assert isinstance(reply, Reply) and reply.body.error
    assert core.pending == ["a", "b"]


def test_a_node_away_for_longer_than_its_window_catches_up_from_its_peers() -> None:
    # max_slots_ahead=2: statements more than two slots past the next undecided one are
    # refused, so the node can only catch up by asking again as its window moves
    network = build_network(max_slots_ahead=2)
    absent = IDS[3]
    network.silent.add(absent)
    present = IDS[:3]
    for number in range(16):  # one slot at a time: each waits for the previous
        entry = f"while away {number}"
        submit(network, IDS[number % 3], entry)
        assert network.run_until(partial(logged_everywhere, network, present, entry))
    decided = len(network.cores[IDS[0]].log)
    assert decided >= 16 and not network.cores[absent].log
    network.silent.discard(absent)
    network.restart(
        absent, lambda records: LogCore(scp_config(KEYS[3], max_slots_ahead=2), records)
    )
    assert network.run_until(lambda: len(network.cores[absent].log) >= decided)
    assert network.cores[absent].log == network.cores[IDS[0]].log
    appended = [
        event.slot_index for event in network.events[absent] if isinstance(event, LogAppended)
    ]
    assert sorted(appended) == list(range(1, decided + 1))


# ---------------------------------------------------------------- comparing logs


def test_two_nodes_with_different_values_for_a_slot_are_a_disagreement() -> None:
    comparison = compare_logs(
        {"a": {1: b'["x"]', 2: b'["y"]'}, "b": {1: b'["x"]', 2: b'["z"]'}, "c": {1: b'["x"]'}}
    )
    assert comparison.disagreements == [2]
    assert not comparison.agree
    assert comparison.gaps == {"a": [], "b": [], "c": [2]}


def test_a_node_behind_is_a_gap_not_a_disagreement() -> None:
    comparison = compare_logs({"a": {1: b'["x"]', 2: b'["y"]'}, "b": {1: b'["x"]'}})
    assert comparison.agree and not comparison.complete
    assert comparison.gaps == {"a": [], "b": [2]}


# ---------------------------------------------------------------- the configured networks


def test_nodes_built_from_a_tiered_init_agree_and_survive_a_silent_organisation(
    tmp_path: Path,
) -> None:
    """The cores a node runner builds from a network written with `--organisations 4`
    (`synod scp init`): 3 of 4 organisations, 2 of 3 nodes in each; one organisation
    silent throughout."""
    from synod.crypto import read_key_file
    from synod.runtime.scp_node import create_network
    from synod.scp.network import build_log_core

    config = create_network(
        tmp_path,
        organisations=4,
        ports=range(22000, 22024, 2),
        submit_ports=range(22001, 22024, 2),
    )
    cores = {}
    for entry in config.nodes:
        cores[entry.node_id] = build_log_core(config, entry, read_key_file(entry.key_file), {})
    network = Network(cores)
    silent_organisation = [node.node_id for node in config.nodes if node.organisation == "org-3"]
    network.silent.update(silent_organisation)
    for node in cores:
        network.handle(node, Started())
    live = [node for node in cores if node not in network.silent]
    submit(network, live[0], "tiered one")
    submit(network, live[4], "tiered two")
    wanted = {"tiered one", "tiered two"}
    assert network.run_until(lambda: all(network.logged_entries(n) >= wanted for n in live))
    comparison = compare_logs({node.hex(): cores[node].log for node in live})
    assert comparison.agree and comparison.complete
    assert all(not cores[node].log for node in silent_organisation)
