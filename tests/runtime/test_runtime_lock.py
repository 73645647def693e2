"""One process per node: the lock file refuses a second holder until the first lets go."""

from __future__ import annotations

from pathlib import Path

import pytest

from synod.runtime.lock import NodeAlreadyRunning, hold_exclusive_lock


def test_a_held_lock_refuses_a_second_holder_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "node-0.lock"
    first = hold_exclusive_lock(path)
    try:
        # flock conflicts between open file descriptions, even within one process
        with pytest.raises(NodeAlreadyRunning, match="core 3 is already running") as caught:
            hold_exclusive_lock(path, "core 3")
        assert caught.value.path == path
    finally:
        first.close()


def test_a_released_lock_can_be_taken_again(tmp_path: Path) -> None:
    path = tmp_path / "node-0.lock"
    hold_exclusive_lock(path).close()
    hold_exclusive_lock(path).close()
