"""Quorum math: federated quorum sets, weighted committees and FBAS analysis."""
