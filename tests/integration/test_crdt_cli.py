"""`synod crdt init` output and the configuration errors of `synod crdt run`."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.crdt import crdt
from synod.config import ConfigError
from synod.crdt.config import load_config, parse_peer
from synod.crypto import KeyPair, node_id_text, read_key_file


def init(directory: Path, *arguments: str) -> dict[str, str]:
    result = CliRunner().invoke(crdt, ["init", str(directory), *arguments, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_init_writes_a_private_key_matching_the_configured_id(tmp_path: Path) -> None:
    printed = init(tmp_path / "alice", "--relay", "ws://127.0.0.1:7400", "--announce-ms", "500")
    config = load_config(tmp_path / "alice")
    assert config.name == "alice"
    assert printed["id"] == node_id_text(config.node_id)
    assert stat.S_IMODE(config.key_file.stat().st_mode) == 0o600
    assert read_key_file(config.key_file).node_id == config.node_id
    assert config.relay == "ws://127.0.0.1:7400"
    assert config.announce_interval_ms == 500
    assert config.listen is None
    assert config.peers == ()


def test_init_records_direct_peers_and_the_listen_address(tmp_path: Path) -> None:
    bob = node_id_text(KeyPair.from_seed(b"\x02" * 32).node_id)
    init(tmp_path / "alice", "--listen", "127.0.0.1:7301", "--peer", f"bob={bob}@127.0.0.1:7302")
    config = load_config(tmp_path / "alice")
    assert config.listen == ("127.0.0.1", 7301)
    (peer,) = config.peers
    assert (peer.name, node_id_text(peer.node_id), peer.host, peer.port) == (
        "bob",
        bob,
        "127.0.0.1",
        7302,
    )


def test_init_records_the_network_id_and_the_group(tmp_path: Path) -> None:
    bob = node_id_text(KeyPair.from_seed(b"\x02" * 32).node_id)
    printed = init(tmp_path / "alice", "--network-id", "staging", "--member", bob)
    config = load_config(tmp_path / "alice")
    assert config.network == b"staging"
    assert config.members is not None
    assert {node_id_text(member) for member in config.members} == {bob}
    assert printed["id"] != bob
    plain = load_config(Path(init(tmp_path / "carol")["config"]).parent)
    assert (plain.network, plain.members) == (b"", None)
    refused = CliRunner().invoke(crdt, ["init", str(tmp_path / "dave"), "--member", "Nx"])
    assert refused.exit_code == 2
    assert "--member" in refused.output


def test_init_prints_a_table_like_the_other_inits_and_json_when_asked(tmp_path: Path) -> None:
    arguments = ["init", str(tmp_path / "alice"), "--listen", "127.0.0.1:7301"]
    result = CliRunner().invoke(crdt, arguments)
    assert result.exit_code == 0, result.output
    identity = node_id_text(load_config(tmp_path / "alice").node_id)
    assert result.stdout.split() == ["alice", identity]
    assert all(len(line) <= 80 for line in result.stdout.splitlines())
    wrote = f"wrote {tmp_path / 'alice' / 'node.toml'} (reaches: listen 127.0.0.1:7301)"
    assert wrote in result.stderr
    printed = init(tmp_path / "bob")
    assert printed["event"] == "initialised" and printed["reaches"] == "nothing: alone"


def test_init_refuses_to_overwrite_a_node(tmp_path: Path) -> None:
    init(tmp_path / "alice")
    result = CliRunner().invoke(crdt, ["init", str(tmp_path / "alice")])
    assert result.exit_code != 0
    assert "already exists" in result.output


@pytest.mark.parametrize(
    ("replace", "by", "key"),
    [
        (
            "announce_interval_ms = 2000",
            'announce_interval_ms = "soon"',
            "node.announce_interval_ms",
        ),
        ('# relay = "ws://127.0.0.1:7400"', 'relay = "http://x"', "node.relay"),
        ('# listen = "127.0.0.1:7300"', 'listen = "nowhere"', "node.listen"),
        ('name = "alice"', 'name = ""', "node.name"),
        ('network_id = ""', 'network_id = "a@b"', "node.network_id"),
        ('network_id = ""', "network_id = 7", "node.network_id"),
        ('# members = ["N...", "N..."]', 'members = ["Nnot-an-id"]', "node.members[0]"),
        ('# members = ["N...", "N..."]', "members = []", "node.members"),
    ],
)
def test_configuration_errors_name_the_file_and_the_key(
    tmp_path: Path, replace: str, by: str, key: str
) -> None:
    init(tmp_path / "alice")
    path = tmp_path / "alice" / "node.toml"
    text = path.read_text()
    assert replace in text
    path.write_text(text.replace(replace, by))
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "alice")
    assert raised.value.path == path and raised.value.key == key
    assert f"{path}: {key}: expected" in str(raised.value)
    result = CliRunner().invoke(crdt, ["run", str(tmp_path / "alice")])
    assert result.exit_code == 2
    assert f"{path}: {key}: expected" in result.output


def test_a_peer_table_with_a_bad_id_is_a_configuration_error(tmp_path: Path) -> None:
    init(tmp_path / "alice")
    path = tmp_path / "alice" / "node.toml"
    path.write_text(path.read_text() + '\n[[peers]]\nid = "Nnot-an-id"\naddress = "h:1"\n')
    with pytest.raises(ConfigError, match=r"peers\[0\]\.id"):
        load_config(tmp_path / "alice")


def test_peer_option_syntax() -> None:
    bob = node_id_text(KeyPair.from_seed(b"\x02" * 32).node_id)
    assert parse_peer(f"{bob}@localhost:9").name == bob[:8]
    for bad in (f"{bob}", f"{bob}@localhost", "x@localhost:9", f"{bob}@host:70000"):
        with pytest.raises(ValueError):
            parse_peer(bad)


def test_run_without_a_configuration_says_how_to_make_one(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(crdt, ["run", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "synod crdt init" in result.output


def test_run_with_peers_but_no_listen_address_is_a_usage_error(tmp_path: Path) -> None:
    init(tmp_path / "alice")
    bob = node_id_text(KeyPair.from_seed(b"\x02" * 32).node_id)
    result = CliRunner().invoke(
        crdt, ["run", str(tmp_path / "alice"), "--peer", f"{bob}@127.0.0.1:9"]
    )
    assert result.exit_code == 2
    assert "listen" in result.output


def test_relayer_member_and_network_options_are_checked() -> None:
    for arguments in (["--member", "Nx"], ["--network-id", "a@b"]):
        result = CliRunner().invoke(crdt, ["relayer", "--port", "0", *arguments])
        assert result.exit_code == 2
        assert arguments[0] in result.output
