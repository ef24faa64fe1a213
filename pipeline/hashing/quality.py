"""A quality score beside every hash: how much detail there was to hash.

Flat pictures (a blank page, a clear sky, an almost black frame) and tiny ones
carry too little to tell apart, so their hashes collide by accident; the score
lets dedup hold them out of automatic decisions (``hash.min_quality``).

As PDQ does, detail is the mean absolute difference between neighbouring pixels
of a small grey thumbnail, in percent of the grey range: 0 for a constant image,
about 2-10 for photos, around 0.4 for a sky. The score maps that linearly onto
0..100, full marks at :data:`FULL_DETAIL_PERCENT`, and scales it down for images
with fewer pixels than the thumbnail, whose detail is mostly interpolation.

References
----------
Facebook, *The TMK+PDQF Video-Hashing Algorithm and the PDQ Image Similarity
Algorithm* (2019), §"Quality metric".
"""
from __future__ import annotations

import numpy as np
from PIL import Image

# Side of the grey thumbnail the score is computed on (PDQ's 64).
QUALITY_SIDE = 64
# Mean neighbour difference, in percent of the grey range, that scores 100.
# Calibrated on ../shared/data: skies and blank frames stay under 0.7 (score
# under 20), the low-detail photos there start near 1.6 (score 40).
FULL_DETAIL_PERCENT = 4.0


def quality_thumbnail(image: Image.Image) -> np.ndarray:
    """Grey thumbnail for :func:`quality_batch`.

    Parameters
    ----------
    image : PIL.Image.Image
        Decoded picture, mode ``"RGB"``.

    Returns
    -------
    ndarray of float32, shape (64, 64)
        Grey levels in [0, 255], area-averaged (a box filter, so no detail is
        invented or ringing added).
    """
    gray = image.convert("L").resize((QUALITY_SIDE, QUALITY_SIDE), Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.float32)


def quality_batch(thumbs: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Quality scores of a batch of grey thumbnails.

    Parameters
    ----------
    thumbs : ndarray of float32, shape (B, n, n)
        Grey levels in [0, 255], from :func:`quality_thumbnail` (the scale is
        calibrated for n = 64).
    pixels : ndarray of int, shape (B,)
        Pixel count (width × height) of each original image. Images with fewer
        than n × n pixels score in proportion to the pixels they have.

    Returns
    -------
    ndarray of uint8, shape (B,)
        0 (no detail) to 100 (plenty).
    """
    thumbs = np.asarray(thumbs, dtype=np.float64)  # sums of 8064 differences: keep them exact enough
    if thumbs.ndim != 3 or thumbs.shape[1] != thumbs.shape[2] or thumbs.shape[1] < 2:
        raise ValueError(f"expected (B, n, n) thumbnails with n >= 2, got shape {thumbs.shape}")
    side = thumbs.shape[1]
    vertical = np.abs(np.diff(thumbs, axis=1)).sum(axis=(1, 2))
    horizontal = np.abs(np.diff(thumbs, axis=2)).sum(axis=(1, 2))
    mean_difference = (vertical + horizontal) / (2 * side * (side - 1))
    detail_percent = mean_difference * (100.0 / 255.0)
    score = np.minimum(detail_percent / FULL_DETAIL_PERCENT, 1.0)
    coverage = np.minimum(np.asarray(pixels, dtype=np.float64) / (side * side), 1.0)
    return np.round(100.0 * score * coverage).astype(np.uint8)
