"""The configuration of a reliable-broadcast network: ``network.toml``, loader and writer.

The file names every member (name, id, address, key file) and the retransmission
interval; `load_network` reads and checks it, every problem a `synod.config` error
naming the file, the key and what was expected; `render_config` writes the text of a
new one (the key files and the file itself are written by
`synod.runtime.rbc_node.create_network`).  Running a node is `synod.runtime.rbc_node`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from synod.config import (
    ConfigError,
    NodeEntry,
    find_named,
    network_id,
    node_entry,
    read_toml,
    refuse_unknown_keys,
    render_node_tables,
    toml_string,
)
from synod.rbc.core import MAX_MEMBERS

CONFIG_NAME: Final = "network.toml"
DEFAULT_BASE_PORT: Final = 7100
"""Member i listens on DEFAULT_BASE_PORT + i."""
DEFAULT_RETRANSMIT_MS: Final = 300


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """A parsed and checked reliable-broadcast ``network.toml``."""

    path: Path
    retransmit_ms: int
    nodes: tuple[NodeEntry, ...]
    network_id: bytes = b""
    """Peers of another network are refused at the handshake (`[network] network_id`)."""

    def find(self, selector: str) -> NodeEntry:
        """The node named `selector` (or with that index); `UnknownEntry` otherwise."""
        return find_named(self.path, self.nodes, selector)

    def store_path(self, node: NodeEntry) -> Path:
        """The node's SQLite file: its broadcast state and deliveries."""
        return self.path.parent / f"{node.name}.sqlite"

    def lock_path(self, node: NodeEntry) -> Path:
        """The file a running node holds locked: one process per node."""
        return self.path.parent / f"{node.name}.lock"


MAX_RETRANSMIT_MS = 3_600_000
"""An hour: a longer pause between retransmissions is a typo, and a node whose peer
lost a message would wait that long before sending it again."""


def load_network(directory: Path) -> NetworkConfig:
    """Read and check ``DIRECTORY/network.toml``.

    Raises `ConfigFileError` when the file is missing (``missing`` set) or is not TOML,
    and `ConfigError` (file, key, what was expected) when its content is wrong.
    """
    path = directory / CONFIG_NAME
    document = read_toml(path)
    refuse_unknown_keys(path, "", document, ("network", "nodes"))
    network = document.get("network", {})
    if not isinstance(network, dict):
        raise ConfigError(path, "network", "expected a table")
    refuse_unknown_keys(path, "network", network, ("retransmit_ms", "network_id"))
    retransmit_ms = network.get("retransmit_ms", DEFAULT_RETRANSMIT_MS)
    if (
        not isinstance(retransmit_ms, int)
        or isinstance(retransmit_ms, bool)
        or not 1 <= retransmit_ms <= MAX_RETRANSMIT_MS
    ):
        raise ConfigError(
            path,
            "network.retransmit_ms",
            f"expected a positive integer, at most {MAX_RETRANSMIT_MS}",
        )
    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError(path, "nodes", "expected a non-empty array of tables [[nodes]]")
    if len(raw_nodes) > MAX_MEMBERS:
        # a member refuses to run in a larger group (a "cannot restore" that blamed its store)
        raise ConfigError(path, "nodes", f"at most {MAX_MEMBERS} nodes, got {len(raw_nodes)}")
    nodes = tuple(node_entry(path, f"nodes[{index}]", raw) for index, raw in enumerate(raw_nodes))
    _check_distinct(path, nodes)
    return NetworkConfig(path, retransmit_ms, nodes, network_id(path, network, "network"))


def _check_distinct(path: Path, nodes: tuple[NodeEntry, ...]) -> None:
    for attribute in ("name", "node_id"):
        seen: set[object] = set()
        for index, node in enumerate(nodes):
            value = getattr(node, attribute)
            if value in seen:
                key = "name" if attribute == "name" else "id"
                raise ConfigError(
                    path, f"nodes[{index}].{key}", "expected a value unique among nodes"
                )
            seen.add(value)
    addresses: set[tuple[str, int]] = set()
    for index, node in enumerate(nodes):
        if (node.host, node.port) in addresses:
            raise ConfigError(
                path, f"nodes[{index}].port", "expected an address unique among nodes"
            )
        addresses.add((node.host, node.port))


def render_config(
    nodes: Sequence[tuple[str, str, str, int, str]], retransmit_ms: int, network: str = ""
) -> str:
    """The text of ``network.toml`` for (name, id text, host, port, key file) entries."""
    lines = [
        "# A synod reliable-broadcast network (written by `synod rbc init`).",
        "[network]",
        f"retransmit_ms = {retransmit_ms}",
        f"network_id = {toml_string(network)}",
    ]
    lines += render_node_tables("nodes", nodes)
    return "\n".join(lines) + "\n"
