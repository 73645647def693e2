"""Hostile and careless input to `synod stellar serve|run`: each is refused with one
clear line naming the option or file at fault, before the node listens; a validator
refuses a store that is not its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from synod.core import Persist
from synod.crypto import KeyPair, write_key_file
from synod.quorum.qset import QuorumSet
from synod.runtime.nodes import RestoreFailed
from synod.runtime.storage import SqliteStorage

stellar_sdk = pytest.importorskip("stellar_sdk")

from synod.runtime.stellar_scp import StellarScpNode  # noqa: E402  (needs stellar-sdk)
from synod.stellar.peer import OverlaySettings  # noqa: E402

SYNOD = [sys.executable, "-m", "synod.cli.main"]
# Undecodable bytes of an argument reach Python as lone surrogates; a subprocess gets
# the raw byte.
UNDECODABLE = b"\xff"


def node_files(tmp_path: Path) -> list[str]:
    """--key and --quorum-set of a node that trusts itself alone."""
    keys = KeyPair.generate()
    key_file = tmp_path / "node.key"
    write_key_file(key_file, keys)
    strkey = stellar_sdk.Keypair.from_raw_ed25519_public_key(bytes(keys.node_id)).public_key
    qset_file = tmp_path / "qset.json"
    qset_file.write_text(json.dumps({"threshold": 1, "validators": [strkey]}))
    return ["--key", str(key_file), "--quorum-set", str(qset_file), "--listen", "127.0.0.1:0"]


def synod(*arguments: str | bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*SYNOD, *arguments], capture_output=True, timeout=60, check=False
    )


def test_an_undecodable_network_passphrase_is_a_usage_error(tmp_path: Path) -> None:
    serve = synod("stellar", "serve", *node_files(tmp_path), "--network", UNDECODABLE)
    assert serve.returncode == 2, serve.stderr
    assert b"--network" in serve.stderr and b"Traceback" not in serve.stderr


def test_a_store_in_a_missing_directory_is_named_not_blamed_on_listening(
    tmp_path: Path,
) -> None:
    store = tmp_path / "missing" / "votes.sqlite"
    run = synod("stellar", "run", *node_files(tmp_path), "--store", str(store))
    assert run.returncode == 1, run.stderr
    assert str(store).encode() + b": cannot open the store" in run.stderr
    assert b"cannot listen" not in run.stderr


def test_a_peer_that_is_no_ipv4_address_names_the_option(tmp_path: Path) -> None:
    serve = synod("stellar", "serve", *node_files(tmp_path), "--peer", "no-such-host")
    assert serve.returncode == 2, serve.stderr
    assert b"--peer" in serve.stderr


# ---------------------------------------------------------------- whose store a file is
# A validator restores its statements without verifying them again (its disk is
# trusted), so a file of another node, network or protocol must not be restored: before,
# `synod stellar run --store` on a BFT-CRDT node's file wrote SCP records beside its own.


def open_validator(store: Path, passphrase: str = "Test SDF Network ; September 2015") -> None:
    keys = KeyPair.from_seed(bytes(32))
    alone = QuorumSet(threshold=1, validators=(keys.node_id,))
    node = StellarScpNode(keys, alone, OverlaySettings(passphrase=passphrase), store_path=store)
    asyncio.run(node.close())


def test_a_validator_store_of_another_network_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "votes.sqlite"
    open_validator(store)
    open_validator(store)  # its own store, again
    with pytest.raises(RestoreFailed, match="another node, network"):
        open_validator(store, passphrase="Public Global Stellar Network ; September 2015")


def test_a_validator_refuses_the_store_of_another_protocol(tmp_path: Path) -> None:
    store = tmp_path / "votes.sqlite"
    with SqliteStorage.open(store) as storage:
        storage.apply([Persist(b"crdt/update/\x00", b"\x00")])
    with pytest.raises(RestoreFailed, match="another protocol"):
        open_validator(store)
    with SqliteStorage.open(store) as storage:
        assert storage.load() == {b"crdt/update/\x00": b"\x00"}  # nothing written into it


@pytest.mark.parametrize("where", ["missing/out.json", "."])
def test_a_crawl_output_that_cannot_be_written_is_refused_before_crawling(
    tmp_path: Path, where: str
) -> None:
    # before: a FileNotFoundError / IsADirectoryError traceback once the crawl was done
    crawl = synod(
        "stellar", "crawl", "127.0.0.1:1", "--timeout-s", "1", "-o", str(tmp_path / where)
    )
    assert crawl.returncode == 2, crawl.stderr
    assert b"--output" in crawl.stderr and b"Traceback" not in crawl.stderr
