"""Pieces shared by the commands that run node processes (rbc, scp, tusk, crdt, fastpay).

Configuration files are TOML; a problem in one is reported as `ConfigError` naming the
file, the key and what was expected (exit status 2).  A node process holds an exclusive
lock file for its life, prints JSON lines on standard output (readiness, then what it
decides), logs JSON lines on standard error, and stops cleanly on SIGINT/SIGTERM.

Only light modules are imported here at load time; the heavy ones (asyncio, the runtime,
the crypto library) are imported inside the functions, so that `synod --help` stays fast.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from synod import config
from synod.config import Named

if TYPE_CHECKING:
    from synod.crypto import KeyPair, NodeId

EXIT_FAILED = 1
EXIT_CONFIG = 2

as_own_process = False
"""True when the command runs as a process of its own (the ``synod`` entry point), not
called in-process (tests, a host program): only then may a command end the process
without unwinding (`os._exit`), as an interrupted analysis does."""


class FiniteFloatRange(click.FloatRange):
    """`click.FloatRange` that also refuses "nan" and "inf": both pass its comparisons (a
    NaN compares false with every bound), and no duration or probability is either."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


SECONDS = FiniteFloatRange(min=0, min_open=True)
"""A positive, finite number of seconds."""


class ConfigError(click.ClickException):
    """A configuration problem: the message names the file, the key and what was expected."""

    exit_code = EXIT_CONFIG

    def __init__(self, path: Path, key: str, expected: str) -> None:
        super().__init__(f"{path}: {key}: {expected}")


# ---------------------------------------------------------------- configuration files

# The library's checks (`synod.config`) under the names the commands import.
NodeEntry = config.NodeEntry
render_node_tables = config.render_node_tables


@contextmanager
def config_errors(init_command: str | None = None) -> Iterator[None]:
    """Turn the library's configuration errors into user errors.

    A wrong value is a `ConfigError` (exit status 2); a missing file (with how to create
    one, `init_command`), a file that is not TOML or an unknown name exits with 1.
    """
    try:
        yield
    except config.ConfigError as error:
        raise ConfigError(error.path, error.key, error.expected) from None
    except config.ConfigFileError as error:
        hint = f" (create one with `{init_command}`)" if error.missing and init_command else ""
        raise click.ClickException(f"{error}{hint}") from None
    except config.UnknownEntry as error:
        raise click.ClickException(str(error)) from None


def read_toml(path: Path, init_command: str) -> dict[str, Any]:
    """The document in `path`; a user error naming `init_command` when there is none."""
    with config_errors(init_command):
        return config.read_toml(path)


def require_string(
    path: Path, table: dict[str, Any], prefix: str, key: str, default: str | None = None
) -> str:
    """``table[key]`` (or `default`), which must be a non-empty string."""
    with config_errors():
        return config.require_string(path, table, prefix, key, default)


def node_entry(path: Path, prefix: str, raw: object) -> NodeEntry:
    """Check the table `prefix` (name, id, host, port, key_file) of the file `path`."""
    with config_errors():
        return config.node_entry(path, prefix, raw)


def find_named(path: Path, entries: Sequence[Named], selector: str, noun: str = "node") -> Named:
    """The entry called `selector` (or with that index); a user error otherwise."""
    with config_errors():
        return config.find_named(path, entries, selector, noun)


# ---------------------------------------------------------------- init


def parse_ports(
    text: str | None, count: int, first: int, option: str = "--ports", stride: int = 1
) -> list[int]:
    """`count` ports: the comma-separated `text`, or first, first + stride, ..."""
    if text is None:
        last = first + stride * (count - 1)
        if last > 65535:
            # caught here: a file with ports past 65535 is refused only when a node starts
            raise click.BadParameter(
                f"{count} ports from {first} reach {last}, past 65535: choose a lower "
                "base port, or give --ports"
            )
        return [first + stride * index for index in range(count)]
    try:
        ports = [int(part) for part in text.split(",")]
    except ValueError:
        raise click.BadParameter("expected comma-separated integers", param_hint=option) from None
    if len(ports) != count or not all(1 <= port <= 65535 for port in ports):
        raise click.BadParameter(f"expected {count} ports in 1..65535", param_hint=option)
    if len(set(ports)) != count:
        raise click.BadParameter(f"expected {count} distinct ports", param_hint=option)
    return ports


