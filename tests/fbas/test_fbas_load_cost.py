"""What loading a snapshot costs: each distinct key decoded once, a C checksum, and no
import of the quorum package or the signature library before an analysis needs them."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

import synod.fbas.load as load
from synod.fbas.load import LoadOptions, load_stellar_core, load_stellarbeat
from synod.fbas.synthetic import public_like_network, symmetric_network
from synod.quorum import qset as quorum_qset


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = load.decode_public_key

    def counting(strkey: str) -> bytes:
        calls.append(strkey)
        return original(strkey)

    monkeypatch.setattr(load, "decode_public_key", counting)
    return calls


def _mentions(nodes: list[dict[str, Any]]) -> int:
    def in_qset(qset: dict[str, Any] | None) -> int:
        if not qset:
            return 0
        return len(qset["validators"]) + sum(in_qset(inner) for inner in qset["innerQuorumSets"])

    return sum(1 + in_qset(node.get("quorumSet")) for node in nodes)


def test_each_distinct_key_is_decoded_once_per_load(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes, orgs = symmetric_network(7)
    calls = _count_decodes(monkeypatch)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    # 21 validators, each naming all 21 in its quorum set and listed once more in the
    # organisations file: 21 + 21 * 21 + 21 mentions, 21 distinct keys.
    assert _mentions(nodes) == 21 + 21 * 21
    assert len(fbas) == 21
    assert sorted(calls) == sorted({node["publicKey"] for node in nodes})


def test_stellar_core_input_decodes_each_key_once(monkeypatch: pytest.MonkeyPatch) -> None:
    nodes, _ = symmetric_network(4)
    document = {
        "nodes": [
            {"node": node["publicKey"], "qset": {"t": 2, "v": [n["publicKey"] for n in nodes]}}
            for node in nodes
        ]
    }
    calls = _count_decodes(monkeypatch)
    load_stellar_core(document)
    assert len(calls) == len(nodes) == len(set(calls))


def test_a_bad_key_is_still_refused_wherever_it_first_appears() -> None:
    nodes, _ = symmetric_network(3)
    bad = nodes[0]["publicKey"][:-1] + ("A" if nodes[0]["publicKey"][-1] != "A" else "B")
    nodes[2]["quorumSet"]["innerQuorumSets"][1]["validators"][0] = bad
    with pytest.raises(load.FbasInputError, match=r"innerQuorumSets\[1\]\.validators\[0\]"):
        load_stellarbeat(nodes)
    assert len(load_stellarbeat(nodes, LoadOptions(check_keys=False))) == len(nodes) + 1


def test_checksum_is_crc16_xmodem() -> None:
    # The check value of CRC-16/XMODEM over "123456789" (the CRC catalogue's test input).
    assert load._crc16_xmodem(b"123456789") == 0x31C3


def test_sanity_limits_agree_with_the_quorum_package() -> None:
    assert load.MAX_NESTING_DEPTH == quorum_qset.MAX_NESTING_DEPTH
    assert load.MAX_TOTAL_NODES == quorum_qset.MAX_TOTAL_NODES


def test_public_like_network_has_the_public_shape() -> None:
    nodes, orgs = public_like_network(seed=1)
    fbas = load_stellarbeat(nodes, organizations=orgs)
    assert len(fbas) == 637
    # About eight key mentions per node, as on the 2025 public network (4,992 for 637).
    assert 4000 <= _mentions(nodes) <= 6000
    assert public_like_network(seed=1) == (nodes, orgs)


LOADED_SCRIPT = """
import json, sys
from synod.fbas.load import load_stellarbeat
from synod.fbas.synthetic import symmetric_network
nodes, _ = symmetric_network(3)
load_stellarbeat(nodes)
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("nacl", "synod.quorum")))))
"""


def test_loading_a_snapshot_imports_neither_the_quorum_package_nor_nacl() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOADED_SCRIPT],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
