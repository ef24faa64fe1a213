"""Dedup decisions: from duplicate groups to one canonical image and pointer rows per group.

Pure functions over arrays, server side (no key): the inputs are group labels,
image sizes, an order, packed fingerprints in one space (tokens, or raw hashes
inside a key-holding job) and keyed content digests, all of which the store
already holds. The bulk job (``jobs/bulk.py``) forms the groups with the index's
near-duplicate join and calls these to decide, for every image, whether it keeps
its blob (a canonical) or becomes a pointer to its group's canonical.

Rule (per group): an image the store already holds as a canonical stays one —
committed rows are never rewritten — and the group's new members point to the
best of those; a group of new images only takes the one with the most pixels,
then the earliest in the given order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Marks "no canonical" / "no distance" in :class:`PointerPlan` arrays.
NONE = -1


@dataclass(frozen=True)
class PointerPlan:
    """What becomes of each image of a dedup pass.

    Attributes
    ----------
    duplicate_of : ndarray of int64, shape (n,)
        Index of the canonical image a pointer refers to; :data:`NONE` for a canonical.
    distance : ndarray of int32, shape (n,)
        Hamming distance, in bits, from a pointer to its canonical (smallest over
        the pointer's dihedral forms when given); :data:`NONE` for a canonical.
    """

    duplicate_of: np.ndarray
    distance: np.ndarray

    @property
    def is_pointer(self) -> np.ndarray:
        """(n,) bool: True where the image becomes a pointer."""
        return self.duplicate_of != NONE


def exact_duplicate_pairs(digests: np.ndarray) -> np.ndarray:
    """Pairs of images whose keyed content digests are equal (byte-identical files).

    Parameters
    ----------
    digests : ndarray of uint8, shape (n, d)
        One digest per image.

    Returns
    -------
    ndarray of int64, shape (m, 2)
        ``(first, other)``: each later copy paired with the first image (lowest
        index) holding the same bytes, so the pairs link every copy into one group.
    """
    digests = np.ascontiguousarray(digests, dtype=np.uint8)
    if len(digests) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    _, first, inverse = np.unique(digests, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    owner = first[inverse]
    others = np.flatnonzero(owner != np.arange(len(digests)))
    return np.column_stack([owner[others], others]).astype(np.int64)


def choose_canonicals(groups: np.ndarray, pixels: np.ndarray, order: np.ndarray,
                      fixed: np.ndarray) -> np.ndarray:
    """The canonical image of each group, for every image.

    Parameters
    ----------
    groups : ndarray of int, shape (n,)
        Group label of each image (singletons have labels of their own).
    pixels : ndarray of int, shape (n,)
        Width × height of each image.
    order : ndarray of int, shape (n,)
        Rank in time (smaller = earlier): breaks ties in ``pixels``.
    fixed : ndarray of bool, shape (n,)
        Images already committed as canonicals; they stay canonicals of themselves.

    Returns
    -------
    ndarray of int64, shape (n,)
        Index of the canonical each image belongs to: itself for fixed images
        and for each group's chosen one; for the other members, the group's fixed
        image with the most pixels (then earliest) if it has any, else its
        member with the most pixels (then earliest).
    """
    groups, pixels, order = (np.asarray(a, dtype=np.int64) for a in (groups, pixels, order))
    fixed = np.asarray(fixed, dtype=bool)
    n = len(groups)
    if not len(pixels) == len(order) == len(fixed) == n:
        raise ValueError("groups, pixels, order and fixed must have one entry per image")
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    # Best first inside each group: fixed before new, then more pixels, then earlier.
    ranked = np.lexsort((order, -pixels, ~fixed, groups))
    sorted_groups = groups[ranked]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    best_of_group = ranked[starts]
    canonical = np.empty(n, dtype=np.int64)
    canonical[ranked] = np.repeat(best_of_group, np.diff(np.r_[starts, n]))
    canonical[fixed] = np.flatnonzero(fixed)
    return canonical


def plan_pointers(canonical: np.ndarray, fingerprints: np.ndarray,
                  dihedral: np.ndarray | None = None) -> PointerPlan:
    """Pointer rows for every image whose canonical is another image.

    Parameters
    ----------
    canonical : ndarray of int64, shape (n,)
        From :func:`choose_canonicals`.
    fingerprints : ndarray of uint8, shape (n, nbytes)
        Packed fingerprints, all in one space (so Hamming distances are meaningful).
    dihedral : ndarray of uint8, shape (n, 8, nbytes), optional
        The 8 dihedral forms of each fingerprint (plain form first); the distance
        is then the smallest over the pointer's forms against the canonical's
        plain form. Rows of images that are never pointers may hold anything.

    Returns
    -------
    PointerPlan
    """
    canonical = np.asarray(canonical, dtype=np.int64)
    pointers = np.flatnonzero(canonical != np.arange(len(canonical)))
    duplicate_of = np.full(len(canonical), NONE, dtype=np.int64)
    distance = np.full(len(canonical), NONE, dtype=np.int32)
    if len(pointers):
        target = fingerprints[canonical[pointers]]
        if dihedral is None:
            bits = np.bitwise_count(fingerprints[pointers] ^ target).sum(axis=-1)
        else:
            bits = np.bitwise_count(dihedral[pointers] ^ target[:, None, :]).sum(axis=-1).min(axis=-1)
        duplicate_of[pointers] = canonical[pointers]
        distance[pointers] = bits
    return PointerPlan(duplicate_of, distance)
