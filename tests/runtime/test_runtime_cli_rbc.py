"""`synod rbc init` output and the configuration errors of `synod rbc run`; the checks of
the file itself are in tests/rbc/test_rbc_network_file.py."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.rbc import rbc
from synod.crypto import read_key_file
from synod.rbc.network import load_network


def init(directory: Path, *arguments: str) -> None:
    result = CliRunner().invoke(rbc, ["init", str(directory), *arguments])
    assert result.exit_code == 0, result.output


def test_init_writes_private_keys_matching_the_configured_ids(tmp_path: Path) -> None:
    init(tmp_path, "--nodes", "4", "--ports", "7001,7002,7003,7004")
    config = load_network(tmp_path)
    assert [node.name for node in config.nodes] == ["node-0", "node-1", "node-2", "node-3"]
    assert [node.port for node in config.nodes] == [7001, 7002, 7003, 7004]
    for node in config.nodes:
        assert stat.S_IMODE(node.key_file.stat().st_mode) == 0o600
        assert read_key_file(node.key_file).node_id == node.node_id
    assert len({node.node_id for node in config.nodes}) == 4


def test_init_uses_consecutive_ports_from_the_base_port(tmp_path: Path) -> None:
    init(tmp_path, "--nodes", "3", "--base-port", "9000")
    assert [node.port for node in load_network(tmp_path).nodes] == [9000, 9001, 9002]


def test_init_refuses_to_overwrite_a_network(tmp_path: Path) -> None:
    init(tmp_path, "--nodes", "1")
    result = CliRunner().invoke(rbc, ["init", str(tmp_path), "--nodes", "1"])
    assert result.exit_code != 0
    assert "already exists" in result.output


def test_init_rejects_a_wrong_number_of_ports(tmp_path: Path) -> None:
    result = CliRunner().invoke(rbc, ["init", str(tmp_path), "--nodes", "2", "--ports", "7001"])
    assert result.exit_code != 0
    assert "--ports" in result.output


def write_config(directory: Path, text: str) -> Path:
    path = directory / "network.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_configuration_error_is_exit_status_2_naming_the_file_and_the_key(
    tmp_path: Path,
) -> None:
    path = write_config(tmp_path, "[network]\nretransmit_ms = -1\n")
    result = CliRunner().invoke(rbc, ["run", str(tmp_path), "node-0"])
    assert result.exit_code == 2
    assert f"{path}: network.retransmit_ms: expected a positive integer" in result.output


def test_invalid_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[[nodes]\nname = ")
    result = CliRunner().invoke(rbc, ["run", str(tmp_path), "node-0"])
    assert result.exit_code != 0
    assert f"{path}: not valid TOML" in result.output


def test_run_names_the_missing_config_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(rbc, ["run", str(tmp_path), "node-0"])
    assert result.exit_code != 0
    assert str(tmp_path / "network.toml") in result.output


def test_run_lists_the_nodes_when_the_node_is_unknown(tmp_path: Path) -> None:
    init(tmp_path, "--nodes", "2")
    result = CliRunner().invoke(rbc, ["run", str(tmp_path), "node-7"])
    assert result.exit_code != 0
    assert "node-0, node-1" in result.output


def test_run_refuses_a_key_file_of_another_node(tmp_path: Path) -> None:
    init(tmp_path, "--nodes", "2")
    (tmp_path / "node-0.key").unlink()
    (tmp_path / "node-1.key").rename(tmp_path / "node-0.key")
    result = CliRunner().invoke(rbc, ["run", str(tmp_path), "node-0"])
    assert result.exit_code != 0
    assert str(tmp_path / "node-0.key") in result.output
    assert "another node" in result.output


def start_single_node(directory: Path, *, stdin: int, stderr: int) -> subprocess.Popen[bytes]:
    """`synod rbc run` of a one-node network made in `directory`, its stdout piped."""
    import os

    from synod.cli.cluster import free_ports, synod_command

    init(directory, "--nodes", "1", "--ports", str(free_ports(1)[0]))
    return subprocess.Popen(
        synod_command("rbc", "run", str(directory), "node-0"),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.timeout(20)
def test_single_node_delivers_stdin_lines_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    """One member (f = 0) delivers its own proposals; SIGINT closes SQLite (the log is
    checkpointed and removed) and exits 0."""
    import json
    import signal

    process = start_single_node(tmp_path, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert process.stdin is not None and process.stdout is not None
        assert json.loads(process.stdout.readline())["event"] == "ready"
        process.stdin.write("héllo\n\nworld\n".encode())
        process.stdin.flush()
        first = json.loads(process.stdout.readline())
        second = json.loads(process.stdout.readline())
        assert (first["sequence"], first["payload"]) == (0, "héllo")
        assert (second["sequence"], second["payload"]) == (1, "world")
        assert first["payload_hex"] == "héllo".encode().hex()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    wal = tmp_path / "node-0.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_stdin_from_dev_null_is_no_error(tmp_path: Path) -> None:
    """epoll refuses /dev/null; such input is read on a thread instead of failing."""
    import json
    import signal

    process = start_single_node(tmp_path, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["event"] == "ready"
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=10)
        assert process.returncode == 0
        assert b"Traceback" not in errors
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
