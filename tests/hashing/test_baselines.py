"""The baselines reproduce imagehash bit for bit."""
import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from imgdedup.pipeline.hashing.algorithms import get_algorithm
from imgdedup.pipeline.hashing.bits import hamming, to_hex

REFERENCE = {"ahash": imagehash.average_hash, "phash": imagehash.phash, "dhash": imagehash.dhash}

# Published by imagehash for its test image (tests/data/README.md).
VECTORS = {"ahash": "ffd7918181c9ffff", "phash": "ba8c84536bd3c366", "dhash": "0026273b2b19550e"}


def _rgb(path):
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


@pytest.fixture(scope="module")
def dev_images(test_data):
    paths = sorted((test_data / "dev").glob("*.jpg"))
    assert len(paths) >= 10
    return [_rgb(p) for p in paths]


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_published_imagehash_vectors(test_data, name):
    image = Image.open(test_data / "imagehash" / "imagehash.png").convert("RGB")
    assert to_hex(get_algorithm(name).hash_image(image)) == VECTORS[name]


@pytest.fixture(scope="module")
def vector_images(test_data):
    """Photos, tiny and low-detail images, one picture in every Pillow mode (as RGB)."""
    paths = sorted(p for folder in ("imagehash", "pdq") for p in (test_data / folder).rglob("*")
                   if p.suffix in {".jpg", ".png", ".webp"})
    return [_rgb(p) for p in paths]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_bit_identical_to_imagehash_on_real_photos(dev_images, vector_images, name):
    algo = get_algorithm(name)
    images = dev_images + vector_images
    ours = to_hex(algo.hash_batch(np.stack([algo.thumbnail(im) for im in images])))
    assert ours == [str(REFERENCE[name](im)) for im in images]


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("colour", [(0, 0, 0), (120, 130, 140), (255, 255, 255), (7, 200, 33)])
def test_flat_pictures_hash_like_imagehash(name, colour):
    # A flat picture's AC coefficients are zero; computed as rounding noise they
    # would decide pHash's bits at random. imagehash (scipy's FFT) gets exact
    # zeros, and so must we.
    image = Image.new("RGB", (64, 48), colour)
    assert to_hex(get_algorithm(name).hash_image(image)) == str(REFERENCE[name](image))


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("transpose", [Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                                       Image.Transpose.ROTATE_270, Image.Transpose.FLIP_LEFT_RIGHT,
                                       Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.TRANSPOSE])
def test_dihedral_set_of_a_turned_photo_holds_the_original_hash(dev_images, name, transpose):
    algo = get_algorithm(name)
    originals = dev_images[:6]
    plain = algo.hash_batch(np.stack([algo.thumbnail(im) for im in originals]))
    turned = np.stack([algo.thumbnail(im.transpose(transpose)) for im in originals])
    sets = algo.dihedral_batch(turned)
    assert sets.shape == (len(originals), 8, algo.nbytes)
    np.testing.assert_array_equal(sets[:, 0], algo.hash_batch(turned))
    closest = np.stack([hamming(plain[i:i + 1], sets[i]).min() for i in range(len(originals))])
    assert closest.max() <= 2, closest


def _structured(kind: str, width: int, height: int) -> Image.Image:
    yy, xx = np.mgrid[:height, :width].astype(np.float64)
    planes = {
        "gradient": xx * 255 / max(1, width - 1),
        "symmetric": np.abs(xx - (width - 1) / 2) * 510 / max(1, width - 1),
        "checker": ((yy // 4 + xx // 4) % 2) * 255,
        "disc": (np.hypot(yy - (height - 1) / 2, xx - (width - 1) / 2) < min(width, height) / 3) * 200.0,
    }
    return Image.fromarray(np.clip(planes[kind], 0, 255).astype(np.uint8)).convert("RGB")


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("kind", ["gradient", "symmetric", "checker", "disc"])
@pytest.mark.parametrize("size", [(9, 8), (32, 32), (100, 61), (257, 300)])
def test_structured_pictures_hash_like_imagehash(name, kind, size):
    # Symmetric content makes DCT coefficients tie or vanish exactly, where rounding
    # of another DCT algorithm could decide bits: the bits must still be imagehash's.
    image = _structured(kind, *size)
    assert to_hex(get_algorithm(name).hash_image(image)) == str(REFERENCE[name](image))
