"""FastPay: settlement by Byzantine consistent broadcast.

`messages` (wire format), `authority` (one shard of an authority, a passive server core),
`client` (an account owner's active core), `checkers` (pure checks of a run's results).
`config` (committee, server and genesis files), `wallet` (account keys and their
clients' records).  Shards and wallets on a real network: `synod.runtime.fastpay_node`,
`synod.runtime.fastpay_wallet`; in one process, in the simulator:
`synod.sim.scenarios.fastpay`.  See docs/fastpay.md.
"""
