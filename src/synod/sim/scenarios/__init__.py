"""Scenarios: each protocol set up in the simulator with its checkers."""
