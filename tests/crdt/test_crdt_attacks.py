"""One participant with a fresh key and no rights against the replicas (issue 15).

Each test is an attack a single author (or an honest user in a hurry) can make: many
concurrent heads, overlapping delete spans, rewriting the shared log, transactions
receivers would refuse, and reconciliation requests that ask for much with little.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pytest

from synod.core import LocalError, Received, Started, Step
from synod.crdt import sequence as sequence_module
from synod.crdt.log import append_edits, entries, genesis_update
from synod.crdt.messages import (
    CODEC,
    MAX_COUNTERS,
    MAX_IDS_PER_MESSAGE,
    MAX_PREDECESSORS,
    ROOT,
    UPDATE_CODEC,
    Heads,
    MapPut,
    NewText,
    Operation,
    Ref,
    SequenceDelete,
    Span,
    TextInsert,
    Update,
    UpdateBody,
    Updates,
    Want,
    body_id,
    form_error,
    sign_update,
)
from synod.crdt.replica import (
    Delete,
    InsertText,
    Put,
    Remove,
    Replica,
    ReplicaConfig,
    UpdateApplied,
    UpdateRejected,
)
from synod.crypto import KeyPair, node_id_text


def keys_for(seed: int) -> KeyPair:
    return KeyPair.from_seed(seed.to_bytes(32, "big"))


def deliver(replica: Replica, *updates: Update, sender: bytes = b"\x07" * 32) -> Step:
    message = Updates([UPDATE_CODEC.encode(update) for update in updates])
    return replica.handle(Received(sender, CODEC.decode(CODEC.encode(message))), 0)  # type: ignore[arg-type]


def rejected(step: Step) -> list[str]:
    return [event.reason for event in step.events if isinstance(event, UpdateRejected)]


def applied(step: Step) -> list[bytes]:
    return [event.update_id for event in step.events if isinstance(event, UpdateApplied)]


def last_update(replica: Replica) -> Update:
    return UPDATE_CODEC.decode(replica.encoded_update(replica.applied_ids()[-1]))


def storage_of(*steps: Step) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    for step in steps:
        for record in step.persist:
            assert record.value is not None
            records[record.key] = record.value
    return records


def orphan_updates(count: int, keys: KeyPair) -> list[Update]:
    """`count` valid updates without predecessors: as many concurrent heads."""
    found = []
    for index in range(count):
        body = UpdateBody(keys.node_id, 1, 1, [], [MapPut(ROOT, f"k{index}", index)])
        found.append(sign_update(keys, body)[1])
    return found


# ---------------------------------------------------------------- 1: many heads


def test_an_update_made_over_more_heads_than_receivers_accept_is_still_accepted() -> None:
    # One attacker's 300 valid concurrent updates used to make the next local update
    # name 301 predecessors, which no receiver (nor the author's own restart) decodes.
    alice, bob = Replica(keys_for(1)), Replica(keys_for(2))
    flood = orphan_updates(MAX_PREDECESSORS + 44, keys_for(66))
    steps = [deliver(alice, *flood), deliver(bob, *flood)]
    steps.append(alice.transact([Put((), "mine", "typed after the flood")]))
    own = last_update(alice)
    assert len(own.body.predecessors) <= MAX_PREDECESSORS
    assert applied(deliver(bob, own)) == [body_id(own.body)]
    assert bob.value()["mine"] == "typed after the flood"
    restarted = Replica(keys_for(1), storage_of(*steps))
    assert restarted.document_digest() == alice.document_digest()
    # The heads left out are merged by the next updates: they shrink, never grow.
    before = len(alice.heads())
    alice.transact([Put((), "mine", "again")])
    alice.transact([Put((), "mine", "and again")])
    assert len(alice.heads()) < before


def test_a_local_edit_after_an_element_of_a_head_left_out_names_that_head() -> None:
    alice, bob = Replica(keys_for(1)), Replica(keys_for(2))
    keys = keys_for(66)
    texts = []
    for index in range(MAX_PREDECESSORS + 10):
        operations: list[Operation] = [
            MapPut(ROOT, f"t{index}", NewText()),
            TextInsert(Ref(b"", 0), Ref(b"", 0), "ab"),
        ]
        texts.append(sign_update(keys, UpdateBody(keys.node_id, 1, 1, [], operations))[1])
    deliver(alice, *texts)
    deliver(bob, *texts)
    for index in (0, MAX_PREDECESSORS + 9):  # whichever heads were chosen, one was not
        alice.transact([InsertText((f"t{index}",), 1, "X")])
        own = last_update(alice)
        assert applied(deliver(bob, own)) == [body_id(own.body)]
        assert bob.document.text((f"t{index}",)) == "aXb"


def test_a_replica_with_more_heads_than_a_message_holds_announces_a_decodable_subset() -> None:
    alice = Replica(keys_for(1))
    flood = orphan_updates(MAX_IDS_PER_MESSAGE + 5, keys_for(66))
    for start in range(0, len(flood), 1_000):
        deliver(alice, *flood[start : start + 1_000])
    assert len(alice.heads()) > MAX_IDS_PER_MESSAGE
    step = alice.handle(Received(b"\x09" * 32, Heads([])), 0)  # type: ignore[arg-type]
    announcements = [out.message for out in step.outgoing if isinstance(out.message, Heads)]
    announcements += [
        out.message
        for out in alice.handle(Started(), 0).outgoing
        if isinstance(out.message, Heads)
    ]
    assert announcements
    for heads in announcements:
        assert isinstance(CODEC.decode(CODEC.encode(heads)), Heads)


# ---------------------------------------------------------------- 2: delete spans


def _text_replica(length: int) -> tuple[Replica, Ref]:
    author = Replica(keys_for(5))
    author.transact([Put((), "t", NewText()), InsertText(("t",), 0, "x" * length)])
    created = last_update(author)
    return author, Ref(body_id(created.body), 0)


def _delete_body(
    keys: KeyPair, replica: Replica, target: Ref, spans: list[Span], sequence: int = 1
) -> UpdateBody:
    heads = replica.heads()
    clock = 1 + max(replica.graph.clocks[replica.graph.ordinal_of[h]] for h in heads)
    return UpdateBody(keys.node_id, sequence, clock, heads, [SequenceDelete(target, spans)])


def test_overlapping_repeated_or_unsorted_delete_spans_are_refused_by_form() -> None:
    update = b"\x01" * 32
    target = Ref(update, 0)
    for spans in (
        [Span(update, 1, 5), Span(update, 3, 5)],  # overlap
        [Span(update, 1, 5), Span(update, 1, 5)],  # repeated
        [Span(update, 1, 2), Span(update, 3, 2)],  # touching: one span, canonically
        [Span(update, 9, 1), Span(update, 1, 1)],  # not ascending
    ):
        body = UpdateBody(b"\x02" * 32, 1, 1, [], [SequenceDelete(target, spans)])
        assert form_error(body) is not None, spans
    fine = [Span(update, 1, 2), Span(update, 4, 2), Span(b"\x02" * 32, 0, 1)]
    assert form_error(UpdateBody(b"\x02" * 32, 1, 1, [], [SequenceDelete(target, fine)])) is None


def test_an_update_naming_more_elements_than_the_bound_is_refused_by_form() -> None:
    update = b"\x01" * 32
    target = Ref(update, 0)
    operations: list[Operation] = [
        SequenceDelete(target, [Span(update, 1, MAX_COUNTERS)]),
        SequenceDelete(target, [Span(update, 1, 1)]),
    ]
    assert form_error(UpdateBody(b"\x02" * 32, 1, 1, [], operations)) is not None


def test_deleting_elements_already_deleted_costs_no_work_per_element(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A few bytes naming many elements used to cost a list scan per element, again at
    # every update naming them: each element now costs Python work once, ever.
    author, text = _text_replica(20_000)
    receiver = Replica(keys_for(6))
    deliver(receiver, last_update(author))
    calls = [0]
    original = sequence_module.Sequence.set_visible

    def counting(self: Any, handle: int, visible: bool) -> bool:
        calls[0] += 1
        return original(self, handle, visible)

    monkeypatch.setattr(sequence_module.Sequence, "set_visible", counting)
    attacker = keys_for(66)
    span = [Span(text.update, 1, 20_000)]
    first = sign_update(attacker, _delete_body(attacker, receiver, text, span))[1]
    assert applied(deliver(receiver, first)) == [body_id(first.body)]
    assert calls[0] == 20_000 and receiver.document.text(("t",)) == ""
    for sequence in range(2, 6):
        again = sign_update(attacker, _delete_body(attacker, receiver, text, span, sequence))[1]
        assert applied(deliver(receiver, again)) == [body_id(again.body)]
    assert calls[0] == 20_000


def test_an_update_rejected_at_its_last_operation_hid_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    author, text = _text_replica(5_000)
    receiver = Replica(keys_for(6))
    deliver(receiver, last_update(author))
    calls = [0]
    original = sequence_module.Sequence.set_visible

    def counting(self: Any, handle: int, visible: bool) -> bool:
        calls[0] += 1
        return original(self, handle, visible)

    monkeypatch.setattr(sequence_module.Sequence, "set_visible", counting)
    attacker = keys_for(66)
    body = _delete_body(attacker, receiver, text, [Span(text.update, 1, 5_000)])
    dangling = MapPut(Ref(b"\x05" * 32, 0), "k", 1)
    body = UpdateBody(body.author, 1, body.clock, body.predecessors, [*body.operations, dangling])
    bad = sign_update(attacker, body)[1]
    assert rejected(deliver(receiver, bad))
    assert calls[0] == 0
    assert receiver.document.text(("t",)) == "x" * 5_000


def test_local_deletes_in_any_order_make_canonical_spans() -> None:
    alice, bob = Replica(keys_for(1)), Replica(keys_for(2))
    deliver(bob, *[UPDATE_CODEC.decode(alice.encoded_update(i)) for i in alice.applied_ids()])
    step = alice.transact([Put((), "t", NewText()), InsertText(("t",), 0, "abcdefghij")])
    deliver(bob, last_update(alice))
    alice.transact([InsertText(("t",), 5, "XY")])
    deliver(bob, last_update(alice))
    # Deletes from the end backwards, across two updates' elements, then forwards.
    alice.transact([Delete(("t",), 8), Delete(("t",), 6), Delete(("t",), 4, 2), Delete(("t",), 0)])
    own = last_update(alice)
    assert form_error(own.body) is None
    assert applied(deliver(bob, own)) == [body_id(own.body)]
    assert bob.document.text(("t",)) == alice.document.text(("t",))
    assert step.persist


# ---------------------------------------------------------------- 4: the shared log


def _with_genesis(replica: Replica) -> Replica:
    deliver(replica, genesis_update("log")[1])
    return replica


def test_removing_the_log_key_erases_no_entry_and_appends_go_on() -> None:
    alice, bob, mallory = (_with_genesis(Replica(keys_for(seed))) for seed in (1, 2, 66))
    for replica in (alice, bob):
        replica.transact(append_edits(replica, f"hello from {replica.node_id.hex()[:4]}", "n"))
        update = last_update(replica)
        for other in (alice, bob, mallory):
            if other is not replica:
                deliver(other, update)
    mallory.transact([Remove((), "log")])
    erase = last_update(mallory)
    for replica in (alice, bob):
        deliver(replica, erase)
        assert len(entries(replica)) == 2
    alice.transact(append_edits(alice, "after the removal", "alice"))
    deliver(bob, last_update(alice))
    assert [entry["text"] for entry in entries(bob)][-1] == "after the removal"
    assert entries(alice) == entries(bob)


def test_an_entry_is_attributed_to_the_key_that_signed_it() -> None:
    alice, mallory = (_with_genesis(Replica(keys_for(seed))) for seed in (1, 66))
    edits = append_edits(mallory, "I am alice", "alice")
    forged = [
        Put(edit.path, "author", node_id_text(alice.node_id))
        if isinstance(edit, Put) and edit.key == "author"
        else edit
        for edit in edits
    ]
    mallory.transact(forged)
    deliver(alice, last_update(mallory))
    (entry,) = entries(alice)
    assert entry["author"] == node_id_text(mallory.node_id)
    assert entry["text"] == "I am alice"


def test_a_member_list_refuses_other_authors_alike_everywhere() -> None:
    members = frozenset({keys_for(1).node_id, keys_for(2).node_id})
    config = ReplicaConfig(members=members)
    alice, bob = Replica(keys_for(1), config=config), Replica(keys_for(2), config=config)
    outsider = Replica(keys_for(66))
    outsider.transact([Put((), "k", "outside")])
    for replica in (alice, bob):
        assert rejected(deliver(replica, last_update(outsider))) == ["the author is not a member"]
    with pytest.raises(LocalError):
        Replica(keys_for(66), config=config).transact([Put((), "k", "refused")])


# ---------------------------------------------------------------- 5: local bounds


def test_a_transaction_larger_than_an_update_may_be_is_refused_and_undone() -> None:
    alice, bob = Replica(keys_for(1)), Replica(keys_for(2))
    alice.transact([Put((), "kept", "before")])
    deliver(bob, last_update(alice))
    digest = alice.document_digest()
    huge = [Put((), f"k{index}", "v" * 65_536) for index in range(70)]  # about 4.6 MB
    with pytest.raises(LocalError):
        alice.transact(huge)
    assert alice.document_digest() == digest
    alice.transact([Put((), "next", "accepted")])
    own = last_update(alice)
    assert applied(deliver(bob, own)) == [body_id(own.body)]
    assert bob.document_digest() == alice.document_digest()


def test_a_paste_of_more_characters_than_an_update_may_create_is_refused_and_undone() -> None:
    alice, bob = Replica(keys_for(1)), Replica(keys_for(2))
    alice.transact([Put((), "t", NewText()), InsertText(("t",), 0, "ok")])
    deliver(bob, last_update(alice))
    with pytest.raises(LocalError):
        alice.transact([InsertText(("t",), 1, "p" * (MAX_COUNTERS + 1))])
    assert alice.document.text(("t",)) == "ok"
    alice.transact([InsertText(("t",), 2, "!")])
    own = last_update(alice)
    assert applied(deliver(bob, own)) == [body_id(own.body)]
    assert bob.document.text(("t",)) == "ok!"


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb"])
def test_a_lone_surrogate_is_refused_and_later_transactions_work(text: str) -> None:
    alice, bob = Replica(keys_for(1)), Replica(keys_for(2))
    alice.transact([Put((), "t", NewText())])
    deliver(bob, last_update(alice))
    digest = alice.document_digest()
    with pytest.raises(LocalError):
        alice.transact([InsertText(("t",), 0, "fine"), InsertText(("t",), 0, text)])
    with pytest.raises(LocalError):
        alice.transact([Put((), "k", text)])
    assert alice.document_digest() == digest
    alice.transact([InsertText(("t",), 0, "after")])
    own = last_update(alice)
    assert applied(deliver(bob, own)) == [body_id(own.body)]
    assert bob.document.text(("t",)) == "after"


def test_updates_signed_for_one_network_are_refused_by_another() -> None:
    alice = Replica(keys_for(1), config=ReplicaConfig(network=b"alpha"))
    beta = Replica(keys_for(2), config=ReplicaConfig(network=b"beta"))
    alpha = Replica(keys_for(3), config=ReplicaConfig(network=b"alpha"))
    alice.transact([Put((), "k", "v")])
    own = last_update(alice)
    assert rejected(deliver(beta, own)) == ["bad signature"]
    assert applied(deliver(alpha, own)) == [body_id(own.body)]



# ---------------------------------------------------------------- 6: reconciliation


ANSWER_BYTES_PER_PEER = 8 * 1024 * 1024
"""The bounds docs/crdt.md states: what one peer's requests, and all peers' together,
may make a replica send at once."""
ANSWER_BYTES_TOTAL = 32 * 1024 * 1024


def _large_history(replica: Replica, updates: int) -> int:
    """`updates` updates of almost the largest size; returns their total bytes."""
    for index in range(updates):
        replica.transact([Put((), f"k{index}-{part}", "v" * 65_000) for part in range(60)])
    return sum(len(replica.encoded_update(i)) for i in replica.applied_ids())


def sent_bytes(step: Step) -> int:
    return sum(
        len(encoded)
        for out in step.outgoing
        if isinstance(out.message, Updates)
        for encoded in out.message.updates
    )


def ask(replica: Replica, sender: bytes, message: Heads | Want, now_ms: int = 0) -> Step:
    return replica.handle(Received(sender, message), now_ms)  # type: ignore[arg-type]


def test_repeated_empty_heads_from_one_peer_cost_at_most_its_byte_budget() -> None:
    alice = Replica(keys_for(1))
    history = _large_history(alice, 4)
    budget = ANSWER_BYTES_PER_PEER
    assert history > budget  # the whole history is more than one answer may hold
    out = sum(sent_bytes(ask(alice, b"\x09" * 32, Heads([]))) for _ in range(20))
    assert 0 < out <= budget


def test_many_identities_together_cost_at_most_the_shared_budget() -> None:
    alice = Replica(keys_for(1))
    _large_history(alice, 4)
    out = sum(
        sent_bytes(ask(alice, index.to_bytes(32, "big"), Heads([]))) for index in range(100)
    )
    assert 0 < out <= ANSWER_BYTES_TOTAL


def test_a_want_naming_everything_costs_at_most_the_budget() -> None:
    alice = Replica(keys_for(1))
    _large_history(alice, 4)
    wanted = Want(sorted(alice.applied_ids()))
    out = sum(sent_bytes(ask(alice, b"\x09" * 32, wanted)) for _ in range(20))
    assert 0 < out <= ANSWER_BYTES_PER_PEER


def test_a_paced_answer_completes_at_the_peers_next_announcements() -> None:
    alice, bob = Replica(keys_for(1)), Replica(keys_for(2))
    _large_history(alice, 4)
    now_ms = 0
    for _ in range(10):
        answer = ask(alice, bob.node_id, Heads(bob.heads()), now_ms)
        for out in answer.outgoing:
            if isinstance(out.message, Updates):
                bob.handle(Received(alice.node_id, out.message), now_ms)
        if bob.updates_digest() == alice.updates_digest():
            break
        now_ms += 5_000  # the peer's next periodic announcement
    assert bob.document_digest() == alice.document_digest()


def test_with_a_member_list_only_members_get_answers() -> None:
    members = frozenset({keys_for(1).node_id, keys_for(2).node_id})
    alice = Replica(keys_for(1), config=ReplicaConfig(members=members))
    alice.transact([Put((), "k", "v")])
    assert sent_bytes(ask(alice, keys_for(66).node_id, Heads([]))) == 0
    assert sent_bytes(ask(alice, keys_for(2).node_id, Heads([]))) > 0


# ---------------------------------------------------------------- 7: memory in memory


def test_the_waiting_buffer_bound_is_counted_in_memory() -> None:
    # 3,000 small valid updates whose predecessors never come (one to four each),
    # against a buffer of 1 MiB: what the buffer holds stays within 1 MiB of memory.
    keys = keys_for(66)
    frames = []
    orphans = []
    for index in range(3_000):
        predecessors = sorted(
            index.to_bytes(2, "big") + bytes([part]) * 30 for part in range(1 + index % 4)
        )
        body = UpdateBody(keys.node_id, 1, 2, predecessors, [MapPut(ROOT, f"k{index}", index)])
        orphans.append(UPDATE_CODEC.encode(sign_update(keys, body)[1]))
    for start in range(0, len(orphans), 500):
        frames.append(CODEC.encode(Updates(orphans[start : start + 500])))
    del orphans
    bound = 1024 * 1024
    replica = Replica(
        keys_for(1), config=ReplicaConfig(max_waiting_updates=100_000, max_waiting_bytes=bound)
    )
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for frame in frames:
            replica.handle(Received(b"\x09" * 32, CODEC.decode(frame)), 0)  # type: ignore[arg-type]
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(replica.waiting_ids()) > 500  # the buffer is full, not empty
    # The rejections remembered and the heads table are not the buffer: a few KiB.
    assert held <= bound + 64 * 1024, held


# ---------------------------------------------------------------- 3: the causal index


def _exchange(first: Replica, second: Replica) -> None:
    """Each receives the other's latest update (both made before either arrives)."""
    first_update, second_update = last_update(first), last_update(second)
    deliver(second, first_update)
    deliver(first, second_update)


