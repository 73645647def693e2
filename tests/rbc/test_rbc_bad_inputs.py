"""Bad input to `synod rbc init`: settings no node could run with are refused before
anything is written, in one line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from synod.cli.rbc import rbc


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("--base-port", "65534"), "past 65535"),
        (("--host", ""), "expected a host name or address"),
    ],
)
def test_init_refuses_a_network_no_node_could_run_and_writes_nothing(
    tmp_path: Path, options: tuple[str, ...], expected: str
) -> None:
    # before, init wrote the keys and network.toml, then refused its own file
    directory = tmp_path / "net"
    result = CliRunner().invoke(rbc, ["init", str(directory), *options])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert not directory.exists()


def test_init_in_a_directory_that_cannot_be_made_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    result = CliRunner().invoke(rbc, ["init", str(tmp_path / "file" / "net")])
    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, OSError), result.exception
    assert "cannot create" in result.output
