"""Bad input to `synod tusk`: ports taken by another process, settings that `init` must
refuse before writing anything, and a store that is not this core's.  Each is one line
on stderr and a meaningful exit status, never a traceback or a core serving wrong state."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from synod.cli.tusk import tusk
from synod.config import ConfigError
from synod.core import RequestReceived
from synod.crypto import KeyPair
from synod.quorum.committee import Committee
from synod.runtime.storage import SqliteStorage
from synod.tusk.config import load_network
from synod.tusk.core import TuskCore
from synod.tusk.messages import CoreRequest

KEYS = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(4)]
COMMITTEE = Committee.equal_weights(key.node_id for key in KEYS)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port that another process listens on (this test's own socket)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(tusk, list(arguments))


def assert_one_line_error(result: Result, expected: str) -> None:
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, OSError), result.exception
    assert "Traceback" not in result.output
    assert expected in result.output


def init_with_core_zero_on(directory: Path, port: int) -> None:
    ports = [port, *free_ports(3)]
    result = invoke("init", str(directory), "--ports", ",".join(map(str, ports)))
    assert result.exit_code == 0, result.output


def test_a_core_whose_port_is_taken_says_so_in_one_line(tmp_path: Path, taken_port: int) -> None:
    init_with_core_zero_on(tmp_path, taken_port)
    result = invoke("core", str(tmp_path), "0", "--log-level", "error")
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{taken_port}")


def test_a_core_whose_metrics_port_is_taken_says_so_and_frees_its_store(
    tmp_path: Path, taken_port: int
) -> None:
    init_with_core_zero_on(tmp_path, free_ports(1)[0])
    arguments = ("core", str(tmp_path), "0", "--metrics-port", str(taken_port))
    result = invoke(*arguments, "--log-level", "error")
    assert_one_line_error(result, f"cannot serve metrics on 127.0.0.1:{taken_port}")
    # the store's lock was released: the same core is refused again for the port alone
    again = invoke(*arguments, "--log-level", "error")
    assert_one_line_error(again, "cannot serve metrics")


def test_a_driver_whose_metrics_port_is_taken_says_so_in_one_line(
    tmp_path: Path, taken_port: int
) -> None:
    init_with_core_zero_on(tmp_path, free_ports(1)[0])
    result = invoke("driver", str(tmp_path), "--metrics-port", str(taken_port))
    assert_one_line_error(result, f"cannot serve metrics on 127.0.0.1:{taken_port}")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("--ports", "9001,9001,9002,9003"), "expected 4 distinct ports"),
        (("--base-port", "65534"), "past 65535"),
        (("--host", ""), "expected a host name or address"),
        (("--host", "a\nb"), "expected a host name or address"),
    ],
)
def test_init_refuses_a_committee_no_core_could_run_and_writes_nothing(
    tmp_path: Path, options: tuple[str, ...], expected: str
) -> None:
    # before, init wrote keys and a tusk.toml that `tusk core` then refused (or, for the
    # host, that failed with a traceback when the core listened)
    directory = tmp_path / "net"
    result = invoke("init", str(directory), *options)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not directory.exists()


def test_init_in_a_directory_that_cannot_be_made_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = invoke("init", str(tmp_path / "file" / "net"))
    assert_one_line_error(result, "cannot create")


def records_of(keys: KeyPair) -> dict[bytes, bytes]:
    """What `keys`' core persisted after its first request: its round-1 header, its vote."""
    core = TuskCore(keys, COMMITTEE)
    step = core.handle(RequestReceived("driver", 1, CoreRequest()), 0)
    return {record.key: record.value for record in step.persist if record.value is not None}


def test_a_store_of_another_core_is_refused_naming_the_core_that_signed_it() -> None:
    # a copied or misnamed core-1.sqlite given to core-0: before, core-0 took core-1's
    # header for its own and lost its own votes, free to sign again what it had signed
    stored = records_of(KEYS[1])
    with pytest.raises(ValueError, match="another core's store"):
        TuskCore(KEYS[0], COMMITTEE, stored)
    assert TuskCore(KEYS[1], COMMITTEE, stored).round == 1  # its own core rebuilds from it


def test_a_store_of_another_protocol_is_refused() -> None:
    # a FastPay shard's file given as a core's store: before, the core ignored its records,
    # started from nothing and wrote its own among them
    stored = {b"fastpay/identity": b"\x00", b"fastpay/account/" + bytes(32): b"\x01"}
    with pytest.raises(ValueError, match=r"another kind \(fastpay/...\)"):
        TuskCore(KEYS[0], COMMITTEE, stored)


