"""The replicated-log application (`synod.scp.log`), without processes or sockets.

`LogCore`s are driven here by the simulator (`synod.sim.World` on a perfect network:
messages through the real codec, a virtual clock for timers, crash = rebuild from what
was persisted), so the rules of the application are checked exactly: canonical
batches, union of candidates, durable submissions answered after their records,
relaying, idempotent resubmission, and catch-up of a node that was away for longer
than its slot window.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from synod.core import (
    Broadcast,
    Persist,
    Received,
    Reply,
    RequestReceived,
    Started,
    Step,
)
from synod.crypto import KeyPair, NodeId
from synod.quorum.qset import QuorumSet
from synod.scp import Externalized, ScpConfig, Validity
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
    pending_record_key,
)
from synod.sim.world import NodeFactory, World

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


def log_factory(keys: KeyPair, **overrides: Any) -> NodeFactory:
    return lambda storage, rng: LogCore(scp_config(keys, **overrides), storage)


def build_network(**overrides: Any) -> World:
    """Four started log nodes on a perfect network (1 ms per message, in order sent)."""
    world = World.perfect()
    world.add_nodes({key.node_id: log_factory(key, **overrides) for key in KEYS}, LOG_CODEC)
    return world


def core(world: World, node: NodeId) -> LogCore:
    return world.core(node, LogCore)


def logged_everywhere(world: World, nodes: list[NodeId], entry: str) -> bool:
    return all(entry in core(world, node).logged for node in nodes)


def submit(world: World, node: NodeId, *entries: str) -> SubmitReply:
    """A client outside the world submits to `node`; its answer, at once."""
    world.input(node, RequestReceived("client", len(world.replies) + 1, SubmitRequest(entries)))
    _, reply = world.replies[-1]
    assert isinstance(reply.body, SubmitReply)
    return reply.body


# ---------------------------------------------------------------- the log core


def test_a_submission_is_persisted_in_the_step_that_answers_it_and_relayed() -> None:
    core = LogCore(scp_config(KEYS[0]), {})
    step = core.handle(RequestReceived("client", 7, SubmitRequest(("a", "b"))), 0)
    pending = [record for record in step.persist if record.key.startswith(b"app/pending")]
    assert pending == [
        Persist(pending_record_key(0), b"a"),
        Persist(pending_record_key(1), b"b"),
    ]
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
    assert network.step_until(lambda: all(core(network, n).logged >= submitted for n in IDS))
    logs = {node.hex(): core(network, node).log for node in IDS}
    comparison = compare_logs(logs)
    assert comparison.agree and comparison.complete
    entries = [e for value in logs[IDS[0].hex()].values() for e in decode_batch(value) or []]
    assert sorted(entries) == sorted(submitted)
    assert all(not core(network, node).pending for node in IDS)
    assert all(not core(network, node).relayed for node in IDS)
    # every logged slot was also stored under its key
    for node in IDS:
        for slot, value in core(network, node).log.items():
            assert network.node(node).storage[log_record_key(slot)] == value


def test_a_restarted_node_keeps_its_log_and_answered_entries_and_ignores_resubmission() -> None:
    network = build_network()
    submit(network, IDS[1], "first")
    assert network.step_until(partial(logged_everywhere, network, IDS, "first"))
    # node 1 takes an entry, answers, and crashes before anything leaves it
    network.silence(IDS[1])
    reply = submit(network, IDS[1], "second")
    assert reply == SubmitReply(queued=1, pending=1)
    network.crash(IDS[1])
    network.unsilence(IDS[1])
    network.restart(IDS[1])
    restored = core(network, IDS[1])
    assert restored.pending == ["second"]
    assert "first" in restored.logged
    assert network.step_until(partial(logged_everywhere, network, IDS, "second"))
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


def pending_bytes_written(step: Step) -> int:
    return sum(
        len(record.value or b"") for record in step.persist if record.key.startswith(b"app/pending")
    )


def test_each_submitted_entry_is_written_once_and_deleted_once() -> None:
    """Finding 7: every accepted submit and every decided slot re-encoded and persisted
    the whole pending list, so disk writes grew with the square of the input."""
    node = LogCore(scp_config(KEYS[0]), {})
    entries = [f"entry {index:03d} " + "x" * 200 for index in range(150)]
    written = 0
    for number, entry in enumerate(entries):
        step = node.handle(RequestReceived("client", number, SubmitRequest((entry,))), 0)
        written += pending_bytes_written(step)
    # each entry once, as its own record (the old code wrote about 75 times as much)
    assert written == sum(len(entry.encode()) for entry in entries)
    # a decided slot deletes the records of the entries it holds, writing no list
    batch = encode_batch(entries[:20])
    step = Step(events=[Externalized(1, batch)])
    node._append_decisions(step)
    assert pending_bytes_written(step) == 0
    deleted = [record.key for record in step.persist if record.value is None]
    assert deleted == [pending_record_key(number) for number in range(20)]
    assert len(node.pending) == 130


def test_one_client_cannot_take_the_whole_pending_list() -> None:
    core = LogCore(scp_config(KEYS[0]), {}, max_pending=10, max_pending_per_client=3)
    core.handle(RequestReceived("greedy", 1, SubmitRequest(("a", "b", "c"))), 0)
    step = core.handle(RequestReceived("greedy", 2, SubmitRequest(("d",))), 0)
    (reply,) = step.outgoing
    assert isinstance(reply, Reply) and "this client" in reply.body.error
    assert step.persist == []
    step = core.handle(RequestReceived("other", 3, SubmitRequest(("d",))), 0)
    assert core.pending == ["a", "b", "c", "d"]


def test_the_connections_of_one_host_share_its_budget_and_it_is_freed_on_logging() -> None:
    hosts = {"conn-1": "10.0.0.1", "conn-2": "10.0.0.1", "conn-3": "10.0.0.2"}
    core = LogCore(
        scp_config(KEYS[0]), {}, max_pending_per_client=2, client_key=hosts.__getitem__
    )

    def submit_on(connection: str, entry: str) -> SubmitReply:
        step = core.handle(RequestReceived(connection, 1, SubmitRequest((entry,))), 0)
        (reply,) = [item for item in step.outgoing if isinstance(item, Reply)]
        assert isinstance(reply.body, SubmitReply)
        return reply.body

    assert submit_on("conn-1", "a").queued == submit_on("conn-1", "b").queued == 1
    assert "host already has 2" in submit_on("conn-2", "c").error
    assert submit_on("conn-3", "c").queued == 1
    assert core.pending == ["a", "b", "c"]
    step = Step(events=[Externalized(1, encode_batch(["a"]))])
    core._append_decisions(step)  # the slot that logs "a" frees one place of its host
    assert submit_on("conn-2", "d").queued == 1


def test_the_one_list_pending_record_of_older_versions_is_migrated() -> None:
    core = LogCore(scp_config(KEYS[0]), {b"app/pending": b'["old"]'})
    assert core.pending == ["old"]
    step = core.handle(Started(), 0)
    assert Persist(b"app/pending", None) in step.persist
    assert Persist(pending_record_key(0), b"old") in step.persist


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
    network.silence(absent)
    present = IDS[:3]
    for number in range(16):  # one slot at a time: each waits for the previous
        entry = f"while away {number}"
        submit(network, IDS[number % 3], entry)
        assert network.step_until(partial(logged_everywhere, network, present, entry))
    decided = len(core(network, IDS[0]).log)
    assert decided >= 16 and not core(network, absent).log
    network.crash(absent)
    network.unsilence(absent)
    network.restart(absent)
    assert network.step_until(lambda: len(core(network, absent).log) >= decided)
    assert core(network, absent).log == core(network, IDS[0]).log
    appended = [event.slot_index for event in network.events_of(absent, LogAppended)]
    assert sorted(appended) == list(range(1, decided + 1))


def test_a_node_away_for_more_slots_than_peers_retain_catches_up_from_decisions() -> None:
    # peers keep 8 slots of statements; the node misses 150 slots and must fetch their
    # decisions while it also asks for state on every 100 ms tick (a budget shared by
    # the two kinds of request starved the decision requests at slot 33)
    network = build_network(retained_slots=8, rebroadcast_interval_ms=100)
    absent = IDS[3]
    network.crash(absent)
    for number in range(150):
        entry = f"while away {number:03d}"
        submit(network, IDS[0], entry)
        assert network.step_until(partial(logged_everywhere, network, IDS[:1], entry))
    network.restart(absent)
    decided = len(core(network, IDS[0]).log)
    assert network.step_until(
        lambda: len(core(network, absent).log) >= decided, max_ms=network.now_ms + 30_000
    )
    assert core(network, absent).log == core(network, IDS[0]).log


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
    from synod.scp.network import NodeEntry, build_log_core

    config = create_network(
        tmp_path,
        organisations=4,
        ports=range(22000, 22024, 2),
        submit_ports=range(22001, 22024, 2),
    )
    def factory(entry: NodeEntry) -> NodeFactory:
        keys = read_key_file(entry.key_file)
        return lambda storage, rng: build_log_core(config, entry, keys, storage)

    world = World.perfect()
    for entry in config.nodes:
        world.add_node(entry.node_id, factory(entry), LOG_CODEC)
    silent_organisation = [node.node_id for node in config.nodes if node.organisation == "org-3"]
    for node in silent_organisation:
        world.silence(node)
    world.start()
    live = [entry.node_id for entry in config.nodes if entry.node_id not in silent_organisation]
    submit(world, live[0], "tiered one")
    submit(world, live[4], "tiered two")
    wanted = {"tiered one", "tiered two"}
    assert world.step_until(lambda: all(core(world, n).logged >= wanted for n in live))
    comparison = compare_logs({node.hex(): core(world, node).log for node in live})
    assert comparison.agree and comparison.complete
    cores = {node: core(world, node) for node in silent_organisation}
    assert all(not cores[node].log for node in silent_organisation)
