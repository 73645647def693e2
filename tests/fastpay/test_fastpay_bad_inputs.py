"""Bad input to FastPay's files and commands: each is a typed error naming what is wrong,
never a traceback (docs/fastpay.md, *Files*)."""

from __future__ import annotations

import pytest

from synod.crypto import KeyPair, node_id_text
from synod.fastpay.wallet import DamagedWallet, Wallet
from synod.quorum.committee import Committee

AUTHORITIES = [KeyPair.from_seed(bytes([index]) * 32) for index in range(1, 5)]
COMMITTEE = Committee({keys.node_id: 1 for keys in AUTHORITIES})
ALICE = KeyPair.from_seed(b"a" * 32)


def test_a_sent_record_whose_index_is_not_eight_bytes_is_a_damaged_wallet() -> None:
    # an accounts.json edited by hand: the key's index lost a byte (struct.error before)
    wallet = Wallet(ALICE, 1, {b"fastpay-client/sent/" + bytes(7): b"\x00"})
    expected = f"the records of {node_id_text(ALICE.node_id)} are damaged"
    with pytest.raises(DamagedWallet, match=expected):
        wallet.client(COMMITTEE, "accounts.json")
