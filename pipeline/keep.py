"""Which copy of a duplicate group is kept: the ``dedup.keep`` policies, as ranks, and each group's canonical.

Pure functions over the clear columns every row carries (pixels, encoding,
JPEG quality, bytes, EXIF) and the group labels the dedup rule
(:func:`imgdedup.pipeline.dedup.dedup_decisions`) forms; no key needed.
"""
from __future__ import annotations

import numpy as np


#: The ``dedup.keep`` policies :func:`keep_rank` knows.
KEEP_POLICIES = ("best", "largest", "earliest")


def keep_rank(keep: str, *, pixels: np.ndarray, lossless: np.ndarray, jpeg_quality: np.ndarray,
              file_bytes: np.ndarray, exif: np.ndarray) -> np.ndarray:
    """Each image's place in the order a ``dedup.keep`` policy keeps copies in (0 = keep first).

    Parameters
    ----------
    keep : {"best", "largest", "earliest"}
        ``best``: more pixels, then the less lossy encoding (lossless before
        lossy; among lossy files the higher estimated JPEG quality, then more
        file bytes per pixel), then EXIF present, then the earliest.
        ``largest``: more pixels, then the earliest. ``earliest``: the order given.
    pixels : ndarray of int, shape (n,)
        Width × height.
    lossless : ndarray of bool, shape (n,)
    jpeg_quality : ndarray of int, shape (n,)
        Estimated JPEG quality 1-100; 0 for other encodings (or unknown).
    file_bytes : ndarray of int, shape (n,)
        File sizes in bytes.
    exif : ndarray of bool, shape (n,)

    Returns
    -------
    ndarray of int64, shape (n,)
        A permutation of ``0..n-1``; images are in time order (earliest first),
        which breaks every tie.

    Raises
    ------
    ValueError
        An unknown policy.
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    n = len(pixels)
    order = np.arange(n)
    if keep == "earliest":
        keys = (order,)
    elif keep == "largest":
        keys = (order, -pixels)
    elif keep == "best":
        lossless = np.asarray(lossless, dtype=bool)
        per_pixel = np.asarray(file_bytes, dtype=np.float64) / np.maximum(pixels, 1)
        keys = (order, ~np.asarray(exif, dtype=bool), np.where(lossless, 0.0, -per_pixel),
                np.where(lossless, 0, -np.asarray(jpeg_quality, dtype=np.int64)), ~lossless, -pixels)
    else:
        raise ValueError(f"dedup.keep must be one of {list(KEEP_POLICIES)}, got {keep!r}")
    rank = np.empty(n, dtype=np.int64)
    rank[np.lexsort(keys)] = order
    return rank


def canonical_preference(rank: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """(n,) int64, a permutation: each image's place as a canonical.

    Committed canonicals (``fixed``) first, then by ``rank`` (:func:`keep_rank`).
    """
    ranked = np.lexsort((np.asarray(rank, np.int64), ~np.asarray(fixed, bool)))
    preference = np.empty(len(ranked), dtype=np.int64)
    preference[ranked] = np.arange(len(ranked))
    return preference


def choose_canonicals(groups: np.ndarray, rank: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """The canonical image of each group, for every image.

    Parameters
    ----------
    groups : ndarray of int, shape (n,)
        Group label of each image (singletons have labels of their own).
    rank : ndarray of int, shape (n,)
        Keep order (smaller = kept first), from :func:`keep_rank`.
    fixed : ndarray of bool, shape (n,)
        Images already committed as canonicals; they stay canonicals of themselves.

    Returns
    -------
    ndarray of int64, shape (n,)
        Index of the canonical each image belongs to: itself for fixed images
        and for each group's chosen one; for the other members, the group's
        best-ranked fixed image if it has any, else its best-ranked member.
    """
    groups, rank = (np.asarray(a, dtype=np.int64) for a in (groups, rank))
    fixed = np.asarray(fixed, dtype=bool)
    n = len(groups)
    if not len(rank) == len(fixed) == n:
        raise ValueError("groups, rank and fixed must have one entry per image")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # Best first inside each group: fixed before new, then by rank.
    ranked = np.lexsort((canonical_preference(rank, fixed), groups))
    sorted_groups = groups[ranked]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    best_of_group = ranked[starts]
    canonical = np.empty(n, dtype=np.int64)
    canonical[ranked] = np.repeat(best_of_group, np.diff(np.r_[starts, n]))
    canonical[fixed] = np.flatnonzero(fixed)
    return canonical
