"""The commands and programs printed in Markdown pages, taken out and run as a reader would.

A page's fenced blocks tagged ``sh``, ``bash`` or ``console`` are shell commands and those
tagged ``python`` are programs; any other block (untagged, ``toml``, ``json``, ``text``)
is something to read, not to run.  Every shell block and program of a page runs in page
order in one bash (``set -e``, so any failing command fails the page), in a fresh
directory laid out like a checkout: ``src``, ``docs``, ``benchmarks``, ``tests`` and
``Makefile`` link to the repository, ``.venv`` holds links to the environment's entries and
a ``.installed`` stamp of its own newer than the copy of ``pyproject.toml`` (so ``make``
uses the existing environment and never installs into it), and
``../shared`` is the repository's neighbour of that name.  ``.venv/bin`` comes first on the
PATH, so ``synod`` and ``python`` are the environment's.  A ``python`` block runs as a
script file of its own (``python FILE``) at its place in the page.

An HTML comment on the lines just above a block's fence changes how it runs:

``<!-- doc-test: background -->``
    the block runs in the background (its own process group, output in a log) and the
    page goes on; ``wait-for="TEXT"`` (and ``count=N``) first waits until TEXT has
    appeared N times in the output of the page's background blocks since this one started
    (so that a line typed into one node can be waited for at another), and
    ``then-stop`` then stops it (SIGTERM to its group, as a reader presses Ctrl-C once
    the output is seen).  Every process the page started, in the background or with
    ``&``, is stopped (SIGTERM, then SIGKILL) after the page; a background block that
    ended with a non-zero status before that fails the page.
``<!-- doc-test: exit=N -->``
    the block (in a subshell of its own) must end with status N: a command documented to
    fail, such as a check that finds a broken network.  Give such a command a block of
    its own: an earlier command failing the same way would pass unseen.
``<!-- doc-test: continues -->``
    a ``python`` block that goes on from the page's previous ``python`` block: they run as
    one program (the earlier block defines what this one uses).
``<!-- doc-test: directory=NAME -->``
    the block runs in a fresh subdirectory NAME of the page's directory: a section meant
    to be tried on its own, whose names would clash with an earlier section's.
``<!-- doc-test: timeout=N -->``
    the block may take N seconds (60 otherwise); the page's budget is the sum.
``<!-- doc-test: skip reason="..." -->``
    not run, for the reason given (a reason is required): a command that needs the
    internet or a browser, or that runs the test suite itself.

Nothing in a printed command is replaced.  Pages print fixed ports, so each page runs in
a network namespace of its own where the machine allows it (``unshare --net``, as root:
its own 127.0.0.1, so pages run side by side and never meet another program's port), and
otherwise one page at a time (`page_isolation`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
SHELL_LANGUAGES = frozenset({"sh", "bash", "console"})
RUN_LANGUAGES = SHELL_LANGUAGES | {"python"}
DEFAULT_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
# What a checkout holds that a page's commands may name, linked into each page's directory.
LINKED = ("src", "docs", "benchmarks", "tests", "Makefile", "README.md")
MAKE_STAMP = ".installed"  # the Makefile's proof that .venv is built (`$(STAMP)`)

# Blocks in these languages are read, not run; any other language that is not run is a
# tag nobody meant (`shell`, `py`), and a command in an untagged block is one forgotten.
READ_LANGUAGES = frozenset({"text", "toml", "json", "yaml", "ini", "diff", "html"})
LOOKS_LIKE_A_COMMAND = re.compile(
    r"^\s*(\$ )?(synod|make|python|\.venv/bin/|\. \.venv)\b", re.MULTILINE
)
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+)(?P<language>[\w+-]*)[ \t]*$")
COMMENT = re.compile(r"^\s*<!--(?P<body>.*?)-->\s*$")
MARKER = re.compile(r"^\s*doc-test:(?P<settings>.*)$", re.DOTALL)


class MarkerError(ValueError):
    """A `doc-test:` comment that cannot be understood: a typo must not pass silently."""


@dataclass(frozen=True)
class Settings:
    """How one block runs, from the `doc-test:` comments above it."""

    skip_reason: str | None = None
    background: bool = False
    wait_for: str | None = None
    then_stop: bool = False
    count: int = 1
    exit_status: int = 0
    continues: bool = False
    directory: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: str
    line: int
    language: str
    text: str
    settings: Settings = field(default_factory=Settings)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language in RUN_LANGUAGES and self.settings.skip_reason is None


def commands_not_run(blocks: list[Block]) -> list[str]:
    """Where a page prints what a reader would run but the runner would not."""
    return [
        block.where
        for block in blocks
        if (block.language == "" and LOOKS_LIKE_A_COMMAND.search(block.text))
        or block.language not in RUN_LANGUAGES | READ_LANGUAGES | {""}
    ]


def parse_settings(comments: list[str], where: str) -> Settings:
    """The settings named by `doc-test:` comments (other comments are left alone)."""
    values: dict[str, str | None] = {}
    for comment in comments:
        marker = MARKER.match(comment)
        if marker is None:
            continue
        try:
            tokens = shlex.split(marker.group("settings"))
        except ValueError as error:
            raise MarkerError(f"{where}: {error}") from None
        for token in tokens:
            key, equals, value = token.partition("=")
            values[key] = value if equals else None
    return _settings_from(values, where)


def _settings_from(values: dict[str, str | None], where: str) -> Settings:
    flags = {"skip", "background", "then-stop", "continues"}
    with_values = {"reason", "wait-for", "count", "exit", "timeout", "directory"}
    unknown = sorted(set(values) - flags - with_values)
    if unknown:
        known = sorted(flags | with_values)
        raise MarkerError(f"{where}: unknown doc-test setting(s) {unknown}; known: {known}")
    wrong = sorted(key for key, value in values.items() if (key in flags) != (value is None))
    if wrong:
        raise MarkerError(f"{where}: {wrong}: {sorted(flags)} take no value, the others need one")
    if "skip" in values and not values.get("reason"):
        raise MarkerError(f'{where}: skip needs reason="why this block cannot run"')
    if "reason" in values and "skip" not in values:
        raise MarkerError(f"{where}: reason= belongs to skip")
    directory = values.get("directory")
    if "directory" in values and not (directory and re.fullmatch(r"[\w.-]+", directory)):
        raise MarkerError(f"{where}: directory= needs a plain name")
    if {"wait-for", "count", "then-stop"} & set(values) and "background" not in values:
        raise MarkerError(f"{where}: wait-for, count and then-stop belong to background")
    if "then-stop" in values and "wait-for" not in values:
        raise MarkerError(f"{where}: then-stop needs wait-for")
    try:
        return Settings(
            skip_reason=values.get("reason"),
            background="background" in values,
            wait_for=values.get("wait-for"),
            then_stop="then-stop" in values,
            count=int(values.get("count") or 1),
            exit_status=int(values.get("exit") or 0),
            continues="continues" in values,
            directory=values.get("directory"),
            timeout_s=float(values.get("timeout") or DEFAULT_TIMEOUT_S),
        )
    except ValueError as error:
        raise MarkerError(f"{where}: {error}") from None


def blocks_of(markdown: str, page: str) -> list[Block]:
    """Every fenced block of `markdown`, with the settings of the comments just above it."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        end = index + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        if end == len(lines):
            raise MarkerError(f"{page}:{index + 1}: a fence that is never closed")
        body = [_dedent(line, indent) for line in lines[index + 1 : end]]
        where = f"{page}:{index + 1}"
        language = opening.group("language")
        settings = parse_settings(_comments_above(lines, index), where)
        text = "\n".join(body) + "\n"
        if language == "console":
            text = _console_commands(body)
        blocks.append(Block(page, index + 1, language, text, settings))
        index = end + 1
    return blocks


