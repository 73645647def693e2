"""FastPay in the deterministic simulator: safety and liveness with up to f Byzantine
authorities under faults, a detected double spend with more than f colluders, checkers
that fire on hand-made histories, and determinism across processes."""

from __future__ import annotations

import collections
import os
import subprocess
import sys

import pytest

from synod.crypto import NodeId
from synod.fastpay import authority as authority_module
from synod.fastpay.messages import Transfer
from synod.sim.history import to_plain
from synod.sim.runner import RunSettings, run_scenario
from synod.sim.scenarios.fastpay import (
    ConservationChecker,
    FastPayScenario,
    ForgingClient,
    NoDoubleSpendChecker,
    forged_certificates_kept,
    transfer_of,
)

CI_SEEDS = 200

ALICE, BOB, CAROL = bytes([1]) * 32, bytes([2]) * 32, bytes([3]) * 32


CHUNK = CI_SEEDS // 4


@pytest.mark.parametrize(
    ("first_seed", "shards"), [(0, 1), (CHUNK, 1), (2 * CHUNK, 3), (3 * CHUNK, 3)]
)
def test_two_hundred_seeds_keep_safety_and_finish_every_plan_after_healing(
    first_seed: int, shards: int
) -> None:
    """Half the seeds with one shard per authority, half with three (cross-shard updates
    through the simulated network, outboxes across crashes), in chunks of 50.  Clients
    are users in a hurry: they retry, some restart from their key alone, and every plan
    ends by spending payments the client only learns of from the authorities."""
    failed = []
    behaviours: collections.Counter[str] = collections.Counter()
    happenings: collections.Counter[str] = collections.Counter()
    for seed in range(first_seed, first_seed + CHUNK):
        scenario = FastPayScenario(shards=shards)
        outcome = run_scenario(scenario, seed)
        if not outcome.ok:
            failed.append((seed, [str(v) for v in outcome.violations]))
        # The forging client's certificates (valid votes, an order its sender never
        # signed) are never applied or kept by an honest authority.
        if forged_certificates_kept(outcome.world, honest_authority_ids(scenario)):
            failed.append((seed, ["an honest authority kept a forged certificate"]))
        forger = outcome.world.core(scenario.forger_keys.node_id, ForgingClient)
        happenings["forged"] += forger.forged
        happenings["replayed"] += forger.replayed
        for record in outcome.world.history:
            happenings[record["kind"]] += 1
            if record["kind"] == "event":
                happenings[record["event"]["type"]] += 1
        for node in outcome.world.nodes:
            behaviour = getattr(node.core, "behaviour", None)
            if behaviour is not None:
                behaviours[behaviour] += 1
    assert not failed, failed[:3]
    # Every Byzantine behaviour was exercised somewhere in the seed range.
    assert set(behaviours) == {"silent", "garbage", "liar", "promiscuous"}
    # The runs met crashes and partitions, and clients recovered from failed operations.
    assert happenings["crash"] and happenings["partition"] and happenings["TransferFailed"]
    # Wallets restored from their keys, recovered from the authorities, and received
    # payments pushed to authorities that lacked them.
    assert happenings["WalletRestored"] and happenings["AccountRecovered"]
    assert happenings["Synchronized"]
    assert happenings["forged"] and happenings["replayed"]
    assert happenings["TransferCredited"] == happenings["TransferApplied"] > 0


def honest_authority_ids(scenario: FastPayScenario) -> list[NodeId]:
    return [NodeId(bytes.fromhex(name)) for name in sorted(scenario.honest_authorities())]


def test_authorities_that_skip_the_sender_signature_keep_the_forgers_certificates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the authorities did before certificates were checked completely: the
    # forging client's certificates get applied and kept, and the run shows it.
    real = authority_module.transfer_order_is_valid
    monkeypatch.setattr(authority_module, "transfer_order_is_valid", lambda *_: True)
    scenario = FastPayScenario()
    outcome = run_scenario(scenario, 0)
    kept = forged_certificates_kept(outcome.world, honest_authority_ids(scenario))
    monkeypatch.setattr(authority_module, "transfer_order_is_valid", real)
    assert kept > 0


def test_f_colluding_authorities_and_an_equivocating_client_get_no_double_spend() -> None:
    for seed in range(20):
        outcome = run_scenario(FastPayScenario(byzantine=1, collude=True), seed)
        assert outcome.ok, (seed, [str(v) for v in outcome.violations])


