"""Federated Byzantine agreement systems as analysable data (SCP paper sections 3 and 4).

Theory of operation
-------------------
An FBAS is a set of nodes, each with a quorum set: a nested threshold over other nodes.
A *quorum* is a non-empty set of nodes that contains a slice of each of its members
(paper Definition 3).  The network is safe only if every two quorums intersect (quorum
intersection, section 4.1) and live only while the nodes that fail do not hit every
quorum (a *blocking set* for the whole network).

This module holds the analysable form of such a network: nodes are numbered 0..n-1 in
file order, and each quorum set is a `Threshold` over node indices.  Node sets are Python
integers used as bitsets (bit i = node i), which makes the fixpoint computations below
(largest quorum inside a set, the closure of a failure under v-blocking) cheap.

Semantics that the known tools treat differently are made explicit at load time (see
`LoadOptions` in `synod.fbas.load`); by the time an `Fbas` exists every node has
one of three states:

- a `Threshold` (threshold >= 1): an ordinary quorum set;
- `ALWAYS_SATISFIED` (threshold 0, no entries): the node is unconstrained, any set that
  holds it satisfies it (chosen with ``missing_qset="unconstrained"``);
- ``None``: the node can never be in a quorum (no known quorum set, the default, as in
  stellar-core and fbas_analyzer).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True, slots=True, eq=False)
class Threshold:
    """A quorum set over node indices: `threshold` of (validators + inner sets).

    Validators and inner sets are kept sorted so that equal quorum sets compare and hash
    equal; analyses share work between nodes whose quorum sets are equal.  The hash and
    the bitset of all members are computed once, since analyses key dictionaries by
    quorum sets and nested structures would otherwise be rehashed on every lookup.
    """

    threshold: int
    validators: tuple[int, ...] = ()
    inner: tuple[Threshold, ...] = ()
    member_bits: int = field(init=False, repr=False)
    _hash: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        bits = 0
        for validator in self.validators:
            bits |= 1 << validator
        for inner in self.inner:
            bits |= inner.member_bits
        object.__setattr__(self, "member_bits", bits)
        object.__setattr__(self, "_hash", hash((self.threshold, self.validators, self.inner)))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, Threshold) or self._hash != other._hash:
            return False
        return (
            self.threshold == other.threshold
            and self.validators == other.validators
            and self.inner == other.inner
        )

    @property
    def entry_count(self) -> int:
        return len(self.validators) + len(self.inner)

    def members(self) -> Iterator[int]:
        """Every node named at any depth (each once when the set is sane)."""
        yield from self.validators
        for inner in self.inner:
            yield from inner.members()

    def depth(self) -> int:
        """Nesting depth: 0 for a flat set."""
        return 1 + max(inner.depth() for inner in self.inner) if self.inner else 0


ALWAYS_SATISFIED = Threshold(0)
"""The quorum set of an unconstrained node: satisfied by every set."""


def threshold_of(
    threshold: int, validators: Iterable[int], inner: Iterable[Threshold]
) -> Threshold:
    """Build a `Threshold` in canonical (sorted) order."""
    return Threshold(
        threshold,
        tuple(sorted(validators)),
        tuple(sorted(inner, key=_sort_key)),
    )


def _sort_key(qset: Threshold) -> tuple[int, tuple[int, ...], int]:
    return (qset.threshold, qset.validators, len(qset.inner))


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the input said about a node, besides its quorum set."""

    public_key: str
    name: str | None = None
    home_domain: str | None = None
    isp: str | None = None
    country: str | None = None
    organization: str | None = None
    active: bool = True
    validating: bool | None = None
    listed: bool = True
    """False for validators named in quorum sets but absent from the input."""

    @property
    def label(self) -> str:
        """A short human label: the name if any, else the start of the key."""
        return self.name or abbreviate_key(self.public_key)


def abbreviate_key(public_key: str) -> str:
    return public_key if len(public_key) <= 12 else public_key[:5] + "…" + public_key[-4:]


GROUPINGS = ("org", "domain", "isp", "country")
"""The attributes that nodes can be grouped by."""


