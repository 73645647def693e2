"""The configuration of an SCP log network: ``network.toml``, its model, loader and writer.

A network file names every node (its id, addresses, key file and quorum set, with the
members of quorum sets named by node name) and the timings and bounds that all nodes
share.  `load_network` reads and checks one: every problem is a `synod.config` error
naming the file, the key and what was expected.  `plan_nodes`, `planned_quorum_set` and
`render_config` compose a new network (what `synod scp init` writes; the files
themselves are written by `synod.runtime.scp_node.create_network`).  `build_log_core`
builds a node's `LogCore` from the file and the node's stored records.

Reading a file is all the I/O here; running a node is `synod.runtime.scp_node`.
See docs/scp-network.md.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from synod.config import (
    ConfigError,
    ConfigFileError,
    find_named,
    network_id,
    relative_file,
    toml_string,
)
from synod.scp.core import ScpConfig
from synod.scp.log import LogCore, LogRules, LogTimeouts

if TYPE_CHECKING:
    from synod.crypto import KeyPair, NodeId
    from synod.quorum.qset import QuorumSet

CONFIG_NAME: Final = "network.toml"
DEFAULT_BASE_PORT: Final = 7200
"""Node i listens on DEFAULT_BASE_PORT + 2i (peers) and DEFAULT_BASE_PORT + 2i + 1 (submit)."""


# ---------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One node of the network file."""

    name: str
    node_id: NodeId
    host: str
    port: int
    submit_port: int
    key_file: Path
    quorum_set: QuorumSet
    organisation: str | None = None


@dataclass(frozen=True, slots=True)
class NetworkSettings:
    """The `[network]` table: timings and bounds shared by every node."""

    nomination_timeout_ms: int = 200
    ballot_timeout_ms: int = 500
    rebroadcast_ms: int = 1000
    max_slots_ahead: int = 8
    retained_slots: int = 64
    max_pending_entries: int = 10_000
    retained_decisions: int = 1024
    checkpoint_interval: int = 64
    """Slots between the checkpoints a node attests (0: none): a node away for longer
    than `retained_decisions` slots rejoins from one (keep it <= retained_decisions)."""
    network_id: bytes = b""
    """``network_id`` (a string, UTF-8): the network in every envelope signature and at
    every peer handshake; empty for networks made before network ids existed."""


STANDALONE_PASSPHRASE: Final = "Standalone Network ; February 2017"  # noqa: S105 - public
"""stellar-core's passphrase for a network of its own (what `synod scp init --stellar`
writes unless told another)."""


@dataclass(frozen=True, slots=True)
class StellarMode:
    """The ``[stellar]`` table: the nodes speak Stellar's overlay and decide
    ``StellarValue``s (docs/scp-network.md, "Stellar mode")."""

    passphrase: str = STANDALONE_PASSPHRASE
    """The network passphrase: its SHA-256 is the network id in every handshake and
    envelope signature (public network, testnet or a private one)."""
    close_interval_ms: int = 1000
    """A node proposes the next slot this long after the previous one closed
    (stellar-core aims at 5 s on the public network).  At least 1,000: close times are
    whole seconds and each must pass the previous one, so a faster pace would run the
    chain's time ahead of the clocks until nominations fail the one-minute slip check."""
    overlay_version: int = 38
    overlay_min_version: int = 35
    ledger_version: int = 25


STELLAR_BOUNDS: Final = {  # key -> (lowest, highest) allowed value
    "close_interval_ms": (1000, 3_600_000),
    "overlay_version": (0, 2**32 - 1),
    "overlay_min_version": (0, 2**32 - 1),
    "ledger_version": (0, 2**32 - 1),
}


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """A parsed and checked ``network.toml``."""

    path: Path
    settings: NetworkSettings
    nodes: tuple[NodeEntry, ...]
    stellar: StellarMode | None = None
    """Set when the file has a ``[stellar]`` table: the nodes run in Stellar mode."""

    def find(self, selector: str) -> NodeEntry:
        """The node named `selector` (or with that index); `UnknownEntry` otherwise."""
        return find_named(self.path, self.nodes, selector)

    def store_path(self, node: NodeEntry) -> Path:
        """The node's SQLite file: its SCP statements and its log."""
        return self.path.parent / f"{node.name}.sqlite"

    def lock_path(self, node: NodeEntry) -> Path:
        """The file a running node holds locked: one process per node."""
        return self.path.parent / f"{node.name}.lock"


