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
3. with a verified zone (``verify_t`` above ``threshold_t``), a pair farther
   than ``threshold_t`` but within ``verify_t`` (one per pair of groups, as
   the join returns them) joins two groups once a ``verify`` callable, a second
   opinion on the pixels, gives it at least ``min_inliers`` inliers; so does a
   pair that shares enough feature keys (``key_pairs``: crops whose
   fingerprints lie beyond the zone), at whatever distance;
4. each group keeps one canonical image and the others become pointers to it:
   stars, every pointer within ``threshold_t`` of its canonical or verified
   against it (a member that is neither is verified against its canonical in
   a second round, one verification per member, or split off for review).

Rule (per group): an image the store already holds as a canonical stays one —
committed rows are never rewritten — and the group's new members point to the
best of those; a group of new images only takes its best member. "Best" is the
``dedup.keep`` policy, turned into one rank per image by :func:`~imgdedup.pipeline.keep.keep_rank`:
``best`` (more pixels, then the less lossy encoding, then EXIF present, then
the earliest), ``largest`` (more pixels, then the earliest) or ``earliest``
(``pipeline/keep.py``).
A re-election (the bulk job's ``--re-elect``) passes no fixed images, so the
best member of each group wins even over a committed canonical.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from imgdedup.pipeline.groups import component_star_pairs, verified_star_groups
from imgdedup.pipeline.hashing.bits import paired_distances
from imgdedup.pipeline.index.join import (JoinedGroups, connected_components, near_duplicate_groups,
                                          pair_distances, zone_pairs_between_groups)
from imgdedup.pipeline.keep import canonical_preference, choose_canonicals

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


def plan_pointers(canonical: np.ndarray, fingerprints: np.ndarray,
                  dihedral: np.ndarray | None = None) -> PointerPlan:
    """Pointer rows for every image whose canonical is another image.

    Parameters
    ----------
    canonical : ndarray of int64, shape (n,)
        From :func:`~imgdedup.pipeline.keep.choose_canonicals`.
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
        forms = fingerprints[pointers][:, None, :] if dihedral is None else dihedral[pointers]
        duplicate_of[pointers] = canonical[pointers]
        distance[pointers] = paired_distances(forms, fingerprints[canonical[pointers]])
    return PointerPlan(duplicate_of, distance)


def re_pointed(current: np.ndarray, distance: np.ndarray, winner: np.ndarray,
               fingerprints: np.ndarray) -> PointerPlan:
    """Committed rows pointed at the canonical their group re-elected (groups stay stars).

    Parameters
    ----------
    current : ndarray of int, shape (n,)
        Index of each committed row's canonical among the committed rows (itself for a canonical).
    distance : ndarray of int, shape (n,)
        Each committed pointer's recorded distance to ``current`` (anything for a canonical).
    winner : ndarray of int, shape (n,)
        For each committed canonical ``c``, the index (into ``fingerprints``) of
        the canonical its group now has; other entries are ignored.
    fingerprints : ndarray of uint8, shape (m, nbytes), m >= n
        Plain fingerprints of the committed rows (first n) and any new images.

    Returns
    -------
    PointerPlan
        Over the committed rows: ``duplicate_of`` indexes ``fingerprints``
        (:data:`NONE` for a canonical). A row whose canonical did not change
        keeps its distance; a demoted canonical gets its distance to the
        winner, and its pointers the smaller of their plain distance to the
        winner and the triangle bound through the old canonical (the
        dihedral forms of committed rows are not kept, so a turned copy's
        exact distance cannot be recomputed; both are upper bounds of it).
    """
    current = np.asarray(current, dtype=np.int64)
    distance = np.asarray(distance, dtype=np.int64)
    n = len(current)
    rows = np.arange(n)
    elected = np.asarray(winner, dtype=np.int64)[current]

    def plain(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return paired_distances(fingerprints[a][:, None, :], fingerprints[b])

    # Distance from each committed canonical to its group's winner.
    to_winner = np.zeros(n, dtype=np.int64)
    demoted = (current == rows) & (elected != rows)
    if demoted.any():
        c, w = rows[demoted], elected[demoted]
        bound = plain(c, w)
        was_its_pointer = (w < n) & (current[np.minimum(w, n - 1)] == c)
        bound[was_its_pointer] = np.minimum(bound[was_its_pointer], distance[w[was_its_pointer]])
        to_winner[c] = bound
    new_distance = np.where(current == rows, to_winner, distance)
    moved = (current != rows) & (elected != current) & (elected != rows)
    if moved.any():
        r = rows[moved]
        new_distance[r] = np.minimum(plain(r, elected[r]), distance[r] + to_winner[current[r]])
    is_canonical = elected == rows
    return PointerPlan(np.where(is_canonical, NONE, elected),
                       np.where(is_canonical, NONE, new_distance).astype(np.int32))


def class_radii(labels: np.ndarray, to_centre: np.ndarray, k: int) -> np.ndarray:
    """(k,) int64: each class's largest member distance to its centre (0 for an empty class).

    ``labels`` (n,) are class numbers ``0..k-1``, ``to_centre`` (n,) distances in bits.
    """
    radii = np.zeros(k, np.int64)
    np.maximum.at(radii, labels, to_centre)
    return radii


#: ``join(fingerprints (m, nbytes), forms (m, F, nbytes)) -> JoinedGroups`` (see :func:`dedup_decisions`).
NearDuplicateJoin = Callable[[np.ndarray, np.ndarray], JoinedGroups]
#: ``verify(pairs (m, 2) int64 image indices) -> (m,) int inliers`` (see :func:`dedup_decisions`).
PairVerifier = Callable[[np.ndarray], np.ndarray]


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
        canonical and did not pass verification against it
        (:func:`imgdedup.pipeline.groups.star_groups`): for a person to review.
    verified, verified_passed : int
        Pairs given to the verifier (zone pairs, then members against their
        canonical) and those that passed.
    """

    plan: PointerPlan
    exact: np.ndarray
    sizes: np.ndarray
    radii: np.ndarray
    near_links: int
    exact_pairs: int
    review: np.ndarray
    verified: int = 0
    verified_passed: int = 0


def dedup_decisions(fingerprints: np.ndarray, dihedral: np.ndarray | None, labels: np.ndarray,
                    to_centre: np.ndarray, centres: np.ndarray, quality: np.ndarray, digests: np.ndarray,
                    rank: np.ndarray, fixed: np.ndarray, *, threshold_t: int, min_quality: int,
                    batch: int = 1024, threads: int = 1, links: np.ndarray | None = None,
                    join: NearDuplicateJoin | None = None, verify_t: int | None = None,
                    verify: PairVerifier | None = None, min_inliers: int = 20,
                    key_pairs: np.ndarray | None = None) -> DedupDecisions:
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
    rank : ndarray of int, shape (n,)
        Keep order from :func:`~imgdedup.pipeline.keep.keep_rank` (smaller = kept first).
    fixed : ndarray of bool, shape (n,)
        Images already committed as canonicals (see :func:`~imgdedup.pipeline.keep.choose_canonicals`).
    threshold_t : int
        Largest distance, in bits, of a near duplicate.
    min_quality : int
    batch, threads : int
        Queries per scan and scan threads of the in-process near-duplicate join.
    links : ndarray of int, shape (m, 2), optional
        Pairs known to share a group whatever their distance (a re-election
        links each committed pointer to its canonical).
    join : callable, optional
        ``join(fingerprints, forms) -> JoinedGroups``: the near-duplicate groups
        of the rows given (``(m, nbytes)`` and ``(m, F, nbytes)`` uint8, ``F``
        forms plain first), each row's label the smallest row of its group,
        pairs within ``threshold_t``, and the zone pairs up to ``verify_t``
        between groups (row indices into the rows given). The bulk job passes
        its join on Dask; by default
        :func:`~imgdedup.pipeline.index.join.near_duplicate_groups` in exact
        mode over the given classes, in this process.
    verify_t : int, optional
        Top of the verified zone, in bits; None or at most ``threshold_t``: no
        zone and no verification (the decisions without a verifier).
    verify : callable, optional
        ``verify(pairs) -> inliers``: ``pairs`` (m, 2) int64 image indices,
        ``inliers`` (m,) int, the second opinion on each pair (negative: the
        pair could not be verified). Needed with a zone.
    min_inliers : int
        Inliers a pair needs to pass.
    key_pairs : ndarray of int, shape (m, 2), optional
        More candidates for the verifier, image indices: pairs that share
        enough feature keys (:mod:`imgdedup.pipeline.index.key_join`), at any
        fingerprint distance. They join groups only once verified, like zone
        pairs, and only with a zone; pairs with an image below ``min_quality``
        are left out.

    Returns
    -------
    DedupDecisions
    """
    n, k = len(fingerprints), len(centres)
    zoned = verify_t is not None and verify_t > threshold_t
    if zoned and verify is None:
        raise ValueError(f"a verified zone up to {verify_t} bits needs a verify callable")
    # Routing needs every member's distance; the class table's radii (below) count canonicals only.
    routing_radii = class_radii(labels, to_centre, k)
    eligible = np.flatnonzero(quality >= min_quality)
    forms = fingerprints[:, None, :] if dihedral is None else dihedral
    if join is None:
        def join(rows: np.ndarray, row_forms: np.ndarray) -> JoinedGroups:
            return near_duplicate_groups(rows, labels[eligible], centres, routing_radii, threshold_t, row_forms,
                                         verify_t=verify_t if zoned else None, batch=batch, threads=threads)
    joined = join(fingerprints[eligible], forms[eligible])
    near_groups = eligible[joined.labels]
    # Linking each image to its near-duplicate group's first image keeps those
    # groups' components; the exact copies then join them.
    grouped = near_groups != eligible
    near_links = np.stack([eligible[grouped], near_groups[grouped]], axis=1)
    with_digest = np.flatnonzero(digests.any(axis=1))
    exact_pairs = with_digest[exact_duplicate_pairs(digests[with_digest])]
    known = np.zeros((0, 2), np.int64) if links is None else np.asarray(links, dtype=np.int64).reshape(-1, 2)
    given = np.concatenate([exact_pairs, known])
    verified = np.zeros((0, 2), np.int64)
    asked = 0
    if zoned:
        # Exact copies and known links may have joined more groups than the join saw.
        direct_groups = connected_components(n, np.concatenate([near_links, given]))
        candidates, distances = eligible[joined.zone_pairs], joined.zone_distances
        if key_pairs is not None:
            keyed = np.asarray(key_pairs, np.int64).reshape(-1, 2)
            keyed = keyed[(quality[keyed] >= min_quality).all(axis=1)]
            candidates = np.concatenate([candidates, keyed])
            distances = np.concatenate([distances, pair_distances(fingerprints, forms, keyed)])
        zone, _ = zone_pairs_between_groups(direct_groups, candidates, distances)
        verified, asked = _passed(zone, verify, min_inliers), len(zone)
    groups = connected_components(n, np.concatenate([near_links, given, verified]))
    canonical = choose_canonicals(groups, rank, fixed)
    # Groups are stars, not chains: every pointer within t of its own canonical or
    # verified against it (byte-identical copies, known links and verified pairs
    # count as pairs at distance 0); with a zone, a member that reached its group
    # only through another member is verified against its canonical, once.
    linkable = np.zeros(n, dtype=bool)
    linkable[eligible] = True
    pairs, distances = component_star_pairs(groups, canonical, forms, linkable, threshold_t)
    stars, checked = verified_star_groups(canonical, canonical_preference(rank, fixed), pairs, distances,
                                          np.concatenate([given, verified]), threshold_t, linkable,
                                          (lambda p: _passed(p, verify, min_inliers)) if zoned else None)
    asked += checked
    verified_passed = len(verified) + int(stars.verified.sum())
    plan = plan_pointers(stars.canonical, fingerprints, dihedral)

    is_canonical = ~plan.is_pointer
    sizes = np.bincount(labels[is_canonical], minlength=k).astype(np.int64)
    radii = class_radii(labels[is_canonical], to_centre[is_canonical], k)
    exact = np.zeros(n, dtype=bool)
    points = np.flatnonzero(plan.is_pointer)
    exact[points] = (digests[points] == digests[plan.duplicate_of[points]]).all(axis=1)
    return DedupDecisions(plan, exact, sizes, radii, len(near_links), len(exact_pairs), stars.review, asked,
                          verified_passed)


def _passed(pairs: np.ndarray, verify: PairVerifier, min_inliers: int) -> np.ndarray:
    """(p, 2) int64: the rows of ``pairs`` (m, 2) that ``verify`` gives at least ``min_inliers`` inliers."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return pairs
    inliers = np.asarray(verify(pairs)).reshape(-1)
    if len(inliers) != len(pairs):
        raise ValueError(f"the verifier returned {len(inliers)} inlier counts for {len(pairs)} pairs")
    return pairs[inliers >= min_inliers]
