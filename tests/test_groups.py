"""pipeline/groups.py: stars around canonicals; no pointer beyond t of its canonical, splits listed."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgdedup.pipeline.groups import NONE, star_groups
from imgdedup.pipeline.index.join import connected_components
from imgdedup.pipeline.keep import choose_canonicals, keep_rank

T = 64


def _groups(result):
    """Images by the canonical they point to, as a set of frozensets."""
    return {frozenset(np.flatnonzero(result.canonical == c).tolist()) for c in np.unique(result.canonical)}


def test_chain_ends_beyond_t_never_share_a_group():
    # a - b - c with d(a, c) > t (no pair): the canonical a keeps b, c is split off alone.
    result = star_groups(canonical=[0, 0, 0], rank=[0, 1, 2], pairs=[[0, 1], [1, 2]], distances=[40, 40], t=T)
    assert result.canonical.tolist() == [0, 0, 2]
    assert result.distance.tolist() == [NONE, 40, NONE]
    assert result.review.tolist() == [2]
    # Whichever end is the canonical, the other end is not in its group.
    result = star_groups(canonical=[2, 2, 2], rank=[2, 1, 0], pairs=[[0, 1], [1, 2]], distances=[40, 40], t=T)
    assert result.canonical[0] != result.canonical[2]


def test_one_false_pair_does_not_merge_two_whole_groups():
    # Photo A: 0 (original) and 1, 2 (its copies); photo B: 3 (original) and 4, 5.
    # One false pair between the padded copies 2 and 5 links both into one component.
    pairs = [[0, 1], [0, 2], [1, 2], [3, 4], [3, 5], [4, 5], [2, 5]]
    distances = [10, 20, 25, 12, 18, 22, 60]
    component = connected_components(6, pairs)
    pixels = np.array([900, 400, 400, 800, 400, 400])
    canonical = choose_canonicals(component, keep_rank("largest", pixels=pixels, lossless=None, jpeg_quality=None,
                                                       file_bytes=None, exif=None), np.zeros(6, dtype=bool))
    assert len(set(canonical.tolist())) == 1  # the component rule merges both photos
    rank = np.argsort(np.lexsort((np.arange(6), -pixels)))
    result = star_groups(canonical, rank, pairs, distances, T)
    assert _groups(result) == {frozenset({0, 1, 2}), frozenset({3, 4, 5})}
    assert set(result.review.tolist()) == {3, 4, 5}
    assert result.canonical.tolist() == [0, 0, 0, 3, 3, 3]


def test_split_member_joins_another_committed_canonical_it_is_near():
    # 0 and 1 are committed canonicals in one component; 2 is near 1 only, but the rule chose 0.
    result = star_groups(canonical=[0, 1, 0], rank=[0, 1, 2], pairs=[[0, 1], [1, 2]], distances=[50, 30], t=T)
    assert result.canonical.tolist() == [0, 1, 1]
    assert result.distance.tolist() == [NONE, NONE, 30]
    assert result.review.tolist() == [2]


def test_pairs_beyond_t_are_ignored():
    result = star_groups(canonical=[0, 0], rank=[0, 1], pairs=[[0, 1]], distances=[T + 1], t=T)
    assert result.canonical.tolist() == [0, 1]
    assert result.review.tolist() == [1]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="its own canonical"):
        star_groups([1, 0], [0, 1], np.zeros((0, 2)), [], T)
    with pytest.raises(ValueError, match="distinct"):
        star_groups([0, 0], [0, 0], [[0, 1]], [3], T)
    with pytest.raises(ValueError, match="outside"):
        star_groups([0, 0], [0, 1], [[0, 2]], [3], T)
    assert star_groups([], [], np.zeros((0, 2)), [], T).canonical.shape == (0,)


@st.composite
def pair_graphs(draw):
    n = draw(st.integers(1, 30))
    m = draw(st.integers(0, 3 * n))
    ends = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), min_size=m, max_size=m))
    unique = sorted({(min(i, j), max(i, j)) for i, j in ends if i != j})
    distances = draw(st.lists(st.integers(0, 2 * T), min_size=len(unique), max_size=len(unique)))
    pixels = np.array(draw(st.lists(st.integers(1, 5), min_size=n, max_size=n)))
    fixed = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    return n, np.array(unique, dtype=np.int64).reshape(-1, 2), np.array(distances, dtype=np.int64), pixels, fixed


@settings(max_examples=300, deadline=None)
@given(pair_graphs())
def test_every_pointer_lies_within_t_of_its_canonical_by_a_pair(case):
    n, pairs, distances, pixels, fixed = case
    near = distances <= T
    component = connected_components(n, pairs[near])
    order = np.arange(n)
    canonical = choose_canonicals(component, keep_rank("largest", pixels=pixels, lossless=None, jpeg_quality=None,
                                                       file_bytes=None, exif=None), fixed)
    rank = np.argsort(np.lexsort((order, -pixels, ~fixed)))
    result = star_groups(canonical, rank, pairs, distances, T)
    pair_distance = {(int(i), int(j)): int(d) for (i, j), d in zip(pairs, distances)}
    for x in range(n):
        c = int(result.canonical[x])
        assert result.canonical[c] == c  # stars: a canonical points to itself
        assert component[c] == component[x]  # nothing moves across components
        if c == x:
            assert result.distance[x] == NONE
        else:
            d = pair_distance[(min(x, c), max(x, c))]
            assert d <= T and result.distance[x] == d
        # a member within t of the canonical the rule chose keeps it, and is not listed
        if (min(x, canonical[x]), max(x, canonical[x])) in pair_distance and \
                pair_distance[(min(x, canonical[x]), max(x, canonical[x]))] <= T:
            assert c == canonical[x] and not result.split[x]
        assert result.split[x] == (c != canonical[x])
    # committed canonicals stay canonicals
    assert (result.canonical[fixed] == np.flatnonzero(fixed)).all()
    # the same answer whatever order the pairs come in
    shuffled = np.random.default_rng(0).permutation(len(pairs))
    again = star_groups(canonical, rank, pairs[shuffled], distances[shuffled], T)
    assert np.array_equal(again.canonical, result.canonical)
