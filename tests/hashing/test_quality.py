"""Quality score: flat and tiny images low, photos high, invariant where it should be."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from imgdedup.pipeline.config import DecodeConfig, HashConfig
from imgdedup.pipeline.hashing.decode import decode
from imgdedup.pipeline.hashing.quality import QUALITY_SIDE, quality_batch, quality_thumbnail

DEFAULTS = DecodeConfig()
OPTIONS = dict(max_pixels=DEFAULTS.max_pixels, formats=DEFAULTS.formats, draft_min_side=DEFAULTS.draft_min_side)
MIN_QUALITY = HashConfig().min_quality


def score_files(paths) -> dict[str, int]:
    decoded = [decode(p, **OPTIONS) for p in paths]
    thumbs = np.stack([quality_thumbnail(d.image) for d in decoded])
    scores = quality_batch(thumbs, np.array([d.width * d.height for d in decoded]))
    return {p.name: int(s) for p, s in zip(paths, scores)}


def score_image(image: Image.Image) -> int:
    return int(quality_batch(quality_thumbnail(image)[None], np.array([image.width * image.height]))[0])


@pytest.fixture(scope="module")
def photo_scores(test_data) -> dict[str, int]:
    return score_files(sorted((test_data / "dev").glob("*.jpg")))


def test_flat_images_score_zero():
    for value in (0, 128, 255):
        assert score_image(Image.new("RGB", (300, 200), (value, value, value))) == 0


def test_photos_score_well_above_the_threshold(photo_scores):
    assert len(photo_scores) >= 10
    assert min(photo_scores.values()) >= 2 * MIN_QUALITY, photo_scores


def test_dark_sky_and_tiny_images_score_below_every_photo(test_data, photo_scores):
    low_detail = test_data / "pdq" / "low-detail"
    scores = score_files([low_detail / name for name in ("small.jpg", "wee.jpg", "q0003.jpg", "q0004.jpg")])
    assert scores["small.jpg"] < MIN_QUALITY  # an almost black frame
    assert scores["q0003.jpg"] < MIN_QUALITY and scores["q0004.jpg"] < MIN_QUALITY  # clear sky, cloud
    assert scores["wee.jpg"] < 35  # 34 x 42 pixels: a third of the thumbnail
    assert max(scores.values()) < min(photo_scores.values())


def test_shrinking_a_photo_below_the_thumbnail_lowers_its_score(test_data):
    photo = decode(test_data / "dev" / "perception_image3.jpg", **OPTIONS).image
    full = score_image(photo)
    assert full == 100
    assert score_image(photo.resize((32, 32))) <= 100 * 32 * 32 // QUALITY_SIDE**2
    assert score_image(photo.resize((16, 16))) <= 100 * 16 * 16 // QUALITY_SIDE**2


thumb_batches = arrays(np.float32, st.tuples(st.integers(1, 4), st.just(QUALITY_SIDE), st.just(QUALITY_SIDE)),
                       elements=st.floats(0, 255, width=32))


@settings(max_examples=40, deadline=None)
@given(thumbs=thumb_batches)
def test_score_is_bounded_and_invariant_to_dihedral_forms_and_inversion(thumbs):
    pixels = np.full(len(thumbs), 10**6)
    scores = quality_batch(thumbs, pixels)
    assert scores.dtype == np.uint8 and scores.shape == (len(thumbs),)
    assert (scores <= 100).all()
    for form in (np.rot90(thumbs, 1, axes=(1, 2)), thumbs[:, ::-1], np.swapaxes(thumbs, 1, 2), 255 - thumbs):
        np.testing.assert_array_equal(quality_batch(np.ascontiguousarray(form), pixels), scores)
    one_by_one = [quality_batch(t[None], pixels[:1])[0] for t in thumbs]
    np.testing.assert_array_equal(scores, one_by_one)


def test_contrast_raises_the_score_until_it_saturates(test_data):
    photo = decode(test_data / "dev" / "ukbench08976.jpg", **OPTIONS).image
    thumb = quality_thumbnail(photo)
    mean = thumb.mean()
    scores = [quality_batch((mean + k * (thumb - mean))[None], np.array([10**6]))[0] for k in (0.25, 0.5, 1.0)]
    assert scores[0] < scores[1] < scores[2]


def test_wrong_shapes_are_refused():
    with pytest.raises(ValueError):
        quality_batch(np.zeros((2, 64, 32), np.float32), np.array([1, 1]))
    with pytest.raises(ValueError):
        quality_batch(np.zeros((64, 64), np.float32), np.array([1]))
