"""Duplicate groups that cannot chain: stars around a canonical image.

Connected components of the near-duplicate pair graph let a member join
through a chain of pairs, so one false pair merges two photos' whole groups
and a pointer can lie far beyond ``t`` from the image it points to.
:func:`star_groups` turns components into stars: every pointer lies within
``t`` of the canonical it points to, by a pair the join found.

Rule, given each image's canonical as the component rule chose it
(:func:`imgdedup.pipeline.dedup.choose_canonicals`) and a rank (the order that
rule prefers images in, best first):

1. Every image that is a canonical stays one; every member with a pair to its
   own canonical within ``t`` keeps that canonical.
2. Every other member is *split off* its component and listed for review. It
   points to the best-ranked canonical of step 1 it has a pair within ``t`` with
   (a component may hold several committed canonicals), if any.
3. The split members left over form new stars greedily, best rank first: the
   best one left becomes a canonical, and every one left with a pair to it
   within ``t`` points to it; repeat until none is left.

The result is deterministic (it depends on the pairs, not their order) and
every pointer's distance to its canonical is at most ``t``.
:func:`verified_star_groups` adds a second opinion: pairs a verifier passed
count as pairs within ``t``, and a member step 1 would split is first
verified against its own canonical (once), keeping it if it passes. Members of one star
can still lie up to ``2 t`` apart; two images of one star never reach each
other only through a third image's pair. Pure function over arrays, server side:
the pairs and distances are what the index's join returns on tokens.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from imgdedup.pipeline.hashing.bits import paired_distances

#: Marks "no distance" (a canonical) in :attr:`StarGroups.distance`.
NONE = -1


@dataclass(frozen=True)
class StarGroups:
    """Star groups of a dedup pass.

    Attributes
    ----------
    canonical : ndarray of int64, shape (n,)
        Index of the image each image points to; itself for a canonical. A
        drop-in replacement for :func:`imgdedup.pipeline.dedup.choose_canonicals`'
        result (e.g. for :func:`imgdedup.pipeline.dedup.plan_pointers`).
    distance : ndarray of int32, shape (n,)
        Distance of the pair that links a pointer to its canonical, in bits,
        at most ``t``; :data:`NONE` for a canonical.
    split : ndarray of bool, shape (n,)
        Images whose canonical is no longer the one the component rule chose
        (they were more than ``t`` from it): the list for a person to review.
    verified : ndarray of bool, shape (n,)
        Members kept with their canonical because they passed verification
        against it in :func:`verified_star_groups`' second round.
    """

    canonical: np.ndarray
    distance: np.ndarray
    split: np.ndarray
    verified: np.ndarray

    @property
    def review(self) -> np.ndarray:
        """Indices of the split images, ascending, shape (m,) int64."""
        return np.flatnonzero(self.split)


def star_groups(canonical: np.ndarray, rank: np.ndarray, pairs: np.ndarray,
                distances: np.ndarray, t: int) -> StarGroups:
    """Split duplicate groups into stars whose every pointer lies within ``t`` of its canonical.

    Parameters
    ----------
    canonical : ndarray of int, shape (n,)
        Each image's canonical as the component rule chose it (itself for a
        canonical, including every already committed one).
    rank : ndarray of int, shape (n,)
        Preference of each image as a canonical, smaller is better, all
        distinct: the order the component rule uses (committed first, then
        more pixels, then earlier), so a new star's centre is chosen the same way.
    pairs : ndarray of int, shape (m, 2)
        Near-duplicate pairs ``(i, j)``, each unordered pair at most once.
    distances : ndarray of int, shape (m,)
        Each pair's distance in bits (smallest over the dihedral forms); pairs
        farther than ``t`` are ignored.
    t : int
        Largest distance from a pointer to its canonical, in bits.

    Returns
    -------
    StarGroups

    Raises
    ------
    ValueError
        Arrays of mismatched lengths, a canonical outside ``0..n-1`` or one that
        is not its own canonical, or ranks that repeat.
    """
    canonical = np.asarray(canonical, dtype=np.int64)
    rank = np.asarray(rank, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    distances = np.asarray(distances, dtype=np.int64).reshape(-1)
    n = len(canonical)
    _check(canonical, rank, pairs, distances)

    near = distances <= t
    pairs, distances = pairs[near], distances[near]
    # Both directions of every pair: (image, neighbour, distance).
    a = np.concatenate([pairs[:, 0], pairs[:, 1]])
    b = np.concatenate([pairs[:, 1], pairs[:, 0]])
    d = np.concatenate([distances, distances])

    is_centre = canonical == np.arange(n)
    out = canonical.copy()
    distance = np.full(n, NONE, dtype=np.int32)

    # Step 1: a member with a pair to its own canonical keeps it.
    own = (b == canonical[a]) & ~is_centre[a]
    distance[a[own]] = d[own]
    kept = is_centre.copy()
    kept[a[own]] = True
    split = ~kept

    # Step 2: a split member joins the best-ranked canonical it has a pair with.
    to_centre = split[a] & is_centre[b]
    if to_centre.any():
        sa, sb, sd = a[to_centre], b[to_centre], d[to_centre]
        order = np.lexsort((rank[sb], sa))
        first = np.r_[True, sa[order][1:] != sa[order][:-1]]
        chosen = order[first]
        out[sa[chosen]] = sb[chosen]
        distance[sa[chosen]] = sd[chosen]
        kept[sa[chosen]] = True

    # Step 3: greedy stars among those left, best rank first.
    left = ~kept
    if left.any():
        _greedy_stars(left, rank, a, b, d, out, distance)
    return StarGroups(out, distance, split, np.zeros(n, dtype=bool))


def verified_star_groups(canonical: np.ndarray, rank: np.ndarray, pairs: np.ndarray, distances: np.ndarray,
                         accepted: np.ndarray, t: int, checkable: np.ndarray,
                         verify: Callable[[np.ndarray], np.ndarray] | None) -> tuple[StarGroups, int]:
    """:func:`star_groups` with accepted pairs, and a second round that verifies members against their canonical.

    Parameters
    ----------
    canonical, rank, t
        As for :func:`star_groups`.
    pairs : ndarray of int, shape (m, 2)
    distances : ndarray of int, shape (m,)
        Measured pairs, as for :func:`star_groups`.
    accepted : ndarray of int, shape (a, 2)
        Pairs that belong together whatever their distance (byte-identical
        copies, known links, pairs a verifier passed): taken as within ``t``.
    checkable : ndarray of bool, shape (n,)
        Images whose pictures may be verified (those that passed the quality gate).
    verify : callable or None
        ``verify(pairs (k, 2) int64) -> (p, 2)``: the pairs that pass. Each
        member :func:`star_groups` would split, with its canonical checkable,
        is verified against its canonical once; one that passes keeps it. None:
        no second round.

    Returns
    -------
    stars : StarGroups
        Its ``verified`` marks the members kept by the second round.
    checked : int
        Pairs given to ``verify``.
    """
    accepted = np.asarray(accepted, np.int64).reshape(-1, 2)
    pairs = np.concatenate([np.asarray(pairs, np.int64).reshape(-1, 2), accepted])
    distances = np.concatenate([np.asarray(distances, np.int64).reshape(-1), np.zeros(len(accepted), np.int64)])
    stars = star_groups(canonical, rank, pairs, distances, t)
    if verify is None:
        return stars, 0
    canonical = np.asarray(canonical, np.int64)
    split = stars.review
    split = split[checkable[split] & checkable[canonical[split]]]
    asked = np.stack([split, canonical[split]], axis=1)
    passed = np.asarray(verify(asked), np.int64).reshape(-1, 2)
    if len(passed) == 0:
        return stars, len(asked)
    stars = star_groups(canonical, rank, np.concatenate([pairs, passed]),
                        np.concatenate([distances, np.zeros(len(passed), np.int64)]), t)
    kept = np.zeros(len(canonical), dtype=bool)
    kept[passed[:, 0]] = True
    return StarGroups(stars.canonical, stars.distance, stars.split, kept), len(asked)


def _greedy_stars(left: np.ndarray, rank: np.ndarray, a: np.ndarray, b: np.ndarray, d: np.ndarray,
                  out: np.ndarray, distance: np.ndarray) -> None:
    """Cover the images marked ``left`` with stars, best rank first; fills ``out`` and ``distance`` in place."""
    among = left[a] & left[b]
    a, b, d = a[among], b[among], d[among]
    by_image = np.argsort(a, kind="stable")
    a, b, d = a[by_image], b[by_image], d[by_image]
    starts = np.searchsorted(a, np.arange(len(left) + 1))
    unassigned = left.copy()
    candidates = np.flatnonzero(left)
    for centre in candidates[np.argsort(rank[candidates], kind="stable")]:
        if not unassigned[centre]:
            continue
        unassigned[centre] = False
        out[centre] = centre
        lo, hi = starts[centre], starts[centre + 1]
        members = b[lo:hi]
        free = unassigned[members]
        out[members[free]] = centre
        distance[members[free]] = d[lo:hi][free]
        unassigned[members[free]] = False


def _check(canonical: np.ndarray, rank: np.ndarray, pairs: np.ndarray, distances: np.ndarray) -> None:
    n = len(canonical)
    if len(rank) != n or len(distances) != len(pairs):
        raise ValueError("canonical and rank need one entry per image, distances one per pair")
    if n and (canonical.min() < 0 or canonical.max() >= n or (canonical[canonical] != canonical).any()):
        raise ValueError("every canonical must be an image index that is its own canonical")
    if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
        raise ValueError("pairs name images outside 0..n-1")
    if len(np.unique(rank)) != n:
        raise ValueError("ranks must be distinct")


def component_star_pairs(groups: np.ndarray, canonical: np.ndarray, forms: np.ndarray, linkable: np.ndarray,
                         t: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs :func:`star_groups` needs, measured from components instead of the join's pair list.

    A join that returns only components (the bulk job's Dask join sends back a
    spanning forest, not every pair) leaves open which members lie within ``t``
    of their canonical. This measures it: every member against its own
    canonical, and, inside each component holding a member beyond ``t``, every
    such member against the component's other such members and its canonicals.
    Components are small next to the collection, so the second part costs
    little; the first is one distance per image.

    Parameters
    ----------
    groups : ndarray of int, shape (n,)
        Component label of each image.
    canonical : ndarray of int, shape (n,)
        Each image's canonical as the component rule chose it.
    forms : ndarray of uint8, shape (n, F, nbytes)
        Each image's forms, plain first (``F`` = 1 without dihedral matching).
    linkable : ndarray of bool, shape (n,)
        Images that may form a near-duplicate pair (those that passed the
        quality gate); a pair with an image that may not is left out.
    t : int
        Largest distance of a pair, in bits.

    Returns
    -------
    pairs : ndarray of int64, shape (m, 2)
    distances : ndarray of int64, shape (m,)
        Smallest distance over the first image's forms against the second's plain form.
    """
    groups, canonical = np.asarray(groups, np.int64), np.asarray(canonical, np.int64)
    forms, linkable = np.asarray(forms, np.uint8), np.asarray(linkable, bool)
    n = len(canonical)
    members = np.flatnonzero((canonical != np.arange(n)) & linkable & linkable[canonical])
    own = paired_distances(forms[members], forms[canonical[members], 0])
    pairs = [np.stack([members, canonical[members]], axis=1)]
    distances = [own]
    is_centre = canonical == np.arange(n)
    far = ~is_centre & linkable
    far[members[own <= t]] = False
    by_group = np.argsort(groups, kind="stable")  # ascending image index inside each group
    sorted_groups, with_far = groups[by_group], np.unique(groups[far])
    for lo, hi in zip(np.searchsorted(sorted_groups, with_far, side="left"),
                      np.searchsorted(sorted_groups, with_far, side="right")):
        in_group = by_group[lo:hi]
        split = in_group[far[in_group]]
        centres = in_group[is_centre[in_group] & linkable[in_group]]
        for position, i in enumerate(split):
            # Its other canonicals, and the split members after it (each unordered pair once).
            candidates = np.concatenate([centres[centres != canonical[i]], split[position + 1:]])
            pairs.append(np.stack([np.full(len(candidates), i), candidates], axis=1))
            distances.append(paired_distances(forms[i:i + 1], forms[candidates, 0]))
    return np.concatenate(pairs).astype(np.int64), np.concatenate(distances).astype(np.int64)
