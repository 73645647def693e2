"""Bad input to the supervision commands (`synod <protocol> status | logs | down`): a
damaged ``processes.json`` is one line naming the entry, never a traceback and never a
signal to a process the network does not own; log files are read from ``DIR/logs``
whatever directory `up` ran from, and only their end is read."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.tusk import tusk
from synod.runtime import supervisor
from synod.runtime.supervisor import Service, Supervisor, SupervisorError


def entry(**changes: object) -> dict[str, object]:
    started = {
        "name": "core-0",
        "pid": 4_000_000,  # above Linux's pid_max: no process has it
        "command": ["python", "-m", "synod.cli.main", "tusk", "core", ".", "core-0"],
        "stdout": "net/logs/core-0.out",
        "stderr": "net/logs/core-0.err",
    }
    return {**started, **changes}


def write_processes(directory: Path, document: object) -> None:
    (directory / "processes.json").write_text(json.dumps(document), encoding="utf-8")


@pytest.mark.parametrize("pid", [-1, 0, True, "12", 1.5])
def test_down_refuses_a_pid_that_is_not_a_process_and_signals_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pid: object
) -> None:
    # before: pid -1 passed the liveness check (kill(-1, 0) succeeds) and `down` sent
    # SIGTERM to every process of the user; pid 0, to its own process group
    signals: list[tuple[int, int]] = []

    def record(target: int, number: int) -> None:
        signals.append((target, number))

    monkeypatch.setattr(supervisor.os, "kill", record)
    write_processes(tmp_path, {"processes": [entry(pid=pid)]})
    with pytest.raises(SupervisorError, match=r"processes\[0\]: pid: expected a positive"):
        Supervisor(tmp_path).down(timeout_s=0.1)
    assert signal.SIGTERM not in [number for _, number in signals]
    assert signals == []


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ([], "expected an object with a processes list"),
        ({}, "expected an object with a processes list"),
        ({"processes": 5}, "expected an object with a processes list"),
        ({"processes": [5]}, r"processes\[0\]: expected name, pid"),
        ({"processes": [{"name": "x"}]}, r"processes\[0\]: expected name, pid"),
        ({"processes": [entry(command="python")]}, "command: expected a list of strings"),
        ({"processes": [entry(name="../x")]}, "name: expected a process name"),
    ],
)
def test_a_damaged_processes_file_is_one_line_naming_the_entry(
    tmp_path: Path, document: object, expected: str
) -> None:
    write_processes(tmp_path, document)
    for command in ("logs", "down"):
        result = CliRunner().invoke(tusk, [command, str(tmp_path)])
        assert result.exit_code == 1, result.output
        assert not isinstance(result.exception, TypeError | KeyError), result.exception
        assert "processes.json" in result.output
        assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(SupervisorError, match=expected):
        Supervisor(tmp_path).recorded()


def test_a_processes_file_nested_too_deep_is_unreadable_not_a_recursion_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "processes.json").write_text("[" * 100_000, encoding="utf-8")
    with pytest.raises(SupervisorError, match="unreadable"):
        Supervisor(tmp_path).recorded()


def test_logs_are_read_from_the_directory_whatever_directory_up_ran_from(
    tmp_path: Path,
) -> None:
    # `synod tusk up net` records net/logs/core-0.out, relative to where it ran: before,
    # `synod tusk logs /elsewhere/net` printed nothing and exited 0
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "core-0.out").write_text("first\nlast\n", encoding="utf-8")
    write_processes(tmp_path, {"processes": [entry(stdout="elsewhere/core-0.out")]})
    result = CliRunner().invoke(tusk, ["logs", str(tmp_path), "-n", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["core-0.out: last"]
    assert [status.last_line for status in Supervisor(tmp_path).status()] == ["last"]


def test_logs_and_status_read_only_the_end_of_a_huge_log(tmp_path: Path) -> None:
    # a node's output grows for as long as it runs: a sparse gigabyte stands for it
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "core-0.out"
    with log.open("wb") as handle:
        handle.truncate(1 << 30)
        handle.seek(0, os.SEEK_END)
        handle.write(b"\nthe last line\n")
    write_processes(tmp_path, {"processes": [entry()]})
    assert [status.last_line for status in Supervisor(tmp_path).status()] == ["the last line"]
    result = CliRunner().invoke(tusk, ["logs", str(tmp_path), "-n", "1"])
    assert result.output.splitlines()[0] == "core-0.out: the last line"
    lines, size = supervisor.tail_lines(log, 1)
    assert (lines, size) == (["the last line"], (1 << 30) + 15)


def test_status_says_when_processes_json_is_unreadable(tmp_path: Path) -> None:
    # before, status showed the nodes' answers and silently left out what `up` started
    result = CliRunner().invoke(tusk, ["init", str(tmp_path / "net"), "--base-port", "9"])
    assert result.exit_code == 0, result.output
    (tmp_path / "net" / "processes.json").write_text("{", encoding="utf-8")
    result = CliRunner().invoke(tusk, ["status", str(tmp_path / "net"), "--timeout", "0.5"])
    assert result.exit_code == 1
    assert "processes.json: unreadable" in result.output


def test_up_with_a_logs_path_that_is_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("not a directory", encoding="utf-8")
    with pytest.raises(SupervisorError, match="logs: cannot create"):  # FileExistsError before
        Supervisor(tmp_path).up([Service("a", ("--version",), waits_for_ready=False)])


def test_up_with_a_log_file_that_cannot_be_opened_stops_what_it_started(tmp_path: Path) -> None:
    (tmp_path / "logs" / "b.out").mkdir(parents=True)  # IsADirectoryError before
    services = [
        Service("a", ("--version",), waits_for_ready=False),
        Service("b", ("--version",), waits_for_ready=False),
    ]
    with pytest.raises(SupervisorError, match="cannot start the network"):
        Supervisor(tmp_path).up(services)
    assert not (tmp_path / "processes.json").exists()