def check_host(host: str, option: str = "--host") -> None:
    """A usage error for a host no node could listen on or be reached at (empty, or
    with spaces or control characters): caught before `init` writes it into a file."""
    if not host or any(character.isspace() or not character.isprintable() for character in host):
        raise click.BadParameter(
            f"expected a host name or address, got {host!r}", param_hint=option
        )


def refuse_to_overwrite(config_path: Path) -> None:
    """A user error when `config_path` exists already."""
    if config_path.exists():
        raise click.ClickException(
            f"{config_path}: already exists; refusing to overwrite (remove it first, or "
            "choose another directory)"
        )


def already_running(error: Exception) -> click.ClickException:
    """A node whose lock another process holds, with what to do about it."""
    return click.ClickException(
        f"{error}: stop that process first (`down` stops what `up` started), or run "
        "another node"
    )


def write_new_key(path: Path) -> KeyPair:
    """Generate a key pair and write it to the key file `path`."""
    from synod.crypto import KeyFileError, KeyPair, write_key_file

    pair = KeyPair.generate()
    try:
        write_key_file(path, pair)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    return pair


# ---------------------------------------------------------------- running a node


def log_level_option(default: str = "info") -> Callable[[Any], Any]:
    """The ``--log-level`` option of a command that runs a process."""
    return click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default=default,
        show_default=True,
    )


MAX_KEY_FILE_BYTES = 4096
"""The largest key file `read_node_keys` reads (synod writes 84 bytes)."""


def read_node_keys(key_file: Path, node_id: NodeId, mismatch: str) -> KeyPair:
    """The key pair in `key_file`, which must be that of `node_id` (else `mismatch`)."""
    import stat

    from synod.crypto import KeyFileError, read_key_file

    try:
        mode, size = key_file.stat().st_mode, key_file.stat().st_size
    except OSError:
        mode, size = stat.S_IFREG, 0  # missing or unreadable: read_key_file says which
    # read_key_file reads the whole file first: /dev/zero as a key_file never ended
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) or size > MAX_KEY_FILE_BYTES:
        raise click.ClickException(
            f"{key_file}: not a key file (a regular file of at most {MAX_KEY_FILE_BYTES} bytes)"
        )
    try:
        keys = read_key_file(key_file)
    except KeyFileError as error:
        raise click.ClickException(str(error)) from None
    if keys.node_id != node_id:
        raise click.ClickException(f"{key_file}: {mismatch}")
    return keys


def run_process(
    main: Coroutine[Any, Any, int], log_level: str, *, listen_failure: str | None = None
) -> NoReturn:
    """Log JSON lines at `log_level`, run `main` and exit with its status.

    A storage error, or a store the core cannot be rebuilt from, is a one-line user
    error; so is an `OSError` (a port in use, mostly) when `listen_failure` says what to
    print before it.
    """
    import asyncio

    from synod.runtime.logs import configure_json_logging
    from synod.runtime.nodes import RestoreFailed
    from synod.runtime.storage import StorageError

    configure_json_logging(log_level.upper())
    try:
        code = asyncio.run(main)
    except (StorageError, RestoreFailed) as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        sys.exit(130)  # interrupted before the signal handlers were in place: no traceback
    except OSError as error:
        if listen_failure is None:
            raise
        import errno

        hint = ""
        if error.errno == errno.EADDRINUSE:
            hint = (
                "; another process uses that port: stop it, or write the network again "
                "with free ports (init --ports)"
            )
        raise click.ClickException(f"{listen_failure}: {error}{hint}") from None
    sys.exit(code)


def print_json_line(entry: dict[str, Any], *, ensure_ascii: bool = False) -> None:
    """Write `entry` as one JSON line on standard output, at once."""
    sys.stdout.write(json.dumps(entry, ensure_ascii=ensure_ascii) + "\n")
    sys.stdout.flush()


