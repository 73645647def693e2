"""`synod sim` refuses what would make a verdict meaningless or fail only after the runs:
no seeds to run (a CI job that passes by running nothing), negative virtual times, and a
--history file in a directory that does not exist (it was written after the runs, a
FileNotFoundError traceback once they were done)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.main import cli


@pytest.mark.parametrize(
    "options",
    [
        ("--seeds", "0"),
        ("--seeds", "-5"),
        ("--safety-ms", "-1"),
        ("--liveness-ms", "-1"),
    ],
)
@pytest.mark.parametrize("protocol", ["rbc", "crdt", "scp"])
def test_a_count_or_time_out_of_range_is_a_usage_error(
    protocol: str, options: tuple[str, str]
) -> None:
    result = CliRunner().invoke(cli, ["sim", protocol, "--seed", "1", *options])
    assert result.exit_code == 2, result.output
    assert options[0] in result.output
    assert "TALLY" not in result.output


def test_a_history_file_in_a_missing_directory_is_refused_before_the_runs(
    tmp_path: Path,
) -> None:
    history = tmp_path / "missing" / "history.jsonl"
    result = CliRunner().invoke(cli, ["sim", "rbc", "--seed", "1", "--history", str(history)])
    assert result.exit_code == 2, result.output
    assert "--history" in result.output and "SEED=" not in result.output


@pytest.mark.parametrize(
    "arguments",
    [["rbc", "--nodes", "1"], ["scp", "--nodes", "1", "--byzantine", "1"]],
    ids=["rbc", "scp"],
)
def test_a_network_of_one_byzantine_node_is_not_a_simulator_crash(arguments: list[str]) -> None:
    # before: the garbage and conflicting-statement behaviours drew a peer from an empty
    # list, and the run failed with "[exception] ... empty range for randrange()"
    result = CliRunner().invoke(cli, ["sim", *arguments, "--seeds", "5", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "TALLY: 5 runs, 5 passed, 0 failed" in result.output
