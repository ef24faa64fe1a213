"""Compiled range scans: any width, forms, ranges, threads and many matches agree with byte-wise distances."""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imgdedup.pipeline.hashing.bits import hamming
from imgdedup.pipeline.hamming import as_words, word_columns
from imgdedup.pipeline.index import kernels
from imgdedup.pipeline.index.kernels import scan_ranges


def _columns(rows: np.ndarray) -> np.ndarray:
    return word_columns(as_words(rows))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), t=st.integers(0, 140), threads=st.integers(1, 3),
       nbytes=st.sampled_from([8, 32]))
def test_range_scan_returns_exactly_the_pairs_within_t(seed, t, threads, nbytes):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, (1500, nbytes), dtype=np.uint8)
    queries = rng.integers(0, 256, (6, 2, nbytes), dtype=np.uint8)
    queries[0, 1] = rows[700] ^ (rng.random(nbytes) < 0.05).astype(np.uint8)
    query = np.sort(rng.integers(0, 6, 9))
    lo = rng.integers(0, 1500, 9)
    hi = np.minimum(lo + rng.integers(0, 1400, 9), 1500)
    hi[0] = lo[0]  # an empty range
    with mock.patch.object(kernels, "_ROWS_PER_THREAD", 1):  # small scans split too
        found_q, found_r, found_d = scan_ranges(as_words(queries), _columns(rows), query, lo, hi, t, threads=threads)
    distance = np.stack([hamming(queries[:, f], rows) for f in range(2)]).min(axis=0)
    expected = [(q, r) for q, a, b in zip(query, lo, hi) for r in range(a, b) if distance[q, r] <= t]
    assert list(zip(found_q.tolist(), found_r.tolist())) == expected
    assert np.array_equal(found_d, distance[found_q, found_r])


def test_range_scan_refuses_ranges_not_grouped_by_query():
    rows = np.zeros((10, 32), dtype=np.uint8)
    with pytest.raises(ValueError, match="grouped by query"):
        scan_ranges(as_words(np.zeros((2, 1, 32), np.uint8)), _columns(rows), np.array([1, 0]),
                    np.array([0, 0]), np.array([10, 10]), 5)


@pytest.mark.parametrize("first_buffer", [1 << 22, 3000])
def test_range_scan_keeps_every_match_in_range_order_when_they_outgrow_the_buffers(first_buffer, monkeypatch):
    monkeypatch.setattr(kernels, "_FIRST_BUFFER", first_buffer)
    rows = np.zeros((40_000, 32), dtype=np.uint8)  # every row is a match
    queries = np.zeros((2, 1, 32), dtype=np.uint8)
    queries[1, 0, 0] = 1
    rows[::3, 0] = 1  # a third of the rows at distance 0 from query 1, the rest at 1
    query = np.array([0, 0] + [1] * 200)
    lo, hi = np.r_[0, 39_990, np.arange(0, 40_000, 200)], np.r_[40_000, 40_000, np.arange(200, 40_200, 200)]
    found_q, found_r, found_d = scan_ranges(as_words(queries), _columns(rows), query, lo, hi, 1)
    assert len(found_q) == 80_010
    assert np.array_equal(np.bincount(found_q), [40_010, 40_000])
    assert np.array_equal(found_r, np.r_[np.arange(40_000), np.arange(39_990, 40_000), np.arange(40_000)])
    assert np.array_equal(found_d[found_q == 1], np.arange(40_000) % 3 != 0)


def test_range_scan_refuses_ranges_outside_the_rows_and_other_widths():
    rows = _columns(np.zeros((10, 32), dtype=np.uint8))
    queries = as_words(np.zeros((1, 1, 32), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        scan_ranges(queries, rows, np.array([0]), np.array([0]), np.array([11]), 5)
    with pytest.raises(ValueError, match="words"):
        scan_ranges(as_words(np.zeros((1, 1, 64), np.uint8)), rows, np.array([0]), np.array([0]), np.array([5]), 5)
