"""The quickstart script of docs/fastpay.md, run end to end with real processes.

The script is taken from the documentation and changed only where a test must: free
ports instead of 9100.., 2 shards per authority instead of 4 and 50 accounts instead of
1000, so that it runs quickly on a small machine.  Every wait is on a process exit with
a deadline (the clients themselves retry an authority until it listens)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DOC = Path(__file__).resolve().parents[2] / "docs" / "fastpay.md"
ACCOUNTS = 50
SHARDS = 2


def quickstart_script() -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- quickstart -->\n```sh\n(.*?)```", text, re.DOTALL)
    assert match, "docs/fastpay.md has no quickstart script"
    return match.group(1)


def free_port_blocks(count: int, width: int) -> list[int]:
    """`count` base ports, each with `width` consecutive ports free now."""
    bases: list[int] = []
    # Below the kernel's ephemeral range (32768 and up), where outgoing connections of
    # other processes could take a port between this check and the shard's bind.
    candidate = 20_000 + (os.getpid() % 1_200) * 10
    while len(bases) < count:
        sockets = []
        try:
            for offset in range(width):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", candidate + offset))
            bases.append(candidate)
        except OSError:
            pass
        finally:
            for sock in sockets:
                sock.close()
        candidate += 10
    return bases


def adapted_script(bases: list[int]) -> str:
    script = quickstart_script()
    replacements = {
        '--port 9"$I"00': '--port "$(port_of "$I")"',
        "--shards 4": f"--shards {SHARDS}",
        "$(seq 0 3)": f"$(seq 0 {SHARDS - 1})",
        "create-accounts 1000": f"create-accounts {ACCOUNTS}",
        "synod fastpay bench": "synod fastpay bench --transfers 100",
    }
    for old, new in replacements.items():
        assert old in script, f"the quickstart no longer contains {old!r}"
        script = script.replace(old, new)
    cases = " ".join(f"{index}) echo {base};;" for index, base in enumerate(bases, start=1))
    prelude = f'port_of() {{ case "$1" in {cases} esac; }}\n'
    return "set -eu\n" + prelude + script


def test_the_documented_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    bases = free_port_blocks(4, SHARDS)
    script = tmp_path / "quickstart.sh"
    script.write_text(adapted_script(bases), encoding="utf-8")
    bin_directory = str(Path(sys.executable).parent)
    environment = {**os.environ, "PATH": f"{bin_directory}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(
        ["bash", str(script)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=100)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        else:
            # Shards left behind by a failed script are in the script's session.
            with_session = subprocess.run(
                ["pgrep", "-s", str(process.pid)], capture_output=True, text=True, check=False
            )
            for pid in with_session.stdout.split():
                os.kill(int(pid), signal.SIGKILL)
    assert process.returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr[-3000:]}"

    lines = stdout.splitlines()
    ready = [line for line in lines if '"event": "ready"' in line]
    assert len(ready) == 4 * SHARDS
    results = [line for line in lines if '"event": "ready"' not in line]
    # Two balances of 100, a transfer of 10, then 90 and 110 (the genesis funded 100).
    assert results[0:2] == ["100", "100"]
    assert results[2].startswith("transfer #0 of 10 confirmed")
    assert results[3:5] == ["90", "110"]
    assert results[5].startswith(f"{ACCOUNTS} transfers confirmed")
    wallet = json.loads(results[6])
    assert wallet["initial_balance"] == 100 and wallet["records"]
    bench = json.loads(results[7])
    assert bench["transfers"] == 100 and bench["shards"] == 2
    # It runs one authority's shards (the other three only signed certificates): the
    # line says so rather than claiming four authorities.
    assert (bench["authorities_running"], bench["committee_size"]) == (1, 4)
    assert "authorities" not in bench
    assert len(results) == 8
    genesis = (tmp_path / "initial_accounts.txt").read_text().splitlines()
    assert len(genesis) == ACCOUNTS and all(line.endswith(":100") for line in genesis)
    assert len((tmp_path / "committee.json").read_text().splitlines()) == 4
    assert len(list(tmp_path.glob("server*.shard-*.sqlite"))) == 4 * SHARDS
