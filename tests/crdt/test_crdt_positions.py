"""The persistent chain -> position maps of the causal index equal plain dictionaries."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from synod.crdt import positions

CHAINS = st.integers(min_value=0, max_value=5_000)
ENTRIES = st.lists(st.tuples(CHAINS, st.integers(min_value=1, max_value=50)), max_size=40)


def build(entries: list[tuple[int, int]]) -> tuple[positions.Positions, dict[int, int]]:
    tree, plain = positions.EMPTY, {}
    for chain, position in entries:
        tree = positions.raised(tree, chain, position)
        plain[chain] = max(plain.get(chain, 0), position)
    return tree, plain


@settings(max_examples=200, deadline=None)
@given(ENTRIES, ENTRIES, st.lists(CHAINS, max_size=20))
def test_raise_union_and_reads_equal_a_dictionary(
    first: list[tuple[int, int]], second: list[tuple[int, int]], probes: list[int]
) -> None:
    one, plain_one = build(first)
    two, plain_two = build(second)
    merged = positions.union(one, two)
    plain = {
        chain: max(plain_one.get(chain, 0), plain_two.get(chain, 0))
        for chain in plain_one.keys() | plain_two.keys()
    }
    assert dict(positions.items(merged)) == plain
    assert list(positions.items(merged)) == sorted(plain.items())
    for chain in [*probes, *plain]:
        assert positions.get(merged, chain) == plain.get(chain, 0)
    # Maps are never modified: the inputs still read as before.
    assert dict(positions.items(one)) == plain_one
    assert dict(positions.items(two)) == plain_two


def test_union_with_a_map_it_covers_shares_the_object() -> None:
    base = positions.EMPTY
    for chain in range(3_000):
        base = positions.raised(base, chain, 1)
    extended = positions.raised(base, 7, 9)
    assert positions.union(extended, base) is extended
    assert positions.union(base, extended) is extended
    assert positions.raised(extended, 7, 3) is extended
