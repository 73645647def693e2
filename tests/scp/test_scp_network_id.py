"""A network id in every SCP envelope signature and in network.toml: a statement signed
for one network is refused by the nodes of another, even when the same key serves in
both (`synod.crypto.in_network`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scp_fixtures import PEER, make_core

from synod.config import ConfigError
from synod.core import Received
from synod.scp import (
    Ballot,
    Envelope,
    Prepare,
    RejectReason,
    Statement,
    sign_statement,
    verify_envelope,
)
from synod.scp.network import NetworkSettings, build_log_core, load_network


def signed_for(network: bytes, qset_hash: bytes, slot_index: int = 1) -> Envelope:
    pledges = Prepare(qset_hash, Ballot(1, b"x"), None, None, 0, 0)
    return sign_statement(PEER, Statement(PEER.node_id, slot_index, pledges), network)


def test_an_envelope_signed_for_another_network_is_refused() -> None:
    alpha = make_core(network=b"alpha")
    qset_hash = alpha.local_qset_hash
    alpha.handle(Received(PEER.node_id, signed_for(b"beta", qset_hash)), 0)
    assert alpha.rejected[RejectReason.BAD_SIGNATURE] == 1
    alpha.handle(Received(PEER.node_id, signed_for(b"alpha", qset_hash)), 0)
    assert PEER.node_id in alpha.slots[1].ballot.latest
    unnamed = make_core()  # networks made before ids existed keep the bare domain
    unnamed.handle(Received(PEER.node_id, signed_for(b"alpha", qset_hash)), 0)
    assert unnamed.rejected[RejectReason.BAD_SIGNATURE] == 1
    unnamed.handle(Received(PEER.node_id, signed_for(b"", qset_hash)), 0)
    assert PEER.node_id in unnamed.slots[1].ballot.latest


def test_a_core_signs_its_own_statements_for_its_network() -> None:
    core = make_core(network=b"alpha")
    step = core.bump_state(1, b"x", 0)
    (envelope,) = [outgoing.message for outgoing in step.outgoing]  # type: ignore[union-attr]
    assert verify_envelope(envelope, b"alpha")
    assert not verify_envelope(envelope, b"beta") and not verify_envelope(envelope)


def write_network(directory: Path, network_line: str) -> None:
    from synod.runtime.scp_node import create_network

    create_network(directory, nodes=4)
    path = directory / "network.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("[network]\n", "[network]\n" + network_line + "\n", 1))


def test_network_toml_carries_the_network_id_into_the_core(tmp_path: Path) -> None:
    write_network(tmp_path, 'network_id = "testnet-7"')
    path = tmp_path / "network.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("retained_decisions = 1024", "retained_decisions = 5000"))
    config = load_network(tmp_path)
    assert config.settings.network_id == b"testnet-7"
    from synod.crypto import read_key_file

    entry = config.nodes[0]
    core = build_log_core(config, entry, read_key_file(entry.key_file), {})
    assert core.scp.config.network == b"testnet-7"
    assert core.scp.config.retained_decisions == 5000


@pytest.mark.parametrize(
    "line", ["network_id = 7", 'network_id = "a@b"', f'network_id = "{"x" * 65}"']
)
def test_a_bad_network_id_names_the_file_and_key(tmp_path: Path, line: str) -> None:
    write_network(tmp_path, line)
    with pytest.raises(ConfigError) as raised:
        load_network(tmp_path)
    assert "network.network_id" in str(raised.value)
    assert "network.toml" in str(raised.value)


def test_init_writes_the_network_id(tmp_path: Path) -> None:
    from synod.runtime.scp_node import create_network

    config = create_network(tmp_path, nodes=4, settings=NetworkSettings(network_id=b"main"))
    assert config.settings.network_id == b"main"
    assert 'network_id = "main"' in (tmp_path / "network.toml").read_text(encoding="utf-8")

