"""The key join: pairs of images sharing feature keys, in one process, bucketed, and the ingest-side index."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from imgdedup.pipeline.index.key_join import (KeyIndex, key_candidate_pairs, key_postings, pairs_sharing,
                                              shared_key_pairs, split_by_bucket)

MAX_POSTING = 12


@pytest.fixture(scope="module")
def keys() -> list[np.ndarray]:
    """60 images' keys drawn from 80 values, so pairs share 0..several keys and some keys are stop words."""
    rng = np.random.default_rng(3)
    return [np.unique(rng.integers(0, 80, rng.integers(0, 25)).astype(np.uint64) << np.uint64(20))
            for _ in range(60)]


def brute_shared(keys: list[np.ndarray], new_from: int, stop_words_of: list[np.ndarray] | None = None
                 ) -> dict[tuple[int, int], int]:
    """Keys each pair shares (at least one row at or after ``new_from``), leaving out keys held by more than
    ``MAX_POSTING`` of ``stop_words_of`` (``keys`` by default)."""
    flat = np.concatenate(stop_words_of or keys)
    values, counts = np.unique(flat, return_counts=True)
    stop = set(values[counts > MAX_POSTING].tolist())
    shared = {}
    for i, j in itertools.combinations(range(len(keys)), 2):
        if j >= new_from:
            count = len((set(keys[i].tolist()) & set(keys[j].tolist())) - stop)
            if count:
                shared[i, j] = count
    return shared


@pytest.mark.parametrize("new_from", [0, 41])
@pytest.mark.parametrize("min_shared", [1, 3])
def test_pairs_sharing_keys_match_a_brute_force_count(keys, new_from, min_shared):
    pairs, counts = key_candidate_pairs(keys, min_shared=min_shared, max_posting=MAX_POSTING, new_from=new_from)
    want = {pair: count for pair, count in brute_shared(keys, new_from).items() if count >= min_shared}
    assert want and {(int(i), int(j)): int(c) for (i, j), c in zip(pairs, counts)} == want
    assert np.array_equal(pairs, pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))])


def test_bucketed_counts_summed_by_pair_equal_the_single_pass(keys):
    flat, rows = key_postings(keys)
    single = key_candidate_pairs(keys, min_shared=2, max_posting=MAX_POSTING)
    for buckets in (1, 3, 7):
        parts = split_by_bucket(flat, buckets, rows)
        assert sum(len(k) for k, _ in parts) == len(flat)
        counted = [shared_key_pairs(k, r, max_posting=MAX_POSTING) for k, r in parts]
        pairs, counts = pairs_sharing(counted, 2)
        assert np.array_equal(pairs, single[0]) and np.array_equal(counts, single[1])


def test_a_stop_word_key_makes_no_pairs():
    common = np.array([7], np.uint64)
    keys = [common] * 5
    assert len(key_candidate_pairs(keys, min_shared=1, max_posting=4)[0]) == 0
    assert len(key_candidate_pairs(keys, min_shared=1, max_posting=5)[0]) == 10


def test_the_index_finds_what_the_join_finds_most_shared_first(keys):
    index = KeyIndex(nbytes=2)
    stored = keys[:45]
    for row, image_keys in enumerate(stored):
        index.add(f"image{row}", image_keys, np.array([row, 255 - row], np.uint8))
    assert len(index) == 45
    for query in keys[45:]:
        found = index.query(query, min_shared=2, max_posting=MAX_POSTING)
        want = brute_shared([*stored, query], new_from=45, stop_words_of=stored)
        expected = sorted(((f"image{i}", c) for (i, _), c in want.items() if c >= 2),
                          key=lambda item: (-item[1], int(item[0][5:])))
        assert [(image_id, shared) for image_id, shared, _ in found] == expected
        for image_id, _, fingerprint in found:
            row = int(image_id[5:])
            assert fingerprint.tolist() == [row, 255 - row]


def test_the_index_holds_the_largest_feature_key_and_refuses_larger_ones():
    index = KeyIndex(nbytes=1)
    largest = np.array([(3 << 32) | 0xFFFFFFFF], np.uint64)  # an all-ones word in the last place
    index.add("a", largest, np.zeros(1, np.uint8))
    index.add("b", largest, np.zeros(1, np.uint8))
    assert [image_id for image_id, *_ in index.query(largest, min_shared=1, max_posting=10)] == ["a", "b"]
    with pytest.raises(ValueError, match="below 2"):
        index.add("c", np.array([1 << 34], np.uint64), np.zeros(1, np.uint8))
