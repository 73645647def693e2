"""What peers and files supply is printed without the terminal acting on it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from synod.cli.common import printable


def test_escape_sequences_and_carriage_returns_are_shown_not_obeyed() -> None:
    assert printable("pay\x1b[2J\x1b]0;owned\x07 bob\r") == "pay\\x1b[2J\\x1b]0;owned\\x07 bob\\r"
    assert printable("naïve 名前 it's [/bold]") == "naïve 名前 it's [/bold]"


@given(st.text())
def test_no_control_character_survives(text: str) -> None:
    assert all(character.isprintable() for character in printable(text))
