"""A BFT-CRDT log node's configuration file, ``NAME/node.toml``: model, loader, writer.

The file has a ``[node]`` table (name, id, key file, document, announce interval, and
optionally the address direct peers connect to and a relayer URL) and one ``[[peers]]``
table per peer reached directly.  Loading checks every value and raises
`synod.config.ConfigError` naming the file, the key and what was expected.  The node
keeps its key, its SQLite store and its lock file in the same directory.

The crypto library is imported only when a node id is parsed or written, so that the
command line can read the defaults here without it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synod.config import (
    ConfigError,
    read_toml,
    refuse_unknown_keys,
    relative_file,
    require_node_id,
    require_string,
    toml_string,
)

if TYPE_CHECKING:
    from synod.crypto import NodeId

CONFIG_NAME = "node.toml"
KEY_NAME = "node.key"
DATABASE_NAME = "node.sqlite"
DEFAULT_DOCUMENT = "log"
DEFAULT_ANNOUNCE_MS = 2_000
MIN_ANNOUNCE_MS = 10
MAX_ANNOUNCE_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """A peer reached directly: its id and its transport address."""

    name: str
    node_id: NodeId
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """What ``NAME/node.toml`` says."""

    path: Path
    name: str
    node_id: NodeId
    key_file: Path
    document: str
    announce_interval_ms: int
    listen: tuple[str, int] | None
    relay: str | None
    peers: tuple[PeerEntry, ...]
    network: bytes = b""
    """``network_id`` (UTF-8): the network in every signature domain of the node."""
    members: frozenset[NodeId] | None = None
    """``members``: the group's author keys (None: anyone may write)."""

    @property
    def database_path(self) -> Path:
        """The node's SQLite store, next to its configuration."""
        return self.path.parent / DATABASE_NAME


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ValueError with the reason otherwise."""
    host, separator, port_text = text.rpartition(":")
    if not separator or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT with a port 1..65535, got {text!r}")
    return host, int(port_text)


def parse_peer(text: str) -> PeerEntry:
    """``[NAME=]ID@HOST:PORT`` -> `PeerEntry`; ValueError with the reason otherwise."""
    from synod.crypto import InvalidNodeId, parse_node_id

    name, _, rest = text.rpartition("=")
    identity, separator, address = rest.partition("@")
    if not separator:
        raise ValueError(f"expected [NAME=]ID@HOST:PORT, got {text!r}")
    try:
        node_id = parse_node_id(identity)
    except InvalidNodeId as error:
        raise ValueError(f"expected a node id before '@' ({error})") from None
    host, port = parse_address(address)
    return PeerEntry(name or identity[:8], node_id, host, port)


def is_relay_url(text: str) -> bool:
    """Whether `text` names a relayer: a ws:// or wss:// URL with a host, and a port
    1..65535 when it has one (a node given another retried it forever, logging at info
    level only)."""
    from urllib.parse import urlsplit

    if not text.startswith(("ws://", "wss://")) or any(character.isspace() for character in text):
        return False
    try:
        parts = urlsplit(text)
        port = parts.port  # raises ValueError past 65535, or for a malformed IPv6 host
    except ValueError:
        return False
    return bool(parts.hostname) and (port is None or 1 <= port <= 65535)


_NODE_KEYS = (
    "name",
    "id",
    "key_file",
    "document",
    "announce_interval_ms",
    "listen",
    "relay",
    "network_id",
    "members",
)


def load_config(directory: Path) -> NodeConfig:
    """Read and check ``DIR/node.toml``.

    Raises `ConfigFileError` when it is missing or not TOML, `ConfigError` naming the
    key when a value is wrong.
    """
    path = directory / CONFIG_NAME
    document = read_toml(path)
    refuse_unknown_keys(path, "", document, ("node", "peers"))
    node = document.get("node")
    if not isinstance(node, dict):
        raise ConfigError(path, "node", "expected a table [node]")
    refuse_unknown_keys(path, "node", node, _NODE_KEYS)
    return NodeConfig(
        path=path,
        name=require_string(path, node, "node", "name"),
        node_id=require_node_id(path, "node.id", require_string(path, node, "node", "id")),
        key_file=relative_file(path, require_string(path, node, "node", "key_file")),
        document=require_string(path, node, "node", "document", DEFAULT_DOCUMENT),
        announce_interval_ms=_announce(path, node),
        listen=_optional_address(path, node, "node.listen"),
        relay=_relay(path, node),
        peers=_peers(path, document.get("peers", [])),
        network=_network(path, node),
        members=_members(path, node),
    )


MAX_NETWORK_ID_BYTES = 64
"""As `synod.crypto.MAX_NETWORK_ID_BYTES` (not imported: the command line reads this
module without the crypto library)."""


def _network(path: Path, node: dict[str, Any]) -> bytes:
    value = node.get("network_id", "")
    encoded = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else b""
    if not isinstance(value, str) or len(encoded) > MAX_NETWORK_ID_BYTES or b"@" in encoded:
        raise ConfigError(
            path,
            "node.network_id",
            f"expected a string of at most {MAX_NETWORK_ID_BYTES} bytes without '@', "
            f"got {value!r}",
        )
    return encoded


def _members(path: Path, node: dict[str, Any]) -> frozenset[NodeId] | None:
    value = node.get("members")
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise ConfigError(
            path, "node.members", f"expected a non-empty array of node ids, got {value!r}"
        )
    members = []
    for index, item in enumerate(value):
        key = f"node.members[{index}]"
        if not isinstance(item, str):
            raise ConfigError(path, key, f"expected a node id string, got {item!r}")
        members.append(require_node_id(path, key, item))
    return frozenset(members)


def _announce(path: Path, node: dict[str, Any]) -> int:
    value = node.get("announce_interval_ms", DEFAULT_ANNOUNCE_MS)
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not MIN_ANNOUNCE_MS <= value <= MAX_ANNOUNCE_MS
    ):
        raise ConfigError(
            path,
            "node.announce_interval_ms",
            f"expected an integer {MIN_ANNOUNCE_MS}..{MAX_ANNOUNCE_MS}, got {value!r}",
        )
    return value


def _optional_address(path: Path, node: dict[str, Any], key: str) -> tuple[str, int] | None:
    value = node.get(key.rsplit(".", maxsplit=1)[-1])
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(path, key, f"expected a string HOST:PORT, got {value!r}")
    try:
        return parse_address(value)
    except ValueError as error:
        raise ConfigError(path, key, str(error)) from None


def _relay(path: Path, node: dict[str, Any]) -> str | None:
    value = node.get("relay")
    if value is None:
        return None
    if not isinstance(value, str) or not is_relay_url(value):
        raise ConfigError(
            path, "node.relay", f"expected a ws:// or wss:// URL with a host, got {value!r}"
        )
    return value


def _peers(path: Path, raw: object) -> tuple[PeerEntry, ...]:
    if not isinstance(raw, list):
        raise ConfigError(path, "peers", "expected an array of tables [[peers]]")
    peers = []
    for index, entry in enumerate(raw):
        prefix = f"peers[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(path, prefix, "expected a table")
        node_id = require_node_id(path, f"{prefix}.id", require_string(path, entry, prefix, "id"))
        address = require_string(path, entry, prefix, "address")
        try:
            host, port = parse_address(address)
        except ValueError as error:
            raise ConfigError(path, f"{prefix}.address", str(error)) from None
        name = require_string(path, entry, prefix, "name", address)
        peers.append(PeerEntry(name, node_id, host, port))
    return tuple(peers)


def render_config(
    name: str,
    node_id: str,
    *,
    document: str,
    announce_interval_ms: int,
    listen: str | None,
    relay: str | None,
    peers: list[PeerEntry],
    network_id: str = "",
    members: list[str] | None = None,
) -> str:
    """The TOML text of a node's configuration; `ValueError` when a string is not
    valid Unicode (see `synod.config.toml_string`)."""
    from synod.crypto import node_id_text

    lines = [
        "# A synod BFT-CRDT node (written by `synod crdt init`).",
        "[node]",
        f"name = {toml_string(name)}",
        f"id = {toml_string(node_id)}",
        f"key_file = {toml_string(KEY_NAME)}",
        f"document = {toml_string(document)}",
        f"announce_interval_ms = {announce_interval_ms}",
    ]
    lines.append(f"listen = {toml_string(listen)}" if listen else '# listen = "127.0.0.1:7300"')
    lines.append(f"relay = {toml_string(relay)}" if relay else '# relay = "ws://127.0.0.1:7400"')
    lines.append(f"network_id = {toml_string(network_id)}")
    if members:
        lines.append(f"members = {json.dumps(list(members))}")
    else:
        lines.append('# members = ["N...", "N..."]     # only these authors count')
    for peer in peers:
        lines += [
            "",
            "[[peers]]",
            f"name = {toml_string(peer.name)}",
            f"id = {toml_string(node_id_text(peer.node_id))}",
            f"address = {toml_string(f'{peer.host}:{peer.port}')}",
        ]
    return "\n".join(lines) + "\n"
