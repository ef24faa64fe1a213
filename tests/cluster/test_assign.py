"""Nearest-centre assignment by Hamming distance on 64-bit words."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.hamming import BLOCK
from imgdedup.pipeline.hashing.bits import hamming

# Byte widths that are and are not whole 64-bit words.
point_sets = st.sampled_from([1, 3, 8, 13, 32]).flatmap(lambda nbytes: st.tuples(
    arrays(np.uint8, st.tuples(st.integers(0, 40), st.just(nbytes))),
    arrays(np.uint8, st.tuples(st.integers(1, 12), st.just(nbytes)))))


@settings(max_examples=150, deadline=None)
@given(point_sets)
def test_assign_is_the_first_nearest_centre(sets):
    points, centres = sets
    labels, distances = assign(points, centres)
    assert labels.dtype == np.int32 and distances.dtype == np.int32
    assert labels.shape == distances.shape == (len(points),)
    if len(points):
        brute = hamming(points, centres)
        np.testing.assert_array_equal(labels, brute.argmin(axis=1))
        np.testing.assert_array_equal(distances, brute.min(axis=1))


def test_more_centres_than_one_block_keep_the_first_nearest():
    rng = np.random.default_rng(5)
    points = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    centres = rng.integers(0, 256, (2 * BLOCK + 37, 32), dtype=np.uint8)
    centres[BLOCK + 5] = centres[2 * BLOCK + 1] = points[7]  # a tie across blocks goes to the lower index
    labels, distances = assign(points, centres)
    brute = hamming(points, centres)
    np.testing.assert_array_equal(labels, brute.argmin(axis=1))
    np.testing.assert_array_equal(distances, brute.min(axis=1))
    assert labels[7] == BLOCK + 5 and distances[7] == 0


def test_all_bits_different_is_the_full_width():
    labels, distances = assign(np.zeros((2, 32), np.uint8), np.full((3, 32), 255, np.uint8))
    np.testing.assert_array_equal(labels, [0, 0])
    np.testing.assert_array_equal(distances, [256, 256])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="no centres"):
        assign(np.zeros((2, 32), np.uint8), np.zeros((0, 32), np.uint8))
    with pytest.raises(ValueError, match="bytes"):
        assign(np.zeros((2, 32), np.uint8), np.zeros((2, 16), np.uint8))
    with pytest.raises(ValueError, match="packed bits"):
        assign(np.zeros(32, np.uint8), np.zeros((2, 32), np.uint8))
