"""`synod sim`: a multi-seed run ends with a tally, and each failing seed comes with the
whole command that reproduces it, which does."""

from __future__ import annotations

import shlex

from click.testing import CliRunner

from synod.cli.main import cli


def run(arguments: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, arguments, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_failing_seeds_are_tallied_and_each_printed_command_reproduces_its_failure() -> None:
    code, stdout, stderr = run(
        ["sim", "rbc", "--byzantine", "2", "--split-brain", "--seeds", "2", "--seed", "5",
         "--liveness-ms", "5000"]
    )  # fmt: skip
    assert code == 1
    assert "TALLY: 2 runs, 0 passed, 2 failed" in stdout
    commands = [line.removeprefix("reproduce: ") for line in stderr.splitlines()
                if line.startswith("reproduce: ")]  # fmt: skip
    assert len(commands) == 2
    words = shlex.split(commands[1])
    assert words[:3] == ["synod", "sim", "rbc"] and words[-2:] == ["--seed", "6"]
    again_code, again_stdout, _ = run(words[1:])
    assert again_code == 1
    assert "SEED=6" in again_stdout and "TALLY: 1 runs, 0 passed, 1 failed" in again_stdout


def test_a_passing_run_is_tallied_too() -> None:
    code, stdout, stderr = run(["sim", "rbc", "--seeds", "2", "--seed", "1"])
    assert code == 0
    assert "TALLY: 2 runs, 2 passed, 0 failed" in stdout
    assert "reproduce:" not in stderr
