"""Baseline perceptual hashes, bit-for-bit the ``imagehash`` algorithms.

- aHash (average hash; the SPSD scheme the paper compares against),
- pHash (DCT perceptual hash; the CSPD scheme),
- dHash (difference hash).

Each is split like LBPH: a per-image ``*_thumbnail`` (grayscale, Pillow LANCZOS
resize, exactly as imagehash does it) and batch kernels over stacks of thumbnails
returning packed bits (:mod:`imgdedup.pipeline.hashing.bits`). Bits are row-major over the
hash grid, so the hex equals ``str(imagehash.<algo>(image))``.

References
----------
J. Buchner, *ImageHash* (imagehash/__init__.py): ``average_hash``, ``phash``, ``dhash``.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from imgdedup.pipeline.hashing.bits import pack_bits
from imgdedup.pipeline.hashing.dct import dct2_lowfreq
from imgdedup.pipeline.hashing.dihedral import dct_stack, spatial_stack, spatial_variants

HASH_SIDE = 8
# imagehash's pHash resizes to hash_size * highfreq_factor = 32 before the DCT.
PHASH_SIDE = 32


def _gray_resize(image: Image.Image, width: int, height: int) -> np.ndarray:
    return np.asarray(image.convert("L").resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)


def ahash_thumbnail(image: Image.Image) -> np.ndarray:
    """Grayscale 8 × 8 LANCZOS thumbnail, shape (8, 8) float32 in [0, 255]."""
    return _gray_resize(image, HASH_SIDE, HASH_SIDE)


def ahash_batch(thumbs: np.ndarray) -> np.ndarray:
    """aHash: bit = pixel > mean of its thumbnail.

    Parameters
    ----------
    thumbs : ndarray of float32, shape (B, 8, 8)

    Returns
    -------
    ndarray of uint8, shape (B, 8)
    """
    x = np.asarray(thumbs, dtype=np.float64)
    bits = x > x.mean(axis=(-2, -1), keepdims=True)
    return pack_bits(bits.reshape(*x.shape[:-2], -1))


def ahash_dihedral_batch(thumbs: np.ndarray) -> np.ndarray:
    """aHash of the 8 dihedral forms, ``(B, 8, 8)`` → ``(B, 8, 8)`` uint8 (slot 0 plain).

    The mean is invariant under the dihedral group, so each form is the plain
    thumbnail's bit grid rotated or mirrored.
    """
    return ahash_batch(spatial_stack(np.asarray(thumbs)))


def phash_thumbnail(image: Image.Image) -> np.ndarray:
    """Grayscale 32 × 32 LANCZOS thumbnail, shape (32, 32) float32 in [0, 255]."""
    return _gray_resize(image, PHASH_SIDE, PHASH_SIDE)


def _phash_bits(block: np.ndarray) -> np.ndarray:
    flat = block.reshape(*block.shape[:-2], -1)
    return pack_bits(flat > np.median(flat, axis=-1, keepdims=True))


# Coefficients smaller than this are rounding noise (float64 error on sums of
# ~1e3 pixels of 0-255 is ~1e-10), not picture content.
_PHASH_NOISE = 1e-6


def _phash_block(thumbs: np.ndarray) -> np.ndarray:
    # float64 and the unnormalised DCT, as scipy.fftpack.dct computes it, so the
    # order of coefficients around the median matches imagehash. Noise-level
    # coefficients (every AC term of a flat picture) are set to exactly 0, where
    # scipy's FFT puts them too; otherwise their rounding would decide the bits.
    block = dct2_lowfreq(np.asarray(thumbs, dtype=np.float64), HASH_SIDE, norm=None)
    block[np.abs(block) < _PHASH_NOISE] = 0.0
    return block


def phash_batch(thumbs: np.ndarray) -> np.ndarray:
    """pHash: 8 × 8 low-frequency DCT-II block, bit = coefficient > block median.

    Parameters
    ----------
    thumbs : ndarray of float32, shape (B, 32, 32)

    Returns
    -------
    ndarray of uint8, shape (B, 8)
    """
    return _phash_bits(_phash_block(thumbs))


def phash_dihedral_batch(thumbs: np.ndarray) -> np.ndarray:
    """pHash of the 8 dihedral forms from one DCT, ``(B, 32, 32)`` → ``(B, 8, 8)`` uint8.

    Sign flips change the block's median, so every form is thresholded by its own.
    Where two coefficients tie at the median (a picture symmetric about a
    diagonal), the plain hash, like imagehash's, is decided by rounding, and a
    form can differ from the hash of the turned thumbnail in those tied bits
    (2 for a diagonal gradient); LBPH's kernels give ties a margin instead, but
    here the plain hash must stay imagehash's.
    """
    return _phash_bits(dct_stack(_phash_block(thumbs)))


def dhash_thumbnail(image: Image.Image) -> np.ndarray:
    """Two grayscale LANCZOS thumbnails, shape (2, 8, 9) float32 in [0, 255].

    Slot 0 is imagehash's 9 wide × 8 high resize (the plain hash needs only it);
    slot 1 is the 8 wide × 9 high resize, transposed, which is what a picture
    turned by 90° resizes to — so the dihedral forms need no second decode.
    """
    gray = image.convert("L")
    wide = np.asarray(gray.resize((HASH_SIDE + 1, HASH_SIDE), Image.Resampling.LANCZOS), dtype=np.float32)
    tall = np.asarray(gray.resize((HASH_SIDE, HASH_SIDE + 1), Image.Resampling.LANCZOS), dtype=np.float32)
    return np.stack([wide, tall.T])


def _dhash_bits(wide: np.ndarray) -> np.ndarray:
    bits = wide[..., :, 1:] > wide[..., :, :-1]
    return pack_bits(bits.reshape(*bits.shape[:-2], -1))


def dhash_batch(thumbs: np.ndarray) -> np.ndarray:
    """dHash: bit = pixel brighter than its left neighbour, over the 9 × 8 thumbnail.

    Parameters
    ----------
    thumbs : ndarray of float32, shape (B, 2, 8, 9)
        From :func:`dhash_thumbnail`.

    Returns
    -------
    ndarray of uint8, shape (B, 8)
    """
    return _dhash_bits(np.asarray(thumbs)[:, 0])


def dhash_dihedral_batch(thumbs: np.ndarray) -> np.ndarray:
    """dHash of the 8 dihedral forms, ``(B, 2, 8, 9)`` → ``(B, 8, 8)`` uint8 (slot 0 plain).

    Forms that keep the picture's orientation (even slots) come from the wide
    thumbnail; quarter turns (odd slots) from the tall one, which they turn wide.
    """
    thumbs = np.asarray(thumbs)
    from_wide = spatial_variants(thumbs[:, 0])
    from_tall = spatial_variants(np.swapaxes(thumbs[:, 1], -1, -2))
    forms = [from_tall[s] if s % 2 else from_wide[s] for s in range(8)]
    return _dhash_bits(np.stack(forms, axis=1))
