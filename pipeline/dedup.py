"""Dedup decisions: which images are duplicates, their groups, one canonical per group, pointers.

Pure functions over arrays, server side (no key): the inputs are packed
fingerprints in one space (tokens, or raw hashes inside a key-holding job),
their classes, quality scores, image sizes and keyed content digests, all of
which the store already holds. :func:`dedup_decisions` is the whole rule the
bulk job (``jobs/bulk_dedup.py``) applies once its images are in classes:

1. images of quality at least ``min_quality`` join a near-duplicate group when
   within ``threshold_t`` bits of a member (the index's join, searching each
   class and the neighbour classes its radius cannot rule out);
2. byte-identical files (equal digests) join one group whatever their quality;
3. each group keeps one canonical image and the others become pointers to it.

Rule (per group): an image the store already holds as a canonical stays one —
committed rows are never rewritten — and the group's new members point to the
best of those; a group of new images only takes the one with the most pixels,
then the earliest in the given order.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from imgdedup.pipeline.groups import component_star_pairs, star_groups
from imgdedup.pipeline.index.join import connected_components, near_duplicate_components

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


def preference_rank(pixels: np.ndarray, order: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """(n,) int64, all distinct: each image's place as a canonical, 0 the most preferred.

    Committed canonicals (``fixed``) first, then more pixels, then earlier in ``order``.
    """
    ranked = np.lexsort((np.asarray(order, np.int64), -np.asarray(pixels, np.int64), ~np.asarray(fixed, bool)))
    rank = np.empty(len(ranked), dtype=np.int64)
    rank[ranked] = np.arange(len(ranked))
    return rank


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
    # Best first inside each group, in preference_rank's order.
    ranked = np.lexsort((preference_rank(pixels, order, fixed), groups))
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


def class_radii(labels: np.ndarray, to_centre: np.ndarray, k: int) -> np.ndarray:
    """(k,) int64: each class's largest member distance to its centre (0 for an empty class).

    ``labels`` (n,) are class numbers ``0..k-1``, ``to_centre`` (n,) distances in bits.
    """
    radii = np.zeros(k, np.int64)
    np.maximum.at(radii, labels, to_centre)
    return radii


#: ``join(fingerprints (m, nbytes), forms (m, F, nbytes)) -> (m,) int64 group labels`` (see :func:`dedup_decisions`).
NearDuplicateJoin = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DedupDecisions:
    """What :func:`dedup_decisions` decided for every image, and the classes' canonical statistics.

    Attributes
    ----------
    plan : PointerPlan
        Each image's canonical (pointers) and distance to it.
    exact : ndarray of bool, shape (n,)
        Pointers whose content digest equals their canonical's (the same bytes).
    sizes : ndarray of int64, shape (k,)
        Canonical images per class.
    radii : ndarray of int64, shape (k,)
        Largest distance in bits from a class's canonical images to its centre.
    near_links, exact_pairs : int
        Images joined to a near-duplicate group, and byte-identical pairs found.
    review : ndarray of int64, shape (r,)
        Images split off their component because they lie beyond ``t`` of its
        canonical (:func:`imgdedup.pipeline.groups.star_groups`): for a person to review.
    """

    plan: PointerPlan
    exact: np.ndarray
    sizes: np.ndarray
    radii: np.ndarray
    near_links: int
    exact_pairs: int
    review: np.ndarray


def dedup_decisions(fingerprints: np.ndarray, dihedral: np.ndarray | None, labels: np.ndarray,
                    to_centre: np.ndarray, centres: np.ndarray, quality: np.ndarray, digests: np.ndarray,
                    pixels: np.ndarray, fixed: np.ndarray, *, threshold_t: int, min_quality: int,
                    batch: int = 1024, threads: int = 1, join: NearDuplicateJoin | None = None) -> DedupDecisions:
    """The dedup rule over one set of images: groups, canonicals, pointers.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
        Packed fingerprints in one space.
    dihedral : ndarray of uint8, shape (n, 8, nbytes), or None
        Each image's 8 dihedral forms (plain form first), or None to compare plain forms only.
    labels : ndarray of int, shape (n,)
        Class of each image, ``0..k-1``.
    to_centre : ndarray of int, shape (n,)
        Bits from each image to its class centre.
    centres : ndarray of uint8, shape (k, nbytes)
    quality : ndarray of int, shape (n,)
        Quality scores 0-100; below ``min_quality`` an image takes part in exact matching only.
    digests : ndarray of uint8, shape (n, 32)
        Keyed content digests; an all-zero row (a row written before digests
        were recorded) takes no part in exact matching.
    pixels : ndarray of int, shape (n,)
        Width x height; the larger image of a group becomes its canonical.
    fixed : ndarray of bool, shape (n,)
        Images already committed as canonicals (see :func:`choose_canonicals`);
        the others are in time order.
    threshold_t : int
        Largest distance, in bits, of a near duplicate.
    min_quality : int
    batch, threads : int
        Queries per scan and scan threads of the in-process near-duplicate join.
    join : callable, optional
        ``join(fingerprints, forms) -> labels``: the near-duplicate groups of the
        rows given (``(m, nbytes)`` and ``(m, F, nbytes)`` uint8, ``F`` forms plain
        first), each row's label the smallest row of its group, pairs within
        ``threshold_t``. The bulk job passes its join on Dask; by default
        :func:`~imgdedup.pipeline.index.join.near_duplicate_components` in
        exact mode over the given classes, in this process.

    Returns
    -------
    DedupDecisions
    """
    n, k = len(fingerprints), len(centres)
    # Routing needs every member's distance; the class table's radii (below) count canonicals only.
    routing_radii = class_radii(labels, to_centre, k)
    eligible = np.flatnonzero(quality >= min_quality)
    forms = fingerprints[:, None, :] if dihedral is None else dihedral
    if join is None:
        def join(rows: np.ndarray, row_forms: np.ndarray) -> np.ndarray:
            return near_duplicate_components(rows, labels[eligible], centres, routing_radii, threshold_t, row_forms,
                                             batch=batch, threads=threads)
    near_groups = eligible[join(fingerprints[eligible], forms[eligible])]
    # Linking each image to its near-duplicate group's first image keeps those
    # groups' components; the exact copies then join them.
    grouped = near_groups != eligible
    near_links = np.stack([eligible[grouped], near_groups[grouped]], axis=1)
    with_digest = np.flatnonzero(digests.any(axis=1))
    exact_pairs = with_digest[exact_duplicate_pairs(digests[with_digest])]
    groups = connected_components(n, np.concatenate([near_links, exact_pairs]))
    canonical = choose_canonicals(groups, pixels, np.arange(n), fixed)
    # Groups are stars, not chains: every pointer within t of its own canonical.
    linkable = np.zeros(n, dtype=bool)
    linkable[eligible] = True
    pairs, distances = component_star_pairs(groups, canonical, forms, linkable, threshold_t)
    stars = star_groups(canonical, preference_rank(pixels, np.arange(n), fixed),
                        np.concatenate([pairs, exact_pairs]),
                        np.concatenate([distances, np.zeros(len(exact_pairs), np.int64)]), threshold_t)
    plan = plan_pointers(stars.canonical, fingerprints, dihedral)

    is_canonical = ~plan.is_pointer
    sizes = np.bincount(labels[is_canonical], minlength=k).astype(np.int64)
    radii = class_radii(labels[is_canonical], to_centre[is_canonical], k)
    exact = np.zeros(n, dtype=bool)
    points = np.flatnonzero(plan.is_pointer)
    exact[points] = (digests[points] == digests[plan.duplicate_of[points]]).all(axis=1)
    return DedupDecisions(plan, exact, sizes, radii, len(near_links), len(exact_pairs), stars.review)
