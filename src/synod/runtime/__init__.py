"""The only place with I/O: asyncio TCP, request/response, SQLite storage, node hosts.

- `synod.runtime.storage`: `SqliteStorage`, a core's persisted records (WAL, FULL sync);
- `synod.runtime.transport`: `PeerTransport`, authenticated framed links between peers;
- `synod.runtime.rpc`: `RpcServer` / `RpcClient` for passive servers and their clients;
- `synod.runtime.host`: `NodeHost`, which drives one `synod.core.Core` by the contract;
- `synod.runtime.logs`: JSON-lines logging on stderr.
- `synod.runtime.lock` / `nodes`: one process per node; restoring a core from its store.
- `synod.runtime.scp_node`: SCP log nodes (`LogNode`, `run_log_node`), `submit_entries`,
  `read_log`;
- `synod.runtime.rbc_node`: reliable-broadcast members (`RbcNode`), paced broadcasts.
- `synod.runtime.fastpay_node` / `fastpay_wallet`: FastPay authority shards and wallets.
- `synod.runtime.tusk_node`: Tusk cores, drivers, the submit client, commit-log reading;
- `synod.runtime.crdt_node`: `LogNode`, a BFT-CRDT node sharing a log (relayer, peers).

Nothing is re-exported here: importing one module (the storage, say) does not import
the whole runtime.  See docs/runtime.md.
"""
