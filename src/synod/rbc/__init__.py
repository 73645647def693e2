"""Bracha's reliable broadcast: the foundation's small test protocol and a usable primitive."""

from synod.rbc.core import CODEC, Delivered, Echo, Initial, RbcCore, RbcMessage, Ready, Rejected

__all__ = ["CODEC", "Delivered", "Echo", "Initial", "RbcCore", "RbcMessage", "Ready", "Rejected"]
