"""Mini-batch Hamming K-means: statistics, majority centres, the driver, edge cases."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imgdedup.pipeline.cluster.kmeans import (ArraySource, ClusterStats, _reseed_idle, class_count, hamming_kmeans,
                                              majority, member_stats, partial_stats)
from imgdedup.pipeline.hashing.bits import hamming
from tests.cluster.planted import planted_clusters

labelled_rows = st.integers(1, 6).flatmap(lambda k: st.tuples(
    st.just(k),
    st.integers(0, 30).flatmap(lambda n: st.tuples(
        arrays(np.uint8, (n, 8)), arrays(np.int64, n, elements=st.integers(0, k - 1))))))


@settings(max_examples=150, deadline=None)
@given(labelled_rows)
def test_member_stats_count_each_centres_set_bits(case):
    k, (rows, labels) = case
    stats = member_stats(rows, labels, k)
    bits = np.unpackbits(rows, axis=1).astype(np.int64)
    for centre in range(k):
        np.testing.assert_array_equal(stats.bit_counts[centre], bits[labels == centre].sum(axis=0))
        assert stats.sizes[centre] == np.sum(labels == centre)
    assert stats.bit_counts.dtype == stats.sizes.dtype == np.int64


@settings(max_examples=100, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(0, 40), st.just(32))), st.integers(0, 40), st.integers(0, 2**32))
def test_partial_stats_of_parts_add_up_to_the_whole(rows, cut, seed):
    centres = np.random.default_rng(seed).integers(0, 256, (5, 32), dtype=np.uint8)
    whole = partial_stats(rows, centres)
    parts = partial_stats(rows[:cut], centres) + partial_stats(rows[cut:], centres)
    np.testing.assert_array_equal(whole.bit_counts, parts.bit_counts)
    np.testing.assert_array_equal(whole.sizes, parts.sizes)


def test_member_stats_chunks_agree_with_one_pass(monkeypatch):
    from imgdedup.pipeline.cluster import kmeans
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 256, (1000, 32), dtype=np.uint8)
    labels = rng.integers(0, 7, 1000)
    whole = member_stats(rows, labels, 7)
    monkeypatch.setattr(kmeans, "_UNPACK_ROWS", 99)
    chunked = member_stats(rows, labels, 7)
    np.testing.assert_array_equal(whole.bit_counts, chunked.bit_counts)


def test_majority_sets_bits_held_by_most_members_and_keeps_ties():
    previous = np.array([[0b00100001], [0b11110000]], dtype=np.uint8)
    # Centre 0: 4 members; bit 0 in 3, bit 1 in 2 (a tie), bit 2 in 2 (a tie), bit 7 in 1.
    # Centre 1: no members, so it stays where it was.
    counts = np.zeros((2, 8), dtype=np.int64)
    counts[0, [0, 1, 2, 7]] = [3, 2, 2, 1]
    centres = majority(ClusterStats(counts, np.array([4, 0])), previous)
    np.testing.assert_array_equal(centres, [[0b10100000], [0b11110000]])


def _same_partition(labels: np.ndarray, truth: np.ndarray) -> bool:
    pairs = set(zip(labels.tolist(), truth.tolist()))
    return len(pairs) == len(set(labels.tolist())) == len(set(truth.tolist()))


@pytest.mark.parametrize("seeding", ["k-means++", "k-means||"])
@pytest.mark.parametrize("batch_size", [64, 4096])
def test_planted_clusters_are_recovered(seeding, batch_size):
    fingerprints, truth, seeds = planted_clusters(np.random.default_rng(11), n_seeds=12, per_seed=30, flips=6)
    result = hamming_kmeans(fingerprints, 12, seed=3, batch_size=batch_size, max_batches=50, seeding=seeding)
    assert _same_partition(result.labels, truth)
    # The majority of noisy copies is the seed itself.
    assert sorted(map(bytes, result.centres)) == sorted(map(bytes, seeds))
    np.testing.assert_array_equal(np.sort(result.counts), np.full(12, 30))
    assert result.inertia == 6 * len(fingerprints)


def test_result_is_consistent_with_its_centres():
    rng = np.random.default_rng(4)
    fingerprints = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    result = hamming_kmeans(fingerprints, 20, seed=1, batch_size=128, max_batches=10)
    distances = hamming(fingerprints, result.centres)
    np.testing.assert_array_equal(result.labels, distances.argmin(axis=1))
    assert result.inertia == distances.min(axis=1).sum()
    np.testing.assert_array_equal(result.counts, np.bincount(result.labels, minlength=20))
    assert result.centres.shape == (20, 32) and result.centres.dtype == np.uint8
    assert result.labels.dtype == np.int32 and result.counts.dtype == np.int64


def test_same_seed_same_result_other_seed_other_draws():
    rng = np.random.default_rng(9)
    fingerprints = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    settings = dict(batch_size=256, max_batches=15)
    first = hamming_kmeans(fingerprints, 30, seed=7, **settings)
    again = hamming_kmeans(fingerprints, 30, seed=7, **settings)
    other = hamming_kmeans(fingerprints, 30, seed=8, **settings)
    np.testing.assert_array_equal(first.centres, again.centres)
    np.testing.assert_array_equal(first.labels, again.labels)
    assert first.n_batches == again.n_batches
    assert not np.array_equal(first.centres, other.centres)


def test_batch_budget_and_movement_tolerance_stop_the_updates():
    fingerprints = np.random.default_rng(1).integers(0, 256, (3000, 32), dtype=np.uint8)
    assert hamming_kmeans(fingerprints, 16, seed=0, batch_size=100, max_batches=7, tol=-1.0).n_batches == 7
    # Any movement is within a tolerance of every bit.
    assert hamming_kmeans(fingerprints, 16, seed=0, batch_size=100, max_batches=7, tol=1.0).n_batches == 1


def test_more_classes_than_fingerprints_leaves_the_surplus_empty():
    fingerprints = np.random.default_rng(2).integers(0, 256, (5, 32), dtype=np.uint8)
    result = hamming_kmeans(fingerprints, 8, seed=0)
    assert result.centres.shape == (8, 32)
    assert sorted(result.counts.tolist()) == [0, 0, 0, 1, 1, 1, 1, 1]
    assert len(set(result.labels.tolist())) == 5 and result.inertia == 0


def test_identical_fingerprints_make_one_class():
    fingerprints = np.tile(np.arange(32, dtype=np.uint8), (50, 1))
    result = hamming_kmeans(fingerprints, 4, seed=0, batch_size=16)
    np.testing.assert_array_equal(result.counts, [50, 0, 0, 0])
    np.testing.assert_array_equal(result.centres, np.tile(fingerprints[0], (4, 1)))
    assert result.inertia == 0 and not result.labels.any()


def test_repeated_fingerprints_fill_one_class_each_and_leave_the_rest_empty():
    rng = np.random.default_rng(6)
    distinct = rng.integers(0, 256, (3, 32), dtype=np.uint8)
    fingerprints = distinct[rng.integers(0, 3, 90)]
    result = hamming_kmeans(fingerprints, 5, seed=2, batch_size=32)
    assert (result.counts > 0).sum() == 3 and result.counts.sum() == 90 and result.inertia == 0
    assert set(map(bytes, result.centres[result.counts > 0])) == set(map(bytes, distinct))


def test_one_fingerprint_per_class():
    fingerprints = np.random.default_rng(8).integers(0, 256, (40, 32), dtype=np.uint8)
    result = hamming_kmeans(fingerprints, 40, seed=5, seeding="k-means++")
    np.testing.assert_array_equal(result.counts, np.ones(40))
    assert result.inertia == 0


def test_narrow_fingerprints_cluster_too():
    fingerprints, truth, _ = planted_clusters(np.random.default_rng(3), n_seeds=4, per_seed=20, flips=2, nbytes=8)
    assert _same_partition(hamming_kmeans(fingerprints, 4, seed=0).labels, truth)


def test_an_empty_centre_moves_to_the_farthest_batch_row():
    rows = np.array([[0, 0], [0, 1], [255, 255], [0, 3]], dtype=np.uint8)
    centres = np.array([[0, 0], [9, 9], [7, 7]], dtype=np.uint8)
    totals = ClusterStats(np.zeros((3, 16), np.int64), np.array([4, 0, 2]))
    distances = np.array([0, 1, 16, 2], dtype=np.int32)
    _reseed_idle(totals, centres, ArraySource(rows), np.arange(4), distances, 0.0)
    np.testing.assert_array_equal(centres, [[0, 0], [255, 255], [7, 7]])
    np.testing.assert_array_equal(totals.sizes, [4, 1, 2])
    np.testing.assert_array_equal(totals.bit_counts[1], np.ones(16))


def test_a_centre_repeating_another_moves_and_the_first_stays():
    rows = np.array([[0, 0], [0, 1], [255, 255], [0, 3]], dtype=np.uint8)
    centres = np.array([[0, 0], [7, 7], [0, 0]], dtype=np.uint8)
    totals = ClusterStats(np.zeros((3, 16), np.int64), np.array([4, 2, 3]))
    _reseed_idle(totals, centres, ArraySource(rows), np.arange(4), np.array([0, 1, 16, 2], dtype=np.int32), 0.0)
    np.testing.assert_array_equal(centres, [[0, 0], [7, 7], [255, 255]])
    np.testing.assert_array_equal(totals.sizes, [4, 2, 1])


def test_starved_centres_move_fewest_members_first():
    rows = np.array([[0, 0], [0, 1], [255, 255], [0, 3]], dtype=np.uint8)
    centres = np.array([[0, 0], [7, 7], [9, 9], [5, 5]], dtype=np.uint8)
    totals = ClusterStats(np.zeros((4, 16), np.int64), np.array([390, 3, 2, 5]))
    # Below 4% of the average 100 members: centres 2 (2 members, gets the farthest row) and 1 (3).
    _reseed_idle(totals, centres, ArraySource(rows), np.arange(4), np.array([0, 1, 16, 2], dtype=np.int32), 0.04)
    np.testing.assert_array_equal(centres, [[0, 0], [0, 3], [255, 255], [5, 5]])
    np.testing.assert_array_equal(totals.sizes, [390, 1, 1, 5])


def test_rows_sitting_on_centres_are_not_reseeded_onto():
    rows = np.zeros((3, 2), dtype=np.uint8)
    centres = np.zeros((2, 2), dtype=np.uint8)
    totals = ClusterStats(np.zeros((2, 16), np.int64), np.array([3, 0]))
    _reseed_idle(totals, centres, ArraySource(rows), np.arange(3), np.zeros(3, np.int32), 0.0)
    np.testing.assert_array_equal(totals.sizes, [3, 0])


def test_nothing_to_cluster_is_refused():
    with pytest.raises(ValueError, match="no fingerprints"):
        hamming_kmeans(np.zeros((0, 32), np.uint8), 4)
    with pytest.raises(ValueError, match="at least 1"):
        hamming_kmeans(np.zeros((3, 32), np.uint8), 0)


def test_class_count_is_the_setting_or_the_square_root_and_never_more_than_n():
    assert class_count("auto", 10_000) == 100
    assert class_count("auto", 0) == 1
    assert class_count(16, 1000) == 16
    assert class_count(16, 5) == 5
