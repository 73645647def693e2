"""Four `synod tusk core` processes whose `tusk.toml` copies differ in `kept_commits`:
core-3 keeps twice the log the others keep.  Before, nothing compared the setting, and
a core keeping more than the others could wait for good on a gap below what they keep.
Now the setting is part of the committee context every header carries: core-3 and the
others refuse each other at once, core-3 commits nothing, and the driver says which
core refuses whose headers.

Every wait is on a line the processes print, each with a deadline."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from synod.cli.cluster import WatchedProcess, free_ports, synod_command

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DEADLINE_S = 30.0


def _process(directory: Path, label: str, *arguments: str) -> WatchedProcess:
    return WatchedProcess(
        label, arguments, directory / f"{label}.stderr", deadline_s=DEADLINE_S, stdin=False
    )


def _warnings(path: Path) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("level") == "warning"]


def _refusing(path: Path) -> dict[str, list[str]]:
    """Each core the driver said refuses members' headers -> whose (its latest word)."""
    said = [line for line in _warnings(path) if "settings differ" in str(line.get("msg"))]
    return {str(line["core"]): list(line["refused"]) for line in said}  # type: ignore[call-overload]


def _wait_for_refusals(path: Path, expected: dict[str, list[str]]) -> None:
    """Poll the driver's log file, under a deadline, until it has said `expected`."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        said = _refusing(path)
        if all(said.get(core) == refused for core, refused in expected.items()):
            return
        time.sleep(0.05)
    raise AssertionError(f"the driver did not say {expected}: {path.read_text()[-2000:]}")


@pytest.fixture
def directories(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    ports = ",".join(str(port) for port in free_ports(4))
    main = tmp_path / "main"
    initialised = subprocess.run(
        synod_command("tusk", "init", str(main), "--cores", "4", "--ports", ports),
        capture_output=True,
        text=True,
        check=False,
    )
    assert initialised.returncode == 0, initialised.stderr
    other = tmp_path / "other"
    shutil.copytree(main, other)
    config = other / "tusk.toml"
    config.write_text(config.read_text().replace("kept_commits = 100000", "kept_commits = 200000"))
    yield main, other


def test_cores_keeping_different_lengths_of_log_refuse_each_other_and_the_driver_says_so(
    directories: tuple[Path, Path],
) -> None:
    main, other = directories
    processes = {
        f"core-{i}": _process(main, f"core-{i}", "tusk", "core", str(main), f"core-{i}")
        for i in range(3)
    }
    processes["core-3"] = _process(other, "core-3", "tusk", "core", str(other), "core-3")
    processes["driver"] = _process(main, "driver", "tusk", "driver", str(main), "--name", "d")
    try:
        for process in processes.values():
            process.wait_ready()
        submitted = subprocess.run(
            synod_command("tusk", "submit", str(main), "--core", "core-0", "pay alice 5"),
            capture_output=True,
            text=True,
            check=False,
            timeout=DEADLINE_S,
        )
        assert submitted.returncode == 0, submitted.stderr
        processes["core-0"].wait_for(
            lambda lines: any("pay alice 5" in line.get("transactions", ()) for line in lines),
            "the commit of pay alice 5",
        )
        _wait_for_refusals(
            main / "driver.stderr",
            {"core-3": ["core-0", "core-1", "core-2"], "core-0": ["core-3"]},
        )
    finally:
        for process in processes.values():
            process.kill_if_running()
    processes["core-3"].collect_after_exit()
    assert processes["core-3"].events("committed") == [], "it ordered nothing with them"
