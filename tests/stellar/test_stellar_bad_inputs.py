"""Hostile and careless input to `synod stellar serve|run`: each is refused with one
clear line naming the option or file at fault, before the node listens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from synod.crypto import KeyPair, write_key_file

stellar_sdk = pytest.importorskip("stellar_sdk")

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
