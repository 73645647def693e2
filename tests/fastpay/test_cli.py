"""`synod fastpay` on bad input: a clear message naming what is wrong and a non-zero
exit, never a traceback; and the file formats the commands write."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from synod.cli.fastpay import fastpay
from synod.crypto import KeyPair, node_id_text


def invoke(*arguments: str) -> Result:
    return CliRunner().invoke(fastpay, list(arguments), catch_exceptions=False)


def closed_port_block(width: int) -> int:
    """A base port whose `width` ports nobody listens on (bound and released)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


@pytest.fixture
def network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Four generated authorities (nobody runs them) and three funded wallets."""
    monkeypatch.chdir(tmp_path)
    lines = []
    for index in range(4):
        base = closed_port_block(1) if index == 0 else 1 + index * 100
        result = invoke(
            "server", "--server", f"server{index}.json", "generate",
            "--port", str(base), "--shards", "1",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        lines.append(result.output)
    Path("committee.json").write_text("".join(lines))
    result = invoke(
        "client", "--committee", "committee.json", "--accounts", "accounts.json",
        "create-accounts", "3", "--initial-funding", "50",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    Path("initial_accounts.txt").write_text(result.output)
    return tmp_path


def client(*arguments: str) -> Result:
    base = ["client", "--committee", "committee.json", "--accounts", "accounts.json"]
    return invoke(*base, "--timeout-ms", "200", *arguments)


def accounts(network: Path) -> list[str]:
    return [line.split(":")[0] for line in (network / "initial_accounts.txt").read_text().split()]


def test_generate_writes_a_private_key_file_and_prints_the_committee_line(network: Path) -> None:
    server = json.loads((network / "server0.json").read_text())
    assert stat.S_IMODE((network / "server0.json").stat().st_mode) == 0o600
    keys = KeyPair.from_seed(bytes.fromhex(server["secret_key"]))
    line = json.loads((network / "committee.json").read_text().splitlines()[0])
    assert line == server["authority"] and line["name"] == node_id_text(keys.node_id)
    again = invoke("server", "--server", "server0.json", "generate", "--port", "9100")
    assert again.exit_code == 1 and "refusing to overwrite" in again.output


def test_create_accounts_prints_one_genesis_line_per_wallet(network: Path) -> None:
    genesis = (network / "initial_accounts.txt").read_text().splitlines()
    wallets = [json.loads(line) for line in (network / "accounts.json").read_text().splitlines()]
    assert [line.split(":") for line in genesis] == [[w["address"], "50"] for w in wallets]
    for wallet in wallets:
        keys = KeyPair.from_seed(bytes.fromhex(wallet["secret_key"]))
        assert node_id_text(keys.node_id) == wallet["address"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not json", "committee.json:5: not a JSON line"),
        ('{"name": "N123", "host": "h", "port": 1, "shards": 1}', "committee.json:5: name"),
        ("[1, 2]", "committee.json:5: expected a JSON object"),
    ],
)
def test_a_malformed_committee_line_is_named(network: Path, line: str, expected: str) -> None:
    with (network / "committee.json").open("a") as handle:
        handle.write(line + "\n")
    result = client("query-balance", accounts(network)[0])
    assert result.exit_code == 2
    assert expected in result.output and "Traceback" not in result.output


def test_a_malformed_genesis_line_stops_the_shard_before_it_starts(network: Path) -> None:
    with (network / "initial_accounts.txt").open("a") as handle:
        handle.write("NOTANACCOUNT:12\n")
    result = invoke(
        "server", "--server", "server0.json", "run", "--shard", "0",
        "--initial-accounts", "initial_accounts.txt", "--committee", "committee.json",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "initial_accounts.txt:4: not an account address" in result.output


def test_a_shard_outside_the_authority_is_refused(network: Path) -> None:
    result = invoke(
        "server", "--server", "server0.json", "run", "--shard", "1",
        "--initial-accounts", "initial_accounts.txt", "--committee", "committee.json",
    )  # fmt: skip
    assert result.exit_code == 2 and "shards 0..0" in result.output


def test_an_account_missing_from_the_wallets_is_unknown(network: Path) -> None:
    stranger = node_id_text(KeyPair.from_seed(b"s" * 32).node_id)
    result = client("query-balance", stranger)
    assert result.exit_code == 1 and "unknown account" in result.output
    result = client("transfer", "1", "--from", stranger, "--to", accounts(network)[0])
    assert result.exit_code == 1 and "unknown account" in result.output


def test_amounts_above_the_known_balance_or_the_maximum_are_refused(network: Path) -> None:
    first, second = accounts(network)[:2]
    result = client("transfer", "51", "--from", first, "--to", second)
    assert result.exit_code == 1 and "exceeds the known balance 50" in result.output
    result = client("transfer", str(2**63), "--from", first, "--to", second)
    assert result.exit_code == 2 and "AMOUNT" in result.output
    result = client("transfer", "0", "--from", first, "--to", second)
    assert result.exit_code == 2


def test_servers_down_end_with_a_message_and_leave_the_order_pending(network: Path) -> None:
    first, second = accounts(network)[:2]
    result = client("query-balance", first)
    assert result.exit_code == 1 and "no quorum of authorities answered" in result.output
    result = client("transfer", "5", "--from", first, "--to", second)
    assert result.exit_code == 1
    assert "the order stays pending" in result.output and "Traceback" not in result.output
    # The signed order is in the wallet: the next run resumes it instead of signing anew.
    wallet = json.loads((network / "accounts.json").read_text().splitlines()[0])
    assert wallet["records"], "the pending order was persisted before it was sent"
    again = client("transfer", "7", "--from", first, "--to", second)
    assert "resuming the interrupted transfer #0" in again.output


def test_a_malformed_accounts_file_is_named(network: Path) -> None:
    (network / "accounts.json").write_text('{"address": "x", "secret_key": "zz"}\n')
    result = client("query-balance", accounts(network)[0])
    assert result.exit_code == 2 and "accounts.json:1: secret_key" in result.output


def test_the_reference_spellings_of_the_client_commands_are_accepted(network: Path) -> None:
    stranger = node_id_text(KeyPair.from_seed(b"s" * 32).node_id)
    result = client("query_balance", stranger)
    assert result.exit_code == 1 and "unknown account" in result.output


def test_damaged_wallet_records_are_named_not_a_traceback(network: Path) -> None:
    path = network / "accounts.json"
    wallets = [json.loads(line) for line in path.read_text().splitlines()]
    wallets[0]["records"] = {b"fastpay-client/state".hex(): "00ff"}
    path.write_text("".join(json.dumps(wallet) + "\n" for wallet in wallets))
    result = client("query-balance", wallets[0]["address"])
    assert result.exit_code == 2 and "are damaged" in result.output


def test_restore_account_wants_a_key_on_stdin_and_sync_an_account_of_the_file(
    network: Path,
) -> None:
    base = ["client", "--committee", "committee.json", "--accounts", "accounts.json"]
    garbage = CliRunner().invoke(fastpay, [*base, "restore-account"], input="not a key\n")
    assert garbage.exit_code == 2 and "stdin: expected the secret key" in garbage.output
    assert "Traceback" not in garbage.output
    unknown = client("sync", node_id_text(KeyPair.from_seed(b"z" * 32).node_id))
    assert unknown.exit_code == 1 and "unknown account" in unknown.output
    nothing = client("finish", "--from", accounts(network)[0])
    assert (nothing.exit_code, nothing.output.strip()) == (0, "nothing is pending")


def test_a_committee_with_two_network_ids_is_refused_naming_the_key(network: Path) -> None:
    lines = Path("committee.json").read_text().splitlines()
    first = json.loads(lines[0])
    first["network_id"] = "testnet"
    Path("committee.json").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    result = client("query-balance", accounts(network)[0])
    assert result.exit_code == 2 and "network_id: the lines name different networks" in (
        result.output
    )
    made = invoke(
        "server", "--server", "other.json", "generate", "--port", "9", "--network-id", "a@b"
    )
    assert made.exit_code == 2 and "--network-id" in made.output
