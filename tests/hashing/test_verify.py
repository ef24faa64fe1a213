"""pipeline/hashing/verify.py: ORB matches agreeing on one transform tell copies from different photos."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from imgdedup.pipeline.hashing.verify import MIN_INLIERS, Features, orb_features, verify_pair


@pytest.fixture(scope="module")
def photos(test_data) -> list[Image.Image]:
    out = []
    for path in sorted((test_data / "dev").glob("*.jpg"))[:8]:
        picture = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        picture.thumbnail((640, 640))
        out.append(picture)
    return out


@pytest.fixture(scope="module")
def features(photos) -> list[Features]:
    return [orb_features(p) for p in photos]


def _crop(picture: Image.Image) -> Image.Image:
    """20 % cut off the top and left."""
    w, h = picture.size
    return picture.crop((int(0.2 * w), int(0.2 * h), w, h))


def _turn(picture: Image.Image) -> Image.Image:
    """Turned by 6° and cropped to no wedges."""
    w, h = picture.size
    return picture.rotate(6, resample=Image.Resampling.BICUBIC).crop((int(0.1 * w), int(0.1 * h),
                                                                      int(0.9 * w), int(0.9 * h)))


def _caption(picture: Image.Image) -> Image.Image:
    """A white bar of black text above the picture, a fifth of its height."""
    w, h = picture.size
    canvas = Image.new("RGB", (w, h + h // 5), "white")
    canvas.paste(picture, (0, h // 5))
    ImageDraw.Draw(canvas).text((10, h // 15), "when the weekend finally arrives", fill="black")
    return canvas


def _keystone(picture: Image.Image) -> Image.Image:
    """Seen from below: the top corners pulled in by 7 % of the width."""
    w, h = picture.size
    inset = 0.07 * w
    quad = (-inset, 0, -0.0, h, w + 0.0, h, w + inset, 0)  # source corners: top-left, bottom-left, ...
    return picture.transform((w, h), Image.Transform.QUAD, quad, Image.Resampling.BICUBIC)


@pytest.mark.parametrize("edit", [_crop, _turn, _caption, _keystone], ids=lambda f: f.__name__.strip("_"))
def test_copies_pass(photos, features, edit):
    inliers = [verify_pair(own, orb_features(edit(p))) for p, own in zip(photos, features)]
    assert all(n >= MIN_INLIERS for n in inliers), inliers


def test_different_photos_do_not_pass(features):
    inliers = [verify_pair(features[i], features[j])
               for i in range(len(features)) for j in range(i + 1, len(features))]
    assert max(inliers) < MIN_INLIERS, inliers


def test_features_are_packed(features):
    for f in features:
        k = len(f.keypoints)
        assert 100 <= k <= 500
        assert f.keypoints.dtype == np.float32 and f.keypoints.shape == (k, 2)
        assert f.descriptors.dtype == np.uint8 and f.descriptors.shape == (k, 32)


def test_flat_or_tiny_pictures_have_no_features_and_never_pass(photos, features):
    flat = orb_features(Image.new("RGB", (300, 200), (90, 120, 200)))
    assert flat.keypoints.shape == (0, 2) and flat.descriptors.shape == (0, 32)
    assert verify_pair(flat, features[0]) == 0 and verify_pair(features[0], flat) == 0
    assert verify_pair(orb_features(photos[0].resize((6, 4))), features[0]) == 0


def test_verdict_is_reproducible(photos, features):
    copy = orb_features(_turn(photos[1]))
    first = verify_pair(features[1], copy)
    verify_pair(features[2], features[3])  # other fits in between must not move the generator
    assert first >= MIN_INLIERS
    assert verify_pair(features[1], orb_features(_turn(photos[1]))) == first


def test_a_floor_passed_as_min_matches_keeps_every_verdict(photos, features):
    pairs = [(features[0], orb_features(_crop(photos[0]))), (features[0], features[1]), (features[4], features[5])]
    for a, b in pairs:
        full = verify_pair(a, b)
        assert (verify_pair(a, b, min_matches=MIN_INLIERS) >= MIN_INLIERS) == (full >= MIN_INLIERS)


def test_pickling_round_trip_is_small_and_exact(photos, features):
    f = features[0]
    raw = f.keypoints.nbytes + f.descriptors.nbytes
    data = pickle.dumps(f, protocol=pickle.HIGHEST_PROTOCOL)
    assert len(data) < raw + 512
    back = pickle.loads(data)
    assert np.array_equal(back.keypoints, f.keypoints) and np.array_equal(back.descriptors, f.descriptors)
    copy = orb_features(_crop(photos[0]))
    assert verify_pair(back, copy) == verify_pair(f, copy)


def test_a_small_shared_stamp_is_not_a_shared_photo(photos):
    """Two different photos with one stamp (2.4 % of each): its matches agree on a transform, over the stamp only."""
    stamp = Image.fromarray(np.random.default_rng(3).integers(0, 2, (12, 30), dtype=np.uint8) * 255).resize(
        (60, 24), Image.Resampling.NEAREST).convert("RGB")
    stamped = []
    for picture in photos[6:8]:
        picture = picture.copy()
        picture.paste(stamp, (picture.width // 2, picture.height // 2))
        stamped.append(orb_features(picture))
    assert verify_pair(*stamped, min_area=0.0) >= MIN_INLIERS  # counted alone, the stamp would pass
    assert verify_pair(*stamped) == 0