SETTING_BOUNDS: Final = {  # key -> (lowest, highest) allowed value
    "nomination_timeout_ms": (1, 600_000),
    "ballot_timeout_ms": (1, 600_000),
    "rebroadcast_ms": (10, 600_000),
    "max_slots_ahead": (1, 1000),
    "retained_slots": (1, 100_000),
    "max_pending_entries": (1, 10_000_000),
    "retained_decisions": (1, 1_000_000),
    "checkpoint_interval": (0, 1_000_000),
}


def load_network(directory: Path) -> NetworkConfig:
    """Read and check ``DIRECTORY/network.toml``.

    Raises `ConfigFileError` when the file is missing (``missing`` set) or unreadable,
    and `ConfigError` (file, key, what was expected) when its content is wrong.
    """
    path = directory / CONFIG_NAME
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigFileError(path, "no such file", missing=True) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, "(document)", f"valid TOML ({error})") from None
    except RecursionError:
        raise ConfigError(path, "(document)", "valid TOML (it is nested too deeply)") from None
    except OSError as error:
        raise ConfigFileError(path, f"cannot read: {error.strerror}") from None
    settings = _settings(path, document.get("network", {}))
    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError(path, "nodes", "a non-empty array of tables [[nodes]]")
    names = _node_names(path, raw_nodes)
    nodes = tuple(_node_entry(path, index, raw, names) for index, raw in enumerate(raw_nodes))
    _check_distinct(path, nodes)
    stellar = _stellar_mode(path, document["stellar"]) if "stellar" in document else None
    return NetworkConfig(path, settings, nodes, stellar)


# ---------------------------------------------------------------- checking the file


def _settings(path: Path, table: object) -> NetworkSettings:
    if not isinstance(table, dict):
        raise ConfigError(path, "network", "a table")
    known = [*SETTING_BOUNDS, "network_id"]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(path, f"network.{unknown[0]}", f"one of {', '.join(known)}")
    values: dict[str, int] = {}
    for key, (low, high) in SETTING_BOUNDS.items():
        if key in table:
            values[key] = _integer(path, f"network.{key}", table[key], low, high)
    return NetworkSettings(**values, network_id=network_id(path, table, "network"))


def _stellar_mode(path: Path, table: object) -> StellarMode:
    if not isinstance(table, dict):
        raise ConfigError(path, "stellar", "a table")
    known = [*STELLAR_BOUNDS, "passphrase"]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(path, f"stellar.{unknown[0]}", f"one of {', '.join(known)}")
    values: dict[str, int] = {}
    for key, (low, high) in STELLAR_BOUNDS.items():
        if key in table:
            values[key] = _integer(path, f"stellar.{key}", table[key], low, high)
    passphrase = table.get("passphrase", STANDALONE_PASSPHRASE)
    if not isinstance(passphrase, str) or not 0 < len(passphrase.encode()) <= 256:
        raise ConfigError(path, "stellar.passphrase", "a string of 1 to 256 bytes")
    mode = StellarMode(passphrase=passphrase, **values)
    if mode.overlay_min_version > mode.overlay_version:
        raise ConfigError(path, "stellar.overlay_min_version", "at most overlay_version")
    return mode


