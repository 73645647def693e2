"""The files of a FastPay deployment: committee, server key and genesis (loaders, encoders).

Theory of operation.  The formats follow the reference implementation's quickstart
(asonnino/fastpay) and are described in docs/fastpay.md, *Files*:

- ``committee.json``: JSON lines, one authority each (`AuthorityEntry`): its id, host,
  base port, shard count, weight and, optionally, the network id (the same on every
  line; the signature domains of that network); shard J listens on ``port + J``;
- ``server<I>.json``: one JSON object, the authority's committee line and secret seed;
- ``initial_accounts.txt``: ``ADDRESS:BALANCE`` lines, the genesis every shard starts from.

Everything here is pure: files are read with `pathlib` and parsed, or encoded as text for
the caller to write.  A file that does not hold what it should raises `FastPayFileError`
whose message names the file, the line and the key.  `shard_router` turns a committee
into the routing function that shards and clients give their drivers.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synod.crypto import (
    MAX_NETWORK_ID_BYTES,
    InvalidNodeId,
    KeyPair,
    NodeId,
    node_id_text,
    parse_node_id,
)
from synod.fastpay.messages import (
    MAX_COMMITTEE_SIZE,
    MAX_SHARDS,
    MAX_SUPPLY,
    FastPayRequest,
    request_shard,
)
from synod.quorum.committee import Committee

MAX_WEIGHT = 2**32 - 1
_AUTHORITY_KEYS = frozenset({"name", "host", "port", "shards", "weight", "network_id"})


class FastPayFileError(ValueError):
    """A file does not hold what it should: the message names the file, line and key."""


# ---------------------------------------------------------------- small parsers


def integer_in(value: object, low: int, high: int) -> int | None:
    """`value` when it is an integer (not a bool) in ``low..high``, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def hex_bytes(value: object, length: int | None = None) -> bytes | None:
    """The bytes spelled by the hexadecimal string `value` (of `length` bytes), else None."""
    if not isinstance(value, str):
        return None
    try:
        decoded = bytes.fromhex(value)
    except ValueError:
        return None
    if length is not None and len(decoded) != length:
        return None
    return decoded


MAX_ADDRESS_TEXT = 100
"""Characters of an address text read at most (an address has 56, blanks around it)."""


def parse_account(text: str, where: str) -> NodeId:
    """The account whose address is `text`; `where` names it in the error."""
    if len(text) > MAX_ADDRESS_TEXT:
        # the error would otherwise quote all of it: one line, not megabytes
        raise FastPayFileError(
            f"{where}: not an account address: {len(text)} characters (an address has 56)"
        )
    try:
        return parse_node_id(text.strip())
    except InvalidNodeId as error:
        raise FastPayFileError(f"{where}: not an account address: {error}") from None


MAX_FILE_BYTES = {
    "server": 1024 * 1024,
    "committee": 16 * 1024 * 1024,
    "initial accounts": 1024 * 1024 * 1024,
    "accounts": 4 * 1024 * 1024 * 1024,
}
"""The most each kind of file is read of (docs/fastpay.md, *Bounds*): a server file holds
one line of a few hundred bytes, a committee one such line per authority, a genesis
about 80 bytes per account (13 million in a gigabyte), and a wallet file also every
certificate its accounts sent or received."""


def read_bounded(path: Path, what: str) -> str:
    """The UTF-8 text of `path`, read up to `MAX_FILE_BYTES[what]`: a device such as
    ``/dev/zero`` never ends and is refused before any read (`OSError`, as is a longer
    file; `UnicodeDecodeError` for text that is not UTF-8)."""
    if stat.S_ISCHR(path.stat().st_mode) or stat.S_ISBLK(path.stat().st_mode):
        raise OSError("a device, not a regular file")
    limit = MAX_FILE_BYTES[what]
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"larger than {limit} bytes, the most a {what} file may hold")
    return data.decode("utf-8")


