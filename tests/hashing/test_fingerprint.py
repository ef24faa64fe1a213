"""Batch fingerprinting: one call per batch, bad files set aside, results aligned with inputs."""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from imgdedup.pipeline.config import DecodeConfig
from imgdedup.pipeline.errors import DecodeError
from imgdedup.pipeline.hashing.algorithms import get_algorithm
from imgdedup.pipeline.hashing.decode import decode_image
from imgdedup.pipeline.hashing.fingerprint import fingerprint_batch

OPTIONS = dataclasses.asdict(DecodeConfig())


@pytest.fixture(scope="module")
def dev_files(test_data):
    return sorted((test_data / "dev").glob("*.jpg"))[:6]


def test_batch_equals_hashing_each_file_alone(dev_files):
    algorithm = get_algorithm("phash")
    batch = fingerprint_batch(dev_files, algorithm, dihedral=False, **OPTIONS)
    assert batch.names == [str(p) for p in dev_files]
    assert batch.hashes.shape == (len(dev_files), 8) and batch.hashes.dtype == np.uint8
    assert batch.dihedral is None and batch.errors == []
    for row, path in zip(batch.hashes, dev_files):
        np.testing.assert_array_equal(row, algorithm.hash_image(decode_image(path, **OPTIONS)))


def test_dihedral_slot_zero_is_the_plain_hash(dev_files):
    algorithm = get_algorithm("phash")
    plain = fingerprint_batch(dev_files, algorithm, dihedral=False, **OPTIONS)
    both = fingerprint_batch(dev_files, algorithm, dihedral=True, **OPTIONS)
    assert both.dihedral.shape == (len(dev_files), 8, 8)
    np.testing.assert_array_equal(both.hashes, plain.hashes)
    np.testing.assert_array_equal(both.dihedral[:, 0], plain.hashes)


def test_a_rotated_copy_matches_through_the_dihedral_variants(dev_files):
    photo = Image.open(dev_files[0]).convert("RGB")
    turned = io.BytesIO()
    photo.transpose(Image.Transpose.ROTATE_90).save(turned, "PNG")
    batch = fingerprint_batch([dev_files[0], turned.getvalue()], get_algorithm("phash"),
                              names=["original", "turned"], dihedral=True, **OPTIONS)
    distances = np.unpackbits(batch.dihedral[0] ^ batch.hashes[1], axis=-1).sum(-1)
    assert distances.min() <= 4
    assert np.unpackbits(batch.hashes[0] ^ batch.hashes[1]).sum() > 16


def test_bad_files_are_set_aside_and_the_rest_stays_aligned(dev_files, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    good = open(dev_files[1], "rb").read()
    sources = [dev_files[0], tmp_path / "empty.jpg", good, tmp_path / "notes.txt", good[: len(good) // 2], dev_files[2]]
    names = ["a.jpg", "empty.jpg", "b.jpg", "notes.txt", "half.jpg", "c.jpg"]
    batch = fingerprint_batch(sources, get_algorithm("dhash"), names=names, dihedral=True, **OPTIONS)
    assert batch.names == ["a.jpg", "b.jpg", "c.jpg"]
    assert batch.indices.tolist() == [0, 2, 5]
    assert [e.subject for e in batch.errors] == ["empty.jpg", "notes.txt", "half.jpg"]
    assert all(isinstance(e, DecodeError) for e in batch.errors)
    assert batch.hashes.shape == (3, 8) and batch.dihedral.shape == (3, 8, 8)
    assert batch.quality.shape == batch.width.shape == batch.height.shape == (3,)
    alone = fingerprint_batch([good], get_algorithm("dhash"), dihedral=True, **OPTIONS)
    np.testing.assert_array_equal(batch.hashes[1], alone.hashes[0])
    np.testing.assert_array_equal(batch.dihedral[1], alone.dihedral[0])


def test_sizes_are_those_of_the_original_not_the_drafted_decode(tmp_path):
    from skimage import data

    path = tmp_path / "big.jpg"
    Image.fromarray(data.astronaut()).resize((2400, 1800)).save(path, quality=90)
    batch = fingerprint_batch([path], get_algorithm("ahash"), dihedral=False, **OPTIONS)
    assert (batch.width[0], batch.height[0]) == (2400, 1800)
    assert batch.quality[0] > 50


def test_a_batch_of_only_failures_is_empty_but_well_shaped():
    batch = fingerprint_batch([b"", b"nope"], get_algorithm("phash"), dihedral=True, **OPTIONS)
    assert len(batch) == 0 and len(batch.errors) == 2
    assert batch.hashes.shape == (0, 8) and batch.dihedral.shape == (0, 8, 8)
    assert batch.quality.shape == (0,)


def test_names_must_match_sources():
    with pytest.raises(ValueError):
        fingerprint_batch([b"x", b"y"], get_algorithm("phash"), names=["x"], dihedral=False, **OPTIONS)
