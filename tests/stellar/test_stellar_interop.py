"""An implementation of Stellar's overlay written independently of synod (stellarbeat's
js-stellar-node-connector, the library its public-network crawler uses) connects to a
`synod stellar serve` process, completes the handshake, asks for its SCP state and quorum
set, and verifies the envelope it receives with its own code.

Needs Node.js and the connector installed by `make stellar-tools` (into
build/stellar-tools; or name a node_modules folder in SYNOD_STELLAR_CONNECTOR); skipped
otherwise, since nothing may be downloaded while the tests run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_stellar_cli import read_ready_line

from synod.crypto import KeyPair, write_key_file
from synod.scp.stellar import node_id_to_strkey

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("stellarbeat_connect.js")
TESTNET = "Test SDF Network ; September 2015"


def connector_modules() -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the independent overlay client cannot run")
    configured = os.environ.get("SYNOD_STELLAR_CONNECTOR")
    modules = Path(configured) if configured else ROOT / "build/stellar-tools/node_modules"
    if not (modules / "@stellarbeat/js-stellar-node-connector").is_dir():
        pytest.skip(f"js-stellar-node-connector is not in {modules}: run `make stellar-tools`")
    return modules


@pytest.mark.parametrize("command", ["serve", "run"])
def test_stellarbeat_connector_handshakes_and_verifies_a_synod_node(
    tmp_path: Path, command: str
) -> None:
    """`serve`: the minimal node; `run`: an SCP validator in Stellar mode (alone in its
    quorum set, so it externalizes slot 1 and serves those statements)."""
    modules = connector_modules()
    keys = KeyPair.generate()
    key_file = tmp_path / "node.key"
    write_key_file(key_file, keys)
    me = node_id_to_strkey(keys.node_id)
    configured = {"threshold": 1, "validators": [me], "innerQuorumSets": []}
    qset_file = tmp_path / "qset.json"
    qset_file.write_text(json.dumps(configured))
    store = ["--store", str(tmp_path / "node.sqlite")] if command == "run" else []
    serve = subprocess.Popen(
        [sys.executable, "-m", "synod.cli.main", "stellar", command, "--key", str(key_file),
         "--listen", "127.0.0.1:0", "--quorum-set", str(qset_file), *store],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        ready = read_ready_line(serve)
        host, port = str(ready["address"]).rsplit(":", 1)
        environment = {
            **os.environ,
            "NODE_PATH": str(modules),
            "NETWORK": TESTNET,
            "LEDGER_VERSION": "25",
            "OVERLAY_VERSION": "38",
            "OVERLAY_MIN_VERSION": "35",
        }
        client = subprocess.run(
            ["node", str(SCRIPT), host, port], capture_output=True, text=True, timeout=60,
            env=environment, check=False,
        )
    finally:
        serve.terminate()
        serve.wait(timeout=10)
    assert client.returncode == 0, client.stdout + client.stderr
    seen = json.loads(client.stdout.strip().splitlines()[-1])
    assert seen["connected"] and seen["peer"] == me
    assert seen["envelopes"] >= 1, "GET_SCP_STATE was answered"
    assert seen["verified"] == seen["envelopes"], "its own code verifies every signature"
    (qset,) = seen["quorumSets"]
    assert qset["asked"], "the set answered is the one whose hash the envelope named"
    assert qset["quorumSet"] == configured
    # stellar-core's hash of a quorum set: SHA-256 of its XDR, built here with the SDK.
    from stellar_sdk import Keypair, xdr

    xdr_qset = xdr.SCPQuorumSet(
        xdr.Uint32(1), [Keypair.from_public_key(me).xdr_account_id()], []
    )
    assert qset["hash"] == hashlib.sha256(xdr_qset.to_xdr_bytes()).hexdigest()


def test_a_synod_node_dials_the_stellarbeat_connector() -> None:
    """Both directions: synod as the dialer (its HELLO first, AUTH after the acceptor's
    HELLO) against the independent implementation's acceptor."""
    import asyncio

    from test_stellar_cli import read_json_lines_until

    from synod.runtime.stellar_overlay import OverlayNode
    from synod.stellar.peer import OverlaySettings

    modules = connector_modules()
    environment = {
        **os.environ,
        "NODE_PATH": str(modules),
        "NETWORK": TESTNET,
        "LEDGER_VERSION": "25",
        "OVERLAY_VERSION": "38",
        "OVERLAY_MIN_VERSION": "35",
    }
    listener = subprocess.Popen(
        ["node", str(SCRIPT.with_name("stellarbeat_listen.js"))],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=environment,
    )
    keys = KeyPair.generate()
    try:
        (ready,) = read_json_lines_until(listener, lambda entry: "listening" in entry, 30)
        requests: list[object] = []

        async def dial() -> bytes | None:
            node = OverlayNode(keys, OverlaySettings(passphrase=TESTNET))
            node.handler = lambda connection, message: requests.append(message.type)
            connection = await node.connect("127.0.0.1", int(ready["listening"]))
            try:
                await connection.wait_for(lambda: bool(requests), 20)
                return connection.peer.peer_id
            finally:
                await node.close()

        peer_id = asyncio.run(dial())
        (connected,) = read_json_lines_until(listener, lambda entry: "connected" in entry, 20)
    finally:
        listener.terminate()
        listener.wait(timeout=10)
    from stellar_sdk import xdr

    assert peer_id is not None and node_id_to_strkey(peer_id) == ready["id"]
    assert connected["peer"] == node_id_to_strkey(keys.node_id)
    assert requests == [xdr.MessageType.GET_SCP_STATE], "its MAC'd request verified here"
