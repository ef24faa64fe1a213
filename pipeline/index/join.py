"""Near-duplicate join and duplicate groups, for the bulk job.

:func:`near_duplicate_pairs` finds every pair of fingerprints within ``t`` bits:
each fingerprint is searched, in exact mode, against the classes the triangle
inequality cannot rule out (its own class and any neighbour whose radius reaches
within ``t``), so the pairs equal those of an all-pairs scan.
:func:`connected_components` then merges pairs into duplicate groups with a
vectorised union-find. :func:`near_duplicate_components` gives the same
groups without keeping the pairs: rows equal in every form are searched once,
and each batch's pairs are merged into the union-find as they are found, after
dropping those whose ends are already in one group (with big duplicate groups
almost all of them), so neither the whole pair list nor its sort is ever built.
In ``mih`` mode it is approximate: the pairs are those the substring positions
find (:func:`imgdedup.pipeline.index.substrings.substring_pairs`), one position
after another, each pair within ``t``; the distributed join
(``imgdedup.jobs.bulk_join``) runs the same positions as tasks and so forms the
same groups.

With a verified zone (``verify_t`` above ``t``), :func:`near_duplicate_groups`
searches at ``verify_t``: pairs within ``t`` form the groups as above, and the
pairs between ``t`` and ``verify_t`` come back beside them, for a verifier
to judge (:func:`zone_pairs_between_groups`: one per pair of groups, the
closest, none inside a group), so what is held grows with the groups, not
with the pairs among their members.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgdedup.pipeline.hashing.bits import paired_distances
from imgdedup.pipeline.index.cluster_index import ClusterIndex
from imgdedup.pipeline.index.substrings import substring_pairs


@dataclass(frozen=True)
class JoinedGroups:
    """What a near-duplicate join with a verified zone gives back.

    Attributes
    ----------
    labels : ndarray of int64, shape (n,)
        Each row's group over the pairs within ``t``: the smallest row of its group.
    zone_pairs : ndarray of int64, shape (m, 2)
        Pairs ``(i, j)``, ``i < j``, with ``t < distance <= verify_t``, whose
        rows lie in different groups, one per pair of groups (the closest, then
        the smallest rows), sorted.
    zone_distances : ndarray of int32, shape (m,)
        Each zone pair's distance in bits (smallest over either side's forms
        against the other's plain fingerprint).
    """

    labels: np.ndarray
    zone_pairs: np.ndarray
    zone_distances: np.ndarray


def no_zone(labels: np.ndarray) -> JoinedGroups:
    """``labels`` with an empty zone."""
    return JoinedGroups(np.asarray(labels, np.int64), np.zeros((0, 2), np.int64), np.zeros(0, np.int32))


def unique_pairs(i: np.ndarray, j: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each unordered pair of ``(i[e], j[e])`` once, with its smallest distance; pairs of a row with itself dropped.

    Returns
    -------
    pairs : ndarray of int64, shape (m, 2)
        ``(first, second)``, ``first < second``, sorted.
    distances : ndarray of int32, shape (m,)
    """
    i, j, d = np.asarray(i, np.int64), np.asarray(j, np.int64), np.asarray(d)
    keep = i != j
    # Each unordered pair may be found from both ends (their distances differ only
    # when dihedral forms are not exact); keep the smaller.
    first, second, d = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep]), d[keep]
    order = np.lexsort((d, second, first))
    first, second, d = first[order], second[order], d[order]
    unique = np.ones(len(first), dtype=bool)
    unique[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    return np.stack([first[unique], second[unique]], axis=1), d[unique].astype(np.int32)


def pair_distances(fingerprints: np.ndarray, forms: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """(m,) int32: each pair's distance, the smaller of either side's forms against the other's plain row."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    a, b = pairs[:, 0], pairs[:, 1]
    return np.minimum(paired_distances(forms[a], fingerprints[b]),
                      paired_distances(forms[b], fingerprints[a])).astype(np.int32)


def zone_pairs_between_groups(labels: np.ndarray, pairs: np.ndarray,
                              distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The zone pairs worth verifying: one per pair of groups, none inside a group.

    A verified pair joins its two groups; whether each other member then
    belongs to the joined group is settled against its canonical (a star,
    :func:`imgdedup.pipeline.groups.star_groups`), so more pairs between the same
    two groups would only cost verifications.

    Parameters
    ----------
    labels : ndarray of int, shape (n,)
        Each row's group.
    pairs : ndarray of int, shape (m, 2)
        Candidate pairs, in any order, an unordered pair possibly more than once.
    distances : ndarray of int, shape (m,)

    Returns
    -------
    pairs : ndarray of int64, shape (r, 2)
        ``(i, j)``, ``i < j``, sorted: for each unordered pair of different
        groups the pairs touch, the closest pair, then the smallest ``(i, j)``.
    distances : ndarray of int32, shape (r,)
    """
    labels = np.asarray(labels, np.int64)
    pairs, distances = unique_pairs(*np.asarray(pairs, np.int64).reshape(-1, 2).T, distances)
    group_a, group_b = labels[pairs[:, 0]], labels[pairs[:, 1]]
    between = group_a != group_b
    pairs, distances = pairs[between], distances[between]
    low, high = np.minimum(group_a[between], group_b[between]), np.maximum(group_a[between], group_b[between])
    order = np.lexsort((pairs[:, 1], pairs[:, 0], distances, high, low))
    first = np.ones(len(order), dtype=bool)
    first[1:] = (low[order][1:] != low[order][:-1]) | (high[order][1:] != high[order][:-1])
    chosen = np.sort(order[first])  # pairs are sorted by (i, j), so their order is kept
    return pairs[chosen], distances[chosen]


def near_duplicate_pairs(
    fingerprints: np.ndarray,
    labels: np.ndarray,
    centres: np.ndarray,
    radii: np.ndarray,
    t: int,
    dihedral: np.ndarray | None = None,
    *,
    batch: int = 1024,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of fingerprints within Hamming distance ``t``.

    Parameters
    ----------
    fingerprints : ndarray of uint8, shape (n, nbytes)
    labels : ndarray of int, shape (n,)
        Class of each fingerprint, ``0..k-1``.
    centres : ndarray of uint8, shape (k, nbytes)
    radii : ndarray of int, shape (k,)
        Each class's radius as the clustering recorded it; checked against the
        members (a member beyond its recorded radius means the inputs disagree).
    t : int
        Largest distance of a pair, in bits.
    dihedral : ndarray of uint8, shape (n, 8, nbytes), optional
        Each fingerprint's dihedral forms (plain form first). A pair's distance is
        then the smallest over either side's forms against the other's plain
        fingerprint.
    batch : int
        Fingerprints searched together.
    threads : int
        Threads the index's scans share each batch among.

    Returns
    -------
    pairs : ndarray of int64, shape (m, 2)
        ``(i, j)`` with ``i < j``, sorted.
    distances : ndarray of int32, shape (m,)
        Hamming distance of each pair in bits.

    Raises
    ------
    ValueError
        A class's members lie farther from its centre than its given radius.
    """
    fingerprints = np.asarray(fingerprints, dtype=np.uint8)
    index = _checked_index(fingerprints, labels, centres, radii)
    queries = fingerprints if dihedral is None else np.asarray(dihedral, dtype=np.uint8)
    i, j, d = index.search_flat(queries, t, batch=batch, threads=threads)
    return unique_pairs(i, j, d)


def near_duplicate_components(
    fingerprints: np.ndarray,
    labels: np.ndarray,
    centres: np.ndarray,
    radii: np.ndarray,
    t: int,
    dihedral: np.ndarray | None = None,
    *,
    batch: int = 1024,
    threads: int = 1,
    mode: str = "exact",
    substring_bits: int = 16,
    probe_radius: int = 1,
) -> np.ndarray:
    """Duplicate groups of the pair graph of :func:`near_duplicate_pairs`, without listing its pairs.

    Parameters are those of :func:`near_duplicate_pairs`, and:

    mode : {"exact", "mih"}
        ``exact``: the pairs of :func:`near_duplicate_pairs`. ``mih``: the pairs
        that :func:`imgdedup.pipeline.index.substrings.substring_pairs` finds
        at every substring position (each within ``t`` by one side's form that
        found it; labels, centres and radii are not used).
    substring_bits, probe_radius : int
        ``mih`` mode: the substrings' width and the plain form's probe radius.

    Returns
    -------
    ndarray of int64, shape (n,)
        What ``connected_components(n, near_duplicate_pairs(...)[0])`` returns:
        each fingerprint's group label, the smallest index of its group.

    Raises
    ------
    ValueError
        A class's members lie farther from its centre than its given radius.
    """
    return near_duplicate_groups(fingerprints, labels, centres, radii, t, dihedral, batch=batch, threads=threads,
                                 mode=mode, substring_bits=substring_bits, probe_radius=probe_radius).labels


def near_duplicate_groups(
    fingerprints: np.ndarray,
    labels: np.ndarray,
    centres: np.ndarray,
    radii: np.ndarray,
    t: int,
    dihedral: np.ndarray | None = None,
    *,
    verify_t: int | None = None,
    batch: int = 1024,
    threads: int = 1,
    mode: str = "exact",
    substring_bits: int = 16,
    probe_radius: int = 1,
) -> JoinedGroups:
    """:func:`near_duplicate_components`, and the pairs of a verified zone ``(t, verify_t]`` between its groups.

    Parameters are those of :func:`near_duplicate_components`, and:

    verify_t : int, optional
        Top of the verified zone, in bits; None (or at most ``t``): no zone.
        The search runs at ``max(t, verify_t)``; the groups are those of the
        pairs within ``t`` either way.

    Returns
    -------
    JoinedGroups
        The groups, and the zone pairs as :func:`zone_pairs_between_groups`
        reduces them (in ``mih`` mode, those the substring positions find).

    Raises
    ------
    ValueError
        A class's members lie farther from its centre than its given radius.
    """
    fingerprints = np.asarray(fingerprints, dtype=np.uint8)
    n = len(fingerprints)
    if n == 0:
        return no_zone(np.zeros(0, dtype=np.int64))
    search_t = t if verify_t is None else max(t, verify_t)
    queries = fingerprints[:, None, :] if dihedral is None else np.asarray(dihedral, dtype=np.uint8)
    # Rows equal in the plain form and every query form lie at distance 0 and have
    # the same pairs with everyone else: one node stands for all of them.
    rows = np.concatenate([fingerprints, queries.reshape(n, -1)], axis=1)
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    nodes = first[order]  # each node's first row, ascending
    node_of_unique = np.empty(len(order), dtype=np.int64)
    node_of_unique[order] = np.arange(len(order))
    node_of_row = node_of_unique[inverse.reshape(-1)]
    node_queries = queries[nodes]
    parent = np.arange(len(nodes), dtype=np.int64)
    zone: list[tuple[np.ndarray, np.ndarray]] = []

    def take(i: np.ndarray, j: np.ndarray, d: np.ndarray | None) -> None:
        """Merge the direct pairs among node pairs ``(i, j)`` at distances ``d`` (None: all direct); keep the zone's."""
        direct = slice(None) if d is None else d <= t
        merge_edges(parent, i[direct], j[direct])
        if d is not None:
            far = (d > t) & (parent[i] != parent[j])
            zone.append((np.stack([i[far], j[far]], axis=1), d[far]))

    if mode == "mih":
        node_rows = fingerprints[nodes]
        for position in range(8 * fingerprints.shape[1] // substring_bits):
            pairs = substring_pairs(node_rows, node_queries, position, substring_bits, probe_radius, search_t)
            take(pairs[:, 0], pairs[:, 1], None if search_t == t else pair_distances(node_rows, node_queries, pairs))
    elif mode == "exact":
        index = _checked_index(fingerprints[nodes], np.asarray(labels)[nodes], centres, radii)
        for start in range(0, len(nodes), batch):
            i, j, d = index.search_flat(node_queries[start:start + batch], search_t, batch=batch, threads=threads)
            take(i + start, j.astype(np.int64), None if search_t == t else d)
    else:
        raise ValueError(f"the join's mode must be 'exact' or 'mih', got {mode!r}")
    # Nodes are in row order, so a group's smallest node is its smallest row.
    groups = nodes[parent[node_of_row]]
    if not zone:
        return no_zone(groups)
    # A node stands for its first row: the closest pair between two groups, smallest rows first, is the same.
    node_pairs = np.concatenate([p for p, _ in zone])
    pairs, distances = zone_pairs_between_groups(groups, nodes[node_pairs], np.concatenate([d for _, d in zone]))
    return JoinedGroups(groups, pairs, distances)


def _checked_index(fingerprints: np.ndarray, labels: np.ndarray, centres: np.ndarray,
                   radii: np.ndarray) -> ClusterIndex:
    """The index of ``fingerprints`` (ids are their positions), refusing radii smaller than its members'."""
    index = ClusterIndex.build(fingerprints, np.arange(len(fingerprints)), centres, labels)
    radii = np.asarray(radii)
    if radii.shape != index.radii.shape or (index.radii > radii).any():
        raise ValueError("a class has members beyond its given radius")
    return index


def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Duplicate groups: the connected components of the pair graph (union-find).

    Parameters
    ----------
    n : int
        Number of items.
    pairs : ndarray of int, shape (m, 2)
        Edges between items ``0..n-1``.

    Returns
    -------
    ndarray of int64, shape (n,)
        Each item's group label: the smallest item index of its group (an item
        in no pair is its own group).
    """
    parent = np.arange(n, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    merge_edges(parent, pairs[:, 0], pairs[:, 1])
    return parent


def spanning_links(pairs: np.ndarray) -> np.ndarray:
    """Links that connect what ``pairs`` connect, at most one per item: a spanning forest.

    A task of the distributed join returns these instead of its pairs, so what
    it sends grows with the items it touched, not with the pairs among them (a
    group of g identical images has g(g-1)/2 pairs and g-1 links).

    Parameters
    ----------
    pairs : ndarray of int, shape (m, 2)

    Returns
    -------
    ndarray of int64, shape (l, 2)
        ``(item, root)``: every item of the pairs but the smallest of its group,
        linked to that smallest item.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    items, local = np.unique(pairs, return_inverse=True)
    local = local.reshape(-1, 2)
    roots = connected_components(len(items), local)
    linked = roots != np.arange(len(items))
    return np.stack([items[linked], items[roots[linked]]], axis=1)


def merge_edges(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Join the groups of ``a[e]`` and ``b[e]`` for every edge ``e``, in place.

    ``parent`` (int64, shape (n,)) must hold each item's root, the smallest item
    of its group, and does again on return.
    """
    while True:
        root_a, root_b = parent[a], parent[b]
        linked = root_a != root_b
        if not linked.any():
            return
        # Edges inside one group change nothing; dropping them first keeps the
        # later rounds (and the scatter below) to the edges that still merge.
        a, b, root_a, root_b = a[linked], b[linked], root_a[linked], root_b[linked]
        low, high = np.minimum(root_a, root_b), np.maximum(root_a, root_b)
        # Hook each root onto the smallest root it touches, then compress paths
        # fully, so parent[x] is again x's root and never above x.
        np.minimum.at(parent, high, low)
        while True:
            grandparent = parent[parent]
            if np.array_equal(grandparent, parent):
                break
            parent[:] = grandparent
