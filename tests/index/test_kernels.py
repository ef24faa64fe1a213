"""Word kernels: padding, popcounts up to the full width, dense and gathered scans agree."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.hashing.bits import hamming
from pipeline.index.kernels import as_words, dense_distances, row_popcount, scan_classes


@pytest.mark.parametrize("nbytes", [8, 12, 16, 32])
def test_word_distances_equal_byte_distances_for_any_width(nbytes):
    rng = np.random.default_rng(nbytes)
    a = rng.integers(0, 256, (5, nbytes), dtype=np.uint8)
    b = rng.integers(0, 256, (7, nbytes), dtype=np.uint8)
    b[0] = ~a[0]  # every bit differs
    assert np.array_equal(dense_distances(as_words(a)[:, None], as_words(b)), hamming(a, b))
    assert np.array_equal(row_popcount(as_words(a) ^ as_words(b[:5])), np.diagonal(hamming(a, b[:5])))


def test_full_width_distance_does_not_wrap():
    row = np.random.default_rng(0).integers(0, 256, (1, 32), dtype=np.uint8)
    assert row_popcount(as_words(row) ^ as_words(~row))[0] == 256


def test_dense_blocks_and_gathered_ranges_find_the_same_pairs():
    rng = np.random.default_rng(1)
    rows = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    queries = np.concatenate([rows[:20] ^ (rng.random((20, 32)) < 0.05).astype(np.uint8), rows[20:40]])
    # Class 0 (rows 0-99) is visited by all 40 queries (dense block); class 1
    # (rows 100-299) by 3 queries with sub-ranges (gathered pairs).
    query = np.concatenate([np.arange(40), [0, 5, 21]])
    cls = np.concatenate([np.zeros(40, int), [1, 1, 1]])
    lo = np.concatenate([np.zeros(40, int), [100, 150, 120]])
    hi = np.concatenate([np.full(40, 100), [300, 160, 300]])
    found_q, found_r, found_d = scan_classes(as_words(queries)[:, None], as_words(rows), query, cls, lo, hi, 110)
    full = hamming(queries, rows)
    expected = {(q, r) for q, a, b in zip(query, lo, hi) for r in range(a, b) if full[q, r] <= 110}
    assert set(zip(found_q.tolist(), found_r.tolist())) == expected
    assert len(found_q) == len(expected)
    assert np.array_equal(found_d, full[found_q, found_r])
