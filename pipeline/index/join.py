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
"""
from __future__ import annotations

import numpy as np

from imgdedup.pipeline.index.cluster_index import ClusterIndex
from imgdedup.pipeline.index.substrings import substring_pairs


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
    j = j.astype(np.int64)
    keep = i != j
    # Each unordered pair is found from both ends (their distances differ only
    # when dihedral forms are not exact); keep the smaller.
    first, second = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
    d = d[keep]
    order = np.lexsort((d, second, first))
    first, second, d = first[order], second[order], d[order]
    unique = np.ones(len(first), dtype=bool)
    unique[1:] = (first[1:] != first[:-1]) | (second[1:] != second[:-1])
    return np.stack([first[unique], second[unique]], axis=1), d[unique].astype(np.int32)


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
    fingerprints = np.asarray(fingerprints, dtype=np.uint8)
    n = len(fingerprints)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
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
    if mode == "mih":
        for position in range(8 * fingerprints.shape[1] // substring_bits):
            pairs = substring_pairs(fingerprints[nodes], node_queries, position, substring_bits, probe_radius, t)
            merge_edges(parent, pairs[:, 0], pairs[:, 1])
    elif mode == "exact":
        index = _checked_index(fingerprints[nodes], np.asarray(labels)[nodes], centres, radii)
        for start in range(0, len(nodes), batch):
            i, j, _ = index.search_flat(node_queries[start:start + batch], t, batch=batch, threads=threads)
            merge_edges(parent, i + start, j.astype(np.int64))
    else:
        raise ValueError(f"the join's mode must be 'exact' or 'mih', got {mode!r}")
    # Nodes are in row order, so a group's smallest node is its smallest row.
    return nodes[parent[node_of_row]]


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
