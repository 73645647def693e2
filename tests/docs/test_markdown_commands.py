"""The runner of the docs' commands fails where a reader would: on tiny Markdown pages
with a broken command, a server that died, a documented failure that no longer fails."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import markdown_commands
import pytest
from markdown_commands import MarkerError, PageResult, blocks_of, commands_not_run, run_blocks

pytestmark = pytest.mark.integration  # each runs bash and synod processes

SERVER = "python -c \"import time; print('ready', flush=True); time.sleep(300)\""


def run_page(markdown: str, root: Path) -> PageResult:
    return run_blocks(blocks_of(markdown, "page.md"), root)


def fence(text: str, language: str = "sh", marker: str = "") -> str:
    comment = f"<!-- doc-test: {marker} -->\n" if marker else ""
    return f"{comment}```{language}\n{text}\n```\n\n"


def test_a_page_whose_commands_work_passes(tmp_path: Path) -> None:
    result = run_page(fence("synod --help\necho done > done.txt"), tmp_path)
    assert result.status == 0, result.output
    assert (tmp_path / "main" / "done.txt").read_text() == "done\n"


def test_a_broken_command_fails_the_page_and_names_its_block(tmp_path: Path) -> None:
    page = "Intro.\n\n" + fence("echo fine") + fence("synod no-such-command\ntouch after.txt")
    result = run_page(page, tmp_path)
    assert result.status != 0
    assert "page.md:7" in result.output  # the second block's fence
    assert "the command: synod no-such-command" in result.output
    assert not (tmp_path / "main" / "after.txt").exists()  # set -e: nothing ran after it


def test_a_failing_python_program_fails_the_page(tmp_path: Path) -> None:
    result = run_page(fence("raise SystemExit('broken example')", "python"), tmp_path)
    assert result.status != 0 and "broken example" in result.output


def test_blocks_share_one_shell_and_run_in_a_checkout(tmp_path: Path) -> None:
    page = fence("NAME=value\ncd docs") + fence('test "$NAME" = value\ntest -f architecture.md')
    page += fence("ls ../shared >/dev/null && test -x .venv/bin/synod || true")
    result = run_page(page, tmp_path)
    assert result.status == 0, result.output


def test_python_blocks_run_alone_unless_they_continue(tmp_path: Path) -> None:
    first = fence("VALUE = 7", "python")
    alone = run_page(first + fence("assert VALUE == 7", "python"), tmp_path / "alone")
    together = run_page(
        first + fence("assert VALUE == 7", "python", "continues"), tmp_path / "together"
    )
    assert alone.status != 0 and "NameError" in alone.output
    assert together.status == 0, together.output


def test_a_background_server_is_waited_for_and_stopped_after_the_page(tmp_path: Path) -> None:
    server = fence(f"echo $BASHPID > server.pid\n{SERVER}", marker="background wait-for=ready")
    result = run_page(server + fence("test -s server.pid"), tmp_path)
    assert result.status == 0, result.output
    pid = int((tmp_path / "main" / "server.pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def test_processes_started_with_an_ampersand_are_stopped_too(tmp_path: Path) -> None:
    result = run_page(fence(f"{SERVER} &\necho $! > server.pid"), tmp_path)
    assert result.status == 0, result.output
    pid = int((tmp_path / "main" / "server.pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def test_a_background_block_that_failed_fails_the_page(tmp_path: Path) -> None:
    ended = fence("while kill -0 $! 2>/dev/null; do sleep 0.05; done")  # until it is reaped
    page = fence("synod no-such-command", marker="background") + ended
    result = run_page(page, tmp_path)
    assert result.status != 0 and "background block ended with status" in result.output


def test_a_server_that_never_gets_ready_fails_the_page(tmp_path: Path) -> None:
    page = fence("echo starting; exit 0", marker="background wait-for=ready")
    result = run_page(page, tmp_path)
    assert result.status != 0 and "ended before printing" in result.output


def test_then_stop_ends_the_server_before_the_next_block(tmp_path: Path) -> None:
    marker = "background wait-for=ready then-stop"
    server = fence(f"echo $BASHPID > server.pid\n{SERVER}", marker=marker)
    check = fence('! kill -0 "$(cat server.pid)" 2>/dev/null')
    result = run_page(server + check, tmp_path)
    assert result.status == 0, result.output


def test_a_documented_failure_must_still_fail(tmp_path: Path) -> None:
    fails = run_page(fence("synod fbas check /nonexistent.json", marker="exit=2"), tmp_path / "a")
    stopped_failing = run_page(fence("synod --help", marker="exit=1"), tmp_path / "b")
    assert fails.status == 0, fails.output
    assert stopped_failing.status != 0 and "expected exit status 1, got 0" in stopped_failing.output


def test_a_skipped_block_is_not_run(tmp_path: Path) -> None:
    page = fence("false", marker='skip reason="needs the internet"') + fence("true")
    assert run_page(page, tmp_path).status == 0


def test_a_block_may_run_in_a_directory_of_its_own(tmp_path: Path) -> None:
    page = fence("echo a > name.txt") + fence("echo b > name.txt", marker="directory=other")
    page += fence("test \"$(cat name.txt)\" = a && test \"$(cat other/name.txt)\" = b")
    result = run_page(page, tmp_path)
    assert result.status == 0, result.output


def test_a_page_past_its_budget_is_stopped(tmp_path: Path) -> None:
    page = fence(f"echo $$ > shell.pid\n{SERVER}", marker="timeout=1")
    result = run_page(page, tmp_path)
    assert result.timed_out
    pid = int((tmp_path / "main" / "shell.pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def test_a_console_transcript_runs_its_commands_not_its_output() -> None:
    (block,) = blocks_of(fence("$ echo one \\\n  two\none two\n$ true", "console"), "page.md")
    assert block.text == "echo one \\\n  two\ntrue\n"


def test_indented_blocks_and_comments_above_them_are_read() -> None:
    page = "* item\n\n  <!-- doc-test: timeout=5 -->\n  <!-- other -->\n  ```sh\n  echo x\n  ```\n"
    (block,) = blocks_of(page, "page.md")
    assert (block.text, block.settings.timeout_s, block.line) == ("echo x\n", 5.0, 5)


@pytest.mark.parametrize(
    "marker",
    ["skip", 'skip reason=""', "background wait-for", "wait-for=x", "then-stop", "timeout=soon",
     "exitt=1", "directory=../up", 'reason="alone"'],
)  # fmt: skip
def test_a_marker_that_cannot_be_understood_is_refused(marker: str) -> None:
    with pytest.raises(MarkerError):
        blocks_of(fence("true", marker=marker), "page.md")


def _zombie(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_the_runner_leaves_no_process_of_a_page_behind(tmp_path: Path) -> None:
    result = run_page(fence(f"{SERVER} &\n{SERVER} &"), tmp_path)
    assert result.status == 0
    cwd_under = str(tmp_path.resolve())
    left = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and not _zombie(int(entry.name)):
            try:
                if os.readlink(entry / "cwd").startswith(cwd_under):
                    left.append(entry.name)
            except OSError:
                continue
    assert left == []


def test_without_a_network_namespace_a_page_still_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where `unshare --net` is refused (no root), pages run one at a time instead."""
    monkeypatch.setattr(markdown_commands, "own_network_available", lambda: False)
    with markdown_commands.page_isolation() as shell:
        assert shell == ["bash"]
    result = run_page(fence("synod --help > /dev/null"), tmp_path)
    assert result.status == 0, result.output


def test_a_page_has_ports_of_its_own_where_namespaces_are_allowed(tmp_path: Path) -> None:
    """Two pages may print the same fixed port: bound here and on the page at once."""
    if not markdown_commands.own_network_available():
        pytest.skip("no network namespace here: pages run one at a time instead")
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        bind = f'import socket; socket.socket().bind(("127.0.0.1", {port}))'
        result = run_page(fence(f"python -c '{bind}'"), tmp_path)
    assert result.status == 0, result.output


def test_commands_the_runner_would_not_run_are_found() -> None:
    page = fence("synod demo", "") + fence("Client(keys, committee)", "") + fence("ls", "shell")
    page += fence("name = 1", "toml") + fence("$ synod --help", "text")
    assert commands_not_run(blocks_of(page, "page.md")) == ["page.md:1", "page.md:9"]
