"""A Byzantine fault tolerant JSON CRDT."""
