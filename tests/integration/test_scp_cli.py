"""`synod scp init`, configuration errors, `submit` without a node, `status` from files.

No node process runs here: the configuration is read back as `synod scp run` reads it,
and the stores `status` reads are written with `SqliteStorage` directly."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.scp import EXIT_CONFIG, EXIT_FAILED, EXIT_UNREACHABLE
from synod.cli.scp import scp as scp_group
from synod.quorum.qset import QuorumSet, is_quorum, is_satisfied_by
from synod.runtime.storage import SqliteStorage
from synod.scp.log import log_record_key
from synod.scp.network import load_network


def invoke(*arguments: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(scp_group, list(arguments))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def init(directory: Path, *options: str) -> None:
    code, _, stderr = invoke("init", str(directory), "--base-port", "21000", *options)
    assert code == 0, stderr


def test_the_default_network_is_four_nodes_each_trusting_any_three(tmp_path: Path) -> None:
    init(tmp_path)
    config = load_network(tmp_path)
    ids = [node.node_id for node in config.nodes]
    assert [node.name for node in config.nodes] == ["node-0", "node-1", "node-2", "node-3"]
    for node in config.nodes:
        assert node.quorum_set.threshold == 3
        assert sorted(node.quorum_set.validators) == sorted(ids)
        assert node.key_file.stat().st_mode & 0o077 == 0
    ports = {port for node in config.nodes for port in (node.port, node.submit_port)}
    assert ports == set(range(21000, 21008))
    by_id: dict[bytes, QuorumSet] = {node.node_id: node.quorum_set for node in config.nodes}
    # any three nodes are a quorum (each one's slice is satisfied), two are not
    assert is_quorum(ids[:3], by_id.get)
    assert not is_quorum(ids[:2], by_id.get)


def test_a_tiered_network_trusts_a_share_of_organisations_each_by_majority(
    tmp_path: Path,
) -> None:
    init(tmp_path, "--organisations", "4", "--per-organisation", "3")
    config = load_network(tmp_path)
    assert len(config.nodes) == 12
    assert {node.organisation for node in config.nodes} == {"org-0", "org-1", "org-2", "org-3"}
    quorum_set = config.nodes[0].quorum_set
    assert quorum_set.threshold == 3  # 3 of 4 organisations: one may fail
    assert [inner.threshold for inner in quorum_set.inner_sets] == [2, 2, 2, 2]
    ids = [node.node_id for node in config.nodes]
    two_of_each_of_three_orgs = [ids[org * 3 + member] for org in range(3) for member in range(2)]
    assert is_satisfied_by(quorum_set, two_of_each_of_three_orgs)
    one_of_each_org = [ids[org * 3] for org in range(4)]
    assert not is_satisfied_by(quorum_set, one_of_each_org)


def test_init_refuses_to_overwrite_a_network(tmp_path: Path) -> None:
    init(tmp_path)
    code, _, stderr = invoke("init", str(tmp_path))
    assert code == 1 and "already exists" in stderr


def _rewrite(directory: Path, old: str, new: str) -> None:
    path = directory / "network.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "key", "expected"),
    [
        ("port = 21002", 'port = "x"', "nodes[1].port", "an integer 1..65535"),
        ("submit_port = 21001", "submit_port = 21000", "nodes[0].submit_port", "unique"),
        ("threshold = 3", "threshold = 5", "nodes[0].quorum_set.threshold", "an integer 1..4"),
        ('"node-0", "node-1"', '"node-0", "node-9"', "nodes[0].quorum_set.validators[1]", "name"),
        ('"node-0", "node-1"', '"node-0", "node-0"', "nodes[0].quorum_set", "a sane quorum set"),
        (
            "ballot_timeout_ms = 500",
            "ballot_timeout_ms = 0",
            "network.ballot_timeout_ms",
            "1..600000",
        ),
        ("retained_slots", "kept_slots", "network.kept_slots", "one of"),
        ('name = "node-2"', 'name = "node-1"', "nodes[2].name", "unique"),
    ],
)
def test_a_configuration_error_names_the_file_the_key_and_what_was_expected(
    tmp_path: Path, old: str, new: str, key: str, expected: str
) -> None:
    init(tmp_path)
    _rewrite(tmp_path, old, new)
    for command in (("status", str(tmp_path)), ("run", str(tmp_path), "node-0")):
        code, _, stderr = invoke(*command)
        assert code == EXIT_CONFIG, stderr
        assert f"{tmp_path / 'network.toml'}: {key}: " in stderr
        assert expected in stderr
        assert "Traceback" not in stderr


def test_broken_toml_is_a_configuration_error_without_a_traceback(tmp_path: Path) -> None:
    init(tmp_path)
    (tmp_path / "network.toml").write_text("[[nodes]\nname = ")
    code, _, stderr = invoke("status", str(tmp_path))
    assert code == EXIT_CONFIG and "valid TOML" in stderr and "Traceback" not in stderr


def test_an_unknown_node_and_a_missing_network_are_user_errors(tmp_path: Path) -> None:
    code, _, stderr = invoke("status", str(tmp_path))
    assert code == 1 and "no such file" in stderr and "synod scp init" in stderr
    init(tmp_path)
    code, _, stderr = invoke("run", str(tmp_path), "node-7")
    assert code == 1 and "no node 'node-7'" in stderr


def test_submitting_to_a_node_that_is_not_running_says_so(tmp_path: Path) -> None:
    from synod.cli.cluster import free_ports

    peer, submit = free_ports(2)
    code, _, stderr = invoke(
        "init", str(tmp_path), "--nodes", "1", "--ports", str(peer), "--submit-ports", str(submit)
    )
    assert code == 0, stderr
    code, _, stderr = invoke("submit", str(tmp_path), "node-0", "hello", "--timeout", "1")
    assert code == EXIT_UNREACHABLE
    assert f"127.0.0.1:{submit}" in stderr


def _write_log(path: Path, log: dict[int, bytes]) -> None:
    with SqliteStorage.open(path) as storage:
        from synod.core import Persist

        storage.apply(Persist(log_record_key(slot), value) for slot, value in log.items())


def test_status_reads_the_stores_and_exits_non_zero_when_nodes_disagree(tmp_path: Path) -> None:
    init(tmp_path)
    _write_log(tmp_path / "node-0.sqlite", {1: b'["a"]', 2: b'["b"]'})
    _write_log(tmp_path / "node-1.sqlite", {1: b'["a"]', 2: b'["b"]'})
    _write_log(tmp_path / "node-2.sqlite", {1: b'["a"]'})
    code, stdout, _ = invoke("status", str(tmp_path), "--json")
    assert code == 0
    document = json.loads(stdout)
    assert document["agree"] is True
    assert document["gaps"]["node-2"] == [2]
    assert document["never_ran"] == ["node-3"]
    assert document["slots"][1]["values"]["node-0"]["entries"] == ["b"]
    assert document["slots"][1]["values"]["node-2"] is None

    _write_log(tmp_path / "node-3.sqlite", {1: b'["a"]', 2: b'["c"]'})
    code, stdout, _ = invoke("status", str(tmp_path), "--json")
    assert code == EXIT_FAILED
    document = json.loads(stdout)
    assert document["agree"] is False and document["disagreements"] == [2]
    code, stdout, _ = invoke("status", str(tmp_path))
    assert code == EXIT_FAILED
    assert "NO" in stdout and "node-3" in stdout


def test_init_writes_toml_that_names_quorum_set_members_by_node_name(tmp_path: Path) -> None:
    init(tmp_path, "--nodes", "7")
    document = tomllib.loads((tmp_path / "network.toml").read_text())
    assert document["nodes"][0]["quorum_set"] == {
        "threshold": 5,  # 7 - (7 - 1) // 3: tolerates two faulty nodes
        "validators": [f"node-{index}" for index in range(7)],
    }


def test_init_refuses_a_network_whose_quorums_need_not_intersect(tmp_path: Path) -> None:
    """`synod scp init --nodes 4 --threshold 2` once wrote such a network silently."""
    from click.testing import CliRunner

    from synod.cli.main import cli

    runner = CliRunner()
    refused = runner.invoke(cli, ["scp", "init", str(tmp_path / "a"), "--threshold", "2"])
    assert refused.exit_code == 2 and "two disjoint quorums" in refused.output
    assert not (tmp_path / "a" / "network.toml").exists()
    forced = runner.invoke(
        cli, ["scp", "init", str(tmp_path / "b"), "--threshold", "2", "--force"]
    )
    assert forced.exit_code == 0, forced.output
    checked = runner.invoke(cli, ["fbas", "check", str(tmp_path / "b" / "network.toml")])
    assert checked.exit_code == 1  # the independent analysis agrees: no intersection
    three = runner.invoke(cli, ["scp", "init", str(tmp_path / "c"), "--threshold", "3"])
    assert three.exit_code == 0


def test_run_warns_when_the_network_quorums_need_not_intersect(tmp_path: Path) -> None:
    import subprocess
    import sys

    from click.testing import CliRunner

    from synod.cli.main import cli

    forced = CliRunner().invoke(
        cli, ["scp", "init", str(tmp_path / "net"), "--threshold", "2", "--force"]
    )
    assert forced.exit_code == 0
    process = subprocess.Popen(
        [sys.executable, "-m", "synod.cli.main", "scp", "run", str(tmp_path / "net"), "node-0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # printed before the node starts
        assert first.startswith("warning: ") and "share no node" in first, first
    finally:
        process.terminate()
        process.wait(timeout=20)
