"""A second opinion on a candidate pair: local features that agree on one geometric transform.

A fingerprint distance in a grey zone above ``t`` says "maybe": crops, small
rotations and perspective change the low frequencies LBPH reads, while two
different photos rarely get that close. Local features see what the hash
cannot: ORB keypoints and their 256-bit rBRIEF descriptors (Rublee et al.,
2011, as OpenCV implements them) are matched between the two pictures (mutual
nearest neighbours under Lowe's ratio test), and RANSAC fits one affine
transform to the matches. Copies of one photo share dozens of matches that
agree on one transform (scale, crop offset, rotation, shear); different photos
share few, and those agree on nothing. The verdict is the number of inliers,
provided they span a fair share of both pictures (:data:`MIN_AREA`); a pair
passes with at least :data:`MIN_INLIERS`.

This runs on pixels, so it belongs to the key-holding jobs, and only on the
pairs the grey zone selects. Extraction costs ~5 ms a picture of 1 024 pixels
a side (~2 ms of it the grey resize to :data:`SIDE`) and a verification about
a millisecond (``scripts/bench_verify.py``); features are small (about 20 kB
for 500 keypoints), so they are computed once per picture and shipped to the
pairs.
Every step is deterministic: OpenCV's RANSAC seeds its own generator the same
way on every call, so a pair gets the same count every time.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from imgdedup.pipeline.hamming import as_words, dense_distances, word_columns

# Long side, in pixels, of the grey picture features are taken from: enough
# detail for 500 keypoints, small enough to keep extraction at a few milliseconds.
SIDE = 384
#: FAST corner threshold, in grey levels: on the tune half, 10 rather than
#: OpenCV's 20 lets 0.974 of the copies in the zone pass instead of 0.957 (flat,
#: low-contrast photos keep enough corners), pairs of different photos no more.
FAST_THRESHOLD = 10
#: Bytes of one packed rBRIEF descriptor (256 bits).
DESCRIPTOR_BYTES = 32
#: Inliers a pair needs to pass: about twice the most that any pair of different
#: photos reached, on the tune half of ``scripts/edits.py``'s labelled set (6 in
#: 19 298 pairs in the zone) and among a million pairs of tiles of different
#: photos (7); copies in the zone have a median of 160 (docs/lbph.md).
MIN_INLIERS = 12
#: Share of each picture the inliers must span (:func:`affine_inliers`): a
#: watermark, logo or caption that two different photos share agrees on one
#: transform too, but over a strip or a corner (at most 1.4 % of the picture on
#: the tune half), while copies' inliers span at least 7 % of both (docs/lbph.md).
MIN_AREA = 0.03


@dataclass(frozen=True)
class Features:
    """ORB keypoints of one picture.

    Attributes
    ----------
    keypoints : ndarray of float32, shape (k, 2)
        ``(x, y)`` positions in pixels of the picture resized to a long side of ``SIDE``.
    descriptors : ndarray of uint8, shape (k, 32)
        Packed 256-bit rBRIEF descriptors, one row per keypoint.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray

    def __reduce__(self):
        # the two arrays and nothing else: what a Dask worker ships per picture
        return Features, (self.keypoints, self.descriptors)


def orb_features(picture: Image.Image, *, keypoints: int = 500, fast_threshold: int = FAST_THRESHOLD,
                 side: int = SIDE, levels: int = 8) -> Features:
    """ORB keypoints and descriptors of an RGB picture, at most ``keypoints`` of them.

    Parameters
    ----------
    picture : PIL.Image.Image
        Decoded picture, mode ``"RGB"``, orientation applied.
    keypoints : int
        Most keypoints kept (the strongest by Harris response, spread over the
        pyramid's levels).
    fast_threshold : int
        FAST corner threshold, in grey levels (0-255): how much brighter or
        darker than the centre the ring's pixels must be.
    side : int
        Long side, in pixels, of the grey picture the features are taken from.
    levels : int
        Pyramid levels, 1.2 apart in scale: copies up to ``1.2 ** (levels - 1)``
        times the size of each other match at some level.

    Returns
    -------
    Features
        No keypoints (``k = 0``) for a picture too flat or too small to have any.
    """
    grey = picture.convert("L")
    scale = side / max(grey.size)
    grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                       Image.Resampling.BILINEAR)
    orb = cv2.ORB_create(nfeatures=keypoints, fastThreshold=fast_threshold, nlevels=levels)
    found, descriptors = orb.detectAndCompute(np.asarray(grey), None)
    if descriptors is None or not found:
        return Features(np.zeros((0, 2), np.float32), np.zeros((0, DESCRIPTOR_BYTES), np.uint8))
    return Features(np.array([k.pt for k in found], dtype=np.float32), np.ascontiguousarray(descriptors))


