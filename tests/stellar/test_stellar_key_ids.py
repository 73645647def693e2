"""`synod keys show --stellar` prints a key file's Stellar public key (G...), the form a
Stellar quorum set names (docs/stellar-overlay.md writes its validators' quorum set so)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.keys import keys
from synod.crypto import KeyPair, node_id_text, write_key_file

stellar_sdk = pytest.importorskip("stellar_sdk")


def test_the_stellar_id_is_the_one_stellar_sdk_derives_from_the_same_seed(tmp_path: Path) -> None:
    seed = bytes(range(32))
    path = tmp_path / "v0.key"
    write_key_file(path, KeyPair.from_seed(seed))
    shown = CliRunner().invoke(keys, ["show", "--stellar", str(path)])
    assert shown.exit_code == 0, shown.output
    # stellar-sdk derives the public key from the seed on its own.
    assert shown.output == stellar_sdk.Keypair.from_raw_ed25519_seed(seed).public_key + "\n"
    plain = CliRunner().invoke(keys, ["show", str(path)])
    assert plain.output == node_id_text(KeyPair.from_seed(seed).node_id) + "\n"
