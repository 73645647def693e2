"""Bracha's reliable broadcast: the foundation's small test protocol and a usable primitive."""

from synod.rbc.core import (
    CODEC,
    Delivered,
    Echo,
    Forward,
    Initial,
    RbcCore,
    RbcMessage,
    Ready,
    Rejected,
    Status,
)

__all__ = [
    "CODEC",
    "Delivered",
    "Echo",
    "Forward",
    "Initial",
    "RbcCore",
    "RbcMessage",
    "Ready",
    "Rejected",
    "Status",
]
