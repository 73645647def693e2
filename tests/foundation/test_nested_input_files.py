"""Files nested deeper than Python's parsers recurse (JSON arrays, TOML arrays thousands
deep) are refused with each reader's typed error, not a RecursionError traceback: the
standard parsers recurse once per level and give up near 1,000 levels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from synod import config
from synod.cli.stellar import read_quorum_set
from synod.fastpay.config import FastPayFileError, ServerFile, json_lines
from synod.scp.network import load_network

DEPTH = 50_000
DEEP_JSON = "[" * DEPTH + "]" * DEPTH
DEEP_TOML = "x = " + "[" * DEPTH + "]" * DEPTH + "\n"


def test_a_deep_toml_configuration_is_a_config_file_error(tmp_path: Path) -> None:
    path = tmp_path / "tusk.toml"
    path.write_text(DEEP_TOML)
    with pytest.raises(config.ConfigFileError, match="nested too deeply"):
        config.read_toml(path)


def test_a_configuration_that_is_a_directory_is_a_config_file_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigFileError, match="cannot read"):
        config.read_toml(tmp_path)


def test_a_deep_network_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "network.toml").write_text(DEEP_TOML)
    with pytest.raises(config.ConfigError, match="nested too deeply"):
        load_network(tmp_path)


def test_a_deep_quorum_set_file_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "qset.json"
    path.write_text(DEEP_JSON)
    with pytest.raises(click.ClickException, match="nested too deeply"):
        read_quorum_set(path)


def test_a_deep_json_line_is_a_fastpay_file_error() -> None:
    with pytest.raises(FastPayFileError, match=r"accounts:2: .*nested too deeply"):
        list(json_lines("{}\n" + DEEP_JSON + "\n", "accounts"))


def test_a_deep_server_file_is_a_fastpay_file_error(tmp_path: Path) -> None:
    path = tmp_path / "server.json"
    path.write_text(DEEP_JSON)
    path.chmod(0o600)
    with pytest.raises(FastPayFileError, match="nested too deeply"):
        ServerFile.load(path)


def test_fbas_check_of_a_deep_file_says_one_line_and_exits_two(tmp_path: Path) -> None:
    path = tmp_path / "nodes.json"
    path.write_text(DEEP_JSON)
    done = subprocess.run(
        [sys.executable, "-m", "synod.cli.main", "fbas", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: {path}: JSON nested too deeply to be a network file"
    ]
