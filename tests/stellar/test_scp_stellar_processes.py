"""A `synod scp` network in Stellar mode as real processes (`synod scp init --stellar`,
`synod scp up`): its nodes agree over Stellar's overlay, `synod fbas crawl` reconstructs
their quorum sets exactly, and stellarbeat's connector (an implementation of the overlay
written independently of synod) connects to a `synod scp run` node, completes the
handshake, asks for its SCP state and quorum set, and verifies every envelope with its
own code.  The connector test needs Node.js and `make stellar-tools` (which `make test`
runs where Node.js is), and is skipped with the reason elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_stellar_interop import SCRIPT, connector_modules

from synod.cli.cluster import free_ports, synod_command
from synod.runtime.scp_node import read_network_logs
from synod.scp.network import STANDALONE_PASSPHRASE, NetworkConfig, load_network
from synod.scp.stellar import node_id_to_strkey

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def synod(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        synod_command(*arguments), capture_output=True, text=True, check=False, timeout=90
    )


def wait_for_slots(config: NetworkConfig, slots: int, timeout_s: float) -> None:
    """Poll the nodes' stores (read-only) until every one has decided `slots` slots."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = read_network_logs(config)
        if all(log is not None and len(log) >= slots for log in logs.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"not every node decided {slots} slots: {read_network_logs(config)}")


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkConfig]:
    directory = tmp_path_factory.mktemp("stellar-net")
    ports = free_ports(8)
    init = synod(
        "scp", "init", str(directory), "--stellar",
        "--ports", ",".join(map(str, ports[:4])),
        "--submit-ports", ",".join(map(str, ports[4:])),
    )
    assert init.returncode == 0, init.stderr
    up = synod("scp", "up", str(directory))
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        config = load_network(directory)
        wait_for_slots(config, 2, 90)
        yield config
    finally:
        down = synod("scp", "down", str(directory))
        assert down.returncode == 0, down.stdout + down.stderr


def expected_quorum_set(config: NetworkConfig) -> tuple[int, set[str]]:
    (entry, *_) = config.nodes
    members = {node_id_to_strkey(node) for node in entry.quorum_set.validators}
    return entry.quorum_set.threshold, members


def test_the_nodes_agree_slot_by_slot_on_stellar_values(network: NetworkConfig) -> None:
    logs = read_network_logs(network)
    first = logs["node-0"]
    assert first is not None
    for log in logs.values():
        assert log is not None
        assert all(log[slot] == first[slot] for slot in set(log) & set(first))
    status = synod("scp", "status", str(network.path.parent), "--json")
    assert status.returncode == 0, status.stdout + status.stderr


def test_fbas_crawl_reconstructs_every_quorum_set_and_check_finds_intersection(
    network: NetworkConfig, tmp_path: Path
) -> None:
    output = tmp_path / "crawl.json"
    address = f"{network.nodes[0].host}:{network.nodes[0].port}"
    crawl = synod(
        "fbas", "crawl", address, "-o", str(output), "--network", STANDALONE_PASSPHRASE
    )
    assert crawl.returncode == 0, crawl.stderr
    records = json.loads(output.read_text())
    threshold, members = expected_quorum_set(network)
    assert {record["publicKey"] for record in records} == members
    for record in records:
        quorum_set = record["quorumSet"]
        assert quorum_set["threshold"] == threshold
        assert set(quorum_set["validators"]) == members
        assert quorum_set["innerQuorumSets"] == []
    check = synod("fbas", "check", str(output))
    assert check.returncode == 0 and "Quorum intersection holds" in check.stdout


