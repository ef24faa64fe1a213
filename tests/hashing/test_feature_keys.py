"""Feature keys: a crop whose fingerprint lies far beyond the verified zone still shares keys with its original."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.hashing.algorithms import get_algorithm
from imgdedup.pipeline.hashing.decode import decode_image
from imgdedup.pipeline.hashing.feature_keys import WORDS, feature_keys
from imgdedup.pipeline.hashing.fingerprint import fingerprint_batch
from tests.jobs.bulk_sets import KEYED_PHOTOS, off_centre_crop

CONFIG = load_config()
DECODE = dict(max_pixels=CONFIG.decode.max_pixels, formats=CONFIG.decode.formats,
              draft_min_side=CONFIG.decode.draft_min_side)


@pytest.fixture(scope="module")
def dev_photos(test_data) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((test_data / "dev").glob("*.jpg"))}


def keys_of(data: bytes) -> np.ndarray:
    return feature_keys(decode_image(data, name="picture", **DECODE), CONFIG.hash.feature_keypoints)


def test_keys_are_sorted_unique_words_tagged_with_their_place(dev_photos):
    keys = keys_of(next(iter(dev_photos.values())))
    assert keys.dtype == np.uint64 and 0 < len(keys) <= WORDS * CONFIG.hash.feature_keypoints
    assert np.all(np.diff(keys.astype(np.float64)) > 0)
    assert set((keys >> np.uint64(32)).tolist()) <= set(range(WORDS))
    assert np.array_equal(keys, keys_of(next(iter(dev_photos.values()))))  # deterministic


def test_a_crop_beyond_the_zone_shares_keys_with_its_original_and_different_photos_do_not(dev_photos):
    algorithm = get_algorithm("lbph", size=CONFIG.hash.size, bits=CONFIG.hash.bits, trim_borders=True)
    for name in KEYED_PHOTOS:
        pair = [dev_photos[name], off_centre_crop(dev_photos[name])]
        forms = fingerprint_batch(pair, algorithm, dihedral=True, **DECODE).dihedral
        distance = int(np.bitwise_count(forms[1, 0] ^ forms[0]).sum(axis=-1).min())
        assert distance > CONFIG.dedup.verify_up_to, name  # the fingerprint alone never asks the verifier
        shared = len(np.intersect1d(*map(keys_of, pair)))
        assert shared >= 3 * CONFIG.dedup.key_min_shared, (name, shared)
    keys = {name: keys_of(data) for name, data in dev_photos.items()}
    most = max(len(np.intersect1d(keys[a], keys[b])) for a, b in itertools.combinations(keys, 2))
    assert most < CONFIG.dedup.key_min_shared


def test_a_flat_picture_has_no_keys_and_the_batch_carries_keys_only_when_asked(dev_photos):
    assert len(feature_keys(Image.new("RGB", (300, 200), (90, 120, 200)), 200)) == 0
    algorithm = get_algorithm("lbph", size=32, bits=256)
    data = list(dev_photos.values())[:2]
    assert fingerprint_batch(data, algorithm, dihedral=False, **DECODE).feature_keys is None
    batch = fingerprint_batch(data, algorithm, dihedral=False, feature_keypoints=50, **DECODE)
    assert len(batch.feature_keys) == 2 and all(0 < len(k) <= 4 * 50 for k in batch.feature_keys)
