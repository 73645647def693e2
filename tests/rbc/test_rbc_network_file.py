"""The reliable-broadcast network file (`synod.rbc.network`): what `load_network` accepts,
and every error naming the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.config import ConfigError, ConfigFileError
from synod.crypto import node_id_text
from synod.rbc.network import DEFAULT_RETRANSMIT_MS, load_network, render_config


def write_config(directory: Path, text: str) -> Path:
    path = directory / "network.toml"
    path.write_text(text, encoding="utf-8")
    return path


NODE = """
[[nodes]]
name = "{name}"
id = "{id}"
host = "127.0.0.1"
port = {port}
key_file = "{name}.key"
"""


def node_text(name: str, port: object, seed: int = 1) -> str:
    from synod.crypto import KeyPair

    node_id = node_id_text(KeyPair.from_seed(bytes([seed]) * 32).node_id)
    return NODE.format(name=name, id=node_id, port=port)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        (node_text("a", 7001) + node_text("b", '"x"', 2), "nodes[1].port", "integer"),
        (node_text("a", 70000), "nodes[0].port", "1..65535"),
        ("[network]\nretransmit_ms = 300\n", "nodes", "array of tables"),
        (
            "[network]\nretransmit_ms = -1\n" + node_text("a", 7001),
            "network.retransmit_ms",
            "positive integer",
        ),
        (node_text("a", 7001).replace('id = "N', 'id = "X'), "nodes[0].id", "node id"),
        (node_text("a", 7001) + node_text("a", 7002, 2), "nodes[1].name", "unique"),
        (node_text("a", 7001) + node_text("b", 7002), "nodes[1].id", "unique"),
        (node_text("a", 7001) + node_text("b", 7001, 2), "nodes[1].port", "unique"),
        (
            node_text("a", 7001).replace('host = "127.0.0.1"', "host = 5"),
            "nodes[0].host",
            "non-empty string",
        ),
        (
            "[network]\nretransmitms = 300\n" + node_text("a", 7001),
            "network.retransmitms",
            "unknown key",
        ),
        ("[networks]\n" + node_text("a", 7001), "networks", "unknown key"),
        ('[network]\nnetwork_id = "a@b"\n' + node_text("a", 7001), "network.network_id", "'@'"),
        ("[network]\nnetwork_id = 7\n" + node_text("a", 7001), "network.network_id", "string"),
    ],
)
def test_config_error_names_the_file_the_key_and_what_was_expected(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_network(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{path}: {key}: ")
    assert (caught.value.path, caught.value.key) == (path, key)
    assert expected in message


def test_a_rendered_network_loads_back_with_keys_relative_to_the_file(tmp_path: Path) -> None:
    text = render_config([("a", _id(1), "127.0.0.1", 7001, "a.key")], retransmit_ms=50)
    write_config(tmp_path, text)
    config = load_network(tmp_path)
    assert config.retransmit_ms == 50
    (node,) = config.nodes
    assert (node.name, node.port, node.key_file) == ("a", 7001, tmp_path / "a.key")
    assert config.store_path(node) == tmp_path / "a.sqlite"


def test_the_retransmission_interval_has_a_default(tmp_path: Path) -> None:
    write_config(tmp_path, node_text("a", 7001))
    assert load_network(tmp_path).retransmit_ms == DEFAULT_RETRANSMIT_MS


def test_a_missing_file_and_a_file_that_is_not_toml_are_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError) as caught:
        load_network(tmp_path)
    assert caught.value.missing and caught.value.path == tmp_path / "network.toml"
    write_config(tmp_path, "[[nodes]\nname = ")
    with pytest.raises(ConfigFileError, match="not valid TOML") as caught:
        load_network(tmp_path)
    assert not caught.value.missing


def _id(seed: int) -> str:
    from synod.crypto import KeyPair

    return node_id_text(KeyPair.from_seed(bytes([seed]) * 32).node_id)


def test_the_network_id_is_read_back_as_written(tmp_path: Path) -> None:
    (tmp_path / "network.toml").write_text(
        render_config([("a", node_text_id(1), "127.0.0.1", 7001, "a.key")], 300, "payments")
    )
    assert load_network(tmp_path).network_id == b"payments"


def node_text_id(seed: int) -> str:
    from synod.crypto import KeyPair

    return node_id_text(KeyPair.from_seed(bytes([seed]) * 32).node_id)
