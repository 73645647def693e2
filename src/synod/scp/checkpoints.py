"""Checkpoints: how a node away for longer than peers keep decisions rejoins.

Theory of operation.  Decisions (`synod.scp.decisions`) prove one slot each and peers
keep only the last `retained_decisions` of them.  Beyond that a node needs the
application's state.  Every `checkpoint_interval` slots each validator *attests* the
digest of its application's state after that slot (`Attestation`, signed for the
network under its own domain).  An application's state after slot S is a function of
the values of slots 1..S, so correct nodes attest the same digest for S; a node keeps
the attestations that agree with its own (the `retained_checkpoints` latest checkpoint
slots) and sends them, with the state the application supplies, to a node that asks.

The receiver trusts a checkpoint on the same ground as a decision: the attesting
nodes, all naming the same slot and digest, must contain one of the receiver's own
slices (an attestation stands alone, like an EXTERNALIZE: its node has delivered the
slot).  Within the Byzantine bound every slice of an intact node contains a correct
node, and a correct node attests only its own state, so the digest is the state's.
Attestations are public, so a Byzantine peer can send honest attestations with a
forged state: the application checks the state against the digest
(`Application.checkpoint_matches`) before the node hands it out.

Why attestations rather than values that commit to a hash chain of the log: values
are the application's, opaque to SCP, and a chain inside them would tie every
application (and Stellar's values) to one format; an attestation costs each validator
one signature per `checkpoint_interval` slots and leaves the digest to the application
(the replicated log attests a hash chain of its slots, `synod.scp.log`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from synod.quorum.qset import QuorumSet, all_validators, is_satisfied_by
from synod.scp.messages import MAX_PROOF_ENVELOPES, Attestation, Checkpoint


def check_checkpoint(
    checkpoint: Checkpoint,
    *,
    local_qset: QuorumSet,
    admits: Callable[[bytes], bool],
    verifier: Callable[[Attestation], bool],
    gathered: AttestationGathering | None = None,
) -> bool:
    """True when `checkpoint`'s attestations hold for a node with quorum set
    `local_qset` (see the module docstring): structure first, then whether the
    attesting members of `local_qset` hold one of its slices, then their signatures
    (at most the validators `local_qset` names).

    With `gathered`, attestations of earlier answers for the same slot and digest
    count too (each verified when it came), and this answer's verified ones are kept
    for later: a peer that missed some attestations (lost messages) still helps."""
    members = set(all_validators(local_qset))
    attesting: dict[bytes, Attestation] = {}
    for attestation in checkpoint.attestations:
        if (
            attestation.slot_index != checkpoint.slot_index
            or attestation.digest != checkpoint.digest
            or attestation.node_id in attesting
            or not admits(attestation.node_id)
        ):
            return False
        if attestation.node_id in members:
            attesting[attestation.node_id] = attestation
    if gathered is None:
        if not is_satisfied_by(local_qset, attesting.keys()):
            return False
        return all(verifier(attesting[node]) for node in sorted(attesting))
    # verified and kept even when they hold no slice yet: the next answer may complete it
    known = gathered.of(checkpoint.slot_index, checkpoint.digest)
    fresh = [attesting[node] for node in sorted(attesting) if node not in known]
    if not all(verifier(attestation) for attestation in fresh):
        return False
    gathered.add(checkpoint.slot_index, checkpoint.digest, fresh)
    return is_satisfied_by(local_qset, gathered.of(checkpoint.slot_index, checkpoint.digest))


class AttestationGathering:
    """Verified attestations from the checkpoint answers a node received, by (slot,
    digest), for at most `max_keys` keys (oldest forgotten first: a Byzantine member
    can sign any number of digests, and honest answers come again on the next tick)."""

    def __init__(self, max_keys: int = 16) -> None:
        self._max_keys = max_keys
        self._by_key: dict[tuple[int, bytes], set[bytes]] = {}

    def of(self, slot_index: int, digest: bytes) -> set[bytes]:
        """The nodes whose attestation of `digest` for `slot_index` verified."""
        return self._by_key.get((slot_index, digest), set())

    def add(self, slot_index: int, digest: bytes, attestations: Iterable[Attestation]) -> None:
        key = (slot_index, digest)
        nodes = self._by_key.pop(key, set())
        nodes.update(attestation.node_id for attestation in attestations)
        self._by_key[key] = nodes
        while len(self._by_key) > self._max_keys:
            del self._by_key[next(iter(self._by_key))]

    def clear(self) -> None:
        self._by_key.clear()


class AttestationStore:
    """The attestations a node keeps, by checkpoint slot and node.

    Slots the node attested itself (`own`) keep the attestations that agree with its
    digest, at most `MAX_PROOF_ENVELOPES` per slot, for the `retained` highest such
    slots.  Attestations for a slot the node has not attested yet wait in `early`, one
    per node and slot; the caller bounds which slots it admits there (its window)."""

    def __init__(self, retained: int) -> None:
        self._retained = retained
        self.own: dict[int, bytes] = {}
        """slot -> the digest this node attested."""
        self._agreeing: dict[int, dict[bytes, Attestation]] = {}
        self.early: dict[int, dict[bytes, Attestation]] = {}

    def has(self, attestation: Attestation) -> bool:
        slot_index, node = attestation.slot_index, attestation.node_id
        return node in self._agreeing.get(slot_index, {}) or node in self.early.get(
            slot_index, {}
        )

    def conflicts(self, attestation: Attestation) -> bool:
        """The node attested a slot that this node attested too, with another digest."""
        digest = self.own.get(attestation.slot_index)
        return digest is not None and digest != attestation.digest

    def add(self, attestation: Attestation) -> bool:
        """Keep a checked attestation; True when it agrees with an own attestation
        (it is then worth persisting), False when it waits in `early`."""
        slot_index = attestation.slot_index
        if slot_index in self.own:
            agreeing = self._agreeing.setdefault(slot_index, {})
            if len(agreeing) < MAX_PROOF_ENVELOPES:
                agreeing[attestation.node_id] = attestation
            return True
        self.early.setdefault(slot_index, {})[attestation.node_id] = attestation
        return False

    def add_own(self, attestation: Attestation) -> list[Attestation]:
        """Record this node's attestation; returns the early ones that agree with it,
        now kept (those that do not agree are dropped)."""
        slot_index = attestation.slot_index
        self.own[slot_index] = attestation.digest
        agreeing = self._agreeing.setdefault(slot_index, {})
        agreeing[attestation.node_id] = attestation
        adopted = [
            early
            for early in self.early.pop(slot_index, {}).values()
            if early.digest == attestation.digest
        ]
        for early in adopted[: MAX_PROOF_ENVELOPES - 1]:
            agreeing[early.node_id] = early
        return adopted[: MAX_PROOF_ENVELOPES - 1]

    def restore(self, attestation: Attestation, own: bool) -> None:
        if own:
            self.own[attestation.slot_index] = attestation.digest
        self._agreeing.setdefault(attestation.slot_index, {})[attestation.node_id] = attestation

    def prune(self, early_below: int) -> list[tuple[int, bytes]]:
        """Forget early attestations below `early_below` and the kept ones of all but
        the `retained` highest own slots; returns the (slot, node) of kept ones gone."""
        for slot_index in [index for index in self.early if index < early_below]:
            del self.early[slot_index]
        gone: list[tuple[int, bytes]] = []
        for slot_index in sorted(self.own)[: max(0, len(self.own) - self._retained)]:
            del self.own[slot_index]
            gone.extend((slot_index, node) for node in self._agreeing.pop(slot_index, {}))
        return gone

    def best_from(self, slot_index: int, qset: QuorumSet, scan: int = 8) -> int | None:
        """The slot to offer a node missing slots from `slot_index`: the lowest own one
        at or after it whose kept attestations hold a slice of `qset` (the asker's
        quorum set is not known; a lost attestation must not make every answer
        unprovable), among the first `scan`; else the lowest own one."""
        candidates = sorted(index for index in self.own if index >= slot_index)[:scan]
        for index in candidates:
            if is_satisfied_by(qset, self._agreeing.get(index, {}).keys()):
                return index
        return candidates[0] if candidates else None

    def agreeing(self, slot_index: int) -> Iterable[Attestation]:
        """The kept attestations of an own slot, by node id."""
        found = self._agreeing.get(slot_index, {})
        return [found[node] for node in sorted(found)]