def _integer(path: Path, key: str, value: object, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(path, key, f"an integer {low}..{high}, got {value!r}")
    return value


def _string(path: Path, table: dict[str, Any], prefix: str, key: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"{prefix}.{key}", f"a non-empty string, got {value!r}")
    return value


def _node_names(path: Path, raw_nodes: list[Any]) -> dict[str, NodeId]:
    """name -> node id, for resolving the names in quorum sets."""
    from synod.crypto import InvalidNodeId, parse_node_id

    names: dict[str, NodeId] = {}
    for index, raw in enumerate(raw_nodes):
        prefix = f"nodes[{index}]"
        if not isinstance(raw, dict):
            raise ConfigError(path, prefix, "a table")
        name = _string(path, raw, prefix, "name")
        if name in names:
            raise ConfigError(path, f"{prefix}.name", "a name unique among nodes")
        try:
            names[name] = parse_node_id(_string(path, raw, prefix, "id"))
        except InvalidNodeId as error:
            raise ConfigError(path, f"{prefix}.id", f"a node id ({error})") from None
    return names


def _node_entry(path: Path, index: int, raw: dict[str, Any], names: dict[str, NodeId]) -> NodeEntry:
    prefix = f"nodes[{index}]"
    name = _string(path, raw, prefix, "name")
    host = _string(path, raw, prefix, "host")
    port = _integer(path, f"{prefix}.port", raw.get("port"), 1, 65535)
    submit_port = _integer(path, f"{prefix}.submit_port", raw.get("submit_port"), 1, 65535)
    key_file = relative_file(path, _string(path, raw, prefix, "key_file"))
    organisation = raw.get("organisation")
    if organisation is not None and (not isinstance(organisation, str) or not organisation):
        raise ConfigError(path, f"{prefix}.organisation", "a non-empty string when present")
    quorum_set = _quorum_set(path, f"{prefix}.quorum_set", raw.get("quorum_set"), names, 0)
    _check_quorum_set(path, f"{prefix}.quorum_set", quorum_set)
    return NodeEntry(name, names[name], host, port, submit_port, key_file, quorum_set, organisation)


def _quorum_set(
    path: Path, key: str, raw: object, names: Mapping[str, bytes], depth: int
) -> QuorumSet:
    from synod.quorum.qset import QuorumSet

    if not isinstance(raw, dict):
        raise ConfigError(path, key, "a table {threshold, validators, inner_sets}")
    if depth > 4:
        raise ConfigError(path, key, "inner sets nested at most 4 deep")
    unknown = sorted(set(raw) - {"threshold", "validators", "inner_sets"})
    if unknown:
        raise ConfigError(path, f"{key}.{unknown[0]}", "one of threshold, validators, inner_sets")
    validators = raw.get("validators", [])
    if not isinstance(validators, list):
        raise ConfigError(path, f"{key}.validators", "an array of node names")
    ids: list[bytes] = []
    for position, name in enumerate(validators):
        if not isinstance(name, str) or name not in names:
            raise ConfigError(
                path, f"{key}.validators[{position}]", f"the name of a node, got {name!r}"
            )
        ids.append(names[name])
    inner = raw.get("inner_sets", [])
    if not isinstance(inner, list):
        raise ConfigError(path, f"{key}.inner_sets", "an array of quorum-set tables")
    inner_sets = tuple(
        _quorum_set(path, f"{key}.inner_sets[{position}]", table, names, depth + 1)
        for position, table in enumerate(inner)
    )
    entries = len(ids) + len(inner_sets)
    threshold = _integer(path, f"{key}.threshold", raw.get("threshold"), 1, max(entries, 1))
    return QuorumSet(threshold=threshold, validators=tuple(ids), inner_sets=inner_sets)


def _check_quorum_set(path: Path, key: str, quorum_set: QuorumSet) -> None:
    from synod.quorum.qset import InsaneQuorumSet, check_sanity

    try:
        check_sanity(quorum_set)
    except InsaneQuorumSet as error:
        raise ConfigError(path, key, f"a sane quorum set ({error})") from None


def _check_distinct(path: Path, nodes: tuple[NodeEntry, ...]) -> None:
    names: set[str] = set()
    ids: set[bytes] = set()
    addresses: set[tuple[str, int]] = set()
    for index, node in enumerate(nodes):
        if node.name in names:
            raise ConfigError(path, f"nodes[{index}].name", "a name unique among nodes")
        if node.node_id in ids:
            raise ConfigError(path, f"nodes[{index}].id", "an id unique among nodes")
        for key, port in (("port", node.port), ("submit_port", node.submit_port)):
            if (node.host, port) in addresses:
                raise ConfigError(
                    path, f"nodes[{index}].{key}", "an address unique among all nodes' ports"
                )
            addresses.add((node.host, port))
        names.add(node.name)
        ids.add(node.node_id)


# ---------------------------------------------------------------- a new network


@dataclass
class PlannedNode:
    """A node of a network being written: its addresses and id text are filled in as
    its key is made."""

    name: str
    organisation: str | None
    port: int = 0
    submit_port: int = 0
    id_text: str = ""


def plan_nodes(
    count: int, organisations: int | None = None, per_organisation: int = 3
) -> list[PlannedNode]:
    """`count` nodes ``node-0``, ``node-1``...; or, with `organisations`, that many
    organisations ``org-K`` of `per_organisation` nodes each (`count` is then unused)."""
    if organisations is None:
        return [PlannedNode(f"node-{index}", None) for index in range(count)]
    return [
        PlannedNode(f"node-{org * per_organisation + member}", f"org-{org}")
        for org in range(organisations)
        for member in range(per_organisation)
    ]


def default_threshold(count: int) -> int:
    """n - (n-1)//3: the largest threshold that still tolerates (n-1)//3 faulty nodes."""
    return count - (count - 1) // 3


def planned_quorum_set(
    nodes: Sequence[PlannedNode], threshold: int | None = None
) -> dict[str, Any]:
    """The quorum set every node of a new network gets, as a ``network.toml`` table.

    Nodes without organisations trust any `threshold` of all (by default
    `default_threshold`); nodes in organisations get `tiered_quorum_set`, and giving a
    threshold for them is a `ValueError`.
    """
    if any(node.organisation is not None for node in nodes):
        if threshold is not None:
            raise ValueError("a threshold applies only to a network without organisations")
        groups: dict[str | None, list[str]] = {}
        for node in nodes:
            groups.setdefault(node.organisation, []).append(node.name)
        return tiered_quorum_set(list(groups.values()))
    chosen = threshold if threshold is not None else default_threshold(len(nodes))
    if not 1 <= chosen <= len(nodes):
        raise ValueError(f"threshold {chosen}: expected 1..{len(nodes)} (the nodes)")
    return symmetric_quorum_set([node.name for node in nodes], chosen)


def symmetric_quorum_set(names: Sequence[str], threshold: int) -> dict[str, Any]:
    """Every node trusts `threshold` of all nodes."""
    return {"threshold": threshold, "validators": list(names)}


def tiered_quorum_set(organisations: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Trust a 2f+1 share of the organisations, each counted when a majority of its
    nodes agree (stellar-core's habit: 67% of organisations, 51% inside one)."""
    count = len(organisations)
    return {
        "threshold": count - (count - 1) // 3,
        "validators": [],
        "inner_sets": [
            {"threshold": len(members) // 2 + 1, "validators": list(members)}
            for members in organisations
        ],
    }


def render_config(
    settings: NetworkSettings,
    nodes: Sequence[PlannedNode],
    host: str,
    quorum_set: dict[str, Any],
    stellar: StellarMode | None = None,
) -> str:
    """The text of ``network.toml`` (every node gets `quorum_set`; `stellar` adds the
    ``[stellar]`` table of Stellar mode)."""
    lines = [
        "# A synod SCP network (written by `synod scp init`); see docs/scp-network.md.",
        "[network]",
        "# round n of nomination lasts (1 + n) * nomination_timeout_ms;",
        "# ballot counter c waits (1 + c) * ballot_timeout_ms",
    ]
    lines += [f"{key} = {getattr(settings, key)}" for key in SETTING_BOUNDS]
    if settings.network_id:
        lines.append(f"network_id = {toml_string(settings.network_id.decode())}")
    if stellar is not None:
        lines += [
            "",
            "# Stellar mode: the nodes speak Stellar's overlay and decide StellarValues",
            "[stellar]",
            f"passphrase = {toml_string(stellar.passphrase)}",
            f"close_interval_ms = {stellar.close_interval_ms}",
        ]
    for node in nodes:
        lines += [
            "",
            "[[nodes]]",
            f"name = {toml_string(node.name)}",
            f"id = {toml_string(node.id_text)}",
        ]
        if node.organisation is not None:
            lines.append(f"organisation = {toml_string(node.organisation)}")
        lines += [
            f"host = {toml_string(host)}",
            f"port = {node.port}",
            f"submit_port = {node.submit_port}",
            f"key_file = {toml_string(node.name + '.key')}",
            f"quorum_set = {_inline_table(quorum_set)}",
        ]
    return "\n".join(lines) + "\n"


def _inline_table(table: dict[str, Any]) -> str:
    parts = []
    for key, value in table.items():
        if key == "inner_sets":
            rendered = "[" + ", ".join(_inline_table(inner) for inner in value) + "]"
        else:
            rendered = json.dumps(value)
        parts.append(f"{key} = {rendered}")
    return "{ " + ", ".join(parts) + " }"


# ---------------------------------------------------------------- a node's core


def build_log_core(
    config: NetworkConfig, entry: NodeEntry, keys: KeyPair, records: Mapping[bytes, bytes]
) -> LogCore:
    """The `LogCore` of `entry` with the network's settings, rebuilt from its `records`.

    Every node's quorum set in the file is known to SCP up front, so a node never has
    to ask a peer for one.
    """
    settings = config.settings
    scp_config = ScpConfig(
        keys=keys,
        quorum_set=entry.quorum_set,
        application=LogRules(
            LogTimeouts(settings.nomination_timeout_ms, settings.ballot_timeout_ms)
        ),
        max_slots_ahead=settings.max_slots_ahead,
        retained_slots=settings.retained_slots,
        retained_decisions=settings.retained_decisions,
        checkpoint_interval=settings.checkpoint_interval,
        rebroadcast_interval_ms=settings.rebroadcast_ms,
        known_quorum_sets=[node.quorum_set for node in config.nodes],
        network=settings.network_id,
    )
    return LogCore(scp_config, records, max_pending=settings.max_pending_entries)
