"""The deployment files (committee, server key, genesis): what they encode reads back the
same, and each malformed line is refused with a message naming the file, line and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synod.crypto import KeyPair, node_id_text
from synod.fastpay.config import (
    AuthorityEntry,
    CommitteeFile,
    FastPayFileError,
    ServerFile,
    encode_initial_accounts,
    load_initial_accounts,
    parse_initial_accounts,
    shard_router,
)
from synod.fastpay.messages import AccountInfoRequest, request_shard

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
ALICE = KeyPair.from_seed(b"a" * 32)


def entries(shards: int = 2) -> tuple[AuthorityEntry, ...]:
    return tuple(
        AuthorityEntry(keys.node_id, "127.0.0.1", 9000 + 100 * index, shards, weight=index + 1)
        for index, keys in enumerate(AUTHORITIES)
    )


def test_a_committee_reads_back_what_it_encodes(tmp_path: Path) -> None:
    path = tmp_path / "committee.json"
    path.write_text(CommitteeFile(entries()).encode())
    loaded = CommitteeFile.load(path)
    assert loaded.authorities == entries() and loaded.path == path
    assert loaded.committee().weight(AUTHORITIES[3].node_id) == 4
    assert loaded.find(AUTHORITIES[1].node_id) == entries()[1]
    assert loaded.find(ALICE.node_id) is None


def committee_error(tmp_path: Path, lines: list[object]) -> str:
    path = tmp_path / "committee.json"
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n"
                            for line in lines))  # fmt: skip
    with pytest.raises(FastPayFileError) as raised:
        CommitteeFile.load(path)
    return str(raised.value)


def test_committee_lines_are_checked_one_key_at_a_time(tmp_path: Path) -> None:
    good = entries()[0].to_json()
    where = f"{tmp_path / 'committee.json'}:2"
    assert committee_error(tmp_path, [good, "{oops"]).startswith(f"{where}: not a JSON line")
    assert committee_error(tmp_path, [good, [1]]) == f"{where}: expected a JSON object"
    assert "unknown key 'colour'" in committee_error(tmp_path, [good, {**good, "colour": 1}])
    second = entries()[1].to_json()
    assert f"{where}: port" in committee_error(tmp_path, [good, {**second, "port": 0}])
    assert f"{where}: shards" in committee_error(tmp_path, [good, {**second, "shards": 0}])
    assert f"{where}: weight" in committee_error(tmp_path, [good, {**second, "weight": True}])
    assert f"{where}: host" in committee_error(tmp_path, [good, {**second, "host": ""}])
    assert f"{where}: name" in committee_error(tmp_path, [good, {**second, "name": "N1"}])


def test_a_committee_refuses_duplicates_shared_ports_and_emptiness(tmp_path: Path) -> None:
    first, second = (entry.to_json() for entry in entries()[:2])
    assert "listed twice" in committee_error(tmp_path, [first, {**first, "port": 1}])
    overlapping = {**second, "port": first["port"] + 1}
    assert "overlaps another authority" in committee_error(tmp_path, [first, overlapping])
    assert "no authorities" in committee_error(tmp_path, [""])
    with pytest.raises(FastPayFileError, match="no such committee file"):
        CommitteeFile.load(tmp_path / "absent.json")


def test_the_router_sends_a_request_to_the_shard_of_its_account() -> None:
    committee = CommitteeFile(entries(shards=4))
    route = shard_router(committee)
    request = AccountInfoRequest(account=ALICE.node_id)
    for entry in committee.authorities:
        assert route(entry.name, request) == entry.address(request_shard(request, 4))
    assert route(ALICE.node_id, request) is None


def test_a_server_file_reads_back_and_must_match_its_committee_line(tmp_path: Path) -> None:
    path = private(tmp_path / "server.json", ServerFile(AUTHORITIES[0], entries()[0]).encode())
    server = ServerFile.load(path)
    assert server.keys.seed == AUTHORITIES[0].seed and server.authority == entries()[0]
    assert server.entry_in(CommitteeFile(entries())) == entries()[0]
    moved = (AuthorityEntry(AUTHORITIES[0].node_id, "127.0.0.1", 1, 2), *entries()[1:])
    with pytest.raises(FastPayFileError, match="line differs"):
        server.entry_in(CommitteeFile(moved))
    with pytest.raises(FastPayFileError, match="is not listed"):
        server.entry_in(CommitteeFile(entries()[1:]))


def test_a_server_file_with_another_authoritys_key_is_refused(tmp_path: Path) -> None:
    document = json.loads(ServerFile(AUTHORITIES[1], entries()[1]).encode())
    document["authority"] = entries()[0].to_json()
    path = private(tmp_path / "server.json", json.dumps(document))
    with pytest.raises(FastPayFileError, match=r"secret_key: not the key of authority\.name"):
        ServerFile.load(path)


def private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_server_file_others_can_read_is_refused(tmp_path: Path) -> None:
    """It holds the authority's secret seed, like a key file: 0644 is refused."""
    path = private(tmp_path / "server.json", ServerFile(AUTHORITIES[0], entries()[0]).encode())
    path.chmod(0o644)
    with pytest.raises(FastPayFileError, match=r"permissions 0644 .* chmod 600"):
        ServerFile.load(path)


def test_the_genesis_reads_back_and_names_each_bad_line(tmp_path: Path) -> None:
    genesis = {bytes(keys.node_id): 10 * index for index, keys in enumerate(AUTHORITIES)}
    path = tmp_path / "initial_accounts.txt"
    path.write_text(encode_initial_accounts(genesis))
    assert load_initial_accounts(path) == genesis
    alice = node_id_text(ALICE.node_id)
    cases = {
        "no separator": "genesis:1: expected ADDRESS:BALANCE",
        "NOTANACCOUNT:12": "genesis:1: not an account address",
        f"{alice}:ten": "genesis:1: balance: expected an integer",
        f"{alice}:-1": "genesis:1: balance: expected 0..",
        f"{alice}:{2**63}": "genesis:1: balance: expected 0..",
        f"{alice}:1\n{alice}:2": "genesis:2: this account is listed twice",
    }
    for text, expected in cases.items():
        with pytest.raises(FastPayFileError) as raised:
            parse_initial_accounts(text, "genesis")
        assert str(raised.value).startswith(expected), text
