"""Durations and probabilities on the command line are finite numbers: "nan" passes
every comparison of click's ranges (it compares false with each bound) and "inf" passes
an open upper bound, so each used to reach the command (a timeout that never ends, a
negative wait where the type was a plain float)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.main import cli


def commands(directory: Path, network: Path) -> dict[str, list[str]]:
    return {
        "fbas check --timeout": ["fbas", "check", str(network), "--timeout"],
        "crdt status --timeout": ["crdt", "status", str(directory), "--timeout"],
        "crdt submit --timeout": ["crdt", "submit", str(directory), "n0", "x", "--timeout"],
        "scp submit --timeout": ["scp", "submit", str(directory), "n0", "--timeout"],
        "tusk submit --timeout-s": ["tusk", "submit", str(directory), "tx", "--timeout-s"],
        "stellar crawl --listen-s": ["stellar", "crawl", "127.0.0.1:1", "--listen-s"],
        "tusk down --timeout": ["tusk", "down", str(directory), "--timeout"],
    }


NAMES = list(commands(Path(), Path()))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", NAMES)
def test_a_non_finite_number_is_refused_before_the_command_runs(
    tmp_path: Path, name: str, value: str
) -> None:
    network = tmp_path / "nodes.json"
    network.write_text("[]")
    result = CliRunner().invoke(cli, [*commands(tmp_path, network)[name], value])
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", ["crdt status --timeout", "tusk down --timeout"])
def test_a_negative_timeout_is_refused_where_it_was_a_plain_float(
    tmp_path: Path, name: str
) -> None:
    result = CliRunner().invoke(cli, [*commands(tmp_path, tmp_path / "n.json")[name], "-1"])
    assert result.exit_code == 2, result.output
    assert "is not in the range x>0" in result.output
