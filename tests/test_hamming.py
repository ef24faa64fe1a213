"""Compiled word distances: any width, several forms, more rows than one block, the full width."""
from __future__ import annotations

import numpy as np
import pytest

from imgdedup.pipeline.hamming import as_words, dense_distances, nearest_centres, word_columns
from imgdedup.pipeline.hashing.bits import hamming


def _columns(rows: np.ndarray) -> np.ndarray:
    return word_columns(as_words(rows))


@pytest.mark.parametrize("nbytes", [8, 12, 16, 32, 40, 64])
def test_smallest_and_largest_over_forms_equal_byte_distances_for_any_width(nbytes):
    rng = np.random.default_rng(nbytes)
    queries = rng.integers(0, 256, (5, 3, nbytes), dtype=np.uint8)
    rows = rng.integers(0, 256, (2500, nbytes), dtype=np.uint8)  # more rows than one block
    rows[0] = ~queries[0, 0]
    rows[1] = queries[1, 2]
    per_form = np.stack([hamming(queries[:, f], rows) for f in range(3)], axis=1)
    low, high = dense_distances(as_words(queries), _columns(rows), high=True)
    assert np.array_equal(low, per_form.min(axis=1))
    assert np.array_equal(high, per_form.max(axis=1))
    assert low[1, 1] == 0


def test_full_width_distance_does_not_wrap():
    row = np.random.default_rng(0).integers(0, 256, (1, 64), dtype=np.uint8)
    assert dense_distances(as_words(row)[:, None], _columns(~row))[0, 0] == 512


def test_nearest_centres_of_any_width_equal_byte_distances():
    rng = np.random.default_rng(3)
    for nbytes in (1, 8, 13, 40):
        points = rng.integers(0, 256, (50, nbytes), dtype=np.uint8)
        centres = rng.integers(0, 256, (9, nbytes), dtype=np.uint8)
        labels, distances = nearest_centres(as_words(points), _columns(centres))
        brute = hamming(points, centres)
        np.testing.assert_array_equal(labels, brute.argmin(axis=1))
        np.testing.assert_array_equal(distances, brute.min(axis=1))


def test_widths_the_loops_cannot_handle_are_refused():
    with pytest.raises(ValueError, match="16 bits"):
        as_words(np.zeros((1, 8192), np.uint8))  # 65 536 bits: a distance would wrap
    rows = _columns(np.zeros((3, 32), np.uint8))
    with pytest.raises(ValueError, match="words"):
        dense_distances(as_words(np.zeros((1, 1, 64), np.uint8)), rows)
    with pytest.raises(ValueError, match="words"):
        nearest_centres(as_words(np.zeros((2, 64), np.uint8)), rows)
    with pytest.raises(ValueError, match="no centres"):
        nearest_centres(as_words(np.zeros((2, 32), np.uint8)), rows[:, :0])
