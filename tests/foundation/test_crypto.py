"""synod.crypto: signatures bound to a domain, node id text forms, key files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synod.crypto import (
    BadSignature,
    InvalidNodeId,
    KeyFileError,
    KeyPair,
    blake2b,
    node_id_text,
    parse_node_id,
    read_key_file,
    require_valid_signature,
    sha256,
    verify,
    write_key_file,
)

ALICE = KeyPair.from_seed(bytes(range(32)))
BOB = KeyPair.from_seed(bytes(range(1, 33)))


def test_signature_verifies_for_signer_domain_and_message() -> None:
    signature = ALICE.sign(b"test/v1", b"hello")
    assert len(signature) == 64
    assert verify(ALICE.node_id, b"test/v1", b"hello", signature)


def test_signature_does_not_verify_under_another_domain() -> None:
    signature = ALICE.sign(b"scp/envelope", b"hello")
    assert not verify(ALICE.node_id, b"fastpay/vote", b"hello", signature)


def test_domain_and_message_boundary_cannot_be_shifted() -> None:
    # The domain is length-prefixed, so ("ab", "c") and ("a", "bc") sign different bytes.
    signature = ALICE.sign(b"ab", b"c")
    assert not verify(ALICE.node_id, b"a", b"bc", signature)


def test_signature_does_not_verify_for_another_signer_or_message() -> None:
    signature = ALICE.sign(b"d", b"hello")
    assert not verify(BOB.node_id, b"d", b"hello", signature)
    assert not verify(ALICE.node_id, b"d", b"hellO", signature)


@given(garbage_key=st.binary(max_size=40), garbage_signature=st.binary(max_size=70))
@settings(max_examples=200)
def test_verify_returns_false_on_any_garbage(garbage_key: bytes, garbage_signature: bytes) -> None:
    assert verify(garbage_key, b"d", b"m", garbage_signature) is False


def test_require_valid_signature_raises_typed_error() -> None:
    with pytest.raises(BadSignature):
        require_valid_signature(ALICE.node_id, b"d", b"m", bytes(64))


def test_ed25519_matches_rfc8032_test_vector_1() -> None:
    # RFC 8032 section 7.1, TEST 1: the empty message. synod prefixes a domain, so this
    # checks the key derivation: public key from the secret key.
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    expected_public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    assert KeyPair.from_seed(seed).node_id.hex() == expected_public


def test_digests_match_known_answers() -> None:
    assert sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert len(blake2b(b"abc")) == 32
    assert blake2b(b"abc", person=b"a") != blake2b(b"abc", person=b"b")


@given(seed=st.binary(min_size=32, max_size=32))
@settings(max_examples=50)
def test_node_id_text_round_trips(seed: bytes) -> None:
    node_id = KeyPair.from_seed(seed).node_id
    text = node_id_text(node_id)
    assert text.startswith("N")
    assert parse_node_id(text) == node_id


def test_node_id_text_detects_a_typo() -> None:
    text = node_id_text(ALICE.node_id)
    typo = text[:10] + ("A" if text[10] != "A" else "B") + text[11:]
    with pytest.raises(InvalidNodeId):
        parse_node_id(typo)


@pytest.mark.parametrize("text", ["", "N", "X" + "A" * 55, "N!!!", "N" + "A" * 54])
def test_malformed_node_id_text_is_refused(text: str) -> None:
    with pytest.raises(InvalidNodeId):
        parse_node_id(text)


def test_key_file_round_trip_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_key_file(path, ALICE)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_key_file(path).node_id == ALICE.node_id


def test_a_device_named_as_key_file_is_refused_without_reading_it() -> None:
    # Run apart: before the bound, reading /dev/zero never ended.
    import subprocess
    import sys

    script = (
        "from pathlib import Path\n"
        "from synod.crypto import KeyFileError, read_key_file\n"
        "try:\n"
        "    read_key_file(Path('/dev/zero'))\n"
        "except KeyFileError as error:\n"
        "    print(error.reason)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.strip() == "not a regular file", done.stderr


def test_a_large_file_named_as_key_file_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_key_file(path, ALICE)
    with path.open("ab") as handle:
        handle.write(b" " * 5000)  # a key file with trailing blanks would still parse
    with pytest.raises(KeyFileError, match="larger than 4096 bytes"):
        read_key_file(path)


def test_key_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_key_file(path, ALICE)
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(path, BOB)
    assert read_key_file(path).node_id == ALICE.node_id


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_key_file(path, ALICE)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="permissions") as caught:
        read_key_file(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"synod-ed25519-seed 0011", "truncated"),
        (b"synod-ed25519-seed " + b"zz" * 32, "not hexadecimal"),
        (b"ssh-ed25519 AAAA", "not a synod key file"),
        (b"\xff\xfe\x00", "not ASCII"),
        (b"", "not a synod key file"),
    ],
)
def test_corrupt_key_file_names_the_file(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError, match=reason) as caught:
        read_key_file(path)
    assert caught.value.path == path


def test_missing_key_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such key file"):
        read_key_file(tmp_path / "absent.key")


def test_a_signature_made_for_one_network_is_refused_by_another() -> None:
    from synod.crypto import in_network

    keys = KeyPair.from_seed(b"\x05" * 32)
    domain = b"synod/test/vote"
    signature = keys.sign(in_network(domain, b"main"), b"payload")
    assert verify(keys.node_id, in_network(domain, b"main"), b"payload", signature)
    assert not verify(keys.node_id, in_network(domain, b"test"), b"payload", signature)
    assert not verify(keys.node_id, domain, b"payload", signature)
    assert in_network(domain, b"") == domain
    with pytest.raises(ValueError):
        in_network(domain, b"a@b")
    with pytest.raises(ValueError):
        in_network(domain, b"x" * 65)
