"""What a new user sees: committees that cannot tolerate a fault refused unless forced,
simulator violations naming nodes as the run's headers do, data warnings that survive a
pipe, and documentation examples that say they worked."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
from pathlib import Path

from synod.cli.cluster import free_ports, synod_command
from synod.crypto import NodeId
from synod.fbas.load import encode_public_key
from synod.sim.checkers import Violation
from synod.sim.runner import name_nodes
from synod.sim.world import World

ROOT = Path(__file__).resolve().parents[2]


def synod(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        synod_command(*arguments), capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip


def test_tusk_init_refuses_a_committee_that_tolerates_no_fault_unless_forced(
    tmp_path: Path,
) -> None:
    ports = ",".join(str(port) for port in free_ports(3))
    refused = synod("tusk", "init", str(tmp_path / "three"), "--cores", "3", "--ports", ports)
    assert refused.returncode == 2
    assert "tolerates no faulty core" in refused.stderr and "--force" in refused.stderr
    assert not (tmp_path / "three" / "tusk.toml").exists()
    forced = synod("tusk", "init", str(tmp_path / "three"), "--cores", "3", "--ports", ports,
                   "--force")  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert len(forced.stdout.splitlines()) == 3
    ports = ",".join(str(port) for port in free_ports(4))
    assert synod("tusk", "init", str(tmp_path / "four"), "--ports", ports).returncode == 0


def test_a_violation_names_nodes_by_their_index_not_their_hex_id() -> None:
    world = World.perfect(seed=1)
    ids = [NodeId(bytes([number]) * 32) for number in range(3)]
    for node_id in ids:
        world.add_node(node_id, lambda storage, rng: None, codec=None)  # type: ignore[arg-type, return-value]
    second, third = bytes(ids[1]).hex(), bytes(ids[2]).hex()
    detail = f"{second[:8]}#1: node {second[:8]} decided 0a0b but node {third} did not"
    named = name_nodes(Violation("agreement", 5, detail), world)
    assert named.detail == "node 1#1: node 1 decided 0a0b but node 2 did not"
    assert named.checker == "agreement" and named.t == 5
    untouched = Violation("prefix", 1, "digest deadbeefcafe at position 0")
    assert name_nodes(untouched, world) == untouched  # no node's id: left as it was


def test_a_failing_simulator_run_prints_node_numbers() -> None:
    done = synod("sim", "rbc", "--byzantine", "2", "--split-brain", "--seed",
                 "6311362505072253883", "--json")  # fmt: skip
    assert done.returncode == 1
    (verdict,) = [json.loads(line) for line in done.stdout.splitlines()]
    (violation,) = verdict["violations"]
    assert re.search(r"node [0-3] decided", violation), violation
    assert not re.search(r"node [0-9a-f]{8}", violation), violation


def test_fbas_data_warnings_reach_stderr_when_output_is_piped(tmp_path: Path) -> None:
    keys = [encode_public_key(bytes([number]) * 32) for number in range(5)]
    members = keys  # the fifth validator is named in quorum sets but absent
    nodes = [
        {"publicKey": key, "quorumSet": {"threshold": 3, "validators": members,
                                         "innerQuorumSets": []}}
        for key in keys[:4]
    ]  # fmt: skip
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps(nodes))
    done = synod("fbas", "check", str(path))  # stdout and stderr are pipes here
    assert done.returncode in (0, 1), done.stderr
    assert "note: 1 validators named in quorum sets are absent from the input" in done.stderr


def python_blocks(page: str) -> list[str]:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def test_the_in_memory_fastpay_and_crdt_examples_print_what_they_did() -> None:
    for page, index, expected in (
        ("fastpay.md", 0, "alice 70 bob 30\n"),
        ("crdt.md", 0, "{'notes': 'Hello', 'tags': ['draft', {'owner': 'alice'}], 'votes': 1}\n"),
    ):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(python_blocks(page)[index], page, "exec"), {})
        assert printed.getvalue() == expected, page


def test_a_fastpay_genesis_for_a_committee_that_tolerates_no_fault_is_refused_unless_forced(
    tmp_path: Path,
) -> None:
    def fastpay(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            synod_command("fastpay", *arguments), cwd=tmp_path, capture_output=True,
            text=True, check=False, timeout=60,
        )  # fmt: skip

    committee = ""
    for index, port in enumerate(free_ports(4), start=1):
        made = fastpay("server", "--server", f"s{index}.json", "generate", "--port", str(port))
        assert made.returncode == 0, made.stderr
        committee += made.stdout
    lines = committee.splitlines(keepends=True)
    (tmp_path / "three.json").write_text("".join(lines[:3]))
    (tmp_path / "four.json").write_text("".join(lines))
    create = ["--accounts", "accounts.json", "create-accounts", "1"]
    refused = fastpay("client", "--committee", "three.json", *create)
    assert refused.returncode == 2
    assert "tolerate faulty weight 0" in refused.stderr and "--force" in refused.stderr
    assert not (tmp_path / "accounts.json").exists()
    forced = fastpay("client", "--committee", "three.json", *create, "--force")
    assert forced.returncode == 0, forced.stderr
    accepted = fastpay("client", "--committee", "four.json", *create)
    assert accepted.returncode == 0, accepted.stderr


def test_every_init_table_fits_80_columns_with_five_digit_ports(tmp_path: Path) -> None:
    ports = [str(port) for port in free_ports(8)]
    assert all(len(port) == 5 for port in ports)  # Linux hands out 32768..60999
    commands = [
        ("rbc", "init", str(tmp_path / "rbc"), "--ports", ",".join(ports[:4])),
        ("tusk", "init", str(tmp_path / "tusk"), "--ports", ",".join(ports[:4])),
        ("scp", "init", str(tmp_path / "scp"), "--ports", ",".join(ports[:4]),
         "--submit-ports", ",".join(ports[4:])),
        ("crdt", "init-network", str(tmp_path / "crdt"), "--relay-port", ports[0]),
        ("crdt", "init", str(tmp_path / "alice"), "--relay", f"ws://127.0.0.1:{ports[0]}"),
    ]  # fmt: skip
    for command in commands:
        done = synod(*command)
        assert done.returncode == 0, (command, done.stderr)
        lines = done.stdout.splitlines()
        assert lines and all(len(line) <= 80 for line in lines), (command, lines)
