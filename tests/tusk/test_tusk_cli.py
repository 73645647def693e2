"""`synod tusk` commands that need no running network: init, configuration errors,
submit to a core that is not there, watch of a core that never ran."""

from __future__ import annotations

import json
import socket
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.common import EXIT_CONFIG
from synod.cli.tusk import tusk
from synod.core import Persist
from synod.crypto import parse_node_id, read_key_file
from synod.runtime.storage import SqliteStorage
from synod.sim.scenarios.tusk import committed, delivered_transactions, submit, tusk_world
from synod.tusk.config import CONFIG_NAME
from synod.tusk.core import commit_log_key


def init(directory: Path, *options: str) -> None:
    result = CliRunner().invoke(tusk, ["init", str(directory), *options])
    assert result.exit_code == 0, result.output


def test_init_writes_one_key_per_core_and_a_config_that_names_them(tmp_path: Path) -> None:
    init(tmp_path, "--cores", "4", "--ports", "9001,9002,9003,9004")
    document = tomllib.loads((tmp_path / CONFIG_NAME).read_text())
    cores = document["cores"]
    assert [core["name"] for core in cores] == ["core-0", "core-1", "core-2", "core-3"]
    assert [core["port"] for core in cores] == [9001, 9002, 9003, 9004]
    for core in cores:
        keys = read_key_file(tmp_path / core["key_file"])
        assert keys.node_id == parse_node_id(core["id"])
    assert len({core["id"] for core in cores}) == 4
    again = CliRunner().invoke(tusk, ["init", str(tmp_path)])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output


def test_configuration_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    init(tmp_path, "--cores", "4", "--ports", "9001,9002,9003,9004")
    path = tmp_path / CONFIG_NAME
    path.write_text(path.read_text().replace("port = 9003", 'port = "x"'))
    result = CliRunner().invoke(tusk, ["submit", str(tmp_path), "hello"])
    assert result.exit_code == EXIT_CONFIG
    assert f"{path}: cores[2].port: expected an integer 1..65535" in result.output
    path.write_text(path.read_text().replace('port = "x"', "port = 9003"))
    path.write_text(path.read_text().replace("gc_depth = 100", "gc_depth = 1"))
    result = CliRunner().invoke(tusk, ["submit", str(tmp_path), "hello"])
    assert result.exit_code == EXIT_CONFIG
    assert "tusk.gc_depth: expected an integer >= 2" in result.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_submit_to_a_core_that_is_not_running_fails_without_a_traceback(tmp_path: Path) -> None:
    init(tmp_path, "--cores", "1", "--force", "--ports", str(free_port()))
    result = CliRunner().invoke(tusk, ["submit", str(tmp_path), "hello", "--timeout-s", "2"])
    assert result.exit_code == 1
    assert "core-0: cannot connect" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_watch_of_a_core_that_never_ran_says_so(tmp_path: Path) -> None:
    init(tmp_path, "--cores", "1", "--force", "--ports", str(free_port()))
    result = CliRunner().invoke(tusk, ["watch", str(tmp_path), "--no-follow"])
    assert result.exit_code == 1
    assert "core-0.sqlite: no such file" in result.output


