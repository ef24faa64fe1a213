"""pipeline/hashing/borders.py: uniform borders and letterbox bars found, and left out of LBPH's thumbnail."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image, ImageOps
from skimage import data as skdata

from imgdedup.jobs.cli import main
from imgdedup.pipeline.hashing.algorithms import get_algorithm
from imgdedup.pipeline.hashing.borders import border_box

T = 64  # dedup.threshold_t


def _jpeg(picture: Image.Image, quality: int = 80) -> Image.Image:
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _pad_square(picture: Image.Image, colour) -> Image.Image:
    side = max(picture.size)
    canvas = Image.new("RGB", (side, side), colour)
    canvas.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2))
    return canvas


@pytest.fixture(scope="module")
def photos(test_data) -> list[Image.Image]:
    """24 distinct photos (the 20 committed dev photos and 4 of scikit-image's), at most 320 pixels on the long side."""
    pictures = [ImageOps.exif_transpose(Image.open(path)) for path in sorted((test_data / "dev").glob("*.jpg"))]
    pictures += [Image.fromarray(getattr(skdata, name)()) for name in ("astronaut", "coffee", "chelsea", "rocket")]
    out = []
    for picture in pictures:
        picture = picture.convert("RGB")
        picture.thumbnail((320, 320))
        out.append(picture)
    return out


def _box(picture: Image.Image) -> tuple[int, int, int, int]:
    return border_box(picture.convert("F"))


@pytest.mark.parametrize("colour", ["white", "black", (203, 170, 120)])
def test_frames_and_bars_are_found_through_jpeg_noise(photos, colour):
    picture = photos[0]
    framed = _jpeg(ImageOps.expand(picture, border=(24, 40, 24, 40), fill=colour))
    left, top, right, bottom = _box(framed)
    # JPEG ringing next to the picture may keep a few pixels of frame, never cut into the picture
    assert 20 <= left <= 24 and 36 <= top <= 40
    assert framed.width - 24 <= right <= framed.width - 20 and framed.height - 40 <= bottom <= framed.height - 36


def test_flat_sky_is_trimmed_alike_in_a_photo_and_its_copies(photos):
    # A clear sky at the top is as flat as a bar, and may be trimmed; what matters is
    # that a re-encoded or rescaled copy loses the same share of it.
    for picture in photos:
        w, h = picture.size
        box = np.array(_box(picture)) / [w, h, w, h]
        for copy in (_jpeg(picture, 40), picture.resize((w * 3 // 4, h * 3 // 4))):
            cw, ch = copy.size
            assert np.abs(np.array(_box(copy)) / [cw, ch, cw, ch] - box).max() <= 0.04


def test_flat_pictures_and_tiny_subjects_are_left_whole(photos):
    flat = Image.new("RGB", (200, 100), (40, 90, 200))
    assert _box(flat) == (0, 0, 200, 100)
    # a tiny subject on a blank canvas would keep too little: left whole
    canvas = Image.new("RGB", (400, 400), "white")
    canvas.paste(photos[0].resize((30, 20)), (185, 190))
    assert _box(canvas) == (0, 0, 400, 400)


def test_box_turns_with_the_picture(photos):
    framed = ImageOps.expand(photos[1], border=(10, 30, 50, 0), fill="black")
    left, top, right, bottom = _box(framed)
    w, h = framed.size
    assert _box(framed.transpose(Image.Transpose.TRANSPOSE)) == (top, left, bottom, right)
    assert _box(framed.transpose(Image.Transpose.ROTATE_180)) == (w - right, h - bottom, w - left, h - top)


def _forms(algorithm, pictures) -> np.ndarray:
    return algorithm.dihedral_batch(np.stack([algorithm.thumbnail(p) for p in pictures]))


@pytest.mark.parametrize("colour", ["white", "black"])
def test_padded_copy_matches_its_original_and_no_other_padded_copy(photos, colour):
    algorithm = get_algorithm("lbph", trim_borders=True)
    originals = _forms(algorithm, photos)
    padded = _forms(algorithm, [_jpeg(_pad_square(p, colour)) for p in photos])
    to_original = np.bitwise_count(padded[:, 0] ^ originals[:, 0]).sum(axis=-1)
    assert to_original.max() <= T
    # smallest over the dihedral forms, between padded copies of different photos
    between = np.bitwise_count(padded[:, None, 0, None, :] ^ padded[None, :, :, :]).sum(axis=-1).min(axis=-1)
    different = ~np.eye(len(photos), dtype=bool)
    assert between[different].min() > T
    # and a white-padded copy of one photo is no closer to a black-padded copy of another
    if colour == "white":
        black = _forms(algorithm, [_jpeg(_pad_square(p, "black")) for p in photos])
        across = np.bitwise_count(padded[:, None, 0, None, :] ^ black[None, :, :, :]).sum(axis=-1).min(axis=-1)
        assert across[different].min() > T


def test_without_trimming_padding_dominates_the_fingerprint(photos):
    # what the trimmer is for: untrimmed, a padded copy is farther from its original than t
    algorithm = get_algorithm("lbph", trim_borders=False)
    originals = _forms(algorithm, photos)
    padded = _forms(algorithm, [_pad_square(p, "white") for p in photos])
    assert np.median(np.bitwise_count(padded[:, 0] ^ originals[:, 0]).sum(axis=-1)) > T


def test_the_knob_reaches_the_hash_command(photos, tmp_path):
    _pad_square(photos[2], "white").save(tmp_path / "padded.png")
    photos[2].save(tmp_path / "original.png")

    def hashes(*overrides) -> dict[str, np.ndarray]:
        out = tmp_path / f"h{len(overrides)}.csv"
        assert main([*overrides, "hash", str(tmp_path), "--algo", "lbph", "--out", str(out)]) == 0
        with open(out) as f:
            return {row["path"].rsplit("/", 1)[-1]: np.frombuffer(bytes.fromhex(row["hash"]), np.uint8)
                    for row in csv.DictReader(f)}

    def distance(table) -> int:
        return int(np.bitwise_count(table["padded.png"] ^ table["original.png"]).sum())

    assert distance(hashes()) <= T < distance(hashes("--set", "hash.trim_borders=false"))
