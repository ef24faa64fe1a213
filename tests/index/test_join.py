"""Near-duplicate join equals an all-pairs scan; union-find groups equal graph components; the streamed
components equal the components of the join's pairs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components as scipy_components

from imgdedup.pipeline.hashing.bits import dihedral_hamming, hamming
from imgdedup.pipeline.index import (ClusterIndex, connected_components, near_duplicate_components,
                                     near_duplicate_groups, near_duplicate_pairs, zone_pairs_between_groups)
from tests.index.data import NBYTES, fingerprint_set, flip_bits, nearest_labels


def radii_of(fingerprints, centres, labels):
    return ClusterIndex.build(fingerprints, np.arange(len(labels)), centres, labels).radii


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 160), k=st.integers(1, 12),
       t=st.integers(0, 64), clustered=st.booleans())
def test_pairs_equal_all_pairs_scan(seed, n, k, t, clustered):
    rng = np.random.default_rng(seed)
    fingerprints, centres = fingerprint_set(rng, n, k, clustered)
    labels = nearest_labels(fingerprints, centres)
    pairs, distances = near_duplicate_pairs(fingerprints, labels, centres, radii_of(fingerprints, centres, labels), t)
    full = hamming(fingerprints, fingerprints)
    i, j = np.nonzero(np.triu(full <= t, 1))
    assert np.array_equal(pairs, np.stack([i, j], axis=1).reshape(-1, 2))
    assert np.array_equal(distances, full[i, j])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), t=st.integers(0, 64))
def test_dihedral_pairs_take_the_smaller_distance_of_either_side(seed, t):
    rng = np.random.default_rng(seed)
    fingerprints, centres = fingerprint_set(rng, 60, 4, clustered=True)
    labels = nearest_labels(fingerprints, centres)
    forms = rng.integers(0, 256, (60, 8, NBYTES), dtype=np.uint8)
    forms[:, 0] = fingerprints
    forms[:30, 3] = flip_bits(fingerprints[30:], 0.05, rng)  # rows 0-29 have a form near rows 30-59
    pairs, distances = near_duplicate_pairs(fingerprints, labels, centres,
                                            radii_of(fingerprints, centres, labels), t, dihedral=forms)
    either = np.minimum(dihedral_hamming(forms, fingerprints), dihedral_hamming(forms, fingerprints).T)
    i, j = np.nonzero(np.triu(either <= t, 1))
    assert np.array_equal(pairs, np.stack([i, j], axis=1).reshape(-1, 2))
    assert np.array_equal(distances, either[i, j])


def test_identical_fingerprints_form_one_group():
    rng = np.random.default_rng(1)
    fingerprints, centres = fingerprint_set(rng, 40, 3, clustered=False)
    fingerprints[[5, 17, 33]] = fingerprints[2]
    labels = nearest_labels(fingerprints, centres)
    pairs, distances = near_duplicate_pairs(fingerprints, labels, centres, radii_of(fingerprints, centres, labels), 0)
    assert pairs.tolist() == [[2, 5], [2, 17], [2, 33], [5, 17], [5, 33], [17, 33]] and not distances.any()
    groups = connected_components(40, pairs)
    assert set(np.flatnonzero(groups == 2)) == {2, 5, 17, 33}
    assert np.array_equal(np.delete(groups, [2, 5, 17, 33]), np.delete(np.arange(40), [2, 5, 17, 33]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 200), k=st.integers(1, 4), t=st.integers(0, 80),
       clustered=st.booleans(), dihedral=st.booleans(), batch=st.sampled_from([1, 7, 64, 1024]))
def test_streamed_components_equal_components_of_all_pairs(seed, n, k, t, clustered, dihedral, batch):
    # Few seeds make big groups; copied rows make identical fingerprints, some
    # with the same dihedral forms and some (same plain hash) with other forms,
    # one of which lies near another row.
    rng = np.random.default_rng(seed)
    fingerprints, centres = fingerprint_set(rng, n, k, clustered)
    forms = rng.integers(0, 256, (n, 8, NBYTES), dtype=np.uint8)
    forms[:, 3] = flip_bits(fingerprints[rng.permutation(n)], 0.05, rng)
    if n:
        copies, sources = rng.integers(0, n, (2, n // 3))
        fingerprints[copies] = fingerprints[sources]
        forms[copies[::2]] = forms[sources[::2]]
    forms[:, 0] = fingerprints
    forms = forms if dihedral else None
    labels = nearest_labels(fingerprints, centres)
    radii = radii_of(fingerprints, centres, labels)
    pairs, _ = near_duplicate_pairs(fingerprints, labels, centres, radii, t, dihedral=forms)
    groups = near_duplicate_components(fingerprints, labels, centres, radii, t, dihedral=forms, batch=batch)
    assert np.array_equal(groups, connected_components(n, pairs))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 150), t=st.integers(0, 60), zone=st.integers(0, 40),
       batch=st.sampled_from([1, 64, 1024]))
def test_zone_pairs_are_the_closest_pair_between_each_two_groups(seed, n, t, zone, batch):
    rng = np.random.default_rng(seed)
    fingerprints, centres = fingerprint_set(rng, n, 3, True)
    forms = rng.integers(0, 256, (n, 8, NBYTES), dtype=np.uint8)
    forms[:, 3] = flip_bits(fingerprints[rng.permutation(n)], 0.05, rng)
    if n:
        copies, sources = rng.integers(0, n, (2, n // 3))
        fingerprints[copies], forms[copies] = fingerprints[sources], forms[sources]
    forms[:, 0] = fingerprints
    labels = nearest_labels(fingerprints, centres)
    radii = radii_of(fingerprints, centres, labels)
    joined = near_duplicate_groups(fingerprints, labels, centres, radii, t, forms, verify_t=t + zone, batch=batch)
    # Against all pairs within t + zone: groups from those within t, the rest reduced between groups.
    pairs, distances = near_duplicate_pairs(fingerprints, labels, centres, radii, t + zone, dihedral=forms)
    direct = distances <= t
    groups = connected_components(n, pairs[direct])
    assert np.array_equal(joined.labels, groups)
    expected, expected_distances = zone_pairs_between_groups(groups, pairs[~direct], distances[~direct])
    assert np.array_equal(joined.zone_pairs, expected) and np.array_equal(joined.zone_distances, expected_distances)
    assert (joined.zone_distances > t).all() and (joined.zone_distances <= t + zone).all()
    ends = groups[joined.zone_pairs]
    assert (ends[:, 0] != ends[:, 1]).all()
    assert len({tuple(sorted(e)) for e in ends.tolist()}) == len(ends)  # one pair per two groups
    if zone == 0:
        assert len(joined.zone_pairs) == 0


def test_streamed_components_refuse_a_radius_below_the_members():
    rng = np.random.default_rng(2)
    fingerprints, centres = fingerprint_set(rng, 20, 2, clustered=False)
    labels = nearest_labels(fingerprints, centres)
    with pytest.raises(ValueError):
        near_duplicate_components(fingerprints, labels, centres, radii_of(fingerprints, centres, labels) - 1, 8)


def test_radius_below_the_members_is_refused():
    rng = np.random.default_rng(2)
    fingerprints, centres = fingerprint_set(rng, 20, 2, clustered=False)
    labels = nearest_labels(fingerprints, centres)
    with pytest.raises(ValueError):
        near_duplicate_pairs(fingerprints, labels, centres, radii_of(fingerprints, centres, labels) - 1, 8)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), edges=st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)), max_size=80))
def test_components_match_graph_components_labelled_by_smallest_member(n, edges):
    pairs = np.array([(a % n, b % n) for a, b in edges], dtype=np.int64).reshape(-1, 2)
    groups = connected_components(n, pairs)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, reference = scipy_components(graph, directed=False)
    for component in np.unique(reference):
        members = np.flatnonzero(reference == component)
        assert np.all(groups[members] == members.min())
