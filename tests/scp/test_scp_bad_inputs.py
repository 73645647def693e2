"""Hostile and careless input to `synod scp init`: each is refused with one clear line
(exit status 2) and leaves no file behind, or is written so that the network's loader
reads back exactly what was typed.  A node refuses a store that is not its own, and a
member's value that no log can hold is invalid, not an error out of the core."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from synod.cli.scp import scp
from synod.core import Persist, Received, RequestReceived, Started
from synod.crypto import KeyPair, read_key_file
from synod.quorum.qset import QuorumSet, qset_hash
from synod.runtime.nodes import RestoreFailed
from synod.runtime.scp_node import LogNode, create_network
from synod.runtime.storage import SqliteStorage
from synod.scp import Nomination, ScpConfig, Statement, Validity, sign_statement
from synod.scp.log import (
    LOG_CODEC,
    LogCore,
    LogRules,
    SubmitRequest,
    decode_batch,
    entry_fits,
)
from synod.scp.network import NetworkConfig, NetworkSettings, load_network
from synod.sim.adversary import ByzantineCore
from synod.sim.scenarios.scp import UnencodableBatch
from synod.sim.world import NodeFactory, World

# Undecodable bytes of an argument reach Python as lone surrogates (surrogateescape).
UNDECODABLE = "\udcff"


def invoke(*arguments: str) -> Result:
    result = CliRunner().invoke(scp, list(arguments))
    # a user error exits through click (SystemExit); anything else is a traceback
    assert isinstance(result.exception, SystemExit | None), result.exception
    return result


def init(directory: Path, *options: str) -> Result:
    return invoke("init", str(directory), "--nodes", "1", "--base-port", "17200", *options)


def test_init_writes_characters_outside_the_bmp_that_the_loader_reads_back(
    tmp_path: Path,
) -> None:
    result = init(
        tmp_path, "--network-id", "net-\U0001f600", "--stellar", "--passphrase", "pass \U0001f600"
    )
    assert result.exit_code == 0, result.output
    config = load_network(tmp_path)
    assert config.settings.network_id == "net-\U0001f600".encode()
    assert config.stellar is not None and config.stellar.passphrase == "pass \U0001f600"


@pytest.mark.parametrize(
    "options",
    [("--network-id", UNDECODABLE), ("--stellar", "--passphrase", UNDECODABLE)],
)
def test_init_refuses_undecodable_bytes_with_a_usage_error(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    result = init(tmp_path / "network", *options)
    assert result.exit_code == 2
    assert options[-2] in result.output


@pytest.mark.parametrize("host", ["", UNDECODABLE])
def test_a_refused_init_leaves_nothing_so_that_it_can_run_again(tmp_path: Path, host: str) -> None:
    refused = init(tmp_path, "--host", host)
    assert refused.exit_code != 0
    assert sorted(path.name for path in tmp_path.iterdir()) == []
    assert init(tmp_path).exit_code == 0


# ---------------------------------------------------------------- whose store a file is
# A node restores its statements without verifying them again (its disk is trusted), so
# a file written by another node, network or protocol must not be restored.


def start_and_stop(config: NetworkConfig) -> None:
    entry = config.nodes[0]
    node = LogNode(config, entry, read_key_file(entry.key_file))

    async def scenario() -> None:
        await node.start()
        await node.stop()

    asyncio.run(scenario())


def test_a_node_restarts_on_its_own_store(tmp_path: Path) -> None:
    config = create_network(tmp_path, nodes=1)
    start_and_stop(config)
    start_and_stop(config)


@pytest.mark.parametrize("network_id", [b"", b"another network"])
def test_the_store_of_another_node_or_network_is_refused(
    tmp_path: Path, network_id: bytes
) -> None:
    first = create_network(tmp_path / "first", nodes=1)
    start_and_stop(first)
    second = create_network(
        tmp_path / "second", nodes=1, settings=NetworkSettings(network_id=network_id)
    )
    if network_id:  # the same node, moved to another network
        shutil.copy(first.nodes[0].key_file, second.nodes[0].key_file)
        second = dataclasses.replace(
            second, nodes=(dataclasses.replace(second.nodes[0], node_id=first.nodes[0].node_id),)
        )
    shutil.copy(first.store_path(first.nodes[0]), second.store_path(second.nodes[0]))
    with pytest.raises(RestoreFailed, match="another node, network"):
        start_and_stop(second)


def test_the_store_of_another_protocol_is_refused(tmp_path: Path) -> None:
    config = create_network(tmp_path, nodes=1)
    with SqliteStorage.open(config.store_path(config.nodes[0])) as storage:
        storage.apply([Persist(b"crdt/update/\x00", b"\x00")])
    with pytest.raises(RestoreFailed, match="another protocol"):
        start_and_stop(config)
    with SqliteStorage.open(config.store_path(config.nodes[0])) as storage:
        assert storage.load() == {b"crdt/update/\x00": b"\x00"}  # nothing written into it


# ---------------------------------------------------------------- a peer's values
# JSON's "\ud800" escape decodes to a lone surrogate, which no UTF-8 batch holds: a
# member nominating ["\ud800"] made encoding the batch raise UnicodeEncodeError out of
# every correct node's core (the host stops on such an error).

LONE_SURROGATE_BATCH = b'["\\ud800"]'


def test_a_batch_holding_a_lone_surrogate_is_an_invalid_value() -> None:
    rules = LogRules()
    assert decode_batch(LONE_SURROGATE_BATCH) is None
    assert rules.validate_value(1, LONE_SURROGATE_BATCH, True) == Validity.INVALID
    assert rules.extract_valid_value(1, b'["\\ud800","a"]') == b'["a"]'
    assert rules.combine_candidates(1, [LONE_SURROGATE_BATCH, b'["a"]']) == b'["a"]'
    assert not entry_fits("\udcff")


def test_members_nominating_a_lone_surrogate_do_not_stop_a_correct_core() -> None:
    keys = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(4)]
    qset = QuorumSet(threshold=3, validators=tuple(key.node_id for key in keys))
    config = ScpConfig(keys=keys[0], quorum_set=qset, application=LogRules())
    core = LogCore(config, {})
    core.handle(Started(), 0)
    pledges = Nomination(qset_hash(qset), (LONE_SURROGATE_BATCH,), (LONE_SURROGATE_BATCH,))
    for now_ms, member in enumerate(keys[1:], start=1):
        statement = Statement(member.node_id, 1, pledges)
        core.handle(Received(member.node_id, sign_statement(member, statement)), now_ms)
    assert 1 not in core.log


def test_submit_refuses_undecodable_bytes_before_connecting(tmp_path: Path) -> None:
    assert init(tmp_path).exit_code == 0
    result = invoke("submit", str(tmp_path), "node-0", "ok", UNDECODABLE, "--timeout", "0.1")
    assert result.exit_code == 2
    assert "UTF-8" in result.output


def test_status_shows_the_other_nodes_beside_an_unreadable_store(tmp_path: Path) -> None:
    # before: the first unreadable store ended the command with no table at all
    assert init(tmp_path, "--nodes", "2").exit_code == 0
    (tmp_path / "node-1.sqlite").write_bytes(b"not a database" * 100)
    result = invoke("status", str(tmp_path), "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout.splitlines()[-1])
    assert document["never_ran"] == ["node-0"]
    assert list(document["unreadable"]) == ["node-1"]


def test_an_insider_voting_for_an_unencodable_batch_stops_no_correct_node() -> None:
    """Four log nodes, one of them Byzantine (`UnencodableBatch`): the three correct
    nodes log every submitted entry, in the same slots."""
    keys = [KeyPair.from_seed(bytes([index + 1]) * 32) for index in range(4)]
    ids = [key.node_id for key in keys]
    qset = QuorumSet(threshold=3, validators=tuple(ids))

    def factory(member: KeyPair, byzantine: bool) -> NodeFactory:
        def build(storage: Any, rng: random.Random) -> Any:
            config = ScpConfig(keys=member, quorum_set=qset, application=LogRules())
            core = LogCore(config, storage)
            if not byzantine:
                return core
            return ByzantineCore(core, ids, rng, LOG_CODEC, [UnencodableBatch(member)])

        return build

    world = World.perfect()
    for index, member in enumerate(keys):
        world.add_node(member.node_id, factory(member, index == 3), LOG_CODEC, byzantine=index == 3)
    world.start()
    entries = {"alpha", "beta", "gamma"}
    for number, (node, entry) in enumerate(zip(ids, sorted(entries), strict=False), start=1):
        world.input(node, RequestReceived("client", number, SubmitRequest((entry,))))
    correct = ids[:3]
    assert world.step_until(
        lambda: all(world.core(node, LogCore).logged >= entries for node in correct)
    )
    logs = [world.core(node, LogCore).log for node in correct]
    assert logs[0] == logs[1] == logs[2]
