"""The verified zone: pairs above the direct t merge only when local features on their pictures agree.

Through real pictures and the real verifier (pipeline/hashing/verify.py), in
this process: :func:`imgdedup.find_duplicates` and
:func:`imgdedup.pipeline.dedup.dedup_decisions` with a verifier over the files.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgdedup.jobs.in_memory import find_duplicates, hash_files
from imgdedup.pipeline.cluster.assign import assign
from imgdedup.pipeline.cluster.kmeans import hamming_kmeans
from imgdedup.pipeline.config import load_config
from imgdedup.pipeline.dedup import dedup_decisions
from imgdedup.pipeline.hashing.bits import paired_distances
from imgdedup.pipeline.hashing.decode import decode_image
from imgdedup.pipeline.pair_check import pair_inliers
from tests.jobs.bulk_sets import ZONE_OTHERS, ZONE_PHOTO, centre_crop, turned, zone_set


@pytest.fixture(scope="module")
def zone_folder(test_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("zone")
    for name, data in zone_set(test_data / "dev").items():
        (folder / name).write_bytes(data)
    return folder


def _distance(batch, a: int, b: int) -> int:
    forms = batch.dihedral
    return int(min(paired_distances(forms[a:a + 1], batch.hashes[b:b + 1])[0],
                   paired_distances(forms[b:b + 1], batch.hashes[a:a + 1])[0]))


def decide(folder: Path, *overrides: str):
    """The dedup rule over ``folder`` with the real verifier; (names, decisions, verified pairs and their inliers)."""
    config = load_config(overrides=["dedup.clusters=1", *overrides])
    batch = hash_files(folder, config=config)
    n = len(batch)
    t = max(config.dedup.threshold_for(n), 0)
    clusters = hamming_kmeans(batch.hashes, 1, **dataclasses.asdict(config.cluster))
    labels, to_centre = assign(batch.hashes, clusters.centres)
    asked = []

    def verify(pairs: np.ndarray) -> np.ndarray:
        found = pair_inliers(pairs, lambda i: decode_image(batch.names[i], **dataclasses.asdict(config.decode)))
        asked.extend(zip(map(tuple, pairs.tolist()), found.inliers.tolist()))
        return found.inliers

    digests = np.zeros((n, 32), np.uint8)
    digests[:, 0] = np.arange(1, n + 1)  # distinct bytes
    decided = dedup_decisions(batch.hashes, batch.dihedral, labels, to_centre, clusters.centres,
                              batch.quality.astype(np.int64), digests, np.arange(n), np.zeros(n, bool),
                              threshold_t=t, min_quality=config.hash.min_quality,
                              verify_t=config.dedup.verify_threshold_for(n, t), verify=verify,
                              min_inliers=config.dedup.verify_min_inliers)
    return batch, decided, asked, t


def test_a_crop_in_the_zone_merges_after_verification_and_not_without(zone_folder):
    batch = hash_files(zone_folder)
    photo, crop = batch.names.index(str(zone_folder / "photo.jpg")), batch.names.index(
        str(zone_folder / "photo-crop20.jpg"))
    config = load_config()
    t = config.dedup.threshold_for(len(batch))
    # The crop lies above the direct t and inside the zone the rule allows for five images.
    assert t < _distance(batch, photo, crop) <= config.dedup.verify_threshold_for(len(batch), t)

    pair = {str(zone_folder / "photo.jpg"), str(zone_folder / "photo-crop20.jpg")}
    assert [set(g) for g in find_duplicates(zone_folder)] == [pair]
    assert find_duplicates(zone_folder, config=load_config(overrides=["dedup.verify_up_to=0"])) == []


def test_different_photos_in_a_wide_zone_are_verified_and_never_merged(zone_folder):
    wide = ["dedup.verify_up_to=256", "dedup.verifier_false_accept=0", "dedup.max_verifications_per_image=1e6"]
    batch, decided, asked, t = decide(zone_folder, *wide)
    others = [batch.names.index(str(zone_folder / name)) for name in ZONE_OTHERS]
    # Every two groups were within the zone, so every pair of different photos was verified...
    assert len(asked) >= len(others) * (len(others) + 1) // 2
    assert all(inliers < 20 for pair, inliers in asked if len(set(pair) & set(others)) >= 1
               and not set(pair) <= {batch.names.index(str(zone_folder / "photo.jpg")),
                                     batch.names.index(str(zone_folder / "photo-crop20.jpg"))})
    # ...and only the crop became a pointer.
    pointers = np.flatnonzero(decided.plan.is_pointer)
    assert [Path(batch.names[p]).name for p in pointers] in (["photo-crop20.jpg"], ["photo.jpg"])
    assert decided.verified == len(asked) and decided.verified_passed == 1


def test_zone_off_gives_the_decisions_without_a_verifier(zone_folder):
    batch, decided, asked, t = decide(zone_folder, "dedup.verify_up_to=0")
    assert asked == [] and decided.verified == 0
    n = len(batch)
    config = load_config(overrides=["dedup.clusters=1"])
    clusters = hamming_kmeans(batch.hashes, 1, **dataclasses.asdict(config.cluster))
    labels, to_centre = assign(batch.hashes, clusters.centres)
    digests = np.zeros((n, 32), np.uint8)
    digests[:, 0] = np.arange(1, n + 1)
    plain = dedup_decisions(batch.hashes, batch.dihedral, labels, to_centre, clusters.centres,
                            batch.quality.astype(np.int64), digests, np.arange(n), np.zeros(n, bool),
                            threshold_t=t, min_quality=config.hash.min_quality)
    assert np.array_equal(plain.plan.duplicate_of, decided.plan.duplicate_of)
    assert np.array_equal(plain.plan.distance, decided.plan.distance)
    assert np.array_equal(plain.review, decided.review)


def test_a_zone_needs_a_verifier(zone_folder):
    batch = hash_files(zone_folder)
    n = len(batch)
    with pytest.raises(ValueError, match="verify callable"):
        dedup_decisions(batch.hashes, batch.dihedral, np.zeros(n, np.int64), np.zeros(n, np.int64),
                        batch.hashes[:1], np.full(n, 90), np.zeros((n, 32), np.uint8), np.arange(n),
                        np.zeros(n, bool), threshold_t=64, min_quality=20, verify_t=80)


def config_verify_t(n: int, t: int) -> int:
    return load_config().dedup.verify_threshold_for(n, t)


def test_every_pointer_is_within_t_of_its_canonical_or_verified_against_it(test_data, tmp_path):
    # Copies of one photo that reach each other through chains: crops, turns, a crop of a turn.
    original = Image.open(test_data / "dev" / ZONE_PHOTO).convert("RGB")
    copies = {"a-photo.png": original, "b-crop10.png": centre_crop(original, 0.1),
              "c-crop20.png": centre_crop(original, 0.2), "d-turn4.png": turned(original, 4),
              "e-turn4-crop10.png": centre_crop(turned(original, 4), 0.1),
              "f-crop20-turn4.png": turned(centre_crop(original, 0.2), 4)}
    for name, picture in copies.items():
        picture.save(tmp_path / name)
    for name in ZONE_OTHERS:
        (tmp_path / name).write_bytes((test_data / "dev" / name).read_bytes())
    # A low direct t, so most of the links are zone pairs and chains.
    batch, decided, asked, t = decide(tmp_path, "dedup.threshold_t=40")
    passed = {tuple(sorted(pair)) for pair, inliers in asked if inliers >= 20}
    plan = decided.plan
    pointers = np.flatnonzero(plan.is_pointer)
    # One star: the zone merged copies the direct t alone would not, and a copy that reached the
    # group only through another (100 bits from the photo, beyond the zone) was verified against it.
    assert len(pointers) == len(copies) - 1 and len(decided.review) == 0
    assert (plan.distance[pointers] > config_verify_t(len(batch), t)).any()
    for p in pointers:
        c = plan.duplicate_of[p]
        assert _distance(batch, p, c) <= t or tuple(sorted((p, c))) in passed
        assert Path(batch.names[c]).name in copies and Path(batch.names[p]).name in copies
    # at most one verification per member in the second round, on top of the zone pairs
    assert decided.verified == len(asked) <= len(batch) * (len(batch) - 1) // 2
