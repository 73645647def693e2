"""The *From Python* program of docs/fastpay.md runs: real shards on 127.0.0.1, a wallet
pays, and the balances a quorum vouches for are printed."""

from __future__ import annotations

import pytest

from doc_programs import run_program


@pytest.mark.timeout(60)
def test_the_from_python_program_pays_and_prints_the_quorum_balances(
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_program("fastpay.md", "From Python")
    assert capsys.readouterr().out.splitlines() == ["transfer #0 confirmed", "alice 70", "bob 30"]
