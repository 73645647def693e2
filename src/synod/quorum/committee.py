"""Weighted threshold committees: a fixed set of members, each with a voting weight.

Theory of operation (the classic Byzantine quorum bound, as FastPay section 3.1 and
Narwhal/Tusk section 2 use it, generalised from counting members to summing weights).
Let N be the total weight and f the largest weight the faulty members may hold; safety
needs N >= 3f + 1, so the tolerated faulty weight is f = (N - 1) // 3.

- `quorum_threshold` is the smallest weight strictly above 2N/3 (2f + 1 when
  N = 3f + 1; always equal to N - f).  Two sets that each reach it overlap in more than
  N/3 >= f weight, so every two quorums share an honest member; and the honest members
  alone, weighing at least N - f, always reach it.
- `validity_threshold` is the smallest weight strictly above N/3 (f + 1 when
  N = 3f + 1).  A set that reaches it weighs more than f, so it contains an honest
  member: enough to trust a claim that at least one honest member makes.

Only *distinct members* count: repeated names count once and names outside the
committee weigh nothing, so a caller may pass the raw list of signers it received.

`CommitteeConfig` is the form that configuration files hold (TOML or JSON, node ids in
`synod.crypto.node_id_text` form); `Committee.from_config` checks it and names the
offending entry on error.

Example::

    committee = Committee.equal_weights(node_ids)          # 4 members: f = 1
    committee.quorum_threshold                              # 3
    tally = committee.tally()
    for signer in signers:
        tally.add(signer)
    if tally.has_quorum: ...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Annotated

import msgspec

from synod.crypto import PUBLIC_KEY_BYTES, InvalidNodeId, NodeId, node_id_text, parse_node_id

MAX_MEMBERS = 10_000
"""Most members a committee configuration may list."""
MAX_WEIGHT = 2**32 - 1
"""Largest weight of one member (keeps totals exact and configuration files sane)."""


def quorum_threshold_of(total_weight: int) -> int:
    """Smallest integer weight w with 3w > 2 * total_weight."""
    return 2 * total_weight // 3 + 1


def validity_threshold_of(total_weight: int) -> int:
    """f + 1: the smallest weight that must include an honest member (Narwhal's rule).

    Any set weighing more than the faulty bound f contains an honest member, which is
    all validity needs; "more than N/3" would ask for f + 2 when N is a multiple of 3.
    """
    return max_faulty_weight_of(total_weight) + 1


def max_faulty_weight_of(total_weight: int) -> int:
    """Largest f with total_weight >= 3f + 1."""
    return (total_weight - 1) // 3


class CommitteeError(ValueError):
    """A committee description is invalid (caller or configuration error)."""


class MemberConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One member as a configuration file writes it."""

    node_id: str
    weight: Annotated[int, msgspec.Meta(ge=1, le=MAX_WEIGHT)] = 1


class CommitteeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A committee as a configuration file writes it.

    In TOML::

        [[members]]
        node_id = "NABC..."
        weight = 2
    """

    members: Annotated[tuple[MemberConfig, ...], msgspec.Meta(min_length=1, max_length=MAX_MEMBERS)]


class Committee:
    """Members with positive integer weights, and the quorum and validity thresholds."""

    __slots__ = (
        "_weights",
        "max_faulty_weight",
        "quorum_threshold",
        "total_weight",
        "validity_threshold",
    )

    def __init__(self, weights: Mapping[NodeId, int]) -> None:
        if not weights:
            raise CommitteeError("a committee needs at least one member")
        for node_id, weight in weights.items():
            if len(node_id) != PUBLIC_KEY_BYTES:
                raise CommitteeError(
                    f"member ids are {PUBLIC_KEY_BYTES}-byte public keys, got {len(node_id)}"
                )
            if isinstance(weight, bool) or not isinstance(weight, int):
                raise CommitteeError(f"weights are integers, got {weight!r}")
            if not 1 <= weight <= MAX_WEIGHT:
                raise CommitteeError(f"weights must be within 1..{MAX_WEIGHT}, got {weight}")
        self._weights: dict[NodeId, int] = {
            NodeId(bytes(node_id)): weights[node_id] for node_id in sorted(weights)
        }
        self.total_weight: int = sum(self._weights.values())
        """N: the sum of all weights."""
        self.max_faulty_weight: int = max_faulty_weight_of(self.total_weight)
        """f: the most faulty weight tolerated (N >= 3f + 1)."""
        self.quorum_threshold: int = quorum_threshold_of(self.total_weight)
        """Smallest weight above 2N/3: any two such sets share an honest member."""
        self.validity_threshold: int = validity_threshold_of(self.total_weight)
        """Smallest weight above N/3: any such set holds an honest member."""

    @classmethod
    def equal_weights(cls, node_ids: Iterable[NodeId]) -> Committee:
        """Every member with weight 1 (the unweighted n >= 3f + 1 committee)."""
        return cls(dict.fromkeys(node_ids, 1))

    @classmethod
    def from_config(cls, config: CommitteeConfig) -> Committee:
        """Build a committee from its configuration form; errors name the member entry."""
        weights: dict[NodeId, int] = {}
        for index, member in enumerate(config.members):
            try:
                node_id = parse_node_id(member.node_id)
            except InvalidNodeId as error:
                raise CommitteeError(f"members[{index}].node_id: {error}") from None
            if node_id in weights:
                raise CommitteeError(f"members[{index}].node_id: {member.node_id} listed twice")
            if not 1 <= member.weight <= MAX_WEIGHT:
                raise CommitteeError(
                    f"members[{index}].weight: expected 1..{MAX_WEIGHT}, got {member.weight}"
                )
            weights[node_id] = member.weight
        return cls(weights)

    @classmethod
    def from_builtins(cls, data: object) -> Committee:
        """Build a committee from parsed TOML or JSON (`{"members": [...]}`)."""
        try:
            config = msgspec.convert(data, CommitteeConfig)
        except msgspec.ValidationError as error:
            raise CommitteeError(f"committee configuration: {error}") from None
        return cls.from_config(config)

    def to_config(self) -> CommitteeConfig:
        """The configuration form (members in sorted id order)."""
        return CommitteeConfig(
            members=tuple(
                MemberConfig(node_id=node_id_text(node_id), weight=weight)
                for node_id, weight in self._weights.items()
            )
        )

    @property
    def members(self) -> list[NodeId]:
        """Member ids in a stable (sorted) order."""
        return list(self._weights)

    @property
    def weights(self) -> Mapping[NodeId, int]:
        """Member id -> weight (a copy)."""
        return dict(self._weights)

    def weight(self, node_id: bytes) -> int:
        """Weight of `node_id`; 0 for a non-member."""
        return self._weights.get(NodeId(node_id), 0)

    def weight_of(self, node_ids: Iterable[bytes]) -> int:
        """Total weight of the distinct members among `node_ids`."""
        return sum(self.weight(node_id) for node_id in set(node_ids))

    def reaches_quorum(self, node_ids: Iterable[bytes]) -> bool:
        """True when the distinct members among `node_ids` weigh at least the quorum threshold."""
        return self.weight_of(node_ids) >= self.quorum_threshold

    def reaches_validity(self, node_ids: Iterable[bytes]) -> bool:
        """True when the distinct members among `node_ids` must include an honest one."""
        return self.weight_of(node_ids) >= self.validity_threshold

    def tally(self) -> WeightTally:
        """An empty accumulator of distinct voters for this committee."""
        return WeightTally(self)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._weights

    def __len__(self) -> int:
        return len(self._weights)

    def __iter__(self) -> Iterator[NodeId]:
        return iter(self._weights)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Committee) and self._weights == other._weights

    def __hash__(self) -> int:
        return hash(tuple(self._weights.items()))

    def __repr__(self) -> str:
        return (
            f"Committee({len(self)} members, total weight {self.total_weight}, "
            f"f={self.max_faulty_weight}, quorum {self.quorum_threshold}, "
            f"validity {self.validity_threshold})"
        )


class WeightTally:
    """Distinct members seen so far (for example the signers of votes) and their weight."""

    __slots__ = ("_seen", "committee", "weight")

    def __init__(self, committee: Committee) -> None:
        self.committee = committee
        self.weight = 0
        """Total weight of the distinct members added."""
        self._seen: set[bytes] = set()

    def add(self, node_id: bytes) -> bool:
        """Count `node_id` once; False (and no change) for a repeat or a non-member."""
        member_weight = self.committee.weight(node_id)
        if member_weight == 0 or node_id in self._seen:
            return False
        self._seen.add(node_id)
        self.weight += member_weight
        return True

    @property
    def voters(self) -> frozenset[bytes]:
        """The distinct members counted."""
        return frozenset(self._seen)

    @property
    def has_quorum(self) -> bool:
        """The counted weight reaches the quorum threshold."""
        return self.weight >= self.committee.quorum_threshold

    @property
    def has_validity(self) -> bool:
        """The counted weight reaches the validity threshold."""
        return self.weight >= self.committee.validity_threshold
