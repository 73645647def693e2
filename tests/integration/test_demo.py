"""`synod demo` (what `make demo` runs) as a user runs it: real processes, a crash, a
verdict; and the verdict itself, fed logs that disagree, so the failing exit is proven."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from synod.cli import demo as demo_module
from synod.cli.demo import ScpVerdict, judge_scp_logs


def verdict_of(stdout: str) -> dict[str, str]:
    """The checks a demonstration printed under ``verdict:``: name -> "yes" or "NO"; each
    line fits 80 columns."""
    lines = stdout.splitlines()
    found: dict[str, str] = {}
    for line in lines[lines.index("verdict:") + 1 :]:
        if not line.startswith("  "):
            break
        assert len(line) <= 80, line
        flag, name = line.split(maxsplit=1)
        found[name] = flag
    return found

def run_demo(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synod.cli.main", "demo", *arguments],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def assert_workdir_removed(stdout: str) -> None:
    workdir = stdout.split("(", 1)[1].split(")", 1)[0]
    assert workdir.startswith("/")
    assert not pathlib.Path(workdir).exists(), "the demo must remove its working directory"


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_scp_demo_agrees_slot_by_slot_after_a_crash_and_cleans_up() -> None:
    result = run_demo()
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "4 SCP nodes on 127.0.0.1" in result.stdout
    assert "SIGKILL node-3" in result.stdout
    assert "restarting node-3 from its SQLite file" in result.stdout
    assert re.search(r"slot +1 externalized on node-\d", result.stdout)
    # 4 nodes x (3 + 3 + 1) values over the three rounds
    checks = verdict_of(result.stdout)
    assert set(checks.values()) == {"yes"}, result.stdout[-2000:]
    assert any(re.fullmatch(r"every node has all \d+ slots", name) for name in checks)
    assert {"agreement", "each of the 28 values exactly once", "clean shutdown"} <= set(checks)
    assert_workdir_removed(result.stdout)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_reliable_broadcast_demo_agrees_after_a_crash_and_cleans_up() -> None:
    result = run_demo("--protocol", "rbc")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "reliable-broadcast nodes" in result.stdout
    assert "SIGKILL node-3" in result.stdout
    assert verdict_of(result.stdout) == {
        "agreement": "yes", "every node has all 25 values": "yes", "clean shutdown": "yes"
    }
    assert_workdir_removed(result.stdout)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_fastpay_demo_pays_through_a_shard_crash_and_every_balance_adds_up() -> None:
    result = run_demo("--protocol", "fastpay")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "server2.shard-1 SIGKILLed" in result.stdout
    assert "server2.shard-1 restarted from its SQLite file" in result.stdout
    # account 0 receives 3r + 7 and pays 3r each round (+7 x 3); the others -1 x 3
    balances = next(line for line in result.stdout.splitlines() if line.startswith('{"balances"'))
    assert balances == '{"balances": [121, 97, 97, 97, 97, 97, 97, 97]}'
    assert verdict_of(result.stdout) == dict.fromkeys(
        ["every payment confirmed once (24 of 24)", "each balance as the payments say",
         "supply still 800", "the killed shard restarted and served", "clean shutdown"],
        "yes",
    )  # fmt: skip
    assert_workdir_removed(result.stdout)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_tusk_demo_orders_through_a_core_and_driver_crash_and_agrees() -> None:
    result = run_demo("--protocol", "tusk")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "core-3 and the driver SIGKILLed" in result.stdout
    assert "core-3 restarted from its SQLite file" in result.stdout
    assert verdict_of(result.stdout) == dict.fromkeys(
        ["every core's sequence agrees where they overlap",
         "each of the 24 transactions committed exactly once", "clean shutdown"],
        "yes",
    )  # fmt: skip
    assert_workdir_removed(result.stdout)


def test_the_tusk_verdict_fails_on_a_fork_or_a_lost_transaction() -> None:
    from synod.cli.demo_tusk import _verdict

    def event(sequence: int, digest: str, *texts: str) -> dict[str, object]:
        return {"sequence": sequence, "digest": digest, "transactions": list(texts)}

    agreed = {"core-0": [event(0, "a", "x"), event(1, "b", "y")], "core-1": [event(0, "a", "x")]}
    assert _verdict(agreed, ["x", "y"], True)
    forked = {"core-0": [event(0, "a", "x"), event(1, "b", "y")], "core-1": [event(0, "c", "x")]}
    assert not _verdict(forked, ["x", "y"], True)
    assert not _verdict(agreed, ["x", "y", "z"], True)
    twice = {"core-0": [event(0, "a", "x"), event(1, "b", "x", "y")]}
    assert not _verdict(twice, ["x", "y"], True)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_crdt_demo_catches_up_a_node_that_was_away_and_agrees() -> None:
    result = run_demo("--protocol", "crdt")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "node-2 SIGKILLed" in result.stdout and "node-2 restarted" in result.stdout
    assert verdict_of(result.stdout) == dict.fromkeys(
        ["every node holds all 15 entries", "the same log, document and updates everywhere",
         "nothing left waiting", "clean shutdown"],
        "yes",
    )  # fmt: skip
    assert_workdir_removed(result.stdout)


def test_the_crdt_verdict_fails_on_a_missing_entry_or_another_document() -> None:
    from synod.cli.demo_crdt import _verdict

    digest = {"entries": 15, "updates": 15, "document": "d", "updates_digest": "u", "waiting": 0}
    assert _verdict({"a": digest, "b": dict(digest)}, 15, True)
    assert not _verdict({"a": digest, "b": digest | {"entries": 14}}, 15, True)
    assert not _verdict({"a": digest, "b": digest | {"document": "e"}}, 15, True)
    assert not _verdict({"a": digest, "b": digest | {"waiting": 1}}, 15, True)
    assert not _verdict({"a": digest}, 15, False)


def test_the_fastpay_verdict_fails_on_a_balance_that_does_not_add_up() -> None:
    from synod.cli.demo_fastpay import _verdict

    expected = {"n0": 121} | {f"n{index}": 97 for index in range(1, 8)}
    assert _verdict(dict(expected), expected, 24, True, True)
    assert not _verdict(expected | {"n0": 120, "n1": 98}, expected, 24, True, True)
    assert not _verdict(expected | {"n0": 120}, expected, 24, True, True)
    assert not _verdict(dict(expected), expected, 23, True, True)
    assert not _verdict(dict(expected), expected, 24, True, False)


# ---------------------------------------------------------------- the verdict

SUBMITTED = {"a", "b", "c"}
CLEAN = {"node-0": 0, "node-1": 0, "node-2": 0}


def test_identical_complete_logs_with_every_value_once_pass() -> None:
    log = {1: b'["a","b"]', 2: b'["c"]'}
    verdict = judge_scp_logs({"node-0": log, "node-1": log, "node-2": log}, SUBMITTED, CLEAN)
    assert verdict == ScpVerdict(agree=True, complete=True, exactly_once=True, clean=True)
    assert verdict.ok


def test_two_nodes_with_different_values_for_one_slot_fail_the_demo() -> None:
    logs = {
        "node-0": {1: b'["a","b"]', 2: b'["c"]'},
        "node-1": {1: b'["a","b"]', 2: b'["c"]'},
        "node-2": {1: b'["a"]', 2: b'["b","c"]'},  # same values overall, split differently
    }
    verdict = judge_scp_logs(logs, SUBMITTED, CLEAN)
    assert not verdict.agree
    assert not verdict.ok


def test_a_node_missing_a_slot_fails_the_demo() -> None:
    logs = {"node-0": {1: b'["a","b"]', 2: b'["c"]'}, "node-1": {1: b'["a","b"]'}}
    verdict = judge_scp_logs(logs, SUBMITTED, {"node-0": 0, "node-1": 0})
    assert verdict.agree and not verdict.complete and not verdict.ok


def test_a_lost_or_duplicated_value_fails_the_demo() -> None:
    lost = {1: b'["a","b"]'}
    assert not judge_scp_logs({"node-0": lost}, SUBMITTED, {"node-0": 0}).exactly_once
    duplicated = {1: b'["a","b"]', 2: b'["b","c"]'}
    assert not judge_scp_logs({"node-0": duplicated}, SUBMITTED, {"node-0": 0}).exactly_once


def test_a_node_that_did_not_stop_cleanly_fails_the_demo() -> None:
    log = {1: b'["a","b","c"]'}
    verdict = judge_scp_logs({"node-0": log, "node-1": log}, SUBMITTED, {"node-0": 0, "node-1": -9})
    assert verdict.agree and verdict.complete and verdict.exactly_once
    assert not verdict.clean and not verdict.ok


def test_the_summary_of_stores_that_disagree_fails(tmp_path: pathlib.Path) -> None:
    """The demo's own summary path, from SQLite files through to its verdict."""
    from synod.cli.scp import init
    from synod.core import Persist
    from synod.runtime.storage import SqliteStorage
    from synod.scp.log import log_record_key
    from synod.scp.network import load_network

    init.main([str(tmp_path), "--base-port", "23000"], standalone_mode=False)
    config = load_network(tmp_path)
    for index, node in enumerate(config.nodes):
        second = b'["c"]' if index < 3 else b'["d"]'
        with SqliteStorage.open(config.store_path(node)) as storage:
            storage.apply(
                [Persist(log_record_key(1), b'["a","b"]'), Persist(log_record_key(2), second)]
            )
    tally = demo_module._ScpTally([node.name for node in config.nodes])
    codes: dict[str, int | None] = {node.name: 0 for node in config.nodes}
    assert not demo_module._scp_summary(config, tally, SUBMITTED, codes)


