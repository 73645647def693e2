"""Deterministic simulator: virtual time, seeded faults, Byzantine nodes, checkers."""