def _dedent(line: str, indent: str) -> str:
    return line[len(indent) :] if line.startswith(indent) else line.lstrip()


def _comments_above(lines: list[str], fence_index: int) -> list[str]:
    """The HTML comments on the lines directly above a fence, top to bottom."""
    comments: list[str] = []
    index = fence_index - 1
    while index >= 0 and (comment := COMMENT.match(lines[index])) is not None:
        comments.insert(0, comment.group("body"))
        index -= 1
    return comments


def _console_commands(body: list[str]) -> str:
    """A console transcript's commands: the lines after a `$ ` prompt (and their `\\`
    continuations); the rest is printed output."""
    commands: list[str] = []
    continued = False
    for line in body:
        if continued or line.startswith("$ "):
            command = line if continued else line[2:]
            commands.append(command)
            continued = command.rstrip().endswith("\\")
    return "\n".join(commands) + "\n"


def script_of(blocks: list[Block], programs: Path) -> str:
    """The bash script that runs a page's blocks in order; `python` blocks are written to
    files under `programs` and run from there."""
    parts = [PRELUDE]
    program: list[str] = []
    for block in blocks:
        if not block.runs:
            continue
        if block.language == "python":
            program = [*program, block.text] if block.settings.continues else [block.text]
            path = programs / f"{_slug(block.page)}_{block.line}.py"
            path.write_text("\n".join(program), encoding="utf-8")
            body = f"python {shlex.quote(str(path))}\n"
        else:
            body = block.text
        parts.append(_wrapped(block, body))
    parts.append("doc_test_stop_background\n")
    return "".join(parts)


