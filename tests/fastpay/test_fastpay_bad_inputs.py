"""Bad input to FastPay's files and commands: each is a typed error naming what is wrong,
never a traceback (docs/fastpay.md, *Files*)."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.fastpay import fastpay
from synod.crypto import KeyPair, node_id_text
from synod.fastpay.authority import AuthorityShard, StoreMismatch
from synod.fastpay.config import (
    AuthorityEntry,
    CommitteeFile,
    FastPayFileError,
    ServerFile,
    load_initial_accounts,
    parse_account,
    read_text,
)
from synod.fastpay.wallet import DamagedWallet, Wallet
from synod.quorum.committee import Committee

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
COMMITTEE = Committee({keys.node_id: 1 for keys in AUTHORITIES})
ALICE = KeyPair.from_seed(b"a" * 32)


def test_a_sent_record_whose_index_is_not_eight_bytes_is_a_damaged_wallet() -> None:
    # an accounts.json edited by hand: the key's index lost a byte (struct.error before)
    wallet = Wallet(ALICE, 1, {b"fastpay-client/sent/" + bytes(7): b"\x00"})
    expected = f"the records of {node_id_text(ALICE.node_id)} are damaged"
    with pytest.raises(DamagedWallet, match=expected):
        wallet.client(COMMITTEE, "accounts.json")


def test_a_store_of_another_protocol_is_refused_by_a_shard() -> None:
    # a Tusk core's file given as --storage: before, the shard served it as a new store
    # and wrote its accounts among the other protocol's records
    stored = {b"tusk/chain": b"\x00", b"tusk/certificate/" + bytes(32): b"\x01"}
    with pytest.raises(StoreMismatch, match=r"another kind \(tusk/...\)"):
        AuthorityShard(AUTHORITIES[0], COMMITTEE, genesis={ALICE.node_id: 5}, storage=stored)


@pytest.mark.parametrize("host", ["", "a\nb", "two words"])
def test_generate_refuses_a_host_no_shard_could_use_and_writes_no_key(
    tmp_path: Path, host: str
) -> None:
    # before: the key file was written with the host, and `server run` then refused it
    # (empty) or never found the authority in committee.json (a newline)
    server = tmp_path / "server1.json"
    arguments = ["server", "--server", str(server), "generate", "--port", "9100", "--host", host]
    result = CliRunner().invoke(fastpay, arguments)
    assert result.exit_code == 2, result.output
    assert "expected a host name or address" in result.output
    assert not server.exists()


def test_an_address_of_a_megabyte_is_refused_in_one_short_line() -> None:
    # before, the error quoted the whole text back (a megabyte on one line)
    with pytest.raises(FastPayFileError) as raised:
        parse_account("N" + "A" * 1_000_000, "ADDRESS")
    assert str(raised.value) == (
        "ADDRESS: not an account address: 1000001 characters (an address has 56)"
    )

    with pytest.raises(FastPayFileError) as raised:
        AuthorityEntry.from_json({"name": "N" * 1_000_000}, "committee.json:1")
    assert str(raised.value) == "committee.json:1: name: 1000000 characters (an id has 56)"


class EndlessZeros(io.RawIOBase):
    """A standard input that never ends a line (``< /dev/zero``), which fails the test
    once a megabyte of it has been read."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self.read_bytes += len(buffer)
        assert self.read_bytes < 1 << 20, "read a megabyte of stdin for a 64-digit key"
        buffer[:] = bytes(len(buffer))
        return len(buffer)


def test_restore_account_reads_a_bounded_line_of_stdin(tmp_path: Path) -> None:
    # before, stdin was read up to a newline that never came, without bound
    arguments = ["client", "--committee", str(tmp_path / "committee.json")]
    arguments += ["--accounts", str(tmp_path / "accounts.json"), "restore-account"]
    result = CliRunner().invoke(fastpay, arguments, input=io.BufferedReader(EndlessZeros()))
    assert result.exit_code == 2, (result.output, result.exception)
    assert "stdin: expected the secret key" in result.output


def test_create_accounts_refuses_a_genesis_past_the_total_supply(tmp_path: Path) -> None:
    # before: the accounts were created and their lines printed, and every shard then
    # refused the genesis ("the total supply would exceed 2^63-1")
    accounts = tmp_path / "accounts.json"
    arguments = ["client", "--committee", str(tmp_path / "committee.json")]
    arguments += ["--accounts", str(accounts), "create-accounts", "2"]
    result = CliRunner().invoke(fastpay, [*arguments, "--initial-funding", str(2**63 - 1)])
    assert result.exit_code == 2, result.output
    assert "pass the total supply the shards accept" in result.output
    assert not accounts.exists()


@pytest.mark.parametrize(
    "load",
    [
        CommitteeFile.load,
        ServerFile.load,
        load_initial_accounts,
        lambda path: read_text(path, "accounts"),
    ],
)
def test_a_device_given_as_a_file_is_refused_before_it_is_read(load: object) -> None:
    # --initial-accounts /dev/zero (or any of these options): read until memory ran out
    assert callable(load)
    with pytest.raises(FastPayFileError, match="a device, not a regular file"):
        load(Path("/dev/zero"))


def test_a_file_past_its_bound_is_refused(tmp_path: Path) -> None:
    server = tmp_path / "server1.json"
    server.write_bytes(b" " * (1024 * 1024 + 1))
    server.chmod(0o600)
    with pytest.raises(FastPayFileError, match="larger than 1048576 bytes"):
        ServerFile.load(server)


def test_a_device_given_as_a_shard_store_is_refused_before_anything_is_made_beside_it(
    tmp_path: Path,
) -> None:
    # --storage /dev/null: "disk I/O error", after a lock file and a journal were made in
    # /dev; a socket file stands for the device here
    from synod.crypto import KeyPair
    from synod.fastpay.config import AuthorityEntry
    from synod.runtime.fastpay_node import create_server_file

    server = tmp_path / "server1.json"
    keys = KeyPair.from_seed(b"s" * 32)
    entry = AuthorityEntry(keys.node_id, "127.0.0.1", 9100, 1, 1, "")
    create_server_file(server, keys, entry)
    committee = tmp_path / "committee.json"
    committee.write_text(json.dumps(entry.to_json()) + "\n", encoding="utf-8")
    genesis = tmp_path / "initial_accounts.txt"
    genesis.write_text("", encoding="utf-8")
    arguments = ["server", "--server", str(server), "run", "--shard", "0"]
    arguments += ["--initial-accounts", str(genesis), "--committee", str(committee)]
    with socket.socket(socket.AF_UNIX) as listener:  # a file that is not a regular one
        listener.bind(str(tmp_path / "store"))
        result = CliRunner().invoke(fastpay, [*arguments, "--storage", str(tmp_path / "store")])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "not a regular file" in result.output
    assert not (tmp_path / "store.lock").exists()


def test_a_committee_larger_than_a_certificate_can_carry_is_refused() -> None:
    # 257 authorities: accepted before, though a certificate carries at most 256 signatures
    # and a quorum of unequal weights may need more
    lines = [
        json.dumps(
            AuthorityEntry(
                KeyPair.from_seed(index.to_bytes(32, "big")).node_id, "127.0.0.1",
                10_000 + index, 1, 1, "",
            ).to_json()
        )
        for index in range(257)
    ]  # fmt: skip
    with pytest.raises(FastPayFileError, match="257 authorities, at most 256"):
        CommitteeFile.parse("\n".join(lines) + "\n", Path("committee.json"))
