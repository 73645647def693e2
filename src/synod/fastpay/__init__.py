"""FastPay: settlement by Byzantine consistent broadcast.

`messages` (wire format), `authority` (one shard of an authority, a passive server core),
`client` (an account owner's active core), `localnet` (an in-memory deterministic driver).
`config` (committee, server and genesis files), `wallet` (account keys and their
clients' records).  Shards and wallets on a real network: `synod.runtime.fastpay_node`,
`synod.runtime.fastpay_wallet`.  See docs/fastpay.md.
"""
