"""The baselines reproduce imagehash bit for bit."""
import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from pipeline.hashing.algorithms import get_algorithm
from pipeline.hashing.bits import hamming, to_hex

REFERENCE = {"ahash": imagehash.average_hash, "phash": imagehash.phash, "dhash": imagehash.dhash}

# Published by imagehash for its test image (data/vectors/README.md).
VECTORS = {"ahash": "ffd7918181c9ffff", "phash": "ba8c84536bd3c366", "dhash": "0026273b2b19550e"}


def _rgb(path):
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


@pytest.fixture(scope="module")
def dev_images(shared_data):
    paths = sorted((shared_data / "dev").glob("*.jpg"))
    assert len(paths) >= 10
    return [_rgb(p) for p in paths]


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_published_imagehash_vectors(shared_data, name):
    image = Image.open(shared_data / "vectors" / "imagehash" / "imagehash.png").convert("RGB")
    assert to_hex(get_algorithm(name).hash_image(image)) == VECTORS[name]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_bit_identical_to_imagehash_on_real_photos(dev_images, shared_data, name):
    algo = get_algorithm(name)
    images = dev_images + [Image.open(shared_data / "vectors" / "imagehash" / "peppers.png").convert("RGB")]
    ours = to_hex(algo.hash_batch(np.stack([algo.thumbnail(im) for im in images])))
    assert ours == [str(REFERENCE[name](im)) for im in images]


def test_phash_of_flat_image_differs_from_imagehash_only_by_rounding_noise():
    # A flat picture has all-zero AC coefficients; which of them land above the
    # median is decided by rounding noise (scipy.fftpack's FFT vs our matrix
    # product), so neither bit pattern means anything. Both agree on the DC bit.
    image = Image.new("RGB", (64, 48), (120, 130, 140))
    ours = np.unpackbits(get_algorithm("phash").hash_image(image))
    assert ours[0] == int(imagehash.phash(image).hash.flat[0]) == 1


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
