"""Bad input to `synod rbc`: settings no node could run with are refused by `init` before
anything is written, in one line, never a traceback; a store that is not this node's is
refused when the node is rebuilt from it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.rbc import rbc
from synod.core import Proposed
from synod.crypto import KeyPair
from synod.rbc.core import RbcCore

KEYS = [KeyPair.from_seed(bytes([index]) * 32) for index in range(4)]
MEMBERS = [pair.node_id for pair in KEYS]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("--base-port", "65534"), "past 65535"),
        (("--host", ""), "expected a host name or address"),
        (("--network", "\udcff"), "expected at most 64 bytes of UTF-8"),  # undecodable bytes
        (("--network", "n" * 65), "expected at most 64 bytes of UTF-8"),
        (("--retransmit-ms", str(10**20)), "is not in the range"),  # a timer never firing
    ],
)
def test_init_refuses_a_network_no_node_could_run_and_writes_nothing(
    tmp_path: Path, options: tuple[str, ...], expected: str
) -> None:
    # before, init wrote the keys and network.toml, then refused its own file
    directory = tmp_path / "net"
    result = CliRunner().invoke(rbc, ["init", str(directory), *options])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not directory.exists()


def test_init_in_a_directory_that_cannot_be_made_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = CliRunner().invoke(rbc, ["init", str(tmp_path / "file" / "net")])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, OSError), result.exception
    assert "cannot create" in result.output


def test_a_store_of_another_member_is_refused() -> None:
    # node-1.sqlite given to node-0: before, node-0 resent node-1's broadcasts as its own
    sender = RbcCore(KEYS[1], MEMBERS, {})
    step = sender.handle(Proposed(b"hello"), 0)
    stored = {record.key: record.value for record in step.persist if record.value is not None}
    with pytest.raises(ValueError, match="another node's store"):
        RbcCore(KEYS[0], MEMBERS, stored)
    assert RbcCore(KEYS[1], MEMBERS, stored).node_id == KEYS[1].node_id


def test_a_store_of_another_protocol_is_refused() -> None:
    stored = {b"tusk/chain": b"\x00"}
    with pytest.raises(ValueError, match=r"another kind \(tusk/...\)"):
        RbcCore(KEYS[0], MEMBERS, stored)


def test_names_outside_the_basic_plane_are_written_as_toml_that_reads_back(
    tmp_path: Path,
) -> None:
    from synod.rbc.network import load_network

    arguments = ["init", str(tmp_path), "--host", "h\U0001f600st", "--network", "\U0001f600"]
    result = CliRunner().invoke(rbc, arguments)
    assert result.exit_code == 0, result.output
    network = load_network(tmp_path)
    assert {node.host for node in network.nodes} == {"h\U0001f600st"}
    assert network.network_id == "\U0001f600".encode()


def test_a_retransmission_pause_past_an_hour_in_network_toml_is_refused(tmp_path: Path) -> None:
    from synod.config import ConfigError
    from synod.rbc.network import load_network

    result = CliRunner().invoke(rbc, ["init", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = tmp_path / "network.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("= 300", "= 10000000"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"network\.retransmit_ms: expected a positive integer"):
        load_network(tmp_path)


def test_a_network_of_more_members_than_a_node_runs_with_is_refused_naming_nodes(
    tmp_path: Path,
) -> None:
    from synod.config import ConfigError
    from synod.crypto import node_id_text
    from synod.rbc.network import load_network, render_config

    entries = [
        (f"node-{index}", node_id_text(KeyPair.from_seed(index.to_bytes(32, "big")).node_id),
         "127.0.0.1", 20_000 + index, f"node-{index}.key")
        for index in range(257)
    ]  # fmt: skip
    (tmp_path / "network.toml").write_text(render_config(entries, 300), encoding="utf-8")
    with pytest.raises(ConfigError, match="nodes: at most 256 nodes, got 257"):
        load_network(tmp_path)


def test_init_over_a_stale_key_writes_no_other_key(tmp_path: Path) -> None:
    (tmp_path / "node-2.key").write_text("stale", encoding="utf-8")
    result = CliRunner().invoke(rbc, ["init", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "node-2.key: already exists" in result.output
    assert sorted(path.name for path in tmp_path.iterdir()) == ["node-2.key"]