def test_more_than_f_colluding_authorities_produce_a_detected_double_spend() -> None:
    # 2 of 4 colluders plus one honest authority per order make two quorums of 3.
    settings = RunSettings(faults=False)
    outcome = run_scenario(FastPayScenario(byzantine=2, collude=True), 0, settings)
    assert not outcome.ok
    assert {violation.checker for violation in outcome.violations} == {"double-spend"}


def test_double_spend_checker_fires_on_two_transfers_for_one_sequence_number() -> None:
    checker = NoDoubleSpendChecker({"aa", "bb"})
    first = Transfer(ALICE, BOB, 5, 0)
    second = Transfer(ALICE, CAROL, 5, 0)
    record_a = {"t": 1, "kind": "event", "node": "aa", "event": applied(first)}
    record_b = {"t": 2, "kind": "event", "node": "bb", "event": applied(second)}
    assert checker.observe(record_a) == []
    assert checker.observe(dict(record_a, node="bb")) == []  # the same transfer again
    assert len(checker.observe(record_b)) == 1
    # Byzantine nodes' events are not evidence.
    assert NoDoubleSpendChecker({"aa"}).observe(dict(record_b, node="cc")) == []


def test_conservation_checker_fires_on_overspending_and_out_of_order_application() -> None:
    genesis = {ALICE: 10, BOB: 0}
    checker = ConservationChecker({"aa"}, genesis)
    ok = {"t": 1, "kind": "event", "node": "aa", "event": applied(Transfer(ALICE, BOB, 6, 0))}
    assert checker.observe(ok) == []
    # 6 + 6 > 10: the second debit makes value out of nothing.
    over = {"t": 2, "kind": "event", "node": "aa", "event": applied(Transfer(ALICE, BOB, 6, 1))}
    assert [v.checker for v in checker.observe(over)] == ["conservation"]
    skipping = ConservationChecker({"aa"}, genesis)
    ahead = {"t": 1, "kind": "event", "node": "aa", "event": applied(Transfer(ALICE, BOB, 1, 1))}
    assert len(skipping.observe(ahead)) == 1


def test_conservation_checker_fires_on_a_credit_without_debit_or_twice() -> None:
    checker = ConservationChecker({"aa"}, {ALICE: 10})
    transfer = Transfer(ALICE, BOB, 3, 0)
    credit = {"t": 1, "kind": "event", "node": "aa", "event": credited(transfer)}
    assert len(checker.observe(credit)) == 1  # no debit yet
    debit = {"t": 2, "kind": "event", "node": "aa", "event": applied(transfer)}
    assert checker.observe(debit) == []
    assert checker.observe(dict(credit, t=3)) == []
    assert len(checker.observe(dict(credit, t=4))) == 1  # the second credit


def test_transfer_history_form_round_trips() -> None:
    transfer = Transfer(ALICE, BOB, 7, 3, b"memo")
    assert transfer_of(to_plain(transfer)) == transfer
    assert transfer_of(to_plain(Transfer(ALICE, BOB, 7, 3))) == Transfer(ALICE, BOB, 7, 3)


def applied(transfer: Transfer) -> dict[str, object]:
    return {"type": "TransferApplied", "transfer": to_plain(transfer)}


def credited(transfer: Transfer) -> dict[str, object]:
    return {"type": "TransferCredited", "transfer": to_plain(transfer)}


@pytest.mark.timeout(60)
def test_history_is_identical_across_processes_and_hash_seeds() -> None:
    script = (
        "from synod.sim.runner import run_scenario\n"
        "from synod.sim.scenarios.fastpay import FastPayScenario\n"
        "print(run_scenario(FastPayScenario(shards=2), seed=7).history_digest)\n"
    )
    digests = set()
    for hash_seed in ("1", "2", "random"):
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1


def test_sim_fastpay_command_reports_verdicts_and_exit_codes() -> None:
    from click.testing import CliRunner

    from synod.cli.sim_fastpay import command

    passing = CliRunner().invoke(command, ["--seed", "3", "--seeds", "2"])
    assert passing.exit_code == 0 and passing.output.count(" ok ") == 2
    attack = ["--seed", "0", "--byzantine", "2", "--collude", "--no-faults"]
    broken = CliRunner().invoke(command, attack)
    assert broken.exit_code == 1 and "[double-spend]" in broken.output
