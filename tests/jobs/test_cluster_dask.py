"""Hamming K-means over Dask partitions gives the in-memory result, field by field."""
from __future__ import annotations

import dask
import numpy as np
import pytest
from distributed import Client, LocalCluster

from imgdedup.jobs.cluster import DaskPartitions, assign_partitions, distributed_kmeans
from imgdedup.pipeline.cluster.kmeans import hamming_kmeans, partial_stats
from tests.cluster.planted import planted_clusters


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as dask_client:
        yield dask_client


def _partitions(fingerprints: np.ndarray, cuts: list[int]) -> list:
    return [dask.delayed(part) for part in np.split(fingerprints, cuts)]


def _assert_same(distributed, local):
    np.testing.assert_array_equal(distributed.centres, local.centres)
    np.testing.assert_array_equal(distributed.labels, local.labels)
    np.testing.assert_array_equal(distributed.counts, local.counts)
    assert distributed.n_batches == local.n_batches and distributed.inertia == local.inertia


@pytest.mark.parametrize("seeding", ["k-means++", "k-means||"])
@pytest.mark.parametrize("rows_per_block", [300, 1 << 18])
def test_partitions_give_the_in_memory_result(client, seeding, rows_per_block):
    fingerprints = np.random.default_rng(0).integers(0, 256, (1500, 32), dtype=np.uint8)
    # Uneven partitions and an empty one; batches and the seeding sample span several.
    settings = dict(seed=4, batch_size=200, max_batches=12, tol=-1.0, seed_sample_size=700, seeding=seeding)
    local = hamming_kmeans(fingerprints, 24, **settings)
    # Blocks of several partitions and one alone (the steps run as Dask tasks), or one block (fitted on the client).
    distributed = distributed_kmeans(_partitions(fingerprints, [100, 100, 640, 1111]), 24,
                                     rows_per_block=rows_per_block, **settings)
    assert distributed.n_batches == 12
    _assert_same(distributed, local)


def test_planted_clusters_over_partitions(client):
    fingerprints, truth, seeds = planted_clusters(np.random.default_rng(5), n_seeds=6, per_seed=40, flips=5)
    local = hamming_kmeans(fingerprints, 6, seed=1, batch_size=64)
    distributed = distributed_kmeans(_partitions(fingerprints, [50, 120, 200]), 6, seed=1, batch_size=64)
    _assert_same(distributed, local)
    assert sorted(map(bytes, distributed.centres)) == sorted(map(bytes, seeds))
    assert len(set(zip(distributed.labels.tolist(), truth.tolist()))) == 6


def test_more_classes_than_fingerprints_over_partitions(client):
    fingerprints = np.random.default_rng(3).integers(0, 256, (5, 32), dtype=np.uint8)
    distributed = distributed_kmeans(_partitions(fingerprints, [2, 2]), 9, seed=0)
    _assert_same(distributed, hamming_kmeans(fingerprints, 9, seed=0))
    assert (distributed.counts == 0).sum() == 4


def test_batch_statistics_are_summed_from_the_partitions(client):
    rng = np.random.default_rng(7)
    fingerprints = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    centres = rng.integers(0, 256, (10, 32), dtype=np.uint8)
    # Partitions of 30, 1, 169 and 100 rows in blocks of at least 50: the first three join.
    source = DaskPartitions(_partitions(fingerprints, [30, 31, 200]), rows_per_block=50)
    assert source.n == 300
    np.testing.assert_array_equal(source.offsets, [0, 200, 300])
    indices = np.sort(rng.choice(300, 120, replace=False))
    stats, distances = source.batch_stats(indices, centres)
    expected = partial_stats(fingerprints[indices], centres)
    np.testing.assert_array_equal(stats.bit_counts, expected.bit_counts)
    np.testing.assert_array_equal(stats.sizes, expected.sizes)
    assert distances.shape == (120,)
    np.testing.assert_array_equal(source.take(indices[:7]), fingerprints[indices[:7]])
    labels = np.concatenate([part_labels for part_labels, _ in dask.compute(*assign_partitions(
        source.partitions, centres))])
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), partial_stats(fingerprints, centres).sizes)


def test_scattered_partitions_are_accepted(client):
    fingerprints = np.random.default_rng(8).integers(0, 256, (400, 32), dtype=np.uint8)
    futures = client.scatter(np.split(fingerprints, [150, 260]))
    distributed = distributed_kmeans(futures, 7, seed=2, batch_size=100, max_batches=5)
    _assert_same(distributed, hamming_kmeans(fingerprints, 7, seed=2, batch_size=100, max_batches=5))