def _slug(page: str) -> str:
    return re.sub(r"\W", "_", Path(page).stem)


def _wrapped(block: Block, body: str) -> str:
    """A block's text as the page script runs it, after a line naming the block."""
    settings = block.settings
    header = f"DOC_TEST_BLOCK={shlex.quote(block.where)}\n"
    if settings.directory is not None:
        body = f"mkdir {settings.directory}\ncd {settings.directory}\n{body}\ncd ..\n"
    if settings.background:
        return header + _in_background(block, body)
    if settings.exit_status:
        return (
            f"{header}set +e\n( set -e\n{body}\n)\nDOC_TEST_STATUS=$?\nset -e\n"
            f"doc_test_expect_status {settings.exit_status} $DOC_TEST_STATUS\n"
        )
    return header + body


def _in_background(block: Block, body: str) -> str:
    """Start the block in a process group of its own, then wait for its readiness text
    (and stop it) when the block asks."""
    settings = block.settings
    log = f"$DOC_TEST_LOGS/{_slug(block.page)}_{block.line}.log"
    started = f"( {body}\n) >{log} 2>&1 </dev/null &\ndoc_test_started $! {log}\n"
    if settings.wait_for is None:
        return started
    baseline = f"DOC_TEST_SEEN=$(doc_test_count {shlex.quote(settings.wait_for)})\n"
    wait = shlex.join(
        ["doc_test_wait_for", settings.wait_for, str(settings.count), str(settings.timeout_s)]
    )
    stop = "doc_test_stop_last\n" if settings.then_stop else ""
    return baseline + started + wait + "\n" + stop


PRELUDE = r"""set -e
set -m  # a background block gets a process group of its own, stopped as one
DOC_TEST_PIDS=()
DOC_TEST_LOG_FILES=()
doc_test_started() { DOC_TEST_PIDS+=("$1"); DOC_TEST_LOG_FILES+=("$2"); DOC_TEST_LAST_PID=$1; }
doc_test_report() {
    local status=$?
    if [ "$status" -ne 0 ]; then
        echo "doc-test: the page failed in the block at $DOC_TEST_BLOCK (status $status)" >&2
        if [ -n "${DOC_TEST_COMMAND:-}" ]; then
            echo "doc-test: the command: $DOC_TEST_COMMAND" >&2
        fi
        for log in "${DOC_TEST_LOG_FILES[@]}"; do
            echo "doc-test: background output $log:" >&2; tail -n 40 "$log" >&2 || true
        done
    fi
}
trap doc_test_report EXIT
trap 'DOC_TEST_COMMAND=$BASH_COMMAND' ERR
doc_test_count() {  # TEXT: how many lines of the background blocks' output hold it
    if [ "${#DOC_TEST_LOG_FILES[@]}" -eq 0 ]; then echo 0; return; fi
    cat "${DOC_TEST_LOG_FILES[@]}" | grep -c -F -- "$1" || true
}
doc_test_wait_for() {  # TEXT COUNT TIMEOUT_S: poll the background blocks' output
    local deadline=$((SECONDS + ${3%.*}))
    while [ "$(doc_test_count "$1")" -lt "$((DOC_TEST_SEEN + $2))" ]; do
        if ! kill -0 "$DOC_TEST_LAST_PID" 2>/dev/null; then
            echo "doc-test: the background block ended before printing '$1'" >&2; return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "doc-test: no '$1' ($2 times) within $3 s" >&2; return 1
        fi
        sleep 0.1
    done
}
doc_test_stop_last() {  # as Ctrl-C would: the whole group, then wait for it to end
    kill -TERM -- "-$DOC_TEST_LAST_PID" 2>/dev/null || true
    wait "$DOC_TEST_LAST_PID" || true
    unset 'DOC_TEST_PIDS[-1]'
}
doc_test_expect_status() {
    if [ "$1" -ne "$2" ]; then
        echo "doc-test: expected exit status $1, got $2" >&2; return 1
    fi
}
doc_test_stop_background() {  # a block that already ended must have ended well
    local pid status
    for pid in "${DOC_TEST_PIDS[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            status=0; wait "$pid" || status=$?
            if [ "$status" -ne 0 ]; then
                echo "doc-test: a background block ended with status $status" >&2; return 1
            fi
        fi
    done
}
"""


