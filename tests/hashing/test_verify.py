"""pipeline/hashing/verify.py: ORB matches agreeing on one transform tell copies from different photos."""
from __future__ import annotations

import pytest
from PIL import Image, ImageOps

from imgdedup.pipeline.hashing.verify import orb_features, verify_pair

MIN_INLIERS = 20  # scripts/bench_verify.py's default, chosen on the tune half


@pytest.fixture(scope="module")
def photos(test_data) -> list[Image.Image]:
    out = []
    for path in sorted((test_data / "dev").glob("*.jpg"))[:6]:
        picture = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        picture.thumbnail((512, 512))
        out.append(picture)
    return out


def _hard_copy(picture: Image.Image) -> Image.Image:
    """Turned by 5° and 15 % cropped off one corner: what the hash misses."""
    w, h = picture.size
    turned = picture.rotate(5, resample=Image.Resampling.BILINEAR)
    return turned.crop((int(0.15 * w), int(0.15 * h), w, h))


def test_copies_pass_and_different_photos_do_not(photos):
    features = [orb_features(p) for p in photos]
    passed = [verify_pair(own, orb_features(_hard_copy(p))) >= MIN_INLIERS for p, own in zip(photos, features)]
    # most copies pass; a baseball field's grass has few corners ORB can tell apart
    assert sum(passed) >= len(photos) - 1
    for i in range(len(photos)):
        for j in range(i + 1, len(photos)):
            assert verify_pair(features[i], features[j]) < MIN_INLIERS


def test_flat_or_tiny_pictures_have_no_features_and_never_pass(photos):
    flat = orb_features(Image.new("RGB", (300, 200), (90, 120, 200)))
    assert flat.keypoints.shape == (0, 2) and flat.descriptors.shape == (0, 256)
    assert verify_pair(flat, orb_features(photos[0])) == 0
    assert verify_pair(orb_features(photos[0].resize((6, 4))), orb_features(photos[0])) == 0


def test_verdict_is_reproducible(photos):
    a, b = orb_features(photos[1]), orb_features(_hard_copy(photos[1]))
    assert verify_pair(a, b) == verify_pair(a, b)