def test_many_chains_from_one_author_cost_honest_merges_no_copies() -> None:
    # 2,000 updates without predecessors open 2,000 chains.  Each honest merge used to
    # copy a map of every chain (about 100 KiB here); it now copies a few tree paths.
    alice, bob = Replica(keys_for(1)), Replica(keys_for(2))
    flood = orphan_updates(2_000, keys_for(66))
    for start in range(0, len(flood), 200):
        deliver(alice, *flood[start : start + 200])
        deliver(bob, *flood[start : start + 200])
        alice.transact([Put((), "a", 0)])
        bob.transact([Put((), "b", 0)])
        _exchange(alice, bob)
    while len(alice.heads()) > 2:  # merge what is left of the flood
        alice.transact([Put((), "a", 0)])
        bob.transact([Put((), "b", 0)])
        _exchange(alice, bob)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for round_number in range(100):  # concurrent writes: every update is a merge
            alice.transact([Put((), "a", round_number)])
            bob.transact([Put((), "b", round_number)])
            _exchange(alice, bob)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert alice.document_digest() == bob.document_digest()
    # 200 updates of about 400 bytes, their graph entries and a few tree paths each.
    assert grown < 2 * 1024 * 1024, grown


def test_a_span_crossing_into_another_sequence_is_refused() -> None:
    # One update makes text A ("abc", counters 1-3) and text B ("de", 5-6; B itself is
    # counter 4).  Deleting from A is checked over every element a span names.
    author = Replica(keys_for(5))
    author.transact(
        [
            Put((), "a", NewText()),
            InsertText(("a",), 0, "abc"),
            Put((), "b", NewText()),
            InsertText(("b",), 0, "de"),
        ]
    )
    made = last_update(author)
    update = body_id(made.body)
    text_a = Ref(update, 0)
    attacker = keys_for(66)
    verdicts = []
    for span in [Span(update, 2, 3), Span(update, 5, 1), Span(update, 0, 1), Span(update, 1, 3)]:
        receiver = Replica(keys_for(6))
        deliver(receiver, made)
        body = _delete_body(attacker, receiver, text_a, [span])
        step = deliver(receiver, sign_update(attacker, body)[1])
        verdicts.append(rejected(step) or receiver.document.text(("a",)))
    assert verdicts[:3] == [["deletion of an element of another sequence"]] * 3
    assert verdicts[3] == ""


