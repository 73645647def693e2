"""Hostile and careless input to `synod scp init`: each is refused with one clear line
(exit status 2) and leaves no file behind, or is written so that the network's loader
reads back exactly what was typed."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from synod.cli.scp import scp
from synod.scp.network import load_network

# Undecodable bytes of an argument reach Python as lone surrogates (surrogateescape).
UNDECODABLE = "\udcff"


def invoke(*arguments: str) -> Result:
    result = CliRunner().invoke(scp, list(arguments))
    # a user error exits through click (SystemExit); anything else is a traceback
    assert isinstance(result.exception, SystemExit | None), result.exception
    return result


def init(directory: Path, *options: str) -> Result:
    return invoke("init", str(directory), "--nodes", "1", "--base-port", "17200", *options)


def test_init_writes_characters_outside_the_bmp_that_the_loader_reads_back(
    tmp_path: Path,
) -> None:
    result = init(
        tmp_path, "--network-id", "net-\U0001f600", "--stellar", "--passphrase", "pass \U0001f600"
    )
    assert result.exit_code == 0, result.output
    config = load_network(tmp_path)
    assert config.settings.network_id == "net-\U0001f600".encode()
    assert config.stellar is not None and config.stellar.passphrase == "pass \U0001f600"


@pytest.mark.parametrize(
    "options",
    [("--network-id", UNDECODABLE), ("--stellar", "--passphrase", UNDECODABLE)],
)
def test_init_refuses_undecodable_bytes_with_a_usage_error(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    result = init(tmp_path / "network", *options)
    assert result.exit_code == 2
    assert options[-2] in result.output


@pytest.mark.parametrize("host", ["", UNDECODABLE])
def test_a_refused_init_leaves_nothing_so_that_it_can_run_again(tmp_path: Path, host: str) -> None:
    refused = init(tmp_path, "--host", host)
    assert refused.exit_code != 0
    assert sorted(path.name for path in tmp_path.iterdir()) == []
    assert init(tmp_path).exit_code == 0
