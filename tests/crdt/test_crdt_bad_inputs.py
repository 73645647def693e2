"""Hostile and careless input to the BFT-CRDT command line and node files: each is
refused with one clear line (a usage error, exit status 2) before anything is written,
or written so that `synod crdt run` reads back exactly what was typed; a store that is
not the node's own is refused with a `StorageError`."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from synod.cli.crdt import crdt
from synod.config import ConfigError, toml_string
from synod.core import Persist
from synod.crdt.config import load_config
from synod.crypto import KeyPair
from synod.runtime.crdt_node import ControlServer, LogNode
from synod.runtime.storage import SqliteStorage, StorageError

# "Undecodable bytes of an argument" reach Python as lone surrogates (surrogateescape):
# `synod crdt init n --document $'\xff'` passes "\udcff".
UNDECODABLE = "\udcff"
OUTSIDE_BMP = "log-\U0001f600"  # JSON writes it as a surrogate pair, which TOML refuses


def invoke(*arguments: str) -> Result:
    result = CliRunner().invoke(crdt, list(arguments))
    # a user error exits through click (SystemExit); anything else is a traceback
    assert isinstance(result.exception, SystemExit | None), result.exception
    return result


@pytest.mark.parametrize(
    "text",
    ['"quoted" \\ back', "tab\tnew\nline", "nul\x00del\x7f", OUTSIDE_BMP, "é", ""],
)
def test_toml_string_reads_back_as_the_same_text(text: str) -> None:
    assert tomllib.loads(f"key = {toml_string(text)}")["key"] == text


def test_toml_string_refuses_a_lone_surrogate() -> None:
    with pytest.raises(ValueError, match="not valid Unicode"):
        toml_string(UNDECODABLE)


def test_init_writes_characters_outside_the_bmp_that_run_reads_back(tmp_path: Path) -> None:
    peer_id = "NBDCKONWVZRPU35ZDTMU5F45U6FWULCGKVGRKGBAHXU4VQRGISWCR3AA"
    result = invoke(
        "init",
        str(tmp_path / "node"),
        "--document",
        OUTSIDE_BMP,
        "--network-id",
        "net-\U0001f600",
        "--listen",
        "127.0.0.1:7300",
        "--peer",
        f"peer-\U0001f600={peer_id}@127.0.0.1:7301",
    )
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "node")
    assert config.document == OUTSIDE_BMP
    assert config.network == "net-\U0001f600".encode()
    assert [peer.name for peer in config.peers] == ["peer-\U0001f600"]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--document", ""), ("--document", UNDECODABLE), ("--network-id", UNDECODABLE)],
)
def test_init_refuses_a_value_run_cannot_read_before_writing(
    tmp_path: Path, option: str, value: str
) -> None:
    result = invoke("init", str(tmp_path / "node"), option, value)
    assert result.exit_code == 2
    assert not (tmp_path / "node").exists()


def test_init_refuses_a_name_with_no_directory_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `synod crdt init .` wrote name = "", which `run` refuses
    monkeypatch.chdir(tmp_path)
    result = invoke("init", ".")
    assert result.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_relayer_refuses_an_undecodable_network_id() -> None:
    result = invoke("relayer", "--port", "0", "--network-id", UNDECODABLE)
    assert result.exit_code == 2
    assert "--network-id" in result.output


# ---------------------------------------------------------------- whose store a file is
# A node restores its own updates without verifying them again (its disk is trusted), so
# a file written by another node, network, document or protocol must not be restored.


def open_node(store: Path, keys: KeyPair, **options: Any) -> LogNode:
    return LogNode.open(keys, store, name="alice", **options)


def test_a_node_reopens_its_own_store(tmp_path: Path) -> None:
    store, keys = tmp_path / "node.sqlite", KeyPair.from_seed(bytes(32))
    asyncio.run(open_node(store, keys, network=b"net").stop())
    asyncio.run(open_node(store, keys, network=b"net").stop())


@pytest.mark.parametrize(
    "other",
    [
        {"keys": KeyPair.from_seed(b"\x01" * 32)},
        {"network": b"another network"},
        {"document": "another document"},
    ],
    ids=["node", "network", "document"],
)
def test_the_store_of_another_node_network_or_document_is_refused(
    tmp_path: Path, other: dict[str, Any]
) -> None:
    store, keys = tmp_path / "node.sqlite", KeyPair.from_seed(bytes(32))
    asyncio.run(open_node(store, keys).stop())
    with pytest.raises(StorageError, match="another node, network or document"):
        open_node(store, other.pop("keys", keys), **other)
    asyncio.run(open_node(store, keys).stop())  # the refusal released the store and lock


def test_the_store_of_another_protocol_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "node.sqlite"
    with SqliteStorage.open(store) as storage:
        storage.apply([Persist(b"scp/delivered", b"\x00")])
    with pytest.raises(StorageError, match="another protocol"):
        open_node(store, KeyPair.from_seed(bytes(32)))
    with SqliteStorage.open(store) as storage:
        assert storage.load() == {b"scp/delivered": b"\x00"}  # nothing written into it


# ---------------------------------------------------------------- the control socket


def test_a_control_path_naming_a_regular_file_is_refused_and_kept(tmp_path: Path) -> None:
    # before: "Address ... is already in use; another process uses that port"
    precious = tmp_path / "notes.txt"
    precious.write_text("kept")
    node = open_node(tmp_path / "node.sqlite", KeyPair.from_seed(bytes(32)))

    async def scenario() -> None:
        try:
            with pytest.raises(FileExistsError, match="not a socket"):
                await ControlServer(node, precious).start()
        finally:
            await node.stop()

    asyncio.run(scenario())
    assert precious.read_text() == "kept"


def test_a_control_path_in_a_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "control.sock"
    node = open_node(tmp_path / "node.sqlite", KeyPair.from_seed(bytes(32)))

    async def scenario() -> None:
        try:
            with pytest.raises(FileNotFoundError, match=str(path)):
                await ControlServer(node, path).start()
        finally:
            await node.stop()

    asyncio.run(scenario())


# ---------------------------------------------------------------- the relayer's URL
# Before, any text starting with ws:// was taken: the node then retried a URL that can
# never connect for as long as it ran, logging "relay connection failed" at info level.


@pytest.mark.parametrize(
    "url", ["ws://127.0.0.1:99999", "ws://", "ws://[::1", "ws://a b:1", "ws://127.0.0.1:0"]
)
def test_a_relayer_url_that_can_never_connect_is_refused(tmp_path: Path, url: str) -> None:
    result = invoke("init", str(tmp_path / "node"), "--relay", url)
    assert result.exit_code == 2
    assert "--relay" in result.output
    node = tmp_path / "written"
    assert invoke("init", str(node)).exit_code == 0
    text = (node / "node.toml").read_text().replace(
        '# relay = "ws://127.0.0.1:7400"', f"relay = {toml_string(url)}"
    )
    (node / "node.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"node\.relay"):
        load_config(node)


@pytest.mark.parametrize("url", ["ws://127.0.0.1:7400", "wss://relay.example.org", "ws://[::1]:1"])
def test_a_relayer_url_with_a_host_is_taken(tmp_path: Path, url: str) -> None:
    assert invoke("init", str(tmp_path / "node"), "--relay", url).exit_code == 0
    assert load_config(tmp_path / "node").relay == url


def test_init_network_refused_half_way_writes_nothing_and_can_run_again(tmp_path: Path) -> None:
    # before: node-0's key was written, then node-1's existing key refused the network,
    # and the next try refused node-0's key in turn
    stray = tmp_path / "node-1" / "node.key"
    stray.parent.mkdir()
    stray.write_text("left over")
    refused = invoke("init-network", str(tmp_path), "--nodes", "3", "--relay-port", "7400")
    assert refused.exit_code == 1
    assert not (tmp_path / "node-0").exists()
    stray.unlink()
    again = invoke("init-network", str(tmp_path), "--nodes", "3", "--relay-port", "7400")
    assert again.exit_code == 0, again.output
    assert all(load_config(tmp_path / f"node-{index}") for index in range(3))