@functools.cache
def own_network_available() -> bool:
    """Whether a page can have a network namespace of its own (root, `unshare`, `ip`)."""
    try:
        probe = subprocess.run(
            ["unshare", "--net", "ip", "link", "set", "lo", "up"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@contextlib.contextmanager
def page_isolation() -> Iterator[list[str]]:
    """The command prefix that runs a page with ports of its own; without namespaces, a
    lock held meanwhile, so that no two pages run at once."""
    if own_network_available():
        yield ["unshare", "--net", "bash", "-c", 'ip link set lo up && exec bash "$0"']
        return
    path = Path(tempfile.gettempdir()) / f"synod-doc-test-{os.getuid()}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield ["bash"]
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_checkout(root: Path) -> Path:
    """A directory laid out like the repository for a page to run in: `root/main`, with
    `root/shared` beside it."""
    checkout = root / "main"
    checkout.mkdir(parents=True)
    for name in LINKED:
        (checkout / name).symlink_to(REPOSITORY / name)
    # .venv's entries are links to the repository's, beside a stamp of its own: `make`
    # finds the environment built and never installs into the shared one.
    environment = checkout / ".venv"
    environment.mkdir()
    for entry in (REPOSITORY / ".venv").iterdir():
        if entry.name != MAKE_STAMP:
            (environment / entry.name).symlink_to(entry)
    (environment / MAKE_STAMP).touch()
    project = checkout / "pyproject.toml"
    project.write_bytes((REPOSITORY / "pyproject.toml").read_bytes())
    os.utime(project, (0, 0))  # older than .venv/.installed: make never rebuilds .venv
    shared = REPOSITORY.parent / "shared"
    if shared.exists():
        (root / "shared").symlink_to(shared)
    return checkout


@dataclass(frozen=True)
class PageResult:
    status: int
    output: str
    timed_out: bool


def run_blocks(blocks: list[Block], root: Path, *, timeout_s: float | None = None) -> PageResult:
    """Run a page's blocks in a fresh checkout under `root`; every process it started is
    stopped before this returns."""
    checkout = prepare_checkout(root)
    programs = root / "programs"
    logs = root / "logs"
    programs.mkdir()
    logs.mkdir()
    script = root / "page.sh"
    script.write_text(script_of(blocks, programs), encoding="utf-8")
    budget_s = timeout_s or sum(block.settings.timeout_s for block in blocks if block.runs)
    output_path = root / "output.txt"
    venv_bin = REPOSITORY / ".venv" / "bin"
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST", "PYTHON", "VIRTUAL_ENV", "COV_"))
    }
    temporary = root / "tmp"  # what a command keeps in a temporary directory goes too
    temporary.mkdir()
    environment.update(
        PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        TMPDIR=str(temporary),
        DOC_TEST_LOGS=str(logs),
    )
    with output_path.open("w") as output, page_isolation() as shell:
        process = subprocess.Popen(
            [*shell, str(script)],
            cwd=checkout,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        timed_out = False
        try:
            status = process.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            status = -1
        finally:
            stop_started_processes(process.pid, root)
            process.wait()
    return PageResult(status, output_path.read_text(errors="replace"), timed_out)


def stop_started_processes(session: int, root: Path) -> None:
    """SIGTERM, then SIGKILL, every process of the page's session and every process
    working under `root` (what `synod ... up` started in sessions of their own)."""
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        pids = _started_by(session, root)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal_number)
        deadline = time.monotonic() + STOP_GRACE_S
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _alive(pid)]
            if pids:
                time.sleep(0.05)  # polling process exits under a deadline


def _started_by(session: int, root: Path) -> list[int]:
    pids: list[int] = []
    resolved = str(root.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            in_session = os.getsid(pid) == session
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if in_session or cwd == resolved or cwd.startswith(resolved + os.sep):
            pids.append(pid)
    return pids


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