def test_an_independent_overlay_client_follows_a_synod_scp_run_node(
    network: NetworkConfig,
) -> None:
    """The client asks GET_SCP_STATE and the quorum set, then stays connected until it has
    seen, and verified, the node's statements for two slots past the first it saw."""
    modules = connector_modules()
    node = network.nodes[0]
    environment = {
        **os.environ,
        "NODE_PATH": str(modules),
        "NETWORK": STANDALONE_PASSPHRASE,
        "LEDGER_VERSION": "25",
        "OVERLAY_VERSION": "38",
        "OVERLAY_MIN_VERSION": "35",
        "FOLLOW": "2",
    }
    client = subprocess.run(
        ["node", str(SCRIPT), node.host, str(node.port)], capture_output=True, text=True,
        timeout=60, env=environment, check=False,
    )
    assert client.returncode == 0, client.stdout + client.stderr
    seen = json.loads(client.stdout.strip().splitlines()[-1])
    assert seen["connected"] and seen["peer"] == node_id_to_strkey(node.node_id)
    assert seen["envelopes"] >= 1, "GET_SCP_STATE was answered"
    assert seen["verified"] == seen["envelopes"], "its own code verifies every signature"
    assert max(seen["slots"]) >= min(seen["slots"]) + 2, "it follows the slots as decided"
    (quorum_set,) = seen["quorumSets"]
    assert quorum_set["asked"], "the set answered is the one whose hash an envelope named"
    threshold, members = expected_quorum_set(network)
    assert quorum_set["quorumSet"]["threshold"] == threshold
    assert set(quorum_set["quorumSet"]["validators"]) == members


def test_every_node_answers_status_with_links_to_all_the_others(network: NetworkConfig) -> None:
    """Over the submit port (status only in this mode): each node is past slot 1 and
    holds an authenticated overlay link to each of the three others, and no link was
    ever refused for a MAC sequence out of order (a reply sent while a message was
    being delivered overtook the flow-control grant made with that delivery)."""
    import asyncio

    from synod.runtime.node_status import StatusReply, ask_status

    async def statuses() -> list[StatusReply]:
        return [
            await ask_status((node.host, node.submit_port)) for node in network.nodes
        ]

    deadline = time.monotonic() + 30
    replies = asyncio.run(statuses())
    while time.monotonic() < deadline and not all(
        reply.peers_connected == 3 for reply in replies
    ):
        time.sleep(0.2)
        replies = asyncio.run(statuses())
    assert all(reply.progress >= 2 and reply.peers == 3 for reply in replies), replies
    assert [reply.peers_connected for reply in replies] == [3, 3, 3, 3], replies
    logs = network.path.parent / "logs"
    for node in network.nodes:
        assert "unexpected auth sequence" not in (logs / f"{node.name}.err").read_text()
    refused = synod("scp", "submit", str(network.path.parent), "node-0", "an entry")
    assert refused.returncode == 2 and "Stellar-mode network" in refused.stderr


def test_a_node_killed_while_the_others_decide_rejoins_with_every_slot(tmp_path: Path) -> None:
    """node-3 is SIGKILLed, the other three (a quorum) decide at least five more slots,
    node-3 restarts from its store, asks each peer for its statements from its first
    undecided slot (GET_SCP_STATE), and decides every slot it missed: every log equal,
    slot by slot, none missing (within the slots peers keep, `retained_slots`)."""
    from synod.runtime.supervisor import Supervisor

    directory = tmp_path / "net"
    ports = free_ports(8)
    init = synod(
        "scp", "init", str(directory), "--stellar",
        "--ports", ",".join(map(str, ports[:4])),
        "--submit-ports", ",".join(map(str, ports[4:])),
    )
    assert init.returncode == 0, init.stderr
    assert synod("scp", "up", str(directory)).returncode == 0
    supervisor = Supervisor(directory)
    try:
        config = load_network(directory)
        wait_for_slots(config, 2, 60)
        supervisor.kill("node-3")
        (left_at,) = [len(read_network_logs(config)["node-3"] or {})]
        deadline = time.monotonic() + 60
        while min(len(log or {}) for name, log in read_network_logs(config).items()
                  if name != "node-3") < left_at + 5:
            assert time.monotonic() < deadline, "the three others kept deciding"
            time.sleep(0.1)
        supervisor.restart("node-3")
        target = max(len(log or {}) for log in read_network_logs(config).values())
        wait_for_slots(config, target, 60)
    finally:
        down = synod("scp", "down", str(directory))
        assert down.returncode == 0, down.stdout + down.stderr
    logs = read_network_logs(config)
    returned = logs["node-3"]
    assert returned is not None
    assert sorted(returned) == list(range(1, len(returned) + 1)), "no slot missing"
    for log in logs.values():
        assert log is not None
        assert all(log[slot] == returned[slot] for slot in set(log) & set(returned))
