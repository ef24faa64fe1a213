"""The key join as Dask tasks: in one pass or several, bucketed, it finds the pairs one process finds."""
from __future__ import annotations

import numpy as np
import pytest
from distributed import Client, LocalCluster

from imgdedup.jobs.bulk_keys import POSTINGS_PER_PASS, block_keys, join_shape, key_candidates
from imgdedup.pipeline.index.key_join import key_candidate_pairs


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


@pytest.mark.parametrize("passes, buckets", [(1, 1), (1, 4), (3, 2), (5, 7)])
def test_the_distributed_join_equals_the_one_in_process(client, passes, buckets):
    rng = np.random.default_rng(5)
    keys = [np.unique(rng.integers(0, 120, rng.integers(0, 30)).astype(np.uint64) << np.uint64(9))
            for _ in range(90)]
    want, _ = key_candidate_pairs(keys, min_shared=3, max_posting=15, new_from=40)
    bounds = ((0, 25), (25, 40), (40, 41), (41, 41), (41, 90))
    blocks = client.scatter([block_keys(keys[a:b], a) for a, b in bounds], hash=False)
    found = key_candidates(client, blocks, new_from=40, min_shared=3, max_posting=15, passes=passes,
                           buckets=buckets)
    assert len(want) and np.array_equal(found, want)


def test_the_join_takes_more_passes_and_buckets_as_the_postings_grow():
    assert join_shape(10**6, workers=2) == (1, 4)
    passes, buckets = join_shape(786 * 10**6, workers=2)
    assert passes == -(-786 * 10**6 // POSTINGS_PER_PASS) and 786 * 10**6 / (passes * buckets) <= 1 << 22