async def read_stdin_lines(
    on_line: Callable[[bytes], Awaitable[None]], *, max_bytes: int, log: Any, too_long: str
) -> None:
    """Hand each line of standard input (with its newline) to `on_line`, until its end.

    Pipes, sockets and terminals are read by the event loop, and a line longer than
    `max_bytes` is logged (`too_long`, a %-format given `max_bytes`) and skipped; anything
    else (a regular file, ``/dev/null``, which epoll refuses) is read on a thread, which
    cannot block at exit since such input always reaches its end.
    """
    import asyncio
    import os
    import stat

    if sys.stdin.isatty() and _in_background(sys.stdin.fileno()):
        # `synod rbc run net node-0 &`: reading the terminal from the background would
        # stop the whole process (SIGTTIN, "Stopped (tty input)"), node and all.
        log.info("standard input not read: this process runs in the background")
        return
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or sys.stdin.isatty()):
        for line in await asyncio.to_thread(sys.stdin.buffer.readlines):
            await on_line(line)
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=max_bytes + 2)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer
    )
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:
                log.warning(too_long, max_bytes)
                continue
            if not line:
                return
            await on_line(line)
    finally:
        transport.close()


def _in_background(terminal: int) -> bool:
    """This process is not in the foreground process group of `terminal`."""
    import os

    try:
        return os.tcgetpgrp(terminal) != os.getpgrp()
    except OSError:
        return False


def printable(text: str) -> str:
    """`text` from a peer, a client or a data file, safe to print on a terminal: control
    characters (escape sequences that move the cursor, recolour or retitle the terminal,
    a carriage return that overwrites the line) are shown escaped, as Python writes them."""
    return "".join(
        character if character.isprintable() or character == " " else _escaped(character)
        for character in text
    )


def _escaped(character: str) -> str:
    return repr(character)[1:-1] if character != "'" else character


SLOW_NOTICE_S = 1.0
"""A command still waiting after this long says on stderr what it waits for: a second
is when a person starts wondering whether anything is happening."""


@contextmanager
def notice_if_slow(message: str, *, after_s: float = SLOW_NOTICE_S) -> Iterator[None]:
    """Print `message` once on stderr if the block is still running after `after_s`
    seconds (a timer thread: the block may be blocked in the event loop or a socket)."""
    import threading

    timer = threading.Timer(after_s, lambda: click.echo(message, err=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def wrapped(text: str, *, indent: str = "", at: str = ", ") -> str:
    """`text` in lines that fit the terminal (80 columns when output is piped), broken
    only after `at` (", ": a list's items stay whole, so the phrases people grep for
    do; " " for the key=value verdict line), each continuation two spaces further in.
    A piece longer than a line stays whole."""
    import shutil

    width = shutil.get_terminal_size((80, 24)).columns
    pieces = [piece + at for piece in text.split(at)]
    pieces[-1] = pieces[-1].removesuffix(at)
    lines = [indent]
    for piece in pieces:
        if len(lines[-1]) > len(indent) and len((lines[-1] + piece).rstrip()) > width:
            lines[-1] = lines[-1].rstrip()
            lines.append(indent + "  ")
        lines[-1] += piece
    return "\n".join(lines)


_WATCHERS: set[Any] = set()  # the event loop keeps only weak references to tasks


def watch_peers(
    links: Callable[[], tuple[int, int]], log: Any, hint: str, *, what: str = "peers"
) -> None:
    """Start a task that says, once, when the node still lacks links to some of its
    `what` (peers, a driver) a second after it is ready (a lone node otherwise prints
    `ready` and nothing more), with `hint` (how to start them); and once more when all
    are up.  `links()` is (connected, expected).  Call from the node's event loop."""
    import asyncio

    async def watch() -> None:
        await asyncio.sleep(SLOW_NOTICE_S)
        connected, expected = links()
        if connected >= expected:
            return
        log.warning(
            f"waiting for {what}", extra={"connected": connected, "of": expected, "hint": hint}
        )
        while connected < expected:
            await asyncio.sleep(SLOW_NOTICE_S)
            connected, expected = links()
        log.info(f"{what} connected", extra={"of": expected})

    task = asyncio.get_running_loop().create_task(watch())
    _WATCHERS.add(task)
    task.add_done_callback(_WATCHERS.discard)
