"""The peer-to-peer snippet of docs/crdt.md works as printed: its set-up lines run in a
shell unchanged, and its two `run` lines (ports moved to free ones) make two nodes that
see each other's lines.  It once had only one side name the other, which the other
refused ("not an accepted peer"), so nothing ever arrived."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from synod.cli.cluster import WatchedProcess, free_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DOC = Path(__file__).resolve().parents[2] / "docs" / "crdt.md"


def snippet() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- peer-to-peer -->\n\s*```sh\n(.*?)```", text, re.DOTALL)
    assert match, "docs/crdt.md has no peer-to-peer snippet"
    return [line.strip() for line in match.group(1).splitlines() if line.strip()]


def test_the_documented_peer_to_peer_snippet_connects_both_nodes(tmp_path: Path) -> None:
    lines = snippet()
    setup, runs = lines[:4], lines[4:]
    assert len(runs) == 2 and all(line.startswith("synod crdt run") for line in runs)
    ports = [str(port) for port in free_ports(2)]
    script = "\n".join(setup).replace("7301", ports[0]).replace("7302", ports[1])
    script += '\necho "$ALICE $BOB"'
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        ["bash", "-euc", script], cwd=tmp_path, capture_output=True, text=True, check=False,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    alice_id, bob_id = done.stdout.split()[-2:]
    nodes = []
    for line in runs:
        command = line.split("#")[0].replace("&", "").strip()
        command = command.replace("$ALICE", alice_id).replace("$BOB", bob_id)
        command = command.replace("7301", ports[0]).replace("7302", ports[1])
        arguments = shlex.split(command)[1:]  # after `synod`
        name = arguments[2]
        arguments[2] = str(tmp_path / name)  # the snippet runs in the directory of init
        node = WatchedProcess(name, arguments, tmp_path / f"{name}.err", deadline_s=30)
        nodes.append(node)
    try:
        for node in nodes:
            node.wait_ready()
        alice, bob = nodes
        bob.send_line("hello from bob")
        alice.wait_for(
            lambda seen: any(line.get("text") == "hello from bob" for line in seen),
            "bob's line at alice",
        )
        for node in nodes:
            assert node.stop() == 0
    finally:
        for node in nodes:
            node.kill_if_running()
