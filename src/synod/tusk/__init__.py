"""Tusk DAG consensus with passive cores and untrusted drivers.

- `synod.tusk.messages`  headers, votes, certificates, requests and signed answers; `CODEC`
- `synod.tusk.ordering`  the DAG and the Tusk commit rule (leader rule: `leader_of`)
- `synod.tusk.core`      `TuskCore`, the passive core (answers requests, never initiates)
- `synod.tusk.driver`    `Driver` and `ByzantineDriver`, the untrusted carriers
- `synod.tusk.config`    `tusk.toml`: `TuskNetwork`, `load_network`, `render_config`

To run cores and drivers on a network: `synod.runtime.tusk_node`.

See docs/tusk.md for the theory of operation.
"""

from synod.quorum.committee import Committee
from synod.tusk.core import (
    CaughtUp,
    CertificateConflictDetected,
    CheckpointInstalled,
    Committed,
    EquivocationDetected,
    FellBehind,
    GapClosed,
    GapGivenUp,
    LogFilled,
    PendingTransactionsDropped,
    TuskConfig,
    TuskCore,
)
from synod.tusk.driver import ByzantineDriver, Driver
from synod.tusk.messages import CODEC, TuskMessage
from synod.tusk.ordering import leader_of

__all__ = [
    "CODEC",
    "ByzantineDriver",
    "CaughtUp",
    "CertificateConflictDetected",
    "CheckpointInstalled",
    "Committed",
    "Committee",
    "Driver",
    "EquivocationDetected",
    "FellBehind",
    "GapClosed",
    "GapGivenUp",
    "LogFilled",
    "PendingTransactionsDropped",
    "TuskConfig",
    "TuskCore",
    "TuskMessage",
    "leader_of",
]