@dataclass(frozen=True)
class Fbas:
    """A loaded network: node metadata, quorum sets (by index) and load notes."""

    nodes: tuple[NodeInfo, ...]
    qsets: tuple[Threshold | None, ...]
    notes: tuple[str, ...] = ()
    index: dict[str, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        assert len(self.nodes) == len(self.qsets)
        if not self.index:
            self.index.update({node.public_key: i for i, node in enumerate(self.nodes)})
        assert len(self.index) == len(self.nodes), "node keys must be unique"
        for qset in self.qsets:
            if qset is not None:
                assert all(0 <= m < len(self.nodes) for m in qset.members())

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def all_nodes(self) -> int:
        """The bitset of every node."""
        return (1 << len(self.nodes)) - 1

    @cached_property
    def compiled(self) -> tuple[CompiledQset | None, ...]:
        """Quorum sets with validators as bitsets (equal sets share one object)."""
        cache: dict[Threshold, CompiledQset] = {}
        return tuple(None if q is None else compile_qset(q, cache) for q in self.qsets)

    def key_set(self, nodes: int) -> list[str]:
        """The public keys of a bitset, in index order."""
        return [self.nodes[i].public_key for i in iter_bits(nodes)]

    def bits_of(self, keys: Iterable[str]) -> int:
        """The bitset of some public keys (raises KeyError for an unknown key)."""
        bits = 0
        for key in keys:
            bits |= 1 << self.index[key]
        return bits

    def group_label(self, node: int, grouping: str | None) -> str | None:
        """The group of `node` under `grouping` (None when the input does not say)."""
        info = self.nodes[node]
        if grouping is None:
            return None
        if grouping == "org":
            return info.organization
        if grouping == "domain":
            return info.home_domain
        if grouping == "isp":
            return info.isp
        if grouping == "country":
            return info.country
        raise ValueError(f"unknown grouping {grouping!r}; expected one of {GROUPINGS}")

    def groups(self, grouping: str | None) -> list[tuple[str, int]]:
        """Partition of all nodes into (label, bitset) groups.

        A node without a value for the grouping forms a group of its own, labelled by the
        node (fbas_analyzer's merge rule), so every node belongs to exactly one group.
        """
        by_label: dict[str, int] = {}
        for node in range(len(self.nodes)):
            label = self.group_label(node, grouping)
            if label is None:
                label = "node " + self.nodes[node].label
                if label in by_label:
                    label = "node " + self.nodes[node].public_key
            by_label[label] = by_label.get(label, 0) | (1 << node)
        return list(by_label.items())

    def with_qsets(self, qsets: Sequence[Threshold | None]) -> Fbas:
        """The same nodes with other quorum sets (used by the reductions)."""
        return Fbas(self.nodes, tuple(qsets), self.notes, dict(self.index))


@dataclass(frozen=True, slots=True, eq=False)
class CompiledQset:
    """A `Threshold` with its validators as one bitset, for fast set checks."""

    threshold: int
    validator_bits: int
    inner: tuple[CompiledQset, ...]
    entry_count: int


def compile_qset(qset: Threshold, cache: dict[Threshold, CompiledQset]) -> CompiledQset:
    found = cache.get(qset)
    if found is not None:
        return found
    bits = 0
    for validator in qset.validators:
        bits |= 1 << validator
    compiled = CompiledQset(
        qset.threshold,
        bits,
        tuple(compile_qset(inner, cache) for inner in qset.inner),
        qset.entry_count,
    )
    cache[qset] = compiled
    return compiled


def iter_bits(bits: int) -> Iterator[int]:
    """Indices of the set bits, lowest first."""
    while bits:
        low = bits & -bits
        yield low.bit_length() - 1
        bits ^= low


def bits_from(indices: Iterable[int]) -> int:
    bits = 0
    for index in indices:
        bits |= 1 << index
    return bits


def is_satisfied(qset: CompiledQset, nodes: int) -> bool:
    """True when the bitset `nodes` contains a slice of `qset`."""
    needed = qset.threshold - (qset.validator_bits & nodes).bit_count()
    if needed <= 0:
        return True
    for inner in qset.inner:
        if is_satisfied(inner, nodes):
            needed -= 1
            if needed <= 0:
                return True
    return False


def is_quorum(fbas: Fbas, nodes: int) -> bool:
    """True when `nodes` is non-empty and satisfies the quorum set of each member."""
    if not nodes:
        return False
    compiled = fbas.compiled
    for node in iter_bits(nodes):
        qset = compiled[node]
        if qset is None or not is_satisfied(qset, nodes):
            return False
    return True


def largest_quorum_within(fbas: Fbas, nodes: int, faulty: int = 0) -> int:
    """The greatest quorum inside `nodes` (0 when there is none), of the network with
    `faulty` deleted when given (faulty nodes count as present in every slice).

    Removes, until nothing changes, each member whose quorum set the remaining members do
    not satisfy; the union of all quorums inside `nodes` survives, since quorums are
    closed under union.
    """
    compiled = fbas.compiled
    remaining = nodes & ~faulty
    while True:
        verdict: dict[int, bool] = {}
        kept = remaining
        for node in iter_bits(remaining):
            qset = compiled[node]
            if qset is None:
                kept &= ~(1 << node)
                continue
            ok = verdict.get(id(qset))
            if ok is None:
                ok = is_satisfied(qset, remaining | faulty)
                verdict[id(qset)] = ok
            if not ok:
                kept &= ~(1 << node)
        if kept == remaining:
            return remaining
        remaining = kept


def shrink_to_minimal_quorum(fbas: Fbas, quorum: int, keep: int = 0, faulty: int = 0) -> int:
    """A minimal quorum inside the quorum `quorum` (containing `keep` if one exists that
    does; `keep` must then be a node of every quorum found on the way), of the network
    with `faulty` deleted when given.

    One pass suffices: a node whose removal left no quorum is still needed after later
    removals, because a smaller set holds no more quorums.
    """
    assert is_quorum_despite(fbas, quorum, faulty)
    current = quorum
    for node in iter_bits(quorum):
        bit = 1 << node
        if not current & bit or bit & keep:
            continue
        smaller = largest_quorum_within(fbas, current & ~bit, faulty)
        if smaller and (smaller & keep) == keep:
            current = smaller
    return current


def is_blocking(fbas: Fbas, failed: int) -> bool:
    """True when the nodes outside `failed` contain no quorum (`failed` hits every quorum)."""
    return largest_quorum_within(fbas, fbas.all_nodes & ~failed) == 0


def is_quorum_despite(fbas: Fbas, nodes: int, faulty: int) -> bool:
    """True when `nodes` is a quorum of the network with `faulty` deleted (paper section
    4.1): non-empty, disjoint from `faulty`, and each member has a slice inside
    `nodes | faulty` (faulty nodes count as present in every slice: they say anything)."""
    if not nodes or nodes & faulty:
        return False
    compiled = fbas.compiled
    present = nodes | faulty
    for node in iter_bits(nodes):
        qset = compiled[node]
        if qset is None or not is_satisfied(qset, present):
            return False
    return True


def trust_successors(fbas: Fbas, node: int) -> list[int]:
    qset = fbas.qsets[node]
    return [] if qset is None else sorted(set(qset.members()))


def strongly_connected_components(fbas: Fbas, within: int) -> list[int]:
    """Strongly connected components (as bitsets) of the trust graph restricted to
    `within`: an edge v -> w when w appears in v's quorum set.  Iterative Tarjan."""
    order: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    components: list[int] = []
    successors = {
        v: [w for w in trust_successors(fbas, v) if within >> w & 1] for v in iter_bits(within)
    }
    counter = 0
    for root in iter_bits(within):
        if root in order:
            continue
        work: list[tuple[int, int]] = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                order[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            advanced = False
            children = successors[node]
            while position < len(children):
                child = children[position]
                position += 1
                if child not in order:
                    work.append((node, position))
                    work.append((child, 0))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], order[child])
            if advanced:
                continue
            if low[node] == order[node]:
                component = 0
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component |= 1 << member
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def quorum_cores(fbas: Fbas) -> list[int]:
    """Disjoint node sets such that every minimal quorum lies inside one of them, and
    each is itself a quorum whose trust graph is strongly connected.

    Every quorum Q contains a quorum inside one strongly connected component: take a
    component C that Q touches from which no other such component is reachable; the
    members of Q in C find their slices in Q within C.  So minimal quorums lie inside
    components; each component is cut down to its largest quorum, whose own components
    are examined again until nothing changes.
    """
    cores: list[int] = []
    pending = [largest_quorum_within(fbas, fbas.all_nodes)]
    while pending:
        part = pending.pop()
        if not part:
            continue
        for component in strongly_connected_components(fbas, part):
            quorum = largest_quorum_within(fbas, component)
            if quorum == component:
                cores.append(component)
            elif quorum:
                pending.append(quorum)
    return sorted(cores, key=lambda core: (-core.bit_count(), core))


def restrict_qset(qset: Threshold, allowed: int) -> Threshold:
    """`qset` with validators outside `allowed` dropped and the threshold kept, so that
    those validators count as never present (used to analyse a part of the network)."""
    return Threshold(
        qset.threshold,
        tuple(v for v in qset.validators if allowed >> v & 1),
        tuple(restrict_qset(inner, allowed) for inner in qset.inner),
    )


def without(fbas: Fbas, removed: int) -> Fbas:
    """The network as if the nodes of `removed` had failed or left: they keep their
    place (others may still name them) but can never be in a quorum."""
    qsets = [None if removed >> v & 1 else q for v, q in enumerate(fbas.qsets)]
    gone = removed.bit_count()
    return Fbas(fbas.nodes, tuple(qsets), (*fbas.notes, f"{gone} nodes removed"), dict(fbas.index))
