"""FastPay: settlement by Byzantine consistent broadcast.

`messages` (wire format), `authority` (one shard of an authority, a passive server core),
`client` (an account owner's active core), `localnet` (an in-memory deterministic driver).
See docs/fastpay.md.
"""