def mutual_matches(a: Features, b: Features, *, max_ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of ``a`` and ``b`` that are each other's nearest descriptor and pass Lowe's ratio test.

    Parameters
    ----------
    a, b : Features
        From :func:`orb_features`, each with at least 2 keypoints.
    max_ratio : float
        A descriptor of ``a`` matches only when its nearest in ``b`` is closer,
        in Hamming bits, than ``max_ratio`` times its second nearest.

    Returns
    -------
    from_a, to_b : ndarray of intp, shape (m,)
        Row indices of the matched keypoints in ``a`` and ``b``.
    """
    distances = dense_distances(as_words(a.descriptors)[:, None, :], word_columns(as_words(b.descriptors)))
    rows = np.arange(len(distances))
    nearest = distances.argmin(axis=1)
    best = distances[rows, nearest].astype(np.float32)
    distances[rows, nearest] = np.iinfo(distances.dtype).max  # the second nearest is the row's next minimum
    second = distances.min(axis=1)
    distances[rows, nearest] = best
    mutual = distances.argmin(axis=0)[nearest] == rows
    from_a = np.flatnonzero(mutual & (best < max_ratio * second))
    return from_a, nearest[from_a]


def _quartile_box(points: np.ndarray) -> float:
    """Area, in square pixels, of the box between the quartiles of ``(n, 2)`` points in x and in y.

    Quartiles, not extremes: one stray inlier far from a logo must not make it span the picture.
    """
    low, high = np.percentile(points, [25, 75], axis=0)
    return float(np.prod(high - low))


def affine_inliers(a: Features, b: Features, from_a: np.ndarray, to_b: np.ndarray, *,
                   residual: float = 3.0, min_area: float = MIN_AREA) -> int:
    """Matches that agree on the best affine transform RANSAC finds (up to 2 000 trials).

    Parameters
    ----------
    a, b : Features
        From :func:`orb_features`.
    from_a, to_b : ndarray of intp, shape (m,)
        Matched keypoint rows, from :func:`mutual_matches`.
    residual : float
        Largest distance, in pixels at ``SIDE``, between a match and where the
        transform puts it, for the match to count.
    min_area : float
        Smallest share of a picture the inliers must span, in each picture: the
        area of their quartile box (between the 25th and 75th percentiles of x
        and of y) over a quarter of the area of the box around all the
        picture's keypoints (what points spread evenly over it would give).

    Returns
    -------
    int
        Inliers of the best transform; 0 with fewer than 3 matches, or when the
        inliers span less than ``min_area`` of either picture.
    """
    if len(from_a) < 3:
        return 0
    _, inliers = cv2.estimateAffine2D(a.keypoints[from_a], b.keypoints[to_b], method=cv2.RANSAC,
                                      ransacReprojThreshold=residual, maxIters=2000, confidence=0.995)
    if inliers is None:
        return 0
    agree = inliers.ravel().astype(bool)
    for features, rows in ((a, from_a[agree]), (b, to_b[agree])):
        extent = np.ptp(features.keypoints, axis=0)
        if _quartile_box(features.keypoints[rows]) < min_area * float(extent[0] * extent[1]) / 4:
            return 0
    return int(agree.sum())


def verify_pair(a: Features, b: Features, *, residual: float = 3.0, max_ratio: float = 0.8,
                min_area: float = MIN_AREA, min_matches: int = 3) -> int:
    """Matches between two pictures that agree on one affine transform.

    Parameters
    ----------
    a, b : Features
        From :func:`orb_features`.
    residual, min_area : float
        As in :func:`affine_inliers`.
    max_ratio : float
        Lowe's ratio test (:func:`mutual_matches`).
    min_matches : int
        Fewer mutual matches than this give 0 without a RANSAC fit. A caller
        that only asks "at least ``floor`` inliers?" passes its floor: inliers
        never outnumber matches, so the verdict is the same, and most pairs of
        different photos stop before the fit.

    Returns
    -------
    int
        Inlier matches spanning both pictures (:func:`affine_inliers`); 0 with
        fewer than ``min_matches`` matches.
    """
    if len(a.keypoints) < 2 or len(b.keypoints) < 2:
        return 0
    from_a, to_b = mutual_matches(a, b, max_ratio=max_ratio)
    if len(from_a) < min_matches:
        return 0
    return affine_inliers(a, b, from_a, to_b, residual=residual, min_area=min_area)
