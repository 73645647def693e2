"""A Byzantine fault tolerant JSON CRDT (Kleppmann, PaPoC 2022), sans-I/O.

Modules:
  `messages`  signed, hash-named updates, their operations, reconciliation messages
  `causal`    the update DAG, its exact reachability index, the bounded waiting buffer
  `positions` persistent chain -> position maps of that index (shared, never copied)
  `sequence`  the chunked RGA behind lists and text
  `document`  the JSON document (maps, lists, text, counters) and validity of references
  `replica`   `Replica`, the `synod.core.Core` that edits, delivers and reconciles
  `pacing`    byte budgets that pace answers to peers' requests
  `snapshot`  the persisted state a restart loads instead of replaying every update
  `log`       the shared log application: genesis, appends, entries, digests
  `config`    `node.toml`: `NodeConfig`, `load_config`, `render_config`

To run a node on a network: `synod.runtime.crdt_node`.

See docs/crdt.md for the theory of operation.
"""
