"""Seeding in Hamming space: k-means++ and k-means|| pick one centre per well-separated group."""
from __future__ import annotations

import numpy as np
import pytest

from imgdedup.pipeline.cluster.seeding import kmeans_parallel, kmeans_plusplus, seed_centres
from imgdedup.pipeline.hashing.bits import hamming
from tests.cluster.planted import planted_clusters


@pytest.mark.parametrize("seeding", ["k-means++", "k-means||"])
@pytest.mark.parametrize("seed", range(3))
def test_one_centre_per_planted_group(seeding, seed):
    fingerprints, truth, _ = planted_clusters(np.random.default_rng(seed), n_seeds=10, per_seed=25, flips=4)
    centres = seed_centres(fingerprints, 10, np.random.default_rng(seed), seeding)
    rows = [np.flatnonzero((fingerprints == centre).all(axis=1))[0] for centre in centres]
    assert sorted(truth[rows]) == list(range(10))


@pytest.mark.parametrize("seeding", [kmeans_plusplus, kmeans_parallel])
def test_fewer_distinct_rows_than_k_repeat_chosen_ones(seeding):
    rng = np.random.default_rng(1)
    distinct = rng.integers(0, 256, (3, 32), dtype=np.uint8)
    sample = distinct[rng.integers(0, 3, 40)]
    centres = seeding(sample, 7, np.random.default_rng(0))
    assert centres.shape == (7, 32)
    assert set(map(bytes, centres)) == set(map(bytes, distinct))


def test_rows_of_zero_weight_are_never_chosen():
    rng = np.random.default_rng(4)
    sample = rng.integers(0, 256, (60, 32), dtype=np.uint8)
    weights = np.r_[np.ones(30), np.zeros(30)]
    centres = kmeans_plusplus(sample, 12, np.random.default_rng(2), weights=weights)
    assert hamming(centres, sample[:30]).min(axis=1).max() == 0
    assert len(set(map(bytes, centres))) == 12


def test_same_generator_state_same_centres():
    sample = np.random.default_rng(3).integers(0, 256, (500, 32), dtype=np.uint8)
    for method in ("k-means++", "k-means||"):
        first = seed_centres(sample, 25, np.random.default_rng(9), method)
        np.testing.assert_array_equal(first, seed_centres(sample, 25, np.random.default_rng(9), method))


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown seeding"):
        seed_centres(np.zeros((2, 32), np.uint8), 2, np.random.default_rng(0), "random")
