"""Configuration files that people write: TOML, read with `tomllib` and checked key by key.

Every problem is a typed error that names the file: `ConfigFileError` when the file is
missing or is not TOML, `ConfigError` (the file, the key, what was expected) when a value
is wrong, `UnknownEntry` when a name asked for is not in the file.  The library raises
them; the command line turns them into messages and exit statuses.

Only light modules are imported at load time (the command line imports this module
before it knows which command runs); the crypto library is imported when a node id is
parsed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from synod.crypto import NodeId


class ConfigFileError(Exception):
    """The configuration file `path` is missing (`missing` is true) or is not TOML."""

    def __init__(self, path: Path, reason: str, *, missing: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.missing = missing


class ConfigError(ValueError):
    """A wrong value in a configuration file: names the file, the key and what was expected."""

    def __init__(self, path: Path, key: str, expected: str) -> None:
        super().__init__(f"{path}: {key}: {expected}")
        self.path = path
        self.key = key
        self.expected = expected


class UnknownEntry(LookupError):
    """No entry of a configuration file has the name (or index) asked for."""

    def __init__(self, path: Path, noun: str, selector: str, names: Sequence[str]) -> None:
        super().__init__(f"{path}: no {noun} {selector!r} ({noun}s: {', '.join(names)})")
        self.path = path
        self.selector = selector


def read_toml(path: Path) -> dict[str, Any]:
    """The document in `path`; `ConfigFileError` when it is missing or not TOML."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigFileError(path, "no such file", missing=True) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigFileError(path, f"not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigFileError(path, "not valid TOML: nested too deeply") from None
    except UnicodeDecodeError as error:  # tomllib decodes the bytes before it parses
        raise ConfigFileError(path, f"not valid TOML: not UTF-8 (byte {error.start})") from None
    except OSError as error:
        raise ConfigFileError(path, f"cannot read: {error.strerror or error}") from None


def require_string(
    path: Path, table: dict[str, Any], prefix: str, key: str, default: str | None = None
) -> str:
    """``table[key]`` (or `default`), which must be a non-empty string."""
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"{prefix}.{key}", f"expected a non-empty string, got {value!r}")
    return value


def require_node_id(path: Path, key: str, text: str) -> NodeId:
    """The node id written `text` at `key`."""
    from synod.crypto import InvalidNodeId, parse_node_id

    try:
        return parse_node_id(text)
    except InvalidNodeId as error:
        raise ConfigError(path, key, f"expected a node id ({error})") from None


def relative_file(path: Path, text: str) -> Path:
    """The file named `text` in the configuration `path`: relative to its directory."""
    file = Path(text)
    return file if file.is_absolute() else path.parent / file


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """A node of a network file: its name, id, listening address and key file."""

    name: str
    node_id: NodeId
    host: str
    port: int
    key_file: Path


def node_entry(path: Path, prefix: str, raw: object) -> NodeEntry:
    """Check the table `prefix` (name, id, host, port, key_file) of the file `path`."""
    if not isinstance(raw, dict):
        raise ConfigError(path, prefix, "expected a table")
    name = require_string(path, raw, prefix, "name")
    node_id = require_node_id(path, f"{prefix}.id", require_string(path, raw, prefix, "id"))
    host = require_string(path, raw, prefix, "host")
    port = raw.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(path, f"{prefix}.port", f"expected an integer 1..65535, got {port!r}")
    key_file = relative_file(path, require_string(path, raw, prefix, "key_file"))
    return NodeEntry(name, node_id, host, port, key_file)


def toml_string(text: str) -> str:
    """`text` as a TOML basic string that `tomllib` reads back as `text`.

    ``json.dumps`` is not one: it writes a character outside the Basic Multilingual
    Plane as a surrogate pair (``"\\ud83d\\ude00"``), which TOML refuses.  Raises
    `ValueError` for a lone surrogate (undecodable bytes of a command-line argument),
    which no TOML file can hold.
    """
    parts = ['"']
    for character in text:
        code = ord(character)
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"{text!r} is not valid Unicode text")
        if character in '"\\':
            parts.append("\\" + character)
        elif code < 0x20 or code == 0x7F:
            parts.append(f"\\u{code:04x}")
        else:
            parts.append(character)
    parts.append('"')
    return "".join(parts)


def render_node_tables(table: str, entries: Iterable[tuple[str, str, str, int, str]]) -> list[str]:
    """The ``[[table]]`` TOML lines of (name, id text, host, port, key file) entries
    (`toml_string`: JSON's surrogate pairs for a character outside the BMP are not TOML)."""
    lines: list[str] = []
    for name, node_id, host, port, key_file in entries:
        lines += [
            "",
            f"[[{table}]]",
            f"name = {toml_string(name)}",
            f"id = {toml_string(node_id)}",
            f"host = {toml_string(host)}",
            f"port = {port}",
            f"key_file = {toml_string(key_file)}",
        ]
    return lines


class _Named(Protocol):
    @property
    def name(self) -> str: ...


Named = TypeVar("Named", bound=_Named)


def find_named(path: Path, entries: Sequence[Named], selector: str, noun: str = "node") -> Named:
    """The entry called `selector` (or with that index); `UnknownEntry` otherwise."""
    for index, entry in enumerate(entries):
        if selector in (entry.name, str(index)):
            return entry
    raise UnknownEntry(path, noun, selector, [entry.name for entry in entries])


def refuse_unknown_keys(
    path: Path, prefix: str, table: dict[str, Any], allowed: Iterable[str]
) -> None:
    """A key of `table` that is not `allowed` is a mistake (a misspelling, a setting of
    another version): refused, naming it, rather than silently ignored."""
    known = set(allowed)
    for key in table:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(path, where, f"unknown key (known: {', '.join(sorted(known))})")


MAX_NETWORK_ID_BYTES = 64


def network_id(path: Path, table: dict[str, Any], prefix: str) -> bytes:
    """``table["network_id"]``: the network's identifier, in every signature domain and at
    every handshake (empty: none).  At most 64 bytes of UTF-8, without ``@``."""
    value = table.get("network_id", "")
    key = f"{prefix}.network_id" if prefix else "network_id"
    if not isinstance(value, str):
        raise ConfigError(path, key, f"expected a string, got {value!r}")
    encoded = value.encode("utf-8")
    if len(encoded) > MAX_NETWORK_ID_BYTES or "@" in value:
        raise ConfigError(path, key, "expected at most 64 bytes of UTF-8 without '@'")
    return encoded
