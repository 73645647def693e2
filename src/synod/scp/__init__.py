"""The Stellar Consensus Protocol (federated voting, nomination, ballots).

An application builds one `ScpCore` per node from an `ScpConfig` (keys, quorum set,
`Application` hooks), drives it like any `synod.core.Core`, proposes values with
`synod.core.Proposed` and receives `Externalized(slot_index, value)` events.  See
`docs/scp.md`.
"""

from synod.scp.application import (
    Application,
    CheckpointVerified,
    Externalized,
    SlotProposal,
    SlotsUnavailable,
    Validity,
)
from synod.scp.core import QuorumSetStore, RejectReason, ScpConfig, ScpCore
from synod.scp.messages import (
    CODEC,
    Attestation,
    Ballot,
    Checkpoint,
    CheckpointRequest,
    Confirm,
    Decision,
    DecisionRequest,
    DecisionsUnavailable,
    Envelope,
    Externalize,
    Nomination,
    Prepare,
    QuorumSetRequest,
    QuorumSetResponse,
    ScpMessage,
    Statement,
    StateRequest,
    sign_statement,
    verify_envelope,
)

__all__ = [
    "CODEC",
    "Application",
    "Attestation",
    "Ballot",
    "Checkpoint",
    "CheckpointRequest",
    "CheckpointVerified",
    "Confirm",
    "Decision",
    "DecisionRequest",
    "DecisionsUnavailable",
    "Envelope",
    "Externalize",
    "Externalized",
    "Nomination",
    "Prepare",
    "QuorumSetRequest",
    "QuorumSetResponse",
    "QuorumSetStore",
    "RejectReason",
    "ScpConfig",
    "ScpCore",
    "ScpMessage",
    "SlotProposal",
    "SlotsUnavailable",
    "StateRequest",
    "Statement",
    "Validity",
    "sign_statement",
    "verify_envelope",
]
