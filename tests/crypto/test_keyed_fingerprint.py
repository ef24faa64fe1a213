"""Keyed fingerprints: distance-preserving tokens, sealed hashes, and why tokens are not encryption."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from imgdedup.pipeline.crypto.keyed_fingerprint import (SEAL_OVERHEAD, fingerprint_width, fingerprints,
                                         open_hashes, seal_hashes, token_parameters,
                                         tokens)
from imgdedup.pipeline.config import DecodeConfig
from imgdedup.pipeline.crypto.group_key import GroupKey
from imgdedup.pipeline.errors import IntegrityError
from imgdedup.pipeline.hashing.algorithms import get_algorithm
from imgdedup.pipeline.hashing.fingerprint import fingerprint_batch

KEY = GroupKey(bytes(range(32)))
OTHER = GroupKey(bytes(range(1, 33)))

hash_batches = st.sampled_from([8, 16, 32]).flatmap(
    lambda nbytes: arrays(np.uint8, st.tuples(st.integers(2, 24), st.just(nbytes))))


def _pairwise_distances(rows: np.ndarray) -> np.ndarray:
    return np.bitwise_count(rows[:, None, :] ^ rows[None, :, :]).sum(axis=-1)


@settings(max_examples=200, deadline=None)
@given(hash_batches)
def test_tokens_preserve_every_pairwise_distance(hashes):
    assert np.array_equal(_pairwise_distances(tokens(KEY, hashes)), _pairwise_distances(hashes))


@settings(max_examples=50, deadline=None)
@given(hash_batches)
def test_tokens_depend_on_the_key(hashes):
    mine, theirs = tokens(KEY, hashes), tokens(OTHER, hashes)
    assert mine.shape == hashes.shape and mine.dtype == np.uint8
    assert np.array_equal(mine, tokens(KEY, hashes.copy()))
    assert not np.array_equal(mine, theirs)
    assert not np.array_equal(mine, hashes)


def test_token_parameters_are_a_permutation_and_stable():
    permutation, mask = token_parameters(KEY, 32)
    assert sorted(permutation.tolist()) == list(range(256))
    assert mask.shape == (32,) and mask.dtype == np.uint8
    assert not np.array_equal(permutation, token_parameters(OTHER, 32)[0])
    assert not np.array_equal(permutation[:64], token_parameters(KEY, 8)[0])
    # Tokens already in a store must stay valid across releases: pin one.
    assert tokens(KEY, np.arange(32, dtype=np.uint8)[None]).tobytes().hex() == (
        "bb9ab6638d483e2f8babe027ad343a1df7761cbea981fea75cc4a88bd7dff346")


def _recover_token_key(hashes: np.ndarray, known_tokens: np.ndarray):
    """Solve for the permutation and mask from known (hash, token) pairs.

    Token bit j is hash bit perm[j] XOR mask[j], so over all pairs the column
    T[:, j] XOR H[:, perm[j]] is constant; any other column k matches only by
    chance. Returns the candidate table (bits, bits) and the recovered pair.
    """
    hash_bits = np.unpackbits(hashes, axis=1).astype(bool)
    token_bits = np.unpackbits(known_tokens, axis=1).astype(bool)
    differences = token_bits[:, :, None] ^ hash_bits[:, None, :]
    candidates = (differences == differences[:1]).all(axis=0)
    permutation = candidates.argmax(axis=1)
    mask = np.packbits(token_bits[0] ^ hash_bits[0, permutation])
    return candidates, permutation, mask


@pytest.mark.parametrize("nbytes, pairs", [(8, 16), (32, 24)])
def test_known_pairs_recover_the_token_key(nbytes, pairs):
    # Tokens are NOT encryption: a couple of dozen known (image, token) pairs
    # give away the whole key, after which any token can be undone or forged.
    rng = np.random.default_rng(nbytes)
    known = rng.integers(0, 256, (pairs, nbytes), dtype=np.uint8)
    candidates, permutation, mask = _recover_token_key(known, tokens(KEY, known))
    assert (candidates.sum(axis=1) == 1).all()
    true_permutation, true_mask = token_parameters(KEY, nbytes)
    assert np.array_equal(permutation, true_permutation)
    assert np.array_equal(mask, true_mask)

    fresh = rng.integers(0, 256, (5, nbytes), dtype=np.uint8)
    observed = tokens(KEY, fresh)
    inverse = np.argsort(permutation)
    untokened = np.packbits(np.unpackbits(observed ^ mask, axis=1)[:, inverse], axis=1)
    assert np.array_equal(untokened, fresh)
    forged = np.packbits(np.unpackbits(fresh, axis=1)[:, permutation], axis=1) ^ mask
    assert np.array_equal(forged, observed)


def test_a_dozen_pairs_pin_down_most_of_a_256_bit_token_key():
    rng = np.random.default_rng(12)
    known = rng.integers(0, 256, (12, 32), dtype=np.uint8)
    candidates, permutation, _ = _recover_token_key(known, tokens(KEY, known))
    pinned = candidates.sum(axis=1) == 1
    assert pinned.mean() > 0.75
    assert np.array_equal(permutation[pinned], token_parameters(KEY, 32)[0][pinned])


def test_known_photographs_recover_the_token_key(test_data):
    # The same attack on real photographs hashed the way ingestion hashes them:
    # whoever knows which public pictures were uploaded hashes them and lines
    # them up with their tokens. Whether a bit is pinned depends on the hashes
    # only (two hash bit columns equal or complementary over all the pictures
    # leave a choice), not on the key.
    paths = sorted((test_data / "dev").glob("*.jpg"))
    decoding = DecodeConfig()
    batch = fingerprint_batch(paths, get_algorithm("lbph"), dihedral=False,
                              max_pixels=decoding.max_pixels, formats=decoding.formats,
                              draft_min_side=decoding.draft_min_side)
    assert not batch.errors and len(batch) == 20
    candidates, permutation, mask = _recover_token_key(batch.hashes, tokens(KEY, batch.hashes))
    assert (candidates.sum(axis=1) == 1).all()
    true_permutation, true_mask = token_parameters(KEY, batch.hashes.shape[1])
    assert np.array_equal(permutation, true_permutation)
    assert np.array_equal(mask, true_mask)


@settings(max_examples=50, deadline=None)
@given(hash_batches)
def test_sealed_round_trip(hashes):
    ids = [f"img-{i}" for i in range(len(hashes))]
    sealed = seal_hashes(KEY, ids, hashes)
    assert sealed.shape == (len(hashes), hashes.shape[1] + SEAL_OVERHEAD)
    assert sealed.shape[1] == fingerprint_width("sealed", hashes.shape[1])
    assert np.array_equal(open_hashes(KEY, ids, sealed), hashes)


def test_sealed_rows_hide_equality():
    hashes = np.zeros((2, 32), dtype=np.uint8)
    sealed = seal_hashes(KEY, ["a", "a"], hashes)
    assert not np.array_equal(sealed[0], sealed[1])


def test_every_byte_of_a_sealed_row_is_protected():
    hashes = np.random.default_rng(0).integers(0, 256, (1, 32), dtype=np.uint8)
    sealed = seal_hashes(KEY, ["img-0"], hashes)
    for position in range(sealed.shape[1]):
        tampered = sealed.copy()
        tampered[0, position] ^= 1
        with pytest.raises(IntegrityError) as info:
            open_hashes(KEY, ["img-0"], tampered)
        assert info.value.subject == "img-0"


def test_sealed_rows_are_bound_to_image_id_and_key():
    hashes = np.random.default_rng(1).integers(0, 256, (2, 32), dtype=np.uint8)
    sealed = seal_hashes(KEY, ["a", "b"], hashes)
    with pytest.raises(IntegrityError, match="^a: "):
        open_hashes(KEY, ["a", "b"], sealed[::-1])
    with pytest.raises(IntegrityError, match="^b: "):
        open_hashes(KEY, ["b"], sealed[:1])
    with pytest.raises(IntegrityError, match="^a: "):
        open_hashes(OTHER, ["a", "b"], sealed)


def test_fingerprints_dispatch_on_mode():
    hashes = np.random.default_rng(2).integers(0, 256, (3, 32), dtype=np.uint8)
    ids = ["x", "y", "z"]
    assert np.array_equal(fingerprints(KEY, "tokens", ids, hashes), tokens(KEY, hashes))
    sealed = fingerprints(KEY, "sealed", ids, hashes)
    assert np.array_equal(open_hashes(KEY, ids, sealed), hashes)
    with pytest.raises(ValueError, match="trust mode"):
        fingerprints(KEY, "plain", ids, hashes)


def test_bad_shapes():
    with pytest.raises(ValueError):
        tokens(KEY, np.zeros(32, dtype=np.uint8))
    with pytest.raises(ValueError):
        seal_hashes(KEY, ["a"], np.zeros((2, 32), dtype=np.uint8))


def test_sealed_feature_keys_round_trip_and_refuse_edits_moves_and_other_keys():
    from imgdedup.pipeline.crypto.keyed_fingerprint import open_feature_keys, seal_feature_keys

    keys = [np.array([1, 2**40 + 5, 2**63 + 9], np.uint64), np.zeros(0, np.uint64)]
    sealed = seal_feature_keys(KEY, ["a", "b"], keys)
    assert sealed[0] != seal_feature_keys(KEY, ["a"], keys[:1])[0]  # a fresh nonce each time
    opened = open_feature_keys(KEY, ["a", "b", "c"], [*sealed, None])
    assert [k.tolist() for k in opened] == [keys[0].tolist(), [], []]
    edited = bytearray(sealed[0])
    edited[20] ^= 1
    for ids, values, key in ((["a"], [bytes(edited)], KEY), (["b"], sealed[:1], KEY),
                             (["a"], sealed[:1], GroupKey(bytes(32)))):
        with pytest.raises(IntegrityError, match="feature keys failed authentication"):
            open_feature_keys(key, ids, values)
    # The jobs' way: a value that fails gives no keys and its error is handed back, the others open.
    failed: list[IntegrityError] = []
    opened = open_feature_keys(KEY, ["b", "a"], [sealed[0], sealed[0]], failed=failed)
    assert [k.tolist() for k in opened] == [[], keys[0].tolist()]
    assert [(exc.subject, exc.stage) for exc in failed] == [("b", "decrypt")]
    # A sealed hash is not a sealed key list, nor the other way round: each has its own associated data.
    with pytest.raises(IntegrityError):
        open_feature_keys(KEY, ["a"], [seal_hashes(KEY, ["a"], np.zeros((1, 32), np.uint8))[0].tobytes()])
