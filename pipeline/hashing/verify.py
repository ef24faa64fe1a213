"""A second opinion on a candidate pair: local features that agree on one geometric transform.

A fingerprint distance in a grey zone above ``t`` says "maybe": crops, small
rotations and perspective change the low frequencies LBPH reads, while two
different photos rarely get that close. Local features see what the hash
cannot: ORB keypoints and binary descriptors (Rublee et al., 2011, as
scikit-image implements them) are matched between the two pictures (mutual
nearest neighbours under Lowe's ratio test), and RANSAC fits one affine
transform to the matches. Copies of one photo share dozens of matches that
agree on one transform (scale, crop offset, rotation, shear); different photos
share few, and those agree on nothing. The verdict is the number of inliers.

This runs on pixels, so it belongs to the key-holding jobs, and only on the
pairs the grey zone selects: extracting features costs tens of milliseconds
per picture (the fingerprint costs ~3 ms with its decode).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.feature import ORB, match_descriptors
from skimage.measure import ransac
from skimage.transform import AffineTransform

# Long side, in pixels, of the grey picture features are taken from: enough
# detail for 500 keypoints, small enough to keep extraction near 30-60 ms.
SIDE = 384


@dataclass(frozen=True)
class Features:
    """ORB keypoints of one picture.

    Attributes
    ----------
    keypoints : ndarray of float64, shape (k, 2)
        ``(row, col)`` positions in pixels of the picture resized to a long side of ``SIDE``.
    descriptors : ndarray of bool, shape (k, 256)
        rBRIEF descriptors, one row per keypoint.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray


def orb_features(picture: Image.Image, *, keypoints: int = 500) -> Features:
    """ORB keypoints and descriptors of an RGB picture, at most ``keypoints`` of them.

    Parameters
    ----------
    picture : PIL.Image.Image
        Decoded picture, mode ``"RGB"``, orientation applied.
    keypoints : int
        Most keypoints kept (the strongest by Harris response).

    Returns
    -------
    Features
        No keypoints (``k = 0``) for a picture too flat or too small to have any.
    """
    grey = picture.convert("L")
    scale = SIDE / max(grey.size)
    grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                       Image.Resampling.BILINEAR)
    image = np.asarray(grey, dtype=np.float64) / 255.0
    orb = ORB(n_keypoints=keypoints, fast_threshold=0.05)
    try:
        orb.detect_and_extract(image)
    except (RuntimeError, IndexError, ValueError):  # too few corners, or a picture smaller than the patch
        return Features(np.zeros((0, 2)), np.zeros((0, 256), dtype=bool))
    return Features(np.asarray(orb.keypoints, dtype=np.float64), np.asarray(orb.descriptors, dtype=bool))


def verify_pair(a: Features, b: Features, *, residual: float = 3.0, max_ratio: float = 0.8,
                trials: int = 300, seed: int = 0) -> int:
    """Matches between two pictures that agree on one affine transform.

    Parameters
    ----------
    a, b : Features
        From :func:`orb_features`.
    residual : float
        Largest distance, in pixels at ``SIDE``, between a match and where the
        transform puts it, for the match to count.
    max_ratio : float
        Lowe's ratio test: a descriptor's best match must be this much closer
        than its second best.
    trials : int
        RANSAC iterations.
    seed : int
        RANSAC's random generator, so a verdict is reproducible.

    Returns
    -------
    int
        Inlier matches of the best transform; 0 with fewer than 3 matches.
    """
    if len(a.keypoints) < 3 or len(b.keypoints) < 3:
        return 0
    matches = match_descriptors(a.descriptors, b.descriptors, metric="hamming", cross_check=True,
                                max_ratio=max_ratio)
    if len(matches) < 3:
        return 0
    source = a.keypoints[matches[:, 0]][:, ::-1]  # (x, y) for the transform
    target = b.keypoints[matches[:, 1]][:, ::-1]
    _, inliers = ransac((source, target), AffineTransform, min_samples=3, residual_threshold=residual,
                        max_trials=trials, rng=np.random.default_rng(seed))
    return 0 if inliers is None else int(inliers.sum())