def read_text(path: Path, what: str) -> str:
    """The text of the `what` file `path`, or a `FastPayFileError` naming it."""
    try:
        return read_bounded(path, what)
    except FileNotFoundError:
        raise FastPayFileError(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise FastPayFileError(f"{path}: cannot read the {what} file: {error}") from None


def json_lines(text: str, source: str) -> Iterator[tuple[str, object]]:
    """(``source:line``, parsed JSON) for each non-empty line of `text`."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            yield where, json.loads(line)
        except json.JSONDecodeError as error:
            raise FastPayFileError(f"{where}: not a JSON line: {error.msg}") from None
        except RecursionError:
            raise FastPayFileError(f"{where}: not a JSON line: nested too deeply") from None


# ---------------------------------------------------------------- committee.json


@dataclass(frozen=True, slots=True)
class AuthorityEntry:
    """One line of ``committee.json``: an authority and where its shards listen."""

    name: NodeId
    host: str
    port: int
    shards: int
    weight: int = 1
    network_id: str = ""

    def address(self, shard: int) -> tuple[str, int]:
        """Shard `shard` listens on the base port plus its index."""
        return (self.host, self.port + shard)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this line."""
        line: dict[str, Any] = {
            "name": node_id_text(self.name),
            "host": self.host,
            "port": self.port,
            "shards": self.shards,
            "weight": self.weight,
        }
        if self.network_id:
            line["network_id"] = self.network_id
        return line

    @classmethod
    def from_json(cls, raw: object, where: str) -> AuthorityEntry:
        """Check and read one committee line; `where` names it in errors."""
        if not isinstance(raw, dict):
            raise FastPayFileError(f"{where}: expected a JSON object")
        unknown = sorted(set(raw) - _AUTHORITY_KEYS)
        if unknown:
            raise FastPayFileError(f"{where}: unknown key {unknown[0]!r}")
        name = raw.get("name")
        if not isinstance(name, str):
            raise FastPayFileError(f"{where}: name: expected an authority id string, got {name!r}")
        if len(name) > MAX_ADDRESS_TEXT:
            raise FastPayFileError(f"{where}: name: {len(name)} characters (an id has 56)")
        try:
            node_id = parse_node_id(name)
        except InvalidNodeId as error:
            raise FastPayFileError(f"{where}: name: {error}") from None
        host = raw.get("host")
        if not isinstance(host, str) or not host:
            raise FastPayFileError(f"{where}: host: expected a non-empty string, got {host!r}")
        shards = integer_in(raw.get("shards"), 1, MAX_SHARDS)
        if shards is None:
            raise FastPayFileError(f"{where}: shards: expected an integer 1..{MAX_SHARDS}")
        last_port = 65535 - shards + 1
        port = integer_in(raw.get("port"), 1, last_port)
        if port is None:
            raise FastPayFileError(f"{where}: port: expected an integer 1..{last_port}")
        weight = integer_in(raw.get("weight", 1), 1, MAX_WEIGHT)
        if weight is None:
            raise FastPayFileError(f"{where}: weight: expected a positive integer")
        network_id = raw.get("network_id", "")
        if network_id_problem(network_id) is not None:
            raise FastPayFileError(f"{where}: network_id: {network_id_problem(network_id)}")
        return cls(node_id, host, port, shards, weight, network_id)


@dataclass(frozen=True, slots=True)
class CommitteeFile:
    """``committee.json``: one authority per line (as ``server generate`` prints them).

    Build one in code from `AuthorityEntry` values, or read one with `load`.
    """

    authorities: tuple[AuthorityEntry, ...]
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> CommitteeFile:
        """Read and check `path` (no duplicate authority, no shared port, not empty)."""
        return cls.parse(read_text(path, "committee"), path)

    @classmethod
    def parse(cls, text: str, path: Path) -> CommitteeFile:
        """Check the committee lines `text` of the file `path`."""
        entries: list[AuthorityEntry] = []
        addresses: set[tuple[str, int]] = set()
        names: set[bytes] = set()
        for where, raw in json_lines(text, str(path)):
            entry = AuthorityEntry.from_json(raw, where)
            if entry.name in names:
                raise FastPayFileError(f"{where}: name: this authority is listed twice")
            ports = {entry.address(shard) for shard in range(entry.shards)}
            if ports & addresses:
                raise FastPayFileError(f"{where}: port: overlaps another authority's shard ports")
            names.add(entry.name)
            addresses |= ports
            entries.append(entry)
        if not entries:
            raise FastPayFileError(f"{path}: no authorities (add lines with `server generate`)")
        if len(entries) > MAX_COMMITTEE_SIZE:
            # a certificate carries at most this many signatures, and with unequal weights a
            # quorum may need nearly every authority's: past it, some could not be encoded
            raise FastPayFileError(
                f"{path}: {len(entries)} authorities, at most {MAX_COMMITTEE_SIZE}"
            )
        networks = {entry.network_id for entry in entries}
        if len(networks) > 1:
            raise FastPayFileError(
                f"{path}: network_id: the lines name different networks {sorted(networks)}"
            )
        return cls(tuple(entries), path)

    def encode(self) -> str:
        """The file's text: one JSON line per authority."""
        return "".join(json.dumps(entry.to_json()) + "\n" for entry in self.authorities)

    @property
    def network(self) -> bytes:
        """The network id of the signature domains (`synod.crypto.in_network`; b"" for
        none): every line names the same one."""
        return self.authorities[0].network_id.encode() if self.authorities else b""

    def committee(self) -> Committee:
        """The voting weights of the authorities (what the cores need)."""
        return Committee({entry.name: entry.weight for entry in self.authorities})

    def find(self, name: bytes) -> AuthorityEntry | None:
        """The line of authority `name`, if listed."""
        return next((entry for entry in self.authorities if entry.name == name), None)


def network_id_problem(value: object) -> str | None:
    """Why `value` is not a network id (a string of 0..64 UTF-8 bytes, printable, no
    '@'; empty for none), or None."""
    if not isinstance(value, str):
        return f"expected a string, got {value!r}"
    encoded = value.encode("utf-8")
    if len(encoded) > MAX_NETWORK_ID_BYTES or "@" in value or not value.isprintable():
        return f"expected at most {MAX_NETWORK_ID_BYTES} printable bytes without '@'"
    return None


def shard_router(committee: CommitteeFile) -> Callable[[bytes, Any], tuple[str, int] | None]:
    """Route a `Call` to an authority to the shard that holds the request's account."""
    entries = {bytes(entry.name): entry for entry in committee.authorities}

    def route(authority: bytes, request: FastPayRequest) -> tuple[str, int] | None:
        entry = entries.get(bytes(authority))
        if entry is None:
            return None
        return entry.address(request_shard(request, entry.shards))

    return route


# ---------------------------------------------------------------- server<I>.json


@dataclass(frozen=True, slots=True)
class ServerFile:
    """``server1.json``: an authority's secret key and its committee line (mode 0600)."""

    keys: KeyPair
    authority: AuthorityEntry
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> ServerFile:
        """Read and check `path`: private to its owner (it holds a secret seed), and the
        key must be that of the line's authority."""
        try:
            mode = path.stat().st_mode
            raw = json.loads(read_bounded(path, "server"))
        except FileNotFoundError:
            raise FastPayFileError(
                f"{path}: no such server file (make one with `generate`)"
            ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FastPayFileError(f"{path}: not a server file: {error}") from None
        except RecursionError:
            raise FastPayFileError(f"{path}: not a server file: nested too deeply") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise FastPayFileError(
                f"{path}: permissions {stat.S_IMODE(mode):04o} let other users read its "
                "secret key; chmod 600"
            )
        if not isinstance(raw, dict) or set(raw) != {"authority", "secret_key"}:
            raise FastPayFileError(f"{path}: expected an object with 'authority' and 'secret_key'")
        authority = AuthorityEntry.from_json(raw["authority"], f"{path}: authority")
        seed = hex_bytes(raw["secret_key"], 32)
        if seed is None:
            raise FastPayFileError(f"{path}: secret_key: expected 64 hexadecimal digits")
        keys = KeyPair.from_seed(seed)
        if keys.node_id != authority.name:
            raise FastPayFileError(f"{path}: secret_key: not the key of authority.name")
        return cls(keys, authority, path)

    def encode(self) -> str:
        """The file's text (the secret seed in clear: write it with mode 0600)."""
        document = {"authority": self.authority.to_json(), "secret_key": self.keys.seed.hex()}
        return json.dumps(document, indent=2) + "\n"

    def entry_in(self, committee: CommitteeFile) -> AuthorityEntry:
        """This authority's line of `committee`, which must equal the server file's."""
        entry = committee.find(self.keys.node_id)
        if entry is None:
            raise FastPayFileError(f"{committee.path}: this authority ({self.path}) is not listed")
        if entry != self.authority:
            raise FastPayFileError(
                f"{committee.path}: this authority's line differs from {self.path}"
            )
        return entry


# ---------------------------------------------------------------- initial_accounts.txt


def load_initial_accounts(path: Path) -> dict[bytes, int]:
    """``initial_accounts.txt``: one ``ADDRESS:BALANCE`` line per funded account."""
    try:
        text = read_bounded(path, "initial accounts")
    except FileNotFoundError:
        raise FastPayFileError(f"{path}: no such initial accounts file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise FastPayFileError(f"{path}: cannot read: {error}") from None
    return parse_initial_accounts(text, str(path))


def parse_initial_accounts(text: str, source: str) -> dict[bytes, int]:
    """The genesis balances of the ``ADDRESS:BALANCE`` lines `text` (from `source`)."""
    genesis: dict[bytes, int] = {}
    supply = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        address, separator, amount = line.partition(":")
        if not separator:
            raise FastPayFileError(f"{where}: expected ADDRESS:BALANCE, got {line[:80]!r}")
        account = parse_account(address, where)
        try:
            balance = int(amount.strip())
        except ValueError:
            raise FastPayFileError(
                f"{where}: balance: expected an integer, got {amount!r}"
            ) from None
        if not 0 <= balance <= MAX_SUPPLY:
            raise FastPayFileError(f"{where}: balance: expected 0..{MAX_SUPPLY}")
        if account in genesis:
            raise FastPayFileError(f"{where}: this account is listed twice")
        supply += balance
        if supply > MAX_SUPPLY:
            # The total, not each line: the supply bound is what keeps every true balance
            # within one transfer's amount (see synod.fastpay.messages).
            raise FastPayFileError(
                f"{where}: balance: the total supply would exceed {MAX_SUPPLY} (2^63-1)"
            )
        genesis[bytes(account)] = balance
    return genesis


def initial_account_line(account: bytes, balance: int) -> str:
    """One ``ADDRESS:BALANCE`` line of the genesis file (without its newline)."""
    return f"{node_id_text(account)}:{balance}"


def encode_initial_accounts(genesis: Mapping[bytes, int]) -> str:
    """The genesis file's text: one line per account, in the mapping's order."""
    return "".join(initial_account_line(account, b) + "\n" for account, b in genesis.items())
