"""Inlier counts of candidate pairs, each picture's local features taken once.

The verified zone's stage (:func:`imgdedup.pipeline.dedup.dedup_decisions`
asks for it) over whatever holds the pictures: the bulk job's Dask tasks load
them from their source files or from decrypted blobs, ``find_duplicates`` from
the files it was given. Both hand :func:`pair_inliers` a batch of pairs and a
function that loads one picture; features
(:func:`imgdedup.pipeline.hashing.verify.orb_features`) are extracted once per
picture of the batch, so a batch whose pairs share pictures (pairs sorted by
their first image, as :func:`pair_batches` cuts them) costs one extraction per
picture, not two per pair.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from imgdedup.pipeline.errors import ImgdedupError
from imgdedup.pipeline.hashing.verify import Features, orb_features, verify_pair

#: Inlier count of a pair one of whose pictures could not be loaded (it never passes).
UNVERIFIED = -1


@dataclass(frozen=True)
class PairInliers:
    """What :func:`pair_inliers` found.

    Attributes
    ----------
    inliers : ndarray of int64, shape (m,)
        Inlier matches of each pair; :data:`UNVERIFIED` where a picture failed to load.
    failed : dict of int to Exception
        The pictures that failed to load, by image index, with the error raised.
    """

    inliers: np.ndarray
    failed: dict[int, Exception] = field(default_factory=dict)


def pair_inliers(pairs: np.ndarray, load_picture: Callable[[int], Image.Image]) -> PairInliers:
    """Verify each pair of pictures, extracting each picture's features once.

    Parameters
    ----------
    pairs : ndarray of int, shape (m, 2)
        Image indices.
    load_picture : callable
        ``load_picture(index) -> PIL.Image.Image`` (mode ``"RGB"``, upright);
        raises an :class:`~imgdedup.pipeline.errors.ImgdedupError` or ``OSError``
        for a picture that cannot be had (unreadable, corrupt, failed to decrypt).

    Returns
    -------
    PairInliers
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    features: dict[int, Features | None] = {}
    failed: dict[int, Exception] = {}

    def features_of(index: int) -> Features | None:
        if index not in features:
            try:
                features[index] = orb_features(load_picture(index))
            except (ImgdedupError, OSError) as exc:
                features[index], failed[index] = None, exc
        return features[index]

    inliers = np.full(len(pairs), UNVERIFIED, np.int64)
    for row, (a, b) in enumerate(pairs.tolist()):
        first, second = features_of(a), features_of(b)
        if first is not None and second is not None:
            inliers[row] = verify_pair(first, second)
    return PairInliers(inliers, failed)


def pair_batches(pairs: np.ndarray, size: int) -> list[np.ndarray]:
    """Positions of ``pairs`` (m, 2) in batches of at most ``size``, pairs of one first image together.

    Returns
    -------
    list of ndarray of int64
        Positions into ``pairs``, the pairs sorted by (first, second) image and
        cut in order, so pairs that share their first picture share a batch
        unless it holds more than ``size`` of them.
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return [order[start:start + size] for start in range(0, len(order), size)]
