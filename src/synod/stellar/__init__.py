"""Stellar's peer protocol (the overlay of stellar-core) as sans-I/O state machines.

- `synod.stellar.auth`: auth certificates, the ECDH shared key and the HKDF-derived MAC
  keys, as stellar-core computes them;
- `synod.stellar.framing`: record framing (a 4-byte length with the high bit set);
- `synod.stellar.peer`: `StellarPeer`, one connection from either side: the HELLO/AUTH
  handshake, HMAC-SHA256 with sequence numbers, flow control (SEND_MORE_EXTENDED);
- `synod.stellar.state`: what a node serves (recent envelopes, quorum sets by hash);
- `synod.stellar.crawl`: what a crawl learns, written as stellarbeat JSON.

The asyncio transport is `synod.runtime.stellar_overlay`; the command is `synod stellar`.
Needs the `synod[stellar]` extra (stellar-sdk's XDR classes).  See docs/stellar-overlay.md.
"""