def test_once_the_shared_budget_is_spent_requests_cost_no_history_walk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from synod.crdt.causal import UpdateGraph

    config = ReplicaConfig(answer_bytes_total=1024 * 1024, answer_bytes_total_per_second=1024)
    alice = Replica(keys_for(1), config=config)
    for index in range(2_000):
        alice.transact([Put((), "k", index)])
    walks = [0]
    original = UpdateGraph.missing_from

    def counting(self: UpdateGraph, heads: Any) -> list[int]:
        walks[0] += 1
        return original(self, heads)

    monkeypatch.setattr(UpdateGraph, "missing_from", counting)
    answered = sum(
        sent_bytes(ask(alice, index.to_bytes(32, "big"), Heads([]))) > 0 for index in range(100)
    )
    # About 240 KiB per answer (walk or bytes) against 1 MiB: a few walks, then none.
    assert 0 < answered == walks[0] <= 5
    # Time refills the shared budget: a later request is answered again.
    assert sent_bytes(ask(alice, b"\x09" * 32, Heads([]), now_ms=3_600_000)) > 0


def test_paced_answers_between_replicas_with_unknown_heads_go_on_where_they_left_off() -> None:
    # Each holds a head the other does not know, so each answers the other with its
    # whole history; cut to a budget smaller than the shared part, an answer that
    # started over each time would send only what the peer has, forever.
    budget = 8 * 1024
    config = ReplicaConfig(answer_bytes_per_peer=budget, answer_bytes_per_peer_per_second=budget)
    alice, bob = Replica(keys_for(1), config=config), Replica(keys_for(2), config=config)
    for index in range(300):
        alice.transact([Put((), f"shared{index}", "x" * 100)])
    for update_id in alice.applied_ids():
        bob.receive(UPDATE_CODEC.decode(alice.encoded_update(update_id)), Step())
    alice.transact([Put((), "alice", 1)])
    bob.transact([Put((), "bob", 1)])
    now_ms = 0
    for _ in range(100):
        for source, target in ((alice, bob), (bob, alice)):
            answer = ask(source, target.node_id, Heads(target.heads()), now_ms)
            for out in answer.outgoing:
                if isinstance(out.message, Updates):
                    target.handle(Received(source.node_id, out.message), now_ms)  # type: ignore[arg-type]
        if alice.updates_digest() == bob.updates_digest():
            break
        now_ms += 1_000
    assert alice.document_digest() == bob.document_digest()