@pytest.mark.parametrize(
    "options",
    [
        ("--from", str(2**64), "--no-follow"),  # OverflowError from SQLite before
        ("--interval-ms", str(10**20)),  # OverflowError from the event loop's sleep before
    ],
)
def test_watch_refuses_numbers_past_what_it_can_use(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    init_with_core_zero_on(tmp_path, free_ports(1)[0])
    SqliteStorage.open(tmp_path / "core-0.sqlite").close()  # a core that ran, no commit yet
    result = invoke("watch", str(tmp_path), *options)
    assert result.exit_code == 2, result.output
    assert "is not in the range" in result.output


def test_a_tusk_toml_that_is_not_utf8_is_one_line_naming_the_file(tmp_path: Path) -> None:
    # tomllib decodes before it parses: a UnicodeDecodeError traceback before
    init_with_core_zero_on(tmp_path, free_ports(1)[0])
    (tmp_path / "tusk.toml").write_bytes(b"[tusk]\n\xff\xfe = 1\n")
    for command in (("core", str(tmp_path), "0"), ("status", str(tmp_path))):
        result = invoke(*command)
        assert result.exit_code == 1, result.output
        assert not isinstance(result.exception, UnicodeDecodeError)
        assert "tusk.toml: not valid TOML: not UTF-8" in result.output


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_batch_transactions", "513"),  # a ValueError traceback when the core started
        ("max_batch_bytes", str(2**40)),  # the same
        ("kept_commits", str(10**20)),  # "cannot restore: OverflowError" of a new store
        ("poll_interval_ms", str(10**20)),  # a driver that never polls
        ("call_timeout_ms", str(10**20)),
        ("min_header_delay_ms", str(10**20)),
    ],
)
def test_a_setting_past_its_largest_value_is_refused_naming_it(
    tmp_path: Path, setting: str, value: str
) -> None:
    init_with_core_zero_on(tmp_path, free_ports(1)[0])
    config = tmp_path / "tusk.toml"
    lines = config.read_text(encoding="utf-8").splitlines()
    edited = [f"{setting} = {value}" if line.startswith(f"{setting} =") else line for line in lines]
    config.write_text("\n".join(edited) + "\n", encoding="utf-8")
    # read, not run: a core that wrongly accepted the file would serve until stopped
    with pytest.raises(ConfigError, match=f"tusk.toml: tusk.{setting}: expected an integer"):
        load_network(tmp_path)


def test_a_gc_depth_whose_checkpoint_would_pass_the_wire_cap_is_refused(tmp_path: Path) -> None:
    # 4 cores x 3001 rounds of certificates: the core refused it with a traceback
    init_with_core_zero_on(tmp_path, free_ports(1)[0])
    config = tmp_path / "tusk.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace("gc_depth = 100", "gc_depth = 3000")
    text = text.replace("window_rounds = 150", "window_rounds = 4000")
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"tusk.gc_depth: at most 2047 for 4 cores"):
        load_network(tmp_path)


def test_a_host_outside_the_basic_plane_is_written_as_toml_that_reads_back(
    tmp_path: Path,
) -> None:
    # JSON's surrogate pair ("\\ud83d\\ude00") is not TOML: the file init wrote was
    # refused by every command that read it
    result = invoke("init", str(tmp_path), "--host", "h\U0001f600st")
    assert result.exit_code == 0, result.output
    assert [core.host for core in load_network(tmp_path).cores] == ["h\U0001f600st"] * 4


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_as_key_file_is_refused_before_it_is_read(tmp_path: Path, device: str) -> None:
    # the key file was read whole before any check: a core given /dev/zero never started
    # and grew its memory until it was killed
    init_with_core_zero_on(tmp_path, free_ports(1)[0])
    config = tmp_path / "tusk.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('key_file = "core-0.key"', f'key_file = "{device}"'), encoding="utf-8"
    )
    result = invoke("core", str(tmp_path), "0", "--log-level", "error")
    assert result.exit_code == 1, (result.output, result.exception)
    assert f"{device}: not a key file" in result.output


def test_a_committee_of_more_cores_than_a_core_runs_with_is_refused_naming_it(
    tmp_path: Path,
) -> None:
    # 129 cores: the core refused with "cannot restore: LocalError" (blaming its store),
    # and a driver ran for a committee no core could serve
    from synod.crypto import node_id_text
    from synod.tusk.config import render_config

    entries = [
        (f"core-{index}", node_id_text(KeyPair.from_seed(index.to_bytes(32, "big")).node_id),
         "127.0.0.1", 20_000 + index, f"core-{index}.key")
        for index in range(129)
    ]  # fmt: skip
    text = render_config(entries).replace("gc_depth = 100", "gc_depth = 20")
    (tmp_path / "tusk.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="cores: at most 128 cores, got 129"):
        load_network(tmp_path)


def test_watch_of_a_store_with_a_damaged_record_names_the_file(tmp_path: Path) -> None:
    # a delivery-log record that does not decode: a msgspec ValidationError traceback
    from synod.core import Persist
    from synod.tusk.core import commit_log_key

    init_with_core_zero_on(tmp_path, free_ports(1)[0])
    with SqliteStorage.open(tmp_path / "core-0.sqlite") as storage:
        storage.apply([Persist(commit_log_key(0), b"\xff\x00 not a record")])
    result = invoke("watch", str(tmp_path), "--no-follow")
    assert result.exit_code == 1, (result.output, result.exception)
    assert "core-0.sqlite: a damaged delivery-log record" in result.output


def test_init_over_a_stale_key_writes_no_other_key(tmp_path: Path) -> None:
    # core-2.key left from an earlier try: before, core-0 and core-1 keys were written
    # first, and the next init then refused core-0.key
    (tmp_path / "core-2.key").write_text("stale", encoding="utf-8")
    result = invoke("init", str(tmp_path))
    assert_one_line_error(result, "core-2.key: already exists")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["core-2.key"]