def test_a_failing_verdict_makes_the_demo_exit_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo_module, "_run_scp", lambda workdir, nodes, values: False)
    result = CliRunner().invoke(demo_module.demo, [])
    assert result.exit_code == 1


def test_a_stalled_round_is_reported_as_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import queue

    from synod.cli.cluster import ClusterError

    monkeypatch.setattr(demo_module, "STEP_TIMEOUT_S", 0.05)
    tally = demo_module._ScpTally(["node-0", "node-1"])
    inbox: queue.Queue[tuple[str, dict[str, object]]] = queue.Queue()
    inbox.put(
        ("node-0", {"event": "externalized", "slot": 1, "entries": ["a"], "value_sha256": "x"})
    )
    with pytest.raises(ClusterError, match="progress stalled"):
        demo_module._wait_entries(inbox, tally, ["node-0", "node-1"], {"a"}, "round 1")


def test_a_node_exiting_during_a_round_is_reported_at_once() -> None:
    import queue

    from synod.cli.cluster import ClusterError

    tally = demo_module._ScpTally(["node-0", "node-1"])
    inbox: queue.Queue[tuple[str, dict[str, object]]] = queue.Queue()
    inbox.put(("node-1", {"event": "exited"}))
    with pytest.raises(ClusterError, match="stopped unexpectedly"):
        demo_module._wait_entries(inbox, tally, ["node-0", "node-1"], {"a"}, "round 1")
