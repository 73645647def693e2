"""Pure checkers over what a FastPay run produced (FastPay paper, section 5: safety and
conservation of value), for tests and the simulator.

- `double_spends`: at most one transfer may be certified per (sender, sequence number);
  two certificates for one key mean that more than f authorities misbehaved.
  `conflicting_transfers` is the same rule over bare transfers (what the simulator's
  history holds: `TransferApplied` and `TransferCertified` events).
- `final_balances`: genesis plus every distinct certified transfer; with honest
  quorums no balance is negative (no overspend) and the total is the initial supply.
  `balances_after` is the same over bare transfers.
- `conservation_gap`: for one authority's shards, balances held plus amounts debited
  but not yet credited (cross-shard updates in flight) minus the initial supply; zero
  at every moment for an honest authority.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from synod.crypto import NodeId
from synod.fastpay.authority import AuthorityShard
from synod.fastpay.messages import CertifiedTransferOrder, Transfer, certificate_key


def double_spends(certificates: Iterable[CertifiedTransferOrder]) -> list[tuple[NodeId, int]]:
    """(sender, sequence number) keys certified for two different transfers."""
    return conflicting_transfers(certificate.transfer for certificate in certificates)


def conflicting_transfers(transfers: Iterable[Transfer]) -> list[tuple[NodeId, int]]:
    """(sender, sequence number) keys that two different transfers claim."""
    seen: dict[tuple[NodeId, int], Transfer] = {}
    conflicts = []
    for transfer in transfers:
        key = (NodeId(transfer.sender), transfer.sequence_number)
        if key in seen and seen[key] != transfer:
            conflicts.append(key)
        seen.setdefault(key, transfer)
    return conflicts


def final_balances(
    genesis: Mapping[bytes, int], certificates: Iterable[CertifiedTransferOrder]
) -> dict[bytes, int]:
    """Genesis plus every distinct certified transfer (one per key)."""
    return balances_after(genesis, (certificate.transfer for certificate in certificates))


def balances_after(genesis: Mapping[bytes, int], transfers: Iterable[Transfer]) -> dict[bytes, int]:
    """Genesis plus every distinct transfer (the first one seen per key counts)."""
    balances = {bytes(account): balance for account, balance in genesis.items()}
    unique: dict[tuple[bytes, int], Transfer] = {}
    for transfer in transfers:
        unique.setdefault((bytes(transfer.sender), transfer.sequence_number), transfer)
    for transfer in unique.values():
        balances[transfer.sender] = balances.get(transfer.sender, 0) - transfer.amount
        balances[transfer.recipient] = balances.get(transfer.recipient, 0) + transfer.amount
    return balances


class CreditWithoutDebit(AssertionError):
    """An authority credited a transfer that none of its shards debited."""


def conservation_gap(shards: Iterable[AuthorityShard], supply: int) -> int:
    """Held + in flight - supply for one authority's shards (0 when value is conserved).

    Raises `CreditWithoutDebit` when a credit has no matching debit.
    """
    debited: dict[tuple[NodeId, int], int] = {}
    credited: set[tuple[NodeId, int]] = set()
    held = 0
    for shard in shards:
        for account in shard.accounts.values():
            held += account.balance
            for certificate in account.confirmed:
                debited[certificate_key(certificate)] = certificate.transfer.amount
            for certificate in account.received:
                credited.add(certificate_key(certificate))
    if not credited <= set(debited):
        raise CreditWithoutDebit(f"{len(credited - set(debited))} credits without a debit")
    in_flight = sum(amount for key, amount in debited.items() if key not in credited)
    return held + in_flight - supply
