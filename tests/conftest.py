"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

HASH_SEEDS = ("1", "2", "random")


def _outputs_under_hash_seeds(script: str) -> set[str]:
    """Run `script` in fresh interpreters with different PYTHONHASHSEEDs; the set of
    stdout texts has one element when nothing depended on str/bytes hash order."""
    outputs = set()
    for hash_seed in HASH_SEEDS:
        result = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        outputs.add(result.stdout.strip())
    return outputs


@pytest.fixture
def outputs_under_hash_seeds() -> Callable[[str], set[str]]:
    """Python randomises str/bytes hashing per process: a simulator run whose history
    depends on set iteration order gives different digests under these seeds."""
    return _outputs_under_hash_seeds
