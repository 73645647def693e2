"""The `synod` command: version, help without heavy imports, errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from synod import __version__
from synod.cli.main import cli

HEAVY_MODULES = ("msgspec", "nacl", "rich", "pysat", "stellar_sdk", "matplotlib", "asyncio")


def run_synod(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synod.cli.main", *arguments],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_version_is_the_package_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_help_lists_the_subsystems_without_importing_them() -> None:
    script = (
        "import sys, json\n"
        "from synod.cli.main import cli\n"
        "try:\n"
        "    cli(['--help'], prog_name='synod')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    *help_lines, imported = result.stdout.strip().splitlines()
    assert json.loads(imported) == []
    assert any(line.strip().startswith("sim") for line in help_lines)


def test_unknown_command_is_a_usage_error() -> None:
    result = run_synod("no-such-command")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_keys_generate_then_show_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    generated = run_synod("keys", "generate", str(path))
    assert generated.returncode == 0, generated.stderr
    shown = run_synod("keys", "show", str(path))
    assert shown.stdout == generated.stdout
    assert shown.stdout.startswith("N")


def test_corrupt_key_file_is_a_clean_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("synod-ed25519-seed 12\n")
    path.chmod(0o600)
    result = run_synod("keys", "show", str(path))
    assert result.returncode == 1
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr
