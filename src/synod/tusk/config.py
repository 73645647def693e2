"""A Tusk committee's configuration file, ``tusk.toml``: its model, loader and writer.

The file has a ``[tusk]`` table of settings (core limits, driver pacing, call timeout;
see `SETTINGS`; and ``network_id``, a string) and one ``[[cores]]`` table per core
(name, id, host, port, key file).
Loading checks every value and raises `synod.config.ConfigError` naming the file, the
key and what was expected.  Each core keeps its state next to the file, in
``<name>.sqlite`` (see `TuskNetwork.store_path`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from synod.config import (
    ConfigError,
    NodeEntry,
    find_named,
    network_id,
    node_entry,
    read_toml,
    refuse_unknown_keys,
    render_node_tables,
)
from synod.crypto import NodeId
from synod.quorum.committee import Committee
from synod.tusk.core import CHECKPOINT_SLACK_ROUNDS, TuskConfig, checkpoint_rounds
from synod.tusk.driver import Driver
from synod.tusk.messages import (
    MAX_BATCH_BYTES,
    MAX_BATCH_TRANSACTIONS,
    MAX_CHECKPOINT_DELIVERED,
    MAX_COMMITTEE_SIZE,
)

CONFIG_NAME = "tusk.toml"

SETTINGS: dict[str, tuple[int, int]] = {
    "gc_depth": (100, 2),
    "min_header_delay_ms": (100, 0),
    "max_batch_transactions": (512, 1),
    "max_batch_bytes": (256 * 1024, 4096),
    "poll_interval_ms": (50, 1),
    "window_rounds": (150, 2),
    "call_timeout_ms": (2_000, 1),
    "kept_commits": (100_000, 0),
}
"""Settings of ``[tusk]``: name -> (default, smallest allowed value)."""

HOUR_MS = 3_600_000
LARGEST: dict[str, int] = {
    "min_header_delay_ms": HOUR_MS,
    "max_batch_transactions": MAX_BATCH_TRANSACTIONS,
    "max_batch_bytes": MAX_BATCH_BYTES,
    "poll_interval_ms": HOUR_MS,
    "call_timeout_ms": HOUR_MS,
    "kept_commits": 2**63 - 1,
}
"""The largest value a setting may take, where there is one: a core refuses batches past
the wire's caps, a position is stored as a 64-bit integer, and a delay of more than an
hour is a typo (the event loop refuses to wait past the platform's time_t at all).
`gc_depth` is bounded by the committee's size (`_check_checkpoint_size`)."""

CoreEntry = NodeEntry
"""A core of ``tusk.toml``: its name, id, listening address and key file."""


@dataclass(frozen=True, slots=True)
class TuskNetwork:
    """What ``tusk.toml`` says: the file, its checked settings and the cores in order."""

    path: Path
    settings: dict[str, int]
    cores: tuple[CoreEntry, ...]
    network: bytes = b""
    """``tusk.network_id`` (UTF-8; empty: none): in every signature domain and in the
    committee context of every header, so that cores of two networks refuse each other."""

    def find(self, selector: str) -> CoreEntry:
        """The core named `selector` (or with that index); `UnknownEntry` otherwise."""
        return find_named(self.path, self.cores, selector, "core")

    def committee(self) -> Committee:
        """The committee of every core, each with the same weight."""
        return Committee.equal_weights(core.node_id for core in self.cores)

    def addresses(self) -> dict[NodeId, tuple[str, int]]:
        """Every core's id -> its listening address."""
        return {core.node_id: (core.host, core.port) for core in self.cores}

    def core_config(self) -> TuskConfig:
        """The limits every core of this committee runs with."""
        return TuskConfig(
            gc_depth=self.settings["gc_depth"],
            min_header_delay_ms=self.settings["min_header_delay_ms"],
            max_batch_transactions=self.settings["max_batch_transactions"],
            max_batch_bytes=self.settings["max_batch_bytes"],
            network=self.network,
            kept_commits=self.settings["kept_commits"],
        )

    def new_driver(self, name: str) -> Driver:
        """A fresh driver for this committee, paced by the file's settings."""
        return Driver(
            name,
            self.committee(),
            poll_interval_ms=self.settings["poll_interval_ms"],
            window_rounds=self.settings["window_rounds"],
            network=self.network,
        )

    def store_path(self, core: CoreEntry) -> Path:
        """The SQLite file where `core` keeps its state."""
        return self.path.parent / f"{core.name}.sqlite"


def load_network(directory: Path) -> TuskNetwork:
    """Read and check ``DIR/tusk.toml``.

    Raises `ConfigFileError` when it is missing or not TOML, `ConfigError` naming the
    key when a value is wrong.
    """
    path = directory / CONFIG_NAME
    document = read_toml(path)
    refuse_unknown_keys(path, "", document, ("tusk", "cores"))
    table = document.get("tusk", {})
    if not isinstance(table, dict):
        raise ConfigError(path, "tusk", "expected a table")
    refuse_unknown_keys(path, "tusk", table, (*SETTINGS, "network_id"))
    settings = {}
    for key, (default, smallest) in SETTINGS.items():
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < smallest:
            raise ConfigError(path, f"tusk.{key}", f"expected an integer >= {smallest}")
        if value > LARGEST.get(key, value):
            raise ConfigError(
                path, f"tusk.{key}", f"expected an integer {smallest}..{LARGEST[key]}"
            )
        settings[key] = value
    _check_window(path, settings)
    raw_cores = document.get("cores")
    if not isinstance(raw_cores, list) or not raw_cores:
        raise ConfigError(path, "cores", "expected a non-empty array of tables [[cores]]")
    cores = tuple(node_entry(path, f"cores[{index}]", raw) for index, raw in enumerate(raw_cores))
    if len(cores) > MAX_COMMITTEE_SIZE:
        # the cores refuse to run with more (a "cannot restore" error that blamed the store)
        raise ConfigError(path, "cores", f"at most {MAX_COMMITTEE_SIZE} cores, got {len(cores)}")
    _check_distinct(path, cores)
    _check_checkpoint_size(path, settings["gc_depth"], len(cores))
    return TuskNetwork(path, settings, cores, network_id(path, table, "tusk"))


def _check_window(path: Path, settings: dict[str, int]) -> None:
    """Drivers must still hold the rounds a core installing a checkpoint needs: from the
    checkpoint's floor (`gc_depth` below its leader) up to the round the committee has
    reached when the next checkpoint replaces it (`checkpoint_rounds` later, and a few
    rounds for the signatures to gather)."""
    gc_depth = settings["gc_depth"]
    smallest = gc_depth + checkpoint_rounds(gc_depth) + CHECKPOINT_SLACK_ROUNDS
    if settings["window_rounds"] < smallest:
        raise ConfigError(
            path,
            "tusk.window_rounds",
            f"an integer >= {smallest} (gc_depth + gc_depth / 4 + {CHECKPOINT_SLACK_ROUNDS}:"
            " drivers keep the rounds a core installing a checkpoint needs)",
        )


def _check_checkpoint_size(path: Path, gc_depth: int, members: int) -> None:
    """A checkpoint names every certificate of its last gc_depth + 1 rounds, and the
    cores refuse to run when that could pass the wire's cap (a traceback before)."""
    if (gc_depth + 1) * members > MAX_CHECKPOINT_DELIVERED:
        largest = MAX_CHECKPOINT_DELIVERED // members - 1
        raise ConfigError(
            path,
            "tusk.gc_depth",
            f"at most {largest} for {members} cores ((gc_depth + 1) x cores <="
            f" {MAX_CHECKPOINT_DELIVERED}, the certificates one checkpoint may name)",
        )


def _check_distinct(path: Path, cores: tuple[CoreEntry, ...]) -> None:
    for key, value_of in (
        ("name", lambda core: core.name),
        ("id", lambda core: core.node_id),
        ("port", lambda core: (core.host, core.port)),
    ):
        seen: set[object] = set()
        for index, core in enumerate(cores):
            value = value_of(core)
            if value in seen:
                raise ConfigError(path, f"cores[{index}].{key}", "expected a unique value")
            seen.add(value)


def render_config(cores: list[tuple[str, str, str, int, str]]) -> str:
    """The text of a new ``tusk.toml``: default settings and the (name, id text, host,
    port, key file) of each core."""
    lines = ["# A synod Tusk committee (written by `synod tusk init`).", "[tusk]"]
    lines += [f"{key} = {default}" for key, (default, _) in SETTINGS.items()]
    lines.append('network_id = ""')
    lines += render_node_tables("cores", cores)
    return "\n".join(lines) + "\n"