def test_watch_prints_a_stored_delivery_log_in_order(tmp_path: Path) -> None:
    init(tmp_path, "--cores", "4", "--ports", "9001,9002,9003,9004")
    document = tomllib.loads((tmp_path / CONFIG_NAME).read_text())
    keys = [read_key_file(tmp_path / core["key_file"]) for core in document["cores"]]
    world = tusk_world(keys, seed=1, drivers=["driver"])
    first = keys[0].node_id
    submit(world, first, [b"pay alice 5"])
    assert world.step_until(
        lambda: b"pay alice 5" in delivered_transactions(world, first), max_steps=20_000
    )
    with SqliteStorage.open(tmp_path / "core-0.sqlite") as storage:
        storage.apply(Persist(key, value) for key, value in world.node(first).storage.items())
    result = CliRunner().invoke(tusk, ["watch", str(tmp_path), "--no-follow", "--from", "1"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    expected = committed(world, first)[1:]
    assert [line["sequence"] for line in lines] == [event.sequence for event in expected]
    assert [line["digest"] for line in lines] == [event.digest.hex() for event in expected]
    assert [line["transactions"] for line in lines] == [
        [transaction.decode() for transaction in event.transactions] for event in expected
    ]


def test_watch_reads_past_positions_a_core_no_longer_holds_and_says_where(
    tmp_path: Path,
) -> None:
    # A pruned log, or one with a checkpoint's gap, has positions missing.  Before, the
    # reader stopped at the first missing position, so `watch` printed nothing past it,
    # ever (and nothing at all from --from 0 once the start was pruned).
    init(tmp_path, "--cores", "4", "--ports", "9011,9012,9013,9014")
    document = tomllib.loads((tmp_path / CONFIG_NAME).read_text())
    keys = [read_key_file(tmp_path / core["key_file"]) for core in document["cores"]]
    world = tusk_world(keys, seed=2, drivers=["driver"])
    first = keys[0].node_id
    for number in range(3):
        submit(world, first, [f"pay {number}".encode()])
        world.run_until(world.now_ms + 50)
    assert world.step_until(
        lambda: b"pay 2" in delivered_transactions(world, first), max_steps=20_000
    )
    held = dict(world.node(first).storage)
    for position in (1, 2):
        del held[commit_log_key(position)]
    with SqliteStorage.open(tmp_path / "core-0.sqlite") as storage:
        storage.apply(Persist(key, value) for key, value in held.items())
    result = CliRunner().invoke(tusk, ["watch", str(tmp_path), "--no-follow"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert lines[0]["sequence"] == 0
    assert lines[1] == {"event": "gap", "first": 1, "end": 3}
    positions = [line["sequence"] for line in lines[2:]]
    assert positions == [event.sequence for event in committed(world, first)][3:]


def test_the_network_id_of_tusk_toml_reaches_every_core_and_driver(tmp_path: Path) -> None:
    from synod.config import ConfigError
    from synod.tusk.config import load_network

    init(tmp_path, "--cores", "4")
    path = tmp_path / CONFIG_NAME
    assert load_network(tmp_path).network == b"", "written empty by init"
    path.write_text(path.read_text().replace('network_id = ""', 'network_id = "alpha"'))
    network = load_network(tmp_path)
    assert network.core_config().network == b"alpha"
    assert network.new_driver("d").network == b"alpha"
    path.write_text(path.read_text().replace('network_id = "alpha"', 'network_id = "a@b"'))
    try:
        load_network(tmp_path)
    except ConfigError as error:
        assert "tusk.network_id" in str(error)
    else:
        raise AssertionError("a network id with '@' was accepted")


def test_a_misspelt_setting_in_tusk_toml_is_refused_naming_it(tmp_path: Path) -> None:
    """`batch_sise = 3` was once ignored silently: the committee ran with the default."""
    from synod.config import ConfigError
    from synod.tusk.config import load_network, render_config

    (tmp_path / "tusk.toml").write_text(
        render_config([]).replace("[tusk]\n", "[tusk]\nbatch_sise = 3\n") + "\n[[cores]]\n"
    )
    with pytest.raises(ConfigError, match=r"tusk\.batch_sise: unknown key"):
        load_network(tmp_path)


def test_a_core_name_where_a_transaction_goes_is_refused_not_sent(tmp_path: Path) -> None:
    """`synod tusk submit net core-2 "pay"` (as `synod scp submit DIR NODE VALUE`) once
    sent "core-2" as a transaction to core-0 and exited 0."""
    from click.testing import CliRunner

    from synod.cli.main import cli

    runner = CliRunner()
    assert runner.invoke(cli, ["tusk", "init", str(tmp_path / "net")]).exit_code == 0
    result = runner.invoke(cli, ["tusk", "submit", str(tmp_path / "net"), "core-2", "pay"])
    assert result.exit_code == 2
    assert "use --core core-2" in result.output


class _Warnings:
    """Collects what `log.warning` was given."""

    def __init__(self) -> None:
        self.said: list[tuple[str, dict[str, object]]] = []

    def warning(self, message: str, extra: dict[str, object]) -> None:
        self.said.append((message, extra))


def test_a_driver_warns_per_core_that_refuses_others_as_of_other_settings() -> None:
    from synod.cli.tusk import _warn_other_context

    odd, first, second = b"\x03" * 32, b"\x00" * 32, b"\x01" * 32
    names = {odd: "core-3", first: "core-0", second: "core-1"}
    log, warned = _Warnings(), dict[bytes, frozenset[bytes]]()
    _warn_other_context({odd: frozenset({first})}, warned, names, log)
    refusals = {odd: frozenset({first, second}), first: frozenset({odd})}
    _warn_other_context(refusals, warned, names, log)
    _warn_other_context(refusals, warned, names, log)
    assert [extra for _, extra in log.said] == [
        {"core": "core-3", "refused": ["core-0"]},
        {"core": "core-3", "refused": ["core-0", "core-1"]},
        {"core": "core-0", "refused": ["core-3"]},
    ], "again when the list grows, never twice the same"
    assert all("kept_commits" in message for message, _ in log.said)
